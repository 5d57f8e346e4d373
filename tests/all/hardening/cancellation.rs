//! The refresh runs in a detached task, so callers dropped at *any* await point of a
//! refresh (taking the lock, reading the store, during the token call, after the server
//! rotated, while saving) never lose the rotated token and never leave other waiters hanging.
//!
//! Each test pauses the refresh at one point with a [`Gate`], drops callers there, releases the
//! gate, and checks: the rotation was saved, the next request uses the new token without a token
//! call, and no refresh token was presented twice.

use std::sync::Arc;

use futures::future::join_all;
use reqwest_token_refresh::Event;

use super::support::*;

struct Fixture {
    server: AuthServer,
    store: Arc<TestStore>,
    client: reqwest_middleware::ClientWithMiddleware,
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
}

async fn fixture() -> Fixture {
    let server = AuthServer::builder().start().await;
    let store = TestStore::memory();
    let refresher = GatedRefresher {
        inner: grant(&server.token_url()),
        gate: Arc::clone(&store.gate),
    };
    let (client, _, events) = client_with_events(
        middleware(refresher, &server.uri()).store(store.clone()),
        server.issue_expired_grant(),
    )
    .await;
    Fixture {
        server,
        store,
        client,
        events,
    }
}

/// Starts `callers` requests, waits until the refresh is paused at `point`, drops the first
/// `dropped` of them, releases the refresh, and returns the survivors' statuses.
async fn drop_callers_at(point: Point, callers: usize, dropped: usize) -> (Fixture, Vec<u16>) {
    let mut fixture = fixture().await;
    let entered = fixture.store.gate.arm(point);
    let mut handles = Vec::new();
    for _ in 0..callers {
        let client = fixture.client.clone();
        let url = fixture.server.api_url("me");
        handles.push(tokio::spawn(async move {
            client.get(url).send().await.map(|r| r.status().as_u16())
        }));
    }
    reached(entered).await;
    for handle in &handles[..dropped] {
        handle.abort();
    }
    fixture.store.gate.release();
    let survivors = join_all(handles.into_iter().skip(dropped)).await;
    let statuses = tokio::time::timeout(WAIT, async { survivors })
        .await
        .expect("no waiter hangs")
        .into_iter()
        .map(|joined| joined.expect("task ran").expect("request succeeded"))
        .collect();
    // The detached refresh finishes on its own, with its rotation saved.
    wait_for(&mut fixture.events, |event| {
        matches!(event, Event::Persisted { generation: 2, .. })
    })
    .await;
    (fixture, statuses)
}

/// After the dust settles: one token call, the rotated tokens stored and in use.
async fn assert_rotation_kept(fixture: &Fixture) {
    assert_eq!(fixture.server.refresh_calls(), 1);
    let stored = fixture.store.stored().await.expect("rotation saved");
    assert_eq!(stored.generation(), 2);
    assert_eq!(
        stored.refresh_token().map(|t| t.secret().to_owned()),
        fixture.server.current_refresh_token()
    );
    let response = fixture
        .client
        .get(fixture.server.api_url("again"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        fixture.server.refresh_calls(),
        1,
        "the rotated token was lost"
    );
    fixture.server.assert_no_refresh_token_reused();
}

const POINTS: [Point; 5] = [
    Point::Lock,
    Point::Load,
    Point::TokenCall,
    Point::TokenCallDone,
    Point::Save,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d4_a_single_caller_dropped_at_any_point_loses_nothing() {
    for point in POINTS {
        let (fixture, statuses) = drop_callers_at(point, 1, 1).await;
        assert!(statuses.is_empty());
        assert_rotation_kept(&fixture).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d4_all_of_many_callers_dropped_at_any_point_lose_nothing() {
    for point in POINTS {
        let (fixture, _) = drop_callers_at(point, 8, 8).await;
        assert_rotation_kept(&fixture).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d4_dropping_the_leader_never_strands_the_other_waiters() {
    for point in POINTS {
        // The first spawned caller usually leads; dropping half covers it either way.
        let (fixture, statuses) = drop_callers_at(point, 8, 4).await;
        assert_eq!(statuses, vec![200; 4], "at {point:?}");
        assert_rotation_kept(&fixture).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d4_a_caller_timing_out_mid_refresh_does_not_cancel_it() {
    let mut fixture = fixture().await;
    let entered = fixture.store.gate.arm(Point::TokenCallDone);
    let client = fixture.client.clone();
    let url = fixture.server.api_url("me");
    let request = tokio::spawn(async move {
        tokio::time::timeout(std::time::Duration::from_millis(50), client.get(url).send()).await
    });
    reached(entered).await;
    assert!(request.await.unwrap().is_err(), "the caller timed out");
    fixture.store.gate.release();
    wait_for(&mut fixture.events, |event| {
        matches!(event, Event::Persisted { generation: 2, .. })
    })
    .await;
    assert_rotation_kept(&fixture).await;
}
