// cargo run --example demo --features test-util
//
// Starts, in this process on loopback, an authorization server that rotates refresh tokens and
// revokes the whole grant when a consumed refresh token comes back (as node-oidc-provider, Hydra
// and Auth0 do), plus an API protected by its access tokens. Then drives one
// `ClientWithMiddleware` through several token lifetimes with many concurrent requests, and
// prints what happened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reqwest_middleware::ClientBuilder;
use reqwest_token_refresh::{Event, RefreshTokenGrant, TokenManager};

use reqwest_token_refresh::test_util::MockAuthorizationServer;

const LIFETIMES: u32 = 4;
const REQUESTS_PER_ROUND: usize = 250;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Access tokens live 4 s and are refreshed 2 s before expiry (the leeway never exceeds
    // half the lifetime): with rounds 1.1 s apart, a refresh falls due every other round.
    let server = MockAuthorizationServer::start(Duration::from_secs(4)).await;

    let grant = RefreshTokenGrant::builder(server.token_url(), "demo-client")
        .danger_allow_http_loopback() // loopback demo only; production endpoints must be https
        .build()?;
    let persisted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&persisted);
    let tokens = TokenManager::builder(grant)
        .allow_origin(&server.uri())?
        .initial_tokens(server.issue_grant()) // the user logged in once
        .on_event(move |event| {
            if let Event::Persisted { .. } = event {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(tokens.middleware())
        .build();

    let mut sent = 0;
    let mut failures = 0;
    for round in 0..LIFETIMES * 2 {
        if round == 3 {
            // The authorization server revokes the access tokens early: the API answers 401,
            // and the middleware refreshes once and replays.
            server.reject_current_access_tokens();
        }
        let requests = (0..REQUESTS_PER_ROUND).map(|i| {
            let client = client.clone();
            let url = server.api_url(&format!("items/{i}"));
            tokio::spawn(async move { client.get(url).send().await })
        });
        for result in join_all(requests).await {
            sent += 1;
            match result? {
                Ok(response) if response.status().is_success() => {}
                _ => failures += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }

    println!("requests sent:          {sent}");
    println!("token refreshes made:   {}", server.refresh_calls());
    println!(
        "rotations persisted:    {}",
        persisted.load(Ordering::Relaxed) - 1
    );
    println!("401s answered by API:   {}", server.api_rejections());
    println!("reuse detections:       {}", server.reuse_detections());
    println!("failures:               {failures}");
    if failures > 0 || server.reuse_detections() > 0 {
        return Err("the demo saw failures".into());
    }
    Ok(())
}
