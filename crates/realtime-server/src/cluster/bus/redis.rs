//! Redis pub/sub as the cluster's bus: one connection subscribed to the
//! subject (and to the node's presence channel), a second (multiplexed) one
//! that PUBLISHes and probes, rebuilt together after any loss. Redis drops a
//! connection's subscriptions the moment it closes, so `PUBSUB NUMSUB` of a
//! node's presence channel says whether its process still holds one.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use ::redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, Value};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::{
    fits, next, presence_subject, while_disconnected, Backoff, Backplane, BusError, BusEvent,
    BusObserver, NodeId, Outgoing,
};
use realtime_core::BoxFuture;

/// How long connecting (TCP, AUTH, SELECT, SUBSCRIBE) may take. The pub/sub
/// connection of the redis crate has no deadline of its own, and a
/// black-holed address would otherwise hold the attempt for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a PUBLISH or a PING may wait for its answer. A hung server (or a
/// silent network) keeps the sockets open, so only a deadline notices it.
/// The crate's own default is 500 ms, short enough to count a busy server on
/// a loaded machine as lost.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// After this long without a message on the subscribed connection it is
/// pinged: nothing else would notice that it died silently while this node
/// had nothing to publish.
const IDLE_PING: Duration = Duration::from_secs(5);

/// A Redis server (or anything speaking its pub/sub, e.g. Valkey) as the bus.
pub(super) struct RedisBus {
    client: Client,
}

impl RedisBus {
    /// Checks the URL (scheme, host, database, TLS support) without connecting.
    pub(super) fn new(url: &str) -> Result<Self, BusError> {
        let client = Client::open(url).map_err(|e| BusError::InvalidUrl(e.to_string()))?;
        Ok(RedisBus { client })
    }
}

impl Backplane for RedisBus {
    fn run(
        self: Box<Self>,
        subject: String,
        node: NodeId,
        outgoing: mpsc::Receiver<Outgoing>,
        incoming: mpsc::UnboundedSender<BusEvent>,
        observer: Arc<dyn BusObserver>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(run(
            self.client,
            subject,
            node,
            outgoing,
            incoming,
            observer,
        ))
    }
}

/// Why a connection was given up.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the subscribed connection closed")]
    Closed,
}

/// The two connections of one session with the server.
struct Session {
    /// Kept for PING: the stream alone cannot tell a quiet channel from a dead socket.
    sink: PubSubSink,
    messages: PubSubStream,
    publisher: MultiplexedConnection,
}

async fn run(
    client: Client,
    subject: String,
    node: NodeId,
    mut outgoing: mpsc::Receiver<Outgoing>,
    incoming: mpsc::UnboundedSender<BusEvent>,
    observer: Arc<dyn BusObserver>,
) {
    let observer = &*observer;
    let mut backoff = Backoff::default();
    let mut connected_before = false;
    loop {
        let attempt = connect(&client, &subject, node);
        let Some(attempt) = while_disconnected(attempt, &mut outgoing, &incoming, observer).await
        else {
            return;
        };
        match attempt {
            Err(error) => {
                observer.error();
                tracing::warn!(%error, "cluster bus (redis): connecting failed");
            }
            Ok(session) => {
                backoff.reset();
                if incoming.send(BusEvent::Connected).is_err() {
                    return;
                }
                if connected_before {
                    observer.reconnected();
                }
                connected_before = true;
                tracing::info!(%subject, "cluster bus (redis): connected");
                match serve(session, &subject, &mut outgoing, &incoming, observer).await {
                    // Dropping the session here closes both connections.
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(%error, "cluster bus (redis): connection lost");
                        if incoming.send(BusEvent::Disconnected).is_err() {
                            return;
                        }
                        observer.error();
                    }
                }
            }
        }
        // Also after a loss: a server that accepts and then drops every
        // connection must not be hammered in a tight loop.
        let pause = tokio::time::sleep(backoff.next_delay());
        if while_disconnected(pause, &mut outgoing, &incoming, observer)
            .await
            .is_none()
        {
            return;
        }
    }
}

