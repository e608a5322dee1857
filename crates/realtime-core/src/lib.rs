#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod auth;
pub mod channel;
pub mod client;
pub mod config;
pub mod crypto;
pub mod error;
pub mod event;
pub mod publish;
pub mod retry;
pub mod signing;
pub mod webhook;

pub use auth::{ChannelAuth, PresenceMember, UserAuth};
pub use channel::{ChannelKind, ChannelName, EventName, SocketId, UserId};
pub use client::{
    BatchResponse, ChannelInfo, ChannelList, ChannelQuery, ChannelsQuery, PresenceUser, Pusher,
    Trigger, TriggerResponse,
};
pub use config::{Config, ConfigBuilder, Credentials, Scheme};
pub use crypto::MasterKey;
pub use error::{ConfigError, EncryptionError, Error, Result, ValidationError, WebhookError};
pub use event::{Event, PreparedEvent};
pub use publish::{BoxFuture, Publisher};
pub use retry::{Failure, RetryDecision, RetryPolicy};
pub use signing::Secret;
pub use webhook::{Webhook, WebhookEvent, WebhookVerifier};
