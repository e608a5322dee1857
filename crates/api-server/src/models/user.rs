//! Users: members of one team, who log in with an email and a password.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::{sessions, users};
use crate::db::DbConnection;

/// The most teammates a user's realtime watchlist follows: Pusher's limit.
pub const MAX_WATCHED_TEAMMATES: usize = 100;

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

    /// The teammates `user` watches (`id`, `name`): the other members of the
    /// team, at most [`MAX_WATCHED_TEAMMATES`]. A larger team's are those
    /// who logged in most recently (their newest unexpired session), then
    /// the rest by id: someone with no live session cannot be online, so a
    /// place on the list goes to those most likely to be.
    pub fn watched_teammates(
        conn: &mut DbConnection,
        user: &User,
        now: NaiveDateTime,
    ) -> QueryResult<Vec<(i64, String)>> {
        let limit = MAX_WATCHED_TEAMMATES as i64;
        let mut watched: Vec<(i64, String)> = users::table
            .inner_join(sessions::table)
            .filter(users::team_id.eq(user.team_id))
            .filter(users::id.ne(user.id))
            .filter(sessions::expires_at.gt(now))
            .group_by((users::id, users::name))
            .select((users::id, users::name))
            .order((diesel::dsl::max(sessions::created_at).desc(), users::id))
            .limit(limit)
            .load(conn)?;
        if watched.len() < MAX_WATCHED_TEAMMATES {
            // Everyone else, by id; at most `limit` more covers the places
            // left whatever of them is already listed.
            let rest: Vec<(i64, String)> = users::table
                .filter(users::team_id.eq(user.team_id))
                .filter(users::id.ne(user.id))
                .select((users::id, users::name))
                .order(users::id)
                .limit(limit)
                .load(conn)?;
            let listed: std::collections::HashSet<i64> =
                watched.iter().map(|(id, _)| *id).collect();
            watched.extend(rest.into_iter().filter(|(id, _)| !listed.contains(id)));
            watched.truncate(MAX_WATCHED_TEAMMATES);
        }
        Ok(watched)
    }

    /// How many users exist at all (to tell a newcomer how to create one).
    pub fn count(conn: &mut DbConnection) -> QueryResult<i64> {
        users::table.count().get_result(conn)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::models::session::{NewSession, Session};
    use crate::models::team::{NewTeam, Team};

    /// A fresh SQLite file with the schema, removed when dropped.
    struct Database {
        conn: DbConnection,
        path: std::path::PathBuf,
    }

    impl Drop for Database {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = self.path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
    }

    fn database(name: &str) -> Database {
        let path = std::env::temp_dir().join(format!(
            "api-server-{name}-{}-{}.sqlite",
            std::process::id(),
            crate::models::now().and_utc().timestamp_micros()
        ));
        let url = path.to_string_lossy().into_owned();
        crate::db::migrate(&url).unwrap();
        Database {
            conn: crate::db::connect(&url).unwrap(),
            path,
        }
    }

    fn team(conn: &mut DbConnection, phone: &str) -> i64 {
        let created_at = crate::models::now();
        Team::create(
            conn,
            &NewTeam {
                name: "T",
                phone_number: phone,
                created_at,
            },
        )
        .unwrap()
        .id
    }

    fn user(conn: &mut DbConnection, team_id: i64, n: usize) -> User {
        User::create(
            conn,
            &NewUser {
                team_id,
                email: &format!("u{n}-{team_id}@example.com"),
                name: &format!("User {n}"),
                password_hash: "not-a-hash",
                created_at: crate::models::now(),
            },
        )
        .unwrap()
    }

    fn session(conn: &mut DbConnection, user: &User, created_at: NaiveDateTime, days: i64) {
        Session::create(
            conn,
            &NewSession {
                user_id: user.id,
                token_hash: &format!("{}-{}", user.id, created_at.and_utc().timestamp_micros()),
                expires_at: created_at + Duration::days(days),
                created_at,
            },
        )
        .unwrap();
    }

    #[test]
    fn a_small_team_watches_every_other_member_and_nobody_else() {
        let mut db = database("watch-small");
        let conn = &mut db.conn;
        let ours = team(conn, "+14155550100");
        let theirs = team(conn, "+14155550101");
        let me = user(conn, ours, 0);
        let mates: Vec<User> = (1..4).map(|n| user(conn, ours, n)).collect();
        let stranger = user(conn, theirs, 9);
        session(conn, &stranger, crate::models::now(), 30);
        let now = crate::models::now();
        let watched = User::watched_teammates(conn, &me, now).unwrap();
        let ids: Vec<i64> = watched.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, mates.iter().map(|u| u.id).collect::<Vec<_>>());
        assert_eq!(watched[0].1, "User 1");
    }

    #[test]
    fn a_large_team_watches_the_100_who_logged_in_last_then_the_rest_by_id() {
        let mut db = database("watch-large");
        let conn = &mut db.conn;
        let ours = team(conn, "+14155550100");
        let me = user(conn, ours, 0);
        let mates: Vec<User> = (1..=120).map(|n| user(conn, ours, n)).collect();
        let now = crate::models::now();
        // Two of the last by id logged in lately, one of them twice (counted
        // once, by the newest session); an expired session counts for
        // nothing; my own session does not put me on my list.
        session(conn, &mates[119], now - Duration::hours(1), 30);
        session(conn, &mates[110], now - Duration::hours(5), 30);
        session(conn, &mates[110], now - Duration::minutes(30), 30);
        session(conn, &mates[115], now - Duration::days(40), 30);
        session(conn, &me, now, 30);
        let watched: Vec<i64> = User::watched_teammates(conn, &me, now)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(watched.len(), MAX_WATCHED_TEAMMATES);
        assert_eq!(&watched[..2], &[mates[110].id, mates[119].id]);
        let by_id: Vec<i64> = mates
            .iter()
            .map(|u| u.id)
            .filter(|id| *id != mates[119].id && *id != mates[110].id)
            .take(98)
            .collect();
        assert_eq!(&watched[2..], &by_id[..]);
        assert!(!watched.contains(&me.id));
        assert!(
            !watched.contains(&mates[115].id),
            "an expired session counted"
        );
    }
}
