use async_trait::async_trait;

use super::{MemoryTokenStore, SaveOutcome, StoreError, StoreLock, TokenStore};
use crate::key::TokenKey;
use crate::token::TokenSet;

/// A memory store that also tells your code about every token set it saves.
///
/// For applications that keep tokens their own way and only want to hear about rotations. The
/// callback runs before waiting requests are released, so keep it short and non-blocking
/// (send to a channel, for instance).
///
/// ```
/// use reqwest_token_refresh::CallbackTokenStore;
///
/// let store = CallbackTokenStore::new(|key, tokens| {
///     println!("key {key} now at generation {}", tokens.generation());
/// });
/// ```
pub struct CallbackTokenStore<F> {
    memory: MemoryTokenStore,
    on_save: F,
}

impl<F> CallbackTokenStore<F>
where
    F: Fn(&TokenKey, &TokenSet) + Send + Sync + 'static,
{
    /// A store that calls `on_save` after every successful save.
    pub fn new(on_save: F) -> Self {
        Self {
            memory: MemoryTokenStore::new(),
            on_save,
        }
    }
}

impl<F> std::fmt::Debug for CallbackTokenStore<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackTokenStore")
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<F> TokenStore for CallbackTokenStore<F>
where
    F: Fn(&TokenKey, &TokenSet) + Send + Sync + 'static,
{
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenSet>, StoreError> {
        self.memory.load(key).await
    }

    async fn save(
        &self,
        key: &TokenKey,
        tokens: &TokenSet,
        expected: Option<u64>,
    ) -> Result<SaveOutcome, StoreError> {
        let outcome = self.memory.save(key, tokens, expected).await?;
        if outcome == SaveOutcome::Saved {
            (self.on_save)(key, tokens);
        }
        Ok(outcome)
    }

    async fn clear(&self, key: &TokenKey) -> Result<(), StoreError> {
        self.memory.clear(key).await
    }

    async fn lock(&self, key: &TokenKey) -> Result<StoreLock, StoreError> {
        self.memory.lock(key).await
    }
}
