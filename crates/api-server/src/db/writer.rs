//! SQLite's one writer, in this process.
//!
//! SQLite lets one connection write at a time. Left to its busy handler,
//! writers that find the lock taken sleep in growing steps (up to 100 ms)
//! and retry, so under load the order is a lottery and the slowest requests
//! wait many times the average. Here every write of the process queues on
//! one thread that owns one connection: jobs run in arrival order, and each
//! round takes every job queued so far into one `BEGIN IMMEDIATE`
//! transaction (group commit), each job in its own savepoint so a failing
//! job undoes only its own statements. Answers go out after the commit, so
//! a caller never hears of a write that is not committed. (With WAL and
//! `synchronous=NORMAL` a commit may still be lost to a power failure or
//! an operating-system crash, though not to a crash of this process.)
//!
//! Other processes on the same file (a CLI command, a second instance) still
//! meet this one through SQLite's lock and busy timeout.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::Connection;
use tokio::sync::oneshot;

use super::{DbConnection, DbError};
use crate::error::AppError;

/// Jobs committed together at most, so one round's answers are not held
/// back long behind a very deep queue.
const MAX_GROUP: usize = 256;

/// What a job leaves to do once the group's commit is known: answer its
/// caller with its result, or with the commit's failure.
type Finish = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// A queued write: the work and the caller waiting for its answer.
trait QueuedWrite: Send {
    /// Runs the work in the open group transaction; answers once the group
    /// is committed.
    fn run(self: Box<Self>, conn: &mut DbConnection) -> Finish;
    /// Answers without running: the group's transaction did not start.
    fn refuse(self: Box<Self>, why: &str);
}

type Job = Box<dyn QueuedWrite>;

struct Write<T, F> {
    work: F,
    answer: oneshot::Sender<Result<T, AppError>>,
}

impl<T, F> QueuedWrite for Write<T, F>
where
    F: FnOnce(&mut DbConnection) -> Result<T, AppError> + Send,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut DbConnection) -> Finish {
        let Write { work, answer } = *self;
        let result = in_savepoint(conn, work);
        Box::new(move |commit: Result<(), &str>| {
            let result = match commit {
                Ok(()) => result,
                // The job's work was rolled back with the group's.
                Err(why) => Err(not_written(why)),
            };
            // The caller may have gone (a closed request); the write stands.
            let _ = answer.send(result);
        })
    }

    fn refuse(self: Box<Self>, why: &str) {
        let _ = self.answer.send(Err(not_written(why)));
    }
}

fn not_written(why: &str) -> AppError {
    let why = format!("the write could not be committed: {why}");
    if crate::error::is_disk_full(&why) {
        AppError::StorageFull(why)
    } else {
        AppError::Internal(why)
    }
}

/// A handle on the writer thread; cheap to clone. The thread stops when the
/// last handle is dropped.
#[derive(Debug, Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    /// Opens the writer's own connection to the SQLite file at `url` and
    /// starts its thread. A PostgreSQL `url` is refused before anything is
    /// opened: PostgreSQL writes in parallel, through the pool, and a
    /// connection error would only hide the real mistake.
    pub fn start(url: &str) -> Result<Self, DbError> {
        let target = super::describe(url);
        if super::Backend::of(url) != super::Backend::Sqlite {
            return Err(DbError::SqliteOnly { target });
        }
        let conn = super::connect(url)?;
        let url = url.to_owned();
        let (queue, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(&url, conn, jobs))
            .map_err(|e| DbError::Connect {
                target,
                cause: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Writer { queue })
    }

    /// Runs `f` in the next group transaction and answers its result once
    /// the group has committed.
    pub async fn run<T, F>(&self, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(f)?.wait().await
    }

    /// [`Writer::run`] for threads outside the async runtime.
    pub fn run_blocking<T, F>(&self, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(f)?.wait_blocking()
    }

    /// Queues `f` without waiting for it; the answer is collected later from
    /// the [`PendingWrite`].
    pub fn submit<T, F>(&self, f: F) -> Result<PendingWrite<T>, AppError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(Write { work: f, answer });
        self.queue
            .send(job)
            .map_err(|_| AppError::Internal("the database writer stopped".into()))?;
        Ok(PendingWrite(answered))
    }
}

