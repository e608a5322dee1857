//! Realtime: where events go (hosted Pusher, a self-hosted server, or the
//! embedded realtime-server on our own port), who may join which channel,
//! `notify_contact()`, and the outbox dispatcher. Who is viewing a contact
//! is the realtime service's presence state, read when asked
//! (`routes/api/contacts/viewers.rs`).

pub mod channels;
pub mod dispatcher;
pub mod notify;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use rand::Rng;
use realtime_core::{
    Config as PusherConfig, Credentials, MasterKey, Publisher, Pusher, RetryPolicy, WebhookVerifier,
};
use realtime_server::{App as RealtimeApp, AppConfig, EmbeddedPublisher, Metrics, Server};
use serde_json::{json, Value};

use crate::config::{Config, RealtimeMode};
use crate::db::DbPool;
use crate::models::realtime_app;

pub use notify::{notify_contact, ContactEvent};

/// Where events are published.
pub enum Backend {
    /// Hosted Pusher or a self-hosted compatible server, over HTTP.
    Pusher(Pusher),
    /// The realtime server mounted in this process.
    Embedded {
        /// The server, to mount on our port.
        server: web::Data<Server>,
        /// Its one app, for presence state (the members it knows: this
        /// process's, and, once the server runs in a cluster, every node's).
        app: Arc<RealtimeApp>,
    },
}

/// Everything realtime the handlers need.
pub struct Realtime {
    /// Hosted/self-hosted or embedded.
    pub backend: Backend,
    /// The app's credentials: they sign auth answers and verify webhooks.
    pub credentials: Credentials,
    /// What events are published through.
    pub publisher: Arc<dyn Publisher>,
    /// Verifies Pusher's webhooks.
    pub webhooks: WebhookVerifier,
    /// The options of `new Pusher(key, options)` for pusher-js.
    pub client_options: Value,
}

impl std::fmt::Debug for Realtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realtime")
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.gen::<u8>()))
        .collect()
}

