//! Where token sets live between refreshes, and how processes agree on who refreshes.

mod callback;
mod error;
#[cfg(feature = "file")]
mod file;
mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "encryption")]
mod seal;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

#[cfg(feature = "redis")]
pub use self::redis::{RedisTokenStore, RedisTokenStoreBuilder};
pub use callback::CallbackTokenStore;
pub use error::{StoreError, StoreErrorKind};
#[cfg(feature = "file")]
pub use file::FileTokenStore;
pub use memory::MemoryTokenStore;
#[cfg(feature = "encryption")]
pub use seal::{EncryptionKey, KeyRing, Opened};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::SqlTokenStore;

use crate::key::TokenKey;
use crate::token::TokenSet;

/// Persists token sets, and lets processes agree on who refreshes.
///
/// Implement it to keep tokens somewhere this crate does not cover. The contract:
///
/// - [`load`](TokenStore::load): `Ok(None)` only when nothing is stored; a record that cannot be
///   read or decoded is an error, never "no tokens".
/// - [`save`](TokenStore::save): a conditional write. It succeeds only when the stored
///   generation is the one the caller expects (`None`: nothing stored); otherwise it writes
///   nothing and returns [`SaveOutcome::Conflict`] with what is stored now.
/// - [`clear`](TokenStore::clear): removes the record (after `invalid_grant`, or on logout).
/// - [`lock`](TokenStore::lock): an exclusive section across every process sharing the store,
///   held by the middleware for the whole lock → reload → refresh → save sequence, and released
///   when the returned [`StoreLock`] is dropped (also when its holder dies). A store only ever
///   used by one middleware may return [`StoreLock::none`]: the middleware already serializes
///   each key's writes in its process.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Reads the token set stored for `key`.
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenSet>, StoreError>;

    /// Writes `tokens` for `key` if the stored generation equals `expected`
    /// (`None`: only if nothing is stored).
    async fn save(
        &self,
        key: &TokenKey,
        tokens: &TokenSet,
        expected: Option<u64>,
    ) -> Result<SaveOutcome, StoreError>;

    /// Removes whatever is stored for `key`.
    async fn clear(&self, key: &TokenKey) -> Result<(), StoreError>;

    /// Takes the exclusive refresh section for `key` across processes.
    async fn lock(&self, key: &TokenKey) -> Result<StoreLock, StoreError>;
}

/// What a conditional [`TokenStore::save`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum SaveOutcome {
    /// The token set was written.
    Saved,
    /// Nothing was written: the stored record is not the expected one.
    Conflict {
        /// What is stored now.
        current: Option<TokenSet>,
    },
}

/// An exclusive section taken with [`TokenStore::lock`]; dropping it releases the section.
#[must_use = "the lock is released when this value is dropped"]
pub struct StoreLock {
    _guard: Option<Box<dyn Send + Sync>>,
    lost: Option<Arc<AtomicBool>>,
}

impl StoreLock {
    /// A lock with nothing to release, for stores used by one process only.
    pub fn none() -> Self {
        Self {
            _guard: None,
            lost: None,
        }
    }

    /// A lock released when `guard` is dropped (a file lock, a lease released by `Drop`, …).
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        Self {
            _guard: Some(Box::new(guard)),
            lost: None,
        }
    }

    /// Attaches a flag the store sets when the lock is lost while held (a lease that expired
    /// or could not be renewed). The middleware checks it before calling the token endpoint,
    /// so a holder that lost its lease never refreshes alongside the new holder (INV-2).
    pub fn with_loss_flag(mut self, lost: Arc<AtomicBool>) -> Self {
        self.lost = Some(lost);
        self
    }

    /// Whether the lock is still held (always, for locks without a loss flag).
    pub fn is_held(&self) -> bool {
        self.lost
            .as_ref()
            .is_none_or(|lost| !lost.load(Ordering::Acquire))
    }
}

impl std::fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLock")
            .field("guarded", &self._guard.is_some())
            .field("held", &self.is_held())
            .finish()
    }
}
