//! `realtime-load`: measures a Pusher-compatible server (ours, or any other)
//! from the outside, the way its users load it.
//!
//! - `fanout`: N WebSocket clients subscribe to one channel; events are
//!   triggered through the HTTP API; reports trigger-to-receipt latency
//!   (p50/p99 of every delivery and of each event's full fan-out), delivered
//!   messages per second, and the server's resident memory per idle
//!   connection (`--server-pid`).
//!   Subscribers are opened and subscribed with tokio-tungstenite; events are
//!   then read by a lean frame reader (`frames.rs`) unless `--reader
//!   tungstenite` asks for tungstenite's message stream throughout.
//!   `--ws-ports` spreads the subscribers over a cluster's nodes;
//!   `--before-events` / `--after-events` run a command around the events
//!   (scripts/bench-cluster reads the nodes' and the bus's counters there).
//! - `trigger`: fires triggers through realtime-core's client with a fixed
//!   number in flight; reports triggers per second and this client's CPU
//!   time per trigger.
//! - `teardown`: prober connections time their subscribes while, round
//!   after round, a connection holding many channels goes away; reports the
//!   subscribe latency with and without a teardown under way (`teardown.rs`).
//! - `floor`: a bare fan-out server (`floor.rs`) that only sends each event
//!   to each socket, from a thread per core or from a task per socket: the
//!   reference rows beside real servers.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use realtime_core::{Config, Pusher};
use serde_json::Value;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

mod floor;
mod frames;
mod teardown;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(name = "realtime-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fan one channel's events out to N subscribers.
    Fanout(FanoutArgs),
    /// Trigger as fast as the server answers, with a fixed number in flight.
    Trigger(TriggerArgs),
    /// Serve the least a fan-out takes, as a reference for `fanout`.
    Floor(FloorArgs),
    /// Time other clients' subscribes while a connection with many channels leaves.
    Teardown(teardown::TeardownArgs),
}

#[derive(Args)]
struct FloorArgs {
    #[arg(long, default_value_t = 6301)]
    port: u16,
    /// How an event reaches the sockets.
    #[arg(long, value_enum, default_value_t = floor::Delivery::Threads)]
    delivery: floor::Delivery,
    /// Threads sending events (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args, Clone)]
struct Target {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 6001)]
    port: u16,
    #[arg(long, default_value = "1")]
    app_id: String,
    #[arg(long, default_value = "app-key")]
    key: String,
    #[arg(long, default_value = "app-secret")]
    secret: String,
}

impl Target {
    fn pusher(&self) -> Result<Pusher, Error> {
        let config = Config::builder(
            self.app_id.as_str(),
            self.key.as_str(),
            self.secret.as_str(),
        )
        .host(self.host.as_str())
        .port(self.port)
        .use_tls(false)
        .timeout(Duration::from_secs(30))
        .build()?;
        Ok(Pusher::new(config)?)
    }
}

#[derive(Args)]
struct FanoutArgs {
    #[command(flatten)]
    target: Target,
    /// WebSocket clients to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Events to trigger.
    #[arg(long, default_value_t = 20)]
    events: usize,
    /// Pause between events (0: a burst, to measure delivery rate).
    #[arg(long, default_value_t = 250)]
    interval_ms: u64,
    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// The server's process ids (a cluster's nodes, comma-separated), to
    /// read their resident memory and CPU time (summed).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Ports the subscribers connect to, in turn (a cluster's nodes; default:
    /// the target's port). Events are triggered through the target's port;
    /// the report gives latencies per subscribers' port too.
    #[arg(long, value_delimiter = ',')]
    ws_ports: Vec<u16>,
    /// A label for the report (e.g. the server's name).
    #[arg(long, default_value = "server")]
    label: String,
    /// Threads for the clients (1 leaves the other cores to the server).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// How subscribers read the events.
    #[arg(long, value_enum, default_value_t = Reader::Lean)]
    reader: Reader,
    /// The public channel every subscriber joins (`cache-…` to measure a
    /// cache channel beside a plain one).
    #[arg(long, default_value = CHANNEL)]
    channel: String,
    /// A shell command run once every subscriber is subscribed, just before
    /// the first trigger (e.g. to read the servers' or a bus's counters).
    #[arg(long)]
    before_events: Option<String>,
    /// A shell command run once every subscriber reported, before any
    /// connection closes (with `--before-events`: the counters' difference
    /// is the events' alone, without the connections' coming and going).
    #[arg(long)]
    after_events: Option<String>,
}

