//! Configuring a [`TokenManager`].

use std::sync::Arc;
use std::time::Duration;

use super::{Eviction, ManagerConfig, TokenManager};

/// Keys unused this long are forgotten by default.
const DEFAULT_IDLE_EVICTION: Duration = Duration::from_secs(30 * 60);
use crate::classify::{DefaultTokenRejection, TokenRejection};
use crate::error::ConfigError;
use crate::event::{Event, EventHook};
use crate::grant::TokenRefresher;
use crate::key::TokenKey;
use crate::origin::AllowedOrigin;
use crate::store::{MemoryTokenStore, TokenStore};
use crate::token::TokenSet;

/// Configures a [`TokenManager`]; made by [`TokenManager::builder`].
///
/// Every setting is checked where it is given: [`allow_origin`](Self::allow_origin) is the only
/// one that can fail, and [`build`](Self::build) cannot.
#[must_use]
pub struct TokenManagerBuilder {
    refresher: Arc<dyn TokenRefresher>,
    store: Option<Arc<dyn TokenStore>>,
    origins: Vec<AllowedOrigin>,
    rejection: Arc<dyn TokenRejection>,
    default_key: TokenKey,
    initial_tokens: Option<TokenSet>,
    accept_unbound: bool,
    leeway: Duration,
    rejection_cooldown: Duration,
    on_event: Option<EventHook>,
    eviction: Eviction,
}

impl std::fmt::Debug for TokenManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManagerBuilder")
            .field("origins", &self.origins)
            .field("default_key", &self.default_key)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl TokenManagerBuilder {
    pub(super) fn new(refresher: Arc<dyn TokenRefresher>) -> Self {
        Self {
            refresher,
            store: None,
            origins: Vec::new(),
            rejection: Arc::new(DefaultTokenRejection),
            default_key: TokenKey::default(),
            initial_tokens: None,
            accept_unbound: false,
            leeway: Duration::from_secs(60),
            rejection_cooldown: Duration::from_secs(10),
            on_event: None,
            eviction: Eviction {
                idle: Some(DEFAULT_IDLE_EVICTION),
                max_keys: None,
            },
        }
    }

    /// Allows sending tokens to the origin of `url` (`https://host[:port]`; a path is
    /// ignored). Requests to other origins pass through untouched, so at least one is needed
    /// for the middleware to send tokens. Plain `http` is refused unless the grant allows it to
    /// loopback hosts (`danger_allow_http_loopback`).
    pub fn allow_origin(mut self, url: &str) -> Result<Self, ConfigError> {
        let allow_http_loopback = self.refresher.allows_http_loopback();
        self.origins
            .push(AllowedOrigin::parse(url, allow_http_loopback)?);
        Ok(self)
    }

    /// Where token records are persisted (default: a [`MemoryTokenStore`] of its own). Pass an
    /// `Arc` to share one store with other managers or your own code.
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Tokens to start the default key with on a first run: used only if the store never held
    /// a record for the key. Once they were rotated, or the key was logged out or its grant
    /// died, the store remembers it, and they are never used again (their refresh token is
    /// consumed; servers with reuse detection would revoke the grant).
    pub fn initial_tokens(mut self, tokens: TokenSet) -> Self {
        self.initial_tokens = Some(tokens);
        self
    }

    /// Uses stored token sets that record no authorization server (written to the store by
    /// other means, with no [`TokenSet::with_issued_for`]), binding them to this manager's
    /// server on their next save. Off by default: such a set's refresh token could belong to
    /// any server, and sending it to the wrong one leaks it. Turn it on only when nothing but
    /// your own tools write to the store.
    pub fn accept_unbound_tokens(mut self) -> Self {
        self.accept_unbound = true;
        self
    }

    /// The key used when a request carries no [`TokenKey`] extension (default: `default`).
    pub fn default_key(mut self, key: TokenKey) -> Self {
        self.default_key = key;
        self
    }

    /// How long before expiry a token is refreshed (default 60 s; never more than half the
    /// token's lifetime).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// After a refresh caused by a rejected token, how long a key ignores further rejections of
    /// its new token instead of refreshing again (default 10 s). Bounds the token calls a
    /// resource server that rejects every token can cause.
    pub fn rejection_cooldown(mut self, cooldown: Duration) -> Self {
        self.rejection_cooldown = cooldown;
        self
    }

    /// How to tell that a response rejected the token (default: [`DefaultTokenRejection`]).
    pub fn token_rejection(mut self, rejection: impl TokenRejection) -> Self {
        self.rejection = Arc::new(rejection);
        self
    }

    /// Calls `hook` for every [`Event`] (refreshes, rotations persisted or not, re-authorization
    /// required). Runs inline: keep it short.
    pub fn on_event(mut self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(hook));
        self
    }

    /// Forgets the in-memory state of keys unused for `idle` (default 30 minutes; `None`
    /// keeps every key for the manager's life). The tokens stay in the store: the next
    /// request for such a key reads it again. Keys with a refresh in progress, a rotation not
    /// yet saved, or a backoff running are kept.
    pub fn evict_idle_keys(mut self, idle: Option<Duration>) -> Self {
        self.eviction.idle = idle;
        self
    }

    /// Keeps at most about `max_keys` keys in memory: above it, the least recently used keys
    /// (with nothing unfinished) are forgotten, down to nine tenths of the limit. Default: no
    /// limit beyond [`evict_idle_keys`](Self::evict_idle_keys).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.eviction.max_keys = Some(max_keys.max(1));
        self
    }

    /// Builds the manager.
    pub fn build(self) -> TokenManager {
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryTokenStore::new()));
        let config = ManagerConfig {
            leeway: self.leeway,
            rejection_cooldown: self.rejection_cooldown,
            on_event: self.on_event,
            initial: self
                .initial_tokens
                .map(|tokens| (self.default_key.clone(), tokens)),
            accept_unbound: self.accept_unbound,
            origins: self.origins.into(),
            rejection: self.rejection,
            default_key: self.default_key,
            #[cfg(feature = "dpop")]
            dpop_nonces: crate::dpop::Nonces::default(),
            eviction: self.eviction,
        };
        TokenManager::new(store, self.refresher, config)
    }
}
