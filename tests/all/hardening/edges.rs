//! The crate's promise at its edges: a consumed refresh token is never sent again; newer tokens
//! are never overwritten by older ones; a refresh token goes only to the server that issued it.
//! Each test is a way a careless operator or a hostile server once broke one of the three.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest_token_refresh::{
    AccessToken, Error, MemoryTokenStore, RefreshToken, RefreshTokenGrant, TokenKey,
    TokenRefresher, TokenResponse, TokenSet, TokenStore,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::support::*;

/// A middleware of `server` over `store`, built with `initial` as its initial tokens.
fn with_initial(
    server: &AuthServer,
    store: Arc<dyn TokenStore>,
    initial: TokenSet,
) -> (
    reqwest_middleware::ClientWithMiddleware,
    reqwest_token_refresh::TokenManager,
) {
    client(
        middleware(grant(&server.token_url()), &server.uri())
            .store(store)
            .initial_tokens(initial)
            .build(),
    )
}

/// Sends one request and expects it to succeed.
async fn succeeds(client: &reqwest_middleware::ClientWithMiddleware, url: String) {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn initial_tokens_are_not_seeded_again_after_a_logout() {
    let server = AuthServer::builder().start().await;
    let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::new());
    let t0 = server.issue_expired_grant();
    let (first, first_manager) = with_initial(&server, Arc::clone(&store), t0.clone());
    succeeds(&first, server.api_url("a")).await; // T0 rotated to T1
    first_manager.clear(&key()).await.unwrap();

    // The next run of the program, built the same way.
    let (second, _) = with_initial(&server, Arc::clone(&store), t0);
    let error = failed_request(&second, server.api_url("b")).await;
    assert!(error.is_reauthorization_required(), "{error:?}");
    assert_eq!(
        server.presented_refresh_tokens(),
        vec!["rt-1"],
        "T0's refresh token sent again"
    );
    server.assert_no_refresh_token_reused();
}

#[tokio::test]
async fn initial_tokens_are_not_seeded_again_after_invalid_grant() {
    let server = AuthServer::builder().start().await;
    let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::new());
    let t0 = server.issue_expired_grant();
    let (first, _) = with_initial(&server, Arc::clone(&store), t0.clone());
    succeeds(&first, server.api_url("a")).await;
    server.revoke_grant();
    server.reject_current_access_tokens();
    let error = failed_request(&first, server.api_url("b")).await;
    assert!(error.is_reauthorization_required(), "{error:?}");

    let (second, _) = with_initial(&server, Arc::clone(&store), t0);
    let error = failed_request(&second, server.api_url("c")).await;
    assert!(error.is_reauthorization_required(), "{error:?}");
    assert_eq!(
        server.presented_refresh_tokens(),
        vec!["rt-1", "rt-2"],
        "T0's refresh token sent again"
    );
}

/// The key's state is looked at again 10 s after `invalid_grant` (the user may have logged in
/// through another process); the initial tokens this middleware never used must not be
/// seeded then either.
#[tokio::test]
async fn initial_tokens_are_not_seeded_by_the_recheck_after_invalid_grant() {
    let server = AuthServer::builder().start().await;
    let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::new());
    let t0 = server.issue_expired_grant();
    // Another process ran first: it rotated T0 to T1 and stored T1.
    let (other, _) = with_initial(&server, Arc::clone(&store), t0.clone());
    succeeds(&other, server.api_url("a")).await;
    // This process starts later with the same initial tokens and adopts T1.
    let (client, _) = with_initial(&server, Arc::clone(&store), t0);
    succeeds(&client, server.api_url("b")).await;
    server.revoke_grant();
    server.reject_current_access_tokens();
    let error = failed_request(&client, server.api_url("c")).await;
    assert!(error.is_reauthorization_required(), "{error:?}");

    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let error = failed_request(&client, server.api_url("d")).await;
    assert!(error.is_reauthorization_required(), "{error:?}");
    assert_eq!(
        server.presented_refresh_tokens(),
        vec!["rt-1", "rt-2"],
        "T0's refresh token sent again"
    );
}

