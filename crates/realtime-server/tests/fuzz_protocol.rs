//! Property-based fuzzing of the protocol frames a client sends
//! (`Connection::handle_text`): any text, any JSON, and `pusher:subscribe`,
//! `pusher:unsubscribe`, `pusher:signin` and client events with their data
//! of every shape, validly signed or not, in sequences on one connection
//! (with a second connection on the same channels receiving what is relayed).
//!
//! Properties: no panic; only a refused `pusher:signin` closes the
//! connection, with 4009; everything queued for either connection is a JSON
//! frame with an `event`, and every refusal says why (a non-empty message);
//! what is queued is bounded by what was sent; a validly signed
//! subscription to a private channel is never refused for its signature.
//!
//! Cases per property: `PROPTEST_CASES` (default 256); `scripts/fuzz` runs
//! 100,000. A failing case is saved in `fuzz_protocol.proptest-regressions`
//! beside this file and replayed first on every later run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../realtime-core/tests/support/fuzz.rs"]
mod fuzz;

use std::sync::Arc;

use common::{credentials, Client, KEY};
use fuzz::{config, Cases};
use proptest::prelude::*;
use realtime_server::connection::Control;
use realtime_server::outbox::Outbound;
use realtime_server::{App, AppConfig, Metrics};
use serde_json::{json, Map, Value};

/// Any JSON value, a few levels deep, with the field names the protocol
/// reads turning up often.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        channel().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((field_name(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop_oneof![
            Just("channel"), Just("auth"), Just("channel_data"), Just("user_id"),
            Just("user_info"), Just("id"), Just("event"), Just("data"), Just("user_data"),
        ].prop_map(str::to_owned),
        1 => "\\PC{0,10}",
    ]
}

/// Channel names: mostly of the protocol's kinds, a few shared by the
/// connections of a case, some invalid.
fn channel() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop_oneof![
            Just("a"), Just("private-a"), Just("presence-a"), Just("private-encrypted-a"),
            Just("#server-to-user-1"), Just("#server-to-user-"), Just("private-"),
        ].prop_map(str::to_owned),
        3 => (
            prop_oneof![
                Just(""), Just("private-"), Just("presence-"), Just("private-encrypted-"),
                Just("#server-to-user-"), Just("cache-"),
            ],
            "[-a-zA-Z0-9_=@,.;]{0,40}",
        ).prop_map(|(prefix, rest)| format!("{prefix}{rest}")),
        1 => "[-a-zA-Z0-9_=@,.;]{150,180}",
        1 => "\\PC{0,30}",
    ]
}

/// The `auth` of a subscription or signin.
#[derive(Debug, Clone)]
enum Auth {
    Missing,
    /// Signed with the app's secret over exactly what is sent.
    Valid,
    /// `key:` and 64 hex digits that are not the signature.
    WrongSignature,
    /// Anything at all.
    Text(String),
}

fn auth() -> impl Strategy<Value = Auth> {
    prop_oneof![
        1 => Just(Auth::Missing),
        4 => Just(Auth::Valid),
        1 => Just(Auth::WrongSignature),
        1 => "\\PC{0,80}".prop_map(Auth::Text),
    ]
}

/// One frame a client sends, as a plan: signatures are made when the
/// socket id is known.
#[derive(Debug, Clone)]
enum Plan {
    /// Any text.
    Raw(String),
    /// Any JSON.
    Json(Value),
    /// Brackets nested `n` deep.
    Nested(usize),
    Subscribe {
        channel: Value,
        auth: Auth,
        channel_data: Option<String>,
        /// `data` sent as a JSON string holding the object (older clients).
        data_as_string: bool,
        extra: Vec<(String, Value)>,
    },
    Unsubscribe(Value),
    Signin {
        user_data: String,
        auth: Auth,
    },
    ClientEvent {
        event: String,
        channel: Option<Value>,
        data: Value,
    },
    Event {
        event: String,
        data: Value,
    },
}

