//! RedisTokenStore against a real Redis server (`REDIS_URL`, default `redis://127.0.0.1:6379`).
//! With `CI` set, a missing server fails these tests; otherwise they are skipped with a note.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest_token_refresh::{
    AccessToken, EncryptionKey, Error, KeyRing, RedisTokenStore, RefreshTokenGrant, SaveOutcome,
    StoreErrorKind, TokenKey, TokenRecord, TokenRefresher, TokenResponse, TokenSet, TokenStore,
};

use crate::auth_server::AuthServer;
use crate::helpers::{bound, builder, builder_for, built_with_tokens, client, record};
use crate::redis_support::{
    delete_lease, key_ring, spoil_record, tokens, unique_prefix, PrivateRedis,
};
use crate::workers::{self, Workers};
use reqwest_token_refresh::test_util::store_contract::StoreContract;

const WORKERS: usize = 4;
const ROUNDS: usize = 5;
const REQUESTS_PER_ROUND: usize = 40;

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The store, or `None` (test skipped) when Redis is not running outside CI.
async fn store_with(prefix: &str, keys: KeyRing) -> Option<RedisTokenStore> {
    let connected = RedisTokenStore::builder(keys)
        .prefix(prefix)
        .lock_lease(Duration::from_secs(5))
        .lock_timeout(Duration::from_secs(20))
        .connect(&redis_url())
        .await;
    match connected {
        Ok(store) => Some(store),
        Err(error) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping: no redis at {} ({error})", redis_url());
            None
        }
        Err(error) => panic!("redis is required in CI: {error}"),
    }
}

async fn raw_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn round_trip_and_no_token_bytes_in_redis() {
    let prefix = unique_prefix();
    let Some(store) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let key = TokenKey::new("user-1");
    assert_eq!(store.load(&key).await.unwrap(), None);
    let first = record(tokens("1"), 1);
    assert_eq!(
        store.save(&key, &first, None).await.unwrap(),
        SaveOutcome::Saved
    );
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded, first);

    let mut redis = raw_connection().await;
    let raw: Vec<Vec<u8>> = redis::cmd("HVALS")
        .arg(store.record_name(&key))
        .query_async(&mut redis)
        .await
        .unwrap();
    let raw = raw.concat();
    assert!(!raw.is_empty());
    assert!(
        !String::from_utf8_lossy(&raw).contains("canary"),
        "a token is readable in redis"
    );
}

/// The `TokenStore` contract suite, with Redis's ways of losing a lock (the lease deleted, as
/// when it expires) and of spoiling a record (a tampered seal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_store_contract() {
    let prefix = unique_prefix();
    let Some(_) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let make = {
        let prefix = prefix.clone();
        move || {
            let prefix = prefix.clone();
            async move { store_with(&prefix, key_ring()).await.expect("redis") }
        }
    };
    let breaker = {
        let prefix = prefix.clone();
        move |key: TokenKey| {
            let lease = format!("{prefix}lock:{key}");
            async move {
                delete_lease(&mut raw_connection().await, lease).await;
            }
        }
    };
    let corrupter = move |key: TokenKey| {
        let record = format!("{prefix}tokens:{key}");
        async move {
            spoil_record(&mut raw_connection().await, record).await;
        }
    };
    StoreContract::new(make)
        .lock_breaker(breaker)
        .corrupter(corrupter)
        .run()
        .await;
}

