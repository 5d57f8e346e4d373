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

/// One grant (one user's authorization): its current refresh token and the consumed ones.
#[derive(Debug, Default)]
struct Family {
    current_refresh: Option<String>,
    consumed: HashSet<String>,
    access: HashSet<String>,
    revoked: bool,
}

/// Everything the server saw, for the invariants the tests check.
#[derive(Debug, Default)]
struct Grant {
    issued: u64,
    families: Vec<Family>,
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
