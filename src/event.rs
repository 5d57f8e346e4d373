//! What the middleware tells the application about refreshes, rotations and persistence.

use std::time::Duration;

use crate::error::Error;
use crate::key::TokenKey;
use crate::log;
use crate::store::StoreError;

/// Something that happened to a key's tokens. Delivered to the hook set with
/// [`TokenManagerBuilder::on_event`](crate::TokenManagerBuilder::on_event),
/// and also emitted as a `tracing` event. Never carries a secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A call to the token endpoint is starting.
    RefreshStarted {
        /// The key refreshed.
        key: TokenKey,
        /// The generation being replaced (`None`: the key had no tokens).
        generation: Option<u64>,
    },
    /// A caller joined a refresh already in flight instead of starting one.
    Coalesced {
        /// The key.
        key: TokenKey,
    },
    /// The store's cross-process lock was taken.
    LockAcquired {
        /// The key.
        key: TokenKey,
        /// How long taking it took (waiting for another process included).
        waited: Duration,
    },
    /// The token endpoint issued new tokens.
    Refreshed {
        /// The key refreshed.
        key: TokenKey,
        /// The generation of the new token set.
        generation: u64,
        /// Whether the server rotated the refresh token.
        rotated: bool,
        /// How long the token-endpoint call took.
        duration: Duration,
    },
    /// Another process had already refreshed; its stored tokens were adopted without a call.
    Adopted {
        /// The key.
        key: TokenKey,
        /// The generation adopted.
        generation: u64,
    },
    /// A token set was written to the store.
    Persisted {
        /// The key.
        key: TokenKey,
        /// The generation written.
        generation: u64,
    },
    /// A token set could not be written. It stays in use from memory and the save is retried;
    /// until it succeeds a restart would lose it.
    PersistFailed {
        /// The key.
        key: TokenKey,
        /// The generation that is not persisted.
        generation: u64,
        /// Why the save failed.
        error: StoreError,
    },
    /// A refresh failed.
    RefreshFailed {
        /// The key.
        key: TokenKey,
        /// Why.
        error: Error,
    },
    /// The grant is gone; the user must authorize again.
    ReauthorizationRequired {
        /// The key.
        key: TokenKey,
    },
}

/// The application's event hook.
pub(crate) type EventHook = std::sync::Arc<dyn Fn(&Event) + Send + Sync>;

pub(crate) fn emit(hook: Option<&EventHook>, event: Event) {
    match &event {
        Event::RefreshStarted { key, generation } => {
            log::debug!(%key, ?generation, "token refresh started");
        }
        Event::Coalesced { key } => log::trace!(%key, "joined a refresh in flight"),
        Event::LockAcquired { key, waited } => {
            log::trace!(%key, ?waited, "store lock acquired");
        }
        Event::Refreshed {
            key,
            generation,
            rotated,
            duration,
        } => log::debug!(%key, generation, rotated, ?duration, "token refreshed"),
        Event::Adopted { key, generation } => {
            log::debug!(%key, generation, "adopted tokens refreshed by another process");
        }
        Event::Persisted { key, generation } => {
            log::trace!(%key, generation, "tokens persisted");
        }
        Event::PersistFailed {
            key,
            generation,
            error,
        } => log::warn!(%key, generation, %error, "failed to persist tokens; kept in memory"),
        Event::RefreshFailed { key, error } => log::warn!(%key, %error, "token refresh failed"),
        Event::ReauthorizationRequired { key } => {
            log::warn!(%key, "re-authorization required");
        }
    }
    if let Some(hook) = hook {
        // A panicking hook must not unwind through a refresh and lose a rotated token.
        let delivered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&event)));
        if delivered.is_err() {
            log::error!("the token event hook panicked; event dropped");
        }
    }
}
