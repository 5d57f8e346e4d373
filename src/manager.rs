//! Per-key token state and the one refresh that concurrent callers share.
//!
//! Each key has a published state (read without locks on the hot path) and at most one
//! *flight*: a detached task that takes the key's writer lock and the store's cross-process
//! lock, reloads, adopts or refreshes, persists, and only then publishes (see `flight.rs`).
//! Callers await a shared handle to that task, so dropping a caller never cancels a rotation
//! half-way, and every waiter gets the same outcome.

mod flight;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::error::Error;
use crate::event::EventHook;
use crate::grant::{is_b64token, TokenRefresher};
use crate::key::TokenKey;
use crate::secret::AccessToken;
use crate::store::{SaveOutcome, StoreError, StoreErrorKind, TokenStore};
use crate::token::TokenSet;

use flight::{Flight, Trigger};

/// How often a key in the "re-authorization required" state looks at the store again, in case
/// the user logged in through another process.
const REAUTHORIZATION_RECHECK: Duration = Duration::from_secs(10);

/// The published token of a key: the set and its ready-made `Authorization` value.
#[derive(Debug)]
pub(crate) struct ActiveToken {
    tokens: TokenSet,
    header: HeaderValue,
    refresh_due_at: Option<SystemTime>,
}

impl ActiveToken {
    fn new(tokens: TokenSet, leeway: Duration) -> Result<Self, Error> {
        let header = bearer_header(&tokens)?;
        let refresh_due_at = tokens.refresh_due_at(leeway);
        Ok(Self {
            tokens,
            header,
            refresh_due_at,
        })
    }

    pub(crate) fn header(&self) -> &HeaderValue {
        &self.header
    }

    pub(crate) fn generation(&self) -> u64 {
        self.tokens.generation()
    }

    fn refresh_due(&self, now: SystemTime) -> bool {
        self.refresh_due_at.is_some_and(|due| now >= due)
    }

    /// What identifies this token to a caller that saw it.
    pub(crate) fn seen(&self) -> Seen {
        Seen {
            generation: self.generation(),
            access_token: self.tokens.access_token().clone(),
        }
    }

    /// Whether this is the token the caller saw.
    fn is(&self, seen: Option<&Seen>) -> bool {
        seen.is_some_and(|seen| {
            seen.generation == self.generation() && &seen.access_token == self.tokens.access_token()
        })
    }
}

/// The token a caller sent: its generation and access token (generations alone restart after
/// a logout and new login elsewhere).
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    generation: u64,
    access_token: AccessToken,
}

fn bearer_header(tokens: &TokenSet) -> Result<HeaderValue, Error> {
    let secret = tokens.access_token().secret();
    if !is_b64token(secret) {
        return Err(Error::InvalidAccessToken);
    }
    let mut value =
        HeaderValue::try_from(format!("Bearer {secret}")).map_err(|_| Error::InvalidAccessToken)?;
    value.set_sensitive(true);
    Ok(value)
}

/// A key's published token, sharing the allocation of the state that published it: reading a
/// token among many keys is one pointer (and cache miss) fewer than a separate allocation.
#[derive(Debug, Clone)]
pub(crate) struct PublishedToken(Arc<KeyState>);

impl PublishedToken {
    /// `state`'s token, if it holds one.
    fn from_state(state: Arc<KeyState>) -> Option<Self> {
        matches!(*state, KeyState::Active(_)).then_some(Self(state))
    }
}

impl std::ops::Deref for PublishedToken {
    type Target = ActiveToken;

    fn deref(&self) -> &ActiveToken {
        match &*self.0 {
            KeyState::Active(token) => token,
            // Made only from states matched as active (`from_state`, the hot path, flights),
            // and a state never changes once published.
            _ => unreachable!("a published token's state is active"),
        }
    }
}

/// What a key's callers see.
#[derive(Debug)]
enum KeyState {
    /// Not read from the store yet (or forgotten by `clear`).
    Unloaded,
    /// Tokens in use.
    Active(ActiveToken),
    /// The grant is gone; fail fast until new tokens are supplied. (Boxed: every key's
    /// state is allocated with room for its largest variant.)
    Reauthorize { error: Box<Error>, since: Instant },
}

impl KeyState {
    fn generation(&self) -> Option<u64> {
        match self {
            KeyState::Active(token) => Some(token.generation()),
            _ => None,
        }
    }
}

