//! A connection's outbox: what the server queued for one client, read by the
//! connection's HTTP response body ([`OutboundBody`]) and written to the
//! socket by actix's own connection task.
//!
//! A fan-out encodes its event once ([`TextFrame`]), pushes a reference to
//! it into each subscriber's outbox and wakes that connection's task, which
//! hands the bytes to actix to write. No task of our own, and no
//! second channel, sits between the push and the socket: on a 2-core machine
//! each hop saved per delivery is CPU left for the deliveries still to make.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use actix_codec::Encoder;
use actix_http::ws::{CloseCode, CloseReason, Codec, Message, OpCode, Parser};
use actix_web::body::{BodySize, MessageBody};
use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::sync::oneshot;

use crate::protocol;

/// A WebSocket text frame, encoded for the wire once where it is made.
///
/// A fan-out sends the same frame to every subscriber: each outbox holds a
/// reference to the one encoding, so no connection encodes the frame, and a
/// frame queued alone reaches actix without a copy or an allocation of ours
/// (actix still copies it into its write buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFrame {
    wire: Bytes,
    /// Where the text starts, after the frame header.
    text_start: usize,
}

impl TextFrame {
    /// The unmasked, final text frame (server to client) carrying `text`.
    pub fn new(text: &str) -> Self {
        let mut wire = BytesMut::with_capacity(text.len() + 10);
        Parser::write_message(&mut wire, text, OpCode::Text, true, false);
        TextFrame {
            text_start: wire.len() - text.len(),
            wire: wire.freeze(),
        }
    }

    /// The frame's text.
    pub fn text(&self) -> &str {
        // Made from a `&str` in `new`, so always UTF-8.
        std::str::from_utf8(&self.wire[self.text_start..]).unwrap_or_default()
    }

    /// The whole frame as written to the socket, header included.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }
}

impl From<&str> for TextFrame {
    fn from(text: &str) -> Self {
        TextFrame::new(text)
    }
}

impl From<ByteString> for TextFrame {
    fn from(text: ByteString) -> Self {
        TextFrame::new(&text)
    }
}

impl From<&ByteString> for TextFrame {
    fn from(text: &ByteString) -> Self {
        TextFrame::new(text)
    }
}

/// What the server asks a connection to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// A text frame.
    Frame(TextFrame),
    /// A WebSocket ping with this payload.
    Ping(Bytes),
    /// A WebSocket pong answering a ping with this payload.
    Pong(Bytes),
    /// A `pusher:error` with this code and reason, then the close frame with
    /// the same: the server ends the connection and tells the client why.
    Close(u16, String),
    /// Only the close frame, with this code and reason: the client was told
    /// already, or the protocol has no `pusher:error` for it.
    CloseFrame(u16, String),
}

