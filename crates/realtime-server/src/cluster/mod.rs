//! Many realtime-server nodes as one service, linked by a message bus
//! (Redis pub/sub or NATS core, see [`bus`]).
//!
//! Every node keeps its own connections and tells the others, through the
//! bus, what they need to answer for the whole cluster: each event published
//! on it (delivered by every node to its own subscribers), each change of a
//! channel's subscriber count and of a presence member's presence on it, and
//! the terminations of a user's connections. Each node thus holds a view of
//! the others ([`view::RemoteView`]) and answers queries, presence lists and
//! the 100-member limit from it at once, without asking anyone: a dead or
//! slow node cannot hold a query up.
//!
//! Reports are absolute (this channel has 3 subscribers here), sent in
//! order, and numbered per node: a node that sees a gap in another's numbers
//! (a payload the bus dropped) asks it for a snapshot of everything it holds,
//! and a node that connects (at start-up, or when the bus comes back) sends
//! its snapshot and asks for everyone else's. A node that is silent for
//! [`SUSPECT`] is looked for on the bus: if its connection is gone (its
//! process died), it is dead at once; otherwise (hung, or cut off with its
//! connection still open) it is dead once silent for [`LEASE`]. The others
//! then forget what it held, which sends `member_removed` (and the webhooks)
//! for its users who have no connection left anywhere. Webhooks of
//! cluster-wide changes (a channel occupied or vacated, a member added or
//! removed) are sent by one node, the leader (the live node with the
//! smallest id), from its own view, so the cluster sends each once;
//! `client_event` webhooks are sent by the node of the sender.

pub mod bus;
pub mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::registry::App;
use bus::{BusError, BusEvent, BusObserver, Outgoing};
use view::ChannelReport;
pub use view::NodeId;

/// How often a node tells the others it is alive. Two messages a second per
/// node are nothing to a bus, and a dead node is suspected soon after.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long a node may stay silent before the others take it for dead, even
/// though the bus still has its connection (a hung process). Ten heartbeats:
/// a node under load may miss a few, and a dead one is forgotten well within
/// 10 s.
pub const LEASE: Duration = Duration::from_secs(5);

/// How long a node may stay silent before the others ask the bus whether it
/// still has a connection there: one and a half heartbeats, so a live node is
/// asked about only when late (and asking about it is harmless). A node
/// whose connection is gone is dead then: within about [`SUSPECT`] plus
/// [`WATCH`] and a round trip of its last heartbeat, instead of [`LEASE`].
pub const SUSPECT: Duration = Duration::from_millis(750);

/// How often a node looks for silent peers.
pub const WATCH: Duration = Duration::from_millis(100);

/// How long a silent peer found present on the bus is left alone before it
/// is asked about again.
const PROBE_AGAIN: Duration = Duration::from_millis(500);

/// Nodes forgotten lately, remembered so that one coming back (a hung
/// process resumed, a network healed) is a change the cluster announces.
const FORGOTTEN_KEPT: usize = 256;

/// Whether a change that another node's report makes to the cluster is sent
/// as a webhook by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// No: this node is only learning what the peer holds (the cluster knew
    /// it already, and its leader announced it then).
    No,
    /// If this node leads the app: the usual case, so the cluster sends each
    /// change once.
    IfLeading,
    /// Yes, leading or not: the peer is back after this node, then leading,
    /// announced its departure. The returning peer may lead again at once
    /// (it has the smallest id) and sees nothing new; this node is the one
    /// that knows what came back.
    Anyway,
}

/// Reports waiting for the bus; beyond, reports are dropped and the node
/// sends a snapshot once it catches up, so a bus slower than the node's
/// clients costs completeness for a moment, never unbounded memory.
pub const QUEUE_CAPACITY: usize = 65_536;

/// Reports sent as one bus payload at most, so one payload stays well under
/// [`bus::MAX_PAYLOAD`] in the usual case (larger ones are split).
const BATCH_REPORTS: usize = 256;

