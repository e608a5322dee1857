//! Session tokens: 32 random bytes given to the client; the database keeps
//! only their SHA-256.

use chrono::Duration;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// How long a session lasts.
pub fn lifetime() -> Duration {
    Duration::days(30)
}

/// A new random token, URL-safe.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the database stores of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
