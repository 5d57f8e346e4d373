//! RedisTokenStore on a real Redis Cluster of three masters (`REDIS_CLUSTER_URLS`, comma-
//! separated; default the cluster `.ci/services.sh` starts on ports 7101-7103). With `CI` set a
//! missing cluster fails these tests; otherwise they are skipped with a note.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use reqwest_middleware::ClientWithMiddleware;
use reqwest_token_refresh::test_util::store_contract::StoreContract;
use reqwest_token_refresh::{ConfigError, Error, Event, RedisTokenStore, TokenKey, TokenStore};

use crate::auth_server::AuthServer;
use crate::helpers::{builder, client};
use crate::redis_support::{delete_lease, key_ring, required, spoil_record, tokens, unique_prefix};

/// Middlewares sharing the store, as replicas of a service would (one connection each).
const REPLICAS: usize = 4;

fn cluster_urls() -> Vec<String> {
    std::env::var("REDIS_CLUSTER_URLS")
        .unwrap_or_else(|_| {
            "redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103".to_owned()
        })
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn connect(prefix: &str) -> Result<RedisTokenStore, Error> {
    RedisTokenStore::builder(key_ring())
        .prefix(prefix)
        .lock_lease(Duration::from_secs(5))
        .lock_timeout(Duration::from_secs(20))
        .connect_cluster(&cluster_urls())
        .await
}

/// The store, or `None` (test skipped) when no cluster runs outside CI.
async fn cluster_store(prefix: &str) -> Option<RedisTokenStore> {
    required(
        "a redis cluster (REDIS_CLUSTER_URLS)",
        connect(prefix).await,
    )
}

async fn raw_cluster() -> ClusterConnection {
    redis::cluster::ClusterClient::new(cluster_urls())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}

/// A master of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Master {
    id: String,
    host: String,
    port: u16,
    slots: Vec<(u16, u16)>,
}

impl Master {
    /// A connection to this node alone (no redirections followed).
    async fn connection(&self) -> MultiplexedConnection {
        redis::Client::open(format!("redis://{}:{}", self.host, self.port))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|(first, last)| (*first..=*last).contains(&slot))
    }
}

/// The masters as the first node sees them (`CLUSTER NODES`).
async fn masters() -> Vec<Master> {
    let mut node = redis::Client::open(cluster_urls()[0].as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut node)
        .await
        .unwrap();
    let mut masters: Vec<Master> = nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let address = fields[1].split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            let slots = fields[8..]
                .iter()
                .filter(|range| !range.starts_with('['))
                .map(|range| match range.split_once('-') {
                    Some((first, last)) => (first.parse().unwrap(), last.parse().unwrap()),
                    None => (range.parse().unwrap(), range.parse().unwrap()),
                })
                .collect();
            Some(Master {
                id: fields[0].to_owned(),
                host: host.to_owned(),
                port: port.parse().ok()?,
                slots,
            })
        })
        .collect();
    masters.sort_by_key(|master| master.port);
    masters
}

fn owner(masters: &[Master], slot: u16) -> &Master {
    masters
        .iter()
        .find(|master| master.serves(slot))
        .unwrap_or_else(|| panic!("no master serves slot {slot}: {masters:?}"))
}

async fn key_slot(node: &mut MultiplexedConnection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(node)
        .await
        .unwrap()
}

/// The `TokenStore` contract suite on the cluster, with its ways of losing a lock (the lease
/// deleted) and of spoiling a record (a tampered seal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_store_contract_on_a_cluster() {
    let prefix = unique_prefix();
    let Some(names) = cluster_store(&prefix).await else {
        return;
    };
    let names = Arc::new(names);
    let make = {
        let prefix = prefix.clone();
        move || {
            let prefix = prefix.clone();
            async move { connect(&prefix).await.expect("redis cluster") }
        }
    };
    let breaker = {
        let names = Arc::clone(&names);
        move |key: TokenKey| {
            let lease = names.lock_name(&key);
            async move {
                delete_lease(&mut raw_cluster().await, lease).await;
            }
        }
    };
    let corrupter = move |key: TokenKey| {
        let record = names.record_name(&key);
        async move {
            spoil_record(&mut raw_cluster().await, record).await;
        }
    };
    StoreContract::new(make)
        .lock_breaker(breaker)
        .corrupter(corrupter)
        .run()
        .await;
}

