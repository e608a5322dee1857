//! Migrations applied to a database that already holds data: the unread
//! counts kept on contacts start out equal to the messages' own count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestDb};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

const INIT: &str = include_str!("../../../migrations/sqlite/2026-11-25-000001_init/up.sql");
const EARLY_STATUSES: &str =
    include_str!("../../../migrations/sqlite/2026-11-25-000002_early_statuses/up.sql");

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    unread_count: i64,
}

#[test]
fn unread_counts_are_backfilled_from_the_messages_of_an_existing_database() {
    let db = TestDb::new(Backend::Sqlite);
    let mut conn = diesel::SqliteConnection::establish(&db.url).unwrap();
    // The database as the first two migrations left it, with messages in it.
    conn.batch_execute(INIT).unwrap();
    conn.batch_execute(EARLY_STATUSES).unwrap();
    conn.batch_execute(
        "CREATE TABLE __diesel_schema_migrations (
             version VARCHAR(50) PRIMARY KEY NOT NULL,
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
         INSERT INTO __diesel_schema_migrations (version) VALUES ('20261125000001'), ('20261125000002');
         INSERT INTO teams (id, name, phone_number, created_at) VALUES (1, 'Acme', '+14155550100', '2026-11-25 00:00:00');
         INSERT INTO contacts (id, team_id, name, phone, created_at, updated_at) VALUES
             (1, 1, 'Busy', '+14155550101', '2026-11-25 00:00:00', '2026-11-25 00:00:00'),
             (2, 1, 'Quiet', '+14155550102', '2026-11-25 00:00:00', '2026-11-25 00:00:00');
         INSERT INTO messages (team_id, contact_id, direction, body, media, status, created_at, read_at) VALUES
             (1, 1, 'inbound', 'a', '[]', 'received', '2026-11-25 00:00:01', NULL),
             (1, 1, 'inbound', 'b', '[]', 'received', '2026-11-25 00:00:02', NULL),
             (1, 1, 'inbound', 'c', '[]', 'received', '2026-11-25 00:00:03', '2026-11-25 00:01:00'),
             (1, 1, 'outbound', 'd', '[]', 'delivered', '2026-11-25 00:00:04', NULL),
             (1, 2, 'outbound', 'e', '[]', 'delivered', '2026-11-25 00:00:05', NULL);",
    )
    .unwrap();
    drop(conn);

    let applied = api_server::db::migrate(&db.url).unwrap();
    assert!(applied >= 1, "the unread count migration ran");

    let mut conn = db.connect();
    let counts: Vec<Count> = diesel::sql_query("SELECT id, unread_count FROM contacts ORDER BY id")
        .load(&mut conn)
        .unwrap();
    let counts: Vec<(i64, i64)> = counts.iter().map(|c| (c.id, c.unread_count)).collect();
    assert_eq!(counts, vec![(1, 2), (2, 0)]);
}

#[test]
fn reading_messages_the_count_never_knew_of_leaves_it_at_zero() {
    let db = TestDb::new(Backend::Sqlite);
    api_server::db::migrate(&db.url).unwrap();
    let mut conn = db.connect();
    // Inbound messages written around the counter, as an older build sharing
    // the database would write them.
    conn.batch_execute(
        "INSERT INTO teams (id, name, phone_number, created_at) VALUES (1, 'Acme', '+14155550100', '2026-11-25 00:00:00');
         INSERT INTO users (id, team_id, email, name, password_hash, created_at) VALUES (1, 1, 'a@example.com', 'A', 'x', '2026-11-25 00:00:00');
         INSERT INTO contacts (id, team_id, name, phone, created_at, updated_at) VALUES (1, 1, 'Busy', '+14155550101', '2026-11-25 00:00:00', '2026-11-25 00:00:00');
         INSERT INTO messages (id, team_id, contact_id, direction, body, media, status, created_at) VALUES
             (1, 1, 1, 'inbound', 'a', '[]', 'received', '2026-11-25 00:00:01'),
             (2, 1, 1, 'inbound', 'b', '[]', 'received', '2026-11-25 00:00:02');",
    )
    .unwrap();
    let at = chrono::NaiveDate::from_ymd_opt(2026, 11, 25)
        .unwrap()
        .and_hms_opt(1, 0, 0)
        .unwrap();
    for id in [1, 2] {
        assert!(api_server::models::message::Message::mark_read(&mut conn, id, 1, at).unwrap());
    }
    let counts: Vec<Count> = diesel::sql_query("SELECT id, unread_count FROM contacts")
        .load(&mut conn)
        .unwrap();
    assert_eq!(counts[0].unread_count, 0, "not below zero");
}
