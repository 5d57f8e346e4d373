//! RFC 8414 / OpenID Connect discovery of the token and revocation endpoints.

use reqwest_token_refresh::{ClientSecret, Discovery, DiscoveryError};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn metadata_server(
    well_known: &str,
    issuer_path: &str,
    claimed_issuer: Option<&str>,
) -> MockServer {
    let server = MockServer::start().await;
    let issuer = format!("{}{issuer_path}", server.uri());
    let body = serde_json::json!({
        "issuer": claimed_issuer.map_or(issuer.clone(), str::to_owned),
        "token_endpoint": format!("{}/oauth/token", server.uri()),
        "revocation_endpoint": format!("{}/oauth/revoke", server.uri()),
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "extra": {"ignored": true},
    });
    Mock::given(method("GET"))
        .and(path(well_known))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn r69_r71_rfc8414_metadata_is_found_and_its_issuer_checked() {
    let server = metadata_server(
        "/.well-known/oauth-authorization-server/tenant-a",
        "/tenant-a",
        None,
    )
    .await;
    let metadata = Discovery::oauth(format!("{}/tenant-a", server.uri()))
        .danger_allow_http_loopback()
        .fetch()
        .await
        .unwrap();
    assert_eq!(
        metadata.token_endpoint(),
        format!("{}/oauth/token", server.uri())
    );
    assert_eq!(
        metadata.revocation_endpoint(),
        Some(format!("{}/oauth/revoke", server.uri()).as_str())
    );
    let grant = metadata
        .refresh_token_grant("c")
        .client_secret(ClientSecret::new("s"))
        .build()
        .unwrap();
    assert_eq!(grant.token_endpoint().path(), "/oauth/token");
}

#[tokio::test]
async fn openid_connect_discovery_appends_the_well_known_path() {
    let server = metadata_server(
        "/realms/a/.well-known/openid-configuration",
        "/realms/a",
        None,
    )
    .await;
    let metadata = Discovery::openid_connect(format!("{}/realms/a", server.uri()))
        .danger_allow_http_loopback()
        .fetch()
        .await
        .unwrap();
    assert!(metadata.issuer().ends_with("/realms/a"));
}

#[tokio::test]
async fn r71_metadata_naming_another_issuer_is_refused() {
    let server = metadata_server(
        "/.well-known/oauth-authorization-server",
        "",
        Some("https://evil.example.com"),
    )
    .await;
    let error = Discovery::oauth(server.uri())
        .danger_allow_http_loopback()
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(error, DiscoveryError::IssuerMismatch));
}
