//! Composition with reqwest-retry (retry outermost).

use std::time::Duration;

use reqwest_middleware::ClientBuilder;
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::RetryTransientMiddleware;
use reqwest_token_refresh::{TokenKey, TokenRefreshRetryableStrategy};
use wiremock::matchers::{any, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::auth_server::AuthServer;
use crate::helpers::builder;

fn retry() -> RetryTransientMiddleware<ExponentialBackoff, TokenRefreshRetryableStrategy> {
    let policy = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(5))
        .build_with_max_retries(3);
    RetryTransientMiddleware::new_with_policy_and_strategy(policy, TokenRefreshRetryableStrategy)
}

#[tokio::test]
async fn a_transient_token_endpoint_failure_is_retried_by_reqwest_retry() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    server
        .mock_server()
        .register(
            Mock::given(method("POST"))
                .and(wiremock::matchers::path("/token"))
                .respond_with(ResponseTemplate::new(503))
                .up_to_n_times(1)
                .expect(1)
                .with_priority(1),
        )
        .await;
    let manager = builder(&server).build();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(retry())
        .with(manager.middleware())
        .build();
    manager
        .set_tokens(&TokenKey::default(), server.issue_expired_grant())
        .await
        .unwrap();
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // One 503 (counted by its own mock) then one successful refresh.
    assert_eq!(server.refresh_calls(), 1);
}

#[tokio::test]
async fn a_401_that_survives_the_replay_is_not_retried_forever() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let api = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&api)
        .await;
    let manager = builder(&server)
        .allow_origin(&api.uri())
        .expect("valid origin")
        .build();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(retry())
        .with(manager.middleware())
        .build();
    manager
        .set_tokens(&TokenKey::default(), server.issue_grant())
        .await
        .unwrap();
    let response = client.get(format!("{}/x", api.uri())).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(server.refresh_calls(), 1);
}
