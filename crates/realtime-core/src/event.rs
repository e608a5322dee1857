//! An event to publish, and its checked wire form. Everything the API would
//! refuse is refused here first, so a bad event never costs a request.

use serde::Serialize;

use crate::channel::{ChannelName, EventName, SocketId, MAX_BATCH_EVENTS, MAX_TRIGGER_CHANNELS};
use crate::config::Credentials;
use crate::crypto;
use crate::error::{Error, Result, ValidationError};

/// Channel attributes that a trigger may ask to have returned.
pub const INFO_ATTRIBUTES: [&str; 2] = ["user_count", "subscription_count"];

/// Anything that names one or more channels.
pub trait IntoChannels {
    /// The channel names.
    fn into_channels(self) -> Vec<String>;
}

impl IntoChannels for &str {
    fn into_channels(self) -> Vec<String> {
        vec![self.to_owned()]
    }
}
impl IntoChannels for String {
    fn into_channels(self) -> Vec<String> {
        vec![self]
    }
}
impl IntoChannels for &String {
    fn into_channels(self) -> Vec<String> {
        vec![self.clone()]
    }
}
impl IntoChannels for &ChannelName {
    fn into_channels(self) -> Vec<String> {
        vec![self.as_str().to_owned()]
    }
}
impl<T: AsRef<str>> IntoChannels for Vec<T> {
    fn into_channels(self) -> Vec<String> {
        self.iter().map(|c| c.as_ref().to_owned()).collect()
    }
}
impl<T: AsRef<str>> IntoChannels for &[T] {
    fn into_channels(self) -> Vec<String> {
        self.iter().map(|c| c.as_ref().to_owned()).collect()
    }
}
impl<T: AsRef<str>, const N: usize> IntoChannels for [T; N] {
    fn into_channels(self) -> Vec<String> {
        self.iter().map(|c| c.as_ref().to_owned()).collect()
    }
}

/// One event for one or more channels, not yet checked.
///
/// ```
/// use realtime_core::Event;
/// let event = Event::new("private-contact-1", "message:created", &serde_json::json!({"id": "m1"}))
///     .unwrap()
///     .exclude("1234.5678");
/// assert_eq!(event.data(), r#"{"id":"m1"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    channels: Vec<String>,
    name: String,
    data: String,
    socket_id: Option<String>,
    info: Vec<String>,
}

impl Event {
    /// An event whose data is `data` serialised as JSON.
    pub fn new<T: Serialize + ?Sized>(
        channels: impl IntoChannels,
        name: impl Into<String>,
        data: &T,
    ) -> Result<Self> {
        let data = serde_json::to_string(data).map_err(Error::Serialize)?;
        Ok(Self::from_json(channels, name, data))
    }

    /// An event whose data is already encoded (sent as it is, as the official
    /// SDKs send string data).
    pub fn from_json(
        channels: impl IntoChannels,
        name: impl Into<String>,
        data: impl Into<String>,
    ) -> Self {
        Event {
            channels: channels.into_channels(),
            name: name.into(),
            data: data.into(),
            socket_id: None,
            info: Vec::new(),
        }
    }

    /// Leaves out the connection with this socket id (usually the sender's own,
    /// whose page already shows the change).
    #[must_use]
    pub fn exclude(mut self, socket_id: impl Into<String>) -> Self {
        self.socket_id = Some(socket_id.into());
        self
    }

    /// Asks for these attributes (`user_count`, `subscription_count`) of the
    /// channels triggered to.
    #[must_use]
    pub fn info<I, S>(mut self, attributes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.info = attributes.into_iter().map(Into::into).collect();
        self
    }

    /// The channels named.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }

    /// The event name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The data, as JSON text (before any encryption).
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The excluded socket id.
    pub fn socket_id(&self) -> Option<&str> {
        self.socket_id.as_deref()
    }

