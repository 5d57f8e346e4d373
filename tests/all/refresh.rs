//! When refreshes happen, what they send, and what is kept.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest_token_refresh::{CallbackTokenStore, Event, TokenKey, TokenRecord, TokenSet};

use crate::auth_server::AuthServer;
use crate::helpers::{
    builder, builder_for, built_with_tokens, client, client_with_tokens, events, wait_for,
};

#[tokio::test]
async fn refreshes_proactively_before_expiry() {
    // Still valid for 30 s, which is inside the default 60 s leeway.
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .expect_refresh_calls(1)
        .start()
        .await;
    let issued = server.issue_grant();
    let tokens = TokenSet::new(issued.access_token().clone())
        .with_refresh_token(issued.refresh_token().unwrap().clone())
        .with_expires_at(std::time::SystemTime::now() + Duration::from_secs(30));
    let (client, manager) = client_with_tokens(&server, tokens).await;
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // The request went out with the new token: no 401 was needed.
    assert_eq!(server.api_rejections(), 0);
    let held = manager.tokens(&TokenKey::default()).await.unwrap().unwrap();
    assert_eq!(held.access_token().secret(), "at-2");
}

#[tokio::test]
async fn r34_a_rejected_token_costs_one_refresh_and_one_replay() {
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .expect_refresh_calls(1)
        .start()
        .await;
    let (client, _) = client_with_tokens(&server, server.issue_grant()).await;
    server.reject_current_access_tokens();
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.api_calls(), 2);
    assert_eq!(server.api_rejections(), 1);
}

/// An API on `api` that rejects `first` and answers 200 to any other bearer token, for requests
/// to `/resource` carrying the caller's `x-trace` header and `q=1` query.
async fn api_rejecting(api: &wiremock::MockServer, first: &str, fresh_delay: Duration) {
    use wiremock::matchers::{header, path, query_param};
    use wiremock::{Mock, ResponseTemplate};
    Mock::given(header("authorization", format!("Bearer {first}").as_str()))
        .respond_with(ResponseTemplate::new(401))
        .with_priority(1)
        .expect(1)
        .mount(api)
        .await;
    Mock::given(path("/resource"))
        .and(query_param("q", "1"))
        .and(header("x-trace", "abc"))
        .respond_with(ResponseTemplate::new(200).set_delay(fresh_delay))
        .with_priority(2)
        .expect(1)
        .mount(api)
        .await;
}

#[tokio::test]
async fn d11_the_replay_is_the_same_request_with_and_without_a_body() {
    for with_body in [false, true] {
        let server = AuthServer::start(Duration::from_secs(3600)).await;
        let api = wiremock::MockServer::start().await;
        let tokens = server.issue_grant();
        api_rejecting(&api, tokens.access_token().secret(), Duration::ZERO).await;
        let (client, _) =
            built_with_tokens(builder_for(&server.token_url(), &api.uri()), tokens).await;
        let request = client
            .put(format!("{}/resource?q=1", api.uri()))
            .header("x-trace", "abc");
        let request = if with_body {
            request.body("payload")
        } else {
            request
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "with body: {with_body}");
        let received = api.received_requests().await.unwrap();
        assert_eq!(received.len(), 2);
        let (sent, replayed) = (&received[0], &received[1]);
        assert_eq!(replayed.method, sent.method);
        assert_eq!(replayed.url, sent.url);
        assert_eq!(replayed.body, sent.body);
        assert_eq!(replayed.body, if with_body { &b"payload"[..] } else { b"" });
        assert_ne!(
            replayed.headers.get("authorization"),
            sent.headers.get("authorization")
        );
        for name in sent.headers.keys().filter(|name| *name != "authorization") {
            assert_eq!(replayed.headers.get(name), sent.headers.get(name), "{name}");
        }
    }
}

#[tokio::test]
async fn d11_the_replay_keeps_the_request_timeout() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let api = wiremock::MockServer::start().await;
    let tokens = server.issue_grant();
    // The replay's answer would take 30 s; the request allows 2 s.
    api_rejecting(
        &api,
        tokens.access_token().secret(),
        Duration::from_secs(30),
    )
    .await;
    let (client, _) = built_with_tokens(builder_for(&server.token_url(), &api.uri()), tokens).await;
    let sent = client
        .get(format!("{}/resource?q=1", api.uri()))
        .header("x-trace", "abc")
        .timeout(Duration::from_secs(2))
        .send();
    let error = tokio::time::timeout(Duration::from_secs(10), sent)
        .await
        .expect("the replay ignored the request's timeout")
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
}