/// What a node tells the others. Field names are short: every event
/// published crosses the bus in one of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum Report {
    /// A node connected: every node sends it a snapshot.
    #[serde(rename = "hello")]
    Hello,
    /// A node is alive; `at` (its clock, in microseconds) times the bus round trip.
    #[serde(rename = "beat")]
    Heartbeat {
        /// When it was sent, on the sender's clock.
        at: u64,
    },
    /// A node asks for snapshots: of one node (`node`), or of all.
    #[serde(rename = "sync")]
    SyncRequest {
        /// The node asked, or every node.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<NodeId>,
    },
    /// An event for the subscribers of `channel` but the socket `except`.
    #[serde(rename = "pub")]
    Publish {
        /// The app id.
        a: Arc<str>,
        /// The channel.
        c: String,
        /// The frame, serialised once by the publishing node.
        f: String,
        /// The socket id excluded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        x: Option<String>,
    },
    /// A channel's subscribers on the sender.
    #[serde(rename = "count")]
    Subscribers {
        /// The app id.
        a: Arc<str>,
        /// The channel.
        c: String,
        /// Its subscribers on the sender.
        n: usize,
    },
    /// Whether a presence member has a connection on the sender.
    #[serde(rename = "member")]
    Member {
        /// The app id.
        a: Arc<str>,
        /// The channel.
        c: String,
        /// The user id.
        u: String,
        /// Whether the member has a connection on the sender.
        on: bool,
        /// Its `user_info`, when present with one. (Kept apart from `on`: a
        /// member may be present with no `user_info`, and `null` cannot say
        /// both "no info" and "gone".)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        i: Option<Value>,
    },
    /// Close every connection of a user.
    #[serde(rename = "terminate")]
    Terminate {
        /// The app id.
        a: Arc<str>,
        /// The user id.
        u: String,
    },
    /// Part of a snapshot of one app's state on the sender.
    #[serde(rename = "snap")]
    Snapshot {
        /// The app id.
        a: Arc<str>,
        /// The part's number, from 0.
        part: u32,
        /// Whether it is the last part.
        last: bool,
        /// The channels in this part.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        channels: Vec<ChannelReport>,
        /// Signed-in users in this part.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        users: Vec<String>,
    },
    /// Whether a user has a signed-in connection on the sender.
    #[serde(rename = "user")]
    User {
        /// The app id.
        a: Arc<str>,
        /// The user id.
        u: String,
        /// Signed in (true) or no longer (false).
        on: bool,
    },
    /// A cache channel's last event on the sender (part of a snapshot).
    #[serde(rename = "cached")]
    Cached {
        /// The app id.
        a: Arc<str>,
        /// The channel.
        c: String,
        /// The frame.
        f: String,
        /// Milliseconds it has left to live.
        ms: u64,
    },
    /// The sender is shutting down: forget it now rather than after [`LEASE`].
    #[serde(rename = "bye")]
    Leaving,
}

/// One bus payload: reports of one node, numbered.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The sender.
    n: NodeId,
    /// The payload's number on the sender, from 1 after each connection.
    s: u64,
    /// The reports, in the order they were made.
    r: Vec<Report>,
}

/// An app's handle on its node: where its reports go.
#[derive(Debug)]
pub struct ClusterLink {
    node: NodeId,
    queue: mpsc::Sender<Report>,
    /// A report was dropped (queue full): a snapshot is due.
    lost: AtomicBool,
    /// Notified once the goodbye went to the bus.
    left: tokio::sync::Notify,
    /// The node's tasks (bus and node), for [`ClusterLink::halt`].
    tasks: parking_lot::Mutex<Vec<tokio::task::AbortHandle>>,
    metrics: Metrics,
}

impl ClusterLink {
    /// A link to no bus, whose reports are left in the returned queue (for
    /// tests of a node's state without a bus).
    #[cfg(test)]
    pub(crate) fn detached(node: NodeId) -> (Arc<Self>, mpsc::Receiver<Report>) {
        let (queue, reports) = mpsc::channel(QUEUE_CAPACITY);
        let link = Arc::new(ClusterLink {
            node,
            queue,
            lost: AtomicBool::new(false),
            left: tokio::sync::Notify::new(),
            tasks: parking_lot::Mutex::new(Vec::new()),
            metrics: Metrics::new(),
        });
        (link, reports)
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Says goodbye to the other nodes, after every report queued so far,
    /// and waits (briefly) until it left.
    pub async fn leave(&self) {
        if self.queue.send(Report::Leaving).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.left.notified()).await;
    }

