//! Per-key token state and the runs that change it.
//!
//! Each key has a published state, read without locks on the hot path, and a writer lock.
//! Everything that changes a key — a refresh, a login handed over, a logout, a revocation, a
//! background save retry — is a *run*: a detached task that takes the writer lock and the
//! store's cross-process lock, and carries out the steps `src/policy.rs` decides
//! (`runner.rs`). Callers that need a token share one run per key (`flight.rs`), so dropping a
//! caller never cancels a rotation half-way and every waiter gets the same outcome.

mod builder;
mod flight;
mod runner;
mod slot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Instant, SystemTime};

use crate::classify::TokenRejection;
use crate::error::Error;
use crate::event::{emit, Event, EventHook};
use crate::grant::TokenRefresher;
use crate::key::TokenKey;
use crate::log;
use crate::middleware::TokenRefreshMiddleware;
use crate::origin::AllowedOrigin;
use crate::policy::{self, Intent, Rules};
use crate::revision::Revision;
use crate::store::TokenStore;
use crate::token::TokenSet;

pub use builder::TokenManagerBuilder;
use slot::{authorization_header, KeySlot, KeyState};
pub(crate) use slot::{ActiveToken, PublishedToken};

/// Settings of a [`TokenManager`].
pub(crate) struct ManagerConfig {
    pub(crate) leeway: std::time::Duration,
    pub(crate) rejection_cooldown: std::time::Duration,
    pub(crate) on_event: Option<EventHook>,
    /// Tokens for a key whose store never held a record (a first run).
    pub(crate) initial: Option<(TokenKey, TokenSet)>,
    /// Whether stored records bound to no authorization server are used.
    pub(crate) accept_unbound: bool,
    /// Where the middleware sends tokens.
    pub(crate) origins: Arc<[AllowedOrigin]>,
    /// How the middleware tells that a response rejected the token.
    pub(crate) rejection: Arc<dyn TokenRejection>,
    /// The key of requests that name none.
    pub(crate) default_key: TokenKey,
    /// The latest DPoP nonce of each allowed origin.
    #[cfg(feature = "dpop")]
    pub(crate) dpop_nonces: crate::dpop::Nonces,
    /// When keys nobody uses are forgotten.
    pub(crate) eviction: Eviction,
}

/// When the state of keys nobody uses is forgotten, so that a backend acting for many users
/// keeps memory for the active ones only. A forgotten key costs one store read when it is
/// used again; a key with anything unfinished (a refresh, an unsaved rotation, a backoff) is
/// never forgotten.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Eviction {
    /// Keys unused for this long are forgotten.
    pub(crate) idle: Option<std::time::Duration>,
    /// Above this many keys, the least recently used are forgotten (idle or not).
    pub(crate) max_keys: Option<usize>,
}

/// What a run is asked to do.
#[derive(Debug)]
pub(super) struct Order {
    intent: Intent,
    /// The token the caller sent or saw.
    seen: Option<Revision>,
    /// New tokens, for [`Intent::Set`].
    tokens: Option<TokenSet>,
}

impl Order {
    fn new(intent: Intent) -> Self {
        Self {
            intent,
            seen: None,
            tokens: None,
        }
    }
}

struct Inner {
    store: Arc<dyn TokenStore>,
    refresher: Arc<dyn TokenRefresher>,
    config: ManagerConfig,
    rules: Rules,
    keys: RwLock<HashMap<TokenKey, Arc<KeySlot>>>,
    /// The first key ever used, read without the map's lock: most clients use one key, and
    /// the map's reader count is a cache line every request on every core would write.
    first: OnceLock<Arc<KeySlot>>,
    next_flight_id: AtomicU64,
    /// The initial tokens were used, or a record was seen: they are never used again.
    initial_used: AtomicBool,
    /// When keys were last looked over for eviction (Unix seconds).
    last_sweep: AtomicU64,
}

