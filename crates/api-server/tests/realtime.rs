//! Realtime in hosted mode, against a fake Pusher that checks signatures:
//! the events every write publishes, channel authorization, user
//! authentication, presence webhooks and the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    created_ids, json_body, metric, spawn_hosted, Backend, FakePusher, Recorded, TestApp,
};
use reqwest::Method;
use serde_json::{json, Value};

backend_tests!(
    send_publishes_message_created_and_contact_updated_for_every_member,
    x_socket_id_is_excluded_from_the_fan_out,
    read_publishes_message_read_once,
    note_publishes_note_created_only_on_the_contact_channel,
    events_of_a_contact_arrive_in_commit_order,
    pusher_auth_signs_private_contact_channels_from_form_and_json,
    pusher_auth_presence_contact_carries_the_users_channel_data,
    pusher_auth_refuses_channels_the_user_may_not_join,
    pusher_auth_rejects_bad_requests,
    pusher_user_auth_answers_auth_and_user_data,
    viewers_are_pushers_presence_members_the_same_on_every_instance,
    viewers_answer_503_when_pusher_does_not_answer,
    badly_signed_webhooks_are_401_and_change_nothing,
    health_and_realtime_config_in_self_hosted_mode,
    metrics_expose_requests_outbox_events_and_quota,
    events_too_large_for_pusher_go_out_in_the_slim_form,
    hosted_pusher_cluster_gives_pusher_js_the_cluster,
);

const WAIT: Duration = Duration::from_secs(5);

async fn hosted(backend: Backend) -> (FakePusher, TestApp) {
    let fake = FakePusher::start().await;
    let app = spawn_hosted(backend, &fake).await;
    (fake, app)
}

fn count(events: &[Recorded], name: &str) -> usize {
    events.iter().filter(|e| e.name == name).count()
}

// ---------------------------------------------------------------- events

async fn send_publishes_message_created_and_contact_updated_for_every_member(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let contact = app.contact("+14155550130").await;
    let message = app
        .send_message(&app.fx.alice.token, &contact, "On our way")
        .await;
    let events = fake
        .wait_for(WAIT, |e| {
            count(e, "message:created") >= 1 && count(e, "contact:updated") >= 1
        })
        .await;
    let created: Vec<&Recorded> = events
        .iter()
        .filter(|e| e.name == "message:created")
        .collect();
    assert_eq!(created.len(), 1, "{events:#?}");
    assert_eq!(
        created[0].channels,
        vec![format!("private-contact-{contact}")]
    );
    assert_eq!(created[0].data, json!({ "message": message }));
    assert!(created[0].socket_id.is_none());

    // contact:updated reaches every member of the team (one multi-channel
    // trigger or a batch), and nobody else.
    let updated: Vec<&Recorded> = events
        .iter()
        .filter(|e| e.name == "contact:updated")
        .collect();
    let mut channels: Vec<String> = updated.iter().flat_map(|e| e.channels.clone()).collect();
    channels.sort();
    let mut expected = vec![
        format!("private-user-{}", app.fx.alice.id),
        format!("private-user-{}", app.fx.bob.id),
    ];
    expected.sort();
    assert_eq!(channels, expected, "{updated:#?}");
    for event in &updated {
        let contact_view = &event.data["contact"];
        assert_eq!(contact_view["id"], contact.as_str());
        assert_eq!(contact_view["phone"], "+14155550130");
        assert_eq!(contact_view["unreadCount"], 0);
        assert_eq!(contact_view["lastMessage"]["id"], message["id"]);
    }
    // Mallory's team hears nothing.
    assert!(fake
        .on_channel(&format!("private-user-{}", app.fx.mallory.id))
        .is_empty());
    fake.assert_all_signed();
}

