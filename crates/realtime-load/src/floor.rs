//! `realtime-load floor`: the least a server must do to fan an event out, run
//! beside real servers as reference rows.
//!
//! It speaks just enough of the protocol for `fanout` to run against it:
//! the WebSocket handshake, `pusher:connection_established`, a reply to the
//! one subscription, and `POST /apps/{id}/events` (unsigned, unchecked). An
//! event is encoded once, then sent to each subscriber in one of two ways:
//!
//! - [`Delivery::Threads`]: one thread per core writes its share of the
//!   sockets in a loop. No task, no queue, no per-connection state: what a
//!   real server measures above this is its own cost; what this measures is
//!   the kernel's and the clients' on this machine.
//! - [`Delivery::Tasks`]: each socket has a task that waits on its own queue,
//!   on one single-threaded runtime per core (as actix-web runs its
//!   workers). The publisher queues the frame and wakes each task: the least
//!   a server with a task per connection pays.
//!
//! Not a server to use: it checks no signature, reads nothing once a client
//! subscribed, and in `Threads` drops a frame a socket cannot take at once.

use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpStream as StdTcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use clap::ValueEnum;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::{frames, Error};

/// How the floor server sends an event to its subscribers.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Delivery {
    /// One thread per core writes its share of the sockets in a loop.
    Threads,
    /// A task per socket, woken through its own queue.
    Tasks,
}

/// An encoded event.
type Frame = Arc<[u8]>;

/// A lock that carries on after a panic elsewhere: every value kept under
/// these locks is whole between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The subscribed sockets, and how an event reaches them.
enum Subscribers {
    Threads {
        /// One share of the sockets per writing thread.
        shares: Vec<Arc<Mutex<Vec<StdTcpStream>>>>,
        /// Each writing thread's queue of frames.
        writers: Vec<mpsc::Sender<Frame>>,
        next: AtomicUsize,
    },
    Tasks {
        queues: Mutex<Vec<Arc<Queue>>>,
        /// Each runtime's inbox of sockets to start a task for.
        runtimes: Vec<tokio::sync::mpsc::UnboundedSender<(StdTcpStream, Arc<Queue>)>>,
        next: AtomicUsize,
    },
}

/// One socket's queue, in `Tasks`.
#[derive(Default)]
struct Queue {
    frames: Mutex<VecDeque<Frame>>,
    wake: Notify,
    /// Its task ended (the socket is gone): the queue takes nothing more.
    closed: AtomicBool,
}

impl Subscribers {
    fn start(delivery: Delivery, threads: usize) -> Self {
        match delivery {
            Delivery::Threads => {
                let shares: Vec<_> = (0..threads).map(|_| Arc::default()).collect();
                let writers = shares.iter().cloned().map(write_share).collect();
                Subscribers::Threads {
                    shares,
                    writers,
                    next: AtomicUsize::new(0),
                }
            }
            Delivery::Tasks => Subscribers::Tasks {
                queues: Mutex::default(),
                runtimes: (0..threads).map(|_| run_tasks()).collect(),
                next: AtomicUsize::new(0),
            },
        }
    }

    fn add(&self, socket: StdTcpStream) -> Result<(), Error> {
        match self {
            Subscribers::Threads { shares, next, .. } => {
                let share = next.fetch_add(1, Ordering::Relaxed) % shares.len();
                lock(&shares[share]).push(socket);
            }
            Subscribers::Tasks {
                queues,
                runtimes,
                next,
            } => {
                let queue = Arc::new(Queue::default());
                lock(queues).push(queue.clone());
                let runtime = next.fetch_add(1, Ordering::Relaxed) % runtimes.len();
                runtimes[runtime].send((socket, queue))?;
            }
        }
        Ok(())
    }

    /// Sends `frame` to every subscriber; returns once it is handed to each
    /// writing thread (`Threads`) or queued for each task (`Tasks`), as a
    /// server answers a trigger once the event is on its way.
    fn publish(&self, frame: Frame) -> Result<(), Error> {
        match self {
            Subscribers::Threads { writers, .. } => {
                for writer in writers {
                    writer.send(frame.clone())?;
                }
            }
            Subscribers::Tasks { queues, .. } => {
                let mut queues = lock(queues);
                queues.retain(|queue| !queue.closed.load(Ordering::Relaxed));
                for queue in queues.iter() {
                    lock(&queue.frames).push_back(frame.clone());
                    queue.wake.notify_one();
                }
            }
        }
        Ok(())
    }
}

