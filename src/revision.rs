//! The identity of one token record, which conditional saves compare.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Identifies one [`TokenRecord`](crate::TokenRecord): a random value, new for every record the
/// middleware makes (each refresh, each set of tokens handed over by
/// [`set_tokens`](crate::TokenManager::set_tokens), each logout).
///
/// A [`TokenStore`](crate::TokenStore) writes conditionally on the revision it expects to
/// replace, like an HTTP `ETag`. A counter would not do: generations start again after a logout
/// and a new login, so a process that lost its lock in the middle of a refresh could replace the
/// new login with the old user's tokens. A revision never repeats.
///
/// Not a secret: it appears in `Debug` output and store records.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(Arc<str>);

impl Revision {
    /// A new random revision (128 bits from the operating system's generator, in hex).
    pub fn random() -> Self {
        let bytes = random_bytes::<16>();
        let mut text = String::with_capacity(32);
        for byte in bytes {
            text.push(hex_digit(byte >> 4));
            text.push(hex_digit(byte & 0xf));
        }
        Self(Arc::from(text))
    }

    /// The revision of a record written before records carried one: its generation, which
    /// is what such records were compared on. Rewriting the record gives it a random one.
    pub(crate) fn legacy(generation: u64) -> Self {
        Self(Arc::from(format!("legacy-{generation}")))
    }

    /// The revision as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Revision({})", self.0)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The lowercase hex digit for `nibble` (0 to 15).
fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).unwrap_or('0')
}

/// `N` bytes from the operating system's random generator.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS generator only fails on platforms without one, where nothing in this crate
    // could work; a fixed value would silently break every revision and jitter.
    #[allow(clippy::expect_used)]
    getrandom::getrandom(&mut bytes).expect("the operating system's random generator works");
    bytes
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::Revision;

    #[test]
    fn random_revisions_do_not_repeat() {
        let revisions: HashSet<Revision> = (0..1000).map(|_| Revision::random()).collect();
        assert_eq!(revisions.len(), 1000);
        let one = Revision::random();
        assert_eq!(one.as_str().len(), 32);
        assert!(one.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn legacy_revisions_name_the_generation() {
        assert_eq!(Revision::legacy(7).as_str(), "legacy-7");
        assert_eq!(Revision::legacy(7), Revision::legacy(7));
    }
}
