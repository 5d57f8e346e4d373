// cargo run --example with_retry --features retry,test-util
//
// Composing with reqwest-retry. The retry middleware goes first (outermost), so every attempt
// passes through the token middleware again; `TokenRefreshRetryableStrategy` retries a token
// endpoint that is briefly down (5xx, 429, timeouts) and never `invalid_grant`. Here the
// loopback authorization server fails the first two token requests with 503.

use std::time::Duration;

use reqwest_middleware::ClientBuilder;
use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
use reqwest_token_refresh::test_util::{Fault, MockAuthorizationServer};
use reqwest_token_refresh::{RefreshTokenGrant, TokenManager, TokenRefreshRetryableStrategy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = MockAuthorizationServer::start(Duration::from_secs(3600)).await;
    server.inject(Fault::ServerError(503));
    server.inject(Fault::ServerError(503));

    let grant = RefreshTokenGrant::builder(server.token_url(), "demo-client")
        .danger_allow_http_loopback() // loopback demo only
        .build()?;
    let tokens = TokenManager::builder(grant)
        .allow_origin(&server.uri())?
        .initial_tokens(server.issue_expired_grant()) // the first request must refresh
        .build();
    let policy = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(50), Duration::from_millis(500))
        .build_with_max_retries(3);
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(RetryTransientMiddleware::new_with_policy_and_strategy(
            policy,
            TokenRefreshRetryableStrategy,
        ))
        .with(tokens.middleware())
        .build();

    let response = client.get(server.api_url("me")).send().await?;
    println!(
        "{}, token requests: {} (two 503s, then success)",
        response.status(),
        server.refresh_calls()
    );
    if !response.status().is_success() {
        return Err("the request should have succeeded after the retries".into());
    }
    Ok(())
}
