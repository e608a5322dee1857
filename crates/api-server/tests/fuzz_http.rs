//! Property-based fuzzing of the inbox API's outside inputs through its
//! routes, in-process (`actix_web::test` on the app's own route list and
//! extractor settings, with the state of a running instance on SQLite):
//! Pusher's webhooks, Twilio's webhooks (inbound SMS and status), the
//! pusher-js auth body, and the paging parameters of
//! `/api/contacts/{id}/messages` and `/api/contacts`.
//!
//! Properties: no panic and no 5xx; every refusal has the contract's shape
//! `{"error":{"code","message"}}` with a non-empty message; correctly signed
//! webhooks are never refused for their signature, unsigned ones always
//! are; a page holds at most the `limit` asked for (50 by default).
//!
//! Cases per property: `PROPTEST_CASES` (default 256); `scripts/fuzz` runs
//! 100,000.
//! A failing case is saved in `fuzz_http.proptest-regressions` beside this
//! file and replayed first on every later run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../realtime-core/tests/support/fuzz.rs"]
mod fuzz;

use std::cell::RefCell;
use std::collections::BTreeMap;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test as actix_test, web, App};
use api_server::twilio::signature::expected_signature;
use common::{Backend, Options, TestApp};
use fuzz::{config, percent_encode, Cases};
use proptest::prelude::*;
use realtime_core::webhook::sign_webhook;
use serde_json::{json, Value};

const TWILIO_TOKEN: &str = "twilio-token-for-fuzzing";
const TEAM_NUMBER: &str = "+14155550100";

/// A running instance (for its state and seeded users) and the app's
/// routes mounted in-process with the same extractor settings.
fn setup(
    system: &actix_web::rt::SystemRunner,
) -> (
    TestApp,
    impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
) {
    let mut options = Options::embedded(Backend::Sqlite);
    options.extra = vec![
        (
            "TWILIO_ACCOUNT_SID".into(),
            "AC00000000000000000000000000000000".into(),
        ),
        ("TWILIO_AUTH_TOKEN".into(), TWILIO_TOKEN.into()),
    ];
    let app = system.block_on(common::spawn_with(options));
    let state = app.state.clone();
    let srv = system.block_on(actix_test::init_service(
        App::new()
            .app_data(state)
            .app_data(
                web::JsonConfig::default()
                    .limit(64 * 1024)
                    .error_handler(api_server::error::json_error_handler),
            )
            .app_data(
                web::FormConfig::default()
                    .limit(64 * 1024)
                    .error_handler(api_server::error::form_error_handler),
            )
            .app_data(
                web::QueryConfig::default().error_handler(api_server::error::query_error_handler),
            )
            .app_data(
                web::PathConfig::default().error_handler(api_server::error::path_error_handler),
            )
            .configure(api_server::app::routes),
    ));
    (app, srv)
}

/// Sends a request; answers the status and the body as JSON (`Null` when
/// it is not JSON).
fn send<S>(system: &actix_web::rt::SystemRunner, srv: &S, req: actix_http::Request) -> (u16, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    system.block_on(async {
        let res = match srv.call(req).await {
            Ok(res) => res,
            Err(e) => {
                let res = e.error_response();
                let status = res.status().as_u16();
                return (status, Value::Null);
            }
        };
        let status = res.status().as_u16();
        let body = actix_test::read_body(res).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    })
}

/// No 5xx; a refusal in the contract's shape with a message.
fn check_answer(status: u16, body: &Value) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "{} {}", status, body);
    if status >= 400 {
        let code = body["error"]["code"].as_str().unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        prop_assert!(
            !code.is_empty() && !message.is_empty(),
            "{} {}",
            status,
            body
        );
    }
    Ok(())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        "(presence|private)-contact-[0-9]{1,3}".prop_map(Value::from),
        prop_oneof![
            Just("member_added"),
            Just("member_removed"),
            Just("channel_vacated")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("channel".to_owned()),
                    Just("user_id".to_owned()),
                    Just("events".to_owned()),
                    Just("time_ms".to_owned()),
                    "\\PC{0,6}",
                ],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A Pusher webhook body: the presence events the inbox reads, any JSON,
