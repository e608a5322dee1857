//! Property-based fuzzing of the inbox's own parsers of outside text:
//! phone numbers (`phone.rs`, `twilio/inbound.rs`), Twilio's signature
//! (`twilio/signature.rs`) and the form fields of its webhooks
//! (`routes/api/webhooks`), the pusher-js auth body (`routes/api/pusher`),
//! channel names of the inbox (`realtime/channels.rs`) and ids.
//!
//! Properties: no panic; a phone number parses to `+` and digits (at most
//! 17: libphonenumber accepts some longer than E.164's 15) and parses again
//! to itself; a stored number is never longer
//! than the input; a Twilio signature made for a request verifies, with or
//! without the URL's default port, and a changed one does not; MMS
//! attachments are at most 10; a refused auth body says why.
//!
//! Cases per property: `PROPTEST_CASES` (default 256); `scripts/fuzz` runs
//! 100,000. A failing case is saved in
//! `fuzz_inbox_parsers.proptest-regressions` beside this file and replayed
//! first on every later run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../realtime-core/tests/support/fuzz.rs"]
mod fuzz;

use actix_web::body::MessageBody;
use actix_web::ResponseError;
use api_server::models::parse_id;
use api_server::phone::PhoneNumber;
use api_server::realtime::channels::InboxChannel;
use api_server::routes::api::pusher::{fields, required};
use api_server::routes::api::webhooks::twilio::media;
use api_server::twilio::inbound::stored_number;
use api_server::twilio::signature::{expected_signature, is_valid};
use fuzz::{config, Cases};
use proptest::prelude::*;
use serde_json::Value;

/// Phone numbers as people and Twilio write them, changed a little, and
/// any text.
fn phone() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "\\+?1? ?\\(?[2-9][0-9]{2}\\)?[ .-]?[0-9]{3}[ .-]?[0-9]{4}",
        2 => "\\+[1-9][0-9]{5,16}",
        1 => "\\+?[0-9 ()+.\\-]{0,30}( ?(ext|x|#)\\.? ?[0-9]{0,8})?",
        1 => "[0-9A-Za-z+ ]{0,20}",
        1 => "[0-9٠-٩０-９+ ]{0,20}",
        1 => "\\PC{0,70}",
    ]
}

#[test]
fn phone_numbers_parse_to_e164_or_not_at_all() {
    let cases = Cases::new("inbox_phone_numbers");
    proptest!(config(), |(raw in phone())| {
        cases.hit();
        if let Some(number) = PhoneNumber::parse(&raw) {
            let e164 = number.as_str();
            prop_assert!(e164.starts_with('+'), "{:?} -> {:?}", raw, e164);
            prop_assert!(e164[1..].bytes().all(|b| b.is_ascii_digit()), "{:?} -> {:?}", raw, e164);
            // E.164 allows 15 digits; libphonenumber's metadata accepts some
            // longer numbers (German ones of 16 digits, `+4920100000000000`).
            prop_assert!((2..=18).contains(&e164.len()), "{:?} -> {:?}", raw, e164);
            prop_assert_eq!(number.to_string(), e164.to_owned());
        }
        let stored = stored_number(&raw);
        prop_assert!(stored.len() <= raw.len().max(16), "{:?} stored as {:?}", raw, stored);
    });
}

