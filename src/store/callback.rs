use async_trait::async_trait;

use super::{MemoryTokenStore, SaveOutcome, StoreError, StoreLock, TokenStore};
use crate::key::TokenKey;
use crate::record::TokenRecord;
use crate::revision::Revision;

/// A memory store that also tells your code about every record it saves: each new token set
/// (refreshes, rotations, logins) and each end of a grant (logout, revocation, `invalid_grant`).
///
/// For applications that keep tokens their own way and only want to hear about changes. The
/// callback runs before waiting requests are released, so keep it short and non-blocking
/// (send to a channel, for instance).
///
/// ```
/// use reqwest_token_refresh::{CallbackTokenStore, TokenRecord};
///
/// let store = CallbackTokenStore::new(|key, record| match record {
///     TokenRecord::Tokens(tokens) => println!("{key}: new tokens, generation {}", tokens.generation()),
///     _ => println!("{key}: needs a new login"),
/// });
/// ```
pub struct CallbackTokenStore<F> {
    memory: MemoryTokenStore,
    on_save: F,
}

impl<F> CallbackTokenStore<F>
where
    F: Fn(&TokenKey, &TokenRecord) + Send + Sync + 'static,
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
    F: Fn(&TokenKey, &TokenRecord) + Send + Sync + 'static,
{
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenRecord>, StoreError> {
        self.memory.load(key).await
    }

    async fn save(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        expected: Option<&Revision>,
    ) -> Result<SaveOutcome, StoreError> {
        let outcome = self.memory.save(key, record, expected).await?;
        if outcome == SaveOutcome::Saved {
            (self.on_save)(key, record);
        }
        Ok(outcome)
    }

    async fn lock(&self, key: &TokenKey) -> Result<StoreLock, StoreError> {
        self.memory.lock(key).await
    }
}
