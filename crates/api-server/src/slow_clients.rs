//! Deadlines for slow clients: the HTTP server's timeouts (set in `app.rs`),
//! and the two that actix-web does not keep by itself.
//!
//! actix times the head of a connection's *first* request only, and never a
//! body. A client could otherwise send one quick request, then half of the
//! next head and nothing more, or announce a body and trickle it, and hold
//! the socket for as long as it likes. So:
//!
//! - every connection has a watchdog ([`on_connect`]): once a request is
//!   answered and its body written, the next one must reach the application
//!   within [`NEXT_REQUEST_TIMEOUT`] (the keep-alive time plus the header
//!   time), else the socket is shut down. While a request is being handled
//!   the watchdog waits; while its answer's body is written, the client must
//!   take some of it every [`WRITE_STALL_TIMEOUT`] ([`InFlight::hold`]), so a
//!   slow download goes on for as long as it moves and a client that stopped
//!   reading is let go; a WebSocket upgrade ends the watchdog (the realtime
//!   server keeps its own activity timeout on those);
//! - a request's body must arrive within [`BODY_TIMEOUT`] of its head
//!   ([`limit_body_time`]), else reading it fails and the request is
//!   answered 408.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Extensions, Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use futures_core::Stream;

/// Time to send a connection's first request head (actix answers 408 and
/// closes after it). A head is a few hundred bytes, sent in one packet by
/// any real client; 5 s covers a lost packet's retransmissions on a poor
/// mobile link.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an idle connection is kept for the client's next request. The
/// inbox page sends its requests in bursts, which 5 s covers; an idle
/// socket costs a file descriptor and a place under
/// [`MAX_CONNECTIONS_PER_WORKER`]. A proxy that keeps connections to
/// api-server open must close idle ones sooner (see docs/operations.md).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// After the server closes its side, how long the client gets to close
/// its own before the socket is dropped.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// From an answer to the next request's head having fully arrived: the
/// keep-alive time (no byte yet) plus the header time (the head under way).
pub const NEXT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// While an answer's body is being written: the longest the client may take
/// none of it. The body is handed to actix in [`WRITE_CHUNK`] pieces, and
/// actix asks for the next only once its write buffer has drained into the
/// socket, so a piece taken is the client's progress. A download of any
/// length goes on while it moves; one that stands still this long is cut.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The pieces an answer's body is handed to actix in (see
/// [`WRITE_STALL_TIMEOUT`]): a body given as one large chunk would sit in
/// actix's write buffer whole, and its writing would show no progress.
pub const WRITE_CHUNK: usize = 16 * 1024;

/// Time for a request's body to arrive, counted from its head. Bodies here
/// are at most 64 KiB (1 MiB for the realtime server's HTTP API): 10 s is
/// 100 KiB/s for the largest, far below any working link.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections per worker (one worker per core), WebSockets of the
/// embedded realtime server included, at most: past it the worker stops
/// accepting until one closes. Fewer when the process's descriptor limit
/// cannot hold that many ([`connections_per_worker`]).
pub const MAX_CONNECTIONS_PER_WORKER: usize = 10_000;

/// Descriptors one connection holds: its socket, and the watchdog's second
/// descriptor of it ([`on_connect`]).
pub const DESCRIPTORS_PER_CONNECTION: u64 = 2;

/// Descriptors kept for everything but client connections (the database's
/// connections, requests to Twilio and Pusher, listeners, files): this
/// many, or a quarter of a limit under 4,000.
pub const RESERVED_DESCRIPTORS: u64 = 1_000;

/// How many connections each of `workers` may hold so that all of them
/// together, [`DESCRIPTORS_PER_CONNECTION`] each, stay within
/// `descriptor_limit` less the [`RESERVED_DESCRIPTORS`]: at most
/// [`MAX_CONNECTIONS_PER_WORKER`], at least one. A fixed cap alone did not
/// fit: 10,000 a worker, two descriptors each, on 4 cores is 80,000, past
/// the 65,536 a server's limit is commonly raised to, and an `accept` or the
/// watchdog's descriptor would then fail under load. No limit known: the
/// maximum.
pub fn connections_per_worker(descriptor_limit: Option<u64>, workers: usize) -> usize {
    let Some(limit) = descriptor_limit else {
        return MAX_CONNECTIONS_PER_WORKER;
    };
    let reserved = RESERVED_DESCRIPTORS.min(limit / 4);
    let per_worker =
        limit.saturating_sub(reserved) / (workers.max(1) as u64 * DESCRIPTORS_PER_CONNECTION);
    usize::try_from(per_worker)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_CONNECTIONS_PER_WORKER)
}

