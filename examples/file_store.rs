// cargo run --example file_store --features file,test-util
//
// A command-line program whose tokens survive restarts. It starts, in this process on loopback,
// an authorization server that rotates the refresh token on every refresh and revokes the whole
// grant if a consumed refresh token is presented again. Then it "runs the CLI twice": two
// middleware instances, built one after the other on the same token file, as two invocations
// of a program would. The first run refreshes (rotating the refresh token) and saves; the
// second run starts from the file, with no login, and keeps refreshing with the rotated token.

use std::path::Path;
use std::time::Duration;

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_token_refresh::{
    FileTokenStore, RefreshTokenGrant, TokenKey, TokenRefreshMiddleware, TokenSet, TokenStore,
};

use reqwest_token_refresh::test_util::MockAuthorizationServer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = MockAuthorizationServer::start(Duration::from_secs(3600)).await;
    let dir = std::env::temp_dir().join(format!("file-store-example-{}", std::process::id()));
    let path = dir.join("tokens.json");
    println!("token file: {}", path.display());

    // The user logs in once (the authorization-code flow, not shown). The access token it gave
    // is already expired, so the first run has to refresh straight away.
    let login = server.issue_expired_grant();

    // First run: starts from the login, refreshes, persists the rotated refresh token.
    {
        let client = cli(&server, &path, Some(login))?;
        let status = client.get(server.api_url("me")).send().await?.status();
        println!(
            "run 1: GET /api/me -> {status} (token endpoint calls so far: {})",
            server.refresh_calls()
        );
    } // The program exits: only the file remains.

    let stored = FileTokenStore::new(&path)
        .load(&TokenKey::default())
        .await?
        .ok_or("the first run saved nothing")?;
    let rotated = stored
        .tokens()
        .and_then(|tokens| tokens.refresh_token())
        .map(|token| token.secret().to_owned())
        == server.current_refresh_token();
    println!(
        "between runs: the file holds generation {} with the rotated refresh token: {rotated}",
        stored.generation()
    );

    // Second run: no login; the tokens come from the file.
    let client = cli(&server, &path, None)?;
    let status = client.get(server.api_url("me")).send().await?.status();
    println!(
        "run 2: GET /api/me -> {status} without re-login (token endpoint calls so far: {})",
        server.refresh_calls()
    );
    // The access token's lifetime ends: run 2 refreshes with the refresh token run 1 rotated.
    server.reject_current_access_tokens();
    let status = client.get(server.api_url("me")).send().await?.status();
    println!(
        "run 2: after the access token was revoked, GET /api/me -> {status} (token endpoint \
         calls: {}, reuse detections: {}, grant revoked: {})",
        server.refresh_calls(),
        server.reuse_detections(),
        server.is_revoked()
    );

    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// One "invocation" of the CLI: a client whose tokens live in `path`. `login` supplies the
/// tokens when the file holds none yet.
fn cli(
    server: &MockAuthorizationServer,
    path: &Path,
    login: Option<TokenSet>,
) -> Result<ClientWithMiddleware, Box<dyn std::error::Error>> {
    let grant = RefreshTokenGrant::builder(server.token_url())
        .client_id("example-cli")
        .danger_allow_http_loopback()
        .build()?;
    let mut middleware = TokenRefreshMiddleware::builder(grant)
        .allow_origin(server.uri())
        .danger_allow_http_loopback()
        .store(FileTokenStore::new(path));
    if let Some(tokens) = login {
        middleware = middleware.initial_tokens(tokens);
    }
    Ok(ClientBuilder::new(reqwest::Client::new())
        .with(middleware.build()?)
        .build())
}
