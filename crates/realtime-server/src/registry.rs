//! The shared state of one app: its connections, channels, presence members
//! and signed-in users (with their watchlists), and the fan-out of events to
//! subscribers. In a cluster it also holds what the other nodes reported
//! ([`RemoteView`]) and answers for the whole cluster from both; the
//! reports of its own changes leave through its [`ClusterLink`].
//!
//! Every change goes through [`App`]'s methods under one lock, so channel
//! occupancy and presence membership are always consistent with each other;
//! frames are serialised once and shared by every recipient. No call holds
//! the lock for long: a leaving connection lets go of its channels a step at
//! a time ([`LEAVE_STEP`]).

use std::collections::{hash_set, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytestring::ByteString;
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use realtime_core::{ChannelInfo, ChannelKind, WebhookEvent};
use serde_json::{json, Value};

use crate::cache::EventCache;
use crate::cluster::view::{
    ChannelReport, MemberChange, RemoteChannel, RemoteView, Transition, UserChange,
};
use crate::cluster::{Announce, ClusterLink, NodeId, Report};
use crate::config::AppConfig;
use crate::metrics::Metrics;
use crate::outbox::{
    AddressConnections, AddressSlot, OpenConnections, Outbound, OutboxReceiver, OutboxSender,
    TextFrame, TrySendError,
};
use crate::protocol;
use crate::webhooks::WebhookQueue;

/// Frames waiting for one connection; a client that falls this far behind is
/// disconnected rather than allowed to grow the server's memory.
pub const OUTBOX_CAPACITY: usize = 512;

/// Channels a leaving connection leaves per acquisition of the app's lock.
/// Between steps the lock is free for everyone else, so a connection with
/// many channels delays another client's call by one step at most (a few
/// hundred microseconds), not by its whole teardown.
pub const LEAVE_STEP: usize = 256;

/// Time between two steps of the teardowns in progress: at most
/// [`LEAVE_STEP`] channels per millisecond, so 10,000 channels take about
/// 40 ms (their `member_removed` and `channel_vacated` come that much later;
/// webhooks wait seconds anyway). Nobody waits for this work, so it is spread
/// out: a connection with many channels costs the others neither the lock
/// nor, on a busy machine, the CPU they need meanwhile.
pub const TEARDOWN_PACE: Duration = Duration::from_millis(1);

/// How often channels whose subscriber count changed are looked at: the
/// first change after a quiet spell is told within this.
pub const COUNT_TICK: Duration = Duration::from_millis(100);

/// The least time between two `subscription_count` events of one channel, so
/// a burst of joins sends a few events, not one per join.
pub const COUNT_INTERVAL: Duration = Duration::from_secs(1);

/// A presence member: one user, on one or more connections.
#[derive(Debug, Clone)]
struct Member {
    info: Option<Value>,
    connections: usize,
}

/// A channel's subscriber: where its frames go, and its presence user id
/// on presence channels. The outbox is kept here so that a fan-out reads
/// only the channel.
#[derive(Debug)]
struct Subscriber {
    outbox: OutboxSender,
    user_id: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Channel {
    /// Subscribed sockets.
    subscribers: HashMap<Arc<str>, Subscriber>,
    /// Presence members by user id (presence channels only).
    members: HashMap<Arc<str>, Member>,
}

#[derive(Debug)]
struct Connection {
    outbox: OutboxSender,
    channels: HashSet<Arc<str>>,
    user_id: Option<Arc<str>>,
    /// Its place among its address's, shared with its socket: given back
    /// once both the socket has ended and its teardown is done.
    address: Option<Arc<AddressSlot>>,
    /// The users whose coming and going it is told (its sign-in's watchlist).
    watchlist: Vec<Arc<str>>,
}

#[derive(Debug, Default)]
struct State {
    connections: HashMap<Arc<str>, Connection>,
    channels: HashMap<Arc<str>, Channel>,
    users: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// What the cluster's other nodes hold (empty on a server alone).
    remote: RemoteView,
    /// The connections watching each user (watchlists of signed-in users).
    watchers: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeError {
    /// The connection is gone.
    UnknownConnection,
    /// The presence channel has its maximum of members.
    PresenceFull(usize),
    /// The connection has its maximum of channels.
    TooManyChannels(usize),
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// The app has its `max_connections` open.
    OverCapacity,
    /// The client's address has its `max_connections_per_address` open.
    TooManyFromAddress,
}

/// A connection already gone from its app but still among the subscribers
/// of the channels it has not left yet (see [`App::begin_removal`]).
#[derive(Debug)]
pub struct Removal {
    socket_id: Arc<str>,
    channels: hash_set::IntoIter<Arc<str>>,
    /// Held until every channel is left (see [`Connection::address`]).
    _address: Option<Arc<AddressSlot>>,
}

impl Removal {
    /// Whether every channel was left.
    pub fn is_done(&self) -> bool {
        self.channels.len() == 0
    }
}

/// One app's live state.
#[derive(Debug)]
pub struct App {
    config: AppConfig,
    /// The app id, shared by the reports to the cluster.
    id: Arc<str>,
    /// The node's link to the other nodes of its cluster, if in one.
    cluster: Option<Arc<ClusterLink>>,
    /// Whether this node sends the webhooks of the app's cluster-wide
    /// changes (always, on a server alone).
    leads: std::sync::atomic::AtomicBool,
    state: RwLock<State>,
    /// Open sockets, registered or not: what `max_connections` limits.
    open: OpenConnections,
    /// The same, by client address: what `max_connections_per_address` limits.
    addresses: AddressConnections,
    next_socket: AtomicU64,
    metrics: Metrics,
    webhooks: Option<WebhookQueue>,
    /// The last event of each cache channel.
    cache: Mutex<EventCache>,
    /// Teardowns begun and not finished, continued one step per
    /// [`TEARDOWN_PACE`] by the app's pacer ([`App::start_background`]) and
    /// finished at once by [`App::close_all`].
    removals: Mutex<VecDeque<Removal>>,
    /// Wakes the pacer, once it runs.
    pacer: OnceLock<Arc<tokio::sync::Notify>>,
    /// Channels whose subscriber count changed and when each last told its
    /// subscribers (`subscription_count` on).
    counts: Mutex<CountChanges>,
    /// Called between the steps of a connection's teardown, lock released.
    #[cfg(test)]
    between_steps: std::sync::OnceLock<tests::StepHook>,
}

impl App {
    /// A new app with no connection.
    pub fn new(config: AppConfig, metrics: Metrics, webhooks: Option<WebhookQueue>) -> Self {
        App {
            id: Arc::from(config.credentials.app_id()),
            cache: Mutex::new(EventCache::new(
                config.cache_ttl,
                config.max_cached_channels,
            )),
            config,
            cluster: None,
            leads: std::sync::atomic::AtomicBool::new(true),
            state: RwLock::new(State::default()),
            open: OpenConnections::default(),
            addresses: AddressConnections::default(),
            next_socket: AtomicU64::new(rand::random::<u32>() as u64),
            metrics,
            webhooks,
            removals: Mutex::new(VecDeque::new()),
            pacer: OnceLock::new(),
            counts: Mutex::new(CountChanges::default()),
            #[cfg(test)]
            between_steps: std::sync::OnceLock::new(),
        }
    }

    /// The same app as a node of a cluster: what it holds is reported to
    /// the other nodes through `link`, and it answers for the whole cluster.
    pub fn with_cluster(mut self, link: Arc<ClusterLink>) -> Self {
        self.cluster = Some(link);
        self
    }

    /// Makes this node the one that sends the webhooks of the app's
    /// cluster-wide changes, or not (its cluster node decides).
    pub fn set_cluster_leader(&self, leads: bool) {
        self.leads.store(leads, Ordering::Relaxed);
    }

    /// Whether this node sends the app's webhooks of cluster-wide changes.
    pub fn is_cluster_leader(&self) -> bool {
        self.leads.load(Ordering::Relaxed)
    }

    /// The app's settings.
    pub fn config(&self) -> &AppConfig {
        &self.config
    }

    /// The app's webhook queue, if it sends webhooks.
    pub fn webhooks(&self) -> Option<&WebhookQueue> {
        self.webhooks.as_ref()
    }

    /// The metrics this app reports to.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    // parking_lot's lock: no poisoning (a panic elsewhere leaves a set of
    // maps, and the server carries on), and a fair unlock for teardown steps.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read()
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write()
    }

    /// Sends a webhook of a cluster-wide change: from the leader only, so
    /// the cluster sends it once (a server alone always leads).
    fn cluster_webhook(&self, event: WebhookEvent) {
        if self.leads.load(Ordering::Relaxed) {
            self.webhook(event);
        }
    }

    /// Sends the webhook of a cluster-wide change another node reported, as
    /// `announce` says.
    fn peer_webhook(&self, announce: Announce, event: WebhookEvent) {
        match announce {
            Announce::No => {}
            Announce::IfLeading => self.cluster_webhook(event),
            Announce::Anyway => self.webhook(event),
        }
    }

    /// Tells the cluster's other nodes, if any (under the lock for reports of
    /// state, so they leave in the order the changes happened).
    fn report(&self, report: impl FnOnce(Arc<str>) -> Report) {
        if let Some(link) = &self.cluster {
            link.report(report(self.id.clone()));
        }
    }

    /// Reports a channel's subscriber count here (user channels are not
    /// reported: nothing is asked of them but their events).
    fn report_subscribers(&self, channel: &str, count: usize) {
        if self.cluster.is_some() && ChannelKind::of(channel) != ChannelKind::ServerToUser {
            self.report(|a| Report::Subscribers {
                a,
                c: channel.to_owned(),
                n: count,
            });
        }
    }

    /// Reports whether a presence member has a connection here.
    fn report_member(&self, channel: &str, user_id: &str, present: Option<Option<Value>>) {
        self.report(|a| Report::Member {
            a,
            c: channel.to_owned(),
            u: user_id.to_owned(),
            on: present.is_some(),
            i: present.flatten(),
        });
    }

    fn webhook(&self, event: WebhookEvent) {
        // Pusher reports no webhook for the internal user channels.
        let internal = event
            .channel()
            .is_some_and(|c| ChannelKind::of(c) == ChannelKind::ServerToUser);
        if let (Some(webhooks), false) = (&self.webhooks, internal) {
            webhooks.push(event);
        }
    }

    /// Registers a new connection not counted against any address, or
    /// refuses it when the app is at capacity (see [`App::connect_from`]).
    pub fn connect(&self) -> Option<(Arc<str>, OutboxReceiver)> {
        self.connect_from(None).ok()
    }

    /// Registers a new connection from a client `address`, or refuses it when
    /// the app or that address is at capacity. Capacity counts open
    /// connections: one removed from the app still holds its places until
    /// its close was handed to actix, so clients that stop reading cannot
    /// pile up sockets beyond `max_connections` or
    /// `max_connections_per_address`.
    pub fn connect_from(
        &self,
        address: Option<IpAddr>,
    ) -> Result<(Arc<str>, OutboxReceiver), ConnectError> {
        let slot = match address {
            Some(address) => Some(
                self.addresses
                    .take(address, self.config.max_connections_per_address)
                    .ok_or(ConnectError::TooManyFromAddress)
                    .inspect_err(|_| self.metrics.connections_refused_per_address.inc())?,
            ),
            None => None,
        };
        // A refusal here drops `slot`, giving the address's place back.
        let (outbox, mut receiver) = self
            .open
            .outbox(OUTBOX_CAPACITY, self.config.max_connections)
            .ok_or(ConnectError::OverCapacity)?;
        let address = slot.map(Arc::new);
        if let Some(slot) = &address {
            receiver.hold_address(slot.clone());
        }
        let socket_id = self.new_socket_id();
        let mut state = self.write();
        state.connections.insert(
            socket_id.clone(),
            Connection {
                outbox,
                channels: HashSet::new(),
                user_id: None,
                address,
                watchlist: Vec::new(),
            },
        );
        self.metrics.connections.set(state.connections.len() as i64);
        Ok((socket_id, receiver))
    }

    /// Connections open now from `address` (IPv6: from its /64), removed
    /// or not: what `max_connections_per_address` limits.
    pub fn open_connections_from(&self, address: IpAddr) -> usize {
        self.addresses.count(address)
    }

    /// Client addresses with an open connection (the entries kept for
    /// `max_connections_per_address`).
    pub fn counted_addresses(&self) -> usize {
        self.addresses.addresses()
    }

    fn new_socket_id(&self) -> Arc<str> {
        let n = self.next_socket.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{}.{}", n, rand::random::<u32>()))
    }

    /// Sends a frame to one connection. A close ([`Outbound::Close`],
    /// [`Outbound::CloseFrame`]) ends it as [`App::close`] does.
    pub fn send_to(&self, socket_id: &str, outbound: Outbound) {
        if outbound.ends_the_connection() {
            return self.close(socket_id, outbound);
        }
        let overflowed = {
            let state = self.read();
            match state.connections.get(socket_id) {
                Some(conn) => {
                    try_deliver(&conn.outbox, outbound, &self.metrics) == Err(TrySendError::Full)
                }
                None => false,
            }
        };
        if overflowed {
            self.disconnect_slow(socket_id);
        }
    }

    /// Closes a connection whose outbox overflowed (a client that stopped
    /// reading) and removes it.
    fn disconnect_slow(&self, socket_id: &str) {
        let reason = "Too slow to read its messages".to_owned();
        self.close(
            socket_id,
            Outbound::Close(protocol::code::OVER_CAPACITY, reason),
        );
    }

    /// Removes a connection, as [`App::disconnect`] does, and sends it
    /// `last` (an [`Outbound::Close`] or [`Outbound::CloseFrame`]) after
    /// what is already queued. It is removed at once: from now on it receives
    /// nothing and what it sends is not relayed, even if its client is too
    /// slow to read the close.
    pub fn close(&self, socket_id: &str, last: Outbound) {
        self.remove(socket_id, Some(last));
    }

    /// Removes a connection and everything it held: subscriptions, presence
    /// membership, its signed-in user. What was queued for it is still sent,
    /// then its connection ends without a close frame: this is for clients
    /// that are gone already (use [`App::close`] to tell a client why).
    pub fn disconnect(&self, socket_id: &str) {
        self.remove(socket_id, None);
    }

    /// Removes a connection in bounded steps (see [`App::begin_removal`]):
    /// the first now, the rest by the app's pacer if it runs, else at once
    /// on this thread.
    fn remove(&self, socket_id: &str, last: Option<Outbound>) {
        let Some(mut removal) = self.begin_removal(socket_id, last) else {
            return;
        };
        if removal.is_done() {
            return;
        }
        if let Some(pacer) = self.pacer.get() {
            self.removals.lock().push_back(removal);
            pacer.notify_one();
            return;
        }
        while !removal.is_done() {
            #[cfg(test)]
            if let Some(hook) = self.between_steps.get() {
                (hook.0)(self);
            }
            self.continue_removal(&mut removal);
        }
    }

    /// Starts the app's background tasks (needs a tokio runtime): the pacer
    /// that continues its teardowns, one step per [`TEARDOWN_PACE`] (until
    /// it runs, teardowns are finished by whoever begins them), and, with
    /// `subscription_count` on, the task that tells channels their counts.
    /// They end with the app.
    pub fn start_background(self: &Arc<Self>) {
        let wake = Arc::new(tokio::sync::Notify::new());
        if self.pacer.set(wake.clone()).is_ok() {
            tokio::spawn(pace_removals(Arc::downgrade(self), wake));
            if self.config.subscription_count {
                tokio::spawn(tell_counts(Arc::downgrade(self)));
            }
        }
    }

    /// Notes that a channel's subscriber count changed, if its subscribers
    /// are to be told.
    fn count_changed(&self, channel: &str) {
        if self.config.subscription_count
            && !matches!(
                ChannelKind::of(channel),
                ChannelKind::Presence | ChannelKind::ServerToUser
            )
        {
            self.counts.lock().changed.insert(Arc::from(channel));
        }
    }

    /// Tells the channels whose count changed, and whose last telling is
    /// [`COUNT_INTERVAL`] old, their count in the cluster:
    /// `pusher_internal:subscription_count` to their subscribers here, and
    /// the `subscription_count` webhook from the leader.
    pub fn tell_counts(&self, now: std::time::Instant) {
        let due: Vec<Arc<str>> = {
            let mut counts = self.counts.lock();
            let CountChanges { changed, told } = &mut *counts;
            told.retain(|_, at| now.duration_since(*at) < COUNT_INTERVAL);
            let due: Vec<Arc<str>> = changed
                .iter()
                .filter(|channel| !told.contains_key(*channel))
                .cloned()
                .collect();
            for channel in &due {
                changed.remove(channel);
                told.insert(channel.clone(), now);
            }
            due
        };
        if due.is_empty() {
            return;
        }
        let mut deliveries = Deliveries::default();
        {
            let state = self.read();
            for channel in due {
                let here = state.channels.get(&channel);
                let count =
                    here.map_or(0, |c| c.subscribers.len()) + state.remote.subscribers(&channel);
                if let Some(entry) = here {
                    let frame = TextFrame::from(protocol::frame(
                        "pusher_internal:subscription_count",
                        Some(&channel),
                        json!({ "subscription_count": count }),
                    ));
                    for (socket, subscriber) in &entry.subscribers {
                        deliveries.send(socket, &subscriber.outbox, frame.clone());
                    }
                }
                self.cluster_webhook(WebhookEvent::SubscriptionCount {
                    channel: channel.to_string(),
                    subscription_count: count as u64,
                });
            }
        }
        self.settle(deliveries);
    }

    /// Takes one step of the oldest teardown in progress; answers whether
    /// any is left.
    fn step_removals(&self) -> bool {
        let Some(mut removal) = self.removals.lock().pop_front() else {
            return false;
        };
        #[cfg(test)]
        if let Some(hook) = self.between_steps.get() {
            (hook.0)(self);
        }
        self.continue_removal(&mut removal);
        let mut removals = self.removals.lock();
        if !removal.is_done() {
            removals.push_back(removal);
        }
        !removals.is_empty()
    }

    /// Finishes every teardown in progress on this thread: their
    /// `member_removed`, `channel_vacated` and reports all go out now.
    pub fn finish_removals(&self) {
        while let Some(removal) = self.removals.lock().pop_front() {
            self.finish_removal(removal);
        }
    }

    /// Teardowns begun and not finished.
    pub fn removals_in_progress(&self) -> usize {
        self.removals.lock().len()
    }

    /// Starts removing a connection, as [`App::disconnect`] (no `last`) or
    /// [`App::close`] do, and answers what is left to do, if it was there.
    /// This first step takes it out of `connections` and its user's sockets
    /// and finishes its outbox: from then on it receives nothing, and cannot
    /// subscribe, sign in or relay. It also leaves its first [`LEAVE_STEP`]
    /// channels; [`App::continue_removal`] leaves the rest, as many per call,
    /// the lock released between calls. Each channel is left exactly as an
    /// unsubscribe would (`member_removed` when its user's last connection
    /// leaves, `channel_vacated` when its last subscriber does, once each).
    pub fn begin_removal(&self, socket_id: &str, last: Option<Outbound>) -> Option<Removal> {
        let mut deliveries = Deliveries::default();
        let removal = {
            let mut guard = self.write();
            let state = &mut *guard;
            let (socket_key, conn) = state.connections.remove_entry(socket_id)?;
            if let Some(last) = last {
                // A close is taken whatever the outbox holds.
                let _ = conn.outbox.try_send(last);
            }
            conn.outbox.finish();
            if let Some(user_id) = &conn.user_id {
                self.user_socket_gone(state, user_id, socket_id, &mut deliveries);
            }
            unwatch(&mut state.watchers, &socket_key, &conn.watchlist);
            self.metrics.connections.set(state.connections.len() as i64);
            let mut removal = Removal {
                socket_id: socket_key,
                channels: conn.channels.into_iter(),
                _address: conn.address,
            };
            self.leave_step(state, &mut removal, &mut deliveries);
            if !removal.is_done() {
                RwLockWriteGuard::unlock_fair(guard);
            }
            removal
        };
        self.settle(deliveries);
        Some(removal)
    }

    /// Leaves the next [`LEAVE_STEP`] channels of a removal, in one
    /// acquisition of the lock.
    pub fn continue_removal(&self, removal: &mut Removal) {
        if removal.is_done() {
            return;
        }
        let mut deliveries = Deliveries::default();
        let mut state = self.write();
        self.leave_step(&mut state, removal, &mut deliveries);
        // A fair unlock hands the lock to whoever waits for it, if anyone,
        // before the next step: otherwise this thread could take it back at
        // once, step after step, and the others would still wait.
        RwLockWriteGuard::unlock_fair(state);
        self.settle(deliveries);
    }

    /// Finishes a removal on this thread.
    pub fn finish_removal(&self, mut removal: Removal) {
        while !removal.is_done() {
            self.continue_removal(&mut removal);
        }
    }

    /// Leaves the next [`LEAVE_STEP`] channels of a removed connection.
    fn leave_step(&self, state: &mut State, removal: &mut Removal, deliveries: &mut Deliveries) {
        for channel in removal.channels.by_ref().take(LEAVE_STEP) {
            self.leave(state, &removal.socket_id, &channel, deliveries);
        }
        self.metrics.channels.set(state.channels.len() as i64);
    }

    /// Subscribes a connection to a channel. For presence channels, `member`
    /// is the user id and info the auth endpoint signed. Answers the
    /// `subscription_succeeded` data, or why not.
    pub fn subscribe(
        &self,
        socket_id: &str,
        channel: &str,
        member: Option<(String, Option<Value>)>,
    ) -> Result<(), SubscribeError> {
        let mut deliveries = Deliveries::default();
        let succeeded;
        {
            let mut guard = self.write();
            let state = &mut *guard;
            let Some((socket_key, conn)) = state.connections.get_key_value(socket_id) else {
                return Err(SubscribeError::UnknownConnection);
            };
            let socket_key = socket_key.clone();
            let outbox = conn.outbox.clone();
            if conn.channels.contains(channel) {
                // Subscribing twice changes nothing; pusher-js still expects an answer.
                let data = presence_data(
                    channel,
                    state.channels.get(channel),
                    state.remote.channel(channel),
                );
                deliveries.send(&socket_key, &outbox, succeeded_frame(channel, data).into());
                drop(guard);
                self.settle(deliveries);
                return Ok(());
            }
            // The user channel joined by signin is not counted.
            let subscribed = conn
                .channels
                .len()
                .saturating_sub(usize::from(conn.user_id.is_some()));
            if subscribed >= self.config.max_channels_per_connection {
                return Err(SubscribeError::TooManyChannels(
                    self.config.max_channels_per_connection,
                ));
            }
            let channel_key: Arc<str> = match state.channels.get_key_value(channel) {
                Some((key, _)) => key.clone(),
                None => Arc::from(channel),
            };
            let entry = state.channels.entry(channel_key.clone()).or_default();
            let remote = state.remote.channel(channel);
            let mut member_added = None;
            if let Some((user_id, info)) = member {
                let user_id: Arc<str> = Arc::from(user_id);
                match entry.members.get_mut(&user_id) {
                    Some(existing) => existing.connections += 1,
                    None => {
                        if cluster_members(&entry.members, remote)
                            >= self.config.max_presence_members
                            && !remote.is_some_and(|r| r.members.contains_key(&user_id))
                        {
                            if entry.subscribers.is_empty() {
                                state.channels.remove(channel);
                            }
                            return Err(SubscribeError::PresenceFull(
                                self.config.max_presence_members,
                            ));
                        }
                        entry.members.insert(
                            user_id.clone(),
                            Member {
                                info: info.clone(),
                                connections: 1,
                            },
                        );
                        member_added = Some((user_id.clone(), info));
                    }
                }
                entry.subscribers.insert(
                    socket_key.clone(),
                    Subscriber {
                        outbox: outbox.clone(),
                        user_id: Some(user_id),
                    },
                );
            } else {
                entry.subscribers.insert(
                    socket_key.clone(),
                    Subscriber {
                        outbox: outbox.clone(),
                        user_id: None,
                    },
                );
            }
            let subscribers_here = entry.subscribers.len();
            self.count_changed(channel);
            let occupied_now = subscribers_here == 1 && remote.is_none_or(|r| r.subscribers == 0);
            self.report_subscribers(channel, subscribers_here);
            if let Some((user_id, info)) = &member_added {
                self.report_member(channel, user_id, Some(info.clone()));
            }
            // Present on another node already: the cluster saw it arrive then.
            let member_added = member_added
                .filter(|(user_id, _)| !remote.is_some_and(|r| r.members.contains_key(user_id)));
            if let Some((user_id, info)) = &member_added {
                let frame = member_added_frame(channel, user_id, info);
                for (other, subscriber) in
                    entry.subscribers.iter().filter(|(s, _)| **s != socket_key)
                {
                    deliveries.send(other, &subscriber.outbox, frame.clone());
                }
            }
            succeeded = presence_data(channel, state.channels.get(channel), remote);
            if let Some(conn) = state.connections.get_mut(&socket_key) {
                conn.channels.insert(channel_key.clone());
            }
            self.metrics.channels.set(state.channels.len() as i64);
            if occupied_now {
                self.cluster_webhook(WebhookEvent::ChannelOccupied {
                    channel: channel.to_owned(),
                });
            }
            if let Some((user_id, _)) = member_added {
                self.cluster_webhook(WebhookEvent::MemberAdded {
                    channel: channel.to_owned(),
                    user_id: user_id.to_string(),
                });
            }
            deliveries.send(
                &socket_key,
                &outbox,
                succeeded_frame(channel, succeeded).into(),
            );
            if realtime_core::channel::is_cache(channel) {
                let cached = self.cache.lock().get(channel, std::time::Instant::now());
                match cached {
                    Some(frame) => deliveries.send(&socket_key, &outbox, frame),
                    None => {
                        let miss = protocol::frame("pusher:cache_miss", Some(channel), json!({}));
                        deliveries.send(&socket_key, &outbox, miss.into());
                        // Once per subscription, by the node it happened on.
                        self.webhook(WebhookEvent::CacheMiss {
                            channel: channel.to_owned(),
                        });
                    }
                }
            }
        }
        self.settle(deliveries);
        Ok(())
    }

    /// Unsubscribes a connection from a channel.
    pub fn unsubscribe(&self, socket_id: &str, channel: &str) {
        let mut deliveries = Deliveries::default();
        {
            let mut state = self.write();
            let removed = state
                .connections
                .get_mut(socket_id)
                .is_some_and(|c| c.channels.remove(channel));
            if removed {
                self.leave(&mut state, socket_id, channel, &mut deliveries);
            }
            self.metrics.channels.set(state.channels.len() as i64);
        }
        self.settle(deliveries);
    }

    fn leave(
        &self,
        state: &mut State,
        socket_id: &str,
        channel: &str,
        deliveries: &mut Deliveries,
    ) {
        let Some(entry) = state.channels.get_mut(channel) else {
            return;
        };
        let Some(subscriber) = entry.subscribers.remove(socket_id) else {
            return;
        };
        if let Some(user_id) = subscriber.user_id {
            let last = match entry.members.get_mut(&user_id) {
                Some(m) if m.connections > 1 => {
                    m.connections -= 1;
                    false
                }
                Some(_) => true,
                None => false,
            };
            if last {
                entry.members.remove(&user_id);
                self.report_member(channel, &user_id, None);
                // Still present on another node: the cluster keeps the member.
                if !state.remote.has_member(channel, &user_id) {
                    let frame = member_removed_frame(channel, &user_id);
                    for (other, subscriber) in &entry.subscribers {
                        deliveries.send(other, &subscriber.outbox, frame.clone());
                    }
                    self.cluster_webhook(WebhookEvent::MemberRemoved {
                        channel: channel.to_owned(),
                        user_id: user_id.to_string(),
                    });
                }
            }
        }
        self.report_subscribers(channel, entry.subscribers.len());
        self.count_changed(channel);
        if entry.subscribers.is_empty() {
            state.channels.remove(channel);
            if state.remote.subscribers(channel) == 0 {
                self.cluster_webhook(WebhookEvent::ChannelVacated {
                    channel: channel.to_owned(),
                });
            }
        }
    }

    /// Marks a connection as signed in as `user_id` and subscribes it to the
    /// user's `#server-to-user-` channel.
    pub fn sign_in(&self, socket_id: &str, user_id: &str) -> bool {
        self.sign_in_watching(socket_id, user_id, &[], None)
    }

    /// [`App::sign_in`], sending the connection `answer` first (its
    /// `pusher:signin_success`), then watching the users of `watchlist`: the
    /// connection is told at once which of them are online, and later when
    /// each comes online (a first signed-in connection in the cluster) or
    /// goes offline (the last one gone), with
    /// `pusher_internal:watchlist_events`.
    pub fn sign_in_watching(
        &self,
        socket_id: &str,
        user_id: &str,
        watchlist: &[String],
        answer: Option<ByteString>,
    ) -> bool {
        let mut deliveries = Deliveries::default();
        {
            let mut guard = self.write();
            let state = &mut *guard;
            let Some(socket_key) = state
                .connections
                .get_key_value(socket_id)
                .map(|(k, _)| k.clone())
            else {
                return false;
            };
            let user: Arc<str> = Arc::from(user_id);
            let channel: Arc<str> = Arc::from(format!(
                "{}{user_id}",
                realtime_core::channel::SERVER_TO_USER_PREFIX
            ));
            let Some(conn) = state.connections.get_mut(&socket_key) else {
                return false;
            };
            let outbox = conn.outbox.clone();
            let previous = conn.user_id.replace(user.clone());
            let newly_subscribed = conn.channels.insert(channel.clone());
            let watching: Vec<Arc<str>> = watchlist.iter().map(|w| Arc::from(w.as_str())).collect();
            let old_watchlist = std::mem::replace(&mut conn.watchlist, watching.clone());
            if let Some(previous) = previous.filter(|p| *p != user) {
                // Signing in as someone else ends the previous user's delivery.
                let old_channel = format!(
                    "{}{previous}",
                    realtime_core::channel::SERVER_TO_USER_PREFIX
                );
                conn.channels.remove(old_channel.as_str());
                if let Some(entry) = state.channels.get_mut(old_channel.as_str()) {
                    entry.subscribers.remove(&socket_key);
                    if entry.subscribers.is_empty() {
                        state.channels.remove(old_channel.as_str());
                    }
                }
                self.user_socket_gone(state, &previous, &socket_key, &mut deliveries);
            }
            unwatch(&mut state.watchers, &socket_key, &old_watchlist);
            if let Some(answer) = answer {
                deliveries.send(&socket_key, &outbox, answer.into());
            }
            let sockets = state.users.entry(user.clone()).or_default();
            let first_here = sockets.is_empty();
            sockets.insert(socket_key.clone());
            if first_here {
                self.report(|a| Report::User {
                    a,
                    u: user_id.to_owned(),
                    on: true,
                });
                if !state.remote.has_user(user_id) {
                    tell_watchers(state, user_id, "online", &mut deliveries);
                }
            }
            if newly_subscribed {
                let entry = state.channels.entry(channel).or_default();
                entry.subscribers.insert(
                    socket_key.clone(),
                    Subscriber {
                        outbox: outbox.clone(),
                        user_id: None,
                    },
                );
            }
            for watched in &watching {
                state
                    .watchers
                    .entry(watched.clone())
                    .or_default()
                    .insert(socket_key.clone());
            }
            let online: Vec<&str> = watching
                .iter()
                .filter(|w| state.users.contains_key(*w) || state.remote.has_user(w))
                .map(|w| w.as_ref())
                .collect();
            if !online.is_empty() {
                deliveries.send(&socket_key, &outbox, watchlist_frame("online", &online));
            }
        }
        self.settle(deliveries);
        true
    }

    /// One of a user's signed-in connections here is gone: the user goes
    /// offline here with their last, and in the cluster if no other node
    /// has them.
    fn user_socket_gone(
        &self,
        state: &mut State,
        user_id: &str,
        socket_id: &str,
        deliveries: &mut Deliveries,
    ) {
        let Some(sockets) = state.users.get_mut(user_id) else {
            return;
        };
        sockets.remove(socket_id);
        if !sockets.is_empty() {
            return;
        }
        state.users.remove(user_id);
        self.report(|a| Report::User {
            a,
            u: user_id.to_owned(),
            on: false,
        });
        if !state.remote.has_user(user_id) {
            tell_watchers(state, user_id, "offline", deliveries);
        }
    }

    /// Whether another node has a signed-in connection of a user now.
    pub fn apply_peer_user(&self, peer: NodeId, user_id: &str, online: bool) {
        let mut deliveries = Deliveries::default();
        {
            let mut state = self.write();
            if let Some(change) = state.remote.set_user(peer, user_id, online) {
                self.on_peer_user(&state, user_id, change, &mut deliveries);
            }
        }
        self.settle(deliveries);
    }

    fn on_peer_user(
        &self,
        state: &State,
        user_id: &str,
        change: UserChange,
        deliveries: &mut Deliveries,
    ) {
        // Signed in here all along: nothing changed for the cluster.
        if state.users.contains_key(user_id) {
            return;
        }
        let name = match change {
            UserChange::Online => "online",
            UserChange::Offline => "offline",
        };
        tell_watchers(state, user_id, name, deliveries);
    }

    /// Closes every connection of a signed-in user, on every node of the
    /// cluster. Answers how many were here.
    pub fn terminate_user(&self, user_id: &str) -> usize {
        self.report(|a| Report::Terminate {
            a,
            u: user_id.to_owned(),
        });
        self.terminate_local(user_id)
    }

    /// Closes every connection of a signed-in user on this node.
    pub fn terminate_local(&self, user_id: &str) -> usize {
        let sockets: Vec<Arc<str>> = self
            .read()
            .users
            .get(user_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for socket in &sockets {
            let reason = "Connection terminated by the app".to_owned();
            self.close(
                socket,
                Outbound::Close(protocol::code::UNAUTHORIZED, reason),
            );
        }
        sockets.len()
    }

    /// Sends an event to every subscriber of `channel` but `except`, on
    /// every node of the cluster. Answers how many connections it reached
    /// here.
    pub fn publish(&self, channel: &str, frame: &ByteString, except: Option<&str>) -> usize {
        self.report(|a| Report::Publish {
            a,
            c: channel.to_owned(),
            f: frame.to_string(),
            x: except.map(str::to_owned),
        });
        self.deliver(channel, frame, except)
    }

    /// Sends an event to every subscriber of `channel` on this node but
    /// `except`. Answers how many connections it reached.
    pub fn deliver(&self, channel: &str, frame: &ByteString, except: Option<&str>) -> usize {
        let mut deliveries = Deliveries::default();
        {
            let state = self.read();
            // Kept under the state lock: a subscriber is either in the
            // fan-out below or, subscribing after it, served from the cache.
            if realtime_core::channel::is_cache(channel) {
                let kept = self.cache.lock().store(
                    channel,
                    TextFrame::from(frame),
                    std::time::Instant::now(),
                );
                if !kept {
                    self.metrics.cache_full.inc();
                }
            }
            let Some(entry) = state.channels.get(channel) else {
                return 0;
            };
            let frame = TextFrame::from(frame);
            for (socket, subscriber) in &entry.subscribers {
                if Some(socket.as_ref()) != except {
                    deliveries.send(socket, &subscriber.outbox, frame.clone());
                }
            }
        }
        self.settle(deliveries)
    }

    /// Relays a client event from `socket_id` to the channel's other
    /// subscribers, if the sender is subscribed. Answers whether it was.
    pub fn relay_client_event(
        &self,
        socket_id: &str,
        channel: &str,
        event: &str,
        data: &Value,
    ) -> bool {
        let user_id = {
            let state = self.read();
            // A connection being torn down is still among its channels'
            // subscribers for a step or two, but no longer relays.
            if !state.connections.contains_key(socket_id) {
                return false;
            }
            let Some(entry) = state.channels.get(channel) else {
                return false;
            };
            match entry.subscribers.get(socket_id) {
                Some(subscriber) => subscriber.user_id.clone(),
                None => return false,
            }
        };
        let frame = protocol::frame_from(event, Some(channel), data, user_id.as_deref());
        self.publish(channel, &frame, Some(socket_id));
        if self.webhooks.is_some() {
            let data = match data {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            self.webhook(WebhookEvent::ClientEvent {
                channel: channel.to_owned(),
                event: event.to_owned(),
                data,
                socket_id: Some(socket_id.to_owned()),
                user_id: user_id.map(|u| u.to_string()),
            });
        }
        true
    }

    /// Whether a connection is subscribed to a channel.
    pub fn is_subscribed(&self, socket_id: &str, channel: &str) -> bool {
        self.read()
            .connections
            .get(socket_id)
            .is_some_and(|c| c.channels.contains(channel))
    }

    /// A channel's attributes, as the HTTP API reports them.
    pub fn channel_info(&self, channel: &str) -> ChannelInfo {
        let state = self.read();
        let entry = state.channels.get(channel);
        let remote = state.remote.channel(channel);
        let subscribers =
            entry.map_or(0, |e| e.subscribers.len()) + remote.map_or(0, |r| r.subscribers);
        ChannelInfo {
            occupied: Some(subscribers > 0),
            user_count: (ChannelKind::of(channel) == ChannelKind::Presence)
                .then(|| member_ids(entry, remote).count() as u64),
            subscription_count: Some(subscribers as u64),
        }
    }

    /// Occupied channels whose name starts with `prefix` (user channels excluded).
    pub fn channels(&self, prefix: &str) -> Vec<(String, ChannelInfo)> {
        let state = self.read();
        let names = state
            .channels
            .keys()
            .chain(
                state
                    .remote
                    .channels()
                    .filter(|(name, r)| r.subscribers > 0 && !state.channels.contains_key(*name))
                    .map(|(name, _)| name),
            )
            .filter(|name| {
                name.starts_with(prefix) && ChannelKind::of(name) != ChannelKind::ServerToUser
            });
        names
            .map(|name| {
                let entry = state.channels.get(name);
                let remote = state.remote.channel(name);
                let presence = ChannelKind::of(name) == ChannelKind::Presence;
                let subscribers =
                    entry.map_or(0, |e| e.subscribers.len()) + remote.map_or(0, |r| r.subscribers);
                (
                    name.to_string(),
                    ChannelInfo {
                        occupied: None,
                        user_count: presence.then(|| member_ids(entry, remote).count() as u64),
                        subscription_count: Some(subscribers as u64),
                    },
                )
            })
            .collect()
    }

    /// The user ids of a presence channel's members.
    pub fn presence_users(&self, channel: &str) -> Vec<String> {
        let state = self.read();
        member_ids(state.channels.get(channel), state.remote.channel(channel))
            .map(|id| id.to_string())
            .collect()
    }

    /// Members of a presence channel with their `user_info`.
    pub fn presence_members(&self, channel: &str) -> Vec<(String, Option<Value>)> {
        let state = self.read();
        members(state.channels.get(channel), state.remote.channel(channel))
            .map(|(id, info)| (id.to_string(), info.clone()))
            .collect()
    }

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.read().connections.len()
    }

    /// Tells every connection to reconnect (the server is going away), and
    /// finishes every teardown, so that what they send (webhooks, reports to
    /// the cluster) is queued when this returns.
    pub fn close_all(&self, code: u16, reason: &str) {
        let sockets: Vec<Arc<str>> = self.read().connections.keys().cloned().collect();
        for socket in sockets {
            self.close(&socket, Outbound::Close(code, reason.to_owned()));
        }
        self.finish_removals();
    }

    /// Another node's subscriber count of a channel is now `count`.
    /// `announce`: whether a change it makes to the cluster is a webhook
    /// (not while the node is still learning what that peer holds).
    pub fn apply_peer_subscribers(
        &self,
        peer: NodeId,
        channel: &str,
        count: usize,
        announce: Announce,
    ) {
        let mut deliveries = Deliveries::default();
        {
            let mut state = self.write();
            if let Some(transition) = state.remote.set_subscribers(peer, channel, count) {
                self.on_peer_transition(&state, transition, announce, &mut deliveries);
            }
        }
        self.settle(deliveries);
    }

    /// Whether another node has a connection of a presence member now.
    pub fn apply_peer_member(
        &self,
        peer: NodeId,
        channel: &str,
        user_id: &str,
        present: Option<Option<Value>>,
        announce: Announce,
    ) {
        let mut deliveries = Deliveries::default();
        {
            let mut state = self.write();
            if let Some(transition) = state.remote.set_member(peer, channel, user_id, present) {
                self.on_peer_transition(&state, transition, announce, &mut deliveries);
            }
        }
        self.settle(deliveries);
    }

    /// Everything another node holds is `channels` (its snapshot; empty
    /// when it is gone: its members leave, its channels empty).
    pub fn apply_peer_snapshot(
        &self,
        peer: NodeId,
        channels: &[ChannelReport],
        users: &[String],
        announce: Announce,
    ) {
        let mut deliveries = Deliveries::default();
        {
            let mut state = self.write();
            for transition in state.remote.replace_peer(peer, channels) {
                self.on_peer_transition(&state, transition, announce, &mut deliveries);
            }
            for (user, change) in state.remote.replace_peer_users(peer, users) {
                self.on_peer_user(&state, &user, change, &mut deliveries);
            }
        }
        self.settle(deliveries);
    }

    /// Acts on a change of what the other nodes hold: what it means for the
    /// cluster depends on what this node holds too.
    fn on_peer_transition(
        &self,
        state: &State,
        transition: Transition,
        announce: Announce,
        deliveries: &mut Deliveries,
    ) {
        match transition {
            Transition::Subscribers {
                channel,
                before,
                after,
            } => {
                self.count_changed(&channel);
                let here = state
                    .channels
                    .get(&channel)
                    .map_or(0, |c| c.subscribers.len());
                if here > 0 || ChannelKind::of(&channel) == ChannelKind::ServerToUser {
                    return;
                }
                if before == 0 && after > 0 {
                    self.peer_webhook(
                        announce,
                        WebhookEvent::ChannelOccupied {
                            channel: channel.to_string(),
                        },
                    );
                } else if before > 0 && after == 0 {
                    self.peer_webhook(
                        announce,
                        WebhookEvent::ChannelVacated {
                            channel: channel.to_string(),
                        },
                    );
                }
            }
            Transition::Member {
                channel,
                user_id,
                change,
            } => {
                let entry = state.channels.get(&channel);
                if entry.is_some_and(|c| c.members.contains_key(&user_id)) {
                    // Present here all along: nothing changed for the cluster.
                    return;
                }
                let (frame, event) = match change {
                    MemberChange::Appeared(info) => (
                        member_added_frame(&channel, &user_id, &info),
                        WebhookEvent::MemberAdded {
                            channel: channel.to_string(),
                            user_id: user_id.to_string(),
                        },
                    ),
                    MemberChange::Vanished => (
                        member_removed_frame(&channel, &user_id),
                        WebhookEvent::MemberRemoved {
                            channel: channel.to_string(),
                            user_id: user_id.to_string(),
                        },
                    ),
                };
                for (socket, subscriber) in entry.into_iter().flat_map(|c| &c.subscribers) {
                    deliveries.send(socket, &subscriber.outbox, frame.clone());
                }
                self.peer_webhook(announce, event);
            }
        }
    }

    /// A cache channel's last event, if kept: its name, its data and the
    /// time it has left.
    pub fn cached_event(&self, channel: &str) -> Option<(String, Value, std::time::Duration)> {
        let now = std::time::Instant::now();
        let (frame, left) = self.cache.lock().get_with_life(channel, now)?;
        let mut frame: serde_json::Map<String, Value> = serde_json::from_str(frame.text()).ok()?;
        let event = frame.remove("event")?.as_str()?.to_owned();
        Some((event, frame.remove("data").unwrap_or(Value::Null), left))
    }

    /// Keeps a cache channel's last event reported by another node, unless
    /// this node has one already.
    pub fn fill_cache(&self, channel: &str, frame: &str, left: std::time::Duration) {
        if realtime_core::channel::is_cache(channel) {
            self.cache.lock().fill(
                channel,
                TextFrame::from(frame),
                left,
                std::time::Instant::now(),
            );
        }
    }

    /// Reports everything this node holds to the other nodes, in order with
    /// the reports of later changes (it is taken under the lock).
    pub fn report_snapshot(&self) {
        let Some(link) = &self.cluster else {
            return;
        };
        let state = self.read();
        let channels = state
            .channels
            .iter()
            .filter(|(name, _)| ChannelKind::of(name) != ChannelKind::ServerToUser)
            .map(|(name, entry)| ChannelReport {
                channel: name.to_string(),
                subscribers: entry.subscribers.len(),
                members: entry
                    .members
                    .iter()
                    .map(|(id, m)| (id.to_string(), m.info.clone()))
                    .collect(),
            })
            .collect();
        let users = state.users.keys().map(|u| u.to_string()).collect();
        for report in crate::cluster::snapshot_reports(self.id.clone(), channels, users) {
            link.report(report);
        }
        // A node that joins learns the cache channels' last events too.
        let now = std::time::Instant::now();
        for (channel, frame, left) in self.cache.lock().live(now) {
            link.report(Report::Cached {
                a: self.id.clone(),
                c: channel.to_string(),
                f: frame.text().to_owned(),
                ms: left.as_millis() as u64,
            });
        }
    }

    /// Counts what the deliveries queued and disconnects the connections
    /// whose outbox overflowed; called once the state lock is released.
    /// Answers how many frames were queued.
    fn settle(&self, deliveries: Deliveries) -> usize {
        // Counted once, not once per subscriber: one shared counter touched
        // 10,000 times in a fan-out would be a hot spot of its own.
        self.metrics.messages_out.inc_by(deliveries.queued as u64);
        for socket in deliveries.overflowed {
            self.disconnect_slow(&socket);
        }
        deliveries.queued
    }
}

/// What [`App::tell_counts`] has to tell, and what it told lately.
#[derive(Debug, Default)]
struct CountChanges {
    /// Channels whose subscriber count changed since they were last told.
    changed: HashSet<Arc<str>>,
    /// Channels told within the last [`COUNT_INTERVAL`], and when.
    told: HashMap<Arc<str>, std::time::Instant>,
}

/// Tells an app's channels their subscriber counts every [`COUNT_TICK`],
/// until the app is gone.
async fn tell_counts(app: Weak<App>) {
    let mut tick = tokio::time::interval(COUNT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else {
            return;
        };
        app.tell_counts(std::time::Instant::now());
    }
}

/// Continues an app's teardowns one step per [`TEARDOWN_PACE`] whenever
/// there are any, until the app is gone.
async fn pace_removals(app: Weak<App>, wake: Arc<tokio::sync::Notify>) {
    loop {
        wake.notified().await;
        loop {
            let Some(app) = app.upgrade() else {
                return;
            };
            if !app.step_removals() {
                break;
            }
            drop(app);
            tokio::time::sleep(TEARDOWN_PACE).await;
        }
    }
}

/// Frames queued while the state lock is held, so that every connection
/// sees changes in the order they happened (a subscriber gets
/// `subscription_succeeded` before any event of the channel). Connections whose
/// outbox is full are noted and disconnected after the lock is released.
#[derive(Default)]
struct Deliveries {
    queued: usize,
    overflowed: Vec<Arc<str>>,
}

impl Deliveries {
    /// Queues a frame. A full outbox (a client that stopped reading) is
    /// noted for disconnection; a closed one drops the frame.
    fn send(&mut self, socket: &Arc<str>, outbox: &OutboxSender, frame: TextFrame) {
        match outbox.try_send(Outbound::Frame(frame)) {
            Ok(()) => self.queued += 1,
            Err(TrySendError::Full) => self.overflowed.push(socket.clone()),
            Err(TrySendError::Closed) => {}
        }
    }
}

/// Queues a frame and counts it in `messages_out`. A full outbox (a client
/// that stopped reading) is for the caller to disconnect; a closed one drops
/// the frame.
fn try_deliver(
    outbox: &OutboxSender,
    outbound: Outbound,
    metrics: &Metrics,
) -> Result<(), TrySendError> {
    outbox.try_send(outbound)?;
    metrics.messages_out.inc();
    Ok(())
}

/// The presence members of a channel in the cluster: this node's, then
/// the other nodes' that have no connection here.
fn members<'a>(
    here: Option<&'a Channel>,
    remote: Option<&'a RemoteChannel>,
) -> impl Iterator<Item = (&'a Arc<str>, &'a Option<Value>)> {
    let local = here
        .into_iter()
        .flat_map(|c| c.members.iter().map(|(id, m)| (id, &m.info)));
    let others = remote.into_iter().flat_map(move |r| {
        r.members
            .iter()
            .filter(move |(id, _)| !here.is_some_and(|c| c.members.contains_key(*id)))
            .map(|(id, m)| (id, &m.info))
    });
    local.chain(others)
}

fn member_ids<'a>(
    here: Option<&'a Channel>,
    remote: Option<&'a RemoteChannel>,
) -> impl Iterator<Item = &'a Arc<str>> {
    members(here, remote).map(|(id, _)| id)
}

