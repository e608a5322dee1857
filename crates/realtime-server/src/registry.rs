//! The shared state of one app: its connections, channels, presence members
//! and signed-in users, and the fan-out of events to subscribers.
//!
//! Every change goes through [`App`]'s methods under one lock, so channel
//! occupancy and presence membership are always consistent with each other;
//! frames are serialised once and shared by every recipient. No call holds
//! the lock for long: a leaving connection lets go of its channels a step at
//! a time ([`LEAVE_STEP`]).

use std::collections::{hash_set, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytestring::ByteString;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use realtime_core::{ChannelInfo, ChannelKind, WebhookEvent};
use serde_json::Value;

use crate::config::AppConfig;
use crate::metrics::Metrics;
use crate::outbox::{
    AddressConnections, OpenConnections, Outbound, OutboxReceiver, OutboxSender, TextFrame,
    TrySendError,
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
}

#[derive(Debug, Default)]
struct State {
    connections: HashMap<Arc<str>, Connection>,
    channels: HashMap<Arc<str>, Channel>,
    users: HashMap<Arc<str>, HashSet<Arc<str>>>,
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
}

impl Removal {
    /// Whether every channel was left.
    pub fn is_done(&self) -> bool {
        self.channels.len() == 0
    }

    /// Channels still to leave.
    pub fn channels_left(&self) -> usize {
        self.channels.len()
    }
}

/// One app's live state.
#[derive(Debug)]
pub struct App {
    config: AppConfig,
    state: RwLock<State>,
    /// Open sockets, registered or not: what `max_connections` limits.
    open: OpenConnections,
    /// The same, by client address: what `max_connections_per_address` limits.
    addresses: AddressConnections,
    next_socket: AtomicU64,
    metrics: Metrics,
    webhooks: Option<WebhookQueue>,
    /// Called between the steps of a connection's teardown, lock released.
    #[cfg(test)]
    between_steps: std::sync::OnceLock<tests::StepHook>,
}

impl App {
    /// A new app with no connection.
    pub fn new(config: AppConfig, metrics: Metrics, webhooks: Option<WebhookQueue>) -> Self {
        App {
            config,
            state: RwLock::new(State::default()),
            open: OpenConnections::default(),
            addresses: AddressConnections::default(),
            next_socket: AtomicU64::new(rand::random::<u32>() as u64),
            metrics,
            webhooks,
            #[cfg(test)]
            between_steps: std::sync::OnceLock::new(),
        }
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
        if let Some(slot) = slot {
            receiver.hold_address(slot);
        }
        let socket_id = self.new_socket_id();
        let mut state = self.write();
        state.connections.insert(
            socket_id.clone(),
            Connection {
                outbox,
                channels: HashSet::new(),
                user_id: None,
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

    /// Removes a connection in bounded steps on this thread (see
    /// [`App::begin_removal`]).
    fn remove(&self, socket_id: &str, last: Option<Outbound>) {
        let Some(mut removal) = self.begin_removal(socket_id, last) else {
            return;
        };
        while !removal.is_done() {
            #[cfg(test)]
            if let Some(hook) = self.between_steps.get() {
                (hook.0)(self);
            }
            self.continue_removal(&mut removal);
        }
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
                if let Some(sockets) = state.users.get_mut(user_id) {
                    sockets.remove(socket_id);
                    if sockets.is_empty() {
                        state.users.remove(user_id);
                    }
                }
            }
            self.metrics.connections.set(state.connections.len() as i64);
            let mut removal = Removal {
                socket_id: socket_key,
                channels: conn.channels.into_iter(),
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
                let data = presence_data(channel, state.channels.get(channel));
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
            let mut member_added = None;
            if let Some((user_id, info)) = member {
                let user_id: Arc<str> = Arc::from(user_id);
                match entry.members.get_mut(&user_id) {
                    Some(existing) => existing.connections += 1,
                    None => {
                        if entry.members.len() >= self.config.max_presence_members {
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
            let occupied_now = entry.subscribers.len() == 1;
            if let Some((user_id, info)) = &member_added {
                let frame = TextFrame::from(protocol::frame(
                    "pusher_internal:member_added",
                    Some(channel),
                    serde_json::json!({ "user_id": user_id.as_ref(), "user_info": info })
                        .to_string(),
                ));
                for (other, subscriber) in
                    entry.subscribers.iter().filter(|(s, _)| **s != socket_key)
                {
                    deliveries.send(other, &subscriber.outbox, frame.clone());
                }
            }
            succeeded = presence_data(channel, state.channels.get(channel));
            if let Some(conn) = state.connections.get_mut(&socket_key) {
                conn.channels.insert(channel_key.clone());
            }
            self.metrics.channels.set(state.channels.len() as i64);
            if occupied_now {
                self.webhook(WebhookEvent::ChannelOccupied {
                    channel: channel.to_owned(),
                });
            }
            if let Some((user_id, _)) = member_added {
                self.webhook(WebhookEvent::MemberAdded {
                    channel: channel.to_owned(),
                    user_id: user_id.to_string(),
                });
            }
            deliveries.send(
                &socket_key,
                &outbox,
                succeeded_frame(channel, succeeded).into(),
            );
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
                let frame = TextFrame::from(protocol::frame(
                    "pusher_internal:member_removed",
                    Some(channel),
                    serde_json::json!({ "user_id": user_id.as_ref() }).to_string(),
                ));
                for (other, subscriber) in &entry.subscribers {
                    deliveries.send(other, &subscriber.outbox, frame.clone());
                }
                self.webhook(WebhookEvent::MemberRemoved {
                    channel: channel.to_owned(),
                    user_id: user_id.to_string(),
                });
            }
        }
        if entry.subscribers.is_empty() {
            state.channels.remove(channel);
            self.webhook(WebhookEvent::ChannelVacated {
                channel: channel.to_owned(),
            });
        }
    }

    /// Marks a connection as signed in as `user_id` and subscribes it to the
    /// user's `#server-to-user-` channel.
    pub fn sign_in(&self, socket_id: &str, user_id: &str) -> bool {
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
            if let Some(sockets) = state.users.get_mut(&previous) {
                sockets.remove(&socket_key);
                if sockets.is_empty() {
                    state.users.remove(&previous);
                }
            }
        }
        state
            .users
            .entry(user)
            .or_default()
            .insert(socket_key.clone());
        if newly_subscribed {
            let entry = state.channels.entry(channel).or_default();
            entry.subscribers.insert(
                socket_key,
                Subscriber {
                    outbox,
                    user_id: None,
                },
            );
        }
        true
    }

    /// Closes every connection of a signed-in user.
    pub fn terminate_user(&self, user_id: &str) -> usize {
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

    /// Sends an event to every subscriber of `channel` but `except`. Answers
    /// how many connections it reached.
    pub fn publish(&self, channel: &str, frame: &ByteString, except: Option<&str>) -> usize {
        let mut deliveries = Deliveries::default();
        {
            let state = self.read();
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
        ChannelInfo {
            occupied: Some(entry.is_some()),
            user_count: (ChannelKind::of(channel) == ChannelKind::Presence)
                .then(|| entry.map_or(0, |e| e.members.len() as u64)),
            subscription_count: Some(entry.map_or(0, |e| e.subscribers.len() as u64)),
        }
    }

    /// Occupied channels whose name starts with `prefix` (user channels excluded).
    pub fn channels(&self, prefix: &str) -> Vec<(String, ChannelInfo)> {
        let state = self.read();
        state
            .channels
            .iter()
            .filter(|(name, _)| {
                name.starts_with(prefix) && ChannelKind::of(name) != ChannelKind::ServerToUser
            })
            .map(|(name, entry)| {
                let presence = ChannelKind::of(name) == ChannelKind::Presence;
                (
                    name.to_string(),
                    ChannelInfo {
                        occupied: None,
                        user_count: presence.then_some(entry.members.len() as u64),
                        subscription_count: Some(entry.subscribers.len() as u64),
                    },
                )
            })
            .collect()
    }

    /// The user ids of a presence channel's members.
    pub fn presence_users(&self, channel: &str) -> Vec<String> {
        let state = self.read();
        state
            .channels
            .get(channel)
            .map(|e| e.members.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// Members of a presence channel with their `user_info`.
    pub fn presence_members(&self, channel: &str) -> Vec<(String, Option<Value>)> {
        let state = self.read();
        state
            .channels
            .get(channel)
            .map(|e| {
                e.members
                    .iter()
                    .map(|(id, m)| (id.to_string(), m.info.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.read().connections.len()
    }

    /// Tells every connection to reconnect (the server is going away).
    pub fn close_all(&self, code: u16, reason: &str) {
        let sockets: Vec<Arc<str>> = self.read().connections.keys().cloned().collect();
        for socket in sockets {
            self.close(&socket, Outbound::Close(code, reason.to_owned()));
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

fn presence_data(name: &str, channel: Option<&Channel>) -> Option<String> {
    if ChannelKind::of(name) != ChannelKind::Presence {
        return None;
    }
    let channel = channel?;
    let ids: Vec<&str> = channel.members.keys().map(|k| k.as_ref()).collect();
    let hash: serde_json::Map<String, Value> = channel
        .members
        .iter()
        .map(|(id, m)| (id.to_string(), m.info.clone().unwrap_or(Value::Null)))
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
        let (_b, rb) = app.connect_from(Some(here)).unwrap();
        assert_eq!(
            app.connect_from(Some(here)).map(|_| ()),
            Err(ConnectError::TooManyFromAddress)
        );
        assert_eq!(app.metrics().connections_refused_per_address.get(), 1);
        assert!(app.connect_from(Some(there)).is_ok(), "another address");
        assert!(
            app.connect_from(None).is_ok(),
            "an unknown address is not counted"
        );
        // Removed from the app, but its socket is still open: still counted.
        app.close(&a, Outbound::Close(4009, "bye".into()));
        assert!(app.connect_from(Some(here)).is_err());
        drop(ra);
        assert_eq!(app.open_connections_from(here), 1);
        let (_c, rc) = app.connect_from(Some(here)).unwrap();
        drop(rb);
        drop(rc);
        assert_eq!(app.open_connections_from(here), 0);
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
        assert_eq!(presence_data("news", Some(&channel)), None);
        assert_eq!(presence_data("private-x", Some(&channel)), None);
        let data: Value =
            serde_json::from_str(&presence_data("presence-x", Some(&channel)).unwrap()).unwrap();
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
