//! The cluster's buses (Redis pub/sub and core NATS) against real servers,
//! both through the same tests: delivery and order, a bus absent at start-up,
//! a bus killed and restarted, and `run` ending when its node lets go.
//!
//! The shared servers are `redis://127.0.0.1:6379` and `nats://127.0.0.1:4222`
//! (`REDIS_TEST_URL` and `NATS_TEST_URL` point elsewhere); the failure tests
//! start their own `redis-server` / `nats-server` on a free port, so both
//! binaries must be on PATH (CI installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use realtime_server::cluster::bus::{self, BusEvent, BusObserver, Outgoing, MAX_PAYLOAD};
use realtime_server::cluster::NodeId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

mod common;

use common::buses::{free_port, Kind, Server, DEADLINE};

/// How many connections to `port` on this machine are open, from the
/// clients' side (the kernel's table: what a leaked socket would show).
fn connections_to(port: u16) -> usize {
    const ESTABLISHED: &str = "01";
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let remote_port = fields
                        .get(2)
                        .and_then(|address| address.rsplit(':').next())
                        .and_then(|hex| u16::from_str_radix(hex, 16).ok());
                    remote_port == Some(port) && fields.get(3) == Some(&ESTABLISHED)
                })
                .map(|_| ())
                .collect::<Vec<_>>()
        })
        .count()
}

/// A subject no other test (or other user of the shared servers) uses.
fn unique_subject() -> String {
    format!("test.bus.{:016x}", rand::thread_rng().gen::<u64>())
}

#[derive(Default)]
struct Counters {
    errors: AtomicUsize,
    reconnected: AtomicUsize,
    dropped: AtomicUsize,
}

impl BusObserver for Counters {
    fn error(&self) {
        self.errors.fetch_add(1, Ordering::SeqCst);
    }
    fn reconnected(&self) {
        self.reconnected.fetch_add(1, Ordering::SeqCst);
    }
    fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// One node's end of a running bus.
struct Node {
    id: NodeId,
    url: String,
    outgoing: Option<mpsc::Sender<Outgoing>>,
    incoming: Option<mpsc::UnboundedReceiver<BusEvent>>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Node {
    fn start(url: &str, subject: &str) -> Node {
        let backplane = bus::from_url(url).expect("a supported bus URL");
        let (outgoing_tx, outgoing_rx) = mpsc::channel(64);
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let id = rand::random::<u64>() >> 1;
        let task = tokio::spawn(backplane.run(
            subject.to_owned(),
            id,
            outgoing_rx,
            incoming_tx,
            counters.clone(),
        ));
        Node {
            id,
            url: url.to_owned(),
            outgoing: Some(outgoing_tx),
            incoming: Some(incoming_rx),
            counters,
            task,
        }
    }

    async fn send(&self, payload: impl Into<Vec<u8>>) {
        let outgoing = self.outgoing.as_ref().expect("outgoing still open");
        outgoing
            .send(Outgoing::Payload(payload.into()))
            .await
            .expect("run() still taking payloads");
    }

    async fn next_event(&mut self, what: &str) -> BusEvent {
        let incoming = self.incoming.as_mut().expect("incoming still open");
        match timeout(DEADLINE, incoming.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("{}: run() ended while waiting for {what}", self.url),
            Err(_) => panic!("{}: no {what} within {DEADLINE:?}", self.url),
        }
    }

    /// Waits for `expected`, which must be the next connection event; messages
    /// before it are skipped.
    async fn expect_state(&mut self, expected: BusEvent) {
        let what = format!("{expected:?}");
        loop {
            match self.next_event(&what).await {
                BusEvent::Message(_) => continue,
                event => {
                    assert_eq!(event, expected, "{}: unexpected connection event", self.url);
                    return;
                }
            }
        }
    }

    /// The next `count` payloads received; any connection event fails.
    async fn messages(&mut self, count: usize) -> Vec<Vec<u8>> {
        let mut received = Vec::with_capacity(count);
        while received.len() < count {
            let what = format!("payload {} of {count}", received.len() + 1);
            match self.next_event(&what).await {
                BusEvent::Message(payload) => received.push(payload),
                other => panic!("{}: {other:?} while waiting for {what}", self.url),
            }
        }
        received
    }

    /// Which of `nodes` the bus says are gone (messages meanwhile are skipped).
    async fn absent(&mut self, nodes: &[NodeId]) -> Vec<NodeId> {
        let outgoing = self.outgoing.as_ref().expect("outgoing still open");
        outgoing
            .send(Outgoing::Probe(nodes.to_vec()))
            .await
            .expect("run() still taking probes");
        loop {
            match self.next_event("a probe's answer").await {
                BusEvent::Message(_) => continue,
                BusEvent::Absent(absent) => return absent,
                other => panic!("{}: {other:?} while probing", self.url),
            }
        }
    }

    /// Sends `payload` and waits for it to come back (the bus echoes).
    async fn round_trip(&mut self, payload: &str) {
        self.send(payload).await;
        let received = self.messages(1).await;
        assert_eq!(received, [payload.as_bytes().to_vec()]);
    }

    /// Whether `run` ended within the deadline.
    async fn ended(self) -> bool {
        timeout(DEADLINE, self.task).await.is_ok()
    }
}

/// Waits (polling) until `condition` holds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {DEADLINE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two nodes on one subject, each sending 500 payloads at the same time:
/// both receive all 1,000, each sender's in the order sent.
async fn payloads_reach_every_node_in_order(kind: Kind) {
    let url = kind.shared_url();
    let subject = unique_subject();
    let mut a = Node::start(&url, &subject);
    let mut b = Node::start(&url, &subject);
    a.expect_state(BusEvent::Connected).await;
    b.expect_state(BusEvent::Connected).await;

    const EACH: usize = 500;
    let send_all = |node: &Node, name: &'static str| {
        let outgoing = node.outgoing.clone().expect("outgoing open");
        async move {
            for i in 0..EACH {
                outgoing
                    .send(Outgoing::Payload(format!("{name}:{i}").into_bytes()))
                    .await
                    .expect("run() still taking payloads");
            }
        }
    };
    let sending = tokio::join!(send_all(&a, "a"), send_all(&b, "b"));
    let () = sending.0;
    let () = sending.1;