/// Holds every key's tokens and runs their refreshes; the application and the
/// [middleware](Self::middleware) share it.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use reqwest_middleware::ClientBuilder;
/// use reqwest_token_refresh::{RefreshTokenGrant, TokenManager};
///
/// let grant = RefreshTokenGrant::builder("https://auth.example.com/oauth/token", "my-app").build()?;
/// let tokens = TokenManager::builder(grant)
///     .allow_origin("https://api.example.com")?
///     .build();
/// let client = ClientBuilder::new(reqwest::Client::new())
///     .with(tokens.middleware())
///     .build();
/// # Ok(()) }
/// ```
///
/// Use it to supply tokens after a login ([`set_tokens`](Self::set_tokens)), read them, log a
/// key out ([`clear`](Self::clear), [`revoke`](Self::revoke)). Cloning is cheap; clones share
/// everything.
///
/// Every change runs as a task on the Tokio runtime of the call that started it, and finishes
/// even if the caller stops waiting; keep that runtime alive while requests are in flight (a
/// runtime dropped mid-refresh cancels it).
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
    /// Starts configuring a manager that obtains tokens with `refresher` (a
    /// [`RefreshTokenGrant`](crate::RefreshTokenGrant), a
    /// [`ClientCredentialsGrant`](crate::ClientCredentialsGrant), or your own).
    pub fn builder(refresher: impl TokenRefresher) -> TokenManagerBuilder {
        TokenManagerBuilder::new(Arc::new(refresher))
    }

    /// The middleware that sends this manager's tokens to its allowed origins, for
    /// [`ClientBuilder::with`](reqwest_middleware::ClientBuilder::with). Cheap; any number of
    /// clients can use one manager. Without an
    /// [allowed origin](TokenManagerBuilder::allow_origin) it sends no token anywhere (and
    /// logs a warning).
    pub fn middleware(&self) -> TokenRefreshMiddleware {
        let config = &self.inner.config;
        if config.origins.is_empty() {
            log::warn!("token middleware without an allowed origin: it sends no token");
        }
        TokenRefreshMiddleware::new(
            self.clone(),
            Arc::clone(&config.origins),
            Arc::clone(&config.rejection),
            config.default_key.clone(),
        )
    }

    /// The latest DPoP nonce of each allowed origin.
    #[cfg(feature = "dpop")]
    pub(crate) fn dpop_nonces(&self) -> &crate::dpop::Nonces {
        &self.inner.config.dpop_nonces
    }

    pub(crate) fn new(
        store: Arc<dyn TokenStore>,
        refresher: Arc<dyn TokenRefresher>,
        config: ManagerConfig,
    ) -> Self {
        let rules = Rules {
            leeway: config.leeway,
            binding: refresher.issuer_binding().map(Arc::from),
            accept_unbound: config.accept_unbound,
            can_mint: refresher.obtains_without_tokens(),
        };
        Self {
            inner: Arc::new(Inner {
                store,
                refresher,
                config,
                rules,
                keys: RwLock::new(HashMap::new()),
                first: OnceLock::new(),
                next_flight_id: AtomicU64::new(0),
                initial_used: AtomicBool::new(false),
                last_sweep: AtomicU64::new(slot::unix_secs(SystemTime::now())),
            }),
        }
    }

    /// How many keys this manager holds in memory (see
    /// [`evict_idle_keys`](TokenManagerBuilder::evict_idle_keys) and
    /// [`max_keys`](TokenManagerBuilder::max_keys)), for metrics.
    pub fn cached_keys(&self) -> usize {
        self.inner
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Supplies fresh tokens for `key`, e.g. after the user logged in again. Ends a
    /// "re-authorization required" state without rebuilding the client.
    ///
    /// The set gets a new revision and generation, is bound to this middleware's authorization
    /// server, saved to the store under its cross-process lock (replacing whatever was there)
    /// and published. If saving fails the tokens are still used from memory, the save is
    /// retried in the background, and the error is returned.
    pub async fn set_tokens(&self, key: &TokenKey, tokens: TokenSet) -> Result<(), Error> {
        authorization_header(&tokens)?;
        let order = Order {
            tokens: Some(tokens),
            ..Order::new(Intent::Set)
        };
        self.inner.detached(key, order).await.map(drop)
    }

    /// The token set in use for `key`, reading the store if this process has not yet; `None`
    /// when the key has no tokens (never had, or its grant ended). No refresh is made.
    pub async fn tokens(&self, key: &TokenKey) -> Result<Option<TokenSet>, Error> {
        let state = self.inner.slot(key).state();
        match &**state {
            KeyState::Active(token) => Ok(Some(token.tokens().clone())),
            KeyState::Unusable(_) => Ok(None),
            KeyState::Unloaded => match self.inner.store.load(key).await.map_err(Error::Store)? {
                // What a run would adopt; another server's tokens are not ours to show.
                Some(record) if policy::refusal_to_hold(&record, &self.inner.rules).is_none() => {
                    Ok(record.tokens().cloned())
                }
                _ => Ok(None),
            },
        }
    }

    /// Logs `key` out without telling the authorization server: waits for an in-flight
    /// refresh, then records in the store that the key needs a new login (so no process, now
    /// or in a later run, uses its tokens or falls back to initial tokens). Tokens issued for
    /// another server are left alone ([`Error::ForeignTokens`]).
    pub async fn clear(&self, key: &TokenKey) -> Result<(), Error> {
        self.inner
            .detached(key, Order::new(Intent::Clear))
            .await
            .map(drop)
    }

    /// Logs `key` out (RFC 7009): waits for an in-flight refresh, revokes the newest refresh
    /// token (or the access token when there is none) at the grant's revocation endpoint,
    /// then records in the store that the key needs a new login. They are never sent again.
    ///
    /// Once the server has answered, the logout completes even if the caller stops waiting. If
    /// the server cannot revoke now (a transient error such as 503), nothing is forgotten and
    /// the error is returned: the token still exists (RFC 7009 §2.2.1), so call again later.
    /// Tokens issued for another server are neither sent nor forgotten
    /// ([`Error::ForeignTokens`]). Without a configured revocation endpoint this is the same as
    /// [`clear`](Self::clear).
    pub async fn revoke(&self, key: &TokenKey) -> Result<(), Error> {
        self.inner
            .detached(key, Order::new(Intent::Revoke))
            .await
            .map(drop)
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
        let (now, wall_now) = (Instant::now(), SystemTime::now());
        let current = match &**slot.state() {
            KeyState::Active(token)
                if !token.refresh_due(wall_now)
                    || policy::use_while_held_back(
                        token.tokens(),
                        slot.held_back_until(),
                        now,
                        wall_now,
                    ) =>
            {
                return slot.token().ok_or(Error::RefreshAborted);
            }
            KeyState::Active(_) => slot.token(),
            KeyState::Unusable(unusable) if !policy::recheck_due(unusable.since, now) => {
                return Err(unusable.error.clone());
            }
            _ => None,
        };
        let seen = current.as_ref().map(|token| token.revision().clone());
        self.inner
            .fly_patiently(&slot, seen, Intent::Send, current.as_ref())
            .await
    }

    /// The token to replay with after the resource server rejected `rejected`, or `None` when
    /// no other token should be tried (cooldown).
    pub(crate) async fn token_after_rejection(
        &self,
        key: &TokenKey,
        rejected: &ActiveToken,
    ) -> Result<Option<PublishedToken>, Error> {
        let slot = self.inner.slot(key);
        let rejected = rejected.revision().clone();
        let token = self
            .inner
            .fly_patiently(&slot, Some(rejected.clone()), Intent::Replace, None)
            .await?;
        Ok((token.revision() != &rejected).then_some(token))
    }
}

