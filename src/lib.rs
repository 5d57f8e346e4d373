//! A [`reqwest-middleware`](reqwest_middleware) middleware that sends OAuth 2.0 bearer tokens
//! and keeps them fresh: one refresh per key however many requests need it, refresh-token
//! rotation handled so a consumed refresh token is never sent again, and every rotated token
//! set persisted before it is used.
//!
//! # Example
//!
//! ```no_run
//! use reqwest_token_refresh::{FileTokenStore, RefreshTokenGrant, TokenManager};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let grant = RefreshTokenGrant::builder("https://auth.example.com/oauth/token", "my-client").build()?;
//! let tokens = TokenManager::builder(grant)
//!     .allow_origin("https://api.example.com")?
//!     .store(FileTokenStore::builder("tokens.json").build()?)
//!     .build();
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(tokens.middleware())
//!     .build();
//! let me = client.get("https://api.example.com/me").send().await?;
//! # Ok(()) }
//! ```
//!
//! The first token set comes from your login flow (authorization code, device flow, …):
//! hand it over with [`TokenManager::set_tokens`], or at build time with
//! [`TokenManagerBuilder::initial_tokens`]. From then on the manager keeps it fresh.
//!
//! # How refresh works
//!
//! - **Injection.** Requests to an [allowed origin](TokenManagerBuilder::allow_origin)
//!   get `Authorization: Bearer <token>` (marked sensitive). Other origins, and requests that
//!   already carry an `Authorization` header, pass through untouched.
//! - **Proactive.** A token is refreshed before it is sent when it expires within the
//!   [leeway](TokenManagerBuilder::leeway) (60 s by default, never more than half its
//!   lifetime). If that refresh fails for a passing reason, the still-valid token is used.
//! - **On 401.** When the response rejects the token ([`TokenRejection`]; by default a 401 whose
//!   Bearer challenge is `invalid_token` or carries no error, never 403), the middleware
//!   refreshes only if the rejected token is still the current one (its *generation*), then
//!   replays the request once. A body that cannot be cloned (a stream) gets the 401 back, and
//!   the token is still refreshed for the next request.
//!   A token rejected again within the [cooldown](TokenManagerBuilder::rejection_cooldown)
//!   causes no further refresh: a resource server that rejects everything costs a bounded
//!   number of token calls.
//! - **Coalesced.** Per [`TokenKey`], one refresh at a time: concurrent callers share its
//!   outcome (success or error). It runs in a detached task that holds the store's
//!   cross-process lock, re-reads the store (adopting tokens another process already
//!   refreshed), calls the token endpoint, saves, and only then publishes. Dropping a caller
//!   never cancels it.
//! - **Rotation.** A new refresh token replaces the old one at once, in memory and in the
//!   store; a response without one keeps the old one (RFC 6749 §6).
//! - **Persistence.** The new set is saved (conditionally, on the [`Revision`] of the record it
//!   replaces) before waiters are released. If the save fails, the new tokens are used from
//!   memory, an [`Event::PersistFailed`] is emitted and the save is retried in the background.
//! - **Dead grants.** `invalid_grant` is terminal: the store records that the grant ended
//!   ([`Ended`]) and every request for the key fails fast with
//!   [`Error::ReauthorizationRequired`], in every process, without calling the token endpoint,
//!   until [`TokenManager::set_tokens`] supplies new tokens. Logouts are recorded the same way.
//! - **Transient failures** (5xx, 429, timeouts) are [`Error::Transient`], and the key's
//!   refreshes back off (about 1 s doubling to 30 s); with the `retry` feature,
//!   `TokenRefreshRetryableStrategy` makes `reqwest-retry` retry them.
//! - **Bound to its server.** Stored tokens name the server that issued them; a middleware for
//!   another refuses them ([`Error::ForeignTokens`]).
//!
//! All of these rules live in one module, `src/policy.rs`; the repository's `docs/DESIGN.md`
//! draws the states and lists the tests behind each promise.
//!
//! # Beyond refresh tokens
//!
//! [`ClientCredentialsGrant`] for machine-to-machine tokens, [`Discovery`] for RFC 8414 /
//! OpenID Connect metadata, [`TokenManager::revoke`] for logout (RFC 7009), and
//! [`TokenManager::set_tokens`] to hand fresh tokens over after a re-login. Every state change
//! is an [`Event`] for your hook and a `tracing` event (never with a secret).
//!
//! # Errors
//!
//! The middleware returns [`Error`] inside [`reqwest_middleware::Error::Middleware`]; see
//! [`Error`] for the downcast.
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `tracing` (default) | `tracing` events and a `token_flight` span; off, nothing is logged |
//! | `retry` | `TokenRefreshRetryableStrategy` for `reqwest-retry` |
//! | `test-util` | `test_util::MockAuthorizationServer` (a rotating, reuse-detecting, fault-injecting server for your tests) and `test_util::store_contract` |
//! | `file` | `FileTokenStore`: a private JSON file shared by the processes of one machine (unix) |
//! | `encryption` | `EncryptionKey` and `KeyRing`, sealing token sets at rest |
//! | `redis` | `RedisTokenStore`: sealed records with TTL, a lease lock and conditional writes |
//! | `sqlite` | `SqlTokenStore` on SQLite: several processes on one host (enables `encryption`) |
//! | `postgres` | `SqlTokenStore` on PostgreSQL: a fleet (enables `encryption`) |
//! | `dpop` | `DpopKey`: DPoP-bound tokens (RFC 9449), proofs on every token and resource request |
//! | `private-key-jwt` | `ClientAssertionKey`: `private_key_jwt` client authentication (RFC 7523) |
//!
//! # Security
//!
//! - Tokens and client secrets live in [`AccessToken`], [`RefreshToken`] and [`ClientSecret`],
//!   whose `Debug` prints `[redacted]`; no error, event or log line contains one.
//! - The token endpoint client follows no redirects (a 307 would re-post the refresh token),
//!   has timeouts and a 1 MiB response cap, and requires https and TLS 1.2+.
//! - Tokens go only to the allowed origins, over https. Plain http is possible only to
//!   loopback hosts after an explicit `danger_allow_http_loopback()`, for tests and demos.
//! - Access tokens from the server are checked against RFC 6750 `b64token` before they reach a
//!   header (no header injection).
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Input never panics the library: no unwrap, expect, panic or unchecked indexing outside tests.
#![cfg_attr(
    not(test),
    warn(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::print_stdout,
        clippy::print_stderr
    )
)]
// Without `tracing`, values bound only to be logged go unused.
#![cfg_attr(not(feature = "tracing"), allow(unused_variables))]

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[path = "fuzz.rs"]
pub mod __fuzz;
mod backoff;
mod classify;
mod discovery;
#[cfg(feature = "dpop")]
mod dpop;
mod error;
mod event;
mod grant;
#[cfg(any(feature = "dpop", feature = "private-key-jwt"))]
mod jws;
mod key;
mod log;
mod manager;
mod middleware;
mod origin;
mod policy;
mod record;
#[cfg(feature = "retry")]
mod retry;
mod revision;
mod secret;
mod store;
#[cfg(feature = "test-util")]
pub mod test_util;
mod token;
mod url_policy;

