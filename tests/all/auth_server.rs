//! A loopback authorization server and protected API that behave like strict real servers
//! (REQUIREMENTS P-STRICT): every refresh rotates the refresh token, and presenting a consumed
//! refresh token is reuse: the whole grant is revoked (every refresh and access token) and
//! `invalid_grant` is returned, as node-oidc-provider, Hydra and Auth0 do.
//!
//! Shared by the integration tests and `examples/demo.rs`.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest_token_refresh::{AccessToken, RefreshToken, TokenSet};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Everything the server saw, for the invariants the tests check.
#[derive(Debug, Default)]
struct Grant {
    issued: u64,
    current_refresh: Option<String>,
    consumed: HashSet<String>,
    valid_access: HashSet<String>,
    revoked: bool,
    refresh_calls: u64,
    reuse_detections: u64,
    api_calls: u64,
    api_rejections: u64,
}

/// The server: a token endpoint at `/token` and a protected API under `/api/`.
#[derive(Clone)]
pub struct AuthServer {
    pub server: Arc<MockServer>,
    grant: Arc<Mutex<Grant>>,
    lifetime: Duration,
}

impl AuthServer {
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
                Mock::given(path_regex("^/api/.*")).respond_with(ProtectedApi {
                    grant: Arc::clone(&this.grant),
                }),
            )
            .await;
        this
    }

    /// Issues a fresh grant (access + refresh token) as the authorization-code flow would.
    pub fn issue_grant(&self) -> TokenSet {
        let mut grant = self.grant.lock().unwrap();
        grant.revoked = false;
        let (access, refresh) = grant.issue();
        TokenSet::new(AccessToken::new(access))
            .with_refresh_token(RefreshToken::new(refresh))
            .with_expires_in(self.lifetime)
    }

    /// Same grant, but the access token already expired on our side.
    pub fn issue_expired_grant(&self) -> TokenSet {
        let tokens = self.issue_grant();
        tokens.with_expires_at(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1))
    }

    /// Revokes the grant: its refresh and access tokens stop working.
    pub fn revoke_grant(&self) {
        self.grant.lock().unwrap().revoke();
    }

    /// Makes every access token issued so far invalid (the API answers 401 to them).
    pub fn reject_current_access_tokens(&self) {
        self.grant.lock().unwrap().valid_access.clear();
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.server.uri())
    }

    pub fn api_url(&self, rest: &str) -> String {
        format!("{}/api/{rest}", self.server.uri())
    }

    pub fn refresh_calls(&self) -> u64 {
        self.grant.lock().unwrap().refresh_calls
    }

    pub fn reuse_detections(&self) -> u64 {
        self.grant.lock().unwrap().reuse_detections
    }

    pub fn api_calls(&self) -> u64 {
        self.grant.lock().unwrap().api_calls
    }

    pub fn api_rejections(&self) -> u64 {
        self.grant.lock().unwrap().api_rejections
    }

    pub fn is_revoked(&self) -> bool {
        self.grant.lock().unwrap().revoked
    }

    /// The refresh token the server would accept now.
    pub fn current_refresh_token(&self) -> Option<String> {
        self.grant.lock().unwrap().current_refresh.clone()
    }
}

impl Grant {
    fn issue(&mut self) -> (String, String) {
        self.issued += 1;
        let access = format!("at-{}", self.issued);
        let refresh = format!("rt-{}", self.issued);
        self.valid_access.insert(access.clone());
        if let Some(old) = self.current_refresh.replace(refresh.clone()) {
            self.consumed.insert(old);
        }
        (access, refresh)
    }

    fn revoke(&mut self) {
        self.revoked = true;
        self.valid_access.clear();
        if let Some(current) = self.current_refresh.take() {
            self.consumed.insert(current);
        }
    }
}

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
        let presented = field("refresh_token");
        let response = if field("grant_type").as_deref() != Some("refresh_token") {
            oauth_error("unsupported_grant_type")
        } else if presented.is_some() && presented == grant.current_refresh && !grant.revoked {
            let (access, refresh) = grant.issue();
            ResponseTemplate::new(200)
                .insert_header("cache-control", "no-store")
                .set_body_json(serde_json::json!({
                    "access_token": access,
                    "token_type": "Bearer",
                    "expires_in": self.lifetime.as_secs(),
                    "refresh_token": refresh,
                }))
        } else {
            if presented
                .as_ref()
                .is_some_and(|rt| grant.consumed.contains(rt))
            {
                // Reuse of a consumed refresh token: revoke the whole grant.
                grant.reuse_detections += 1;
                grant.revoke();
            }
            oauth_error("invalid_grant")
        };
        response.set_delay(self.delay)
    }
}

fn oauth_error(code: &str) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(serde_json::json!({ "error": code }))
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
            Some(token) if grant.valid_access.contains(&token) => {
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
