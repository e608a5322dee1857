//! The `api-server` command line, run as the built binary: what it prints
//! on stdout (ids alone), what it says on stderr, and its exit status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output};

use common::{eventually, spawn_hosted, Backend, FakePusher, TestDb};
use std::time::Duration;

backend_tests!(
    team_create_prints_only_the_new_id,
    team_create_refuses_a_bad_phone_number_in_words,
    user_create_prints_the_id_and_refuses_a_duplicate_email,
    user_create_refuses_an_unknown_team,
    demo_loads_once_and_then_declines_politely,
    migrate_exits_0_and_is_idempotent,
    doctor_is_happy_in_embedded_mode,
    doctor_checks_pusher_credentials_with_a_signed_call,
    doctor_says_when_the_realtime_service_is_unreachable,
    sms_receive_stores_an_inbound_sms_with_its_events_and_prints_its_id,
    sms_receive_from_a_new_number_creates_the_contact,
    sms_receive_refuses_what_the_webhook_would_not_store,
    sms_receive_is_published_by_a_running_server,
);

/// Runs `api-server args…` with only `vars` in its environment, away from
/// any `.env`.
fn run(db: &TestDb, args: &[&str], vars: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api-server"));
    command
        .args(args)
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir());
    for (name, value) in vars {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the command succeeded and printed one id alone; answers it.
fn printed_id(output: &Output) -> i64 {
    assert!(
        output.status.success(),
        "exit {:?}; stderr: {}",
        output.status,
        stderr(output)
    );
    let out = stdout(output);
    assert!(
        out.ends_with('\n') && out.lines().count() == 1,
        "one line on stdout: {out:?}"
    );
    let id = out.trim_end_matches('\n');
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()),
        "only an id on stdout: {out:?}"
    );
    id.parse().unwrap()
}

fn assert_failed_politely(output: &Output, words: &str) {
    assert!(!output.status.success(), "it must fail");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(output));
    assert!(
        stdout(output).is_empty(),
        "nothing on stdout: {}",
        stdout(output)
    );
    let err = stderr(output);
    assert!(err.contains(words), "stderr says {words:?}: {err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
}

fn team(db: &TestDb, phone: &str) -> i64 {
    printed_id(&run(
        db,
        &[
            "team",
            "create",
            "--name",
            "Support",
            "--phone-number",
            phone,
        ],
        &[],
    ))
}

async fn team_create_prints_only_the_new_id(backend: Backend) {
    let db = TestDb::new(backend);
    let first = team(&db, "+14155550100");
    let second = team(&db, "+14155550101");
    assert!(first > 0);
    assert_ne!(first, second);
    // The id is the team's: a user can be created in it.
    let user = run(
        &db,
        &[
            "user",
            "create",
            "--team",
            &first.to_string(),
            "--email",
            "a@example.com",
            "--name",
            "A",
            "--password",
            "password123",
        ],
        &[],
    );
    printed_id(&user);
}

async fn team_create_refuses_a_bad_phone_number_in_words(backend: Backend) {
    let db = TestDb::new(backend);
    let bad = run(
        &db,
        &["team", "create", "--name", "X", "--phone-number", "12345"],
        &[],
    );
    assert_failed_politely(&bad, "is not a valid phone number");
    team(&db, "+14155550100");
    let taken = run(
        &db,
        &[
            "team",
            "create",
            "--name",
            "Y",
            "--phone-number",
            "(415) 555-0100",
        ],
        &[],
    );
    assert_failed_politely(&taken, "already has the number +14155550100");
}

fn user_create(db: &TestDb, team: i64, email: &str) -> Output {
    run(
        db,
        &[
            "user",
            "create",
            "--team",
            &team.to_string(),
            "--email",
            email,
            "--name",
            "Agent Smith",
            "--password",
            "password123",
        ],
        &[],
    )
}

