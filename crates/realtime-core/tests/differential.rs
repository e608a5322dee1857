//! Differential tests against the `pusher` crate (0.4.5, Pusher's own Rust
//! server library): on random inputs, realtime-core must give the same
//! answers for everything both implement — private and presence channel
//! authorization, and the webhook signature verdict.
//!
//! Inputs the `pusher` crate cannot take are kept out of the strategies
//! (it panics on them rather than returning an error):
//! * webhook signatures that are not hex (`Vec::from_hex(..).unwrap()`),
//! * correctly signed webhook bodies that are not JSON, or whose events hold
//!   non-string values (it reads events as `HashMap<String, String>`).
//!
//! Known, deliberate differences, asserted separately below:
//! * realtime-core accepts only ASCII digits in socket ids; the `pusher`
//!   crate's `\d` is Unicode-aware and accepts e.g. Arabic-Indic digits.
//! * realtime-core trims the `X-Pusher-Key` header, so an app key with
//!   surrounding whitespace never verifies; the random keys of the webhook
//!   test therefore neither start nor end with a space.
//! * With no `user_info`, the `pusher` crate signs `"user_info":null` while
//!   realtime-core leaves the field out; only members with `user_info` are
//!   compared.

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::string::string_regex;
use proptest::test_runner::Config as ProptestConfig;
use realtime_core::signing::Secret;
use realtime_core::{Credentials, PresenceMember, WebhookError, WebhookVerifier};
use serde_json::json;

/// The `pusher` client for `key` and `secret`. `PusherBuilder::new` makes a
/// hyper 0.14 `Client` with an `HttpConnector`, which needs no running Tokio
/// runtime until a request is sent (none is here). A macro, because the
/// client's type names hyper, which is not a dependency of this crate.
macro_rules! pusher_client {
    ($key:expr, $secret:expr) => {
        pusher::PusherBuilder::new("1", $key, $secret).finalize()
    };
}

/// Cases per property; `PROPTEST_CASES` overrides it for a longer run.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(CASES),
        // Report the shrunk input in the failure message; no regression files
        // are written next to the tests.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn re(pattern: &str) -> BoxedStrategy<String> {
    match string_regex(pattern) {
        Ok(strategy) => strategy.boxed(),
        Err(e) => panic!("bad regex {pattern:?}: {e}"),
    }
}

/// Keys and secrets: printable ASCII, spaces included.
fn printable() -> BoxedStrategy<String> {
    re("[ -~]{1,40}")
}

/// Printable ASCII that neither starts nor ends with a space (see the module
/// notes on header trimming).
fn printable_untrimmed() -> BoxedStrategy<String> {
    re("[!-~]([ -~]{0,38}[!-~])?")
}

fn socket_id() -> BoxedStrategy<String> {
    re(r"[0-9]{1,10}\.[0-9]{1,10}")
}

/// The part of a channel name after its prefix.
fn channel_body() -> BoxedStrategy<String> {
    re("[-a-zA-Z0-9_=@,.;]{1,60}")
}

/// A private channel that is not an encrypted one (those need a master key
/// and answer with a shared secret the `pusher` crate knows nothing of).
fn private_channel() -> impl Strategy<Value = String> {
    channel_body()
        .prop_map(|body| format!("private-{body}"))
        .prop_filter("not an encrypted channel", |ch| {
            !ch.starts_with("private-encrypted-")
        })
}

fn presence_channel() -> impl Strategy<Value = String> {
    channel_body().prop_map(|body| format!("presence-{body}"))
}

/// Any channel a webhook may name.
fn any_channel() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["", "private-", "presence-", "private-encrypted-"]),
        channel_body(),
    )
        .prop_map(|(prefix, body)| format!("{prefix}{body}"))
}

