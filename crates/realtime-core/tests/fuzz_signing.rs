//! Property-based fuzzing of request signing and its verification
//! (`signing.rs`), channel and user authorization as a server checks it
//! (`auth.rs`), and configuration from a URL, the environment and a base64
//! master key (`config.rs`, `crypto.rs`).
//!
//! Properties: no panic; every refusal prints a non-empty message; a
//! request signed by `sign_request` verifies, also after the trip through
//! a URL that the server decodes, and any change to it is refused; a
//! token from `authorize_channel` / `authenticate_user` verifies and any
//! other does not; a URL made from a configuration's parts gives those
//! parts back.
//!
//! Cases per property: `PROPTEST_CASES` (default 256); `scripts/fuzz` runs
//! 100,000. A failing case is saved in `fuzz_signing.proptest-regressions`
//! beside this file and replayed first on every later run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/fuzz.rs"]
mod fuzz;

use std::collections::HashMap;

use fuzz::{config, Cases};
use proptest::prelude::*;
use realtime_core::signing::{sign_request, verify_request, Secret, Signer};
use realtime_core::{Config, Credentials, MasterKey};
use serde_json::json;

fn signer() -> Signer {
    Signer::new(&Secret::new("7ad3773142a6692b25b8"))
}

/// Parameters a request may carry: keys unlike the `auth_*` ones and
/// distinct once lower-cased; keys and values without `&`, keys without
/// `=` (the raw query `sign_request` writes is split on them).
fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_\\-.]{0,10}", "[^&]{0,20}", 0..5).prop_map(
        |map| {
            let mut seen = std::collections::HashSet::new();
            map.into_iter()
                .filter(|(k, _)| {
                    let k = k.to_ascii_lowercase();
                    !k.starts_with("auth_") && k != "body_md5" && seen.insert(k)
                })
                .collect()
        },
    )
}

