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
