//! One refresh per key, shared by every concurrent caller — proved by counting.

use std::time::Duration;

use futures::future::join_all;
use reqwest_middleware::ClientWithMiddleware;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::auth_server::AuthServer;
use crate::helpers::{
    builder, builder_for, built_with_tokens, client, client_with_tokens, token_error,
};

const CONCURRENT: usize = 500;

async fn fire(
    client: &ClientWithMiddleware,
    server: &AuthServer,
) -> Vec<reqwest_middleware::Result<reqwest::Response>> {
    let requests = (0..CONCURRENT).map(|i| {
        let client = client.clone();
        let url = server.api_url(&format!("item/{i}"));
        tokio::spawn(async move { client.get(url).send().await })
    });
    join_all(requests)
        .await
        .into_iter()
        .map(|joined| joined.expect("request task"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d1_500_requests_with_an_expired_token_share_one_refresh() {
    // The token endpoint is slow enough that every request arrives while the refresh runs.
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .expect_refresh_calls(1)
        .token_delay(Duration::from_millis(200))
        .start()
        .await;
    let (client, _) = client_with_tokens(&server, server.issue_expired_grant()).await;
    let results = fire(&client, &server).await;
    for result in results {
        assert_eq!(result.unwrap().status(), 200);
    }
    assert_eq!(server.api_rejections(), 0);
    assert_eq!(server.reuse_detections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d1_d2_500_requests_rejected_with_401_share_one_refresh() {
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .expect_refresh_calls(1)
        .token_delay(Duration::from_millis(50))
        .start()
        .await;
    let (client, _) = client_with_tokens(&server, server.issue_grant()).await;
    server.reject_current_access_tokens();
    let results = fire(&client, &server).await;
    for result in results {
        assert_eq!(result.unwrap().status(), 200);
    }
    assert_eq!(server.reuse_detections(), 0);
    // Each request reached the API at most twice.
    assert!(server.api_calls() <= 2 * CONCURRENT as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r26_invalid_grant_reaches_every_waiter_and_stops_all_token_calls() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let api_server = server.mock_server();
    // A dedicated token endpoint that always answers invalid_grant, called exactly once.
    let dead = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({"error": "invalid_grant"}))
                .set_delay(Duration::from_millis(100)),
        )
        .expect(1)
        .mount(&dead)
        .await;
    let (client, manager) = built_with_tokens(
        builder_for(&format!("{}/token", dead.uri()), &api_server.uri()),
        server.issue_expired_grant(),
    )
    .await;
    let results = fire(&client, &server).await;
    for result in results {
        assert!(token_error(&result.unwrap_err()).is_reauthorization_required());
    }
    for _ in 0..10 {
        let error = client
            .get(server.api_url("later"))
            .send()
            .await
            .unwrap_err();
        assert!(token_error(&error).is_reauthorization_required());
    }
    assert_eq!(server.api_calls(), 0);
    // The dead grant was removed from the store.
    assert!(manager.tokens(&Default::default()).await.unwrap().is_none());
    let _ = builder;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d1_two_clients_sharing_a_memory_store_refresh_once() {
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .expect_refresh_calls(1)
        .token_delay(Duration::from_millis(100))
        .start()
        .await;
    let store: std::sync::Arc<dyn reqwest_token_refresh::TokenStore> =
        std::sync::Arc::new(reqwest_token_refresh::MemoryTokenStore::new());
    let (first, manager) = client(builder(&server).store(store.clone()).build());
    let (second, _) = client(builder(&server).store(store).build());
    manager
        .set_tokens(&Default::default(), server.issue_expired_grant())
        .await
        .unwrap();
    let (a, b) = tokio::join!(fire(&first, &server), fire(&second, &server));
    for result in a.into_iter().chain(b) {
        assert_eq!(result.unwrap().status(), 200);
    }
    assert_eq!(server.reuse_detections(), 0);
}
