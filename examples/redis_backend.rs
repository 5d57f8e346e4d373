// cargo run --example redis_backend --features redis,test-util
//
// A backend calling an OAuth-protected API on behalf of many users. Every user's tokens live in
// Redis (sealed, with a TTL), so any replica serves any user and each user's tokens are
// refreshed once across all replicas. Needs Redis: REDIS_URL, or redis://127.0.0.1:6379.
// Two "replicas" (two managers on one Redis) serve three users while the loopback
// authorization server revokes every access token once.

use std::time::Duration;

use futures::future::join_all;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_token_refresh::test_util::MockAuthorizationServer;
use reqwest_token_refresh::{
    EncryptionKey, KeyRing, RedisTokenStore, RefreshTokenGrant, TokenKey, TokenManager,
};

const USERS: [&str; 3] = ["alice", "bob", "carol"];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    // In production the key comes from your secret manager (EncryptionKey::from_base64).
    let key = EncryptionKey::from_bytes("demo-2026", &[42; 32])?;
    let server = MockAuthorizationServer::start(Duration::from_secs(3600)).await;
    let (first, tokens) = replica(&server, &redis_url, &key).await?;
    let (second, _) = replica(&server, &redis_url, &key).await?;

    // Users log in through one replica; their tokens land in Redis, for every replica.
    for user in USERS {
        tokens
            .set_tokens(&TokenKey::new(user), server.issue_grant())
            .await?;
    }
    server.reject_current_access_tokens();
    let requests = (0..60).map(|i| {
        let client = if i % 2 == 0 { &first } else { &second };
        let user = USERS[i % USERS.len()];
        client
            .get(server.api_url(&format!("{user}/inbox")))
            .with_extension(TokenKey::new(user))
            .send()
    });
    let failures = join_all(requests)
        .await
        .into_iter()
        .filter(|result| !matches!(result, Ok(response) if response.status().is_success()))
        .count();
    println!(
        "60 requests for {} users on 2 replicas: {failures} failed, {} token calls (one per user)",
        USERS.len(),
        server.refresh_calls()
    );
    for user in USERS {
        tokens.clear(&TokenKey::new(user)).await?;
    }
    if failures > 0 || server.reuse_detections() > 0 {
        return Err("the example saw failures".into());
    }
    Ok(())
}

/// One replica of the backend: its own client and manager, the shared Redis.
async fn replica(
    server: &MockAuthorizationServer,
    redis_url: &str,
    key: &EncryptionKey,
) -> Result<(ClientWithMiddleware, TokenManager), Box<dyn std::error::Error>> {
    let store = RedisTokenStore::builder(KeyRing::new(key.clone()))
        .prefix(format!("example:{}:", std::process::id()))
        .refresh_token_lifetime(Duration::from_secs(14 * 24 * 3600))
        .connect(redis_url)
        .await?;
    let grant = RefreshTokenGrant::builder(server.token_url(), "backend")
        .danger_allow_http_loopback() // loopback demo only
        .build()?;
    let tokens = TokenManager::builder(grant)
        .allow_origin(&server.uri())?
        .store(store)
        .build();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(tokens.middleware())
        .build();
    Ok((client, tokens))
}