/// A queued write whose answer has not been collected yet.
#[derive(Debug)]
pub struct PendingWrite<T>(oneshot::Receiver<Result<T, AppError>>);

impl<T> PendingWrite<T> {
    /// Waits for the write's group to commit; answers its result.
    pub async fn wait(self) -> Result<T, AppError> {
        self.0.await.unwrap_or_else(|_| Err(writer_stopped()))
    }

    /// [`PendingWrite::wait`] for threads outside the async runtime.
    pub fn wait_blocking(self) -> Result<T, AppError> {
        self.0
            .blocking_recv()
            .unwrap_or_else(|_| Err(writer_stopped()))
    }
}

fn writer_stopped() -> AppError {
    AppError::Internal("the database writer stopped".into())
}

/// Runs `f` in a savepoint of the open group transaction. A panic in `f` is
/// turned into an error and its statements rolled back, so one bug cannot
/// stop every later write.
fn in_savepoint<T, F>(conn: &mut DbConnection, f: F) -> Result<T, AppError>
where
    F: FnOnce(&mut DbConnection) -> Result<T, AppError>,
{
    let group_depth = depth(conn).unwrap_or(1);
    match catch_unwind(AssertUnwindSafe(|| conn.transaction(f))) {
        Ok(result) => result,
        Err(_) => {
            // Unwind the savepoints the panic left open, down to the group's.
            while depth(conn).is_ok_and(|d| d > group_depth) {
                let DbConnection::Sqlite(inner) = &mut *conn else {
                    break;
                };
                if AnsiTransactionManager::rollback_transaction(inner).is_err() {
                    break;
                }
            }
            tracing::error!("a database write panicked; its statements were rolled back");
            Err(AppError::Internal("the write failed".into()))
        }
    }
}

/// The writer's connection's transaction depth (see
/// [`super::sqlite_transaction_depth`]).
fn depth(conn: &mut DbConnection) -> diesel::QueryResult<u32> {
    match conn {
        DbConnection::Sqlite(inner) => super::sqlite_transaction_depth(inner),
        DbConnection::Postgresql(_) => Ok(0),
    }
}

fn run(url: &str, mut conn: DbConnection, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&mut conn, group);
        if !matches!(depth(&mut conn), Ok(0)) {
            // A failed rollback leaves diesel's transaction state broken, and
            // every later write would fail on it: start afresh.
            match super::connect(url) {
                Ok(fresh) => {
                    tracing::warn!(
                        "the SQLite writer reopened its connection after a failed rollback"
                    );
                    conn = fresh;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the SQLite writer could not reopen its connection")
                }
            }
        }
    }
}

/// Runs `group` in one transaction and answers every job.
fn commit_group(conn: &mut DbConnection, group: Vec<Job>) {
    let DbConnection::Sqlite(inner) = conn else {
        return;
    };
    if let Err(e) = AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE") {
        let why = e.to_string();
        tracing::warn!(error = %why, "could not start a write transaction");
        for job in group {
            job.refuse(&why);
        }
        return;
    }
    let finishes: Vec<Finish> = group.into_iter().map(|job| job.run(conn)).collect();
    let DbConnection::Sqlite(inner) = conn else {
        return;
    };
    let committed = AnsiTransactionManager::commit_transaction(inner).map_err(|e| {
        let _ = AnsiTransactionManager::rollback_transaction(inner);
        e.to_string()
    });
    if let Err(why) = &committed {
        tracing::warn!(error = %why, jobs = finishes.len(), "a group write could not commit");
    }
    for finish in finishes {
        finish(committed.as_ref().map(|_| ()).map_err(String::as_str));
    }
}
