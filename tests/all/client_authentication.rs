//! Client authentication at the token endpoint, checked by the test kit as real servers decode
//! it (node-oidc-provider, in the interop suite, decodes the same way).

use reqwest_token_refresh::{ClientAuth, ClientSecret, RefreshTokenGrant, TokenManager};

use crate::auth_server::AuthServer;
use crate::helpers::{client, token_error};

/// Reserved characters of every kind: form encoding must protect each of them.
const SECRET: &str = "s3cr:t%+&=/?# x";

async fn refresh_with(
    server: &AuthServer,
    auth: ClientAuth,
    secret: &str,
) -> reqwest_middleware::Result<reqwest::Response> {
    let grant = RefreshTokenGrant::builder(server.token_url(), "client:1")
        .client_secret(ClientSecret::new(secret))
        .client_auth(auth)
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let manager = TokenManager::builder(grant)
        .allow_origin(&server.uri())
        .unwrap()
        .initial_tokens(server.issue_expired_grant())
        .build();
    let (client, _) = client(manager);
    client.get(server.api_url("me")).send().await
}

#[tokio::test]
async fn a_secret_with_reserved_characters_authenticates_by_both_methods() {
    for auth in [ClientAuth::ClientSecretBasic, ClientAuth::ClientSecretPost] {
        let server = AuthServer::builder()
            .client("client:1", SECRET)
            .start()
            .await;
        let response = refresh_with(&server, auth, SECRET).await.unwrap();
        assert_eq!(response.status(), 200, "{auth:?}");
        assert_eq!(server.refresh_calls(), 1);
    }
}

#[tokio::test]
async fn a_wrong_secret_is_a_client_rejection_not_a_dead_grant() {
    for auth in [ClientAuth::ClientSecretBasic, ClientAuth::ClientSecretPost] {
        let server = AuthServer::builder()
            .client("client:1", SECRET)
            .start()
            .await;
        let error = refresh_with(&server, auth, "wrong").await.unwrap_err();
        let error = token_error(&error);
        assert!(error.is_client_rejected(), "{auth:?}: {error:?}");
        assert!(!error.is_reauthorization_required());
        server.assert_no_refresh_token_reused();
    }
}
