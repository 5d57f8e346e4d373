//! A test kit for applications using this crate (feature `test-util`): a loopback
//! authorization server and protected API that behave like strict real servers.
//!
//! [`MockAuthorizationServer`] behaves like the strictest real servers (node-oidc-provider,
//! Hydra, Auth0 with reuse detection): every refresh rotates the refresh token, and presenting
//! a consumed refresh token is *reuse*: the whole grant is revoked (every refresh and access
//! token of it) and `invalid_grant` is returned. It counts refresh calls and reuse detections,
//! and injects faults, so a test of your own client reads in a few lines:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use reqwest_middleware::ClientBuilder;
//! use reqwest_token_refresh::test_util::{Fault, MockAuthorizationServer};
//! use reqwest_token_refresh::{RefreshTokenGrant, TokenManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = MockAuthorizationServer::start(Duration::from_secs(3600)).await;
//! let grant = RefreshTokenGrant::builder(server.token_url(), "my-client")
//!     .danger_allow_http_loopback()
//!     .build()?;
//! let tokens = TokenManager::builder(grant)
//!     .allow_origin(&server.uri())?
//!     .initial_tokens(server.issue_expired_grant())
//!     .build();
//! let client = ClientBuilder::new(reqwest::Client::new()).with(tokens.middleware()).build();
//!
//! server.inject(Fault::ServerError(503)); // the first refresh fails
//! assert!(client.get(server.api_url("me")).send().await.is_err());
//! let response = client.get(server.api_url("me")).send().await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(server.refresh_calls(), 2);
//! assert_eq!(server.reuse_detections(), 0);
//! # Ok(()) }
//! ```
//!
//! The API answers `200 ok` under `/api/` to a current access token, `401` with
//! `WWW-Authenticate: Bearer realm="api", error="invalid_token"` to any other token, and `401`
//! with a challenge without error code to a request without one (RFC 6750 §3.1, as
//! node-oidc-provider's resource servers answer). Client authentication is checked only when
//! configured ([`MockAuthorizationServerBuilder::client`], or with feature `private-key-jwt`
//! [`MockAuthorizationServerBuilder::private_key_jwt_client`]).
//!
//! # DPoP and `private_key_jwt`
//!
//! With feature `dpop`, the server checks DPoP (RFC 9449) as strictly as a real one:
//! [`MockAuthorizationServerBuilder::dpop`] requires a valid proof on every token request and
//! binds the tokens to the proof's key, [`require_dpop_nonce`] adds server nonces,
//! [`api_requires_dpop`] makes the API refuse bearer clients, and
//! [`MockAuthorizationServer::issue_dpop_grant`] stands for a login made with a [`DpopKey`].
//! The API takes `Authorization: DPoP <token>` with a proof of the token's key for that very
//! request. With feature `private-key-jwt`, the token endpoint can require client assertions
//! (RFC 7523). A request is checked in this order, each step answering before the next one
//! runs: client authentication (`401 invalid_client`), the DPoP proof (`400
//! invalid_dpop_proof`), its nonce (`400 use_dpop_nonce`), an injected [`Fault`], then the
//! grant (a refresh token bound to another key: `400 invalid_grant`, nothing spent).
//!
//! [`require_dpop_nonce`]: MockAuthorizationServerBuilder::require_dpop_nonce
//! [`api_requires_dpop`]: MockAuthorizationServerBuilder::api_requires_dpop
//! [`DpopKey`]: crate::DpopKey
// Test fixtures: a broken fixture panics loudly, which is what a test wants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(feature = "private-key-jwt")]
mod assertion;
#[cfg(feature = "dpop")]
mod dpop;
#[cfg(any(feature = "dpop", feature = "private-key-jwt"))]
mod jwt;
pub mod store_contract;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{AccessToken, RefreshToken, TokenSet};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// One grant (one user's authorization): its current refresh token and the consumed ones.
#[derive(Default)]
struct Family {
    current_refresh: Option<String>,
    /// The refresh token the current one replaced, and when.
    previous: Option<(String, Instant)>,
    consumed: HashSet<String>,
    /// The valid access tokens, each with the thumbprint of the DPoP key it is bound to.
    access: HashMap<String, Option<String>>,
    /// The thumbprint of the DPoP key the grant's refresh token is bound to (RFC 9449 §5).
    jkt: Option<String>,
    revoked: bool,
}