/// Presence `channel_data` and signin `user_data`: mostly the expected
/// object with ids of every kind, sometimes anything.
fn member_data(id_field: &'static str) -> impl Strategy<Value = String> {
    let id = prop_oneof![
        "[a-z0-9]{1,8}".prop_map(Value::from),
        "\\PC{0,200}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        json_value(),
    ];
    let info = proptest::option::of(prop_oneof![
        json_value(),
        "\\PC{0,2000}".prop_map(Value::from),
    ]);
    prop_oneof![
        4 => (id, info).prop_map(move |(id, info)| {
            let mut object = Map::new();
            object.insert(id_field.to_owned(), id);
            if let Some(info) = info {
                object.insert("user_info".to_owned(), info);
            }
            Value::Object(object).to_string()
        }),
        1 => json_value().prop_map(|v| v.to_string()),
        1 => "\\PC{0,60}",
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    let channel_value = prop_oneof![
        6 => channel().prop_map(Value::from),
        1 => json_value(),
    ];
    prop_oneof![
        2 => "\\PC{0,200}".prop_map(Plan::Raw),
        1 => proptest::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| Plan::Raw(String::from_utf8_lossy(&b).into_owned())),
        2 => json_value().prop_map(Plan::Json),
        1 => (0usize..3000).prop_map(Plan::Nested),
        8 => (
            channel_value.clone(),
            auth(),
            proptest::option::of(member_data("user_id")),
            any::<bool>(),
            proptest::collection::vec((field_name(), json_value()), 0..2),
        ).prop_map(|(channel, auth, channel_data, data_as_string, extra)| Plan::Subscribe {
            channel, auth, channel_data, data_as_string, extra,
        }),
        2 => channel_value.clone().prop_map(Plan::Unsubscribe),
        3 => (member_data("id"), auth())
            .prop_map(|(user_data, auth)| Plan::Signin { user_data, auth }),
        5 => (
            prop_oneof![
                3 => "client-[a-z]{0,10}",
                1 => "client-\\PC{0,250}",
            ],
            proptest::option::of(channel_value),
            prop_oneof![json_value(), "\\PC{0,300}".prop_map(Value::from)],
        ).prop_map(|(event, channel, data)| Plan::ClientEvent { event, channel, data }),
        2 => (
            prop_oneof![
                Just("pusher:ping"), Just("pusher:pong"), Just("pusher:subscribe"),
                Just("pusher:unsubscribe"), Just("pusher:signin"), Just("pusher:other"),
                Just(""),
            ].prop_map(str::to_owned),
            json_value(),
        ).prop_map(|(event, data)| Plan::Event { event, data }),
    ]
}

/// The `auth` text for `signed` (what the signature covers).
fn auth_text(auth: &Auth, signed: &[&[u8]]) -> Option<String> {
    let credentials = credentials();
    match auth {
        Auth::Missing => None,
        Auth::Valid => Some(format!("{KEY}:{}", credentials.signer().sign_hex(signed))),
        Auth::WrongSignature => Some(format!("{KEY}:{}", "0".repeat(64))),
        Auth::Text(text) => Some(text.clone()),
    }
}

/// The frame's text for the connection `socket_id`.
fn render(plan: &Plan, socket_id: &str) -> String {
    match plan {
        Plan::Raw(text) => text.clone(),
        Plan::Json(value) => value.to_string(),
        Plan::Nested(depth) => format!("{}{}", "[".repeat(*depth), "]".repeat(*depth)),
        Plan::Subscribe {
            channel,
            auth,
            channel_data,
            data_as_string,
            extra,
        } => {
            let name = channel.as_str().unwrap_or_default();
            let mut signed: Vec<&[u8]> = vec![socket_id.as_bytes(), b":", name.as_bytes()];
            // Presence channels sign the member data too; other channels
            // do not, whatever the client sends besides.
            match channel_data {
                Some(data) if name.starts_with("presence-") => {
                    signed.extend_from_slice(&[b":", data.as_bytes()]);
                }
                _ => {}
            }
            let mut data = Map::new();
            for (k, v) in extra {
                data.insert(k.clone(), v.clone());
            }
            data.insert("channel".into(), channel.clone());
            if let Some(auth) = auth_text(auth, &signed) {
                data.insert("auth".into(), auth.into());
            }
            if let Some(channel_data) = channel_data {
                data.insert("channel_data".into(), channel_data.clone().into());
            }
            let data = Value::Object(data);
            let data = if *data_as_string {
                Value::from(data.to_string())
            } else {
                data
            };
            json!({ "event": "pusher:subscribe", "data": data }).to_string()
        }
        Plan::Unsubscribe(channel) => {
            json!({ "event": "pusher:unsubscribe", "data": { "channel": channel } }).to_string()
        }
        Plan::Signin { user_data, auth } => {
            let signed: [&[u8]; 3] = [socket_id.as_bytes(), b"::user::", user_data.as_bytes()];
            let mut data = Map::new();
            data.insert("user_data".into(), user_data.clone().into());
            if let Some(auth) = auth_text(auth, &signed) {
                data.insert("auth".into(), auth.into());
            }
            json!({ "event": "pusher:signin", "data": data }).to_string()
        }
        Plan::ClientEvent {
            event,
            channel,
            data,
        } => {
            let mut frame = Map::new();
            frame.insert("event".into(), event.clone().into());
            if let Some(channel) = channel {
                frame.insert("channel".into(), channel.clone());
            }
            frame.insert("data".into(), data.clone());
            Value::Object(frame).to_string()
        }
        Plan::Event { event, data } => json!({ "event": event, "data": data }).to_string(),
    }
}

