use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{SaveOutcome, StoreError, StoreLock, TokenStore};
use crate::key::TokenKey;
use crate::token::TokenSet;

/// Keeps token sets in this process's memory. Nothing survives a restart.
///
/// The default store; right for tokens that can be re-obtained without a user (client
/// credentials) and for tests. Its [`lock`](TokenStore::lock) is a real per-key lock, so
/// several middlewares sharing one store (through
/// [`shared_store`](crate::TokenRefreshMiddlewareBuilder::shared_store)) still refresh once.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    records: Mutex<HashMap<TokenKey, TokenSet>>,
    locks: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<TokenKey, TokenSet>> {
        // A panic while holding this lock cannot leave a half-written map: every critical
        // section is a single insert, remove or clone.
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenSet>, StoreError> {
        Ok(self.records().get(key).cloned())
    }

    async fn save(
        &self,
        key: &TokenKey,
        tokens: &TokenSet,
        expected: Option<u64>,
    ) -> Result<SaveOutcome, StoreError> {
        let mut records = self.records();
        let current = records.get(key);
        if current.map(TokenSet::generation) != expected {
            return Ok(SaveOutcome::Conflict {
                current: current.cloned(),
            });
        }
        records.insert(key.clone(), tokens.clone());
        Ok(SaveOutcome::Saved)
    }

    async fn clear(&self, key: &TokenKey) -> Result<(), StoreError> {
        self.records().remove(key);
        Ok(())
    }

    async fn lock(&self, key: &TokenKey) -> Result<StoreLock, StoreError> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        Ok(StoreLock::new(lock.lock_owned().await))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::AccessToken;

    fn tokens(generation: u64) -> TokenSet {
        TokenSet::new(AccessToken::new("at")).with_generation(generation)
    }

    #[tokio::test]
    async fn conditional_save_accepts_the_expected_generation_only() {
        let store = MemoryTokenStore::new();
        let key = TokenKey::default();
        assert_eq!(store.load(&key).await.unwrap(), None);
        assert_eq!(
            store.save(&key, &tokens(1), None).await.unwrap(),
            SaveOutcome::Saved
        );
        assert_eq!(
            store.save(&key, &tokens(2), None).await.unwrap(),
            SaveOutcome::Conflict {
                current: Some(tokens(1))
            }
        );
        assert_eq!(
            store.save(&key, &tokens(2), Some(1)).await.unwrap(),
            SaveOutcome::Saved
        );
        assert_eq!(store.load(&key).await.unwrap(), Some(tokens(2)));
        store.clear(&key).await.unwrap();
        assert_eq!(store.load(&key).await.unwrap(), None);
    }
}