/// What the server does when a consumed refresh token is presented again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReusePolicy {
    /// Revoke the whole grant (every refresh and access token of it) and answer
    /// `invalid_grant`: node-oidc-provider, Ory Hydra, Auth0 with reuse detection.
    #[default]
    RevokeGrant,
    /// Answer `invalid_grant` and revoke nothing (Keycloak's "stale token").
    Refuse,
    /// Accept the refresh token just replaced for this long after its rotation (Okta's grace
    /// period), then behave as [`RevokeGrant`](Self::RevokeGrant).
    Grace(Duration),
}

/// A misbehaviour of the token endpoint, applied to the next token request that passes client
/// authentication and the DPoP checks (a nonce challenge or a refused proof spends no fault).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this status and an HTML body, without touching the grant.
    ServerError(u16),
    /// Answer `400 invalid_grant`, without touching the grant.
    InvalidGrant,
    /// Answer normally, after this delay.
    Delay(Duration),
    /// Rotate the refresh token (the server commits), then never deliver the answer in time:
    /// the client times out (a lost response: the server rotated, the client never learns it).
    LoseResponse,
}

/// Everything the server saw, for the invariants the tests check.
#[derive(Default)]
struct Grant {
    faults: VecDeque<Fault>,
    issued: u64,
    families: Vec<Family>,
    refresh_calls: u64,
    /// Every refresh token presented to the token endpoint, in order.
    presented: Vec<String>,
    reuse_detections: u64,
    api_calls: u64,
    api_rejections: u64,
    #[cfg(feature = "dpop")]
    dpop: dpop::State,
    /// The `jti` of every client assertion accepted.
    #[cfg(feature = "private-key-jwt")]
    assertions_seen: HashSet<String>,
}

/// How token requests must authenticate the client.
#[derive(Debug, Clone)]
enum ClientAuth {
    /// `client_secret_basic` or `client_secret_post` (the secret redacted in `Debug`).
    Secret {
        client_id: String,
        secret: crate::ClientSecret,
    },
    /// `private_key_jwt`.
    #[cfg(feature = "private-key-jwt")]
    PrivateKeyJwt(assertion::AssertionClient),
}

/// A loopback authorization server with a token endpoint at `/token` and a protected API under
/// `/api/`. See the [module documentation](self).
#[derive(Clone)]
pub struct MockAuthorizationServer {
    server: Arc<MockServer>,
    grant: Arc<Mutex<Grant>>,
    lifetime: Duration,
}

/// Configures a [`MockAuthorizationServer`]; made by [`MockAuthorizationServer::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MockAuthorizationServerBuilder {
    lifetime: Duration,
    reuse: ReusePolicy,
    delay: Duration,
    expected_refresh_calls: Option<u64>,
    client: Option<ClientAuth>,
    #[cfg(feature = "dpop")]
    dpop: dpop::Settings,
}

impl MockAuthorizationServerBuilder {
    /// How long the access tokens it issues live (default one hour).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// What a consumed refresh token presented again does (default
    /// [`ReusePolicy::RevokeGrant`]).
    pub fn reuse(mut self, reuse: ReusePolicy) -> Self {
        self.reuse = reuse;
        self
    }

    /// Delays every token response (the rotation is committed before the delay, as on a real
    /// server whose answer is slow to arrive).
    pub fn token_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Requires token requests to authenticate as `client_id` with `secret`, by
    /// `client_secret_basic` (both form-encoded before Base64, RFC 6749 §2.3.1, as real servers
    /// decode them) or `client_secret_post`; anything else gets `401 invalid_client`. By
    /// default the server checks no client authentication. Replaces any other client
    /// authentication configured before.
    pub fn client(mut self, client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.client = Some(ClientAuth::Secret {
            client_id: client_id.into(),
            secret: crate::ClientSecret::new(secret),
        });
        self
    }

