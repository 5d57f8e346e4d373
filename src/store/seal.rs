//! Encryption at rest for stores kept on shared servers (Redis, SQL): token sets sealed with
//! XChaCha20-Poly1305, a fresh random nonce per write, and the record's name bound as
//! associated data.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{StoreError, StoreErrorKind};
use crate::error::ConfigError;
use crate::record::TokenRecord;

/// Version of the sealed envelope format.
const FORMAT: u32 = 1;
/// Key length of XChaCha20-Poly1305.
const KEY_BYTES: usize = 32;

/// A 256-bit key that seals token sets, with the id stored next to each sealed value.
///
/// Load it from your secret manager, an environment variable or a 0600 file, never from a
/// store URL. `Debug` prints the id only.
#[derive(Clone)]
pub struct EncryptionKey {
    id: String,
    key: Zeroizing<[u8; KEY_BYTES]>,
}

impl EncryptionKey {
    /// A key from 32 raw bytes. Any other length is a configuration error.
    pub fn from_bytes(id: impl Into<String>, bytes: &[u8]) -> Result<Self, ConfigError> {
        let id = id.into();
        if id.is_empty() {
            return Err(ConfigError::InvalidEncryptionKey(
                "key id must not be empty".into(),
            ));
        }
        let key: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| {
            ConfigError::InvalidEncryptionKey(format!(
                "key `{id}` must be {KEY_BYTES} bytes, got {}",
                bytes.len()
            ))
        })?;
        Ok(Self {
            id,
            key: Zeroizing::new(key),
        })
    }

    /// A key from its standard base64 encoding (e.g. `openssl rand -base64 32`).
    pub fn from_base64(id: impl Into<String>, encoded: &str) -> Result<Self, ConfigError> {
        let id = id.into();
        let bytes = Zeroizing::new(BASE64.decode(encoded.trim()).map_err(|_| {
            ConfigError::InvalidEncryptionKey(format!("key `{id}` is not valid base64"))
        })?);
        Self::from_bytes(id, &bytes)
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.key.as_ref().into())
    }
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// The keys a store may use: one seals new values, all of them open old ones.
///
/// To rotate keys, make the new key primary and keep the old one as a decryption key; values
/// sealed with the old key are re-sealed with the new one on their next save.
#[derive(Clone, Debug)]
pub struct KeyRing {
    primary: EncryptionKey,
    others: Vec<EncryptionKey>,
}

/// What [`KeyRing::open`] found.
#[derive(Debug)]
#[non_exhaustive]
pub struct Opened {
    /// The record.
    pub record: TokenRecord,
    /// Sealed with a key other than the primary one: seal it again on the next save.
    pub stale_key: bool,
}

/// The stored form: JSON with data fields only.
#[derive(Serialize, Deserialize)]
struct Envelope {
    format: u32,
    key_id: String,
    nonce: String,
    ciphertext: String,
}

impl KeyRing {
    /// A ring that seals and opens with `primary`.
    pub fn new(primary: EncryptionKey) -> Self {
        Self {
            primary,
            others: Vec::new(),
        }
    }

    /// Adds a key that opens values sealed earlier but never seals new ones.
    pub fn with_decryption_key(mut self, key: EncryptionKey) -> Self {
        self.others.push(key);
        self
    }

