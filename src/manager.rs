//! Per-key token state and the one refresh that concurrent callers share.
//!
//! Each key has a published state (read without locks on the hot path) and at most one
//! *flight*: a detached task that takes the store's cross-process lock, reloads, adopts or
//! refreshes, persists, and only then publishes. Callers await a shared handle to that task, so
//! dropping a caller never cancels a rotation half-way, and every waiter gets the same outcome.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::HeaderValue;

use crate::error::{Error, ReauthorizationReason};
use crate::event::{emit, Event, EventHook};
use crate::grant::{is_b64token, TokenRefresher};
use crate::key::TokenKey;
use crate::store::{SaveOutcome, StoreError, TokenStore};
use crate::token::TokenSet;

/// First and longest pause between attempts to save tokens whose save failed.
const SAVE_RETRY_FIRST_DELAY: Duration = Duration::from_millis(500);
const SAVE_RETRY_MAX_DELAY: Duration = Duration::from_secs(30);

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

/// What a key's callers see.
#[derive(Debug)]
enum KeyState {
    /// Not read from the store yet.
    Unloaded,
    /// Tokens in use.
    Active(Arc<ActiveToken>),
    /// The grant is gone; fail fast until new tokens are supplied.
    Reauthorize(Error),
}

impl KeyState {
    fn generation(&self) -> Option<u64> {
        match self {
            KeyState::Active(token) => Some(token.generation()),
            _ => None,
        }
    }
}

/// Why a flight was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The key is unloaded, or its token is due: load, adopt or refresh as needed.
    Due,
    /// The resource server rejected generation `seen`: get any other token.
    Rejected,
}

type Outcome = Result<Arc<ActiveToken>, Error>;

struct Flight {
    id: u64,
    trigger: Trigger,
    outcome: Shared<BoxFuture<'static, Outcome>>,
}

struct KeySlot {
    key: TokenKey,
    state: ArcSwap<KeyState>,
    /// Serializes everything that writes this key (flights, `set_tokens`, `clear`, save
    /// retries) inside this process; the store's lock does the same across processes.
    writer: tokio::sync::Mutex<()>,
    flight: Mutex<Option<Flight>>,
    last_rejection_refresh: Mutex<Option<Instant>>,
}

