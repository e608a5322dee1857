//! The seam between a cluster node and the message bus that links it to the
//! other nodes: Redis pub/sub (`redis://host:port`) or NATS core
//! (`nats://host:port`). A bus only carries opaque payloads to every node
//! subscribed to the cluster's subject (the sender included), and says
//! which nodes have no connection to it any more (a node's process that died
//! closed its connection, which the bus's server sees at once); what the
//! payloads mean, who is alive and what to resend after an outage is the
//! node's business (`cluster/mod.rs`), the same whichever bus carries them.
//!
//! One file per bus (`bus/redis.rs`, `bus/nats.rs`); both follow the same
//! contract ([`Backplane::run`]) and share the helpers below, so the node
//! cannot tell which one it talks to.

mod nats;
mod redis;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::mpsc;
use url::Url;

use realtime_core::BoxFuture;

use super::NodeId;

/// The largest payload a bus carries. NATS servers refuse messages over their
/// `max_payload` (1 MiB by default), so the node keeps well below it, with
/// room for the protocol's own framing and for a server configured lower;
/// Redis would take far more, but both buses keep the same limit so a cluster
/// behaves the same on either. A larger payload handed to a bus is dropped
/// (and reported to [`BusObserver::dropped`]), never split.
pub const MAX_PAYLOAD: usize = 512 * 1024;

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
    /// The answer to an [`Outgoing::Probe`]: those of the probed nodes that
    /// have no connection to the bus (possibly none). A node that stopped
    /// answering but is still connected (a hung process) is not among them.
    Absent(Vec<NodeId>),
}

/// What a node hands its bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A payload for every node subscribed to the subject.
    Payload(Vec<u8>),
    /// Asks which of these nodes are no longer connected to the bus; the
    /// answer comes as [`BusEvent::Absent`], unless the bus is lost meanwhile.
    Probe(Vec<NodeId>),
}

/// The name under which a node is present on the bus for as long as its
/// connection lives (a Redis channel or a NATS subject it subscribes to):
/// what [`Outgoing::Probe`] looks for.
pub fn presence_subject(subject: &str, node: NodeId) -> String {
    format!("{subject}.node.{node:x}")
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
    /// (reconnecting with [`Backoff`] after any loss, forever), on which
    /// `node` is present (see [`presence_subject`]); publishes every payload
    /// taken from `outgoing` on `subject` in the order taken, answers its
    /// probes, and reports to `incoming` every payload received on `subject`
    /// and every change of the connection's state. Payloads taken while not
    /// connected are dropped (and reported to `observer`), never queued
    /// without bound; so are probes.
    fn run(
        self: Box<Self>,
        subject: String,
        node: NodeId,
        outgoing: mpsc::Receiver<Outgoing>,
        incoming: mpsc::UnboundedSender<BusEvent>,
        observer: std::sync::Arc<dyn BusObserver>,
    ) -> BoxFuture<'static, ()>;
}

/// The bus a cluster URL names, not connected yet: `redis://[user:pass@]host:port[/db]`
/// or `nats://[user:pass@]host:port`. Only the URL is checked here; the
/// first connection is made by [`Backplane::run`], which keeps trying while
/// the bus is down, so a node may start before its bus.
pub fn from_url(url: &str) -> Result<Box<dyn Backplane>, BusError> {
    let parsed = Url::parse(url).map_err(|e| BusError::InvalidUrl(e.to_string()))?;
    match parsed.scheme() {
        // rediss:// is refused by the redis crate built without TLS, with a
        // message that says so.
        "redis" | "rediss" => Ok(Box::new(redis::RedisBus::new(url)?)),
        "nats" => Ok(Box::new(nats::NatsBus::new(url)?)),
        other => Err(BusError::UnsupportedScheme(other.to_owned())),
    }
}

/// Runs `work` (a connection attempt, a pause before the next one) while the
/// bus is down: payloads taken from `outgoing` meanwhile are dropped and
/// counted, so the node's queue never backs up behind an absent bus. `None`
/// when `outgoing` or `incoming` closed first: the caller's `run` is over.
async fn while_disconnected<F: Future>(
    work: F,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    incoming: &mpsc::UnboundedSender<BusEvent>,
    observer: &dyn BusObserver,
) -> Option<F::Output> {
    let drop_until_closed = async {
        while let Some(taken) = outgoing.recv().await {
            if let Outgoing::Payload(_) = taken {
                observer.dropped();
            }
        }
    };
    tokio::select! {
        output = work => Some(output),
        () = drop_until_closed => None,
        () = incoming.closed() => None,
    }
}

/// The next item of a stream (both clients hand out `Stream`s), without
/// pulling in futures-util for `StreamExt`.
async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// Whether a payload taken from `outgoing` may be published; one that may
/// not is counted as dropped. Checked by both buses so that a cluster
/// behaves the same on either (see [`MAX_PAYLOAD`]).
fn fits(payload: &[u8], observer: &dyn BusObserver) -> bool {
    if payload.len() > MAX_PAYLOAD {
        tracing::warn!(
            bytes = payload.len(),
            max = MAX_PAYLOAD,
            "cluster payload over the bus limit dropped"
        );
        observer.dropped();
        return false;
    }
    true
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