    /// Stops this node's part in the cluster at once, without a goodbye, as
    /// a crash would: the others forget it when its lease lapses. Its apps
    /// go on serving their own clients alone.
    pub fn halt(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }

    /// Queues a report for the other nodes. Called under the app's lock for
    /// reports of state, so they leave in the order the changes happened.
    pub fn report(&self, report: Report) {
        if self.queue.try_send(report).is_err() {
            self.metrics.cluster.dropped.inc();
            self.lost.store(true, Ordering::Relaxed);
        }
    }
}

/// Counts what the bus reports of itself.
#[derive(Debug)]
struct Observer(Metrics);

impl BusObserver for Observer {
    fn error(&self) {
        self.0.cluster.bus_errors.inc();
    }

    fn reconnected(&self) {
        self.0.cluster.reconnects.inc();
    }

    fn dropped(&self) {
        self.0.cluster.dropped.inc();
    }
}

/// A node about to join the cluster: its link, to give to its apps, and what
/// [`Joining::start`] needs once they exist.
#[derive(Debug)]
pub struct Joining {
    link: Arc<ClusterLink>,
    queue: mpsc::Receiver<Report>,
    bus: Box<dyn bus::Backplane>,
    subject: String,
}

impl std::fmt::Debug for dyn bus::Backplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backplane")
    }
}

impl Joining {
    /// A node of the cluster whose bus `url` names (`redis://host:port` or
    /// `nats://host:port`). Nothing connects until [`Joining::start`].
    pub fn new(url: &str, metrics: &Metrics) -> Result<Self, BusError> {
        let bus = bus::from_url(url)?;
        let (sender, queue) = mpsc::channel(QUEUE_CAPACITY);
        // Random ids: a node restarted on the same port is a new node, and
        // the others forget the old one when its lease lapses.
        let node = rand::random::<u64>() >> 1;
        let link = Arc::new(ClusterLink {
            node,
            queue: sender,
            lost: AtomicBool::new(false),
            left: tokio::sync::Notify::new(),
            tasks: parking_lot::Mutex::new(Vec::new()),
            metrics: metrics.clone(),
        });
        metrics.cluster.nodes.set(1);
        Ok(Joining {
            link,
            queue,
            bus,
            subject: "realtime-cluster".to_owned(),
        })
    }

    /// The link each app of this node reports through.
    pub fn link(&self) -> Arc<ClusterLink> {
        self.link.clone()
    }

    /// Connects to the bus and runs the node, in tasks of the current tokio
    /// runtime, for as long as `apps` live.
    pub fn start(self, apps: Vec<Arc<App>>, metrics: Metrics) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("a cluster node must be started inside a tokio runtime: not joining");
            return;
        };
        let (outgoing, bus_queue) = mpsc::channel(1024);
        let node_id = self.link.node;
        let (incoming_sender, incoming) = mpsc::unbounded_channel();
        let observer = Arc::new(Observer(metrics.clone()));
        let bus = runtime.spawn(self.bus.run(
            self.subject,
            node_id,
            bus_queue,
            incoming_sender,
            observer,
        ));
        let node = Node {
            link: self.link,
            apps: apps
                .into_iter()
                .map(|app| (Arc::from(app.config().credentials.app_id()), app))
                .collect(),
            metrics,
            connected: false,
            probe_after: Instant::now(),
            last_beat: Instant::now(),
            forgotten: Default::default(),
            seq: 0,
            peers: HashMap::new(),
            parts: HashMap::new(),
            started: Instant::now(),
            outgoing,
        };
        let link = node.link.clone();
        let node = runtime.spawn(node.run(self.queue, incoming));
        link.tasks
            .lock()
            .extend([bus.abort_handle(), node.abort_handle()]);
    }
}

/// A snapshot's channels and signed-in users, gathered part by part.
type SnapshotParts = (Vec<ChannelReport>, Vec<String>);