/// How subscribers read the events once subscribed.
#[derive(Clone, Copy, ValueEnum)]
enum Reader {
    /// Frames parsed in place from the socket (`frames.rs`).
    Lean,
    /// tokio-tungstenite's message stream.
    Tungstenite,
}

#[derive(Args)]
struct TriggerArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value = "server")]
    label: String,
}

fn main() -> Result<(), Error> {
    let cli = Cli::parse();
    // Triggers run on one thread, like the Node SDK they are compared with;
    // the floor's HTTP side too (its writing threads are its own).
    let runtime = match cli.command {
        Command::Trigger(_) | Command::Floor(_) | Command::Teardown(_) => {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        }
        Command::Fanout(ref args) if args.client_threads <= 1 => {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        }
        Command::Fanout(ref args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads)
            .enable_all()
            .build()?,
    };
    runtime.block_on(async {
        match cli.command {
            Command::Fanout(args) => fanout(args).await,
            Command::Trigger(args) => trigger(args).await,
            Command::Teardown(args) => teardown::run(args).await,
            Command::Floor(args) => {
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                let threads = args.threads.unwrap_or(cores);
                floor::serve(args.port, args.delivery, threads).await
            }
        }
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Resident memory of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// This process's user + system CPU time, from /proc (clock ticks of 10 ms).
fn own_cpu_time() -> Duration {
    cpu_time_of("self")
}

/// A process's user + system CPU time, from /proc (clock ticks of 10 ms).
fn cpu_time_of(pid: &str) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses.
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The unsigned number that follows `marker` in `text` (read in place: it
/// runs once per delivery).
fn number_after(text: &str, marker: &str) -> Option<u64> {
    let start = text.find(marker)? + marker.len();
    let mut number = None;
    for digit in text[start..].bytes().take_while(u8::is_ascii_digit) {
        let so_far: u64 = number.unwrap_or(0);
        number = Some(
            so_far
                .checked_mul(10)?
                .checked_add(u64::from(digit - b'0'))?,
        );
    }
    number
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// When a bench event arrived: its sequence number and its latency since
/// the trigger. Recognised without a JSON parse, so the client's own CPU use
/// does not dominate what it measures.
fn bench_receipt(text: &str) -> (usize, u64) {
    let at = now_ns();
    let seq = number_after(text, r#"seq\":"#).unwrap_or(0) as usize;
    let sent = number_after(text, r#"sent_ns\":"#).unwrap_or(at);
    (seq, at.saturating_sub(sent))
}

/// How long a subscriber still reads, once every event was triggered, for
/// deliveries still on their way (well within the report's own deadline).
const LATE_DELIVERY_GRACE: Duration = Duration::from_secs(10);

/// The channel every subscriber joins (and the floor server answers for).
const CHANNEL: &str = "bench-fanout";

type Socket = tokio_tungstenite::WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;
/// What each subscriber reports: (event sequence number, latency in ns).
type Receipts = Vec<(usize, u64)>;

/// A subscriber's receipts, with the port it was connected to.
type PortReceipts = (u16, Receipts);

/// The summed resident memory of processes, in KiB.
fn rss_kib_of(pids: &[u32]) -> Option<u64> {
    (!pids.is_empty())
        .then(|| pids.iter().map(|pid| rss_kib(*pid)).sum::<Option<u64>>())
        .flatten()
}

/// The summed CPU time of processes.
fn cpu_time_of_all(pids: &[u32]) -> Option<Duration> {
    (!pids.is_empty()).then(|| pids.iter().map(|pid| cpu_time_of(&pid.to_string())).sum())
}

/// Where the run is, as subscribers see it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Events are being triggered.
    Triggering,
    /// Every event was triggered: subscribers report their receipts.
    Reporting,
    /// Every subscriber reported: connections may close.
    Done,
}

/// One subscriber: once every event was triggered, reports its receipts,
/// then stays connected until every subscriber has reported. Reporting
/// waits so that it takes no client CPU from the last event's fan-out, and
/// no connection closes (and no server work for it starts) while others
/// still wait for an event.
#[allow(clippy::too_many_arguments)]
async fn subscriber(
    port: u16,
    channel: Arc<str>,
    url: String,
    expected: usize,
    ready: Arc<AtomicUsize>,
    handshake_permit: OwnedSemaphorePermit,
    reader: Reader,
    results: mpsc::UnboundedSender<Result<PortReceipts, String>>,
    mut phase: watch::Receiver<Phase>,
) {
    match receive(
        url,
        &channel,
        expected,
        ready,
        handshake_permit,
        reader,
        phase.clone(),
    )
    .await
    {
        Ok((receipts, socket)) => {
            let _ = phase.wait_for(|phase| *phase >= Phase::Reporting).await;
            let _ = results.send(Ok((port, receipts)));
            let _ = phase.wait_for(|phase| *phase == Phase::Done).await;
            drop(socket);
        }
        Err(e) => {
            let _ = results.send(Err(e.to_string()));
        }
    }
}

/// Connects, subscribes, then records when each event arrives.
async fn receive(
    url: String,
    channel: &str,
    expected: usize,
    ready: Arc<AtomicUsize>,
    handshake_permit: OwnedSemaphorePermit,
    reader: Reader,
    mut phase: watch::Receiver<Phase>,
) -> Result<(Receipts, Socket), Error> {
    let mut handshake_permit = Some(handshake_permit);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let subscribe = serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await?;
    let mut received = Vec::with_capacity(expected);
    while let Some(message) = socket.next().await {
        let text = match message? {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        if text.contains(r#""event":"bench""#) {
            received.push(bench_receipt(&text));
            if received.len() == expected {
                break;
            }
            continue;
        }
        let frame: Value = serde_json::from_str(&text)?;
        match frame["event"].as_str() {
            Some("pusher_internal:subscription_succeeded") => {
                ready.fetch_add(1, Ordering::SeqCst);
                // Let the next client start its handshake.
                handshake_permit.take();
                if let (Reader::Lean, MaybeTlsStream::Plain(tcp)) = (reader, socket.get_mut()) {
                    // Nothing follows the subscription until the first event,
                    // so tungstenite holds no unread bytes here; a frame lost
                    // would show as a missing delivery in the report.
                    {
                        let read = frames::read_events(tcp, expected, |text| {
                            if !text.contains(r#""event":"bench""#) {
                                return false;
                            }
                            received.push(bench_receipt(text));
                            true
                        });
                        // The wait for the report is registered before the first
                        // event, not when this subscriber has its last one: then
                        // it would be client work inside the last event's
                        // fan-out, and that event alone would pay for it.
                        let reporting = async {
                            // Only the moment matters: the value's guard is
                            // dropped at once.
                            let _ = phase.wait_for(|phase| *phase >= Phase::Reporting).await;
                        };
                        tokio::pin!(read, reporting);
                        tokio::select! {
                            biased;
                            read = &mut read => {
                                read?;
                                reporting.await;
                            }
                            () = &mut reporting => {
                                // Every event was triggered and some are still on
                                // their way: they are read for a while longer, and
                                // whatever never comes shows as missing.
                                if let Ok(read) = tokio::time::timeout(LATE_DELIVERY_GRACE, read).await {
                                    read?;
                                }
                            }
                        }
                    }
                    return Ok((received, socket));
                }
            }
            Some("pusher:ping") => {
                let pong = r#"{"event":"pusher:pong","data":{}}"#;
                socket.send(Message::Text(pong.into())).await?;
            }
            _ => {}
        }
    }
    Ok((received, socket))
}

async fn fanout(args: FanoutArgs) -> Result<(), Error> {
    let pusher = args.target.pusher()?;
    let ports = if args.ws_ports.is_empty() {
        vec![args.target.port]
    } else {
        args.ws_ports.clone()
    };
    let url_of = |port: u16| {
        format!(
            "ws://{}:{}/app/{}?protocol=7&client=realtime-load&version=0.1",
            args.target.host, port, args.target.key
        )
    };
    let baseline_kib = rss_kib_of(&args.server_pid);
    let ready = Arc::new(AtomicUsize::new(0));
    let channel: Arc<str> = Arc::from(args.channel.as_str());
    let gate = Arc::new(Semaphore::new(args.connect_concurrency));
    let started = Instant::now();
    let (results_to, mut results) = mpsc::unbounded_channel();
    let (phase_to, phase) = watch::channel(Phase::Triggering);
    for n in 0..args.connections {
        // At most `connect_concurrency` handshakes are pending at once.
        let permit = gate.clone().acquire_owned().await?;
        // Spread evenly over the ports.
        let port = ports[n % ports.len()];
        let ready = ready.clone();
        tokio::spawn(subscriber(
            port,
            channel.clone(),
            url_of(port),
            args.events,
            ready,
            permit,
            args.reader,
            results_to.clone(),
            phase.clone(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready.load(Ordering::SeqCst) < args.connections && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let subscribed = ready.load(Ordering::SeqCst);
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded_kib = rss_kib_of(&args.server_pid);
    if let Some(command) = &args.before_events {
        run_hook(command).await;
    }

    let server_cpu_before = cpu_time_of_all(&args.server_pid);
    let client_cpu_before = own_cpu_time();
    let first_sent = Instant::now();
    for seq in 0..args.events {
        let data = serde_json::json!({"seq": seq, "sent_ns": now_ns()});
        pusher
            .trigger(args.channel.as_str(), "bench", &data)
            .send()
            .await?;
        if args.interval_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    let _ = phase_to.send(Phase::Reporting);
    let mut per_delivery = Vec::new();
    let mut by_port: std::collections::BTreeMap<u16, Vec<u64>> = Default::default();
    let mut full_fanout = vec![0u64; args.events];
    let mut deliveries_by_event = vec![0usize; args.events];
    let mut succeeded = 0;
    let mut first_error = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for _ in 0..args.connections {
        match tokio::time::timeout_at(deadline, results.recv()).await {
            Ok(Some(Ok((port, received)))) => {
                succeeded += 1;
                for (seq, latency) in received {
                    per_delivery.push(latency);
                    by_port.entry(port).or_default().push(latency);
                    if let Some(slot) = full_fanout.get_mut(seq) {
                        *slot = (*slot).max(latency);
                    }
                    if let Some(count) = deliveries_by_event.get_mut(seq) {
                        *count += 1;
                    }
                }
            }
            Ok(Some(Err(e))) => {
                if first_error.is_none() {
                    eprintln!("a subscriber failed: {e}");
                    first_error = Some(e);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let elapsed = first_sent.elapsed();
    let failed = args.connections - succeeded;
    // CPU is read before any connection closes: closing is not delivering.
    let client_cpu = own_cpu_time().saturating_sub(client_cpu_before);
    let server_cpu = cpu_time_of_all(&args.server_pid)
        .zip(server_cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    if let Some(command) = &args.after_events {
        run_hook(command).await;
    }
    // Everyone reported (or time is up): now the connections may close.
    let _ = phase_to.send(Phase::Done);
    per_delivery.sort_unstable();
    let full_fanout_by_event: Vec<f64> = full_fanout.iter().map(|ns| ms(*ns).round()).collect();
    full_fanout.sort_unstable();
    let expected = args.connections * args.events;
    let report = serde_json::json!({
        "label": args.label,
        "connections": args.connections,
        "subscribed": subscribed,
        "connect_seconds": connect_time.as_secs_f64(),
        "events": args.events,
        "interval_ms": args.interval_ms,
        "deliveries": per_delivery.len(),
        "expected_deliveries": expected,
        "failed_clients": failed,
        "first_error": first_error,
        "delivery_by_port": by_port
            .iter_mut()
            .map(|(port, latencies)| {
                latencies.sort_unstable();
                (
                    port.to_string(),
                    serde_json::json!({
                        "trigger_port": *port == args.target.port,
                        "deliveries": latencies.len(),
                        "p50_ms": ms(percentile(latencies, 50.0)),
                        "p99_ms": ms(percentile(latencies, 99.0)),
                    }),
                )
            })
            .collect::<serde_json::Map<String, Value>>(),
        "delivery_p50_ms": ms(percentile(&per_delivery, 50.0)),
        "delivery_p99_ms": ms(percentile(&per_delivery, 99.0)),
        "full_fanout_p50_ms": ms(percentile(&full_fanout, 50.0)),
        "full_fanout_p99_ms": ms(percentile(&full_fanout, 99.0)),
        "full_fanout_ms_by_event": full_fanout_by_event,
        // A full fan-out time holds for all subscribers only where its
        // event's count is the number subscribed.
        "deliveries_by_event": deliveries_by_event,
        "deliveries_per_second": per_delivery.len() as f64 / elapsed.as_secs_f64(),
        "server_cpu_us_per_delivery": server_cpu
            .filter(|_| !per_delivery.is_empty())
            .map(|cpu| cpu.as_secs_f64() * 1e6 / per_delivery.len() as f64),
        "reader": match args.reader { Reader::Lean => "lean", Reader::Tungstenite => "tungstenite" },
        "client_cpu_us_per_delivery": (!per_delivery.is_empty())
            .then(|| client_cpu.as_secs_f64() * 1e6 / per_delivery.len() as f64),
        "server_rss_baseline_kib": baseline_kib,
        "server_rss_loaded_kib": loaded_kib,
        "server_kib_per_connection": match (baseline_kib, loaded_kib) {
            (Some(b), Some(l)) if subscribed > 0 => Some((l.saturating_sub(b)) as f64 / subscribed as f64),
            _ => None,
        },
    });
    println!("{report}");
    Ok(())
}

/// Runs `--before-events` / `--after-events` with `sh -c`; its output goes
/// to this process's stderr, so that stdout stays one JSON report. A hook
/// that fails is reported there too, and the run goes on.
async fn run_hook(command: &str) {
    let owned = command.to_owned();
    let status = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&owned)
            .stdout(std::io::stderr().as_fd().try_clone_to_owned()?)
            .status()
    })
    .await;
    match status {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => eprintln!("`{command}` failed: {status}"),
        Ok(Err(e)) => eprintln!("`{command}` could not run: {e}"),
        Err(e) => eprintln!("`{command}` could not run: {e}"),
    }
}

async fn trigger(args: TriggerArgs) -> Result<(), Error> {
    let pusher = args.target.pusher()?;
    // Warm the connection pool so the run measures steady state.
    for _ in 0..args.concurrency.min(64) {
        pusher
            .trigger_json("bench-channel", "warmup", "{}")
            .send()
            .await?;
    }
    let errors = Arc::new(AtomicUsize::new(0));
    let cpu_before = own_cpu_time();
    let started = Instant::now();
    futures_util::stream::iter(0..args.count)
        .for_each_concurrent(args.concurrency, |n| {
            let pusher = pusher.clone();
            let errors = errors.clone();
            async move {
                let data = serde_json::json!({"body": "hello", "n": n});
                if pusher
                    .trigger("bench-channel", "bench-event", &data)
                    .send()
                    .await
                    .is_err()
                {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    let elapsed = started.elapsed();
    let cpu = own_cpu_time().saturating_sub(cpu_before);
    let report = serde_json::json!({
        "label": args.label,
        "client": "realtime-core",
        "count": args.count,
        "concurrency": args.concurrency,
        "errors": errors.load(Ordering::Relaxed),
        "elapsed_s": elapsed.as_secs_f64(),
        "triggers_per_s": args.count as f64 / elapsed.as_secs_f64(),
        "cpu_us_per_trigger": cpu.as_secs_f64() * 1e6 / args.count as f64,
    });
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_read_after_its_marker() {
        let text = r#"{"data":"{\"seq\":17,\"sent_ns\":1764000000123456789}"}"#;
        assert_eq!(number_after(text, r#"seq\":"#), Some(17));
        assert_eq!(
            number_after(text, r#"sent_ns\":"#),
            Some(1_764_000_000_123_456_789)
        );
        assert_eq!(number_after(text, "missing"), None);
        assert_eq!(number_after(r#"seq\":x"#, r#"seq\":"#), None);
        assert_eq!(
            number_after("n:99999999999999999999", "n:"),
            None,
            "overflow"
        );
    }
}
