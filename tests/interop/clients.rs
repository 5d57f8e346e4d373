//! Scenarios 5 to 7: each way of authenticating the client, client credentials, discovery,
//! logout with revocation, and a grant the server's administrator revoked.

use std::time::Duration;

use reqwest_middleware::ClientBuilder;
use reqwest_token_refresh::{
    ClientCredentialsGrant, ClientSecret, Discovery, Error, TokenKey, TokenManager,
};

use crate::provider::{Client, Provider, SERVICE_CLIENT, SERVICE_SECRET};
use crate::storms::{assert_grant_alive, client_with, expired, failures, held};

/// The server authenticates each client only by its registered method (strict mode), with
/// secrets full of reserved characters: a refresh succeeds only if the crate encoded them as
/// RFC 6749 §2.3.1 says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_authentication_method_refreshes() {
    let Some(provider) = Provider::start(Duration::from_secs(60)).await else {
        return;
    };
    for client in [Client::Basic, Client::Post, Client::Public] {
        let tokens = expired(provider.login(client).await);
        let (http, manager) = client_with(&provider, client, tokens).await;
        provider.reset_counters().await;
        assert_eq!(failures(&http, &provider, 20).await, 0, "{client:?}");
        let counters = provider.counters().await;
        assert_eq!(counters.rotations, 1, "{client:?}: {counters:?}");
        assert_eq!(counters.token_errors, 0, "{client:?}: {counters:?}");
        assert_grant_alive(&provider, held(&manager).await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_are_obtained_once_for_concurrent_requests() {
    let Some(provider) = Provider::start(Duration::from_secs(60)).await else {
        return;
    };
    let grant = ClientCredentialsGrant::builder(provider.token_url(), SERVICE_CLIENT)
        .client_secret(ClientSecret::new(SERVICE_SECRET))
        .scope("api:read")
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
    assert_eq!(failures(&http, &provider, 200).await, 0);
    let counters = provider.counters().await;
    assert_eq!(counters.client_credentials_grants, 1, "{counters:?}");
    // A token the server dropped is obtained again, once.
    provider.expire_access_tokens().await;
    assert_eq!(failures(&http, &provider, 50).await, 0);
    assert_eq!(provider.counters().await.client_credentials_grants, 2);
}

/// Discovery of both flavours builds a working grant for the server it describes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_metadata_builds_a_grant_that_refreshes() {
    let Some(provider) = Provider::start(Duration::from_secs(60)).await else {
        return;
    };
    for discovery in [
        Discovery::openid_connect(provider.issuer()),
        Discovery::oauth(provider.issuer()),
    ] {
        let metadata = discovery
            .danger_allow_http_loopback()
            .fetch()
            .await
            .unwrap();
        assert_eq!(metadata.issuer(), provider.issuer());
        assert_eq!(metadata.token_endpoint(), provider.token_url());
        let grant = metadata
            .refresh_token_grant(Client::Basic.id())
            .client_secret(ClientSecret::new(crate::provider::BASIC_SECRET))
            .build()
            .unwrap();
        let manager = TokenManager::builder(grant)
            .allow_origin(provider.issuer())
            .unwrap()
            .initial_tokens(expired(provider.login(Client::Basic).await))
            .build();
        let http = ClientBuilder::new(reqwest::Client::new())
            .with(manager.middleware())
            .build();
        provider.reset_counters().await;
        assert_eq!(failures(&http, &provider, 10).await, 0);
        assert_eq!(provider.counters().await.rotations, 1);
    }
}

/// `revoke()` revokes the newest refresh token at the server: introspection says it is no
/// longer active, and the manager forgets the tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_newest_refresh_token_at_the_server() {
    let Some(provider) = Provider::start(Duration::from_secs(60)).await else {
        return;
    };
    let tokens = expired(provider.login(Client::Basic).await);
    let (http, manager) = client_with(&provider, Client::Basic, tokens).await;
    assert_eq!(failures(&http, &provider, 5).await, 0, "one rotation first");
    let key = TokenKey::default();
    let newest = manager.tokens(&key).await.unwrap().unwrap();
    let newest = newest.refresh_token().unwrap().secret().to_owned();
    assert!(provider.is_active(&newest).await);

    manager.revoke(&key).await.unwrap();
    assert!(!provider.is_active(&newest).await, "revoked at the server");
    assert_eq!(provider.counters().await.revocations, 1);
    assert_eq!(manager.tokens(&key).await.unwrap(), None);
    let error = http.get(provider.api_url("me")).send().await.unwrap_err();
    assert!(
        Error::from_middleware(&error).is_some_and(Error::is_reauthorization_required),
        "{error:?}"
    );
}

/// The server's administrator revokes the grant: the next refresh gets `invalid_grant`,
/// requests fail with `ReauthorizationRequired`, and no further token request is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_revoked_by_the_server_requires_reauthorization_without_more_token_calls() {
    let Some(provider) = Provider::start(Duration::from_secs(60)).await else {
        return;
    };
    let tokens = provider.login(Client::Basic).await;
    let refresh_token = tokens.refresh_token().unwrap().secret().to_owned();
    let (http, _) = client_with(&provider, Client::Basic, tokens).await;
    assert_eq!(failures(&http, &provider, 5).await, 0);
    provider.revoke_grant(&refresh_token).await;
    provider.reset_counters().await;

    for round in 0..3 {
        let error = http.get(provider.api_url("me")).send().await.unwrap_err();
        let error = Error::from_middleware(&error).expect("the crate's error");
        assert!(
            error.is_reauthorization_required(),
            "round {round}: {error:?}"
        );
        assert_eq!(failures(&http, &provider, 20).await, 20);
    }
    let counters = provider.counters().await;
    assert_eq!(
        counters.token_requests, 1,
        "one refresh found out: {counters:?}"
    );
    assert_eq!(
        counters.api_calls, 1,
        "then no request reached the API: {counters:?}"
    );
}