#[tokio::test]
async fn d8_conditional_saves_let_exactly_one_writer_win() {
    let prefix = unique_prefix();
    let Some(store) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let key = TokenKey::new("user-1");
    let base = record(tokens("1"), 1);
    assert_eq!(
        store.save(&key, &base, None).await.unwrap(),
        SaveOutcome::Saved
    );
    let stored = store.load(&key).await.unwrap().unwrap();
    // Two writers both start from the stored record and write the next one.
    let a = record(tokens("a"), 2);
    let b = record(tokens("b"), 2);
    let (first, second) = tokio::join!(
        store.save(&key, &a, Some(stored.revision())),
        store.save(&key, &b, Some(stored.revision()))
    );
    let outcomes = [first.unwrap(), second.unwrap()];
    let wins = outcomes
        .iter()
        .filter(|o| **o == SaveOutcome::Saved)
        .count();
    assert_eq!(wins, 1, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, SaveOutcome::Conflict { current: Some(_) })));
    // A first insert over an existing record is a conflict too.
    assert!(matches!(
        store
            .save(&key, &record(tokens("c"), 1), None)
            .await
            .unwrap(),
        SaveOutcome::Conflict { .. }
    ));
}

/// Records written before revisions existed (a hash without `revision`) are read, compared as
/// `legacy-<generation>`, and get a revision on their next save.
#[tokio::test]
async fn a_record_written_before_revisions_is_read_and_replaced() {
    let prefix = unique_prefix();
    let Some(store) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let key = TokenKey::new("user-1");
    let mut legacy = serde_json::to_value(tokens("old")).unwrap();
    legacy["generation"] = 3.into();
    legacy.as_object_mut().unwrap().remove("revision");
    let legacy: TokenRecord = serde_json::from_value(legacy).unwrap();
    let sealed = key_ring().seal(&store.record_name(&key), &legacy).unwrap();
    let mut redis = raw_connection().await;
    let _: () = redis::cmd("HSET")
        .arg(store.record_name(&key))
        .arg("generation")
        .arg("3")
        .arg("sealed")
        .arg(sealed)
        .query_async(&mut redis)
        .await
        .unwrap();
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded.revision().as_str(), "legacy-3");
    let next = record(tokens("new"), 4);
    assert_eq!(
        store
            .save(&key, &next, Some(loaded.revision()))
            .await
            .unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(next));
}

#[tokio::test]
async fn a_value_copied_to_another_users_key_does_not_open() {
    let prefix = unique_prefix();
    let Some(store) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let alice = TokenKey::new("alice");
    let mallory = TokenKey::new("mallory");
    let _ = store
        .save(&alice, &record(tokens("alice"), 1), None)
        .await
        .unwrap();
    let mut redis = raw_connection().await;
    let _: () = redis::cmd("COPY")
        .arg(store.record_name(&alice))
        .arg(store.record_name(&mallory))
        .query_async(&mut redis)
        .await
        .unwrap();
    let error = store.load(&mallory).await.unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::Corrupt);
}

#[tokio::test]
async fn a_tampered_value_is_an_error_and_is_left_in_place() {
    let prefix = unique_prefix();
    let Some(store) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let key = TokenKey::new("user-1");
    let first = record(tokens("1"), 1);
    let _ = store.save(&key, &first, None).await.unwrap();
    let mut redis = raw_connection().await;
    let record = store.record_name(&key);
    let sealed: String = redis::cmd("HGET")
        .arg(&record)
        .arg("sealed")
        .query_async(&mut redis)
        .await
        .unwrap();
    let tampered = sealed.replacen("\"ciphertext\":\"", "\"ciphertext\":\"AAAA", 1);
    let _: () = redis::cmd("HSET")
        .arg(&record)
        .arg("sealed")
        .arg(&tampered)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        store.load(&key).await.unwrap_err().kind(),
        StoreErrorKind::Corrupt
    );
    // Never silently replaced: a save expecting the old record does not overwrite it.
    let next = crate::helpers::record(tokens("2"), 2);
    assert!(store
        .save(&key, &next, Some(first.revision()))
        .await
        .is_err());
    let still: String = redis::cmd("HGET")
        .arg(&record)
        .arg("sealed")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(still, tampered);
}