impl Inner {
    /// The hot path: the key's token if it is loaded and not due, read under the map's shared
    /// lock without cloning the slot (one reference count: the state's).
    fn current_token(&self, key: &TokenKey) -> Option<PublishedToken> {
        let usable = |slot: &KeySlot| {
            let state = slot.state();
            let now = SystemTime::now();
            match &**state {
                KeyState::Active(token) if !token.refresh_due(now) => {
                    slot.touch(now);
                    PublishedToken::from_state(arc_swap::Guard::into_inner(state))
                }
                _ => None,
            }
        };
        if let Some(first) = self.first.get() {
            if first.key == *key {
                return usable(first);
            }
        }
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        usable(keys.get(key)?)
    }

    fn slot(&self, key: &TokenKey) -> Arc<KeySlot> {
        if let Some(slot) = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
        {
            slot.touch(SystemTime::now());
            return Arc::clone(slot);
        }
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !keys.contains_key(key) {
            self.evict(&mut keys);
        }
        let slot = Arc::clone(
            keys.entry(key.clone())
                .or_insert_with(|| Arc::new(KeySlot::new(key.clone()))),
        );
        slot.touch(SystemTime::now());
        // The first slot is never evicted, so it stays the key's only slot for good.
        self.first.get_or_init(|| Arc::clone(&slot));
        slot
    }

