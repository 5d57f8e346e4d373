//! Fixtures for the hardening suite: a small authorization server with configurable reuse
//! behaviour that records every refresh token presented, a store and a refresher that can be
//! paused or made to fail at a named point, and a raw TCP server for bodies wiremock cannot
//! produce (huge, trickling).
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest_middleware::ClientWithMiddleware;
use reqwest_token_refresh::{
    AccessToken, Error, RefreshToken, RefreshTokenGrant, TokenKey, TokenManager,
    TokenManagerBuilder, TokenRefresher, TokenSet,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

#[path = "../common/client.rs"]
mod shared;

/// The crate's public test kit, for the tests that need several grants.
pub use reqwest_token_refresh::test_util as kit;

pub use shared::gate::{reached, GatedRefresher, Point, TestStore};
pub use shared::{built_with_tokens, client, events, token_error, wait_for, WAIT};

// ---------------------------------------------------------------------------------------------
// Authorization server

/// What the server does when a refresh token other than the current one is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Strict (node-oidc-provider, Hydra without grace): revoke the whole grant.
    Strict,
    /// Keycloak "Stale token": refuse with `invalid_grant`, revoke nothing.
    Stale,
    /// Okta-like: the immediately previous refresh token stays valid for this long.
    Grace(Duration),
}

#[derive(Default)]
struct AsState {
    issued: u64,
    current: Option<String>,
    previous: Option<(String, Instant)>,
    consumed: HashSet<String>,
    access: HashSet<String>,
    presented: Vec<String>,
    reuse_detections: u64,
    api_calls: u64,
}

/// A rotating authorization server (`/token`) and a protected API (`/api/…`) on loopback.
#[derive(Clone)]
pub struct MiniAs {
    pub server: Arc<MockServer>,
    state: Arc<Mutex<AsState>>,
}

pub struct AsConfig {
    pub reuse: Reuse,
    pub lifetime: Duration,
    /// Delay of every token response; the rotation is committed *before* it (a lost response
    /// when the client gives up first).
    pub delay: Duration,
    /// This many first token responses are delayed by `lost_after` instead (the client times
    /// out: the response is lost after the server committed).
    pub slow_first: usize,
    pub lost_after: Duration,
    pub expected_token_calls: Option<u64>,
}

impl Default for AsConfig {
    fn default() -> Self {
        Self {
            reuse: Reuse::Strict,
            lifetime: Duration::from_secs(3600),
            delay: Duration::ZERO,
            slow_first: 0,
            lost_after: Duration::from_secs(2),
            expected_token_calls: None,
        }
    }
}

impl MiniAs {
    pub async fn start(config: AsConfig) -> Self {
        let this = Self {
            server: Arc::new(MockServer::start().await),
            state: Arc::default(),
        };
        let mut token = Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(TokenEndpoint {
                state: Arc::clone(&this.state),
                reuse: config.reuse,
                lifetime: config.lifetime,
                delay: config.delay,
                slow_first: std::sync::atomic::AtomicUsize::new(config.slow_first),
                lost_after: config.lost_after,
            });
        if let Some(expected) = config.expected_token_calls {
            token = token.expect(expected);
        }
        this.server.register(token).await;
        this.server
            .register(Mock::given(path_regex("^/api/")).respond_with(Api {
                state: Arc::clone(&this.state),
            }))
            .await;
        this
    }

    pub async fn strict() -> Self {
        Self::start(AsConfig::default()).await
    }

    /// A new grant, as the authorization-code flow would hand it over.
    pub fn issue_grant(&self) -> TokenSet {
        let (access, refresh) = self.state.lock().unwrap().issue();
        TokenSet::new(AccessToken::new(access))
            .with_refresh_token(RefreshToken::new(refresh))
            .with_expires_in(Duration::from_secs(3600))
    }

    /// The same, with an access token that already expired on our side.
    pub fn issue_expired_grant(&self) -> TokenSet {
        self.issue_grant()
            .with_expires_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1))
    }

    /// An administrator revokes the grant: every refresh and access token stops working.
    pub fn revoke(&self) {
        let mut state = self.state.lock().unwrap();
        if let Some(current) = state.current.take() {
            state.consumed.insert(current);
        }
        state.previous = None;
        state.access.clear();
    }

    /// The API starts rejecting every access token issued so far.
    pub fn reject_access_tokens(&self) {
        self.state.lock().unwrap().access.clear();
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

    /// Every refresh token presented to `/token`, in order.
    pub fn presented(&self) -> Vec<String> {
        self.state.lock().unwrap().presented.clone()
    }
    pub fn token_calls(&self) -> usize {
        self.state.lock().unwrap().presented.len()
    }
    pub fn reuse_detections(&self) -> u64 {
        self.state.lock().unwrap().reuse_detections
    }
    pub fn api_calls(&self) -> u64 {
        self.state.lock().unwrap().api_calls
    }
    pub fn current_refresh_token(&self) -> Option<String> {
        self.state.lock().unwrap().current.clone()
    }

    /// For servers without a grace window: no refresh token was presented twice.
    pub fn assert_no_refresh_token_reused(&self) {
        let presented = self.presented();
        let unique: HashSet<_> = presented.iter().collect();
        assert_eq!(
            unique.len(),
            presented.len(),
            "a refresh token was presented twice: {presented:?}"
        );
        assert_eq!(self.reuse_detections(), 0);
    }
}

