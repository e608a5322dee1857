//! The HTTP API client: trigger, batch, channel queries, users. One
//! `reqwest` client per [`Pusher`], so connections are kept alive and reused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::{ChannelAuth, PresenceMember, UserAuth};
use crate::channel::{ChannelKind, ChannelName, UserId};
use crate::config::{Config, Credentials};
use crate::error::{ConfigError, Error, Result, ValidationError};
use crate::event::{prepare_batch, BatchBody, Event, IntoChannels, TriggerBody, INFO_ATTRIBUTES};
use crate::retry::{Failure, RetryDecision};
use crate::signing::sign_request;
use crate::webhook::{Webhook, WebhookVerifier};
use crate::WebhookError;

/// Attributes of one channel, as the API reports them. Only what was asked
/// for (and applies to the channel's kind) is present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// Whether anyone is subscribed (single-channel queries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupied: Option<bool>,
    /// Distinct users on a presence channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_count: Option<u64>,
    /// Connections subscribed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_count: Option<u64>,
}

/// The answer to a trigger: the attributes asked for with `info`, by channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerResponse {
    /// Empty unless `info` was given.
    #[serde(default)]
    pub channels: HashMap<String, ChannelInfo>,
}

/// The answer to a batch trigger: the attributes asked for, one entry per event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// Empty unless some event asked for `info`.
    #[serde(default)]
    pub batch: Vec<ChannelInfo>,
}

/// The occupied channels of an app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelList {
    /// Channel name → the attributes asked for.
    #[serde(default)]
    pub channels: HashMap<String, ChannelInfo>,
}

/// A member of a presence channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceUser {
    /// The member's `user_id`.
    pub id: String,
}

#[derive(Deserialize)]
struct UsersBody {
    users: Vec<PresenceUser>,
}

/// A client of the Pusher Channels HTTP API (hosted Pusher, or any compatible
/// server). Cheap to clone: clones share one connection pool.
///
/// ```no_run
/// # async fn run() -> Result<(), realtime_core::Error> {
/// use realtime_core::Pusher;
/// let pusher = Pusher::from_url("https://key:secret@api-eu.pusher.com/apps/123")?;
/// pusher
///     .trigger("private-contact-1", "message:created", &serde_json::json!({"id": "m1"}))
///     .exclude("1234.5678")
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Pusher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    base_url: String,
    http: reqwest::Client,
    webhooks: WebhookVerifier,
}

