//! Property-based fuzzing of the names the API checks (`channel.rs`):
//! channel names, event names, socket ids and user ids, from any text and
//! from valid names changed a little.
//!
//! Properties: no panic; accepted exactly when a reference model written
//! from the API's rules says so; a refusal is the variant for the rule
//! broken and prints a non-empty message; an accepted name is kept as given
//! (`as_str`, `Display`, `FromStr`, JSON all give it back); a channel's kind
//! follows its prefix.
//!
//! Cases per property: `PROPTEST_CASES` (default 256); `scripts/fuzz` runs
//! 100,000. A failing case is saved in `fuzz_names.proptest-regressions`
//! beside this file and replayed first on every later run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/fuzz.rs"]
mod fuzz;

use fuzz::{config, Cases};
use proptest::prelude::*;
use realtime_core::{ChannelKind, ChannelName, EventName, SocketId, UserId, ValidationError};

/// Text around the rules' edges: valid names of every kind and length,
/// valid names with a character changed or added, and any text.
fn name() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just(""),
        Just("private-"),
        Just("private-encrypted-"),
        Just("presence-"),
        Just("#server-to-user-"),
        Just("#"),
        Just("private"),
    ];
    let valid = (prefix, "[-a-zA-Z0-9_=@,.;]{0,170}").prop_map(|(p, rest)| format!("{p}{rest}"));
    prop_oneof![
        4 => valid.clone(),
        2 => (valid, any::<usize>(), "\\PC").prop_map(|(name, at, c)| {
            let mut chars: Vec<char> = name.chars().collect();
            let at = at % (chars.len() + 1);
            chars.insert(at, c.chars().next().unwrap_or(' '));
            chars.into_iter().collect()
        }),
        1 => "[0-9]{0,6}\\.?[0-9]{0,6}",
        1 => "[0-9\\.٠-٩ \n]{0,8}",
        2 => "\\PC{0,220}",
        1 => ".{0,40}",
    ]
}

fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_=@,.;".contains(c)
}

/// The channel-name rules, as the API documents them.
fn channel_model(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 164 {
        return Err("too long");
    }
    let rest = name.strip_prefix("#server-to-user-").unwrap_or(name);
    if rest.is_empty() || !rest.chars().all(is_channel_char) {
        return Err("invalid");
    }
    Ok(())
}

fn check_error(e: &ValidationError) -> Result<(), TestCaseError> {
    prop_assert!(!e.to_string().is_empty(), "{:?} prints nothing", e);
    Ok(())
}

#[test]
fn channel_names_follow_the_rules() {
    let cases = Cases::new("names_channel");
    proptest!(config(), |(name in name())| {
        cases.hit();
        match (ChannelName::parse(name.as_str()), channel_model(&name)) {
            (Ok(channel), Ok(())) => {
                prop_assert_eq!(channel.as_str(), name.as_str());
                prop_assert_eq!(channel.to_string(), name.clone());
                prop_assert_eq!(name.parse::<ChannelName>().unwrap(), channel.clone());
                prop_assert_eq!(serde_json::to_string(&channel).unwrap(), serde_json::to_string(&name).unwrap());
                let kind = if name.starts_with("private-encrypted-") {
                    ChannelKind::PrivateEncrypted
                } else if name.starts_with("private-") {
                    ChannelKind::Private
                } else if name.starts_with("presence-") {
                    ChannelKind::Presence
                } else if name.starts_with("#server-to-user-") {
                    ChannelKind::ServerToUser
                } else {
                    ChannelKind::Public
                };
                prop_assert_eq!(channel.kind(), kind);
                prop_assert_eq!(channel.is_encrypted(), kind == ChannelKind::PrivateEncrypted);
            }
            (Err(e), Err(why)) => {
                check_error(&e)?;
                let matches = match (&e, why) {
                    (ValidationError::EmptyChannelName, "empty") => true,
                    (ValidationError::ChannelNameTooLong { len, max: 164 }, "too long") => *len == name.len(),
                    (ValidationError::InvalidChannelName(given), "invalid") => *given == name,
                    _ => false,
                };
                prop_assert!(matches, "{:?} refused as {:?}, the rules say {}", name, e, why);
            }
            (got, want) => prop_assert!(false, "{:?}: parse {:?}, rules {:?}", name, got, want),
        }
    });
}

#[test]
fn event_names_socket_ids_and_user_ids_follow_the_rules() {
    let cases = Cases::new("names_event_socket_user");
    proptest!(config(), |(name in name())| {
        cases.hit();
        // Event names: 1 to 200 bytes of anything.
        match EventName::parse(name.as_str()) {
            Ok(event) => {
                prop_assert!(!name.is_empty() && name.len() <= 200);
                prop_assert_eq!(event.as_str(), name.as_str());
                prop_assert_eq!(event.to_string(), name.clone());
            }
            Err(e) => {
                check_error(&e)?;
                prop_assert!(name.is_empty() || name.len() > 200, "{:?}: {:?}", name, e);
            }
        }
        // Socket ids: ASCII digits, a dot, ASCII digits.
        let socket_ok = name.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty()
                && a.chars().all(|c| c.is_ascii_digit())
                && b.chars().all(|c| c.is_ascii_digit())
        });
        match SocketId::parse(name.as_str()) {
            Ok(id) => {
                prop_assert!(socket_ok, "{:?} accepted as a socket id", name);
                prop_assert_eq!(id.as_str(), name.as_str());
            }
            Err(e) => {
                check_error(&e)?;
                prop_assert!(!socket_ok, "{:?} refused as a socket id", name);
                prop_assert_eq!(e, ValidationError::InvalidSocketId(name.clone()));
            }
        }
        // User ids: channel characters, fitting `#server-to-user-{id}`.
        let user_ok = !name.is_empty() && name.len() <= 164 - 16 && name.chars().all(is_channel_char);
        match UserId::parse(name.as_str()) {
            Ok(id) => {
                prop_assert!(user_ok, "{:?} accepted as a user id", name);
                prop_assert_eq!(id.as_str(), name.as_str());
                let channel = ChannelName::server_to_user(&id);
                prop_assert_eq!(ChannelName::parse(channel.as_str()), Ok(channel.clone()));
                prop_assert_eq!(channel.kind(), ChannelKind::ServerToUser);
            }
            Err(e) => {
                check_error(&e)?;
                prop_assert!(!user_ok, "{:?} refused as a user id", name);
            }
        }
    });
}
