//! Section 6, "fleet": a million users shared by a fleet of processes (part of `load.rs`; it
//! uses the table rows, the counting allocator and the helpers of that file).
//!
//! The parent seeds a shared store (Redis, then PostgreSQL) with one token set per key, bound
//! to the grant the workers use, starts [`FleetServer`] (a rotating refresh token per key) and
//! re-executes this binary as worker processes. Every key is requested by two processes; each
//! worker sends its requests at the moments a schedule shared by all of them gives, through a
//! middleware chain that ends in a stub API (no I/O: the section measures the token side).
//!
//! The schedule, for key `k` of `n` in a window of `w` seconds: its moment is `s = w · k / n`,
//! its primary process is `k mod p`, its secondary process another one. By `k mod 10`:
//! - `0`, expired: the seeded access token expired before the run; the primary process
//!   requests the key at `s` (and refreshes), the secondary at `s + gap` (and reads the new
//!   tokens from the store);
//! - `1`, lasting: the token outlives the run; requested at `s` and `s + gap` as above, never
//!   refreshed;
//! - `2`, `3`, held: the token becomes due at `s + gap / 2`; the primary process requests the
//!   key at `s` (and keeps the token in memory), then both processes at `s + gap`: each holds
//!   or reads a due token, one refreshes, the other adopts what the first stored;
//! - `4`–`9`, cold: due at `s + gap / 2` too; both processes request the key for the first time
//!   at `s + gap`, read the due token from the store at once, and must agree through the
//!   store's lock on one refresh.
//!
//! A request is never sent before its moment, so every key but the lasting ones is requested
//! after its token became due however late the workers run: exactly one lifetime crossed per
//! such key, and the token endpoint must see exactly one call for each (counted per key by
//! the server), none for the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use http::Extensions;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use reqwest_token_refresh::{
    AccessToken, Event, HeldLock, RefreshToken, RefreshTokenGrant, Revision, SaveOutcome,
    StoreError, StoreLock, TokenKey, TokenManager, TokenRecord, TokenSet, TokenStore,
};
use serde::{Deserialize, Serialize};

use crate::fleet_server::{self, FleetServer};
use crate::workers::Workers;
use crate::{counted, key_ring, median, multi_thread, redis_url, row, stub, Config, Row};

/// `RTR_BENCH_WORKER` of a fleet worker.
pub const WORKER_KIND: &str = "fleet";

/// The manager's leeway in the workers (and the margin the seeded expiries leave for it).
const LEEWAY: Duration = Duration::from_secs(5);
/// The client id of the grant (part of the binding seeded token sets carry).
const CLIENT_ID: &str = "bench";
/// Workers send the requests of each tick of this many milliseconds together.
const TICK_MS: u64 = 10;
/// The points at which workers sample their RSS, in percent of their keys touched.
const SAMPLES: [u32; 5] = [10, 25, 50, 75, 100];

// ---------------------------------------------------------------------------------------------
// The schedule, shared by the parent and the workers.

#[derive(Clone, Copy, Debug)]
struct Plan {
    keys: usize,
    processes: usize,
    /// When seeding started (Unix ms): the reference of the expired and lasting groups.
    base_ms: u64,
    /// The start of the run (Unix ms).
    epoch_ms: u64,
    window_ms: u64,
    gap_ms: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Group {
    Expired,
    Lasting,
    Held,
    Cold,
}

impl Plan {
    fn encode(&self) -> String {
        format!(
            "{},{},{},{},{},{}",
            self.keys, self.processes, self.base_ms, self.epoch_ms, self.window_ms, self.gap_ms
        )
    }

    fn decode(text: &str) -> Self {
        let n: Vec<u64> = text
            .split(',')
            .map(|n| n.parse().expect("plan number"))
            .collect();
        Self {
            keys: n[0] as usize,
            processes: n[1] as usize,
            base_ms: n[2],
            epoch_ms: n[3],
            window_ms: n[4],
            gap_ms: n[5],
        }
    }

    fn group(k: usize) -> Group {
        match k % 10 {
            0 => Group::Expired,
            1 => Group::Lasting,
            2 | 3 => Group::Held,
            _ => Group::Cold,
        }
    }

    /// Token calls the key must cause: one per lifetime crossed.
    fn crossings(k: usize) -> u32 {
        u32::from(Self::group(k) != Group::Lasting)
    }

    /// The key's moment, in ms after the epoch.
    fn moment_ms(&self, k: usize) -> u64 {
        self.window_ms * k as u64 / self.keys as u64
    }

    fn primary(&self, k: usize) -> usize {
        k % self.processes
    }

    /// Another process than the primary one, spread over all of them.
    fn secondary(&self, k: usize) -> usize {
        let p = self.processes;
        (k + 1 + (k / p) % (p - 1)) % p
    }