impl Pusher {
    /// A client for `config`.
    pub fn new(config: Config) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64)
            .user_agent(concat!("realtime-core/", env!("CARGO_PKG_VERSION")));
        if let Some(proxy) = &config.proxy {
            let proxy = reqwest::Proxy::all(proxy.as_str())
                .map_err(|e| ConfigError::HttpClient(format!("invalid proxy: {e}")))?;
            builder = builder.proxy(proxy);
        }
        let http = builder
            .build()
            .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
        Ok(Pusher {
            inner: Arc::new(Inner {
                base_url: config.base_url(),
                webhooks: WebhookVerifier::from_credentials(&config.credentials),
                config,
                http,
            }),
        })
    }

    /// A client for `http[s]://KEY:SECRET@HOST[:PORT]/apps/APP_ID`.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::new(Config::from_url(url)?)
    }

    /// A client configured by the `PUSHER_*` environment ([`Config::from_env`]).
    pub fn from_env() -> Result<Self> {
        Self::new(Config::from_env()?)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The app's credentials, which sign and authorize.
    pub fn credentials(&self) -> &Credentials {
        &self.inner.config.credentials
    }

    /// Starts a trigger of `event` with `data` serialised as JSON on one or
    /// more channels (up to 100); finish it with [`Trigger::send`].
    pub fn trigger<T: Serialize + ?Sized>(
        &self,
        channels: impl IntoChannels,
        event: impl Into<String>,
        data: &T,
    ) -> Trigger<'_> {
        Trigger {
            pusher: self,
            event: Event::new(channels, event, data),
        }
    }

    /// Like [`Pusher::trigger`] with data that is already JSON text.
    pub fn trigger_json(
        &self,
        channels: impl IntoChannels,
        event: impl Into<String>,
        data: impl Into<String>,
    ) -> Trigger<'_> {
        Trigger {
            pusher: self,
            event: Ok(Event::from_json(channels, event, data)),
        }
    }

    /// Publishes one prepared [`Event`].
    pub async fn trigger_event(&self, event: &Event) -> Result<TriggerResponse> {
        let prepared = event.prepare(self.credentials(), self.config().max_data_bytes)?;
        let body = to_json(&TriggerBody::from(&prepared))?;
        self.request(Method::POST, "events", &[], Some(body)).await
    }

    /// Publishes up to 10 events, each on one channel, in one request.
    pub async fn trigger_batch(&self, events: &[Event]) -> Result<BatchResponse> {
        let prepared = prepare_batch(events, self.credentials(), self.config().max_data_bytes)?;
        let body = to_json(&BatchBody::new(&prepared))?;
        self.request(Method::POST, "batch_events", &[], Some(body))
            .await
    }

    /// Sends an event to every connection of one authenticated user
    /// (`#server-to-user-{id}`).
    pub async fn send_to_user<T: Serialize + ?Sized>(
        &self,
        user_id: &str,
        event: impl Into<String>,
        data: &T,
    ) -> Result<()> {
        let user_id = UserId::parse(user_id)?;
        let channel = ChannelName::server_to_user(&user_id);
        self.trigger_event(&Event::new(&channel, event, data)?)
            .await?;
        Ok(())
    }

    /// Closes every connection of one authenticated user.
    pub async fn terminate_user_connections(&self, user_id: &str) -> Result<()> {
        let user_id = UserId::parse(user_id)?;
        let path = format!("users/{}/terminate_connections", user_id.as_str());
        let _: serde_json::Value = self
            .request(Method::POST, &path, &[], Some("{}".to_owned()))
            .await?;
        Ok(())
    }

    /// Starts a query of the app's occupied channels.
    pub fn channels(&self) -> ChannelsQuery<'_> {
        ChannelsQuery {
            pusher: self,
            prefix: None,
            info: Vec::new(),
        }
    }

    /// Starts a query of one channel's state.
    pub fn channel(&self, name: impl Into<String>) -> ChannelQuery<'_> {
        ChannelQuery {
            pusher: self,
            name: name.into(),
            info: Vec::new(),
        }
    }

    /// The members of a presence channel.
    pub async fn presence_users(&self, channel: &str) -> Result<Vec<PresenceUser>> {
        let channel = ChannelName::parse(channel)?;
        if channel.kind() != ChannelKind::Presence {
            return Err(ValidationError::NotPresenceChannel(channel.to_string()).into());
        }
        let path = format!("channels/{}/users", channel.as_str());
        let body: UsersBody = self.request(Method::GET, &path, &[], None).await?;
        Ok(body.users)
    }

    /// Authorizes a private or encrypted channel subscription
    /// ([`Credentials::authorize_channel`]).
    pub fn authorize_channel(&self, socket_id: &str, channel: &str) -> Result<ChannelAuth> {
        self.credentials().authorize_channel(socket_id, channel)
    }

    /// Authorizes a presence channel subscription
    /// ([`Credentials::authorize_presence_channel`]).
    pub fn authorize_presence_channel<I: Serialize + ?Sized>(
        &self,
        socket_id: &str,
        channel: &str,
        member: &PresenceMember<'_, I>,
    ) -> Result<ChannelAuth> {
        self.credentials()
            .authorize_presence_channel(socket_id, channel, member)
    }

    /// Authenticates a user ([`Credentials::authenticate_user`]).
    pub fn authenticate_user<T: Serialize + ?Sized>(
        &self,
        socket_id: &str,
        user_data: &T,
    ) -> Result<UserAuth> {
        self.credentials().authenticate_user(socket_id, user_data)
    }

    /// Verifies a webhook signed with this app's key and secret, decrypting
    /// encrypted client events when a master key is configured.
    pub fn verify_webhook(
        &self,
        key_header: Option<&str>,
        signature_header: Option<&str>,
        body: &[u8],
    ) -> Result<Webhook, WebhookError> {
        self.inner
            .webhooks
            .verify(key_header, signature_header, body)
    }

    /// Sends one signed request, retrying as the configured policy allows.
    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<T> {
        let credentials = self.credentials();
        let path = format!("/apps/{}/{}", credentials.app_id(), path);
        let mut attempt = 1;
        loop {
            let failure = match self
                .send_once(&method, &path, params, body.as_deref())
                .await
            {
                Ok(text) => return parse_answer(&text),
                Err(error) => error,
            };
            let kind = match &failure {
                Error::Http { status, .. } => Failure::Status(*status),
                Error::Timeout(_) | Error::Transport(_) => Failure::Transport,
                _ => return Err(failure),
            };
            match self.config().retry.decide(kind, attempt) {
                RetryDecision::GiveUp => return Err(failure),
                RetryDecision::RetryAfter(delay) => {
                    tracing::debug!(%method, %path, attempt, ?delay, error = %failure, "retrying Pusher API request");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        params: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<String> {
        let credentials = self.credentials();
        let query = sign_request(
            credentials.signer(),
            credentials.key(),
            method.as_str(),
            path,
            params,
            body,
            unix_now(),
        );
        let url = format!("{}{}?{}", self.inner.base_url, path, query);
        let mut request = self.inner.http.request(method.clone(), url);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.transport_error(e))?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(Error::Http {
                status: status.as_u16(),
                body: text,
            })
        }
    }

    fn transport_error(&self, error: reqwest::Error) -> Error {
        if error.is_timeout() {
            Error::Timeout(self.config().timeout)
        } else {
            Error::Transport(error)
        }
    }
}

fn parse_answer<T: DeserializeOwned>(text: &str) -> Result<T> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_json::from_str(text).map_err(|e| Error::Decode(format!("{e}: {}", truncate(text, 200))))
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(Error::Serialize)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn check_info(attributes: &[String]) -> Result<Option<String>> {
    for attribute in attributes {
        if !INFO_ATTRIBUTES.contains(&attribute.as_str()) {
            return Err(ValidationError::InvalidInfoAttribute(attribute.clone()).into());
        }
    }
    Ok((!attributes.is_empty()).then(|| attributes.join(",")))
}

/// A trigger being built; see [`Pusher::trigger`].
#[must_use = "a trigger does nothing until it is sent"]
pub struct Trigger<'a> {
    pusher: &'a Pusher,
    event: Result<Event>,
}

