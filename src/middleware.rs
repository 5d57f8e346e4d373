//! The `reqwest-middleware` integration: inject → send → classify → refresh once → replay once.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::Extensions;
use reqwest::{Request, Response, Url};
use reqwest_middleware::{Middleware, Next};

use crate::classify::{DefaultTokenRejection, TokenRejection};
use crate::error::ConfigError;
use crate::event::{Event, EventHook};
use crate::grant::endpoint::{check_secure, redact_userinfo};
use crate::grant::TokenRefresher;
use crate::key::TokenKey;
use crate::log;
use crate::manager::{ActiveToken, ManagerConfig, PublishedToken, TokenManager};
use crate::origin::AllowedOrigin;
use crate::store::{MemoryTokenStore, TokenStore};
use crate::token::TokenSet;

/// Adds `Authorization: Bearer <token>` to requests for the allowed origins and keeps the token
/// fresh. See the [crate documentation](crate) for the whole story.
pub struct TokenRefreshMiddleware {
    manager: TokenManager,
    origins: Vec<AllowedOrigin>,
    rejection: Arc<dyn TokenRejection>,
    default_key: TokenKey,
}

impl TokenRefreshMiddleware {
    /// Starts configuring a middleware that obtains tokens with `refresher`.
    pub fn builder(refresher: impl TokenRefresher) -> TokenRefreshMiddlewareBuilder {
        TokenRefreshMiddlewareBuilder {
            refresher: Arc::new(refresher),
            store: None,
            origins: Vec::new(),
            rejection: Arc::new(DefaultTokenRejection),
            default_key: TokenKey::default(),
            initial_tokens: None,
            accept_unbound: false,
            leeway: Duration::from_secs(60),
            rejection_cooldown: Duration::from_secs(10),
            on_event: None,
            allow_http_loopback: false,
        }
    }

    /// The manager holding the tokens: supply new ones after a login, read or clear them.
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }

    /// The index of the allowed origin `url` belongs to, if any.
    fn allowed_origin(&self, url: &Url) -> Option<usize> {
        self.origins.iter().position(|origin| origin.contains(url))
    }
}

impl std::fmt::Debug for TokenRefreshMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRefreshMiddleware")
            .field(
                "origins",
                &self
                    .origins
                    .iter()
                    .map(AllowedOrigin::as_str)
                    .collect::<Vec<_>>(),
            )
            .field("default_key", &self.default_key)
            .field("manager", &self.manager)
            .finish_non_exhaustive()
    }
}

// Written out rather than with `#[async_trait]`, which would box one future for every request,
// holding every local any path keeps across an `.await`. Here a request to another origin is
// passed on without a box of ours, and a request with a current token gets one small box
// (`send`); waiting for a refresh or replaying after a rejection are boxed on their own. The
// token is therefore picked when `handle` is called, not when its future is first polled; a
// token that expires in between is answered with a 401, and the replay then uses a fresh one.
impl Middleware for TokenRefreshMiddleware {
    fn handle<'middleware, 'extensions, 'next, 'future>(
        &'middleware self,
        request: Request,
        extensions: &'extensions mut Extensions,
        next: Next<'next>,
    ) -> BoxFuture<'future, reqwest_middleware::Result<Response>>
    where
        'middleware: 'future,
        'extensions: 'future,
        'next: 'future,
        Self: 'future,
    {
        // Tokens go to the allowed origins only; a caller's own `Authorization` is respected
        // (never two credentials in one request, RFC 6750 §2).
        let origin = match self.allowed_origin(request.url()) {
            Some(origin) if !request.headers().contains_key(AUTHORIZATION) => origin,
            _ => return next.run(request, extensions),
        };
        // Borrowed for the default key: no reference count shared by every request to bump.
        let key = match extensions.get::<TokenKey>() {
            Some(key) => Cow::Owned(key.clone()),
            None => Cow::Borrowed(&self.default_key),
        };
        match self.manager.current_token(&key) {
            Some(token) => self.send(request, origin, key, token, extensions, next),
            None => Box::pin(async move {
                let token = self
                    .manager
                    .token_for_request(&key)
                    .await
                    .map_err(reqwest_middleware::Error::middleware)?;
                self.send(request, origin, key, token, extensions, next)
                    .await
            }),
        }
    }
}

impl TokenRefreshMiddleware {
    /// Sends `request` to the allowed origin `origin` with `token`; replays it once if the
    /// response rejects the token.
    fn send<'a>(
        &'a self,
        mut request: Request,
        origin: usize,
        key: Cow<'a, TokenKey>,
        token: PublishedToken,
        extensions: &'a mut Extensions,
        next: Next<'a>,
    ) -> BoxFuture<'a, reqwest_middleware::Result<Response>> {
        // Only a request whose body can be cloned is replayed (a stream cannot be sent twice).
        let replay = replay_copy(&request);
        request
            .headers_mut()
            .insert(AUTHORIZATION, token.header().clone());
        // The box holds only what checking the response and a replay need.
        Box::pin(async move {
            let response = next.clone().run(request, extensions).await?;
            // A 401 from another origin (after a redirect) says nothing about our token.
            // (The cheap status check first: most responses are not rejections.)
            if !self.rejection.is_token_rejected(&response)
                || !self.origins[origin].contains(response.url())
            {
                return Ok(response);
            }
            let Some(replay) = replay else {
                // The request cannot be sent again, but the next one must not carry the
                // rejected token: refresh now (shared with any other caller), then hand the
                // rejection back.
                log::debug!(%key, "token rejected; request body cannot be replayed");
                if let Err(error) = self.manager.token_after_rejection(&key, &token).await {
                    log::debug!(%key, %error, "refresh after a rejected streaming request failed");
                }
                return Ok(response);
            };
            Box::pin(self.replay(&key, &token, replay, response, extensions, next)).await
        })
    }

    /// After `token` was rejected: sends `replay` once with a fresh token, or returns
    /// `response` when there is none to try (cooldown).
    async fn replay(
        &self,
        key: &TokenKey,
        token: &ActiveToken,
        mut replay: Request,
        response: Response,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let fresh = self
            .manager
            .token_after_rejection(key, token)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        let Some(fresh) = fresh else {
            return Ok(response);
        };
        drop(response);
        replay
            .headers_mut()
            .insert(AUTHORIZATION, fresh.header().clone());
        // Replayed once; whatever comes back is returned as is.
        next.run(replay, extensions).await
    }
}

