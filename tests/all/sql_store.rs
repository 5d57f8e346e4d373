//! SqlTokenStore against real databases: SQLite files in a temporary directory, and PostgreSQL
//! at `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`). With `CI` set, a
//! missing PostgreSQL fails these tests; otherwise they are skipped with a note.
//!
//! The same contract runs on both backends; every test uses tables of its own, so tests run in
//! parallel.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use reqwest_middleware::ClientWithMiddleware;
use reqwest_token_refresh::{
    AccessToken, EncryptionKey, KeyRing, RefreshToken, SaveOutcome, SqlTokenStore,
    SqlTokenStoreBuilder, StoreErrorKind, TokenKey, TokenManager, TokenRecord, TokenSet,
    TokenStore,
};

use crate::auth_server::AuthServer;
use crate::helpers::{
    bound, builder, builder_for, built_with_tokens, client, reached, record, Point, TestStore,
};
use crate::workers as processes;
use reqwest_token_refresh::test_util::store_contract::StoreContract;

fn key_ring() -> KeyRing {
    KeyRing::new(EncryptionKey::from_bytes("test-2026", &[9; 32]).expect("valid key"))
}

/// A name no other test (or test run) uses, valid as a table name.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn tokens(marker: &str, generation: u64) -> TokenRecord {
    let set = TokenSet::new(AccessToken::new(format!("canary-at-{marker}")))
        .with_refresh_token(RefreshToken::new(format!("canary-rt-{marker}")))
        .with_expires_in(Duration::from_secs(3600));
    record(set, generation)
}

/// A database the contract runs against. Every `store` call opens a new pool, as another
/// process would.
enum Db {
    #[cfg(feature = "sqlite")]
    Sqlite(TempDir),
    #[cfg(feature = "postgres")]
    Postgres(String),
}

