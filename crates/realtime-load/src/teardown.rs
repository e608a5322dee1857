//! `teardown`: does one connection leaving many channels slow everyone
//! else down? Prober connections subscribe and unsubscribe back to back the
//! whole run and time each subscribe (send to `subscription_succeeded`). Each
//! round, a heavy connection subscribes to `--channels` channels, then stays
//! idle for a window (the baseline window), then goes away (its socket is
//! dropped) and another window follows (the teardown window). Probes started
//! in each kind of window are reported side by side, from the same run.

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
    /// A label for the report.
    #[arg(long, default_value = "server")]
    label: String,
}

/// Subscriptions sent before their answers are read, so the server's
/// outbox for the heavy connection never fills.
const SUBSCRIBE_WINDOW: usize = 256;

/// One probe: when it started (since the run began) and how long the
/// subscribe took, in ns.
type Probe = (u64, u64);

fn url(target: &Target) -> String {
    format!(
        "ws://{}:{}/app/{}?protocol=7&client=realtime-load&version=0.1",
        target.host, target.port, target.key
    )
}

async fn connect(url: &str) -> Result<Socket, Error> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
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

/// Subscribes and unsubscribes back to back until `stop`, timing each
/// subscribe.
async fn probe(
    url: String,
    id: usize,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Probe>, Error> {
    let mut socket = connect(&url).await?;
    let mut probes = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let channel = format!("probe-{id}-{n}");
        n += 1;
        let began = Instant::now();
        socket.send(subscribe_frame(&channel)).await?;
        await_succeeded(&mut socket, 1).await?;
        let took = began.elapsed();
        probes.push((
            began.duration_since(start).as_nanos() as u64,
            took.as_nanos() as u64,
        ));
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
        "max_ms": ms(latencies.last().copied().unwrap_or(0)),
    })
}

pub async fn run(args: TeardownArgs) -> Result<(), Error> {
    let url = url(&args.target);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let probers: Vec<_> = (0..args.probers)
        .map(|id| tokio::spawn(probe(url.clone(), id, start, stop.clone())))
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
    let inside = |at: u64, (from, to): (u64, u64)| at >= from && at < to;
    let mut baseline: Vec<u64> = Vec::new();
    let mut teardown: Vec<u64> = Vec::new();
    for &(at, took) in &probes {
        if windows.iter().any(|(quiet, _)| inside(at, *quiet)) {
            baseline.push(took);
        } else if windows.iter().any(|(_, leaving)| inside(at, *leaving)) {
            teardown.push(took);
        }
    }
    let report = serde_json::json!({
        "label": args.label,
        "channels": args.channels,
        "rounds": args.rounds,
        "probers": args.probers,
        "window_ms": args.window_ms,
        "baseline": summary(&mut baseline),
        "teardown": summary(&mut teardown),
    });
    println!("{report}");
    Ok(())
}