/// A copy of `request` to replay it with (`None`: its body cannot be cloned).
///
/// A request with a body is copied by `Request::try_clone` (reqwest clones a body without
/// copying its bytes, which only it can do). A request without one — most requests — is copied
/// field by field: method, URL, headers, version and timeout, what reqwest sends.
/// `Request::try_clone` would also allocate an extension map for it even when it holds
/// nothing (three allocations per request); reqwest (0.13.5) reads no extension of a request
/// but the timeout. The unit test below compares the two copies.
fn replay_copy(request: &Request) -> Option<Request> {
    if request.body().is_some() {
        return request.try_clone();
    }
    let mut copy = Request::new(request.method().clone(), request.url().clone());
    if !request.headers().is_empty() {
        *copy.headers_mut() = request.headers().clone();
    }
    *copy.version_mut() = request.version();
    if let Some(timeout) = request.timeout() {
        *copy.timeout_mut() = Some(*timeout);
    }
    Some(copy)
}

/// Configures a [`TokenRefreshMiddleware`].
#[must_use]
pub struct TokenRefreshMiddlewareBuilder {
    refresher: Arc<dyn TokenRefresher>,
    store: Option<Arc<dyn TokenStore>>,
    origins: Vec<String>,
    rejection: Arc<dyn TokenRejection>,
    default_key: TokenKey,
    initial_tokens: Option<TokenSet>,
    accept_unbound: bool,
    leeway: Duration,
    rejection_cooldown: Duration,
    on_event: Option<EventHook>,
    allow_http_loopback: bool,
}

impl TokenRefreshMiddlewareBuilder {
    /// Where token sets are persisted (default: [`MemoryTokenStore`]).
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Same as [`store`](Self::store), for a store shared with other code.
    pub fn shared_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Allows sending tokens to an origin (`https://host[:port]`; the path is ignored). At
    /// least one is required; requests to other origins pass through untouched.
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.origins.push(origin.into());
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
    /// other means, with no [`TokenSet::with_issued_for`]), binding them to this middleware's
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

    /// Allows plain-`http` origins on loopback hosts, for tests and demos. Never in production.
    pub fn danger_allow_http_loopback(mut self) -> Self {
        self.allow_http_loopback = true;
        self
    }

    /// Checks the configuration and builds the middleware.
    pub fn build(self) -> Result<TokenRefreshMiddleware, ConfigError> {
        if self.origins.is_empty() {
            return Err(ConfigError::Missing("allow_origin"));
        }
        let origins = self
            .origins
            .iter()
            .map(|origin| {
                let url = Url::parse(origin)
                    .map_err(|_| ConfigError::InvalidUrl(redact_userinfo(origin)))?;
                check_secure(&url, self.allow_http_loopback)?;
                Ok(AllowedOrigin::new(url.origin()))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
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
        };
        Ok(TokenRefreshMiddleware {
            manager: TokenManager::new(store, self.refresher, config),
            origins,
            rejection: self.rejection,
            default_key: self.default_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderValue, Method, Version};
    use reqwest::Request;

    use super::replay_copy;

    fn assert_same(copy: &Request, clone: &Request) {
        assert_eq!(copy.method(), clone.method());
        assert_eq!(copy.url(), clone.url());
        assert_eq!(copy.headers(), clone.headers());
        assert_eq!(copy.version(), clone.version());
        assert_eq!(copy.timeout(), clone.timeout());
        assert_eq!(
            copy.body().and_then(|body| body.as_bytes()),
            clone.body().and_then(|body| body.as_bytes())
        );
    }

    #[test]
    fn d11_replay_copy_matches_try_clone() {
        let mut bare = Request::new(Method::GET, "https://api.example/a?q=1".parse().unwrap());
        let copy = replay_copy(&bare).expect("no body");
        assert_same(&copy, &bare.try_clone().unwrap());

        let mut full = Request::new(Method::DELETE, "https://api.example/b".parse().unwrap());
        full.headers_mut()
            .insert("x-trace", HeaderValue::from_static("abc"));
        *full.version_mut() = Version::HTTP_2;
        *full.timeout_mut() = Some(Duration::from_millis(1500));
        let copy = replay_copy(&full).expect("no body");
        assert_same(&copy, &full.try_clone().unwrap());
        assert_eq!(copy.version(), Version::HTTP_2);
        assert_eq!(copy.timeout(), Some(&Duration::from_millis(1500)));
        assert_eq!(copy.headers()["x-trace"], "abc");

        *bare.body_mut() = Some("payload".into());
        let copy = replay_copy(&bare).expect("a byte body is cloned");
        assert_same(&copy, &bare.try_clone().unwrap());
        assert_eq!(
            copy.body().and_then(|body| body.as_bytes()),
            Some(&b"payload"[..])
        );
    }
}
