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
//! use std::time::Duration;
//! use reqwest_middleware::ClientBuilder;
//! use reqwest_token_refresh::test_util::{Fault, MockAuthorizationServer};
//! use reqwest_token_refresh::{RefreshTokenGrant, TokenKey, TokenRefreshMiddleware};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = MockAuthorizationServer::start(Duration::from_secs(3600)).await;
//! let grant = RefreshTokenGrant::builder(server.token_url())
//!     .client_id("my-client")
//!     .danger_allow_http_loopback()
//!     .build()?;
//! let middleware = TokenRefreshMiddleware::builder(grant)
//!     .allow_origin(server.uri())
//!     .danger_allow_http_loopback()
//!     .build()?;
//! middleware
//!     .manager()
//!     .set_tokens(&TokenKey::default(), server.issue_expired_grant())
//!     .await?;
//! let client = ClientBuilder::new(reqwest::Client::new()).with(middleware).build();
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
//! The API answers `200 ok` under `/api/` to a current access token and `401` with
//! `WWW-Authenticate: Bearer error="invalid_token"` to anything else.

pub mod store_contract;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::VecDeque;

use crate::{AccessToken, RefreshToken, TokenSet};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// One grant (one user's authorization): its current refresh token and the consumed ones.
#[derive(Default)]
struct Family {
    current_refresh: Option<String>,
    consumed: HashSet<String>,
    access: HashSet<String>,
    revoked: bool,
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

impl MockAuthorizationServer {
    /// Starts the server; tokens it issues live `lifetime`.
    pub async fn start(lifetime: Duration) -> Self {
        Self::start_with(lifetime, None, Duration::ZERO).await
    }

    /// Starts the server, with wiremock verifying on drop that the token endpoint was called
    /// exactly `expected_refreshes` times, and delaying every token response by `delay`.
    pub async fn start_with(
        lifetime: Duration,
        expected_refreshes: Option<u64>,
        delay: Duration,
    ) -> Self {
        let server = Arc::new(MockServer::start().await);
        let this = Self {
            server,
            grant: Arc::default(),
            lifetime,
        };
        let mut token = Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(TokenEndpoint {
                grant: Arc::clone(&this.grant),
                lifetime,
                delay,
            });
        if let Some(expected) = expected_refreshes {
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

    /// Times a consumed refresh token came back (each revoked a grant).
    pub fn reuse_detections(&self) -> u64 {
        self.grant.lock().unwrap().reuse_detections
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
            family.consumed.insert(old);
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
        let family = grant.family_of(&presented);
        let current = family.is_some_and(|f| {
            grant.families[f].current_refresh.as_deref() == Some(presented.as_str())
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
                    // Reuse of a consumed refresh token: revoke the whole grant.
                    grant.reuse_detections += 1;
                }
                grant.families[family].revoke();
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
            _ => {
                grant.api_rejections += 1;
                ResponseTemplate::new(401).insert_header(
                    "www-authenticate",
                    r#"Bearer realm="api", error="invalid_token""#,
                )
            }
        }
    }
}
