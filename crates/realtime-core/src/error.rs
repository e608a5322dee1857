//! The crate's error type: one enum a caller can match on, with the input
//! rule that failed, the API's answer, or the transport problem.

use std::time::Duration;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input breaks one of Pusher's rules; nothing was sent.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The configuration is incomplete or malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP API answered with a non-success status. `body` is what it said
    /// (for a 401, Pusher explains which part of the signature it rejected).
    #[error("the Pusher HTTP API answered {status}: {body}")]
    Http {
        /// The HTTP status code.
        status: u16,
        /// The response body, as text.
        body: String,
    },
    /// No answer arrived within the configured timeout.
    #[error("the request timed out after {0:?}")]
    Timeout(Duration),
    /// The request could not be sent or its answer could not be read.
    #[error("transport failure: {0}")]
    Transport(#[source] reqwest::Error),
    /// The API answered 2xx with a body this crate could not understand.
    #[error("could not decode the API's answer: {0}")]
    Decode(String),
    /// Data could not be serialised to JSON.
    #[error("could not serialise the event data: {0}")]
    Serialize(#[source] serde_json::Error),
    /// Encrypting or decrypting an encrypted channel's payload failed.
    #[error(transparent)]
    Encryption(#[from] EncryptionError),
}

impl Error {
    /// The HTTP status of an API error, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A rule of the Pusher API that an input breaks. Each rule has its own
/// variant, so callers can tell "too many channels" from "bad channel name".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A channel name contains a character outside `[-a-zA-Z0-9_=@,.;]`.
    #[error("invalid channel name {0:?}: only letters, digits and -_=@,.; are allowed")]
    InvalidChannelName(String),
    /// A channel name is empty.
    #[error("a channel name may not be empty")]
    EmptyChannelName,
    /// A channel name is longer than 164 characters.
    #[error("channel name is {len} characters long; at most {max} are allowed")]
    ChannelNameTooLong {
        /// The name's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An event name is empty.
    #[error("an event name may not be empty")]
    EmptyEventName,
    /// An event name is longer than 200 characters.
    #[error("event name is {len} characters long; at most {max} are allowed")]
    EventNameTooLong {
        /// The name's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A socket id is not of the form `digits.digits`.
    #[error("invalid socket id {0:?}: expected digits.digits")]
    InvalidSocketId(String),
    /// A user id is empty, too long or has characters a channel name may not have.
    #[error("invalid user id {0:?}")]
    InvalidUserId(String),
    /// A trigger names no channel.
    #[error("an event must be triggered on at least one channel")]
    NoChannels,
    /// A trigger names more channels than the API accepts.
    #[error("{count} channels given; at most {max} may be triggered at once")]
    TooManyChannels {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A batch holds more events than the API accepts.
    #[error("{count} events in a batch; at most {max} are allowed")]
    BatchTooLarge {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A batch holds no event.
    #[error("a batch must hold at least one event")]
    EmptyBatch,
    /// A batch event names more than one channel; batch events have one each.
    #[error("a batch event has exactly one channel; {0} given")]
    MultichannelBatchEvent(usize),
    /// The event data is larger than the configured limit.
    #[error("event data is {size} bytes; the limit is {limit}")]
    DataTooLarge {
        /// The data's size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// An encrypted channel was triggered together with other channels, which
    /// would send its plaintext to them.
    #[error("an encrypted channel must be triggered alone")]
    EncryptedChannelWithOthers,
    /// An encrypted channel was used without an encryption master key configured.
    #[error("channel {0:?} is encrypted but no encryption master key is configured")]
    MissingEncryptionMasterKey(String),
    /// Authorization was asked for a channel that needs none (public channels),
    /// or of the wrong kind (presence data for a private channel, …).
    #[error("channel {channel:?} cannot be authorized this way: {reason}")]
    ChannelAuthNotApplicable {
        /// The channel.
        channel: String,
        /// Why.
        reason: &'static str,
    },
    /// Presence users were asked of a channel that is not a presence channel.
    #[error("{0:?} is not a presence channel")]
    NotPresenceChannel(String),
    /// User data for user authentication lacks a non-empty `id`.
    #[error("user data must carry a non-empty string \"id\"")]
    MissingUserDataId,
    /// Presence data lacks a non-empty `user_id`.
    #[error("presence data must carry a non-empty string \"user_id\"")]
    MissingPresenceUserId,
    /// A `info` attribute is not one the API knows for this request.
    #[error("unknown info attribute {0:?}")]
    InvalidInfoAttribute(String),
}

/// A configuration problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required setting is missing (the environment variable is named).
    #[error("missing setting {0}")]
    Missing(&'static str),
    /// The Pusher URL could not be parsed.
    #[error("invalid Pusher URL: {0}")]
    InvalidUrl(String),
    /// The scheme is neither `http` nor `https`.
    #[error("invalid scheme {0:?}: expected http or https")]
    InvalidScheme(String),
    /// The port is not a number in 1–65535.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// The encryption master key is not base64 of exactly 32 bytes.
    #[error("the encryption master key must be base64 of exactly 32 bytes")]
    InvalidEncryptionMasterKey,
    /// The HTTP client could not be built (bad proxy URL, TLS backend failure).
    #[error("could not build the HTTP client: {0}")]
    HttpClient(String),
}

/// Encrypted channel payloads that cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptionError {
    /// The payload is not `{"nonce","ciphertext"}` with base64 fields.
    #[error("malformed encrypted payload")]
    MalformedPayload,
    /// The nonce is not 24 bytes.
    #[error("the nonce must be 24 bytes")]
    InvalidNonce,
    /// The ciphertext does not authenticate under the channel's shared secret.
    #[error("the payload does not decrypt under this channel's key")]
    DecryptionFailed,
    /// The decrypted bytes are not UTF-8 text.
    #[error("the decrypted payload is not UTF-8")]
    NotUtf8,
}

/// Why a webhook was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No `X-Pusher-Key` header.
    #[error("missing X-Pusher-Key header")]
    MissingKey,
    /// The `X-Pusher-Key` header names a key this verifier does not hold.
    #[error("unknown X-Pusher-Key")]
    UnknownKey,
    /// No `X-Pusher-Signature` header.
    #[error("missing X-Pusher-Signature header")]
    MissingSignature,
    /// The signature does not match the body under the key's secret.
    #[error("invalid X-Pusher-Signature")]
    InvalidSignature,
    /// The request has no body.
    #[error("the webhook has no body")]
    MissingBody,
    /// The body is signed correctly but is not a webhook payload.
    #[error("invalid webhook body: {0}")]
    InvalidBody(String),
    /// An encrypted client event's data does not open with the master key.
    #[error("could not decrypt the data of an encrypted client event: {0}")]
    Decryption(EncryptionError),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
