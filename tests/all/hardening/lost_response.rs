//! A lost response: the server commits a rotation, then the response is lost (here: it arrives after
//! the client's timeout). The request fails with a typed transient error after exactly one
//! token call; nothing loops or storms.
//!
//! What happens next depends on the server, and is the one case no client can fix:
//! - with a reuse grace window (Okta, Auth0 "leeway", Hydra graceful rotation), the next request
//!   retries with the same refresh token inside the window and recovers;
//! - without one (node-oidc-provider, Hydra by default), that retry is reuse: the server revokes
//!   the grant, and the key fails fast with `ReauthorizationRequired` from then on.

use std::time::Duration;

use reqwest_token_refresh::{Error, RefreshTokenGrant, TransientError};

use super::support::*;

async fn ambiguous(reuse: ReusePolicy) -> (AuthServer, reqwest_middleware::ClientWithMiddleware) {
    let server = AuthServer::builder().reuse(reuse).start().await;
    // The first token response comes after the rotation is committed, and long after the
    // client's 200 ms timeout.
    server.inject(Fault::LoseResponse);
    let grant = RefreshTokenGrant::builder(server.token_url(), "c")
        .timeout(Duration::from_millis(200))
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let (client, manager) = client(middleware(grant, &server.uri()).build());
    manager
        .set_tokens(&key(), server.issue_expired_grant())
        .await
        .unwrap();
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    assert!(
        matches!(
            token_error(&error),
            Error::Transient(TransientError::Timeout)
        ),
        "{:?}",
        token_error(&error)
    );
    assert_eq!(
        server.refresh_calls(),
        1,
        "one call, no internal retry loop"
    );
    assert_eq!(
        server.current_refresh_token().as_deref(),
        Some("rt-2"),
        "server committed"
    );
    (server, client)
}

#[tokio::test]
async fn p_ambig_with_a_grace_window_the_next_request_recovers() {
    let (server, client) = ambiguous(ReusePolicy::Grace(Duration::from_secs(30))).await;
    // The retry presents rt-1 again, inside the grace window, and gets a new pair.
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.presented_refresh_tokens(), vec!["rt-1", "rt-1"]);
    assert_eq!(server.reuse_detections(), 0);
    for _ in 0..10 {
        let response = client.get(server.api_url("me")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(server.refresh_calls(), 2);
}

#[tokio::test]
async fn p_ambig_without_a_grace_window_ends_in_reauthorization_not_a_storm() {
    let (server, client) = ambiguous(ReusePolicy::RevokeGrant).await;
    // The unavoidable case: our only refresh token was consumed by a response we never read.
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    assert!(token_error(&error).is_reauthorization_required());
    assert_eq!(server.presented_refresh_tokens(), vec!["rt-1", "rt-1"]);
    assert_eq!(server.reuse_detections(), 1, "the strict server saw reuse");
    for _ in 0..20 {
        let error = client.get(server.api_url("me")).send().await.unwrap_err();
        assert!(token_error(&error).is_reauthorization_required());
    }
    assert_eq!(
        server.refresh_calls(),
        2,
        "fails fast after invalid_grant: no storm"
    );
}