/// Every key's record and lock hash to one slot (whatever the key's name), and the records of
/// many keys are spread over all three masters, each held by the master of its slot.
#[tokio::test]
async fn records_and_locks_share_a_slot_and_keys_spread_over_every_master() {
    let prefix = unique_prefix();
    let Some(store) = cluster_store(&prefix).await else {
        return;
    };
    let masters = masters().await;
    assert_eq!(masters.len(), 3, "{masters:?}");
    let mut node = masters[0].connection().await;
    for name in [
        "",
        "}",
        "{",
        "{}",
        "}{",
        "a}b",
        "{user-1}",
        "%",
        "%7D",
        "user:1:lock",
    ] {
        let key = TokenKey::new(name);
        let (record, lock) = (store.record_name(&key), store.lock_name(&key));
        assert_eq!(
            key_slot(&mut node, &record).await,
            key_slot(&mut node, &lock).await,
            "{name:?}: {record} and {lock} are in different slots"
        );
    }
    let mut slots = std::collections::BTreeSet::new();
    let mut per_master = vec![0; masters.len()];
    for index in 0..30 {
        let key = TokenKey::new(format!("user-{index}"));
        let record = store.record_name(&key);
        assert_eq!(
            store
                .save(&key, &crate::helpers::record(tokens("x"), 1), None)
                .await
                .unwrap(),
            reqwest_token_refresh::SaveOutcome::Saved
        );
        let slot = key_slot(&mut node, &record).await;
        slots.insert(slot);
        let holder = owner(&masters, slot);
        // The record is on its slot's master, without a redirection.
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&record)
            .query_async(&mut holder.connection().await)
            .await
            .unwrap();
        assert_eq!(exists, 1, "{record} is not on {holder:?}");
        per_master[masters.iter().position(|m| m == holder).unwrap()] += 1;
    }
    assert!(slots.len() >= 25, "30 keys in only {} slots", slots.len());
    assert!(
        per_master.iter().all(|count| *count > 0),
        "a master holds no record: {per_master:?}"
    );
}

/// A prefix with braces would move the hash tag: refused before connecting.
#[tokio::test]
async fn a_prefix_with_braces_is_refused_on_a_cluster() {
    let error = RedisTokenStore::builder(key_ring())
        .prefix("{app}:")
        .connect_cluster(&cluster_urls())
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Config(ConfigError::Store { .. })),
        "{error:?}"
    );
}

/// A cluster connection the application made itself (with its own TLS roots, say) serves the
/// same way, under the same names.
#[tokio::test]
async fn a_store_on_a_cluster_connection_of_your_own() {
    let prefix = unique_prefix();
    let Some(_) = cluster_store(&prefix).await else {
        return;
    };
    let connection = raw_cluster().await;
    let refused = RedisTokenStore::builder(key_ring())
        .prefix("{app}:")
        .build_cluster(connection.clone());
    assert!(matches!(refused, Err(Error::Config(_))), "{refused:?}");
    let store = RedisTokenStore::builder(key_ring())
        .prefix(&prefix)
        .build_cluster(connection)
        .unwrap();
    let key = TokenKey::new("own-connection");
    assert_eq!(
        store.record_name(&key),
        format!("{prefix}tokens:{{own-connection}}")
    );
    let saved = crate::helpers::record(tokens("own"), 1);
    let _ = store.save(&key, &saved, None).await.unwrap();
    let other = connect(&prefix).await.unwrap();
    assert_eq!(other.load(&key).await.unwrap(), Some(saved));
}

/// Counts of what went wrong in a middleware, from its events.
#[derive(Default)]
struct Trouble {
    persist_failed: AtomicUsize,
    refresh_failed: AtomicUsize,
}

/// `REPLICAS` middlewares for `server`, each with its own connection to the cluster.
async fn replicas(
    server: &AuthServer,
    prefix: &str,
    trouble: &Arc<Trouble>,
) -> Option<Vec<(ClientWithMiddleware, reqwest_token_refresh::TokenManager)>> {
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        let store = cluster_store(prefix).await?;
        let trouble = Arc::clone(trouble);
        let manager = builder(server)
            .store(store)
            .rejection_cooldown(Duration::ZERO)
            .on_event(move |event| match event {
                Event::PersistFailed { .. } => {
                    trouble.persist_failed.fetch_add(1, Ordering::SeqCst);
                }
                Event::RefreshFailed { .. } => {
                    trouble.refresh_failed.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            })
            .build();
        replicas.push(client(manager));
    }
    Some(replicas)
}

