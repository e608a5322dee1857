//! `/api/pusher/auth` authorizes each inbox channel under its one canonical
//! name: an id with leading zeros, a sign or spaces is another channel name
//! to the realtime server, so it is refused rather than signed as an alias.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{json_body, spawn_app, Backend, TestApp};
use reqwest::Method;
use serde_json::json;

backend_tests!(
    non_canonical_ids_in_channel_names_are_refused_and_canonical_ones_signed,
    non_canonical_ids_are_refused_in_json_bodies_too,
);

/// Posts a form as pusher-js does; `channel` is percent-encoded, so a `+`
/// reaches the server as a `+`.
async fn authorize(app: &TestApp, token: &str, channel: &str) -> common::Resp {
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("socket_id", "123.456")
        .append_pair("channel_name", channel)
        .finish();
    app.send(
        app.req(Method::POST, "/api/pusher/auth")
            .bearer_auth(token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form),
    )
    .await
}

async fn non_canonical_ids_in_channel_names_are_refused_and_canonical_ones_signed(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550170").await;
    let alice = app.fx.alice.token.clone();
    let me = app.fx.alice.id;
    for channel in [
        format!("private-user-000{me}"),
        format!("private-user-+{me}"),
        format!("private-contact-+{contact}"),
        format!("private-contact-0{contact}"),
        format!("presence-contact-0{contact}"),
        format!("presence-contact-+{contact}"),
        format!("private-contact- {contact}"),
        format!("private-contact-{contact} "),
        format!("private-encrypted-contact-0{contact}"),
        "private-user-0".to_owned(),
    ] {
        let res = authorize(&app, &alice, &channel).await;
        assert_eq!(res.status, 403, "{channel:?}: {}", res.text);
        assert_eq!(res.error_code(), "forbidden", "{channel:?}");
    }
    for channel in [
        format!("private-user-{me}"),
        format!("private-contact-{contact}"),
        format!("presence-contact-{contact}"),
    ] {
        let res = authorize(&app, &alice, &channel).await;
        assert_eq!(res.status, 200, "{channel}: {}", res.text);
        assert!(res.body["auth"].is_string(), "{channel}: {}", res.text);
    }
}

async fn non_canonical_ids_are_refused_in_json_bodies_too(backend: Backend) {
    let app = spawn_app(backend).await;
    let me = app.fx.alice.id;
    let post = |channel: String| {
        json_body(
            app.req(Method::POST, "/api/pusher/auth")
                .bearer_auth(&app.fx.alice.token),
            &json!({ "socket_id": "1.2", "channel_name": channel }),
        )
    };
    let alias = app.send(post(format!("private-user-000{me}"))).await;
    assert_eq!(alias.status, 403, "{}", alias.text);
    let signed = app.send(post(format!("private-user-{me}"))).await;
    assert_eq!(signed.status, 200, "{}", signed.text);
}
