//! Failed logins per key, shared by every instance on the database: the
//! counters of the login limit (`auth/rate_limit.rs`), which decides what
//! they mean. A key is a digest (of a client address, or of an address and
//! an email), never the address or email itself.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::login_failures;
use crate::db::DbConnection;

/// A key's failures, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = login_failures)]
pub struct LoginFailure {
    /// The key's digest.
    pub key_digest: String,
    /// Failures counted since the key was last forgotten or reset.
    pub failures: i32,
    /// The last failure.
    pub last_failure_at: NaiveDateTime,
    /// When the key is forgotten (its last failure and the policy's
    /// `forget`): from then on it counts as no failure at all.
    pub expires_at: NaiveDateTime,
}

impl LoginFailure {
    /// The rows of `keys` still counting at `now` (a row past its expiry
    /// reads as none): one statement, by primary key.
    pub fn read(
        conn: &mut DbConnection,
        keys: &[&str],
        now: NaiveDateTime,
    ) -> QueryResult<Vec<LoginFailure>> {
        login_failures::table
            .filter(login_failures::key_digest.eq_any(keys))
            .filter(login_failures::expires_at.gt(now))
            .select(LoginFailure::as_select())
            .load(conn)
    }

    /// Counts one failure of `key` at `now`, forgotten at `expires_at`: one
    /// upsert, adding to what the database holds (so failures recorded at
    /// once by several instances all count); a row past its expiry starts
    /// again at one.
    pub fn record(
        conn: &mut DbConnection,
        key: &str,
        now: NaiveDateTime,
        expires_at: NaiveDateTime,
    ) -> QueryResult<usize> {
        use diesel::upsert::excluded;
        let row = LoginFailure {
            key_digest: key.to_owned(),
            failures: 1,
            last_failure_at: now,
            expires_at,
        };
        let failures = diesel::dsl::case_when(
            login_failures::expires_at.le(now),
            1.into_sql::<diesel::sql_types::Integer>(),
        )
        .otherwise(login_failures::failures + 1);
        let upsert = diesel::insert_into(login_failures::table)
            .values(&row)
            .on_conflict(login_failures::key_digest)
            .do_update()
            .set((
                login_failures::failures.eq(failures),
                login_failures::last_failure_at.eq(excluded(login_failures::last_failure_at)),
                login_failures::expires_at.eq(excluded(login_failures::expires_at)),
            ));
        // diesel's connection over both backends cannot express an upsert;
        // the statement is the same on each.
        match conn {
            DbConnection::Postgresql(pg) => upsert.execute(pg),
            DbConnection::Sqlite(sqlite) => upsert.execute(sqlite),
        }
    }

    /// Forgets a key's failures.
    pub fn reset(conn: &mut DbConnection, key: &str) -> QueryResult<usize> {
        diesel::delete(login_failures::table.find(key)).execute(conn)
    }

    /// Removes up to `limit` rows forgotten by `now`; answers how many.
    pub fn delete_expired(
        conn: &mut DbConnection,
        now: NaiveDateTime,
        limit: i64,
    ) -> QueryResult<usize> {
        crate::delete_batch!(
            conn,
            login_failures::table,
            login_failures::key_digest,
            String,
            login_failures::expires_at.le(now),
            limit
        )
    }
}
