//! Persist before publish: the store fails after the server rotated. The request still succeeds with the new
//! token from memory, the failure is surfaced (`Event::PersistFailed`), a later save succeeds,
//! the store never goes back to an older record, and the consumed refresh token is never sent
//! again.

use std::sync::Arc;

use reqwest_token_refresh::{Event, StoreErrorKind};

use super::support::*;

struct Fixture {
    server: AuthServer,
    store: Arc<TestStore>,
    client: reqwest_middleware::ClientWithMiddleware,
    manager: reqwest_token_refresh::TokenManager,
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
}

async fn fixture(cooldown: std::time::Duration) -> Fixture {
    let server = AuthServer::builder().start().await;
    let store = TestStore::memory();
    let (client, manager, events) = client_with_events(
        middleware(grant(&server.token_url()), &server.uri())
            .store(store.clone())
            .rejection_cooldown(cooldown),
        server.issue_expired_grant(),
    )
    .await;
    Fixture {
        server,
        store,
        client,
        manager,
        events,
    }
}

#[tokio::test]
async fn d3_a_failed_save_after_rotation_still_serves_the_request_and_is_retried() {
    let mut f = fixture(std::time::Duration::from_secs(10)).await;
    f.store.fail_saves(1);
    let response = f.client.get(f.server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        last_bearer_at(&f.server, "/api/me").await.as_deref(),
        Some("at-2"),
        "the new token, from memory"
    );
    let failed = wait_for(&mut f.events, |e| matches!(e, Event::PersistFailed { .. })).await;
    let Event::PersistFailed {
        generation, error, ..
    } = failed
    else {
        unreachable!()
    };
    assert_eq!(generation, 2);
    assert_eq!(error.kind(), StoreErrorKind::Unavailable);
    assert_eq!(
        f.store.stored().await.unwrap().generation(),
        1,
        "not saved yet"
    );
    // The background retry saves it.
    wait_for(&mut f.events, |e| {
        matches!(e, Event::Persisted { generation: 2, .. })
    })
    .await;
    let stored = f.store.stored().await.unwrap();
    assert_eq!(stored.refresh_token().unwrap().secret(), "rt-2");
    assert_eq!(f.server.refresh_calls(), 1);
}

#[tokio::test]
async fn r17_while_unsaved_the_next_refresh_uses_the_rotated_token_not_the_stored_one() {
    let mut f = fixture(std::time::Duration::ZERO).await;
    f.store.fail_saves(u32::MAX);
    let response = f.client.get(f.server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    wait_for(&mut f.events, |e| matches!(e, Event::PersistFailed { .. })).await;
    // The store still holds rt-1, which the server has consumed. Force another refresh.
    f.server.reject_current_access_tokens();
    let response = f.client.get(f.server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(f.server.presented_refresh_tokens(), vec!["rt-1", "rt-2"]);
    f.server.assert_no_refresh_token_reused();
    // Once the store recovers, the newest set lands there; the generation only moved forward.
    f.store.fail_saves(0);
    wait_for(&mut f.events, |e| {
        matches!(e, Event::Persisted { generation: 3, .. })
    })
    .await;
    let stored = f.store.stored().await.unwrap();
    assert_eq!(stored.generation(), 3);
    assert_eq!(stored.refresh_token().unwrap().secret(), "rt-3");
    let held = f.manager.tokens(&key()).await.unwrap().unwrap();
    assert_eq!(held, stored);
}

#[tokio::test]
async fn inv1_invalid_grant_while_unsaved_never_falls_back_to_the_consumed_token() {
    let mut f = fixture(std::time::Duration::ZERO).await;
    f.store.fail_saves(u32::MAX);
    let response = f.client.get(f.server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    wait_for(&mut f.events, |e| matches!(e, Event::PersistFailed { .. })).await;
    // An administrator revokes the grant while our save of rt-2 keeps failing.
    f.server.revoke_grant();
    let first = f.client.get(f.server.api_url("me")).send().await;
    let second = f.client.get(f.server.api_url("me")).send().await;
    // rt-1 was consumed by the first refresh; it must never be presented again.
    assert_eq!(
        f.server
            .presented_refresh_tokens()
            .iter()
            .filter(|rt| *rt == "rt-1")
            .count(),
        1,
        "presented: {:?}",
        f.server.presented_refresh_tokens()
    );
    // The grant is dead: re-authorization, not a resurrected generation-1 token set.
    for outcome in [first, second] {
        match outcome {
            Err(error) => assert!(token_error(&error).is_reauthorization_required()),
            Ok(response) => panic!("expected re-authorization, got HTTP {}", response.status()),
        }
    }
    let held = f.manager.tokens(&key()).await.unwrap();
    assert!(
        held.as_ref().is_none_or(|t| t.generation() >= 2),
        "memory went back to generation {:?}",
        held.map(|t| t.generation())
    );
}

#[tokio::test]
async fn inv5_an_unsaved_rotation_never_overwrites_a_newer_login_made_elsewhere() {
    // Process A (this fixture) rotates while its store is unreachable; process B logs the
    // user out and in again on the same shared store. A's background save retry must not put
    // the old session back over B's login (generations restart after a logout, so only the
    // record A's tokens replaced may be overwritten).
    let mut f = fixture(std::time::Duration::ZERO).await;
    let shared = f.store.clone();
    let (_, b) = client(
        middleware(grant(&f.server.token_url()), &f.server.uri())
            .store(shared.clone())
            .build(),
    );
    f.store.fail_saves(1);
    let response = f.client.get(f.server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    wait_for(&mut f.events, |e| matches!(e, Event::PersistFailed { .. })).await;
    // A's session at the server: the refresh token its unsaved rotation holds.
    let a_session = f.server.current_refresh_token().expect("A's grant is live");

    // B: logout, then a new login (stored as generation 1 again).
    b.clear(&key()).await.unwrap();
    let login = f.server.issue_grant();
    b.set_tokens(&key(), login.clone()).await.unwrap();

    // A's retry reads the store, finds a record it did not replace, and must stop there.
    let entered = f.store.gate.arm(Point::Load);
    reached(entered).await;
    f.store.gate.release();
    let saves_before = f.store.saves();
    // Give a (wrong) save every chance to happen before looking.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        f.store.saves(),
        saves_before,
        "the retry wrote over B's login"
    );
    let stored = f.store.stored().await.unwrap();
    assert_eq!(stored.access_token(), login.access_token());

    // A's next request adopts B's login instead of resurrecting its own session.
    f.server.reject_current_access_tokens();
    let _ = f.client.get(f.server.api_url("me")).send().await.unwrap();
    f.server.assert_no_refresh_token_reused();
    // The login is a grant of its own at the server, so A's session is still live there and
    // presenting its refresh token would not count as reuse: check that it never went out.
    assert!(
        !f.server.presented_refresh_tokens().contains(&a_session),
        "A resurrected its own session: {:?}",
        f.server.presented_refresh_tokens()
    );
    let held = f.manager.tokens(&key()).await.unwrap().unwrap();
    assert_ne!(held.refresh_token(), None);
    assert_eq!(f.store.stored().await.unwrap(), held);
}
