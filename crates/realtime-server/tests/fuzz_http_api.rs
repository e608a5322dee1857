//! Property-based fuzzing of the Pusher HTTP API (`http_api.rs`), driven
//! in-process through the actix service exactly as mounted by
//! `Server::configure`: bodies and query strings of every shape, correctly
//! signed (so they reach the body and parameter checks) or not.
//!
//! Properties: no panic and no 5xx; a correctly signed request is never
//! refused for its signature (401); a refusal always says why (a non-empty
//! text); a success is JSON; an answer is bounded by the request.
//!
//! Cases per property: `PROPTEST_CASES` (default 256); `scripts/fuzz` runs
//! 100,000. A failing case is saved in `fuzz_http_api.proptest-regressions`
//! beside this file and replayed first on every later run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../realtime-core/tests/support/fuzz.rs"]
mod fuzz;

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test as actix_test, web, App};
use common::{credentials, APP_ID, KEY};
use fuzz::{config, percent_encode, Cases};
use proptest::prelude::*;
use realtime_core::signing::sign_request;
use realtime_server::{AppConfig, Server};
use serde_json::{json, Map, Value};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The query string of a request to `path` signed now, with `params`
/// (decoded values, as the server reads them) and every value encoded.
fn signed_query(method: &str, path: &str, params: &[(String, String)], body: &str) -> String {
    let credentials = credentials();
    let borrowed: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let timestamp = now();
    let body = (!body.is_empty()).then_some(body);
    let raw = sign_request(
        credentials.signer(),
        KEY,
        method,
        path,
        &borrowed,
        body,
        timestamp,
    );
    let signature = raw.rsplit_once("auth_signature=").unwrap().1.to_owned();
    let mut all: Vec<(String, String)> = vec![
        ("auth_key".into(), KEY.into()),
        ("auth_timestamp".into(), timestamp.to_string()),
        ("auth_version".into(), "1.0".into()),
    ];
    if let Some(body) = body {
        all.push((
            "body_md5".into(),
            realtime_core::signing::body_md5(body.as_bytes()),
        ));
    }
    all.extend(params.iter().cloned());
    all.push(("auth_signature".into(), signature));
    all.iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A channel name: mostly valid, of every kind, sometimes not.
fn channel() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (
            prop_oneof![
                Just(""), Just("private-"), Just("presence-"), Just("private-encrypted-"),
                Just("#server-to-user-"),
            ],
            "[-a-zA-Z0-9_=@,.;]{0,30}",
        ).prop_map(|(prefix, rest)| format!("{prefix}{rest}")),
        1 => "[a-z]{160,170}",
        1 => "\\PC{0,20}",
    ]
}

fn info() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::collection::vec(
            prop_oneof![Just("user_count"), Just("subscription_count"), Just(""), Just(" user_count ")],
            0..4,
        ).prop_map(|parts| parts.join(",")),
        1 => "\\PC{0,20}",
    ]
}

/// Any JSON value, shallow.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,6}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An event body: the fields the API reads, each usually of its type.
fn event(batch: bool) -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        4 => "[a-z:_-]{1,20}".prop_map(Value::from),
        1 => "\\PC{0,210}".prop_map(Value::from),
        1 => json_value(),
    ];
    let data = prop_oneof![
        3 => "\\PC{0,100}".prop_map(Value::from),
        1 => json_value(),
        1 => (10_200usize..10_400).prop_map(|n| Value::from("d".repeat(n))),
    ];
    let channels = prop_oneof![
        4 => proptest::collection::vec(channel(), 0..4)
            .prop_map(Value::from),
        1 => (99usize..103).prop_map(|n| Value::from(vec!["a"; n])),
        1 => json_value(),
    ];
    let socket_id = prop_oneof![
        Just(Value::from("1.2")),
        "[0-9.]{0,8}".prop_map(Value::from),
        json_value(),
    ];
    (
        proptest::option::of(name),
        proptest::option::of(data),
        proptest::option::of(channels),
        proptest::option::of(channel().prop_map(Value::from)),
        proptest::option::of(socket_id),
        proptest::option::of(info().prop_map(Value::from)),
        any::<bool>(),
    )
        .prop_map(
            move |(name, data, channels, channel, socket_id, info, usual)| {
                let mut event = Map::new();
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        event.insert(k.to_owned(), v);
                    }
                };
                put("name", name.or_else(|| usual.then(|| "e".into())));
                put("data", data.or_else(|| usual.then(|| "{}".into())));
                if batch || !usual {
                    put("channel", channel);
                }
                if !batch || !usual {
                    put("channels", channels);
                }
                put("socket_id", socket_id);
                put("info", info);
                Value::Object(event)
            },
        )
}

