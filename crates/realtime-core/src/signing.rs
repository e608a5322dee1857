//! One place for the HMAC-SHA256 and MD5 that Pusher's protocol is built on:
//! signing HTTP API requests, and verifying them (for servers).
//!
//! A request is signed over `METHOD\nPATH\nQUERY`, where `QUERY` holds every
//! parameter but `auth_signature`, keys lower-cased and sorted, values as they
//! are (not URL-encoded), joined by `&`.

use std::fmt;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The version of Pusher's signing scheme this crate speaks.
pub const AUTH_VERSION: &str = "1.0";
/// How far a request's `auth_timestamp` may be from the server's clock.
pub const DEFAULT_TIMESTAMP_TOLERANCE_SECS: u64 = 600;

/// A secret that never prints: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself; call only where it is needed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

/// An app's secret, ready to sign: the HMAC key schedule is computed once
/// and cloned for every signature, which is what makes signing cheap.
#[derive(Clone)]
pub struct Signer {
    mac: HmacSha256,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer([redacted])")
    }
}

impl Signer {
    /// Prepares a signer for `secret`.
    pub fn new(secret: &Secret) -> Self {
        Self::from_bytes(secret.expose().as_bytes())
    }

    fn from_bytes(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = match HmacSha256::new_from_slice(secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
        };
        Signer { mac }
    }

    /// HMAC-SHA256 of `parts` concatenated, as lowercase hex.
    pub fn sign_hex(&self, parts: &[&[u8]]) -> String {
        hex::encode(self.sign_raw(parts))
    }

    fn sign_raw(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `signature_hex` is the HMAC of `parts`, compared in constant
    /// time. A signature that is not 64 hex digits is simply wrong.
    pub fn verify_hex(&self, parts: &[&[u8]], signature_hex: &str) -> bool {
        let mut expected = [0u8; 32];
        if hex::decode_to_slice(signature_hex.trim(), &mut expected).is_err() {
            return false;
        }
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(&expected).is_ok()
    }
}

/// MD5 of `body` as lowercase hex, the `body_md5` parameter of a signed request.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Builds the signed query string of an API request: every parameter sorted,
/// `auth_signature` last. `params` are the request's own parameters (not the
/// `auth_*` ones); `body` is the exact JSON text sent, if any.
///
/// ```
/// use realtime_core::signing::{sign_request, Signer, Secret};
/// let signer = Signer::new(&Secret::new("7ad3773142a6692b25b8"));
/// let query = sign_request(&signer, "278d425bdf160c739803", "POST", "/apps/3/events",
///     &[], Some(r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#), 1353088179);
/// assert!(query.ends_with("auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"));
/// ```
pub fn sign_request(
    signer: &Signer,
    key: &str,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: Option<&str>,
    timestamp: u64,
) -> String {
    use std::borrow::Cow;

    // Borrow wherever the text is already as it must be signed, and keep
    // the digests on the stack: this runs on every API call.
    let mut md5_hex = [0u8; 32];
    let md5 = body.map(|b| {
        let digest = Md5::digest(b.as_bytes());
        // 16 bytes always fit 32 hex digits.
        let _ = hex::encode_to_slice(digest, &mut md5_hex);
        std::str::from_utf8(&md5_hex).unwrap_or_default()
    });
    let mut digits = [0u8; 20];
    let timestamp = decimal(timestamp, &mut digits);
    let mut all: Vec<(Cow<'_, str>, &str)> = Vec::with_capacity(params.len() + 4);
    all.extend([
        (Cow::Borrowed("auth_key"), key),
        (Cow::Borrowed("auth_timestamp"), timestamp),
        (Cow::Borrowed("auth_version"), AUTH_VERSION),
    ]);
    if let Some(md5) = md5 {
        all.push((Cow::Borrowed("body_md5"), md5));
    }
    all.extend(params.iter().map(|(k, v)| {
        let key = if k.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(k.to_ascii_lowercase())
        } else {
            Cow::Borrowed(*k)
        };
        (key, *v)
    }));
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    let mut query = String::with_capacity(
        all.iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>()
            + 80,
    );
    for (i, (k, v)) in all.iter().enumerate() {
        if i > 0 {
            query.push('&');
        }
        query.push_str(k);
        query.push('=');
        query.push_str(v);
    }
    let method: Cow<'_, str> = if method.bytes().any(|b| b.is_ascii_lowercase()) {
        Cow::Owned(method.to_ascii_uppercase())
    } else {
        Cow::Borrowed(method)
    };
    let signature = signer.sign_hex(&[
        method.as_bytes(),
        b"\n",
        path.as_bytes(),
        b"\n",
        query.as_bytes(),
    ]);
    query.push_str("&auth_signature=");
    query.push_str(&signature);
    query
}

/// `n` in decimal, written into `buffer` (20 digits hold any u64).
fn decimal(mut n: u64, buffer: &mut [u8; 20]) -> &str {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[at..]).unwrap_or_default()
}

/// Why a server refused a signed request. The `Display` text is what Pusher
/// answers with its 401, so a client's developer can see what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    /// A required `auth_*` parameter is missing.
    #[error("missing parameter {0}")]
    MissingParameter(&'static str),
    /// `auth_version` is not `1.0`.
    #[error("unsupported auth_version {0:?}, expected 1.0")]
    UnsupportedVersion(String),
    /// `auth_timestamp` is not a number of seconds.
    #[error("auth_timestamp is not a number of seconds")]
    InvalidTimestamp,
    /// `auth_timestamp` is too far from the server's clock.
    #[error("timestamp expired: given {given}, server time {now}, tolerance {tolerance}s")]
    TimestampExpired {
        /// The request's timestamp.
        given: u64,
        /// The server's time.
        now: u64,
        /// The accepted distance in seconds.
        tolerance: u64,
    },
    /// `body_md5` does not match the body.
    #[error("body_md5 does not match the request body")]
    BodyMd5Mismatch,
    /// The signature does not match.
    #[error("invalid signature: expected HMAC-SHA256 hex of {string_to_sign:?}")]
    InvalidSignature {
        /// What should have been signed, to help a client find its mistake
        /// (it holds no secret).
        string_to_sign: String,
    },
}