    /// Makes wiremock verify, when the server is dropped, that the token endpoint was called
    /// exactly `calls` times (the test fails otherwise). Every token request counts, including
    /// the ones refused for client authentication, a DPoP proof or a nonce challenge.
    pub fn expect_refresh_calls(mut self, calls: u64) -> Self {
        self.expected_refresh_calls = Some(calls);
        self
    }

    /// Starts the server on a loopback port.
    pub async fn start(self) -> MockAuthorizationServer {
        MockAuthorizationServer::start_configured(self).await
    }
}

impl MockAuthorizationServer {
    /// Starts a server with the default settings, issuing access tokens that live `lifetime`.
    pub async fn start(lifetime: Duration) -> Self {
        Self::builder().token_lifetime(lifetime).start().await
    }

    /// Starts configuring a server.
    pub fn builder() -> MockAuthorizationServerBuilder {
        MockAuthorizationServerBuilder {
            lifetime: Duration::from_secs(3600),
            reuse: ReusePolicy::default(),
            delay: Duration::ZERO,
            expected_refresh_calls: None,
            client: None,
            #[cfg(feature = "dpop")]
            dpop: dpop::Settings::default(),
        }
    }

    async fn start_configured(config: MockAuthorizationServerBuilder) -> Self {
        let server = Arc::new(MockServer::start().await);
        let grant = Grant {
            #[cfg(feature = "dpop")]
            dpop: dpop::State::new(config.dpop),
            ..Grant::default()
        };
        let this = Self {
            server,
            grant: Arc::new(Mutex::new(grant)),
            lifetime: config.lifetime,
        };
        let mut token = Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(TokenEndpoint {
                grant: Arc::clone(&this.grant),
                lifetime: config.lifetime,
                delay: config.delay,
                reuse: config.reuse,
                client: config.client.clone(),
                #[cfg(any(feature = "dpop", feature = "private-key-jwt"))]
                issuer: this.uri(),
            });
        if let Some(expected) = config.expected_refresh_calls {
            token = token.expect(expected);
        }
        this.server.register(token).await;
        this.server
            .register(
                Mock::given(method("POST"))
                    .and(path("/revoke"))
                    .respond_with(Revocation {
                        grant: Arc::clone(&this.grant),
                        #[cfg(feature = "private-key-jwt")]
                        client: config.client,
                        #[cfg(feature = "private-key-jwt")]
                        issuer: this.uri(),
                    }),
            )
            .await;
        this.server
            .register(
                Mock::given(path_regex("^/api/.*")).respond_with(ProtectedApi {
                    grant: Arc::clone(&this.grant),
                    #[cfg(feature = "dpop")]
                    issuer: this.uri(),
                }),
            )
            .await;
        this
    }

    /// The underlying wiremock server, to mount more mocks.
    pub fn mock_server(&self) -> &MockServer {
        &self.server
    }

    /// Queues a fault for the next token request (faults apply one per request, in order).
    pub fn inject(&self, fault: Fault) {
        self.grant.lock().unwrap().faults.push_back(fault);
    }

    /// Issues a new grant (access + refresh token) as the authorization-code flow would.
    pub fn issue_grant(&self) -> TokenSet {
        self.issue(None)
    }

    /// A new grant whose tokens are bound to the DPoP key with thumbprint `jkt`, if any.
    fn issue(&self, jkt: Option<String>) -> TokenSet {
        let mut grant = self.grant.lock().unwrap();
        grant.families.push(Family::default());
        let family = grant.families.len() - 1;
        let (access, refresh) = grant.issue(family, jkt);
        TokenSet::new(AccessToken::new(access))
            .with_refresh_token(RefreshToken::new(refresh))
            .with_expires_in(self.lifetime)
    }

