//! Fault injection around real parts: a [`Gate`] pauses a refresh at a named point,
//! [`TestStore`] wraps a real store (pausing, failing saves on demand, or handing out no lock),
//! [`GatedRefresher`] wraps a real grant.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use reqwest_token_refresh::{
    Error, MemoryTokenStore, Revision, SaveOutcome, StoreError, StoreErrorKind, StoreLock,
    TokenKey, TokenRecord, TokenRefresher, TokenResponse, TokenSet, TokenStore,
};

use super::WAIT;

/// Where a refresh can be paused (or made to fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Taking the store's cross-process lock.
    Lock,
    /// Reading the store under the lock.
    Load,
    /// Just before the token-endpoint call.
    TokenCall,
    /// Just after the token endpoint answered (the server has rotated).
    TokenCallDone,
    /// Writing the rotated set to the store.
    Save,
}

/// A one-shot pause: armed at a point, it stops the first operation reaching it until released.
pub struct Gate {
    armed: Mutex<Option<Point>>,
    entered: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: tokio::sync::Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            armed: Mutex::new(None),
            entered: Mutex::new(None),
            release: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Gate {
    /// Arms the gate at `point`; the returned receiver fires when an operation is paused there.
    pub fn arm(&self, point: Point) -> tokio::sync::oneshot::Receiver<()> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        *self.armed.lock().unwrap() = Some(point);
        *self.entered.lock().unwrap() = Some(sender);
        receiver
    }

    pub fn release(&self) {
        self.release.add_permits(1);
    }

    async fn at(&self, point: Point) {
        let hit = {
            let mut armed = self.armed.lock().unwrap();
            if *armed == Some(point) {
                *armed = None;
                true
            } else {
                false
            }
        };
        if hit {
            if let Some(entered) = self.entered.lock().unwrap().take() {
                let _ = entered.send(());
            }
            self.release.acquire().await.expect("gate open").forget();
        }
    }
}

/// Waits until the armed point is reached.
pub async fn reached(entered: tokio::sync::oneshot::Receiver<()>) {
    tokio::time::timeout(WAIT, entered)
        .await
        .expect("the refresh reached the armed point")
        .expect("gate alive");
}

/// A store wrapper: pauses at [`Point::Lock`], [`Point::Load`], [`Point::Save`]; fails saves on
/// demand; can hand out no lock at all (a lease that expired, a misconfigured deployment).
pub struct TestStore {
    inner: Arc<dyn TokenStore>,
    pub gate: Arc<Gate>,
    failing_saves: AtomicU32,
    lockless: AtomicBool,
    saves: AtomicU64,
}

impl TestStore {
    pub fn new(inner: Arc<dyn TokenStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            gate: Arc::default(),
            failing_saves: AtomicU32::new(0),
            lockless: AtomicBool::new(false),
            saves: AtomicU64::new(0),
        })
    }

    pub fn memory() -> Arc<Self> {
        Self::new(Arc::new(MemoryTokenStore::new()))
    }

    /// The next `count` saves fail with an `Unavailable` error (`u32::MAX`: all of them).
    pub fn fail_saves(&self, count: u32) {
        self.failing_saves.store(count, Ordering::SeqCst);
    }

    pub fn without_lock(&self) {
        self.lockless.store(true, Ordering::SeqCst);
    }

    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::SeqCst)
    }

    /// The stored tokens, if the store holds tokens (not nothing, not an ended grant).
    pub async fn stored(&self) -> Option<TokenSet> {
        self.record()
            .await
            .and_then(|record| record.tokens().cloned())
    }

    /// The stored record.
    pub async fn record(&self) -> Option<TokenRecord> {
        self.inner
            .load(&TokenKey::default())
            .await
            .expect("store readable")
    }
}

#[async_trait]
impl TokenStore for TestStore {
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenRecord>, StoreError> {
        self.gate.at(Point::Load).await;
        self.inner.load(key).await
    }

    async fn save(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        expected: Option<&Revision>,
    ) -> Result<SaveOutcome, StoreError> {
        self.gate.at(Point::Save).await;
        self.saves.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .failing_saves
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                0 => None,
                u32::MAX => Some(u32::MAX),
                left => Some(left - 1),
            })
            .is_ok();
        if failing {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "test store refuses to save",
            ));
        }
        self.inner.save(key, record, expected).await
    }

    async fn lock(&self, key: &TokenKey) -> Result<StoreLock, StoreError> {
        self.gate.at(Point::Lock).await;
        if self.lockless.load(Ordering::SeqCst) {
            return Ok(StoreLock::none());
        }
        self.inner.lock(key).await
    }
}

/// A refresher wrapper pausing at [`Point::TokenCall`] and [`Point::TokenCallDone`].
pub struct GatedRefresher<R> {
    pub inner: R,
    pub gate: Arc<Gate>,
}

#[async_trait]
impl<R: TokenRefresher> TokenRefresher for GatedRefresher<R> {
    fn issuer_binding(&self) -> Option<String> {
        self.inner.issuer_binding()
    }

    fn allows_http_loopback(&self) -> bool {
        self.inner.allows_http_loopback()
    }

    async fn refresh(
        &self,
        key: &TokenKey,
        current: Option<&TokenSet>,
    ) -> Result<TokenResponse, Error> {
        self.gate.at(Point::TokenCall).await;
        let response = self.inner.refresh(key, current).await;
        self.gate.at(Point::TokenCallDone).await;
        response
    }
}
