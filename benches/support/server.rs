//! A fast in-process loopback server for the benchmarks: an API under `/api/` and a rotating
//! token endpoint at `/token`, on hyper (HTTP/1 and HTTP/2 prior knowledge), bound to
//! 127.0.0.1 only.
//!
//! Access tokens are `at-N`, refresh tokens `rt-N`. The API answers 200 to a request without
//! `Authorization` (the plain client) or with a token not older than `min_valid`, and 401
//! `invalid_token` otherwise. The token endpoint accepts only the current refresh token (every
//! refresh rotates it) and counts reuse of a consumed one.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use reqwest_token_refresh::{AccessToken, RefreshToken, TokenSet};

#[derive(Default)]
struct State {
    issued: AtomicU64,
    min_valid: AtomicU64,
    current_refresh: Mutex<String>,
    token_calls: AtomicU64,
    reuse: AtomicU64,
    token_delay: Duration,
}

/// The server; it runs on its own runtime thread until the process exits.
#[derive(Clone)]
pub struct Server {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Server {
    /// Starts the server on a dedicated single-threaded Tokio runtime; the token endpoint
    /// answers after `token_delay` (an identity provider's latency).
    pub fn start(token_delay: Duration) -> Self {
        let state = Arc::new(State {
            token_delay,
            ..State::default()
        });
        let addr = serve_on_loopback(Arc::clone(&state), |state, request| async move {
            route(&state, request).await
        });
        Self { addr, state }
    }

    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.uri())
    }

    pub fn api_url(&self) -> String {
        format!("{}/api/item", self.uri())
    }

    /// A new grant, as a login would give: the previous refresh token stops working.
    pub fn issue_grant(&self, lifetime: Duration) -> TokenSet {
        let n = self.state.issued.fetch_add(1, Ordering::SeqCst) + 1;
        *self.state.current_refresh.lock().unwrap() = format!("rt-{n}");
        TokenSet::new(AccessToken::new(format!("at-{n}")))
            .with_refresh_token(RefreshToken::new(format!("rt-{n}")))
            .with_expires_in(lifetime)
    }

    /// Makes the API reject every access token issued so far (as a revocation would).
    pub fn reject_current_tokens(&self) {
        let issued = self.state.issued.load(Ordering::SeqCst);
        self.state.min_valid.store(issued + 1, Ordering::SeqCst);
    }

    pub fn token_calls(&self) -> u64 {
        self.state.token_calls.load(Ordering::SeqCst)
    }

    pub fn reuse_detections(&self) -> u64 {
        self.state.reuse.load(Ordering::SeqCst)
    }
}

/// Serves `handle` on a free port of 127.0.0.1 (HTTP/1 and HTTP/2), on a single-threaded
/// Tokio runtime in a thread of its own, until the process exits; returns the address.
pub fn serve_on_loopback<S, F, Fut>(state: Arc<S>, handle: F) -> SocketAddr
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let response = handle(Arc::clone(&state), request);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    addr
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

async fn route(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() == "/token" {
        return token(state, request).await;
    }
    let number = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer at-"))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        });
    match number {
        Some(n) if n < state.min_valid.load(Ordering::Relaxed) || n == 0 => {
            let mut response = text(StatusCode::UNAUTHORIZED, "");
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static(
                    r#"Bearer realm="api", error="invalid_token""#,
                ),
            );
            response
        }
        _ => text(StatusCode::OK, "ok"),
    }
}

async fn token(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    state.token_calls.fetch_add(1, Ordering::SeqCst);
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return text(StatusCode::BAD_REQUEST, ""),
    };
    tokio::time::sleep(state.token_delay).await;
    let presented = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "refresh_token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let n = {
        let mut current = state.current_refresh.lock().unwrap();
        if *current != presented {
            state.reuse.fetch_add(1, Ordering::SeqCst);
            let mut response = text(StatusCode::BAD_REQUEST, r#"{"error":"invalid_grant"}"#);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            return response;
        }
        let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
        *current = format!("rt-{n}");
        n
    };
    let body = format!(
        r#"{{"access_token":"at-{n}","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-{n}"}}"#
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
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
