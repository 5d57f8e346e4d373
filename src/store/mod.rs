//! Where token sets live between refreshes, and how processes agree on who refreshes.

mod callback;
mod error;
#[cfg(feature = "file")]
mod file;
mod lock;
mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "encryption")]
mod seal;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

use async_trait::async_trait;

#[cfg(feature = "redis")]
pub use self::redis::{RedisTokenStore, RedisTokenStoreBuilder};
pub use callback::CallbackTokenStore;
pub use error::{StoreError, StoreErrorKind};
#[cfg(feature = "file")]
pub use file::{FileTokenStore, FileTokenStoreBuilder};
pub use lock::{HeldLock, StoreLock};
pub use memory::MemoryTokenStore;
#[cfg(feature = "encryption")]
pub use seal::{EncryptionKey, KeyRing, Opened};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::{SqlTokenStore, SqlTokenStoreBuilder};

use crate::key::TokenKey;
use crate::record::TokenRecord;
use crate::revision::Revision;

/// Persists each key's [`TokenRecord`], and lets processes agree on who refreshes.
///
/// Implement it to keep tokens somewhere this crate does not cover. The contract:
///
/// - [`load`](TokenStore::load): `Ok(None)` only when nothing was ever stored for the key (or
///   its record expired); a record that cannot be read or decoded is an error, never "no
///   tokens".
/// - [`save`](TokenStore::save): a conditional write, like an HTTP `If-Match`. It writes only
///   when the stored record's [`revision`](TokenRecord::revision) is the one the caller expects
///   (`None`: only when nothing is stored), in one atomic step; otherwise it writes nothing and
///   returns [`SaveOutcome::Conflict`] with what is stored now. Compare revisions, never
///   generations: generations repeat after a logout and a new login, revisions never do.
/// - [`lock`](TokenStore::lock): an exclusive section across every process sharing the store,
///   held by the middleware for the whole lock → reload → refresh → save sequence. The
///   middleware releases it with [`StoreLock::release`] before the operation that took it
///   returns, so a process that exits right after leaves no lock behind; it must also be
///   released when the [`StoreLock`] is dropped and when its holder dies. A lock that can be
///   lost while held (a lease, a database session, a lock file someone removed) says so
///   ([`HeldLock::is_held`], checked before every call to the authorization server). A store
///   only ever used by one process may lock in memory (as [`MemoryTokenStore`] does).
///
/// The middleware never deletes a record: a logout or a dead grant is written as an
/// [`Ended`](crate::Ended) record, so that every process and every later run knows the key needs
/// a new login. Store records as the JSON the record serializes to (`serde_json`); they contain
/// secrets, so keep them private or encrypted ([`KeyRing`] seals them).
///
/// `examples/custom_store.rs` is a complete implementation.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Reads the record stored for `key`.
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenRecord>, StoreError>;

    /// Writes `record` for `key` if the stored record's revision is `expected` (`None`: only if
    /// nothing is stored).
    async fn save(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        expected: Option<&Revision>,
    ) -> Result<SaveOutcome, StoreError>;

    /// Takes the exclusive refresh section for `key` across processes.
    async fn lock(&self, key: &TokenKey) -> Result<StoreLock, StoreError>;
}

/// What a conditional [`TokenStore::save`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum SaveOutcome {
    /// The record was written.
    Saved,
    /// Nothing was written: the stored record is not the expected one.
    Conflict {
        /// What is stored now.
        current: Option<TokenRecord>,
    },
}

/// A shared store is a store: one instance can serve several middlewares, or a middleware and
/// your own code.
#[async_trait]
impl<S: TokenStore + ?Sized> TokenStore for std::sync::Arc<S> {
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenRecord>, StoreError> {
        (**self).load(key).await
    }

    async fn save(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        expected: Option<&Revision>,
    ) -> Result<SaveOutcome, StoreError> {
        (**self).save(key, record, expected).await
    }

    async fn lock(&self, key: &TokenKey) -> Result<StoreLock, StoreError> {
        (**self).lock(key).await
    }
}
