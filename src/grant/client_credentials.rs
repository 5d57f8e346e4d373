//! The client_credentials grant (RFC 6749 §4.4): machine-to-machine tokens.

use async_trait::async_trait;
use reqwest::Url;

use super::client::OAuthClient;
use super::GrantBuilder;
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
/// use reqwest_token_refresh::{ClientCredentialsGrant, ClientSecret, TokenManager};
///
/// let grant = ClientCredentialsGrant::builder("https://auth.example.com/oauth/token", "billing")
///     .client_secret(ClientSecret::new("from-your-secret-store"))
///     .scope("invoices:read")
///     .build()?;
/// let tokens = TokenManager::builder(grant)
///     .allow_origin("https://api.example.com")?
///     .build();
/// let middleware = tokens.middleware();
/// # Ok::<_, reqwest_token_refresh::ConfigError>(())
/// ```
pub struct ClientCredentialsGrant {
    client: OAuthClient,
    scope: Option<String>,
}

impl ClientCredentialsGrant {
    /// Starts configuring a grant of the client `client_id` at the token endpoint
    /// `token_endpoint`.
    pub fn builder(
        token_endpoint: impl Into<String>,
        client_id: impl Into<String>,
    ) -> GrantBuilder<ClientCredentialsGrant> {
        GrantBuilder::new(token_endpoint.into(), client_id.into())
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
        let (client, scope) = self.client()?;
        if client.client_secret.is_none() {
            return Err(ConfigError::Missing("client_secret"));
        }
        Ok(ClientCredentialsGrant { client, scope })
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

    fn allows_http_loopback(&self) -> bool {
        self.client.allow_http_loopback
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