/// What a node knows of another.
#[derive(Debug)]
struct Peer {
    last_seq: u64,
    last_seen: Instant,
    /// The apps it reported on that this node serves too: nodes of other
    /// clusters may share the bus, and only a node serving an app may lead it.
    apps: std::collections::HashSet<Arc<str>>,
    /// The apps whose snapshot from this peer was applied. Until then,
    /// what the peer reports is news to this node only, not a change of the
    /// cluster: it sends no webhook (the node that led then did). Except
    /// for a peer this node had forgotten (`returning`): what it holds left
    /// the cluster then, and comes back now.
    synced: std::collections::HashSet<Arc<str>>,
    /// This node had forgotten it (see `synced`).
    returning: bool,
    /// The apps this node led when it forgot the peer: it announces what the
    /// peer's first snapshot of each brings back ([`Announce::Anyway`]).
    announces_return: std::collections::HashSet<Arc<str>>,
    /// When the bus was last asked whether it is still connected.
    probed_at: Option<Instant>,
}

/// The task that carries an app's reports to the bus and the others'
/// reports to the apps.
struct Node {
    link: Arc<ClusterLink>,
    apps: HashMap<Arc<str>, Arc<App>>,
    metrics: Metrics,
    connected: bool,
    /// Silent peers are not looked for on the bus before then (see `on_watch`).
    probe_after: Instant,
    /// When the last heartbeat was sent: a node that finds it much longer
    /// ago than [`HEARTBEAT`] was itself stalled (see `on_beat`).
    last_beat: Instant,
    /// The last [`FORGOTTEN_KEPT`] nodes forgotten, with the apps this node
    /// led once they were gone.
    forgotten: std::collections::VecDeque<(NodeId, Vec<Arc<str>>)>,
    seq: u64,
    peers: HashMap<NodeId, Peer>,
    /// Snapshot parts received so far, by sender and app.
    parts: HashMap<(NodeId, Arc<str>), SnapshotParts>,
    started: Instant,
    outgoing: mpsc::Sender<Outgoing>,
}

