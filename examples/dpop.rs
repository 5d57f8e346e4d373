// cargo run --example dpop --features dpop,test-util
//
// DPoP-bound tokens (RFC 9449): the tokens are bound to a key this program holds, so a stolen
// token is useless elsewhere. The loopback authorization server checks every proof strictly
// and demands a nonce at the token endpoint and at the API; the client answers each nonce
// challenge once, refreshes once for 100 concurrent requests, and proves every request.

use futures::future::join_all;
use reqwest_middleware::ClientBuilder;
use reqwest_token_refresh::test_util::MockAuthorizationServer;
use reqwest_token_refresh::{DpopAlgorithm, DpopKey, RefreshTokenGrant, TokenManager};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = MockAuthorizationServer::builder()
        .require_dpop_nonce()
        .start()
        .await;

    // The login makes the key and binds the first tokens to it (here the test server plays
    // the authorization-code exchange; a real login signs its proof with `key.proof(..)`).
    let key = DpopKey::generate(DpopAlgorithm::Es256)?;
    let login = server.issue_expired_dpop_grant(&key);

    let grant = RefreshTokenGrant::builder(server.token_url(), "cli")
        .danger_allow_http_loopback() // loopback demo only
        .build()?;
    let tokens = TokenManager::builder(grant)
        .allow_origin(&server.uri())?
        .initial_tokens(login)
        .build();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(tokens.middleware())
        .build();

    let requests = (0..100).map(|i| client.get(server.api_url(&format!("items/{i}"))).send());
    let ok = join_all(requests)
        .await
        .into_iter()
        .filter(|result| matches!(result, Ok(response) if response.status() == 200))
        .count();
    println!(
        "{ok}/100 requests proven and accepted; {} refresh, {} nonce challenges answered, \
         {} proofs refused, key {}",
        server.presented_refresh_tokens().len(),
        server.dpop_nonce_challenges(),
        server.dpop_proofs_rejected(),
        key.thumbprint()
    );
    if ok != 100 || server.presented_refresh_tokens().len() != 1 {
        return Err("expected 100 successes and one refresh".into());
    }
    Ok(())
}
