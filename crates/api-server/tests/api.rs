//! The HTTP API over a real server: authentication, contacts, messages and
//! notes, on SQLite and (with `POSTGRES_TEST_URL`) on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{json_body, read, spawn_app, spawn_with, Backend, Options, PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};

backend_tests!(
    login_answers_token_user_and_an_httponly_lax_session_cookie,
    login_cookie_is_secure_only_when_public_url_is_https,
    bad_credentials_are_401_with_the_error_shape,
    me_answers_with_a_bearer_token_and_with_the_session_cookie,
    logout_is_204_and_the_token_stops_working,
    cookie_post_from_a_foreign_origin_is_403_and_from_our_origin_is_accepted,
    bearer_requests_need_no_origin,
    every_protected_route_without_credentials_is_401,
    public_routes_answer_without_credentials,
    a_user_created_with_the_cli_helper_can_log_in,
    create_contact_normalises_the_phone_to_e164,
    invalid_contact_input_is_400,
    duplicate_phone_is_409_in_a_team_but_allowed_in_another_team,
    contact_list_shows_unread_count_and_last_message,
    show_contact_answers_the_contact,
    another_teams_contact_is_404_everywhere,
    ids_that_cannot_exist_are_404_never_500,
    send_is_201_with_status_not_sent_without_twilio,
    message_body_must_be_1_to_1600_characters,
    idempotency_key_retry_answers_the_first_message_and_stores_one,
    idempotency_keys_belong_to_their_user,
    messages_page_newest_first_window_oldest_first,
    invalid_paging_parameters_are_400,
    read_sets_read_at_and_read_by_once,
    another_teams_message_cannot_be_read,
    note_is_201_with_the_note,
    invalid_note_body_is_400,
);

fn cookie_attrs(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .map(|p| p.trim().to_ascii_lowercase())
        .collect()
}

async fn login(app: &common::TestApp, email: &str, password: &str) -> common::Resp {
    app.send(json_body(
        app.req(Method::POST, "/api/auth/login"),
        &json!({ "email": email, "password": password }),
    ))
    .await
}

// ---------------------------------------------------------------- auth

async fn login_answers_token_user_and_an_httponly_lax_session_cookie(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = login(&app, "  Alice@Example.com ", PASSWORD).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let token = res.body["token"].as_str().unwrap();
    assert!(token.len() >= 32, "a long random token: {token}");
    assert_eq!(
        res.body["user"],
        json!({
            "id": app.fx.alice.sid(),
            "name": "Alice Agent",
            "email": "alice@example.com",
            "teamId": app.fx.team.to_string(),
        })
    );
    let cookies = res.set_cookies();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("inbox_session="))
        .unwrap_or_else(|| panic!("an inbox_session cookie in {cookies:?}"));
    assert!(session.starts_with(&format!("inbox_session={token}")));
    let attrs = cookie_attrs(session);
    assert!(attrs.contains(&"httponly".to_owned()), "{session}");
    assert!(attrs.contains(&"samesite=lax".to_owned()), "{session}");
    assert!(attrs.contains(&"path=/".to_owned()), "{session}");
    assert!(
        !attrs.contains(&"secure".to_owned()),
        "no Secure over http: {session}"
    );
    // The token is a working session.
    let me = app.get("/api/me", token).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["user"]["id"], app.fx.alice.sid().as_str());
}

async fn login_cookie_is_secure_only_when_public_url_is_https(backend: Backend) {
    let app = spawn_with(Options {
        public_url: Some("https://inbox.example.com".into()),
        ..Options::embedded(backend)
    })
    .await;
    let res = login(&app, "bob@example.com", PASSWORD).await;
    assert_eq!(res.status, 200);
    let cookies = res.set_cookies();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("inbox_session="))
        .unwrap();
    assert!(
        cookie_attrs(session).contains(&"secure".to_owned()),
        "Secure behind https: {session}"
    );
}

