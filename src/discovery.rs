//! Finding the token and revocation endpoints from an issuer: RFC 8414 authorization-server
//! metadata, or OpenID Connect discovery.

use reqwest::Url;
use serde::Deserialize;

use crate::error::ConfigError;
use crate::grant::endpoint::{self, EndpointSettings};
use crate::grant::{ClientAuth, GrantBuilder};
use crate::url_policy::{self, check_secure};
use crate::{ClientCredentialsGrant, RefreshTokenGrant};

/// Where the metadata document lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// RFC 8414 §3.1: `/.well-known/oauth-authorization-server` inserted before the path.
    OAuth,
    /// OpenID Connect Discovery: `/.well-known/openid-configuration` appended to the issuer.
    OpenIdConnect,
}

/// Fetches an authorization server's metadata from its issuer identifier.
///
/// ```no_run
/// use reqwest_token_refresh::{ClientSecret, Discovery};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let metadata = Discovery::oauth("https://auth.example.com/tenant-a").fetch().await?;
/// let grant = metadata
///     .refresh_token_grant("my-client")
///     .client_secret(ClientSecret::new("from-your-secret-store"))
///     .build()?;
/// # Ok(()) }
/// ```
///
/// The returned `issuer` must be *identical* to the one asked for (RFC 8414 §3.3; compared by
/// code point, no normalization), and the endpoints must be https. The request follows no
/// redirects.
#[derive(Debug)]
#[must_use]
pub struct Discovery {
    issuer: String,
    flavor: Flavor,
    settings: EndpointSettings,
}

impl Discovery {
    /// RFC 8414 discovery (`/.well-known/oauth-authorization-server`).
    pub fn oauth(issuer: impl Into<String>) -> Self {
        Self::new(issuer.into(), Flavor::OAuth)
    }

    /// OpenID Connect discovery (`/.well-known/openid-configuration`).
    pub fn openid_connect(issuer: impl Into<String>) -> Self {
        Self::new(issuer.into(), Flavor::OpenIdConnect)
    }

    fn new(issuer: String, flavor: Flavor) -> Self {
        Self {
            issuer,
            flavor,
            settings: EndpointSettings::default(),
        }
    }

    /// Allows a plain-`http` issuer and endpoints on a loopback host, for tests and demos; the
    /// grants made from the metadata allow them too.
    pub fn danger_allow_http_loopback(mut self) -> Self {
        self.settings.allow_http_loopback = true;
        self
    }

    /// The HTTP client to fetch the metadata with (a proxy, your own root certificates); see
    /// [`GrantBuilder::http_client`](crate::GrantBuilder::http_client).
    pub fn http_client(mut self, builder: reqwest::ClientBuilder) -> Self {
        self.settings.http = Some(builder);
        self
    }

    /// The URL of the metadata document.
    pub fn metadata_url(&self) -> Result<Url, DiscoveryError> {
        let issuer = url_policy::parse("issuer", &self.issuer).map_err(DiscoveryError::Config)?;
        check_secure("issuer", &issuer, self.settings.allow_http_loopback)
            .map_err(DiscoveryError::Config)?;
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(DiscoveryError::InvalidIssuer);
        }
        let path = issuer.path().trim_end_matches('/');
        let well_known = match self.flavor {
            Flavor::OAuth => format!("/.well-known/oauth-authorization-server{path}"),
            Flavor::OpenIdConnect => format!("{path}/.well-known/openid-configuration"),
        };
        let mut url = issuer.clone();
        url.set_path(&well_known);
        Ok(url)
    }

    /// Fetches and validates the metadata.
    pub async fn fetch(mut self) -> Result<ServerMetadata, DiscoveryError> {
        let url = self.metadata_url()?;
        let client = self.settings.client().map_err(DiscoveryError::Config)?;
        let request = client
            .get(url)
            .header(http::header::ACCEPT, "application/json");
        let answer = endpoint::send(request, self.settings.max_response_bytes)
            .await
            .map_err(|error| DiscoveryError::Unavailable(Box::new(error)))?;
        if !answer.status.is_success() {
            return Err(DiscoveryError::Status(answer.status.as_u16()));
        }
        let document: Document =
            serde_json::from_slice(&answer.body).map_err(|_| DiscoveryError::NotMetadata)?;
        // RFC 8414 §3.3 / §6.2: a different issuer means the data MUST NOT be used.
        if document.issuer != self.issuer {
            return Err(DiscoveryError::IssuerMismatch);
        }
        let token_endpoint = document
            .token_endpoint
            .ok_or(DiscoveryError::MissingTokenEndpoint)?;
        self.settings
            .endpoint_url("token_endpoint", &token_endpoint)
            .map_err(DiscoveryError::Config)?;
        if let Some(revocation) = &document.revocation_endpoint {
            self.settings
                .endpoint_url("revocation_endpoint", revocation)
                .map_err(DiscoveryError::Config)?;
        }
        Ok(ServerMetadata {
            issuer: document.issuer,
            token_endpoint,
            revocation_endpoint: document.revocation_endpoint,
            auth_methods: document
                .token_endpoint_auth_methods_supported
                .unwrap_or_default(),
            allow_http_loopback: self.settings.allow_http_loopback,
        })
    }
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    token_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// Validated authorization-server metadata: what this crate needs of it.
#[derive(Debug, Clone)]
pub struct ServerMetadata {
    issuer: String,
    token_endpoint: String,
    revocation_endpoint: Option<String>,
    auth_methods: Vec<String>,
    allow_http_loopback: bool,
}