    /// Seals `record` for the record named `name` (the name your store files it under; it is
    /// bound as associated data). Returns a JSON envelope `{format, key_id, nonce,
    /// ciphertext}`, for stores you write yourself.
    pub fn seal(&self, name: &str, record: &TokenRecord) -> Result<String, StoreError> {
        let plaintext = Zeroizing::new(serde_json::to_vec(record).map_err(|error| {
            StoreError::new(StoreErrorKind::Other, "cannot encode token record").with_source(error)
        })?);
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self
            .primary
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: &plaintext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| StoreError::new(StoreErrorKind::Other, "encryption failed"))?;
        let envelope = Envelope {
            format: FORMAT,
            key_id: self.primary.id.clone(),
            nonce: BASE64.encode(nonce),
            ciphertext: BASE64.encode(ciphertext),
        };
        serde_json::to_string(&envelope).map_err(|error| {
            StoreError::new(StoreErrorKind::Other, "cannot encode sealed value").with_source(error)
        })
    }

    /// Opens a value sealed for the record named `name`. A value copied from another record,
    /// tampered with, or sealed with an unknown key is a [`StoreErrorKind::Corrupt`] error.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Opened, StoreError> {
        let corrupt = |what: &str| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                format!("sealed token record `{name}` {what}"),
            )
        };
        let envelope: Envelope =
            serde_json::from_slice(sealed).map_err(|_| corrupt("is not a sealed envelope"))?;
        if envelope.format != FORMAT {
            return Err(corrupt(&format!(
                "has unsupported format {}",
                envelope.format
            )));
        }
        let key = std::iter::once(&self.primary)
            .chain(&self.others)
            .find(|key| key.id == envelope.key_id)
            .ok_or_else(|| {
                corrupt(&format!(
                    "was sealed with unknown key `{}`",
                    envelope.key_id
                ))
            })?;
        let nonce = BASE64
            .decode(&envelope.nonce)
            .ok()
            .filter(|nonce| nonce.len() == 24)
            .ok_or_else(|| corrupt("has a malformed nonce"))?;
        let ciphertext = BASE64
            .decode(&envelope.ciphertext)
            .map_err(|_| corrupt("has a malformed ciphertext"))?;
        let plaintext = Zeroizing::new(
            key.cipher()
                .decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &ciphertext,
                        aad: name.as_bytes(),
                    },
                )
                .map_err(|_| {
                    corrupt("failed authentication (tampered, copied from another record, or wrong key)")
                })?,
        );
        let record = serde_json::from_slice(&plaintext)
            .map_err(|_| corrupt("holds an unreadable token record"))?;
        Ok(Opened {
            record,
            stale_key: key.id != self.primary.id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{AccessToken, RefreshToken};
    use crate::token::TokenSet;

    fn key(id: &str, byte: u8) -> EncryptionKey {
        EncryptionKey::from_bytes(id, &[byte; 32]).unwrap()
    }

    fn tokens() -> TokenRecord {
        TokenRecord::Tokens(
            TokenSet::new(AccessToken::new("canary-at"))
                .with_refresh_token(RefreshToken::new("canary-rt"))
                .renewed(3),
        )
    }

    #[test]
    fn r49_sealed_values_round_trip_and_hide_the_tokens() {
        let ring = KeyRing::new(key("k1", 1));
        let sealed = ring.seal("user-1", &tokens()).unwrap();
        assert!(!sealed.contains("canary"));
        let opened = ring.open("user-1", sealed.as_bytes()).unwrap();
        assert_eq!(opened.record.generation(), 3);
        assert!(!opened.stale_key);
    }

    #[test]
    fn each_write_uses_a_fresh_nonce() {
        let ring = KeyRing::new(key("k1", 1));
        assert_ne!(
            ring.seal("user-1", &tokens()).unwrap(),
            ring.seal("user-1", &tokens()).unwrap()
        );
    }

    #[test]
    fn a_value_copied_to_another_record_does_not_open() {
        let ring = KeyRing::new(key("k1", 1));
        let sealed = ring.seal("user-1", &tokens()).unwrap();
        let error = ring.open("user-2", sealed.as_bytes()).unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Corrupt);
    }

    #[test]
    fn tampering_is_detected() {
        let ring = KeyRing::new(key("k1", 1));
        let sealed = ring.seal("user-1", &tokens()).unwrap();
        let mut envelope: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        let mut bytes = BASE64
            .decode(envelope["ciphertext"].as_str().unwrap())
            .unwrap();
        bytes[0] ^= 1;
        envelope["ciphertext"] = BASE64.encode(bytes).into();
        let error = ring
            .open("user-1", envelope.to_string().as_bytes())
            .unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Corrupt);
        for garbage in [&b"not json"[..], b"{}", b"\xff\xfe"] {
            assert_eq!(
                ring.open("user-1", garbage).unwrap_err().kind(),
                StoreErrorKind::Corrupt
            );
        }
    }

    #[test]
    fn old_keys_open_and_report_a_stale_key() {
        let old = KeyRing::new(key("2025", 1));
        let sealed = old.seal("user-1", &tokens()).unwrap();
        let rotated = KeyRing::new(key("2026", 2)).with_decryption_key(key("2025", 1));
        let opened = rotated.open("user-1", sealed.as_bytes()).unwrap();
        assert!(opened.stale_key);
        let unknown = KeyRing::new(key("2026", 2));
        assert_eq!(
            unknown
                .open("user-1", sealed.as_bytes())
                .unwrap_err()
                .kind(),
            StoreErrorKind::Corrupt
        );
    }

    #[test]
    fn keys_of_the_wrong_length_are_refused_and_never_printed() {
        assert!(EncryptionKey::from_bytes("k", &[0; 16]).is_err());
        assert!(EncryptionKey::from_base64("k", "c2hvcnQ=").is_err());
        assert!(EncryptionKey::from_base64("k", "***").is_err());
        let key = key("k1", 0xAB);
        assert!(!format!("{key:?}").to_lowercase().contains("ab, ab"));
        assert!(format!("{key:?}").contains("[redacted]"));
    }
}
