use std::time::Duration;

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_token_refresh::{
    Event, RefreshTokenGrant, TokenKey, TokenManager, TokenRefreshMiddleware,
    TokenRefreshMiddlewareBuilder,
};
use tokio::sync::mpsc;

use crate::auth_server::AuthServer;

/// A middleware builder wired to `server`'s token endpoint and API origin.
pub fn builder(server: &AuthServer) -> TokenRefreshMiddlewareBuilder {
    builder_for(&server.token_url(), &server.uri())
}

/// A middleware builder for a public client of the token endpoint `token_url`, allowed to
/// send tokens to `origin` (both on loopback).
pub fn builder_for(token_url: &str, origin: &str) -> TokenRefreshMiddlewareBuilder {
    let grant = RefreshTokenGrant::builder(token_url)
        .client_id("test-client")
        .danger_allow_http_loopback()
        .build()
        .expect("valid grant");
    TokenRefreshMiddleware::builder(grant)
        .allow_origin(origin)
        .danger_allow_http_loopback()
}

/// A client using `middleware`, and the manager behind it.
pub fn client(middleware: TokenRefreshMiddleware) -> (ClientWithMiddleware, TokenManager) {
    let manager = middleware.manager().clone();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build();
    (client, manager)
}

/// A client for `server` whose default key starts with `tokens`.
pub async fn client_with_tokens(
    server: &AuthServer,
    tokens: reqwest_token_refresh::TokenSet,
) -> (ClientWithMiddleware, TokenManager) {
    let (client, manager) = client(builder(server).build().expect("valid middleware"));
    manager
        .set_tokens(&TokenKey::default(), tokens)
        .await
        .expect("tokens accepted");
    (client, manager)
}

/// A channel receiving every event of a middleware.
pub fn events(
    builder: TokenRefreshMiddlewareBuilder,
) -> (
    TokenRefreshMiddlewareBuilder,
    mpsc::UnboundedReceiver<Event>,
) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let builder = builder.on_event(move |event| {
        let _ = sender.send(event.clone());
    });
    (builder, receiver)
}

/// Waits (bounded) for the first event matching `wanted`.
pub async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<Event>,
    wanted: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.recv().await.expect("event channel open");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
    .expect("event within 10 s")
}

/// The crate error inside a middleware error.
pub fn token_error(error: &reqwest_middleware::Error) -> &reqwest_token_refresh::Error {
    match error {
        reqwest_middleware::Error::Middleware(error) => error
            .downcast_ref::<reqwest_token_refresh::Error>()
            .expect("a reqwest_token_refresh::Error"),
        other => panic!("expected a middleware error, got {other}"),
    }
}