async fn bad_credentials_are_401_with_the_error_shape(backend: Backend) {
    let app = spawn_app(backend).await;
    let wrong = login(&app, "alice@example.com", "wrong-password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.error_code(), "invalid_credentials");
    assert!(wrong.set_cookies().is_empty(), "no cookie on failure");
    let unknown = login(&app, "nobody@example.com", PASSWORD).await;
    assert_eq!(unknown.status, 401);
    // An unknown email says no more than a wrong password.
    assert_eq!(unknown.body, wrong.body);
    let empty = login(&app, "", "").await;
    assert_eq!(empty.status, 400);
    empty.error_code();
    let garbage = app
        .send(
            app.req(Method::POST, "/api/auth/login")
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.error_code(), "invalid_json");
}

async fn me_answers_with_a_bearer_token_and_with_the_session_cookie(backend: Backend) {
    let app = spawn_app(backend).await;
    let bearer = app.get("/api/me", &app.fx.bob.token).await;
    assert_eq!(bearer.status, 200);
    assert_eq!(
        bearer.body,
        json!({ "user": {
            "id": app.fx.bob.sid(),
            "name": "Bob Agent",
            "email": "bob@example.com",
            "teamId": app.fx.team.to_string(),
        }})
    );
    let cookie = app
        .send(
            app.req(Method::GET, "/api/me")
                .header("cookie", format!("inbox_session={}", app.fx.bob.token)),
        )
        .await;
    assert_eq!(cookie.status, 200);
    assert_eq!(cookie.body, bearer.body);
    let forged = app
        .send(
            app.req(Method::GET, "/api/me")
                .header("cookie", "inbox_session=not-a-session"),
        )
        .await;
    assert_eq!(forged.status, 401);
    assert_eq!(forged.error_code(), "unauthorized");
    let bad_bearer = app.get("/api/me", "not-a-session").await;
    assert_eq!(bad_bearer.status, 401);
}

async fn logout_is_204_and_the_token_stops_working(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.fx.alice.token.clone();
    let res = app
        .send(
            app.req(Method::POST, "/api/auth/logout")
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(res.status, 204, "{}", res.text);
    assert!(
        res.set_cookies()
            .iter()
            .any(|c| c.starts_with("inbox_session=;") || c.starts_with("inbox_session=\"\"")),
        "the cookie is cleared: {:?}",
        res.set_cookies()
    );
    assert_eq!(app.get("/api/me", &token).await.status, 401);
    // Other sessions live on.
    assert_eq!(app.get("/api/me", &app.fx.bob.token).await.status, 200);
}

async fn cookie_post_from_a_foreign_origin_is_403_and_from_our_origin_is_accepted(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let cookie = format!("inbox_session={}", app.fx.alice.token);
    let create = |origin: Option<&str>, phone: &str| {
        let mut request = json_body(
            app.req(Method::POST, "/api/contacts")
                .header("cookie", cookie.clone()),
            &json!({ "name": "Via Cookie", "phone": phone }),
        );
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        read(request)
    };
    let foreign = create(Some("https://evil.example.com"), "+14155550101").await;
    assert_eq!(foreign.status, 403, "{}", foreign.text);
    assert_eq!(foreign.error_code(), "forbidden");
    let missing = create(None, "+14155550101").await;
    assert_eq!(
        missing.status, 403,
        "no Origin nor Referer: {}",
        missing.text
    );
    let own = create(Some(&app.address), "+14155550101").await;
    assert_eq!(own.status, 201, "{}", own.text);
    // Only the accepted request stored anything.
    let list = app.get("/api/contacts", &app.fx.alice.token).await;
    assert_eq!(list.body["contacts"].as_array().unwrap().len(), 1);
    // Safe methods need no Origin.
    let get = app
        .send(
            app.req(Method::GET, "/api/contacts")
                .header("cookie", cookie.clone()),
        )
        .await;
    assert_eq!(get.status, 200);
}

async fn bearer_requests_need_no_origin(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app
        .send(
            json_body(
                app.req(Method::POST, "/api/contacts")
                    .bearer_auth(&app.fx.alice.token),
                &json!({ "name": "No Origin", "phone": "+14155550102" }),
            )
            .header("origin", "https://elsewhere.example.com"),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
}

async fn every_protected_route_without_credentials_is_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550103").await;
    let message = app
        .send_message(&app.fx.alice.token, &contact, "hello")
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let routes: Vec<(Method, String, Value)> = vec![
        (Method::POST, "/api/auth/logout".into(), json!({})),
        (Method::GET, "/api/me".into(), Value::Null),
        (Method::GET, "/api/contacts".into(), Value::Null),
        (
            Method::POST,
            "/api/contacts".into(),
            json!({ "name": "X", "phone": "+14155550104" }),
        ),
        (Method::GET, format!("/api/contacts/{contact}"), Value::Null),
        (
            Method::GET,
            format!("/api/contacts/{contact}/messages"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/api/contacts/{contact}/notes"),
            json!({ "body": "note" }),
        ),
        (
            Method::GET,
            format!("/api/contacts/{contact}/viewers"),
            Value::Null,
        ),
        (
            Method::POST,
            "/api/messages/send".into(),
            json!({ "contactId": contact, "body": "hi" }),
        ),
        (
            Method::POST,
            format!("/api/messages/{message}/read"),
            json!({}),
        ),
        (
            Method::POST,
            "/api/pusher/auth".into(),
            json!({ "socket_id": "1.1", "channel_name": format!("private-contact-{contact}") }),
        ),
        (
            Method::POST,
            "/api/pusher/user-auth".into(),
            json!({ "socket_id": "1.1" }),
        ),
    ];
    for (method, path, body) in &routes {
        let with_body = if body.is_null() {
            app.req(method.clone(), path)
        } else {
            json_body(app.req(method.clone(), path), body)
        };
        let res = app.send(with_body).await;
        assert_eq!(res.status, 401, "{method} {path}: {}", res.text);
        assert_eq!(res.error_code(), "unauthorized", "{method} {path}");
        // Without a body at all, authentication is still what is missing.
        let bare = app.send(app.req(method.clone(), path)).await;
        assert_eq!(
            bare.status, 401,
            "{method} {path} without a body: {}",
            bare.text
        );
    }
    // Nothing was written by the refused requests.
    assert_eq!(app.message_count(), 1);
}

async fn public_routes_answer_without_credentials(backend: Backend) {
    let app = spawn_app(backend).await;
    let health = app.get_anon("/api/health").await;
    assert_eq!(health.status, 200);
    let config = app.get_anon("/api/realtime/config").await;
    assert_eq!(config.status, 200);
    assert!(config.body["key"].is_string());
    // The webhook checks its own signature instead of a session.
    let webhook = app
        .send(json_body(
            app.req(Method::POST, "/api/webhooks/pusher"),
            &json!({ "time_ms": 1, "events": [] }),
        ))
        .await;
    assert_eq!(webhook.status, 401, "{}", webhook.text);
    // Unknown routes are 404 in the error shape, not 401.
    let unknown = app.get_anon("/api/nope").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error_code(), "not_found");
}

async fn a_user_created_with_the_cli_helper_can_log_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut conn = app.db.connect();
    let id = api_server::cli::create_user(
        &mut conn,
        &app.fx.team.to_string(),
        "  Dana@Example.COM ",
        "Dana Dispatcher",
        "long-enough-password",
    )
    .unwrap();
    let duplicate = api_server::cli::create_user(
        &mut conn,
        &app.fx.team.to_string(),
        "dana@example.com",
        "Dana Again",
        "long-enough-password",
    );
    assert!(duplicate.unwrap_err().contains("already exists"));
    let short = api_server::cli::create_user(
        &mut conn,
        &app.fx.team.to_string(),
        "erin@example.com",
        "Erin",
        "short",
    );
    assert!(short.is_err());
    drop(conn);
    let res = login(&app, "dana@example.com", "long-enough-password").await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["user"]["id"], id.to_string().as_str());
    assert_eq!(res.body["user"]["email"], "dana@example.com");
}