    fn expires_at(&self, k: usize) -> SystemTime {
        let ms = match Self::group(k) {
            Group::Expired => self.base_ms - 3_600_000,
            Group::Lasting => self.base_ms + 86_400_000,
            Group::Held | Group::Cold => {
                self.epoch_ms + self.moment_ms(k) + self.gap_ms / 2 + LEEWAY.as_millis() as u64
            }
        };
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// The token set seeded for key `k`, bound to the workers' grant.
    fn seeded(&self, k: usize, binding: &str) -> TokenRecord {
        TokenSet::new(AccessToken::new(fleet_server::token("at", k, 0)))
            .with_refresh_token(RefreshToken::new(fleet_server::token("rt", k, 0)))
            .with_expires_at(self.expires_at(k))
            .with_issued_for(binding)
            .into()
    }

    /// Worker `w`'s requests, in the order of their moments: (ms after the epoch, key, the
    /// worker's first request of the key).
    fn requests(&self, w: usize) -> Vec<(u64, u32, bool)> {
        let mut requests = Vec::with_capacity(3 * self.keys / self.processes + 3);
        for k in 0..self.keys {
            let (early, late) = (self.moment_ms(k), self.moment_ms(k) + self.gap_ms);
            let key = k as u32;
            if self.primary(k) == w {
                match Self::group(k) {
                    Group::Expired | Group::Lasting => requests.push((early, key, true)),
                    Group::Held => {
                        requests.push((early, key, true));
                        requests.push((late, key, false));
                    }
                    Group::Cold => requests.push((late, key, true)),
                }
            } else if self.secondary(k) == w {
                requests.push((late, key, true));
            }
        }
        requests.sort_unstable();
        requests
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn key_name(k: usize) -> TokenKey {
    TokenKey::new(format!("user-{k}"))
}

fn grant(token_url: &str) -> RefreshTokenGrant {
    RefreshTokenGrant::builder(token_url, CLIENT_ID)
        .danger_allow_http_loopback()
        .build()
        .expect("grant")
}

/// What the built-in grants bind token sets to (`TokenSet::with_issued_for`).
fn binding(token_url: &str) -> String {
    format!("{token_url} {CLIENT_ID}")
}

/// Resident set size of this process, from `/proc/self/statm`.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

// ---------------------------------------------------------------------------------------------
// Stores

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Redis,
    Postgres,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Postgres => "postgres",
        }
    }
}

#[cfg(feature = "postgres")]
fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Opens the store `location` names (a Redis prefix or a PostgreSQL table) with a pool of
/// `connections` (PostgreSQL).
async fn open_store(
    kind: Kind,
    location: &str,
    connections: u32,
) -> Result<Arc<dyn TokenStore>, String> {
    match kind {
        Kind::Redis => {
            let store = reqwest_token_refresh::RedisTokenStore::builder(key_ring())
                .prefix(location)
                .default_ttl(Duration::from_secs(3600))
                .connect(&redis_url())
                .await
                .map_err(|error| error.to_string())?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "postgres")]
        Kind::Postgres => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(connections)
                .connect(&database_url())
                .await
                .map_err(|error| error.to_string())?;
            let store = reqwest_token_refresh::SqlTokenStore::postgres(pool, key_ring())
                .table(location)
                .build()
                .map_err(|error| error.to_string())?;
            store.migrate().await.map_err(|error| error.to_string())?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "postgres"))]
        Kind::Postgres => {
            let _ = connections;
            Err("built without the `postgres` feature".to_owned())
        }
    }
}

/// Removes what the run left in the store.
async fn clean_up(kind: Kind, location: &str) -> Result<u64, String> {
    match kind {
        Kind::Redis => {
            let client = redis::Client::open(redis_url()).map_err(|e| e.to_string())?;
            let mut connection = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let mut cursor = 0u64;
            let mut removed = 0u64;
            loop {
                let (next, names): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{location}*"))
                    .arg("COUNT")
                    .arg(10_000)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| e.to_string())?;
                if !names.is_empty() {
                    let _: u64 = redis::cmd("UNLINK")
                        .arg(&names)
                        .query_async(&mut connection)
                        .await
                        .map_err(|e| e.to_string())?;
                    removed += names.len() as u64;
                }
                cursor = next;
                if cursor == 0 {
                    return Ok(removed);
                }
            }
        }
        #[cfg(feature = "postgres")]
        Kind::Postgres => {
            use sqlx::Connection;
            let mut connection = sqlx::PgConnection::connect(&database_url())
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(&format!("DROP TABLE IF EXISTS {location}"))
                .execute(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            Ok(0)
        }
        #[cfg(not(feature = "postgres"))]
        Kind::Postgres => Ok(0),
    }
}

// ---------------------------------------------------------------------------------------------
// Latency histograms (constant memory, so that they do not show in the RSS samples)

/// Nanoseconds in log-linear buckets: exact below 64 ns, 32 buckets per power of two above
/// (about 3 % wide).
#[derive(Clone)]
struct Histogram(Vec<u64>);

const BUCKETS: usize = 64 + 58 * 32;

impl Default for Histogram {
    fn default() -> Self {
        Self(vec![0; BUCKETS])
    }
}

impl Histogram {
    fn bucket(ns: u64) -> usize {
        if ns < 64 {
            return ns as usize;
        }
        let exponent = 63 - ns.leading_zeros();
        let mantissa = (ns >> (exponent - 5)) & 31;
        64 + ((exponent - 6) * 32) as usize + mantissa as usize
    }

    /// The middle of bucket `b`.
    fn value(b: usize) -> u64 {
        if b < 64 {
            return b as u64;
        }
        let exponent = (b - 64) / 32 + 6;
        let mantissa = ((b - 64) % 32) as u64;
        ((32 + mantissa) << (exponent - 5)) + ((1u64 << (exponent - 5)) / 2)
    }

    fn record(&mut self, duration: Duration) {
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.0[Self::bucket(ns).min(BUCKETS - 1)] += 1;
    }

    fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    fn merge(&mut self, sparse: &[(u32, u64)]) {
        for &(bucket, count) in sparse {
            self.0[bucket as usize] += count;
        }
    }

    fn sparse(&self) -> Vec<(u32, u64)> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, &count)| count > 0)
            .map(|(bucket, &count)| (bucket as u32, count))
            .collect()
    }

    /// The `p` quantile, in ms (NaN when empty).
    fn quantile_ms(&self, p: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((total - 1) as f64 * p).round() as u64;
        let mut seen = 0;
        for (bucket, &count) in self.0.iter().enumerate() {
            seen += count;
            if seen > rank {
                return Self::value(bucket) as f64 / 1e6;
            }
        }
        f64::NAN
    }
}

/// `value` ms with `decimals` decimals, `—` for none (an empty histogram).
fn ms(value: f64, decimals: usize) -> String {
    if value.is_nan() {
        "—".to_owned()
    } else {
        format!("{value:.decimals$}")
    }
}