#[tokio::test]
async fn key_rotation_opens_old_values_and_reseals_them_on_save() {
    let prefix = unique_prefix();
    let old_key = EncryptionKey::from_bytes("2025", &[1; 32]).unwrap();
    let new_key = EncryptionKey::from_bytes("2026", &[2; 32]).unwrap();
    let Some(old) = store_with(&prefix, KeyRing::new(old_key.clone())).await else {
        return;
    };
    let key = TokenKey::new("user-1");
    let first = record(tokens("1"), 1);
    let _ = old.save(&key, &first, None).await.unwrap();
    let rotated = store_with(
        &prefix,
        KeyRing::new(new_key.clone()).with_decryption_key(old_key),
    )
    .await
    .unwrap();
    let loaded = rotated.load(&key).await.unwrap().unwrap();
    let next = record(tokens("2"), 2);
    let _ = rotated
        .save(&key, &next, Some(loaded.revision()))
        .await
        .unwrap();
    // Re-sealed with the new key: a ring holding only the new key opens it.
    let only_new = store_with(&prefix, KeyRing::new(new_key)).await.unwrap();
    assert!(only_new.load(&key).await.unwrap().is_some());
}

#[tokio::test]
async fn ttl_is_set_on_first_write_and_kept_through_rotations() {
    let prefix = unique_prefix();
    let Some(_) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let store = RedisTokenStore::builder(key_ring())
        .prefix(&prefix)
        .refresh_token_lifetime(Duration::from_secs(3600))
        .connect(&redis_url())
        .await
        .unwrap();
    let key = TokenKey::new("user-1");
    let mut redis = raw_connection().await;
    let mut expected: Option<TokenRecord> = None;
    for round in 0..4 {
        let set = TokenSet::new(AccessToken::new(format!("at-{round}")));
        let set = record(set, round + 1);
        assert_eq!(
            store
                .save(&key, &set, expected.as_ref().map(TokenRecord::revision))
                .await
                .unwrap(),
            SaveOutcome::Saved
        );
        expected = Some(set);
        let ttl: i64 = redis::cmd("PTTL")
            .arg(store.record_name(&key))
            .query_async(&mut redis)
            .await
            .unwrap();
        // 1 h minus the 5 min margin.
        assert!(
            ttl > 3_000_000 && ttl <= 3_300_000,
            "round {round}: ttl {ttl}"
        );
    }
}

#[tokio::test]
async fn an_expired_record_means_reauthorization_required() {
    let prefix = unique_prefix();
    let Some(store) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let key = TokenKey::default();
    let _ = store
        .save(&key, &record(bound(server.issue_grant(), &server), 1), None)
        .await
        .unwrap();
    let mut redis = raw_connection().await;
    // What the TTL does when it runs out.
    let _: () = redis::cmd("DEL")
        .arg(store.record_name(&key))
        .query_async(&mut redis)
        .await
        .unwrap();
    let (client, _) = client(builder(&server).store(store).build());
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    assert!(crate::helpers::token_error(&error).is_reauthorization_required());
    assert_eq!(server.refresh_calls(), 0);
}

#[tokio::test]
async fn the_lock_excludes_a_second_holder_until_released() {
    let prefix = unique_prefix();
    let Some(_) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let store = RedisTokenStore::builder(key_ring())
        .prefix(&prefix)
        .lock_lease(Duration::from_millis(300))
        .lock_timeout(Duration::from_millis(200))
        .connect(&redis_url())
        .await
        .unwrap();
    let key = TokenKey::new("user-1");
    let held = store.lock(&key).await.unwrap();
    // A live holder keeps renewing: the waiter gives up (after at least a lease).
    let error = store.lock(&key).await.unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::LockTimeout);
    drop(held);
    // Released in the background; the next holder gets it within the (longer) wait.
    let store = store_with(&prefix, key_ring()).await.unwrap();
    let _again = store.lock(&key).await.unwrap();
}

/// Wraps the real grant: before calling the token endpoint, another writer (a replica whose
/// lock lease outlived ours) stores newer tokens, bypassing the lock.
struct LeaseLostMidRefresh {
    grant: RefreshTokenGrant,
    rival: Arc<RedisTokenStore>,
    rival_tokens: TokenSet,
}

#[async_trait]
impl TokenRefresher for LeaseLostMidRefresh {
    fn issuer_binding(&self) -> Option<String> {
        self.grant.issuer_binding()
    }

