//! Nodes of a cluster in one process, linked by a real bus (Redis and NATS
//! alike): presence and events cross nodes, a node that crashes is
//! forgotten once the bus says it is gone and one that hangs when its lease
//! lapses, a bus absent at start-up is waited for, and a bus lost and back
//! makes the nodes whole again.
//!
//! Each test's nodes serve an app id of their own, so tests sharing the
//! machine's Redis and NATS do not see each other's channels.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::buses::{free_port, Kind, Server as BusServer, DEADLINE};
use realtime_core::Credentials;
use realtime_server::outbox::{Outbound, OutboxReceiver};
use realtime_server::{App, AppConfig, Metrics, Server};
use serde_json::json;
use tokio::time::Instant;

struct Node {
    server: Server,
    app: Arc<App>,
}

fn node(url: &str, app_id: &str) -> Node {
    let config = AppConfig::new(Credentials::new(app_id, "key", "secret"));
    let server = Server::clustered(vec![config], Metrics::new(), url).expect("a cluster URL");
    let app = server.app_by_id(app_id).unwrap();
    Node { server, app }
}

fn app_id() -> String {
    format!("cluster-test-{}", rand::random::<u32>())
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn connected(node: &Node) -> bool {
    node.server.metrics().cluster.connected.get() == 1
}

fn frames(receiver: &mut OutboxReceiver) -> Vec<String> {
    let mut all = Vec::new();
    while let Ok(outbound) = receiver.try_recv() {
        if let Outbound::Frame(frame) = outbound {
            all.push(frame.text().to_string());
        }
    }
    all
}

fn join(node: &Node, user: &str) -> (Arc<str>, OutboxReceiver) {
    let (socket, receiver) = node.app.connect().unwrap();
    node.app
        .subscribe(
            &socket,
            "presence-room",
            Some((user.to_owned(), Some(json!({ "name": user })))),
        )
        .unwrap();
    (socket, receiver)
}

fn users(node: &Node) -> Vec<String> {
    let mut users = node.app.presence_users("presence-room");
    users.sort();
    users
}

async fn presence_and_events_cross_nodes(kind: Kind) {
    let url = kind.shared_url();
    let id = app_id();
    let nodes: Vec<Node> = (0..3).map(|_| node(&url, &id)).collect();
    eventually("every node on the bus", || nodes.iter().all(connected)).await;
    eventually("the nodes to know each other", || {
        nodes
            .iter()
            .all(|n| n.server.metrics().cluster.nodes.get() == 3)
    })
    .await;

    let (_ann, mut ann_rx) = join(&nodes[0], "ann");
    let (_bob, _bob_rx) = join(&nodes[1], "bob");
    eventually("every node to list both", || {
        nodes.iter().all(|n| users(n) == ["ann", "bob"])
    })
    .await;
    eventually("ann to hear of bob", || {
        ann_rx_has(&mut ann_rx, "member_added")
    })
    .await;

    // An event published on node 2 reaches ann on node 0, once.
    let (watcher, mut watcher_rx) = nodes[0].app.connect().unwrap();
    nodes[0].app.subscribe(&watcher, "news", None).unwrap();
    eventually("node 2 to count the subscriber", || {
        nodes[2].app.channel_info("news").subscription_count == Some(1)
    })
    .await;
    frames(&mut watcher_rx);
    for n in 0..20 {
        let frame = realtime_server::protocol::frame("update", Some("news"), format!("{n}"));
        nodes[2].app.publish("news", &frame, None);
    }
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while seen.len() < 20 && Instant::now() < deadline {
        seen.extend(frames(&mut watcher_rx));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let expected: Vec<String> = (0..20)
        .map(|n| {
            realtime_server::protocol::frame("update", Some("news"), format!("{n}")).to_string()
        })
        .collect();
    assert_eq!(seen, expected, "every event once, in order");
}

fn ann_rx_has(receiver: &mut OutboxReceiver, event: &str) -> bool {
    frames(receiver).iter().any(|f| f.contains(event))
}

/// A node that crashed (its connections closed, no goodbye) is looked for on
/// the bus once it is late, found gone, and forgotten before its lease
/// lapses; its member is removed for the others.
async fn a_crashed_node_is_forgotten_once_gone_from_the_bus(kind: Kind) {
    let url = kind.shared_url();
    let id = app_id();
    let survivor = node(&url, &id);
    let doomed = node(&url, &id);
    eventually("both on the bus", || {
        connected(&survivor) && connected(&doomed)
    })
    .await;
    let (_ann, mut ann_rx) = join(&survivor, "ann");
    let (_bob, _bob_rx) = join(&doomed, "bob");
    eventually("bob listed on the survivor", || {
        users(&survivor) == ["ann", "bob"]
    })
    .await;
    frames(&mut ann_rx);

    // A crash: no goodbye, its connections never leave by themselves.
    let halted_at = Instant::now();
    doomed.server.cluster().unwrap().halt();
    eventually("bob forgotten", || users(&survivor) == ["ann"]).await;
    let took = halted_at.elapsed();
    // About SUSPECT after its last heartbeat, plus a WATCH tick and the
    // probe (under a second); the lease alone would have taken LEASE.
    assert!(
        took < realtime_server::cluster::LEASE / 2,
        "forgotten after {took:?}"
    );
    assert!(ann_rx_has(&mut ann_rx, "member_removed"));
    assert_eq!(survivor.server.metrics().cluster.nodes_lost.get(), 1);
}

/// Counts nothing: the hung peer's bus needs an observer.
struct Unobserved;

impl realtime_server::cluster::bus::BusObserver for Unobserved {
    fn error(&self) {}
    fn reconnected(&self) {}
    fn dropped(&self) {}
}

/// A node that hangs keeps its connection to the bus (nothing closes it):
/// looked for on the bus when late, it is found there, and is forgotten only
/// when its lease lapses. The hung node is played by a bus connection of its
/// own that says, in the cluster's wire format, that "ghost" is present on
/// it, and then nothing more.
async fn a_hung_node_is_forgotten_when_its_lease_lapses(kind: Kind) {
    use realtime_server::cluster::bus::{self, BusEvent, Outgoing};
    use realtime_server::cluster::{Report, LEASE};
    let url = kind.shared_url();
    let id = app_id();
    let survivor = node(&url, &id);
    eventually("the survivor on the bus", || connected(&survivor)).await;

    let hung_id = rand::random::<u64>() >> 1;
    let (outgoing, taken) = tokio::sync::mpsc::channel(8);
    let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel();
    let hung_bus = tokio::spawn(bus::from_url(&url).unwrap().run(
        "realtime-cluster".to_owned(),
        hung_id,
        taken,
        heard,
        Arc::new(Unobserved),
    ));
    while hearing.recv().await != Some(BusEvent::Connected) {}
    let ghost = Report::Member {
        a: id.as_str().into(),
        c: "presence-room".to_owned(),
        u: "ghost".to_owned(),
        on: true,
        i: None,
    };
    let envelope = json!({ "n": hung_id, "s": 1, "r": [ghost] });
    outgoing
        .send(Outgoing::Payload(envelope.to_string().into_bytes()))
        .await
        .unwrap();
    eventually("ghost listed on the survivor", || {
        users(&survivor) == ["ghost"]
    })
    .await;
    let hung_at = Instant::now();

    eventually("ghost forgotten", || users(&survivor).is_empty()).await;
    let took = hung_at.elapsed();
    assert!(
        took >= LEASE - Duration::from_millis(500),
        "forgotten after {took:?}, before its lease lapsed"
    );
    assert!(took < Duration::from_secs(10), "forgotten after {took:?}");
    hung_bus.abort();
}

async fn a_bus_absent_at_start_up_is_waited_for(kind: Kind) {
    let port = free_port();
    let url = kind.url(port);
    let id = app_id();
    let a = node(&url, &id);
    let b = node(&url, &id);
    let (_ann, _ann_rx) = join(&a, "ann");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!connected(&a) && !connected(&b));
    // Alone meanwhile, each node serves its own clients.
    assert_eq!(users(&a), ["ann"]);

    let _bus = BusServer::start(kind, port);
    eventually("both connected", || connected(&a) && connected(&b)).await;
    eventually("ann listed on b", || users(&b) == ["ann"]).await;
}

async fn a_bus_lost_and_back_makes_the_nodes_whole_again(kind: Kind) {
    let port = free_port();
    let url = kind.url(port);
    let bus = BusServer::start(kind, port);
    let id = app_id();
    let a = node(&url, &id);
    let b = node(&url, &id);
    eventually("both connected", || connected(&a) && connected(&b)).await;
    let (_ann, _ann_rx) = join(&a, "ann");
    eventually("ann listed on b", || users(&b) == ["ann"]).await;

    bus.kill();
    eventually("both see the bus gone", || !connected(&a) && !connected(&b)).await;
    // While it is away: local service goes on; what changes is not lost for good.
    let (_bob, mut bob_rx) = join(&b, "bob");
    assert_eq!(
        users(&b),
        ["ann", "bob"],
        "peers are not forgotten while the bus is away"
    );
    frames(&mut bob_rx);
    let frame = realtime_server::protocol::frame("local", Some("presence-room"), "{}".to_owned());
    assert_eq!(b.app.publish("presence-room", &frame, None), 1);

    let _bus = BusServer::start(kind, port);
    let back = Instant::now();
    eventually("both back on the bus", || connected(&a) && connected(&b)).await;
    eventually("bob listed on a", || users(&a) == ["ann", "bob"]).await;
    assert!(
        back.elapsed() < Duration::from_secs(10),
        "{:?}",
        back.elapsed()
    );
    assert!(a.server.metrics().cluster.reconnects.get() >= 1);
    // Events cross again.
    let frame = realtime_server::protocol::frame("again", Some("presence-room"), "{}".to_owned());
    a.app.publish("presence-room", &frame, None);
    eventually("bob gets a's event", || ann_rx_has(&mut bob_rx, "again")).await;
}

macro_rules! on_both_buses {
    ($($name:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Redis).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Nats).await;
                }
            )*
        }
    };
}

on_both_buses!(
    presence_and_events_cross_nodes,
    a_crashed_node_is_forgotten_once_gone_from_the_bus,
    a_hung_node_is_forgotten_when_its_lease_lapses,
    a_bus_absent_at_start_up_is_waited_for,
    a_bus_lost_and_back_makes_the_nodes_whole_again,
);
