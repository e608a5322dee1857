//! The HTTP layer against hostile or careless clients: bounded metrics
//! labels, request ids, the JSON error shape for every error, `/metrics`
//! behind a token or on its own address, start-up warnings in `doctor`,
//! the clean-up of rows past their time, and deadlines for slow clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, json_body, spawn_app, spawn_with, Backend, Options, TestDb};
use diesel::RunQueryDsl;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

backend_tests!(cleanup_removes_rows_past_their_time_and_keeps_fresh_ones);

fn series(metrics: &str, name: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(str::to_owned)
        .collect()
}

// ------------------------------------------------------------ metrics labels

#[actix_web::test]
async fn metrics_labels_stay_bounded_whatever_methods_and_paths_clients_send() {
    let app = spawn_app(Backend::Sqlite).await;
    for n in 0..150 {
        let method = Method::from_bytes(format!("M{n}{}", "X".repeat(500)).as_bytes()).unwrap();
        let res = app.send(app.req(method, "/api/health")).await;
        assert_eq!(res.status, 405, "{}", res.text);
        let res = app.get_anon(&format!("/nope/{n}")).await;
        assert_eq!(res.status, 404);
        let res = app.get_anon(&format!("/api/nope-{n}")).await;
        assert_eq!(res.status, 404);
    }
    let alice = app.fx.alice.token.clone();
    assert_eq!(app.get("/api/contacts/424242", &alice).await.status, 404);

    let metrics = app.metrics().await;
    let requests = series(&metrics, "http_requests_total");
    assert!(
        requests.len() <= 12,
        "a handful of series, whatever was sent: {requests:#?}"
    );
    assert!(
        requests.iter().any(|l| l.contains(r#"method="OTHER""#)
            && l.contains(r#"route="/api/health""#)
            && l.contains(r#"status="405""#)),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains(r#"route="unmatched""#) && l.contains(r#"status="404""#)),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains(r#"route="/api/contacts/{id}""#)),
        "the route's pattern, not its path: {requests:#?}"
    );
    assert!(
        !metrics.contains("nope") && !metrics.contains("424242") && !metrics.contains("XXXX"),
        "no raw path or method in the metrics"
    );
    assert!(
        metrics.len() < 64 * 1024,
        "metrics stay small: {} bytes",
        metrics.len()
    );
}

// ------------------------------------------------------------ request ids

#[actix_web::test]
async fn x_request_id_is_echoed_only_when_it_is_short_and_plain() {
    let app = spawn_app(Backend::Sqlite).await;
    let echoed = |given: &'static str| {
        let app = &app;
        async move {
            let res = app
                .send(
                    app.req(Method::GET, "/api/health")
                        .header("x-request-id", given),
                )
                .await;
            res.headers
                .get("x-request-id")
                .expect("every answer has a request id")
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    let sixty_four: &'static str = Box::leak("7".repeat(64).into_boxed_str());
    for good in ["abc-123_x.Y", "a", sixty_four] {
        assert_eq!(echoed(good).await, good);
    }
    let long: &'static str = Box::leak("a".repeat(65).into_boxed_str());
    for bad in ["has space", "semi;colon", "quote\"d", long, "ünïcode"] {
        let id = echoed(bad).await;
        assert_ne!(id, bad);
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "a generated id instead of {bad:?}: {id:?}"
        );
    }
    let res = app.get_anon("/api/health").await;
    assert!(res.headers.get("x-request-id").is_some());
}

// ------------------------------------------------------------ error shape

#[actix_web::test]
async fn every_error_answers_in_the_json_shape() {
    let app = spawn_app(Backend::Sqlite).await;
    let alice = app.fx.alice.token.clone();
    let check = |res: common::Resp, status: u16, code: &str| {
        assert_eq!(res.status, status, "{}", res.text);
        assert_eq!(res.error_code(), code, "{}", res.text);
        assert!(
            res.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json")),
            "{:?}",
            res.headers
        );
    };

    // Unknown routes, in and outside /api.
    check(app.get_anon("/nope").await, 404, "not_found");
    check(app.get_anon("/api/nope").await, 404, "not_found");
    // A known route with the wrong method: actix's own 405 had no body.
    let res = app
        .send(app.req(Method::DELETE, "/api/contacts").bearer_auth(&alice))
        .await;
    let allow = res
        .headers
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    check(res, 405, "method_not_allowed");
    assert!(allow.is_some_and(|a| a.contains("GET") && a.contains("POST")));
    check(
        app.send(app.req(Method::PUT, "/metrics")).await,
        405,
        "method_not_allowed",
    );
    // An oversize JSON body.
    let big = json!({ "name": "x".repeat(100 * 1024), "phone": "+14155550100" });
    check(
        app.send(json_body(
            app.req(Method::POST, "/api/contacts").bearer_auth(&alice),
            &big,
        ))
        .await,
        413,
        "payload_too_large",
    );
    // Malformed JSON, and the wrong content type.
    check(
        app.send(
            app.req(Method::POST, "/api/contacts")
                .bearer_auth(&alice)
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await,
        400,
        "invalid_json",
    );
    check(
        app.send(
            app.req(Method::POST, "/api/contacts")
                .bearer_auth(&alice)
                .header("content-type", "text/plain")
                .body(r#"{"name":"a","phone":"+14155550100"}"#),
        )
        .await,
        415,
        "unsupported_media_type",
    );
    // Raw bodies (webhooks, channel authorization) past their limit: actix's
    // 413 was plain text, and the embedded server's 1 MiB limit applied here.
    for path in [
        "/api/webhooks/twilio",
        "/api/webhooks/pusher",
        "/api/pusher/auth",
    ] {
        check(
            app.send(
                app.req(Method::POST, path)
                    .bearer_auth(&alice)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("a=".to_owned() + &"x".repeat(300 * 1024)),
            )
            .await,
            413,
            "payload_too_large",
        );
    }
    // The embedded realtime server's HTTP API keeps its own 1 MiB limit on
    // its own routes, and its own (Pusher) words.
    let half_mib = app
        .send(
            app.req(Method::POST, "/apps/1/events")
                .header("content-type", "application/json")
                .body("x".repeat(512 * 1024)),
        )
        .await;
    assert_ne!(half_mib.status, 413, "{}", half_mib.text);
    let two_mib = app
        .send(
            app.req(Method::POST, "/apps/1/events")
                .header("content-type", "application/json")
                .body("x".repeat(2 * 1024 * 1024)),
        )
        .await;
    assert_eq!(two_mib.status, 413, "{}", two_mib.text);
}

// ------------------------------------------------------------ /metrics access

#[actix_web::test]
async fn metrics_token_is_required_when_set() {
    let mut options = Options::embedded(Backend::Sqlite);
    options
        .extra
        .push(("METRICS_TOKEN".into(), "s3cret-metrics-token".into()));
    let app = spawn_with(options).await;

    let missing = app.get_anon("/metrics").await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.error_code(), "unauthorized");
    for wrong in ["wrong", "s3cret-metrics-toke", "s3cret-metrics-token2", ""] {
        let res = app.get("/metrics", wrong).await;
        assert_eq!(res.status, 401, "{wrong:?}");
        assert_eq!(res.error_code(), "unauthorized");
        assert!(!res.text.contains("http_requests_total"));
    }
    let basic = app
        .send(
            app.req(Method::GET, "/metrics")
                .basic_auth("s3cret-metrics-token", Some("")),
        )
        .await;
    assert_eq!(basic.status, 401);
    let right = app.get("/metrics", "s3cret-metrics-token").await;
    assert_eq!(right.status, 200, "{}", right.text);
    assert!(right.text.contains("http_requests_total"));
}

#[actix_web::test]
async fn metrics_addr_serves_metrics_alone_and_the_main_port_none() {
    let metrics_port = free_port();
    let mut options = Options::embedded(Backend::Sqlite);
    options
        .extra
        .push(("METRICS_ADDR".into(), format!("127.0.0.1:{metrics_port}")));
    let app = spawn_with(options).await;

    let main = app.get_anon("/metrics").await;
    assert_eq!(main.status, 404, "{}", main.text);
    assert_eq!(main.error_code(), "not_found");
    assert_eq!(app.get_anon("/api/health").await.status, 200);

    let metrics_url = format!("http://127.0.0.1:{metrics_port}");
    let res = common::read(app.client.get(format!("{metrics_url}/metrics"))).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.text.contains("http_requests_total"));
    assert!(res.text.contains("outbox_depth"));
    for other in ["/api/health", "/", "/metrics/", "/apps/1/channels"] {
        let res = common::read(app.client.get(format!("{metrics_url}{other}"))).await;
        assert_eq!(res.status, 404, "{other}: {}", res.text);
        assert_eq!(res.error_code(), "not_found");
    }
}

// ------------------------------------------------------------ doctor

fn doctor(db: &TestDb, vars: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api-server"));
    command
        .arg("doctor")
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir());
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = command.output().expect("the binary runs");
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "a warning is not a failure: {err}");
    err
}

#[actix_web::test]
async fn doctor_warns_when_reachable_beyond_loopback_without_https_or_a_metrics_token() {
    let db = TestDb::new(Backend::Sqlite);

    let exposed = doctor(&db, &[("HOST", "0.0.0.0")]);
    let cookies = exposed
        .lines()
        .find(|l| l.starts_with("warn cookies"))
        .unwrap_or_else(|| panic!("a line on cookies: {exposed}"));
    assert!(
        cookies.contains("PUBLIC_URL") && cookies.contains("https"),
        "{cookies}"
    );
    assert!(
        exposed
            .lines()
            .any(|l| l.starts_with("warn metrics") && l.contains("METRICS_TOKEN")),
        "{exposed}"
    );

    let behind_tls = doctor(
        &db,
        &[
            ("HOST", "0.0.0.0"),
            ("PUBLIC_URL", "https://inbox.example.com"),
            ("METRICS_TOKEN", "t0ken"),
        ],
    );
    assert!(!behind_tls.contains("warn"), "{behind_tls}");

    let private_metrics = doctor(
        &db,
        &[
            ("HOST", "::"),
            ("PUBLIC_URL", "https://inbox.example.com"),
            ("METRICS_ADDR", "127.0.0.1:9100"),
        ],
    );
    assert!(!private_metrics.contains("warn"), "{private_metrics}");

    for loopback in ["127.0.0.1", "127.1.2.3", "::1", "localhost"] {
        let err = doctor(
            &db,
            &[("HOST", loopback), ("PUBLIC_URL", "http://localhost:3000")],
        );
        assert!(!err.contains("warn"), "{loopback}: {err}");
    }
}

// ------------------------------------------------------------ clean-up

async fn cleanup_removes_rows_past_their_time_and_keeps_fresh_ones(backend: Backend) {
    use api_server::db::schema::{early_statuses, idempotency_keys, sessions};
    use api_server::models::early_status::EarlyStatus;
    use api_server::models::idempotency::{self, NewIdempotencyKey};
    use api_server::models::session::{NewSession, Session};
    use diesel::QueryDsl;

    let app = spawn_app(backend).await;
    let now = api_server::models::now();
    let day = chrono::Duration::hours(24);
    let contact = app.contact("+14155550177").await;
    let message = app.insert_inbound(app.fx.team, &contact, "kept for keys");
    let mut conn = app.db.connect();
    let sessions_before: i64 = sessions::table.count().get_result(&mut conn).unwrap();

    // More old keys than one batch deletes, and a fresh one.
    let old_keys = api_server::cleanup::BATCH as usize * 2 + 17;
    for n in 0..old_keys {
        idempotency::remember(
            &mut conn,
            &NewIdempotencyKey {
                user_id: app.fx.alice.id,
                key: &format!("old-{n}"),
                message_id: message,
                created_at: now - day - chrono::Duration::minutes(1),
            },
        )
        .unwrap();
    }
    idempotency::remember(
        &mut conn,
        &NewIdempotencyKey {
            user_id: app.fx.alice.id,
            key: "fresh",
            message_id: message,
            created_at: now - chrono::Duration::hours(1),
        },
    )
    .unwrap();
    for (hash, expires_at) in [
        ("expired-1", now - chrono::Duration::seconds(1)),
        ("expired-2", now - day * 30),
        ("live", now + chrono::Duration::hours(1)),
    ] {
        Session::create(
            &mut conn,
            &NewSession {
                user_id: app.fx.bob.id,
                token_hash: hash,
                expires_at,
                created_at: now - day,
            },
        )
        .unwrap();
    }
    for (sid, age) in [
        ("SMold", day + chrono::Duration::minutes(1)),
        ("SMfresh", chrono::Duration::minutes(5)),
    ] {
        diesel::insert_into(early_statuses::table)
            .values(&EarlyStatus {
                twilio_sid: sid.to_owned(),
                status: "delivered".to_owned(),
                error_code: None,
                created_at: now - age,
            })
            .execute(&mut conn)
            .unwrap();
    }

    // Login failures: one forgotten a minute ago, one still counting.
    for (key, expires_at) in [
        ("a:forgotten", now - chrono::Duration::minutes(1)),
        ("a:counting", now + chrono::Duration::minutes(30)),
    ] {
        api_server::models::login_failure::LoginFailure::record(
            &mut conn,
            key,
            expires_at - chrono::Duration::hours(1),
            expires_at,
        )
        .unwrap();
    }

    let swept = api_server::cleanup::sweep(&app.state, now).await.unwrap();
    assert_eq!(
        swept,
        api_server::cleanup::Swept {
            sessions: 2,
            idempotency_keys: old_keys,
            early_statuses: 1,
            login_failures: 1,
        }
    );
    let login_keys: Vec<String> = api_server::db::schema::login_failures::table
        .select(api_server::db::schema::login_failures::key_digest)
        .load(&mut conn)
        .unwrap();
    assert_eq!(login_keys, vec!["a:counting".to_owned()]);

    let keys: Vec<String> = idempotency_keys::table
        .select(idempotency_keys::key)
        .load(&mut conn)
        .unwrap();
    assert_eq!(keys, vec!["fresh".to_owned()]);
    let hashes: Vec<String> = sessions::table
        .select(sessions::token_hash)
        .load(&mut conn)
        .unwrap();
    assert!(hashes.contains(&"live".to_owned()));
    assert!(!hashes.iter().any(|h| h.starts_with("expired")));
    assert_eq!(
        hashes.len() as i64,
        sessions_before + 1,
        "logins' sessions kept"
    );
    let sids: Vec<String> = early_statuses::table
        .select(early_statuses::twilio_sid)
        .load(&mut conn)
        .unwrap();
    assert_eq!(sids, vec!["SMfresh".to_owned()]);
    // The seeded users' sessions still work.
    assert_eq!(app.get("/api/me", &app.fx.alice.token).await.status, 200);
    // A second sweep finds nothing.
    let again = api_server::cleanup::sweep(&app.state, now).await.unwrap();
    assert_eq!(again.total(), 0);
}

/// The clean-up's batches read no more than they delete: no `ORDER BY`,
/// which on `early_statuses.created_at` (no index) sorted the whole table
/// for every batch of 500.
#[actix_web::test]
async fn cleanup_batches_sort_nothing() {
    use diesel::connection::{Connection, InstrumentationEvent};
    let app = spawn_app(Backend::Sqlite).await;
    let mut conn = app.db.connect();
    let statements = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = statements.clone();
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            seen.lock().unwrap().push(query.to_string());
        }
    });
    let later = api_server::models::now() + chrono::Duration::days(365);
    api_server::models::session::Session::delete_expired(&mut conn, later, 10).unwrap();
    api_server::models::idempotency::delete_older_than(&mut conn, later, 10).unwrap();
    api_server::models::early_status::EarlyStatus::delete_older_than(&mut conn, later, 10).unwrap();
    api_server::models::login_failure::LoginFailure::delete_expired(&mut conn, later, 10).unwrap();
    let statements = statements.lock().unwrap().clone();
    assert!(statements.len() >= 8, "{statements:#?}");
    for statement in &statements {
        assert!(
            !statement.to_uppercase().contains("ORDER BY"),
            "{statement}"
        );
    }
}

