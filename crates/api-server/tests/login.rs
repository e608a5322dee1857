//! Login hardening over a real server: the limit counts failures per client
//! address and per address + email with a growing back-off (so nobody can
//! lock a user out from elsewhere), forwarded addresses are believed only
//! from trusted proxies, password checks hold no database connection, and
//! the CSRF check believes forwarded hosts only from trusted proxies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{json_body, read, spawn_with, Backend, Options, Resp, TestApp, PASSWORD};
use reqwest::Method;
use serde_json::json;

const WRONG: &str = "wrong-password";

/// The app, believing forwarded headers from 127.0.0.1 (the tests' own
/// address), so `X-Forwarded-For` plays clients at other addresses.
async fn behind_proxy(backend: Backend) -> TestApp {
    let mut options = Options::embedded(backend);
    options
        .extra
        .push(("TRUSTED_PROXIES".to_owned(), "127.0.0.1".to_owned()));
    spawn_with(options).await
}

/// A login, with extra headers.
async fn login_with(app: &TestApp, email: &str, password: &str, headers: &[(&str, &str)]) -> Resp {
    let mut request = json_body(
        app.req(Method::POST, "/api/auth/login"),
        &json!({ "email": email, "password": password }),
    );
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.send(request).await
}

/// A login from `address` (through the trusted proxy).
async fn login_from(app: &TestApp, address: &str, email: &str, password: &str) -> Resp {
    login_with(app, email, password, &[("x-forwarded-for", address)]).await
}

