//! Who may join which channel: the inbox's channels are
//! `private-contact-{id}` and `presence-contact-{id}` (every member of the
//! contact's team) and `private-user-{id}` (that user alone).

/// A channel of the inbox, parsed from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxChannel {
    /// `private-contact-{id}`: a contact's messages, notes and read marks.
    ContactEvents(i64),
    /// `presence-contact-{id}`: who is viewing a contact.
    ContactViewers(i64),
    /// `private-user-{id}`: one user's contact list updates.
    User(i64),
    /// `private-encrypted-contact-{id}`: a contact's events, end-to-end
    /// encrypted (when an encryption master key is configured).
    EncryptedContactEvents(i64),
}

impl InboxChannel {
    /// Reads a channel name; anything else is not a channel of the inbox.
    /// Ids are canonical only (see [`canonical_id`]), so one channel has one
    /// name: `private-user-0001` is not another name of `private-user-1`.
    pub fn parse(name: &str) -> Option<Self> {
        let id = canonical_id;
        if let Some(rest) = name.strip_prefix("private-encrypted-contact-") {
            return id(rest).map(InboxChannel::EncryptedContactEvents);
        }
        if let Some(rest) = name.strip_prefix("private-contact-") {
            return id(rest).map(InboxChannel::ContactEvents);
        }
        if let Some(rest) = name.strip_prefix("presence-contact-") {
            return id(rest).map(InboxChannel::ContactViewers);
        }
        if let Some(rest) = name.strip_prefix("private-user-") {
            return id(rest).map(InboxChannel::User);
        }
        None
    }
}

/// A positive id written the one way ids are written in channel names:
/// ASCII digits, the first not `0`, no sign, no space, within `i64`.
/// (`str::parse` would also take `+1` and `0001`: names the server would
/// hold as channels apart from `…-1`, all authorized for the same id.)
pub fn canonical_id(text: &str) -> Option<i64> {
    let digits = text.as_bytes();
    if digits.first().is_none_or(|d| *d == b'0') || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.parse::<i64>().ok()
}

/// The channel of a contact's events.
pub fn contact_channel(contact_id: i64) -> String {
    format!("private-contact-{contact_id}")
}

/// The presence channel of a contact's viewers.
pub fn viewers_channel(contact_id: i64) -> String {
    format!("presence-contact-{contact_id}")
}

/// The channel of one user.
pub fn user_channel(user_id: i64) -> String {
    format!("private-user-{user_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ids_are_digits_without_leading_zeros_sign_or_space() {
        assert_eq!(canonical_id("1"), Some(1));
        assert_eq!(canonical_id("10"), Some(10));
        assert_eq!(canonical_id("9223372036854775807"), Some(i64::MAX));
        for other in [
            "",
            "0",
            "00",
            "01",
            "0001",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1_0",
            "١",
            "9223372036854775808",
        ] {
            assert_eq!(canonical_id(other), None, "{other:?}");
        }
    }

    #[test]
    fn only_the_inbox_channels_parse() {
        assert_eq!(
            InboxChannel::parse("private-contact-12"),
            Some(InboxChannel::ContactEvents(12))
        );
        assert_eq!(
            InboxChannel::parse("presence-contact-3"),
            Some(InboxChannel::ContactViewers(3))
        );
        assert_eq!(
            InboxChannel::parse("private-user-7"),
            Some(InboxChannel::User(7))
        );
        for other in [
            "private-contact-",
            "private-contact-0",
            "private-contact--1",
            "private-contact-1x",
            "private-encrypted-contact-x",
            "presence-user-1",
            "contact-1",
            "private-user-99999999999999999999",
            "private-user-0001",
            "private-user-01",
            "private-contact-+1",
            "presence-contact-01",
            "private-encrypted-contact-007",
            "private-contact- 1",
            "private-contact-1 ",
            "private-contact-١",
        ] {
            assert_eq!(InboxChannel::parse(other), None, "{other}");
        }
    }
}
