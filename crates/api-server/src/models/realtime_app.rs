//! The embedded realtime server's app credentials: generated on first
//! start and kept, so pusher-js clients and signatures survive restarts.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::realtime_apps;
use crate::db::DbConnection;

/// The stored credentials.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = realtime_apps)]
pub struct RealtimeApp {
    pub id: i64,
    pub app_id: String,
    pub app_key: String,
    pub app_secret: String,
    pub created_at: NaiveDateTime,
}

/// Credentials to store.
#[derive(Debug, Insertable)]
#[diesel(table_name = realtime_apps)]
pub struct NewRealtimeApp<'a> {
    pub app_id: &'a str,
    pub app_key: &'a str,
    pub app_secret: &'a str,
    pub created_at: NaiveDateTime,
}

impl RealtimeApp {
    /// The credentials, created with `generate` when there are none yet.
    pub fn get_or_create(
        conn: &mut DbConnection,
        generate: impl FnOnce() -> (String, String, String),
    ) -> QueryResult<RealtimeApp> {
        crate::db::write_transaction(conn, |conn| {
            // Instances starting at once on an empty PostgreSQL database
            // would each read no app and insert their own, and sign with
            // different secrets; the lock makes the later one wait and read
            // the first one's. (SQLite's write transaction is exclusive.)
            if let DbConnection::Postgresql(pg) = conn {
                use diesel::connection::SimpleConnection;
                pg.batch_execute("LOCK TABLE realtime_apps IN SHARE ROW EXCLUSIVE MODE")?;
            }
            let existing = realtime_apps::table
                .order(realtime_apps::id)
                .select(RealtimeApp::as_select())
                .first(conn)
                .optional()?;
            if let Some(app) = existing {
                return Ok(app);
            }
            let (app_id, app_key, app_secret) = generate();
            let new = NewRealtimeApp {
                app_id: &app_id,
                app_key: &app_key,
                app_secret: &app_secret,
                created_at: crate::models::now(),
            };
            crate::insert_returning!(conn, realtime_apps::table, &new, RealtimeApp)
        })
    }
}