async fn x_socket_id_is_excluded_from_the_fan_out(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let contact = app.contact("+14155550131").await;
    let res = app
        .send(
            json_body(
                app.req(Method::POST, "/api/messages/send")
                    .bearer_auth(&app.fx.alice.token),
                &json!({ "contactId": contact, "body": "from my tab" }),
            )
            .header("x-socket-id", "123.456"),
        )
        .await;
    assert_eq!(res.status, 201);
    let events = fake
        .wait_for(WAIT, |e| {
            count(e, "message:created") == 1 && count(e, "contact:updated") >= 1
        })
        .await;
    for event in events
        .iter()
        .filter(|e| e.name == "message:created" || e.name == "contact:updated")
    {
        assert_eq!(
            event.socket_id.as_deref(),
            Some("123.456"),
            "{} excludes the sender's connection",
            event.name
        );
    }
    // A malformed socket id is ignored, not passed on (Pusher would refuse it).
    let res = app
        .send(
            json_body(
                app.req(Method::POST, "/api/messages/send")
                    .bearer_auth(&app.fx.alice.token),
                &json!({ "contactId": contact, "body": "odd header" }),
            )
            .header("x-socket-id", "not-a-socket"),
        )
        .await;
    assert_eq!(res.status, 201);
    let events = fake
        .wait_for(WAIT, |e| count(e, "message:created") == 2)
        .await;
    let second = events
        .iter()
        .rfind(|e| e.name == "message:created")
        .unwrap();
    assert_eq!(second.data["message"]["id"], res.body["message"]["id"]);
    assert!(second.socket_id.is_none(), "{second:?}");
    fake.assert_all_signed();
}

async fn read_publishes_message_read_once(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let contact = app.contact("+14155550132").await;
    let inbound = app.insert_inbound(app.fx.team, &contact, "hello?");
    let read = app
        .post(
            &format!("/api/messages/{inbound}/read"),
            &app.fx.bob.token,
            json!({}),
        )
        .await;
    assert_eq!(read.status, 200);
    let events = fake
        .wait_for(WAIT, |e| {
            count(e, "message:read") == 1 && count(e, "contact:updated") >= 1
        })
        .await;
    let event = events.iter().find(|e| e.name == "message:read").unwrap();
    assert_eq!(event.channels, vec![format!("private-contact-{contact}")]);
    assert_eq!(event.data, json!({ "message": read.body["message"] }));
    assert_eq!(event.data["message"]["readBy"], app.fx.bob.sid().as_str());
    let updated = events.iter().find(|e| e.name == "contact:updated").unwrap();
    assert_eq!(updated.data["contact"]["unreadCount"], 0);

    // A second read changes nothing, so it publishes nothing.
    let before = fake.events().len();
    let again = app
        .post(
            &format!("/api/messages/{inbound}/read"),
            &app.fx.alice.token,
            json!({}),
        )
        .await;
    assert_eq!(again.status, 200);
    // A note afterwards is a marker: once it is out, the read would be too.
    app.post(
        &format!("/api/contacts/{contact}/notes"),
        &app.fx.alice.token,
        json!({ "body": "marker" }),
    )
    .await;
    let events = fake.wait_for(WAIT, |e| count(e, "note:created") == 1).await;
    assert_eq!(count(&events, "note:created"), 1);
    assert_eq!(
        count(&events, "message:read"),
        1,
        "{:#?}",
        &events[before..]
    );
    fake.assert_all_signed();
}

async fn note_publishes_note_created_only_on_the_contact_channel(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let contact = app.contact("+14155550133").await;
    let res = app
        .post(
            &format!("/api/contacts/{contact}/notes"),
            &app.fx.alice.token,
            json!({ "body": "VIP" }),
        )
        .await;
    assert_eq!(res.status, 201);
    let events = fake.wait_for(WAIT, |e| count(e, "note:created") == 1).await;
    let event = events.iter().find(|e| e.name == "note:created").unwrap();
    assert_eq!(event.channels, vec![format!("private-contact-{contact}")]);
    assert_eq!(event.data, json!({ "note": res.body["note"] }));
    // A note does not change the contact list.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&fake.events(), "contact:updated"), 0);
    fake.assert_all_signed();
}

