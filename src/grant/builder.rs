//! The builder shared by the built-in grants.

use std::marker::PhantomData;
use std::time::Duration;

use super::client::{ClientAuth, OAuthClient};
use super::endpoint::EndpointSettings;
use crate::error::ConfigError;
use crate::secret::ClientSecret;
use crate::url_policy::redact_userinfo;

/// Configures a built-in grant: [`RefreshTokenGrant::builder`](crate::RefreshTokenGrant::builder)
/// or [`ClientCredentialsGrant::builder`](crate::ClientCredentialsGrant::builder); `G` is the
/// grant it builds.
///
/// Every setter is infallible; [`build`](Self::build) checks the URLs and the client
/// authentication, and its errors name the setting.
#[must_use]
pub struct GrantBuilder<G> {
    token_endpoint: String,
    revocation_endpoint: Option<String>,
    client_id: String,
    client_secret: Option<ClientSecret>,
    auth: Option<ClientAuth>,
    pub(super) scope: Option<String>,
    settings: EndpointSettings,
    /// The `private_key_jwt` key, if set.
    #[cfg(feature = "private-key-jwt")]
    assertion_key: Option<super::assertion::ClientAssertionKey>,
    /// The assertions' audience, if not the token endpoint.
    #[cfg(feature = "private-key-jwt")]
    assertion_audience: Option<String>,
    /// The DPoP algorithm of the keys a client-credentials grant makes, if DPoP is on.
    #[cfg(feature = "dpop")]
    pub(super) dpop: Option<crate::dpop::DpopAlgorithm>,
    grant: PhantomData<fn() -> G>,
}