    fn allows_http_loopback(&self) -> bool {
        self.grant.allows_http_loopback()
    }

    async fn refresh(
        &self,
        key: &TokenKey,
        current: Option<&TokenSet>,
    ) -> Result<TokenResponse, Error> {
        let current = current.expect("refreshing held tokens");
        let newer = self
            .rival_tokens
            .clone()
            .with_issued_for(self.grant.issuer_binding().unwrap());
        let newer = record(newer, current.generation() + 1);
        let saved = self
            .rival
            .save(key, &newer, Some(current.revision()))
            .await
            .unwrap();
        assert_eq!(saved, SaveOutcome::Saved);
        self.grant.refresh(key, Some(current)).await
    }
}

#[tokio::test]
async fn d8_a_writer_whose_lease_expired_cannot_overwrite_and_adopts_the_newer_tokens() {
    let prefix = unique_prefix();
    let Some(store) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let rival = Arc::new(store_with(&prefix, key_ring()).await.unwrap());
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let rival_tokens = server.issue_grant();
    let ours = server.issue_expired_grant();
    let grant = RefreshTokenGrant::builder(server.token_url(), "c")
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let refresher = LeaseLostMidRefresh {
        grant,
        rival,
        rival_tokens: rival_tokens.clone(),
    };
    let middleware = reqwest_token_refresh::TokenManager::builder(refresher)
        .allow_origin(&server.uri())
        .expect("valid origin")
        .store(store)
        .build();
    let (client, manager) = client(middleware);
    manager
        .set_tokens(&TokenKey::default(), ours)
        .await
        .unwrap();
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let held = manager.tokens(&TokenKey::default()).await.unwrap().unwrap();
    assert_eq!(held.access_token(), rival_tokens.access_token());
}

/// Wraps the real grant: just before the token call, the lease is deleted behind the holder's
/// back (as when it expires during a stall), and another replica logs the key out and logs
/// another user in under it.
struct LoginDuringRefresh {
    grant: RefreshTokenGrant,
    lease: String,
    other: reqwest_token_refresh::TokenManager,
    login: TokenSet,
}

#[async_trait]
impl TokenRefresher for LoginDuringRefresh {
    fn issuer_binding(&self) -> Option<String> {
        self.grant.issuer_binding()
    }

    fn allows_http_loopback(&self) -> bool {
        self.grant.allows_http_loopback()
    }

    async fn refresh(
        &self,
        key: &TokenKey,
        current: Option<&TokenSet>,
    ) -> Result<TokenResponse, Error> {
        let mut redis = raw_connection().await;
        let _: () = redis::cmd("DEL")
            .arg(&self.lease)
            .query_async(&mut redis)
            .await
            .unwrap();
        self.other.clear(key).await.unwrap();
        self.other
            .set_tokens(key, self.login.clone())
            .await
            .unwrap();
        self.grant.refresh(key, current).await
    }
}

/// A logout and a new login restart the generations; a holder whose lease expired while it
/// refreshed must neither overwrite the new login with the old user's rotated tokens nor keep
/// using them: it adopts the login.
#[tokio::test]
async fn d8_a_stale_rotation_never_overwrites_a_new_login() {
    let prefix = unique_prefix();
    let Some(store) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let (_, other) = client(
        builder(&server)
            .store(store_with(&prefix, key_ring()).await.unwrap())
            .build(),
    );
    let login = server.issue_grant();
    let refresher = LoginDuringRefresh {
        grant: RefreshTokenGrant::builder(server.token_url(), "test-client")
            .danger_allow_http_loopback()
            .build()
            .unwrap(),
        lease: format!("{prefix}lock:default"),
        other: other.clone(),
        login: login.clone(),
    };
    let (client, manager) = built_with_tokens(
        reqwest_token_refresh::TokenManager::builder(refresher)
            .allow_origin(&server.uri())
            .expect("valid origin")
            .store(store),
        server.issue_expired_grant(),
    )
    .await;
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let reader = store_with(&prefix, key_ring()).await.unwrap();
    let stored = reader.load(&TokenKey::default()).await.unwrap().unwrap();
    let stored = stored.tokens().unwrap();
    assert_eq!(
        stored.refresh_token(),
        login.refresh_token(),
        "the login was replaced"
    );
    let held = manager.tokens(&TokenKey::default()).await.unwrap().unwrap();
    assert_eq!(held.refresh_token(), login.refresh_token());
    assert_eq!(server.reuse_detections(), 0);
}