/// A refresh failure that is not retried at once (R27: configuration errors, unusable
/// responses): callers get it back without a token call until `until`.
#[derive(Debug, Clone)]
struct Backoff {
    until: Instant,
    delay: Duration,
    error: Error,
}

/// One key's state, resident for every key the manager has served: what is rarely set (an
/// unsaved rotation, a backoff) is boxed to keep it small.
struct KeySlot {
    key: TokenKey,
    state: ArcSwap<KeyState>,
    /// Serializes everything that writes this key (flights, `set_tokens`, `clear`, save
    /// retries) inside this process; the store's lock does the same across processes.
    writer: tokio::sync::Mutex<()>,
    flight: Mutex<Option<Flight>>,
    /// The token set held in memory only, because its save failed.
    unsaved: Mutex<Option<Box<Unsaved>>>,
    last_rejection_refresh: Mutex<Option<Instant>>,
    backoff: Mutex<Option<Box<Backoff>>>,
}

impl KeySlot {
    fn new(key: TokenKey) -> Self {
        Self {
            key,
            state: ArcSwap::from_pointee(KeyState::Unloaded),
            writer: tokio::sync::Mutex::new(()),
            flight: Mutex::new(None),
            unsaved: Mutex::new(None),
            last_rejection_refresh: Mutex::new(None),
            backoff: Mutex::new(None),
        }
    }

    fn flight(&self) -> MutexGuard<'_, Option<Flight>> {
        lock(&self.flight)
    }

    /// The unsaved state of generation `generation`, if its save failed.
    fn unsaved(&self, generation: u64) -> Option<Unsaved> {
        lock(&self.unsaved)
            .as_deref()
            .filter(|unsaved| unsaved.generation == generation)
            .cloned()
    }

    fn set_unsaved(&self, unsaved: Option<Unsaved>) {
        *lock(&self.unsaved) = unsaved.map(Box::new);
    }

    /// The key's published token, if it has one.
    fn token(&self) -> Option<PublishedToken> {
        PublishedToken::from_state(self.state.load_full())
    }

    fn publish(&self, token: ActiveToken) -> PublishedToken {
        let state = Arc::new(KeyState::Active(token));
        self.state.store(Arc::clone(&state));
        PublishedToken(state)
    }
}

/// A token set whose save failed: it may be saved later only over the record it replaced.
#[derive(Debug, Clone)]
struct Unsaved {
    generation: u64,
    /// What the store held when the set was made (`None`: nothing). If the store holds
    /// anything else later, someone else wrote it (another refresh, a logout, a new login) and
    /// the unsaved set must not overwrite it.
    parent: Option<TokenSet>,
}

/// Critical sections behind these std mutexes only swap small values; a poisoned lock still
/// holds a consistent one.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Settings of a [`TokenManager`].
#[derive(Clone)]
pub(crate) struct ManagerConfig {
    pub(crate) leeway: Duration,
    pub(crate) rejection_cooldown: Duration,
    pub(crate) on_event: Option<EventHook>,
    /// Tokens for a key whose store record is empty on the first load (a first run).
    pub(crate) initial: Option<(TokenKey, TokenSet)>,
}

struct Inner {
    store: Arc<dyn TokenStore>,
    refresher: Arc<dyn TokenRefresher>,
    config: ManagerConfig,
    keys: RwLock<HashMap<TokenKey, Arc<KeySlot>>>,
    /// The first key ever used, read without the map's lock: most clients use one key, and
    /// the map's reader count is a cache line every request on every core would write.
    first: OnceLock<Arc<KeySlot>>,
    next_flight_id: AtomicU64,
    /// What the token sets of this manager are bound to (D15); see `TokenSet::issued_for`.
    /// One string shared by every token set of the manager.
    binding: Option<Arc<str>>,
    /// `initial` is used at most once per manager: never to resurrect a logged-out key.
    initial_used: std::sync::atomic::AtomicBool,
}

