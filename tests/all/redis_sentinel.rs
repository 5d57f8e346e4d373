//! RedisTokenStore behind Redis Sentinel: against the sentinel `.ci/services.sh` starts
//! (`REDIS_SENTINEL_URLS`, comma-separated, and `REDIS_SENTINEL_MASTER`; default one sentinel on
//! port 26391 watching `rtr-master`), and a failover on a master, a replica and a sentinel of
//! the test's own. With `CI` set a missing sentinel fails these tests; otherwise they are
//! skipped with a note.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use reqwest_token_refresh::test_util::store_contract::StoreContract;
use reqwest_token_refresh::{Error, RedisTokenStore, StoreErrorKind, TokenKey, TokenStore};

use crate::auth_server::AuthServer;
use crate::helpers::{builder, built_with_tokens, record};
use crate::redis_support::{
    delete_lease, key_ring, required, spoil_record, tokens, unique_prefix, PrivateRedis,
};

fn sentinel_urls() -> Vec<String> {
    std::env::var("REDIS_SENTINEL_URLS")
        .unwrap_or_else(|_| "redis://127.0.0.1:26391".to_owned())
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect()
}

fn master_name() -> String {
    std::env::var("REDIS_SENTINEL_MASTER").unwrap_or_else(|_| "rtr-master".to_owned())
}

async fn connect(prefix: &str) -> Result<RedisTokenStore, Error> {
    RedisTokenStore::builder(key_ring())
        .prefix(prefix)
        .lock_lease(Duration::from_secs(5))
        .lock_timeout(Duration::from_secs(20))
        .connect_sentinel(&sentinel_urls(), &master_name())
        .await
}

/// The store, or `None` (test skipped) when no sentinel runs outside CI.
async fn sentinel_store(prefix: &str) -> Option<RedisTokenStore> {
    required(
        "a redis sentinel (REDIS_SENTINEL_URLS)",
        connect(prefix).await,
    )
}

