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
//! configured ([`MockAuthorizationServerBuilder::client`]).
// Test fixtures: a broken fixture panics loudly, which is what a test wants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod store_contract;

use std::collections::{HashSet, VecDeque};
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
    access: HashSet<String>,
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

/// A misbehaviour of the token endpoint, applied to the next token request.
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
    client: Option<(String, String)>,
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
    /// default the server checks no client authentication.
    pub fn client(mut self, client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.client = Some((client_id.into(), secret.into()));
        self
    }

    /// Makes wiremock verify, when the server is dropped, that the token endpoint was called
    /// exactly `calls` times (the test fails otherwise).
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
        }
    }

    async fn start_configured(config: MockAuthorizationServerBuilder) -> Self {
        let server = Arc::new(MockServer::start().await);
        let this = Self {
            server,
            grant: Arc::default(),
            lifetime: config.lifetime,
        };
        let mut token = Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(TokenEndpoint {
                grant: Arc::clone(&this.grant),
                lifetime: config.lifetime,
                delay: config.delay,
                reuse: config.reuse,
                client: config.client,
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
                    }),
            )
            .await;
        this.server
            .register(
                Mock::given(path_regex("^/api/.*")).respond_with(ProtectedApi {
                    grant: Arc::clone(&this.grant),
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
        let mut grant = self.grant.lock().unwrap();
        grant.families.push(Family::default());
        let family = grant.families.len() - 1;
        let (access, refresh) = grant.issue(family);
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

    /// Token requests received.
    pub fn refresh_calls(&self) -> u64 {
        self.grant.lock().unwrap().refresh_calls
    }

    /// Times a consumed refresh token came back to a grant not yet revoked (under
    /// [`ReusePolicy::RevokeGrant`], each revoked it).
    pub fn reuse_detections(&self) -> u64 {
        self.grant.lock().unwrap().reuse_detections
    }

    /// Every refresh token presented to the token endpoint, in order.
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
    /// New tokens for `family`; its previous refresh token becomes consumed.
    fn issue(&mut self, family: usize) -> (String, String) {
        self.issued += 1;
        let access = format!("at-{}", self.issued);
        let refresh = format!("rt-{}", self.issued);
        let family = &mut self.families[family];
        family.access.insert(access.clone());
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

    fn accepts(&self, access: &str) -> bool {
        self.families
            .iter()
            .any(|family| family.access.contains(access))
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
    /// The client id and secret token requests must authenticate with, if checked.
    client: Option<(String, String)>,
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
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        let field = |name: &str| {
            form.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let mut grant = self.grant.lock().unwrap();
        grant.refresh_calls += 1;
        if let Some((client_id, secret)) = &self.client {
            if !authenticates(request, &field, client_id, secret) {
                return ResponseTemplate::new(401)
                    .insert_header("www-authenticate", r#"Basic realm="token""#)
                    .set_body_json(serde_json::json!({ "error": "invalid_client" }));
            }
        }
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
        let response = if field("grant_type").as_deref() != Some("refresh_token") {
            oauth_error("unsupported_grant_type")
        } else if let (Some(family), true) = (family, current) {
            let (access, refresh) = grant.issue(family);
            ResponseTemplate::new(200)
                .insert_header("cache-control", "no-store")
                .set_body_json(serde_json::json!({
                    "access_token": access,
                    "token_type": "Bearer",
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
        };
        response.set_delay(delay)
    }
}

fn oauth_error(code: &str) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(serde_json::json!({ "error": code }))
}

struct Revocation {
    grant: Arc<Mutex<Grant>>,
}

impl Respond for Revocation {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let token = url::form_urlencoded::parse(&request.body)
            .find(|(key, _)| key == "token")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        let mut grant = self.grant.lock().unwrap();
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
}

impl Respond for ProtectedApi {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let token = request
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::to_owned);
        let mut grant = self.grant.lock().unwrap();
        grant.api_calls += 1;
        match token {
            Some(token) if grant.accepts(&token) => {
                ResponseTemplate::new(200).set_body_string("ok")
            }
            // RFC 6750 §3.1: a request without a token gets a challenge without an error code.
            None => {
                grant.api_rejections += 1;
                ResponseTemplate::new(401)
                    .insert_header("www-authenticate", r#"Bearer realm="api""#)
            }
            Some(_) => {
                grant.api_rejections += 1;
                ResponseTemplate::new(401).insert_header(
                    "www-authenticate",
                    r#"Bearer realm="api", error="invalid_token""#,
                )
            }
        }
    }
}
