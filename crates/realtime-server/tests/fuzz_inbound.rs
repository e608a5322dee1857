//! Property-based fuzzing of the WebSocket frame decoder (`inbound.rs`):
//! what a client sends, as bytes, before anything else reads it.
//!
//! * Any bytes, cut into any chunks (with the body pausing in between, and
//!   ending cleanly, by the client going away, or broken): no panic, no text
//!   over the limit, and an error is the last thing read.
//! * Valid frames (what a client's codec writes), mutated: the same.
//! * Valid frames unmutated: read back as the messages they encode.
//! * A client that never stops sending (a frame declaring a huge length,
//!   endless fragments): the decoder gives up with an error having taken in
//!   little more than its limit.
//!
//! Cases per property: `PROPTEST_CASES` (default 256); `scripts/fuzz` runs
//! 100,000. A failing case is saved in `fuzz_inbound.proptest-regressions`
//! beside this file and replayed first on every later run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../realtime-core/tests/support/fuzz.rs"]
mod fuzz;

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_codec::Encoder;
use actix_http::error::PayloadError;
use actix_http::ws::{CloseCode, CloseReason, Codec, Item, Message};
use actix_web::web::{Bytes, BytesMut};
use futures_core::Stream;
use fuzz::{config, Cases};
use proptest::prelude::*;
use realtime_server::inbound::{Inbound, InboundError, Received};

/// One step of a request body.
#[derive(Debug, Clone)]
enum Step {
    Chunk(Bytes),
    /// The body has nothing yet (the reader must keep what it has).
    Pause,
    Fail(Failure),
}

#[derive(Debug, Clone, Copy)]
enum Failure {
    /// The client went away: the end, not an error.
    Incomplete,
    /// The body broke otherwise.
    Corrupted,
}

/// A request body: its steps in order, then the end.
struct Body {
    steps: VecDeque<Step>,
}

impl Stream for Body {
    type Item = Result<Bytes, PayloadError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.steps.pop_front() {
            None => Poll::Ready(None),
            Some(Step::Pause) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Step::Chunk(bytes)) => Poll::Ready(Some(Ok(bytes))),
            Some(Step::Fail(Failure::Incomplete)) => {
                Poll::Ready(Some(Err(PayloadError::Incomplete(None))))
            }
            Some(Step::Fail(Failure::Corrupted)) => {
                Poll::Ready(Some(Err(PayloadError::EncodingCorrupted)))
            }
        }
    }
}

/// A body that never ends: `prefix`, then whatever `more` makes, forever.
/// Counts the bytes it handed over in `pulled`; past `cap` it ends after all
/// (so a decoder that buffers without bound fails the test instead of
/// exhausting the machine's memory).
struct Endless<F> {
    prefix: Option<Bytes>,
    more: F,
    pulled: Rc<Cell<usize>>,
    cap: usize,
}

impl<F: FnMut() -> Bytes + Unpin> Stream for Endless<F> {
    type Item = Result<Bytes, PayloadError>;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.pulled.get() > self.cap {
            return Poll::Ready(None);
        }
        let bytes = match self.prefix.take() {
            Some(prefix) => prefix,
            None => (self.more)(),
        };
        self.pulled.set(self.pulled.get() + bytes.len());
        Poll::Ready(Some(Ok(bytes)))
    }
}

/// The next item, polling through pauses (a body that pauses has woken us).
fn next<S>(inbound: &mut Inbound<S>) -> Option<Result<Received, InboundError>>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut future = std::pin::pin!(inbound.next());
    for _ in 0..1_000_000 {
        if let Poll::Ready(item) = future.as_mut().poll(&mut cx) {
            return item;
        }
    }
    panic!("the decoder stayed pending on a body that was not")
}