async fn events_of_a_contact_arrive_in_commit_order(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let first = app.contact("+14155550134").await;
    let second = app.contact("+14155550135").await;
    let inbound = app.insert_inbound(app.fx.team, &first, "inbound");
    let token = app.fx.alice.token.clone();
    let mut expected: Vec<(String, String)> = Vec::new();
    for n in 0..6 {
        let m = app
            .send_message(&token, &first, &format!("first {n}"))
            .await;
        expected.push(("message:created".into(), m["id"].as_str().unwrap().into()));
        app.send_message(&token, &second, &format!("second {n}"))
            .await;
        if n == 2 {
            let note = app
                .post(
                    &format!("/api/contacts/{first}/notes"),
                    &token,
                    json!({ "body": "between" }),
                )
                .await;
            expected.push((
                "note:created".into(),
                note.body["note"]["id"].as_str().unwrap().into(),
            ));
            app.post(&format!("/api/messages/{inbound}/read"), &token, json!({}))
                .await;
            expected.push(("message:read".into(), inbound.to_string()));
        }
    }
    let channel = format!("private-contact-{first}");
    let events = fake
        .wait_for(WAIT, |e| {
            e.iter().filter(|e| e.channels.contains(&channel)).count() >= expected.len()
                && created_ids(e).len() >= 12
        })
        .await;
    let on_first: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.channels.contains(&channel))
        .map(|e| {
            let id = match e.name.as_str() {
                "note:created" => e.data["note"]["id"].clone(),
                _ => e.data["message"]["id"].clone(),
            };
            (e.name.clone(), id.as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(on_first, expected);
    // The other contact's messages are in order too.
    let on_second = created_ids(&fake.on_channel(&format!("private-contact-{second}")));
    let mut sorted = on_second.clone();
    sorted.sort_by_key(|id| id.parse::<i64>().unwrap());
    assert_eq!(on_second.len(), 6);
    assert_eq!(on_second, sorted);
    // The last contact:updated of each member carries the newest message.
    let alice_channel = format!("private-user-{}", app.fx.alice.id);
    let last = fake
        .on_channel(&alice_channel)
        .into_iter()
        .rfind(|e| e.data["contact"]["id"] == first.as_str())
        .unwrap();
    assert_eq!(
        last.data["contact"]["lastMessage"]["id"],
        expected
            .iter()
            .rfind(|(name, _)| name == "message:created")
            .unwrap()
            .1
            .as_str()
    );
    fake.assert_all_signed();
}

// ---------------------------------------------------------------- /api/pusher/auth

async fn pusher_auth(app: &TestApp, token: &str, form: &str) -> common::Resp {
    app.send(
        app.req(Method::POST, "/api/pusher/auth")
            .bearer_auth(token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned()),
    )
    .await
}

async fn pusher_auth_signs_private_contact_channels_from_form_and_json(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let contact = app.contact("+14155550136").await;
    let channel = format!("private-contact-{contact}");
    let credentials = fake.credentials();

    let form = pusher_auth(
        &app,
        &app.fx.bob.token,
        &format!("socket_id=123.456&channel_name={channel}"),
    )
    .await;
    assert_eq!(form.status, 200, "{}", form.text);
    let auth = form.body["auth"].as_str().unwrap();
    assert!(auth.starts_with(&format!("{}:", fake.key)), "{auth}");
    assert!(credentials.verify_channel_auth("123.456", &channel, None, auth));
    assert!(!credentials.verify_channel_auth("123.457", &channel, None, auth));
    assert!(form.body.get("channel_data").is_none(), "{}", form.text);

    let json = app
        .send(json_body(
            app.req(Method::POST, "/api/pusher/auth")
                .bearer_auth(&app.fx.bob.token),
            &json!({ "socket_id": "7.8", "channel_name": channel }),
        ))
        .await;
    assert_eq!(json.status, 200, "{}", json.text);
    assert!(credentials.verify_channel_auth(
        "7.8",
        &channel,
        None,
        json.body["auth"].as_str().unwrap()
    ));

    // pusher-js authorizes with the session cookie from the same origin.
    let cookie = app
        .send(
            app.req(Method::POST, "/api/pusher/auth")
                .header("cookie", format!("inbox_session={}", app.fx.alice.token))
                .header("origin", app.address.clone())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("socket_id=1.2&channel_name={channel}")),
        )
        .await;
    assert_eq!(cookie.status, 200, "{}", cookie.text);
}

async fn pusher_auth_presence_contact_carries_the_users_channel_data(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let contact = app.contact("+14155550137").await;
    let channel = format!("presence-contact-{contact}");
    let res = pusher_auth(
        &app,
        &app.fx.alice.token,
        &format!("socket_id=123.456&channel_name={channel}"),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let channel_data = res.body["channel_data"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(channel_data).unwrap();
    assert_eq!(
        parsed,
        json!({ "user_id": app.fx.alice.sid(), "user_info": { "name": "Alice Agent" } })
    );
    let auth = res.body["auth"].as_str().unwrap();
    assert!(fake
        .credentials()
        .verify_channel_auth("123.456", &channel, Some(channel_data), auth));
    // The signature covers the data: another user's data would not verify.
    let forged =
        json!({ "user_id": app.fx.bob.sid(), "user_info": { "name": "Bob Agent" } }).to_string();
    assert!(!fake
        .credentials()
        .verify_channel_auth("123.456", &channel, Some(&forged), auth));
}

async fn pusher_auth_refuses_channels_the_user_may_not_join(backend: Backend) {
    let (_fake, app) = hosted(backend).await;
    let ours = app.contact("+14155550138").await;
    let theirs = app
        .create_contact(&app.fx.mallory.token, "Theirs", "+14155550139")
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice = app.fx.alice.token.clone();
    for channel in [
        format!("private-contact-{theirs}"),
        format!("presence-contact-{theirs}"),
        format!("private-user-{}", app.fx.bob.id),
        format!("private-user-{}", app.fx.mallory.id),
        "private-foo".to_owned(),
        "private-contact-999999".to_owned(),
        format!("private-contact-{ours}-x"),
    ] {
        let res = pusher_auth(
            &app,
            &alice,
            &format!("socket_id=1.1&channel_name={channel}"),
        )
        .await;
        assert_eq!(res.status, 403, "{channel}: {}", res.text);
        assert_eq!(res.error_code(), "forbidden");
    }
    let own = pusher_auth(
        &app,
        &alice,
        &format!(
            "socket_id=1.1&channel_name=private-user-{}",
            app.fx.alice.id
        ),
    )
    .await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert!(own.body["auth"].is_string());
    // And Mallory may join her own contact, not ours.
    let mallory = pusher_auth(
        &app,
        &app.fx.mallory.token,
        &format!("socket_id=1.1&channel_name=private-contact-{theirs}"),
    )
    .await;
    assert_eq!(mallory.status, 200);
    let mallory_ours = pusher_auth(
        &app,
        &app.fx.mallory.token,
        &format!("socket_id=1.1&channel_name=private-contact-{ours}"),
    )
    .await;
    assert_eq!(mallory_ours.status, 403);
}

async fn pusher_auth_rejects_bad_requests(backend: Backend) {
    let (_fake, app) = hosted(backend).await;
    let contact = app.contact("+14155550140").await;
    let channel = format!("private-contact-{contact}");
    let token = app.fx.alice.token.clone();
    let missing = pusher_auth(&app, &token, &format!("channel_name={channel}")).await;
    assert_eq!(missing.status, 400, "{}", missing.text);
    assert_eq!(missing.error_code(), "missing_field");
    let no_channel = pusher_auth(&app, &token, "socket_id=1.1").await;
    assert_eq!(no_channel.status, 400);
    for socket in ["abc", "1", "1.", ".1", "1.1.1", "1.1%0A"] {
        let res = pusher_auth(
            &app,
            &token,
            &format!("socket_id={socket}&channel_name={channel}"),
        )
        .await;
        assert_eq!(res.status, 400, "socket {socket:?}: {}", res.text);
        res.error_code();
    }
    let bad_json = app
        .send(
            app.req(Method::POST, "/api/pusher/auth")
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body("{"),
        )
        .await;
    assert_eq!(bad_json.status, 400);
    let anonymous = app
        .send(
            app.req(Method::POST, "/api/pusher/auth")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("socket_id=1.1&channel_name={channel}")),
        )
        .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.error_code(), "unauthorized");
}

async fn pusher_user_auth_answers_auth_and_user_data(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let res = app
        .send(
            app.req(Method::POST, "/api/pusher/user-auth")
                .bearer_auth(&app.fx.bob.token)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("socket_id=55.66"),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let user_data = res.body["user_data"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(user_data).unwrap();
    assert_eq!(parsed["id"], app.fx.bob.sid().as_str());
    assert_eq!(parsed["user_info"]["name"], "Bob Agent");
    let auth = res.body["auth"].as_str().unwrap();
    assert!(fake
        .credentials()
        .verify_user_auth("55.66", user_data, auth));
    assert!(!fake
        .credentials()
        .verify_user_auth("55.67", user_data, auth));
    let bad = app
        .send(
            app.req(Method::POST, "/api/pusher/user-auth")
                .bearer_auth(&app.fx.bob.token)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("socket_id=nope"),
        )
        .await;
    assert_eq!(bad.status, 400);
    let missing = app
        .send(
            app.req(Method::POST, "/api/pusher/user-auth")
                .bearer_auth(&app.fx.bob.token)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(""),
        )
        .await;
    assert_eq!(missing.status, 400);
}

// ---------------------------------------------------------------- webhooks

async fn webhook(app: &TestApp, key: &str, secret: &str, events: Value) -> common::Resp {
    let body = json!({ "time_ms": 1_700_000_000_000u64, "events": events }).to_string();
    let signature =
        realtime_core::webhook::sign_webhook(&realtime_core::Secret::new(secret), body.as_bytes());
    app.send(
        app.req(Method::POST, "/api/webhooks/pusher")
            .header("content-type", "application/json")
            .header("x-pusher-key", key)
            .header("x-pusher-signature", signature)
            .body(body),
    )
    .await
}

async fn viewers(app: &TestApp, contact: &str) -> Value {
    let res = app
        .get(
            &format!("/api/contacts/{contact}/viewers"),
            &app.fx.alice.token,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body["users"].clone()
}

/// Hosted Pusher is the authority on who is in a presence channel: the
/// viewers are its answer to the (signed) users query, whichever instance is
/// asked; presence webhooks are verified and acknowledged, and change
/// nothing by themselves. (The viewers were a list kept from the webhooks
/// that reached one process: another instance answered differently.)
async fn viewers_are_pushers_presence_members_the_same_on_every_instance(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let other = common::spawn_instance(
        app.db.clone(),
        &common::Options::hosted(backend, &fake),
        Some(app.fx.clone()),
    )
    .await;
    let contact = app.contact("+14155550141").await;
    let channel = format!("presence-contact-{contact}");
    assert_eq!(viewers(&app, &contact).await, json!([]));
    fake.set_presence(
        &channel,
        &[
            app.fx.bob.sid(),
            app.fx.alice.sid(),
            // Someone of another team cannot appear among our viewers.
            app.fx.mallory.sid(),
            "not-a-user".to_owned(),
        ],
    );
    // A webhook reaches one instance only (Pusher calls one address): it
    // is verified and acknowledged, and the answer stays Pusher's.
    let added = webhook(
        &app,
        &fake.key,
        &fake.secret,
        json!([{ "name": "member_added", "channel": channel, "user_id": app.fx.bob.sid() }]),
    )
    .await;
    assert_eq!(added.status, 200, "{}", added.text);
    assert_eq!(added.body, json!({ "received": 1 }));
    let both = json!([
        { "id": app.fx.alice.sid(), "name": "Alice Agent" },
        { "id": app.fx.bob.sid(), "name": "Bob Agent" },
    ]);
    assert_eq!(viewers(&app, &contact).await, both);
    assert_eq!(viewers(&other, &contact).await, both);
    // When Pusher says she left, every instance says so.
    fake.set_presence(&channel, &[app.fx.bob.sid()]);
    let bob = json!([{ "id": app.fx.bob.sid(), "name": "Bob Agent" }]);
    assert_eq!(viewers(&app, &contact).await, bob);
    assert_eq!(viewers(&other, &contact).await, bob);
    assert!(fake.presence_queries() >= 5, "{}", fake.presence_queries());
    fake.assert_all_signed();
}

async fn viewers_answer_503_when_pusher_does_not_answer(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let contact = app.contact("+14155550143").await;
    fake.set_down(true);
    let res = app
        .get(
            &format!("/api/contacts/{contact}/viewers"),
            &app.fx.alice.token,
        )
        .await;
    assert_eq!(res.status, 503, "{}", res.text);
    assert_eq!(res.error_code(), "unavailable");
    fake.set_down(false);
    assert_eq!(viewers(&app, &contact).await, json!([]));
    fake.assert_all_signed();
}

async fn badly_signed_webhooks_are_401_and_change_nothing(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let contact = app.contact("+14155550142").await;
    let events = json!([{
        "name": "member_added",
        "channel": format!("presence-contact-{contact}"),
        "user_id": app.fx.bob.sid(),
    }]);
    let wrong_secret = webhook(&app, &fake.key, "not-the-secret", events.clone()).await;
    assert_eq!(wrong_secret.status, 401, "{}", wrong_secret.text);
    wrong_secret.error_code();
    let wrong_key = webhook(&app, "another-key", &fake.secret, events.clone()).await;
    assert_eq!(wrong_key.status, 401, "{}", wrong_key.text);
    let unsigned = app
        .send(json_body(
            app.req(Method::POST, "/api/webhooks/pusher"),
            &json!({ "time_ms": 1, "events": events }),
        ))
        .await;
    assert_eq!(unsigned.status, 401);
    assert_eq!(viewers(&app, &contact).await, json!([]));
}

// ---------------------------------------------------------------- health, config, metrics

async fn health_and_realtime_config_in_self_hosted_mode(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let health = app.get_anon("/api/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(
        health.body,
        json!({ "status": "ok", "database": "ok", "realtime": "self-hosted" })
    );
    let config = app.get_anon("/api/realtime/config").await;
    assert_eq!(config.status, 200);
    assert_eq!(config.body["key"], fake.key.as_str());
    assert_eq!(config.body["wsHost"], "127.0.0.1");
    assert_eq!(config.body["wsPort"], fake.server.address().port());
    assert_eq!(config.body["forceTLS"], false);
    assert_eq!(
        config.body["channelAuthorization"]["endpoint"],
        "/api/pusher/auth"
    );
    assert_eq!(
        config.body["userAuthentication"]["endpoint"],
        "/api/pusher/user-auth"
    );
    assert!(
        !config.text.contains(&fake.secret),
        "the secret never reaches the browser"
    );
}

async fn metrics_expose_requests_outbox_events_and_quota(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let before = app.metrics().await;
    assert!(before.contains("http_requests_total{"), "{before}");
    assert_eq!(metric(&before, "outbox_depth"), Some(0.0));
    assert_eq!(metric(&before, "events_published_total"), Some(0.0));
    assert!(
        before
            .lines()
            .any(|l| l == "pusher_free_daily_quota 200000"),
        "{before}"
    );
    let contact = app.contact("+14155550143").await;
    app.send_message(&app.fx.alice.token, &contact, "count me")
        .await;
    fake.wait_for(WAIT, |e| e.len() >= 2).await;
    let mut after = String::new();
    for _ in 0..100 {
        after = app.metrics().await;
        // Published, then deleted when the dispatcher's round commits.
        if metric(&after, "events_published_total") == Some(2.0)
            && metric(&after, "outbox_depth") == Some(0.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // message:created and one contact:updated (both members in one trigger).
    assert_eq!(
        metric(&after, "events_published_total"),
        Some(2.0),
        "{after}"
    );
    assert_eq!(metric(&after, "outbox_depth"), Some(0.0));
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("http_requests_total{") && l.contains("status=\"201\"")),
        "{after}"
    );
}

async fn events_too_large_for_pusher_go_out_in_the_slim_form(backend: Backend) {
    let (fake, app) = hosted(backend).await;
    let contact = app.contact("+14155550144").await;
    // An inbound message longer than one event may carry (10 KiB).
    let huge = "x".repeat(12 * 1024);
    let inbound = app.insert_inbound(app.fx.team, &contact, &huge);
    let read = app
        .post(
            &format!("/api/messages/{inbound}/read"),
            &app.fx.alice.token,
            json!({}),
        )
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(
        read.body["message"]["body"],
        huge.as_str(),
        "the API answers in full"
    );
    let events = fake
        .wait_for(WAIT, |e| {
            count(e, "message:read") == 1 && count(e, "contact:updated") >= 1
        })
        .await;
    let event = events.iter().find(|e| e.name == "message:read").unwrap();
    assert_eq!(
        event.data,
        json!({ "messageId": inbound.to_string(), "contactId": contact })
    );
    let updated = events.iter().find(|e| e.name == "contact:updated").unwrap();
    assert_eq!(updated.data, json!({ "contactId": contact }));
    fake.assert_all_signed();
}

async fn hosted_pusher_cluster_gives_pusher_js_the_cluster(backend: Backend) {
    // No event is sent here, so nothing reaches the real cluster.
    let app = common::spawn_with(common::Options {
        extra: vec![
            ("PUSHER_APP_ID".into(), "1".into()),
            ("PUSHER_KEY".into(), "clusterkey".into()),
            ("PUSHER_SECRET".into(), "clustersecret".into()),
            ("PUSHER_CLUSTER".into(), "eu".into()),
        ],
        ..common::Options::embedded(backend)
    })
    .await;
    let config = app.get_anon("/api/realtime/config").await;
    assert_eq!(config.body["key"], "clusterkey");
    assert_eq!(config.body["cluster"], "eu");
    assert_eq!(config.body["forceTLS"], true);
    assert!(config.body.get("wsHost").is_none(), "{}", config.text);
    assert_eq!(
        config.body["channelAuthorization"]["endpoint"],
        "/api/pusher/auth"
    );
    let health = app.get_anon("/api/health").await;
    assert_eq!(health.body["realtime"], "pusher");
}

/// The contract's `/api/pusher/auth` answers `{auth,shared_secret}` for
/// encrypted channels once `PUSHER_ENCRYPTION_MASTER_KEY_BASE64` is set.
#[actix_web::test]
async fn pusher_auth_answers_a_shared_secret_for_encrypted_contact_channels() {
    let fake = FakePusher::start().await;
    let mut options = common::Options::hosted(Backend::Sqlite, &fake);
    options.extra.push((
        "PUSHER_ENCRYPTION_MASTER_KEY_BASE64".into(),
        "dGhpcyBpcyBhIDMyIGJ5dGUga2V5IGZvciB0ZXN0cyE=".into(),
    ));
    let app = common::spawn_with(options).await;
    let contact = app.contact("+14155550145").await;
    let channel = format!("private-encrypted-contact-{contact}");
    let res = pusher_auth(
        &app,
        &app.fx.alice.token,
        &format!("socket_id=1.2&channel_name={channel}"),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.body["shared_secret"].is_string(), "{}", res.text);
    assert!(fake.credentials().verify_channel_auth(
        "1.2",
        &channel,
        None,
        res.body["auth"].as_str().unwrap()
    ));
}
