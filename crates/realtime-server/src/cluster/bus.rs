//! The seam between a cluster node and the message bus that links it to the
//! other nodes: Redis pub/sub (`redis://host:port`) or NATS core
//! (`nats://host:port`). A bus only carries opaque payloads to every node
//! subscribed to the cluster's subject (the sender included); what they mean,
//! who is alive and what to resend after an outage is the node's business
//! (`cluster/mod.rs`), the same whichever bus carries them.

use std::time::Duration;

use tokio::sync::mpsc;
use url::Url;

use realtime_core::BoxFuture;

/// What a bus reports to its node, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// Connected (or connected again) and subscribed: payloads sent from now
    /// on reach the other nodes.
    Connected,
    /// The connection was lost; payloads are dropped until [`BusEvent::Connected`].
    Disconnected,
    /// A payload some node (this one included) published on the subject.
    Message(Vec<u8>),
}

/// Why a bus could not be set up at all. Losing the connection later is not
/// an error: the bus reconnects by itself and says so with [`BusEvent`]s.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The URL names no bus this server speaks.
    #[error("unsupported cluster URL scheme {0:?} (expected redis:// or nats://)")]
    UnsupportedScheme(String),
    /// The URL is not usable for its bus.
    #[error("invalid cluster URL: {0}")]
    InvalidUrl(String),
}

/// Counters a bus keeps about itself (read by the node's metrics).
pub trait BusObserver: Send + Sync + 'static {
    /// A connection attempt failed, or an established connection broke.
    fn error(&self);
    /// A connection was established again after being lost.
    fn reconnected(&self);
    /// A payload was dropped because the bus was not connected or refused it.
    fn dropped(&self);
}

/// A message bus carrying one cluster's payloads.
pub trait Backplane: Send + 'static {
    /// Runs until `outgoing` is closed: keeps a connection to the bus
    /// (reconnecting with [`Backoff`] after any loss, forever), publishes
    /// every payload taken from `outgoing` on `subject` in the order taken,
    /// and reports to `incoming` every payload received on `subject` and
    /// every change of the connection's state. Payloads taken while not
    /// connected are dropped (and reported to `observer`), never queued
    /// without bound.
    fn run(
        self: Box<Self>,
        subject: String,
        outgoing: mpsc::Receiver<Vec<u8>>,
        incoming: mpsc::UnboundedSender<BusEvent>,
        observer: std::sync::Arc<dyn BusObserver>,
    ) -> BoxFuture<'static, ()>;
}

/// The bus a cluster URL names, not connected yet.
pub fn from_url(url: &str) -> Result<Box<dyn Backplane>, BusError> {
    let parsed = Url::parse(url).map_err(|e| BusError::InvalidUrl(e.to_string()))?;
    match parsed.scheme() {
        "redis" | "rediss" => todo_bus("redis"),
        "nats" => todo_bus("nats"),
        other => Err(BusError::UnsupportedScheme(other.to_owned())),
    }
}

fn todo_bus(scheme: &str) -> Result<Box<dyn Backplane>, BusError> {
    Err(BusError::UnsupportedScheme(scheme.to_owned()))
}

/// Delays between reconnection attempts: doubling from 100 ms to at most
/// 2 s, so a bus that comes back is found again within a few seconds, and one
/// that stays away costs one attempt every 2 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first delay.
    pub const FIRST: Duration = Duration::from_millis(100);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(2);

    /// Back to the first delay (after a successful connection).
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The delay to wait now; the next one is twice as long, up to [`Backoff::MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

/// The largest payload a node publishes: NATS refuses more than 1 MiB by
/// default, and half of that leaves room for any server's settings.
pub const MAX_PAYLOAD: usize = 512 * 1024;