/// Everything read from `steps` until the end (bounded, so a decoder that
/// never ends fails the test instead of hanging it).
fn read_all(steps: Vec<Step>, max: usize) -> Vec<Result<Received, InboundError>> {
    let bound = steps.len() * 64 + 16;
    let mut inbound = Inbound::new(
        Body {
            steps: steps.into(),
        },
        max,
    );
    let mut all = Vec::new();
    while let Some(item) = next(&mut inbound) {
        all.push(item);
        assert!(all.len() <= bound, "more items than the bytes can hold");
    }
    // The end stays the end.
    assert!(next(&mut inbound).is_none(), "an item after the end");
    all
}

/// Masked frames, as a client's codec writes them.
fn client_frames(messages: &[Message]) -> BytesMut {
    let mut codec = Codec::new().client_mode().max_size(usize::MAX);
    let mut buf = BytesMut::new();
    for message in messages {
        codec.encode(clone(message), &mut buf).unwrap();
    }
    buf
}

fn clone(message: &Message) -> Message {
    match message {
        Message::Text(t) => Message::Text(t.clone()),
        Message::Binary(b) => Message::Binary(b.clone()),
        Message::Continuation(Item::FirstText(b)) => {
            Message::Continuation(Item::FirstText(b.clone()))
        }
        Message::Continuation(Item::FirstBinary(b)) => {
            Message::Continuation(Item::FirstBinary(b.clone()))
        }
        Message::Continuation(Item::Continue(b)) => {
            Message::Continuation(Item::Continue(b.clone()))
        }
        Message::Continuation(Item::Last(b)) => Message::Continuation(Item::Last(b.clone())),
        Message::Ping(b) => Message::Ping(b.clone()),
        Message::Pong(b) => Message::Pong(b.clone()),
        Message::Close(r) => Message::Close(r.clone()),
        Message::Nop => Message::Nop,
    }
}

/// The frames of one message a client may send (a fragmented one with
/// pings between its fragments).
type Sent = Vec<Message>;

const MAX: usize = 256;

fn control_payload() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Bytes::from)
}

/// Splits `bytes` at the given points (taken modulo its length).
fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut from = 0;
    for at in points {
        pieces.push(Bytes::copy_from_slice(&bytes[from..at]));
        from = at;
    }
    pieces.push(Bytes::copy_from_slice(&bytes[from..]));
    pieces
}

/// Fragments of one message, with control frames between them (allowed).
fn fragmented(first: fn(Bytes) -> Item, pieces: Vec<Bytes>, pings: &[Bytes]) -> Vec<Message> {
    let last = pieces.len() - 1;
    let mut frames = Vec::new();
    for (i, piece) in pieces.into_iter().enumerate() {
        let item = match i {
            0 => first(piece),
            i if i == last => Item::Last(piece),
            _ => Item::Continue(piece),
        };
        frames.push(Message::Continuation(item));
        if let Some(ping) = pings.get(i) {
            if i != last {
                frames.push(Message::Ping(ping.clone()));
            }
        }
    }
    frames
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        4 => "\\PC{0,80}".prop_map(|t: String| vec![Message::Text(t.into())]),
        1 => proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| vec![Message::Binary(b.into())]),
        2 => control_payload().prop_map(|p| vec![Message::Ping(p)]),
        1 => control_payload().prop_map(|p| vec![Message::Pong(p)]),
        // A text message in fragments, split anywhere (even inside a
        // character: only the joined text must be UTF-8).
        3 => ("\\PC{0,120}", proptest::collection::vec(any::<usize>(), 1..6),
              proptest::collection::vec(control_payload(), 0..3))
            .prop_map(|(t, cuts, pings): (String, _, _)| {
                fragmented(Item::FirstText, split(t.as_bytes(), &cuts), &pings)
            }),
        1 => (proptest::collection::vec(any::<u8>(), 0..300),
              proptest::collection::vec(any::<usize>(), 1..6))
            .prop_map(|(b, cuts)| fragmented(Item::FirstBinary, split(&b, &cuts), &[])),
    ]
}