impl AsState {
    fn issue(&mut self) -> (String, String) {
        self.issued += 1;
        let access = format!("at-{}", self.issued);
        let refresh = format!("rt-{}", self.issued);
        self.access.insert(access.clone());
        if let Some(old) = self.current.replace(refresh.clone()) {
            self.consumed.insert(old.clone());
            self.previous = Some((old, Instant::now()));
        }
        (access, refresh)
    }
}

struct TokenEndpoint {
    state: Arc<Mutex<AsState>>,
    reuse: Reuse,
    lifetime: Duration,
    delay: Duration,
    slow_first: std::sync::atomic::AtomicUsize,
    lost_after: Duration,
}

impl Respond for TokenEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let presented = url::form_urlencoded::parse(&request.body)
            .find(|(name, _)| name == "refresh_token")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        let mut state = self.state.lock().unwrap();
        state.presented.push(presented.clone());
        let in_grace = match (self.reuse, &state.previous) {
            (Reuse::Grace(window), Some((previous, at))) => {
                *previous == presented && at.elapsed() < window
            }
            _ => false,
        };
        let response = if state.current.as_deref() == Some(presented.as_str()) || in_grace {
            let (access, refresh) = state.issue();
            ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": self.lifetime.as_secs(),
                "refresh_token": refresh,
            }))
        } else {
            if state.consumed.contains(&presented) && self.reuse == Reuse::Strict {
                if state.current.is_some() {
                    state.reuse_detections += 1;
                }
                if let Some(current) = state.current.take() {
                    state.consumed.insert(current);
                }
                state.access.clear();
            }
            ResponseTemplate::new(400).set_body_json(serde_json::json!({
                "error": "invalid_grant",
                "error_description": "refresh token already used or unknown",
            }))
        };
        let slow = self
            .slow_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        response.set_delay(if slow { self.lost_after } else { self.delay })
    }
}

struct Api {
    state: Arc<Mutex<AsState>>,
}

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let token = bearer(request);
        let mut state = self.state.lock().unwrap();
        state.api_calls += 1;
        match token {
            Some(token) if state.access.contains(&token) => {
                ResponseTemplate::new(200).set_body_string(token)
            }
            _ => ResponseTemplate::new(401)
                .insert_header("www-authenticate", r#"Bearer error="invalid_token""#),
        }
    }
}

/// The bearer token a request carried.
pub fn bearer(request: &Request) -> Option<String> {
    request
        .headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// Clients

pub fn grant(token_url: &str) -> RefreshTokenGrant {
    RefreshTokenGrant::builder(token_url, "hardening")
        .danger_allow_http_loopback()
        .build()
        .expect("valid grant")
}

pub fn middleware(refresher: impl TokenRefresher, origin: &str) -> TokenManagerBuilder {
    TokenManager::builder(refresher)
        .allow_origin(origin)
        .expect("valid origin")
}

/// A client of `server`'s API (default settings) whose default key starts with `tokens`.
pub async fn client_for(server: &MiniAs, tokens: TokenSet) -> (ClientWithMiddleware, TokenManager) {
    let (client, manager) = client(middleware(grant(&server.token_url()), &server.uri()).build());
    manager.set_tokens(&key(), tokens).await.unwrap();
    (client, manager)
}

pub fn key() -> TokenKey {
    TokenKey::default()
}

/// A client of `refresher` allowed to send tokens to `origin`, persisting to a fresh
/// [`TestStore`], whose default key starts with `tokens`.
pub async fn client_with_store(
    refresher: impl TokenRefresher,
    origin: &str,
    tokens: TokenSet,
) -> (ClientWithMiddleware, TokenManager, Arc<TestStore>) {
    let store = TestStore::memory();
    let builder = middleware(refresher, origin).store(store.clone());
    let (client, manager) = built_with_tokens(builder, tokens).await;
    (client, manager, store)
}

/// A client using the middleware `builder` builds, the channel receiving its events, and its
/// manager, whose default key starts with `tokens`.
pub async fn client_with_events(
    builder: TokenManagerBuilder,
    tokens: TokenSet,
) -> (
    ClientWithMiddleware,
    TokenManager,
    tokio::sync::mpsc::UnboundedReceiver<reqwest_token_refresh::Event>,
) {
    let (builder, events) = events(builder);
    let (client, manager) = built_with_tokens(builder, tokens).await;
    (client, manager, events)
}

/// The token error a request to `url` fails with.
pub async fn failed_request(client: &ClientWithMiddleware, url: String) -> Error {
    let error = client.get(url).send().await.unwrap_err();
    token_error(&error).clone()
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP server

/// A loopback server answering every connection with `respond`, for bodies wiremock cannot
/// produce. Returns its base URL and the number of body bytes it managed to write.
pub async fn raw_server<F, Fut>(respond: F) -> (String, Arc<AtomicU64>)
where
    F: Fn(tokio::net::TcpStream, Arc<AtomicU64>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            // Read the request head (and whatever part of the small form body came with it).
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => head.extend_from_slice(&buffer[..read]),
                }
            }
            tokio::spawn(respond(stream, Arc::clone(&counter)));
        }
    });
    (url, written)
}

/// Writes `total` bytes of body in 64 KiB chunks, counting what the peer accepted.
pub async fn stream_body(stream: &mut tokio::net::TcpStream, total: u64, written: &AtomicU64) {
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        match stream.write_all(&chunk).await {
            Ok(()) => {
                sent += chunk.len() as u64;
                written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            Err(_) => return,
        }
    }
}
