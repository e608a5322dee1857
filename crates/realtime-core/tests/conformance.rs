//! Reproduces, byte for byte, what the official Pusher SDK computed for the
//! inputs in `tests/fixtures/pusher-vectors.json` (or the file named by
//! `PUSHER_VECTORS`): channel and user auth, signed requests, webhook
//! verdicts and encrypted event data.

use std::path::PathBuf;

use base64::Engine;
use realtime_core::crypto::{decrypt, encrypt_with_nonce};
use realtime_core::signing::{sign_request, Secret};
use realtime_core::{Credentials, MasterKey, WebhookError, WebhookVerifier};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize)]
struct Vectors {
    channel_auth: Vec<ChannelAuthVector>,
    user_auth: Vec<UserAuthVector>,
    signed_requests: Vec<SignedRequestVector>,
    webhooks: Vec<WebhookVector>,
    encrypted_events: Vec<EncryptedEventVector>,
}

#[derive(Deserialize)]
struct ChannelAuthVector {
    app_id: String,
    key: String,
    secret: String,
    socket_id: String,
    channel_name: String,
    presence_data: Option<Value>,
    encryption_master_key_base64: Option<String>,
    expected: ChannelAuthExpected,
}

#[derive(Deserialize)]
struct ChannelAuthExpected {
    auth: String,
    channel_data: Option<String>,
    shared_secret: Option<String>,
}

#[derive(Deserialize)]
struct UserAuthVector {
    key: String,
    secret: String,
    socket_id: String,
    user_data: Value,
    expected: UserAuthExpected,
}

#[derive(Deserialize)]
struct UserAuthExpected {
    auth: String,
    user_data: String,
}

#[derive(Deserialize)]
struct SignedRequestVector {
    key: String,
    secret: String,
    method: String,
    path: String,
    params: Map<String, Value>,
    body: Option<String>,
    timestamp: u64,
    expected_query: String,
}

#[derive(Deserialize)]
struct WebhookVector {
    key: String,
    secret: String,
    header_key: String,
    body: String,
    signature: String,
    valid: bool,
    #[serde(default)]
    variant: String,
}

#[derive(Deserialize)]
struct EncryptedEventVector {
    encryption_master_key_base64: String,
    channel: String,
    data: String,
    nonce_base64: String,
    shared_secret_base64: String,
    expected_event_data: String,
}

fn load() -> (PathBuf, Vectors) {
    let path = std::env::var_os("PUSHER_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pusher-vectors.json")
        });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let vectors =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    (path, vectors)
}

/// Collects every mismatch, so one run shows them all.
struct Report(Vec<String>);

impl Report {
    fn check(
        &mut self,
        what: String,
        got: impl PartialEq<String> + std::fmt::Debug,
        expected: String,
    ) {
        if got != expected {
            self.0
                .push(format!("{what}\n   got: {got:?}\n  want: {expected:?}"));
        }
    }