async fn user_create_prints_the_id_and_refuses_a_duplicate_email(backend: Backend) {
    let db = TestDb::new(backend);
    let team = team(&db, "+14155550100");
    let id = printed_id(&user_create(&db, team, "agent@example.com"));
    assert!(id > 0);
    let again = user_create(&db, team, "Agent@Example.com");
    assert_failed_politely(
        &again,
        "a user with the email agent@example.com already exists",
    );
    let other = printed_id(&user_create(&db, team, "other@example.com"));
    assert_ne!(other, id);
}

async fn user_create_refuses_an_unknown_team(backend: Backend) {
    let db = TestDb::new(backend);
    team(&db, "+14155550100");
    assert_failed_politely(
        &user_create(&db, 999, "x@example.com"),
        "there is no team 999",
    );
    let not_an_id = run(
        &db,
        &[
            "user",
            "create",
            "--team",
            "abc",
            "--email",
            "x@example.com",
            "--name",
            "X",
            "--password",
            "password123",
        ],
        &[],
    );
    assert_failed_politely(&not_an_id, "is not a team id");
}

async fn demo_loads_once_and_then_declines_politely(backend: Backend) {
    let db = TestDb::new(backend);
    let first = run(&db, &["demo"], &[]);
    let team = printed_id(&first);
    assert!(team > 0);
    let told = stderr(&first);
    assert!(
        told.contains("alice@example.com") && told.contains("password123"),
        "it says how to log in: {told}"
    );
    let second = run(&db, &["demo"], &[]);
    assert_failed_politely(&second, "already loaded");
    // The demo's users are there, once.
    let mut conn = db.connect();
    assert_eq!(api_server::models::user::User::count(&mut conn).unwrap(), 2);
}

async fn migrate_exits_0_and_is_idempotent(backend: Backend) {
    let db = TestDb::new(backend);
    let first = run(&db, &["migrate"], &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).is_empty());
    assert!(
        !stderr(&first).contains("0 migration(s) applied")
            && stderr(&first).contains("migration(s) applied"),
        "{}",
        stderr(&first)
    );
    let second = run(&db, &["migrate"], &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("0 migration(s) applied"),
        "{}",
        stderr(&second)
    );
}

async fn doctor_is_happy_in_embedded_mode(backend: Backend) {
    let db = TestDb::new(backend);
    let output = run(&db, &["doctor"], &[]);
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(err.contains("embedded"), "{err}");
    assert!(
        err.contains("no user yet"),
        "it tells a newcomer what to do: {err}"
    );
    assert!(!err.contains("FAIL"), "{err}");
}

fn pusher_vars(fake: &FakePusher, secret: &str, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("PUSHER_APP_ID", fake.app_id.clone()),
        ("PUSHER_KEY", fake.key.clone()),
        ("PUSHER_SECRET", secret.to_owned()),
        ("PUSHER_HOST", "127.0.0.1".to_owned()),
        ("PUSHER_PORT", port.to_string()),
        ("PUSHER_SCHEME", "http".to_owned()),
    ]
}

async fn doctor_checks_pusher_credentials_with_a_signed_call(backend: Backend) {
    let fake = FakePusher::start().await;
    let port = fake.server.address().port();
    let db = TestDb::new(backend);
    let good = run(&db, &["doctor"], &pusher_vars(&fake, &fake.secret, port));
    let err = stderr(&good);
    assert!(good.status.success(), "{err}");
    assert!(err.contains("accepted a signed request"), "{err}");
    fake.assert_all_signed();
    let bad = run(&db, &["doctor"], &pusher_vars(&fake, "wrong-secret", port));
    let err = stderr(&bad);
    assert!(!bad.status.success(), "{err}");
    assert!(err.contains("check PUSHER_KEY and PUSHER_SECRET"), "{err}");
}

async fn doctor_says_when_the_realtime_service_is_unreachable(backend: Backend) {
    let fake = FakePusher::start().await;
    let db = TestDb::new(backend);
    let output = run(
        &db,
        &["doctor"],
        &pusher_vars(&fake, &fake.secret, common::free_port()),
    );
    let err = stderr(&output);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains("could not be reached"), "{err}");
    assert!(err.contains("ok   database"), "the database is fine: {err}");
}