/// The process's descriptor limit (its soft `RLIMIT_NOFILE`), where the
/// system tells it; `None` when it is unlimited or unknown.
pub fn descriptor_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Connections the kernel may hold accepted-but-not-yet-taken. A burst
/// beyond it is refused at once rather than queued for seconds.
pub const BACKLOG: u32 = 1024;

/// A listening socket on `addr` with [`BACKLOG`]: the listeners api-server
/// binds itself (to learn the port before serving) would otherwise get the
/// standard library's 128, and a burst of connections past it leaves
/// clients holding sockets the server never accepted.
pub fn listen(addr: impl std::net::ToSocketAddrs) -> std::io::Result<std::net::TcpListener> {
    let mut last = None;
    for addr in addr.to_socket_addrs()? {
        let bound = (|| {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            // As the standard library does: a restart may bind the port
            // while the last run's connections are still in TIME_WAIT.
            #[cfg(unix)]
            socket.set_reuse_address(true)?;
            socket.bind(&addr.into())?;
            socket.listen(BACKLOG as i32)?;
            Ok::<_, std::io::Error>(std::net::TcpListener::from(socket))
        })();
        match bound {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    }))
}

/// The origin of the times kept as milliseconds in atomics.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn millis_now() -> u64 {
    Instant::now()
        .saturating_duration_since(origin())
        .as_millis() as u64
}

fn instant_of(millis: u64) -> Instant {
    origin() + Duration::from_millis(millis)
}

/// What a connection's watchdog watches.
#[derive(Debug, Default)]
struct Shared {
    /// Requests being handled on this connection.
    in_flight: AtomicUsize,
    /// When the connection last had no request in flight.
    idle_since_ms: AtomicU64,
    /// Answers whose body is being written.
    writing: AtomicUsize,
    /// When a body being written last handed a piece to actix.
    progress_ms: AtomicU64,
    /// Answered with 101: a WebSocket, whose own timeouts apply.
    upgraded: AtomicBool,
    /// The connection ended.
    closed: AtomicBool,
    wake: tokio::sync::Notify,
}

/// Kept in the connection's data ([`on_connect`]); dropped with the
/// connection, which ends its watchdog.
#[derive(Debug)]
pub struct ConnectionWatch(Arc<Shared>);

impl Drop for ConnectionWatch {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.wake.notify_one();
    }
}

/// `HttpServer::on_connect`: starts the connection's watchdog.
pub fn on_connect(connection: &dyn Any, data: &mut Extensions) {
    #[cfg(unix)]
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        use std::os::fd::AsFd;
        // A second descriptor of the same socket: shutting it down ends
        // the connection under actix's feet, which then closes its own.
        let Ok(descriptor) = stream.as_fd().try_clone_to_owned() else {
            return;
        };
        let socket = std::net::TcpStream::from(descriptor);
        let shared = Arc::new(Shared::default());
        shared.idle_since_ms.store(millis_now(), Ordering::SeqCst);
        data.insert(ConnectionWatch(shared.clone()));
        actix_web::rt::spawn(watch(shared, socket));
    }
    #[cfg(not(unix))]
    let _ = (connection, data);
}

async fn watch(shared: Arc<Shared>, socket: std::net::TcpStream) {
    loop {
        if shared.closed.load(Ordering::SeqCst) || shared.upgraded.load(Ordering::SeqCst) {
            return;
        }
        let deadline = if shared.writing.load(Ordering::SeqCst) > 0 {
            // A body is being written: the client must keep taking it.
            instant_of(shared.progress_ms.load(Ordering::SeqCst)) + WRITE_STALL_TIMEOUT
        } else if shared.in_flight.load(Ordering::SeqCst) > 0 {
            // A handler is at work: its own time is not the client's.
            shared.wake.notified().await;
            continue;
        } else {
            instant_of(shared.idle_since_ms.load(Ordering::SeqCst)) + NEXT_REQUEST_TIMEOUT
        };
        if Instant::now() >= deadline {
            tracing::debug!("closing a connection whose client stopped reading or sending");
            let _ = socket.shutdown(std::net::Shutdown::Both);
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = shared.wake.notified() => {}
        }
    }
}

/// A request being handled, for its connection's watchdog; dropping it
/// (the answer's body is written, or the request was abandoned) starts the
/// wait for the next request.
#[derive(Debug)]
pub struct InFlight {
    shared: Option<Arc<Shared>>,
    /// Counted in `writing` (its answer's body is being written).
    writing: bool,
}

impl InFlight {
    /// Marks a request of `req`'s connection as being handled.
    pub fn start(req: &ServiceRequest) -> Self {
        let shared = req.conn_data::<ConnectionWatch>().map(|w| w.0.clone());
        if let Some(shared) = &shared {
            shared.in_flight.fetch_add(1, Ordering::SeqCst);
            shared.wake.notify_one();
        }
        InFlight {
            shared,
            writing: false,
        }
    }

