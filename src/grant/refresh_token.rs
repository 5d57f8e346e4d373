//! The refresh_token grant (RFC 6749 §6).

use async_trait::async_trait;
use reqwest::Url;

use super::client::{OAuthClient, ProofKey};
use super::GrantBuilder;
use super::TokenRefresher;
use crate::error::{ConfigError, Error, ReauthorizationReason};
use crate::key::TokenKey;
use crate::token::{TokenResponse, TokenSet};

/// Refreshes tokens with the `refresh_token` grant (RFC 6749 §6).
///
/// ```
/// use reqwest_token_refresh::{ClientSecret, RefreshTokenGrant};
///
/// let grant = RefreshTokenGrant::builder("https://auth.example.com/oauth/token", "my-client")
///     .client_secret(ClientSecret::new("from-your-secret-store"))
///     .revocation_endpoint("https://auth.example.com/oauth/revoke")
///     .build()?;
/// # Ok::<_, reqwest_token_refresh::ConfigError>(())
/// ```
///
/// The form body carries `grant_type`, `refresh_token`, the optional `scope` and, depending on
/// [`ClientAuth`](crate::ClientAuth), `client_id` and `client_secret`; each parameter once,
/// never in the URL. Its HTTP client is its own: no redirects, connect and total timeouts, a
/// response size cap.
pub struct RefreshTokenGrant {
    client: OAuthClient,
    scope: Option<String>,
}

impl RefreshTokenGrant {
    /// Starts configuring a grant of the client `client_id` at the token endpoint
    /// `token_endpoint`.
    pub fn builder(
        token_endpoint: impl Into<String>,
        client_id: impl Into<String>,
    ) -> GrantBuilder<RefreshTokenGrant> {
        GrantBuilder::new(token_endpoint.into(), client_id.into())
    }

    /// The token endpoint this grant posts to.
    pub fn token_endpoint(&self) -> &Url {
        &self.client.token_endpoint
    }

    fn form<'a>(&'a self, refresh_token: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        form
    }
}

impl GrantBuilder<RefreshTokenGrant> {
    /// Checks the configuration and builds the grant.
    pub fn build(self) -> Result<RefreshTokenGrant, ConfigError> {
        let (client, scope) = self.client()?;
        Ok(RefreshTokenGrant { client, scope })
    }
}

impl std::fmt::Debug for RefreshTokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshTokenGrant")
            .field("client", &self.client)
            .field("scope", &self.scope)
            .finish()
    }
}

#[async_trait]
impl TokenRefresher for RefreshTokenGrant {
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
        let Some(refresh_token) = current.and_then(TokenSet::refresh_token) else {
            let reason = match current {
                Some(_) => ReauthorizationReason::NoRefreshToken,
                None => ReauthorizationReason::NoTokens,
            };
            return Err(Error::ReauthorizationRequired {
                key: key.clone(),
                reason,
            });
        };
        let secret = refresh_token.secret();
        let proof_key = proof_key(current)?;
        self.client
            .request_tokens(key, &self.form(secret), secret, proof_key)
            .await
    }

    async fn revoke(&self, key: &TokenKey, tokens: &TokenSet) -> Result<(), Error> {
        match tokens.refresh_token() {
            // RFC 7009 §2.1: revoking the refresh token also ends the grant's access tokens.
            Some(refresh) => {
                self.client
                    .revoke(key, refresh.secret(), "refresh_token")
                    .await
            }
            None => {
                let access = tokens.access_token().secret();
                self.client.revoke(key, access, "access_token").await
            }
        }
    }
}

/// The DPoP key of `current`, which every token request for it must prove.
#[cfg(feature = "dpop")]
fn proof_key(current: Option<&TokenSet>) -> Result<Option<&ProofKey>, Error> {
    Ok(current.and_then(TokenSet::dpop_key))
}

/// Without the `dpop` feature, DPoP-bound tokens cannot be refreshed: without its proof the
/// server would refuse the refresh token.
#[cfg(not(feature = "dpop"))]
fn proof_key(current: Option<&TokenSet>) -> Result<Option<&ProofKey>, Error> {
    match current {
        Some(tokens) if tokens.is_dpop_bound() => Err(Error::DpopUnavailable),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ClientSecret;
    use crate::ClientAuth;
    use base64::Engine;

    #[test]
    fn r8_basic_credentials_form_encode_each_part_first() {
        let grant = RefreshTokenGrant::builder("https://auth.example.com/token", "id:1")
            .client_secret(ClientSecret::new("s e/c+r%t"))
            .build()
            .unwrap();
        let request = grant
            .client
            .post(grant.token_endpoint(), &grant.form("rt"))
            .unwrap()
            .build()
            .unwrap();
        let header = request.headers()[http::header::AUTHORIZATION].clone();
        assert!(header.is_sensitive());
        let encoded = header
            .to_str()
            .unwrap()
            .strip_prefix("Basic ")
            .unwrap()
            .to_owned();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "id%3A1:s+e%2Fc%2Br%25t"
        );
        let body = request.body().and_then(|b| b.as_bytes()).unwrap();
        assert_eq!(body, b"grant_type=refresh_token&refresh_token=rt");
    }

    #[test]
    fn r48_a_plain_http_endpoint_is_a_configuration_error() {
        let error = RefreshTokenGrant::builder("http://auth.example.com/token", "c")
            .build()
            .unwrap_err();
        assert!(matches!(
            error,
            ConfigError::InsecureUrl {
                setting: "token_endpoint",
                ..
            }
        ));
        let error = RefreshTokenGrant::builder("http://auth.example.com/token", "c")
            .danger_allow_http_loopback()
            .build()
            .unwrap_err();
        assert!(matches!(error, ConfigError::InsecureUrl { .. }));
        let grant = RefreshTokenGrant::builder("http://127.0.0.1:9/token", "c")
            .danger_allow_http_loopback()
            .build()
            .unwrap();
        assert!(grant.allows_http_loopback());
    }

    #[test]
    fn r3_a_fragment_is_refused_and_a_query_kept() {
        let error = RefreshTokenGrant::builder("https://auth.example.com/token#x", "c")
            .build()
            .unwrap_err();
        assert!(matches!(error, ConfigError::FragmentInUrl { .. }));
        let grant = RefreshTokenGrant::builder("https://auth.example.com/token?tenant=a", "c")
            .build()
            .unwrap();
        assert_eq!(grant.token_endpoint().query(), Some("tenant=a"));
    }

    #[test]
    fn secret_auth_without_a_secret_is_a_configuration_error() {
        let error = RefreshTokenGrant::builder("https://auth.example.com/token", "c")
            .client_auth(ClientAuth::ClientSecretPost)
            .build()
            .unwrap_err();
        assert_eq!(error, ConfigError::Missing("client_secret"));
        let error = RefreshTokenGrant::builder("https://auth.example.com/token", "")
            .build()
            .unwrap_err();
        assert_eq!(error, ConfigError::EmptyClientId);
    }

    #[test]
    fn debug_hides_the_client_secret() {
        let grant = RefreshTokenGrant::builder("https://auth.example.com/token", "c")
            .client_secret(ClientSecret::new("canary-secret"))
            .build()
            .unwrap();
        assert!(!format!("{grant:?}").contains("canary"));
    }
}
