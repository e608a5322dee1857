//! Core NATS (no JetStream) as the cluster's bus: one client that subscribes
//! to the subject and publishes on it. async-nats reconnects by itself; this
//! file turns its connection events into [`BusEvent`]s and keeps payloads
//! from piling up in its buffer while it is away. A node is present on the
//! bus through a subscription to its presence subject, which it answers: the
//! server drops it the moment the connection closes, and a request to a
//! subject nobody subscribes to is answered at once with "no responders".

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, ServerAddr, Subject, Subscriber};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::{
    fits, next, presence_subject, while_disconnected, Backoff, Backplane, BusError, BusEvent,
    BusObserver, NodeId, Outgoing,
};
use realtime_core::BoxFuture;

/// How long one connection attempt (TCP and the INFO/CONNECT exchange) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The client pings the server after this long without hearing from it and
/// gives the connection up after two unanswered pings: a hung server (or a
/// silent network) is noticed within about three intervals. The crate's
/// default of 60 s would leave a node publishing into the void for minutes.
const PING_INTERVAL: Duration = Duration::from_secs(2);

/// How long handing a payload (or a flush) to the client may take. It only
/// waits when the client's command queue is full, which happens when the
/// connection dropped a moment ago; past this the payload counts as dropped.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the round trip that proves a new connection subscribed (see
/// [`subscribed`]) may take.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a probe waits for a present node's answer. Only a node whose
/// subscription is gone is reported absent (the server says so at once); a
/// node that is slow to answer, or hung, counts as present.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A NATS server (or cluster of them, through the one URL) as the bus.
pub(super) struct NatsBus {
    server: ServerAddr,
}

impl NatsBus {
    /// Checks the URL without connecting.
    pub(super) fn new(url: &str) -> Result<Self, BusError> {
        let server = url
            .parse::<ServerAddr>()
            .map_err(|e| BusError::InvalidUrl(e.to_string()))?;
        Ok(NatsBus { server })
    }
}

impl Backplane for NatsBus {
    fn run(
        self: Box<Self>,
        subject: String,
        node: NodeId,
        outgoing: mpsc::Receiver<Outgoing>,
        incoming: mpsc::UnboundedSender<BusEvent>,
        observer: Arc<dyn BusObserver>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(run(
            self.server,
            subject,
            node,
            outgoing,
            incoming,
            observer,
        ))
    }
}

/// What the client's event callback tells the run loop, which alone talks to
/// the node, so that events and payloads reach it from one task, in order.
#[derive(Debug)]
enum Change {
    Connected,
    Disconnected,
    /// A reconnection attempt failed.
    AttemptFailed,
}

/// How a client's life ended.
enum Ended {
    /// `outgoing` or `incoming` closed: `run` is over.
    Closed,
    /// The client can no longer carry payloads; a new one is needed.
    Broken,
}

async fn run(
    server: ServerAddr,
    subject: String,
    node: NodeId,
    mut outgoing: mpsc::Receiver<Outgoing>,
    incoming: mpsc::UnboundedSender<BusEvent>,
    observer: Arc<dyn BusObserver>,
) {
    let observer = &*observer;
    let presence = Subject::from(presence_subject(&subject, node));
    let subject = Subject::from(subject);
    let mut backoff = Backoff::default();
    let mut connected_before = false;
    loop {
        let (changes_tx, mut changes) = mpsc::unbounded_channel();
        // The first connection is made here, not by the client's
        // retry_on_initial_connect: that one retries in a task of its own
        // that outlives the client, forever, if the server never comes.
        // Here an attempt is a future that ends with `run`.
        let attempt = options(changes_tx).connect(server.clone());
        let Some(attempt) = while_disconnected(attempt, &mut outgoing, &incoming, observer).await
        else {
            return;
        };
        match attempt {
            Err(error) => {
                observer.error();
                tracing::warn!(%error, "cluster bus (nats): connecting failed");
            }
            Ok(client) => {
                backoff.reset();
                let ended = serve(
                    &client,
                    &subject,
                    &presence,
                    &mut changes,
                    &mut connected_before,
                    &mut outgoing,
                    &incoming,
                    observer,
                )
                .await;
                match ended {
                    // Dropping the client (and its subscriber) closes the
                    // connection: its task ends once its command queue is
                    // closed. Not while it is reconnecting, though: that loop
                    // never looks at the queue, so a client dropped while the
                    // server is away keeps trying (on the Backoff schedule)
                    // until the server is back or the runtime stops.
                    Ended::Closed => return,
                    Ended::Broken => {}
                }
            }
        }
        let pause = tokio::time::sleep(backoff.next_delay());
        if while_disconnected(pause, &mut outgoing, &incoming, observer)
            .await
            .is_none()
        {
            return;
        }
    }
}