/// Checks what was queued for a connection; answers the frames' events and
/// the bytes queued.
fn check_outbound(outbound: Vec<Outbound>) -> Result<(Vec<Value>, usize), TestCaseError> {
    let mut frames = Vec::new();
    let mut bytes = 0;
    for item in outbound {
        match item {
            Outbound::Frame(frame) => {
                bytes += frame.text().len();
                let value: Value = serde_json::from_str(frame.text()).map_err(|e| {
                    TestCaseError::fail(format!("not JSON ({e}): {}", frame.text()))
                })?;
                let event = value["event"].as_str().unwrap_or_default();
                prop_assert!(!event.is_empty(), "a frame without an event: {}", value);
                if event == "pusher:error" {
                    let message = value["data"]["message"].as_str().unwrap_or_default();
                    prop_assert!(!message.is_empty(), "an error without a message: {}", value);
                }
                if event == "pusher:subscription_error" {
                    let message = value["data"]["error"].as_str().unwrap_or_default();
                    prop_assert!(!message.is_empty(), "a refusal without a reason: {}", value);
                    prop_assert!(value["data"]["status"].is_u64(), "{}", value);
                }
                frames.push(value);
            }
            Outbound::Close(code, reason) | Outbound::CloseFrame(code, reason) => {
                prop_assert!(code >= 1000, "close code {}", code);
                prop_assert!(!reason.is_empty(), "a close without a reason");
            }
            Outbound::Ping(_) | Outbound::Pong(_) => {}
        }
    }
    Ok((frames, bytes))
}

fn app() -> Arc<App> {
    let mut config = AppConfig::new(credentials());
    config.client_events = true;
    config.client_events_per_second = 1_000;
    Arc::new(App::new(config, Metrics::new(), None))
}

/// A peer on the shared channels, signed in, so client events and presence
/// changes have someone to reach.
fn peer(app: &Arc<App>) -> Client {
    let mut peer = Client::new(app);
    let credentials = credentials();
    for channel in ["private-a", "private-encrypted-a"] {
        let auth = auth_text(
            &Auth::Valid,
            &[peer.socket_id.as_bytes(), b":", channel.as_bytes()],
        );
        peer.send(
            json!({ "event": "pusher:subscribe", "data": { "channel": channel, "auth": auth } }),
        );
    }
    let member = realtime_core::PresenceMember {
        user_id: "peer",
        user_info: Some(&json!({ "name": "Peer" })),
    };
    let auth = credentials
        .authorize_presence_channel(&peer.socket_id, "presence-a", &member)
        .unwrap();
    peer.send(json!({ "event": "pusher:subscribe", "data": {
        "channel": "presence-a", "auth": auth.auth, "channel_data": auth.channel_data,
    } }));
    peer.outbound();
    peer
}

#[test]
fn client_frames_are_answered_safely() {
    let cases = Cases::new("protocol_client_frames");
    proptest!(config(), |(plans in proptest::collection::vec(plan(), 1..8))| {
        cases.hit();
        let app = app();
        let mut peer = peer(&app);
        let mut client = Client::new(&app);
        for plan in &plans {
            let text = render(plan, &client.socket_id);
            let control = client.connection.handle_text(&text);
            let signin = serde_json::from_str::<Value>(&text)
                .ok()
                .is_some_and(|v| v["event"] == "pusher:signin");
            match &control {
                Control::Continue => {}
                Control::Close(code, reason) => {
                    prop_assert!(signin, "closed ({} {}) after {}", code, reason, text);
                    prop_assert_eq!(*code, 4009);
                    prop_assert!(!reason.is_empty());
                }
            }
            let (frames, bytes) = check_outbound(client.outbound())?;
            prop_assert!(
                bytes <= 8 * text.len() + 4096,
                "{} bytes queued for a frame of {}", bytes, text.len()
            );
            if let Plan::Subscribe { channel: Value::String(name), auth: Auth::Valid, .. } = plan {
                let kind = realtime_core::ChannelName::parse(name.as_str()).map(|c| c.kind());
                if matches!(kind, Ok(realtime_core::ChannelKind::Private | realtime_core::ChannelKind::PrivateEncrypted)) {
                    for frame in &frames {
                        prop_assert!(
                            frame["data"]["type"] != "AuthError",
                            "a validly signed subscription refused: {} for {}", frame, text
                        );
                    }
                }
            }
            check_outbound(peer.outbound())?;
            if control != Control::Continue {
                break;
            }
        }
    });
}