/// The histograms a worker keeps, by name.
const REFRESH_STORE: &str = "refresh: store operations (lock, load, lock check, save, release)";
const REFRESH_ACQUIRE: &str = "refresh: lock acquisition";
const REFRESH_RELEASE: &str = "refresh: lock release";
const REFRESH_SEEN: &str = "refresh: request delay minus token call";
const TOKEN_CALL: &str = "token call";
const OTHER_LOCK: &str = "run without token call: lock acquisition";
const OTHER_SEEN: &str = "run without token call: request delay";
const ADOPT_SEEN: &str = "adoption of another process's refresh: request delay";
const MEMORY_SEEN: &str = "token from memory: request delay";
const NAMES: [&str; 9] = [
    REFRESH_STORE,
    REFRESH_ACQUIRE,
    REFRESH_RELEASE,
    REFRESH_SEEN,
    TOKEN_CALL,
    OTHER_LOCK,
    OTHER_SEEN,
    ADOPT_SEEN,
    MEMORY_SEEN,
];

// ---------------------------------------------------------------------------------------------
// What a worker sees: store operations timed per key, the manager's events, requests.

/// One key's run as the worker saw it so far (between the request's start and its arrival at
/// the stub API).
#[derive(Default)]
struct Trace {
    /// Store lock acquisition, waiting included.
    acquire: Duration,
    /// Store lock release.
    release: Duration,
    /// Every store operation: lock, load, lock check, save, release.
    store: Duration,
    /// Saves alone.
    save: Duration,
    /// `Event::Refreshed::duration` (the token call and the save after it).
    refreshed: Option<Duration>,
    adopted: bool,
    locked: bool,
}

#[derive(Default)]
struct Stats {
    traces: Mutex<HashMap<TokenKey, Trace>>,
    histograms: Mutex<HashMap<&'static str, Histogram>>,
    requests: AtomicU64,
    failures: AtomicU64,
    errors: Mutex<Vec<String>>,
    bad_tokens: AtomicU64,
    refreshed: AtomicU64,
    adopted: AtomicU64,
    runs: AtomicU64,
    refresh_failed: AtomicU64,
    reauthorization: AtomicU64,
    persist_failed: AtomicU64,
}

impl Stats {
    fn new() -> Self {
        let stats = Self::default();
        {
            let mut histograms = stats.histograms.lock().unwrap();
            for name in NAMES {
                histograms.insert(name, Histogram::default());
            }
        }
        stats
    }

    fn trace(&self, key: &TokenKey, f: impl FnOnce(&mut Trace)) {
        f(self.traces.lock().unwrap().entry(key.clone()).or_default());
    }