#[test]
fn ids_and_inbox_channels_parse_strictly() {
    let cases = Cases::new("inbox_ids_and_channels");
    proptest!(config(), |(
        prefix in prop_oneof![
            Just("private-contact-"), Just("presence-contact-"), Just("private-user-"),
            Just("private-encrypted-contact-"), Just(""), Just("private-"),
        ],
        id in prop_oneof!["[0-9]{1,20}", "[-+]?[0-9]{0,4}", "\\PC{0,10}", any::<i64>().prop_map(|n| n.to_string())],
    )| {
        cases.hit();
        let parsed = parse_id(&id);
        if let Some(n) = parsed {
            prop_assert!(n > 0);
        }
        let model = id.parse::<i64>().ok().filter(|n| *n > 0);
        prop_assert_eq!(parsed, model);
        // A channel names its id only in canonical form (digits, no sign, no
        // leading zero): `private-user-0001` is no alias of `private-user-1`.
        let canonical = model.filter(|n| n.to_string() == id);
        let name = format!("{prefix}{id}");
        match InboxChannel::parse(&name) {
            Some(InboxChannel::ContactEvents(n)) => {
                prop_assert_eq!(prefix, "private-contact-");
                prop_assert_eq!(Some(n), canonical);
            }
            Some(InboxChannel::ContactViewers(n)) => {
                prop_assert_eq!(prefix, "presence-contact-");
                prop_assert_eq!(Some(n), canonical);
            }
            Some(InboxChannel::User(n)) => {
                prop_assert_eq!(prefix, "private-user-");
                prop_assert_eq!(Some(n), canonical);
            }
            Some(InboxChannel::EncryptedContactEvents(n)) => {
                prop_assert_eq!(prefix, "private-encrypted-contact-");
                prop_assert_eq!(Some(n), canonical);
            }
            None => prop_assert!(canonical.is_none() || prefix.is_empty() || prefix == "private-", "{:?}", name),
        }
    });
}

/// Form fields as Twilio posts them, and anything else.
fn form() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("MessageSid".to_owned()),
        Just("From".to_owned()),
        Just("To".to_owned()),
        Just("Body".to_owned()),
        Just("NumMedia".to_owned()),
        (0u32..12).prop_map(|i| format!("MediaUrl{i}")),
        (0u32..12).prop_map(|i| format!("MediaContentType{i}")),
        "\\PC{0,10}",
    ];
    let value = prop_oneof![
        "[0-9]{0,3}",
        Just("18446744073709551616".to_owned()),
        Just("-1".to_owned()),
        "https://api\\.twilio\\.com/[a-z0-9/]{0,20}",
        "\\PC{0,40}",
    ];
    proptest::collection::vec((name, value), 0..14)
}

#[test]
fn twilio_forms_and_signatures_are_checked_safely() {
    let cases = Cases::new("inbox_twilio_signature");
    proptest!(config(), |(
        token in "\\PC{0,32}",
        fields in form(),
        scheme in prop_oneof![Just("http"), Just("https")],
        host in "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,4}){0,2}",
        port in proptest::option::of(prop_oneof![Just(80u16), Just(443), 1u16..]),
        path in "(/[a-zA-Z0-9_.-]{0,8}){0,3}",
        query in proptest::option::of("[a-zA-Z0-9=&%+!'()*~ ._-]{0,30}"),
        header in prop_oneof!["[A-Za-z0-9+/]{27}=", "\\PC{0,40}"],
        url_text in "\\PC{0,40}",
        flip in any::<usize>(),
    )| {
        cases.hit();
        // MMS attachments: at most 10, whatever NumMedia says.
        prop_assert!(media(&fields).len() <= 10);
        // Any header and URL: no panic, and a guess is refused.
        prop_assert!(!is_valid(&token, &header, &url_text, &fields));
        // The signature Twilio makes for the URL it called verifies, with
        // or without the default port.
        let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
        let query_text = query.as_ref().map(|q| format!("?{q}")).unwrap_or_default();
        let url = format!("{scheme}://{host}{port_text}{path}{query_text}");
        let Ok(parsed) = url::Url::parse(&url) else {
            return Ok(());
        };
        let canonical = parsed.to_string();
        let signature = expected_signature(&token, &canonical, &fields);
        prop_assert!(is_valid(&token, &signature, &canonical, &fields), "{}", canonical);
        let padded = format!(" {signature} ");
        prop_assert!(is_valid(&token, &padded, &canonical, &fields));
        if parsed.port().is_none() {
            let default = if scheme == "https" { 443 } else { 80 };
            let mut with_port = format!("{scheme}://{host}:{default}{}", parsed.path());
            if let Some(q) = parsed.query() {
                with_port.push('?');
                with_port.push_str(q);
            }
            let signed_with_port = expected_signature(&token, &with_port, &fields);
            prop_assert!(is_valid(&token, &signed_with_port, &canonical, &fields), "{}", with_port);
        }
        // One character changed: refused.
        let mut changed: Vec<char> = signature.chars().collect();
        let at = flip % changed.len();
        changed[at] = if changed[at] == 'A' { 'B' } else { 'A' };
        let changed: String = changed.into_iter().collect();
        prop_assert!(!is_valid(&token, &changed, &canonical, &fields));
    });
}

