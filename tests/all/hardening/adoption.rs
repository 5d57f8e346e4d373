//! The one exception to "`invalid_grant` is final": another process already rotated. When the store then
//! holds a newer token set, it is adopted instead of declaring the grant dead.
//!
//! The store's lock normally prevents the race entirely; here it is bypassed (an expired
//! lease, a store without a lock) so that both processes present the same refresh token, and the
//! server answers like Keycloak's "Stale token" (refuses, revokes nothing).

use std::sync::Arc;

use reqwest_token_refresh::Event;

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r26_invalid_grant_after_another_process_rotated_adopts_the_stored_tokens() {
    let server = AuthServer::builder()
        .reuse(ReusePolicy::Refuse)
        .start()
        .await;
    let store = TestStore::memory();
    store.without_lock();
    // Process A: pauses just before its token call.
    let refresher = GatedRefresher {
        inner: grant(&server.token_url()),
        gate: Arc::clone(&store.gate),
    };
    let (a, a_manager, mut a_events) = client_with_events(
        middleware(refresher, &server.uri()).store(store.clone()),
        server.issue_expired_grant(),
    )
    .await;
    // Process B: same store, no pause.
    let (b, _) = client(
        middleware(grant(&server.token_url()), &server.uri())
            .store(store.clone())
            .build(),
    );

    let entered = store.gate.arm(Point::TokenCall);
    let url = server.api_url("a");
    let a_request = tokio::spawn(async move { a.get(url).send().await });
    reached(entered).await;
    // B rotates rt-1 -> rt-2 and stores generation 2 while A still holds rt-1.
    let response = b.get(server.api_url("b")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(store.stored().await.unwrap().generation(), 2);
    store.gate.release();

    let response = a_request.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "A adopted B's tokens");
    assert_eq!(
        last_bearer_at(&server, "/api/a").await.as_deref(),
        Some("at-2"),
        "A's request went out with B's access token"
    );
    assert_eq!(server.presented_refresh_tokens(), vec!["rt-1", "rt-1"]);
    let stored = store.stored().await.expect("not cleared as a dead grant");
    assert_eq!(stored.refresh_token().unwrap().secret(), "rt-2");
    assert_eq!(a_manager.tokens(&key()).await.unwrap().unwrap(), stored);
    wait_for(&mut a_events, |e| {
        matches!(e, Event::Adopted { generation: 2, .. })
    })
    .await;
    while let Ok(event) = a_events.try_recv() {
        assert!(
            !matches!(event, Event::ReauthorizationRequired { .. }),
            "{event:?}"
        );
    }
}

#[tokio::test]
async fn r26_invalid_grant_with_nothing_newer_stored_is_terminal() {
    let server = AuthServer::builder().start().await;
    let store = TestStore::memory();
    let (client, manager) = client(
        middleware(grant(&server.token_url()), &server.uri())
            .store(store.clone())
            .build(),
    );
    manager
        .set_tokens(&key(), server.issue_expired_grant())
        .await
        .unwrap();
    server.revoke_grant();
    for _ in 0..10 {
        let error = client.get(server.api_url("x")).send().await.unwrap_err();
        assert!(token_error(&error).is_reauthorization_required());
    }
    assert_eq!(
        server.refresh_calls(),
        1,
        "fails fast after the first invalid_grant"
    );
    assert_eq!(store.stored().await, None);
}