impl Trigger<'_> {
    /// Leaves out the connection with this socket id.
    pub fn exclude(mut self, socket_id: impl Into<String>) -> Self {
        self.event = self.event.map(|e| e.exclude(socket_id));
        self
    }

    /// Asks for `user_count` and/or `subscription_count` of the channels.
    pub fn info<I, S>(mut self, attributes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event = self.event.map(|e| e.info(attributes));
        self
    }

    /// Checks the event and publishes it.
    pub async fn send(self) -> Result<TriggerResponse> {
        self.pusher.trigger_event(&self.event?).await
    }
}

/// A query of the occupied channels; see [`Pusher::channels`].
#[must_use = "a query does nothing until it is sent"]
pub struct ChannelsQuery<'a> {
    pusher: &'a Pusher,
    prefix: Option<String>,
    info: Vec<String>,
}

impl ChannelsQuery<'_> {
    /// Only channels whose name starts with `prefix`.
    pub fn filter_by_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Asks for `user_count` (presence prefixes only) and/or `subscription_count`.
    pub fn info<I, S>(mut self, attributes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.info = attributes.into_iter().map(Into::into).collect();
        self
    }

    /// Sends the query.
    pub async fn send(self) -> Result<ChannelList> {
        let info = check_info(&self.info)?;
        if let Some(prefix) = &self.prefix {
            if !prefix.is_empty() {
                ChannelName::parse(prefix.as_str())?;
            }
        }
        let mut params = Vec::new();
        if let Some(prefix) = &self.prefix {
            params.push(("filter_by_prefix", prefix.as_str()));
        }
        if let Some(info) = &info {
            params.push(("info", info.as_str()));
        }
        self.pusher
            .request(Method::GET, "channels", &params, None)
            .await
    }
}

/// A query of one channel; see [`Pusher::channel`].
#[must_use = "a query does nothing until it is sent"]
pub struct ChannelQuery<'a> {
    pusher: &'a Pusher,
    name: String,
    info: Vec<String>,
}

impl ChannelQuery<'_> {
    /// Asks for `user_count` (presence channels) and/or `subscription_count`.
    pub fn info<I, S>(mut self, attributes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.info = attributes.into_iter().map(Into::into).collect();
        self
    }

    /// Sends the query.
    pub async fn send(self) -> Result<ChannelInfo> {
        let channel = ChannelName::parse(self.name.as_str())?;
        // `#server-to-user-` channels cannot be queried, and a `#` in the path
        // would turn the signed query into a URL fragment.
        if channel.kind() == ChannelKind::ServerToUser {
            return Err(ValidationError::InvalidChannelName(channel.to_string()).into());
        }
        let info = check_info(&self.info)?;
        let params: Vec<(&str, &str)> = info.iter().map(|i| ("info", i.as_str())).collect();
        let path = format!("channels/{}", channel.as_str());
        self.pusher.request(Method::GET, &path, &params, None).await
    }
}