// ---------------------------------------------------------------- contacts

async fn create_contact_normalises_the_phone_to_e164(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app
        .post(
            "/api/contacts",
            &app.fx.alice.token,
            json!({ "name": "  Carol Customer ", "phone": "(415) 555-0100" }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let contact = &res.body["contact"];
    assert_eq!(contact["phone"], "+14155550100");
    assert_eq!(contact["name"], "Carol Customer");
    assert_eq!(contact["unreadCount"], 0);
    assert!(contact["lastMessage"].is_null());
    assert!(contact["id"].is_string(), "ids are strings: {contact}");
}

async fn invalid_contact_input_is_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.fx.alice.token.clone();
    for phone in ["12", "not a phone", "+1 415 555", ""] {
        let res = app
            .post(
                "/api/contacts",
                &token,
                json!({ "name": "X", "phone": phone }),
            )
            .await;
        assert_eq!(res.status, 400, "{phone:?}: {}", res.text);
        assert_eq!(res.error_code(), "invalid_phone");
    }
    let no_name = app
        .post(
            "/api/contacts",
            &token,
            json!({ "name": "  ", "phone": "+14155550105" }),
        )
        .await;
    assert_eq!(no_name.status, 400);
    no_name.error_code();
    let missing = app
        .post("/api/contacts", &token, json!({ "name": "X" }))
        .await;
    assert_eq!(missing.status, 400);
    missing.error_code();
    let list = app.get("/api/contacts", &token).await;
    assert_eq!(list.body["contacts"], json!([]));
}

async fn duplicate_phone_is_409_in_a_team_but_allowed_in_another_team(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app
        .post(
            "/api/contacts",
            &app.fx.alice.token,
            json!({ "name": "A", "phone": "+14155550106" }),
        )
        .await;
    assert_eq!(first.status, 201);
    // The same number written another way is the same number.
    let again = app
        .post(
            "/api/contacts",
            &app.fx.bob.token,
            json!({ "name": "B", "phone": "415-555-0106" }),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(again.error_code(), "contact_exists");
    let other_team = app
        .post(
            "/api/contacts",
            &app.fx.mallory.token,
            json!({ "name": "M", "phone": "+14155550106" }),
        )
        .await;
    assert_eq!(other_team.status, 201, "{}", other_team.text);
    assert_ne!(
        other_team.body["contact"]["id"],
        first.body["contact"]["id"]
    );
}

async fn contact_list_shows_unread_count_and_last_message(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.fx.alice.token.clone();
    let quiet = app.contact("+14155550107").await;
    let busy = app.create_contact(&token, "Busy Bee", "+14155550108").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.insert_inbound(app.fx.team, &busy, "first inbound");
    app.insert_inbound(app.fx.team, &busy, "second inbound");
    let sent = app.send_message(&token, &busy, "our answer").await;
    // Another team's contacts never show up.
    app.create_contact(&app.fx.mallory.token, "Theirs", "+14155550109")
        .await;

    let list = app.get("/api/contacts", &token).await;
    assert_eq!(list.status, 200);
    let contacts = list.body["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    let find = |id: &str| contacts.iter().find(|c| c["id"] == id).unwrap().clone();
    let busy_view = find(&busy);
    assert_eq!(busy_view["unreadCount"], 2);
    assert_eq!(busy_view["lastMessage"]["id"], sent["id"]);
    assert_eq!(busy_view["lastMessage"]["body"], "our answer");
    assert_eq!(busy_view["name"], "Busy Bee");
    assert_eq!(busy_view["phone"], "+14155550108");
    let quiet_view = find(&quiet);
    assert_eq!(quiet_view["unreadCount"], 0);
    assert!(quiet_view["lastMessage"].is_null());
    // The most recently active contact comes first.
    assert_eq!(contacts[0]["id"], busy.as_str());
}

async fn show_contact_answers_the_contact(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.contact("+14155550110").await;
    app.insert_inbound(app.fx.team, &id, "hi there");
    let res = app
        .get(&format!("/api/contacts/{id}"), &app.fx.bob.token)
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let contact = &res.body["contact"];
    assert_eq!(contact["id"], id.as_str());
    assert_eq!(contact["phone"], "+14155550110");
    assert_eq!(contact["unreadCount"], 1);
    assert_eq!(contact["lastMessage"]["body"], "hi there");
    assert_eq!(contact["lastMessage"]["direction"], "inbound");
}

async fn another_teams_contact_is_404_everywhere(backend: Backend) {
    let app = spawn_app(backend).await;
    let ours = app.contact("+14155550111").await;
    app.send_message(&app.fx.alice.token, &ours, "private thread")
        .await;
    let mallory = app.fx.mallory.token.clone();
    let checks = [
        app.get(&format!("/api/contacts/{ours}"), &mallory).await,
        app.get(&format!("/api/contacts/{ours}/messages"), &mallory)
            .await,
        app.get(&format!("/api/contacts/{ours}/viewers"), &mallory)
            .await,
        app.post(
            &format!("/api/contacts/{ours}/notes"),
            &mallory,
            json!({ "body": "sneaky" }),
        )
        .await,
        app.post(
            "/api/messages/send",
            &mallory,
            json!({ "contactId": ours, "body": "sneaky" }),
        )
        .await,
    ];
    for res in &checks {
        assert_eq!(res.status, 404, "{}", res.text);
        assert_eq!(res.error_code(), "not_found");
    }
    // Nothing leaked into the thread.
    assert_eq!(app.message_count(), 1);
    let thread = app
        .get(
            &format!("/api/contacts/{ours}/messages"),
            &app.fx.alice.token,
        )
        .await;
    assert_eq!(thread.body["messages"].as_array().unwrap().len(), 1);
    let theirs = app.get("/api/contacts", &mallory).await;
    assert_eq!(theirs.body["contacts"], json!([]));
}

async fn ids_that_cannot_exist_are_404_never_500(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.fx.alice.token.clone();
    for id in [
        "abc",
        "0",
        "-1",
        "1.5",
        "99999999999999999999",
        "9223372036854775807",
        "%20",
    ] {
        for path in [
            format!("/api/contacts/{id}"),
            format!("/api/contacts/{id}/messages"),
            format!("/api/contacts/{id}/viewers"),
        ] {
            let res = app.get(&path, &token).await;
            assert_eq!(res.status, 404, "GET {path}: {}", res.text);
            res.error_code();
        }
        let note = app
            .post(
                &format!("/api/contacts/{id}/notes"),
                &token,
                json!({ "body": "x" }),
            )
            .await;
        assert_eq!(note.status, 404, "note {id}: {}", note.text);
        let read = app
            .post(&format!("/api/messages/{id}/read"), &token, json!({}))
            .await;
        assert_eq!(read.status, 404, "read {id}: {}", read.text);
        let send = app
            .post(
                "/api/messages/send",
                &token,
                json!({ "contactId": id, "body": "x" }),
            )
            .await;
        assert_eq!(send.status, 404, "send to {id}: {}", send.text);
    }
}

// ---------------------------------------------------------------- messages

async fn send_is_201_with_status_not_sent_without_twilio(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550112").await;
    let res = app
        .post(
            "/api/messages/send",
            &app.fx.bob.token,
            json!({ "contactId": contact, "body": "Your order is ready" }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let message = &res.body["message"];
    assert_eq!(message["status"], "not_sent");
    assert_eq!(message["errorCode"], "twilio_not_configured");
    assert_eq!(message["direction"], "outbound");
    assert_eq!(message["body"], "Your order is ready");
    assert_eq!(message["contactId"], contact.as_str());
    assert_eq!(message["sentBy"], app.fx.bob.sid().as_str());
    assert_eq!(message["media"], json!([]));
    assert!(message["readAt"].is_null());
    assert!(message["twilioSid"].is_null());
    let created = message["createdAt"].as_str().unwrap();
    let parsed = chrono::DateTime::parse_from_rfc3339(created).unwrap();
    assert_eq!(parsed.offset().local_minus_utc(), 0, "UTC: {created}");
    let age = chrono::Utc::now().signed_duration_since(parsed);
    assert!(age.num_seconds().abs() < 60, "createdAt is now: {created}");
    assert_eq!(app.message_count(), 1);
}

async fn message_body_must_be_1_to_1600_characters(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550113").await;
    let token = app.fx.alice.token.clone();
    for body in [String::new(), "   \n ".to_owned(), "x".repeat(1601)] {
        let res = app
            .post(
                "/api/messages/send",
                &token,
                json!({ "contactId": contact, "body": body }),
            )
            .await;
        assert_eq!(res.status, 400, "{} chars", body.len());
        assert_eq!(res.error_code(), "invalid_body");
    }
    assert_eq!(app.message_count(), 0);
    // 1600 characters is the limit, counted in characters, not bytes.
    let longest = "é".repeat(1600);
    let res = app
        .post(
            "/api/messages/send",
            &token,
            json!({ "contactId": contact, "body": longest }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["message"]["body"], longest.as_str());
}

async fn idempotency_key_retry_answers_the_first_message_and_stores_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550114").await;
    let send = |key: &'static str, body: &'static str| {
        app.send(
            json_body(
                app.req(Method::POST, "/api/messages/send")
                    .bearer_auth(&app.fx.alice.token),
                &json!({ "contactId": contact, "body": body }),
            )
            .header("idempotency-key", key),
        )
    };
    let first = send("order-42", "Shipped!").await;
    assert_eq!(first.status, 201, "{}", first.text);
    let retry = send("order-42", "Shipped!").await;
    assert_eq!(retry.status, 201, "{}", retry.text);
    assert_eq!(retry.body["message"]["id"], first.body["message"]["id"]);
    assert_eq!(retry.body["message"], first.body["message"]);
    assert_eq!(app.message_count(), 1);
    let other = send("order-43", "Shipped!").await;
    assert_ne!(other.body["message"]["id"], first.body["message"]["id"]);
    assert_eq!(app.message_count(), 2);
    // Concurrent retries still store one message.
    let (a, b, c) = tokio::join!(
        send("order-44", "race"),
        send("order-44", "race"),
        send("order-44", "race"),
    );
    for res in [&a, &b, &c] {
        assert_eq!(res.status, 201, "{}", res.text);
    }
    assert_eq!(a.body["message"]["id"], b.body["message"]["id"]);
    assert_eq!(a.body["message"]["id"], c.body["message"]["id"]);
    assert_eq!(app.message_count(), 3);
}

async fn idempotency_keys_belong_to_their_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550115").await;
    let send = |token: String| {
        app.send(
            json_body(
                app.req(Method::POST, "/api/messages/send")
                    .bearer_auth(token),
                &json!({ "contactId": contact, "body": "same key" }),
            )
            .header("idempotency-key", "shared-key"),
        )
    };
    let alice = send(app.fx.alice.token.clone()).await;
    let bob = send(app.fx.bob.token.clone()).await;
    assert_eq!(alice.status, 201);
    assert_eq!(bob.status, 201);
    assert_ne!(alice.body["message"]["id"], bob.body["message"]["id"]);
    assert_eq!(bob.body["message"]["sentBy"], app.fx.bob.sid().as_str());
    assert_eq!(app.message_count(), 2);
}

async fn messages_page_newest_first_window_oldest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550116").await;
    let token = app.fx.alice.token.clone();
    let mut ids = Vec::new();
    for n in 1..=7 {
        let message = app.send_message(&token, &contact, &format!("m{n}")).await;
        ids.push(message["id"].as_str().unwrap().to_owned());
    }
    let page_ids = |res: &common::Resp| -> Vec<String> {
        res.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let base = format!("/api/contacts/{contact}/messages");
    let newest = app.get(&format!("{base}?limit=3"), &token).await;
    assert_eq!(newest.status, 200, "{}", newest.text);
    assert_eq!(page_ids(&newest), ids[4..7].to_vec());
    assert_eq!(newest.body["messages"][0]["body"], "m5");
    let before = app
        .get(&format!("{base}?limit=3&before={}", ids[4]), &token)
        .await;
    assert_eq!(page_ids(&before), ids[1..4].to_vec());
    let last = app
        .get(&format!("{base}?limit=3&before={}", ids[1]), &token)
        .await;
    assert_eq!(page_ids(&last), ids[0..1].to_vec());
    let all = app.get(&base, &token).await;
    assert_eq!(page_ids(&all), ids);
    let empty = app.get(&format!("{base}?before={}", ids[0]), &token).await;
    assert_eq!(empty.body["messages"], json!([]));
}

async fn invalid_paging_parameters_are_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550117").await;
    let token = app.fx.alice.token.clone();
    let base = format!("/api/contacts/{contact}/messages");
    for query in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-1",
        "limit=1e2",
        "before=abc",
        "before=0",
    ] {
        let res = app.get(&format!("{base}?{query}"), &token).await;
        assert_eq!(res.status, 400, "{query}: {}", res.text);
        res.error_code();
    }
    for query in ["limit=1", "limit=100"] {
        let res = app.get(&format!("{base}?{query}"), &token).await;
        assert_eq!(res.status, 200, "{query}: {}", res.text);
    }
}

async fn read_sets_read_at_and_read_by_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550118").await;
    let inbound = app.insert_inbound(app.fx.team, &contact, "are you open?");
    let path = format!("/api/messages/{inbound}/read");
    let first = app.post(&path, &app.fx.bob.token, json!({})).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let message = &first.body["message"];
    assert_eq!(message["id"], inbound.to_string().as_str());
    assert_eq!(message["readBy"], app.fx.bob.sid().as_str());
    let read_at = message["readAt"].as_str().unwrap().to_owned();
    chrono::DateTime::parse_from_rfc3339(&read_at).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = app.post(&path, &app.fx.alice.token, json!({})).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body["message"]["readAt"], read_at.as_str());
    assert_eq!(second.body["message"]["readBy"], app.fx.bob.sid().as_str());
    let contact_view = app
        .get(&format!("/api/contacts/{contact}"), &app.fx.alice.token)
        .await;
    assert_eq!(contact_view.body["contact"]["unreadCount"], 0);
}