/// A close frame: any code (the decoder refuses those RFC 6455 reserves)
/// and an optional reason.
fn close() -> impl Strategy<Value = Option<Message>> {
    proptest::option::of((0u16..5100, proptest::option::of("\\PC{0,20}")).prop_map(
        |(code, description)| {
            Message::Close(Some(CloseReason {
                code: CloseCode::from(code),
                description,
            }))
        },
    ))
}

/// How a read ended badly, as the model predicts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TooLarge,
    NotUtf8,
    Protocol,
}

fn kind(e: &InboundError) -> Kind {
    match e {
        InboundError::TooLarge => Kind::TooLarge,
        InboundError::NotUtf8 => Kind::NotUtf8,
        InboundError::Protocol(_) => Kind::Protocol,
    }
}

/// What the decoder must read from valid `frames` under the limit `max`: a
/// reference model written from RFC 6455 and the decoder's documented
/// limits, independent of its code.
fn model(frames: &[Message], max: usize) -> Vec<Result<Received, Kind>> {
    let mut out = Vec::new();
    let mut joined: Option<(bool, Vec<u8>)> = None;
    for frame in frames {
        let payload_len = match frame {
            Message::Text(t) => t.len(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
            Message::Continuation(
                Item::FirstText(b) | Item::FirstBinary(b) | Item::Continue(b) | Item::Last(b),
            ) => b.len(),
            Message::Close(Some(reason)) => 2 + reason.description.as_ref().map_or(0, String::len),
            Message::Close(None) | Message::Nop => 0,
        };
        if payload_len > max {
            out.push(Err(Kind::TooLarge));
            return out;
        }
        let item = match frame {
            Message::Text(t) => Received::Text(t.clone()),
            Message::Binary(_) => Received::Binary,
            Message::Ping(p) => Received::Ping(p.clone()),
            Message::Pong(_) => Received::Pong,
            Message::Close(reason) => {
                let code = reason.as_ref().map(|r| u16::from(r.code));
                if code.is_some_and(|c| !matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999)) {
                    out.push(Err(Kind::Protocol));
                    return out;
                }
                Received::Close(code)
            }
            Message::Nop => continue,
            Message::Continuation(item) => {
                let (bytes, last) = match item {
                    Item::FirstText(b) => {
                        joined = Some((true, Vec::new()));
                        (b, false)
                    }
                    Item::FirstBinary(b) => {
                        joined = Some((false, Vec::new()));
                        (b, false)
                    }
                    Item::Continue(b) => (b, false),
                    Item::Last(b) => (b, true),
                };
                let (_, so_far) = joined.as_mut().expect("valid frames continue a message");
                if so_far.len() + bytes.len() > max {
                    out.push(Err(Kind::TooLarge));
                    return out;
                }
                so_far.extend_from_slice(bytes);
                if !last {
                    continue;
                }
                let (text, all) = joined.take().expect("just seen");
                if !text {
                    Received::Binary
                } else {
                    match String::from_utf8(all) {
                        Ok(t) => Received::Text(t.into()),
                        Err(_) => {
                            out.push(Err(Kind::NotUtf8));
                            return out;
                        }
                    }
                }
            }
        };
        out.push(Ok(item));
    }
    out
}

/// Chunk sizes (cycled) and where the body pauses.
fn chunking() -> impl Strategy<Value = (Vec<usize>, Vec<bool>)> {
    (
        proptest::collection::vec(1usize..64, 1..8),
        proptest::collection::vec(any::<bool>(), 1..8),
    )
}

fn chunked(bytes: &[u8], (sizes, pauses): &(Vec<usize>, Vec<bool>)) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(sizes[i % sizes.len()].min(rest.len()));
        if pauses[i % pauses.len()] {
            steps.push(Step::Pause);
        }
        steps.push(Step::Chunk(Bytes::copy_from_slice(chunk)));
        rest = tail;
        i += 1;
    }
    steps
}