/// `Retry-After` of a 429, after checking its JSON shape.
fn retry_after(res: &Resp) -> u64 {
    assert_eq!(res.status, 429, "{}", res.text);
    assert_eq!(res.error_code(), "too_many_requests");
    assert!(res.body["token"].is_null());
    res.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Wrong passwords for `email` from `address` until one is refused with 429
/// (at most 40 tries; the back-off doubles, so even a slow machine gets
/// there): answers the refusal and how many failures were answered 401.
async fn fail_until_refused(app: &TestApp, address: &str, email: &str) -> (Resp, usize) {
    let mut failures = 0;
    for _ in 0..40 {
        let res = login_from(app, address, email, WRONG).await;
        match res.status {
            401 => failures += 1,
            429 => return (res, failures),
            other => panic!("a wrong password answered {other}: {}", res.text),
        }
    }
    panic!("40 wrong passwords from {address} were never refused");
}

#[actix_web::test]
async fn wrong_passwords_from_one_address_do_not_lock_the_victim_out_elsewhere() {
    let app = behind_proxy(Backend::Sqlite).await;
    let mut answers = Vec::new();
    for _ in 0..12 {
        let res = login_from(&app, "198.51.100.1", "alice@example.com", WRONG).await;
        answers.push(res.status);
    }
    assert!(
        answers.iter().all(|s| *s == 401 || *s == 429),
        "{answers:?}"
    );
    assert!(
        answers[..6].iter().all(|s| *s == 401),
        "5 free: {answers:?}"
    );
    assert!(answers.contains(&429), "the limit took hold: {answers:?}");
    // The victim, from their own address, with their password.
    let victim = login_from(&app, "203.0.113.7", "alice@example.com", PASSWORD).await;
    assert_eq!(victim.status, 200, "{}", victim.text);
    assert!(victim.body["token"].is_string());
}

#[actix_web::test]
async fn a_blocked_email_at_an_address_does_not_block_another_email_there() {
    let app = behind_proxy(Backend::Sqlite).await;
    let (refused, failures) = fail_until_refused(&app, "198.51.100.1", "alice@example.com").await;
    assert!(
        failures >= 6,
        "5 free failures, then the back-off: {failures}"
    );
    retry_after(&refused);
    let other = login_from(&app, "198.51.100.1", "bob@example.com", PASSWORD).await;
    assert_eq!(other.status, 200, "{}", other.text);
    // Nor an unknown email: it fails, but is not refused.
    let unknown = login_from(&app, "198.51.100.1", "nobody@example.com", WRONG).await;
    assert_eq!(unknown.status, 401, "{}", unknown.text);
}

#[actix_web::test]
async fn a_success_resets_the_failures_of_its_email_at_its_address() {
    let app = behind_proxy(Backend::Sqlite).await;
    let a = "198.51.100.1";
    for attempt in 1..=4 {
        let res = login_from(&app, a, "alice@example.com", WRONG).await;
        assert_eq!(res.status, 401, "failure {attempt}: {}", res.text);
    }
    let ok = login_from(&app, a, "alice@example.com", PASSWORD).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    // Five free failures again (without the reset, the sixth failure in all
    // would start the back-off and the next attempt would be refused).
    for attempt in 1..=5 {
        let res = login_from(&app, a, "alice@example.com", WRONG).await;
        assert_eq!(
            res.status, 401,
            "failure {attempt} after the success: {}",
            res.text
        );
    }
    // A success is never counted: many in a row are all let through.
    for _ in 0..20 {
        let res = login_from(&app, "198.51.100.2", "bob@example.com", PASSWORD).await;
        assert_eq!(res.status, 200, "{}", res.text);
    }
}

#[actix_web::test]
async fn forged_forwarded_addresses_are_ignored_without_trusted_proxies() {
    // No TRUSTED_PROXIES: every request comes from 127.0.0.1, whatever it says.
    let app = spawn_with(Options::embedded(Backend::Sqlite)).await;
    let mut refused = None;
    for n in 0..40 {
        let forged = format!("203.0.113.{n}");
        let header = if n % 2 == 0 {
            ("x-forwarded-for", forged.clone())
        } else {
            ("forwarded", format!("for={forged}"))
        };
        let res = login_with(&app, "alice@example.com", WRONG, &[(header.0, &header.1)]).await;
        if res.status == 429 {
            refused = Some((n, res));
            break;
        }
        assert_eq!(res.status, 401, "{}", res.text);
    }
    let (n, res) = refused.expect("guesses from 'different' forged addresses are counted together");
    assert!(n >= 6, "refused after {n} failures");
    retry_after(&res);
}

#[actix_web::test]
async fn the_back_off_grows_with_each_failure() {
    let app = behind_proxy(Backend::Sqlite).await;
    let a = "198.51.100.1";
    let mut waits = Vec::new();
    let (refused, _) = fail_until_refused(&app, a, "alice@example.com").await;
    waits.push(retry_after(&refused));
    for _ in 0..2 {
        // Wait out the delay: attempts are refused (and not counted) until
        // one is let through and fails, which starts a longer delay.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let res = login_from(&app, a, "alice@example.com", WRONG).await;
            match res.status {
                401 => break,
                429 => {
                    assert!(Instant::now() < deadline, "never let through again");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("{other}: {}", res.text),
            }
        }
        let next = login_from(&app, a, "alice@example.com", WRONG).await;
        waits.push(retry_after(&next));
    }
    assert!(
        waits.windows(2).all(|w| w[0] <= w[1]) && waits[0] < waits[2],
        "Retry-After grows: {waits:?}"
    );
}

// ---------------------------------------------------------------- several instances

/// Two instances on one database (a SQLite file, or a PostgreSQL database),
/// both believing forwarded addresses from 127.0.0.1.
async fn two_instances(backend: Backend) -> (TestApp, TestApp) {
    let mut options = Options::embedded(backend);
    options
        .extra
        .push(("TRUSTED_PROXIES".to_owned(), "127.0.0.1".to_owned()));
    let a = spawn_with(options.clone()).await;
    let b = common::spawn_instance(a.db.clone(), &options, Some(a.fx.clone())).await;
    (a, b)
}

/// The login limit is the database's, not an instance's: failures on one
/// count on the other, the back-off refuses on both, and a success on one
/// resets the pair for both. (Each instance kept its own counts before:
/// with N instances behind a balancer, N times the guesses.)
async fn login_failures_on_one_instance_count_on_another(backend: Backend) {
    let (a, b) = two_instances(backend).await;
    let x = "198.51.100.1";
    for n in 1..=5 {
        let res = login_from(&a, x, "alice@example.com", WRONG).await;
        assert_eq!(res.status, 401, "failure {n} on A: {}", res.text);
    }
    // The sixth failure, on B, is B's first: it starts the back-off...
    let sixth = login_from(&b, x, "alice@example.com", WRONG).await;
    assert_eq!(sixth.status, 401, "{}", sixth.text);
    // ...which both instances keep, even for the right password.
    for app in [&a, &b] {
        let res = login_from(app, x, "alice@example.com", PASSWORD).await;
        retry_after(&res);
    }
    // Another address is untouched on either.
    let elsewhere = login_from(&a, "203.0.113.7", "alice@example.com", PASSWORD).await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.text);
    // After the delay, a success on B resets the pair for A as well: five
    // free failures again there.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = login_from(&b, x, "alice@example.com", PASSWORD).await;
        match res.status {
            200 => break,
            429 => {
                assert!(Instant::now() < deadline, "never let through again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("{other}: {}", res.text),
        }
    }
    for n in 1..=5 {
        let res = login_from(&a, x, "alice@example.com", WRONG).await;
        assert_eq!(res.status, 401, "failure {n} after the reset: {}", res.text);
    }
    // Nothing of it is kept in an instance's memory past the requests.
    assert_eq!(a.state.login_limiter.keys_in_flight(), 0);
    assert_eq!(b.state.login_limiter.keys_in_flight(), 0);
}

/// The one statement a failure costs, on each backend: it adds one, and
/// starts over at one once the row's expiry has passed.
async fn a_failure_is_one_upsert_that_starts_over_after_expiry(backend: Backend) {
    use api_server::models::login_failure::LoginFailure;
    let db = common::TestDb::new(backend);
    api_server::db::migrate(&db.url).unwrap();
    let mut conn = db.connect();
    let t = api_server::models::now();
    let hour = chrono::Duration::hours(1);
    let failures = |conn: &mut api_server::db::DbConnection, at| {
        LoginFailure::read(conn, &["e:key"], at)
            .unwrap()
            .first()
            .map(|row| row.failures)
    };
    LoginFailure::record(&mut conn, "e:key", t, t + hour).unwrap();
    LoginFailure::record(&mut conn, "e:key", t, t + hour).unwrap();
    assert_eq!(failures(&mut conn, t), Some(2));
    // Past its expiry it reads as none, and the next failure is the first.
    let later = t + hour * 2;
    assert_eq!(failures(&mut conn, later), None);
    LoginFailure::record(&mut conn, "e:key", later, later + hour).unwrap();
    assert_eq!(failures(&mut conn, later), Some(1));
}

backend_tests!(
    login_failures_on_one_instance_count_on_another,
    a_failure_is_one_upsert_that_starts_over_after_expiry
);

// ---------------------------------------------------------------- the pool

/// 30 concurrent wrong-password logins against an argon2 hash, from 30
/// addresses so the limit lets them all through; while they are being
/// verified, `GET /api/me` must answer before a quarter as many of them have
/// finished as the pool has connections. When each verification held a
/// pooled connection, `/api/me` waited for the logins ahead of it to release
/// theirs.
async fn password_checks_hold_no_pooled_connection(backend: Backend) {
    let app = Arc::new(behind_proxy(backend).await);
    // Under half the default cost (a debug build verifies the default in
    // over a second): slow enough that 30 verifications take a while.
    let hash = {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        let params = argon2::Params::new(8192, 1, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"a-real-password", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    };
    {
        let mut conn = app.db.connect();
        api_server::models::user::User::create(
            &mut conn,
            &api_server::models::user::NewUser {
                team_id: app.fx.team,
                email: "slow@example.com",
                name: "Full Cost",
                password_hash: &hash,
                created_at: api_server::models::now(),
            },
        )
        .unwrap();
    }
    let pool_size = app.state.pool.max_size() as usize;
    let finished = Arc::new(AtomicUsize::new(0));
    let mut logins = Vec::new();
    for n in 0..30 {
        let app = app.clone();
        let finished = finished.clone();
        logins.push(tokio::spawn(async move {
            let address = format!("198.51.100.{n}");
            let res = login_from(&app, &address, "slow@example.com", WRONG).await;
            finished.fetch_add(1, Ordering::SeqCst);
            res
        }));
    }
    // The flood is under way: password checks fill the verifier, every
    // permit taken and more waiting (or, were they run on pooled
    // connections, the pool).
    let verifier = &app.state.login_verifier;
    let pool = &app.state.pool;
    assert!(
        common::eventually(Duration::from_secs(30), || {
            (verifier.available() == 0 && verifier.waiting() > 0)
                || pool.state().idle_connections == 0
        })
        .await,
        "the logins never filled the verifier"
    );
    let me = app.get("/api/me", &app.fx.bob.token).await;
    let finished_then = finished.load(Ordering::SeqCst);
    assert_eq!(me.status, 200, "{}", me.text);
    // Held connections, it waited for logins to release theirs (7 to 18 of
    // them had finished, in four runs); now it answers while the first
    // verifications are still under way.
    assert!(
        finished_then * 4 < pool_size,
        "/api/me answered only after {finished_then} logins finished (pool of {pool_size})"
    );
    let mut refused = 0;
    for login in logins {
        let res = login.await.unwrap();
        match res.status {
            401 => assert_eq!(res.error_code(), "invalid_credentials"),
            // On a loaded machine (a debug build's argon2 is slow) a check
            // may wait past the verifier's 5 s for a thread: then 503, and
            // the client is told when to come back.
            503 => {
                assert_eq!(res.error_code(), "unavailable", "{}", res.text);
                assert_eq!(res.headers["retry-after"], "1");
                refused += 1;
            }
            other => panic!("{other}: {}", res.text),
        }
    }
    assert!(refused < 30, "some checks were done");
}

backend_tests!(password_checks_hold_no_pooled_connection);

// ---------------------------------------------------------------- CSRF

/// A cookie-authenticated `POST /api/contacts` with these headers.
async fn cookie_post(app: &TestApp, phone: &str, headers: &[(&str, &str)]) -> Resp {
    let mut request = json_body(
        app.req(Method::POST, "/api/contacts")
            .header("cookie", format!("inbox_session={}", app.fx.alice.token)),
        &json!({ "name": "Via Cookie", "phone": phone }),
    );
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request).await
}

#[actix_web::test]
async fn a_forwarded_host_from_an_untrusted_peer_does_not_make_an_origin_ours() {
    let app = spawn_with(Options::embedded(Backend::Sqlite)).await;
    for forged in [
        vec![
            ("origin", "https://evil.example"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
        ],
        vec![
            ("origin", "https://evil.example"),
            ("x-forwarded-host", "evil.example"),
        ],
        vec![
            ("origin", "https://evil.example"),
            ("forwarded", "host=evil.example;proto=https"),
        ],
        vec![
            ("origin", "http://evil.example"),
            ("x-forwarded-host", "evil.example"),
        ],
    ] {
        let res = cookie_post(&app, "+14155550101", &forged).await;
        assert_eq!(res.status, 403, "{forged:?}: {}", res.text);
        assert_eq!(res.error_code(), "forbidden");
    }
    let own = cookie_post(&app, "+14155550101", &[("origin", &app.address)]).await;
    assert_eq!(own.status, 201, "{}", own.text);
    // The request's own Host header names our origin too.
    let host = format!("http://localhost:{}", app.port);
    let by_host = read(json_body(
        app.client
            .post(format!("{host}/api/contacts"))
            .header("cookie", format!("inbox_session={}", app.fx.alice.token))
            .header("origin", host.as_str()),
        &json!({ "name": "Via Host", "phone": "+14155550102" }),
    ))
    .await;
    assert_eq!(by_host.status, 201, "{}", by_host.text);
}

#[actix_web::test]
async fn behind_a_trusted_proxy_its_forwarded_host_is_our_origin() {
    let app = behind_proxy(Backend::Sqlite).await;
    let xfh = cookie_post(
        &app,
        "+14155550101",
        &[
            ("origin", "https://inbox.example"),
            ("x-forwarded-host", "inbox.example"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(xfh.status, 201, "{}", xfh.text);
    let forwarded = cookie_post(
        &app,
        "+14155550102",
        &[
            ("origin", "https://inbox.example:8443"),
            (
                "forwarded",
                "for=198.51.100.1;host=\"inbox.example:8443\";proto=https",
            ),
        ],
    )
    .await;
    assert_eq!(forwarded.status, 201, "{}", forwarded.text);
    // The forwarded host is believed, so another origin does not match it.
    let other = cookie_post(
        &app,
        "+14155550103",
        &[
            ("origin", "https://evil.example"),
            ("x-forwarded-host", "inbox.example"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(other.status, 403, "{}", other.text);
    // Nor another scheme: http://inbox.example is not https://inbox.example.
    let scheme = cookie_post(
        &app,
        "+14155550103",
        &[
            ("origin", "http://inbox.example"),
            ("x-forwarded-host", "inbox.example"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(scheme.status, 403, "{}", scheme.text);
}

#[actix_web::test]
async fn a_client_written_forwarded_host_is_not_our_origin_behind_a_proxy_that_only_appends_for() {
    let app = behind_proxy(Backend::Sqlite).await;
    // The client wrote `host=`; the trusted proxy appended its own element
    // naming only the client (`for=`): the host is the client's word.
    for forwarded in [
        "host=evil.example;proto=https, for=198.51.100.1",
        "for=6.6.6.6;host=evil.example;proto=https,for=198.51.100.1",
    ] {
        let res = cookie_post(
            &app,
            "+14155550104",
            &[("origin", "https://evil.example"), ("forwarded", forwarded)],
        )
        .await;
        assert_eq!(res.status, 403, "{forwarded}: {}", res.text);
        assert_eq!(res.error_code(), "forbidden");
    }
}

#[actix_web::test]
async fn with_public_url_set_no_forwarded_host_is_our_origin() {
    let mut options = Options::embedded(Backend::Sqlite);
    options
        .extra
        .push(("TRUSTED_PROXIES".to_owned(), "127.0.0.1".to_owned()));
    options.public_url = Some("https://inbox.example".to_owned());
    let app = spawn_with(options).await;
    // Even what the trusted proxy itself wrote: PUBLIC_URL names our origin.
    for headers in [
        vec![
            ("origin", "https://evil.example"),
            (
                "forwarded",
                "for=198.51.100.1;host=evil.example;proto=https",
            ),
        ],
        vec![
            ("origin", "https://evil.example"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
        ],
    ] {
        let res = cookie_post(&app, "+14155550105", &headers).await;
        assert_eq!(res.status, 403, "{headers:?}: {}", res.text);
    }
    let public = cookie_post(&app, "+14155550105", &[("origin", "https://inbox.example")]).await;
    assert_eq!(public.status, 201, "{}", public.text);
}

#[actix_web::test]
async fn the_bearer_scheme_is_read_in_any_case_for_sessions_and_metrics() {
    let mut options = Options::embedded(Backend::Sqlite);
    options
        .extra
        .push(("METRICS_TOKEN".to_owned(), "metrics-t0ken".to_owned()));
    let app = spawn_with(options).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let me = app
            .send(
                app.req(Method::GET, "/api/me")
                    .header("authorization", format!("{scheme} {}", app.fx.alice.token)),
            )
            .await;
        assert_eq!(me.status, 200, "{scheme}: {}", me.text);
        let metrics = app
            .send(
                app.req(Method::GET, "/metrics")
                    .header("authorization", format!("{scheme} metrics-t0ken")),
            )
            .await;
        assert_eq!(metrics.status, 200, "{scheme}: {}", metrics.text);
    }
    let basic = app
        .send(
            app.req(Method::GET, "/api/me")
                .header("authorization", format!("Basic {}", app.fx.alice.token)),
        )
        .await;
    assert_eq!(basic.status, 401);
}
