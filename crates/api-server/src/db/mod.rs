//! The database: one codebase over SQLite (the embedded default) and
//! PostgreSQL, a connection pool, and the migrations applied at start-up.

pub mod schema;
pub mod writer;

use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// A connection to either backend; queries written once run on both.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    /// PostgreSQL (production).
    Postgresql(PgConnection),
    /// SQLite (the embedded default).
    Sqlite(SqliteConnection),
}

/// The connection pool.
pub type DbPool = Pool<ConnectionManager<DbConnection>>;
/// One pooled connection.
pub type PooledDb = PooledConnection<ConnectionManager<DbConnection>>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Which backend a `DATABASE_URL` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://…` or `postgresql://…`.
    Postgres,
    /// Anything else: a file path, with an optional `sqlite://` prefix.
    Sqlite,
}

impl Backend {
    /// The backend of `url`.
    pub fn of(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// The SQLite file path of a `DATABASE_URL` (without `sqlite://`).
pub fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://").unwrap_or(url)
}

/// Database failures at start-up, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be opened or reached.
    #[error("cannot open the database {target}: {cause}")]
    Connect {
        /// The file or server (no password).
        target: String,
        /// What went wrong.
        cause: String,
    },
    /// SQLite's single writer was asked to open another database.
    #[error(
        "the single writer is for SQLite only, not {target}: PostgreSQL writes through the pool"
    )]
    SqliteOnly {
        /// The database asked for (no password).
        target: String,
    },
    /// A migration failed.
    #[error("migrations failed: {0}")]
    Migration(String),
}

/// SQLite's per-connection settings: wait for locks instead of failing,
/// write-ahead logging, and enforced foreign keys.
#[derive(Debug)]
struct SqliteSettings;

impl CustomizeConnection<DbConnection, diesel::r2d2::Error> for SqliteSettings {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), diesel::r2d2::Error> {
        if let DbConnection::Sqlite(conn) = conn {
            conn.batch_execute(
                "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
            )
            .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// Where `url` points, without any password, for messages.
pub fn describe(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if Backend::of(url) == Backend::Postgres => {
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => sqlite_path(url).to_owned(),
    }
}

fn connect_url(url: &str) -> String {
    match Backend::of(url) {
        Backend::Postgres => url.to_owned(),
        Backend::Sqlite => sqlite_path(url).to_owned(),
    }
}

/// Opens one connection (for migrations and the command line).
pub fn connect(url: &str) -> Result<DbConnection, DbError> {
    let target = connect_url(url);
    if Backend::of(url) == Backend::Sqlite {
        if let Some(parent) = std::path::Path::new(&target).parent() {
            if !parent.as_os_str().is_empty() {
                let _ = std::fs::create_dir_all(parent);
            }
        }
    }
    let mut conn = DbConnection::establish(&target).map_err(|e| DbError::Connect {
        target: describe(url),
        cause: e.to_string(),
    })?;
    SqliteSettings
        .on_acquire(&mut conn)
        .map_err(|e| DbError::Connect {
            target: describe(url),
            cause: e.to_string(),
        })?;
    Ok(conn)
}

/// Applies pending migrations, serialised across processes: PostgreSQL
/// holds an advisory lock, SQLite an exclusive transaction.
pub fn migrate(url: &str) -> Result<usize, DbError> {
    let mut conn = connect(url)?;
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| DbError::Migration(e.to_string());
    match &mut conn {
        DbConnection::Postgresql(pg) => {
            // Any fixed number works; it only has to be the same for every instance.
            const LOCK: i64 = 0x0069_6e62_6f78;
            pg.batch_execute(&format!("SELECT pg_advisory_lock({LOCK})"))
                .map_err(|e| DbError::Migration(e.to_string()))?;
            let applied = pg
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.len());
            let _ = pg.batch_execute(&format!("SELECT pg_advisory_unlock({LOCK})"));
            applied.map_err(failed)
        }
        DbConnection::Sqlite(sqlite) => {
            // BEGIN EXCLUSIVE makes a second process wait (busy_timeout)
            // until the first has applied everything.
            sqlite
                .exclusive_transaction(|c| {
                    c.run_pending_migrations(SQLITE_MIGRATIONS)
                        .map(|v| v.len())
                        .map_err(diesel::result::Error::QueryBuilderError)
                })
                .map_err(|e| DbError::Migration(e.to_string()))
        }
    }
}

/// The longest a request waits for a pooled connection before it answers 503.
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// Builds the pool (after [`migrate`]).
pub fn pool(url: &str) -> Result<DbPool, DbError> {
    let manager = ConnectionManager::<DbConnection>::new(connect_url(url));
    let size = match Backend::of(url) {
        Backend::Postgres => 16,
        // SQLite has one writer; a few readers beside it are enough.
        Backend::Sqlite => 8,
    };
    Pool::builder()
        .max_size(size)
        // A request waits this long for a connection, then answers 503: while
        // PostgreSQL is down (every new connection refused) a request fails
        // fast instead of hanging; the pool reconnects by itself once it is back.
        .connection_timeout(POOL_WAIT)
        .connection_customizer(Box::new(SqliteSettings))
        .build(manager)
        .map_err(|e| DbError::Connect {
            target: describe(url),
            cause: e.to_string(),
        })
}

/// Runs `f` in a write transaction: `BEGIN IMMEDIATE` on SQLite, so two
/// writers queue on the lock (busy_timeout) instead of one failing at its
/// first write; a plain transaction on PostgreSQL. Inside a transaction
/// already (the [`writer::Writer`]'s group), a savepoint.
pub fn write_transaction<T, E, F>(conn: &mut DbConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    if !matches!(conn, DbConnection::Sqlite(_)) {
        return conn.transaction(f);
    }
    sqlite_immediate(conn, f)
}

fn sqlite_immediate<T, E, F>(conn: &mut DbConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    // The multi connection shares the inner connection's transaction state,
    // so `f` sees an open transaction (nested ones become savepoints).
    if let DbConnection::Sqlite(inner) = conn {
        if sqlite_transaction_depth(inner)? > 0 {
            return conn.transaction(f);
        }
        AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE")?;
    }
    let result = f(conn);
    let DbConnection::Sqlite(inner) = conn else {
        return result;
    };
    match result {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(inner)?;
            Ok(value)
        }
        Err(e) => {
            // The error that made us roll back is the one worth reporting.
            let _ = AnsiTransactionManager::rollback_transaction(inner);
            Err(e)
        }
    }
}

