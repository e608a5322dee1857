//! `realtime-server`: the Pusher protocol 7 server, standalone.

use std::time::Duration;

use actix_web::{web, App, HttpServer};
use clap::Parser;
use realtime_core::Credentials;
use realtime_server::config::{
    DEFAULT_MAX_CHANNELS_PER_CONNECTION, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
};
use realtime_server::{metrics_endpoint, AppConfig, Metrics, Server, TrustedProxies};
use tracing_subscriber::EnvFilter;

/// A Pusher protocol 7 server: pusher-js and the official server SDKs work
/// against it unchanged.
#[derive(Parser, Debug)]
#[command(name = "realtime-server", version)]
struct Args {
    /// The app id (the HTTP API's /apps/{id}).
    #[arg(long, env = "REALTIME_APP_ID")]
    app_id: String,
    /// The app key (clients connect to /app/{key}).
    #[arg(long, env = "REALTIME_APP_KEY")]
    key: String,
    /// The app secret (signs the HTTP API and channel authorizations).
    #[arg(long, env = "REALTIME_APP_SECRET", hide_env_values = true)]
    secret: String,
    /// The address to listen on.
    #[arg(long, env = "REALTIME_HOST", default_value = "127.0.0.1")]
    host: String,
    /// The port to listen on.
    #[arg(long, env = "REALTIME_PORT", default_value_t = 6001)]
    port: u16,
    /// Where to POST webhooks (channel_occupied, member_added, client_event, …).
    #[arg(long, env = "REALTIME_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Relay client-* events on private and presence channels.
    #[arg(long, env = "REALTIME_CLIENT_EVENTS", default_value_t = false)]
    client_events: bool,
    /// Seconds of silence before the server pings a client.
    #[arg(long, env = "REALTIME_ACTIVITY_TIMEOUT", default_value_t = 120)]
    activity_timeout: u64,
    /// Most connections at once.
    #[arg(long, env = "REALTIME_MAX_CONNECTIONS", default_value_t = 100_000)]
    max_connections: usize,
    /// Most open connections from one client address (an IPv6 client counts
    /// by its /64); beyond, new ones are closed with 4100.
    #[arg(long, env = "REALTIME_MAX_CONNECTIONS_PER_ADDRESS",
          default_value_t = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, value_parser = positive)]
    max_connections_per_address: usize,
    /// Proxies (addresses or CIDRs, comma-separated) whose Forwarded /
    /// X-Forwarded-For name the client address; unset: the peer is the client.
    #[arg(long, env = "REALTIME_TRUSTED_PROXIES", value_parser = TrustedProxies::parse,
          default_value = "")]
    trusted_proxies: TrustedProxies,
    /// Most channels one connection may be subscribed to.
    #[arg(long, env = "REALTIME_MAX_CHANNELS_PER_CONNECTION",
          default_value_t = DEFAULT_MAX_CHANNELS_PER_CONNECTION, value_parser = positive)]
    max_channels_per_connection: usize,
    /// Accept public channels (no authorization), as Pusher does
    /// (true/false, yes/no, on/off, 1/0).
    #[arg(long, env = "REALTIME_PUBLIC_CHANNELS", default_value_t = true,
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    public_channels: bool,
    /// Largest event data in bytes.
    #[arg(long, env = "REALTIME_MAX_DATA_BYTES", default_value_t = 10 * 1024)]
    max_data_bytes: usize,
    /// Seconds channel_vacated and member_removed webhooks wait for a rejoin.
    #[arg(long, env = "REALTIME_WEBHOOK_LEAVE_DELAY", default_value_t = 3.0)]
    webhook_leave_delay: f64,
    /// Tell the subscribers of non-presence channels their subscriber count
    /// as it changes (`pusher_internal:subscription_count`), as Pusher does
    /// once enabled for the app.
    #[arg(long, env = "REALTIME_SUBSCRIPTION_COUNT", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new())]
    subscription_count: bool,
    /// Seconds a cache channel's last event is kept.
    #[arg(long, env = "REALTIME_CACHE_TTL", default_value_t = 1800, value_parser = positive_u64)]
    cache_ttl: u64,
    /// Join the cluster whose bus this names (`redis://host:port` or
    /// `nats://host:port`): every node started with the same app and URL
    /// serves the same channels, users and presence.
    #[arg(long = "cluster", env = "REALTIME_CLUSTER_URL")]
    cluster_url: Option<String>,
    /// Worker threads (default: one per core).
    #[arg(long, env = "REALTIME_WORKERS")]
    workers: Option<usize>,
    /// Logs as JSON lines.
    #[arg(long, env = "REALTIME_LOG_JSON", default_value_t = false)]
    log_json: bool,
}

/// A number of seconds that must be at least one.
fn positive_u64(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a positive whole number"))
}

/// A count that must be at least one.
fn positive(text: &str) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a positive whole number"))
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    actix_web::rt::System::new().block_on(serve(args))
}

async fn serve(args: Args) -> std::io::Result<()> {
    let mut app = AppConfig::new(Credentials::new(
        args.app_id.as_str(),
        args.key.as_str(),
        args.secret.as_str(),
    ));
    app.client_events = args.client_events;
    app.activity_timeout = Duration::from_secs(args.activity_timeout.max(1));
    app.max_connections = args.max_connections;
    app.max_connections_per_address = args.max_connections_per_address;
    app.trusted_proxies = args.trusted_proxies.clone();
    app.max_channels_per_connection = args.max_channels_per_connection;
    app.public_channels = args.public_channels;
    app.max_data_bytes = args.max_data_bytes;
    app.webhook_url = args.webhook_url.clone();
    app.webhook_leave_delay = Duration::from_secs_f64(args.webhook_leave_delay.max(0.0));
    app.subscription_count = args.subscription_count;
    app.cache_ttl = Duration::from_secs(args.cache_ttl);

    let metrics = Metrics::new();
    let server = match &args.cluster_url {
        Some(url) => Server::clustered(vec![app], metrics, url)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?,
        None => Server::with_metrics(vec![app], metrics),
    };
    let server = web::Data::new(server);
    let for_workers = server.clone();
    let mut http = HttpServer::new(move || {
        App::new()
            .configure(Server::configure(for_workers.clone()))
            .route("/metrics", web::get().to(metrics_endpoint))
            .route("/", web::get().to(|| async { "ok" }))
    })
    // Connections are told to reconnect by Server::shutdown; the HTTP server
    // then only waits for in-flight requests.
    .shutdown_timeout(5)
    .disable_signals()
    .bind((args.host.as_str(), args.port))?;
    if let Some(workers) = args.workers {
        http = http.workers(workers);
    }
    let running = http.run();
    let handle = running.handle();
    tracing::info!(
        host = %args.host,
        port = args.port,
        app_id = %args.app_id,
        client_events = args.client_events,
        webhooks = args.webhook_url.is_some(),
        cluster = args.cluster_url.is_some(),
        "realtime-server listening (WebSocket /app/{{key}}, HTTP API /apps/{{id}})"
    );
    let stopper = server.clone();
    actix_web::rt::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: telling clients to reconnect, flushing webhooks");
        stopper.shutdown(Duration::from_secs(10)).await;
        handle.stop(true).await;
    });
    running.await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