fn auth_endpoints() -> Value {
    json!({
        "channelAuthorization": { "endpoint": "/api/pusher/auth", "transport": "ajax" },
        "userAuthentication": { "endpoint": "/api/pusher/user-auth", "transport": "ajax" },
    })
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

impl Realtime {
    /// Sets up the realtime side for `config`. In embedded mode the app's
    /// credentials are generated on first start and kept in the database.
    pub fn start(config: &Config, pool: &DbPool) -> Result<Self, String> {
        let master_key = config
            .encryption_master_key_base64
            .as_deref()
            .map(MasterKey::from_base64)
            .transpose()
            .map_err(|e| format!("PUSHER_ENCRYPTION_MASTER_KEY_BASE64: {e}"))?;
        match &config.realtime {
            RealtimeMode::Pusher(pusher_config) => Self::hosted(pusher_config, master_key),
            RealtimeMode::Embedded => Self::embedded(config, pool, master_key),
        }
    }

    fn hosted(config: &PusherConfig, master_key: Option<MasterKey>) -> Result<Self, String> {
        // Two clients: the dispatcher's runs on its own runtime, and hyper's
        // pooled connections belong to the runtime that opened them.
        let publisher = pusher_client(config)?;
        let pusher = pusher_client(config)?;
        let mut credentials = config.credentials().clone();
        if let Some(key) =
            master_key.or_else(|| config.credentials().encryption_master_key().cloned())
        {
            credentials = credentials.with_encryption_master_key(key);
        }
        let cluster_host = config
            .host()
            .strip_prefix("api-")
            .and_then(|h| h.strip_suffix(".pusher.com"));
        let tls = config.scheme() == realtime_core::Scheme::Https;
        let options = match cluster_host {
            Some(cluster) => {
                json!({ "key": credentials.key(), "cluster": cluster, "forceTLS": true })
            }
            None => {
                let port = config.port().unwrap_or(if tls { 443 } else { 80 });
                json!({
                    "key": credentials.key(),
                    "cluster": "self-hosted",
                    "wsHost": config.host(),
                    "wsPort": port,
                    "wssPort": port,
                    "forceTLS": tls,
                    "enabledTransports": ["ws", "wss"],
                    "disableStats": true,
                })
            }
        };
        Ok(Realtime {
            publisher: Arc::new(publisher),
            webhooks: WebhookVerifier::from_credentials(&credentials),
            backend: Backend::Pusher(pusher),
            credentials,
            client_options: merge(options, auth_endpoints()),
        })
    }

    fn embedded(
        config: &Config,
        pool: &DbPool,
        master_key: Option<MasterKey>,
    ) -> Result<Self, String> {
        let mut conn = pool.get().map_err(|e| e.to_string())?;
        let stored = realtime_app::RealtimeApp::get_or_create(&mut conn, || {
            let id = rand::thread_rng()
                .gen_range(100_000..1_000_000u32)
                .to_string();
            (id, random_hex(10), random_hex(10))
        })
        .map_err(|e| format!("embedded realtime credentials: {e}"))?;
        let mut credentials = Credentials::new(stored.app_id, stored.app_key, stored.app_secret);
        if let Some(key) = master_key {
            credentials = credentials.with_encryption_master_key(key);
        }
        let mut app_config = AppConfig::new(credentials.clone());
        app_config.client_events = true;
        // The inbox's channels are all private or presence: a public one
        // would only let anyone holding the public key make the server keep
        // state.
        app_config.public_channels = config.embedded_public_channels;
        app_config.trusted_proxies = config.trusted_proxies.clone();
        // As on Pusher once enabled for the app: pusher-js then knows each
        // channel's subscriber count.
        app_config.subscription_count = true;
        if let Some(max) = config.realtime_max_channels_per_connection {
            app_config.max_channels_per_connection = max;
        }
        if let Some(max) = config.realtime_max_connections_per_address {
            app_config.max_connections_per_address = max;
        }
        let server = match &config.realtime_cluster_url {
            Some(url) => Server::clustered(vec![app_config], Metrics::new(), url)
                .map_err(|e| format!("REALTIME_CLUSTER_URL: {e}"))?,
            None => Server::new(vec![app_config]),
        };
        let server = web::Data::new(server);
        let app = server
            .app_by_id(credentials.app_id())
            .ok_or("the embedded realtime app is missing")?;
        let publisher: Arc<dyn Publisher> =
            Arc::new(EmbeddedPublisher::new(app.clone(), credentials.clone()));
        let public = url::Url::parse(&config.public_url).map_err(|e| e.to_string())?;
        let tls = public.scheme() == "https";
        let port = public
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let client_options = merge(
            json!({
                "key": credentials.key(),
                "cluster": "embedded",
                "wsHost": public.host_str().unwrap_or("127.0.0.1"),
                "wsPort": port,
                "wssPort": port,
                "forceTLS": tls,
                "enabledTransports": ["ws", "wss"],
                "disableStats": true,
            }),
            auth_endpoints(),
        );
        Ok(Realtime {
            backend: Backend::Embedded { server, app },
            webhooks: WebhookVerifier::from_credentials(&credentials),
            credentials,
            publisher,
            client_options,
        })
    }

    /// `embedded`, `pusher` (hosted) or `self-hosted`, for logs and health.
    pub fn mode(&self) -> &'static str {
        match &self.backend {
            Backend::Embedded { .. } => "embedded",
            Backend::Pusher(pusher) if pusher.config().host().ends_with(".pusher.com") => "pusher",
            Backend::Pusher(_) => "self-hosted",
        }
    }

    /// The embedded server, to mount on our own port.
    pub fn embedded_server(&self) -> Option<web::Data<Server>> {
        match &self.backend {
            Backend::Embedded { server, .. } => Some(server.clone()),
            Backend::Pusher(_) => None,
        }
    }

    /// Tells connected clients to reconnect and flushes the embedded
    /// server's webhooks.
    pub async fn shutdown(&self, timeout: Duration) {
        if let Backend::Embedded { server, .. } = &self.backend {
            server.shutdown(timeout).await;
        }
    }
}

/// Builds the HTTP client for hosted Pusher or a self-hosted server.
fn pusher_client(config: &PusherConfig) -> Result<Pusher, String> {
    let mut builder = PusherConfig::builder(
        config.credentials().app_id(),
        config.credentials().key(),
        config.credentials().secret().clone(),
    )
    .host(config.host())
    .scheme(config.scheme())
    .timeout(Duration::from_secs(5))
    .max_data_bytes(config.max_data_bytes())
    .retry(RetryPolicy::never());
    if let Some(port) = config.port() {
        builder = builder.port(port);
    }
    let built = builder.build().map_err(|e| e.to_string())?;
    Pusher::new(built).map_err(|e| e.to_string())
}