/// How many transactions (the outer one and its savepoints) are open on a
/// SQLite connection; an error when diesel's transaction state is broken.
fn sqlite_transaction_depth(conn: &mut SqliteConnection) -> diesel::QueryResult<u32> {
    Ok(AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()?
        .map_or(0, |depth| depth.get()))
}

/// `INSERT … RETURNING` the new row as `$row`. Both databases support it,
/// but diesel's multi-backend connection cannot express `RETURNING`, so the
/// statement is built once per backend here.
#[macro_export]
macro_rules! insert_returning {
    ($conn:expr, $table:expr, $values:expr, $row:ty) => {{
        use diesel::prelude::*;
        match $conn {
            $crate::db::DbConnection::Postgresql(c) => diesel::insert_into($table)
                .values($values)
                .returning(<$row>::as_returning())
                .get_result::<$row>(c),
            $crate::db::DbConnection::Sqlite(c) => diesel::insert_into($table)
                .values($values)
                .returning(<$row>::as_returning())
                .get_result::<$row>(c),
        }
    }};
}

/// Loads `$query`'s rows as `$row` for a claim: on PostgreSQL locked
/// `FOR UPDATE SKIP LOCKED`, so instances sharing the database each take
/// other rows (a row one holds the others skip); on SQLite plainly, as one
/// writer (the caller's write transaction or `db/writer.rs`) serialises the
/// claims. The outbox dispatcher's and the SMS worker's claims read through it.
#[macro_export]
macro_rules! load_skip_locked {
    ($conn:expr, $query:expr, $row:ty) => {{
        use diesel::prelude::*;
        match $conn {
            $crate::db::DbConnection::Postgresql(c) => $query
                .select(<$row>::as_select())
                .for_update()
                .skip_locked()
                .load::<$row>(c),
            $crate::db::DbConnection::Sqlite(c) => {
                $query.select(<$row>::as_select()).load::<$row>(c)
            }
        }
    }};
}

/// Deletes at most `$limit` rows of `$table` that match `$filter`: reads
/// their keys (`$key`, of Rust type `$key_ty`), then deletes those rows;
/// evaluates to how many went (a `QueryResult<usize>`). The one shape of the
/// clean-up's batches (`cleanup.rs`), so that a backlog is removed a bounded
/// batch at a time. Without an `ORDER BY`: which of the rows past their time
/// go first does not matter, and ordering by a column without an index
/// (`early_statuses.created_at`) would sort the whole table for every batch.
#[macro_export]
macro_rules! delete_batch {
    ($conn:expr, $table:expr, $key:expr, $key_ty:ty, $filter:expr, $limit:expr) => {{
        use diesel::prelude::*;
        let conn: &mut $crate::db::DbConnection = $conn;
        $table
            .select($key)
            .filter($filter)
            .limit($limit)
            .load::<$key_ty>(conn)
            .and_then(|keys| diesel::delete($table.filter($key.eq_any(keys))).execute(conn))
    }};
}

/// A migrated SQLite database of a unit test's own, removed when dropped.
#[cfg(test)]
pub(crate) struct TestDatabase {
    /// A connection to it.
    pub conn: DbConnection,
    path: std::path::PathBuf,
}

#[cfg(test)]
impl TestDatabase {
    /// A fresh file in the temporary directory, migrated.
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "api_server_unit_{}_{:016x}.db",
            std::process::id(),
            rand::random::<u64>()
        ));
        let url = path.to_string_lossy().into_owned();
        #[allow(clippy::expect_used)]
        {
            migrate(&url).expect("the test database migrates");
            TestDatabase {
                conn: connect(&url).expect("the test database opens"),
                path,
            }
        }
    }
}

#[cfg(test)]
impl Drop for TestDatabase {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}