    /// Same grant, but the access token already expired on our side.
    pub fn issue_expired_grant(&self) -> TokenSet {
        let tokens = self.issue_grant();
        tokens.with_expires_at(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1))
    }

    /// Revokes the latest grant: its refresh and access tokens stop working.
    pub fn revoke_grant(&self) {
        if let Some(family) = self.grant.lock().unwrap().families.last_mut() {
            family.revoke();
        }
    }

    /// Makes every access token issued so far invalid (the API answers 401 to them).
    pub fn reject_current_access_tokens(&self) {
        for family in &mut self.grant.lock().unwrap().families {
            family.access.clear();
        }
    }

    /// The server's origin, e.g. `http://127.0.0.1:PORT`.
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// The token endpoint URL.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.server.uri())
    }

    /// The RFC 7009 revocation endpoint URL: revoking a refresh token revokes its grant.
    pub fn revocation_url(&self) -> String {
        format!("{}/revoke", self.server.uri())
    }

    /// A URL of the protected API.
    pub fn api_url(&self, rest: &str) -> String {
        format!("{}/api/{rest}", self.server.uri())
    }

    /// Token requests received, refused ones included (client authentication, DPoP proofs,
    /// nonce challenges).
    pub fn refresh_calls(&self) -> u64 {
        self.grant.lock().unwrap().refresh_calls
    }

    /// Times a consumed refresh token came back to a grant not yet revoked (under
    /// [`ReusePolicy::RevokeGrant`], each revoked it).
    pub fn reuse_detections(&self) -> u64 {
        self.grant.lock().unwrap().reuse_detections
    }

    /// Every refresh token presented to the token endpoint, in order: those of the requests
    /// that reached the grant. A request refused before (client authentication, a missing or
    /// invalid DPoP proof, a nonce challenge, an injected fault) spent nothing and is not
    /// recorded; one refused for a proof signed by another key than the refresh token's is
    /// (the server looked the grant up, and left it untouched).
    pub fn presented_refresh_tokens(&self) -> Vec<String> {
        self.grant.lock().unwrap().presented.clone()
    }

    /// Panics unless every refresh token was presented at most once and no reuse was
    /// detected: the promise this crate makes, checked from the server's side.
    pub fn assert_no_refresh_token_reused(&self) {
        let presented = self.presented_refresh_tokens();
        let unique: HashSet<&String> = presented.iter().collect();
        assert_eq!(
            unique.len(),
            presented.len(),
            "a refresh token was presented twice: {presented:?}"
        );
        assert_eq!(self.reuse_detections(), 0, "reuse detected");
    }

    /// Requests the protected API received.
    pub fn api_calls(&self) -> u64 {
        self.grant.lock().unwrap().api_calls
    }

    /// Requests the protected API rejected with 401.
    pub fn api_rejections(&self) -> u64 {
        self.grant.lock().unwrap().api_rejections
    }

    /// Whether any grant was revoked.
    pub fn is_revoked(&self) -> bool {
        let grant = self.grant.lock().unwrap();
        grant.families.iter().any(|family| family.revoked)
    }

    /// The refresh token the server would accept now for the latest grant.
    pub fn current_refresh_token(&self) -> Option<String> {
        let grant = self.grant.lock().unwrap();
        grant.families.last()?.current_refresh.clone()
    }
}

impl Grant {
    /// New tokens for `family`, bound to the DPoP key with thumbprint `jkt` if any (the
    /// refresh token too, from then on); its previous refresh token becomes consumed.
    fn issue(&mut self, family: usize, jkt: Option<String>) -> (String, String) {
        self.issued += 1;
        let access = format!("at-{}", self.issued);
        let refresh = format!("rt-{}", self.issued);
        let family = &mut self.families[family];
        if jkt.is_some() {
            family.jkt.clone_from(&jkt);
        }
        family.access.insert(access.clone(), jkt);
        if let Some(old) = family.current_refresh.replace(refresh.clone()) {
            family.consumed.insert(old.clone());
            family.previous = Some((old, Instant::now()));
        }
        (access, refresh)
    }

