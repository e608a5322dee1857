//! Reproduces what Twilio's own SDK (twilio-node 5.13.1) computed and decided
//! for the inputs in `tests/fixtures/twilio-vectors.json`, or the file named by
//! `TWILIO_VECTORS`: every signature byte for byte, every verdict.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use api_server::twilio::signature::{expected_signature, is_valid};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize)]
struct Vectors {
    twilio_signatures: Vec<SignatureVector>,
    twilio_validation: Vec<ValidationVector>,
}

#[derive(Deserialize)]
struct SignatureVector {
    auth_token: String,
    url: String,
    params: Map<String, Value>,
    expected_signature: String,
}

#[derive(Deserialize)]
struct ValidationVector {
    auth_token: String,
    url_seen_by_server: String,
    params: Map<String, Value>,
    header: String,
    valid: bool,
}

/// Form fields as a server receives them; an array is a repeated field.
fn fields(params: &Map<String, Value>) -> Vec<(String, String)> {
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    params
        .iter()
        .flat_map(|(k, v)| match v {
            Value::Array(values) => values
                .iter()
                .map(|v| (k.clone(), text(v)))
                .collect::<Vec<_>>(),
            other => vec![(k.clone(), text(other))],
        })
        .collect()
}

fn load() -> (PathBuf, Vectors) {
    let path = std::env::var_os("TWILIO_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/twilio-vectors.json")
        });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    (
        path.clone(),
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display())),
    )
}

#[test]
fn signatures_match_twilios_sdk() {
    let (path, vectors) = load();
    assert!(
        !vectors.twilio_signatures.is_empty(),
        "{} holds no signature vectors",
        path.display()
    );
    let wrong: Vec<String> = vectors
        .twilio_signatures
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let got = expected_signature(&v.auth_token, &v.url, &fields(&v.params));
            (got != v.expected_signature).then(|| {
                format!(
                    "twilio_signatures[{i}] {}: got {got}, want {}",
                    v.url, v.expected_signature
                )
            })
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn verdicts_match_twilios_sdk() {
    let (path, vectors) = load();
    assert!(
        !vectors.twilio_validation.is_empty(),
        "{} holds no validation vectors",
        path.display()
    );
    let wrong: Vec<String> = vectors
        .twilio_validation
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let got = is_valid(
                &v.auth_token,
                &v.header,
                &v.url_seen_by_server,
                &fields(&v.params),
            );
            (got != v.valid).then(|| {
                format!(
                    "twilio_validation[{i}] {}: valid={got}, want {}",
                    v.url_seen_by_server, v.valid
                )
            })
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_published_sdk_example_matches() {
    let params: Vec<(String, String)> = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    assert_eq!(
        expected_signature("12345", url, &params),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
    assert!(is_valid(
        "12345",
        "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
        url,
        &params
    ));
}