/// A change to a JSON text (at character boundaries, so it stays text).
#[derive(Debug, Clone)]
enum Edit {
    Remove(usize, usize),
    Insert(usize, String),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> + Clone {
    prop_oneof![
        (any::<usize>(), 1usize..8).prop_map(|(at, n)| Edit::Remove(at, n)),
        (
            any::<usize>(),
            prop_oneof![
                "\\PC{1,4}",
                Just("\"".to_owned()),
                Just("{".to_owned()),
                Just(",".to_owned())
            ]
        )
            .prop_map(|(at, s)| Edit::Insert(at, s)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let len = chars.len();
        match edit {
            Edit::Remove(at, n) if len > 0 => {
                let at = at % len;
                chars.drain(at..(at + n).min(len));
            }
            Edit::Insert(at, s) => {
                let at = at % (len + 1);
                chars.splice(at..at, s.chars());
            }
            Edit::Truncate(at) if len > 0 => chars.truncate(at % len),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// What a test sends: a method, a path (encoded), signed parameters and a body.
#[derive(Debug, Clone)]
struct Request {
    method: &'static str,
    path: String,
    params: Vec<(String, String)>,
    body: String,
}

fn request() -> impl Strategy<Value = Request> {
    let edits = || proptest::collection::vec(edit(), 0..3);
    prop_oneof![
        4 => (event(false), edits()).prop_map(|(event, edits)| Request {
            method: "POST",
            path: format!("/apps/{APP_ID}/events"),
            params: vec![],
            body: apply(&event.to_string(), &edits),
        }),
        3 => (proptest::collection::vec(event(true), 0..12), edits(), any::<bool>())
            .prop_map(|(events, edits, usual)| Request {
                method: "POST",
                path: format!("/apps/{APP_ID}/batch_events"),
                params: vec![],
                body: apply(
                    &if usual { json!({ "batch": events }) } else { Value::from(events) }.to_string(),
                    &edits,
                ),
            }),
        2 => (proptest::option::of(channel()), proptest::option::of(info()))
            .prop_map(|(prefix, info)| Request {
                method: "GET",
                path: format!("/apps/{APP_ID}/channels"),
                params: prefix.map(|p| ("filter_by_prefix".to_owned(), p)).into_iter()
                    .chain(info.map(|i| ("info".to_owned(), i)))
                    .collect(),
                body: String::new(),
            }),
        2 => (channel(), proptest::option::of(info()), any::<bool>())
            .prop_map(|(channel, info, users)| Request {
                method: "GET",
                path: format!(
                    "/apps/{APP_ID}/channels/{}{}",
                    percent_encode(&channel),
                    if users { "/users" } else { "" }
                ),
                params: info.map(|i| ("info".to_owned(), i)).into_iter().collect(),
                body: String::new(),
            }),
        1 => ("\\PC{0,40}", prop_oneof![Just("{}".to_owned()), "\\PC{0,20}"])
            .prop_map(|(user, body)| Request {
                method: "POST",
                path: format!("/apps/{APP_ID}/users/{}/terminate_connections", percent_encode(&user)),
                params: vec![],
                body,
            }),
    ]
}

/// The API mounted as `Server::configure` mounts it, in-process.
fn service(
    system: &actix_web::rt::SystemRunner,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error> {
    let server = web::Data::new(Server::new(vec![AppConfig::new(credentials())]));
    system.block_on(actix_test::init_service(
        App::new().configure(Server::configure(server)),
    ))
}

/// Sends a request; answers its status and body.
fn send<S>(
    system: &actix_web::rt::SystemRunner,
    srv: &S,
    method: &str,
    uri: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let req = actix_test::TestRequest::default()
        .method(method.parse().unwrap())
        .uri(uri)
        .insert_header(("content-type", "application/json"))
        .set_payload(body)
        .to_request();
    system.block_on(async {
        let res = match srv.call(req).await {
            Ok(res) => res,
            Err(e) => {
                let res = e.error_response();
                let status = res.status().as_u16();
                let body = res.into_body().try_into_bytes().unwrap_or_default();
                return (status, body.to_vec());
            }
        };
        let status = res.status().as_u16();
        let body = actix_test::read_body(res).await;
        (status, body.to_vec())
    })
}

fn check_answer(status: u16, body: &[u8], sent: usize) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(body);
    prop_assert!(status < 500, "{} {}", status, text);
    if status >= 400 {
        prop_assert!(!text.trim().is_empty(), "a {} without a reason", status);
    } else {
        prop_assert!(
            serde_json::from_slice::<Value>(body).is_ok_and(|v| v.is_object()),
            "a {} that is not a JSON object: {}",
            status,
            text
        );
    }
    prop_assert!(
        body.len() <= 4 * sent + 4096,
        "{} bytes answered to {} sent",
        body.len(),
        sent
    );
    Ok(())
}

/// Correctly signed requests with fuzzed bodies and parameters: answered
/// 200, 400, 404 or 413, never 401, never 5xx; every refusal says why.
#[test]
fn signed_requests_are_checked_safely() {
    let cases = Cases::new("http_api_signed_requests");
    let system = actix_web::rt::System::new();
    let srv = service(&system);
    proptest!(config(), |(request in request())| {
        cases.hit();
        let query = signed_query(request.method, &request.path, &request.params, &request.body);
        let uri = format!("{}?{query}", request.path);
        let sent = uri.len() + request.body.len();
        let (status, body) = send(&system, &srv, request.method, &uri, request.body.clone().into_bytes());
        check_answer(status, &body, sent)?;
        prop_assert!(
            matches!(status, 200 | 400 | 404 | 413),
            "{} {} for a signed {} {} {:?}",
            status, String::from_utf8_lossy(&body), request.method, uri, request.body
        );
    });
}

/// Signed requests with one thing changed after signing (a parameter, a
/// POST's body, the path's app, the time, the version): refused, with a
/// reason, never a 5xx.
#[test]
fn tampered_requests_are_refused() {
    let cases = Cases::new("http_api_tampered_requests");
    let system = actix_web::rt::System::new();
    let srv = service(&system);
    proptest!(config(), |(
        request in request(),
        tamper in 0u8..5,
        extra in "[a-z]{1,5}",
    )| {
        cases.hit();
        let mut query = signed_query(request.method, &request.path, &request.params, &request.body);
        let mut body = request.body.clone();
        let mut path = request.path.clone();
        match tamper {
            0 => query.push_str(&format!("&{extra}=1")),
            1 if request.method == "POST" => body.push(' '),
            2 => path = path.replacen(&format!("/apps/{APP_ID}/"), "/apps/2/", 1),
            3 => query = query.replace("auth_timestamp=", "auth_timestamp=1"),
            _ => query = query.replace("auth_version=1.0", "auth_version=2.0"),
        }
        let uri = format!("{path}?{query}");
        let sent = uri.len() + body.len();
        let (status, answer) = send(&system, &srv, request.method, &uri, body.into_bytes());
        check_answer(status, &answer, sent)?;
        prop_assert!(
            matches!(status, 401 | 404),
            "{} {} for a tampered {} {}", status, String::from_utf8_lossy(&answer), request.method, uri
        );
    });
}

/// Anything at all under `/apps/`: any method, path, query and body bytes.
#[test]
fn any_request_is_answered_safely() {
    let cases = Cases::new("http_api_any_request");
    let system = actix_web::rt::System::new();
    let srv = service(&system);
    proptest!(config(), |(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE")],
        // A path outside `/apps/{id}/` is the embedding app's (`/apps//x` too).
        app in prop_oneof![Just(APP_ID.to_owned()), "\\PC{1,6}"],
        tail in prop_oneof![
            Just("events".to_owned()), Just("batch_events".to_owned()), Just("channels".to_owned()),
            "channels/\\PC{0,12}", "users/\\PC{0,8}/terminate_connections", "\\PC{0,20}",
        ],
        query in prop_oneof![
            "\\PC{0,80}",
            proptest::collection::vec(
                (prop_oneof![Just("auth_key".to_owned()), Just("auth_signature".to_owned()),
                    Just("auth_timestamp".to_owned()), Just("auth_version".to_owned()),
                    Just("body_md5".to_owned()), Just("info".to_owned()), "\\PC{0,6}"],
                 prop_oneof![Just(KEY.to_owned()), Just("1.0".to_owned()), "[0-9]{0,12}", "\\PC{0,12}"]),
                0..8,
            ).prop_map(|pairs| pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")),
        ],
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            event(false).prop_map(|e| e.to_string().into_bytes()),
        ],
    )| {
        cases.hit();
        let path = format!("/apps/{}/{}", percent_encode(&app), tail.split('/').map(percent_encode).collect::<Vec<_>>().join("/"));
        let uri = format!("{path}?{}", percent_encode(&query).replace("%3D", "=").replace("%26", "&"));
        let sent = uri.len() + body.len();
        let (status, answer) = send(&system, &srv, method, &uri, body);
        check_answer(status, &answer, sent)?;
        prop_assert!(status != 200, "an unsigned request accepted: {} {}", method, uri);
    });
}