#[tokio::test]
async fn d10_a_401_to_the_replay_is_returned_not_retried() {
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .expect_refresh_calls(1)
        .start()
        .await;
    let api = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(401))
        // 2 for the first request (sent, replayed once), then 1 for each later one.
        .expect(5)
        .mount(&api)
        .await;
    let (client, _) = built_with_tokens(
        builder_for(&server.token_url(), &api.uri()),
        server.issue_grant(),
    )
    .await;
    let response = client.get(format!("{}/x", api.uri())).send().await.unwrap();
    assert_eq!(response.status(), 401);
    // Within the cooldown, a permanently rejecting server costs no further token calls.
    for _ in 0..3 {
        let response = client.get(format!("{}/x", api.uri())).send().await.unwrap();
        assert_eq!(response.status(), 401);
    }
}

#[tokio::test]
async fn r17_r52_rotated_refresh_tokens_are_used_next_and_persisted() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let saved: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let log = Arc::clone(&saved);
    let store = CallbackTokenStore::new(move |_key, record: &TokenRecord| {
        let tokens = record.tokens().expect("tokens, not an ended grant");
        let refresh = tokens.refresh_token().map(|rt| rt.secret().to_owned());
        log.lock()
            .unwrap()
            .push((tokens.generation(), refresh.unwrap_or_default()));
    });
    let (client, _) = built_with_tokens(
        builder(&server)
            .store(store)
            .rejection_cooldown(Duration::ZERO),
        server.issue_grant(),
    )
    .await;
    for round in 0..5 {
        server.reject_current_access_tokens();
        let response = client.get(server.api_url("me")).send().await.unwrap();
        assert_eq!(response.status(), 200, "round {round}");
    }
    assert_eq!(server.refresh_calls(), 5);
    assert_eq!(
        server.reuse_detections(),
        0,
        "a consumed refresh token came back"
    );
    assert!(!server.is_revoked());
    let saved = saved.lock().unwrap().clone();
    let generations: Vec<u64> = saved.iter().map(|(generation, _)| *generation).collect();
    assert_eq!(generations, vec![1, 2, 3, 4, 5, 6]);
    // Every rotation was persisted, and the store holds the token the server accepts now.
    assert_eq!(
        saved.last().unwrap().1,
        server.current_refresh_token().unwrap()
    );
}

#[tokio::test]
async fn d2_a_late_401_for_an_older_token_triggers_no_second_refresh() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    // `/api/slow` answers after a delay, so its 401 for the first token arrives after the
    // other request already refreshed. Whatever the timing, only one refresh is allowed.
    server
        .mock_server()
        .register(
            wiremock::Mock::given(wiremock::matchers::path("/api/slow"))
                .and(wiremock::matchers::header("authorization", "Bearer at-1"))
                .respond_with(
                    wiremock::ResponseTemplate::new(401).set_delay(Duration::from_millis(300)),
                )
                .with_priority(1),
        )
        .await;
    let (client, _) = client_with_tokens(&server, server.issue_grant()).await;
    server.reject_current_access_tokens();
    let slow = tokio::spawn({
        let client = client.clone();
        let url = server.api_url("slow");
        async move { client.get(url).send().await.unwrap().status() }
    });
    let fast = client.get(server.api_url("fast")).send().await.unwrap();
    assert_eq!(fast.status(), 200);
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(server.refresh_calls(), 1);
    assert_eq!(server.reuse_detections(), 0);
}

#[tokio::test]
async fn d4_a_caller_dropped_mid_refresh_never_loses_the_rotated_token() {
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .expect_refresh_calls(1)
        .token_delay(Duration::from_millis(300))
        .start()
        .await;
    let (builder, mut events) = events(builder(&server));
    let (client, manager) = client(builder.build());
    manager
        .set_tokens(&TokenKey::default(), server.issue_expired_grant())
        .await
        .unwrap();
    // The caller gives up long before the token endpoint answers.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(20),
        client.get(server.api_url("me")).send(),
    )
    .await;
    assert!(gave_up.is_err(), "the request should still be waiting");
    let persisted = wait_for(&mut events, |event| {
        matches!(event, Event::Persisted { generation: 2, .. })
    })
    .await;
    assert!(matches!(persisted, Event::Persisted { .. }));
    let held = manager.tokens(&TokenKey::default()).await.unwrap().unwrap();
    assert_eq!(
        held.refresh_token().unwrap().secret(),
        server.current_refresh_token().unwrap()
    );
    // The next request uses the rotated token without another token call.
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn initial_tokens_seed_an_empty_store() {
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .expect_refresh_calls(0)
        .start()
        .await;
    let (client, manager) = client(
        builder(&server)
            .initial_tokens(server.issue_grant())
            .build(),
    );
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let held = manager.tokens(&TokenKey::default()).await.unwrap().unwrap();
    assert_eq!(held.generation(), 1);
}

