//! Names with rules: channels, events, socket ids and user ids. Each is parsed
//! once at the edge; a value of these types is valid by construction.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::error::ValidationError;

/// Longest channel name the API accepts.
pub const MAX_CHANNEL_NAME_LEN: usize = 164;
/// Longest event name the API accepts.
pub const MAX_EVENT_NAME_LEN: usize = 200;
/// Most channels one trigger may name.
pub const MAX_TRIGGER_CHANNELS: usize = 100;
/// Most events one batch may hold on Pusher's shared clusters.
pub const MAX_BATCH_EVENTS: usize = 10;
/// Default limit on an event's data, in bytes (Pusher's shared clusters).
pub const DEFAULT_MAX_DATA_BYTES: usize = 10 * 1024;

/// Prefix of the channel that carries events sent to one authenticated user.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// What kind of channel a name denotes; the prefix decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// Anyone may subscribe.
    Public,
    /// `private-`: subscription needs an authorization signature.
    Private,
    /// `private-encrypted-`: private, and event data is end-to-end encrypted.
    PrivateEncrypted,
    /// `presence-`: private, and members are announced to each other.
    Presence,
    /// `#server-to-user-{id}`: events for one authenticated user.
    ServerToUser,
}

impl ChannelKind {
    /// The kind of the channel with this name.
    pub fn of(name: &str) -> Self {
        if name.starts_with("private-encrypted-") {
            ChannelKind::PrivateEncrypted
        } else if name.starts_with("private-") {
            ChannelKind::Private
        } else if name.starts_with("presence-") {
            ChannelKind::Presence
        } else if name.starts_with(SERVER_TO_USER_PREFIX) {
            ChannelKind::ServerToUser
        } else {
            ChannelKind::Public
        }
    }

    /// Whether subscribing needs a signature from the app's auth endpoint.
    pub fn requires_auth(self) -> bool {
        matches!(
            self,
            ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence
        )
    }
}

/// Whether a channel is a cache channel (`cache-`, `private-cache-`,
/// `private-encrypted-cache-`, `presence-cache-`): the server keeps its last
/// event and sends it to each new subscriber. Its kind, and so its
/// authorization, is that of its prefix ([`ChannelKind::of`]).
pub fn is_cache(name: &str) -> bool {
    [
        "cache-",
        "private-cache-",
        "private-encrypted-cache-",
        "presence-cache-",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
}

fn is_channel_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'@' | b',' | b'.' | b';')
}

/// A valid channel name: `^[-a-zA-Z0-9_=@,.;]+$` (or `#server-to-user-` and
/// such a suffix), at most 164 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);

impl ChannelName {
    /// Checks `name` against the API's rules.
    pub fn parse(name: impl Into<String>) -> Result<Self, ValidationError> {
        let name = name.into();
        if name.is_empty() {
            return Err(ValidationError::EmptyChannelName);
        }
        if name.len() > MAX_CHANNEL_NAME_LEN {
            return Err(ValidationError::ChannelNameTooLong {
                len: name.len(),
                max: MAX_CHANNEL_NAME_LEN,
            });
        }
        let rest = name.strip_prefix(SERVER_TO_USER_PREFIX).unwrap_or(&name);
        if rest.is_empty() || !rest.bytes().all(is_channel_char) {
            return Err(ValidationError::InvalidChannelName(name));
        }
        Ok(ChannelName(name))
    }