pub use classify::{DefaultTokenRejection, TokenRejection};
pub use discovery::{Discovery, DiscoveryError, ServerMetadata};
#[cfg(feature = "dpop")]
pub use dpop::{DpopAlgorithm, DpopKey};
pub use error::{
    ConfigError, Error, ErrorCode, InvalidResponse, OAuthError, ReauthorizationReason,
    TransientError,
};
pub use event::Event;
#[cfg(feature = "private-key-jwt")]
pub use grant::ClientAssertionKey;
pub use grant::{
    ClientAuth, ClientCredentialsGrant, GrantBuilder, RefreshTokenGrant, TokenRefresher,
};
pub use key::TokenKey;
pub use manager::{TokenManager, TokenManagerBuilder};
pub use middleware::TokenRefreshMiddleware;
pub use record::{EndReason, Ended, TokenRecord};
#[cfg(feature = "retry")]
pub use retry::{token_error_retryable, TokenRefreshRetryableStrategy};
pub use revision::Revision;
pub use secret::{AccessToken, ClientSecret, RefreshToken};
pub use store::{
    CallbackTokenStore, HeldLock, MemoryTokenStore, SaveOutcome, StoreError, StoreErrorKind,
    StoreLock, TokenStore,
};
#[cfg(feature = "encryption")]
pub use store::{EncryptionKey, KeyRing, Opened};
#[cfg(feature = "file")]
pub use store::{FileTokenStore, FileTokenStoreBuilder};
#[cfg(feature = "redis")]
pub use store::{RedisTokenStore, RedisTokenStoreBuilder};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use store::{SqlTokenStore, SqlTokenStoreBuilder};
pub use token::{TokenResponse, TokenSet};

/// The README's examples, compiled as doctests so they stay true.
#[cfg(all(doctest, feature = "file", feature = "retry"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
