//! The refresh_token grant (RFC 6749 §6).

use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;
use url::form_urlencoded;

use super::endpoint::{self, ClientAuth, EndpointSettings};
use super::response;
use super::TokenRefresher;
use crate::error::{ConfigError, Error, ReauthorizationReason};
use crate::key::TokenKey;
use crate::secret::ClientSecret;
use crate::token::{TokenResponse, TokenSet};

/// Refreshes tokens with the `refresh_token` grant (RFC 6749 §6).
///
/// ```
/// use reqwest_token_refresh::{ClientSecret, RefreshTokenGrant};
///
/// let grant = RefreshTokenGrant::builder("https://auth.example.com/oauth/token")
///     .client_id("my-client")
///     .client_secret(ClientSecret::new("from-your-secret-store"))
///     .build()?;
/// # Ok::<_, reqwest_token_refresh::ConfigError>(())
/// ```
///
/// The form body carries `grant_type`, `refresh_token`, the optional `scope` and, depending on
/// [`ClientAuth`], `client_id` and `client_secret`; each parameter once, never in the URL. Its
/// HTTP client is its own: no redirects, connect and total timeouts, a response size cap.
pub struct RefreshTokenGrant {
    endpoint: Url,
    client_id: String,
    client_secret: Option<ClientSecret>,
    auth: ClientAuth,
    scope: Option<String>,
    max_response_bytes: usize,
    http: reqwest::Client,
}

impl RefreshTokenGrant {
    /// Starts configuring a grant for the given token endpoint URL.
    pub fn builder(token_endpoint: impl Into<String>) -> RefreshTokenGrantBuilder {
        RefreshTokenGrantBuilder {
            token_endpoint: token_endpoint.into(),
            client_id: None,
            client_secret: None,
            auth: None,
            scope: None,
            settings: EndpointSettings::default(),
        }
    }

    /// The token endpoint this grant posts to.
    pub fn token_endpoint(&self) -> &Url {
        &self.endpoint
    }

    fn request(&self, refresh_token: &str) -> reqwest::RequestBuilder {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .header(http::header::ACCEPT, "application/json");
        match (self.auth, &self.client_secret) {
            (ClientAuth::ClientSecretBasic, Some(secret)) => {
                // RFC 6749 §2.3.1: each part is form-encoded before reqwest joins and
                // base64-encodes them; reqwest marks the header sensitive.
                request = request.basic_auth(
                    form_encode(&self.client_id),
                    Some(form_encode(secret.secret())),
                );
            }
            (ClientAuth::ClientSecretPost, Some(secret)) => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", secret.secret()));
            }
            _ => form.push(("client_id", &self.client_id)),
        }
        request.form(&form)
    }
}

fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

impl std::fmt::Debug for RefreshTokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshTokenGrant")
            .field("endpoint", &self.endpoint.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("auth", &self.auth)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenRefresher for RefreshTokenGrant {
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
        let (status, body) = endpoint::send(self.request(secret), self.max_response_bytes).await?;
        let client_secret = self.client_secret.as_ref().map_or("", |s| s.secret());
        response::classify(key, status, &body, &[secret, client_secret])
    }
}

/// Configures a [`RefreshTokenGrant`].
#[derive(Debug)]
#[must_use]
pub struct RefreshTokenGrantBuilder {
    token_endpoint: String,
    client_id: Option<String>,
    client_secret: Option<ClientSecret>,
    auth: Option<ClientAuth>,
    scope: Option<String>,
    settings: EndpointSettings,
}

impl RefreshTokenGrantBuilder {
    /// The client id (required).
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// The client secret of a confidential client. Sent with HTTP Basic unless
    /// [`client_auth`](Self::client_auth) says otherwise.
    pub fn client_secret(mut self, secret: ClientSecret) -> Self {
        self.client_secret = Some(secret);
        self
    }