    /// The request was answered with `res`: the request stays in flight
    /// until the answer's body has been handed to the socket, so that a
    /// download is timed by its progress ([`WRITE_STALL_TIMEOUT`]) and not
    /// by [`NEXT_REQUEST_TIMEOUT`] counted from the answer's head. A 101
    /// hands the connection to the WebSocket, whose own timeouts apply.
    pub fn hold(mut self, res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
        if res.status() == actix_web::http::StatusCode::SWITCHING_PROTOCOLS {
            if let Some(shared) = &self.shared {
                shared.upgraded.store(true, Ordering::SeqCst);
            }
            return res;
        }
        if let Some(shared) = &self.shared {
            shared.progress_ms.store(millis_now(), Ordering::SeqCst);
            shared.writing.fetch_add(1, Ordering::SeqCst);
            self.writing = true;
            shared.wake.notify_one();
        }
        res.map_body(|_, body| {
            BoxBody::new(HeldBody {
                body,
                piece: Bytes::new(),
                held: Some(self),
            })
        })
    }

    fn progressed(&self) {
        if let Some(shared) = &self.shared {
            shared.progress_ms.store(millis_now(), Ordering::SeqCst);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.idle_since_ms.store(millis_now(), Ordering::SeqCst);
            if self.writing {
                shared.writing.fetch_sub(1, Ordering::SeqCst);
            }
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            shared.wake.notify_one();
        }
    }
}

/// An answer's body carrying its request's [`InFlight`] until the last
/// piece is taken (or the body is dropped: the client went away), handed
/// out in pieces of at most [`WRITE_CHUNK`] so that each piece taken is
/// the client's progress.
struct HeldBody {
    body: BoxBody,
    /// What is left of the chunk the body gave last.
    piece: Bytes,
    held: Option<InFlight>,
}

impl MessageBody for HeldBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if !this.piece.is_empty() {
                let take = this.piece.len().min(WRITE_CHUNK);
                if let Some(held) = &this.held {
                    held.progressed();
                }
                return Poll::Ready(Some(Ok(this.piece.split_to(take))));
            }
            match Pin::new(&mut this.body).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.piece = chunk,
                Poll::Ready(Some(Err(e))) => {
                    this.held = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.held = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Makes reading `req`'s body fail once [`BODY_TIMEOUT`] has passed; a
/// request without a body, or a WebSocket upgrade (whose "body" is the
/// socket's frames), is left alone.
pub fn limit_body_time(req: &mut ServiceRequest) {
    let headers = req.headers();
    if headers.contains_key(header::UPGRADE) {
        return;
    }
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|length| length > 0);
    if !announced && !headers.contains_key(header::TRANSFER_ENCODING) {
        return;
    }
    let inner = req.take_payload();
    req.set_payload(Payload::Stream {
        payload: Box::pin(BodyDeadline {
            inner,
            timer: Box::pin(tokio::time::sleep(BODY_TIMEOUT)),
            expired: false,
        }),
    });
}

/// Whether a payload error is [`limit_body_time`]'s.
pub fn is_body_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

struct BodyDeadline {
    inner: Payload,
    timer: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

impl Stream for BodyDeadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending if this.timer.as_mut().poll(cx).is_ready() => {
                this.expired = true;
                Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body did not arrive in time",
                )))))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptors_used(limit: u64, workers: usize) -> u64 {
        connections_per_worker(Some(limit), workers) as u64
            * workers as u64
            * DESCRIPTORS_PER_CONNECTION
    }

    #[test]
    fn connections_per_worker_fit_the_descriptor_limit() {
        // 65,536 on 4 cores: 10,000 a worker would need 80,000.
        assert_eq!(connections_per_worker(Some(65_536), 4), 8_067);
        assert!(descriptors_used(65_536, 4) + RESERVED_DESCRIPTORS <= 65_536);
        for workers in [1, 2, 4, 8, 16, 64, 256] {
            for limit in [0, 10, 1_024, 4_096, 20_000, 65_536, 1_048_576] {
                let per_worker = connections_per_worker(Some(limit), workers);
                assert!((1..=MAX_CONNECTIONS_PER_WORKER).contains(&per_worker));
                if per_worker > 1 {
                    assert!(
                        descriptors_used(limit, workers) + RESERVED_DESCRIPTORS.min(limit / 4)
                            <= limit,
                        "{limit} descriptors, {workers} workers"
                    );
                }
            }
        }
        // Room enough: the cap.
        assert_eq!(connections_per_worker(Some(1_048_576), 2), 10_000);
        assert_eq!(connections_per_worker(None, 64), 10_000);
        // A small limit keeps a quarter for the rest.
        assert_eq!(connections_per_worker(Some(1_024), 2), 192);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_descriptor_limit_is_read() {
        assert!(descriptor_limit().is_some_and(|limit| limit > 0));
    }
}