/// User ids and user_info values: any non-control Unicode text, including
/// quotes, backslashes and characters outside the BMP.
fn unicode_text() -> BoxedStrategy<String> {
    prop_oneof![
        re(r"[\PC]{1,24}"),
        re(r#"[a-z"\\/<>&\u{e9}\u{1F600}\u{2028}]{1,12}"#),
    ]
    .boxed()
}

fn auth_of(pusher_json: &str) -> HashMap<String, String> {
    match serde_json::from_str(pusher_json) {
        Ok(map) => map,
        Err(e) => panic!("the pusher crate answered non-JSON {pusher_json:?}: {e}"),
    }
}

/// One webhook event of the kinds whose fields are all strings.
fn webhook_event() -> impl Strategy<Value = serde_json::Value> {
    (0..4usize, any_channel(), unicode_text()).prop_map(|(kind, channel, user_id)| match kind {
        0 => json!({"name": "channel_occupied", "channel": channel}),
        1 => json!({"name": "channel_vacated", "channel": channel}),
        2 => json!({"name": "member_added", "channel": channel, "user_id": user_id}),
        _ => json!({"name": "member_removed", "channel": channel, "user_id": user_id}),
    })
}

/// A valid webhook body: `time_ms` fits the `pusher` crate's `i64`.
fn webhook_body() -> impl Strategy<Value = (u64, Vec<serde_json::Value>)> {
    (
        0..=i64::MAX as u64,
        prop::collection::vec(webhook_event(), 1..4),
    )
}

fn body_text(time_ms: u64, events: &[serde_json::Value]) -> String {
    json!({"time_ms": time_ms, "events": events}).to_string()
}

/// How the request reaching the webhook endpoint differs from what was signed.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    /// As signed.
    Intact,
    /// As signed, the signature in upper-case hex.
    UpperCaseSignature,
    /// Signed with another secret.
    OtherSecret,
    /// Signed with one hex digit of the signature changed.
    FlippedDigit,
    /// A different `time_ms` in the body, still valid JSON.
    TamperedTime,
    /// A different channel in the first event, still valid JSON.
    TamperedChannel,
    /// The same content with a space added: same meaning, different bytes.
    ReformattedBody,
    /// Signed correctly, presented with another key.
    OtherKey,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    prop::sample::select(vec![
        Delivery::Intact,
        Delivery::UpperCaseSignature,
        Delivery::OtherSecret,
        Delivery::FlippedDigit,
        Delivery::TamperedTime,
        Delivery::TamperedChannel,
        Delivery::ReformattedBody,
        Delivery::OtherKey,
    ])
}

