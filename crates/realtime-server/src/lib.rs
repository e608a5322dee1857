//! A Pusher protocol 7 server: WebSocket at `/app/{key}` and the Pusher HTTP
//! API at `/apps/{id}/…` on one port, so pusher-js and the official server
//! SDKs work against it unchanged.
//!
//! It is a library first: [`Server::configure`] mounts it into any actix-web
//! app (api-server embeds it that way), and [`EmbeddedPublisher`] publishes
//! in-process through realtime-core's [`Publisher`] trait. The
//! `realtime-server` binary runs it standalone.
//!
//! Where a request enters: `connection.rs` (WebSocket frames) and
//! `http_api.rs` (HTTP API); the shared state is `registry.rs` (with the last
//! events of cache channels in `cache.rs`); webhooks leave from
//! `webhooks.rs`; with a cluster URL, reports to and from the other nodes go
//! through `cluster/` (the bus clients in `cluster/bus/`).

pub mod cache;
pub mod client_address;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod http_api;
pub mod inbound;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod registry;
pub mod webhooks;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use std::collections::HashMap;

use realtime_core::{
    BatchResponse, BoxFuture, ChannelInfo, Credentials, Event, PreparedEvent, Publisher,
    TriggerResponse,
};

pub use client_address::TrustedProxies;
pub use config::AppConfig;
pub use metrics::Metrics;
pub use registry::App;

/// The largest body the HTTP API reads (a batch of events at their size limit).
pub const HTTP_API_BODY_LIMIT: usize = 1024 * 1024;

/// The apps a server serves, with their live state.
#[derive(Debug)]
pub struct Server {
    apps: Vec<Arc<App>>,
    /// This node's link to its cluster, if it is in one.
    cluster: Option<Arc<cluster::ClusterLink>>,
    metrics: Metrics,
    shutting_down: AtomicBool,
}

impl Server {
    /// A server for these apps. Starts their webhook dispatchers, so it must
    /// be called inside a tokio runtime when any app has a webhook URL.
    pub fn new(apps: Vec<AppConfig>) -> Self {
        Self::with_metrics(apps, Metrics::new())
    }

    /// [`Server::new`], reporting to the given metrics.
    pub fn with_metrics(apps: Vec<AppConfig>, metrics: Metrics) -> Self {
        Self::build(apps, metrics, None)
    }

    /// A server that is a node of the cluster whose bus `cluster_url` names
    /// (`redis://host:port` or `nats://host:port`): its apps answer for
    /// every node, and events published on any node reach every node's
    /// subscribers. It connects in the background, and keeps serving its own
    /// clients while the bus is away. Must be called inside a tokio runtime.
    pub fn clustered(
        apps: Vec<AppConfig>,
        metrics: Metrics,
        cluster_url: &str,
    ) -> Result<Self, cluster::bus::BusError> {
        let joining = cluster::Joining::new(cluster_url, &metrics)?;
        let server = Self::build(apps, metrics.clone(), Some(joining.link()));
        joining.start(server.apps.clone(), metrics);
        Ok(server)
    }

    fn build(
        apps: Vec<AppConfig>,
        metrics: Metrics,
        cluster: Option<Arc<cluster::ClusterLink>>,
    ) -> Self {
        let apps = apps
            .into_iter()
            .map(|config| {
                let webhooks = config.webhook_url.clone().map(|url| {
                    webhooks::WebhookQueue::spawn(
                        url,
                        config.credentials.clone(),
                        config.webhook_leave_delay,
                        metrics.clone(),
                    )
                });
                let app = App::new(config, metrics.clone(), webhooks);
                let app = Arc::new(match &cluster {
                    Some(link) => app.with_cluster(link.clone()),
                    None => app,
                });
                // Outside a runtime (a test of the state alone), teardowns
                // are finished by whoever begins them.
                if tokio::runtime::Handle::try_current().is_ok() {
                    app.start_background();
                }
                app
            })
            .collect();
        Server {
            apps,
            cluster,
            metrics,
            shutting_down: AtomicBool::new(false),
        }
    }

    /// This node's link to its cluster, if it is in one.
    pub fn cluster(&self) -> Option<&Arc<cluster::ClusterLink>> {
        self.cluster.as_ref()
    }

    /// The app with this key.
    pub fn app_by_key(&self, key: &str) -> Option<Arc<App>> {
        self.apps
            .iter()
            .find(|a| a.config().credentials.key() == key)
            .cloned()
    }

    /// The app with this id.
    pub fn app_by_id(&self, id: &str) -> Option<Arc<App>> {
        self.apps
            .iter()
            .find(|a| a.config().credentials.app_id() == id)
            .cloned()
    }

