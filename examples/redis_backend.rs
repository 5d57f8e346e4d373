// cargo run --example redis_backend --features redis,test-util
//
// A backend that calls an OAuth-protected API on behalf of many users, keeping every user's
// refresh token server-side in Redis (sealed, with a TTL), so any replica can serve any user and
// each user's tokens are refreshed once across all replicas. Needs a Redis server: REDIS_URL, or
// redis://127.0.0.1:6379.
//
// It starts, in this process on loopback, an authorization server that rotates refresh tokens
// and revokes the grant on reuse, plus the protected API; then two "replicas" (two clients on
// the same Redis) serve requests for three users through a token lifetime change.

use std::time::Duration;

use futures::future::join_all;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_token_refresh::{
    EncryptionKey, KeyRing, RedisTokenStore, RefreshTokenGrant, TokenKey, TokenManager,
    TokenRefreshMiddleware,
};

use reqwest_token_refresh::test_util::MockAuthorizationServer;

const USERS: [&str; 3] = ["alice", "bob", "carol"];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    // In production: load the key from your secret manager (e.g. a base64 env var) and keep
    // the previous key as a decryption key while rotating.
    let key = EncryptionKey::from_bytes("demo-2026", &[42; 32])?;
    let salt = format!("demo-salt-{}", std::process::id());

    // Every user has their own grant at the authorization server.
    let servers = MockAuthorizationServer::start(Duration::from_secs(3600)).await;
    let replicas = [
        replica(&servers, &redis_url, &key, &salt).await?,
        replica(&servers, &redis_url, &key, &salt).await?,
    ];

    // Users log in through replica 0; their tokens land in Redis, readable by every replica.
    for user in USERS {
        let (_, manager) = &replicas[0];
        manager
            .set_tokens(&TokenKey::new(user), servers.issue_grant())
            .await?;
    }

    let mut failures = 0;
    for round in 0..3 {
        if round == 1 {
            // The API starts rejecting every access token issued so far.
            servers.reject_current_access_tokens();
        }
        let requests = (0..60).map(|i| {
            let (client, _) = &replicas[i % 2];
            let user = USERS[i % USERS.len()];
            let url = servers.api_url(&format!("{user}/inbox"));
            let client = client.clone();
            async move {
                client
                    .get(url)
                    .with_extension(TokenKey::new(user))
                    .send()
                    .await
            }
        });
        for result in join_all(requests).await {
            if !matches!(result, Ok(ref response) if response.status().is_success()) {
                failures += 1;
            }
        }
    }

    println!("users:                 {}", USERS.len());
    println!("replicas:              {}", replicas.len());
    println!("token refreshes made:  {}", servers.refresh_calls());
    println!("reuse detections:      {}", servers.reuse_detections());
    println!("failures:              {failures}");
    for user in USERS {
        let (_, manager) = &replicas[1];
        let tokens = manager.tokens(&TokenKey::new(user)).await?;
        let generation = tokens.map_or(0, |tokens| tokens.generation());
        println!("  {user:<6} at generation {generation} (shared by both replicas)");
    }
    for user in USERS {
        replicas[0].1.clear(&TokenKey::new(user)).await?;
    }
    if failures > 0 || servers.reuse_detections() > 0 {
        return Err("the example saw failures".into());
    }
    Ok(())
}

/// One replica of the backend: its own HTTP client and middleware, the shared Redis.
async fn replica(
    servers: &MockAuthorizationServer,
    redis_url: &str,
    key: &EncryptionKey,
    salt: &str,
) -> Result<(ClientWithMiddleware, TokenManager), Box<dyn std::error::Error>> {
    let store = RedisTokenStore::builder(KeyRing::new(key.clone()))
        .prefix("example:tokens:")
        .hash_key_names(salt.as_bytes())
        .refresh_token_lifetime(Duration::from_secs(14 * 24 * 3600))
        .connect(redis_url)
        .await
        .map_err(|error| format!("cannot reach redis at {redis_url}: {error}"))?;
    let grant = RefreshTokenGrant::builder(servers.token_url())
        .client_id("backend")
        .danger_allow_http_loopback()
        .build()?;
    let middleware = TokenRefreshMiddleware::builder(grant)
        .allow_origin(servers.uri())
        .danger_allow_http_loopback()
        .store(store)
        .build()?;
    let manager = middleware.manager().clone();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build();
    Ok((client, manager))
}