/// How many members a presence channel has in the cluster.
fn cluster_members(here: &HashMap<Arc<str>, Member>, remote: Option<&RemoteChannel>) -> usize {
    here.len()
        + remote.map_or(0, |r| {
            r.members
                .keys()
                .filter(|id| !here.contains_key(*id))
                .count()
        })
}

/// `pusher_internal:watchlist_events` with one event: `name` (`online` or
/// `offline`) for `user_ids`.
fn watchlist_frame(name: &str, user_ids: &[&str]) -> TextFrame {
    TextFrame::from(protocol::frame(
        "pusher_internal:watchlist_events",
        None,
        json!({ "events": [{ "name": name, "user_ids": user_ids }] }),
    ))
}

/// Tells the connections watching a user that it came online or went offline.
fn tell_watchers(state: &State, user_id: &str, name: &str, deliveries: &mut Deliveries) {
    let Some(watchers) = state.watchers.get(user_id) else {
        return;
    };
    let frame = watchlist_frame(name, &[user_id]);
    for socket in watchers {
        if let Some(conn) = state.connections.get(socket) {
            deliveries.send(socket, &conn.outbox, frame.clone());
        }
    }
}

/// Stops a connection watching the users of its watchlist.
fn unwatch(
    watchers: &mut HashMap<Arc<str>, HashSet<Arc<str>>>,
    socket: &str,
    watchlist: &[Arc<str>],
) {
    for watched in watchlist {
        if let Some(sockets) = watchers.get_mut(watched) {
            sockets.remove(socket);
            if sockets.is_empty() {
                watchers.remove(watched);
            }
        }
    }
}