    for node in [&mut a, &mut b] {
        let received = node.messages(2 * EACH).await;
        for name in ["a", "b"] {
            let from: Vec<String> = received
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .filter(|p| p.starts_with(&format!("{name}:")))
                .collect();
            let expected: Vec<String> = (0..EACH).map(|i| format!("{name}:{i}")).collect();
            assert_eq!(from, expected, "{kind:?}: payloads of {name}, in order");
        }
    }
    for node in [&a, &b] {
        assert_eq!(node.counters.dropped.load(Ordering::SeqCst), 0);
        assert_eq!(node.counters.errors.load(Ordering::SeqCst), 0);
    }
}

/// No server at start-up: run keeps trying (and drops what it is handed)
/// until one appears, then reports Connected, and payloads flow.
async fn bus_down_at_start_up_is_waited_for(kind: Kind) {
    let port = free_port();
    let mut node = Node::start(&kind.url(port), &unique_subject());
    let counters = node.counters.clone();
    eventually("two failed connection attempts", || {
        counters.errors.load(Ordering::SeqCst) >= 2
    })
    .await;
    node.send("before the server").await;
    eventually("the payload sent before the server dropped", || {
        counters.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    let incoming = node.incoming.as_mut().expect("incoming open");
    assert!(
        incoming.try_recv().is_err(),
        "{kind:?}: an event before the server started"
    );

    let _server = Server::start(kind, port);
    node.expect_state(BusEvent::Connected).await;
    node.round_trip("after the server").await;
    assert_eq!(
        counters.reconnected.load(Ordering::SeqCst),
        0,
        "the first connection is no reconnection"
    );
    assert_eq!(counters.dropped.load(Ordering::SeqCst), 1);
}

/// The server is killed mid-stream: Disconnected, payloads dropped and
/// counted meanwhile (never delivered late); restarted on the same port:
/// Connected again within 10 s, and payloads flow.
async fn bus_killed_and_restarted_is_reported_and_rejoined(kind: Kind) {
    let port = free_port();
    let server = Server::start(kind, port);
    let mut node = Node::start(&kind.url(port), &unique_subject());
    let counters = node.counters.clone();
    node.expect_state(BusEvent::Connected).await;
    for i in 0..10 {
        node.round_trip(&format!("before:{i}")).await;
    }

    server.kill();
    node.expect_state(BusEvent::Disconnected).await;
    assert!(counters.errors.load(Ordering::SeqCst) >= 1);
    const DURING: usize = 20;
    for i in 0..DURING {
        node.send(format!("during:{i}")).await;
    }
    eventually("the payloads sent while down dropped", || {
        counters.dropped.load(Ordering::SeqCst) == DURING
    })
    .await;

    let _server = Server::start(kind, port);
    let restarted = Instant::now();
    node.expect_state(BusEvent::Connected).await;
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "{kind:?}: Connected {took:?} after the restart"
    );
    assert_eq!(counters.reconnected.load(Ordering::SeqCst), 1);
    // The first payload back is the one sent now: nothing dropped arrives late.
    for i in 0..10 {
        node.round_trip(&format!("after:{i}")).await;
    }
    assert_eq!(counters.dropped.load(Ordering::SeqCst), DURING);
}

/// The server hangs (frozen, sockets open) while the node publishes: the
/// bus notices within its deadlines and reports Disconnected, then Connected
/// once the server answers again.
async fn hung_bus_is_noticed_and_rejoined(kind: Kind) {
    hung_bus(kind, true).await;
}

/// The same while the node is quiet: only the bus's own checks (pings) can
/// tell a hung server from a quiet subject.
async fn quietly_hung_bus_is_noticed_and_rejoined(kind: Kind) {
    hung_bus(kind, false).await;
}

async fn hung_bus(kind: Kind, publish_while_frozen: bool) {
    let port = free_port();
    let server = Server::start(kind, port);
    let mut node = Node::start(&kind.url(port), &unique_subject());
    node.expect_state(BusEvent::Connected).await;
    node.round_trip("before").await;

    server.signal("-STOP");
    let frozen = Instant::now();
    if publish_while_frozen {
        node.send("while frozen").await;
    }
    node.expect_state(BusEvent::Disconnected).await;
    let took = frozen.elapsed();
    eprintln!("{kind:?}: hung server noticed after {took:?} (publishing: {publish_while_frozen})");
    assert!(
        took < Duration::from_secs(10),
        "{kind:?}: a hung server noticed only after {took:?}"
    );

    server.signal("-CONT");
    node.expect_state(BusEvent::Connected).await;
    node.send("after").await;
    // The payload sent into the frozen server may still come out of it once
    // it reads its sockets again: "perhaps delivered", as the bus says.
    let mut received = node.messages(1).await;
    if received == [b"while frozen".to_vec()] {
        received = node.messages(1).await;
    }
    assert_eq!(received, [b"after".to_vec()]);
    assert_eq!(node.counters.reconnected.load(Ordering::SeqCst), 1);
}

/// Closing `outgoing` ends run (connected, and while the bus is down), and
/// so does closing `incoming`.
async fn run_ends_when_its_node_lets_go(kind: Kind) {
    let port = free_port();
    let _server = Server::start(kind, port);
    let mut connected = Node::start(&kind.url(port), &unique_subject());
    connected.expect_state(BusEvent::Connected).await;
    assert!(connections_to(port) >= 1);
    connected.outgoing = None;
    assert!(
        connected.ended().await,
        "{kind:?}: run() went on after outgoing closed (connected)"
    );
    eventually("the bus's connections closed", || connections_to(port) == 0).await;

    let mut down = Node::start(&kind.url(free_port()), &unique_subject());
    let counters = down.counters.clone();
    eventually("a failed connection attempt", || {
        counters.errors.load(Ordering::SeqCst) >= 1
    })
    .await;
    down.outgoing = None;
    assert!(
        down.ended().await,
        "{kind:?}: run() went on after outgoing closed (bus down)"
    );

    let mut deaf = Node::start(&kind.shared_url(), &unique_subject());
    deaf.expect_state(BusEvent::Connected).await;
    deaf.incoming = None;
    assert!(
        deaf.ended().await,
        "{kind:?}: run() went on after incoming closed"
    );
}

/// A probe finds a node present for as long as its run lives, and absent
/// once its connection closed (its process died) or if it never existed;
/// the gone node's payloads never stop the others' answers.
async fn probes_find_the_nodes_whose_connection_is_gone(kind: Kind) {
    let subject = unique_subject();
    let mut watcher = Node::start(&kind.shared_url(), &subject);
    let mut present = Node::start(&kind.shared_url(), &subject);
    let mut doomed = Node::start(&kind.shared_url(), &subject);
    for node in [&mut watcher, &mut present, &mut doomed] {
        node.expect_state(BusEvent::Connected).await;
    }
    let never = rand::random::<u64>() >> 1;
    let all = [present.id, doomed.id, never];
    assert_eq!(watcher.absent(&all).await, [never], "{kind:?}");

    // A crash: the task and its connection end with no goodbye.
    let doomed_id = doomed.id;
    doomed.task.abort();
    let _ = doomed.task.await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let absent = watcher.absent(&all).await;
        if absent == [doomed_id, never] {
            break;
        }
        assert_eq!(absent, [never], "{kind:?}: only the gone may be absent");
        assert!(Instant::now() < deadline, "{kind:?}: the crash never seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The survivor answers its own probes as well.
    assert_eq!(present.absent(&[watcher.id]).await, Vec::<NodeId>::new());
}

/// A payload over [`MAX_PAYLOAD`] is dropped and counted; one at the limit
/// goes through.
async fn oversized_payload_is_dropped(kind: Kind) {
    let mut node = Node::start(&kind.shared_url(), &unique_subject());
    node.expect_state(BusEvent::Connected).await;
    node.send(vec![b'x'; MAX_PAYLOAD + 1]).await;
    node.send(vec![b'y'; MAX_PAYLOAD]).await;
    let received = node.messages(1).await;
    assert_eq!(received, [vec![b'y'; MAX_PAYLOAD]]);
    assert_eq!(node.counters.dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn unknown_schemes_and_bad_urls_are_refused() {
    assert!(matches!(
        bus::from_url("amqp://127.0.0.1"),
        Err(bus::BusError::UnsupportedScheme(s)) if s == "amqp"
    ));
    assert!(matches!(
        bus::from_url("not a url"),
        Err(bus::BusError::InvalidUrl(_))
    ));
    // Built without TLS: refused at once, not on every reconnection.
    match bus::from_url("rediss://127.0.0.1:6380") {
        Err(bus::BusError::InvalidUrl(why)) => eprintln!("rediss: {why}"),
        Err(other) => panic!("rediss: {other}"),
        Ok(_) => panic!("rediss:// accepted without TLS support"),
    }
    assert!(bus::from_url("redis://127.0.0.1:6379/2").is_ok());
    assert!(bus::from_url("nats://user:secret@127.0.0.1:4222").is_ok());
}

/// Each scenario once per bus, as `redis_…` and `nats_…` tests.
macro_rules! for_both_buses {
    ($($scenario:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Kind::Redis).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Kind::Nats).await;
                }
            )*
        }
    };
}

for_both_buses!(
    payloads_reach_every_node_in_order,
    bus_down_at_start_up_is_waited_for,
    bus_killed_and_restarted_is_reported_and_rejoined,
    hung_bus_is_noticed_and_rejoined,
    quietly_hung_bus_is_noticed_and_rejoined,
    run_ends_when_its_node_lets_go,
    oversized_payload_is_dropped,
    probes_find_the_nodes_whose_connection_is_gone,
);
