//! Prometheus metrics: connections, channels, messages in and out, webhook
//! failures, refusals, served as text at `/metrics`. No metric has a label:
//! nothing a client sends (a channel name, an address) becomes a series, so
//! clients cannot grow the registry.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry, TextEncoder,
};

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
    /// Events of cache channels not kept: the cache was full.
    pub cache_full: IntCounter,
    /// The cluster's bus and peers (all zero on a server alone).
    pub cluster: ClusterMetrics,
}

/// What a node of a cluster counts about the bus and the other nodes.
#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    /// Whether the node is connected to the bus (1) or not (0).
    pub connected: IntGauge,
    /// Nodes this node knows alive, itself included.
    pub nodes: IntGauge,
    /// Nodes forgotten because they were silent past their lease.
    pub nodes_lost: IntCounter,
    /// Round trips of the node's heartbeats through the bus, in seconds.
    pub round_trip: Histogram,
    /// Failed connection attempts, broken connections and unreadable payloads.
    pub bus_errors: IntCounter,
    /// Connections to the bus established again after a loss.
    pub reconnects: IntCounter,
    /// Payloads published on the bus (each carries one or more reports).
    pub payloads_out: IntCounter,
    /// Reports sent to the other nodes (events, counts, members, snapshots).
    pub reports_out: IntCounter,
    /// Reports received from the other nodes.
    pub reports_in: IntCounter,
    /// Reports not sent: the bus was away or slower than the node.
    pub dropped: IntCounter,
    /// Payloads of another node found missing (a snapshot was asked for).
    pub gaps: IntCounter,
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
            cache_full: counter(
                &registry,
                "realtime_cache_full_total",
                "Events of cache channels not kept because the cache was full",
            ),
            cluster: ClusterMetrics::new(&registry),
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

impl ClusterMetrics {
    fn new(registry: &Registry) -> Self {
        let round_trip = Histogram::with_opts(
            HistogramOpts::new(
                "realtime_cluster_bus_round_trip_seconds",
                "Round trips of heartbeats through the cluster's bus",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5,
            ]),
        )
        .unwrap_or_else(|_| unreachable!());
        let _ = registry.register(Box::new(round_trip.clone()));
        ClusterMetrics {
            connected: gauge(
                registry,
                "realtime_cluster_bus_connected",
                "Whether the node is connected to the cluster's bus",
            ),
            nodes: gauge(
                registry,
                "realtime_cluster_nodes",
                "Cluster nodes known alive, this one included",
            ),
            nodes_lost: counter(
                registry,
                "realtime_cluster_nodes_lost_total",
                "Cluster nodes forgotten after being silent past their lease",
            ),
            round_trip,
            bus_errors: counter(
                registry,
                "realtime_cluster_bus_errors_total",
                "Failed bus connections, broken connections and unreadable payloads",
            ),
            reconnects: counter(
                registry,
                "realtime_cluster_bus_reconnects_total",
                "Connections to the bus established again after a loss",
            ),
            payloads_out: counter(
                registry,
                "realtime_cluster_payloads_out_total",
                "Payloads published on the bus",
            ),
            reports_out: counter(
                registry,
                "realtime_cluster_reports_out_total",
                "Reports sent to the other nodes",
            ),
            reports_in: counter(
                registry,
                "realtime_cluster_reports_in_total",
                "Reports received from the other nodes",
            ),
            dropped: counter(
                registry,
                "realtime_cluster_reports_dropped_total",
                "Reports not sent because the bus was away or too slow",
            ),
            gaps: counter(
                registry,
                "realtime_cluster_gaps_total",
                "Payloads of another node found missing",
            ),
        }
    }
}
