//! Server-provided DPoP nonces, kept per origin.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The longest nonce accepted; a server sending more is not followed.
const MAX_NONCE_BYTES: usize = 512;

/// Whether `value` is a nonce a proof may carry: `1*NQCHAR` (RFC 9449 §8.1), and short.
pub(crate) fn is_nonce(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_NONCE_BYTES
        && value
            .iter()
            .all(|&byte| matches!(byte, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

/// The latest nonce each origin sent.
#[derive(Debug, Default)]
pub(crate) struct Nonces {
    by_origin: Mutex<HashMap<String, Arc<str>>>,
}

impl Nonces {
    /// The nonce to put in the next proof for `origin`.
    pub(crate) fn get(&self, origin: &str) -> Option<Arc<str>> {
        self.lock().get(origin).cloned()
    }

    /// Keeps the `DPoP-Nonce` header of a response from `origin`, if it is a valid nonce;
    /// returns whether it changed.
    pub(crate) fn update(&self, origin: &str, header: Option<&http::HeaderValue>) -> bool {
        let Some(value) = header.filter(|value| is_nonce(value.as_bytes())) else {
            return false;
        };
        let Ok(nonce) = value.to_str() else {
            return false;
        };
        let mut by_origin = self.lock();
        if by_origin.get(origin).is_some_and(|held| &**held == nonce) {
            return false;
        }
        by_origin.insert(origin.to_owned(), Arc::from(nonce));
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<str>>> {
        // A panic while holding it leaves a plain map: still consistent.
        self.by_origin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_nqchar_and_bounded() {
        assert!(is_nonce(b"eyJ7S_zG.eyJH0-Z.HX4w-7v"));
        assert!(!is_nonce(b""));
        assert!(!is_nonce(b"with space"));
        assert!(!is_nonce(b"quote\""));
        assert!(!is_nonce(b"back\\slash"));
        assert!(!is_nonce("é".as_bytes()));
        assert!(!is_nonce(&[b'a'; 513]));
        assert!(is_nonce(&[b'a'; 512]));
    }

    #[test]
    fn the_latest_valid_nonce_of_each_origin_is_kept() {
        let nonces = Nonces::default();
        let header = |text: &str| http::HeaderValue::from_str(text).unwrap();
        assert!(nonces.update("https://a", Some(&header("n1"))));
        assert!(!nonces.update("https://a", Some(&header("n1"))));
        assert!(!nonces.update("https://a", Some(&header("bad nonce"))));
        assert!(nonces.update("https://b", Some(&header("n2"))));
        assert_eq!(nonces.get("https://a").as_deref(), Some("n1"));
        assert_eq!(nonces.get("https://b").as_deref(), Some("n2"));
        assert_eq!(nonces.get("https://c"), None);
    }
}