    fn family_of(&self, refresh: &str) -> Option<usize> {
        self.families.iter().position(|family| {
            family.current_refresh.as_deref() == Some(refresh) || family.consumed.contains(refresh)
        })
    }

    /// `None` if `access` is not a valid access token, else the thumbprint of the DPoP key it
    /// is bound to, if any.
    fn access_binding(&self, access: &str) -> Option<Option<&str>> {
        self.families
            .iter()
            .find_map(|family| family.access.get(access))
            .map(Option::as_deref)
    }

    /// Adds what every response carries (the DPoP nonce).
    #[cfg(feature = "dpop")]
    fn finish(&mut self, response: ResponseTemplate) -> ResponseTemplate {
        self.dpop.finish(response)
    }

    /// Adds what every response carries (nothing without DPoP).
    #[cfg(not(feature = "dpop"))]
    fn finish(&mut self, response: ResponseTemplate) -> ResponseTemplate {
        response
    }
}

impl Family {
    fn revoke(&mut self) {
        self.revoked = true;
        self.previous = None;
        self.access.clear();
        if let Some(current) = self.current_refresh.take() {
            self.consumed.insert(current);
        }
    }
}

/// How late a "lost" response comes: longer than any client timeout used with the kit.
const LOST: Duration = Duration::from_secs(120);

struct TokenEndpoint {
    grant: Arc<Mutex<Grant>>,
    lifetime: Duration,
    delay: Duration,
    reuse: ReusePolicy,
    /// How token requests must authenticate the client, if checked.
    client: Option<ClientAuth>,
    /// The server's origin: its issuer, and the base of its endpoints' URLs.
    #[cfg(any(feature = "dpop", feature = "private-key-jwt"))]
    issuer: String,
}

/// The form of a request, as `(name, value)` pairs.
fn form_of(request: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

/// The first value of `name` in `form`.
fn form_field(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
}

/// Whether `request` (whose form is `field`) authenticates as `client_id` with `secret`.
fn authenticates(
    request: &Request,
    field: &dyn Fn(&str) -> Option<String>,
    client_id: &str,
    secret: &str,
) -> bool {
    use base64::Engine as _;
    let basic = request
        .headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "));
    match basic {
        Some(encoded) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            // Each part was form-encoded (`+` for a space, `%XX` for the rest).
            let form_decoded = |part: &str| {
                url::form_urlencoded::parse(format!("v={part}").as_bytes())
                    .next()
                    .map(|(_, value)| value.into_owned())
            };
            decoded.is_some_and(|decoded| match decoded.split_once(':') {
                Some((id, pass)) => {
                    form_decoded(id).as_deref() == Some(client_id)
                        && form_decoded(pass).as_deref() == Some(secret)
                }
                None => false,
            })
        }
        None => {
            field("client_id").as_deref() == Some(client_id)
                && field("client_secret").as_deref() == Some(secret)
        }
    }
}

impl Respond for TokenEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form = form_of(request);
        let field = |name: &str| form_field(&form, name);
        let mut grant = self.grant.lock().unwrap();
        grant.refresh_calls += 1;
        let response = self.process(request, &field, &mut grant);
        grant.finish(response)
    }
}

impl TokenEndpoint {
    /// Client authentication, DPoP, faults, then the grant: each step answers before the next
    /// one runs.
    fn process(
        &self,
        request: &Request,
        field: &dyn Fn(&str) -> Option<String>,
        grant: &mut Grant,
    ) -> ResponseTemplate {
        if let Some(refused) = self.client_refusal(request, field, grant) {
            return refused;
        }
        #[cfg(feature = "dpop")]
        let jkt = match grant.dpop.token_request(request, &self.token_url()) {
            Ok(jkt) => jkt,
            Err((code, description)) => return oauth_error_described(code, description),
        };
        #[cfg(not(feature = "dpop"))]
        let jkt: Option<String> = None;
        let mut delay = self.delay;
        match grant.faults.pop_front() {
            Some(Fault::ServerError(status)) => {
                return ResponseTemplate::new(status).set_body_string("<html>unavailable</html>")
            }
            Some(Fault::InvalidGrant) => return oauth_error("invalid_grant"),
            Some(Fault::Delay(extra)) => delay += extra,
            Some(Fault::LoseResponse) => delay += LOST,
            None => {}
        }
        self.refresh(field, grant, jkt).set_delay(delay)
    }

