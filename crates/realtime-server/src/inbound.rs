//! What a client sends: WebSocket frames decoded from the request's body,
//! with fragmented messages joined as RFC 6455 requires.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::error::PayloadError;
use actix_http::ws::{Codec, Frame, Item, ProtocolError};
use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_core::Stream;

/// The longest WebSocket frame header: 2 bytes, a 64-bit length and a mask.
const MAX_FRAME_HEADER: usize = 14;

/// One message from the client.
#[derive(Debug, PartialEq)]
pub enum Received {
    /// A text message (joined from its fragments).
    Text(ByteString),
    /// A binary message; the protocol has none, so only its arrival matters.
    Binary,
    /// A WebSocket ping with its payload, to be answered.
    Ping(Bytes),
    /// A WebSocket pong.
    Pong,
    /// The client's close frame, with its code if it gave one.
    Close(Option<u16>),
}

/// Why the client's frames cannot be read on.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// A frame, or a message joined from fragments, is over the limit.
    #[error("frame too large")]
    TooLarge,
    /// A text message that is not UTF-8.
    #[error("text that is not UTF-8")]
    NotUtf8,
    /// Anything else the protocol forbids (an unmasked frame, a bad opcode,
    /// a stray continuation) or a body that broke other than by the client
    /// going away.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// A message arriving in fragments: text is joined, binary (which the
/// protocol has no use for) only measured.
#[derive(Debug)]
enum Fragmented {
    Text(BytesMut),
    Binary(usize),
}

impl Fragmented {
    fn len(&self) -> usize {
        match self {
            Fragmented::Text(joined) => joined.len(),
            Fragmented::Binary(len) => *len,
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        match self {
            Fragmented::Text(joined) => joined.extend_from_slice(bytes),
            Fragmented::Binary(len) => *len += bytes.len(),
        }
    }
}

/// Reads a connection's messages from its request body (`web::Payload`, or
/// any stream of byte chunks with its errors).
pub struct Inbound<S> {
    payload: S,
    buf: BytesMut,
    codec: Codec,
    max_message: usize,
    /// The message being joined from fragments.
    fragments: Option<Fragmented>,
    eof: bool,
}

impl<S> Inbound<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    /// Frames and joined messages are limited to `max_bytes` each.
    pub fn new(payload: S, max_bytes: usize) -> Self {
        Inbound {
            payload,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(max_bytes),
            max_message: max_bytes,
            fragments: None,
            eof: false,
        }
    }

