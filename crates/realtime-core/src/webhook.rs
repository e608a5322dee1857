//! Webhooks: verify that a request came from Pusher (`X-Pusher-Key`, and
//! `X-Pusher-Signature`, the HMAC-SHA256 of the raw body), and read its
//! events as types. Servers use the same types to send webhooks.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::ChannelKind;
use crate::config::Credentials;
use crate::crypto::{self, MasterKey};
use crate::error::WebhookError;
use crate::signing::{Secret, Signer};

/// A verified webhook: when Pusher sent it, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The events, in order.
    pub events: Vec<WebhookEvent>,
}

/// One event of a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum WebhookEvent {
    /// The channel got its first subscriber.
    ChannelOccupied {
        /// The channel.
        channel: String,
    },
    /// The channel lost its last subscriber.
    ChannelVacated {
        /// The channel.
        channel: String,
    },
    /// A user joined a presence channel (on their first connection).
    MemberAdded {
        /// The presence channel.
        channel: String,
        /// The user.
        user_id: String,
    },
    /// A user left a presence channel (with their last connection).
    MemberRemoved {
        /// The presence channel.
        channel: String,
        /// The user.
        user_id: String,
    },
    /// A client sent a `client-*` event.
    ClientEvent {
        /// The channel.
        channel: String,
        /// The event name.
        event: String,
        /// The event data as JSON text (decrypted, for an encrypted channel
        /// when the verifier holds the master key).
        data: String,
        /// The sending connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        socket_id: Option<String>,
        /// The sending user, on presence channels.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    /// A client subscribed to a cache channel that holds no event.
    CacheMiss {
        /// The channel.
        channel: String,
    },
    /// The number of subscriptions of a channel changed.
    SubscriptionCount {
        /// The channel.
        channel: String,
        /// Connections now subscribed.
        subscription_count: u64,
    },
    /// An event this version does not know; kept so a newer server does not
    /// make the whole webhook unreadable.
    #[serde(skip)]
    Unknown {
        /// The event's `name`.
        name: String,
        /// The whole event as sent.
        payload: serde_json::Value,
    },
}

impl WebhookEvent {
    /// The channel the event is about, if it names one.
    pub fn channel(&self) -> Option<&str> {
        match self {
            WebhookEvent::ChannelOccupied { channel }
            | WebhookEvent::ChannelVacated { channel }
            | WebhookEvent::MemberAdded { channel, .. }
            | WebhookEvent::MemberRemoved { channel, .. }
            | WebhookEvent::ClientEvent { channel, .. }
            | WebhookEvent::CacheMiss { channel }
            | WebhookEvent::SubscriptionCount { channel, .. } => Some(channel),
            WebhookEvent::Unknown { payload, .. } => payload.get("channel")?.as_str(),
        }
    }
}

const KNOWN_EVENTS: [&str; 7] = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
];

/// The body with each event left as text: the name decides how to read it,
/// and no intermediate JSON tree is built.
#[derive(Deserialize)]
struct RawWebhook<'a> {
    time_ms: u64,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct EventName<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
}

/// Verifies webhooks for one or more key/secret pairs (several during a key
/// rotation), and decrypts encrypted client events when given the master key.
///
/// ```
/// use realtime_core::webhook::{sign_webhook, WebhookVerifier, WebhookEvent};
/// use realtime_core::signing::Secret;
/// let verifier = WebhookVerifier::new().with_app("key", Secret::new("secret"));
/// let body = br#"{"time_ms":1,"events":[{"name":"channel_occupied","channel":"private-a"}]}"#;
/// let signature = sign_webhook(&Secret::new("secret"), body);
/// let webhook = verifier.verify(Some("key"), Some(&signature), body).unwrap();
/// assert_eq!(webhook.events, vec![WebhookEvent::ChannelOccupied { channel: "private-a".into() }]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct WebhookVerifier {
    apps: Vec<(String, Signer)>,
    master_key: Option<MasterKey>,
}

impl WebhookVerifier {
    /// A verifier that accepts nothing until apps are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// A verifier for one app's credentials (and its master key, if any).
    pub fn from_credentials(credentials: &Credentials) -> Self {
        WebhookVerifier {
            apps: vec![(credentials.key().to_owned(), credentials.signer().clone())],
            master_key: credentials.encryption_master_key().cloned(),
        }
    }

