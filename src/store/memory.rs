use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{SaveOutcome, StoreError, StoreLock, TokenStore};
use crate::key::TokenKey;
use crate::record::TokenRecord;
use crate::revision::Revision;

/// Keeps token records in this process's memory. Nothing survives a restart.
///
/// The default store; right for tokens that can be re-obtained without a user (client
/// credentials) and for tests. Its [`lock`](TokenStore::lock) is a real per-key lock, so
/// several managers sharing one store (an `Arc` of it passed to each
/// [`store`](crate::TokenManagerBuilder::store)) still refresh once.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    records: Mutex<HashMap<TokenKey, TokenRecord>>,
    locks: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<()>>>>,
    /// How many locks the last cleanup kept.
    locks_kept: AtomicUsize,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<TokenKey, TokenRecord>> {
        // A panic while holding this lock cannot leave a half-written map: every critical
        // section is a single insert or clone.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.records().get(key).cloned())
    }

    async fn save(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        expected: Option<&Revision>,
    ) -> Result<SaveOutcome, StoreError> {
        let mut records = self.records();
        let current = records.get(key);
        if current.map(TokenRecord::revision) != expected {
            return Ok(SaveOutcome::Conflict {
                current: current.cloned(),
            });
        }
        records.insert(key.clone(), record.clone());
        Ok(SaveOutcome::Saved)
    }

    async fn lock(&self, key: &TokenKey) -> Result<StoreLock, StoreError> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Locks nobody holds or waits for are dropped once the map has doubled since the
            // last cleanup: memory follows the keys in use, not every key ever locked.
            if locks.len() >= 2 * self.locks_kept.load(Ordering::Relaxed).max(64) {
                locks.retain(|_, lock| Arc::strong_count(lock) > 1);
                self.locks_kept.store(locks.len(), Ordering::Relaxed);
            }
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        Ok(StoreLock::new(lock.lock_owned().await))
    }
}