impl ServerMetadata {
    /// The issuer identifier (identical to the one asked for).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> &str {
        &self.token_endpoint
    }

    /// The RFC 7009 revocation endpoint, if the server has one.
    pub fn revocation_endpoint(&self) -> Option<&str> {
        self.revocation_endpoint.as_deref()
    }

    /// A refresh-token grant builder of the client `client_id` for this server: token and
    /// revocation endpoints set, and `client_secret_post` chosen when the server does not list
    /// `client_secret_basic` (which is the default when the list is absent, RFC 8414 §2).
    pub fn refresh_token_grant(
        &self,
        client_id: impl Into<String>,
    ) -> GrantBuilder<RefreshTokenGrant> {
        self.configure(RefreshTokenGrant::builder(&self.token_endpoint, client_id))
    }

    /// A client-credentials grant builder for this server, configured as
    /// [`refresh_token_grant`](Self::refresh_token_grant).
    pub fn client_credentials_grant(
        &self,
        client_id: impl Into<String>,
    ) -> GrantBuilder<ClientCredentialsGrant> {
        self.configure(ClientCredentialsGrant::builder(
            &self.token_endpoint,
            client_id,
        ))
    }

    fn configure<G>(&self, mut builder: GrantBuilder<G>) -> GrantBuilder<G> {
        if let Some(revocation) = &self.revocation_endpoint {
            builder = builder.revocation_endpoint(revocation);
        }
        let lists = |method: &str| self.auth_methods.iter().any(|m| m == method);
        if !self.auth_methods.is_empty()
            && !lists("client_secret_basic")
            && lists("client_secret_post")
        {
            builder = builder.client_auth(ClientAuth::ClientSecretPost);
        }
        if self.allow_http_loopback {
            builder = builder.danger_allow_http_loopback();
        }
        builder
    }
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The issuer or an endpoint is not an acceptable URL.
    #[error("invalid discovery configuration")]
    Config(#[source] ConfigError),
    /// The issuer has a query or fragment (RFC 8414 §2).
    #[error("issuer must not have a query or fragment")]
    InvalidIssuer,
    /// The metadata could not be fetched.
    #[error("metadata endpoint unreachable")]
    Unavailable(#[source] Box<crate::Error>),
    /// The metadata endpoint answered with an error status.
    #[error("metadata endpoint answered HTTP {0}")]
    Status(u16),
    /// The body is not a metadata document.
    #[error("metadata is not a JSON document with an `issuer`")]
    NotMetadata,
    /// The document names another issuer (RFC 8414 §3.3: it must not be used).
    #[error("metadata issuer differs from the requested issuer")]
    IssuerMismatch,
    /// The document has no `token_endpoint`.
    #[error("metadata has no `token_endpoint`")]
    MissingTokenEndpoint,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r69_rfc8414_inserts_the_well_known_path_and_oidc_appends_it() {
        let url = |d: Discovery| d.metadata_url().unwrap().to_string();
        assert_eq!(
            url(Discovery::oauth("https://auth.example.com/issuer1/")),
            "https://auth.example.com/.well-known/oauth-authorization-server/issuer1"
        );
        assert_eq!(
            url(Discovery::oauth("https://auth.example.com")),
            "https://auth.example.com/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            url(Discovery::openid_connect(
                "https://auth.example.com/realms/a"
            )),
            "https://auth.example.com/realms/a/.well-known/openid-configuration"
        );
    }

    #[test]
    fn r73_issuers_must_be_https_without_query_or_fragment() {
        assert!(matches!(
            Discovery::oauth("http://auth.example.com").metadata_url(),
            Err(DiscoveryError::Config(ConfigError::InsecureUrl { .. }))
        ));
        assert!(matches!(
            Discovery::oauth("https://auth.example.com/?a=1").metadata_url(),
            Err(DiscoveryError::InvalidIssuer)
        ));
    }
}