impl Node {
    async fn run(
        mut self,
        mut queue: mpsc::Receiver<Report>,
        mut incoming: mpsc::UnboundedReceiver<BusEvent>,
    ) {
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = tokio::time::interval(WATCH);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                report = queue.recv() => {
                    let Some(report) = report else { break };
                    let mut batch = vec![report];
                    while batch.len() < BATCH_REPORTS {
                        match queue.try_recv() {
                            Ok(report) => batch.push(report),
                            Err(_) => break,
                        }
                    }
                    let leaving = batch.contains(&Report::Leaving);
                    self.send(batch).await;
                    if leaving && !self.connected {
                        // Nobody to tell: done.
                        self.link.left.notify_one();
                    }
                    // Otherwise the goodbye has left when it comes back
                    // from the bus (see `on_payload`); the node runs on
                    // until the process ends, so the bus task is not told
                    // to stop with the goodbye still in its hands.
                }
                event = incoming.recv() => {
                    let Some(event) = event else { break };
                    self.on_bus(event).await;
                }
                _ = beat.tick() => self.on_beat().await,
                _ = watch.tick() => self.on_watch().await,
            }
        }
    }

    /// Sends reports in as few payloads as fit, or drops them when the bus
    /// is away (the snapshot sent on reconnection replaces them).
    async fn send(&mut self, reports: Vec<Report>) {
        if !self.connected {
            self.metrics.cluster.dropped.inc_by(reports.len() as u64);
            return;
        }
        for envelope in self.envelopes(reports) {
            let Ok(payload) = serde_json::to_vec(&envelope) else {
                continue;
            };
            self.metrics.cluster.payloads_out.inc();
            self.metrics
                .cluster
                .reports_out
                .inc_by(envelope.r.len() as u64);
            if self
                .outgoing
                .send(Outgoing::Payload(payload))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Splits reports into numbered envelopes under the bus's payload size.
    fn envelopes(&mut self, reports: Vec<Report>) -> Vec<Envelope> {
        let mut envelopes = Vec::new();
        let mut current = Vec::new();
        let mut size = 0;
        for report in reports {
            let report_size = estimated_size(&report);
            if !current.is_empty() && size + report_size > bus::MAX_PAYLOAD / 2 {
                envelopes.push(std::mem::take(&mut current));
                size = 0;
            }
            size += report_size;
            current.push(report);
        }
        if !current.is_empty() {
            envelopes.push(current);
        }
        envelopes
            .into_iter()
            .map(|r| {
                self.seq += 1;
                Envelope {
                    n: self.link.node,
                    s: self.seq,
                    r,
                }
            })
            .collect()
    }

    async fn on_bus(&mut self, event: BusEvent) {
        match event {
            BusEvent::Connected => {
                self.connected = true;
                self.metrics.cluster.connected.set(1);
                // Peers could not be heard while the bus was away: their
                // leases start again now, and they are given the time to
                // reconnect (each on its own backoff) before a peer not
                // back yet is taken for dead.
                let now = Instant::now();
                if !self.peers.is_empty() {
                    self.probe_after = now + LEASE;
                }
                for peer in self.peers.values_mut() {
                    peer.last_seen = now;
                }
                self.link.report(Report::Hello);
                self.snapshot_all();
            }
            BusEvent::Disconnected => {
                self.connected = false;
                self.metrics.cluster.connected.set(0);
            }
            BusEvent::Message(payload) => self.on_payload(&payload),
            BusEvent::Absent(nodes) => self.on_absent(nodes),
        }
    }

    fn on_payload(&mut self, payload: &[u8]) {
        let Ok(envelope) = serde_json::from_slice::<Envelope>(payload) else {
            self.metrics.cluster.bus_errors.inc();
            return;
        };
        if envelope.n == self.link.node {
            for report in &envelope.r {
                match report {
                    Report::Heartbeat { at } => {
                        let now = self.started.elapsed().as_micros() as u64;
                        let round_trip = now.saturating_sub(*at) as f64 / 1e6;
                        self.metrics.cluster.round_trip.observe(round_trip);
                    }
                    // Back from the bus: every node subscribed has it.
                    Report::Leaving => self.link.left.notify_one(),
                    _ => {}
                }
            }
            return;
        }
        self.metrics
            .cluster
            .reports_in
            .inc_by(envelope.r.len() as u64);
        let now = Instant::now();
        let says_hello = envelope.r.first() == Some(&Report::Hello);
        match self.peers.get_mut(&envelope.n) {
            Some(peer) => {
                if envelope.s <= peer.last_seq && !says_hello {
                    // Older than what was applied already.
                    return;
                }
                if envelope.s != peer.last_seq + 1 && !says_hello {
                    self.metrics.cluster.gaps.inc();
                    self.link.report(Report::SyncRequest {
                        node: Some(envelope.n),
                    });
                }
                peer.last_seq = envelope.s;
                peer.last_seen = now;
            }
            None => {
                let forgotten = self
                    .forgotten
                    .iter()
                    .position(|(node, _)| *node == envelope.n)
                    .and_then(|at| self.forgotten.remove(at));
                self.peers.insert(
                    envelope.n,
                    Peer {
                        last_seq: envelope.s,
                        last_seen: now,
                        apps: Default::default(),
                        synced: Default::default(),
                        returning: forgotten.is_some(),
                        announces_return: forgotten
                            .map(|(_, led)| led.into_iter().collect())
                            .unwrap_or_default(),
                        probed_at: None,
                    },
                );
                if !says_hello {
                    // Joined after it: its snapshot tells what it holds.
                    self.link.report(Report::SyncRequest {
                        node: Some(envelope.n),
                    });
                }
                self.peers_changed();
            }
        }
        for report in envelope.r {
            self.note_app(envelope.n, &report);
            self.apply(envelope.n, report);
        }
    }

    /// Notes that a peer serves the app a report is about, if this node
    /// serves it too.
    fn note_app(&mut self, from: NodeId, report: &Report) {
        let app = match report {
            Report::Publish { a, .. }
            | Report::User { a, .. }
            | Report::Cached { a, .. }
            | Report::Subscribers { a, .. }
            | Report::Member { a, .. }
            | Report::Terminate { a, .. }
            | Report::Snapshot { a, .. } => a,
            _ => return,
        };
        let Some((key, _)) = self.apps.get_key_value(app) else {
            return;
        };
        let newly = self
            .peers
            .get_mut(&from)
            .is_some_and(|peer| peer.apps.insert(key.clone()));
        if newly {
            self.peers_changed();
        }
    }

    fn apply(&mut self, from: NodeId, report: Report) {
        match report {
            Report::Hello => self.snapshot_all(),
            Report::Heartbeat { .. } => {}
            Report::SyncRequest { node } => {
                if node.is_none_or(|n| n == self.link.node) {
                    self.snapshot_all();
                }
            }
            Report::Publish { ref a, .. }
            | Report::User { ref a, .. }
            | Report::Cached { ref a, .. }
            | Report::Subscribers { ref a, .. }
            | Report::Member { ref a, .. }
            | Report::Terminate { ref a, .. } => {
                if let Some(app) = self.apps.get(a).cloned() {
                    let announce = self.announce(from, a);
                    apply_to_app(&app, from, report, announce);
                }
            }
            Report::Snapshot {
                a,
                part,
                last,
                channels,
                users,
            } => {
                let key = (from, a);
                let held = self.parts.entry(key.clone()).or_default();
                if part == 0 {
                    *held = Default::default();
                }
                held.0.extend(channels);
                held.1.extend(users);
                if last {
                    let (channels, users) = self.parts.remove(&key).unwrap_or_default();
                    let mut announce = self.announce(from, &key.1);
                    if let Some(peer) = self.peers.get_mut(&from) {
                        if peer.announces_return.remove(&key.1) {
                            announce = Announce::Anyway;
                        }
                    }
                    if let Some(app) = self.apps.get(&key.1) {
                        app.apply_peer_snapshot(from, &channels, &users, announce);
                    }
                    if let Some(peer) = self.peers.get_mut(&from) {
                        peer.synced.insert(key.1);
                    }
                }
            }
            Report::Leaving => self.forget(from),
        }
    }

    async fn on_beat(&mut self) {
        let now = Instant::now();
        let stalled = now.duration_since(self.last_beat) > LEASE / 2;
        self.last_beat = now;
        if !self.connected {
            return;
        }
        if stalled {
            // This node was stalled (stopped, or starved of CPU), not its
            // peers: they were not heard because it was not listening. Their
            // leases start again now; one that died meanwhile is still found
            // gone by the bus (`on_watch`).
            tracing::warn!(
                "cluster node stalled past half a lease: the others' leases start again"
            );
            for peer in self.peers.values_mut() {
                peer.last_seen = now;
            }
        }
        let at = self.started.elapsed().as_micros() as u64;
        self.send(vec![Report::Heartbeat { at }]).await;
        let dead: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.last_seen.elapsed() > LEASE)
            .map(|(node, _)| *node)
            .collect();
        for node in dead {
            self.forget_lost(node, "cluster node silent past its lease: forgotten");
        }
        if self.link.lost.swap(false, Ordering::Relaxed) {
            self.snapshot_all();
        }
    }

    /// Asks the bus about peers silent for [`SUSPECT`]. Not in the first
    /// [`LEASE`] after this node reconnected: after the bus came back, the
    /// others reconnect one by one, and a peer not back yet is absent
    /// without being dead.
    async fn on_watch(&mut self) {
        let now = Instant::now();
        if !self.connected || now < self.probe_after {
            return;
        }
        let mut suspects = Vec::new();
        for (node, peer) in &mut self.peers {
            let silent = now.duration_since(peer.last_seen) > SUSPECT;
            let due = peer
                .probed_at
                .is_none_or(|at| now.duration_since(at) >= PROBE_AGAIN);
            if silent && due {
                peer.probed_at = Some(now);
                suspects.push(*node);
            }
        }
        if !suspects.is_empty() {
            let _ = self.outgoing.send(Outgoing::Probe(suspects)).await;
        }
    }

    /// Forgets the peers the bus says have no connection any more, unless
    /// they spoke since they were asked about.
    fn on_absent(&mut self, nodes: Vec<NodeId>) {
        if !self.connected {
            return;
        }
        for node in nodes {
            let gone = self
                .peers
                .get(&node)
                .is_some_and(|peer| peer.probed_at.is_some_and(|at| peer.last_seen < at));
            if gone {
                self.forget_lost(node, "cluster node silent and gone from the bus: forgotten");
            }
        }
    }

    /// Forgets a node that left without a goodbye, saying so (`why`) if it
    /// served an app of this one: a node of another cluster on the same bus
    /// is no loss of ours.
    fn forget_lost(&mut self, node: NodeId, why: &str) {
        if self.peers.get(&node).is_some_and(|p| !p.apps.is_empty()) {
            tracing::warn!(node = format!("{node:x}"), "{why}");
            self.metrics.cluster.nodes_lost.inc();
        }
        self.forget(node);
    }

    /// Whether this node sends the webhooks of what a peer's report about
    /// an app changes (see [`Peer::synced`]).
    fn announce(&self, peer: NodeId, app: &str) -> Announce {
        match self.peers.get(&peer) {
            Some(p) if p.returning || p.synced.contains(app) => Announce::IfLeading,
            _ => Announce::No,
        }
    }

    /// Forgets everything a node held: it is gone.
    fn forget(&mut self, node: NodeId) {
        let known = self.peers.remove(&node).is_some();
        self.parts.retain(|(from, _), _| *from != node);
        // Leadership first: if the node that is gone led, its successor
        // sends the webhooks of what the gone node held.
        self.peers_changed();
        for app in self.apps.values() {
            app.apply_peer_snapshot(node, &[], &[], Announce::IfLeading);
        }
        if known {
            let led = self
                .apps
                .iter()
                .filter(|(_, app)| app.is_cluster_leader())
                .map(|(id, _)| id.clone())
                .collect();
            if self.forgotten.len() == FORGOTTEN_KEPT {
                self.forgotten.pop_front();
            }
            self.forgotten.push_back((node, led));
        }
    }

    /// Who leads each app (the live node with the smallest id among those
    /// serving it), and how many nodes share an app with this one.
    fn peers_changed(&self) {
        for (id, app) in &self.apps {
            let leads = self
                .peers
                .iter()
                .filter(|(_, peer)| peer.apps.contains(id))
                .all(|(node, _)| *node > self.link.node);
            app.set_cluster_leader(leads);
        }
        let sharing = self.peers.values().filter(|p| !p.apps.is_empty()).count();
        self.metrics.cluster.nodes.set(sharing as i64 + 1);
    }

    /// Queues a snapshot of every app, each taken under its app's lock so it
    /// is in order with the app's reports.
    fn snapshot_all(&self) {
        for app in self.apps.values() {
            app.report_snapshot();
        }
    }
}