    /// The refresh itself, for a request whose proof (if any) was signed by the key with
    /// thumbprint `jkt`.
    fn refresh(
        &self,
        field: &dyn Fn(&str) -> Option<String>,
        grant: &mut Grant,
        jkt: Option<String>,
    ) -> ResponseTemplate {
        let presented = field("refresh_token").unwrap_or_default();
        grant.presented.push(presented.clone());
        let family = grant.family_of(&presented);
        let current = family.is_some_and(|f| {
            let family = &grant.families[f];
            let in_grace = match (self.reuse, &family.previous) {
                (ReusePolicy::Grace(window), Some((previous, at))) => {
                    *previous == presented && at.elapsed() < window
                }
                _ => false,
            };
            family.current_refresh.as_deref() == Some(presented.as_str()) || in_grace
        });
        // RFC 9449 §5: a bound refresh token needs a proof of its key. Checked before reuse, as
        // node-oidc-provider does: who does not hold the key spends and revokes nothing.
        let wrong_key = family.is_some_and(|f| {
            grant.families[f]
                .jkt
                .as_ref()
                .is_some_and(|bound| jkt.as_ref() != Some(bound))
        });
        if field("grant_type").as_deref() != Some("refresh_token") {
            oauth_error("unsupported_grant_type")
        } else if wrong_key {
            oauth_error("invalid_grant")
        } else if let (Some(family), true) = (family, current) {
            let token_type = if jkt.is_some() { "DPoP" } else { "Bearer" };
            let (access, refresh) = grant.issue(family, jkt);
            ResponseTemplate::new(200)
                .insert_header("cache-control", "no-store")
                .set_body_json(serde_json::json!({
                    "access_token": access,
                    "token_type": token_type,
                    "expires_in": self.lifetime.as_secs(),
                    "refresh_token": refresh,
                }))
        } else {
            if let Some(family) = family {
                if !grant.families[family].revoked {
                    grant.reuse_detections += 1;
                }
                if self.reuse != ReusePolicy::Refuse {
                    // Reuse of a consumed refresh token: revoke the whole grant.
                    grant.families[family].revoke();
                }
            }
            oauth_error("invalid_grant")
        }
    }

    /// The `401 invalid_client` answer, unless the request authenticates as the configured
    /// client.
    fn client_refusal(
        &self,
        request: &Request,
        field: &dyn Fn(&str) -> Option<String>,
        #[cfg_attr(not(feature = "private-key-jwt"), allow(unused_variables))] grant: &mut Grant,
    ) -> Option<ResponseTemplate> {
        match self.client.as_ref()? {
            ClientAuth::Secret { client_id, secret } => {
                (!authenticates(request, field, client_id, secret.secret())).then(|| {
                    ResponseTemplate::new(401)
                        .insert_header("www-authenticate", r#"Basic realm="token""#)
                        .set_body_json(serde_json::json!({ "error": "invalid_client" }))
                })
            }
            #[cfg(feature = "private-key-jwt")]
            ClientAuth::PrivateKeyJwt(client) => {
                let audiences = [self.token_url(), self.issuer.clone()];
                let audiences = audiences.each_ref().map(String::as_str);
                client
                    .authenticate(request, field, &audiences, &mut grant.assertions_seen)
                    .err()
                    .map(invalid_client)
            }
        }
    }

    #[cfg(any(feature = "dpop", feature = "private-key-jwt"))]
    fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }
}

fn oauth_error(code: &str) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(serde_json::json!({ "error": code }))
}