impl Db {
    async fn builder(&self, table: &str) -> SqlTokenStoreBuilder {
        let builder = match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(dir) => SqlTokenStore::sqlite(sqlite_pool(&dir.db()).await, key_ring()),
            #[cfg(feature = "postgres")]
            Db::Postgres(url) => SqlTokenStore::postgres(postgres_pool(url).await, key_ring()),
        };
        builder.table(table)
    }

    /// A store that gives up on a held lock after 300 ms (its own lease as short).
    async fn impatient_store(&self, table: &str) -> SqlTokenStore {
        self.builder(table)
            .await
            .lock_timeout(Duration::from_millis(300))
            .lock_lease(Duration::from_millis(300))
            .build()
            .expect("valid table name")
    }

    async fn store(&self, table: &str) -> SqlTokenStore {
        self.builder(table).await.build().expect("valid table name")
    }

    async fn migrated_store(&self, table: &str) -> SqlTokenStore {
        let store = self.store(table).await;
        store.migrate().await.expect("migrate");
        store
    }

    /// Everything stored for `table`, as raw bytes: the database files for SQLite, every row
    /// as text for PostgreSQL.
    async fn raw(&self, table: &str) -> Vec<u8> {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(dir) => {
                let mut bytes = Vec::new();
                for suffix in ["", "-wal", "-journal"] {
                    let mut path = dir.db().into_os_string();
                    path.push(suffix);
                    bytes.extend(std::fs::read(path).unwrap_or_default());
                }
                let _ = table;
                bytes
            }
            #[cfg(feature = "postgres")]
            Db::Postgres(url) => {
                let rows: Vec<(String,)> =
                    sqlx::query_as(&format!("SELECT t::text FROM \"{table}\" t"))
                        .fetch_all(&postgres_pool(url).await)
                        .await
                        .expect("raw rows");
                rows.into_iter()
                    .flat_map(|(row,)| row.into_bytes())
                    .collect()
            }
        }
    }

    /// The sealed column of `key`.
    async fn sealed(&self, table: &str, key: &str) -> String {
        let sql = format!("SELECT sealed FROM \"{table}\" WHERE token_key = $1");
        let (sealed,): (String,) = match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(dir) => sqlx::query_as(&sql)
                .bind(key)
                .fetch_one(&sqlite_pool(&dir.db()).await)
                .await
                .expect("sealed column"),
            #[cfg(feature = "postgres")]
            Db::Postgres(url) => sqlx::query_as(&sql)
                .bind(key)
                .fetch_one(&postgres_pool(url).await)
                .await
                .expect("sealed column"),
        };
        sealed
    }

    /// Overwrites the sealed column of `key`, as a tampering operator would.
    async fn set_sealed(&self, table: &str, key: &str, sealed: &str) {
        let sql = format!("UPDATE \"{table}\" SET sealed = $1 WHERE token_key = $2");
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(dir) => {
                sqlx::query(&sql)
                    .bind(sealed)
                    .bind(key)
                    .execute(&sqlite_pool(&dir.db()).await)
                    .await
                    .expect("tamper");
            }
            #[cfg(feature = "postgres")]
            Db::Postgres(url) => {
                sqlx::query(&sql)
                    .bind(sealed)
                    .bind(key)
                    .execute(&postgres_pool(url).await)
                    .await
                    .expect("tamper");
            }
        }
    }

    /// How a short-lived process opens the store (its environment).
    fn env(&self, table: &str) -> Vec<(&'static str, String)> {
        let mut env = vec![("RTR_TABLE", table.to_owned())];
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(dir) => env.push(("RTR_SQLITE_PATH", dir.db().display().to_string())),
            #[cfg(feature = "postgres")]
            Db::Postgres(url) => env.push(("RTR_DATABASE_URL", url.clone())),
        }
        env
    }

    /// The store a short-lived process opens, from its environment.
    async fn from_env() -> SqlTokenStore {
        let var = |name: &str| std::env::var(name).ok();
        let table = var("RTR_TABLE").expect("RTR_TABLE");
        #[cfg(feature = "sqlite")]
        if let Some(path) = var("RTR_SQLITE_PATH") {
            let pool = sqlite_pool(std::path::Path::new(&path)).await;
            return SqlTokenStore::sqlite(pool, key_ring())
                .table(&table)
                .build()
                .unwrap();
        }
        #[cfg(feature = "postgres")]
        if let Some(url) = var("RTR_DATABASE_URL") {
            let pool = postgres_pool(&url).await;
            return SqlTokenStore::postgres(pool, key_ring())
                .table(&table)
                .build()
                .unwrap();
        }
        panic!("no database in the environment")
    }

    /// Takes `key`'s refresh lock away from its holder: the SQLite lease row is deleted, the
    /// PostgreSQL session holding the advisory lock is terminated.
    async fn break_lock(&self, table: &str, key: &TokenKey) {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(dir) => {
                sqlx::query(&format!(
                    "DELETE FROM \"{table}_lease\" WHERE token_key = $1"
                ))
                .bind(key.as_str())
                .execute(&sqlite_pool(&dir.db()).await)
                .await
                .expect("delete the lease");
            }
            #[cfg(feature = "postgres")]
            Db::Postgres(url) => {
                let id = self.store(table).await.advisory_lock_id(key);
                let terminated: Vec<(bool,)> = sqlx::query_as(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
                     AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1",
                )
                .bind((id >> 32) & 0xffff_ffff)
                .bind(id & 0xffff_ffff)
                .fetch_all(&postgres_pool(url).await)
                .await
                .expect("terminate the lock's session");
                assert_eq!(terminated, vec![(true,)], "one session held the lock");
            }
        }
    }

    async fn drop_tables(&self, table: &str) {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(_) => {} // the directory goes away
            #[cfg(feature = "postgres")]
            Db::Postgres(url) => {
                sqlx::raw_sql(&format!("DROP TABLE IF EXISTS \"{table}\""))
                    .execute(&postgres_pool(url).await)
                    .await
                    .expect("drop table");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite plumbing.

/// A directory removed on drop.
#[cfg(feature = "sqlite")]
struct TempDir(tempfile::TempDir);

#[cfg(feature = "sqlite")]
impl TempDir {
    fn new() -> Self {
        Self(
            tempfile::Builder::new()
                .prefix("rtr_sql")
                .tempdir()
                .expect("temp dir"),
        )
    }

    fn db(&self) -> PathBuf {
        self.0.path().join("tokens.db")
    }
}

/// A pool as the store's docs recommend: WAL, and a busy timeout so processes wait for each
/// other's writes.
#[cfg(feature = "sqlite")]
async fn sqlite_pool(path: &std::path::Path) -> sqlx::SqlitePool {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("sqlite pool")
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL plumbing.

#[cfg(feature = "postgres")]
fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A small pool: the store must not need more (its lock connection lives outside it).
#[cfg(feature = "postgres")]
async fn postgres_pool(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .expect("postgres pool")
}

/// The PostgreSQL database, or `None` (test skipped) when it is not running outside CI.
#[cfg(feature = "postgres")]
async fn postgres() -> Option<Db> {
    let url = database_url();
    let connected = tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .connect(&url),
    )
    .await;
    let error = match connected {
        Ok(Ok(pool)) => {
            pool.close().await;
            return Some(Db::Postgres(url));
        }
        Ok(Err(error)) => error.to_string(),
        Err(_) => "no answer within 5 s".to_owned(),
    };
    if std::env::var_os("CI").is_some() {
        panic!("postgres is required in CI (DATABASE_URL={url}): {error}");
    }
    eprintln!("skipping: no postgres at {url} ({error})");
    None
}

// ---------------------------------------------------------------------------------------------
// The contract, for any backend.

mod contract {
    use super::*;

    /// The `TokenStore` contract suite, with this backend's ways of losing a lock (the lease row
    /// deleted, the lock's session terminated) and of spoiling a record.
    pub async fn the_token_store_contract(db: Db) {
        let table = unique("t_contract");
        db.migrated_store(&table).await;
        let db = std::sync::Arc::new(db);
        let make = {
            let (db, table) = (db.clone(), table.clone());
            move || {
                let (db, table) = (db.clone(), table.clone());
                async move { db.store(&table).await }
            }
        };
        let breaker = {
            let (db, table) = (db.clone(), table.clone());
            move |key: TokenKey| {
                let (db, table) = (db.clone(), table.clone());
                async move { db.break_lock(&table, &key).await }
            }
        };
        let corrupter = {
            let (db, table) = (db.clone(), table.clone());
            move |key: TokenKey| {
                let (db, table) = (db.clone(), table.clone());
                async move {
                    db.set_sealed(&table, key.as_str(), "not a sealed envelope")
                        .await;
                }
            }
        };
        StoreContract::new(make)
            .lock_breaker(breaker)
            .corrupter(corrupter)
            .run()
            .await;
        db.drop_tables(&table).await;
    }

    pub async fn two_writers_from_the_same_version_exactly_one_wins(db: &Db) {
        let table = unique("t_two_writers");
        let (a, b) = (db.migrated_store(&table).await, db.store(&table).await);
        let key = TokenKey::new("user-1");
        let first = tokens("1", 1);
        assert_eq!(
            a.save(&key, &first, None).await.unwrap(),
            SaveOutcome::Saved
        );
        let (from_a, from_b) = (tokens("2a", 2), tokens("2b", 2));
        let (outcome_a, outcome_b) = tokio::join!(
            a.save(&key, &from_a, Some(first.revision())),
            b.save(&key, &from_b, Some(first.revision()))
        );
        let (outcome_a, outcome_b) = (outcome_a.unwrap(), outcome_b.unwrap());
        let stored = a.load(&key).await.unwrap().expect("a record");
        match (&outcome_a, &outcome_b) {
            (SaveOutcome::Saved, SaveOutcome::Conflict { current }) => {
                assert_eq!(stored, from_a);
                assert_eq!(current.as_ref(), Some(&from_a));
            }
            (SaveOutcome::Conflict { current }, SaveOutcome::Saved) => {
                assert_eq!(stored, from_b);
                assert_eq!(current.as_ref(), Some(&from_b));
            }
            other => panic!("expected exactly one winner, got {other:?}"),
        }
        // A writer still expecting the first record cannot overwrite the second.
        assert_eq!(
            b.save(&key, &tokens("late", 2), Some(first.revision()))
                .await
                .unwrap(),
            SaveOutcome::Conflict {
                current: Some(stored.clone())
            }
        );
        // A new login after a logout starts the generations over: still not the first record.
        let relogin = tokens("relogin", 1);
        assert_eq!(
            b.save(&key, &relogin, Some(stored.revision()))
                .await
                .unwrap(),
            SaveOutcome::Saved
        );
        assert_eq!(
            a.save(&key, &tokens("stale", 2), Some(first.revision()))
                .await
                .unwrap(),
            SaveOutcome::Conflict {
                current: Some(relogin.clone())
            }
        );
        // The loser adopts and goes on from the stored record.
        assert_eq!(
            a.save(&key, &tokens("3", 2), Some(relogin.revision()))
                .await
                .unwrap(),
            SaveOutcome::Saved
        );
        db.drop_tables(&table).await;
    }

    pub async fn concurrent_first_inserts_give_one_saved_and_one_conflict(db: &Db) {
        let table = unique("t_first_insert");
        let (a, b) = (db.migrated_store(&table).await, db.store(&table).await);
        let key = TokenKey::new("user-1");
        let (from_a, from_b) = (tokens("a", 1), tokens("b", 1));
        let (outcome_a, outcome_b) =
            tokio::join!(a.save(&key, &from_a, None), b.save(&key, &from_b, None));
        let outcomes = [outcome_a.unwrap(), outcome_b.unwrap()];
        let saved = outcomes
            .iter()
            .filter(|outcome| **outcome == SaveOutcome::Saved)
            .count();
        assert_eq!(saved, 1, "{outcomes:?}");
        let stored = a.load(&key).await.unwrap();
        assert!(outcomes.contains(&SaveOutcome::Conflict {
            current: stored.clone()
        }));
        assert!(stored == Some(from_a) || stored == Some(from_b));
        db.drop_tables(&table).await;
    }

    pub async fn the_stored_payload_holds_no_plaintext_token(db: &Db) {
        let table = unique("t_sealed");
        let store = db.migrated_store(&table).await;
        let key = TokenKey::new("user-1");
        let first = tokens("1", 1);
        assert_eq!(
            store.save(&key, &first, None).await.unwrap(),
            SaveOutcome::Saved
        );
        assert_eq!(
            store
                .save(&key, &tokens("2", 2), Some(first.revision()))
                .await
                .unwrap(),
            SaveOutcome::Saved
        );
        let raw = db.raw(&table).await;
        assert!(!raw.is_empty());
        assert!(
            !raw.windows(6).any(|window| window == b"canary"),
            "a plaintext token reached the database"
        );
        db.drop_tables(&table).await;
    }

    pub async fn a_tampered_record_is_corrupt_and_left_in_place(db: &Db) {
        let table = unique("t_tampered");
        let store = db.migrated_store(&table).await;
        let key = TokenKey::new("user-1");
        for (name, marker) in [("user-1", "1"), ("user-2", "2")] {
            assert_eq!(
                store
                    .save(&TokenKey::new(name), &tokens(marker, 1), None)
                    .await
                    .unwrap(),
                SaveOutcome::Saved
            );
        }
        // A sealed value copied from another key does not open: it is bound to its key.
        let copied = db.sealed(&table, "user-2").await;
        db.set_sealed(&table, "user-1", &copied).await;
        let error = store.load(&key).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Corrupt, "{error:?}");
        db.set_sealed(&table, "user-1", "not a sealed envelope")
            .await;
        let error = store.load(&key).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Corrupt, "{error:?}");
        // An error is never "no tokens": a first save does not replace the record.
        let error = store.save(&key, &tokens("3", 1), None).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Corrupt, "{error:?}");
        assert_eq!(db.sealed(&table, "user-1").await, "not a sealed envelope");
        db.drop_tables(&table).await;
    }

    pub async fn a_missing_schema_is_a_typed_error_with_a_hint(db: &Db) {
        let table = unique("t_missing");
        let store = db.store(&table).await;
        let key = TokenKey::new("user-1");
        let hint = format!("table `{table}` missing; run SqlTokenStore::migrate()");
        let load = store.load(&key).await.unwrap_err();
        let save = store.save(&key, &tokens("1", 1), None).await.unwrap_err();
        for error in [load, save] {
            assert_eq!(error.kind(), StoreErrorKind::Misconfigured, "{error:?}");
            assert_eq!(error.to_string(), hint);
            assert!(!error.is_transient());
        }
        // After migrate() the same store works.
        store.migrate().await.unwrap();
        assert_eq!(store.load(&key).await.unwrap(), None);
        db.drop_tables(&table).await;
    }

    pub async fn the_lock_excludes_a_second_holder_until_dropped(db: &Db) {
        let table = unique("t_lock");
        let holder = db.impatient_store(&table).await;
        holder.migrate().await.unwrap();
        let waiter = db.impatient_store(&table).await;
        let key = TokenKey::new("user-1");
        let held = holder.lock(&key).await.unwrap();

        let error = waiter.lock(&key).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::LockTimeout, "{error:?}");
        assert!(error.is_transient());
        assert!(error.to_string().contains("user-1"), "{error}");
        // The holder's own store, too: the lock is not re-entrant for a second caller.
        let error = holder.lock(&key).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::LockTimeout);
        // Another key is independent.
        let other = waiter.lock(&TokenKey::new("user-2")).await.unwrap();
        drop(other);

        // A waiter queued before the release gets the lock once it is dropped.
        let queued = {
            let waiter = db
                .builder(&table)
                .await
                .lock_timeout(Duration::from_secs(10))
                .lock_lease(Duration::from_millis(300))
                .build()
                .unwrap();
            let key = key.clone();
            tokio::spawn(async move { waiter.lock(&key).await })
        };
        drop(held);
        let second = queued.await.unwrap().expect("lock after release");
        drop(second);
        let third = holder.lock(&key).await.expect("lock after second release");
        drop(third);
        db.drop_tables(&table).await;
    }

    /// CLI-style use: processes that each refresh once and exit at once leave no lock for the
    /// next one to wait out.
    pub async fn a_process_that_refreshes_and_exits_leaves_no_lock_behind(db: &Db) {
        let table = unique("t_short_lived");
        let server = AuthServer::start(Duration::from_secs(3600)).await;
        let store = db.migrated_store(&table).await;
        built_with_tokens(builder(&server).store(store), server.issue_grant()).await;
        let mut env = db.env(&table);
        env.extend([
            ("RTR_TOKEN_URL", server.token_url()),
            ("RTR_ORIGIN", server.uri()),
            ("RTR_API_URL", server.api_url("me")),
        ]);
        processes::assert_short_lived_runs_leave_no_lock(
            &server,
            "sql_store::short_lived_sql_process",
            &env,
        );
        db.drop_tables(&table).await;
    }

    /// Two middlewares (as two processes) share the store; every round the API rejects all
    /// access tokens, and exactly one refresh per round happens.
    pub async fn middlewares_sharing_the_store_refresh_once_per_rejection(db: &Db) {
        const ROUNDS: usize = 4;
        const REQUESTS: usize = 15;
        let table = unique("t_middleware");
        let server = AuthServer::start(Duration::from_secs(3600)).await;
        let store = db.migrated_store(&table).await;
        let (first, manager) = sql_client(&server, store);
        manager
            .set_tokens(&TokenKey::default(), server.issue_grant())
            .await
            .unwrap();
        let (second, _) = sql_client(&server, db.store(&table).await);
        let url = server.api_url("items");
        let mut failed = 0;
        for round in 0..ROUNDS {
            if round > 0 {
                server.reject_current_access_tokens();
            }
            let (ok_a, ok_b) =
                tokio::join!(fire(&first, &url, REQUESTS), fire(&second, &url, REQUESTS));
            failed += 2 * REQUESTS - ok_a - ok_b;
        }
        assert_eq!(failed, 0);
        assert_eq!(server.reuse_detections(), 0);
        assert_eq!(server.refresh_calls(), (ROUNDS - 1) as u64);
        db.drop_tables(&table).await;
    }
}