async fn another_teams_message_cannot_be_read(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550119").await;
    let inbound = app.insert_inbound(app.fx.team, &contact, "secret");
    let res = app
        .post(
            &format!("/api/messages/{inbound}/read"),
            &app.fx.mallory.token,
            json!({}),
        )
        .await;
    assert_eq!(res.status, 404, "{}", res.text);
    assert_eq!(res.error_code(), "not_found");
    let view = app
        .get(&format!("/api/contacts/{contact}"), &app.fx.alice.token)
        .await;
    assert_eq!(view.body["contact"]["unreadCount"], 1, "still unread");
    assert!(view.body["contact"]["lastMessage"]["readAt"].is_null());
}

// ---------------------------------------------------------------- notes

async fn note_is_201_with_the_note(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550120").await;
    let res = app
        .post(
            &format!("/api/contacts/{contact}/notes"),
            &app.fx.bob.token,
            json!({ "body": "Prefers calls after 5pm" }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let note = &res.body["note"];
    assert!(note["id"].is_string());
    assert_eq!(note["contactId"], contact.as_str());
    assert_eq!(note["authorId"], app.fx.bob.sid().as_str());
    assert_eq!(note["body"], "Prefers calls after 5pm");
    chrono::DateTime::parse_from_rfc3339(note["createdAt"].as_str().unwrap()).unwrap();
    // A note is not a message.
    assert_eq!(app.message_count(), 0);
}

async fn invalid_note_body_is_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550121").await;
    for body in [json!({ "body": "" }), json!({ "body": "  " }), json!({})] {
        let res = app
            .post(
                &format!("/api/contacts/{contact}/notes"),
                &app.fx.alice.token,
                body.clone(),
            )
            .await;
        assert_eq!(res.status, 400, "{body}: {}", res.text);
        res.error_code();
    }
}

/// The contract's Twilio webhooks check `X-Twilio-Signature`: a request
/// without one is refused with 403.
#[actix_web::test]
async fn twilio_webhooks_refuse_unsigned_requests() {
    let app = spawn_app(Backend::Sqlite).await;
    for path in ["/api/webhooks/twilio", "/api/webhooks/twilio/status"] {
        let res = app
            .send(
                app.req(Method::POST, path)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("MessageSid=SM1&From=%2B14155550199&To=%2B14155550100&Body=hi"),
            )
            .await;
        assert_eq!(res.status, 403, "{path}: {}", res.text);
    }
    assert_eq!(app.message_count(), 0);
}