    fn event(&self, event: &Event) {
        match event {
            Event::LockAcquired { key, .. } => {
                self.runs.fetch_add(1, Ordering::Relaxed);
                self.trace(key, |trace| trace.locked = true);
            }
            Event::Refreshed { key, duration, .. } => {
                self.refreshed.fetch_add(1, Ordering::Relaxed);
                self.trace(key, |trace| trace.refreshed = Some(*duration));
            }
            Event::Adopted { key, .. } => {
                self.adopted.fetch_add(1, Ordering::Relaxed);
                self.trace(key, |trace| trace.adopted = true);
            }
            Event::RefreshFailed { .. } => {
                self.refresh_failed.fetch_add(1, Ordering::Relaxed);
            }
            Event::ReauthorizationRequired { .. } => {
                self.reauthorization.fetch_add(1, Ordering::Relaxed);
            }
            Event::PersistFailed { .. } => {
                self.persist_failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// A request reached the stub API `delay` after it started: classifies it by what its run
    /// did.
    fn arrived(&self, key: &TokenKey, delay: Duration) {
        let trace = self.traces.lock().unwrap().remove(key).unwrap_or_default();
        let mut histograms = self.histograms.lock().unwrap();
        let mut record = |name: &'static str, value: Duration| {
            histograms.get_mut(name).expect("histogram").record(value);
        };
        if let Some(refreshed) = trace.refreshed {
            let call = refreshed.saturating_sub(trace.save);
            record(TOKEN_CALL, call);
            record(REFRESH_STORE, trace.store);
            record(REFRESH_ACQUIRE, trace.acquire);
            record(REFRESH_RELEASE, trace.release);
            record(REFRESH_SEEN, delay.saturating_sub(call));
        } else if trace.locked {
            record(OTHER_LOCK, trace.acquire);
            record(OTHER_SEEN, delay);
            if trace.adopted {
                record(ADOPT_SEEN, delay);
            }
        } else {
            record(MEMORY_SEEN, delay);
        }
    }

    fn failed(&self, error: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 5 {
            errors.push(error);
        }
    }
}

/// The store the workers' managers use: the shared store, each operation timed into the key's
/// [`Trace`]. The lock it hands out wraps the store's; its loss is seen through
/// [`HeldLock::is_held`] (asked before every token call), not through the loss flag the inner
/// lock carries, which a wrapper cannot reach.
struct TimedStore {
    inner: Arc<dyn TokenStore>,
    stats: Arc<Stats>,
}

#[async_trait::async_trait]
impl TokenStore for TimedStore {
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenRecord>, StoreError> {
        let start = Instant::now();
        let loaded = self.inner.load(key).await;
        let took = start.elapsed();
        self.stats.trace(key, |trace| trace.store += took);
        loaded
    }

    async fn save(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        expected: Option<&Revision>,
    ) -> Result<SaveOutcome, StoreError> {
        let start = Instant::now();
        let saved = self.inner.save(key, record, expected).await;
        let took = start.elapsed();
        self.stats.trace(key, |trace| {
            trace.store += took;
            trace.save += took;
        });
        saved
    }

    async fn lock(&self, key: &TokenKey) -> Result<StoreLock, StoreError> {
        let start = Instant::now();
        let lock = self.inner.lock(key).await?;
        let took = start.elapsed();
        self.stats.trace(key, |trace| {
            trace.store += took;
            trace.acquire += took;
        });
        Ok(StoreLock::held(TimedLock {
            inner: lock,
            key: key.clone(),
            stats: Arc::clone(&self.stats),
        }))
    }
}

struct TimedLock {
    inner: StoreLock,
    key: TokenKey,
    stats: Arc<Stats>,
}

#[async_trait::async_trait]
impl HeldLock for TimedLock {
    async fn is_held(&self) -> bool {
        let start = Instant::now();
        let held = self.inner.still_held().await;
        let took = start.elapsed();
        self.stats.trace(&self.key, |trace| trace.store += took);
        held
    }

    async fn release(self: Box<Self>) {
        let start = Instant::now();
        self.inner.release().await;
        let took = start.elapsed();
        self.stats.trace(&self.key, |trace| {
            trace.store += took;
            trace.release += took;
        });
    }
}

/// When a request started, and its key's number.
#[derive(Clone, Copy)]
struct Started(Instant, usize);

/// The stub API: answers 200 to the key's own, unexpired access token (401 `invalid_token`
/// otherwise, counted), and records how long the request took to get here.
struct FleetApi {
    plan: Plan,
    stats: Arc<Stats>,
}

impl FleetApi {
    fn valid(&self, request: &reqwest::Request, k: usize) -> bool {
        let token = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .and_then(|token| fleet_server::parse("at", token));
        match token {
            Some((key, generation)) if key == k => {
                generation > 0
                    || match Plan::group(k) {
                        Group::Expired => false,
                        Group::Lasting => true,
                        Group::Held | Group::Cold => SystemTime::now() < self.plan.expires_at(k),
                    }
            }
            _ => false,
        }
    }
}

#[async_trait::async_trait]
impl Middleware for FleetApi {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let Started(started, k) = *extensions.get::<Started>().expect("start time");
        let delay = started.elapsed();
        if let Some(key) = extensions.get::<TokenKey>() {
            self.stats.arrived(key, delay);
        }
        if self.valid(&request, k) {
            return Ok(reqwest::Response::from(http::Response::new("")));
        }
        self.stats.bad_tokens.fetch_add(1, Ordering::Relaxed);
        let response = http::Response::builder()
            .status(401)
            .header(
                http::header::WWW_AUTHENTICATE,
                r#"Bearer error="invalid_token""#,
            )
            .body("")
            .expect("response");
        Ok(reqwest::Response::from(response))
    }
}

// ---------------------------------------------------------------------------------------------
// Worker processes

/// (percent of keys touched, RSS bytes, keys held in memory, live heap bytes).
type RssSample = (u32, u64, u64, i64);

#[derive(Serialize, Deserialize, Default)]
struct Report {
    requests: u64,
    failures: u64,
    errors: Vec<String>,
    bad_tokens: u64,
    refreshed: u64,
    adopted: u64,
    runs: u64,
    refresh_failed: u64,
    reauthorization: u64,
    persist_failed: u64,
    keys_seen: u64,
    rss: Vec<RssSample>,
    /// How late the worker sent a request at worst, and its last request after the epoch.
    max_lag_ms: u64,
    run_ms: u64,
    histograms: Vec<(String, Vec<(u32, u64)>)>,
}

#[derive(Serialize, Deserialize, Default)]
struct MemoryReport {
    keys: u64,
    held: u64,
    live_bytes: i64,
    rss_before: u64,
    rss_after: u64,
    failures: u64,
    millis: u64,
}

/// Sends one request for key `k` through `chain`, timed from now.
async fn send_for_key(
    chain: &ClientWithMiddleware,
    url: reqwest::Url,
    k: usize,
) -> reqwest_middleware::Result<reqwest::Response> {
    chain
        .get(url)
        .with_extension(key_name(k))
        .with_extension(Started(Instant::now(), k))
        .send()
        .await
}

/// A worker's client: the token middleware in front of the stub API.
fn fleet_chain(manager: &TokenManager, plan: Plan, stats: &Arc<Stats>) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(manager.middleware())
        .with(FleetApi {
            plan,
            stats: Arc::clone(stats),
        })
        .build()
}

struct WorkerSettings {
    plan: Plan,
    index: usize,
    kind: Kind,
    location: String,
    token_url: String,
    idle: Duration,
    max_keys: usize,
    in_flight: usize,
    pool: u32,
}

impl WorkerSettings {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
        Self {
            plan: Plan::decode(&var("RTR_BENCH_FLEET_PLAN")),
            index: var(crate::workers::INDEX_ENV).parse().expect("index"),
            kind: if var("RTR_BENCH_FLEET_STORE") == "redis" {
                Kind::Redis
            } else {
                Kind::Postgres
            },
            location: var("RTR_BENCH_LOCATION"),
            token_url: var("RTR_BENCH_URL"),
            idle: Duration::from_millis(var("RTR_BENCH_FLEET_IDLE_MS").parse().expect("idle")),
            max_keys: var("RTR_BENCH_FLEET_MAX_KEYS").parse().expect("max keys"),
            in_flight: var("RTR_BENCH_FLEET_IN_FLIGHT").parse().expect("in flight"),
            pool: var("RTR_BENCH_FLEET_POOL").parse().expect("pool"),
        }
    }
}