    /// Whether [`Server::shutdown`] began: new connections are refused.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Mounts the WebSocket endpoint and the HTTP API (not `/metrics`, which
    /// an embedding app may serve with its own).
    pub fn configure(server: web::Data<Server>) -> impl FnOnce(&mut web::ServiceConfig) {
        move |cfg| {
            cfg.app_data(server)
                .route("/app/{key}", web::get().to(connection::websocket))
                .route(
                    "/app/{key}/{tail:.*}",
                    web::get().to(connection::wrong_path),
                )
                .service(
                    web::scope("/apps/{app_id}")
                        // The HTTP API's body limit, on its own scope only:
                        // set on the app, it would bind every route of an
                        // app that mounts this one.
                        .app_data(web::PayloadConfig::new(HTTP_API_BODY_LIMIT))
                        .route("/events", web::post().to(http_api::events))
                        .route("/batch_events", web::post().to(http_api::batch_events))
                        .route("/channels", web::get().to(http_api::channels))
                        .route("/channels/{channel}", web::get().to(http_api::channel))
                        .route(
                            "/channels/{channel}/users",
                            web::get().to(http_api::channel_users),
                        )
                        .route(
                            "/users/{user_id}/terminate_connections",
                            web::post().to(http_api::terminate_user_connections),
                        )
                        // Anything else under an app says so, as every other refusal does.
                        .default_service(web::to(|| async {
                            HttpResponse::NotFound()
                                .content_type("text/plain; charset=utf-8")
                                .body("Not found\n")
                        })),
                );
        }
    }

    /// Tells every client to reconnect elsewhere (4200) and delivers the
    /// webhooks still queued, waiting at most `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for app in &self.apps {
            app.close_all(protocol::code::RECONNECT_NOW, "Server shutting down");
        }
        // The other nodes forget this one now, not when its lease lapses.
        if let Some(link) = &self.cluster {
            link.leave().await;
        }
        // `close_all` removed every connection registered by then, so their
        // channel_vacated and member_removed are queued for the flush below.
        // Upgrades are refused from here on; one that was already past that
        // check gets no 4200 and ends when the server stops.
        let flushes = self
            .apps
            .iter()
            .filter_map(|a| a.webhooks().cloned())
            .map(|queue| async move { queue.flush().await });
        let all = async {
            for flush in flushes {
                flush.await;
            }
        };
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("webhooks still queued at shutdown were not all delivered");
        }
    }
}

/// `GET /metrics` in Prometheus' text format.
pub async fn metrics_endpoint(server: web::Data<Server>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(server.metrics().render())
}

/// Publishes in-process to an app of an embedded [`Server`], with the same
/// checks (and encryption) as the HTTP client.
#[derive(Debug, Clone)]
pub struct EmbeddedPublisher {
    app: Arc<App>,
    credentials: Credentials,
}

impl EmbeddedPublisher {
    /// A publisher into `app`; `credentials` may carry the encryption master key.
    pub fn new(app: Arc<App>, credentials: Credentials) -> Self {
        EmbeddedPublisher { app, credentials }
    }

    fn deliver(&self, prepared: &PreparedEvent) -> HashMap<String, ChannelInfo> {
        let except = prepared.socket_id.as_ref().map(|s| s.as_str());
        let mut info = HashMap::new();
        for channel in &prepared.channels {
            let frame = protocol::frame(
                prepared.name.as_str(),
                Some(channel.as_str()),
                prepared.data.as_str(),
            );
            self.app.publish(channel.as_str(), &frame, except);
            if let Some(wanted) = &prepared.info {
                let all = self.app.channel_info(channel.as_str());
                info.insert(
                    channel.to_string(),
                    ChannelInfo {
                        occupied: None,
                        user_count: all.user_count.filter(|_| wanted.contains("user_count")),
                        subscription_count: all
                            .subscription_count
                            .filter(|_| wanted.contains("subscription_count")),
                    },
                );
            }
        }
        info
    }
}

impl Publisher for EmbeddedPublisher {
    fn publish(&self, event: Event) -> BoxFuture<'_, realtime_core::Result<TriggerResponse>> {
        let answer = event
            .prepare(&self.credentials, self.app.config().max_data_bytes)
            .map(|prepared| TriggerResponse {
                channels: self.deliver(&prepared),
            });
        Box::pin(async move { answer })
    }

    fn publish_batch(
        &self,
        events: Vec<Event>,
    ) -> BoxFuture<'_, realtime_core::Result<BatchResponse>> {
        // The whole batch is checked before any event is delivered.
        let answer = realtime_core::event::prepare_batch(
            &events,
            &self.credentials,
            self.app.config().max_data_bytes,
        )
        .map(|prepared| {
            let batch = prepared
                .iter()
                .map(|event| (event.info.is_some(), self.deliver(event)))
                .filter(|(wanted, _)| *wanted)
                .flat_map(|(_, info)| info.into_values())
                .collect();
            BatchResponse { batch }
        });
        Box::pin(async move { answer })
    }
}