/// Verifies a signed API request as a Pusher-compatible server must.
///
/// `query` holds the decoded query parameters as received (including the
/// `auth_*` ones); `body` is the raw body (empty for GET). The caller has
/// already matched `auth_key` to the app whose `signer` is given.
pub fn verify_request(
    signer: &Signer,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
    now: u64,
    tolerance_secs: u64,
) -> Result<(), RequestAuthError> {
    let find = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let signature =
        find("auth_signature").ok_or(RequestAuthError::MissingParameter("auth_signature"))?;
    find("auth_key").ok_or(RequestAuthError::MissingParameter("auth_key"))?;
    let version = find("auth_version").ok_or(RequestAuthError::MissingParameter("auth_version"))?;
    if version != AUTH_VERSION {
        return Err(RequestAuthError::UnsupportedVersion(version.to_owned()));
    }
    let timestamp: u64 = find("auth_timestamp")
        .ok_or(RequestAuthError::MissingParameter("auth_timestamp"))?
        .parse()
        .map_err(|_| RequestAuthError::InvalidTimestamp)?;
    if timestamp.abs_diff(now) > tolerance_secs {
        return Err(RequestAuthError::TimestampExpired {
            given: timestamp,
            now,
            tolerance: tolerance_secs,
        });
    }
    if !body.is_empty() {
        match find("body_md5") {
            Some(md5) if md5.eq_ignore_ascii_case(&body_md5(body)) => {}
            Some(_) => return Err(RequestAuthError::BodyMd5Mismatch),
            None => return Err(RequestAuthError::MissingParameter("body_md5")),
        }
    }
    let mut signed: Vec<(String, &str)> = query
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("auth_signature"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    signed.sort_by(|a, b| a.0.cmp(&b.0));
    let signed_query = signed
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let string_to_sign = format!(
        "{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        signed_query
    );
    if signer.verify_hex(&[string_to_sign.as_bytes()], signature) {
        Ok(())
    } else {
        Err(RequestAuthError::InvalidSignature { string_to_sign })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs_signer() -> Signer {
        Signer::new(&Secret::new("7ad3773142a6692b25b8"))
    }

    const DOCS_BODY: &str =
        r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;

    #[test]
    fn signs_the_documented_example_request() {
        let query = sign_request(
            &docs_signer(),
            "278d425bdf160c739803",
            "POST",
            "/apps/3/events",
            &[],
            Some(DOCS_BODY),
            1353088179,
        );
        assert_eq!(
            query,
            "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
             &body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    fn parse(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_is_refused() {
        let signer = docs_signer();
        let query = sign_request(
            &signer,
            "278d425bdf160c739803",
            "POST",
            "/apps/3/events",
            &[],
            Some(DOCS_BODY),
            1353088179,
        );
        let params = parse(&query);
        let verify = |method: &str, path: &str, body: &str, now: u64| {
            verify_request(&signer, method, path, &params, body.as_bytes(), now, 600)
        };
        assert_eq!(
            verify("POST", "/apps/3/events", DOCS_BODY, 1353088179),
            Ok(())
        );
        assert_eq!(
            verify("POST", "/apps/3/events", DOCS_BODY, 1353088179 + 600),
            Ok(())
        );
        assert!(matches!(
            verify("POST", "/apps/4/events", DOCS_BODY, 1353088179),
            Err(RequestAuthError::InvalidSignature { .. })
        ));
        assert_eq!(
            verify("POST", "/apps/3/events", "{}", 1353088179),
            Err(RequestAuthError::BodyMd5Mismatch)
        );
        assert!(matches!(
            verify("POST", "/apps/3/events", DOCS_BODY, 1353088179 + 601),
            Err(RequestAuthError::TimestampExpired { .. })
        ));
        let other = Signer::new(&Secret::new("another secret"));
        assert!(matches!(
            verify_request(
                &other,
                "POST",
                "/apps/3/events",
                &params,
                DOCS_BODY.as_bytes(),
                1353088179,
                600
            ),
            Err(RequestAuthError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn missing_auth_parameters_are_named() {
        let signer = docs_signer();
        let err = verify_request(&signer, "GET", "/apps/3/channels", &[], b"", 0, 600);
        assert_eq!(
            err,
            Err(RequestAuthError::MissingParameter("auth_signature"))
        );
    }

    #[test]
    fn malformed_signatures_are_wrong_not_errors() {
        let signer = docs_signer();
        assert!(!signer.verify_hex(&[b"x"], "zz"));
        assert!(!signer.verify_hex(&[b"x"], ""));
        assert!(!signer.verify_hex(&[b"x"], &"ab".repeat(33)));
        let good = signer.sign_hex(&[b"x"]);
        assert!(signer.verify_hex(&[b"x"], &good));
        assert!(signer.verify_hex(&[b"x"], &good.to_uppercase()));
    }

    #[test]
    fn timestamps_are_written_in_decimal() {
        let mut buffer = [0u8; 20];
        assert_eq!(decimal(0, &mut buffer), "0");
        assert_eq!(decimal(1353088179, &mut buffer), "1353088179");
        assert_eq!(decimal(u64::MAX, &mut buffer), "18446744073709551615");
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("7ad3773142a6692b25b8");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert!(!format!("{:?}", Signer::new(&secret)).contains("7ad3"));
    }
}
