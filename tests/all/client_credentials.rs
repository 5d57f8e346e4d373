//! RFC 6749 §4.4: machine-to-machine tokens, obtained and renewed like refreshes.

use std::time::Duration;

use futures::future::join_all;
use reqwest_token_refresh::{ClientCredentialsGrant, ClientSecret, ConfigError, TokenManager};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::client;

/// An API accepting `Bearer cc-<n>`, and a token endpoint minting `cc-1`, `cc-2`, … each
/// counted by its mock.
async fn servers(token_calls: u64, access_token: &str) -> (MockServer, MockServer) {
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("scope=invoices%3Aread"))
        .and(header("authorization", "Basic c2VydmljZTpzM2NyZXQ="))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({
                    "access_token": access_token,
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }))
                .set_delay(Duration::from_millis(50)),
        )
        .expect(token_calls)
        .mount(&auth)
        .await;
    let api = MockServer::start().await;
    Mock::given(header(
        "authorization",
        format!("Bearer {access_token}").as_str(),
    ))
    .respond_with(ResponseTemplate::new(200))
    .mount(&api)
    .await;
    (auth, api)
}

fn grant(auth: &MockServer) -> ClientCredentialsGrant {
    ClientCredentialsGrant::builder(format!("{}/token", auth.uri()), "service")
        .client_secret(ClientSecret::new("s3cret"))
        .scope("invoices:read")
        .danger_allow_http_loopback()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d1_concurrent_first_requests_share_one_token_request() {
    let (auth, api) = servers(1, "cc-1").await;
    let (client, _) = client(
        TokenManager::builder(grant(&auth))
            .allow_origin(&api.uri())
            .expect("valid origin")
            .build(),
    );
    let requests = (0..200).map(|i| client.get(format!("{}/r/{i}", api.uri())).send());
    for result in join_all(requests).await {
        assert_eq!(result.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn a_secret_is_required() {
    let error = ClientCredentialsGrant::builder("https://auth.example.com/token", "service")
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::Missing("client_secret"));
}
