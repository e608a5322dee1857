//! SQLite's one writer: writes run in arrival order, a group of them commits
//! together with each write in its own savepoint, a caller hears back only
//! once its write is committed, and a failing or panicking write undoes
//! only its own statements.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use api_server::db::writer::Writer;
use api_server::db::DbConnection;
use api_server::error::AppError;
use common::{Backend, TestDb};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = BigInt)]
    v: i64,
}

fn values(conn: &mut DbConnection) -> Vec<i64> {
    diesel::sql_query("SELECT v FROM t ORDER BY rowid")
        .load::<Value>(conn)
        .unwrap()
        .into_iter()
        .map(|r| r.v)
        .collect()
}

fn insert(conn: &mut DbConnection, v: i64) -> Result<(), AppError> {
    conn.batch_execute(&format!("INSERT INTO t (v) VALUES ({v})"))?;
    Ok(())
}

async fn writer_with_table() -> (std::sync::Arc<TestDb>, Writer) {
    let db = TestDb::new(Backend::Sqlite);
    let writer = Writer::start(&db.url).unwrap();
    writer
        .run(|conn| Ok(conn.batch_execute("CREATE TABLE t (v INTEGER NOT NULL)")?))
        .await
        .unwrap();
    (db, writer)
}

/// Queues `work` on the writer from a task of its own; answers its result.
fn spawn_write<T: Send + 'static>(
    writer: &Writer,
    work: impl FnOnce(&mut DbConnection) -> Result<T, AppError> + Send + 'static,
) -> tokio::task::JoinHandle<Result<T, AppError>> {
    let writer = writer.clone();
    tokio::spawn(async move { writer.run(work).await })
}

/// Holds the writer inside a write until `release` is sent, so the writes
/// queued meanwhile form the next group together.
fn hold(writer: &Writer) -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, released) = mpsc::channel::<()>();
    let (started, has_started) = mpsc::channel::<()>();
    let writer = writer.clone();
    let held = tokio::task::spawn_blocking(move || {
        writer
            .run_blocking(move |_| {
                started.send(()).unwrap();
                released.recv_timeout(Duration::from_secs(10)).unwrap();
                Ok(())
            })
            .unwrap();
    });
    has_started.recv_timeout(Duration::from_secs(10)).unwrap();
    (release, held)
}

#[actix_web::test]
async fn a_caller_hears_back_only_once_its_write_is_committed() {
    let (db, writer) = writer_with_table().await;
    let (release_first, first) = hold(&writer);
    let write = spawn_write(&writer, |conn| insert(conn, 7));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A second write in the same group, behind it, that holds the group open.
    let (release_second, second_released) = mpsc::channel::<()>();
    let holder = writer.clone();
    let second = tokio::task::spawn_blocking(move || {
        holder
            .run_blocking(move |_| {
                second_released
                    .recv_timeout(Duration::from_secs(10))
                    .unwrap();
                Ok(())
            })
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    release_first.send(()).unwrap();
    first.await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Its insert has run, but the group has not committed: no answer yet.
    assert!(!write.is_finished(), "answered before the commit");
    assert!(values(&mut db.connect()).is_empty());
    release_second.send(()).unwrap();
    second.await.unwrap();
    write.await.unwrap().unwrap();
    assert_eq!(values(&mut db.connect()), vec![7]);
}

#[actix_web::test]
async fn a_failing_write_undoes_only_its_own_statements_in_a_shared_group() {
    let (db, writer) = writer_with_table().await;
    let (release, held) = hold(&writer);
    let first = spawn_write(&writer, |conn| insert(conn, 1));
    let failing = spawn_write(&writer, |conn| {
        insert(conn, 2)?;
        Err::<(), _>(AppError::Conflict {
            code: "test",
            message: "refused after its insert".into(),
        })
    });
    let last = spawn_write(&writer, |conn| insert(conn, 3));
    // Let all three reach the queue behind the held write.
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send(()).unwrap();
    held.await.unwrap();
    first.await.unwrap().unwrap();
    assert!(matches!(
        failing.await.unwrap(),
        Err(AppError::Conflict { .. })
    ));
    last.await.unwrap().unwrap();
    assert_eq!(values(&mut db.connect()), vec![1, 3]);
}

#[actix_web::test]
async fn a_panicking_write_is_answered_with_an_error_and_the_writer_goes_on() {
    let (db, writer) = writer_with_table().await;
    let (release, held) = hold(&writer);
    let panicking = spawn_write(&writer, |conn| {
        insert(conn, 1)?;
        // A nested transaction left open by the panic, too.
        api_server::db::write_transaction(conn, |conn| -> Result<(), AppError> {
            insert(conn, 2)?;
            panic!("a bug in a handler");
        })
    });
    let beside = spawn_write(&writer, |conn| insert(conn, 3));
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send(()).unwrap();
    held.await.unwrap();
    assert!(matches!(
        panicking.await.unwrap(),
        Err(AppError::Internal(_))
    ));
    beside.await.unwrap().unwrap();
    writer.run(|conn| insert(conn, 4)).await.unwrap();
    assert_eq!(values(&mut db.connect()), vec![3, 4]);
}

#[actix_web::test]
async fn writes_are_committed_in_the_order_they_arrive() {
    let (db, writer) = writer_with_table().await;
    let (release, held) = hold(&writer);
    let mut answers = Vec::new();
    for v in 0..200 {
        answers.push(spawn_write(&writer, move |conn| insert(conn, v)));
        // Each spawned task must have queued before the next one starts.
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send(()).unwrap();
    held.await.unwrap();
    for answer in answers {
        answer.await.unwrap().unwrap();
    }
    assert_eq!(values(&mut db.connect()), (0..200).collect::<Vec<_>>());
}

#[actix_web::test]
async fn a_write_that_breaks_the_transaction_does_not_stop_later_writes() {
    let (db, writer) = writer_with_table().await;
    // Ending the group's transaction behind diesel's back leaves its
    // savepoint unreleasable and the connection's transaction state broken.
    let broken = writer
        .run(|conn| {
            insert(conn, 1)?;
            conn.batch_execute("COMMIT")?;
            Ok(())
        })
        .await;
    assert!(
        broken.is_err(),
        "the broken write is answered with an error"
    );
    writer.run(|conn| insert(conn, 2)).await.unwrap();
    writer.run(|conn| insert(conn, 3)).await.unwrap();
    let values = values(&mut db.connect());
    assert!(values.ends_with(&[2, 3]), "later writes stand: {values:?}");
}