/// `400` with an error code and its description.
#[cfg(feature = "dpop")]
fn oauth_error_described(code: &str, description: &str) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(serde_json::json!({
        "error": code,
        "error_description": description,
    }))
}

/// `401 invalid_client` for a refused client assertion (no `WWW-Authenticate`: the client did
/// not use the `Authorization` header, RFC 6749 §5.2).
#[cfg(feature = "private-key-jwt")]
fn invalid_client(description: &str) -> ResponseTemplate {
    ResponseTemplate::new(401).set_body_json(serde_json::json!({
        "error": "invalid_client",
        "error_description": description,
    }))
}

struct Revocation {
    grant: Arc<Mutex<Grant>>,
    /// Checked for `private_key_jwt` clients only.
    #[cfg(feature = "private-key-jwt")]
    client: Option<ClientAuth>,
    #[cfg(feature = "private-key-jwt")]
    issuer: String,
}

impl Respond for Revocation {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form = form_of(request);
        let token = form_field(&form, "token").unwrap_or_default();
        let mut grant = self.grant.lock().unwrap();
        #[cfg(feature = "private-key-jwt")]
        if let Some(ClientAuth::PrivateKeyJwt(client)) = &self.client {
            let field = |name: &str| form_field(&form, name);
            let endpoints = [
                format!("{}/revoke", self.issuer),
                format!("{}/token", self.issuer),
                self.issuer.clone(),
            ];
            let audiences = endpoints.each_ref().map(String::as_str);
            if let Err(reason) =
                client.authenticate(request, &field, &audiences, &mut grant.assertions_seen)
            {
                return invalid_client(reason);
            }
        }
        if let Some(family) = grant.family_of(&token) {
            grant.families[family].revoke();
        }
        for family in &mut grant.families {
            family.access.remove(&token);
        }
        // RFC 7009 §2.2: 200 also for a token the server does not know.
        ResponseTemplate::new(200)
    }
}

struct ProtectedApi {
    grant: Arc<Mutex<Grant>>,
    /// The server's origin, the base of the `htu` of DPoP proofs.
    #[cfg(feature = "dpop")]
    issuer: String,
}

impl Respond for ProtectedApi {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut grant = self.grant.lock().unwrap();
        grant.api_calls += 1;
        let response = match self.authorize(request, &mut grant) {
            Ok(()) => ResponseTemplate::new(200).set_body_string("ok"),
            Err(challenge) => {
                grant.api_rejections += 1;
                ResponseTemplate::new(401).insert_header("www-authenticate", challenge)
            }
        };
        grant.finish(response)
    }
}

impl ProtectedApi {
    /// `Err` with the `WWW-Authenticate` challenge of a `401`.
    fn authorize(&self, request: &Request, grant: &mut Grant) -> Result<(), String> {
        let credentials = request
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .map(|(scheme, token)| (scheme.to_ascii_lowercase(), token.trim()));
        // A resource demanding DPoP answers anything else with its bare challenge (RFC 9449
        // §7.1).
        #[cfg(feature = "dpop")]
        if grant.dpop.api_requires() && credentials.as_ref().is_none_or(|(s, _)| s != "dpop") {
            return Err(dpop::demand());
        }
        match credentials {
            Some((scheme, token)) if scheme == "bearer" => match grant.access_binding(token) {
                Some(None) => Ok(()),
                // RFC 9449 §7.2: a DPoP-bound token is not a bearer token; the challenge says
                // which scheme it needs.
                Some(Some(_)) => Err(r#"DPoP error="invalid_token""#.to_owned()),
                None => Err(r#"Bearer realm="api", error="invalid_token""#.to_owned()),
            },
            #[cfg(feature = "dpop")]
            Some((scheme, token)) if scheme == "dpop" => {
                let htu = format!("{}{}", self.issuer, request.url.path());
                dpop::authorize(grant, request, &htu, token)
            }
            // RFC 6750 §3.1: a request without a token gets a challenge without an error code.
            _ => Err(r#"Bearer realm="api""#.to_owned()),
        }
    }
}
