//! Scenarios 1 and 2: many concurrent requests on a token that must be refreshed, answered by
//! one refresh at the real server, without harming the grant.

use std::time::{Duration, SystemTime};

use futures::future::join_all;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_token_refresh::{TokenKey, TokenManager, TokenSet};

use crate::provider::{Client, Provider};

const STORM: usize = 1_000;

/// A client of `provider`'s API whose default key holds `tokens` (logged in with `client`).
pub async fn client_with(
    provider: &Provider,
    client: Client,
    tokens: TokenSet,
) -> (ClientWithMiddleware, TokenManager) {
    let manager = TokenManager::builder(provider.grant(client))
        .allow_origin(provider.issuer())
        .expect("loopback origin")
        .build();
    manager
        .set_tokens(&TokenKey::default(), tokens)
        .await
        .expect("tokens accepted");
    let http = ClientBuilder::new(reqwest::Client::new())
        .with(manager.middleware())
        .build();
    (http, manager)
}

/// Sends `count` requests at once; how many did not come back 200.
pub async fn failures(client: &ClientWithMiddleware, provider: &Provider, count: usize) -> usize {
    let requests = (0..count).map(|i| client.get(provider.api_url(&format!("items/{i}"))).send());
    join_all(requests)
        .await
        .into_iter()
        .filter(|result| !matches!(result, Ok(response) if response.status() == 200))
        .count()
}

/// The grant is alive: the server still accepts the newest refresh token `held` (asked by
/// introspection, which consumes nothing).
pub async fn assert_grant_alive(provider: &Provider, held: Option<TokenSet>) {
    let held = held.expect("tokens are held");
    let refresh_token = held.refresh_token().expect("a refresh token").secret();
    assert!(
        provider.is_active(refresh_token).await,
        "the grant is alive"
    );
}

/// `tokens`, expired on our side (the server would still accept them): the next request
/// needs a refresh.
pub fn expired(tokens: TokenSet) -> TokenSet {
    tokens.with_expires_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1))
}

/// The tokens `manager` holds for the default key.
pub async fn held(manager: &TokenManager) -> Option<TokenSet> {
    manager.tokens(&TokenKey::default()).await.expect("tokens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_on_an_expired_token_makes_one_refresh_and_keeps_the_grant() {
    let Some(provider) = Provider::start(Duration::from_secs(60)).await else {
        return;
    };
    let tokens = provider.login(Client::Basic).await;
    // Expired on our side: every request needs a refresh.
    let tokens = expired(tokens);
    let (client, manager) = client_with(&provider, Client::Basic, tokens).await;
    provider.reset_counters().await;

    assert_eq!(failures(&client, &provider, STORM).await, 0);
    let counters = provider.counters().await;
    assert_eq!(counters.token_requests, 1, "{counters:?}");
    assert_eq!(counters.rotations, 1, "{counters:?}");
    assert_eq!(counters.reuse_detections, 0);
    assert_eq!(counters.revoked_grants, 0);
    assert_grant_alive(&provider, held(&manager).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_server_dropped_while_it_looks_valid_is_refreshed_once_and_replayed() {
    let Some(provider) = Provider::start(Duration::from_secs(60)).await else {
        return;
    };
    let tokens = provider.login(Client::Basic).await;
    let (client, manager) = client_with(&provider, Client::Basic, tokens).await;
    assert_eq!(failures(&client, &provider, 1).await, 0, "warm-up");
    provider.expire_access_tokens().await;
    provider.reset_counters().await;

    assert_eq!(failures(&client, &provider, STORM).await, 0);
    let counters = provider.counters().await;
    assert_eq!(counters.token_requests, 1, "{counters:?}");
    assert_eq!(counters.rotations, 1);
    assert!(counters.api_rejections >= 1, "{counters:?}");
    assert_eq!(
        counters.api_calls,
        STORM as u64 + counters.api_rejections,
        "every rejected request was replayed once: {counters:?}"
    );
    assert_eq!(counters.reuse_detections, 0);
    assert_grant_alive(&provider, held(&manager).await).await;
}
