//! Property-based fuzzing of how the client reads a server's answers
//! (`client.rs`): a local HTTP server answers every call (trigger, batch,
//! channel queries, presence users, terminate) with any status and any body.
//!
//! Properties: no panic; a 2xx is read or refused as `Decode`, any other
//! status is `Http` with that status; every error prints a non-empty
//! message, and a `Decode` message is bounded by the body (it quotes at most
//! 200 characters of it, but serde's own message may quote a string of it).
//!
//! Cases per property: `PROPTEST_CASES` (default 256); `scripts/fuzz` runs
//! 100,000. A failing case is saved in `fuzz_client.proptest-regressions`
//! beside this file and replayed first on every later run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/fuzz.rs"]
mod fuzz;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use fuzz::{config, Cases};
use proptest::prelude::*;
use realtime_core::{Config, Error, Event, Pusher, RetryPolicy};
use serde_json::{json, Value};

/// The answer the local server gives next: a status and a body.
type Answer = Arc<Mutex<(u16, Vec<u8>)>>;

/// A minimal HTTP/1.1 server on 127.0.0.1 answering every request with
/// the current `Answer` (keep-alive, as reqwest expects).
fn serve(answer: Answer) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let _ = writer.set_nodelay(true);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if first {
                            first = false;
                        } else if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let (status, bytes) = answer.lock().unwrap().clone();
                    let head = format!(
                        "HTTP/1.1 {status} Answer\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        bytes.len()
                    );
                    // One write, without Nagle: a split answer waits on delayed ACKs.
                    let mut whole = head.into_bytes();
                    whole.extend_from_slice(&bytes);
                    if writer.write_all(&whole).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// JSON of every shape, with the fields of the API's answers turning up.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("channels".to_owned()),
                    Just("batch".to_owned()),
                    Just("users".to_owned()),
                    Just("id".to_owned()),
                    Just("occupied".to_owned()),
                    Just("user_count".to_owned()),
                    Just("subscription_count".to_owned()),
                    "\\PC{0,6}",
                ],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn answer_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => Just(b"{}".to_vec()),
        1 => Just(Vec::new()),
        1 => "\\PC{0,400}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..300),
    ]
}

#[test]
fn any_answer_is_read_or_refused_with_a_reason() {
    let cases = Cases::new("client_answers");
    let answer: Answer = Arc::new(Mutex::new((200, Vec::new())));
    let port = serve(answer.clone());
    let client_config = Config::builder("1", "key", "secret")
        .host("127.0.0.1")
        .port(port)
        .use_tls(false)
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let pusher = Pusher::new(client_config).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    proptest!(config(), |(
        status in prop_oneof![Just(200u16), Just(202), Just(400), Just(401), Just(404), Just(413), Just(500), Just(503)],
        body in answer_body(),
        call in 0u8..6,
    )| {
        cases.hit();
        *answer.lock().unwrap() = (status, body.clone());
        let result: Result<String, Error> = runtime.block_on(async {
            match call {
                0 => pusher.trigger("a", "e", &json!({})).info(["subscription_count"]).send().await.map(|r| format!("{r:?}")),
                1 => pusher
                    .trigger_batch(&[Event::new("a", "e", &json!(1)).unwrap()])
                    .await
                    .map(|r| format!("{r:?}")),
                2 => pusher.channels().info(["subscription_count"]).send().await.map(|r| format!("{r:?}")),
                3 => pusher.channel("presence-a").info(["user_count"]).send().await.map(|r| format!("{r:?}")),
                4 => pusher.presence_users("presence-a").await.map(|r| format!("{r:?}")),
                _ => pusher.terminate_user_connections("u1").await.map(|()| String::new()),
            }
        });
        match result {
            Ok(_) => prop_assert!((200..300).contains(&status), "a {} read as a success", status),
            Err(e) => {
                let message = e.to_string();
                prop_assert!(!message.is_empty());
                match &e {
                    Error::Http { status: got, .. } => prop_assert_eq!(*got, status),
                    Error::Decode(quoted) => {
                        prop_assert!((200..300).contains(&status));
                        // serde's message, then at most 200 characters of the body.
                        // serde's message itself may quote a string of the body
                        // (`invalid type: string "…"`), escaped: bounded by the
                        // body, not by 200 characters.
                        let limit = 10 * body.len() + 400;
                        prop_assert!(quoted.chars().count() <= limit, "{} characters", quoted.chars().count());
                    }
                    other => prop_assert!(false, "{:?} for a {} answer", other, status),
                }
            }
        }
    });
}
