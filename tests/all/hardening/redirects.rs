//! RFC 9700 §4.12: redirects never carry secrets elsewhere. The token endpoint follows no
//! redirect (the refresh token and client secret are never re-posted), a redirected API call
//! reaches another origin without the bearer token, and a 401 from another origin causes no
//! refresh.

use std::time::{Duration, SystemTime};

use reqwest_token_refresh::{
    AccessToken, ClientAuth, ClientSecret, Error, RefreshToken, RefreshTokenGrant, TokenSet,
};
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::support::*;

#[tokio::test]
async fn the_token_endpoint_never_follows_a_redirect() {
    let attacker = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "stolen", "token_type": "Bearer"
        })))
        .expect(0)
        .mount(&attacker)
        .await;
    for status in [301, 302, 303, 307, 308] {
        for auth in [ClientAuth::ClientSecretBasic, ClientAuth::ClientSecretPost] {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .and(path("/token"))
                .respond_with(
                    ResponseTemplate::new(status)
                        .insert_header("location", format!("{}/steal", attacker.uri())),
                )
                .expect(1)
                .mount(&server)
                .await;
            let grant = RefreshTokenGrant::builder(format!("{}/token", server.uri()), "c")
                .client_secret(ClientSecret::new("client-secret-r"))
                .client_auth(auth)
                .danger_allow_http_loopback()
                .build()
                .unwrap();
            let tokens = TokenSet::new(AccessToken::new("at-1"))
                .with_refresh_token(RefreshToken::new("rt-1"))
                .with_expires_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
            let (client, _, store) = client_with_store(grant, &server.uri(), tokens).await;
            let error = failed_request(&client, format!("{}/api/x", server.uri())).await;
            assert!(
                matches!(error, Error::TokenEndpoint(_)),
                "{status}: {error:?}"
            );
            assert_eq!(error.oauth_error().unwrap().status().as_u16(), status);
            assert!(store.stored().await.is_some(), "tokens kept after {status}");
        }
    }
    // `expect(0)` on the attacker is verified when it drops.
}

/// An API at an allowed origin that redirects everything to `target`.
async fn redirecting_api(target: &str, status: u16) -> AuthServer {
    let server = AuthServer::builder().start().await;
    Mock::given(path("/api/moved"))
        .respond_with(ResponseTemplate::new(status).insert_header("location", target))
        .with_priority(1)
        .mount(server.mock_server())
        .await;
    server
}

#[tokio::test]
async fn d12_a_redirected_api_call_reaches_another_origin_without_the_token() {
    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&elsewhere)
        .await;
    for status in [301, 302, 303, 307, 308] {
        let server = redirecting_api(&format!("{}/landing", elsewhere.uri()), status).await;
        let (client, _) = client_for(&server, server.issue_grant()).await;
        let response = client
            .post(server.api_url("moved"))
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{status}");
        assert_eq!(
            response.url().origin(),
            url::Url::parse(&elsewhere.uri()).unwrap().origin()
        );
    }
    for request in elsewhere.received_requests().await.unwrap() {
        assert!(
            !request.headers.contains_key("authorization"),
            "token leaked to {}",
            request.url
        );
    }
}

#[tokio::test]
async fn d12_a_401_from_another_origin_after_a_redirect_triggers_no_refresh() {
    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("www-authenticate", r#"Bearer error="invalid_token""#),
        )
        .mount(&elsewhere)
        .await;
    let server = redirecting_api(&format!("{}/login", elsewhere.uri()), 302).await;
    let (client, _) = client_for(&server, server.issue_grant()).await;
    let response = client.get(server.api_url("moved")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        server.refresh_calls(),
        0,
        "another origin's 401 refreshed our token"
    );
    assert_eq!(
        elsewhere.received_requests().await.unwrap().len(),
        1,
        "replayed"
    );
}

#[tokio::test]
async fn tokens_never_go_to_origins_that_differ_only_by_port_or_scheme() {
    let server = AuthServer::builder().start().await;
    let other = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&other)
        .await;
    let (client, _) = client_for(&server, server.issue_grant()).await;
    // Same host, other port.
    client
        .get(format!("{}/x", other.uri()))
        .send()
        .await
        .unwrap();
    // `localhost` is another host than `127.0.0.1`, whatever it resolves to.
    let port = url::Url::parse(&server.uri()).unwrap().port().unwrap();
    let _ = client
        .get(format!("http://localhost:{port}/api/x"))
        .send()
        .await;
    let leaked = other
        .received_requests()
        .await
        .unwrap()
        .iter()
        .chain(
            server
                .mock_server()
                .received_requests()
                .await
                .unwrap()
                .iter(),
        )
        .filter(|request| {
            request.url.host_str() != Some("127.0.0.1") || request.url.port() != Some(port)
        })
        .filter(|request| request.headers.contains_key("authorization"))
        .count();
    assert_eq!(leaked, 0);
}
