//! How new tokens are obtained: the [`TokenRefresher`] trait and the built-in grants.

pub(crate) mod endpoint;
mod refresh_token;
mod response;

use async_trait::async_trait;

pub use endpoint::ClientAuth;
pub use refresh_token::{RefreshTokenGrant, RefreshTokenGrantBuilder};
pub(crate) use response::is_b64token;

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
}
