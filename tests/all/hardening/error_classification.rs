//! RFC 6749 §5.2: token-endpoint errors are classified by their body, not their status; non-standard
//! bodies are non-terminal; what the server wrote is escaped, truncated and stripped of any
//! secret it echoed before it reaches `Display`.

use std::time::{Duration, SystemTime};

use reqwest_token_refresh::{
    AccessToken, ClientAuth, ClientSecret, Error, ErrorCode, RefreshToken, RefreshTokenGrant,
    TokenSet,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::support::*;

const REFRESH: &str = "rt-echo-Zq81";
const SECRET: &str = "secret-echo-P4x0";

fn expired() -> TokenSet {
    TokenSet::new(AccessToken::new("at-old"))
        .with_refresh_token(RefreshToken::new(REFRESH))
        .with_expires_at(SystemTime::UNIX_EPOCH + Duration::from_secs(10))
}

/// One refresh against an endpoint answering `status` + `body`, with the store afterwards.
async fn outcome(
    status: u16,
    body: serde_json::Value,
    auth: ClientAuth,
) -> (Error, Option<TokenSet>) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .expect(1)
        .mount(&server)
        .await;
    let grant = RefreshTokenGrant::builder(format!("{}/token", server.uri()), "hardening")
        .client_secret(ClientSecret::new(SECRET))
        .client_auth(auth)
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let (client, _, store) = client_with_store(grant, &server.uri(), expired()).await;
    let error = failed_request(&client, format!("{}/api/x", server.uri())).await;
    (error, store.stored().await)
}

#[tokio::test]
async fn r24_invalid_grant_is_terminal_whatever_the_status() {
    for status in [400, 401, 403, 200] {
        let (error, stored) = outcome(
            status,
            serde_json::json!({"error": "invalid_grant"}),
            ClientAuth::ClientSecretBasic,
        )
        .await;
        assert!(error.is_reauthorization_required(), "{status}: {error:?}");
        assert_eq!(error.oauth_error().unwrap().status().as_u16(), status);
        // The dead grant is recorded in the store, so other processes fail fast too.
        assert_eq!(stored, None, "{status}");
    }
}

#[tokio::test]
async fn r27_client_configuration_errors_keep_the_refresh_token() {
    for code in [
        "invalid_client",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    ] {
        for status in [400, 401, 200] {
            let (error, stored) = outcome(
                status,
                serde_json::json!({ "error": code }),
                ClientAuth::ClientSecretBasic,
            )
            .await;
            assert!(error.is_client_rejected(), "{code} {status}: {error:?}");
            assert_eq!(
                stored.unwrap().refresh_token().unwrap().secret(),
                REFRESH,
                "{code} {status}"
            );
        }
    }
}

#[tokio::test]
async fn github_style_errors_with_200_are_errors_not_tokens() {
    let (error, stored) = outcome(
        200,
        serde_json::json!({"error": "bad_refresh_token", "access_token": "not-this-one"}),
        ClientAuth::ClientSecretBasic,
    )
    .await;
    assert!(matches!(error, Error::TokenEndpoint(_)), "{error:?}");
    assert_eq!(
        error.oauth_error().unwrap().code(),
        &ErrorCode::Extension("bad_refresh_token".into())
    );
    assert!(stored.is_some());
}

#[tokio::test]
async fn non_standard_error_bodies_are_unknown_and_not_terminal() {
    for (status, body) in [
        (
            400,
            serde_json::json!({"code": 400, "error_code": "refresh_token_not_found", "msg": "x"}),
        ),
        (404, serde_json::json!({"message": "not found"})),
        (400, serde_json::json!({"error": 42})),
        (400, serde_json::json!({"error": {"code": "invalid_grant"}})),
        (418, serde_json::json!([])),
    ] {
        let (error, stored) = outcome(status, body.clone(), ClientAuth::ClientSecretBasic).await;
        assert!(
            matches!(error, Error::TokenEndpoint(_)),
            "{body}: {error:?}"
        );
        assert!(!error.is_reauthorization_required());
        assert!(!error.is_transient());
        // Not terminal: the refresh token is kept for a later attempt.
        assert_eq!(stored.unwrap().refresh_token().unwrap().secret(), REFRESH);
    }
}

#[tokio::test]
async fn server_failures_are_transient_and_keep_the_tokens() {
    for (status, body) in [
        (503, serde_json::json!({"error": "temporarily_unavailable"})),
        (500, serde_json::json!({"error": "server_error"})),
        (200, serde_json::json!({"error": "temporarily_unavailable"})),
        (429, serde_json::json!({})),
        (502, serde_json::json!("bad gateway")),
    ] {
        let (error, stored) = outcome(status, body.clone(), ClientAuth::ClientSecretBasic).await;
        assert!(error.is_transient(), "{status} {body}: {error:?}");
        assert!(stored.is_some());
    }
}

#[tokio::test]
async fn r25_descriptions_are_escaped_truncated_and_echoed_secrets_redacted() {
    let long = "y".repeat(5_000);
    for auth in [ClientAuth::ClientSecretBasic, ClientAuth::ClientSecretPost] {
        let description = format!(
            "token {REFRESH} for client secret {SECRET}\r\n\u{1b}[31mred\u{0}\u{7f} {long}"
        );
        let (error, _) = outcome(
            400,
            serde_json::json!({"error": "invalid_grant", "error_description": description}),
            auth,
        )
        .await;
        let shown = format!("{error} | {error:?} | {:?}", error.oauth_error());
        assert!(!shown.contains(REFRESH), "{shown}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("[redacted]"));
        for control in ['\r', '\n', '\u{1b}', '\u{0}', '\u{7f}'] {
            assert!(
                !error.to_string().contains(control),
                "{control:?} in {error}"
            );
        }
        // Cut at 200 characters of the server's text (escapes may lengthen what is kept).
        let kept = error.oauth_error().unwrap().description().unwrap();
        assert!(kept.ends_with('…'), "{kept}");
        assert!(kept.matches('y').count() < 200);
        assert!(error.to_string().len() < 1_000);
    }
}

#[tokio::test]
async fn r25_an_error_code_echoing_a_secret_is_redacted_too() {
    let (error, _) = outcome(
        400,
        serde_json::json!({ "error": format!("bad_{REFRESH}_{SECRET}") }),
        ClientAuth::ClientSecretPost,
    )
    .await;
    let shown = format!("{error} {error:?}");
    assert!(
        !shown.contains(REFRESH) && !shown.contains(SECRET),
        "{shown}"
    );
}
