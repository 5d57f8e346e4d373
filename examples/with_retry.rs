// cargo run --example with_retry --features retry,test-util
//
// Composing with reqwest-retry. The retry middleware goes FIRST (outermost), so every attempt
// passes through the token middleware again; `TokenRefreshRetryableStrategy` makes it retry a
// token endpoint that is briefly down (5xx, 429, timeouts), which reqwest-retry's default
// strategy would treat as fatal. `invalid_grant` and configuration errors stay fatal, and a
// 401 that survives the token middleware's single replay is a response, which is not retried.
//
// The loopback authorization server below fails the first two token requests with 503.

use std::time::Duration;

use reqwest_middleware::ClientBuilder;
use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
use reqwest_token_refresh::test_util::{Fault, MockAuthorizationServer};
use reqwest_token_refresh::{
    RefreshTokenGrant, TokenKey, TokenRefreshMiddleware, TokenRefreshRetryableStrategy,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = MockAuthorizationServer::start(Duration::from_secs(3600)).await;
    server.inject(Fault::ServerError(503));
    server.inject(Fault::ServerError(503));

    let grant = RefreshTokenGrant::builder(server.token_url())
        .client_id("demo-client")
        .danger_allow_http_loopback()
        .build()?;
    let tokens = TokenRefreshMiddleware::builder(grant)
        .allow_origin(server.uri())
        .danger_allow_http_loopback()
        .build()?;
    let manager = tokens.manager().clone();
    let retry = RetryTransientMiddleware::new_with_policy_and_strategy(
        ExponentialBackoff::builder()
            .retry_bounds(Duration::from_millis(50), Duration::from_millis(500))
            .build_with_max_retries(3),
        TokenRefreshRetryableStrategy,
    );
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(retry) // outermost
        .with(tokens)
        .build();

    // The user's access token has expired: the first request must refresh.
    manager
        .set_tokens(&TokenKey::default(), server.issue_expired_grant())
        .await?;
    let response = client.get(server.api_url("me")).send().await?;

    println!("status:                {}", response.status());
    println!(
        "token requests:        {} (two 503s, then success)",
        server.refresh_calls()
    );
    println!("reuse detections:      {}", server.reuse_detections());
    if !response.status().is_success() {
        return Err("the request should have succeeded after the retries".into());
    }
    Ok(())
}
