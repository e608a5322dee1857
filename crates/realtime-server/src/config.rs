//! One app's settings and the protocol's limits.

use std::time::Duration;

use realtime_core::Credentials;

use crate::client_address::TrustedProxies;

/// Default of [`AppConfig::max_channels_per_connection`]: pusher-js apps
/// subscribe to a handful of channels per page (the inbox to three), so a
/// hundred leaves room while bounding what one socket can make the server hold.
pub const DEFAULT_MAX_CHANNELS_PER_CONNECTION: usize = 100;

/// Default of [`AppConfig::max_connections_per_address`].
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 100;

/// Default of [`AppConfig::cache_ttl`]: Pusher keeps a cache channel's last
/// event for 30 minutes.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30 * 60);

/// Default of [`AppConfig::max_cached_channels`]: at Pusher's 10 KB per
/// event, at most about 1 GB, and far more cache channels than an app uses.
pub const DEFAULT_MAX_CACHED_CHANNELS: usize = 100_000;

/// An app served by the server, with the limits Pusher applies by default.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The app id, key and secret.
    pub credentials: Credentials,
    /// Whether `client-*` events are relayed (off by default, as on Pusher).
    pub client_events: bool,
    /// Silence after which the server pings a client; told to clients as
    /// `activity_timeout`.
    pub activity_timeout: Duration,
    /// Most connections at once; beyond, new ones are closed with 4100.
    pub max_connections: usize,
    /// Most open connections from one client address (an IPv6 client counts
    /// by its /64, which one host usually holds whole); beyond, new ones are
    /// closed with 4100. Counted like `max_connections`, until the socket ends.
    pub max_connections_per_address: usize,
    /// The proxies whose forwarded headers name the client address that
    /// `max_connections_per_address` counts (none: the peer address).
    pub trusted_proxies: TrustedProxies,
    /// Most channels one connection may be subscribed to (its
    /// `#server-to-user-` channel aside); a subscription beyond is refused.
    pub max_channels_per_connection: usize,
    /// Whether public channels (no authorization) may be subscribed to. A
    /// Pusher server accepts them; an app whose channels are all private can
    /// refuse them, so that holding the public key is not enough to make the
    /// server keep state.
    pub public_channels: bool,
    /// Most members of one presence channel.
    pub max_presence_members: usize,
    /// Largest `user_info` of a presence member, in bytes of JSON.
    pub max_presence_user_info_bytes: usize,
    /// Longest presence `user_id`.
    pub max_presence_user_id_len: usize,
    /// Largest event data (HTTP API and client events), in bytes.
    pub max_data_bytes: usize,
    /// Client events one connection may send per second.
    pub client_events_per_second: u32,
    /// Largest WebSocket frame read from a client.
    pub max_frame_bytes: usize,
    /// Where webhooks go, if anywhere.
    pub webhook_url: Option<String>,
    /// How long `channel_vacated` and `member_removed` wait before they are
    /// sent, so a page reload (leave, then join again) sends nothing.
    pub webhook_leave_delay: Duration,
    /// How long a cache channel's last event is kept (Pusher: 30 minutes).
    pub cache_ttl: Duration,
    /// Most cache channels whose last event is kept at once.
    pub max_cached_channels: usize,
    /// Whether subscribers of a non-presence channel are told its
    /// subscriber count (`pusher_internal:subscription_count`) as it changes,
    /// as Pusher does once enabled for the app.
    pub subscription_count: bool,
}

impl AppConfig {
    /// An app with Pusher's default limits.
    pub fn new(credentials: Credentials) -> Self {
        AppConfig {
            credentials,
            client_events: false,
            activity_timeout: Duration::from_secs(120),
            max_connections: 100_000,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            trusted_proxies: TrustedProxies::none(),
            max_channels_per_connection: DEFAULT_MAX_CHANNELS_PER_CONNECTION,
            public_channels: true,
            max_presence_members: 100,
            max_presence_user_info_bytes: 1024,
            max_presence_user_id_len: 128,
            max_data_bytes: realtime_core::channel::DEFAULT_MAX_DATA_BYTES,
            client_events_per_second: 10,
            max_frame_bytes: 64 * 1024,
            webhook_url: None,
            webhook_leave_delay: Duration::from_secs(3),
            cache_ttl: DEFAULT_CACHE_TTL,
            max_cached_channels: DEFAULT_MAX_CACHED_CHANNELS,
            subscription_count: false,
        }
    }

    /// How long the server waits for any answer to its ping.
    pub fn pong_timeout(&self) -> Duration {
        self.activity_timeout
            .clamp(Duration::from_secs(1), Duration::from_secs(30))
    }
}