#[tokio::test]
#[ignore = "worker process for d5_replicas_sharing_redis_refresh_once_per_lifetime"]
async fn redis_replica_worker() {
    if !workers::is_worker() {
        return;
    }
    let env = |name: &str| std::env::var(name).expect(name);
    let store = RedisTokenStore::builder(key_ring())
        .prefix(env("RTR_PREFIX"))
        .lock_timeout(Duration::from_secs(20))
        .connect(&env("RTR_REDIS_URL"))
        .await
        .unwrap();
    let grant = RefreshTokenGrant::builder(env("RTR_TOKEN_URL"), "test-client")
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let middleware = reqwest_token_refresh::TokenManager::builder(grant)
        .allow_origin(&env("RTR_ORIGIN"))
        .expect("valid origin")
        .rejection_cooldown(Duration::ZERO)
        .store(store)
        .build();
    let (client, _) = client(middleware);
    workers::serve_rounds(client, env("RTR_API_URL"), REQUESTS_PER_ROUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d5_replicas_sharing_redis_refresh_once_per_lifetime() {
    let prefix = unique_prefix();
    let Some(store) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let first = record(bound(server.issue_grant(), &server), 1);
    assert_eq!(
        store
            .save(&TokenKey::default(), &first, None)
            .await
            .unwrap(),
        SaveOutcome::Saved
    );
    let replicas = Workers::spawn(
        "redis_store::redis_replica_worker",
        WORKERS,
        &[
            ("RTR_PREFIX", prefix.clone()),
            ("RTR_REDIS_URL", redis_url()),
            ("RTR_TOKEN_URL", server.token_url()),
            ("RTR_ORIGIN", server.uri()),
            ("RTR_API_URL", server.api_url("items")),
        ],
    );
    let failed = replicas.run_lifetimes(&server, ROUNDS);
    assert_eq!(failed, 0);
    assert_eq!(
        server.reuse_detections(),
        0,
        "a consumed refresh token came back"
    );
    assert_eq!(server.refresh_calls(), (ROUNDS - 1) as u64);
}

#[tokio::test]
async fn redis_down_keeps_valid_tokens_working_and_fails_refreshes_without_a_token_call() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let store = RedisTokenStore::builder(key_ring())
        .prefix(unique_prefix())
        .lock_timeout(Duration::from_secs(1))
        .connect(&redis.url())
        .await
        .unwrap();
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let (client, _) = built_with_tokens(
        builder(&server)
            .store(store)
            .rejection_cooldown(Duration::ZERO),
        server.issue_grant(),
    )
    .await;
    redis.stop();
    // Valid token: served from memory, Redis is never needed.
    for _ in 0..5 {
        let response = client.get(server.api_url("me")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    // A refresh needs the lock: a typed transient error, and the refresh token is not sent.
    server.reject_current_access_tokens();
    let error = client.get(server.api_url("me")).send().await.unwrap_err();
    let error = crate::helpers::token_error(&error);
    assert!(error.is_transient(), "{error}");
    assert!(matches!(error, Error::Store(_)));
    assert_eq!(server.refresh_calls(), 0);
    assert_eq!(server.reuse_detections(), 0);
}

#[tokio::test]
async fn the_ttl_follows_a_refresh_token_lifetime_the_server_reported() {
    let prefix = unique_prefix();
    let Some(store) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let key = TokenKey::new("user-1");
    let told = std::time::SystemTime::now() + Duration::from_secs(2 * 3600);
    let tokens = record(tokens("1").with_refresh_expires_at(told), 1);
    assert_eq!(
        store.save(&key, &tokens, None).await.unwrap(),
        SaveOutcome::Saved
    );
    let mut redis = raw_connection().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(store.record_name(&key))
        .query_async(&mut redis)
        .await
        .unwrap();
    // Two hours minus the 5 min margin, not the 30-day default.
    assert!(ttl > 6_000_000 && ttl <= 6_900_000, "ttl {ttl}");
}

#[tokio::test]
async fn a_key_named_like_another_keys_lock_does_not_collide_with_it() {
    let prefix = unique_prefix();
    let Some(_) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let store = RedisTokenStore::builder(key_ring())
        .prefix(&prefix)
        .lock_lease(Duration::from_millis(300))
        .lock_timeout(Duration::from_millis(300))
        .connect(&redis_url())
        .await
        .unwrap();
    let alice = TokenKey::new("alice");
    let tricky = TokenKey::new("alice:lock");
    let first = record(tokens("1"), 1);
    let _ = store.save(&tricky, &first, None).await.unwrap();
    // Alice's lock is free, and holding it neither breaks nor overwrites the other record.
    let held = store.lock(&alice).await.unwrap();
    assert!(store.load(&tricky).await.unwrap().is_some());
    let next = record(tokens("2"), 2);
    let _ = store
        .save(&tricky, &next, Some(first.revision()))
        .await
        .unwrap();
    assert_eq!(
        store.lock(&alice).await.unwrap_err().kind(),
        StoreErrorKind::LockTimeout,
        "writing another key must not release alice's lock"
    );
    drop(held);
}

#[tokio::test]
async fn inv2_a_lost_lease_is_reported_so_its_holder_never_refreshes() {
    let prefix = unique_prefix();
    let Some(_) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let store = RedisTokenStore::builder(key_ring())
        .prefix(&prefix)
        .lock_lease(Duration::from_millis(300))
        .connect(&redis_url())
        .await
        .unwrap();
    let key = TokenKey::new("user-1");
    let held = store.lock(&key).await.unwrap();
    assert!(held.is_held());
    // The lease expires behind the holder's back (here: deleted; in life: a stalled process).
    let mut redis = raw_connection().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}lock:user-1"))
        .query_async(&mut redis)
        .await
        .unwrap();
    // The next renewal (every lease/3) notices; bounded wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while held.is_held() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !held.is_held(),
        "the holder must learn that its lease is gone"
    );
}

/// One run of a CLI: one request that refreshes, then exit.
#[tokio::test]
#[ignore = "a short-lived process of a_process_that_refreshes_and_exits_leaves_no_lock_behind"]
async fn short_lived_redis_process() {
    if !workers::is_worker() {
        return;
    }
    let env = |name: &str| std::env::var(name).expect(name);
    let store = RedisTokenStore::builder(key_ring())
        .prefix(env("RTR_PREFIX"))
        .connect(&env("RTR_REDIS_URL"))
        .await
        .unwrap();
    let middleware = builder_for(&env("RTR_TOKEN_URL"), &env("RTR_ORIGIN"))
        .store(store)
        .build();
    workers::one_request_and_exit(client(middleware), env("RTR_API_URL")).await;
}

/// CLI-style use: a process that refreshes and exits at once must not leave its lease for the
/// next one to wait out (or fail on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_refreshes_and_exits_leaves_no_lock_behind() {
    let prefix = unique_prefix();
    let Some(store) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    built_with_tokens(builder(&server).store(store), server.issue_grant()).await;
    let env = [
        ("RTR_PREFIX", prefix),
        ("RTR_REDIS_URL", redis_url()),
        ("RTR_TOKEN_URL", server.token_url()),
        ("RTR_ORIGIN", server.uri()),
        ("RTR_API_URL", server.api_url("me")),
    ];
    workers::assert_short_lived_runs_leave_no_lock(
        &server,
        "redis_store::short_lived_redis_process",
        &env,
    );
}