    /// How to authenticate to the token endpoint. Defaults to
    /// [`ClientAuth::ClientSecretBasic`] when a secret is set, [`ClientAuth::None`] otherwise.
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// A scope to request on refresh. Leave it unset to keep the scope originally granted
    /// (RFC 6749 §6); it must not be wider than that.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Total time allowed for one token request, body included (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// Time allowed to connect to the token endpoint (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Largest token response accepted, in bytes (default 1 MiB).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.settings.max_response_bytes = limit;
        self
    }

    /// Allows a plain `http` token endpoint on a loopback host (`127.0.0.1`, `[::1]`,
    /// `localhost`), for tests and demos. Never use it in production: tokens would travel
    /// unencrypted.
    pub fn danger_allow_http_loopback(mut self) -> Self {
        self.settings.allow_http_loopback = true;
        self
    }

    /// Checks the configuration and builds the grant.
    pub fn build(self) -> Result<RefreshTokenGrant, ConfigError> {
        let endpoint = self.settings.endpoint_url(&self.token_endpoint)?;
        let client_id = self.client_id.ok_or(ConfigError::Missing("client_id"))?;
        if client_id.is_empty() {
            return Err(ConfigError::EmptyClientId);
        }
        let auth = match (self.auth, &self.client_secret) {
            (Some(auth), _) => auth,
            (None, Some(_)) => ClientAuth::ClientSecretBasic,
            (None, None) => ClientAuth::None,
        };
        if auth != ClientAuth::None && self.client_secret.is_none() {
            return Err(ConfigError::Missing("client_secret"));
        }
        Ok(RefreshTokenGrant {
            endpoint,
            client_id,
            client_secret: self.client_secret,
            auth,
            scope: self.scope,
            max_response_bytes: self.settings.max_response_bytes,
            http: self.settings.client()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn r8_basic_credentials_form_encode_each_part_first() {
        let grant = RefreshTokenGrant::builder("https://auth.example.com/token")
            .client_id("id:1")
            .client_secret(ClientSecret::new("s e/c+r%t"))
            .build()
            .unwrap();
        let request = grant.request("rt").build().unwrap();
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
        let error = RefreshTokenGrant::builder("http://auth.example.com/token")
            .client_id("c")
            .build()
            .unwrap_err();
        assert!(matches!(error, ConfigError::InsecureUrl(_)));
        let error = RefreshTokenGrant::builder("http://auth.example.com/token")
            .client_id("c")
            .danger_allow_http_loopback()
            .build()
            .unwrap_err();
        assert!(matches!(error, ConfigError::InsecureUrl(_)));
        assert!(RefreshTokenGrant::builder("http://127.0.0.1:9/token")
            .client_id("c")
            .danger_allow_http_loopback()
            .build()
            .is_ok());
    }

    #[test]
    fn r3_a_fragment_is_refused_and_a_query_kept() {
        let error = RefreshTokenGrant::builder("https://auth.example.com/token#x")
            .client_id("c")
            .build()
            .unwrap_err();
        assert!(matches!(error, ConfigError::FragmentInTokenEndpoint(_)));
        let grant = RefreshTokenGrant::builder("https://auth.example.com/token?tenant=a")
            .client_id("c")
            .build()
            .unwrap();
        assert_eq!(grant.token_endpoint().query(), Some("tenant=a"));
    }

    #[test]
    fn secret_auth_without_a_secret_is_a_configuration_error() {
        let error = RefreshTokenGrant::builder("https://auth.example.com/token")
            .client_id("c")
            .client_auth(ClientAuth::ClientSecretPost)
            .build()
            .unwrap_err();
        assert_eq!(error, ConfigError::Missing("client_secret"));
    }

    #[test]
    fn debug_hides_the_client_secret() {
        let grant = RefreshTokenGrant::builder("https://auth.example.com/token")
            .client_id("c")
            .client_secret(ClientSecret::new("canary-secret"))
            .build()
            .unwrap();
        assert!(!format!("{grant:?}").contains("canary"));
    }
}