/// The client's options: reconnect forever, on the [`Backoff`] schedule,
/// with echo on (the node counts on hearing its own payloads).
fn options(changes: mpsc::UnboundedSender<Change>) -> ConnectOptions {
    ConnectOptions::new()
        .name("realtime-server cluster")
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(PING_INTERVAL)
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            // The callback runs on the client's event task; the run loop
            // does the rest, so nothing here can block that task.
            let change = match event {
                Event::Connected => Some(Change::Connected),
                Event::Disconnected => Some(Change::Disconnected),
                Event::ClientError(error) => {
                    tracing::debug!(%error, "cluster bus (nats): reconnecting failed");
                    Some(Change::AttemptFailed)
                }
                Event::SlowConsumer(_) => {
                    // The subscription's buffer (64 Ki messages) overflowed:
                    // payloads from other nodes were lost.
                    tracing::warn!("cluster bus (nats): incoming payloads dropped (slow consumer)");
                    None
                }
                other => {
                    tracing::info!(event = %other, "cluster bus (nats)");
                    None
                }
            };
            if let Some(change) = change {
                // The receiver is gone only once run has ended.
                let _ = changes.send(change);
            }
            std::future::ready(())
        })
}

/// The client's delay before its `attempts`-th attempt in a row (1 for the
/// first after a loss): the same schedule as [`Backoff`], which the client
/// restarts itself after each success.
fn reconnect_delay(attempts: usize) -> Duration {
    let mut backoff = Backoff::default();
    let mut delay = Backoff::FIRST;
    // Past a handful of attempts the delay is at its maximum anyway.
    for _ in 0..attempts.clamp(1, 32) {
        delay = backoff.next_delay();
    }
    delay
}

/// Carries payloads both ways with one client, through its own reconnections,
/// until `run` is over or the client breaks.
#[allow(clippy::too_many_arguments)] // the run loop's state, lent for one client's life
async fn serve(
    client: &Client,
    subject: &Subject,
    presence: &Subject,
    changes: &mut mpsc::UnboundedReceiver<Change>,
    connected_before: &mut bool,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    incoming: &mpsc::UnboundedSender<BusEvent>,
    observer: &dyn BusObserver,
) -> Ended {
    // Renewed by the client after each reconnection; Connected is reported
    // only once the server is known to have it (see `subscribed`).
    let Some(mut subscriber) = subscribe(client, subject, observer).await else {
        return Ended::Broken;
    };
    // Subscribed before the subject's round trip in `subscribed`, so it is
    // in place once the node is told Connected.
    let Some(mut probed) = subscribe(client, presence, observer).await else {
        return Ended::Broken;
    };
    // What the node was told: Connected is sent only once subscribed.
    let mut connected = false;
    let ended = loop {
        // Unbiased: a flood one way must not starve the other.
        tokio::select! {
            change = changes.recv() => match change {
                Some(Change::Connected) if !connected => {
                    if !subscribed(client).await {
                        // Lost again already (a Disconnected follows), or the
                        // server is stuck: a fresh connection settles it.
                        tracing::warn!("cluster bus (nats): no answer after connecting");
                        if client.connection_state() == State::Connected {
                            let _ = client.force_reconnect().await;
                        }
                        continue;
                    }
                    connected = true;
                    if incoming.send(BusEvent::Connected).is_err() {
                        break Ended::Closed;
                    }
                    if *connected_before {
                        observer.reconnected();
                    }
                    *connected_before = true;
                    tracing::info!(%subject, "cluster bus (nats): connected");
                }
                Some(Change::Disconnected) => {
                    observer.error();
                    // Only a loss the node was told of Connected before is
                    // reported (once); a loss while still proving the
                    // subscription is just an error.
                    if connected {
                        connected = false;
                        tracing::warn!("cluster bus (nats): connection lost");
                        if incoming.send(BusEvent::Disconnected).is_err() {
                            break Ended::Closed;
                        }
                    }
                }
                Some(Change::AttemptFailed) => observer.error(),
                Some(_) => {}
                // The sender lives in the client's options until the client
                // is gone: it no longer runs.
                None => break Ended::Broken,
            },
            message = next(&mut subscriber) => match message {
                Some(message) => {
                    if incoming.send(BusEvent::Message(message.payload.into())).is_err() {
                        break Ended::Closed;
                    }
                }
                // The client's connection task has ended (it gave up).
                None => break Ended::Broken,
            },
            probe = next(&mut probed) => match probe {
                Some(probe) => {
                    // Present: any answer will do. Queued only (the client
                    // flushes by itself), so nothing here waits on the wire.
                    if let Some(reply) = probe.reply {
                        let _ = client.publish(reply, Default::default()).await;
                    }
                }
                None => break Ended::Broken,
            },
            taken = outgoing.recv() => {
                let payload = match taken {
                    Some(Outgoing::Payload(payload)) => payload,
                    Some(Outgoing::Probe(nodes)) => {
                        if connected {
                            tokio::spawn(probe(client.clone(), subject.to_string(), nodes, incoming.clone()));
                        }
                        continue;
                    }
                    None => break Ended::Closed,
                };
                if !fits(&payload, observer) {
                    continue;
                }
                // While disconnected the client would queue the payload (up to
                // its command queue's 2,048 entries, then make publish wait),
                // and send it late after reconnecting: drop it instead, as the
                // contract says. The client's own state is checked too: it
                // changes before the event reaches this loop.
                if !connected || client.connection_state() != State::Connected {
                    observer.dropped();
                    continue;
                }
                match timeout(HAND_OVER_TIMEOUT, client.publish(subject.clone(), payload.into())).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        observer.dropped();
                        tracing::warn!(%error, "cluster bus (nats): publishing failed");
                        continue;
                    }
                    Err(_) => {
                        observer.dropped();
                        tracing::warn!("cluster bus (nats): publishing timed out");
                        continue;
                    }
                }
                // publish only queues the payload; once the node has handed
                // over all it had, a flush sends the lot at once and holds
                // the next batch until it is on the wire.
                if outgoing.is_empty() {
                    if let Ok(Err(error)) = timeout(HAND_OVER_TIMEOUT, client.flush()).await {
                        tracing::debug!(%error, "cluster bus (nats): flush failed");
                    }
                }
            }
            () = incoming.closed() => break Ended::Closed,
        }
    };
    if let (Ended::Broken, true) = (&ended, connected) {
        observer.error();
        // If the node is gone too, the next `while_disconnected` ends run.
        let _ = incoming.send(BusEvent::Disconnected);
    }
    ended
}