/// The record outlives neither its refresh token nor, for short-lived refresh tokens, most of
/// their life: the 5-minute margin shrinks to a tenth of the time left.
#[tokio::test]
async fn the_ttl_margin_scales_with_short_refresh_token_lifetimes() {
    let prefix = unique_prefix();
    let Some(store) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let mut redis = raw_connection().await;
    let now = std::time::SystemTime::now();
    for (lifetime, low, high) in [
        // 300 s: 270 s, not 1 s.
        (Duration::from_secs(300), 265_000, 270_000),
        // 30 days: 30 days minus 5 minutes.
        (
            Duration::from_secs(30 * 24 * 3600),
            (30 * 24 * 3600 - 305) * 1000,
            (30 * 24 * 3600 - 300) * 1000,
        ),
    ] {
        let key = TokenKey::new(format!("user-{}", lifetime.as_secs()));
        let tokens = record(tokens("x").with_refresh_expires_at(now + lifetime), 1);
        assert_eq!(
            store.save(&key, &tokens, None).await.unwrap(),
            SaveOutcome::Saved
        );
        let ttl: i64 = redis::cmd("PTTL")
            .arg(store.record_name(&key))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(
            (low..=high).contains(&ttl),
            "{lifetime:?}: ttl {ttl} ms, expected {low}..={high}"
        );
    }
    // A configured lifetime follows the same rule.
    let configured = RedisTokenStore::builder(key_ring())
        .prefix(&prefix)
        .refresh_token_lifetime(Duration::from_secs(300))
        .connect(&redis_url())
        .await
        .unwrap();
    let key = TokenKey::new("configured");
    let set = record(TokenSet::new(AccessToken::new("at")), 1);
    let _ = configured.save(&key, &set, None).await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(configured.record_name(&key))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((265_000..=270_000).contains(&ttl), "ttl {ttl}");
}