/// `per_replica` concurrent requests for each of `keys` from every replica; returns the
/// statuses (0: the request failed).
async fn storm(
    replicas: &[(ClientWithMiddleware, reqwest_token_refresh::TokenManager)],
    server: &AuthServer,
    keys: &[TokenKey],
    per_replica: usize,
) -> Vec<u16> {
    let requests = replicas.iter().flat_map(|(client, _)| {
        keys.iter().flat_map(move |key| {
            (0..per_replica).map(move |index| {
                let request = client
                    .get(server.api_url(&format!("item/{index}")))
                    .with_extension(key.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(30), request.send()).await {
                        Ok(Ok(response)) => response.status().as_u16(),
                        Ok(Err(error)) => {
                            eprintln!("request failed: {error}");
                            0
                        }
                        Err(_) => 0,
                    }
                })
            })
        })
    });
    join_all(requests.collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|joined| joined.expect("request task"))
        .collect()
}

/// One key on each master.
async fn a_key_on_each_master(store: &RedisTokenStore, masters: &[Master]) -> Vec<TokenKey> {
    let mut node = masters[0].connection().await;
    let mut keys: Vec<Option<TokenKey>> = vec![None; masters.len()];
    for index in 0.. {
        let key = TokenKey::new(format!("replica-user-{index}"));
        let slot = key_slot(&mut node, &store.record_name(&key)).await;
        let at = masters
            .iter()
            .position(|master| master.serves(slot))
            .unwrap();
        keys[at].get_or_insert(key);
        if keys.iter().all(Option::is_some) {
            break;
        }
    }
    keys.into_iter().map(Option::unwrap).collect()
}

/// Replicas sharing the cluster store, three keys on three masters, 600 concurrent requests a
/// round: each rejection of a key's token costs exactly one refresh, and no refresh token is
/// ever presented twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_the_cluster_refresh_once_per_rejection() {
    const ROUNDS: u64 = 3;
    let prefix = unique_prefix();
    let Some(store) = cluster_store(&prefix).await else {
        return;
    };
    let masters = masters().await;
    let keys = a_key_on_each_master(&store, &masters).await;
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .token_delay(Duration::from_millis(100))
        .start()
        .await;
    let trouble = Arc::new(Trouble::default());
    let replicas = replicas(&server, &prefix, &trouble).await.unwrap();
    for key in &keys {
        replicas[0]
            .1
            .set_tokens(key, server.issue_grant())
            .await
            .unwrap();
    }
    for round in 1..=ROUNDS {
        server.reject_current_access_tokens();
        let statuses = storm(&replicas, &server, &keys, 50).await;
        assert_eq!(statuses.len(), REPLICAS * keys.len() * 50);
        assert!(
            statuses.iter().all(|status| *status == 200),
            "round {round}: {statuses:?}"
        );
        assert_eq!(
            server.refresh_calls(),
            round * keys.len() as u64,
            "one refresh per key per rejection"
        );
    }
    server.assert_no_refresh_token_reused();
    assert_eq!(trouble.persist_failed.load(Ordering::SeqCst), 0);
    assert_eq!(trouble.refresh_failed.load(Ordering::SeqCst), 0);
    // What the cluster holds is what the server issued last, for every key.
    let reader = connect(&prefix).await.unwrap();
    for key in &keys {
        let stored = reader.load(key).await.unwrap().unwrap();
        assert!(stored.tokens().unwrap().refresh_token().is_some());
    }
}

/// How many `ASKING` commands (sent before a command redirected by `ASK`) the masters have
/// received.
async fn asking_calls() -> u64 {
    let mut calls = 0;
    for master in masters().await {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut master.connection().await)
            .await
            .unwrap();
        calls += stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_asking:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |count| count.parse::<u64>().unwrap());
    }
    calls
}