impl Outbound {
    /// Whether this is the connection's last item (a close).
    pub fn ends_the_connection(&self) -> bool {
        matches!(self, Outbound::Close(..) | Outbound::CloseFrame(..))
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrySendError {
    /// The outbox already holds as many frames as it may: the client
    /// stopped reading.
    Full,
    /// The connection is closing or gone; the frame is dropped.
    Closed,
}

/// Why nothing was taken from an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing is queued now.
    Empty,
    /// Nothing is queued and nothing more will be.
    Finished,
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Outbound>,
    /// The reader's waker, kept between waits so it is cloned only when the
    /// reader changes.
    waker: Option<Waker>,
    /// Whether the reader found nothing and waits to be woken.
    waiting: bool,
    /// No more items will be queued (the app let go of the connection, or a
    /// close was queued).
    finished: bool,
    /// The reader is gone: whatever is pushed would never be sent.
    reader_gone: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    capacity: usize,
}

impl Shared {
    // A poisoned lock means a panic while holding it, which nothing here
    // does; the queue is still a queue, so carry on.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The app's handle on a connection's outbox. Clones share the outbox.
#[derive(Debug, Clone)]
pub struct OutboxSender {
    shared: Arc<Shared>,
}

/// The reading end: the connection's response body, or a test.
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<Shared>,
    /// The open connection this reading end stands for, if counted.
    open: Option<OpenConnections>,
    /// Its place among its client address's connections, if counted.
    address: Option<Arc<AddressSlot>>,
}

/// How many connections are open: one per counted outbox whose reading end
/// is alive. The response body holds the reading end until it has handed
/// actix its last frame (the close), so a connection the app already
/// removed still counts until then: a client that stopped reading, until it
/// reads again. (actix then gives the socket its disconnect timeout to
/// flush what it holds.)
#[derive(Debug, Clone, Default)]
pub struct OpenConnections(Arc<AtomicUsize>);

impl OpenConnections {
    /// Connections open now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// An outbox counted as one open connection until its reading end is
    /// dropped; `None` when `max` are open already.
    pub fn outbox(&self, capacity: usize, max: usize) -> Option<(OutboxSender, OutboxReceiver)> {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        let (sender, mut receiver) = outbox(capacity);
        receiver.open = Some(self.clone());
        Some((sender, receiver))
    }
}

/// Open connections by client address, counted like [`OpenConnections`]:
/// a place is held by an [`AddressSlot`] until the connection's reading end
/// is dropped. An address with no open connection has no entry, so the map
/// never holds more entries than there are open connections.
#[derive(Debug, Clone, Default)]
pub struct AddressConnections(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl AddressConnections {
    // A poisoned lock means a panic while holding it, which nothing here
    // does; the counts are still counts, so carry on.
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What an address is counted as: itself for IPv4, its /64 for IPv6
    /// (the one rule, [`crate::client_address::counted_network`]).
    pub fn counted_as(address: IpAddr) -> IpAddr {
        crate::client_address::counted_network(address)
    }

    /// A place for one more connection from `address`; `None` when `max`
    /// are open from it already.
    pub fn take(&self, address: IpAddr, max: usize) -> Option<AddressSlot> {
        let key = Self::counted_as(address);
        let mut counts = self.lock();
        let open = counts.entry(key).or_insert(0);
        if *open >= max {
            if *open == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *open += 1;
        Some(AddressSlot {
            counts: self.clone(),
            key,
        })
    }

    /// Connections open now from `address` (or its /64).
    pub fn count(&self, address: IpAddr) -> usize {
        let key = Self::counted_as(address);
        self.lock().get(&key).copied().unwrap_or(0)
    }

    /// Addresses with an open connection: the entries the map holds.
    pub fn addresses(&self) -> usize {
        self.lock().len()
    }
}

/// One connection's place among its address's; given back when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    counts: AddressConnections,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(open) = counts.get_mut(&self.key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// An outbox holding at most `capacity` frames (a close is always taken).
pub fn outbox(capacity: usize) -> (OutboxSender, OutboxReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            waker: None,
            waiting: false,
            finished: false,
            reader_gone: false,
        }),
        capacity,
    });
    (
        OutboxSender {
            shared: shared.clone(),
        },
        OutboxReceiver {
            shared,
            open: None,
            address: None,
        },
    )
}

impl OutboxSender {
    /// Queues an item. A close is taken whatever the count, and is the last
    /// item the outbox takes.
    pub fn try_send(&self, item: Outbound) -> Result<(), TrySendError> {
        let mut queue = self.shared.lock();
        if queue.finished || queue.reader_gone {
            return Err(TrySendError::Closed);
        }
        let closing = item.ends_the_connection();
        if !closing && queue.items.len() >= self.shared.capacity {
            return Err(TrySendError::Full);
        }
        queue.items.push_back(item);
        queue.finished = closing;
        if std::mem::take(&mut queue.waiting) {
            if let Some(waker) = &queue.waker {
                waker.wake_by_ref();
            }
        }
        Ok(())
    }

    /// No more items: the reader ends once it has sent what is queued.
    pub fn finish(&self) {
        let mut queue = self.shared.lock();
        queue.finished = true;
        if std::mem::take(&mut queue.waiting) {
            if let Some(waker) = &queue.waker {
                waker.wake_by_ref();
            }
        }
    }
}

impl OutboxReceiver {
    /// Keeps `slot` until this reading end is dropped, as its connection's
    /// place among its address's.
    pub fn hold_address(&mut self, slot: Arc<AddressSlot>) {
        self.address = Some(slot);
    }

