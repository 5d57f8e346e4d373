//! Fixtures for the hardening suite, over the binary's shared ones (`crate::helpers`) and the
//! crate's test kit (`AuthServer`, a rotating authorization server with reuse policies and
//! fault injection): clients wired to a token endpoint, the bearer token a request carried,
//! and a raw TCP server for bodies wiremock cannot produce (huge, trickling).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use reqwest_middleware::ClientWithMiddleware;
use reqwest_token_refresh::{
    Error, RefreshTokenGrant, TokenKey, TokenManager, TokenManagerBuilder, TokenRefresher, TokenSet,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::Request;

pub use crate::auth_server::{AuthServer, Fault, ReusePolicy};
pub use crate::helpers::{
    built_with_tokens, client, events, reached, token_error, wait_for, GatedRefresher, Point,
    TestStore, WAIT,
};

// ---------------------------------------------------------------------------------------------
// What the API saw

/// The bearer token the last request to `path` (on `server`) carried: what the API saw, where
/// the response body says only `ok`.
pub async fn last_bearer_at(server: &AuthServer, path: &str) -> Option<String> {
    let requests = server
        .mock_server()
        .received_requests()
        .await
        .expect("request recording is on");
    let last = requests
        .iter()
        .rev()
        .find(|request| request.url.path() == path)
        .unwrap_or_else(|| panic!("no request to {path}"));
    bearer(last)
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
pub async fn client_for(
    server: &AuthServer,
    tokens: TokenSet,
) -> (ClientWithMiddleware, TokenManager) {
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