/// A thread that writes each frame it is given to every socket of `share`.
fn write_share(share: Arc<Mutex<Vec<StdTcpStream>>>) -> mpsc::Sender<Frame> {
    let (frames_to, frames) = mpsc::channel::<Frame>();
    std::thread::spawn(move || {
        for frame in frames {
            let mut dropped = 0;
            // A socket that fails or takes only part of a frame (its buffer
            // is full) is shut and let go: a partial frame would corrupt
            // everything after it. Shows in the report as missing deliveries.
            lock(&share).retain(|mut socket| {
                let whole = matches!(socket.write(&frame), Ok(n) if n == frame.len());
                if !whole {
                    let _ = socket.shutdown(std::net::Shutdown::Both);
                    dropped += 1;
                }
                whole
            });
            if dropped > 0 {
                eprintln!("floor: {dropped} sockets could not take a frame at once; closed");
            }
        }
    });
    frames_to
}

/// A thread running a single-threaded runtime that starts a task for each
/// socket it is given.
fn run_tasks() -> tokio::sync::mpsc::UnboundedSender<(StdTcpStream, Arc<Queue>)> {
    let (sockets_to, mut sockets) =
        tokio::sync::mpsc::unbounded_channel::<(StdTcpStream, Arc<Queue>)>();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => return eprintln!("floor: no runtime: {e}"),
        };
        let tasks = tokio::task::LocalSet::new();
        tasks.block_on(&runtime, async move {
            while let Some((socket, queue)) = sockets.recv().await {
                tokio::task::spawn_local(async move {
                    if let Ok(mut socket) = TcpStream::from_std(socket) {
                        'writing: loop {
                            queue.wake.notified().await;
                            loop {
                                let next = lock(&queue.frames).pop_front();
                                let Some(frame) = next else { break };
                                if socket.write_all(&frame).await.is_err() {
                                    break 'writing;
                                }
                            }
                        }
                    }
                    queue.closed.store(true, Ordering::Relaxed);
                    lock(&queue.frames).clear();
                });
            }
        });
    });
    sockets_to
}

/// Listens on `port` until killed, with `threads` threads sending events.
pub async fn serve(port: u16, delivery: Delivery, threads: usize) -> Result<(), Error> {
    let subscribers = Arc::new(Subscribers::start(delivery, threads.max(1)));
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let subscribers = subscribers.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &subscribers).await {
                eprintln!("floor: a connection failed: {e}");
            }
        });
    }
}

/// One request at a time from one client: a WebSocket upgrade (after which
/// the socket joins the subscribers) or triggers over a kept-alive
/// connection.
async fn connection(mut stream: TcpStream, subscribers: &Subscribers) -> Result<(), Error> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(head_len) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let head = std::str::from_utf8(&buf[..head_len])?.to_owned();
        buf.drain(..head_len);
        if head.starts_with("GET ") {
            return subscribe(stream, &head, buf, subscribers).await;
        }
        // Only the one request `fanout` makes is served:
        // `POST /apps/{id}/events`.
        let mut request_line = head.split_whitespace();
        let is_trigger = request_line.next() == Some("POST")
            && request_line
                .next()
                .and_then(|target| target.split('?').next())
                .is_some_and(|path| path.ends_with("/events"));
        let length: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < length {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let body: Vec<u8> = buf.drain(..length).collect();
        if !is_trigger {
            stream
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await?;
            continue;
        }
        let trigger: Value = serde_json::from_slice(&body)?;
        let event = serde_json::json!({
            "event": trigger["name"],
            "channel": trigger["channels"][0],
            "data": trigger["data"],
        });
        subscribers.publish(frames::server_text(event.to_string().as_bytes()).into())?;
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            )
            .await?;
    }
}

/// Completes the WebSocket handshake and the one subscription, then hands
/// the socket over to the subscribers.
async fn subscribe(
    mut stream: TcpStream,
    head: &str,
    mut buf: Vec<u8>,
    subscribers: &Subscribers,
) -> Result<(), Error> {
    let key = header(head, "sec-websocket-key").ok_or("no sec-websocket-key")?;
    let accept = derive_accept_key(key.as_bytes());
    let established = r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.1\",\"activity_timeout\":120}"}"#;
    let mut answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    answer.extend(frames::server_text(established.as_bytes()));
    stream.write_all(&answer).await?;
    // The client's subscription: one frame, taken to be `fanout`'s.
    while frames::parse(&buf).is_none() {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
    let succeeded = serde_json::json!({
        "event": "pusher_internal:subscription_succeeded",
        "channel": crate::CHANNEL,
        "data": "{}",
    });
    stream
        .write_all(&frames::server_text(succeeded.to_string().as_bytes()))
        .await?;
    subscribers.add(stream.into_std()?)
}

/// Reads until `buf` holds a whole request head; its length, or `None` if
/// the client closed first.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<usize>, Error> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(at + 4));
        }
        if buf.len() > 64 * 1024 {
            return Err("request head too large".into());
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// A header's value (names compared without case).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_whatever_their_case() {
        let head = "GET /app/k HTTP/1.1\r\nSec-WebSocket-Key: abc==\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(header(head, "sec-websocket-key"), Some("abc=="));
        assert_eq!(header(head, "content-length"), Some("12"));
        assert_eq!(header(head, "host"), None);
    }
}
