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
    /// DPoP keys of this algorithm bind the tokens, if set.
    #[cfg(feature = "dpop")]
    dpop: Option<crate::dpop::DpopAlgorithm>,
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
    /// Checks the configuration and builds the grant. The client must authenticate (a secret
    /// or `private_key_jwt`): RFC 6749 §4.4 is for confidential clients.
    pub fn build(self) -> Result<ClientCredentialsGrant, ConfigError> {
        #[cfg(feature = "dpop")]
        let dpop = self.dpop;
        let (client, scope) = self.client()?;
        if client.auth == crate::ClientAuth::None {
            return Err(ConfigError::Missing("client_secret"));
        }
        Ok(ClientCredentialsGrant {
            client,
            scope,
            #[cfg(feature = "dpop")]
            dpop,
        })
    }
}

#[cfg(feature = "dpop")]
impl ClientCredentialsGrant {
    /// The key for the next token request: the current tokens' key (the server bound them to
    /// it), or a new one when DPoP is on and there are none yet.
    fn dpop_key(&self, current: Option<&TokenSet>) -> Result<Option<crate::dpop::DpopKey>, Error> {
        let Some(algorithm) = self.dpop else {
            return Ok(None);
        };
        match current.and_then(TokenSet::dpop_key) {
            Some(key) => Ok(Some(key.clone())),
            None => crate::dpop::DpopKey::generate(algorithm)
                .map(Some)
                .map_err(Error::Config),
        }
    }
}

impl GrantBuilder<ClientCredentialsGrant> {
    /// Sender-constrains the tokens with DPoP (RFC 9449): a key of `algorithm` is made for the
    /// key's first token, kept with the tokens, and proves every token and resource request.
    #[cfg(feature = "dpop")]
    pub fn dpop(mut self, algorithm: crate::dpop::DpopAlgorithm) -> Self {
        self.dpop = Some(algorithm);
        self
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
        current: Option<&TokenSet>,
    ) -> Result<TokenResponse, Error> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        #[cfg(feature = "dpop")]
        let dpop_key = self.dpop_key(current)?;
        #[cfg(not(feature = "dpop"))]
        let dpop_key: Option<super::client::ProofKey> = {
            let _ = current;
            None
        };
        let mut response = self
            .client
            .request_tokens(key, &form, "", dpop_key.as_ref())
            .await?;
        // RFC 6749 §4.4.3: a refresh token SHOULD NOT be included; if one is, it is not used.
        response.refresh_token = None;
        #[cfg(feature = "dpop")]
        if let Some(dpop_key) = dpop_key {
            response = response.with_dpop_key(dpop_key);
        }
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