/// A subscription to `subject`, or `None` (counted and logged) when the
/// client cannot make one any more.
async fn subscribe(
    client: &Client,
    subject: &Subject,
    observer: &dyn BusObserver,
) -> Option<Subscriber> {
    match client.subscribe(subject.clone()).await {
        Ok(subscriber) => Some(subscriber),
        Err(error) => {
            observer.error();
            tracing::error!(%error, %subject, "cluster bus (nats): subscribing failed");
            None
        }
    }
}

/// Answers a probe: the nodes whose presence subject has no subscriber, as
/// the server says at once ("no responders"). A node that answers, or does
/// not answer within [`PROBE_TIMEOUT`], is present.
async fn probe(
    client: Client,
    subject: String,
    nodes: Vec<NodeId>,
    incoming: mpsc::UnboundedSender<BusEvent>,
) {
    let mut absent = Vec::new();
    for node in nodes {
        let asked = client.request(presence_subject(&subject, node), Default::default());
        if let Ok(Err(error)) = timeout(PROBE_TIMEOUT, asked).await {
            if error.kind() == async_nats::RequestErrorKind::NoResponders {
                absent.push(node);
            }
        }
    }
    let _ = incoming.send(BusEvent::Absent(absent));
}

/// Whether the server has this client's subscriptions in place: the client
/// announces Connected before its SUBs reach the server (and `subscribe`
/// returns once the SUB is queued, not answered), so another node's payload
/// published just after Connected could miss this one. A message of its own,
/// sent through the server after them and received back, proves they are
/// there: the server handles one connection's operations in order.
async fn subscribed(client: &Client) -> bool {
    let round_trip = async {
        let inbox = client.new_inbox();
        let mut echo = client.subscribe(inbox.clone()).await.ok()?;
        client.publish(inbox, Vec::new().into()).await.ok()?;
        // Dropping `echo` unsubscribes.
        next(&mut echo).await.map(drop)
    };
    matches!(timeout(ROUND_TRIP_TIMEOUT, round_trip).await, Ok(Some(())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_follow_the_backoff_schedule() {
        let delays: Vec<u128> = (1..=7).map(|n| reconnect_delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(reconnect_delay(0), Backoff::FIRST);
        assert_eq!(reconnect_delay(usize::MAX), Backoff::MAX);
    }
}
