//! `teardown`: does one connection leaving many channels slow everyone
//! else down? Prober connections subscribe (and unsubscribe) on a fixed
//! schedule the whole run, one subscribe every `--interval-us` each, and
//! time each subscribe from its scheduled moment to its
//! `subscription_succeeded`: a prober held up is late for every probe it
//! should have sent meanwhile, so a stall weighs as long as it lasts (no
//! coordinated omission). Each round, a heavy connection subscribes to
//! `--channels` channels, stays idle through a window (the baseline), then
//! goes away (its socket is dropped) and another window follows (the
//! teardown). Probes are reported side by side, from the same run: baseline
//! the probes done within a baseline window, teardown those that overlap a
//! teardown window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::{ms, percentile, Error, Socket, Target};

#[derive(Args)]
pub struct TeardownArgs {
    #[command(flatten)]
    target: Target,
    /// Channels the heavy connection subscribes to before it leaves (the
    /// server's channel cap must allow them).
    #[arg(long, default_value_t = 10_000)]
    channels: usize,
    /// Heavy connections, one after the other.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Length of each window, before and after the heavy connection leaves.
    #[arg(long, default_value_t = 50)]
    window_ms: u64,
    /// Connections probing at once (they land on different server workers).
    #[arg(long, default_value_t = 4)]
    probers: usize,
    /// Time between one prober's subscribes: more than tokio's timer
    /// resolution (1 ms), so a probe woken late by the timer is done before
    /// the next is due and that lateness is not counted.
    #[arg(long, default_value_t = 2000)]
    interval_us: u64,
    /// A label for the report.
    #[arg(long, default_value = "server")]
    label: String,
}

/// Subscriptions sent before their answers are read, so the server's
/// outbox for the heavy connection never fills.
const SUBSCRIBE_WINDOW: usize = 256;

/// One probe: when it was due (since the run began) and how long after
/// that its subscription succeeded, in ns.
type Probe = (u64, u64);

fn url(target: &Target) -> String {
    format!(
        "ws://{}:{}/app/{}?protocol=7&client=realtime-load&version=0.1",
        target.host, target.port, target.key
    )
}

async fn connect(url: &str) -> Result<Socket, Error> {
    // Without TCP_NODELAY, a subscribe written right after an unsubscribe
    // (which gets no answer) waits for the server's delayed ACK: 40 ms.
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    // Wait for pusher:connection_established.
    while let Some(message) = socket.next().await {
        if let Message::Text(text) = message? {
            if text.contains("pusher:connection_established") {
                return Ok(socket);
            }
        }
    }
    Err("the server closed before connection_established".into())
}

fn subscribe_frame(channel: &str) -> Message {
    let frame = serde_json::json!({ "event": "pusher:subscribe", "data": { "channel": channel } });
    Message::Text(frame.to_string().into())
}

/// Reads until `count` subscriptions succeeded; a refusal is an error.
async fn await_succeeded(socket: &mut Socket, mut count: usize) -> Result<(), Error> {
    while count > 0 {
        let Some(message) = socket.next().await else {
            return Err("the server closed the connection".into());
        };
        if let Message::Text(text) = message? {
            if text.contains("pusher_internal:subscription_succeeded") {
                count -= 1;
            } else if text.contains("pusher:subscription_error") || text.contains("pusher:error") {
                return Err(format!("subscription refused: {text}").into());
            }
        }
    }
    Ok(())
}

/// Subscribes (then unsubscribes) every `interval` until `stop`, timing
/// each subscribe from when it was due.
async fn probe(
    url: String,
    id: usize,
    start: Instant,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Probe>, Error> {
    let mut socket = connect(&url).await?;
    let mut probes = Vec::new();
    let mut due = Instant::now();
    let mut previous_done = due;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(due.into()).await;
        let sent = Instant::now();
        // Late because the previous probe was: the server held this prober
        // up, and the wait counts. Late because the timer woke late (it
        // ticks by the millisecond): the client's doing, not counted.
        let from = if previous_done > due { due } else { sent };
        let channel = format!("probe-{id}-{n}");
        n += 1;
        socket.send(subscribe_frame(&channel)).await?;
        await_succeeded(&mut socket, 1).await?;
        let done = Instant::now();
        probes.push((
            from.duration_since(start).as_nanos() as u64,
            done.duration_since(from).as_nanos() as u64,
        ));
        previous_done = done;
        due += interval;
        let leave =
            serde_json::json!({ "event": "pusher:unsubscribe", "data": { "channel": channel } });
        socket.send(Message::Text(leave.to_string().into())).await?;
    }
    Ok(probes)
}