    fn finish(self, path: &std::path::Path, checked: usize) {
        assert!(
            checked > 0,
            "{} holds no vectors of this kind",
            path.display()
        );
        assert!(
            self.0.is_empty(),
            "{} of {checked} vectors differ:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

#[test]
fn channel_authorization_matches_the_official_sdk() {
    let (path, vectors) = load();
    let mut report = Report(Vec::new());
    for (i, v) in vectors.channel_auth.iter().enumerate() {
        let mut creds = Credentials::new(v.app_id.as_str(), v.key.as_str(), v.secret.as_str());
        if let Some(key) = &v.encryption_master_key_base64 {
            creds = creds.with_encryption_master_key(
                MasterKey::from_base64(key).expect("vector's master key"),
            );
        }
        let answer = match &v.presence_data {
            Some(data) => {
                creds.authorize_presence_channel_with_data(&v.socket_id, &v.channel_name, data)
            }
            None => creds.authorize_channel(&v.socket_id, &v.channel_name),
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                report
                    .0
                    .push(format!("channel_auth[{i}] {}: {e}", v.channel_name));
                continue;
            }
        };
        let name = |field| format!("channel_auth[{i}] {} {field}", v.channel_name);
        report.check(name("auth"), answer.auth, v.expected.auth.clone());
        if answer.channel_data != v.expected.channel_data {
            report.0.push(format!(
                "{}: {:?} != {:?}",
                name("channel_data"),
                answer.channel_data,
                v.expected.channel_data
            ));
        }
        if answer.shared_secret != v.expected.shared_secret {
            report.0.push(format!(
                "{}: {:?} != {:?}",
                name("shared_secret"),
                answer.shared_secret,
                v.expected.shared_secret
            ));
        }
    }
    report.finish(&path, vectors.channel_auth.len());
}

#[test]
fn user_authentication_matches_the_official_sdk() {
    let (path, vectors) = load();
    let mut report = Report(Vec::new());
    for (i, v) in vectors.user_auth.iter().enumerate() {
        let creds = Credentials::new("app", v.key.as_str(), v.secret.as_str());
        match creds.authenticate_user(&v.socket_id, &v.user_data) {
            Ok(answer) => {
                report.check(
                    format!("user_auth[{i}] auth"),
                    answer.auth,
                    v.expected.auth.clone(),
                );
                report.check(
                    format!("user_auth[{i}] user_data"),
                    answer.user_data,
                    v.expected.user_data.clone(),
                );
            }
            Err(e) => report.0.push(format!("user_auth[{i}]: {e}")),
        }
    }
    report.finish(&path, vectors.user_auth.len());
}

#[test]
fn signed_requests_match_the_official_sdk() {
    let (path, vectors) = load();
    let mut report = Report(Vec::new());
    for (i, v) in vectors.signed_requests.iter().enumerate() {
        let params: Vec<(String, String)> = v
            .params
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect();
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let signer = Credentials::new("app", v.key.as_str(), v.secret.as_str());
        let query = sign_request(
            signer.signer(),
            &v.key,
            &v.method,
            &v.path,
            &params,
            v.body.as_deref(),
            v.timestamp,
        );
        report.check(
            format!("signed_requests[{i}] {} {}", v.method, v.path),
            query,
            v.expected_query.clone(),
        );
    }
    report.finish(&path, vectors.signed_requests.len());
}

#[test]
fn webhook_verdicts_match_the_official_sdk() {
    let (path, vectors) = load();
    let mut report = Report(Vec::new());
    for (i, v) in vectors.webhooks.iter().enumerate() {
        let verifier =
            WebhookVerifier::new().with_app(v.key.as_str(), Secret::new(v.secret.as_str()));
        let verdict = verifier.verify(Some(&v.header_key), Some(&v.signature), v.body.as_bytes());
        let accepted = verdict.is_ok();
        if accepted != v.valid {
            report.0.push(format!(
                "webhooks[{i}] ({}): accepted={accepted}, want {}: {verdict:?}",
                v.variant, v.valid
            ));
        }
        // A rejection must be for the signature or key, never a parse failure of a signed body.
        if let Err(e) = &verdict {
            if !matches!(e, WebhookError::InvalidSignature | WebhookError::UnknownKey) {
                report
                    .0
                    .push(format!("webhooks[{i}] ({}): rejected for {e}", v.variant));
            }
        }
    }
    report.finish(&path, vectors.webhooks.len());
}

#[test]
fn encrypted_event_data_matches_the_official_sdk() {
    let (path, vectors) = load();
    let mut report = Report(Vec::new());
    for (i, v) in vectors.encrypted_events.iter().enumerate() {
        let key =
            MasterKey::from_base64(&v.encryption_master_key_base64).expect("vector's master key");
        let nonce: [u8; 24] = base64::engine::general_purpose::STANDARD
            .decode(&v.nonce_base64)
            .ok()
            .and_then(|n| n.try_into().ok())
            .expect("vector's nonce is 24 bytes of base64");
        report.check(
            format!("encrypted_events[{i}] shared_secret"),
            key.shared_secret_base64(&v.channel),
            v.shared_secret_base64.clone(),
        );
        report.check(
            format!("encrypted_events[{i}] data"),
            encrypt_with_nonce(&key, &v.channel, &v.data, &nonce),
            v.expected_event_data.clone(),
        );
        match decrypt(&key, &v.channel, &v.expected_event_data) {
            Ok(plain) => report.check(
                format!("encrypted_events[{i}] decrypted"),
                plain,
                v.data.clone(),
            ),
            Err(e) => report
                .0
                .push(format!("encrypted_events[{i}] does not decrypt: {e}")),
        }
    }
    report.finish(&path, vectors.encrypted_events.len());
}