/// Holds every key's tokens and runs their refreshes; shared by the middleware and the
/// application.
///
/// Get it from [`TokenRefreshMiddleware::manager`](crate::TokenRefreshMiddleware::manager) to
/// supply tokens after a login ([`set_tokens`](Self::set_tokens)), read them, or forget them.
/// Cloning is cheap; clones share everything.
///
/// Refreshes run as tasks on the Tokio runtime of the request that started them; keep that
/// runtime alive while requests are in flight (a runtime dropped mid-refresh cancels it).
#[derive(Clone)]
pub struct TokenManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("leeway", &self.inner.config.leeway)
            .field("rejection_cooldown", &self.inner.config.rejection_cooldown)
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    pub(crate) fn new(
        store: Arc<dyn TokenStore>,
        refresher: Arc<dyn TokenRefresher>,
        config: ManagerConfig,
    ) -> Self {
        let binding = refresher.issuer_binding().map(Arc::from);
        Self {
            inner: Arc::new(Inner {
                store,
                refresher,
                config,
                binding,
                keys: RwLock::new(HashMap::new()),
                first: OnceLock::new(),
                next_flight_id: AtomicU64::new(0),
                initial_used: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Supplies fresh tokens for `key`, e.g. after the user logged in again. Ends a
    /// "re-authorization required" state without rebuilding the client.
    ///
    /// The set is given the next generation, saved to the store under its cross-process lock
    /// and published. If saving fails the tokens are still used from memory, the save is
    /// retried in the background, and the error is returned.
    pub async fn set_tokens(&self, key: &TokenKey, tokens: TokenSet) -> Result<(), Error> {
        bearer_header(&tokens)?;
        let slot = self.inner.slot(key);
        let _writer = slot.writer.lock().await;
        let _lock = self.inner.store.lock(key).await.map_err(Error::Store)?;
        let stored = self.inner.store.load(key).await.map_err(Error::Store)?;
        let stored_generation = stored.as_ref().map(TokenSet::generation);
        let memory_generation = slot.state.load().generation();
        let generation = stored_generation
            .max(memory_generation)
            .unwrap_or(0)
            .saturating_add(1);
        let tokens = tokens
            .with_generation(generation)
            .with_issued_for(self.inner.binding.clone());
        let active = ActiveToken::new(tokens, self.inner.config.leeway)?;
        *lock(&slot.backoff) = None;
        let saved = self
            .inner
            .save(&slot.key, &active.tokens, stored_generation)
            .await;
        match saved {
            Ok(SaveOutcome::Saved) => {
                slot.set_unsaved(None);
                slot.publish(active);
                Ok(())
            }
            Ok(SaveOutcome::Conflict { .. }) => Err(Error::Store(StoreError::new(
                StoreErrorKind::Other,
                "the store changed while it was locked; tokens not set",
            ))),
            Err(error) => {
                slot.set_unsaved(Some(Unsaved {
                    generation,
                    parent: stored,
                }));
                slot.publish(active);
                self.inner.retry_save_later(&slot, generation);
                Err(Error::Store(error))
            }
        }
    }

    /// The token set in use for `key`, loading it from the store if needed. No refresh is made.
    pub async fn tokens(&self, key: &TokenKey) -> Result<Option<TokenSet>, Error> {
        let state = self.inner.slot(key).state.load_full();
        match &*state {
            KeyState::Unloaded => self.inner.store.load(key).await.map_err(Error::Store),
            KeyState::Active(token) => Ok(Some(token.tokens.clone())),
            KeyState::Reauthorize { .. } => Ok(None),
        }
    }

    /// Forgets `key`'s tokens in memory and in the store (after logout, for instance). An
    /// in-flight refresh finishes first, so its rotated token cannot reappear; other processes
    /// sharing the store see the key as needing re-authorization.
    pub async fn clear(&self, key: &TokenKey) -> Result<(), Error> {
        let slot = self.inner.slot(key);
        let _writer = slot.writer.lock().await;
        let _lock = self.inner.store.lock(key).await.map_err(Error::Store)?;
        slot.set_unsaved(None);
        self.inner.store.clear(key).await.map_err(Error::Store)?;
        slot.state.store(Arc::new(KeyState::Unloaded));
        Ok(())
    }

    /// Logs `key` out (RFC 7009): waits for an in-flight refresh, revokes the newest refresh
    /// token (or the access token when there is none) at the grant's revocation endpoint,
    /// then forgets the tokens in memory and in the store. They are never sent again.
    ///
    /// If the server cannot revoke now (a transient error such as 503), nothing is forgotten
    /// and the error is returned: the token still exists (RFC 7009 §2.2.1), so call again later.
    /// Without a configured revocation endpoint this is the same as [`clear`](Self::clear).
    pub async fn revoke(&self, key: &TokenKey) -> Result<(), Error> {
        let slot = self.inner.slot(key);
        let _writer = slot.writer.lock().await;
        let _lock = self.inner.store.lock(key).await.map_err(Error::Store)?;
        let stored = self.inner.store.load(key).await.map_err(Error::Store)?;
        let memory = slot.token().map(|token| token.tokens.clone());
        // The newest set: memory when its save is still pending, else the store.
        let unsaved = memory
            .as_ref()
            .filter(|tokens| slot.unsaved(tokens.generation()).is_some());
        let newest = unsaved.cloned().or(stored).or(memory);
        if let Some(tokens) = &newest {
            self.inner.refresher.revoke(key, tokens).await?;
        }
        slot.set_unsaved(None);
        self.inner.store.clear(key).await.map_err(Error::Store)?;
        slot.state.store(Arc::new(KeyState::Unloaded));
        Ok(())
    }

    /// The hot path: the key's current token, if it is loaded and not due (no lock, no await).
    pub(crate) fn current_token(&self, key: &TokenKey) -> Option<PublishedToken> {
        self.inner.current_token(key)
    }

    /// The token to send now: the current one, or a refreshed one when it is due.
    pub(crate) async fn token_for_request(&self, key: &TokenKey) -> Result<PublishedToken, Error> {
        if let Some(token) = self.inner.current_token(key) {
            return Ok(token);
        }
        let slot = self.inner.slot(key);
        let state = slot.state.load_full();
        let current = match &*state {
            KeyState::Active(token) if !token.refresh_due(SystemTime::now()) => {
                return Ok(PublishedToken(state));
            }
            KeyState::Active(_) => Some(PublishedToken(Arc::clone(&state))),
            KeyState::Reauthorize { error, since } => {
                if since.elapsed() < REAUTHORIZATION_RECHECK {
                    return Err(Error::clone(error));
                }
                // Look at the store again (no token call): the user may have logged in
                // through another process. Only one caller swaps the state back.
                let previous = slot
                    .state
                    .compare_and_swap(&state, Arc::new(KeyState::Unloaded));
                if !Arc::ptr_eq(&previous, &state) {
                    return Box::pin(self.token_for_request(key)).await;
                }
                None
            }
            KeyState::Unloaded => None,
        };
        let seen = current.as_ref().map(|token| token.seen());
        match self.inner.fly(&slot, seen, Trigger::Due).await {
            Ok(token) => Ok(token),
            // A proactive refresh that failed for a passing reason does not stop a token that
            // is still valid.
            Err(error) => match current {
                Some(token)
                    if !error.is_reauthorization_required()
                        && !token.tokens.is_expired_at(SystemTime::now()) =>
                {
                    Ok(token)
                }
                _ => Err(error),
            },
        }
    }

    /// The token to replay with after the resource server rejected `rejected`, or `None` when
    /// no other token should be tried (cooldown).
    pub(crate) async fn token_after_rejection(
        &self,
        key: &TokenKey,
        rejected: &ActiveToken,
    ) -> Result<Option<PublishedToken>, Error> {
        let slot = self.inner.slot(key);
        let rejected = rejected.seen();
        if let Some(token) = slot.token() {
            if !token.is(Some(&rejected)) {
                return Ok(Some(token));
            }
        }
        let token = self
            .inner
            .fly(&slot, Some(rejected.clone()), Trigger::Rejected)
            .await?;
        Ok((!token.is(Some(&rejected))).then_some(token))
    }
}

impl Inner {
    /// The hot path: the key's token if it is loaded and not due, read under the map's shared
    /// lock without cloning the slot (one reference count: the state's).
    fn current_token(&self, key: &TokenKey) -> Option<PublishedToken> {
        let usable = |slot: &KeySlot| {
            let state = slot.state.load();
            match &**state {
                KeyState::Active(token) if !token.refresh_due(SystemTime::now()) => {
                    Some(PublishedToken(arc_swap::Guard::into_inner(state)))
                }
                _ => None,
            }
        };
        if let Some(first) = self.first.get() {
            if first.key == *key {
                return usable(first);
            }
        }
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        usable(keys.get(key)?)
    }

    fn slot(&self, key: &TokenKey) -> Arc<KeySlot> {
        if let Some(slot) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Arc::clone(slot);
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let slot = Arc::clone(
            keys.entry(key.clone())
                .or_insert_with(|| Arc::new(KeySlot::new(key.clone()))),
        );
        // Slots are never removed from the map, so the first one stays valid for good.
        self.first.get_or_init(|| Arc::clone(&slot));
        slot
    }
}