impl KeySlot {
    fn flight(&self) -> std::sync::MutexGuard<'_, Option<Flight>> {
        // Critical sections only swap an Option; a poisoned lock holds a consistent value.
        self.flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Settings of a [`TokenManager`].
#[derive(Clone)]
pub(crate) struct ManagerConfig {
    pub(crate) leeway: Duration,
    pub(crate) rejection_cooldown: Duration,
    pub(crate) on_event: Option<EventHook>,
    /// Tokens for a key whose store record is empty (a first run).
    pub(crate) initial: Option<(TokenKey, TokenSet)>,
}

struct Inner {
    store: Arc<dyn TokenStore>,
    refresher: Arc<dyn TokenRefresher>,
    config: ManagerConfig,
    keys: RwLock<HashMap<TokenKey, Arc<KeySlot>>>,
    next_flight_id: AtomicU64,
}

/// Holds every key's tokens and runs their refreshes; shared by the middleware and the
/// application.
///
/// Get it from [`TokenRefreshMiddleware::manager`](crate::TokenRefreshMiddleware::manager) to
/// supply tokens after a login ([`set_tokens`](Self::set_tokens)), read them, or forget them.
/// Cloning is cheap; clones share everything.
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
        Self {
            inner: Arc::new(Inner {
                store,
                refresher,
                config,
                keys: RwLock::new(HashMap::new()),
                next_flight_id: AtomicU64::new(0),
            }),
        }
    }

    /// Supplies fresh tokens for `key`, e.g. after the user logged in again. Clears a
    /// "re-authorization required" state without rebuilding the client.
    ///
    /// The set is given the next generation, saved to the store under its cross-process lock
    /// and published. If saving fails the tokens are still used from memory and the error is
    /// returned.
    pub async fn set_tokens(&self, key: &TokenKey, tokens: TokenSet) -> Result<(), Error> {
        bearer_header(&tokens)?;
        let slot = self.inner.slot(key);
        let _writer = slot.writer.lock().await;
        let _lock = self.inner.store.lock(key).await.map_err(Error::Store)?;
        let stored = self.inner.store.load(key).await.map_err(Error::Store)?;
        let stored_generation = stored.as_ref().map(TokenSet::generation);
        let memory_generation = slot.state.load().generation();
        let generation = stored_generation.max(memory_generation).unwrap_or(0) + 1;
        let tokens = tokens.with_generation(generation);
        let active = Arc::new(ActiveToken::new(tokens, self.inner.config.leeway)?);
        let saved = self
            .inner
            .save(&slot.key, &active.tokens, stored_generation)
            .await;
        slot.state.store(Arc::new(KeyState::Active(active)));
        match saved {
            Ok(SaveOutcome::Saved) => Ok(()),
            Ok(SaveOutcome::Conflict { .. }) => Err(Error::Store(StoreError::new(
                crate::StoreErrorKind::Other,
                "the store changed while it was locked",
            ))),
            Err(error) => Err(Error::Store(error)),
        }
    }

    /// The token set in use for `key`, loading it from the store if needed. No refresh is made.
    pub async fn tokens(&self, key: &TokenKey) -> Result<Option<TokenSet>, Error> {
        let slot = self.inner.slot(key);
        if let KeyState::Unloaded = **slot.state.load() {
            let stored = self.inner.store.load(key).await.map_err(Error::Store)?;
            return Ok(stored);
        }
        Ok(match &**slot.state.load() {
            KeyState::Active(token) => Some(token.tokens.clone()),
            _ => None,
        })
    }

    /// Forgets `key`'s tokens in memory and in the store (after logout, for instance).
    /// An in-flight refresh finishes first, so its rotated token cannot reappear.
    pub async fn clear(&self, key: &TokenKey) -> Result<(), Error> {
        let slot = self.inner.slot(key);
        let _writer = slot.writer.lock().await;
        let _lock = self.inner.store.lock(key).await.map_err(Error::Store)?;
        slot.state.store(Arc::new(KeyState::Unloaded));
        self.inner.store.clear(key).await.map_err(Error::Store)
    }

    /// The token to send now: the current one, or a refreshed one when it is due.
    pub(crate) async fn token_for_request(&self, key: &TokenKey) -> Outcome {
        let slot = self.inner.slot(key);
        let state = slot.state.load_full();
        let current = match &*state {
            KeyState::Active(token) if !token.refresh_due(SystemTime::now()) => {
                return Ok(Arc::clone(token));
            }
            KeyState::Active(token) => Some(Arc::clone(token)),
            KeyState::Reauthorize(error) => return Err(error.clone()),
            KeyState::Unloaded => None,
        };
        let seen = current.as_ref().map(|token| token.generation());
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

    /// The token to replay with after the resource server rejected generation `rejected`, or
    /// `None` when no other token should be tried (cooldown).
    pub(crate) async fn token_after_rejection(
        &self,
        key: &TokenKey,
        rejected: u64,
    ) -> Result<Option<Arc<ActiveToken>>, Error> {
        let slot = self.inner.slot(key);
        if let KeyState::Active(token) = &**slot.state.load() {
            if token.generation() != rejected {
                return Ok(Some(Arc::clone(token)));
            }
        }
        let token = self
            .inner
            .fly(&slot, Some(rejected), Trigger::Rejected)
            .await?;
        Ok((token.generation() != rejected).then_some(token))
    }
}

impl Inner {
    fn slot(&self, key: &TokenKey) -> Arc<KeySlot> {
        if let Some(slot) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Arc::clone(slot);
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(keys.entry(key.clone()).or_insert_with(|| {
            Arc::new(KeySlot {
                key: key.clone(),
                state: ArcSwap::from_pointee(KeyState::Unloaded),
                writer: tokio::sync::Mutex::new(()),
                flight: Mutex::new(None),
                last_rejection_refresh: Mutex::new(None),
            })
        }))
    }

