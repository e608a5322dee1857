//! Prometheus metrics: connections, channels, messages in and out, webhook
//! failures, refusals, served as text at `/metrics`. No metric has a label:
//! nothing a client sends (a channel name, an address) becomes a series, so
//! clients cannot grow the registry.

use prometheus::{Encoder, IntCounter, IntGauge, Opts, Registry, TextEncoder};

/// The server's metrics; cheap to clone (clones share the values).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: IntGauge,
    /// Occupied channels.
    pub channels: IntGauge,
    /// Frames received from clients.
    pub messages_in: IntCounter,
    /// Frames queued to clients.
    pub messages_out: IntCounter,
    /// Events accepted by the HTTP API.
    pub http_events: IntCounter,
    /// Webhook deliveries that failed for good.
    pub webhook_failures: IntCounter,
    /// Webhook requests sent (successful or not).
    pub webhook_requests: IntCounter,
    /// Connections refused because their client address had its maximum open.
    pub connections_refused_per_address: IntCounter,
    /// Subscriptions refused by a limit: public channels turned off, or the
    /// connection's maximum of channels.
    pub subscriptions_refused: IntCounter,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::with_opts(Opts::new(name, help)).unwrap_or_else(|_| unreachable!());
    // Each name is registered once, by this constructor, so this cannot clash.
    let _ = registry.register(Box::new(gauge.clone()));
    gauge
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::with_opts(Opts::new(name, help)).unwrap_or_else(|_| unreachable!());
    let _ = registry.register(Box::new(counter.clone()));
    counter
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        Metrics {
            connections: gauge(
                &registry,
                "realtime_connections",
                "Open WebSocket connections",
            ),
            channels: gauge(&registry, "realtime_channels", "Occupied channels"),
            messages_in: counter(
                &registry,
                "realtime_messages_in_total",
                "Frames received from clients",
            ),
            messages_out: counter(
                &registry,
                "realtime_messages_out_total",
                "Frames queued to clients",
            ),
            http_events: counter(
                &registry,
                "realtime_http_events_total",
                "Events accepted by the HTTP API",
            ),
            webhook_failures: counter(
                &registry,
                "realtime_webhook_failures_total",
                "Webhook deliveries that failed after every retry",
            ),
            webhook_requests: counter(
                &registry,
                "realtime_webhook_requests_total",
                "Webhook requests sent",
            ),
            connections_refused_per_address: counter(
                &registry,
                "realtime_connections_refused_per_address_total",
                "Connections refused because their client address had its maximum open",
            ),
            subscriptions_refused: counter(
                &registry,
                "realtime_subscriptions_refused_total",
                "Subscriptions refused: public channels off, or the connection's maximum of channels",
            ),
            registry,
        }
    }

    /// The registry, for adding an application's own metrics beside these.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding gathered metrics into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}