/// Moves `slot` from `from` to `to` the way `redis-cli --cluster reshard` does: the slot is
/// marked importing and migrating (for `ask_window`, keys of the slot missing on `from` are
/// created on `to` through `ASK` redirections), its keys are moved with `MIGRATE`, and every
/// master is told the new owner.
async fn migrate_slot(slot: u16, from: &Master, to: &Master, all: &[Master], ask_window: Duration) {
    let mut source = from.connection().await;
    let mut target = to.connection().await;
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&from.id)
        .query_async(&mut target)
        .await
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&to.id)
        .query_async(&mut source)
        .await
        .unwrap();
    tokio::time::sleep(ask_window).await;
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query_async(&mut source)
            .await
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let _: redis::Value = redis::cmd("MIGRATE")
            .arg(&to.host)
            .arg(to.port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query_async(&mut source)
            .await
            .unwrap();
    }
    // The new owner first, then the old one, then the rest.
    let mut order = vec![to.clone(), from.clone()];
    order.extend(
        all.iter()
            .filter(|master| *master != to && *master != from)
            .cloned(),
    );
    for master in order {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&to.id)
            .query_async(&mut master.connection().await)
            .await
            .unwrap();
    }
}

/// The slot of the key being refreshed moves to another master while 400 requests wait on
/// the refresh: once during the token call, once with the token answer saved and the lock
/// released and taken again while the slot is half-migrated (keys on both masters, `ASK`
/// redirections), once around the answer. Every request succeeds, each rejection costs exactly
/// one refresh, no refresh token is presented twice, no save fails, and the cluster ends with
/// the last rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migration_during_a_refresh_storm_loses_no_rotation() {
    const TOKEN_DELAY: Duration = Duration::from_millis(400);
    let prefix = unique_prefix();
    let Some(store) = cluster_store(&prefix).await else {
        return;
    };
    // A key of this run only: its slot is moved around while other tests use theirs.
    let key = TokenKey::new(format!("migrating-{prefix}"));
    let mut node = masters().await[0].connection().await;
    let slot = key_slot(&mut node, &store.record_name(&key)).await;
    assert_eq!(slot, key_slot(&mut node, &store.lock_name(&key)).await);
    let server = AuthServer::builder()
        .token_lifetime(Duration::from_secs(3600))
        .token_delay(TOKEN_DELAY)
        .start()
        .await;
    let trouble = Arc::new(Trouble::default());
    let replicas = replicas(&server, &prefix, &trouble).await.unwrap();
    replicas[0]
        .1
        .set_tokens(&key, server.issue_grant())
        .await
        .unwrap();
    let keys = [key.clone()];
    let asking_before = asking_calls().await;
    // How long the slot stays half-migrated, against the token call's 400 ms: done well
    // before the answer; still half-migrated when it is saved; about when it arrives.
    let windows = [50, 600, 350].map(Duration::from_millis);
    for (round, ask_window) in (1..).zip(windows) {
        let topology = masters().await;
        let from = owner(&topology, slot).clone();
        let at = topology.iter().position(|master| *master == from).unwrap();
        let to = topology[(at + 1) % topology.len()].clone();
        server.reject_current_access_tokens();
        let migration = async {
            // The refresh's token call has arrived: it is in flight for TOKEN_DELAY.
            let deadline = Instant::now() + Duration::from_secs(10);
            while server.refresh_calls() < round {
                assert!(Instant::now() < deadline, "no refresh started");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            migrate_slot(slot, &from, &to, &topology, ask_window).await;
        };
        let (statuses, ()) = tokio::join!(storm(&replicas, &server, &keys, 100), migration);
        assert_eq!(statuses.len(), REPLICAS * 100);
        assert!(
            statuses.iter().all(|status| *status == 200),
            "round {round}: {} requests failed",
            statuses.iter().filter(|status| **status != 200).count()
        );
        assert_eq!(
            server.refresh_calls(),
            round,
            "exactly one refresh per rejection"
        );
        server.assert_no_refresh_token_reused();
        // The record moved with its slot.
        assert_eq!(owner(&masters().await, slot).id, to.id);
        let exists: i64 = redis::cmd("EXISTS")
            .arg(store.record_name(&key))
            .query_async(&mut to.connection().await)
            .await
            .unwrap();
        assert_eq!(exists, 1, "round {round}: the record is not on {to:?}");
    }
    // Commands followed `ASK` redirections: the storm met a half-migrated slot.
    assert!(
        asking_calls().await > asking_before,
        "no command followed an ASK redirection"
    );
    assert_eq!(
        trouble.persist_failed.load(Ordering::SeqCst),
        0,
        "a save failed"
    );
    assert_eq!(
        trouble.refresh_failed.load(Ordering::SeqCst),
        0,
        "a refresh failed"
    );
    // No rotation lost: the cluster holds the refresh token the server accepts now.
    let stored = connect(&prefix)
        .await
        .unwrap()
        .load(&key)
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