/// or any bytes.
fn pusher_webhook() -> impl Strategy<Value = Vec<u8>> {
    let event = prop_oneof![
        (
            "(presence|private)-contact-[0-9]{1,3}",
            "[0-9]{1,3}",
            prop_oneof![Just("member_added"), Just("member_removed")]
        )
            .prop_map(
                |(channel, user, name)| json!({ "name": name, "channel": channel, "user_id": user })
            ),
        "presence-contact-[0-9]{1,3}"
            .prop_map(|channel| json!({ "name": "channel_vacated", "channel": channel })),
        json_value(),
    ];
    prop_oneof![
        4 => (any::<u64>(), proptest::collection::vec(event, 0..6))
            .prop_map(|(time_ms, events)| json!({ "time_ms": time_ms, "events": events }).to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..100),
    ]
}

#[test]
fn webhooks_are_checked_and_read_safely() {
    let cases = Cases::new("http_webhooks");
    let system = actix_web::rt::System::new();
    let (app, srv) = setup(&system);
    let credentials = app.state.realtime.credentials.clone();
    let public_url = app.state.config.public_url.clone();
    let seen = RefCell::new(BTreeMap::<u16, u64>::new());
    proptest!(config(), |(
        pusher in any::<bool>(),
        signed in any::<bool>(),
        body in pusher_webhook(),
        status_callback in any::<bool>(),
        fields in proptest::collection::vec((
            prop_oneof![
                Just("MessageSid".to_owned()), Just("From".to_owned()), Just("To".to_owned()),
                Just("Body".to_owned()), Just("NumMedia".to_owned()), Just("MediaUrl0".to_owned()),
                Just("MessageStatus".to_owned()), Just("ErrorCode".to_owned()), "\\PC{0,8}",
            ],
            prop_oneof![
                "SM[0-9a-f]{4}", Just(TEAM_NUMBER.to_owned()), "\\+1415555[0-9]{4}",
                prop_oneof![Just("sent"), Just("delivered"), Just("failed"), Just("queued")].prop_map(str::to_owned),
                "[0-9]{0,3}", "\\PC{0,30}",
            ],
        ), 0..10),
        key in prop_oneof![Just(None), "\\PC{0,10}".prop_map(Some)],
        header in "\\PC{0,40}",
    )| {
        cases.hit();
        let req = if pusher {
            let mut req = actix_test::TestRequest::post()
                .uri("/api/webhooks/pusher")
                .insert_header(("content-type", "application/json"));
            if signed {
                req = req
                    .insert_header(("x-pusher-key", credentials.key()))
                    .insert_header(("x-pusher-signature", sign_webhook(credentials.secret(), &body)));
            } else {
                if let Some(key) = &key {
                    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(key) {
                        req = req.insert_header(("x-pusher-key", value));
                    }
                }
                if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&header) {
                    req = req.insert_header(("x-pusher-signature", value));
                }
            }
            req.set_payload(body.clone()).to_request()
        } else {
            let path = if status_callback { "/api/webhooks/twilio/status" } else { "/api/webhooks/twilio" };
            let form = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields.iter())
                .finish();
            let signature = if signed {
                expected_signature(TWILIO_TOKEN, &format!("{public_url}{path}"), &fields)
            } else {
                header.clone()
            };
            let mut req = actix_test::TestRequest::post()
                .uri(path)
                .insert_header(("content-type", "application/x-www-form-urlencoded"));
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&signature) {
                req = req.insert_header(("x-twilio-signature", value));
            }
            req.set_payload(form).to_request()
        };
        let (status, answer) = send(&system, &srv, req);
        *seen.borrow_mut().entry(status).or_insert(0) += 1;
        check_answer(status, &answer)?;
        if signed {
            prop_assert!(!matches!(status, 401 | 403), "a signed webhook refused: {} {}", status, answer);
        } else {
            prop_assert!(matches!(status, 400 | 401 | 403), "an unsigned webhook: {} {}", status, answer);
        }
    });
    // Both paths were taken: webhooks read and webhooks refused.
    let seen = seen.into_inner();
    eprintln!("fuzz http_webhooks: answers by status {seen:?}");
    if cases.count() >= 64 {
        assert!(
            seen.keys().any(|s| *s < 300) && seen.keys().any(|s| *s >= 400),
            "{seen:?}"
        );
    }
}

