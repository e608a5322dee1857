//! Sessions: a random token given to the client once; only its SHA-256 is
//! stored, so a database leak does not hand out sessions.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::{sessions, users};
use crate::db::DbConnection;
use crate::models::user::User;

/// A session row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sessions)]
pub struct Session {
    pub id: i64,
    pub user_id: i64,
    pub token_hash: String,
    pub expires_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

/// A session to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = sessions)]
pub struct NewSession<'a> {
    pub user_id: i64,
    pub token_hash: &'a str,
    pub expires_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

impl Session {
    /// Stores a session.
    pub fn create(conn: &mut DbConnection, new: &NewSession<'_>) -> QueryResult<usize> {
        diesel::insert_into(sessions::table)
            .values(new)
            .execute(conn)
    }

    /// The user of an unexpired session.
    pub fn user_of(
        conn: &mut DbConnection,
        token_hash: &str,
        now: NaiveDateTime,
    ) -> QueryResult<Option<User>> {
        sessions::table
            .inner_join(users::table)
            .filter(sessions::token_hash.eq(token_hash))
            .filter(sessions::expires_at.gt(now))
            .select(User::as_select())
            .first(conn)
            .optional()
    }

    /// Ends a session.
    pub fn delete(conn: &mut DbConnection, token_hash: &str) -> QueryResult<usize> {
        diesel::delete(sessions::table.filter(sessions::token_hash.eq(token_hash))).execute(conn)
    }

    /// Removes up to `limit` expired sessions; answers how many. (An expired
    /// session already admits no one: see [`Session::user_of`].)
    pub fn delete_expired(
        conn: &mut DbConnection,
        now: NaiveDateTime,
        limit: i64,
    ) -> QueryResult<usize> {
        crate::delete_batch!(
            conn,
            sessions::table,
            sessions::id,
            i64,
            sessions::expires_at.le(now),
            limit
        )
    }
}
