//! The cross-process lock a store hands out, and how a store tells the middleware that it is
//! still held and releases it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

/// A lock whose holder can lose it (a lease, a database session, a lock file) and that is
/// released by a call to its backend.
///
/// Implement it for the guard your [`TokenStore::lock`](crate::TokenStore::lock) returns
/// through [`StoreLock::held`]. Keep a `Drop` that releases too, as a fallback: the middleware
/// always calls [`release`](Self::release), but a caller's future can be dropped at any point.
#[async_trait]
pub trait HeldLock: Send + Sync + 'static {
    /// Whether the lock is still this holder's, as the backend says now. The middleware asks
    /// right before every call to the authorization server: a holder that lost its lock must
    /// not refresh alongside the new holder. Default: yes.
    async fn is_held(&self) -> bool {
        true
    }

    /// Releases the lock, and returns once the backend has it back.
    async fn release(self: Box<Self>);
}

enum Guard {
    Nothing,
    /// Released when dropped.
    Dropped(#[allow(dead_code)] Box<dyn Send + Sync>),
    /// Released by awaiting [`HeldLock::release`].
    Held(Box<dyn HeldLock>),
}

/// An exclusive section taken with [`TokenStore::lock`](crate::TokenStore::lock).
#[must_use = "the lock is released when this value is released or dropped"]
pub struct StoreLock {
    guard: Guard,
    lost: Option<Arc<AtomicBool>>,
}

impl StoreLock {
    /// A lock with nothing to release, for stores used by one process only.
    pub fn none() -> Self {
        Self {
            guard: Guard::Nothing,
            lost: None,
        }
    }

    /// A lock released when `guard` is dropped (an in-process mutex guard, a file lock).
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        Self {
            guard: Guard::Dropped(Box::new(guard)),
            lost: None,
        }
    }

    /// A lock that knows whether it is still held and is released by a call to its backend.
    pub fn held(lock: impl HeldLock) -> Self {
        Self {
            guard: Guard::Held(Box::new(lock)),
            lost: None,
        }
    }

    /// Attaches a flag the store sets when it learns that the lock was lost (a lease whose
    /// renewal failed). Checked without a round trip wherever the middleware decides.
    pub fn with_loss_flag(mut self, lost: Arc<AtomicBool>) -> Self {
        self.lost = Some(lost);
        self
    }

    /// Whether the lock is held as far as this process knows (its loss flag is not set).
    pub fn is_held(&self) -> bool {
        self.lost
            .as_ref()
            .is_none_or(|lost| !lost.load(Ordering::Acquire))
    }

    /// Whether the lock is still held, asking the backend ([`HeldLock::is_held`]) when the
    /// lock can tell.
    pub async fn still_held(&self) -> bool {
        if !self.is_held() {
            return false;
        }
        match &self.guard {
            Guard::Held(lock) => lock.is_held().await,
            Guard::Nothing | Guard::Dropped(_) => true,
        }
    }

    /// Releases the lock and waits until it is released.
    pub async fn release(self) {
        if let Guard::Held(lock) = self.guard {
            lock.release().await;
        }
    }
}

impl std::fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let guard = match self.guard {
            Guard::Nothing => "none",
            Guard::Dropped(_) => "released on drop",
            Guard::Held(_) => "released by its backend",
        };
        f.debug_struct("StoreLock")
            .field("guard", &guard)
            .field("held", &self.is_held())
            .finish()
    }
}
