//! The contact list at scale: a team with 100,000 contacts with messages
//! (any SMS from a new number creates one) pages through `GET /api/contacts`
//! on SQLite and (with `POSTGRES_TEST_URL`) on PostgreSQL, where it used to
//! answer 500 past 32,766 contacts with messages (one bound parameter per
//! contact). Also: the cursor's validation, contacts moving while a client
//! pages, and the viewers list's id lookup past the same bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use api_server::models::contact::Contact;
use common::{spawn_app, spawn_hosted, Backend, FakePusher, TestApp};
use diesel::connection::SimpleConnection;
use serde_json::{json, Value};

backend_tests!(
    a_team_with_100000_contacts_pages_most_recent_first_without_gaps_or_duplicates,
    invalid_contact_paging_parameters_are_400,
    pages_end_without_next_before_and_limits_apply,
    contacts_moving_while_a_client_pages_are_never_shown_twice,
    an_older_touch_never_moves_a_contact_back,
    viewers_past_the_bound_parameter_limit_answer,
);

/// Contacts seeded in the scale test.
const CONTACTS: i64 = 100_000;
/// Seeded contacts' ids are `ID_OFFSET + i` for `i` in `1..=CONTACTS`.
const ID_OFFSET: i64 = 1_000;
/// Base of the seeded activity times: 2026-01-01T00:00:00Z.
const BASE_SECS: i64 = 1_767_225_600;

/// Seconds after the base of contact `i`'s activity: a permutation of `i`
/// folded in two, so activity order is unrelated to id order and every
/// time is shared by exactly two contacts (ties are ordered by id).
fn activity(i: i64) -> i64 {
    (i * 7919) % 100_000 % 50_000
}

/// The list's order key of contact `i`: newest first, then highest id.
fn key(i: i64) -> (i64, i64) {
    (activity(i), ID_OFFSET + i)
}

/// Inserts `CONTACTS` contacts of team one, each with an unread inbound
/// message and a newer outbound reply (the replies inserted in the reverse
/// order, so message ids do not follow contact ids), and ten newer contacts
/// of the other team, all in a few set-based statements.
fn seed(app: &TestApp) {
    let team = app.fx.team;
    let other = app.fx.other_team;
    let mut conn = app.db.connect();
    let (series, at) = match app.db.backend {
        Backend::Sqlite => (
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {CONTACTS})"
            ),
            "datetime('2026-01-01 00:00:00', '+' || ((i * 7919) % 100000 % 50000) || ' seconds')",
        ),
        Backend::Postgres => (
            format!("WITH n(i) AS (SELECT generate_series(1, {CONTACTS})::bigint)"),
            "TIMESTAMP '2026-01-01 00:00:00' + ((i * 7919) % 100000 % 50000) * INTERVAL '1 second'",
        ),
    };
    let minute_before = match app.db.backend {
        Backend::Sqlite => "datetime(updated_at, '-60 seconds')",
        Backend::Postgres => "updated_at - INTERVAL '60 seconds'",
    };
    let mut sql = format!(
        "BEGIN;
         {series}
         INSERT INTO contacts (id, team_id, name, phone, created_at, updated_at, unread_count)
         SELECT {ID_OFFSET} + i, {team}, 'Contact ' || i, '+1555' || (1000000 + i),
                '2026-01-01 00:00:00', {at}, 1
         FROM n ORDER BY i;
         INSERT INTO messages (team_id, contact_id, direction, body, media, status, created_at)
         SELECT {team}, id, 'inbound', 'hello ' || (id - {ID_OFFSET}), '[]', 'received', {minute_before}
         FROM contacts WHERE team_id = {team} ORDER BY id;
         INSERT INTO messages (team_id, contact_id, direction, body, media, status, created_at)
         SELECT {team}, id, 'outbound', 'reply ' || (id - {ID_OFFSET}), '[]', 'delivered', updated_at
         FROM contacts WHERE team_id = {team} ORDER BY id DESC;
         INSERT INTO contacts (id, team_id, name, phone, created_at, updated_at)
         SELECT {ID_OFFSET} + {CONTACTS} + i, {other}, 'Other ' || i, '+1666' || (1000000 + i),
                '2026-01-01 00:00:00', '2027-01-01 00:00:00'
         FROM (SELECT id - {ID_OFFSET} AS i FROM contacts
               WHERE team_id = {team} AND id <= {ID_OFFSET} + 10) AS s;
         COMMIT;"
    );
    if app.db.backend == Backend::Postgres {
        // Ids were given explicitly: the sequence must go past them.
        sql.push_str("SELECT setval(pg_get_serial_sequence('contacts', 'id'), (SELECT max(id) FROM contacts));");
    }
    conn.batch_execute(&sql).expect("seed contacts");
}