fn sms(db: &TestDb, from: &str, body: &str, to: Option<&str>) -> Output {
    let mut args = vec!["sms", "receive", "--from", from, "--body", body];
    if let Some(to) = to {
        args.extend(["--to", to]);
    }
    run(db, &args, &[])
}

async fn sms_receive_stores_an_inbound_sms_with_its_events_and_prints_its_id(backend: Backend) {
    use api_server::db::schema::messages;
    use api_server::models::message::Message;
    use api_server::models::outbox::OutboxRow;
    use diesel::prelude::*;
    let db = TestDb::new(backend);
    printed_id(&run(&db, &["demo"], &[]));
    // Written as a person would type it: it is stored in E.164 and lands on
    // the demo contact with that number, on the only team's number.
    let id = printed_id(&sms(&db, "(415) 555-0111", "Is my order ready?", None));
    let mut conn = db.connect();
    let message: Message = messages::table
        .find(id)
        .select(Message::as_select())
        .first(&mut conn)
        .unwrap();
    assert_eq!(message.direction, "inbound");
    assert_eq!(message.status, "received");
    assert_eq!(message.body, "Is my order ready?");
    let sid = message.twilio_sid.clone().unwrap();
    assert!(
        sid.starts_with("SM") && sid.len() == 34,
        "a Twilio-shaped SID: {sid}"
    );
    let contact =
        api_server::models::contact::Contact::by_phone(&mut conn, message.team_id, "+14155550111")
            .unwrap()
            .unwrap();
    assert_eq!(contact.id, message.contact_id);
    // message:created, and contact:updated for the team's two users, wait in the outbox.
    let (depth, _) = OutboxRow::depth(&mut conn).unwrap();
    assert_eq!(depth, 2, "message:created and contact:updated");
}

async fn sms_receive_from_a_new_number_creates_the_contact(backend: Backend) {
    use api_server::models::contact::Contact;
    let db = TestDb::new(backend);
    let team = printed_id(&run(&db, &["demo"], &[]));
    let mut conn = db.connect();
    assert!(Contact::by_phone(&mut conn, team, "+14155550177")
        .unwrap()
        .is_none());
    printed_id(&sms(&db, "+14155550177", "Hello?", Some("+14155550100")));
    let contact = Contact::by_phone(&mut conn, team, "+14155550177")
        .unwrap()
        .unwrap();
    assert_eq!(contact.name, "+14155550177");
}

async fn sms_receive_refuses_what_the_webhook_would_not_store(backend: Backend) {
    let db = TestDb::new(backend);
    assert_failed_politely(
        &sms(&db, "+14155550111", "Hi", None),
        "there is no team yet",
    );
    printed_id(&run(&db, &["demo"], &[]));
    assert_failed_politely(
        &sms(&db, "+14155550111", "Hi", Some("+14155550999")),
        "no team has the number +14155550999",
    );
    assert_failed_politely(
        &sms(&db, "not a number", "Hi", None),
        "is not a valid phone number",
    );
    team(&db, "+14155550101");
    assert_failed_politely(&sms(&db, "+14155550111", "Hi", None), "--to");
    use diesel::prelude::*;
    let mut conn = db.connect();
    let stored: i64 = api_server::db::schema::messages::table
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(stored, 0, "nothing stored");
}

async fn sms_receive_is_published_by_a_running_server(backend: Backend) {
    let fake = FakePusher::start().await;
    let app = spawn_hosted(backend, &fake).await;
    let contact = app.contact("+14155550111").await;
    let id = printed_id(&sms(
        &app.db,
        "+14155550111",
        "Played locally",
        Some("+14155550100"),
    ))
    .to_string();
    let channel = format!("private-contact-{contact}");
    let published = eventually(Duration::from_secs(5), || {
        fake.events().iter().any(|e| {
            e.name == "message:created"
                && e.channels == [channel.clone()]
                && e.data["message"]["id"] == id.as_str()
        })
    })
    .await;
    assert!(
        published,
        "the running server published it: {:?}",
        fake.events()
    );
}