/// Applies another node's report about one app's state or events to this
/// node's app (node-level reports are the node's own business).
/// `announce`: whether changes to the cluster are webhooks (see
/// [`Peer::synced`]).
pub(crate) fn apply_to_app(app: &App, from: NodeId, report: Report, announce: Announce) {
    match report {
        Report::Publish { c, f, x, .. } => {
            app.deliver(&c, &f.into(), x.as_deref());
        }
        Report::Cached { c, f, ms, .. } => app.fill_cache(&c, &f, Duration::from_millis(ms)),
        Report::Subscribers { c, n, .. } => app.apply_peer_subscribers(from, &c, n, announce),
        Report::Member { c, u, on, i, .. } => {
            app.apply_peer_member(from, &c, &u, on.then_some(i), announce)
        }
        Report::Terminate { u, .. } => {
            app.terminate_local(&u);
        }
        Report::Snapshot {
            channels, users, ..
        } => app.apply_peer_snapshot(from, &channels, &users, announce),
        Report::User { u, on, .. } => app.apply_peer_user(from, &u, on),
        Report::Hello | Report::Heartbeat { .. } | Report::SyncRequest { .. } | Report::Leaving => {
        }
    }
}

/// Roughly how many bytes a report takes on the bus.
fn estimated_size(report: &Report) -> usize {
    match report {
        Report::Publish { c, f, x, .. } => {
            // A frame is JSON inside JSON: its quotes get escaped.
            48 + c.len() + f.len() * 5 / 4 + x.as_ref().map_or(0, String::len)
        }
        Report::Snapshot {
            channels, users, ..
        } => {
            64 + channels.iter().map(channel_size).sum::<usize>()
                + users.iter().map(|u| u.len() + 4).sum::<usize>()
        }
        Report::Member { c, u, i, .. } => 64 + c.len() + u.len() + info_size(i.as_ref()),
        _ => 64,
    }
}