    /// The next message; `None` once the client's side has ended. Safe to
    /// drop while waiting (it is used in `select!`): every byte read is kept
    /// in `self`.
    pub async fn next(&mut self) -> Option<Result<Received, InboundError>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Received, InboundError>>> {
        loop {
            let decoded = match self.decoded() {
                // What is left is the start of one frame. The codec waits for
                // a frame's whole declared length before it checks it against
                // the limit, so a frame over the limit is refused here, before
                // it is buffered.
                Ok(None) if self.buf.len() > self.max_message + MAX_FRAME_HEADER => {
                    Err(InboundError::TooLarge)
                }
                other => other,
            };
            match decoded {
                Ok(Some(received)) => return Poll::Ready(Some(Ok(received))),
                Ok(None) => {}
                Err(e) => {
                    // Nothing after a broken frame can be trusted.
                    self.eof = true;
                    self.buf.clear();
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if self.eof {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => self.buf.extend_from_slice(&bytes),
                // How actix reports a socket closed under a body that never
                // ends: the client went away, which is the end, not an error.
                Poll::Ready(Some(Err(PayloadError::Incomplete(_)))) => {
                    self.eof = true;
                    self.buf.clear();
                }
                Poll::Ready(Some(Err(e))) => {
                    self.eof = true;
                    self.buf.clear();
                    return Poll::Ready(Some(Err(InboundError::Protocol(e.to_string()))));
                }
                Poll::Ready(None) => self.eof = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The next whole message already in the buffer, if any.
    fn decoded(&mut self) -> Result<Option<Received>, InboundError> {
        while let Some(frame) = self.codec.decode(&mut self.buf).map_err(protocol_error)? {
            // The codec refuses a message started inside another and a
            // continuation of nothing, so a fragment always has its place.
            let (bytes, last) = match frame {
                Frame::Text(bytes) => return text(bytes).map(Some),
                Frame::Binary(_) => return Ok(Some(Received::Binary)),
                Frame::Ping(bytes) => return Ok(Some(Received::Ping(bytes))),
                Frame::Pong(_) => return Ok(Some(Received::Pong)),
                Frame::Close(reason) => {
                    return Ok(Some(Received::Close(reason.map(|r| r.code.into()))))
                }
                Frame::Continuation(Item::FirstText(bytes)) => {
                    self.fragments = Some(Fragmented::Text(BytesMut::new()));
                    (bytes, false)
                }
                Frame::Continuation(Item::FirstBinary(bytes)) => {
                    self.fragments = Some(Fragmented::Binary(0));
                    (bytes, false)
                }
                Frame::Continuation(Item::Continue(bytes)) => (bytes, false),
                Frame::Continuation(Item::Last(bytes)) => (bytes, true),
            };
            let Some(fragments) = &mut self.fragments else {
                return Err(InboundError::Protocol(
                    "a continuation frame with no message to continue".into(),
                ));
            };
            if fragments.len() + bytes.len() > self.max_message {
                return Err(InboundError::TooLarge);
            }
            fragments.extend(&bytes);
            if last {
                return match self.fragments.take() {
                    Some(Fragmented::Text(joined)) => text(joined.freeze()).map(Some),
                    _ => Ok(Some(Received::Binary)),
                };
            }
        }
        Ok(None)
    }
}

fn text(bytes: Bytes) -> Result<Received, InboundError> {
    ByteString::try_from(bytes)
        .map(Received::Text)
        .map_err(|_| InboundError::NotUtf8)
}

fn protocol_error(e: ProtocolError) -> InboundError {
    match e {
        ProtocolError::Overflow => InboundError::TooLarge,
        other => InboundError::Protocol(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_codec::Encoder;
    use actix_http::ws::Message;
    use std::collections::VecDeque;

    /// Chunks as a request body delivers them, in order, then the end.
    struct Chunks(VecDeque<Result<Bytes, PayloadError>>);

    impl Stream for Chunks {
        type Item = Result<Bytes, PayloadError>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    /// What a client sends: masked frames.
    fn client_frames(messages: Vec<Message>) -> Bytes {
        let mut codec = Codec::new().client_mode();
        let mut buf = BytesMut::new();
        for message in messages {
            codec.encode(message, &mut buf).unwrap();
        }
        buf.freeze()
    }

    fn read_all(chunks: Vec<Bytes>, max: usize) -> Vec<Result<Received, String>> {
        read_body(chunks.into_iter().map(Ok).collect(), max)
    }

    fn read_body(
        body: Vec<Result<Bytes, PayloadError>>,
        max: usize,
    ) -> Vec<Result<Received, String>> {
        let mut inbound = Inbound::new(Chunks(body.into()), max);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut all = Vec::new();
        while let Poll::Ready(Some(item)) = inbound.poll_next(&mut cx) {
            all.push(item.map_err(|e| e.to_string()));
        }
        all
    }

    #[test]
    fn messages_split_across_chunks_are_read_whole() {
        let bytes = client_frames(vec![
            Message::Text("hello".into()),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Close(Some(actix_http::ws::CloseCode::Away.into())),
        ]);
        let chunks = bytes.chunks(3).map(Bytes::copy_from_slice).collect();
        assert_eq!(
            read_all(chunks, 100),
            [
                Ok(Received::Text("hello".into())),
                Ok(Received::Ping(Bytes::from_static(b"p"))),
                Ok(Received::Close(Some(1001))),
            ]
        );
    }

    #[test]
    fn fragments_are_joined_and_their_total_is_limited() {
        let fragments = |parts: &[&'static str]| {
            let last = parts.len() - 1;
            let messages = parts.iter().enumerate().map(|(i, part)| {
                let bytes = Bytes::from_static(part.as_bytes());
                Message::Continuation(match i {
                    0 => Item::FirstText(bytes),
                    i if i == last => Item::Last(bytes),
                    _ => Item::Continue(bytes),
                })
            });
            client_frames(messages.collect())
        };
        assert_eq!(
            read_all(vec![fragments(&["he", "ll", "o"])], 10),
            [Ok(Received::Text("hello".into()))]
        );
        assert_eq!(
            read_all(vec![fragments(&["hello", "hello", "!"])], 10),
            [Err("frame too large".into())]
        );
    }

    #[test]
    fn broken_input_is_an_error_and_ends_the_reading() {
        // A final continuation frame (FIN, opcode 0), masked, empty.
        let stray = Bytes::from_static(&[0x80, 0x80, 1, 2, 3, 4]);
        let read = read_all(vec![stray], 10);
        assert!(matches!(read.as_slice(), [Err(e)] if e.starts_with("protocol error")));

        let unmasked = {
            let mut buf = BytesMut::new();
            Codec::new()
                .encode(Message::Text("hi".into()), &mut buf)
                .unwrap();
            buf.freeze()
        };
        let read = read_all(vec![unmasked], 10);
        assert!(
            matches!(read.as_slice(), [Err(e)] if e.starts_with("protocol error")),
            "a client frame must be masked: {read:?}"
        );

        let not_utf8 = client_frames(vec![Message::Binary(Bytes::from_static(&[0xff]))]);
        let mut bytes = BytesMut::from(&not_utf8[..]);
        bytes[0] = 0x81; // the same frame, marked as text
        let read = read_all(vec![bytes.freeze()], 10);
        assert_eq!(read, [Err("text that is not UTF-8".into())]);
    }

    #[test]
    fn a_client_that_goes_away_ends_the_reading_without_an_error() {
        let hello = client_frames(vec![Message::Text("hello".into())]);
        let half = client_frames(vec![Message::Text("cut short".into())]);
        let read = read_body(
            vec![
                Ok(hello),
                Ok(half.slice(..4)),
                Err(PayloadError::Incomplete(None)),
            ],
            100,
        );
        assert_eq!(read, [Ok(Received::Text("hello".into()))]);

        let broken = read_body(vec![Err(PayloadError::EncodingCorrupted)], 100);
        assert!(matches!(broken.as_slice(), [Err(e)] if e.starts_with("protocol error")));
    }

    #[test]
    fn a_frame_over_the_limit_is_too_large() {
        let big = client_frames(vec![Message::Text("x".repeat(11).into())]);
        assert_eq!(read_all(vec![big], 10), [Err("frame too large".into())]);
    }

    /// Whatever bytes arrive, split however they are: no panic, messages
    /// within the limit, and an error, if any, is the last thing read.
    #[test]
    fn any_bytes_in_any_chunks_read_safely() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let valid = client_frames(vec![
            Message::Text("hello".into()),
            Message::Continuation(Item::FirstText(Bytes::from_static(b"he"))),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Continuation(Item::Last(Bytes::from_static(b"llo"))),
            Message::Binary(Bytes::from_static(&[0, 1, 2])),
            Message::Text("x".repeat(40).into()),
            Message::Close(None),
        ]);
        let (mut texts, mut errors) = (0, 0);
        for round in 0..3_000 {
            let mut bytes = valid.to_vec();
            if round % 3 == 0 {
                // Pure noise.
                bytes = (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect();
            } else {
                // Valid frames with a few bytes changed, cut short or grown.
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..bytes.len());
                    bytes[at] = rng.gen();
                }
                if rng.gen_bool(0.3) {
                    bytes.truncate(rng.gen_range(0..bytes.len()));
                }
                if rng.gen_bool(0.2) {
                    bytes.extend((0..rng.gen_range(1..20)).map(|_| rng.gen::<u8>()));
                }
            }
            let mut chunks = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(rng.gen_range(1..=rest.len()));
                chunks.push(Bytes::copy_from_slice(chunk));
                rest = tail;
            }
            let read = read_all(chunks, 64);
            for (i, item) in read.iter().enumerate() {
                match item {
                    Ok(Received::Text(text)) => {
                        texts += 1;
                        assert!(text.len() <= 64, "round {round}: {} bytes", text.len());
                    }
                    Err(_) => {
                        errors += 1;
                        assert_eq!(i, read.len() - 1, "round {round}: read on after an error");
                    }
                    Ok(_) => {}
                }
            }
        }
        // Both paths were exercised, not only the error one.
        assert!(
            texts > 1_000 && errors > 1_000,
            "{texts} texts, {errors} errors"
        );
    }
}
