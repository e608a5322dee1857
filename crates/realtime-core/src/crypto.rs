//! End-to-end encrypted channels (`private-encrypted-*`): each channel's key is
//! SHA-256(channel name ‖ master key), and event data travels as
//! `{"nonce","ciphertext"}`, a NaCl secretbox (XSalsa20-Poly1305) in base64.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ConfigError, EncryptionError};

/// Length of a secretbox nonce.
pub const NONCE_LEN: usize = 24;

/// The app's 32-byte encryption master key. It never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// Reads a key given as base64 of exactly 32 bytes, as Pusher's
    /// `encryptionMasterKeyBase64` setting is.
    pub fn from_base64(encoded: &str) -> Result<Self, ConfigError> {
        let bytes = BASE64
            .decode(encoded.trim())
            .map_err(|_| ConfigError::InvalidEncryptionMasterKey)?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ConfigError::InvalidEncryptionMasterKey)?;
        Ok(MasterKey(key))
    }

    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    /// The key of one channel: SHA-256 of the channel name followed by the master key.
    pub fn shared_secret(&self, channel: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(channel.as_bytes());
        hasher.update(self.0);
        hasher.finalize().into()
    }

    /// [`MasterKey::shared_secret`] in base64, as an auth endpoint answers it.
    pub fn shared_secret_base64(&self, channel: &str) -> String {
        BASE64.encode(self.shared_secret(channel))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// The wire form of an encrypted event's data.
#[derive(Debug, Serialize, Deserialize)]
struct EncryptedPayload<'a> {
    nonce: &'a str,
    ciphertext: &'a str,
}

/// Encrypts `plaintext` (the event's JSON text) for `channel` with a fresh
/// random nonce; the answer is the `data` string to send.
pub fn encrypt(master_key: &MasterKey, channel: &str, plaintext: &str) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    encrypt_with_nonce(master_key, channel, plaintext, &nonce)
}

/// [`encrypt`] with a given nonce. A nonce must never be used twice with the
/// same channel; this exists for reproducible tests.
pub fn encrypt_with_nonce(
    master_key: &MasterKey,
    channel: &str,
    plaintext: &str,
    nonce: &[u8; NONCE_LEN],
) -> String {
    let cipher = XSalsa20Poly1305::new(&master_key.shared_secret(channel).into());
    // Encryption into a Vec only fails on allocation, which aborts anyway.
    let ciphertext = cipher
        .encrypt(nonce.into(), plaintext.as_bytes())
        .unwrap_or_default();
    let nonce = BASE64.encode(nonce);
    let ciphertext = BASE64.encode(ciphertext);
    // Two base64 strings need no escaping, so this is valid JSON by construction.
    format!(r#"{{"nonce":"{nonce}","ciphertext":"{ciphertext}"}}"#)
}

/// Opens an encrypted event's `data` (`{"nonce","ciphertext"}`) sent on `channel`.
pub fn decrypt(
    master_key: &MasterKey,
    channel: &str,
    data: &str,
) -> Result<String, EncryptionError> {
    let payload: EncryptedPayload<'_> =
        serde_json::from_str(data).map_err(|_| EncryptionError::MalformedPayload)?;
    let nonce = BASE64
        .decode(payload.nonce)
        .map_err(|_| EncryptionError::MalformedPayload)?;
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| EncryptionError::InvalidNonce)?;
    let ciphertext = BASE64
        .decode(payload.ciphertext)
        .map_err(|_| EncryptionError::MalformedPayload)?;
    let cipher = XSalsa20Poly1305::new(&master_key.shared_secret(channel).into());
    let plaintext = cipher
        .decrypt(&nonce.into(), ciphertext.as_slice())
        .map_err(|_| EncryptionError::DecryptionFailed)?;
    String::from_utf8(plaintext).map_err(|_| EncryptionError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_bytes([7u8; 32])
    }

    #[test]
    fn master_keys_must_be_32_bytes_of_base64() {
        assert!(MasterKey::from_base64(&BASE64.encode([1u8; 32])).is_ok());
        assert_eq!(
            MasterKey::from_base64(&BASE64.encode([1u8; 31])),
            Err(ConfigError::InvalidEncryptionMasterKey)
        );
        assert_eq!(
            MasterKey::from_base64("not base64!"),
            Err(ConfigError::InvalidEncryptionMasterKey)
        );
        assert!(!format!("{:?}", key()).contains('7'));
    }

    #[test]
    fn encrypted_data_round_trips_and_uses_fresh_nonces() {
        let a = encrypt(&key(), "private-encrypted-x", r#"{"a":1}"#);
        let b = encrypt(&key(), "private-encrypted-x", r#"{"a":1}"#);
        assert_ne!(a, b);
        assert_eq!(
            decrypt(&key(), "private-encrypted-x", &a).as_deref(),
            Ok(r#"{"a":1}"#)
        );
    }

    #[test]
    fn data_does_not_open_on_another_channel_or_when_altered() {
        let sealed = encrypt(&key(), "private-encrypted-x", "hello");
        assert_eq!(
            decrypt(&key(), "private-encrypted-y", &sealed),
            Err(EncryptionError::DecryptionFailed)
        );
        assert_eq!(
            decrypt(&key(), "private-encrypted-x", "{}"),
            Err(EncryptionError::MalformedPayload)
        );
        assert_eq!(
            decrypt(
                &key(),
                "private-encrypted-x",
                r#"{"nonce":"AAAA","ciphertext":"AAAA"}"#
            ),
            Err(EncryptionError::InvalidNonce)
        );
    }
}
