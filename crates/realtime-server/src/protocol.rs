//! The frames of Pusher protocol 7: what clients send, what the server
//! answers, and the error and close codes.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 7;
/// Protocol versions pusher-js may ask for that this server accepts (5–7
/// share the frames used here).
pub const SUPPORTED_PROTOCOLS: std::ops::RangeInclusive<u32> = 5..=7;

/// Error and close codes of the protocol.
pub mod code {
    /// The app key is unknown.
    pub const APP_NOT_FOUND: u16 = 4001;
    /// The app is disabled.
    pub const APP_DISABLED: u16 = 4003;
    /// The path is not `/app/{key}`.
    pub const PATH_NOT_FOUND: u16 = 4005;
    /// `protocol` is missing or not a number.
    pub const INVALID_VERSION_FORMAT: u16 = 4006;
    /// The protocol version is not supported.
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// The connection is not authorized (bad signin, terminated by the app).
    pub const UNAUTHORIZED: u16 = 4009;
    /// Too many connections: try again later.
    pub const OVER_CAPACITY: u16 = 4100;
    /// Generic "reconnect now" (the server is shutting down).
    pub const RECONNECT_NOW: u16 = 4200;
    /// The client did not answer a ping in time.
    pub const PONG_NOT_RECEIVED: u16 = 4201;
    /// The connection was idle too long.
    pub const CLOSED_AFTER_INACTIVITY: u16 = 4202;
    /// Client event refused: over the rate limit.
    pub const CLIENT_EVENT_RATE_LIMIT: u16 = 4301;
    /// Subscription refused: this server takes no public channels. The
    /// connection stays open (4300–4399: errors that close nothing).
    pub const PUBLIC_CHANNELS_DISABLED: u16 = 4302;
    /// Subscription refused: the connection has its maximum of channels.
    /// The connection stays open.
    pub const TOO_MANY_CHANNELS: u16 = 4303;
}

/// A frame from a client. `data` is an object for `pusher:*` events and any
/// JSON for client events.
#[derive(Debug, Deserialize)]
pub struct ClientFrame {
    /// The event name.
    pub event: String,
    /// The channel, for client events.
    #[serde(default)]
    pub channel: Option<String>,
    /// The payload.
    #[serde(default)]
    pub data: Value,
}

/// `pusher:subscribe`'s data.
#[derive(Debug, Deserialize)]
pub struct SubscribeData {
    /// The channel.
    pub channel: String,
    /// `key:signature`, for private and presence channels.
    #[serde(default)]
    pub auth: Option<String>,
    /// The signed presence data, for presence channels.
    #[serde(default)]
    pub channel_data: Option<String>,
}

/// `pusher:signin`'s data.
#[derive(Debug, Deserialize)]
pub struct SigninData {
    /// `key:signature`.
    pub auth: String,
    /// The signed user data.
    pub user_data: String,
}

/// `pusher:unsubscribe`'s data.
#[derive(Debug, Deserialize)]
pub struct UnsubscribeData {
    /// The channel.
    pub channel: String,
}

/// Presence data as a client presents it in `channel_data`.
#[derive(Debug, Deserialize)]
pub struct PresenceData {
    /// The member id: a string, or a number that is read as its text.
    pub user_id: Value,
    /// What other members see.
    #[serde(default)]
    pub user_info: Option<Value>,
}

/// User data of `pusher:signin`.
#[derive(Debug, Deserialize)]
pub struct UserData {
    /// The user id.
    pub id: Value,
    /// The ids of the users whose coming and going the user is told.
    #[serde(default)]
    pub watchlist: Option<Value>,
}

/// Most users one watchlist may name (Pusher's limit).
pub const MAX_WATCHLIST: usize = 100;

impl UserData {
    /// The watchlist's user ids (strings, or numbers as their text), each
    /// once, in order. Answers why not when it is not a list of ids or names
    /// more than [`MAX_WATCHLIST`].
    pub fn watchlist_ids(&self) -> Result<Vec<String>, String> {
        let Some(list) = &self.watchlist else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = list else {
            return Err("watchlist must be an array of user ids".into());
        };
        let mut ids: Vec<String> = Vec::with_capacity(items.len().min(MAX_WATCHLIST));
        for item in items {
            let id = id_text(item).ok_or("watchlist must be an array of user ids")?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.len() > MAX_WATCHLIST {
            return Err(format!("a watchlist names at most {MAX_WATCHLIST} users"));
        }
        Ok(ids)
    }
}

/// A JSON value used as an id: strings as they are, numbers as their text.
pub fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[derive(Serialize)]
struct Outgoing<'a, D: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: D,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

/// Serialises a frame; the text is shared by every recipient.
pub fn frame<D: Serialize>(event: &str, channel: Option<&str>, data: D) -> ByteString {
    frame_from(event, channel, data, None)
}

/// Serialises a frame that names its sending user (client events on presence channels).
pub fn frame_from<D: Serialize>(
    event: &str,
    channel: Option<&str>,
    data: D,
    user_id: Option<&str>,
) -> ByteString {
    let text = serde_json::to_string(&Outgoing {
        event,
        channel,
        data,
        user_id,
    })
    // Serialising strings and serde_json values into a String cannot fail.
    .unwrap_or_default();
    ByteString::from(text)
}

/// `pusher:connection_established`; its data is a JSON string, as Pusher sends it.
pub fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> ByteString {
    let data =
        serde_json::json!({ "socket_id": socket_id, "activity_timeout": activity_timeout_secs });
    frame("pusher:connection_established", None, data.to_string())
}

/// `pusher:error` with a code (or none) and a message.
pub fn error(code: Option<u16>, message: &str) -> ByteString {
    frame(
        "pusher:error",
        None,
        serde_json::json!({ "code": code, "message": message }),
    )
}

/// `pusher:subscription_error`, which pusher-js hands to the channel's handlers.
pub fn subscription_error(channel: &str, kind: &str, message: &str, status: u16) -> ByteString {
    frame(
        "pusher:subscription_error",
        Some(channel),
        serde_json::json!({ "type": kind, "error": message, "status": status }),
    )
}

/// `pusher:pong`.
pub fn pong() -> ByteString {
    ByteString::from_static(r#"{"event":"pusher:pong","data":"{}"}"#)
}

/// `pusher:ping`.
pub fn ping() -> ByteString {
    ByteString::from_static(r#"{"event":"pusher:ping","data":"{}"}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_established_carries_its_data_as_a_string() {
        let text = connection_established("1.2", 120);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["event"], "pusher:connection_established");
        let data: Value = serde_json::from_str(value["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["socket_id"], "1.2");
        assert_eq!(data["activity_timeout"], 120);
    }

    #[test]
    fn ids_are_strings_or_numbers() {
        assert_eq!(id_text(&serde_json::json!("a")), Some("a".into()));
        assert_eq!(id_text(&serde_json::json!(12)), Some("12".into()));
        assert_eq!(id_text(&serde_json::json!("")), None);
        assert_eq!(id_text(&serde_json::json!(null)), None);
        assert_eq!(id_text(&serde_json::json!({"a": 1})), None);
    }
}