fn sql_client(server: &AuthServer, store: SqlTokenStore) -> (ClientWithMiddleware, TokenManager) {
    client(
        builder(server)
            .rejection_cooldown(Duration::ZERO)
            .store(store)
            .build(),
    )
}

/// Sends `count` concurrent requests; returns how many got a 200.
async fn fire(client: &ClientWithMiddleware, url: &str, count: usize) -> usize {
    let responses = join_all((0..count).map(|_| client.get(url).send())).await;
    responses
        .iter()
        .filter(|response| matches!(response, Ok(response) if response.status() == 200))
        .count()
}

/// One run of a CLI on either backend: one request that refreshes, then exit.
#[tokio::test]
#[ignore = "a short-lived process of a_process_that_refreshes_and_exits_leaves_no_lock_behind"]
async fn short_lived_sql_process() {
    if !processes::is_worker() {
        return;
    }
    let var = |name: &str| std::env::var(name).expect(name);
    let middleware = builder_for(&var("RTR_TOKEN_URL"), &var("RTR_ORIGIN"))
        .store(Db::from_env().await)
        .build();
    processes::one_request_and_exit(client(middleware), var("RTR_API_URL")).await;
}

/// One test per contract item, on each backend.
macro_rules! contract_tests {
    ($db:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_token_store_contract() {
            let Some(db) = $db else { return };
            contract::the_token_store_contract(db).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn d8_two_writers_from_the_same_version_exactly_one_wins() {
            let Some(db) = $db else { return };
            contract::two_writers_from_the_same_version_exactly_one_wins(&db).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn d8_concurrent_first_inserts_give_one_saved_and_one_conflict() {
            let Some(db) = $db else { return };
            contract::concurrent_first_inserts_give_one_saved_and_one_conflict(&db).await;
        }

        #[tokio::test]
        async fn r49_the_stored_payload_holds_no_plaintext_token() {
            let Some(db) = $db else { return };
            contract::the_stored_payload_holds_no_plaintext_token(&db).await;
        }

        #[tokio::test]
        async fn a_tampered_record_is_corrupt_and_left_in_place() {
            let Some(db) = $db else { return };
            contract::a_tampered_record_is_corrupt_and_left_in_place(&db).await;
        }

        #[tokio::test]
        async fn a_missing_schema_is_a_typed_error_with_a_hint() {
            let Some(db) = $db else { return };
            contract::a_missing_schema_is_a_typed_error_with_a_hint(&db).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn d5_the_lock_excludes_a_second_holder_until_dropped() {
            let Some(db) = $db else { return };
            contract::the_lock_excludes_a_second_holder_until_dropped(&db).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_process_that_refreshes_and_exits_leaves_no_lock_behind() {
            let Some(db) = $db else { return };
            contract::a_process_that_refreshes_and_exits_leaves_no_lock_behind(&db).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn d5_middlewares_sharing_the_store_refresh_once_per_rejection() {
            let Some(db) = $db else { return };
            contract::middlewares_sharing_the_store_refresh_once_per_rejection(&db).await;
        }
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use crate::workers::{self, Workers};

    contract_tests!(Some(Db::Sqlite(TempDir::new())));

    const WORKERS: usize = 4;
    const ROUNDS: usize = 5;
    const REQUESTS_PER_ROUND: usize = 20;

    /// One of the processes sharing the SQLite file; run only by the test below.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a worker process of d5_processes_sharing_a_sqlite_file_refresh_once_per_rejection"]
    async fn sqlite_process_worker() {
        if !workers::is_worker() {
            return;
        }
        let env = |name: &str| std::env::var(name).expect(name);
        let pool = sqlite_pool(std::path::Path::new(&env("RTR_SQLITE_PATH"))).await;
        let store = SqlTokenStore::sqlite(pool, key_ring())
            .table(env("RTR_TABLE"))
            .build()
            .expect("valid table");
        let grant =
            reqwest_token_refresh::RefreshTokenGrant::builder(env("RTR_TOKEN_URL"), "test-client")
                .danger_allow_http_loopback()
                .build()
                .expect("valid grant");
        let middleware = reqwest_token_refresh::TokenManager::builder(grant)
            .allow_origin(&env("RTR_ORIGIN"))
            .expect("valid origin")
            .rejection_cooldown(Duration::ZERO)
            .store(store)
            .build();
        let (client, _) = client(middleware);
        workers::serve_rounds(client, env("RTR_API_URL"), REQUESTS_PER_ROUND).await;
    }

    /// One refresh across real processes: every round the API rejects all access tokens, each process
    /// fires concurrent requests, and the lease lets exactly one of them refresh while the
    /// others adopt its tokens from the file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn d5_processes_sharing_a_sqlite_file_refresh_once_per_rejection() {
        let dir = TempDir::new();
        let table = "oauth_tokens";
        let server = AuthServer::start(Duration::from_secs(3600)).await;
        let store = SqlTokenStore::sqlite(sqlite_pool(&dir.db()).await, key_ring())
            .build()
            .unwrap();
        store.migrate().await.unwrap();
        let first = record(bound(server.issue_grant(), &server), 1);
        assert_eq!(
            store
                .save(&TokenKey::default(), &first, None)
                .await
                .unwrap(),
            SaveOutcome::Saved
        );
        let processes = Workers::spawn(
            "sql_store::sqlite::sqlite_process_worker",
            WORKERS,
            &[
                ("RTR_SQLITE_PATH", dir.db().display().to_string()),
                ("RTR_TABLE", table.to_owned()),
                ("RTR_TOKEN_URL", server.token_url()),
                ("RTR_ORIGIN", server.uri()),
                ("RTR_API_URL", server.api_url("items")),
            ],
        );
        let failed = processes.run_lifetimes(&server, ROUNDS);
        assert_eq!(failed, 0, "failed requests");
        assert_eq!(
            server.reuse_detections(),
            0,
            "a consumed refresh token came back"
        );
        assert_eq!(server.refresh_calls(), (ROUNDS - 1) as u64);
        let stored = store.load(&TokenKey::default()).await.unwrap().unwrap();
        assert_eq!(stored.generation(), ROUNDS as u64);
    }

    #[tokio::test]
    async fn an_unreachable_database_is_unavailable() {
        use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
        let dir = TempDir::new();
        let options =
            SqliteConnectOptions::new().filename(dir.0.path().join("missing-dir/tokens.db"));
        let pool = SqlitePoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(options);
        let store = SqlTokenStore::sqlite(pool, key_ring()).build().unwrap();
        let error = store.load(&TokenKey::default()).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Unavailable, "{error:?}");
        assert!(error.is_transient());
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    contract_tests!(postgres().await);

    /// The application's own queries hold every connection of the pool while a refresh needs
    /// the store: the refresh lock lives on a connection of its own (no deadlock), and the
    /// store's reads wait for the pool's acquire timeout, then fail with a clear, transient
    /// error and no token call. Once a connection is free the next request refreshes, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exhausted_pool_is_a_clear_timeout_not_a_deadlock() {
        let Some(_) = postgres().await else { return };
        let table = unique("t_pool");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(500))
            .connect(&database_url())
            .await
            .unwrap();
        let store = SqlTokenStore::postgres(pool.clone(), key_ring())
            .table(&table)
            .build()
            .unwrap();
        store.migrate().await.unwrap();
        let server = AuthServer::start(Duration::from_secs(3600)).await;
        let (client, _) =
            built_with_tokens(builder(&server).store(store), server.issue_grant()).await;
        server.reject_current_access_tokens();

        let busy = pool.acquire().await.unwrap();
        let started = std::time::Instant::now();
        let error = tokio::time::timeout(
            Duration::from_secs(20),
            client.get(server.api_url("me")).send(),
        )
        .await
        .expect("no deadlock: the request ends")
        .unwrap_err();
        let error = crate::helpers::token_error(&error);
        assert!(error.is_transient(), "{error:?}");
        let text = format!("{error} {:?}", std::error::Error::source(error));
        assert!(
            text.contains("unavailable") || text.contains("pool") || text.contains("timed out"),
            "{text}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(server.refresh_calls(), 0, "no token call without the store");

        drop(busy);
        // The failed attempt holds refreshes back for about a second; a request after that
        // refreshes once.
        let mut status = 0;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match client.get(server.api_url("me")).send().await {
                Ok(response) => {
                    status = response.status().as_u16();
                    break;
                }
                Err(error) => assert!(crate::helpers::token_error(&error).is_transient()),
            }
        }
        assert_eq!(status, 200);
        assert_eq!(server.refresh_calls(), 1);
        server.assert_no_refresh_token_reused();
        pool.close().await;
        Db::Postgres(database_url()).drop_tables(&table).await;
    }

    /// The session holding a refresh lock dies while its holder works (an administrator's
    /// `pg_terminate_backend`, `idle_session_timeout`, a network cut): the server has released
    /// the lock, so the holder must not call the token endpoint with a refresh token another
    /// process may be presenting. It notices before the call, however recently it last
    /// pinged, and makes none; the next request refreshes normally.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_holder_whose_lock_session_died_makes_no_token_call() {
        let Some(db) = postgres().await else { return };
        let table = unique("t_lost_session");
        let store = TestStore::new(std::sync::Arc::new(db.migrated_store(&table).await));
        let server = AuthServer::start(Duration::from_secs(3600)).await;
        let (client, _) = built_with_tokens(
            builder(&server).store(store.clone()),
            server.issue_expired_grant(),
        )
        .await;
        let entered = store.gate.arm(Point::Load);
        let url = server.api_url("me");
        let request = tokio::spawn({
            let (client, url) = (client.clone(), url.clone());
            async move { client.get(url).send().await }
        });
        reached(entered).await;
        db.break_lock(&table, &TokenKey::default()).await;
        store.gate.release();
        let error = request.await.unwrap().unwrap_err();
        let error = crate::helpers::token_error(&error);
        assert!(error.is_transient(), "{error}");
        assert_eq!(server.refresh_calls(), 0, "a token call without the lock");
        // The lock is free again (the server released it with the session): the next
        // request refreshes, once.
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(server.refresh_calls(), 1);
        assert_eq!(server.reuse_detections(), 0);
        db.drop_tables(&table).await;
    }

    /// The lock lives in the holder's session: when that session dies (process killed,
    /// network gone), the server releases it without any cleanup by the holder.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn d5_a_dead_holders_lock_is_released_by_the_server() {
        use std::str::FromStr;
        let Some(db) = postgres().await else { return };
        let table = unique("t_dead_holder");
        db.migrated_store(&table).await;
        // The lock connection is opened with the pool's options, so it carries this name.
        let application = unique("rtr_dead_holder");
        let options = sqlx::postgres::PgConnectOptions::from_str(&database_url())
            .expect("valid url")
            .application_name(&application);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("postgres pool");
        let holder = SqlTokenStore::postgres(pool, key_ring())
            .table(&table)
            .build()
            .unwrap();
        let key = TokenKey::new("user-1");
        let held = holder.lock(&key).await.unwrap();

        let killed: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&application)
        .fetch_all(&postgres_pool(&database_url()).await)
        .await
        .unwrap();
        assert!(!killed.is_empty());

        let waiter = db
            .builder(&table)
            .await
            .lock_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let taken = waiter.lock(&key).await.expect("lock of a dead session");
        drop(taken);
        drop(held);
        db.drop_tables(&table).await;
    }

    #[tokio::test]
    async fn an_unreachable_database_is_unavailable() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy("postgres://postgres@127.0.0.1:1/test")
            .expect("valid url");
        let store = SqlTokenStore::postgres(pool, key_ring()).build().unwrap();
        let key = TokenKey::default();
        let error = store.load(&key).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Unavailable, "{error:?}");
        let error = store.lock(&key).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Unavailable, "{error:?}");
    }
}
