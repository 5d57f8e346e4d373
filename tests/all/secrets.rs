//! No secret in Debug or Display of any public type or error.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest_token_refresh::{
    AccessToken, ClientSecret, ConfigError, Error, RefreshToken, RefreshTokenGrant, StoreError,
    StoreErrorKind, TokenKey, TokenManager, TokenSet,
};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{client, token_error};

const CANARIES: [&str; 3] = [
    "canary-access-7f3a",
    "canary-refresh-9b1c",
    "canary-secret-4d2e",
];

fn assert_clean(text: &str) {
    for canary in CANARIES {
        assert!(!text.contains(canary), "secret leaked into: {text}");
    }
}

#[test]
fn d13_credentials_in_the_token_endpoint_url_are_refused_and_never_shown() {
    let builder = RefreshTokenGrant::builder(
        format!("https://user:{}@auth.example.com/token", CANARIES[2]),
        "c",
    );
    assert_clean(&format!("{builder:?} {builder:#?}"));
    let error = builder.build().unwrap_err();
    assert!(
        matches!(error, ConfigError::CredentialsInUrl { .. }),
        "{error:?}"
    );
    assert_clean(&format!("{error} {error:?}"));
}

#[tokio::test]
async fn d13_debug_and_display_never_contain_a_secret() {
    let tokens = TokenSet::new(AccessToken::new(CANARIES[0]))
        .with_refresh_token(RefreshToken::new(CANARIES[1]))
        .with_expires_in(Duration::from_secs(60));
    assert_clean(&format!("{tokens:?} {tokens:#?}"));
    assert_clean(&format!("{:?}", ClientSecret::new(CANARIES[2])));

    // A token endpoint that echoes every secret back in its error description.
    let token_server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": "invalid_grant",
            "error_description": format!("bad {} for client secret {}", CANARIES[1], CANARIES[2]),
        })))
        .mount(&token_server)
        .await;
    let api = MockServer::start().await;
    let grant = RefreshTokenGrant::builder(format!("{}/token", token_server.uri()), "c")
        .client_secret(ClientSecret::new(CANARIES[2]))
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    assert_clean(&format!("{grant:?}"));
    let middleware = TokenManager::builder(grant)
        .allow_origin(&api.uri())
        .expect("valid origin")
        .build();
    assert_clean(&format!("{middleware:?}"));
    let (client, manager) = client(middleware);
    assert_clean(&format!("{manager:?}"));
    let expired = tokens
        .clone()
        .with_expires_at(std::time::UNIX_EPOCH + Duration::from_secs(5));
    manager
        .set_tokens(&TokenKey::default(), expired)
        .await
        .unwrap();
    let error = client
        .get(format!("{}/x", api.uri()))
        .send()
        .await
        .unwrap_err();
    assert_clean(&format!("{error} {error:?} {error:#}"));
    let inner: &Error = token_error(&error);
    assert!(inner.is_reauthorization_required());
    assert_clean(&format!("{inner} {inner:?}"));
    assert!(inner.to_string().contains("[redacted]"));

    let store_error = StoreError::new(StoreErrorKind::Corrupt, "token file is corrupt");
    assert_clean(&format!("{store_error} {store_error:?}"));
    let _ = StatusCode::OK;
}

#[test]
fn d13_the_test_kit_builder_never_shows_the_client_secret() {
    let builder = reqwest_token_refresh::test_util::MockAuthorizationServer::builder()
        .client("my-app", CANARIES[2]);
    assert_clean(&format!("{builder:?} {builder:#?}"));
}

/// The application's own HTTP client (a proxy with a password, a default header) is never
/// shown by the builders that hold it.
#[test]
fn d13_a_proxy_password_in_the_http_client_is_never_shown() {
    let http = || {
        reqwest::Client::builder()
            .proxy(
                reqwest::Proxy::https("http://proxy.example.com:3128")
                    .unwrap()
                    .basic_auth("user", CANARIES[2]),
            )
            .default_headers(reqwest::header::HeaderMap::from_iter([(
                reqwest::header::HeaderName::from_static("x-api-key"),
                reqwest::header::HeaderValue::from_static("canary-secret-4d2e"),
            )]))
    };
    let discovery =
        reqwest_token_refresh::Discovery::oauth("https://auth.example.com").http_client(http());
    assert_clean(&format!("{discovery:?} {discovery:#?}"));
    let builder =
        RefreshTokenGrant::builder("https://auth.example.com/token", "c").http_client(http());
    assert_clean(&format!("{builder:?} {builder:#?}"));
    let grant = builder.build().unwrap();
    assert_clean(&format!("{grant:?} {grant:#?}"));
}
