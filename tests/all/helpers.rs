//! The fixtures every module of this test binary shares: clients and their events
//! (`helpers/client.rs`), fault injection around real parts (`helpers/gate.rs`), and middleware
//! builders wired to the crate's test kit (`AuthServer`).

use reqwest_middleware::ClientWithMiddleware;
use reqwest_token_refresh::{RefreshTokenGrant, TokenManager, TokenManagerBuilder};

use crate::auth_server::AuthServer;

mod client;
mod gate;

pub use client::{built_with_tokens, client, events, token_error, wait_for, WAIT};
pub use gate::{reached, GatedRefresher, Point, TestStore};

/// A middleware builder wired to `server`'s token endpoint and API origin.
pub fn builder(server: &AuthServer) -> TokenManagerBuilder {
    builder_for(&server.token_url(), &server.uri())
}

/// A middleware builder for a public client of the token endpoint `token_url`, allowed to
/// send tokens to `origin` (both on loopback).
pub fn builder_for(token_url: &str, origin: &str) -> TokenManagerBuilder {
    let grant = RefreshTokenGrant::builder(token_url, "test-client")
        .danger_allow_http_loopback()
        .build()
        .expect("valid grant");
    TokenManager::builder(grant)
        .allow_origin(origin)
        .expect("valid origin")
}

/// A client for `server` whose default key starts with `tokens`.
pub async fn client_with_tokens(
    server: &AuthServer,
    tokens: reqwest_token_refresh::TokenSet,
) -> (ClientWithMiddleware, TokenManager) {
    built_with_tokens(builder(server), tokens).await
}

/// `tokens` as a stored record at `generation`, with a revision of its own. The middleware
/// assigns generations itself, so store-level tests set them through the JSON form.
pub fn record(
    tokens: reqwest_token_refresh::TokenSet,
    generation: u64,
) -> reqwest_token_refresh::TokenRecord {
    let mut json = serde_json::to_value(&tokens).expect("token set serializes");
    json["generation"] = generation.into();
    json["revision"] = reqwest_token_refresh::Revision::random().as_str().into();
    serde_json::from_value(json).expect("token record deserializes")
}

/// `tokens` bound to the authorization server of [`builder`]'s grant for `server`, as a login
/// tool writing to the store directly would bind them.
pub fn bound(
    tokens: reqwest_token_refresh::TokenSet,
    server: &AuthServer,
) -> reqwest_token_refresh::TokenSet {
    tokens.with_issued_for(format!("{} test-client", server.token_url()))
}
