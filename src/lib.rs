//! Placeholder; docs follow.
#![warn(missing_docs, unreachable_pub)]

mod classify;
mod error;
mod event;
mod grant;
mod key;
mod manager;
mod middleware;
#[cfg(feature = "retry")]
mod retry;
mod secret;
mod store;
mod token;

pub use classify::{default_is_token_rejected, DefaultTokenRejection, TokenRejection};
pub use error::{
    ConfigError, Error, ErrorCode, InvalidResponse, OAuthError, ReauthorizationReason,
    TransientError,
};
pub use event::Event;
pub use grant::{ClientAuth, RefreshTokenGrant, RefreshTokenGrantBuilder, TokenRefresher};
pub use key::TokenKey;
pub use manager::TokenManager;
pub use middleware::{TokenRefreshMiddleware, TokenRefreshMiddlewareBuilder};
#[cfg(feature = "retry")]
pub use retry::{token_error_retryable, TokenRefreshRetryableStrategy};
pub use secret::{AccessToken, ClientSecret, RefreshToken};
pub use store::{
    CallbackTokenStore, MemoryTokenStore, SaveOutcome, StoreError, StoreErrorKind, StoreLock,
    TokenStore,
};
pub use token::{TokenResponse, TokenSet};
