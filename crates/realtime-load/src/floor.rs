//! `realtime-load floor`: the least a server must do to fan an event out, run
//! beside real servers as a reference row.
//!
//! It speaks just enough of the protocol for `fanout` to run against it:
//! the WebSocket handshake, `pusher:connection_established`, a reply to the
//! one subscription, and `POST /apps/{id}/events` (unsigned, unchecked).
//! An event is encoded once and written with one `send` per subscriber, by
//! one thread per core, each over its own share of the sockets: no task
//! wake, no queue, no per-connection state. What a real server measures
//! above this row is its own cost; what this row measures is the kernel's
//! and the clients' on this machine.
//!
//! Not a server to use: it checks no signature, reads nothing once a client
//! subscribed, and drops a frame that a socket cannot take at once.

use std::io::Write;
use std::net::TcpStream as StdTcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::{frames, Error};

/// An encoded event for one writing thread, and where it says it is done.
type Job = (Arc<[u8]>, mpsc::Sender<()>);

/// Sockets of subscribed clients, in one share per writing thread.
struct Subscribers {
    shares: Vec<Mutex<Vec<StdTcpStream>>>,
    /// Where the next subscriber goes (round robin over the shares).
    next: AtomicUsize,
}

/// Listens on `port` until killed; `writers` threads write each event.
pub async fn serve(port: u16, writers: usize) -> Result<(), Error> {
    let writers = writers.max(1);
    let subscribers = Arc::new(Subscribers {
        shares: (0..writers).map(|_| Mutex::new(Vec::new())).collect(),
        next: AtomicUsize::new(0),
    });
    let mut to_writers = Vec::with_capacity(writers);
    for share in 0..writers {
        let (to_writer, frames) = mpsc::channel::<Job>();
        to_writers.push(to_writer);
        let subscribers = subscribers.clone();
        std::thread::spawn(move || {
            for (frame, done) in frames {
                let sockets = subscribers.shares[share]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let mut dropped = 0;
                for mut socket in sockets.iter() {
                    if !matches!(socket.write(&frame), Ok(n) if n == frame.len()) {
                        dropped += 1;
                    }
                }
                if dropped > 0 {
                    // Shows in the report as missing deliveries too.
                    eprintln!("floor: {dropped} sockets could not take a frame at once");
                }
                let _ = done.send(());
            }
        });
    }
    let to_writers = Arc::new(to_writers);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let subscribers = subscribers.clone();
        let to_writers = to_writers.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, subscribers, to_writers).await {
                eprintln!("floor: a connection failed: {e}");
            }
        });
    }
}

/// One request at a time from one client: a WebSocket upgrade (after which
/// the socket joins the subscribers) or triggers over a kept-alive
/// connection.
async fn connection(
    mut stream: TcpStream,
    subscribers: Arc<Subscribers>,
    to_writers: Arc<Vec<mpsc::Sender<Job>>>,
) -> Result<(), Error> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(head_len) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let head = std::str::from_utf8(&buf[..head_len])?.to_owned();
        buf.drain(..head_len);
        if head.starts_with("GET ") {
            return subscribe(stream, &head, buf, &subscribers).await;
        }
        let length: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < length {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let body: Vec<u8> = buf.drain(..length).collect();
        let trigger: Value = serde_json::from_slice(&body)?;
        let event = serde_json::json!({
            "event": trigger["name"],
            "channel": trigger["channels"][0],
            "data": trigger["data"],
        });
        let frame: Arc<[u8]> = text_frame(event.to_string().as_bytes()).into();
        let (done_to, done) = mpsc::channel();
        for writer in to_writers.iter() {
            writer.send((frame.clone(), done_to.clone()))?;
        }
        drop(done_to);
        // Answer once every share was written, as a server's publish does.
        tokio::task::spawn_blocking(move || while done.recv().is_ok() {}).await?;
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            )
            .await?;
    }
}

/// Completes the WebSocket handshake and the one subscription, then hands
/// the socket to a writing thread.
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
    answer.extend(text_frame(established.as_bytes()));
    stream.write_all(&answer).await?;
    // The client's subscription: one frame, whatever it asks.
    while frames::parse(&buf).is_none() {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
    let channel = "bench-fanout";
    let succeeded = format!(
        r#"{{"event":"pusher_internal:subscription_succeeded","channel":"{channel}","data":"{{}}"}}"#
    );
    stream.write_all(&text_frame(succeeded.as_bytes())).await?;
    let socket = stream.into_std()?;
    let share = subscribers.next.fetch_add(1, Ordering::Relaxed) % subscribers.shares.len();
    subscribers.shares[share]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(socket);
    Ok(())
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

/// An unmasked text frame, as a server sends it.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x81);
    match payload.len() {
        len @ 0..=125 => frame.push(len as u8),
        len @ 126..=0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_frame_is_read_back_by_the_subscribers_parser() {
        for len in [0, 125, 126, 300, 70_000] {
            let frame = text_frame(&vec![b'x'; len]);
            let parsed = frames::parse(&frame).unwrap_or_else(|| unreachable!());
            assert_eq!((parsed.opcode, parsed.len - parsed.payload_start), (1, len));
            assert_eq!(parsed.len, frame.len());
        }
    }

    #[test]
    fn headers_are_found_whatever_their_case() {
        let head = "GET /app/k HTTP/1.1\r\nSec-WebSocket-Key: abc==\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(header(head, "sec-websocket-key"), Some("abc=="));
        assert_eq!(header(head, "content-length"), Some("12"));
        assert_eq!(header(head, "host"), None);
    }
}
