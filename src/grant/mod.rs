//! How new tokens are obtained: the [`TokenRefresher`] trait and the built-in grants.

#[cfg(feature = "private-key-jwt")]
mod assertion;
mod builder;
mod client;
mod client_credentials;
pub(crate) mod endpoint;
mod refresh_token;
pub(crate) mod response;

use async_trait::async_trait;

#[cfg(feature = "private-key-jwt")]
pub use assertion::ClientAssertionKey;
pub use builder::GrantBuilder;
pub use client::ClientAuth;
pub use client_credentials::ClientCredentialsGrant;
pub use refresh_token::RefreshTokenGrant;

use crate::error::Error;
use crate::key::TokenKey;
use crate::token::{TokenResponse, TokenSet};

/// Obtains a new access token for a key.
///
/// The middleware calls it at most once at a time per key, while holding the store's
/// cross-process lock, and merges the result into the current [`TokenSet`] (keeping the old
/// refresh token when the response carries none). Implementations report failures with the
/// crate's [`Error`]: `ReauthorizationRequired` for a dead grant, `Transient` for what may
/// succeed later, and so on.
#[async_trait]
pub trait TokenRefresher: Send + Sync + 'static {
    /// Asks the authorization server for new tokens. `current` is the set held now, if any.
    async fn refresh(
        &self,
        key: &TokenKey,
        current: Option<&TokenSet>,
    ) -> Result<TokenResponse, Error>;

    /// The authorization server and client this refresher talks for, recorded in the token sets
    /// it produces (e.g. `"https://auth.example.com/token my-client"`). A stored set recorded
    /// for another is refused, never sent here. Default: `None` (no check: implement it, or every
    /// stored set is accepted).
    fn issuer_binding(&self) -> Option<String> {
        None
    }

    /// Whether plain `http` to loopback hosts was allowed for this refresher (tests and demos);
    /// the [`TokenManager`](crate::TokenManager) built on it then allows such origins too.
    /// Default: `false`.
    fn allows_http_loopback(&self) -> bool {
        false
    }

    /// Whether [`refresh`](Self::refresh) can obtain tokens for a key that has none (client
    /// credentials can; a refresh-token grant needs the user's tokens). Default: `false`.
    fn obtains_without_tokens(&self) -> bool {
        false
    }

    /// Revokes `tokens` at the authorization server (RFC 7009), called by
    /// [`TokenManager::revoke`](crate::TokenManager::revoke). Default: nothing to revoke.
    async fn revoke(&self, key: &TokenKey, tokens: &TokenSet) -> Result<(), Error> {
        let _ = (key, tokens);
        Ok(())
    }
}