/// A process whose lock was lost (an expired lease) finishes a slow refresh after the key was
/// logged out and another user logged in under it: its save must not replace the new login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_rotation_never_overwrites_a_new_login() {
    // Several grants (users) at one server.
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let store = TestStore::memory();
    store.without_lock();
    let stale = GatedRefresher {
        inner: grant(&server.token_url()),
        gate: Arc::clone(&store.gate),
    };
    let (a, _a_manager) = built_with_tokens(
        middleware(stale, &server.uri()).store(store.clone()),
        server.issue_expired_grant(),
    )
    .await;
    let (_, b_manager) = client(
        middleware(grant(&server.token_url()), &server.uri())
            .store(store.clone())
            .build(),
    );

    let entered = store.gate.arm(Point::TokenCall);
    let url = server.api_url("a");
    let a_request = tokio::spawn(async move { a.get(url).send().await });
    reached(entered).await;
    // Meanwhile: logout, and a fresh login of another user under the same key.
    b_manager.clear(&key()).await.unwrap();
    let login = server.issue_grant();
    let login_refresh = login.refresh_token().unwrap().secret().to_owned();
    b_manager.set_tokens(&key(), login).await.unwrap();
    store.gate.release();
    let response = a_request.await.unwrap().unwrap();
    assert_eq!(
        response.status(),
        200,
        "the stale holder uses the new login"
    );

    let stored = store.stored().await.expect("the new login is stored");
    assert_eq!(
        stored.refresh_token().unwrap().secret(),
        login_refresh,
        "the stale rotation replaced the new login"
    );
    assert_eq!(server.reuse_detections(), 0);
}

/// Two services that share a store and a key by mistake: B never sends A's refresh token to
/// its own revocation endpoint, and never deletes A's record.
#[tokio::test]
async fn revoke_never_sends_or_deletes_tokens_issued_for_another_server() {
    let a_server = AuthServer::builder().start().await;
    let b_server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&b_server)
        .await;
    let store = TestStore::memory();
    let (_, a_manager) = built_with_tokens(
        middleware(grant(&a_server.token_url()), &a_server.uri()).store(store.clone()),
        a_server.issue_grant(),
    )
    .await;
    let b_grant = RefreshTokenGrant::builder(format!("{}/token", b_server.uri()), "service-b")
        .revocation_endpoint(format!("{}/revoke", b_server.uri()))
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let (_, b_manager) = client(
        middleware(b_grant, &b_server.uri())
            .store(store.clone())
            .build(),
    );

    let result = b_manager.revoke(&key()).await;
    assert!(
        result.is_err(),
        "B reported success for tokens it does not own"
    );
    let stored = store.stored().await.expect("A's record is still there");
    assert_eq!(Some(stored), a_manager.tokens(&key()).await.unwrap());
}

/// A token set written through the public store API (a login tool, say) records no issuer:
/// its refresh token must not go to whichever server this middleware talks to.
#[tokio::test]
async fn an_unbound_stored_record_is_refused_by_default() {
    let server = AuthServer::builder().expect_refresh_calls(0).start().await;
    let store = TestStore::memory();
    let unbound = TokenSet::new(AccessToken::new("at-x"))
        .with_refresh_token(RefreshToken::new("rt-from-elsewhere"))
        .with_expires_at(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1));
    let _ = store.save(&key(), &unbound.into(), None).await.unwrap();
    let (client, _) = client(
        middleware(grant(&server.token_url()), &server.uri())
            .store(store.clone())
            .build(),
    );
    let error = failed_request(&client, server.api_url("a")).await;
    assert!(!error.is_transient(), "{error:?}");
    assert!(
        error.to_string().contains("issued_for") || error.to_string().contains("unbound"),
        "the error names the fix: {error}"
    );
    assert!(server.presented_refresh_tokens().is_empty());
}

/// A refresher of the application's own that rotates the refresh token but hands back an access
/// token the header rules refuse.
struct BadAccessTokenRefresher;

#[async_trait]
impl TokenRefresher for BadAccessTokenRefresher {
    /// Its API is a loopback test server.
    fn allows_http_loopback(&self) -> bool {
        true
    }

    async fn refresh(
        &self,
        _key: &TokenKey,
        _current: Option<&TokenSet>,
    ) -> Result<TokenResponse, Error> {
        Ok(TokenResponse::new(AccessToken::new("not a b64token"))
            .with_refresh_token(RefreshToken::new("rt-rotated"))
            .with_expires_in(Duration::from_secs(3600)))
    }
}

#[tokio::test]
async fn a_custom_refresher_never_loses_a_rotation() {
    let api = MockServer::start().await;
    let expired = TokenSet::new(AccessToken::new("at-1"))
        .with_refresh_token(RefreshToken::new("rt-1"))
        .with_expires_at(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1));
    let (client, manager, store) =
        client_with_store(BadAccessTokenRefresher, &api.uri(), expired).await;
    let error = failed_request(&client, format!("{}/x", api.uri())).await;
    assert!(!error.is_transient(), "{error:?}");
    let held = manager.tokens(&key()).await.unwrap().unwrap();
    assert_eq!(held.refresh_token().unwrap().secret(), "rt-rotated");
    let stored = store.stored().await.unwrap();
    assert_eq!(stored.refresh_token().unwrap().secret(), "rt-rotated");
}