    /// Checks every rule and encrypts the data for an encrypted channel.
    /// `max_data_bytes` bounds the data as sent (after encryption).
    pub fn prepare(
        &self,
        credentials: &Credentials,
        max_data_bytes: usize,
    ) -> Result<PreparedEvent> {
        if self.channels.is_empty() {
            return Err(ValidationError::NoChannels.into());
        }
        if self.channels.len() > MAX_TRIGGER_CHANNELS {
            return Err(ValidationError::TooManyChannels {
                count: self.channels.len(),
                max: MAX_TRIGGER_CHANNELS,
            }
            .into());
        }
        let channels = self
            .channels
            .iter()
            .map(|c| ChannelName::parse(c.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let name = EventName::parse(self.name.as_str())?;
        let socket_id = self.socket_id.as_deref().map(SocketId::parse).transpose()?;
        for attribute in &self.info {
            if !INFO_ATTRIBUTES.contains(&attribute.as_str()) {
                return Err(ValidationError::InvalidInfoAttribute(attribute.clone()).into());
            }
        }
        let data = match channels.iter().find(|c| c.is_encrypted()) {
            None => self.data.clone(),
            Some(_) if channels.len() > 1 => {
                return Err(ValidationError::EncryptedChannelWithOthers.into())
            }
            Some(channel) => {
                let key = credentials.encryption_master_key().ok_or_else(|| {
                    ValidationError::MissingEncryptionMasterKey(channel.to_string())
                })?;
                crypto::encrypt(key, channel.as_str(), &self.data)
            }
        };
        if data.len() > max_data_bytes {
            return Err(ValidationError::DataTooLarge {
                size: data.len(),
                limit: max_data_bytes,
            }
            .into());
        }
        Ok(PreparedEvent {
            channels,
            name,
            data,
            socket_id,
            info: (!self.info.is_empty()).then(|| self.info.join(",")),
        })
    }
}

/// An event that passed every check, its data encrypted where the channel
/// asks for it: what goes on the wire, or to an in-process server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEvent {
    /// The channels, at least one, at most 100.
    pub channels: Vec<ChannelName>,
    /// The event name.
    pub name: EventName,
    /// The data as sent (ciphertext JSON for an encrypted channel).
    pub data: String,
    /// The connection to leave out.
    pub socket_id: Option<SocketId>,
    /// The attributes asked for, comma-separated.
    pub info: Option<String>,
}

/// Body of `POST /apps/{id}/events`.
#[derive(Serialize)]
pub(crate) struct TriggerBody<'a> {
    name: &'a EventName,
    channels: &'a [ChannelName],
    data: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_id: Option<&'a SocketId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a str>,
}

impl<'a> From<&'a PreparedEvent> for TriggerBody<'a> {
    fn from(e: &'a PreparedEvent) -> Self {
        TriggerBody {
            name: &e.name,
            channels: &e.channels,
            data: &e.data,
            socket_id: e.socket_id.as_ref(),
            info: e.info.as_deref(),
        }
    }
}

/// One event of `POST /apps/{id}/batch_events`.
#[derive(Serialize)]
pub(crate) struct BatchItem<'a> {
    channel: &'a ChannelName,
    name: &'a EventName,
    data: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_id: Option<&'a SocketId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a str>,
}

/// Body of `POST /apps/{id}/batch_events`.
#[derive(Serialize)]
pub(crate) struct BatchBody<'a> {
    pub(crate) batch: Vec<BatchItem<'a>>,
}

/// Checks a batch: 1 to 10 events, one channel each.
pub fn prepare_batch(
    events: &[Event],
    credentials: &Credentials,
    max_data_bytes: usize,
) -> Result<Vec<PreparedEvent>> {
    if events.is_empty() {
        return Err(ValidationError::EmptyBatch.into());
    }
    if events.len() > MAX_BATCH_EVENTS {
        return Err(ValidationError::BatchTooLarge {
            count: events.len(),
            max: MAX_BATCH_EVENTS,
        }
        .into());
    }
    events
        .iter()
        .map(|event| {
            if event.channels.len() > 1 {
                return Err(ValidationError::MultichannelBatchEvent(event.channels.len()).into());
            }
            event.prepare(credentials, max_data_bytes)
        })
        .collect()
}