/// A client of its own for the requests after [`seed`]: the seed blocks the
/// test's runtime, the server's too, for longer than the server's
/// keep-alive (5 s), so the connection `app.client` keeps from the logins
/// may be closed just as the next request goes out on it.
struct After<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
}

impl<'a> After<'a> {
    fn seed(app: &'a TestApp) -> Self {
        seed(app);
        After {
            app,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    async fn get(&self, path: &str, token: &str) -> common::Resp {
        common::read(self.client.get(self.app.url(path)).bearer_auth(token)).await
    }
}

/// The seeded `i` of a listed contact, checking its fields on the way.
fn checked_i(contact: &Value) -> i64 {
    let id: i64 = contact["id"].as_str().unwrap().parse().unwrap();
    let i = id - ID_OFFSET;
    assert!(
        (1..=CONTACTS).contains(&i),
        "a contact of another team or not seeded: {contact}"
    );
    assert_eq!(contact["name"], format!("Contact {i}"));
    assert_eq!(contact["unreadCount"], 1, "{contact}");
    let last = &contact["lastMessage"];
    assert_eq!(
        last["body"],
        format!("reply {i}"),
        "the newest message: {contact}"
    );
    assert_eq!(last["direction"], "outbound");
    assert_eq!(last["contactId"], id.to_string().as_str());
    let expected_at = chrono::DateTime::from_timestamp(BASE_SECS + activity(i), 0).unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(last["createdAt"].as_str().unwrap()).unwrap();
    assert_eq!(at, expected_at, "{contact}");
    i
}

async fn a_team_with_100000_contacts_pages_most_recent_first_without_gaps_or_duplicates(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let started = Instant::now();
    let seeded = After::seed(&app);
    eprintln!(
        "{backend:?}: seeded {CONTACTS} contacts in {:?}",
        started.elapsed()
    );
    let token = app.fx.alice.token.clone();

    let mut expected: Vec<i64> = (1..=CONTACTS).collect();
    expected.sort_by_key(|i| std::cmp::Reverse(key(*i)));

    // The first page: 200, the default 50, most recent first, each with its
    // newest message.
    let first = seeded.get("/api/contacts", &token).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let contacts = first.body["contacts"].as_array().unwrap();
    let shown: Vec<i64> = contacts.iter().map(checked_i).collect();
    assert_eq!(shown, expected[..50].to_vec());
    assert!(first.body["nextBefore"].is_string(), "{}", first.text);

    // Walking with `before`: in order, no duplicate, no gap. Pages of 200
    // cover every contact when that is quick (release builds), else the
    // first ones: enough to cross many ties and the 32,766 mark.
    let walk_started = Instant::now();
    let budget = Duration::from_secs(10);
    let mut seen: Vec<i64> = Vec::new();
    let mut before = first.body["nextBefore"].as_str().unwrap().to_owned();
    seen.extend(&shown);
    let mut pages = 1;
    let finished = loop {
        let page = seeded
            .get(&format!("/api/contacts?limit=200&before={before}"), &token)
            .await;
        assert_eq!(page.status, 200, "page {pages}: {}", page.text);
        pages += 1;
        let contacts = page.body["contacts"].as_array().unwrap();
        seen.extend(contacts.iter().map(checked_i));
        match page.body.get("nextBefore") {
            None => {
                assert!(contacts.len() <= 200);
                break true;
            }
            Some(next) => {
                assert_eq!(contacts.len(), 200, "a page before the last is full");
                before = next.as_str().unwrap().to_owned();
            }
        }
        if walk_started.elapsed() > budget && seen.len() > 40_000 {
            break false;
        }
    };
    eprintln!(
        "{backend:?}: walked {} contacts in {pages} pages in {:?} (all: {finished})",
        seen.len(),
        walk_started.elapsed()
    );
    assert!(
        seen.len() > 32_766,
        "the walk crossed SQLite's parameter limit"
    );
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a contact was shown twice");
    assert_eq!(seen, expected[..seen.len()].to_vec());
    if finished {
        assert_eq!(seen.len() as i64, CONTACTS);
    }

    // The other team sees only its ten, and none of team one's.
    let theirs = seeded.get("/api/contacts", &app.fx.mallory.token).await;
    assert_eq!(theirs.status, 200, "{}", theirs.text);
    assert_eq!(theirs.body["contacts"].as_array().unwrap().len(), 10);
    assert!(theirs.body.get("nextBefore").is_none());
}

async fn invalid_contact_paging_parameters_are_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.fx.alice.token.clone();
    for n in 0..3 {
        app.contact(&format!("+1415555013{n}")).await;
    }
    let cursor = |raw: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    };
    let long = "A".repeat(200);
    let cases = [
        "limit=0".to_owned(),
        "limit=201".to_owned(),
        "limit=abc".to_owned(),
        "limit=-1".to_owned(),
        "limit=1e2".to_owned(),
        "limit=99999999999999999999".to_owned(),
        "before=not-a-cursor!".to_owned(),
        "before=12".to_owned(),
        format!("before={}", cursor("abc|def")),
        format!("before={}", cursor("1767225600000000|0")),
        format!("before={}", cursor("1767225600000000|-3")),
        format!("before={}", cursor("1767225600000000|+3")),
        format!("before={}", cursor("1767225600000000")),
        format!("before={}", cursor("99999999999999999999|3")),
        format!("before={}", cursor("9223372036854775807|3")),
        format!("before={long}"),
    ];
    for query in &cases {
        let res = app.get(&format!("/api/contacts?{query}"), &token).await;
        assert_eq!(res.status, 400, "{query}: {}", res.text);
        let code = res.error_code();
        let param = query.split('=').next().unwrap();
        assert_eq!(code, format!("invalid_{param}"), "{query}");
    }
    for query in [
        "limit=1",
        "limit=200",
        "limit=",
        "before=",
        "limit=2&before=",
    ] {
        let res = app.get(&format!("/api/contacts?{query}"), &token).await;
        assert_eq!(res.status, 200, "{query}: {}", res.text);
    }
    // A well-formed cursor that names no contact is a place in the order
    // like any other.
    let res = app
        .get(
            &format!("/api/contacts?before={}", cursor("4102444800000000|999999")),
            &token,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["contacts"].as_array().unwrap().len(), 3);
}

