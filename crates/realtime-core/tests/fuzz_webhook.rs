//! Property-based fuzzing of webhook verification and reading
//! (`webhook.rs`, with `crypto.rs` for encrypted client events): headers and
//! bodies of any shape, signed with the app's secret or not.
//!
//! Properties: no panic; an unsigned or wrongly signed body is refused
//! before it is read; a signed body is read or refused as `InvalidBody` with
//! a message; every refusal prints a non-empty message; the events read are
//! bounded by the body; a webhook serialised, signed and verified gives back
//! the same webhook (encrypted client events decrypted with the master
//! key); anything encrypted decrypts to what it was.
//!
//! Cases per property: `PROPTEST_CASES` (default 256); `scripts/fuzz` runs
//! 100,000. A failing case is saved in `fuzz_webhook.proptest-regressions`
//! beside this file and replayed first on every later run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/fuzz.rs"]
mod fuzz;

use fuzz::{config, Cases};
use proptest::prelude::*;
use realtime_core::crypto::{self, MasterKey};
use realtime_core::signing::Secret;
use realtime_core::webhook::sign_webhook;
use realtime_core::{Webhook, WebhookError, WebhookEvent, WebhookVerifier};
use serde_json::{json, Value};

const KEY: &str = "webhook-key";
const SECRET: &str = "webhook-secret";

fn master_key() -> MasterKey {
    MasterKey::from_bytes([42; 32])
}

fn verifier() -> WebhookVerifier {
    WebhookVerifier::new()
        .with_app(KEY, Secret::new(SECRET))
        .with_app("other", Secret::new("other secret"))
        .with_encryption_master_key(master_key())
}

fn sign(body: &[u8]) -> String {
    sign_webhook(&Secret::new(SECRET), body)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[-a-z0-9_@.]{0,20}", 1 => "\\PC{0,40}"]
}

fn channel() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just(""),
            Just("private-"),
            Just("presence-"),
            Just("private-encrypted-")
        ],
        "[-a-z0-9_]{0,20}",
    )
        .prop_map(|(p, rest)| format!("{p}{rest}"))
}

/// A known webhook event (the `Unknown` kind is never serialised).
fn event() -> impl Strategy<Value = WebhookEvent> {
    prop_oneof![
        channel().prop_map(|channel| WebhookEvent::ChannelOccupied { channel }),
        channel().prop_map(|channel| WebhookEvent::ChannelVacated { channel }),
        (channel(), text())
            .prop_map(|(channel, user_id)| WebhookEvent::MemberAdded { channel, user_id }),
        (channel(), text())
            .prop_map(|(channel, user_id)| WebhookEvent::MemberRemoved { channel, user_id }),
        (
            channel(),
            text(),
            "\\PC{0,60}",
            proptest::option::of(text()),
            proptest::option::of(text())
        )
            .prop_map(|(channel, event, data, socket_id, user_id)| {
                WebhookEvent::ClientEvent {
                    channel,
                    event,
                    data,
                    socket_id,
                    user_id,
                }
            }),
        channel().prop_map(|channel| WebhookEvent::CacheMiss { channel }),
        (channel(), any::<u64>()).prop_map(|(channel, subscription_count)| {
            WebhookEvent::SubscriptionCount {
                channel,
                subscription_count,
            }
        }),
    ]
}

fn webhook() -> impl Strategy<Value = Webhook> {
    (any::<u64>(), proptest::collection::vec(event(), 0..8))
        .prop_map(|(time_ms, events)| Webhook { time_ms, events })
}

/// JSON of every shape, with the fields a webhook has turning up often.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e20f64..1e20).prop_map(Value::from),
        text().prop_map(Value::from),
        prop_oneof![
            Just("channel_occupied"),
            Just("client_event"),
            Just("member_added"),
            Just("subscription_count"),
            Just("from_the_future"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("channel".to_owned()),
                    Just("events".to_owned()),
                    Just("time_ms".to_owned()),
                    Just("user_id".to_owned()),
                    Just("data".to_owned()),
                    Just("event".to_owned()),
                    Just("subscription_count".to_owned()),
                    text(),
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body: a real webhook changed a little, any JSON, or any bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (webhook(), proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3), any::<usize>(), any::<bool>())
            .prop_map(|(webhook, changes, cut, truncate)| {
                let mut bytes = serde_json::to_vec(&webhook).unwrap();
                for (at, byte) in changes {
                    if !bytes.is_empty() {
                        let at = at % bytes.len();
                        bytes[at] = byte;
                    }
                }
                if truncate && !bytes.is_empty() {
                    bytes.truncate(cut % bytes.len());
                }
                bytes
            }),
        2 => (any::<u64>(), proptest::collection::vec(json_value(), 0..6))
            .prop_map(|(time_ms, events)| json!({ "time_ms": time_ms, "events": events }).to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
    ]
}