/// A fleet worker: runs its share of the schedule, prints `fleet: <report>`, then answers
/// `memory <keys>` lines with `memory: <report>` until `exit` or end of input.
pub fn worker() {
    // The counting allocator follows the live heap for the whole run, to tell a growing heap
    // from an allocator that keeps freed pages.
    crate::COUNTING.store(true, Ordering::SeqCst);
    let settings = WorkerSettings::from_env();
    // One thread per worker: the processes are the parallelism, and a second runtime thread
    // per process only adds wake-ups between threads (futex calls) on a machine this small.
    let runtime = crate::current_thread();
    let stats = Arc::new(Stats::new());
    let shared = runtime
        .block_on(open_store(settings.kind, &settings.location, settings.pool))
        .expect("store");
    let hook_stats = Arc::clone(&stats);
    let mut builder = TokenManager::builder(grant(&settings.token_url))
        .allow_origin(stub::ORIGIN)
        .expect("origin")
        .leeway(LEEWAY)
        .evict_idle_keys(Some(settings.idle))
        .on_event(move |event| hook_stats.event(event))
        .store(TimedStore {
            inner: Arc::clone(&shared),
            stats: Arc::clone(&stats),
        });
    if settings.max_keys > 0 {
        builder = builder.max_keys(settings.max_keys);
    }
    let manager = builder.build();
    let chain = fleet_chain(&manager, settings.plan, &stats);
    let report = runtime.block_on(run(&settings, &manager, &chain, &stats));
    println!("fleet: {}", serde_json::to_string(&report).expect("report"));
    drop(chain);
    drop(manager);
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
        let command: Vec<&str> = line.split_whitespace().collect();
        if let ["memory", keys] = command[..] {
            let keys: usize = keys.parse().expect("keys");
            let report = memory(&runtime, &settings, &shared, keys);
            println!(
                "memory: {}",
                serde_json::to_string(&report).expect("report")
            );
        } else {
            break;
        }
        line.clear();
    }
}

/// The worker's share of the schedule.
async fn run(
    settings: &WorkerSettings,
    manager: &TokenManager,
    chain: &ClientWithMiddleware,
    stats: &Arc<Stats>,
) -> Report {
    let plan = settings.plan;
    let requests = plan.requests(settings.index);
    let keys_seen = requests.iter().filter(|(_, _, first)| *first).count() as u64;
    let url: reqwest::Url = format!("{}/api/item", stub::ORIGIN).parse().expect("url");
    // The epoch as an instant of this process.
    let (now, now_ms) = (Instant::now(), unix_ms(SystemTime::now()));
    let epoch = if plan.epoch_ms >= now_ms {
        now + Duration::from_millis(plan.epoch_ms - now_ms)
    } else {
        now.checked_sub(Duration::from_millis(now_ms - plan.epoch_ms))
            .unwrap_or(now)
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(settings.in_flight));
    let mut rss = Vec::new();
    let mut next_sample = 0;
    let mut touched = 0u64;
    let mut max_lag = Duration::ZERO;
    for &(at_ms, k, first) in &requests {
        // Sent in ticks of 10 ms, never before the moment: one timer wake-up per tick.
        let at = epoch + Duration::from_millis(at_ms.div_ceil(TICK_MS) * TICK_MS);
        if at > Instant::now() {
            tokio::time::sleep_until(at.into()).await;
        }
        let permit = Arc::clone(&permits).acquire_owned().await.expect("permit");
        max_lag = max_lag.max(Instant::now().saturating_duration_since(at));
        if first {
            touched += 1;
            if next_sample < SAMPLES.len() - 1
                && touched * 100 >= u64::from(SAMPLES[next_sample]) * keys_seen
            {
                rss.push((
                    SAMPLES[next_sample],
                    rss_bytes(),
                    manager.cached_keys() as u64,
                    crate::LIVE.load(Ordering::Relaxed),
                ));
                if settings.index == 0 {
                    eprintln!(
                        "  worker 0: {:>3} % of its keys touched, RSS {:.1} MB, live heap {:.1} MB, \
                         {} keys held, {:.1} s late at worst",
                        SAMPLES[next_sample],
                        rss_bytes() as f64 / 1e6,
                        crate::LIVE.load(Ordering::Relaxed) as f64 / 1e6,
                        manager.cached_keys(),
                        max_lag.as_secs_f64()
                    );
                }
                next_sample += 1;
            }
        }
        let (chain, url, stats) = (chain.clone(), url.clone(), Arc::clone(stats));
        tokio::spawn(async move {
            let k = k as usize;
            let sent = send_for_key(&chain, url, k).await;
            stats.requests.fetch_add(1, Ordering::Relaxed);
            match sent {
                Ok(response) if response.status() == 200 => {}
                Ok(response) => stats.failed(format!("user-{k}: status {}", response.status())),
                Err(error) => stats.failed(format!("user-{k}: {error}")),
            }
            drop(permit);
        });
    }
    let all = u32::try_from(settings.in_flight).expect("in flight");
    let _all = permits.acquire_many(all).await.expect("permits");
    let run_ms = epoch.elapsed().as_millis() as u64;
    rss.push((
        100,
        rss_bytes(),
        manager.cached_keys() as u64,
        crate::LIVE.load(Ordering::Relaxed),
    ));
    let histograms = stats
        .histograms
        .lock()
        .unwrap()
        .iter()
        .map(|(name, histogram)| ((*name).to_owned(), histogram.sparse()))
        .collect();
    let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
    Report {
        requests: load(&stats.requests),
        failures: load(&stats.failures),
        errors: stats.errors.lock().unwrap().clone(),
        bad_tokens: load(&stats.bad_tokens),
        refreshed: load(&stats.refreshed),
        adopted: load(&stats.adopted),
        runs: load(&stats.runs),
        refresh_failed: load(&stats.refresh_failed),
        reauthorization: load(&stats.reauthorization),
        persist_failed: load(&stats.persist_failed),
        keys_seen,
        rss,
        max_lag_ms: max_lag.as_millis() as u64,
        run_ms,
        histograms,
    }
}