    /// The `#server-to-user-{id}` channel of one user.
    pub fn server_to_user(user_id: &UserId) -> Self {
        ChannelName(format!("{SERVER_TO_USER_PREFIX}{}", user_id.as_str()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The channel's kind, from its prefix.
    pub fn kind(&self) -> ChannelKind {
        ChannelKind::of(&self.0)
    }

    /// Whether event data on this channel is end-to-end encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.kind() == ChannelKind::PrivateEncrypted
    }
}

/// A valid event name: 1 to 200 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventName(String);

impl EventName {
    /// Checks `name` against the API's rules.
    pub fn parse(name: impl Into<String>) -> Result<Self, ValidationError> {
        let name = name.into();
        if name.is_empty() {
            return Err(ValidationError::EmptyEventName);
        }
        if name.len() > MAX_EVENT_NAME_LEN {
            return Err(ValidationError::EventNameTooLong {
                len: name.len(),
                max: MAX_EVENT_NAME_LEN,
            });
        }
        Ok(EventName(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A valid socket id, `digits.digits`, as the server assigns it to a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SocketId(String);

impl SocketId {
    /// Checks `id` against `^\d+\.\d+$`.
    pub fn parse(id: impl Into<String>) -> Result<Self, ValidationError> {
        let id = id.into();
        let valid = match id.split_once('.') {
            Some((a, b)) => {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            }
            None => false,
        };
        if valid {
            Ok(SocketId(id))
        } else {
            Err(ValidationError::InvalidSocketId(id))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user id usable in `#server-to-user-{id}` and the users API: non-empty,
/// channel-name characters only, short enough for the channel name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    /// Checks `id` against the rules of the users API.
    pub fn parse(id: impl Into<String>) -> Result<Self, ValidationError> {
        let id = id.into();
        let max = MAX_CHANNEL_NAME_LEN - SERVER_TO_USER_PREFIX.len();
        if id.is_empty() || id.len() > max || !id.bytes().all(is_channel_char) {
            return Err(ValidationError::InvalidUserId(id));
        }
        Ok(UserId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_newtype_impls {
    ($($ty:ident),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl TryFrom<&str> for $ty {
            type Error = ValidationError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }
        impl TryFrom<String> for $ty {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }
        impl std::str::FromStr for $ty {
            type Err = ValidationError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::parse(value)
            }
        }
    )*};
}

text_newtype_impls!(ChannelName, EventName, SocketId, UserId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_channels_are_told_by_their_prefix_and_keep_their_kind() {
        for (name, kind) in [
            ("cache-scores", ChannelKind::Public),
            ("private-cache-scores", ChannelKind::Private),
            (
                "private-encrypted-cache-scores",
                ChannelKind::PrivateEncrypted,
            ),
            ("presence-cache-room", ChannelKind::Presence),
        ] {
            assert!(is_cache(name), "{name}");
            assert_eq!(ChannelKind::of(name), kind, "{name}");
        }
        for name in [
            "scores",
            "private-scores",
            "cached-x",
            "presence-x-cache-y",
            "#server-to-user-cache-1",
        ] {
            assert!(!is_cache(name), "{name}");
        }
    }

    #[test]
    fn channel_names_follow_the_api_rules() {
        for ok in [
            "a",
            "private-contact-1",
            "presence-lHlO8wb@p5bAdxj3CkQ2=ac;3FBU",
            "private-encrypted-x,y.z",
            "#server-to-user-42",
        ] {
            assert!(ChannelName::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            ChannelName::parse(""),
            Err(ValidationError::EmptyChannelName)
        );
        assert!(matches!(
            ChannelName::parse("has space"),
            Err(ValidationError::InvalidChannelName(_))
        ));
        assert!(matches!(
            ChannelName::parse("#server-to-user-"),
            Err(ValidationError::InvalidChannelName(_))
        ));
        assert!(matches!(
            ChannelName::parse("#other"),
            Err(ValidationError::InvalidChannelName(_))
        ));
        assert!(ChannelName::parse("a".repeat(164)).is_ok());
        assert_eq!(
            ChannelName::parse("a".repeat(165)),
            Err(ValidationError::ChannelNameTooLong { len: 165, max: 164 })
        );
    }

    #[test]
    fn kinds_follow_the_prefix() {
        assert_eq!(
            ChannelKind::of("private-encrypted-a"),
            ChannelKind::PrivateEncrypted
        );
        assert_eq!(ChannelKind::of("private-a"), ChannelKind::Private);
        assert_eq!(ChannelKind::of("presence-a"), ChannelKind::Presence);
        assert_eq!(
            ChannelKind::of("#server-to-user-a"),
            ChannelKind::ServerToUser
        );
        assert_eq!(ChannelKind::of("privatex"), ChannelKind::Public);
        assert!(!ChannelKind::Public.requires_auth());
        assert!(ChannelKind::Presence.requires_auth());
    }

    #[test]
    fn socket_ids_are_digits_dot_digits() {
        assert!(SocketId::parse("1234.1234").is_ok());
        for bad in [
            "", "1234", ".1", "1.", "1.2.3", "a.1", "1.1\n", " 1.1", "١.١",
        ] {
            assert!(SocketId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn event_names_are_bounded() {
        assert!(EventName::parse("message:created").is_ok());
        assert_eq!(EventName::parse(""), Err(ValidationError::EmptyEventName));
        assert!(EventName::parse("e".repeat(200)).is_ok());
        assert!(matches!(
            EventName::parse("e".repeat(201)),
            Err(ValidationError::EventNameTooLong { .. })
        ));
    }

    #[test]
    fn user_ids_must_fit_a_channel_name() {
        assert!(UserId::parse("user-1").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a b").is_err());
        assert!(UserId::parse("u".repeat(164 - 16)).is_ok());
        assert!(UserId::parse("u".repeat(164 - 15)).is_err());
    }
}