    /// Joins the key's flight, or starts one. `seen` is the generation the caller holds.
    async fn fly(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        seen: Option<u64>,
        trigger: Trigger,
    ) -> Outcome {
        // Two rounds at most: a flight we joined may have been started for a weaker reason
        // (a load, a due token) and leave the rejected generation in place.
        let mut last = None;
        for _ in 0..2 {
            let (outcome, answers_us) = {
                let mut flight = slot.flight();
                // Re-check under the flight lock: a flight that just finished published first.
                match &**slot.state.load() {
                    KeyState::Active(token) if Some(token.generation()) != seen => {
                        return Ok(Arc::clone(token))
                    }
                    KeyState::Reauthorize(error) => return Err(error.clone()),
                    _ => {}
                }
                match &*flight {
                    Some(running) => (
                        running.outcome.clone(),
                        running.trigger == trigger || trigger == Trigger::Due,
                    ),
                    None => {
                        let started = self.start_flight(slot, seen, trigger);
                        let outcome = started.outcome.clone();
                        *flight = Some(started);
                        (outcome, true)
                    }
                }
            };
            let token = outcome.await?;
            if answers_us || Some(token.generation()) != seen {
                return Ok(token);
            }
            last = Some(token);
        }
        last.ok_or(Error::RefreshAborted)
    }