/// Memory per idle key: a manager without eviction on the shared store (untimed), loading the
/// first `keys` keys of this worker's share through the same stub API, counted by the
/// counting allocator.
fn memory(
    runtime: &tokio::runtime::Runtime,
    settings: &WorkerSettings,
    store: &Arc<dyn TokenStore>,
    keys: usize,
) -> MemoryReport {
    let stats = Arc::new(Stats::new());
    let manager = TokenManager::builder(grant(&settings.token_url))
        .allow_origin(stub::ORIGIN)
        .expect("origin")
        .leeway(LEEWAY)
        .evict_idle_keys(None)
        .store(Arc::clone(store))
        .build();
    let chain = fleet_chain(&manager, settings.plan, &stats);
    let plan = settings.plan;
    let share: Vec<usize> = (0..plan.keys)
        .filter(|&k| plan.primary(k) == settings.index)
        .take(keys)
        .collect();
    let url: reqwest::Url = format!("{}/api/item", stub::ORIGIN).parse().expect("url");
    // Warm up the client and the store connection outside the count.
    runtime.block_on(async {
        let _ = chain
            .get(url.clone())
            .with_extension(key_name(plan.keys + 1))
            .with_extension(Started(Instant::now(), plan.keys + 1))
            .send()
            .await;
    });
    let rss_before = rss_bytes();
    let start = Instant::now();
    let (failures, live_bytes, _) = counted(|| {
        runtime.block_on(async {
            futures::stream::iter(share.iter().copied())
                .map(|k| {
                    let (chain, url) = (chain.clone(), url.clone());
                    tokio::spawn(async move {
                        let sent = send_for_key(&chain, url, k).await;
                        u64::from(!matches!(sent, Ok(response) if response.status() == 200))
                    })
                })
                .buffer_unordered(settings.in_flight)
                .fold(0, |failures, failed| async move {
                    failures + failed.unwrap_or(1)
                })
                .await
        })
    });
    MemoryReport {
        keys: share.len() as u64,
        held: manager.cached_keys() as u64,
        live_bytes,
        rss_before,
        rss_after: rss_bytes(),
        failures,
        millis: start.elapsed().as_millis() as u64,
    }
}

// ---------------------------------------------------------------------------------------------
// The parent

/// What one store's run is given.
struct Setup {
    kind: Kind,
    keys: usize,
    processes: usize,
    rate: f64,
    in_flight: usize,
    pool: u32,
    seed_concurrency: usize,
    note: &'static str,
}

pub fn fleet(config: &Config, rows: &mut Vec<Row>) {
    let processes = config.fleet_processes.max(2);
    let redis = Setup {
        kind: Kind::Redis,
        keys: config.fleet_keys,
        processes,
        rate: config.fleet_rate,
        in_flight: config.fleet_in_flight,
        pool: 1,
        seed_concurrency: 512,
        note: "",
    };
    run_store(config, &redis, rows);
    let postgres = Setup {
        kind: Kind::Postgres,
        keys: config.fleet_pg_keys,
        processes,
        rate: config.fleet_pg_rate,
        in_flight: config.fleet_pg_in_flight,
        pool: 2,
        seed_concurrency: 16,
        note: " (not 1,000,000 keys: every store lock opens a PostgreSQL connection, so this \
               machine sustains tens of keys per second)",
    };
    run_store(config, &postgres, rows);
}