fn hmac_hex(secret: &str, body: &str) -> String {
    realtime_core::webhook::sign_webhook(&Secret::new(secret), body.as_bytes())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn private_channel_auth_agrees_with_the_pusher_crate(
        key in printable(),
        secret in printable(),
        socket in socket_id(),
        channel in private_channel(),
    ) {
        let pusher = pusher_client!(&key, &secret);
        let theirs = pusher.authenticate_private_channel(&channel, &socket)
            .map(|json| auth_of(&json));
        let ours = Credentials::new("1", key.as_str(), secret.as_str())
            .authorize_channel(&socket, &channel);
        let (Ok(theirs), Ok(ours)) = (&theirs, &ours) else {
            return Err(TestCaseError::fail(format!(
                "one side refused a valid request: pusher {theirs:?}, ours {ours:?}"
            )));
        };
        prop_assert_eq!(theirs.get("auth"), Some(&ours.auth));
        prop_assert_eq!(theirs.len(), 1, "the pusher crate answered {:?}", theirs);
        prop_assert_eq!(&ours.channel_data, &None);
        prop_assert_eq!(&ours.shared_secret, &None);
    }

    #[test]
    fn presence_channel_auth_agrees_with_the_pusher_crate(
        key in printable(),
        secret in printable(),
        socket in socket_id(),
        channel in presence_channel(),
        user_id in unicode_text(),
        info_key in prop_oneof![Just("name".to_owned()), unicode_text()],
        info_value in unicode_text(),
    ) {
        let mut info = HashMap::new();
        info.insert(info_key.as_str(), info_value.as_str());
        let member = pusher::Member { user_id: &user_id, user_info: Some(info) };
        let pusher = pusher_client!(&key, &secret);
        let theirs = pusher.authenticate_presence_channel(&channel, &socket, &member)
            .map(|json| auth_of(&json));

        let our_info = json!({ info_key.as_str(): info_value });
        let our_member = PresenceMember { user_id: &user_id, user_info: Some(&our_info) };
        let ours = Credentials::new("1", key.as_str(), secret.as_str())
            .authorize_presence_channel(&socket, &channel, &our_member);

        let (Ok(theirs), Ok(ours)) = (&theirs, &ours) else {
            return Err(TestCaseError::fail(format!(
                "one side refused a valid request: pusher {theirs:?}, ours {ours:?}"
            )));
        };
        prop_assert_eq!(theirs.get("channel_data"), ours.channel_data.as_ref());
        prop_assert_eq!(theirs.get("auth"), Some(&ours.auth));
        prop_assert_eq!(theirs.len(), 2, "the pusher crate answered {:?}", theirs);
    }

    #[test]
    fn webhook_verdicts_agree_with_the_pusher_crate(
        key in printable_untrimmed(),
        secret in printable(),
        other_secret in printable(),
        (time_ms, events) in webhook_body(),
        flip_at in 0..64usize,
        delivery in delivery(),
    ) {
        prop_assume!(other_secret != secret);
        let signed = body_text(time_ms, &events);
        let mut sent = signed.clone();
        let mut presented_key = key.clone();
        let mut signature = hmac_hex(&secret, &signed);
        match delivery {
            Delivery::Intact => {}
            Delivery::UpperCaseSignature => signature = signature.to_uppercase(),
            Delivery::OtherSecret => signature = hmac_hex(&other_secret, &signed),
            Delivery::FlippedDigit => {
                let digit = signature.as_bytes()[flip_at];
                let flipped = if digit == b'0' { '1' } else { '0' };
                signature.replace_range(flip_at..=flip_at, &flipped.to_string());
            }
            Delivery::TamperedTime => sent = body_text(time_ms ^ 1, &events),
            Delivery::TamperedChannel => {
                let mut events = events.clone();
                events[0]["channel"] = json!("private-tampered");
                sent = body_text(time_ms, &events);
                prop_assume!(sent != signed);
            }
            Delivery::ReformattedBody => sent = signed.replacen(':', ": ", 1),
            Delivery::OtherKey => presented_key.push('x'),
        }

        let pusher = pusher_client!(&key, &secret);
        let theirs = pusher.webhook(&presented_key, &signature, &sent);
        let ours = WebhookVerifier::new()
            .with_app(key.as_str(), Secret::new(secret.as_str()))
            .verify(Some(&presented_key), Some(&signature), sent.as_bytes());

        prop_assert_eq!(
            theirs.is_ok(),
            ours.is_ok(),
            "{:?}: pusher {:?}, ours {:?}",
            delivery,
            theirs.as_ref().err(),
            ours.as_ref().err()
        );
        let should_verify = matches!(delivery, Delivery::Intact | Delivery::UpperCaseSignature);
        prop_assert_eq!(ours.is_ok(), should_verify, "{:?}: {:?}", delivery, ours.as_ref().err());
        match (theirs, ours) {
            (Ok(theirs), Ok(ours)) => {
                // Both read the same events.
                prop_assert_eq!(theirs.time_ms as u64, ours.time_ms);
                prop_assert_eq!(theirs.events.len(), ours.events.len());
                for (their_event, our_event) in theirs.events.iter().zip(&ours.events) {
                    prop_assert_eq!(their_event.get("channel").map(String::as_str), our_event.channel());
                }
            }
            (Err(_), Err(ours)) => {
                let expected = if matches!(delivery, Delivery::OtherKey) {
                    WebhookError::UnknownKey
                } else {
                    WebhookError::InvalidSignature
                };
                prop_assert_eq!(ours, expected);
            }
            _ => unreachable!("checked above"),
        }
    }

    #[test]
    fn socket_id_validation_agrees_with_the_pusher_crate_on_ascii(
        socket in re(r"[0-9.a :\n-]{0,12}|[0-9]{1,5}\.[0-9]{1,5}"),
    ) {
        let pusher = pusher_client!("key", "secret");
        let theirs = pusher.authenticate_private_channel("private-a", &socket);
        let ours = Credentials::new("1", "key", "secret").authorize_channel(&socket, "private-a");
        prop_assert_eq!(theirs.is_ok(), ours.is_ok(), "socket id {:?}", socket);
    }
}

#[test]
fn unicode_digits_in_socket_ids_are_refused_unlike_the_pusher_crate() {
    // U+0661 ARABIC-INDIC DIGIT ONE: a `\d` for the regex crate, but never
    // part of a socket id a Pusher server assigns.
    let socket = "\u{661}.\u{661}";
    let pusher = pusher_client!("key", "secret");
    assert!(pusher
        .authenticate_private_channel("private-a", socket)
        .is_ok());
    assert!(Credentials::new("1", "key", "secret")
        .authorize_channel(socket, "private-a")
        .is_err());
}

#[test]
fn the_documented_example_agrees_with_the_pusher_crate() {
    let pusher = pusher_client!("278d425bdf160c739803", "7ad3773142a6692b25b8");
    let theirs = pusher
        .authenticate_private_channel("private-foobar", "1234.1234")
        .unwrap();
    let ours = Credentials::new("1", "278d425bdf160c739803", "7ad3773142a6692b25b8")
        .authorize_channel("1234.1234", "private-foobar")
        .unwrap();
    assert_eq!(serde_json::to_string(&ours).unwrap(), theirs);
}