fn check_error(e: &WebhookError) -> Result<(), TestCaseError> {
    prop_assert!(!e.to_string().is_empty(), "{:?} prints nothing", e);
    if let WebhookError::InvalidBody(why) = e {
        prop_assert!(!why.is_empty(), "an invalid body without a reason");
    }
    Ok(())
}

/// Any headers, any body: refused unless signed by a known key's secret.
#[test]
fn unsigned_webhooks_are_refused_before_reading() {
    let cases = Cases::new("webhook_unsigned");
    proptest!(config(), |(
        key in proptest::option::of(prop_oneof![Just(KEY.to_owned()), Just("other".to_owned()), "\\PC{0,12}"]),
        signature in proptest::option::of(prop_oneof!["[0-9a-f]{64}", "[0-9a-fA-F ]{0,70}", "\\PC{0,70}"]),
        body in body(),
    )| {
        cases.hit();
        match verifier().verify(key.as_deref(), signature.as_deref(), &body) {
            Ok(_) => prop_assert!(false, "an unsigned webhook accepted"),
            Err(e) => {
                check_error(&e)?;
                prop_assert!(!matches!(e, WebhookError::InvalidBody(_) | WebhookError::Decryption(_)),
                    "read before the signature was checked: {:?}", e);
            }
        }
    });
}

/// Signed bodies of any shape: read, or refused as not a webhook.
#[test]
fn signed_bodies_are_read_or_refused() {
    let cases = Cases::new("webhook_signed_bodies");
    proptest!(config(), |(body in body(), upper in any::<bool>(), spaces in any::<bool>())| {
        cases.hit();
        let mut signature = sign(&body);
        if upper {
            signature = signature.to_uppercase();
        }
        if spaces {
            signature = format!(" {signature}\t");
        }
        match verifier().verify(Some(KEY), Some(&signature), &body) {
            Ok(webhook) => prop_assert!(webhook.events.len() <= body.len() / 2),
            Err(e) => {
                check_error(&e)?;
                prop_assert!(
                    matches!(e, WebhookError::InvalidBody(_) | WebhookError::Decryption(_) | WebhookError::MissingBody),
                    "a signed body refused as {:?}", e
                );
                prop_assert_eq!(matches!(e, WebhookError::MissingBody), body.is_empty());
            }
        }
    });
}

/// A webhook serialised and signed is read back as it was; encrypted
/// client events come back decrypted; any change to the body is refused.
#[test]
fn webhooks_round_trip() {
    let cases = Cases::new("webhook_round_trip");
    proptest!(config(), |(webhook in webhook(), nonce in any::<[u8; 24]>(), at in any::<usize>(), bit in 0u8..8)| {
        cases.hit();
        let mut sent = webhook.clone();
        for event in &mut sent.events {
            if let WebhookEvent::ClientEvent { channel, data, .. } = event {
                if channel.starts_with("private-encrypted-") {
                    *data = crypto::encrypt_with_nonce(&master_key(), channel, data, &nonce);
                }
            }
        }
        let body = serde_json::to_vec(&sent).unwrap();
        let read = verifier().verify(Some(KEY), Some(&sign(&body)), &body);
        prop_assert_eq!(read, Ok(webhook));
        let mut changed = body.clone();
        let at = at % changed.len();
        changed[at] ^= 1 << bit;
        prop_assert_eq!(
            verifier().verify(Some(KEY), Some(&sign(&body)), &changed),
            Err(WebhookError::InvalidSignature)
        );
    });
}

/// Encrypted data of any shape: decrypted or refused with a reason; what
/// was encrypted decrypts to itself, and only on its own channel.
#[test]
fn encrypted_data_opens_only_as_sealed() {
    let cases = Cases::new("webhook_encrypted_data");
    proptest!(config(), |(
        channel in channel(),
        plaintext in "\\PC{0,100}",
        nonce in any::<[u8; 24]>(),
        data in prop_oneof![
            json_value().prop_map(|v| v.to_string()),
            ("[A-Za-z0-9+/=]{0,40}", "[A-Za-z0-9+/=]{0,80}")
                .prop_map(|(n, c)| json!({ "nonce": n, "ciphertext": c }).to_string()),
            "\\PC{0,80}",
        ],
    )| {
        cases.hit();
        let key = master_key();
        let sealed = crypto::encrypt_with_nonce(&key, &channel, &plaintext, &nonce);
        prop_assert_eq!(crypto::decrypt(&key, &channel, &sealed), Ok(plaintext.clone()));
        let other = format!("{channel}x");
        prop_assert!(crypto::decrypt(&key, &other, &sealed).is_err());
        if let Err(e) = crypto::decrypt(&key, &channel, &data) {
            prop_assert!(!e.to_string().is_empty());
        }
    });
}