/// The server accepted the revocation; the caller gave up waiting before the answer came.
#[tokio::test]
async fn revoke_forgets_the_tokens_even_when_the_caller_gives_up() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(300)))
        .expect(1)
        .mount(&server)
        .await;
    let grant = RefreshTokenGrant::builder(format!("{}/token", server.uri()), "c")
        .revocation_endpoint(format!("{}/revoke", server.uri()))
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let (_, manager, store) = client_with_store(
        grant,
        &server.uri(),
        TokenSet::new(AccessToken::new("at-1")).with_refresh_token(RefreshToken::new("rt-1")),
    )
    .await;
    let gave_up = tokio::time::timeout(Duration::from_millis(50), manager.revoke(&key())).await;
    assert!(gave_up.is_err(), "the caller timed out first");
    // The revocation completes in the background; bounded wait for its forget.
    tokio::time::timeout(WAIT, async {
        while manager.tokens(&key()).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the revoked tokens are forgotten");
    assert!(store
        .stored()
        .await
        .is_none_or(|stored| stored.refresh_token().is_none()));
}

#[tokio::test]
async fn a_rejected_streaming_request_still_refreshes_for_the_next_one() {
    let server = AuthServer::builder().start().await;
    let (client, _) = client_for(&server, server.issue_grant()).await;
    server.reject_current_access_tokens();
    let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>("chunk")]).boxed();
    let response = client
        .post(server.api_url("upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "a stream cannot be replayed");
    assert_eq!(
        server.refresh_calls(),
        1,
        "the rejection refreshed the token"
    );
    let calls = server.api_calls();
    let response = client.get(server.api_url("next")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        server.api_calls(),
        calls + 1,
        "the next request went out once, with a new token"
    );
}

#[tokio::test]
async fn a_down_token_endpoint_is_not_called_once_per_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let (client, _) = built_with_tokens(
        middleware(grant(&format!("{}/token", server.uri())), &server.uri()),
        TokenSet::new(AccessToken::new("at-1"))
            .with_refresh_token(RefreshToken::new("rt-1"))
            .with_expires_at(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1)),
    )
    .await;
    for _ in 0..20 {
        let error = failed_request(&client, format!("{}/x", server.uri())).await;
        assert!(error.is_transient(), "{error:?}");
    }
    let calls = server.received_requests().await.unwrap().len();
    assert!(calls <= 5, "{calls} token calls for 20 requests");
}

#[tokio::test]
async fn a_token_type_echoing_a_secret_is_redacted() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "at-2",
            "token_type": "canary-client-secret rt-canary-1",
        })))
        .mount(&server)
        .await;
    let grant = RefreshTokenGrant::builder(format!("{}/token", server.uri()), "c")
        .client_secret(reqwest_token_refresh::ClientSecret::new(
            "canary-client-secret",
        ))
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let (client, _) = built_with_tokens(
        middleware(grant, &server.uri()),
        TokenSet::new(AccessToken::new("at-1"))
            .with_refresh_token(RefreshToken::new("rt-canary-1"))
            .with_expires_at(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1)),
    )
    .await;
    let error = failed_request(&client, format!("{}/x", server.uri())).await;
    let shown = format!("{error} {error:?} {:?}", std::error::Error::source(&error));
    assert!(!shown.contains("canary"), "{shown}");
}

#[test]
fn a_malformed_endpoint_url_never_shows_its_password() {
    for url in [
        "https:/user:pa55@auth.example.com/token",
        "https:user:pa55@auth.example.com",
    ] {
        let error = RefreshTokenGrant::builder(url, "c").build().unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("pa55"), "{shown}");
    }
}

/// A proactive refresh that fails while the token is still valid does not fail the request, and
/// the requests that follow while refreshes are held back use the valid token without a call.
#[tokio::test]
async fn a_failing_proactive_refresh_keeps_the_still_valid_token_working() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/x"))
        .respond_with(ResponseTemplate::new(200))
        .expect(5)
        .mount(&server)
        .await;
    let (client, _) = built_with_tokens(
        middleware(grant(&format!("{}/token", server.uri())), &server.uri()),
        // Inside the 60 s leeway, not expired.
        TokenSet::new(AccessToken::new("at-1"))
            .with_refresh_token(RefreshToken::new("rt-1"))
            .with_expires_at(std::time::SystemTime::now() + Duration::from_secs(30)),
    )
    .await;
    for _ in 0..5 {
        succeeds(&client, format!("{}/x", server.uri())).await;
    }
}