fn member_removed_frame(channel: &str, user_id: &str) -> TextFrame {
    TextFrame::from(protocol::frame(
        "pusher_internal:member_removed",
        Some(channel),
        serde_json::json!({ "user_id": user_id }).to_string(),
    ))
}

fn member_added_frame(channel: &str, user_id: &str, info: &Option<Value>) -> TextFrame {
    TextFrame::from(protocol::frame(
        "pusher_internal:member_added",
        Some(channel),
        serde_json::json!({ "user_id": user_id, "user_info": info }).to_string(),
    ))
}

fn presence_data(
    name: &str,
    channel: Option<&Channel>,
    remote: Option<&RemoteChannel>,
) -> Option<String> {
    if ChannelKind::of(name) != ChannelKind::Presence {
        return None;
    }
    channel?;
    let ids: Vec<&str> = member_ids(channel, remote).map(|k| k.as_ref()).collect();
    let hash: serde_json::Map<String, Value> = members(channel, remote)
        .map(|(id, info)| (id.to_string(), info.clone().unwrap_or(Value::Null)))
        .collect();
    Some(
        serde_json::json!({
            "presence": { "ids": ids, "hash": hash, "count": ids.len() }
        })
        .to_string(),
    )
}

fn succeeded_frame(channel: &str, presence: Option<String>) -> ByteString {
    protocol::frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        presence.unwrap_or_else(|| "{}".to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use realtime_core::Credentials;
    use serde_json::json;

    fn app_with(change: impl FnOnce(&mut AppConfig)) -> App {
        let mut config = AppConfig::new(Credentials::new("1", "key", "secret"));
        change(&mut config);
        App::new(config, Metrics::new(), None)
    }

    fn app() -> App {
        app_with(|_| {})
    }

    fn drain(receiver: &mut OutboxReceiver) -> Vec<Outbound> {
        let mut all = Vec::new();
        while let Ok(outbound) = receiver.try_recv() {
            all.push(outbound);
        }
        all
    }

    fn member(id: &str) -> Option<(String, Option<Value>)> {
        Some((id.to_owned(), Some(json!({ "name": id }))))
    }

    /// What runs between the steps of a teardown (see `App::remove`).
    pub(super) struct StepHook(pub(super) Box<dyn Fn(&App) + Send + Sync>);

    impl std::fmt::Debug for StepHook {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("StepHook")
        }
    }

    fn events(receiver: &mut OutboxReceiver, event: &str) -> usize {
        drain(receiver)
            .iter()
            .filter(|o| matches!(o, Outbound::Frame(f) if f.text().contains(event)))
            .count()
    }

    #[test]
    fn a_connection_with_many_channels_leaves_them_in_steps_with_the_lock_free_between() {
        let app = app_with(|c| c.max_channels_per_connection = usize::MAX);
        let (leaving, mut rl) = app.connect().unwrap();
        let (other, _ro) = app.connect().unwrap();
        let (carol, mut rc) = app.connect().unwrap();
        let count = 3 * LEAVE_STEP + 10;
        for i in 0..count {
            app.subscribe(&leaving, &format!("ch-{i}"), None).unwrap();
            drain(&mut rl);
        }
        app.subscribe(&leaving, "presence-room", member("alice"))
            .unwrap();
        app.subscribe(&carol, "presence-room", member("carol"))
            .unwrap();
        app.sign_in(&leaving, "alice");
        drain(&mut rc);

        let steps = Arc::new(AtomicU64::new(0));
        let seen = steps.clone();
        let (leaving_id, other_id) = (leaving.to_string(), other.to_string());
        app.between_steps
            .set(StepHook(Box::new(move |app: &App| {
                let step = seen.fetch_add(1, Ordering::SeqCst);
                // The lock is free: anyone else's call goes through now.
                assert!(app.state.try_write().is_some(), "lock held between steps");
                app.subscribe(&other_id, &format!("other-{step}"), None)
                    .unwrap();
                // Already gone for everything but its channels' lists.
                assert_eq!(
                    app.subscribe(&leaving_id, "ch-new", None),
                    Err(SubscribeError::UnknownConnection)
                );
                assert!(!app.sign_in(&leaving_id, "alice"));
                assert_eq!(app.connection_count(), 2);
                assert!(app.read().users.is_empty());
                let still_listed = app
                    .read()
                    .channels
                    .iter()
                    .find(|(_, c)| c.subscribers.contains_key(leaving_id.as_str()))
                    .map(|(name, _)| name.to_string())
                    .unwrap();
                let frame = protocol::frame("e", Some(&still_listed), "{}");
                assert_eq!(
                    app.publish(&still_listed, &frame, None),
                    0,
                    "it receives nothing"
                );
                assert!(!app.relay_client_event(
                    &leaving_id,
                    &still_listed,
                    "client-x",
                    &json!({})
                ));
            })))
            .unwrap();

        app.disconnect(&leaving);
        let steps = steps.load(Ordering::SeqCst) as usize;
        // count + 2 channels (presence, user), LEAVE_STEP per step.
        assert_eq!(
            steps + 1,
            (count + 2).div_ceil(LEAVE_STEP),
            "{steps} pauses"
        );
        let state = app.read();
        assert!(!state.connections.contains_key(leaving.as_ref()));
        let names: HashSet<&str> = state.channels.keys().map(|k| k.as_ref()).collect();
        let mut expected: HashSet<String> = (0..steps).map(|s| format!("other-{s}")).collect();
        expected.insert("presence-room".to_owned());
        assert_eq!(names, expected.iter().map(|s| s.as_str()).collect());
        assert_eq!(state.channels["presence-room"].members.len(), 1);
        drop(state);
        assert_eq!(events(&mut rc, "member_removed"), 1, "alice left once");
        assert_eq!(app.metrics().channels.get(), (steps + 1) as i64);
    }

    /// An app as a server runs it: its teardowns paced by its own task.
    fn paced_app(change: impl FnOnce(&mut AppConfig)) -> (Arc<App>, crate::webhooks::Recorded) {
        let mut config = AppConfig::new(Credentials::new("1", "key", "secret"));
        change(&mut config);
        let (queue, recorded) = crate::webhooks::WebhookQueue::recorder();
        let app = Arc::new(App::new(config, Metrics::new(), Some(queue)));
        app.start_background();
        (app, recorded)
    }

    async fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn a_close_by_the_server_is_paced_like_a_client_leaving() {
        let (app, mut webhooks) = paced_app(|c| c.max_channels_per_connection = usize::MAX);
        let (socket, mut rx) = app.connect().unwrap();
        for i in 0..3 * LEAVE_STEP {
            app.subscribe(&socket, &format!("ch-{i}"), None).unwrap();
            drain(&mut rx);
        }
        webhooks.take();
        let reason = "Too slow".to_owned();
        app.close(
            &socket,
            Outbound::Close(protocol::code::OVER_CAPACITY, reason),
        );
        // Only the first step ran on the caller's thread.
        assert_eq!(app.connection_count(), 0);
        assert_eq!(app.removals_in_progress(), 1);
        assert_eq!(app.channels("").len(), 2 * LEAVE_STEP);
        wait_for("the pacer", || app.removals_in_progress() == 0).await;
        assert!(app.channels("").is_empty());
        assert_eq!(
            webhooks.take().len(),
            3 * LEAVE_STEP,
            "one channel_vacated each"
        );
    }

    #[tokio::test]
    async fn close_all_finishes_every_teardown_before_it_returns() {
        let (app, mut webhooks) = paced_app(|c| c.max_channels_per_connection = usize::MAX);
        for _ in 0..3 {
            let (socket, mut rx) = app.connect().unwrap();
            for i in 0..2 * LEAVE_STEP {
                app.subscribe(&socket, &format!("{socket}-{i}"), None)
                    .unwrap();
                drain(&mut rx);
            }
        }
        webhooks.take();
        app.close_all(protocol::code::RECONNECT_NOW, "Server shutting down");
        // Nothing left for later: the webhooks are queued, ready for the flush.
        assert_eq!(app.removals_in_progress(), 0);
        assert!(app.channels("").is_empty());
        assert_eq!(webhooks.take().len(), 3 * 2 * LEAVE_STEP);
    }

    #[tokio::test]
    async fn an_address_keeps_its_place_until_the_teardown_is_done() {
        let address: IpAddr = "192.0.2.7".parse().unwrap();
        let (app, _webhooks) = paced_app(|c| {
            c.max_channels_per_connection = usize::MAX;
            c.max_connections_per_address = 1;
        });
        let (socket, mut receiver) = app.connect_from(Some(address)).unwrap();
        for i in 0..4 * LEAVE_STEP {
            app.subscribe(&socket, &format!("ch-{i}"), None).unwrap();
            drain(&mut receiver);
        }
        // The socket ends first, then the app removes the connection.
        drop(receiver);
        app.disconnect(&socket);
        if app.removals_in_progress() > 0 {
            assert_eq!(app.open_connections_from(address), 1);
            assert_eq!(
                app.connect_from(Some(address)).err(),
                Some(ConnectError::TooManyFromAddress)
            );
        }
        wait_for("the teardown", || app.removals_in_progress() == 0).await;
        assert_eq!(app.open_connections_from(address), 0);
        assert!(app.connect_from(Some(address)).is_ok());
    }

    fn texts(receiver: &mut OutboxReceiver) -> Vec<String> {
        drain(receiver)
            .into_iter()
            .filter_map(|o| match o {
                Outbound::Frame(f) => Some(f.text().to_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_cache_channel_gives_a_new_subscriber_its_last_event_or_a_miss() {
        let (queue, mut webhooks) = crate::webhooks::WebhookQueue::recorder();
        let app = App::new(
            AppConfig::new(Credentials::new("1", "key", "secret")),
            Metrics::new(),
            Some(queue),
        );
        let (first, mut first_rx) = app.connect().unwrap();
        app.subscribe(&first, "cache-scores", None).unwrap();
        let frames = texts(&mut first_rx);
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert!(frames[0].contains("subscription_succeeded"));
        assert!(frames[1].contains("pusher:cache_miss") && frames[1].contains("cache-scores"));
        assert!(webhooks.take().contains(&WebhookEvent::CacheMiss {
            channel: "cache-scores".into()
        }));

        for n in 1..=3 {
            let frame = protocol::frame("score", Some("cache-scores"), format!("{n}"));
            app.publish("cache-scores", &frame, None);
        }
        // Published with nobody subscribed: kept all the same.
        app.publish(
            "cache-empty",
            &protocol::frame("e", Some("cache-empty"), "x"),
            None,
        );
        let (second, mut second_rx) = app.connect().unwrap();
        app.subscribe(&second, "cache-scores", None).unwrap();
        let frames = texts(&mut second_rx);
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert!(
            frames[1].contains("\"score\"") && frames[1].contains("\"3\""),
            "only the last: {frames:?}"
        );
        app.subscribe(&second, "cache-empty", None).unwrap();
        assert!(texts(&mut second_rx)[1].contains("\"e\""));
        // A plain channel keeps nothing.
        app.publish("scores", &protocol::frame("s", Some("scores"), "1"), None);
        app.subscribe(&second, "scores", None).unwrap();
        assert_eq!(texts(&mut second_rx).len(), 1);
    }

    #[test]
    fn subscription_counts_are_told_at_most_once_a_second_per_channel() {
        let (queue, mut webhooks) = crate::webhooks::WebhookQueue::recorder();
        let mut config = AppConfig::new(Credentials::new("1", "key", "secret"));
        config.subscription_count = true;
        let app = App::new(config, Metrics::new(), Some(queue));
        let (early, mut early_rx) = app.connect().unwrap();
        app.subscribe(&early, "room", None).unwrap();
        texts(&mut early_rx);
        let start = std::time::Instant::now();
        app.tell_counts(start);
        let told = texts(&mut early_rx);
        assert_eq!(told.len(), 1);
        assert!(
            told[0].contains("pusher_internal:subscription_count")
                && told[0].contains("\"subscription_count\":1")
        );

        // A burst within the interval is told once, at its end, with the final count.
        let mut receivers = Vec::new();
        for _ in 0..50 {
            let (socket, rx) = app.connect().unwrap();
            app.subscribe(&socket, "room", None).unwrap();
            receivers.push(rx);
        }
        app.tell_counts(start + COUNT_TICK);
        assert!(texts(&mut early_rx).is_empty(), "too soon after the last");
        app.tell_counts(start + COUNT_INTERVAL + COUNT_TICK);
        let told = texts(&mut early_rx);
        assert_eq!(told.len(), 1);
        assert!(told[0].contains("\"subscription_count\":51"), "{told:?}");
        app.tell_counts(start + 3 * COUNT_INTERVAL);
        assert!(texts(&mut early_rx).is_empty(), "nothing changed since");
        let counted: Vec<u64> = webhooks
            .take()
            .into_iter()
            .filter_map(|w| match w {
                WebhookEvent::SubscriptionCount {
                    subscription_count, ..
                } => Some(subscription_count),
                _ => None,
            })
            .collect();
        assert_eq!(counted, [1, 51]);

        // Presence channels have member counts instead.
        app.subscribe(&early, "presence-x", member("ann")).unwrap();
        texts(&mut early_rx);
        app.tell_counts(start + 5 * COUNT_INTERVAL);
        assert!(texts(&mut early_rx).is_empty());
    }

    #[test]
    fn subscription_counts_are_off_unless_enabled() {
        let app = app();
        let (a, mut rx) = app.connect().unwrap();
        app.subscribe(&a, "room", None).unwrap();
        texts(&mut rx);
        app.tell_counts(std::time::Instant::now() + COUNT_INTERVAL);
        assert!(texts(&mut rx).is_empty());
    }

    fn watchlist_events(frames: &[String]) -> Vec<String> {
        frames
            .iter()
            .filter(|f| f.contains("pusher_internal:watchlist_events"))
            .cloned()
            .collect()
    }

    #[test]
    fn a_watchlist_tells_who_is_online_now_and_who_comes_and_goes() {
        let app = app();
        let (bob, _) = app.connect().unwrap();
        app.sign_in(&bob, "bob");
        let (ann, mut ann_rx) = app.connect().unwrap();
        let watch = ["bob".to_owned(), "cat".to_owned()];
        let answer = protocol::frame("pusher:signin_success", None, json!({}));
        assert!(app.sign_in_watching(&ann, "ann", &watch, Some(answer)));
        let frames = texts(&mut ann_rx);
        assert!(
            frames[0].contains("signin_success"),
            "the answer first: {frames:?}"
        );
        assert_eq!(watchlist_events(&frames).len(), 1);
        assert!(
            frames[1].contains(r#"{"name":"online","user_ids":["bob"]}"#),
            "{frames:?}"
        );

        // cat on two connections: online with the first, offline after the last.
        let (cat1, _) = app.connect().unwrap();
        let (cat2, _) = app.connect().unwrap();
        app.sign_in(&cat1, "cat");
        app.sign_in(&cat2, "cat");
        let frames = texts(&mut ann_rx);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(frames[0].contains(r#"{"name":"online","user_ids":["cat"]}"#));
        app.disconnect(&cat1);
        assert!(texts(&mut ann_rx).is_empty(), "still on another connection");
        app.disconnect(&cat2);
        let frames = texts(&mut ann_rx);
        assert!(
            frames[0].contains(r#"{"name":"offline","user_ids":["cat"]}"#),
            "{frames:?}"
        );
        // Someone not watched comes and goes unannounced.
        let (dan, _) = app.connect().unwrap();
        app.sign_in(&dan, "dan");
        app.disconnect(&dan);
        assert!(texts(&mut ann_rx).is_empty());
        // A watcher gone is forgotten.
        app.disconnect(&ann);
        assert!(app.read().watchers.is_empty());
    }

    #[test]
    fn a_watchlist_longer_than_a_hundred_or_not_a_list_is_refused() {
        let parse = |json: &str| {
            serde_json::from_str::<protocol::UserData>(json)
                .unwrap()
                .watchlist_ids()
        };
        assert_eq!(
            parse(r#"{"id":"a","watchlist":["b",2,"b"]}"#).unwrap(),
            ["b", "2"]
        );
        assert_eq!(parse(r#"{"id":"a"}"#).unwrap(), Vec::<String>::new());
        assert!(parse(r#"{"id":"a","watchlist":"b"}"#).is_err());
        assert!(parse(r#"{"id":"a","watchlist":[{"x":1}]}"#).is_err());
        let long: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        assert!(parse(&json!({ "id": "a", "watchlist": long }).to_string()).is_err());
    }

    #[test]
    fn a_small_connection_is_removed_in_one_step() {
        let app = app();
        let (a, _ra) = app.connect().unwrap();
        app.subscribe(&a, "news", None).unwrap();
        app.between_steps
            .set(StepHook(Box::new(|_: &App| panic!("no second step"))))
            .unwrap();
        app.disconnect(&a);
        assert!(app.read().channels.is_empty());
    }

    #[test]
    fn subscriptions_beyond_the_cap_are_refused_and_the_user_channel_is_not_counted() {
        let app = app_with(|c| c.max_channels_per_connection = 2);
        let (a, _ra) = app.connect().unwrap();
        assert!(app.sign_in(&a, "42"));
        app.subscribe(&a, "one", None).unwrap();
        app.subscribe(&a, "two", None).unwrap();
        assert_eq!(
            app.subscribe(&a, "three", None),
            Err(SubscribeError::TooManyChannels(2))
        );
        assert!(!app.read().channels.contains_key("three"), "nothing added");
        // Subscribing again to one it has is no new channel.
        app.subscribe(&a, "two", None).unwrap();
        app.unsubscribe(&a, "one");
        app.subscribe(&a, "three", None).unwrap();
    }

    #[test]
    fn connections_per_address_are_capped_and_freed_when_their_socket_ends() {
        let app = app_with(|c| c.max_connections_per_address = 2);
        let here: IpAddr = "192.0.2.1".parse().unwrap();
        let there: IpAddr = "192.0.2.2".parse().unwrap();
        let (a, ra) = app.connect_from(Some(here)).unwrap();
        let (b, rb) = app.connect_from(Some(here)).unwrap();
        assert_eq!(
            app.connect_from(Some(here)).map(|_| ()),
            Err(ConnectError::TooManyFromAddress)
        );
        assert_eq!(app.metrics().connections_refused_per_address.get(), 1);
        let (elsewhere, _) = app.connect_from(Some(there)).expect("another address");
        assert!(
            app.connect_from(None).is_ok(),
            "an unknown address is not counted"
        );
        // Removed from the app, but its socket is still open: still counted.
        app.close(&a, Outbound::Close(4009, "bye".into()));
        assert!(app.connect_from(Some(here)).is_err());
        drop(ra);
        assert_eq!(app.open_connections_from(here), 1);
        let (c, rc) = app.connect_from(Some(here)).unwrap();
        // A socket ended but still in the app (its teardown not done) holds
        // its place too.
        drop(rb);
        drop(rc);
        assert_eq!(app.open_connections_from(here), 2);
        app.disconnect(&b);
        app.disconnect(&c);
        assert_eq!(app.open_connections_from(here), 0);
        app.disconnect(&elsewhere);
        assert_eq!(
            app.counted_addresses(),
            0,
            "no entry kept for an idle address"
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let app = app_with(|c| c.max_connections_per_address = 1);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _a = app.connect_from(Some(one)).unwrap();
        assert!(app.connect_from(Some(same_64)).is_err());
        assert!(app.connect_from(Some(other_64)).is_ok());
    }

    #[test]
    fn a_connection_refused_for_capacity_gives_its_address_place_back() {
        let app = app_with(|c| {
            c.max_connections = 1;
            c.max_connections_per_address = 5;
        });
        let here: IpAddr = "192.0.2.1".parse().unwrap();
        let _a = app.connect_from(Some(here)).unwrap();
        assert_eq!(
            app.connect_from(Some(here)).map(|_| ()),
            Err(ConnectError::OverCapacity)
        );
        assert_eq!(app.open_connections_from(here), 1);
    }

    #[test]
    fn connect_and_disconnect_keep_the_connection_gauge() {
        let app = app();
        let (a, _ra) = app.connect().unwrap();
        let (_b, _rb) = app.connect().unwrap();
        assert_eq!(app.metrics().connections.get(), 2);
        app.disconnect(&a);
        assert_eq!(app.metrics().connections.get(), 1);
        assert_eq!(app.connection_count(), 1);
    }

    #[test]
    fn subscribe_and_unsubscribe_keep_the_channel_gauge() {
        let app = app();
        let (a, _ra) = app.connect().unwrap();
        app.subscribe(&a, "one", None).unwrap();
        app.subscribe(&a, "two", None).unwrap();
        assert_eq!(app.metrics().channels.get(), 2);
        app.unsubscribe(&a, "one");
        assert_eq!(app.metrics().channels.get(), 1);
        app.disconnect(&a);
        assert_eq!(app.metrics().channels.get(), 0);
    }

    #[test]
    fn subscribe_of_unknown_connection_is_refused_and_creates_nothing() {
        let app = app();
        assert_eq!(
            app.subscribe("1.1", "news", None),
            Err(SubscribeError::UnknownConnection)
        );
        assert!(app.read().channels.is_empty());
    }

    #[test]
    fn refused_presence_member_leaves_no_empty_channel_behind() {
        let app = app_with(|c| c.max_presence_members = 0);
        let (a, mut ra) = app.connect().unwrap();
        assert_eq!(
            app.subscribe(&a, "presence-room", member("alice")),
            Err(SubscribeError::PresenceFull(0))
        );
        assert!(app.read().channels.is_empty());
        assert!(!app.is_subscribed(&a, "presence-room"));
        assert!(drain(&mut ra).is_empty());
    }

    #[test]
    fn refused_presence_member_does_not_disturb_the_members() {
        let app = app_with(|c| c.max_presence_members = 1);
        let (a, _ra) = app.connect().unwrap();
        let (b, _rb) = app.connect().unwrap();
        app.subscribe(&a, "presence-room", member("alice")).unwrap();
        assert!(app.subscribe(&b, "presence-room", member("bob")).is_err());
        let state = app.read();
        let channel = state.channels.get("presence-room").unwrap();
        assert_eq!(channel.subscribers.len(), 1);
        assert_eq!(channel.members.len(), 1);
        assert!(state
            .connections
            .get(b.as_ref())
            .unwrap()
            .channels
            .is_empty());
    }

    #[test]
    fn presence_member_counts_its_connections() {
        let app = app();
        let (a, _ra) = app.connect().unwrap();
        let (b, _rb) = app.connect().unwrap();
        app.subscribe(&a, "presence-room", member("alice")).unwrap();
        app.subscribe(&b, "presence-room", member("alice")).unwrap();
        assert_eq!(
            app.read().channels["presence-room"].members["alice"].connections,
            2
        );
        app.unsubscribe(&a, "presence-room");
        assert_eq!(
            app.read().channels["presence-room"].members["alice"].connections,
            1
        );
        // Unsubscribing again changes nothing.
        app.unsubscribe(&a, "presence-room");
        assert_eq!(
            app.read().channels["presence-room"].members["alice"].connections,
            1
        );
        app.unsubscribe(&b, "presence-room");
        assert!(!app.read().channels.contains_key("presence-room"));
    }

    #[test]
    fn presence_members_keep_the_first_connections_info() {
        let app = app();
        let (a, _ra) = app.connect().unwrap();
        let (b, _rb) = app.connect().unwrap();
        app.subscribe(&a, "presence-room", Some(("alice".into(), Some(json!(1)))))
            .unwrap();
        app.subscribe(&b, "presence-room", Some(("alice".into(), Some(json!(2)))))
            .unwrap();
        assert_eq!(
            app.presence_members("presence-room"),
            [("alice".to_owned(), Some(json!(1)))]
        );
    }

    #[test]
    fn presence_data_is_only_for_presence_channels() {
        let channel = Channel::default();
        assert_eq!(presence_data("news", Some(&channel), None), None);
        assert_eq!(presence_data("private-x", Some(&channel), None), None);
        let data: Value =
            serde_json::from_str(&presence_data("presence-x", Some(&channel), None).unwrap())
                .unwrap();
        assert_eq!(
            data,
            json!({ "presence": { "ids": [], "hash": {}, "count": 0 } })
        );
    }

    #[test]
    fn sign_in_of_unknown_connection_is_false() {
        let app = app();
        assert!(!app.sign_in("1.1", "42"));
        assert!(app.read().users.is_empty());
        assert!(app.read().channels.is_empty());
    }

    #[test]
    fn signing_in_twice_as_the_same_user_subscribes_once() {
        let app = app();
        let (a, mut ra) = app.connect().unwrap();
        assert!(app.sign_in(&a, "42"));
        assert!(app.sign_in(&a, "42"));
        assert_eq!(app.read().users["42"].len(), 1);
        let frame = protocol::frame("e", Some("#server-to-user-42"), "{}");
        assert_eq!(app.publish("#server-to-user-42", &frame, None), 1);
        assert_eq!(drain(&mut ra).len(), 1);
    }

    #[test]
    fn user_channels_are_not_listed() {
        let app = app();
        let (a, _ra) = app.connect().unwrap();
        app.sign_in(&a, "42");
        app.subscribe(&a, "news", None).unwrap();
        let names: Vec<String> = app.channels("").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["news"]);
        assert!(app.channels("#").is_empty());
    }

    #[test]
    fn channels_filter_by_prefix() {
        let app = app();
        let (a, _ra) = app.connect().unwrap();
        for channel in ["news-1", "news-2", "sports"] {
            app.subscribe(&a, channel, None).unwrap();
        }
        let mut names: Vec<String> = app.channels("news-").into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, ["news-1", "news-2"]);
    }

    #[test]
    fn publish_counts_the_connections_reached() {
        let app = app();
        let (a, _ra) = app.connect().unwrap();
        let (b, _rb) = app.connect().unwrap();
        app.subscribe(&a, "news", None).unwrap();
        app.subscribe(&b, "news", None).unwrap();
        let frame = protocol::frame("e", Some("news"), "{}");
        assert_eq!(app.publish("news", &frame, None), 2);
        assert_eq!(app.publish("news", &frame, Some(&a)), 1);
        assert_eq!(app.publish("nobody", &frame, None), 0);
    }

    #[test]
    fn frames_queued_are_counted_in_messages_out() {
        let app = app();
        let (a, _ra) = app.connect().unwrap();
        app.subscribe(&a, "news", None).unwrap();
        let before = app.metrics().messages_out.get();
        let frame = protocol::frame("e", Some("news"), "{}");
        app.publish("news", &frame, None);
        app.publish("news", &frame, None);
        assert_eq!(app.metrics().messages_out.get(), before + 2);
    }

    #[test]
    fn publish_to_a_connection_whose_task_ended_does_not_panic() {
        let app = app();
        let (a, ra) = app.connect().unwrap();
        app.subscribe(&a, "news", None).unwrap();
        drop(ra);
        let frame = protocol::frame("e", Some("news"), "{}");
        assert_eq!(
            app.publish("news", &frame, None),
            0,
            "not counted as reached"
        );
        app.send_to(&a, Outbound::Close(4200, "bye".into()));
        assert_eq!(app.connection_count(), 0, "a close sent removes it");
        assert_eq!(app.publish("news", &frame, None), 0);
    }

    #[test]
    fn a_removed_connection_holds_its_place_until_its_socket_is_gone() {
        let app = app_with(|c| c.max_connections = 1);
        let (a, body) = app.connect().unwrap();
        app.close(&a, Outbound::Close(4100, "Too slow".into()));
        assert_eq!(app.connection_count(), 0);
        assert!(app.connect().is_none(), "its client has not read the close");
        drop(body);
        assert!(app.connect().is_some());
    }

    #[test]
    fn relay_from_a_non_subscriber_is_refused() {
        let app = app();
        let (a, _ra) = app.connect().unwrap();
        let (b, mut rb) = app.connect().unwrap();
        app.subscribe(&b, "private-chat", None).unwrap();
        drain(&mut rb);
        assert!(!app.relay_client_event(&a, "private-chat", "client-x", &json!({})));
        assert!(!app.relay_client_event(&a, "private-nobody", "client-x", &json!({})));
        assert!(drain(&mut rb).is_empty());
        assert!(app.relay_client_event(&b, "private-chat", "client-x", &json!({})));
        assert!(drain(&mut rb).is_empty(), "not echoed to the sender");
    }

    #[test]
    fn close_all_asks_every_connection_to_close() {
        let app = app();
        let (a, mut ra) = app.connect().unwrap();
        let (_b, mut rb) = app.connect().unwrap();
        app.subscribe(&a, "news", None).unwrap();
        drain(&mut ra);
        app.close_all(4200, "going away");
        assert_eq!(app.connection_count(), 0, "removed at once");
        assert!(app.channels("").is_empty());
        for receiver in [&mut ra, &mut rb] {
            assert_eq!(
                drain(receiver),
                [Outbound::Close(4200, "going away".into())]
            );
        }
    }

    #[test]
    fn disconnect_forgets_the_connection_everywhere() {
        let app = app();
        let (a, _ra) = app.connect().unwrap();
        app.subscribe(&a, "news", None).unwrap();
        app.subscribe(&a, "presence-room", member("alice")).unwrap();
        app.sign_in(&a, "alice");
        app.disconnect(&a);
        let state = app.read();
        assert!(state.connections.is_empty());
        assert!(state.channels.is_empty(), "{:?}", state.channels.keys());
        assert!(state.users.is_empty());
    }
}

/// Apps of several nodes of one cluster, their reports carried by hand.
#[cfg(test)]
mod cluster_tests {
    use super::*;
    use crate::cluster::{apply_to_app, Announce, ClusterLink};
    use crate::webhooks::{Recorded, WebhookQueue};
    use realtime_core::Credentials;
    use serde_json::json;
    use tokio::sync::mpsc;

    struct Node {
        app: App,
        id: NodeId,
        reports: mpsc::Receiver<Report>,
        webhooks: Recorded,
    }

    fn node(id: NodeId, leader: bool, change: impl FnOnce(&mut AppConfig)) -> Node {
        let mut config = AppConfig::new(Credentials::new("1", "key", "secret"));
        change(&mut config);
        let (link, reports) = ClusterLink::detached(id);
        let (queue, webhooks) = WebhookQueue::recorder();
        let app = App::new(config, Metrics::new(), Some(queue)).with_cluster(link);
        app.set_cluster_leader(leader);
        Node {
            app,
            id,
            reports,
            webhooks,
        }
    }

    /// Carries every report queued so far to every other node, until none is left.
    fn carry(nodes: &mut [&mut Node]) {
        loop {
            let mut moved = false;
            for from in 0..nodes.len() {
                while let Ok(report) = nodes[from].reports.try_recv() {
                    moved = true;
                    let sender = nodes[from].id;
                    for (to, node) in nodes.iter().enumerate() {
                        if to != from {
                            apply_to_app(&node.app, sender, report.clone(), Announce::IfLeading);
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn drain(receiver: &mut OutboxReceiver) -> Vec<String> {
        let mut all = Vec::new();
        while let Ok(outbound) = receiver.try_recv() {
            if let Outbound::Frame(frame) = outbound {
                all.push(frame.text().to_string());
            }
        }
        all
    }

    fn member(id: &str) -> Option<(String, Option<Value>)> {
        Some((id.to_owned(), Some(json!({ "name": id }))))
    }

    fn count(frames: &[String], event: &str) -> usize {
        frames.iter().filter(|f| f.contains(event)).count()
    }

    #[test]
    fn presence_is_the_clusters_and_each_change_is_told_once() {
        let mut a = node(1, true, |_| {});
        let mut b = node(2, false, |_| {});
        let (ann, mut ann_rx) = a.app.connect().unwrap();
        let (bob, mut bob_rx) = b.app.connect().unwrap();
        a.app
            .subscribe(&ann, "presence-room", member("ann"))
            .unwrap();
        carry(&mut [&mut a, &mut b]);
        b.app
            .subscribe(&bob, "presence-room", member("bob"))
            .unwrap();
        carry(&mut [&mut a, &mut b]);

        // bob's subscription_succeeded lists ann, on the other node.
        let bob_frames = drain(&mut bob_rx);
        let succeeded = bob_frames
            .iter()
            .find(|f| f.contains("subscription_succeeded"))
            .unwrap();
        assert!(
            succeeded.contains("ann") && succeeded.contains("\\\"count\\\":2"),
            "{succeeded}"
        );
        let ann_frames = drain(&mut ann_rx);
        assert_eq!(count(&ann_frames, "member_added"), 1);
        assert!(ann_frames
            .iter()
            .any(|f| f.contains("member_added") && f.contains("bob")));

        // Both nodes answer the same for the cluster.
        for app in [&a.app, &b.app] {
            let mut users = app.presence_users("presence-room");
            users.sort();
            assert_eq!(users, ["ann", "bob"]);
            assert_eq!(
                app.channel_info("presence-room").subscription_count,
                Some(2)
            );
            assert_eq!(app.channel_info("presence-room").user_count, Some(2));
        }

        // Webhooks come from the leader alone, once each.
        let leader = a.webhooks.take();
        assert_eq!(
            leader,
            vec![
                WebhookEvent::ChannelOccupied {
                    channel: "presence-room".into()
                },
                WebhookEvent::MemberAdded {
                    channel: "presence-room".into(),
                    user_id: "ann".into()
                },
                WebhookEvent::MemberAdded {
                    channel: "presence-room".into(),
                    user_id: "bob".into()
                },
            ]
        );
        assert_eq!(b.webhooks.take(), vec![]);

        b.app.disconnect(&bob);
        carry(&mut [&mut a, &mut b]);
        let ann_frames = drain(&mut ann_rx);
        assert_eq!(count(&ann_frames, "member_removed"), 1);
        assert_eq!(
            a.webhooks.take(),
            vec![WebhookEvent::MemberRemoved {
                channel: "presence-room".into(),
                user_id: "bob".into()
            }]
        );
        a.app.disconnect(&ann);
        carry(&mut [&mut a, &mut b]);
        assert_eq!(
            a.webhooks.take(),
            vec![
                WebhookEvent::MemberRemoved {
                    channel: "presence-room".into(),
                    user_id: "ann".into()
                },
                WebhookEvent::ChannelVacated {
                    channel: "presence-room".into()
                },
            ]
        );
        assert!(b.app.channels("").is_empty() && a.app.channels("").is_empty());
    }

    #[test]
    fn a_user_on_two_nodes_is_removed_after_the_last_connection() {
        let mut a = node(1, true, |_| {});
        let mut b = node(2, false, |_| {});
        let mut c = node(3, false, |_| {});
        let (watcher, mut watcher_rx) = c.app.connect().unwrap();
        c.app
            .subscribe(&watcher, "presence-room", member("carol"))
            .unwrap();
        let (ann_a, _) = a.app.connect().unwrap();
        let (ann_b, _) = b.app.connect().unwrap();
        a.app
            .subscribe(&ann_a, "presence-room", member("ann"))
            .unwrap();
        carry(&mut [&mut a, &mut b, &mut c]);
        b.app
            .subscribe(&ann_b, "presence-room", member("ann"))
            .unwrap();
        carry(&mut [&mut a, &mut b, &mut c]);
        a.app.disconnect(&ann_a);
        carry(&mut [&mut a, &mut b, &mut c]);
        let frames = drain(&mut watcher_rx);
        assert_eq!(count(&frames, "member_added"), 1, "{frames:?}");
        assert_eq!(count(&frames, "member_removed"), 0);
        b.app.disconnect(&ann_b);
        carry(&mut [&mut a, &mut b, &mut c]);
        assert_eq!(count(&drain(&mut watcher_rx), "member_removed"), 1);
    }

    #[test]
    fn the_member_limit_counts_the_cluster() {
        let mut a = node(1, true, |c| c.max_presence_members = 2);
        let mut b = node(2, false, |c| c.max_presence_members = 2);
        let (ann, _) = a.app.connect().unwrap();
        let (bob, _) = a.app.connect().unwrap();
        a.app
            .subscribe(&ann, "presence-room", member("ann"))
            .unwrap();
        a.app
            .subscribe(&bob, "presence-room", member("bob"))
            .unwrap();
        carry(&mut [&mut a, &mut b]);
        let (cat, _) = b.app.connect().unwrap();
        assert_eq!(
            b.app.subscribe(&cat, "presence-room", member("cat")),
            Err(SubscribeError::PresenceFull(2))
        );
        // A member already present elsewhere may join on another node.
        let (ann_again, _) = b.app.connect().unwrap();
        b.app
            .subscribe(&ann_again, "presence-room", member("ann"))
            .unwrap();
    }

    #[test]
    fn events_reach_every_node_but_the_excluded_socket() {
        let mut a = node(1, true, |_| {});
        let mut b = node(2, false, |_| {});
        let (one, mut one_rx) = b.app.connect().unwrap();
        let (two, mut two_rx) = b.app.connect().unwrap();
        b.app.subscribe(&one, "news", None).unwrap();
        b.app.subscribe(&two, "news", None).unwrap();
        carry(&mut [&mut a, &mut b]);
        drain(&mut one_rx);
        drain(&mut two_rx);
        assert_eq!(a.app.channel_info("news").subscription_count, Some(2));
        let frame = protocol::frame("update", Some("news"), "{}".to_owned());
        assert_eq!(a.app.publish("news", &frame, Some(&two)), 0, "none here");
        carry(&mut [&mut a, &mut b]);
        assert_eq!(count(&drain(&mut one_rx), "update"), 1);
        assert_eq!(count(&drain(&mut two_rx), "update"), 0);
        // The channel was occupied by b's subscribers: the leader said so once.
        assert_eq!(
            a.webhooks.take(),
            vec![WebhookEvent::ChannelOccupied {
                channel: "news".into()
            }]
        );
    }

    #[test]
    fn a_forgotten_node_takes_its_members_and_subscribers_with_it() {
        let mut a = node(1, true, |_| {});
        let mut b = node(2, false, |_| {});
        let (ann, mut ann_rx) = a.app.connect().unwrap();
        a.app
            .subscribe(&ann, "presence-room", member("ann"))
            .unwrap();
        let (bob, _) = b.app.connect().unwrap();
        b.app
            .subscribe(&bob, "presence-room", member("bob"))
            .unwrap();
        b.app.subscribe(&bob, "other", None).unwrap();
        carry(&mut [&mut a, &mut b]);
        drain(&mut ann_rx);
        a.webhooks.take();
        // b dies: a forgets it (as its node does when the lease lapses).
        a.app
            .apply_peer_snapshot(b.id, &[], &[], Announce::IfLeading);
        assert_eq!(count(&drain(&mut ann_rx), "member_removed"), 1);
        assert_eq!(a.app.presence_users("presence-room"), ["ann"]);
        assert_eq!(a.app.channel_info("other").occupied, Some(false));
        let mut webhooks = a.webhooks.take();
        webhooks.sort_by_key(|w| format!("{w:?}"));
        assert_eq!(
            webhooks,
            vec![
                WebhookEvent::ChannelVacated {
                    channel: "other".into()
                },
                WebhookEvent::MemberRemoved {
                    channel: "presence-room".into(),
                    user_id: "bob".into()
                },
            ]
        );
    }

    #[test]
    fn a_snapshot_brings_a_new_node_up_to_date() {
        let mut a = node(1, true, |_| {});
        let (ann, _) = a.app.connect().unwrap();
        a.app
            .subscribe(&ann, "presence-room", member("ann"))
            .unwrap();
        while a.reports.try_recv().is_ok() {}
        let mut b = node(2, false, |_| {});
        a.app.report_snapshot();
        carry(&mut [&mut a, &mut b]);
        assert_eq!(b.app.presence_users("presence-room"), ["ann"]);
        assert_eq!(b.app.channels("presence-").len(), 1);
    }

    #[test]
    fn a_watched_user_is_online_while_any_node_has_them() {
        let mut a = node(1, true, |_| {});
        let mut b = node(2, false, |_| {});
        let (ann, mut ann_rx) = a.app.connect().unwrap();
        a.app
            .sign_in_watching(&ann, "ann", &["bob".to_owned()], None);
        let (bob1, _) = b.app.connect().unwrap();
        let (bob2, _) = a.app.connect().unwrap();
        b.app.sign_in(&bob1, "bob");
        carry(&mut [&mut a, &mut b]);
        assert_eq!(count(&drain(&mut ann_rx), r#""name":"online""#), 1);
        a.app.sign_in(&bob2, "bob");
        carry(&mut [&mut a, &mut b]);
        b.app.disconnect(&bob1);
        carry(&mut [&mut a, &mut b]);
        assert!(drain(&mut ann_rx).is_empty(), "bob is still on a");
        a.app.disconnect(&bob2);
        carry(&mut [&mut a, &mut b]);
        assert_eq!(count(&drain(&mut ann_rx), r#""name":"offline""#), 1);
        // A watcher signing in on another node learns bob is online there.
        b.app.sign_in(&b.app.connect().unwrap().0, "bob");
        carry(&mut [&mut a, &mut b]);
        let (cat, mut cat_rx) = a.app.connect().unwrap();
        a.app
            .sign_in_watching(&cat, "cat", &["bob".to_owned()], None);
        assert_eq!(count(&drain(&mut cat_rx), r#""user_ids":["bob"]"#), 1);
    }

    #[test]
    fn cache_and_counts_follow_the_cluster() {
        let mut a = node(1, true, |c| c.subscription_count = true);
        let mut b = node(2, false, |c| c.subscription_count = true);
        let frame = protocol::frame("score", Some("cache-x"), "7".to_owned());
        a.app.publish("cache-x", &frame, None);
        carry(&mut [&mut a, &mut b]);
        let (late, mut late_rx) = b.app.connect().unwrap();
        b.app.subscribe(&late, "cache-x", None).unwrap();
        let frames = drain(&mut late_rx);
        assert!(frames[1].contains("score"), "b kept a's event: {frames:?}");

        let (one, mut one_rx) = a.app.connect().unwrap();
        a.app.subscribe(&one, "room", None).unwrap();
        let (two, _) = b.app.connect().unwrap();
        b.app.subscribe(&two, "room", None).unwrap();
        carry(&mut [&mut a, &mut b]);
        drain(&mut one_rx);
        a.app.tell_counts(std::time::Instant::now());
        assert_eq!(count(&drain(&mut one_rx), r#""subscription_count":2"#), 1);
    }

    #[test]
    fn terminating_a_user_reaches_every_node() {
        let mut a = node(1, true, |_| {});
        let mut b = node(2, false, |_| {});
        let (socket, _rx) = b.app.connect().unwrap();
        b.app.sign_in(&socket, "ann");
        assert_eq!(a.app.terminate_user("ann"), 0);
        carry(&mut [&mut a, &mut b]);
        assert_eq!(b.app.connection_count(), 0);
    }
}
