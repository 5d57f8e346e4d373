// cargo run --example file_store --features file,test-util
//
// A command-line program whose tokens survive restarts: two "runs" of it, one after the other,
// on one token file. The first starts from a login and refreshes (the server rotates the
// refresh token); the second starts from the file alone and refreshes with the rotated token.
// The loopback server revokes the whole grant if a consumed refresh token ever comes back.

use std::path::Path;
use std::time::Duration;

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_token_refresh::test_util::MockAuthorizationServer;
use reqwest_token_refresh::{FileTokenStore, RefreshTokenGrant, TokenManager, TokenSet};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = MockAuthorizationServer::start(Duration::from_secs(3600)).await;
    let dir = std::env::temp_dir().join(format!("file-store-example-{}", std::process::id()));
    let path = dir.join("tokens.json");

    // Run 1: the login's access token has expired, so the first request refreshes.
    let client = cli(&server, &path, Some(server.issue_expired_grant()))?;
    let status = client.get(server.api_url("me")).send().await?.status();
    println!("run 1: {status}, token calls: {}", server.refresh_calls());

    // Run 2: no login; the access token is revoked, so it refreshes with the rotated token.
    let client = cli(&server, &path, None)?;
    server.reject_current_access_tokens();
    let status = client.get(server.api_url("me")).send().await?.status();
    println!(
        "run 2: {status}, token calls: {}, grant revoked: {}",
        server.refresh_calls(),
        server.is_revoked()
    );
    std::fs::remove_dir_all(&dir)?;
    if server.is_revoked() || !status.is_success() {
        return Err("a consumed refresh token was sent again".into());
    }
    Ok(())
}

/// One run of the program: a client whose tokens live in `path`, starting from `login` when
/// the file holds none yet.
fn cli(
    server: &MockAuthorizationServer,
    path: &Path,
    login: Option<TokenSet>,
) -> Result<ClientWithMiddleware, Box<dyn std::error::Error>> {
    let grant = RefreshTokenGrant::builder(server.token_url(), "example-cli")
        .danger_allow_http_loopback() // loopback demo only
        .build()?;
    let mut tokens = TokenManager::builder(grant)
        .allow_origin(&server.uri())?
        .store(FileTokenStore::builder(path).build()?);
    if let Some(login) = login {
        tokens = tokens.initial_tokens(login);
    }
    let middleware = tokens.build().middleware();
    Ok(ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build())
}