impl<'a> BatchBody<'a> {
    pub(crate) fn new(events: &'a [PreparedEvent]) -> Self {
        BatchBody {
            batch: events
                .iter()
                .filter_map(|e| {
                    e.channels.first().map(|channel| BatchItem {
                        channel,
                        name: &e.name,
                        data: &e.data,
                        socket_id: e.socket_id.as_ref(),
                        info: e.info.as_deref(),
                    })
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::DEFAULT_MAX_DATA_BYTES;
    use crate::crypto::MasterKey;

    fn creds() -> Credentials {
        Credentials::new("1", "key", "secret")
    }

    fn prepare(event: Event) -> Result<PreparedEvent> {
        event.prepare(&creds(), DEFAULT_MAX_DATA_BYTES)
    }

    fn validation(result: Result<PreparedEvent>) -> ValidationError {
        match result {
            Err(Error::Validation(e)) => e,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn post_event_succeeds_for_valid_multichannel_event() {
        let prepared = prepare(Event::from_json(
            ["private-my-channel", "my-channel"],
            "my-event",
            "{}",
        ))
        .unwrap();
        assert_eq!(prepared.channels.len(), 2);
        let body = serde_json::to_string(&TriggerBody::from(&prepared)).unwrap();
        assert_eq!(
            body,
            r#"{"name":"my-event","channels":["private-my-channel","my-channel"],"data":"{}"}"#
        );
    }

    #[test]
    fn post_event_fails_for_invalid_multichannel_event() {
        let event = Event::from_json(
            ["private-encrypted-my-channel", "my-channel"],
            "my-event",
            "{}",
        );
        let creds = creds().with_encryption_master_key(MasterKey::from_bytes([1; 32]));
        assert!(matches!(
            event.prepare(&creds, DEFAULT_MAX_DATA_BYTES),
            Err(Error::Validation(
                ValidationError::EncryptedChannelWithOthers
            ))
        ));
    }

    #[test]
    fn post_event_succeeds_for_encrypted_channel() {
        let key = MasterKey::from_bytes([1; 32]);
        let creds = creds().with_encryption_master_key(key.clone());
        let prepared = Event::from_json("private-encrypted-my-channel", "my-event", r#"{"a":1}"#)
            .prepare(&creds, DEFAULT_MAX_DATA_BYTES)
            .unwrap();
        assert_ne!(prepared.data, r#"{"a":1}"#);
        assert_eq!(
            crypto::decrypt(&key, "private-encrypted-my-channel", &prepared.data).unwrap(),
            r#"{"a":1}"#
        );
    }

    #[test]
    fn encrypted_channel_without_master_key_fails() {
        assert!(matches!(
            validation(prepare(Event::from_json("private-encrypted-x", "e", "{}"))),
            ValidationError::MissingEncryptionMasterKey(_)
        ));
    }

    #[test]
    fn every_rule_has_its_own_error() {
        assert_eq!(
            validation(prepare(Event::from_json(Vec::<String>::new(), "e", "{}"))),
            ValidationError::NoChannels
        );
        let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
        assert_eq!(
            validation(prepare(Event::from_json(many, "e", "{}"))),
            ValidationError::TooManyChannels {
                count: 101,
                max: 100
            }
        );
        let hundred: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
        assert!(prepare(Event::from_json(hundred, "e", "{}")).is_ok());
        assert!(matches!(
            validation(prepare(Event::from_json("bad channel", "e", "{}"))),
            ValidationError::InvalidChannelName(_)
        ));
        assert_eq!(
            validation(prepare(Event::from_json("c", "", "{}"))),
            ValidationError::EmptyEventName
        );
        assert!(matches!(
            validation(prepare(Event::from_json("c", "e".repeat(201), "{}"))),
            ValidationError::EventNameTooLong { .. }
        ));
        assert!(matches!(
            validation(prepare(Event::from_json("c", "e", "{}").exclude("nope"))),
            ValidationError::InvalidSocketId(_)
        ));
        assert!(matches!(
            validation(prepare(Event::from_json("c", "e", "{}").info(["occupied"]))),
            ValidationError::InvalidInfoAttribute(_)
        ));
    }

    #[test]
    fn data_size_is_bounded_by_the_configured_limit() {
        let data = "x".repeat(DEFAULT_MAX_DATA_BYTES);
        assert!(prepare(Event::from_json("c", "e", data.clone())).is_ok());
        assert_eq!(
            validation(prepare(Event::from_json("c", "e", data + "x"))),
            ValidationError::DataTooLarge {
                size: 10241,
                limit: 10240
            }
        );
        let big = "x".repeat(20_000);
        assert!(Event::from_json("c", "e", big)
            .prepare(&creds(), 32 * 1024)
            .is_ok());
    }

    #[test]
    fn socket_id_and_info_reach_the_wire() {
        let prepared = prepare(
            Event::from_json("presence-a", "e", "1")
                .exclude("1.2")
                .info(["user_count", "subscription_count"]),
        )
        .unwrap();
        let body = serde_json::to_string(&TriggerBody::from(&prepared)).unwrap();
        assert_eq!(
            body,
            r#"{"name":"e","channels":["presence-a"],"data":"1","socket_id":"1.2","info":"user_count,subscription_count"}"#
        );
    }

    #[test]
    fn post_batch_events_fails_for_multichannel_events() {
        let events = [Event::from_json(
            ["private-my-channel", "my-channel"],
            "my-event",
            "{}",
        )];
        assert!(matches!(
            prepare_batch(&events, &creds(), DEFAULT_MAX_DATA_BYTES),
            Err(Error::Validation(ValidationError::MultichannelBatchEvent(
                2
            )))
        ));
    }

    #[test]
    fn post_batch_events_fails_for_too_large_batch() {
        let events: Vec<Event> = (0..11)
            .map(|_| Event::from_json("my-channel", "my-event", "{}"))
            .collect();
        assert!(matches!(
            prepare_batch(&events, &creds(), DEFAULT_MAX_DATA_BYTES),
            Err(Error::Validation(ValidationError::BatchTooLarge {
                count: 11,
                max: 10
            }))
        ));
        assert!(matches!(
            prepare_batch(&[], &creds(), DEFAULT_MAX_DATA_BYTES),
            Err(Error::Validation(ValidationError::EmptyBatch))
        ));
    }

    #[test]
    fn post_batch_events_succeeds_for_single_channel_events() {
        let creds = creds().with_encryption_master_key(MasterKey::from_bytes([1; 32]));
        let events = [
            Event::from_json("private-encrypted-my-channel", "my-event", "{}"),
            Event::from_json("private-my-channel", "my-event", "{}").exclude("1.1"),
            Event::from_json("my-channel", "my-event", "{}"),
        ];
        let prepared = prepare_batch(&events, &creds, DEFAULT_MAX_DATA_BYTES).unwrap();
        let body = serde_json::to_value(BatchBody::new(&prepared)).unwrap();
        assert_eq!(body["batch"].as_array().map(Vec::len), Some(3));
        assert_eq!(body["batch"][1]["channel"], "private-my-channel");
        assert_eq!(body["batch"][1]["socket_id"], "1.1");
        assert_eq!(body["batch"][2]["data"], "{}");
        assert_ne!(body["batch"][0]["data"], "{}");
    }
}