/// A lock timeout shorter than the lease would make waiters fail while a dead holder's lease
/// still runs: the store waits at least a lease.
#[tokio::test]
async fn a_waiter_outlasts_a_dead_holders_lease() {
    let prefix = unique_prefix();
    let Some(_) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let store = RedisTokenStore::builder(key_ring())
        .prefix(&prefix)
        .lock_lease(Duration::from_millis(1_500))
        .lock_timeout(Duration::from_millis(100))
        .connect(&redis_url())
        .await
        .unwrap();
    // A holder that died without releasing: its lease runs out on its own.
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}lock:user-1"))
        .arg("a dead holder")
        .arg("PX")
        .arg(1_500)
        .query_async(&mut raw_connection().await)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let held = store
        .lock(&TokenKey::new("user-1"))
        .await
        .expect("the lease ran out");
    assert!(started.elapsed() >= Duration::from_millis(1_000));
    held.release().await;
}

/// Records written by earlier versions are found after an upgrade: on one server (and behind
/// sentinels) the key names are unchanged, and the seal binds the same name.
#[tokio::test]
async fn single_server_key_names_are_those_of_earlier_versions() {
    let prefix = unique_prefix();
    let Some(store) = store_with(&prefix, key_ring()).await else {
        return;
    };
    let key = TokenKey::new("user-1");
    assert_eq!(store.record_name(&key), format!("{prefix}tokens:user-1"));
    assert_eq!(store.lock_name(&key), format!("{prefix}lock:user-1"));
    // A record as an earlier version wrote it: the hash under that name, sealed with it.
    let earlier = record(tokens("earlier"), 7);
    let name = format!("{prefix}tokens:user-1");
    let sealed = key_ring().seal(&name, &earlier).unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&name)
        .arg("generation")
        .arg("7")
        .arg("revision")
        .arg(earlier.revision().as_str())
        .arg("sealed")
        .arg(sealed)
        .query_async(&mut raw_connection().await)
        .await
        .unwrap();
    assert_eq!(store.load(&key).await.unwrap(), Some(earlier));
}
