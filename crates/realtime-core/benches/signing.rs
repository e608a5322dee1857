//! What realtime-core's per-call work costs, each operation next to its
//! "floor": the bare cryptography a minimal implementation could not avoid.
//! `scripts/bench` runs this together with the official Node SDK's
//! micro-benchmark (`tests/compat/bench/sdk-micro.js`), whose inputs these
//! mirror, and prints the comparison.
//!
//! Every group has `ours` and `floor`; some add a breakdown entry that shows
//! where the difference between the two goes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use realtime_core::crypto::{self, MasterKey};
use realtime_core::signing::{self, Secret};
use realtime_core::{Credentials, PresenceMember, WebhookVerifier};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const KEY: &str = "278d425bdf160c739803";
const SECRET: &str = "7ad3773142a6692b25b8";
const SOCKET_ID: &str = "1234.1234";

/// The webhook body of the Node micro-benchmark (212 bytes, three events,
/// one of them `member_added`), byte for byte what its `JSON.stringify` makes.
const WEBHOOK_BODY: &str = concat!(
    r#"{"time_ms":1327078148132,"events":["#,
    r#"{"name":"channel_occupied","channel":"private-foobar-channel-0001"},"#,
    r#"{"name":"member_added","channel":"presence-foobar","user_id":"u1"},"#,
    r#"{"name":"channel_vacated","channel":"c"}]}"#
);

/// The trigger body the Node micro-benchmark signs for `POST /apps/1/events`.
const TRIGGER_BODY: &str =
    r#"{"name":"my-event","channels":["my-channel"],"data":"{\"message\":\"hello world\"}"}"#;
const TRIGGER_PATH: &str = "/apps/1/events";
const TIMESTAMP: u64 = 1_353_088_179;

const ENCRYPTED_CHANNEL: &str = "private-encrypted-foobar";

fn measured<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(60);
    group
}

/// HMAC-SHA256 of `message` under `secret` as lowercase hex, set up from the
/// raw secret each time: what the simplest implementation does.
fn hmac_hex(secret: &[u8], message: &[u8]) -> String {
    let mut mac = match <HmacSha256 as Mac>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

fn credentials() -> Credentials {
    Credentials::new("1", KEY, SECRET)
}

fn private_auth(c: &mut Criterion) {
    let creds = credentials();
    let mut group = measured(c, "private_auth");
    group.bench_function("ours", |b| {
        b.iter(|| creds.authorize_channel(black_box(SOCKET_ID), black_box("private-foobar")))
    });
    group.bench_function("floor", |b| {
        b.iter(|| {
            hmac_hex(
                black_box(SECRET).as_bytes(),
                black_box("1234.1234:private-foobar").as_bytes(),
            )
        })
    });
    group.finish();
}

fn presence_auth(c: &mut Criterion) {
    let creds = credentials();
    let info = serde_json::json!({"name": "Alice"});
    let member = PresenceMember {
        user_id: "u1",
        user_info: Some(&info),
    };
    let signed = r#"1234.1234:presence-foobar:{"user_id":"u1","user_info":{"name":"Alice"}}"#;
    let mut group = measured(c, "presence_auth");
    group.bench_function("ours", |b| {
        b.iter(|| {
            creds.authorize_presence_channel(
                black_box(SOCKET_ID),
                black_box("presence-foobar"),
                black_box(&member),
            )
        })
    });
    group.bench_function("floor", |b| {
        b.iter(|| hmac_hex(black_box(SECRET).as_bytes(), black_box(signed).as_bytes()))
    });
    group.finish();
}

fn webhook_verify(c: &mut Criterion) {
    let verifier = WebhookVerifier::new().with_app(KEY, Secret::new(SECRET));
    let body = WEBHOOK_BODY.as_bytes();
    let signature = hmac_hex(SECRET.as_bytes(), body);
    let mut group = measured(c, "webhook_verify");
    // The verification itself: key and signature, as the floor does.
    group.bench_function("ours", |b| {
        b.iter(|| {
            verifier.check_signature(
                black_box(Some(KEY)),
                black_box(Some(signature.as_str())),
                black_box(body),
            )
        })
    });
    // Verification and the typed events, as the Node SDK's webhook object does.
    group.bench_function("ours_with_events", |b| {
        b.iter(|| {
            verifier.verify(
                black_box(Some(KEY)),
                black_box(Some(signature.as_str())),
                black_box(body),
            )
        })
    });
    group.bench_function("floor", |b| {
        b.iter(|| {
            let mut expected = [0u8; 32];
            if hex::decode_to_slice(black_box(&signature), &mut expected).is_err() {
                return false;
            }
            let mut mac = match <HmacSha256 as Mac>::new_from_slice(black_box(SECRET).as_bytes()) {
                Ok(mac) => mac,
                Err(_) => unreachable!("HMAC takes keys of any length"),
            };
            mac.update(black_box(body));
            // `verify_slice` compares in constant time.
            mac.verify_slice(&expected).is_ok()
        })
    });
    group.finish();
}

fn sign_request(c: &mut Criterion) {
    let creds = credentials();
    let mut group = measured(c, "sign_request");
    group.bench_function("ours", |b| {
        b.iter(|| {
            signing::sign_request(
                creds.signer(),
                black_box(KEY),
                "POST",
                black_box(TRIGGER_PATH),
                &[],
                Some(black_box(TRIGGER_BODY)),
                black_box(TIMESTAMP),
            )
        })
    });
    group.bench_function("floor", |b| {
        b.iter(|| {
            let md5 = hex::encode(Md5::digest(black_box(TRIGGER_BODY).as_bytes()));
            let to_sign = format!(
                "POST\n{TRIGGER_PATH}\nauth_key={KEY}&auth_timestamp={TIMESTAMP}&auth_version=1.0&body_md5={md5}"
            );
            hmac_hex(black_box(SECRET).as_bytes(), to_sign.as_bytes())
        })
    });
    group.finish();
}

fn encrypt(c: &mut Criterion) {
    let master_key = MasterKey::from_bytes([7u8; 32]);
    // The Node benchmark's payload: JSON text of exactly 100 bytes.
    let payload = format!(r#"{{"message":"{}"}}"#, "x".repeat(86));
    assert_eq!(payload.len(), 100);
    let nonce = [3u8; crypto::NONCE_LEN];
    let cipher = XSalsa20Poly1305::new(&master_key.shared_secret(ENCRYPTED_CHANNEL).into());
    let mut group = measured(c, "encrypt");
    // A fresh random nonce, SHA-256 key derivation, secretbox, two base64
    // encodings and the `{"nonce","ciphertext"}` JSON text.
    group.bench_function("ours", |b| {
        b.iter(|| {
            crypto::encrypt(
                &master_key,
                black_box(ENCRYPTED_CHANNEL),
                black_box(&payload),
            )
        })
    });
    // Breakdown: the same without drawing the nonce from the OS.
    group.bench_function("ours_fixed_nonce", |b| {
        b.iter(|| {
            crypto::encrypt_with_nonce(
                &master_key,
                black_box(ENCRYPTED_CHANNEL),
                black_box(&payload),
                black_box(&nonce),
            )
        })
    });
    // The bare secretbox with the channel key already derived.
    group.bench_function("floor", |b| {
        b.iter(|| {
            cipher
                .encrypt(black_box(&nonce).into(), black_box(payload.as_bytes()))
                .unwrap_or_default()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    private_auth,
    presence_auth,
    webhook_verify,
    sign_request,
    encrypt
);
criterion_main!(benches);
