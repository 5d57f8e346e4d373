// cargo run --example client_credentials
//
// A service calling another service with machine-to-machine tokens (RFC 6749 §4.4). Nothing
// to log in: the first request obtains a token, later ones reuse it, and it is renewed before
// it expires — once, however many requests are in flight.

use std::time::Duration;

use futures::future::join_all;
use reqwest_middleware::ClientBuilder;
use reqwest_token_refresh::{ClientCredentialsGrant, ClientSecret, TokenManager};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In-process stand-ins for the authorization server and the API.
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "m2m-token-1",
            "token_type": "Bearer",
            "expires_in": 3600,
        })))
        .mount(&auth)
        .await;
    let api = MockServer::start().await;
    Mock::given(header("authorization", "Bearer m2m-token-1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("invoice"))
        .mount(&api)
        .await;

    let grant =
        ClientCredentialsGrant::builder(format!("{}/oauth/token", auth.uri()), "billing-service")
            .client_secret(ClientSecret::new("loaded-from-your-secret-store"))
            .scope("invoices:read")
            .timeout(Duration::from_secs(5))
            .danger_allow_http_loopback() // loopback demo only
            .build()?;
    let tokens = TokenManager::builder(grant)
        .allow_origin(&api.uri())?
        .build();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(tokens.middleware())
        .build();

    let requests = (0..100).map(|i| client.get(format!("{}/invoices/{i}", api.uri())).send());
    let ok = join_all(requests)
        .await
        .into_iter()
        .filter(|result| matches!(result, Ok(response) if response.status().is_success()))
        .count();
    let token_requests = auth.received_requests().await.map_or(0, |r| r.len());
    println!("requests succeeded:    {ok}/100");
    println!("token requests:        {token_requests}");
    if ok != 100 || token_requests != 1 {
        return Err("expected 100 successes with one token request".into());
    }
    Ok(())
}
