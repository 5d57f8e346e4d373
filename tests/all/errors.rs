//! What callers see when the token endpoint fails, and that nothing is lost.

use std::time::Duration;

use reqwest_token_refresh::{RefreshTokenGrant, TokenKey, TokenManager};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::auth_server::AuthServer;
use crate::helpers::{built_with_tokens, token_error};

/// A client whose token endpoint is `token_server`, and whose API is `server`.
async fn client_against(
    server: &AuthServer,
    token_server: &MockServer,
) -> (
    reqwest_middleware::ClientWithMiddleware,
    reqwest_token_refresh::TokenManager,
) {
    let grant = RefreshTokenGrant::builder(format!("{}/token", token_server.uri()), "c")
        .danger_allow_http_loopback()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (client, manager) = built_with_tokens(
        TokenManager::builder(grant)
            .allow_origin(&server.uri())
            .expect("valid origin"),
        server.issue_expired_grant(),
    )
    .await;
    (client, manager)
}

#[tokio::test]
async fn r27_invalid_client_is_a_configuration_error_that_keeps_the_refresh_token() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let token_server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(serde_json::json!({"error": "invalid_client"})),
        )
        .expect(1)
        .mount(&token_server)
        .await;
    let (client, manager) = client_against(&server, &token_server).await;
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    assert!(token_error(&error).is_client_rejected());
    let held = manager.tokens(&TokenKey::default()).await.unwrap().unwrap();
    assert_eq!(
        held.refresh_token().unwrap().secret(),
        server.current_refresh_token().unwrap()
    );
}

#[tokio::test]
async fn transient_token_endpoint_failures_are_typed_and_not_cached() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let token_server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&token_server)
        .await;
    // The token the second refresh returns is one the API accepts.
    let fresh = server.issue_grant();
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": fresh.access_token().secret(), "token_type": "Bearer", "expires_in": 3600
        })))
        .expect(1)
        .mount(&token_server)
        .await;
    let (client, manager) = client_against(&server, &token_server).await;
    let before_refresh_token = server.current_refresh_token().unwrap();
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    assert!(token_error(&error).is_transient());
    // The failure is not cached: the next request refreshes again and succeeds.
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let held = manager.tokens(&TokenKey::default()).await.unwrap().unwrap();
    assert_eq!(held.access_token(), fresh.access_token());
    // No refresh_token in the response: the old one is kept (RFC 6749 §6).
    assert_eq!(held.refresh_token().unwrap().secret(), before_refresh_token);
}

#[tokio::test]
async fn a_malformed_token_response_is_typed_and_keeps_the_previous_tokens() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let token_server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>proxy error</html>"))
        .mount(&token_server)
        .await;
    let (client, manager) = client_against(&server, &token_server).await;
    let before = manager.tokens(&TokenKey::default()).await.unwrap();
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    assert!(matches!(
        token_error(&error),
        reqwest_token_refresh::Error::InvalidResponse(_)
    ));
    assert_eq!(manager.tokens(&TokenKey::default()).await.unwrap(), before);
}

#[tokio::test]
async fn d12_the_token_endpoint_never_follows_redirects() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let token_server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/steal", elsewhere.uri())),
        )
        .expect(1)
        .mount(&token_server)
        .await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let (client, _) = client_against(&server, &token_server).await;
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    assert!(matches!(
        token_error(&error),
        reqwest_token_refresh::Error::TokenEndpoint(_)
    ));
}

#[tokio::test]
async fn r27_a_configuration_error_backs_off_instead_of_calling_again() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let token_server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({"error": "unauthorized_client"})),
        )
        .expect(1)
        .mount(&token_server)
        .await;
    let (client, _) = client_against(&server, &token_server).await;
    for _ in 0..5 {
        let error = client.get(server.api_url("me")).send().await.unwrap_err();
        assert!(token_error(&error).is_client_rejected());
    }
}

#[tokio::test]
async fn inv1_a_rotation_with_an_unusable_access_token_keeps_the_new_refresh_token() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let token_server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "not a b64token",
            "token_type": "Bearer",
            "refresh_token": "rt-rotated",
        })))
        .expect(1)
        .mount(&token_server)
        .await;
    let (client, manager) = client_against(&server, &token_server).await;
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    assert!(matches!(
        token_error(&error),
        reqwest_token_refresh::Error::InvalidResponse(_)
    ));
    // The old refresh token is consumed at the server: the new one is what we keep.
    let held = manager.tokens(&TokenKey::default()).await.unwrap().unwrap();
    assert_eq!(held.refresh_token().unwrap().secret(), "rt-rotated");
    assert_eq!(held.generation(), 2);
    // Backing off: no second call (the mock expects exactly one).
    assert!(client.get(server.api_url("me")).send().await.is_err());
}