impl<G> std::fmt::Debug for GrantBuilder<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantBuilder")
            .field("token_endpoint", &redact_userinfo(&self.token_endpoint))
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("auth", &self.auth)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl<G> GrantBuilder<G> {
    pub(super) fn new(token_endpoint: String, client_id: String) -> Self {
        Self {
            token_endpoint,
            revocation_endpoint: None,
            client_id,
            client_secret: None,
            auth: None,
            scope: None,
            settings: EndpointSettings::default(),
            #[cfg(feature = "private-key-jwt")]
            assertion_key: None,
            #[cfg(feature = "private-key-jwt")]
            assertion_audience: None,
            #[cfg(feature = "dpop")]
            dpop: None,
            grant: PhantomData,
        }
    }

    /// Authenticates the client with `private_key_jwt` (RFC 7523 §2.2): every token and
    /// revocation request carries a fresh assertion signed by `key`, addressed to the token
    /// endpoint (see [`assertion_audience`](Self::assertion_audience)). No client secret.
    #[cfg(feature = "private-key-jwt")]
    pub fn private_key_jwt(mut self, key: super::assertion::ClientAssertionKey) -> Self {
        self.auth = Some(ClientAuth::PrivateKeyJwt);
        self.assertion_key = Some(key);
        self
    }

    /// The `aud` of the client assertions (default: the token endpoint URL). Some servers
    /// expect their issuer identifier instead.
    #[cfg(feature = "private-key-jwt")]
    pub fn assertion_audience(mut self, audience: impl Into<String>) -> Self {
        self.assertion_audience = Some(audience.into());
        self
    }

    /// The client secret of a confidential client. Sent with HTTP Basic unless
    /// [`client_auth`](Self::client_auth) says otherwise.
    pub fn client_secret(mut self, secret: ClientSecret) -> Self {
        self.client_secret = Some(secret);
        self
    }

    /// How to authenticate to the authorization server. Defaults to
    /// [`ClientAuth::ClientSecretBasic`] when a secret is set, [`ClientAuth::None`] otherwise.
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The scope to request. For the refresh_token grant leave it unset to keep the scope
    /// originally granted (RFC 6749 §6); it must not be wider than that.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The RFC 7009 revocation endpoint, used by
    /// [`TokenManager::revoke`](crate::TokenManager::revoke) on logout.
    pub fn revocation_endpoint(mut self, url: impl Into<String>) -> Self {
        self.revocation_endpoint = Some(url.into());
        self
    }

    /// Total time allowed for one request, body included (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// Time allowed to connect (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Largest response accepted, in bytes (default 1 MiB).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.settings.max_response_bytes = limit;
        self
    }

    /// The HTTP client to reach the authorization server with: a proxy, your own root
    /// certificates, a client certificate (mTLS), your own DNS resolver. Give the builder, not
    /// a built client: the grant still turns redirects off on it (a 307 would re-post the
    /// refresh token and client secret to wherever it points), sets its timeouts and TLS 1.2 as
    /// the minimum, so those settings of yours are replaced.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use reqwest_token_refresh::RefreshTokenGrant;
    ///
    /// let http = reqwest::Client::builder().proxy(reqwest::Proxy::https("http://proxy.corp:3128")?);
    /// let grant = RefreshTokenGrant::builder("https://auth.example.com/oauth/token", "my-client")
    ///     .http_client(http)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn http_client(mut self, builder: reqwest::ClientBuilder) -> Self {
        self.settings.http = Some(builder);
        self
    }

    /// Allows plain `http` on loopback hosts (`127.0.0.1`, `[::1]`, `localhost`), for tests
    /// and demos: for the grant's endpoints, and for the origins of the
    /// [`TokenManager`](crate::TokenManager) built on it. Never in production: tokens would
    /// travel unencrypted.
    pub fn danger_allow_http_loopback(mut self) -> Self {
        self.settings.allow_http_loopback = true;
        self
    }

    /// Checks the settings and builds the client; returns it with the scope.
    pub(super) fn client(mut self) -> Result<(OAuthClient, Option<String>), ConfigError> {
        let token_endpoint = self
            .settings
            .endpoint_url("token_endpoint", &self.token_endpoint)?;
        let revocation_endpoint = self
            .revocation_endpoint
            .as_deref()
            .map(|url| self.settings.endpoint_url("revocation_endpoint", url))
            .transpose()?;
        if self.client_id.is_empty() {
            return Err(ConfigError::EmptyClientId);
        }
        let auth = match (self.auth, &self.client_secret) {
            (Some(auth), _) => auth,
            (None, Some(_)) => ClientAuth::ClientSecretBasic,
            (None, None) => ClientAuth::None,
        };
        let needs_secret = matches!(
            auth,
            ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost
        );
        if needs_secret && self.client_secret.is_none() {
            return Err(ConfigError::Missing("client_secret"));
        }
        #[cfg(feature = "private-key-jwt")]
        let assertion = match (auth, self.assertion_key) {
            (ClientAuth::PrivateKeyJwt, Some(key)) => {
                let audience = self
                    .assertion_audience
                    .unwrap_or_else(|| token_endpoint.to_string());
                Some((key, audience))
            }
            (ClientAuth::PrivateKeyJwt, None) => {
                return Err(ConfigError::Missing("private_key_jwt key"))
            }
            _ => None,
        };
        let allow_http_loopback = self.settings.allow_http_loopback;
        let max_response_bytes = self.settings.max_response_bytes;
        let http = self.settings.client()?;
        let client = OAuthClient {
            token_endpoint,
            revocation_endpoint,
            client_id: self.client_id,
            client_secret: self.client_secret,
            auth,
            max_response_bytes,
            http,
            allow_http_loopback,
            #[cfg(feature = "private-key-jwt")]
            assertion,
            #[cfg(feature = "dpop")]
            nonces: crate::dpop::Nonces::default(),
        };
        Ok((client, self.scope))
    }
}

#[cfg(all(test, feature = "private-key-jwt"))]
mod tests {
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::Engine;

    use super::super::assertion::ClientAssertionKey;
    use crate::RefreshTokenGrant;

    fn key() -> ClientAssertionKey {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der = pair.to_pkcs8v1().unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        ClientAssertionKey::from_pem(&format!(
            "-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n"
        ))
        .unwrap()
    }

    /// The audience holds whichever of the two setters comes first.
    #[test]
    fn the_assertion_audience_is_kept_in_either_order() {
        let token_endpoint = "https://auth.example.com/oauth/token";
        let issuer = "https://auth.example.com";
        let audience = |builder: super::GrantBuilder<RefreshTokenGrant>| {
            let (client, _) = builder.client().unwrap();
            client.assertion.map(|(_, audience)| audience)
        };
        let builder = || RefreshTokenGrant::builder(token_endpoint, "c");
        assert_eq!(
            audience(builder().private_key_jwt(key())).as_deref(),
            Some(token_endpoint),
            "by default the token endpoint"
        );
        assert_eq!(
            audience(builder().private_key_jwt(key()).assertion_audience(issuer)).as_deref(),
            Some(issuer)
        );
        assert_eq!(
            audience(builder().assertion_audience(issuer).private_key_jwt(key())).as_deref(),
            Some(issuer)
        );
    }
}