fn info_size(info: Option<&Value>) -> usize {
    info.map_or(4, |i| i.to_string().len())
}

fn channel_size(channel: &ChannelReport) -> usize {
    32 + channel.channel.len()
        + channel
            .members
            .iter()
            .map(|(u, i)| 8 + u.len() + info_size(i.as_ref()))
            .sum::<usize>()
}

/// Splits a snapshot of one app's `channels` and signed-in `users` into
/// reports that each fit a payload.
pub fn snapshot_reports(
    app: Arc<str>,
    channels: Vec<ChannelReport>,
    users: Vec<String>,
) -> Vec<Report> {
    let mut parts: Vec<(Vec<ChannelReport>, Vec<String>)> = vec![Default::default()];
    let mut size = 0;
    let mut room = |item_size: usize, parts: &mut Vec<(Vec<ChannelReport>, Vec<String>)>| {
        let started = parts
            .last()
            .is_some_and(|(c, u)| !c.is_empty() || !u.is_empty());
        if size + item_size > bus::MAX_PAYLOAD / 2 && started {
            parts.push(Default::default());
            size = 0;
        }
        size += item_size;
    };
    for channel in channels {
        room(channel_size(&channel), &mut parts);
        if let Some(part) = parts.last_mut() {
            part.0.push(channel);
        }
    }
    for user in users {
        room(user.len() + 4, &mut parts);
        if let Some(part) = parts.last_mut() {
            part.1.push(user);
        }
    }
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(n, (channels, users))| Report::Snapshot {
            a: app.clone(),
            part: n as u32,
            last: n + 1 == count,
            channels,
            users,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(report: Report) -> Report {
        let text = serde_json::to_string(&report).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Report::Hello)
    }

    #[test]
    fn a_member_present_with_or_without_user_info_or_gone_survives_the_wire() {
        for (on, i) in [
            (true, None),
            (true, Some(json!({ "name": "ann" }))),
            (false, None),
        ] {
            let report = Report::Member {
                a: "1".into(),
                c: "presence-x".into(),
                u: "ann".into(),
                on,
                i,
            };
            assert_eq!(round_trip(report.clone()), report);
        }
    }

    #[test]
    fn a_large_snapshot_is_split_into_parts_that_fit_a_payload() {
        let channels: Vec<ChannelReport> = (0..5_000)
            .map(|n| ChannelReport {
                channel: format!("presence-room-{n}"),
                subscribers: 3,
                members: vec![(
                    format!("user-{n}"),
                    Some(json!({ "name": "x".repeat(100) })),
                )],
            })
            .collect();
        let users: Vec<String> = (0..20_000).map(|n| format!("user-{n}")).collect();
        let parts = snapshot_reports("1".into(), channels, users);
        assert!(parts.len() > 1);
        let mut seen_channels = 0;
        let mut seen_users = 0;
        for (n, part) in parts.iter().enumerate() {
            let size = serde_json::to_vec(part)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            assert!(size < bus::MAX_PAYLOAD, "part {n}: {size} bytes");
            if let Report::Snapshot {
                part,
                last,
                channels,
                users,
                ..
            } = part
            {
                assert_eq!(*part as usize, n);
                assert_eq!(*last, n + 1 == parts.len());
                seen_channels += channels.len();
                seen_users += users.len();
            }
        }
        assert_eq!((seen_channels, seen_users), (5_000, 20_000));
    }
}
