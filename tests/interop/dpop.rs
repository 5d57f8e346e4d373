//! DPoP (RFC 9449) and `private_key_jwt` (RFC 7523) against the real server: node-oidc-provider
//! binds `dpop-client`'s tokens to the login's key, demands nonces at both ends when told to,
//! and authenticates `jwt-client` by its signed assertions.

use std::time::Duration;

use reqwest_middleware::ClientBuilder;
use reqwest_token_refresh::{
    ClientCredentialsGrant, DpopAlgorithm, DpopKey, TokenKey, TokenManager,
};

use crate::provider::{jwt_client_key, Client, Provider};
use crate::storms::{assert_grant_alive, client_with, expired, failures, held};

/// 500 requests on a DPoP-bound token that must be refreshed: one token request with a proof,
/// every API request with its own proof, no reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_storm_makes_one_proven_refresh() {
    let Some(provider) = Provider::start(Duration::from_secs(60)).await else {
        return;
    };
    for algorithm in [DpopAlgorithm::Es256, DpopAlgorithm::EdDsa] {
        let key = DpopKey::generate(algorithm).unwrap();
        let tokens = expired(provider.login_dpop(&key, 1).await);
        let (http, manager) = client_with(&provider, Client::Dpop, tokens).await;
        provider.reset_counters().await;
        assert_eq!(failures(&http, &provider, 500).await, 0, "{algorithm:?}");
        let counters = provider.counters().await;
        assert_eq!(counters.token_requests, 1, "{algorithm:?}: {counters:?}");
        assert_eq!(counters.rotations, 1);
        assert_eq!(counters.api_rejections, 0, "every proof was accepted");
        assert_eq!(counters.reuse_detections, 0);
        let held = held(&manager).await.unwrap();
        assert_eq!(held.token_type(), "DPoP");
        assert_eq!(held.dpop_key(), Some(&key), "the key stays with the tokens");
        assert_grant_alive(&provider, Some(held)).await;
    }
}

/// The server demands nonces at the token endpoint and at the API: each challenge is answered
/// once, the refresh token is spent once, and a server-dropped token is refreshed and replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_challenges_at_both_ends_are_answered_once() {
    let Some(provider) =
        Provider::start_with(Duration::from_secs(60), &[("DPOP_REQUIRE_NONCE", "1")]).await
    else {
        return;
    };
    let key = DpopKey::generate(DpopAlgorithm::Es256).unwrap();
    let tokens = expired(provider.login_dpop(&key, 1).await);
    let (http, manager) = client_with(&provider, Client::Dpop, tokens).await;
    provider.reset_counters().await;

    assert_eq!(failures(&http, &provider, 1).await, 0, "the first request");
    let counters = provider.counters().await;
    assert_eq!(counters.token_dpop_nonce_challenges, 1, "{counters:?}");
    assert_eq!(
        counters.token_requests, 2,
        "the refresh, then again with the nonce"
    );
    assert_eq!(counters.rotations, 1);
    assert_eq!(counters.api_dpop_nonce_challenges, 1, "{counters:?}");
    assert_eq!(
        failures(&http, &provider, 200).await,
        0,
        "the nonce is kept"
    );
    assert_eq!(provider.counters().await.api_dpop_nonce_challenges, 1);

    provider.expire_access_tokens().await;
    assert_eq!(
        failures(&http, &provider, 200).await,
        0,
        "after the server dropped the token"
    );
    let counters = provider.counters().await;
    assert_eq!(counters.rotations, 2, "{counters:?}");
    assert_eq!(counters.reuse_detections, 0);
    assert_grant_alive(&provider, held(&manager).await).await;
}

/// `private_key_jwt`: refreshes, client credentials and revocation authenticate with fresh
/// assertions of `jwt-client`'s ES256 key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_authenticates_refresh_client_credentials_and_revocation() {
    let Some(provider) = Provider::start(Duration::from_secs(60)).await else {
        return;
    };
    let tokens = expired(provider.login(Client::Jwt).await);
    let (http, manager) = client_with(&provider, Client::Jwt, tokens).await;
    provider.reset_counters().await;
    assert_eq!(failures(&http, &provider, 50).await, 0);
    let counters = provider.counters().await;
    assert_eq!(counters.rotations, 1, "{counters:?}");
    assert_eq!(counters.token_errors, 0);
    let newest = held(&manager).await.unwrap();
    let refresh_token = newest.refresh_token().unwrap().secret().to_owned();
    manager.revoke(&TokenKey::default()).await.unwrap();
    assert!(!provider.is_active(&refresh_token).await, "revoked");

    let grant = ClientCredentialsGrant::builder(provider.token_url(), Client::Jwt.id())
        .private_key_jwt(jwt_client_key())
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let manager = TokenManager::builder(grant)
        .allow_origin(provider.issuer())
        .unwrap()
        .build();
    let http = ClientBuilder::new(reqwest::Client::new())
        .with(manager.middleware())
        .build();
    assert_eq!(failures(&http, &provider, 50).await, 0);
    assert_eq!(provider.counters().await.client_credentials_grants, 1);
}
