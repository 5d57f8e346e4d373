//! The `reqwest-middleware` integration: inject → send → classify → refresh once → replay once.

use std::borrow::Cow;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::Extensions;
use reqwest::{Request, Response, Url};
use reqwest_middleware::{Middleware, Next};

use crate::classify::TokenRejection;
use crate::key::TokenKey;
use crate::log;
use crate::manager::{ActiveToken, PublishedToken, TokenManager};
use crate::origin::AllowedOrigin;

#[cfg(feature = "dpop")]
mod dpop;

/// Adds `Authorization: Bearer <token>` to requests for the allowed origins and keeps the token
/// fresh: the `reqwest-middleware` face of a [`TokenManager`], made by
/// [`TokenManager::middleware`]. See the [crate documentation](crate) for the whole story.
#[derive(Clone)]
pub struct TokenRefreshMiddleware {
    manager: TokenManager,
    origins: Arc<[AllowedOrigin]>,
    rejection: Arc<dyn TokenRejection>,
    default_key: TokenKey,
}

impl TokenRefreshMiddleware {
    pub(crate) fn new(
        manager: TokenManager,
        origins: Arc<[AllowedOrigin]>,
        rejection: Arc<dyn TokenRejection>,
        default_key: TokenKey,
    ) -> Self {
        Self {
            manager,
            origins,
            rejection,
            default_key,
        }
    }

    /// The allowed origin `url` belongs to, if any.
    fn allowed_origin(&self, url: &Url) -> Option<&AllowedOrigin> {
        self.origins.iter().find(|origin| origin.contains(url))
    }
}

impl std::fmt::Debug for TokenRefreshMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRefreshMiddleware")
            .field("origins", &self.origins)
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
        origin: &'a AllowedOrigin,
        key: Cow<'a, TokenKey>,
        token: PublishedToken,
        extensions: &'a mut Extensions,
        next: Next<'a>,
    ) -> BoxFuture<'a, reqwest_middleware::Result<Response>> {
        #[cfg(feature = "dpop")]
        if token.dpop().is_some() {
            return Box::pin(self.send_dpop(request, origin, key, token, extensions, next));
        }
        // Only a request whose body can be cloned is replayed (a stream cannot be sent twice).
        let replay = request.try_clone();
        request
            .headers_mut()
            .insert(AUTHORIZATION, token.header().clone());
        // The box holds only what checking the response and a replay need.
        Box::pin(async move {
            let response = next.clone().run(request, extensions).await?;
            // A 401 from another origin (after a redirect) says nothing about our token.
            // (The cheap status check first: most responses are not rejections.)
            if !self.rejection.is_token_rejected(&response) || !origin.contains(response.url()) {
                warn_if_dpop_demanded(&key, &response);
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
        self.authorize(&mut replay, &fresh)
            .map_err(reqwest_middleware::Error::middleware)?;
        // Replayed once; whatever comes back is returned as is.
        next.run(replay, extensions).await
    }

    /// Puts `token` on `request`: its `Authorization`, and for DPoP-bound tokens a fresh
    /// proof; returns the DPoP nonce the proof carries.
    fn authorize(
        &self,
        request: &mut Request,
        token: &ActiveToken,
    ) -> Result<Option<Arc<str>>, crate::Error> {
        request
            .headers_mut()
            .insert(AUTHORIZATION, token.header().clone());
        #[cfg(feature = "dpop")]
        return self.prove(request, token);
        #[cfg(not(feature = "dpop"))]
        Ok(None)
    }
}

/// A resource server that answers a bearer token with only a `DPoP` challenge wants
/// sender-constrained tokens: the response is returned as it is (no refresh could help), and
/// the reason is logged.
fn warn_if_dpop_demanded(key: &TokenKey, response: &Response) {
    if response.status() == http::StatusCode::UNAUTHORIZED
        && crate::classify::dpop_challenge(response).is_some()
    {
        log::warn!(
            %key,
            "the resource server demands DPoP (WWW-Authenticate: DPoP); this key's tokens are \
             bearer tokens: log in with a DPoP key (TokenSet::with_dpop_key)"
        );
    }
}