/// A connection to the server at `url`.
async fn node(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The master's URL, as the sentinel at `sentinel` names `master` now.
async fn master_url(sentinel: &str, master: &str) -> String {
    let (host, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(master)
        .query_async(&mut node(sentinel).await)
        .await
        .unwrap();
    format!("redis://{host}:{port}")
}

/// The `TokenStore` contract suite through the sentinel, with the lease deleted and the seal
/// tampered with on the master itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_store_contract_behind_sentinel() {
    let prefix = unique_prefix();
    let Some(names) = sentinel_store(&prefix).await else {
        return;
    };
    let master = master_url(&sentinel_urls()[0], &master_name()).await;
    let names = Arc::new(names);
    let make = {
        let prefix = prefix.clone();
        move || {
            let prefix = prefix.clone();
            async move { connect(&prefix).await.expect("redis sentinel") }
        }
    };
    let breaker = {
        let (names, master) = (Arc::clone(&names), master.clone());
        move |key: TokenKey| {
            let (lease, master) = (names.lock_name(&key), master.clone());
            async move {
                delete_lease(&mut node(&master).await, lease).await;
            }
        }
    };
    let corrupter = move |key: TokenKey| {
        let (record, master) = (names.record_name(&key), master.clone());
        async move {
            spoil_record(&mut node(&master).await, record).await;
        }
    };
    StoreContract::new(make)
        .lock_breaker(breaker)
        .corrupter(corrupter)
        .run()
        .await;
}

/// A deployment that moves from one server to Sentinel keeps its records: the names are
/// those of one server.
#[tokio::test]
async fn records_written_to_the_master_directly_are_read_through_the_sentinel() {
    let prefix = unique_prefix();
    let Some(through_sentinel) = sentinel_store(&prefix).await else {
        return;
    };
    let master = master_url(&sentinel_urls()[0], &master_name()).await;
    let direct = RedisTokenStore::builder(key_ring())
        .prefix(&prefix)
        .connect(&master)
        .await
        .unwrap();
    let key = TokenKey::new("user-1");
    assert_eq!(through_sentinel.record_name(&key), direct.record_name(&key));
    let first = record(tokens("direct"), 1);
    let _ = direct.save(&key, &first, None).await.unwrap();
    assert_eq!(through_sentinel.load(&key).await.unwrap(), Some(first));
}

/// Sentinels that name no usable master (an unknown name, or one that is down) leave the store
/// unavailable, saying so.
#[tokio::test]
async fn a_master_name_the_sentinels_do_not_know_is_unavailable() {
    let Some(_) = sentinel_store(&unique_prefix()).await else {
        return;
    };
    let error = RedisTokenStore::builder(key_ring())
        .connect_sentinel(&sentinel_urls(), "no-such-master")
        .await
        .unwrap_err();
    match error {
        Error::Store(error) => {
            assert_eq!(error.kind(), StoreErrorKind::Unavailable);
            let cause = std::error::Error::source(&error).unwrap().to_string();
            assert!(cause.contains("not found"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A master, its replica and a sentinel of this test's own. The master stops answering and the
/// sentinel promotes the replica: the store finds it through the sentinel (the first request
/// after the failover already succeeds, once its command to the old master timed out), the
/// tokens it saved before (replicated) are there, the next rejection costs one refresh, and no
/// refresh token is presented twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_followed_to_the_promoted_replica() {
    const MASTER: &str = "rtr-failover";
    let Some(master) =
        PrivateRedis::start_with(&["--repl-diskless-sync-delay".to_owned(), "0".to_owned()])
    else {
        return;
    };
    let replica = PrivateRedis::start_with(&[
        "--replicaof".to_owned(),
        "127.0.0.1".to_owned(),
        master.port.to_string(),
    ])
    .unwrap();
    eventually("the replica in sync", async || {
        let info: redis::RedisResult<String> = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut node(&replica.url()).await)
            .await;
        info.is_ok_and(|info| info.contains("master_link_status:up"))
    })
    .await;
    let sentinel = PrivateRedis::start_sentinel(MASTER, master.port).unwrap();
    eventually("the sentinel seeing the replica", async || {
        let replicas: redis::RedisResult<Vec<redis::Value>> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(MASTER)
            .query_async(&mut node(&sentinel.url()).await)
            .await;
        replicas.is_ok_and(|replicas| !replicas.is_empty())
    })
    .await;
    let prefix = unique_prefix();
    let store = RedisTokenStore::builder(key_ring())
        .prefix(&prefix)
        .connect_sentinel(&[sentinel.url()], MASTER)
        .await
        .unwrap();
    let server = AuthServer::start(Duration::from_secs(3600)).await;
    let (client, _manager) = built_with_tokens(
        builder(&server)
            .store(store)
            .rejection_cooldown(Duration::ZERO),
        server.issue_grant(),
    )
    .await;
    server.reject_current_access_tokens();
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.refresh_calls(), 1);
    // The rotation reached the replica before the failover (replication is asynchronous).
    let record = format!("{prefix}tokens:default");
    let revision = async |server: &PrivateRedis| -> Option<String> {
        redis::cmd("HGET")
            .arg(&record)
            .arg("revision")
            .query_async(&mut node(&server.url()).await)
            .await
            .unwrap()
    };
    let saved = revision(&master).await;
    assert!(saved.is_some());
    eventually("the rotation replicated", async || {
        revision(&replica).await == saved
    })
    .await;

    // The master freezes (keeping its port, so no other server can take it and be taken for
    // it); the sentinel notices after a second and promotes the replica.
    master.freeze();
    eventually("the replica promoted", async || {
        let described: redis::RedisResult<std::collections::HashMap<String, String>> =
            redis::cmd("SENTINEL")
                .arg("MASTER")
                .arg(MASTER)
                .query_async(&mut node(&sentinel.url()).await)
                .await;
        described.is_ok_and(|master| {
            master.get("port") == Some(&replica.port.to_string())
                && master
                    .get("flags")
                    .is_some_and(|flags| !flags.contains("_down"))
        })
    })
    .await;
    server.reject_current_access_tokens();
    let response = client.get(server.api_url("me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.refresh_calls(), 2, "one refresh for the rejection");
    server.assert_no_refresh_token_reused();
    // The new master holds the latest rotation.
    let stored = RedisTokenStore::builder(key_ring())
        .prefix(&prefix)
        .connect(&replica.url())
        .await
        .unwrap()
        .load(&TokenKey::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored
            .tokens()
            .unwrap()
            .refresh_token()
            .map(|token| token.secret().to_owned()),
        server.current_refresh_token()
    );
}