/// The query `sign_request` wrote, split as written.
fn split_raw(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn signed_requests_verify_and_changes_are_refused() {
    let cases = Cases::new("signing_round_trip");
    proptest!(config(), |(
        method in prop_oneof![Just("GET".to_owned()), Just("POST".to_owned()), Just("post".to_owned()), "[A-Za-z]{1,7}"],
        path in "/apps/[0-9]{1,4}/[a-z_/]{0,20}",
        params in params(),
        body in proptest::option::of("\\PC{0,100}"),
        timestamp in 0u64..=(1 << 40),
        skew in -600i64..=600,
        change in 0u8..6,
    )| {
        cases.hit();
        let signer = signer();
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let query = sign_request(&signer, "key", &method, &path, &borrowed, body.as_deref(), timestamp);
        let mut parsed = split_raw(&query);
        let raw_body = body.clone().unwrap_or_default().into_bytes();
        let now = timestamp.saturating_add_signed(skew);
        prop_assert_eq!(verify_request(&signer, &method, &path, &parsed, &raw_body, now, 600), Ok(()));
        // The same after the trip through a URL: encoded by `url`, decoded
        // as the server decodes it.
        let url = url::Url::parse(&format!("http://h{path}?{query}")).unwrap();
        let decoded: Vec<(String, String)> = url::form_urlencoded::parse(url.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
        // `sign_request` writes values as they are, so only those a URL
        // carries unchanged make the trip: not `+` (a space once decoded),
        // `%`, `#`, nor the tab and line breaks a URL parser drops. The
        // client's own parameters (channel names, info attributes) are of
        // these.
        let unchanged = |t: &str| !t.contains(['+', '%', '#', '\t', '\n', '\r']);
        let plain = params.iter().all(|(k, v)| unchanged(k) && unchanged(v));
        if plain && unchanged(&path) {
            prop_assert_eq!(
                verify_request(&signer, &method, url.path(), &decoded, &raw_body, now, 600),
                Ok(()),
                "{} after the URL", query
            );
        }
        // One change, refused with a reason.
        let (mut m, mut p, mut b, mut n) = (method.clone(), path.clone(), raw_body.clone(), now);
        match change {
            0 => p.push('x'),
            1 => m.push('X'),
            2 if !b.is_empty() => b.push(b' '),
            3 => n = timestamp + 601,
            4 => parsed.push(("extra".into(), "1".into())),
            _ => {
                let last = parsed.len() - 1;
                parsed[last].1 = "0".repeat(64);
            }
        }
        if (m.clone(), p.clone(), b.clone(), n) != (method.clone(), path.clone(), raw_body.clone(), now) || change >= 4 {
            match verify_request(&signer, &m, &p, &parsed, &b, n, 600) {
                Ok(()) => prop_assert!(false, "change {} accepted", change),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    });
}

#[test]
fn any_query_is_checked_safely() {
    let cases = Cases::new("signing_any_query");
    proptest!(config(), |(
        query in proptest::collection::vec((
            prop_oneof![
                Just("auth_signature".to_owned()), Just("AUTH_KEY".to_owned()), Just("auth_key".to_owned()),
                Just("auth_version".to_owned()), Just("auth_timestamp".to_owned()), Just("body_md5".to_owned()),
                "\\PC{0,8}",
            ],
            prop_oneof![Just("1.0".to_owned()), "[0-9a-f]{0,64}", "[0-9]{0,22}", "\\PC{0,20}"],
        ), 0..8),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        now in any::<u64>(),
        tolerance in any::<u64>(),
        method in "\\PC{0,8}",
        path in "\\PC{0,20}",
    )| {
        cases.hit();
        if let Err(e) = verify_request(&signer(), &method, &path, &query, &body, now, tolerance) {
            let message = e.to_string();
            prop_assert!(!message.is_empty());
            // A message echoes at most the request itself.
            let sent: usize = query.iter().map(|(k, v)| k.len() + v.len() + 1).sum::<usize>() + method.len() + path.len();
            prop_assert!(message.len() <= 8 * sent + 256, "{} bytes of message", message.len());
        }
        prop_assert!(!signer().verify_hex(&[&body], &method));
    });
}

#[test]
fn channel_and_user_tokens_verify_only_as_issued() {
    let cases = Cases::new("signing_auth_tokens");
    proptest!(config(), |(
        socket_id in prop_oneof!["[0-9]{1,8}\\.[0-9]{1,8}", "\\PC{0,12}"],
        channel in prop_oneof!["(private-|presence-|private-encrypted-)?[-a-z0-9_]{1,20}", "\\PC{0,20}"],
        user in "\\PC{0,20}",
        auth in prop_oneof!["key:[0-9a-f]{64}", "\\PC{0,80}"],
        channel_data in proptest::option::of("\\PC{0,40}"),
    )| {
        cases.hit();
        let credentials = Credentials::new("1", "key", "secret");
        // Any token: no panic, and none verifies by chance.
        prop_assert!(!credentials.verify_channel_auth(&socket_id, &channel, channel_data.as_deref(), &auth));
        prop_assert!(!credentials.verify_user_auth(&socket_id, &user, &auth));
        // Issued tokens verify, for what they were issued only.
        if let Ok(issued) = credentials.authorize_channel(&socket_id, &channel) {
            prop_assert!(credentials.verify_channel_auth(&socket_id, &channel, None, &issued.auth));
            let other = format!("{channel}x");
            prop_assert!(!credentials.verify_channel_auth(&socket_id, &other, None, &issued.auth));
        }
        let user_data = json!({ "id": user });
        match credentials.authenticate_user(&socket_id, &user_data) {
            Ok(issued) => {
                prop_assert!(credentials.verify_user_auth(&socket_id, &issued.user_data, &issued.auth));
                let changed = format!("{} ", issued.user_data);
                prop_assert!(!credentials.verify_user_auth(&socket_id, &changed, &issued.auth));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    });
}

/// Percent-encodes what a URL's user info may not hold as it is.
fn encode_userinfo(text: &str, keep_sub_delims: bool) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        let sub_delim = b"!$&'()*+,;=".contains(&byte);
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || (keep_sub_delims && sub_delim)
        {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[test]
fn urls_give_back_their_parts() {
    let cases = Cases::new("config_from_url");
    proptest!(config(), |(
        key in "\\PC{1,20}",
        secret in "\\PC{1,30}",
        host in "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5}){0,2}"
            .prop_filter("a host name (not `xn--` without punycode)", |h| url::Host::parse(h).is_ok()),
        port in proptest::option::of(1u16..),
        app_id in "[A-Za-z0-9]{1,10}",
        tls in any::<bool>(),
        slash in any::<bool>(),
    )| {
        cases.hit();
        let scheme = if tls { "https" } else { "http" };
        let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
        let url = format!(
            "{scheme}://{}:{}@{host}{port_text}/apps/{app_id}{}",
            encode_userinfo(&key, false),
            encode_userinfo(&secret, false),
            if slash { "/" } else { "" },
        );
        let config = Config::from_url(&url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
        prop_assert_eq!(config.credentials().key(), key.as_str());
        prop_assert_eq!(config.credentials().secret().expose(), secret.as_str());
        prop_assert_eq!(config.credentials().app_id(), app_id.as_str());
        prop_assert_eq!(config.host(), host.as_str());
        let default_port = if tls { 443 } else { 80 };
        prop_assert_eq!(config.port(), port.filter(|p| *p != default_port));
    });
}

/// RFC 3986 lets user info hold `!$&'()*+,;=` as they are; a URL written
/// so must give them back as they are too.
#[test]
fn urls_with_literal_sub_delimiters_give_back_their_parts() {
    let cases = Cases::new("config_from_url_sub_delims");
    proptest!(config(), |(key in "[a-z!$&'()*+,;=]{1,12}", secret in "[a-z0-9!$&'()*+,;=]{1,20}")| {
        cases.hit();
        let url = format!(
            "http://{}:{}@localhost:6001/apps/1",
            encode_userinfo(&key, true),
            encode_userinfo(&secret, true),
        );
        let config = Config::from_url(&url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
        prop_assert_eq!(config.credentials().key(), key.as_str(), "key of {}", url);
        prop_assert_eq!(config.credentials().secret().expose(), secret.as_str(), "secret of {}", url);
    });
}

#[test]
fn any_configuration_text_is_read_or_refused_with_a_reason() {
    let cases = Cases::new("config_any_text");
    proptest!(config(), |(
        url in prop_oneof![
            "\\PC{0,60}",
            "(https?|wss?|ftp)://[a-z%:@]{0,12}@?[a-z0-9.\\[\\]:]{0,12}(:[0-9]{0,6})?(/apps(/[0-9a-z%]{0,5}){0,3})?",
        ],
        env in proptest::collection::hash_map(
            prop_oneof![
                Just("PUSHER_APP_ID"), Just("PUSHER_KEY"), Just("PUSHER_SECRET"), Just("PUSHER_CLUSTER"),
                Just("PUSHER_HOST"), Just("PUSHER_PORT"), Just("PUSHER_SCHEME"),
                Just("PUSHER_ENCRYPTION_MASTER_KEY_BASE64"), Just("NEXT_PUBLIC_PUSHER_KEY"),
            ].prop_map(str::to_owned),
            prop_oneof!["\\PC{0,20}", "[0-9]{0,6}", "[A-Za-z0-9+/]{43}=", " *"],
            0..9,
        ),
        with_url in any::<bool>(),
        key_bytes in proptest::collection::vec(any::<u8>(), 0..40),
    )| {
        cases.hit();
        if let Err(e) = Config::from_url(&url) {
            prop_assert!(!e.to_string().is_empty());
        }
        let mut env: HashMap<String, String> = env;
        if with_url {
            env.insert("PUSHER_URL".into(), url.clone());
        }
        // A host or cluster that cannot be a host name (`PUSHER_CLUSTER=¸`)
        // is accepted here and fails every request later: the environment
        // is the operator's, so only "no panic" and a reason are asked.
        match Config::from_lookup(|name| env.get(name).cloned()) {
            Ok(config) => prop_assert!(!config.host().is_empty()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&key_bytes);
        prop_assert_eq!(MasterKey::from_base64(&encoded).is_ok(), key_bytes.len() == 32);
    });
}
