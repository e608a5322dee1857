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

/// Queues `work` on the writer now (so the order of the calls is the order
/// of the queue, with no sleep to wait for a task to get there); a task of
/// its own waits for the answer.
fn spawn_write<T: Send + 'static>(
    writer: &Writer,
    work: impl FnOnce(&mut DbConnection) -> Result<T, AppError> + Send + 'static,
) -> tokio::task::JoinHandle<Result<T, AppError>> {
    let pending = writer.submit(work).unwrap();
    tokio::spawn(pending.wait())
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
    use futures_util::FutureExt;

    let (db, writer) = writer_with_table().await;
    let (release_first, first) = hold(&writer);
    // Queued behind the held write, so both of these form the next group.
    let mut write = Box::pin(writer.submit(|conn| insert(conn, 7)).unwrap().wait());
    // A second write in the same group, behind it, that holds the group open.
    let (second_started, has_second_started) = mpsc::channel::<()>();
    let (release_second, second_released) = mpsc::channel::<()>();
    let second = writer
        .submit(move |_| {
            second_started.send(()).unwrap();
            second_released
                .recv_timeout(Duration::from_secs(10))
                .unwrap();
            Ok(())
        })
        .unwrap();
    release_first.send(()).unwrap();
    first.await.unwrap();
    has_second_started
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    // Its insert has run, but the group has not committed: no answer yet
    // (an answer sent before the commit would be waiting by now).
    assert!(
        (&mut write).now_or_never().is_none(),
        "answered before the commit"
    );
    assert!(values(&mut db.connect()).is_empty());
    release_second.send(()).unwrap();
    tokio::task::spawn_blocking(move || second.wait_blocking())
        .await
        .unwrap()
        .unwrap();
    write.await.unwrap();
    assert_eq!(values(&mut db.connect()), vec![7]);
}

/// A PostgreSQL URL is refused for what it is, before any connection is
/// tried: nothing listens on port 1, so connecting first would fail
/// differently.
#[test]
fn the_writer_refuses_a_postgres_url_without_connecting() {
    let refused = Writer::start("postgres://postgres@127.0.0.1:1/x").unwrap_err();
    assert!(
        matches!(refused, api_server::db::DbError::SqliteOnly { .. }),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .contains("the single writer is for SQLite only"),
        "{refused}"
    );
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
    }
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