// ------------------------------------------------------------ slow clients

/// Reads until the server closes the connection, at most `limit`; answers
/// what was read, or `None` if the connection was still open then.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + limit;
    loop {
        let mut buf = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one answer with a `Content-Length` body.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("readable");
        assert!(n > 0, "closed before the answer: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// How much later than its deadline a slow client may be cut off here: the
/// watchdog wakes at the deadline, and a loaded test machine adds a little.
const SLACK: Duration = Duration::from_secs(3);

/// Asserts that a slow client was cut off at its `deadline` (counted from
/// when it began to be late), neither before it nor much after.
fn within(took: Duration, deadline: Duration) {
    assert!(
        took + Duration::from_millis(500) >= deadline,
        "cut off after {took:?}, before the deadline of {deadline:?}"
    );
    assert!(
        took <= deadline + SLACK,
        "cut off after {took:?}, well past the deadline of {deadline:?}"
    );
}

async fn served_meanwhile(app: &common::TestApp) {
    let started = Instant::now();
    let res = app.get_anon("/api/health").await;
    assert_eq!(res.status, 200);
    println!("a normal request meanwhile took {:?}", started.elapsed());
}

#[actix_web::test]
async fn half_a_first_request_head_is_cut_off_while_others_are_served() {
    use api_server::slow_clients::HEADER_TIMEOUT;
    let app = spawn_app(Backend::Sqlite).await;
    let mut slow = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    served_meanwhile(&app).await;
    let got = read_until_closed(&mut slow, HEADER_TIMEOUT + SLACK)
        .await
        .expect("the connection is closed after the header timeout");
    let took = started.elapsed();
    println!("closed after {took:?}");
    within(took, HEADER_TIMEOUT);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[actix_web::test]
async fn half_a_second_request_head_is_cut_off() {
    use api_server::slow_clients::NEXT_REQUEST_TIMEOUT;
    let app = spawn_app(Backend::Sqlite).await;
    let mut slow = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let first = read_answer(&mut slow).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // The deadline counts from the answer just read.
    let answered = Instant::now();
    // actix times the first head only: this one it would wait for forever.
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    served_meanwhile(&app).await;
    read_until_closed(&mut slow, NEXT_REQUEST_TIMEOUT + SLACK)
        .await
        .expect("the connection is closed once the next head is late");
    let took = answered.elapsed();
    println!("closed after {took:?}");
    within(took, NEXT_REQUEST_TIMEOUT);
}

#[actix_web::test]
async fn a_trickled_body_is_cut_off() {
    use api_server::slow_clients::BODY_TIMEOUT;
    let app = spawn_app(Backend::Sqlite).await;
    // A JSON body, and raw bodies (the webhooks, channel authorization),
    // whose late arrival was a 400 before.
    let bearer = format!("Authorization: Bearer {}\r\n", app.fx.alice.token);
    let requests = [
        ("/api/auth/login", "application/json", String::new()),
        ("/api/webhooks/pusher", "application/json", String::new()),
        (
            "/api/webhooks/twilio",
            "application/x-www-form-urlencoded",
            String::new(),
        ),
        (
            "/api/pusher/auth",
            "application/x-www-form-urlencoded",
            bearer,
        ),
    ];
    let mut slow = Vec::new();
    let started = Instant::now();
    for (path, content_type, extra) in requests {
        let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\
             Content-Type: {content_type}\r\nContent-Length: 1000\r\n\r\n{{\"email\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push((path, stream));
    }
    served_meanwhile(&app).await;
    for (path, mut stream) in slow {
        let got = read_until_closed(&mut stream, BODY_TIMEOUT + SLACK)
            .await
            .expect("the connection is answered and closed once the body is late");
        let took = started.elapsed();
        println!("{path}: closed after {took:?}");
        within(took, BODY_TIMEOUT);
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        assert!(
            text.contains(r#""code":"request_timeout""#),
            "{path}: {text}"
        );
    }
}

#[actix_web::test]
async fn a_websocket_outlives_the_deadline_for_the_next_request() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Frame;

    let app = spawn_app(Backend::Sqlite).await;
    let url = format!(
        "ws://127.0.0.1:{}/app/{}?protocol=7&client=js&version=8.4.0",
        app.port,
        app.state.realtime.credentials.key()
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let established = socket.next().await.unwrap().unwrap();
    assert!(established
        .to_text()
        .unwrap()
        .contains("pusher:connection_established"));
    // Idle past the time a connection gets between two requests: the
    // watchdog must have let the upgraded connection go.
    tokio::time::sleep(api_server::slow_clients::NEXT_REQUEST_TIMEOUT + Duration::from_secs(2))
        .await;
    socket
        .send(Frame::Text(
            json!({ "event": "pusher:ping", "data": {} })
                .to_string()
                .into(),
        ))
        .await
        .expect("the socket is still open");
    let pong = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = socket.next().await {
            if let Ok(Frame::Text(text)) = frame {
                if text.as_str().contains("pusher:pong") {
                    return true;
                }
            } else {
                return false;
            }
        }
        false
    })
    .await;
    assert_eq!(pong, Ok(true), "the WebSocket answers after the idle time");
}

// ------------------------------------------------------------ slow downloads

/// The large answer's size: far more than the sockets' buffers hold
/// (Linux lets a send buffer grow to 4 MiB by default).
const LARGE: usize = 32 * 1024 * 1024;

/// The app serving a `len`-byte file as pusher-js: an answer large enough
/// that writing it to a slow reader takes seconds.
async fn app_with_a_large_answer(len: usize) -> (common::TestApp, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("{}.js", common::unique("large_answer")));
    std::fs::write(&path, vec![b'x'; len]).unwrap();
    let mut options = Options::embedded(Backend::Sqlite);
    options
        .extra
        .push(("PUSHER_JS_PATH".into(), path.to_string_lossy().into_owned()));
    (spawn_with(options).await, path)
}

/// A connection with a small receive buffer, so the server can send only
/// as fast as the test reads; the large answer asked for on it.
async fn ask_for_the_large_answer(port: u16) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    stream
        .write_all(b"GET /vendor/pusher.min.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    stream
}

/// Reads the answer's head; answers its `Content-Length` and the body bytes
/// that came with it.
async fn read_head(stream: &mut TcpStream) -> (usize, usize) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .expect("a content length");
            return (length, got.len() - end - 4);
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a head in time")
            .expect("readable");
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Reads the rest of a body of `length` (of which `got` are in), at most
/// `rate` bytes a second (`None`: as fast as it comes), until it is all in
/// or the connection ends; answers the bytes got in all.
async fn read_body(
    stream: &mut TcpStream,
    length: usize,
    mut got: usize,
    rate: Option<f64>,
) -> usize {
    let started = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    while got < length {
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return got,
            Ok(Ok(n)) => got += n,
        }
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(got as f64 / rate);
            tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        }
    }
    got
}

#[actix_web::test]
async fn a_slow_download_goes_on_past_the_deadline_for_the_next_request() {
    let (app, path) = app_with_a_large_answer(LARGE).await;
    let mut stream = ask_for_the_large_answer(app.port).await;
    let started = Instant::now();
    let (length, got) = read_head(&mut stream).await;
    assert_eq!(length, LARGE);
    // 2 MB/s: 16 s, longer than the time a connection gets between two
    // requests, the client taking some of the body all along; more than
    // 10 s of it plus what the kernel buffers (4 MiB here) is left after
    // 10 s, so a cut then would show.
    let got = read_body(&mut stream, length, got, Some(2_000_000.0)).await;
    let took = started.elapsed();
    println!("{got} of {length} bytes in {took:?}");
    assert!(
        took > api_server::slow_clients::NEXT_REQUEST_TIMEOUT,
        "the download outlasted the next-request deadline: {took:?}"
    );
    assert_eq!(got, length, "the whole body, not cut off after {took:?}");
    let _ = std::fs::remove_file(path);
}

#[actix_web::test]
async fn a_client_that_stops_reading_an_answer_is_let_go() {
    let (app, path) = app_with_a_large_answer(LARGE).await;
    let mut stream = ask_for_the_large_answer(app.port).await;
    let (length, got) = read_head(&mut stream).await;
    // Takes nothing for longer than a body may stand still...
    tokio::time::sleep(api_server::slow_clients::WRITE_STALL_TIMEOUT + Duration::from_secs(3))
        .await;
    // ...then reads as fast as it can: only what the sockets held by then.
    let got = read_body(&mut stream, length, got, None).await;
    println!("{got} of {length} bytes");
    assert!(
        got < length / 2,
        "the writing was cut off: {got} of {length}"
    );
    served_meanwhile(&app).await;
    let _ = std::fs::remove_file(path);
}