    /// Takes the next item if one is queued.
    pub fn try_recv(&mut self) -> Result<Outbound, TryRecvError> {
        let mut queue = self.shared.lock();
        match queue.items.pop_front() {
            Some(item) => Ok(item),
            None if queue.finished => Err(TryRecvError::Finished),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Moves every queued item to the end of `into`; answers false once the
    /// outbox is finished and empty. When nothing is queued, the task of `cx`
    /// is woken by the next item.
    fn poll_take_all(&mut self, cx: &mut Context<'_>, into: &mut VecDeque<Outbound>) -> bool {
        let mut queue = self.shared.lock();
        if queue.items.is_empty() {
            if queue.finished {
                return false;
            }
            match &queue.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => queue.waker = Some(cx.waker().clone()),
            }
            queue.waiting = true;
        } else {
            into.append(&mut queue.items);
        }
        true
    }

    /// The response body that writes this outbox to the client. `closed`, if
    /// given, is told when the body is dropped: actix dropped the connection.
    pub fn into_body(self, closed: Option<oneshot::Sender<()>>) -> OutboundBody {
        OutboundBody {
            outbox: self,
            taken: VecDeque::new(),
            buf: BytesMut::new(),
            codec: Codec::new(),
            ended: false,
            closed,
        }
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.reader_gone = true;
        queue.items.clear();
        queue.waker = None;
        drop(queue);
        if let Some(open) = &self.open {
            open.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Encoded bytes handed to actix at once, at most (plus one frame): a client
/// behind by many large events is sent them in steps, not in one copy of
/// them all.
const MAX_CHUNK: usize = 64 * 1024;

/// RFC 6455: a control frame's payload is at most 125 bytes, so a close
/// reason (after the 2-byte code) at most 123.
const MAX_CONTROL_PAYLOAD: usize = 125;

fn truncated(reason: &str, max: usize) -> &str {
    let mut end = reason.len().min(max);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseReason {
        code: CloseCode::from(code),
        description: Some(truncated(reason, MAX_CONTROL_PAYLOAD - 2).to_owned()),
    }))
}

fn control_payload(mut bytes: Bytes) -> Bytes {
    bytes.truncate(MAX_CONTROL_PAYLOAD);
    bytes
}

/// A WebSocket connection's response body: the frames of its outbox (all but
/// text frames encoded as they are taken); it ends after a close frame, or
/// when the app finished the outbox and everything queued was sent.
pub struct OutboundBody {
    outbox: OutboxReceiver,
    /// Items taken from the outbox in one go, reused so taking allocates
    /// nothing once warm.
    taken: VecDeque<Outbound>,
    buf: BytesMut,
    codec: Codec,
    ended: bool,
    closed: Option<oneshot::Sender<()>>,
}

impl OutboundBody {
    fn encode(&mut self, item: Outbound) {
        let messages: [Option<Message>; 2] = match item {
            Outbound::Frame(frame) => {
                self.buf.extend_from_slice(frame.wire());
                return;
            }
            Outbound::Ping(bytes) => [Some(Message::Ping(control_payload(bytes))), None],
            Outbound::Pong(bytes) => [Some(Message::Pong(control_payload(bytes))), None],
            Outbound::Close(code, reason) => [
                Some(Message::Text(protocol::error(Some(code), &reason))),
                Some(close_message(code, &reason)),
            ],
            Outbound::CloseFrame(code, reason) => [Some(close_message(code, &reason)), None],
        };
        for message in messages.into_iter().flatten() {
            // The server codec encodes every message kind; it fails only on
            // a continuation it is not asked for.
            let _ = self.codec.encode(message, &mut self.buf);
        }
    }
}

impl MessageBody for OutboundBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if !this.ended {
            let mut taken = std::mem::take(&mut this.taken);
            // What was taken last time and not encoded yet goes first.
            if taken.is_empty() && !this.outbox.poll_take_all(cx, &mut taken) {
                this.ended = true;
            }
            // One frame alone (a fan-out's usual delivery) goes out as the
            // bytes it was encoded to: nothing to copy or allocate here.
            // (`buf` is empty here: every chunk handed over empties it.)
            if taken.len() == 1 && matches!(taken.front(), Some(Outbound::Frame(_))) {
                if let Some(Outbound::Frame(frame)) = taken.pop_front() {
                    this.taken = taken;
                    return Poll::Ready(Some(Ok(frame.wire)));
                }
            }
            while this.buf.len() < MAX_CHUNK {
                let Some(item) = taken.pop_front() else {
                    break;
                };
                let last = item.ends_the_connection();
                this.encode(item);
                if last {
                    // A close frame ends the connection: anything queued
                    // after it is not sent.
                    this.ended = true;
                    taken.clear();
                }
            }
            this.taken = taken;
        }
        if !this.buf.is_empty() {
            return Poll::Ready(Some(Ok(this.buf.split().freeze())));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        if let Some(closed) = self.closed.take() {
            let _ = closed.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_codec::Decoder;
    use actix_http::ws::Frame;
    use std::task::Waker;

    fn poll(body: &mut OutboundBody) -> Poll<Option<Bytes>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(body)
            .poll_next(&mut cx)
            .map(|item| item.map(|bytes| bytes.unwrap_or_default()))
    }

    /// The frames a client reads from these bytes.
    fn frames(bytes: &[u8]) -> Vec<Frame> {
        let mut codec = Codec::new().client_mode();
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            frames.push(frame);
        }
        frames
    }

    fn body() -> (OutboxSender, OutboundBody, oneshot::Receiver<()>) {
        let (sender, receiver) = outbox(2);
        let (closed, closed_rx) = oneshot::channel();
        (sender, receiver.into_body(Some(closed)), closed_rx)
    }

    #[test]
    fn queued_frames_are_written_in_order_in_one_chunk() {
        let (sender, mut body, _) = body();
        assert_eq!(poll(&mut body), Poll::Pending);
        sender.try_send(Outbound::Frame("one".into())).unwrap();
        sender.try_send(Outbound::Frame("two".into())).unwrap();
        let Poll::Ready(Some(bytes)) = poll(&mut body) else {
            panic!("a chunk");
        };
        assert_eq!(
            frames(&bytes),
            [
                Frame::Text(Bytes::from_static(b"one")),
                Frame::Text(Bytes::from_static(b"two"))
            ]
        );
        assert_eq!(poll(&mut body), Poll::Pending);
    }

    #[test]
    fn a_text_frame_is_encoded_once_as_the_codec_would_at_every_length() {
        // 125 and below: length in the header's second byte; up to 65,535: two more
        // bytes; beyond: eight more.
        for len in [0, 125, 126, 65_535, 65_536] {
            let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let frame = TextFrame::new(&text);
            assert_eq!(frame.text(), text);
            let mut by_codec = BytesMut::new();
            Codec::new()
                .encode(Message::Text(text.clone().into()), &mut by_codec)
                .unwrap();
            assert_eq!(frame.wire()[..], by_codec[..], "{len} bytes");
        }
    }

    #[test]
    fn a_lone_frame_is_handed_over_as_the_bytes_it_was_encoded_to() {
        let (sender, mut body, _) = body();
        let frame = TextFrame::new("shared");
        sender.try_send(Outbound::Frame(frame.clone())).unwrap();
        let Poll::Ready(Some(bytes)) = poll(&mut body) else {
            panic!("a chunk");
        };
        assert_eq!(bytes.as_ptr(), frame.wire().as_ptr(), "not copied");
        assert_eq!(frames(&bytes), [Frame::Text(Bytes::from_static(b"shared"))]);
    }

    #[test]
    fn a_full_outbox_refuses_frames_but_takes_a_close() {
        let (sender, mut body, _) = body();
        sender.try_send(Outbound::Frame("1".into())).unwrap();
        sender.try_send(Outbound::Frame("2".into())).unwrap();
        assert_eq!(
            sender.try_send(Outbound::Frame("3".into())),
            Err(TrySendError::Full)
        );
        sender
            .try_send(Outbound::Close(4100, "Too slow".into()))
            .unwrap();
        assert_eq!(
            sender.try_send(Outbound::Frame("4".into())),
            Err(TrySendError::Closed),
            "nothing after a close"
        );
        let Poll::Ready(Some(bytes)) = poll(&mut body) else {
            panic!("a chunk");
        };
        let frames = frames(&bytes);
        assert_eq!(frames.len(), 4);
        let Frame::Text(error) = &frames[2] else {
            panic!("a pusher:error before the close");
        };
        assert!(std::str::from_utf8(error).unwrap().contains("4100"));
        let Frame::Close(Some(reason)) = &frames[3] else {
            panic!("a close frame last");
        };
        assert_eq!(u16::from(reason.code), 4100);
        assert_eq!(poll(&mut body), Poll::Ready(None), "the body ends");
    }

    #[test]
    fn a_long_backlog_is_written_in_chunks_of_bounded_size() {
        let (sender, receiver) = outbox(8);
        let mut body = receiver.into_body(None);
        let big = TextFrame::new(&"x".repeat(40 * 1024));
        for _ in 0..3 {
            sender.try_send(Outbound::Frame(big.clone())).unwrap();
        }
        sender.finish();
        let mut chunks = Vec::new();
        while let Poll::Ready(Some(chunk)) = poll(&mut body) {
            chunks.push(frames(&chunk).len());
        }
        assert_eq!(chunks, [2, 1], "64 KiB and one frame at most per chunk");
    }

    #[test]
    fn a_finished_outbox_ends_the_body_after_what_is_queued() {
        let (sender, mut body, _) = body();
        sender.try_send(Outbound::Frame("last".into())).unwrap();
        sender.finish();
        assert!(matches!(poll(&mut body), Poll::Ready(Some(_))));
        assert_eq!(poll(&mut body), Poll::Ready(None));
    }

    #[test]
    fn a_long_close_reason_is_cut_to_a_valid_control_frame() {
        let (sender, mut body, _) = body();
        let reason = "é".repeat(100);
        sender
            .try_send(Outbound::CloseFrame(4009, reason.clone()))
            .unwrap();
        let Poll::Ready(Some(bytes)) = poll(&mut body) else {
            panic!("a chunk");
        };
        let frames = frames(&bytes);
        let [Frame::Close(Some(close))] = frames.as_slice() else {
            panic!("one close frame");
        };
        let description = close.description.clone().unwrap();
        assert!(description.len() <= 123 && reason.starts_with(&description));
    }

    #[test]
    fn dropping_the_body_tells_the_connection_and_refuses_later_frames() {
        let (sender, body, mut closed) = body();
        drop(body);
        assert!(closed.try_recv().is_ok());
        assert_eq!(
            sender.try_send(Outbound::Frame("late".into())),
            Err(TrySendError::Closed)
        );
    }

    /// A waker that counts its wakes.
    struct Counting(AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiting_body_is_woken_once_by_the_next_frame_and_by_finish() {
        let (sender, mut body, _) = body();
        let wakes = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || wakes.0.load(Ordering::SeqCst);

        assert!(Pin::new(&mut body).poll_next(&mut cx).is_pending());
        sender.try_send(Outbound::Frame("one".into())).unwrap();
        assert_eq!(woken(), 1, "the frame wakes the waiting body");
        sender.try_send(Outbound::Frame("two".into())).unwrap();
        assert_eq!(woken(), 1, "a body already woken is not woken again");

        assert!(matches!(
            Pin::new(&mut body).poll_next(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(Pin::new(&mut body).poll_next(&mut cx).is_pending());
        sender.finish();
        assert_eq!(woken(), 2, "finishing wakes the waiting body");
        assert!(matches!(
            Pin::new(&mut body).poll_next(&mut cx),
            Poll::Ready(None)
        ));
    }

    #[test]
    fn open_connections_are_counted_until_their_body_is_dropped() {
        let open = OpenConnections::default();
        let (_a, first) = open.outbox(4, 2).unwrap();
        let (_b, second) = open.outbox(4, 2).unwrap();
        assert!(open.outbox(4, 2).is_none(), "two at most");
        assert_eq!(open.count(), 2);
        let body = first.into_body(None);
        drop(second);
        assert_eq!(open.count(), 1);
        assert!(
            open.outbox(4, 2).is_some(),
            "a slot freed, taken and freed again"
        );
        drop(body);
        assert_eq!(open.count(), 0);
    }
}