/// A change to the bytes on the wire.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    /// Overwrite a frame's first bytes (opcode, flags, mask bit, length).
    Header(usize, [u8; 2]),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip(at, 1 << bit)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1usize..16).prop_map(|(at, n)| Mutation::Remove(at, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<[u8; 2]>()).prop_map(|(at, h)| Mutation::Header(at, h)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    if len == 0 {
        if let Mutation::Insert(_, b) = mutation {
            bytes.extend_from_slice(b);
        }
        return;
    }
    match mutation {
        Mutation::Set(at, b) => bytes[at % len] = *b,
        Mutation::Flip(at, bit) => bytes[at % len] ^= bit,
        Mutation::Insert(at, b) => {
            let at = at % (len + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Remove(at, n) => {
            let at = at % len;
            bytes.drain(at..(at + n).min(len));
        }
        Mutation::Truncate(at) => bytes.truncate(at % len),
        Mutation::Header(at, h) => {
            let at = at % len;
            for (i, b) in h.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
    }
}

/// The invariants of anything read: texts within the limit, an error only
/// last and with a message.
fn check_read(read: &[Result<Received, InboundError>], max: usize) -> Result<(), TestCaseError> {
    for (i, item) in read.iter().enumerate() {
        match item {
            Ok(Received::Text(text)) => {
                prop_assert!(text.len() <= max, "a text of {} bytes", text.len())
            }
            Ok(Received::Ping(payload)) => {
                prop_assert!(payload.len() <= 125, "a ping of {}", payload.len())
            }
            Ok(_) => {}
            Err(e) => {
                prop_assert_eq!(i, read.len() - 1, "read on after {}", e);
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
    Ok(())
}

fn end() -> impl Strategy<Value = Option<Failure>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(Failure::Incomplete)),
        1 => Just(Some(Failure::Corrupted)),
    ]
}

/// Valid frames are read back as the messages they encode, however the
/// body cuts them and wherever it pauses: as the model says, a frame or
/// joined message over the limit is the last thing read, as `TooLarge`.
#[test]
fn valid_frames_are_read_back_whole() {
    let cases = Cases::new("inbound_valid_frames_round_trip");
    proptest!(config(), |(
        messages in proptest::collection::vec(sent(), 0..8),
        close in close(),
        chunking in chunking(),
        max in prop_oneof![Just(MAX), 1usize..400],
    )| {
        cases.hit();
        let mut frames: Vec<Message> = messages.iter().flatten().map(clone).collect();
        frames.extend(close);
        let bytes = client_frames(&frames);
        let read = read_all(chunked(&bytes, &chunking), max);
        check_read(&read, max)?;
        let read: Vec<Result<Received, Kind>> =
            read.into_iter().map(|r| r.map_err(|e| kind(&e))).collect();
        prop_assert_eq!(read, model(&frames, max));
    });
}

/// Valid frames with bytes changed, cut, inserted or dropped, in any
/// chunks, ending in any way: never a panic, never a text over the limit,
/// an error only last.
#[test]
fn mutated_frames_read_safely() {
    let cases = Cases::new("inbound_mutated_frames");
    proptest!(config(), |(
        messages in proptest::collection::vec(sent(), 1..6),
        mutations in proptest::collection::vec(mutation(), 1..5),
        chunking in chunking(),
        end in end(),
        max in prop_oneof![Just(MAX), 1usize..400],
    )| {
        cases.hit();
        let frames: Vec<Message> = messages.iter().flatten().map(clone).collect();
        let mut bytes = client_frames(&frames).to_vec();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        let mut steps = chunked(&bytes, &chunking);
        if let Some(failure) = end {
            steps.push(Step::Fail(failure));
        }
        let read = read_all(steps, max);
        check_read(&read, max)?;
        if matches!(end, Some(Failure::Incomplete)) {
            // The client going away is the end, never an error of its own.
            if let Some(Err(InboundError::Protocol(why))) = read.last() {
                prop_assert!(!why.contains("incomplete"), "{}", why);
            }
        }
    });
}

/// Raw bytes: the same invariants.
#[test]
fn any_bytes_read_safely() {
    let cases = Cases::new("inbound_any_bytes");
    proptest!(config(), |(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        chunking in chunking(),
        end in end(),
        max in prop_oneof![Just(MAX), 0usize..600],
    )| {
        cases.hit();
        let mut steps = chunked(&bytes, &chunking);
        if let Some(failure) = end {
            steps.push(Step::Fail(failure));
        }
        let read = read_all(steps, max);
        check_read(&read, max)?;
    });
}

/// The longest frame header: 2 bytes, a 64-bit length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// A masked frame header declaring `len` payload bytes.
fn header(first: u8, len: u64) -> Vec<u8> {
    let mut h = vec![first];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len <= u64::from(u16::MAX) {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    h.extend_from_slice(&[1, 2, 3, 4]);
    h
}

/// A client that never stops sending: a frame declaring more than the limit
/// (then its payload, forever), or a fragmented message whose fragments
/// never end. The decoder must answer `TooLarge` (or a protocol error)
/// having taken in no more than the limit, a header and a chunk or two:
/// what it buffers is bounded by the limit, not by what the client sends.
#[test]
fn endless_input_is_cut_off_at_the_limit() {
    let cases = Cases::new("inbound_endless_input");
    proptest!(config(), |(
        opcode in prop_oneof![Just(0x1u8), Just(0x2), Just(0x9), Just(0xA), Just(0x8), Just(0x0), Just(0x3)],
        fin in any::<bool>(),
        declared in prop_oneof![
            (MAX as u64 + 1)..=(MAX as u64 + 1000),
            65_536u64..=(1 << 40),
            Just(i64::MAX as u64),
        ],
        fragments in any::<bool>(),
        fragment_len in 1usize..=MAX,
        chunk in 1usize..4096,
        seed in any::<u8>(),
    )| {
        cases.hit();
        let max = MAX;
        let (prefix, more): (Bytes, Box<dyn FnMut() -> Bytes>) = if fragments {
            // A text (or binary) message started, then continuation frames
            // of up to the limit each, for ever.
            let first = if opcode == 0x2 { 0x02 } else { 0x01 };
            let mut prefix = header(first, fragment_len as u64);
            prefix.extend(std::iter::repeat_n(b'a' ^ 1, fragment_len));
            let mut continuation = header(0x00, fragment_len as u64);
            continuation.extend(std::iter::repeat_n(b'a' ^ 1, fragment_len));
            let continuation = Bytes::from(continuation);
            (Bytes::from(prefix), Box::new(move || continuation.clone()))
        } else {
            let first = opcode | if fin { 0x80 } else { 0 };
            let filler = Bytes::from(vec![seed; chunk]);
            (Bytes::from(header(first, declared)), Box::new(move || filler.clone()))
        };
        // Fragments come as whole frames of `fragment_len` with a header
        // each; anything else in `chunk`s.
        let bound = if fragments {
            2 * max + (max / fragment_len + 2) * MAX_HEADER + fragment_len
        } else {
            max + MAX_HEADER + chunk
        };
        let pulled = Rc::new(Cell::new(0));
        let mut inbound = Inbound::new(
            Endless { prefix: Some(prefix), more, pulled: pulled.clone(), cap: 4 * bound + 65_536 },
            max,
        );
        let error = loop {
            match next(&mut inbound) {
                Some(Err(e)) => break e,
                Some(Ok(received)) => {
                    prop_assert!(false, "{:?} read from an endless frame", received)
                }
                None => prop_assert!(
                    false,
                    "no error after taking in {} bytes (at most {} expected) of a frame over {} bytes",
                    pulled.get(), bound, max
                ),
            }
        };
        prop_assert!(
            matches!(error, InboundError::TooLarge | InboundError::Protocol(_)),
            "{:?}", error
        );
        prop_assert!(
            pulled.get() <= bound,
            "took in {} bytes (at most {} expected) before refusing a frame over {} bytes",
            pulled.get(), bound, max
        );
    });
}
