//! The token endpoint of section 6 ("fleet"): a rotating refresh token per key for up to
//! millions of keys, on hyper, bound to 127.0.0.1 only, on a runtime thread of its own.
//!
//! Key `k` (`user-k`) holds generation `g` as access token `at-k-g-aaa…` and refresh token
//! `rt-k-g-rrr…` (padded to 43 characters, a common opaque-token size). Generation 0 is what
//! the benchmark seeds; the endpoint accepts only the key's current refresh token, answers with
//! generation `g + 1` (access token valid for an hour) and counts, per key, every call it got.
//! A refresh token already consumed counts as a reuse and is answered `invalid_grant`, as a
//! server with reuse detection would.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::server::serve_on_loopback;

/// How long the access tokens the endpoint issues live.
pub const ISSUED_LIFETIME: Duration = Duration::from_secs(3600);

/// Token `kind` (`at` or `rt`) of key `key`, generation `generation`, padded to 43 characters.
pub fn token(kind: &str, key: usize, generation: u32) -> String {
    let pad = if kind == "at" { 'a' } else { 'r' };
    let mut token = format!("{kind}-{key}-{generation}-");
    while token.len() < 43 {
        token.push(pad);
    }
    token
}

/// The key and generation of a token made by [`token`] of `kind`.
pub fn parse(kind: &str, token: &str) -> Option<(usize, u32)> {
    let mut parts = token.strip_prefix(kind)?.strip_prefix('-')?.split('-');
    let key = parts.next()?.parse().ok()?;
    let generation = parts.next()?.parse().ok()?;
    Some((key, generation))
}

struct State {
    /// The generation of each key's current refresh token.
    generation: Vec<AtomicU32>,
    /// Token calls per key.
    calls: Vec<AtomicU32>,
    total_calls: AtomicU64,
    reuse: AtomicU64,
    malformed: AtomicU64,
    delay: Duration,
}

/// The server; it runs until the process exits.
#[derive(Clone)]
pub struct FleetServer {
    addr: SocketAddr,
    state: Arc<State>,
}

impl FleetServer {
    /// Serves `keys` keys; the token endpoint answers after `delay` (an identity provider's
    /// latency).
    pub fn start(keys: usize, delay: Duration) -> Self {
        let state = Arc::new(State {
            generation: (0..keys).map(|_| AtomicU32::new(0)).collect(),
            calls: (0..keys).map(|_| AtomicU32::new(0)).collect(),
            total_calls: AtomicU64::new(0),
            reuse: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            delay,
        });
        let addr = serve_on_loopback(Arc::clone(&state), |state, request| async move {
            respond(&state, request).await
        });
        Self { addr, state }
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Every call to the token endpoint.
    pub fn total_calls(&self) -> u64 {
        self.state.total_calls.load(Ordering::SeqCst)
    }

    /// Calls for key `key`.
    pub fn calls(&self, key: usize) -> u32 {
        self.state.calls[key].load(Ordering::SeqCst)
    }

    /// Calls with a refresh token already consumed (answered `invalid_grant`).
    pub fn reuse(&self) -> u64 {
        self.state.reuse.load(Ordering::SeqCst)
    }

    /// Calls whose refresh token was not one of ours.
    pub fn malformed(&self) -> u64 {
        self.state.malformed.load(Ordering::SeqCst)
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

async fn respond(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/token" {
        return json(StatusCode::NOT_FOUND, String::new());
    }
    state.total_calls.fetch_add(1, Ordering::SeqCst);
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return json(StatusCode::BAD_REQUEST, String::new()),
    };
    let presented = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "refresh_token")
        .and_then(|(_, value)| parse("rt", &value))
        .filter(|(key, _)| *key < state.generation.len());
    let Some((key, generation)) = presented else {
        state.malformed.fetch_add(1, Ordering::SeqCst);
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant"}"#.to_owned(),
        );
    };
    state.calls[key].fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(state.delay).await;
    // Rotation: only the current refresh token is accepted, once.
    let rotated = state.generation[key].compare_exchange(
        generation,
        generation + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    if rotated.is_err() {
        state.reuse.fetch_add(1, Ordering::SeqCst);
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant"}"#.to_owned(),
        );
    }
    let next = generation + 1;
    json(
        StatusCode::OK,
        format!(
            r#"{{"access_token":"{}","token_type":"Bearer","expires_in":{},"refresh_token":"{}"}}"#,
            token("at", key, next),
            ISSUED_LIFETIME.as_secs(),
            token("rt", key, next)
        ),
    )
}