    /// Whether a rejection-triggered refresh happened less than the cooldown ago; if not, the
    /// caller is about to start one and the clock restarts.
    fn in_rejection_cooldown(&self, slot: &KeySlot) -> bool {
        let mut last = slot
            .last_rejection_refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < self.config.rejection_cooldown) {
            tracing::debug!(key = %slot.key, "token rejected again within the cooldown; no refresh");
            return true;
        }
        *last = Some(Instant::now());
        false
    }

    fn start_flight(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        seen: Option<u64>,
        trigger: Trigger,
    ) -> Flight {
        let id = self.next_flight_id.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(self);
        let task_slot = Arc::clone(slot);
        let task = tokio::spawn(async move {
            let _clear = ClearFlight {
                slot: Arc::clone(&task_slot),
                id,
            };
            inner.run_flight(&task_slot, seen, trigger).await
        });
        let outcome = async move { task.await.unwrap_or(Err(Error::RefreshAborted)) }
            .boxed()
            .shared();
        Flight {
            id,
            trigger,
            outcome,
        }
    }

    /// The body of a flight. Runs detached; publishes before it returns.
    async fn run_flight(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        seen: Option<u64>,
        trigger: Trigger,
    ) -> Outcome {
        let key = &slot.key;
        let _writer = slot.writer.lock().await;
        let _lock = self.store.lock(key).await.map_err(Error::Store)?;
        let stored = self.store.load(key).await.map_err(Error::Store)?;
        let memory = match &**slot.state.load() {
            KeyState::Active(token) => Some(Arc::clone(token)),
            _ => None,
        };
        let stored_generation = stored.as_ref().map(TokenSet::generation);
        let memory_generation = memory.as_ref().map(|token| token.generation());

        // Adopt what another process stored if it is newer than what we hold.
        let newer_stored = stored.filter(|stored| Some(stored.generation()) > memory_generation);
        let base = match (newer_stored, memory) {
            (Some(stored), _) => {
                let adopted = Arc::new(ActiveToken::new(stored, self.config.leeway)?);
                if memory_generation.is_some() {
                    self.emit(Event::Adopted {
                        key: key.clone(),
                        generation: adopted.generation(),
                    });
                }
                slot.state
                    .store(Arc::new(KeyState::Active(Arc::clone(&adopted))));
                let still_good =
                    Some(adopted.generation()) != seen && !adopted.refresh_due(SystemTime::now());
                if still_good {
                    return Ok(adopted);
                }
                adopted
            }
            (_, Some(memory)) => {
                if stored_generation < memory_generation {
                    // An earlier save failed; try again before going on.
                    self.persist_or_retry(slot, &memory, stored_generation)
                        .await;
                }
                memory
            }
            (None, None) => match self.initial_tokens(key) {
                Some(initial) => {
                    let initial = Arc::new(ActiveToken::new(initial, self.config.leeway)?);
                    self.persist_or_retry(slot, &initial, None).await;
                    slot.state
                        .store(Arc::new(KeyState::Active(Arc::clone(&initial))));
                    if trigger == Trigger::Due && !initial.refresh_due(SystemTime::now()) {
                        return Ok(initial);
                    }
                    initial
                }
                None => return Err(self.reauthorize(slot, ReauthorizationReason::NoTokens)),
            },
        };
        let needs_refresh = match trigger {
            // D10: a token that replaced a rejected one less than the cooldown ago and is
            // rejected again means the resource server takes no token; do not refresh. (The
            // store was re-read above, so another process's newer token is still adopted.)
            Trigger::Rejected => {
                Some(base.generation()) == seen && !self.in_rejection_cooldown(slot)
            }
            Trigger::Due => base.refresh_due(SystemTime::now()),
        };
        if !needs_refresh {
            return Ok(base);
        }
        self.refresh(slot, &base).await
    }

    /// Calls the token endpoint, persists, publishes.
    async fn refresh(self: &Arc<Self>, slot: &Arc<KeySlot>, base: &ActiveToken) -> Outcome {
        let key = &slot.key;
        let sent_at = SystemTime::now();
        let started = Instant::now();
        let response = match self.refresher.refresh(key, Some(&base.tokens)).await {
            Ok(response) => response,
            Err(error) => {
                if error.is_reauthorization_required() {
                    // Another process may have rotated past us (a lease that expired, a store
                    // without a lock): prefer its newer tokens to declaring the grant dead.
                    if let Ok(Some(stored)) = self.store.load(key).await {
                        if stored.generation() > base.generation() {
                            let adopted = Arc::new(ActiveToken::new(stored, self.config.leeway)?);
                            self.emit(Event::Adopted {
                                key: key.clone(),
                                generation: adopted.generation(),
                            });
                            slot.state
                                .store(Arc::new(KeyState::Active(Arc::clone(&adopted))));
                            return Ok(adopted);
                        }
                    }
                    // The refresh token is dead: forget it everywhere.
                    if let Err(store_error) = self.store.clear(key).await {
                        tracing::warn!(%key, error = %store_error, "could not clear a dead grant");
                    }
                    slot.state
                        .store(Arc::new(KeyState::Reauthorize(error.clone())));
                    self.emit(Event::ReauthorizationRequired { key: key.clone() });
                } else {
                    self.emit(Event::RefreshFailed {
                        key: key.clone(),
                        error: error.clone(),
                    });
                }
                return Err(error);
            }
        };
        let rotated = response.refresh_token.is_some();
        let next = base.tokens.next(response, sent_at);
        let next = Arc::new(ActiveToken::new(next, self.config.leeway)?);
        self.emit(Event::Refreshed {
            key: key.clone(),
            generation: next.generation(),
            rotated,
            duration: started.elapsed(),
        });
        // Persist before publish: waiters are released only after the save was attempted.
        let published = match self
            .persist_or_retry(slot, &next, Some(base.generation()))
            .await
        {
            Some(newer) => Arc::new(ActiveToken::new(newer, self.config.leeway)?),
            None => next,
        };
        slot.state
            .store(Arc::new(KeyState::Active(Arc::clone(&published))));
        Ok(published)
    }

    /// Saves `token` expecting generation `expected` in the store. Returns a newer stored set
    /// to adopt when the conditional write lost to one. When the save fails, the tokens stay
    /// authoritative in memory and a background task retries until it succeeds or the key
    /// moves on.
    async fn persist_or_retry(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        token: &ActiveToken,
        expected: Option<u64>,
    ) -> Option<TokenSet> {
        let key = &slot.key;
        let tokens = &token.tokens;
        match self.save(key, tokens, expected).await {
            Ok(SaveOutcome::Saved) => None,
            Ok(SaveOutcome::Conflict {
                current: Some(current),
            }) if current.generation() >= tokens.generation() => {
                self.emit(Event::Adopted {
                    key: key.clone(),
                    generation: current.generation(),
                });
                Some(current)
            }
            Ok(SaveOutcome::Conflict { .. }) => {
                let error = StoreError::new(
                    crate::StoreErrorKind::Other,
                    "the stored record changed under the lock; not overwritten",
                );
                self.emit(Event::PersistFailed {
                    key: key.clone(),
                    generation: tokens.generation(),
                    error,
                });
                None
            }
            Err(_) => {
                self.retry_save_later(slot, tokens.generation());
                None
            }
        }
    }

    /// Retries saving the key's in-memory tokens with backoff while they are newer than the
    /// store's.
    fn retry_save_later(self: &Arc<Self>, slot: &Arc<KeySlot>, generation: u64) {
        let inner = Arc::clone(self);
        let slot = Arc::clone(slot);
        tokio::spawn(async move {
            let mut delay = SAVE_RETRY_FIRST_DELAY;
            loop {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(SAVE_RETRY_MAX_DELAY);
                let current = match &**slot.state.load() {
                    KeyState::Active(token) if token.generation() == generation => {
                        Arc::clone(token)
                    }
                    // A newer flight owns persistence now.
                    _ => return,
                };
                let _writer = slot.writer.lock().await;
                let Ok(_lock) = inner.store.lock(&slot.key).await else {
                    continue;
                };
                let stored = match inner.store.load(&slot.key).await {
                    Ok(stored) => stored.map(|tokens| tokens.generation()),
                    Err(_) => continue,
                };
                if stored >= Some(generation) {
                    return;
                }
                match inner.save(&slot.key, &current.tokens, stored).await {
                    Ok(SaveOutcome::Saved) => return,
                    Ok(SaveOutcome::Conflict { .. }) | Err(_) => continue,
                }
            }
        });
    }

    /// One conditional save, with its events.
    async fn save(
        &self,
        key: &TokenKey,
        tokens: &TokenSet,
        expected: Option<u64>,
    ) -> Result<SaveOutcome, StoreError> {
        let outcome = self.store.save(key, tokens, expected).await;
        match &outcome {
            Ok(SaveOutcome::Saved) => self.emit(Event::Persisted {
                key: key.clone(),
                generation: tokens.generation(),
            }),
            Err(error) => self.emit(Event::PersistFailed {
                key: key.clone(),
                generation: tokens.generation(),
                error: error.clone(),
            }),
            Ok(SaveOutcome::Conflict { .. }) => {}
        }
        outcome
    }

    fn initial_tokens(&self, key: &TokenKey) -> Option<TokenSet> {
        let (initial_key, tokens) = self.config.initial.as_ref()?;
        (initial_key == key).then(|| tokens.clone().with_generation(1))
    }

    fn reauthorize(&self, slot: &KeySlot, reason: ReauthorizationReason) -> Error {
        let error = Error::ReauthorizationRequired {
            key: slot.key.clone(),
            reason,
        };
        slot.state
            .store(Arc::new(KeyState::Reauthorize(error.clone())));
        self.emit(Event::ReauthorizationRequired {
            key: slot.key.clone(),
        });
        error
    }

    fn emit(&self, event: Event) {
        emit(self.config.on_event.as_ref(), event);
    }
}

/// Removes a finished flight from its slot, also when the task panicked.
struct ClearFlight {
    slot: Arc<KeySlot>,
    id: u64,
}

impl Drop for ClearFlight {
    fn drop(&mut self) {
        let mut flight = self.slot.flight();
        if flight.as_ref().is_some_and(|f| f.id == self.id) {
            *flight = None;
        }
    }
}
