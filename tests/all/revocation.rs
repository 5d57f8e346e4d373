//! RFC 7009: revocation on logout.

use std::time::Duration;

use reqwest_token_refresh::{RefreshTokenGrant, TokenKey, TokenManager};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::auth_server::AuthServer;
use crate::helpers::{client, token_error};

fn manager(server: &AuthServer) -> TokenManager {
    let grant = RefreshTokenGrant::builder(server.token_url(), "c")
        .revocation_endpoint(server.revocation_url())
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    TokenManager::builder(grant)
        .allow_origin(&server.uri())
        .expect("valid origin")
        .build()
}

#[tokio::test]
async fn r64_r65_logout_revokes_the_newest_refresh_token_and_forgets_it() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let (client, manager) = client(manager(&server));
    let key = TokenKey::default();
    manager
        .set_tokens(&key, server.issue_grant())
        .await
        .unwrap();
    // One rotation, so the newest refresh token is not the one we started with.
    server.reject_current_access_tokens();
    assert_eq!(
        client
            .get(server.api_url("me"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let newest = server.current_refresh_token().unwrap();
    server
        .mock_server()
        .register(
            Mock::given(method("POST"))
                .and(path("/revoke"))
                .and(body_string_contains(format!("token={newest}").as_str()))
                .and(body_string_contains("token_type_hint=refresh_token"))
                .respond_with(ResponseTemplate::new(200))
                .expect(1)
                .with_priority(1),
        )
        .await;
    manager.revoke(&key).await.unwrap();
    assert!(manager.tokens(&key).await.unwrap().is_none());
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    assert!(token_error(&error).is_reauthorization_required());
    // Never used again: no token call after the logout.
    assert_eq!(server.refresh_calls(), 1);
}

#[tokio::test]
async fn r67_a_503_keeps_the_tokens_so_revocation_can_be_retried() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let (_, manager) = client(manager(&server));
    let key = TokenKey::default();
    manager
        .set_tokens(&key, server.issue_grant())
        .await
        .unwrap();
    server
        .mock_server()
        .register(
            Mock::given(path("/revoke"))
                .respond_with(ResponseTemplate::new(503))
                .expect(1)
                .with_priority(1),
        )
        .await;
    let error = manager.revoke(&key).await.unwrap_err();
    assert!(error.is_transient());
    assert!(manager.tokens(&key).await.unwrap().is_some());
}