    /// Also accepts webhooks signed with this key and secret.
    #[must_use]
    pub fn with_app(mut self, key: impl Into<String>, secret: Secret) -> Self {
        self.apps.push((key.into(), Signer::new(&secret)));
        self
    }

    /// Decrypts client events of encrypted channels with this master key.
    #[must_use]
    pub fn with_encryption_master_key(mut self, key: MasterKey) -> Self {
        self.master_key = Some(key);
        self
    }

    /// Checks the headers against the raw body, then reads the events.
    pub fn verify(
        &self,
        key_header: Option<&str>,
        signature_header: Option<&str>,
        body: &[u8],
    ) -> Result<Webhook, WebhookError> {
        self.check_signature(key_header, signature_header, body)?;
        self.parse(body)
    }

    /// Only checks that the body was signed by a known key's secret (in
    /// constant time), without reading the events.
    pub fn check_signature(
        &self,
        key_header: Option<&str>,
        signature_header: Option<&str>,
        body: &[u8],
    ) -> Result<(), WebhookError> {
        let key = key_header
            .filter(|k| !k.is_empty())
            .ok_or(WebhookError::MissingKey)?;
        let signature = signature_header
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(WebhookError::MissingSignature)?;
        if body.is_empty() {
            return Err(WebhookError::MissingBody);
        }
        let mut candidates = self.apps.iter().filter(|(k, _)| k == key).peekable();
        if candidates.peek().is_none() {
            return Err(WebhookError::UnknownKey);
        }
        // Every candidate is checked, so the time taken does not tell which matched.
        let valid = candidates.fold(false, |ok, (_, signer)| {
            signer.verify_hex(&[body], signature) | ok
        });
        if valid {
            Ok(())
        } else {
            Err(WebhookError::InvalidSignature)
        }
    }

    fn parse(&self, body: &[u8]) -> Result<Webhook, WebhookError> {
        let raw: RawWebhook<'_> =
            serde_json::from_slice(body).map_err(|e| WebhookError::InvalidBody(e.to_string()))?;
        let events = raw
            .events
            .into_iter()
            .map(|event| self.parse_event(event.get()))
            .collect::<Result<_, _>>()?;
        Ok(Webhook {
            time_ms: raw.time_ms,
            events,
        })
    }

    fn parse_event(&self, text: &str) -> Result<WebhookEvent, WebhookError> {
        let name = serde_json::from_str::<EventName<'_>>(text)
            .map_err(|_| WebhookError::InvalidBody("an event has no name".into()))?
            .name;
        if !KNOWN_EVENTS.contains(&name.as_ref()) {
            let payload =
                serde_json::from_str(text).map_err(|e| WebhookError::InvalidBody(e.to_string()))?;
            return Ok(WebhookEvent::Unknown {
                name: name.into_owned(),
                payload,
            });
        }
        let mut event: WebhookEvent = serde_json::from_str(text)
            .map_err(|e| WebhookError::InvalidBody(format!("{name}: {e}")))?;
        if let (WebhookEvent::ClientEvent { channel, data, .. }, Some(master_key)) =
            (&mut event, &self.master_key)
        {
            if ChannelKind::of(channel) == ChannelKind::PrivateEncrypted {
                *data =
                    crypto::decrypt(master_key, channel, data).map_err(WebhookError::Decryption)?;
            }
        }
        Ok(event)
    }
}

/// The `X-Pusher-Signature` of a webhook body: hex HMAC-SHA256 under the app secret.
pub fn sign_webhook(secret: &Secret, body: &[u8]) -> String {
    Signer::new(secret).sign_hex(&[body])
}

