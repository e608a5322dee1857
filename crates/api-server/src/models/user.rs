//! Users: members of one team, who log in with an email and a password.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::users;
use crate::db::DbConnection;

/// A user row.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i64,
    pub team_id: i64,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub created_at: NaiveDateTime,
}

/// A user to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub team_id: i64,
    pub email: &'a str,
    pub name: &'a str,
    pub password_hash: &'a str,
    pub created_at: NaiveDateTime,
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: String,
    pub name: String,
    pub email: String,
    pub team_id: String,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        UserView {
            id: user.id.to_string(),
            name: user.name.clone(),
            email: user.email.clone(),
            team_id: user.team_id.to_string(),
        }
    }
}

impl User {
    /// Inserts a user.
    pub fn create(conn: &mut DbConnection, new: &NewUser<'_>) -> QueryResult<User> {
        crate::insert_returning!(conn, users::table, new, User)
    }

    /// A user by email (emails are stored lower-cased).
    pub fn by_email(conn: &mut DbConnection, email: &str) -> QueryResult<Option<User>> {
        users::table
            .filter(users::email.eq(email.trim().to_lowercase()))
            .select(User::as_select())
            .first(conn)
            .optional()
    }

    /// A user of `team_id` by id.
    pub fn find_in_team(
        conn: &mut DbConnection,
        team_id: i64,
        id: i64,
    ) -> QueryResult<Option<User>> {
        users::table
            .filter(users::team_id.eq(team_id))
            .find(id)
            .select(User::as_select())
            .first(conn)
            .optional()
    }

    /// The ids of every member of a team.
    pub fn ids_of_team(conn: &mut DbConnection, team_id: i64) -> QueryResult<Vec<i64>> {
        users::table
            .filter(users::team_id.eq(team_id))
            .select(users::id)
            .order(users::id)
            .load(conn)
    }

    /// How many users exist at all (to tell a newcomer how to create one).
    pub fn count(conn: &mut DbConnection) -> QueryResult<i64> {
        users::table.count().get_result(conn)
    }
}