fn run_store(config: &Config, setup: &Setup, rows: &mut Vec<Row>) {
    let kind = setup.kind;
    if setup.keys < 10 * setup.processes || setup.rate <= 0.0 {
        return;
    }
    let name = format!(
        "6. fleet, {} keys, {} processes, {}",
        setup.keys,
        setup.processes,
        kind.name()
    );
    eprintln!("  {name}");
    let runtime = multi_thread();
    let unique = format!(
        "{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let location = match kind {
        Kind::Redis => format!("rtr-bench-fleet:{unique}:"),
        Kind::Postgres => format!("rtr_bench_fleet_{unique}"),
    };
    let store = match runtime.block_on(open_store(kind, &location, 8)) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("  {}: skipped ({error})", kind.name());
            rows.push(row(name, format!("skipped: {error}"), "—", "—", None));
            return;
        }
    };
    let server = FleetServer::start(setup.keys, config.token_delay);
    let binding = binding(&server.token_url());

    // Seeding: the groups whose expiry does not depend on the epoch first, timed, to place
    // the epoch after the rest is seeded.
    let started = Instant::now();
    let mut plan = Plan {
        keys: setup.keys,
        processes: setup.processes,
        base_ms: unix_ms(SystemTime::now()),
        epoch_ms: 0,
        window_ms: (setup.keys as f64 / setup.rate * 1000.0) as u64,
        gap_ms: config.fleet_gap.as_millis() as u64,
    };
    let seed = |plan: Plan, keys: Vec<usize>| {
        let (store, binding) = (Arc::clone(&store), binding.clone());
        runtime.block_on(async move {
            futures::stream::iter(keys)
                .map(|k| {
                    let (store, record) = (Arc::clone(&store), plan.seeded(k, &binding));
                    tokio::spawn(async move { store.save(&key_name(k), &record, None).await })
                })
                .buffer_unordered(setup.seed_concurrency)
                .for_each(|saved| async move {
                    assert_eq!(saved.expect("task").expect("seed"), SaveOutcome::Saved);
                })
                .await;
        });
    };
    let (fixed, expiring): (Vec<usize>, Vec<usize>) =
        (0..setup.keys).partition(|&k| matches!(Plan::group(k), Group::Expired | Group::Lasting));
    let remaining = expiring.len();
    seed(plan, fixed);
    let rate = (setup.keys - remaining) as f64 / started.elapsed().as_secs_f64();
    let estimate = Duration::from_secs_f64(remaining as f64 / rate * 1.3 + 3.0);
    plan.epoch_ms = unix_ms(SystemTime::now() + estimate);
    seed(plan, expiring);
    let seeding = started.elapsed();
    eprintln!(
        "  seeded {} keys in {:.1} s ({:.0} keys/s)",
        setup.keys,
        seeding.as_secs_f64(),
        setup.keys as f64 / seeding.as_secs_f64()
    );

    // The lock alone, uncontended: lock, load, release (a key no worker refreshes).
    let mut lock_times: Vec<f64> = runtime.block_on(async {
        let key = key_name(1);
        let mut times = Vec::new();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let start = Instant::now();
            let lock = store.lock(&key).await.expect("lock");
            store.load(&key).await.expect("load");
            lock.release().await;
            times.push(start.elapsed().as_secs_f64());
        }
        times
    });
    let uncontended = median(&mut lock_times);

    // Start the workers a moment before the epoch (they wait for it).
    let now_ms = unix_ms(SystemTime::now());
    if plan.epoch_ms > now_ms + 1000 {
        std::thread::sleep(Duration::from_millis(plan.epoch_ms - now_ms - 1000));
    }
    let late = unix_ms(SystemTime::now()).saturating_sub(plan.epoch_ms);
    eprintln!(
        "  {} workers, window {:.0} s, {} ms late at the start",
        setup.processes,
        plan.window_ms as f64 / 1e3,
        late
    );
    let mut workers = Workers::spawn(
        setup.processes,
        &[
            (crate::WORKER_ENV, WORKER_KIND.to_owned()),
            ("RTR_BENCH_FLEET_PLAN", plan.encode()),
            ("RTR_BENCH_FLEET_STORE", kind.name().to_owned()),
            ("RTR_BENCH_LOCATION", location.clone()),
            ("RTR_BENCH_URL", server.token_url()),
            (
                "RTR_BENCH_FLEET_IDLE_MS",
                config.fleet_idle.as_millis().to_string(),
            ),
            (
                "RTR_BENCH_FLEET_MAX_KEYS",
                config.fleet_max_keys.to_string(),
            ),
            ("RTR_BENCH_FLEET_IN_FLIGHT", setup.in_flight.to_string()),
            ("RTR_BENCH_FLEET_POOL", setup.pool.to_string()),
        ],
    );
    let reports: Vec<Report> = (0..setup.processes)
        .map(|index| serde_json::from_str(&workers.read(index, "fleet: ")).expect("report"))
        .collect();
    let run_time = started.elapsed() - seeding;
    let memory_keys = config
        .fleet_memory_keys
        .min(setup.keys / setup.processes)
        .max(1);
    workers.send(0, &format!("memory {memory_keys}"));
    let memory: MemoryReport =
        serde_json::from_str(&workers.read(0, "memory: ")).expect("memory report");
    workers.finish();

    // The token endpoint's view: one call per key per lifetime crossed.
    let crossed: u64 = (0..setup.keys).map(|k| u64::from(Plan::crossings(k))).sum();
    let mismatched: Vec<usize> = (0..setup.keys)
        .filter(|&k| server.calls(k) != Plan::crossings(k))
        .collect();
    let calls = server.total_calls();
    let reuse = server.reuse();
    let malformed = server.malformed();
    match runtime.block_on(clean_up(kind, &location)) {
        Ok(removed) if kind == Kind::Redis => {
            eprintln!("  cleaned up ({removed} Redis keys removed)");
        }
        Ok(_) => eprintln!("  cleaned up (table {location} dropped)"),
        Err(error) => eprintln!("  clean-up failed: {error}"),
    }
    let total = |f: &dyn Fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    let failures = total(&|r| r.failures);
    let bad_tokens = total(&|r| r.bad_tokens);
    let requests = total(&|r| r.requests);
    let refreshed = total(&|r| r.refreshed);
    let adopted = total(&|r| r.adopted);
    let runs = total(&|r| r.runs);
    let failed_events = total(&|r| r.refresh_failed + r.reauthorization + r.persist_failed);
    let max_lag = reports.iter().map(|r| r.max_lag_ms).max().unwrap_or(0);
    for (index, report) in reports.iter().enumerate() {
        for error in &report.errors {
            eprintln!("  worker {index}: {error}");
        }
    }
    eprintln!(
        "  {calls} token calls for {crossed} lifetimes crossed; keys off by any: {} (first: {:?}); \
         reuse {reuse}, malformed {malformed}; requests {requests}, failures {failures}, bad tokens \
         {bad_tokens}; Refreshed events {refreshed}, Adopted {adopted}, runs {runs}, failure \
         events {failed_events}; worst lag {max_lag} ms; run {:.0} s",
        mismatched.len(),
        mismatched.iter().take(5).collect::<Vec<_>>(),
        run_time.as_secs_f64()
    );
    let mut histograms: HashMap<String, Histogram> = HashMap::new();
    for report in &reports {
        for (name, sparse) in &report.histograms {
            histograms.entry(name.clone()).or_default().merge(sparse);
        }
    }
    let quantiles = |name: &str| {
        let histogram = histograms.get(name).cloned().unwrap_or_default();
        (
            histogram.quantile_ms(0.5),
            histogram.quantile_ms(0.99),
            histogram.count(),
        )
    };
    for name in NAMES {
        let (p50, p99, count) = quantiles(name);
        if count > 0 {
            eprintln!("  {name}: {count} × p50 {p50:.2} ms, p99 {p99:.2} ms");
        }
    }

    let exact = calls == crossed
        && mismatched.is_empty()
        && failures == 0
        && bad_tokens == 0
        && reuse == 0
        && malformed == 0;
    rows.push(row(
        format!(
            "{name}: token calls / lifetimes crossed / failures{}",
            setup.note
        ),
        format!(
            "{requests} requests over {:.0} s (seeding {:.0} s before), each key requested by 2 \
             processes; keys with a call count ≠ their crossings: {}; reuse detections {reuse}; \
             expired or foreign tokens sent {bad_tokens}; {adopted} adoptions of another \
             process's refresh; worst lag behind the schedule {:.1} s",
            run_time.as_secs_f64(),
            seeding.as_secs_f64(),
            mismatched.len(),
            max_lag as f64 / 1e3
        ),
        format!("{calls} / {crossed} / {failures}"),
        "equal / 0",
        Some(exact),
    ));
    let (store_p50, store_p99, refreshes) = quantiles(REFRESH_STORE);
    let (acquire_p50, acquire_p99, _) = quantiles(REFRESH_ACQUIRE);
    let (release_p50, release_p99, _) = quantiles(REFRESH_RELEASE);
    let (seen_p50, seen_p99, _) = quantiles(REFRESH_SEEN);
    let (call_p50, call_p99, _) = quantiles(TOKEN_CALL);
    rows.push(row(
        format!("{name}: added latency of the store per refresh, p50 / p99"),
        format!(
            "{refreshes} refreshes: lock acquisition {} / {} ms, release {} / {} ms; all store \
             operations (lock, load, lock check, save, release) {} / {} ms; the refreshing \
             request's delay minus the token call {} / {} ms; token call {} / {} ms (endpoint \
             delay {} ms); uncontended lock + load + release {:.2} ms",
            ms(acquire_p50, 2),
            ms(acquire_p99, 2),
            ms(release_p50, 2),
            ms(release_p99, 2),
            ms(store_p50, 2),
            ms(store_p99, 2),
            ms(seen_p50, 2),
            ms(seen_p99, 2),
            ms(call_p50, 1),
            ms(call_p99, 1),
            config.token_delay.as_millis(),
            uncontended * 1e3,
        ),
        format!("{:.3} / {:.3}", store_p50 / call_p50, store_p99 / call_p50),
        "— (÷ token call p50)",
        None,
    ));
    let (other_p50, other_p99, others) = quantiles(OTHER_LOCK);
    let (adopt_p50, adopt_p99, adoptions) = quantiles(ADOPT_SEEN);
    rows.push(row(
        format!("{name}: runs without a token call, p50 / p99"),
        format!(
            "{others} runs that took the lock and found valid tokens in the store (a key \
             loaded, or the process that lost the race for a due key, which waits for the \
             other's refresh): lock acquisition, waiting included, {} / {} ms; {adoptions} of \
             them held the due token in memory and adopted the other process's refresh: request \
             delay {} / {} ms",
            ms(other_p50, 2),
            ms(other_p99, 2),
            ms(adopt_p50, 1),
            ms(adopt_p99, 1)
        ),
        format!("{:.3}", other_p50 / call_p50),
        "— (÷ token call p50)",
        None,
    ));
    let per_key = memory.live_bytes as f64 / memory.keys as f64;
    let rss_per_key =
        memory.rss_after.saturating_sub(memory.rss_before) as f64 / memory.keys as f64;
    let token_bytes = 2 * 43;
    rows.push(row(
        format!("{name}: memory per idle key in a worker"),
        format!(
            "{per_key:.0} B/key incl. {token_bytes} B of token strings (counting allocator: \
             {} keys loaded from the store by a manager without eviction, {} held besides its \
             warm-up key, {} failed); RSS +{rss_per_key:.0} B/key",
            memory.keys,
            memory.held.saturating_sub(1),
            memory.failures
        ),
        format!(
            "{:.0} B beyond the tokens",
            per_key - f64::from(token_bytes)
        ),
        "≤ 1024 B",
        // The manager also holds the key its warm-up request used.
        Some(per_key - f64::from(token_bytes) <= 1024.0 && memory.held == memory.keys + 1),
    ));
    // RSS: the median worker at each point, and the worst ratio last / first.
    let mut at_points = Vec::new();
    for point in 0..SAMPLES.len() {
        let median_at = |f: &dyn Fn(&RssSample) -> f64| {
            let mut values: Vec<f64> = reports
                .iter()
                .filter_map(|r| r.rss.get(point).map(f))
                .collect();
            (!values.is_empty()).then(|| median(&mut values))
        };
        if let (Some(rss), Some(held), Some(live)) = (
            median_at(&|s| s.1 as f64),
            median_at(&|s| s.2 as f64),
            median_at(&|s| s.3 as f64),
        ) {
            at_points.push((rss, held, live));
        }
    }
    let worst_live = reports
        .iter()
        .filter_map(|r| Some(r.rss.last()?.3 as f64 / r.rss.first()?.3 as f64))
        .fold(0.0, f64::max);
    let worst = reports
        .iter()
        .filter_map(|r| {
            let (first, last) = (r.rss.first()?.1, r.rss.last()?.1);
            Some(last as f64 / first as f64)
        })
        .fold(0.0, f64::max);
    let seen = reports.iter().map(|r| r.keys_seen).max().unwrap_or(0);
    let eviction = if config.fleet_max_keys > 0 {
        format!(
            "`evict_idle_keys({:?})`, `max_keys({})`",
            config.fleet_idle, config.fleet_max_keys
        )
    } else {
        format!("`evict_idle_keys({:?})`", config.fleet_idle)
    };
    rows.push(row(
        format!("{name}: RSS over time, idle-key eviction on"),
        format!(
            "{eviction}; median worker at {} % of its {seen} keys touched: RSS {} MB, live heap \
             (counting allocator) {} MB, keys held {}; worst worker's live heap last ÷ first \
             {worst_live:.2}; without eviction the {seen} keys would add ≈ {:.0} MB (RSS per \
             key above)",
            SAMPLES.map(|s| s.to_string()).join(" / "),
            at_points
                .iter()
                .map(|(rss, _, _)| format!("{:.1}", rss / 1e6))
                .collect::<Vec<_>>()
                .join(" / "),
            at_points
                .iter()
                .map(|(_, _, live)| format!("{:.1}", live / 1e6))
                .collect::<Vec<_>>()
                .join(" / "),
            at_points
                .iter()
                .map(|(_, held, _)| format!("{held:.0}"))
                .collect::<Vec<_>>()
                .join(" / "),
            seen as f64 * rss_per_key / 1e6
        ),
        format!("{worst:.2} (worst worker, last ÷ first)"),
        "≤ 1.10 (flat)",
        Some(worst <= 1.10),
    ));
}