/// The spec's named webhook cases.
#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "b5390e69136683c40d2d";
    const SECRET: &str = "24aaea961cfe1335f796";

    fn verifier() -> WebhookVerifier {
        WebhookVerifier::new().with_app(KEY, Secret::new(SECRET))
    }

    fn body(event: &str) -> String {
        format!(r#"{{"time_ms":1619602993000,"events":[{event}]}}"#)
    }

    fn verify_signed(body: &str) -> Result<Webhook, WebhookError> {
        let signature = sign_webhook(&Secret::new(SECRET), body.as_bytes());
        verifier().verify(Some(KEY), Some(&signature), body.as_bytes())
    }

    #[test]
    fn invalid_pusher_key_header_webhook_fails() {
        let body = body(r#"{"name":"channel_occupied","channel":"my-channel"}"#);
        let signature = sign_webhook(&Secret::new(SECRET), body.as_bytes());
        assert_eq!(
            verifier().verify(Some("invalid_key"), Some(&signature), body.as_bytes()),
            Err(WebhookError::UnknownKey)
        );
    }

    #[test]
    fn invalid_pusher_signature_header_webhook_fails() {
        let body = body(r#"{"name":"channel_occupied","channel":"my-channel"}"#);
        let signature = sign_webhook(&Secret::new("wrong secret"), body.as_bytes());
        assert_eq!(
            verifier().verify(Some(KEY), Some(&signature), body.as_bytes()),
            Err(WebhookError::InvalidSignature)
        );
        assert_eq!(
            verifier().verify(Some(KEY), Some("not hex"), body.as_bytes()),
            Err(WebhookError::InvalidSignature)
        );
    }

    #[test]
    fn missing_body_data_webhook_fails() {
        let signature = sign_webhook(&Secret::new(SECRET), b"");
        assert_eq!(
            verifier().verify(Some(KEY), Some(&signature), b""),
            Err(WebhookError::MissingBody)
        );
    }

    #[test]
    fn missing_pusher_key_header_webhook_fails() {
        assert_eq!(
            verifier().verify(None, Some("00"), b"{}"),
            Err(WebhookError::MissingKey)
        );
        assert_eq!(
            verifier().verify(Some(""), Some("00"), b"{}"),
            Err(WebhookError::MissingKey)
        );
    }

    #[test]
    fn missing_pusher_signature_header_webhook_fails() {
        assert_eq!(
            verifier().verify(Some(KEY), None, b"{}"),
            Err(WebhookError::MissingSignature)
        );
    }

    #[test]
    fn verify_channel_occupied_webhook_succeeds() {
        let webhook = verify_signed(&body(
            r#"{"name":"channel_occupied","channel":"my-channel"}"#,
        ))
        .unwrap();
        assert_eq!(webhook.time_ms, 1619602993000);
        assert_eq!(
            webhook.events,
            vec![WebhookEvent::ChannelOccupied {
                channel: "my-channel".into()
            }]
        );
    }

    #[test]
    fn verify_channel_vacated_webhook_succeeds() {
        let webhook = verify_signed(&body(
            r#"{"name":"channel_vacated","channel":"my-channel"}"#,
        ))
        .unwrap();
        assert_eq!(
            webhook.events,
            vec![WebhookEvent::ChannelVacated {
                channel: "my-channel".into()
            }]
        );
    }

    #[test]
    fn verify_client_event_webhook_succeeds() {
        let webhook = verify_signed(&body(
            r#"{"name":"client_event","channel":"my-channel","event":"my-event","data":"{\"name\":\"Joe Bloggs\"}","socket_id":"socket_1"}"#,
        ))
        .unwrap();
        assert_eq!(
            webhook.events,
            vec![WebhookEvent::ClientEvent {
                channel: "my-channel".into(),
                event: "my-event".into(),
                data: r#"{"name":"Joe Bloggs"}"#.into(),
                socket_id: Some("socket_1".into()),
                user_id: None,
            }]
        );
    }

    #[test]
    fn verify_member_added_webhook_succeeds() {
        let webhook = verify_signed(&body(
            r#"{"name":"member_added","channel":"presence-my-channel","user_id":"user_1"}"#,
        ))
        .unwrap();
        assert_eq!(
            webhook.events,
            vec![WebhookEvent::MemberAdded {
                channel: "presence-my-channel".into(),
                user_id: "user_1".into()
            }]
        );
    }

    #[test]
    fn verify_member_removed_webhook_succeeds() {
        let webhook = verify_signed(&body(
            r#"{"name":"member_removed","channel":"presence-my-channel","user_id":"user_1"}"#,
        ))
        .unwrap();
        assert_eq!(
            webhook.events,
            vec![WebhookEvent::MemberRemoved {
                channel: "presence-my-channel".into(),
                user_id: "user_1".into()
            }]
        );
    }

    #[test]
    fn cache_miss_subscription_count_and_unknown_events_are_read() {
        let webhook = verify_signed(&body(
            r#"{"name":"cache_miss","channel":"cache-a"},{"name":"subscription_count","channel":"a","subscription_count":3},{"name":"from_the_future","channel":"b"}"#,
        ))
        .unwrap();
        assert_eq!(
            webhook.events[0],
            WebhookEvent::CacheMiss {
                channel: "cache-a".into()
            }
        );
        assert_eq!(
            webhook.events[1],
            WebhookEvent::SubscriptionCount {
                channel: "a".into(),
                subscription_count: 3
            }
        );
        assert!(
            matches!(&webhook.events[2], WebhookEvent::Unknown { name, .. } if name == "from_the_future")
        );
        assert_eq!(webhook.events[2].channel(), Some("b"));
    }

    #[test]
    fn signed_bodies_that_are_not_webhooks_are_refused() {
        for bad in [
            "not json",
            "{}",
            r#"{"time_ms":1,"events":[{"channel":"x"}]}"#,
            r#"{"time_ms":1,"events":[{"name":"member_added","channel":"x"}]}"#,
        ] {
            assert!(
                matches!(verify_signed(bad), Err(WebhookError::InvalidBody(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn any_of_several_secrets_for_a_key_is_accepted_during_rotation() {
        let verifier = verifier()
            .with_app(KEY, Secret::new("new secret"))
            .with_app("other", Secret::new("x"));
        let body = body(r#"{"name":"channel_vacated","channel":"a"}"#);
        for secret in [SECRET, "new secret"] {
            let signature = sign_webhook(&Secret::new(secret), body.as_bytes());
            assert!(verifier
                .verify(Some(KEY), Some(&signature), body.as_bytes())
                .is_ok());
        }
        let signature = sign_webhook(&Secret::new("x"), body.as_bytes());
        assert_eq!(
            verifier.verify(Some(KEY), Some(&signature), body.as_bytes()),
            Err(WebhookError::InvalidSignature)
        );
        assert!(verifier
            .verify(Some("other"), Some(&signature), body.as_bytes())
            .is_ok());
    }

    #[test]
    fn encrypted_client_events_are_decrypted_with_the_master_key() {
        let master_key = MasterKey::from_bytes([9; 32]);
        let sealed = crypto::encrypt(&master_key, "private-encrypted-a", r#"{"typing":true}"#);
        let event = serde_json::json!({
            "name": "client_event", "channel": "private-encrypted-a", "event": "client-typing",
            "data": sealed, "socket_id": "1.1",
        });
        let body = format!(r#"{{"time_ms":1,"events":[{event}]}}"#);
        let signature = sign_webhook(&Secret::new(SECRET), body.as_bytes());

        let plain = verifier().with_encryption_master_key(master_key);
        let webhook = plain
            .verify(Some(KEY), Some(&signature), body.as_bytes())
            .unwrap();
        assert!(
            matches!(&webhook.events[0], WebhookEvent::ClientEvent { data, .. } if data == r#"{"typing":true}"#)
        );

        let wrong = verifier().with_encryption_master_key(MasterKey::from_bytes([1; 32]));
        assert!(matches!(
            wrong.verify(Some(KEY), Some(&signature), body.as_bytes()),
            Err(WebhookError::Decryption(_))
        ));
        // Without the master key, the ciphertext is handed over as it came.
        let webhook = verifier()
            .verify(Some(KEY), Some(&signature), body.as_bytes())
            .unwrap();
        assert!(
            matches!(&webhook.events[0], WebhookEvent::ClientEvent { data, .. } if data == &sealed)
        );
    }

    #[test]
    fn a_webhook_serialises_to_what_it_was_read_from() {
        let text = body(r#"{"name":"member_added","channel":"presence-a","user_id":"u1"}"#);
        let webhook = verify_signed(&text).unwrap();
        assert_eq!(serde_json::to_string(&webhook).unwrap(), text);
    }
}
