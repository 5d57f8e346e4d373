//! Bounded memory: a manager acting for many keys forgets the idle ones, and never one with
//! something unfinished; a forgotten key reads the store again.

use std::sync::Arc;

use reqwest_token_refresh::{MemoryTokenStore, TokenKey, TokenStore};

use crate::auth_server::AuthServer;
use crate::helpers::{builder, client, TestStore};

const LIMIT: usize = 20;

/// Makes the manager hold `count` more keys (each key's state is looked up once).
async fn touch_keys(manager: &reqwest_token_refresh::TokenManager, prefix: &str, count: usize) {
    for i in 0..count {
        let _ = manager
            .tokens(&TokenKey::new(format!("{prefix}-{i}")))
            .await;
    }
}

#[tokio::test]
async fn above_the_key_limit_the_least_recently_used_keys_are_forgotten() {
    let server = AuthServer::start(std::time::Duration::from_secs(3600)).await;
    let (_, manager) = client(builder(&server).max_keys(LIMIT).build());
    touch_keys(&manager, "user", 10 * LIMIT).await;
    assert!(
        manager.cached_keys() <= LIMIT,
        "{} keys held, limit {LIMIT}",
        manager.cached_keys()
    );
    assert!(
        manager.cached_keys() > LIMIT / 2,
        "not everything is dropped"
    );
}

#[tokio::test]
async fn a_key_with_an_unsaved_rotation_is_never_forgotten() {
    let server = AuthServer::start(std::time::Duration::from_secs(3600)).await;
    let store = TestStore::memory();
    let (client, manager) = client(
        builder(&server)
            .store(Arc::clone(&store))
            .max_keys(LIMIT)
            .build(),
    );
    touch_keys(&manager, "first", 1).await;
    let key = TokenKey::new("unsaved");
    manager
        .set_tokens(&key, server.issue_expired_grant())
        .await
        .unwrap();
    // The refresh rotates, and its save fails: the new refresh token lives only in memory.
    store.fail_saves(u32::MAX);
    let response = client
        .get(server.api_url("me"))
        .with_extension(key.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let rotated = server.current_refresh_token().unwrap();

    touch_keys(&manager, "other", 10 * LIMIT).await;
    let held = manager.tokens(&key).await.unwrap().unwrap();
    assert_eq!(
        held.refresh_token().unwrap().secret(),
        rotated,
        "the rotated refresh token is still held"
    );
    // Once the store works again, the kept rotation is saved; the grant was never reused.
    store.fail_saves(0);
    manager.set_tokens(&key, held).await.unwrap();
    let stored = store.load(&key).await.unwrap().unwrap();
    assert_eq!(
        stored.tokens().unwrap().refresh_token().unwrap().secret(),
        rotated
    );
    assert_eq!(server.refresh_calls(), 1);
    server.assert_no_refresh_token_reused();
}

/// A key forgotten, then refreshed by another process: using it again reads the store first,
/// so the newer tokens are used at once (no 401 with the old access token, no refresh).
#[tokio::test]
async fn a_forgotten_key_reads_the_store_again() {
    let server = AuthServer::start(std::time::Duration::from_secs(3600)).await;
    let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::new());
    // Two keys at most: the first key (kept for good: the hot path reads it without the map's
    // lock) and one more, so a new key always pushes the previous one out.
    let (first, first_manager) = client(
        builder(&server)
            .store(Arc::clone(&store))
            .max_keys(2)
            .build(),
    );
    let (second, _) = client(builder(&server).store(Arc::clone(&store)).build());
    touch_keys(&first_manager, "first", 1).await;
    let key = TokenKey::new("shared");
    first_manager
        .set_tokens(&key, server.issue_grant())
        .await
        .unwrap();
    let send = |client: &reqwest_middleware::ClientWithMiddleware| {
        client
            .get(server.api_url("me"))
            .with_extension(key.clone())
            .send()
    };
    assert_eq!(send(&first).await.unwrap().status(), 200);
    touch_keys(&first_manager, "other", 1).await;
    assert_eq!(first_manager.cached_keys(), 2);

    // The other process finds the access token rejected and refreshes.
    server.reject_current_access_tokens();
    assert_eq!(send(&second).await.unwrap().status(), 200);
    let rejections = server.api_rejections();
    assert_eq!(server.refresh_calls(), 1);

    assert_eq!(send(&first).await.unwrap().status(), 200);
    assert_eq!(
        server.api_rejections(),
        rejections,
        "the first process used the stored, newer token straight away"
    );
    assert_eq!(server.refresh_calls(), 1);
    server.assert_no_refresh_token_reused();
}
