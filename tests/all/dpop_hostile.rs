//! DPoP against servers that misbehave: a nonce that is huge or not a nonce, a nonce that
//! changes on every response, and a resource server demanding DPoP from a bearer client.
//! Every case ends after a bounded number of requests, counted by wiremock.

use std::time::Duration;

use base64::Engine as _;

use reqwest_token_refresh::{
    AccessToken, DpopAlgorithm, DpopKey, RefreshToken, RefreshTokenGrant, TokenManager, TokenSet,
};
use wiremock::matchers::{any, header_exists, method};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::client;

/// A DPoP-bound token valid for an hour, for an API on `api`.
fn dpop_manager(api: &MockServer) -> TokenManager {
    let grant = RefreshTokenGrant::builder(format!("{}/token", api.uri()), "c")
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let key = DpopKey::generate(DpopAlgorithm::Es256).unwrap();
    TokenManager::builder(grant)
        .allow_origin(&api.uri())
        .unwrap()
        .initial_tokens(
            TokenSet::new(AccessToken::new("at-1"))
                .with_refresh_token(RefreshToken::new("rt-1"))
                .with_expires_in(Duration::from_secs(3600))
                .with_dpop_key(key),
        )
        .build()
}

fn nonce_challenge(nonce: &str) -> ResponseTemplate {
    ResponseTemplate::new(401)
        .insert_header("www-authenticate", r#"DPoP error="use_dpop_nonce""#)
        .insert_header("dpop-nonce", nonce)
}

#[tokio::test]
async fn a_nonce_that_is_not_a_nonce_is_not_followed() {
    for nonce in [
        "a".repeat(8 * 1024),
        "has space".to_owned(),
        "quo\"te".to_owned(),
    ] {
        let api = MockServer::start().await;
        Mock::given(method("GET"))
            .and(header_exists("dpop"))
            .respond_with(nonce_challenge(&nonce))
            .expect(1)
            .mount(&api)
            .await;
        let (client, _) = client(dpop_manager(&api));
        let response = client
            .get(format!("{}/items", api.uri()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "the challenge is handed back");
    }
}

/// Answers every request with a nonce challenge carrying a new nonce.
struct NewNonceEachTime(std::sync::atomic::AtomicU64);

impl Respond for NewNonceEachTime {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        nonce_challenge(&format!("nonce-{n}"))
    }
}

#[tokio::test]
async fn a_server_changing_its_nonce_on_every_response_gets_one_retry() {
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(NewNonceEachTime(0.into()))
        .expect(2)
        .mount(&api)
        .await;
    let (client, _) = client(dpop_manager(&api));
    let response = client
        .get(format!("{}/items", api.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let proofs: Vec<String> = api
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| request.headers["dpop"].to_str().unwrap().to_owned())
        .collect();
    assert_ne!(proofs[0], proofs[1], "each attempt has its own proof");
}

#[tokio::test]
async fn a_resource_demanding_dpop_from_a_bearer_client_gets_no_refresh_and_no_loop() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400))
        .expect(0)
        .named("token endpoint")
        .mount(&api)
        .await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(401).insert_header("www-authenticate", r#"DPoP algs="ES256""#),
        )
        .expect(1)
        .mount(&api)
        .await;
    let grant = RefreshTokenGrant::builder(format!("{}/token", api.uri()), "c")
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let manager = TokenManager::builder(grant)
        .allow_origin(&api.uri())
        .unwrap()
        .initial_tokens(
            TokenSet::new(AccessToken::new("at-1"))
                .with_refresh_token(RefreshToken::new("rt-1"))
                .with_expires_in(Duration::from_secs(3600)),
        )
        .build();
    let (client, _) = client(manager);
    let response = client
        .get(format!("{}/items", api.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// The nonce of a response that a redirect brought from another origin belongs to that
/// origin: the next proof to ours must not carry it.
#[tokio::test]
async fn a_nonce_from_a_redirect_target_is_not_used_for_the_origin_that_redirected() {
    let api = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::path("/moved"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/here", elsewhere.uri())),
        )
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::path("/items"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&api)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).insert_header("dpop-nonce", "elsewhere-nonce"))
        .mount(&elsewhere)
        .await;
    let (client, _) = client(dpop_manager(&api));
    let moved = client
        .get(format!("{}/moved", api.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    assert_eq!(moved.url().as_str(), format!("{}/here", elsewhere.uri()));
    let items = client
        .get(format!("{}/items", api.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(items.status(), 200);
    let requests = api.received_requests().await.unwrap();
    let proof = requests.last().unwrap().headers["dpop"].to_str().unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(proof.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["htu"], format!("{}/items", api.uri()));
    assert!(
        claims.get("nonce").is_none(),
        "another origin's nonce was sent: {claims}"
    );
}
