//! The client_credentials grant (RFC 6749 §4.4): machine-to-machine tokens.

use async_trait::async_trait;
use reqwest::Url;

use super::builder::GrantBuilder;
use super::client::OAuthClient;
use super::TokenRefresher;
use crate::error::{ConfigError, Error};
use crate::key::TokenKey;
use crate::token::{TokenResponse, TokenSet};

/// Obtains tokens with the `client_credentials` grant (RFC 6749 §4.4): a service acting on its
/// own behalf, with no user and no refresh token.
///
/// No tokens need to be supplied: the first request obtains one, later ones renew it before it
/// expires and after a 401, coalesced exactly like refreshes.
///
/// ```
/// use reqwest_token_refresh::{ClientCredentialsGrant, ClientSecret, TokenRefreshMiddleware};
///
/// let grant = ClientCredentialsGrant::builder("https://auth.example.com/oauth/token")
///     .client_id("billing-service")
///     .client_secret(ClientSecret::new("from-your-secret-store"))
///     .scope("invoices:read")
///     .build()?;
/// let middleware = TokenRefreshMiddleware::builder(grant)
///     .allow_origin("https://api.example.com")
///     .build()?;
/// # Ok::<_, reqwest_token_refresh::ConfigError>(())
/// ```
pub struct ClientCredentialsGrant {
    client: OAuthClient,
    scope: Option<String>,
}

/// Configures a [`ClientCredentialsGrant`].
pub type ClientCredentialsGrantBuilder = GrantBuilder<ClientCredentialsGrant>;

impl ClientCredentialsGrant {
    /// Starts configuring a grant for the given token endpoint URL.
    pub fn builder(token_endpoint: impl Into<String>) -> ClientCredentialsGrantBuilder {
        GrantBuilder::new(token_endpoint.into())
    }

    /// The token endpoint this grant posts to.
    pub fn token_endpoint(&self) -> &Url {
        &self.client.token_endpoint
    }
}

impl GrantBuilder<ClientCredentialsGrant> {
    /// Checks the configuration and builds the grant. A client secret is required: RFC 6749
    /// §4.4 is for confidential clients.
    pub fn build(self) -> Result<ClientCredentialsGrant, ConfigError> {
        let client = self.client()?;
        if client.client_secret.is_none() {
            return Err(ConfigError::Missing("client_secret"));
        }
        Ok(ClientCredentialsGrant {
            client,
            scope: self.scope,
        })
    }
}

impl std::fmt::Debug for ClientCredentialsGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentialsGrant")
            .field("client", &self.client)
            .field("scope", &self.scope)
            .finish()
    }
}

#[async_trait]
impl TokenRefresher for ClientCredentialsGrant {
    fn issuer_binding(&self) -> Option<String> {
        Some(self.client.binding())
    }

    async fn refresh(
        &self,
        key: &TokenKey,
        _current: Option<&TokenSet>,
    ) -> Result<TokenResponse, Error> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let mut response = self.client.request_tokens(key, form, "").await?;
        // RFC 6749 §4.4.3: a refresh token SHOULD NOT be included; if one is, it is not used.
        response.refresh_token = None;
        Ok(response)
    }

    fn obtains_without_tokens(&self) -> bool {
        true
    }

    async fn revoke(&self, key: &TokenKey, tokens: &TokenSet) -> Result<(), Error> {
        let access = tokens.access_token().secret();
        self.client.revoke(key, access, "access_token").await
    }
}
