//! Idempotency keys of `POST /api/messages/send`: a retried request with the
//! same key answers the first message instead of sending twice.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::idempotency_keys;
use crate::db::DbConnection;

/// A key to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub struct NewIdempotencyKey<'a> {
    pub user_id: i64,
    pub key: &'a str,
    pub message_id: i64,
    pub created_at: NaiveDateTime,
}

/// The message a user's earlier request with this key created.
pub fn message_for(conn: &mut DbConnection, user_id: i64, key: &str) -> QueryResult<Option<i64>> {
    idempotency_keys::table
        .filter(idempotency_keys::user_id.eq(user_id))
        .filter(idempotency_keys::key.eq(key))
        .select(idempotency_keys::message_id)
        .first(conn)
        .optional()
}

/// Remembers the message a key created.
pub fn remember(conn: &mut DbConnection, new: &NewIdempotencyKey<'_>) -> QueryResult<usize> {
    diesel::insert_into(idempotency_keys::table)
        .values(new)
        .execute(conn)
}

/// Forgets up to `limit` keys made before `cutoff`; answers how many. A
/// retry comes within minutes of its first try, so a key is kept a day
/// (`cleanup.rs`).
pub fn delete_older_than(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
    limit: i64,
) -> QueryResult<usize> {
    crate::delete_batch!(
        conn,
        idempotency_keys::table,
        idempotency_keys::id,
        i64,
        idempotency_keys::created_at.lt(cutoff),
        limit
    )
}