fn summary(latencies: &mut [u64]) -> serde_json::Value {
    latencies.sort_unstable();
    serde_json::json!({
        "probes": latencies.len(),
        "p50_ms": ms(percentile(latencies, 50.0)),
        "p99_ms": ms(percentile(latencies, 99.0)),
        "p99_9_ms": ms(percentile(latencies, 99.9)),
        "max_ms": ms(latencies.last().copied().unwrap_or(0)),
    })
}

/// The worst probe of each round: its median, p90 and max over the rounds.
fn worst(per_round: &mut [u64]) -> serde_json::Value {
    per_round.sort_unstable();
    serde_json::json!({
        "median_ms": ms(percentile(per_round, 50.0)),
        "p90_ms": ms(percentile(per_round, 90.0)),
        "max_ms": ms(per_round.last().copied().unwrap_or(0)),
    })
}

pub async fn run(args: TeardownArgs) -> Result<(), Error> {
    let url = url(&args.target);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let interval = Duration::from_micros(args.interval_us);
    let probers: Vec<_> = (0..args.probers)
        .map(|id| tokio::spawn(probe(url.clone(), id, start, interval, stop.clone())))
        .collect();
    let window = Duration::from_millis(args.window_ms);
    let since = |at: Instant| at.duration_since(start).as_nanos() as u64;
    // (baseline window, teardown window), each as [from, to) in ns.
    let mut windows = Vec::with_capacity(args.rounds);
    for round in 0..args.rounds {
        let mut heavy = connect(&url).await?;
        let names: Vec<String> = (0..args.channels)
            .map(|i| format!("heavy-{round}-{i}"))
            .collect();
        for chunk in names.chunks(SUBSCRIBE_WINDOW) {
            for name in chunk {
                heavy.feed(subscribe_frame(name)).await?;
            }
            heavy.flush().await?;
            await_succeeded(&mut heavy, chunk.len()).await?;
        }
        // Let the subscription burst settle before the baseline window.
        tokio::time::sleep(window).await;
        let quiet = Instant::now();
        tokio::time::sleep(window).await;
        let leaving = Instant::now();
        // The socket ends: the server tears down all of its channels.
        drop(heavy);
        tokio::time::sleep(window).await;
        windows.push((
            (since(quiet), since(leaving)),
            (since(leaving), since(Instant::now())),
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let mut probes = Vec::new();
    for prober in probers {
        probes.extend(prober.await??);
    }
    // A probe spans [due, due + took].
    let within = |due: u64, took: u64, (from, to): (u64, u64)| due >= from && due + took < to;
    let overlaps = |due: u64, took: u64, (from, to): (u64, u64)| due < to && due + took >= from;
    let mut baseline: Vec<u64> = Vec::new();
    let mut teardown: Vec<u64> = Vec::new();
    // The worst probe of each round's window, of either kind.
    let mut worst_baseline = vec![0u64; windows.len()];
    let mut worst_teardown = vec![0u64; windows.len()];
    for &(due, took) in &probes {
        if let Some(round) = windows
            .iter()
            .position(|(quiet, _)| within(due, took, *quiet))
        {
            baseline.push(took);
            worst_baseline[round] = worst_baseline[round].max(took);
        } else if let Some(round) = windows
            .iter()
            .position(|(_, leaving)| overlaps(due, took, *leaving))
        {
            teardown.push(took);
            worst_teardown[round] = worst_teardown[round].max(took);
        }
    }
    let report = serde_json::json!({
        "label": args.label,
        "channels": args.channels,
        "rounds": args.rounds,
        "probers": args.probers,
        "interval_us": args.interval_us,
        "window_ms": args.window_ms,
        "baseline": summary(&mut baseline),
        "teardown": summary(&mut teardown),
        "worst_per_round_baseline": worst(&mut worst_baseline),
        "worst_per_round_teardown": worst(&mut worst_teardown),
    });
    println!("{report}");
    Ok(())
}