    /// Before a new key is added: forgets the keys idle for longer than the idle time (looked
    /// over at most every quarter of it), and above the key limit the least recently used.
    /// Only keys with nothing unfinished go ([`KeySlot::is_evictable`]); never the first key,
    /// whose slot `first` also holds (it is read without the map's lock).
    fn evict(&self, keys: &mut HashMap<TokenKey, Arc<KeySlot>>) {
        let Eviction { idle, max_keys } = self.config.eviction;
        let now = SystemTime::now();
        let now_secs = slot::unix_secs(now);
        let instant = Instant::now();
        if let Some(idle) = idle {
            let every = (idle.as_secs() / 4).max(1);
            let last = self.last_sweep.load(std::sync::atomic::Ordering::Relaxed);
            if now_secs.saturating_sub(last) >= every {
                self.last_sweep
                    .store(now_secs, std::sync::atomic::Ordering::Relaxed);
                let cutoff = now_secs.saturating_sub(idle.as_secs());
                keys.retain(|_, slot| slot.last_used() > cutoff || !slot.is_evictable(instant));
            }
        }
        let Some(max_keys) = max_keys else { return };
        if keys.len() < max_keys {
            return;
        }
        // Down to nine tenths of the limit (at least one below it) at once, so that the scan
        // is not made for every new key.
        let target = max_keys.saturating_sub((max_keys / 10).max(1));
        let mut candidates: Vec<(u64, TokenKey)> = keys
            .iter()
            .filter(|(_, slot)| slot.is_evictable(instant))
            .map(|(key, slot)| (slot.last_used(), key.clone()))
            .collect();
        let excess = keys.len().saturating_sub(target).min(candidates.len());
        if excess == 0 {
            return;
        }
        candidates.select_nth_unstable_by_key(excess - 1, |(used, _)| *used);
        for (_, key) in candidates.iter().take(excess) {
            keys.remove(key);
        }
        log::debug!(evicted = excess, kept = keys.len(), "idle keys forgotten");
    }

    /// Joins or starts the key's flight. If it fails, `current` (a due token) is used while it
    /// is valid; else, if refreshes are held back for a short while, waits for the next attempt
    /// once instead of failing at once.
    async fn fly_patiently(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        seen: Option<Revision>,
        intent: Intent,
        current: Option<&PublishedToken>,
    ) -> Result<PublishedToken, Error> {
        let error = match self.fly(slot, seen.clone(), intent).await {
            Ok(token) => return Ok(token),
            Err(error) => error,
        };
        if let Some(current) = current {
            if policy::send_anyway(current.tokens(), &error, SystemTime::now()) {
                return Ok(current.clone());
            }
        }
        match policy::wait_for_retry(&error) {
            Some(pause) => {
                tokio::time::sleep(pause).await;
                self.fly(slot, seen, intent).await
            }
            None => Err(error),
        }
    }

    /// Runs `order` for `key` in a task of its own, which finishes even if the caller stops
    /// waiting (a revocation the server accepted is always followed by the logout).
    async fn detached(
        self: &Arc<Self>,
        key: &TokenKey,
        order: Order,
    ) -> Result<Option<PublishedToken>, Error> {
        let inner = Arc::clone(self);
        let slot = self.slot(key);
        tokio::spawn(async move { inner.run(&slot, order).await })
            .await
            .unwrap_or(Err(Error::RefreshAborted))
    }

    fn emit(&self, event: Event) {
        emit(self.config.on_event.as_ref(), event);
    }
}