async fn pages_end_without_next_before_and_limits_apply(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.fx.alice.token.clone();
    let empty = app.get("/api/contacts", &token).await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body, json!({ "contacts": [] }));

    // 250 contacts, no messages: past the default page and the largest one.
    let team = app.fx.team;
    let mut conn = app.db.connect();
    let series = match backend {
        Backend::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 250)"
        }
        Backend::Postgres => "WITH n(i) AS (SELECT generate_series(1, 250))",
    };
    conn.batch_execute(&format!(
        "{series} INSERT INTO contacts (team_id, name, phone, created_at, updated_at)
         SELECT {team}, 'C' || i, '+1777' || (1000000 + i), '2026-01-01 00:00:00', '2026-01-01 00:00:00' FROM n"
    ))
    .unwrap();
    drop(conn);
    let count = |res: &common::Resp| res.body["contacts"].as_array().unwrap().len();

    let default = app.get("/api/contacts", &token).await;
    assert_eq!(count(&default), 50);
    assert!(default.body["nextBefore"].is_string());
    assert!(default.body["contacts"][0]["lastMessage"].is_null());
    let largest = app.get("/api/contacts?limit=200", &token).await;
    assert_eq!(count(&largest), 200);
    let before = largest.body["nextBefore"].as_str().unwrap();
    let rest = app
        .get(&format!("/api/contacts?limit=200&before={before}"), &token)
        .await;
    assert_eq!(count(&rest), 50);
    assert!(rest.body.get("nextBefore").is_none(), "{}", rest.text);
    // Every time is the same here: ids alone order them.
    let ids: Vec<i64> = largest.body["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest.body["contacts"].as_array().unwrap())
        .map(|c| c["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 250);

    // A page exactly as long as what is left is the last one.
    let exact = app
        .get(&format!("/api/contacts?limit=50&before={before}"), &token)
        .await;
    assert_eq!(count(&exact), 50);
    assert!(exact.body.get("nextBefore").is_none(), "{}", exact.text);
}

async fn contacts_moving_while_a_client_pages_are_never_shown_twice(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.fx.alice.token.clone();
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(app.contact(&format!("+1415555014{n}")).await);
    }
    // Created in order: the newest first.
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let list = |res: &common::Resp| -> Vec<String> {
        res.body["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let page1 = app.get("/api/contacts?limit=3", &token).await;
    assert_eq!(list(&page1), newest_first[..3].to_vec());
    // Activity while the client holds the cursor: a contact it has not
    // reached yet, and one it has seen, both move to the top.
    let moved_ahead = newest_first[7].clone();
    let seen_already = newest_first[1].clone();
    app.send_message(&token, &moved_ahead, "news").await;
    app.send_message(&token, &seen_already, "more news").await;

    let mut walked = list(&page1);
    let mut before = page1.body["nextBefore"].as_str().unwrap().to_owned();
    let mut pages = 1;
    loop {
        let page = app
            .get(&format!("/api/contacts?limit=3&before={before}"), &token)
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        walked.extend(list(&page));
        pages += 1;
        assert!(pages <= 10, "the walk does not end");
        match page.body.get("nextBefore") {
            Some(next) => before = next.as_str().unwrap().to_owned(),
            None => break,
        }
    }
    // The walk goes on from where it was: the one that moved from ahead of
    // the cursor is not reached again (a contact:updated event and the first
    // page carry it), and nothing is shown twice.
    let expected: Vec<String> = newest_first
        .iter()
        .filter(|id| **id != moved_ahead)
        .cloned()
        .collect();
    assert_eq!(walked, expected);
    let first = app.get("/api/contacts?limit=3", &token).await;
    assert_eq!(
        list(&first),
        vec![
            seen_already.clone(),
            moved_ahead.clone(),
            newest_first[0].clone()
        ]
    );
    assert_eq!(
        first.body["contacts"][0]["lastMessage"]["body"],
        "more news"
    );
}

async fn an_older_touch_never_moves_a_contact_back(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.fx.alice.token.clone();
    let older = app.contact("+14155550151").await;
    let newer = app.contact("+14155550152").await;
    let first = app.get("/api/contacts", &token).await;
    assert_eq!(first.body["contacts"][0]["id"], newer.as_str());
    // A transaction that took its time before the last change but commits
    // after it (two sends racing on PostgreSQL) must not move it back.
    let mut conn = app.db.connect();
    let long_ago = chrono::DateTime::from_timestamp(BASE_SECS, 0)
        .unwrap()
        .naive_utc();
    let changed = Contact::touch(&mut conn, newer.parse().unwrap(), long_ago).unwrap();
    assert_eq!(changed, 0);
    let again = app.get("/api/contacts", &token).await;
    assert_eq!(again.body["contacts"][0]["id"], newer.as_str());
    assert_eq!(again.body["contacts"][1]["id"], older.as_str());
}

async fn viewers_past_the_bound_parameter_limit_answer(backend: Backend) {
    let fake = FakePusher::start().await;
    let app = spawn_hosted(backend, &fake).await;
    let contact = app.contact("+14155550161").await;
    let channel = format!("presence-contact-{contact}");
    // What a self-hosted server's users query may answer (hosted Pusher and
    // the embedded server cap a channel at 100): more user ids than SQLite
    // takes as bound parameters in one statement (32,766; PostgreSQL binds
    // the list as one array), ours among them.
    let fx = &app.fx;
    let ids: Vec<String> = (1_000_000..1_070_000_i64)
        .map(|id| id.to_string())
        .chain([fx.alice.sid(), fx.bob.sid(), fx.mallory.sid(), fx.bob.sid()])
        .collect();
    fake.set_presence(&channel, &ids);
    let res = app
        .get(&format!("/api/contacts/{contact}/viewers"), &fx.alice.token)
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    // Only this team's users, each once, by name.
    assert_eq!(
        res.body["users"],
        json!([
            { "id": fx.alice.sid(), "name": "Alice Agent" },
            { "id": fx.bob.sid(), "name": "Bob Agent" },
        ])
    );
}

/// The first page's latency at 100,000 contacts, measured (never asserted):
/// `cargo test --release -p api-server --test contacts_scale -- --ignored --nocapture`
/// (with `POSTGRES_TEST_URL` for PostgreSQL too).
async fn first_page_latency(backend: Backend) {
    let app = spawn_app(backend).await;
    let seeded = After::seed(&app);
    let token = app.fx.alice.token.clone();
    let mut cursor = None;
    for (label, limit) in [("first page, limit 50", 50), ("first page, limit 200", 200)] {
        let path = format!("/api/contacts?limit={limit}");
        // Warm the connection pool and the database's cache.
        for _ in 0..5 {
            assert_eq!(seeded.get(&path, &token).await.status, 200);
        }
        let mut times: Vec<Duration> = Vec::new();
        for _ in 0..200 {
            let res = seeded.get(&path, &token).await;
            assert_eq!(res.status, 200);
            cursor = res.body["nextBefore"].as_str().map(str::to_owned);
            times.push(res.elapsed);
        }
        report(backend, label, &mut times);
    }
    // A page deep in the list (after the first 200) costs the same.
    let path = format!("/api/contacts?before={}", cursor.unwrap());
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..200 {
        let res = seeded.get(&path, &token).await;
        assert_eq!(res.status, 200);
        times.push(res.elapsed);
    }
    report(backend, "second page, limit 50", &mut times);
}

fn report(backend: Backend, label: &str, times: &mut [Duration]) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "{backend:?} {label}: median {:?}, p95 {:?}, max {:?} ({} requests)",
        at(0.5),
        at(0.95),
        at(1.0),
        times.len()
    );
}

mod first_page_latency_at_100000_contacts {
    #[actix_web::test]
    #[ignore = "a measurement: run it in a release build with --ignored --nocapture"]
    async fn sqlite() {
        super::first_page_latency(crate::common::Backend::Sqlite).await;
    }

    #[actix_web::test]
    #[ignore = "a measurement: run it in a release build with --ignored --nocapture"]
    async fn postgres() {
        if crate::common::postgres_url().is_some() {
            super::first_page_latency(crate::common::Backend::Postgres).await;
        }
    }
}