#[tokio::test]
async fn d5_a_second_client_sharing_the_store_adopts_instead_of_refreshing() {
    // Two clients (two "processes") share one store. The first refreshes; the second, whose
    // token then expires, must adopt the stored rotation instead of presenting the consumed
    // refresh token (which would revoke the grant).
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .expect_refresh_calls(1)
        .start()
        .await;
    let store: Arc<dyn reqwest_token_refresh::TokenStore> =
        Arc::new(reqwest_token_refresh::MemoryTokenStore::new());
    let (first, first_manager) = client(builder(&server).store(Arc::clone(&store)).build());
    let (second, second_manager) = client(builder(&server).store(store).build());
    first_manager
        .set_tokens(&TokenKey::default(), server.issue_expired_grant())
        .await
        .unwrap();
    // The second client loads generation 1 (expired) before the first refreshes.
    let loaded = second_manager
        .tokens(&TokenKey::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.generation(), 1);
    assert_eq!(
        first
            .get(server.api_url("a"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        second
            .get(server.api_url("b"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(server.reuse_detections(), 0);
    let held = second_manager
        .tokens(&TokenKey::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.generation(), 2);
}

#[tokio::test]
async fn new_tokens_after_invalid_grant_end_the_reauthorization_state() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let (client, manager) = client(builder(&server).build());
    manager
        .set_tokens(&TokenKey::default(), server.issue_expired_grant())
        .await
        .unwrap();
    // The user revoked the application's access (`invalid_grant` can come at any time).
    server.revoke_grant();
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    assert!(crate::helpers::token_error(&error).is_reauthorization_required());
    // The user logs in again; the same client goes on.
    let fresh = server.issue_grant();
    manager
        .set_tokens(&TokenKey::default(), fresh)
        .await
        .unwrap();
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn d3_a_panicking_event_hook_never_loses_a_rotated_token() {
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let (client, _) = built_with_tokens(
        builder(&server)
            .rejection_cooldown(Duration::ZERO)
            .on_event(|_| panic!("hook bug")),
        server.issue_grant(),
    )
    .await;
    for _ in 0..3 {
        server.reject_current_access_tokens();
        let response = client.get(server.api_url("me")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(server.refresh_calls(), 3);
    assert_eq!(server.reuse_detections(), 0);
}

#[tokio::test]
async fn inv5_a_logout_and_new_login_elsewhere_is_adopted_not_overwritten() {
    // Two processes share a store. A logs the user out and in again; C, still holding the old
    // grant, must take the new tokens rather than write back or refresh the old ones.
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let store: Arc<dyn reqwest_token_refresh::TokenStore> =
        Arc::new(reqwest_token_refresh::MemoryTokenStore::new());
    let (_, a) = client(builder(&server).store(Arc::clone(&store)).build());
    let (c_client, c) = client(builder(&server).store(store).build());
    let key = TokenKey::default();
    a.set_tokens(&key, server.issue_grant()).await.unwrap();
    assert_eq!(
        c_client
            .get(server.api_url("x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    a.clear(&key).await.unwrap();
    let new_login = server.issue_grant();
    a.set_tokens(&key, new_login.clone()).await.unwrap();
    server.reject_current_access_tokens();
    let _ = c_client.get(server.api_url("y")).send().await.unwrap();
    assert_eq!(server.reuse_detections(), 0);
    let held = c.tokens(&key).await.unwrap().unwrap();
    let stored = a.tokens(&key).await.unwrap().unwrap();
    assert_ne!(held.refresh_token().unwrap().secret(), "rt-1");
    assert_eq!(held.refresh_token(), stored.refresh_token());
}

#[tokio::test]
async fn d15_a_stored_refresh_token_is_never_sent_to_another_authorization_server() {
    // Two services share a store by mistake, with the same key: the second, configured for
    // another token endpoint, must refuse the first one's tokens instead of sending them.
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let elsewhere = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(500))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let store: Arc<dyn reqwest_token_refresh::TokenStore> =
        Arc::new(reqwest_token_refresh::MemoryTokenStore::new());
    let _ = built_with_tokens(
        builder(&server).store(Arc::clone(&store)),
        server.issue_expired_grant(),
    )
    .await;
    let (second, _) = client(
        builder_for(&format!("{}/token", elsewhere.uri()), &server.uri())
            .store(store)
            .build(),
    );
    let error = second.get(server.api_url("me")).send().await.unwrap_err();
    match crate::helpers::token_error(&error) {
        reqwest_token_refresh::Error::ForeignTokens { issued_for, .. } => {
            assert_eq!(issued_for, &format!("{} test-client", server.token_url()));
        }
        other => panic!("expected the foreign record refused, got {other:?}"),
    }
    assert_eq!(server.api_calls(), 0);
}