/// Opens both connections and subscribes; the subscription is confirmed by
/// the server before this returns, so payloads published after
/// [`BusEvent::Connected`] reach this node too.
async fn connect(client: &Client, subject: &str, node: NodeId) -> Result<Session, Lost> {
    let within = |deadline: Duration| async move {
        tokio::time::sleep(deadline).await;
        Lost::Timeout(deadline)
    };
    let setup = async {
        let (mut sink, messages) = client.get_async_pubsub().await?.split();
        sink.subscribe(&[subject.to_owned(), presence_subject(subject, node)])
            .await?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let publisher = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok::<_, Lost>(Session {
            sink,
            messages,
            publisher,
        })
    };
    // One deadline for the whole set-up, twice a connection's: the two
    // connections are made one after the other.
    tokio::select! {
        session = setup => session,
        lost = within(CONNECT_TIMEOUT * 2) => Err(lost),
    }
}

/// Answers a probe: the nodes whose presence channel has no subscriber.
/// A failed query answers nothing (the node will ask again); a lost
/// connection is noticed by the publishing path.
fn probe(
    mut publisher: MultiplexedConnection,
    subject: &str,
    nodes: Vec<NodeId>,
    incoming: mpsc::UnboundedSender<BusEvent>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let channels: Vec<String> = nodes
        .iter()
        .map(|node| presence_subject(subject, *node))
        .collect();
    async move {
        let counts = ::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channels)
            .query_async::<Vec<(String, u64)>>(&mut publisher)
            .await;
        match counts {
            Ok(counts) => {
                let absent = nodes
                    .into_iter()
                    .zip(counts)
                    .filter(|(_, (_, subscribers))| *subscribers == 0)
                    .map(|(node, _)| node)
                    .collect();
                let _ = incoming.send(BusEvent::Absent(absent));
            }
            Err(error) => tracing::debug!(%error, "cluster bus (redis): probe failed"),
        }
    }
}

/// Carries payloads both ways until `outgoing` or `incoming` closes (`Ok`) or
/// the connection is lost (`Err`).
async fn serve(
    mut session: Session,
    subject: &str,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    incoming: &mpsc::UnboundedSender<BusEvent>,
    observer: &dyn BusObserver,
) -> Result<(), Lost> {
    let idle = tokio::time::sleep(IDLE_PING);
    tokio::pin!(idle);
    loop {
        // Unbiased: a flood one way must not starve the other.
        tokio::select! {
            message = next(&mut session.messages) => {
                let Some(message) = message else {
                    return Err(Lost::Closed);
                };
                idle.as_mut().reset(Instant::now() + IDLE_PING);
                if message.get_channel_name() != subject {
                    // The presence channel: nobody publishes there.
                    continue;
                }
                let payload = message.get_payload_bytes().to_vec();
                if incoming.send(BusEvent::Message(payload)).is_err() {
                    return Ok(());
                }
            }
            taken = outgoing.recv() => {
                let payload = match taken {
                    Some(Outgoing::Payload(payload)) => payload,
                    Some(Outgoing::Probe(nodes)) => {
                        // Apart, so a slow answer holds no payload back.
                        let probe = probe(session.publisher.clone(), subject, nodes, incoming.clone());
                        tokio::spawn(probe);
                        continue;
                    }
                    None => return Ok(()),
                };
                if !fits(&payload, observer) {
                    continue;
                }
                // Awaited before the next one is taken: that keeps this
                // node's payloads in order, and the node batches anyway.
                // The connection's response timeout bounds the wait.
                let published = ::redis::cmd("PUBLISH")
                    .arg(subject)
                    .arg(payload)
                    .query_async::<Value>(&mut session.publisher)
                    .await;
                match published {
                    Ok(_) => {}
                    // Refused by a server that answers (NOPERM, LOADING…):
                    // the connection is fine, only this payload is lost.
                    Err(error) if matches!(error.kind(), ErrorKind::Server(_)) => {
                        observer.dropped();
                        tracing::warn!(%error, "cluster bus (redis): PUBLISH refused");
                    }
                    // Perhaps delivered, perhaps not: counted as dropped, and
                    // the node resends what matters after Connected.
                    Err(error) => {
                        observer.dropped();
                        return Err(error.into());
                    }
                }
            }
            () = &mut idle => {
                match timeout(RESPONSE_TIMEOUT, session.sink.ping::<Value>()).await {
                    Ok(Ok(_)) => idle.as_mut().reset(Instant::now() + IDLE_PING),
                    Ok(Err(error)) => return Err(error.into()),
                    Err(_) => return Err(Lost::Timeout(RESPONSE_TIMEOUT)),
                }
            }
            () = incoming.closed() => return Ok(()),
        }
    }
}