#[test]
fn pusher_auth_bodies_are_read_or_refused_with_a_reason() {
    let cases = Cases::new("inbox_pusher_auth_fields");
    proptest!(config(), |(
        json_body in any::<bool>(),
        content_type in prop_oneof![
            Just("application/json".to_owned()), Just("application/json; charset=utf-8".to_owned()),
            Just("application/x-www-form-urlencoded".to_owned()), "\\PC{0,20}",
        ],
        socket_id in prop_oneof!["[0-9]{1,6}\\.[0-9]{1,6}", "\\PC{0,12}"],
        channel in prop_oneof!["private-contact-[0-9]{1,3}", "\\PC{0,20}"],
        raw in proptest::collection::vec(any::<u8>(), 0..100),
        shape in 0u8..4,
    )| {
        cases.hit();
        let body: Vec<u8> = match shape {
            0 => url::form_urlencoded::Serializer::new(String::new())
                .append_pair("socket_id", &socket_id)
                .append_pair("channel_name", &channel)
                .finish()
                .into_bytes(),
            1 => serde_json::json!({ "socket_id": socket_id, "channel_name": channel }).to_string().into_bytes(),
            2 => serde_json::json!([socket_id, channel]).to_string().into_bytes(),
            _ => raw,
        };
        let content_type = if json_body { "application/json".to_owned() } else { content_type };
        let req = actix_web::test::TestRequest::default()
            .insert_header(("content-type", content_type.as_str()))
            .to_http_request();
        match fields(&req, &body) {
            Ok(fields) => {
                for name in ["socket_id", "channel_name"] {
                    match required(&fields, name) {
                        Ok(value) => prop_assert!(!value.is_empty()),
                        Err(e) => prop_assert!(error_shape(&e)?.contains(name)),
                    }
                }
            }
            Err(e) => {
                error_shape(&e)?;
            }
        }
    });
}

/// The contract's error shape, with a non-empty message; answers the message.
fn error_shape(e: &api_server::error::AppError) -> Result<String, TestCaseError> {
    let response = e.error_response();
    prop_assert!(response.status().is_client_error(), "{}", response.status());
    let body = response.into_body().try_into_bytes().unwrap_or_default();
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let message = value["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    prop_assert!(
        value["error"]["code"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{}",
        value
    );
    prop_assert!(!message.is_empty(), "{}", value);
    Ok(message)
}

/// A number parsed must parse again to itself: the E.164 text is what is
/// stored and what replies go to. `phonenumber` reads `+321110000000` as
/// `+3210000000` (a different number, which itself is not valid); such a
/// number is refused rather than stored under another one.
#[test]
fn phone_numbers_parse_again_to_themselves() {
    let raw = "+321110000000";
    let parsed = PhoneNumber::parse(raw).map(|p| p.as_str().to_owned());
    if let Some(e164) = &parsed {
        assert_eq!(e164, raw, "the digits changed");
        assert_eq!(
            PhoneNumber::parse(e164).map(|p| p.as_str().to_owned()),
            parsed
        );
    }
    let cases = Cases::new("inbox_phone_numbers_again");
    proptest!(config(), |(raw in phone())| {
        cases.hit();
        if let Some(number) = PhoneNumber::parse(&raw) {
            let e164 = number.as_str();
            let again = PhoneNumber::parse(e164);
            prop_assert_eq!(again.as_ref().map(PhoneNumber::as_str), Some(e164), "{:?}", raw);
        }
    });
}
