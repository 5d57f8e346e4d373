//! Where the bearer token goes, and where it never goes.

use std::time::Duration;

use reqwest_token_refresh::{ConfigError, RefreshTokenGrant, TokenKey, TokenManager};
use wiremock::matchers::{header, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::auth_server::AuthServer;
use crate::helpers::{builder, builder_for, client, client_with_tokens};

#[tokio::test]
async fn r30_injects_the_bearer_token_into_allowed_origin_requests() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let (client, _) = client_with_tokens(&server, server.issue_grant()).await;
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.api_calls(), 1);
    assert_eq!(server.refresh_calls(), 0);
}

#[tokio::test]
async fn r40_never_sends_the_token_to_another_origin() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let other = MockServer::start().await;
    Mock::given(header_exists("authorization"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&other)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&other)
        .await;
    let (client, _) = client_with_tokens(&server, server.issue_grant()).await;
    let response = client
        .get(format!("{}/x", other.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn r29_keeps_an_authorization_header_set_by_the_caller() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let api = MockServer::start().await;
    Mock::given(header("authorization", "Basic Y2FsbGVyOnNlY3JldA=="))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&api)
        .await;
    let middleware = builder_for(&server.token_url(), &api.uri()).build();
    let (client, manager) = client(middleware);
    manager
        .set_tokens(&TokenKey::default(), server.issue_grant())
        .await
        .unwrap();
    let response = client
        .get(format!("{}/x", api.uri()))
        .header("authorization", "Basic Y2FsbGVyOnNlY3JldA==")
        .send()
        .await
        .unwrap();
    // The 401 answers the caller's credentials, not ours: returned as is, no refresh.
    assert_eq!(response.status(), 401);
    assert_eq!(server.refresh_calls(), 0);
}

#[tokio::test]
async fn each_request_uses_the_tokens_of_its_key() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let api = MockServer::start().await;
    for (user, token) in [("alice", "at-alice"), ("bob", "at-bob")] {
        Mock::given(path(format!("/{user}")))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&api)
            .await;
    }
    let (client, manager) = client(builder_for(&server.token_url(), &api.uri()).build());
    for (user, token) in [("alice", "at-alice"), ("bob", "at-bob")] {
        let tokens =
            reqwest_token_refresh::TokenSet::new(reqwest_token_refresh::AccessToken::new(token));
        manager
            .set_tokens(&TokenKey::new(user), tokens)
            .await
            .unwrap();
    }
    for user in ["alice", "bob"] {
        let response = client
            .get(format!("{}/{user}", api.uri()))
            .with_extension(TokenKey::new(user))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{user}");
    }
}

#[tokio::test]
async fn r42_plain_http_origins_need_the_loopback_opt_in() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let grant = RefreshTokenGrant::builder(server.token_url(), "c")
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    // The grant's opt-in covers its own token endpoint and loopback origins, not others.
    let allowed = TokenManager::builder(grant).allow_origin(&server.uri());
    assert!(
        allowed.is_ok(),
        "loopback origins follow the grant's opt-in"
    );
    let error = builder(&server)
        .allow_origin("http://api.example.com")
        .unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::InsecureUrl {
                setting: "allow_origin",
                ..
            }
        ),
        "{error:?}"
    );
    let strict = RefreshTokenGrant::builder("https://auth.example.com/token", "c")
        .build()
        .unwrap();
    let error = TokenManager::builder(strict)
        .allow_origin(&server.uri())
        .unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::InsecureUrl {
                setting: "allow_origin",
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_manager_without_origins_sends_no_token_anywhere() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let grant = RefreshTokenGrant::builder(server.token_url(), "c")
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let manager = TokenManager::builder(grant)
        .initial_tokens(server.issue_grant())
        .build();
    let (client, _) = client(manager);
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 401, "no Authorization was sent");
    assert_eq!(server.refresh_calls(), 0);
}