#[test]
fn auth_bodies_and_paging_parameters_are_checked_safely() {
    let cases = Cases::new("http_auth_and_paging");
    let system = actix_web::rt::System::new();
    let (app, srv) = setup(&system);
    let contact = system.block_on(app.contact("+14155550123"));
    let token = app.fx.alice.token.clone();
    let seen = RefCell::new(BTreeMap::<(u8, u16), u64>::new());
    proptest!(config(), |(
        which in 0u8..3,
        contact_id in prop_oneof![Just(contact.clone()), "[0-9]{1,4}", "\\PC{0,8}"],
        limit in proptest::option::of(prop_oneof!["[0-9]{1,3}", "-?[0-9]{0,25}", "\\PC{0,8}"]),
        before in proptest::option::of(prop_oneof!["[0-9]{1,4}", "-?[0-9]{0,25}", "\\PC{0,8}"]),
        raw_query in proptest::option::of("\\PC{0,30}"),
        json_body in any::<bool>(),
        socket_id in prop_oneof!["[0-9]{1,6}\\.[0-9]{1,6}", "\\PC{0,12}"],
        channel in prop_oneof![
            Just(format!("private-contact-{contact}")), Just(format!("presence-contact-{contact}")),
            Just(format!("private-encrypted-contact-{contact}")),
            "private-(contact|user)-[0-9+\\-]{1,4}", "\\PC{0,20}",
        ],
        raw_body in proptest::collection::vec(any::<u8>(), 0..80),
        use_raw in any::<bool>(),
    )| {
        cases.hit();
        let mut query: Vec<String> = Vec::new();
        if let Some(limit) = &limit {
            query.push(format!("limit={}", percent_encode(limit)));
        }
        if let Some(before) = &before {
            query.push(format!("before={}", percent_encode(before)));
        }
        if let Some(raw) = &raw_query {
            query.push(percent_encode(raw).replace("%3D", "=").replace("%26", "&"));
        }
        let query = query.join("&");
        let req = match which {
            0 => actix_test::TestRequest::get()
                .uri(&format!("/api/contacts/{}/messages?{query}", percent_encode(&contact_id))),
            1 => actix_test::TestRequest::get().uri(&format!("/api/contacts?{query}")),
            _ => {
                let body = if use_raw {
                    raw_body.clone()
                } else if json_body {
                    json!({ "socket_id": socket_id, "channel_name": channel }).to_string().into_bytes()
                } else {
                    url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("socket_id", &socket_id)
                        .append_pair("channel_name", &channel)
                        .finish()
                        .into_bytes()
                };
                actix_test::TestRequest::post()
                    .uri("/api/pusher/auth")
                    .insert_header((
                        "content-type",
                        if json_body { "application/json" } else { "application/x-www-form-urlencoded" },
                    ))
                    .set_payload(body)
            }
        };
        let req = req.insert_header(("authorization", format!("Bearer {token}"))).to_request();
        let (status, answer) = send(&system, &srv, req);
        *seen.borrow_mut().entry((which, status)).or_insert(0) += 1;
        check_answer(status, &answer)?;
        if which == 0 && status == 200 {
            let wanted = limit.as_deref().and_then(|l| l.parse::<usize>().ok()).unwrap_or(50);
            let got = answer["messages"].as_array().map_or(0, Vec::len);
            prop_assert!(got <= wanted.min(100), "{} messages for limit {:?}", got, limit);
        }
        if which == 1 && status == 200 {
            let wanted = limit.as_deref().and_then(|l| l.parse::<usize>().ok()).unwrap_or(50);
            let got = answer["contacts"].as_array().map_or(0, Vec::len);
            prop_assert!(got <= wanted.min(200), "{} contacts for limit {:?}", got, limit);
        }
    });
    // Every route answered, and every route refused too.
    let seen = seen.into_inner();
    eprintln!("fuzz http_auth_and_paging: answers by (route, status) {seen:?}");
    if cases.count() >= 64 {
        for which in 0..3 {
            assert!(
                seen.keys().any(|(w, s)| *w == which && *s == 200),
                "route {which}: {seen:?}"
            );
        }
        for which in 0..3 {
            assert!(
                seen.keys().any(|(w, s)| *w == which && *s >= 400),
                "route {which}: {seen:?}"
            );
        }
    }
}
