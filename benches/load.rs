//! scripts/bench.sh   (= cargo bench --bench load --features file,redis,dpop)
//!
//! The loopback load program: everything it compares is measured in the same run, and it
//! prints a markdown table of ratios at the end. It talks to 127.0.0.1 only and bounds every
//! request count; sizes come from environment variables (see `Config`).
//!
//! 1. hot path: a middleware chain ending in a stub (no I/O) with and without the token
//!    middleware, one thread and every core, plus allocations per request;
//! 2. end to end: an in-process hyper server hit by a plain `reqwest-middleware` client and by
//!    the same client with the token middleware, in interleaved batches (ABBA);
//! 3. storms: concurrent requests on a valid, an expired and a rejected (401) token;
//! 4. many users: memory per resident key (counting allocator) and lookup time at 1,000,
//!    100,000 and 1,000,000 keys, against a bare `HashMap` floor;
//! 5. across processes: the file and Redis stores under a storm from several worker processes
//!    (this binary re-executed, driven through pipes);
//! 6. fleet (only when `RTR_BENCH_SECTIONS` names it): a million keys expiring at staggered
//!    moments, shared by eight processes through Redis (and PostgreSQL with the `postgres`
//!    feature): token calls against lifetimes crossed, the store's added latency per refresh,
//!    memory per key and RSS over time with idle-key eviction (`support/fleet.rs`).

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/fleet_server.rs"]
mod fleet_server;
#[path = "support/server.rs"]
mod server;
#[path = "support/stub.rs"]
mod stub;
#[path = "support/workers.rs"]
mod workers;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::join_all;
use http::Extensions;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_token_refresh::{
    AccessToken, DpopAlgorithm, DpopKey, EncryptionKey, Event, FileTokenStore, KeyRing,
    MemoryTokenStore, RedisTokenStore, RefreshToken, RefreshTokenGrant, SaveOutcome, TokenKey,
    TokenManager, TokenManagerBuilder, TokenSet, TokenStore,
};

use server::Server;
use workers::Workers;

// ---------------------------------------------------------------------------------------------
// A counting allocator: live bytes and allocation count while `COUNTING` is on.

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        System.dealloc(ptr, layout);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` with counting on; returns its result, the live-byte delta and the allocations.
fn counted<T>(f: impl FnOnce() -> T) -> (T, i64, u64) {
    let (live, allocations) = (
        LIVE.load(Ordering::SeqCst),
        ALLOCATIONS.load(Ordering::SeqCst),
    );
    COUNTING.store(true, Ordering::SeqCst);
    let result = f();
    COUNTING.store(false, Ordering::SeqCst);
    (
        result,
        LIVE.load(Ordering::SeqCst) - live,
        ALLOCATIONS.load(Ordering::SeqCst) - allocations,
    )
}

// ---------------------------------------------------------------------------------------------
// Configuration

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

struct Config {
    /// Requests per thread per hot-path sample.
    hot_iters: u64,
    /// End-to-end: requests per batch, batches per client (ABBA order), concurrency.
    e2e_batch: usize,
    e2e_rounds: usize,
    e2e_concurrency: usize,
    /// Storm size and repetitions.
    storm: usize,
    storm_rounds: usize,
    /// Simulated latency of the token endpoint.
    token_delay: Duration,
    /// Resident keys for the many-users measurement, and the larger size also measured.
    keys: usize,
    keys_large: usize,
    /// Cross-process: worker processes, concurrent requests per worker, rounds.
    processes: usize,
    process_concurrency: usize,
    process_rounds: usize,
    /// Fleet (section 6): keys in Redis and in PostgreSQL, worker processes, keys per second
    /// scheduled (Redis, PostgreSQL), requests in flight per worker (Redis, PostgreSQL), the
    /// pause between a key's two moments, the workers' idle-key eviction and key limit (0:
    /// none), keys loaded for the memory-per-key measurement.
    fleet_keys: usize,
    fleet_pg_keys: usize,
    fleet_processes: usize,
    fleet_rate: f64,
    fleet_pg_rate: f64,
    fleet_in_flight: usize,
    fleet_pg_in_flight: usize,
    fleet_gap: Duration,
    fleet_idle: Duration,
    fleet_max_keys: usize,
    fleet_memory_keys: usize,
}

impl Config {
    fn from_env() -> Self {
        Self {
            hot_iters: env_or("RTR_BENCH_HOT_ITERS", 200_000),
            e2e_batch: env_or("RTR_BENCH_E2E_BATCH", 1_000),
            e2e_rounds: env_or("RTR_BENCH_E2E_ROUNDS", 40),
            e2e_concurrency: env_or("RTR_BENCH_E2E_CONCURRENCY", 32),
            storm: env_or("RTR_BENCH_STORM", 10_000),
            storm_rounds: env_or("RTR_BENCH_STORM_ROUNDS", 9),
            token_delay: Duration::from_millis(env_or("RTR_BENCH_TOKEN_DELAY_MS", 20)),
            keys: env_or("RTR_BENCH_KEYS", 100_000),
            keys_large: env_or("RTR_BENCH_KEYS_LARGE", 1_000_000),
            processes: env_or("RTR_BENCH_PROCESSES", 4),
            process_concurrency: env_or("RTR_BENCH_PROCESS_CONCURRENCY", 200),
            process_rounds: env_or("RTR_BENCH_PROCESS_ROUNDS", 3),
            fleet_keys: env_or("RTR_BENCH_FLEET_KEYS", 1_000_000),
            fleet_pg_keys: env_or("RTR_BENCH_FLEET_PG_KEYS", 5_000),
            fleet_processes: env_or("RTR_BENCH_FLEET_PROCESSES", 8),
            fleet_rate: env_or("RTR_BENCH_FLEET_RATE", 4_500.0),
            fleet_pg_rate: env_or("RTR_BENCH_FLEET_PG_RATE", 50.0),
            fleet_in_flight: env_or("RTR_BENCH_FLEET_IN_FLIGHT", 256),
            fleet_pg_in_flight: env_or("RTR_BENCH_FLEET_PG_IN_FLIGHT", 4),
            fleet_gap: Duration::from_millis(env_or("RTR_BENCH_FLEET_GAP_MS", 2_000)),
            fleet_idle: Duration::from_millis(env_or("RTR_BENCH_FLEET_IDLE_MS", 5_000)),
            fleet_max_keys: env_or("RTR_BENCH_FLEET_MAX_KEYS", 0),
            fleet_memory_keys: env_or("RTR_BENCH_FLEET_MEMORY_KEYS", 50_000),
        }
    }
}

/// One line of the final table.
struct Row {
    name: String,
    measured: String,
    ratio: String,
    target: String,
    pass: Option<bool>,
}

fn row(
    name: impl Into<String>,
    measured: impl Into<String>,
    ratio: impl Into<String>,
    target: impl Into<String>,
    pass: Option<bool>,
) -> Row {
    Row {
        name: name.into(),
        measured: measured.into(),
        ratio: ratio.into(),
        target: target.into(),
        pass,
    }
}

fn main() {
    if let Ok(kind) = std::env::var(WORKER_ENV) {
        if kind == fleet::WORKER_KIND {
            fleet::worker();
        } else {
            worker(&kind);
        }
        return;
    }
    if let Ok(variant) = std::env::var(INSTRUCTIONS_ENV) {
        instructions_run(&variant);
        return;
    }
    let config = Config::from_env();
    // RTR_BENCH_SECTIONS=124 runs sections 1, 2 and 4 only; section 6 (minutes, a million
    // records in Redis) runs only when named.
    let sections: String = env_or("RTR_BENCH_SECTIONS", "12345".to_owned());
    let mut rows = Vec::new();
    let server = Server::start(config.token_delay);
    if sections.contains('1') {
        eprintln!("== 1. hot path");
        hot_path(&config, &mut rows);
    }
    if sections.contains('2') {
        eprintln!("== 2. end to end");
        end_to_end(&config, &server, &mut rows);
    }
    if sections.contains('3') {
        eprintln!("== 3. storms");
        storms(&config, &server, &mut rows);
    }
    if sections.contains('4') {
        eprintln!("== 4. many users");
        many_users(&config, &mut rows);
    }
    if sections.contains('5') {
        eprintln!("== 5. across processes");
        across_processes(&config, &server, &mut rows);
    }
    if sections.contains('6') {
        eprintln!("== 6. fleet");
        fleet::fleet(&config, &mut rows);
    }
    print_table(&rows);
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| benchmark | measured (this run) | ratio | target | |");
    println!("|---|---|---|---|---|");
    for row in rows {
        let mark = match row.pass {
            Some(true) => "✓",
            Some(false) => "✗",
            None => "",
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            row.name, row.measured, row.ratio, row.target, mark
        );
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env_or("RTR_BENCH_CLIENT_THREADS", 2))
        .enable_all()
        .build()
        .expect("runtime")
}

fn opaque_tokens(n: usize, lifetime: Duration) -> TokenSet {
    // 43 characters: a 256-bit random token in base64url, a common opaque-token size.
    TokenSet::new(AccessToken::new(format!("{:a<43}", format!("at{n}-"))))
        .with_refresh_token(RefreshToken::new(format!("{:r<43}", format!("rt{n}-"))))
        .with_expires_in(lifetime)
}

/// The `Authorization` value the middleware sends for `tokens`, for clients that send it
/// themselves.
fn bearer(tokens: &TokenSet) -> http::HeaderValue {
    http::HeaderValue::try_from(format!("Bearer {}", tokens.access_token().secret()))
        .expect("header")
}

// ---------------------------------------------------------------------------------------------
// 1. Hot path

/// Mean time per request of `iters` requests on each of `threads` threads at once.
fn stub_ns_per_op(client: &ClientWithMiddleware, threads: usize, iters: u64) -> f64 {
    stub::mean_thread_time(client, threads, iters).as_nanos() as f64 / iters as f64
}

fn hot_path(config: &Config, rows: &mut Vec<Row>) {
    let manager = stub::manager();
    current_thread()
        .block_on(manager.set_tokens(
            &TokenKey::default(),
            opaque_tokens(1, Duration::from_secs(24 * 3600)),
        ))
        .expect("set tokens");
    let (plain, ours) = stub::chains(manager.middleware());
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);

    // Allocations per request, single thread.
    let runtime = current_thread();
    let request = stub::request();
    let mut allocations = [0u64; 2];
    for (slot, client) in [&plain, &ours].into_iter().enumerate() {
        runtime
            .block_on(client.execute(request.try_clone().unwrap()))
            .unwrap();
        let (_, _, count) = counted(|| {
            runtime.block_on(async {
                for _ in 0..1000 {
                    black_box(client.execute(request.try_clone().unwrap()).await.unwrap());
                }
            });
        });
        allocations[slot] = count;
    }
    let added_allocations = (allocations[1] as f64 - allocations[0] as f64) / 1000.0;

    // The replay copy: a do-nothing middleware, and the same one keeping a `try_clone` of
    // each request until the response is back (what ours does to be able to replay).
    let noop = ClientBuilder::new(reqwest::Client::new())
        .with(NoopMiddleware)
        .with(stub::Respond200)
        .build();
    let cloning = ClientBuilder::new(reqwest::Client::new())
        .with(CloningNoopMiddleware)
        .with(stub::Respond200)
        .build();
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        without.push(stub_ns_per_op(&noop, 1, config.hot_iters / 5));
        with.push(stub_ns_per_op(&cloning, 1, config.hot_iters / 5));
    }
    // Noise: how far apart two samples of the same chain are (the interquartile range).
    without.sort_by(f64::total_cmp);
    let noise = without[6] - without[2];
    let (without, with) = (median(&mut without), median(&mut with));
    rows.push(row(
        "1. replay copy (`Request::try_clone`), 1 thread, stub transport",
        format!(
            "+{:.0} ns/request ({without:.0} → {with:.0} ns) vs a noise of {noise:.0} ns \
             (interquartile range of the do-nothing chain)",
            with - without
        ),
        format!("{:.2}× the do-nothing chain", with / without),
        "—",
        None,
    ));
    dpop_rows(config, &ours, rows);

    for threads in [1, cores] {
        // Interleaved samples; the median of each.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            a.push(stub_ns_per_op(&plain, threads, config.hot_iters / 5));
            b.push(stub_ns_per_op(&ours, threads, config.hot_iters / 5));
        }
        let (a, b) = (median(&mut a), median(&mut b));
        eprintln!("  {threads} thread(s): plain chain {a:.0} ns/op, with middleware {b:.0} ns/op");
        let measured = if threads == 1 {
            format!(
                "+{:.0} ns/request ({:.0} → {:.0} ns), +{added_allocations:.1} allocations/request",
                b - a,
                a,
                b
            )
        } else {
            format!("+{:.0} ns/request ({:.0} → {:.0} ns)", b - a, a, b)
        };
        rows.push(row(
            format!("1. hot path, {threads} thread(s), stub transport"),
            measured,
            format!("{:.2}× the bare chain", b / a),
            "—",
            None,
        ));
    }
}

/// DPoP: every request carries a freshly signed proof. The same stub chain with a DPoP-bound
/// token (ES256, then EdDSA) against `bearer`, the chain with a bearer token, interleaved.
fn dpop_rows(config: &Config, bearer: &ClientWithMiddleware, rows: &mut Vec<Row>) {
    for algorithm in [DpopAlgorithm::Es256, DpopAlgorithm::EdDsa] {
        let manager = stub::manager();
        let key = DpopKey::generate(algorithm).expect("key");
        current_thread()
            .block_on(manager.set_tokens(
                &TokenKey::default(),
                opaque_tokens(1, Duration::from_secs(24 * 3600)).with_dpop_key(key),
            ))
            .expect("set tokens");
        let (_, dpop) = stub::chains(manager.middleware());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            a.push(stub_ns_per_op(bearer, 1, config.hot_iters / 20));
            b.push(stub_ns_per_op(&dpop, 1, config.hot_iters / 20));
        }
        let (a, b) = (median(&mut a), median(&mut b));
        eprintln!("  DPoP {algorithm:?}: bearer {a:.0} ns/op, DPoP {b:.0} ns/op");
        rows.push(row(
            format!(
                "1. DPoP proof ({}), 1 thread, stub transport",
                algorithm.as_str()
            ),
            format!(
                "+{:.0} ns/request ({a:.0} → {b:.0} ns): a signature per request",
                b - a
            ),
            format!("{:.1}× the bearer chain", b / a),
            "—",
            None,
        ));
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ---------------------------------------------------------------------------------------------
// 2. End to end

/// A middleware builder for the loopback server at `origin` (token endpoint `{origin}/token`).
fn loopback_builder(origin: &str) -> TokenManagerBuilder {
    let grant = RefreshTokenGrant::builder(format!("{origin}/token"), "bench")
        .danger_allow_http_loopback()
        .build()
        .expect("grant");
    TokenManager::builder(grant)
        .allow_origin(origin)
        .expect("valid origin")
}

fn loopback_manager(server: &Server) -> TokenManager {
    loopback_builder(&server.uri()).build()
}

/// `total` requests with `concurrency` in flight, each with `header` as `Authorization` if
/// given; the wall time and each latency (ns).
async fn batch(
    client: &ClientWithMiddleware,
    url: &str,
    total: usize,
    concurrency: usize,
    header: Option<&http::HeaderValue>,
) -> (Duration, Vec<u64>) {
    let start = Instant::now();
    let tasks = (0..concurrency).map(|i| {
        let client = client.clone();
        let url = url.to_owned();
        let header = header.cloned();
        let count = total / concurrency + usize::from(i < total % concurrency);
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let sent = Instant::now();
                let mut request = client.get(&url);
                if let Some(header) = &header {
                    request = request.header(http::header::AUTHORIZATION, header.clone());
                }
                let response = request.send().await.expect("request");
                assert_eq!(response.status(), 200);
                response.bytes().await.expect("body");
                latencies.push(sent.elapsed().as_nanos() as u64);
            }
            latencies
        })
    });
    let latencies: Vec<u64> = join_all(tasks)
        .await
        .into_iter()
        .flat_map(|result| result.expect("task"))
        .collect();
    (start.elapsed(), latencies)
}

/// Per batch: (variant, wall, p50, p99).
type Sample = (usize, Duration, u64, u64);

fn end_to_end(config: &Config, server: &Server, rows: &mut Vec<Row>) {
    let runtime = multi_thread();
    let client = reqwest::Client::new();
    let plain = ClientBuilder::new(client.clone()).build();
    let manager = loopback_manager(server);
    let noop = ClientBuilder::new(client.clone())
        .with(NoopMiddleware)
        .build();
    let ours = ClientBuilder::new(client)
        .with(manager.middleware())
        .build();
    let url = server.api_url();
    let (concurrency, size) = (config.e2e_concurrency, config.e2e_batch);
    let tokens = server.issue_grant(Duration::from_secs(24 * 3600));
    // Variant 2, a diagnostic: the plain client sending the same header itself, to tell the
    // middleware's cost from the cost of one more header on the wire.
    let header = bearer(&tokens);
    let (walls, latencies, samples) = runtime.block_on(async {
        manager
            .set_tokens(&TokenKey::default(), tokens)
            .await
            .expect("set tokens");
        let run = |which: usize| {
            let (client, header) = match which {
                0 => (&plain, None),
                1 => (&ours, None),
                2 => (&plain, Some(&header)),
                _ => (&noop, Some(&header)),
            };
            batch(client, &url, size, concurrency, header)
        };
        // Warm up (connections, token loaded).
        for which in 0..4 {
            run(which).await;
        }
        let mut walls = [Duration::ZERO; 4];
        let mut latencies = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        let mut samples: Vec<[Sample; 4]> = Vec::new();
        for round in 0..config.e2e_rounds {
            // The order rotates (and reverses) so a drift in machine load hits all alike.
            let mut order = [0, 1, 2, 3];
            order.rotate_left(round % 4);
            if round % 2 == 1 {
                order.reverse();
            }
            let mut group = [(0, Duration::ZERO, 0, 0); 4];
            for which in order {
                let (wall, mut sample) = run(which).await;
                sample.sort_unstable();
                walls[which] += wall;
                group[which] = (
                    which,
                    wall,
                    percentile(&sample, 0.5),
                    percentile(&sample, 0.99),
                );
                latencies[which].extend_from_slice(&sample);
            }
            samples.push(group);
        }
        (walls, latencies, samples)
    });
    let requests = (config.e2e_rounds * size) as f64;
    let rps = walls.map(|wall| requests / wall.as_secs_f64());
    let [p50, p99] = [0.5, 0.99].map(|p| {
        let mut all = latencies.clone();
        all.iter_mut().for_each(|l| l.sort_unstable());
        [0, 1, 2, 3].map(|which| percentile(&all[which], p))
    });
    eprintln!(
        "  pooled: plain {:.0} req/s p50 {} µs p99 {} µs; with middleware {:.0} req/s p50 {} µs \
         p99 {} µs; plain + caller's header {:.0} req/s",
        rps[0],
        p50[0] / 1000,
        p99[0] / 1000,
        rps[1],
        p50[1] / 1000,
        p99[1] / 1000,
        rps[2]
    );
    // The machine is shared: each group of adjacent batches gives one ratio, and the median of
    // those ratios is reported (a burst of load elsewhere spoils a group, not the run).
    let paired = |f: &dyn Fn(&Sample) -> f64, which: usize, against: usize| {
        let mut ratios: Vec<f64> = samples
            .iter()
            .map(|group| f(&group[which]) / f(&group[against]))
            .collect();
        median(&mut ratios)
    };
    let rate = |s: &Sample| 1.0 / s.1.as_secs_f64();
    let throughput = paired(&rate, 1, 0);
    let p50_ratio = paired(&|s| s.2 as f64, 1, 0);
    let p99_ratio = paired(&|s| s.3 as f64, 1, 0);
    let wire = paired(&rate, 1, 2);
    let framework = paired(&rate, 1, 3);
    let framework_p99 = paired(&|s| s.3 as f64, 1, 3);
    let floor = paired(&rate, 3, 0);
    let floor_p99 = paired(&|s| s.3 as f64, 3, 0);
    let groups = samples.len();
    rows.push(row(
        "2. end to end, throughput (b)/(a)",
        format!(
            "{:.0} vs {:.0} req/s (pooled), {groups} × {size} requests each, {concurrency} in flight",
            rps[1], rps[0]
        ),
        format!("{throughput:.3}"),
        "≥ 0.98",
        Some(throughput >= 0.98),
    ));
    rows.push(row(
        "2. end to end, p50 latency (b)/(a)",
        format!("{} vs {} µs (pooled)", p50[1] / 1000, p50[0] / 1000),
        format!("{p50_ratio:.3}"),
        "—",
        None,
    ));
    rows.push(row(
        "2. end to end, p99 latency (b)/(a)",
        format!("{} vs {} µs (pooled)", p99[1] / 1000, p99[0] / 1000),
        format!("{p99_ratio:.3}"),
        "≤ 1.05",
        Some(p99_ratio <= 1.05),
    ));
    rows.push(row(
        "2. diagnostic: throughput (b) / plain client sending the same header itself",
        format!("{:.0} vs {:.0} req/s (pooled)", rps[1], rps[2]),
        format!("{wire:.3}"),
        "—",
        None,
    ));
    // The judgement that matters: what the token middleware adds to any middleware that sends
    // the same header (the floor), in the same groups of batches.
    rows.push(row(
        "2. ours ÷ floor: throughput (b) / a do-nothing middleware sending the same header",
        format!("{:.0} vs {:.0} req/s (pooled)", rps[1], rps[3]),
        format!("{framework:.3}"),
        "≥ 0.99",
        Some(framework >= 0.99),
    ));
    rows.push(row(
        "2. ours ÷ floor: p99 latency (b) / a do-nothing middleware sending the same header",
        format!("{} vs {} µs (pooled)", p99[1] / 1000, p99[3] / 1000),
        format!("{framework_p99:.3}"),
        "≤ 1.01",
        Some(framework_p99 <= 1.01),
    ));
    rows.push(row(
        "2. floor: throughput of a do-nothing middleware sending the same header / (a)",
        format!("{:.0} vs {:.0} req/s (pooled)", rps[3], rps[0]),
        format!("{floor:.3}"),
        "—",
        None,
    ));
    rows.push(row(
        "2. floor: p99 latency of a do-nothing middleware sending the same header / (a)",
        format!("{} vs {} µs (pooled)", p99[3] / 1000, p99[0] / 1000),
        format!("{floor_p99:.3}"),
        "—",
        None,
    ));
}

/// A middleware that only passes the request on: what any middleware costs in
/// `reqwest-middleware` (a boxed future, the chain), separated from what ours adds.
struct NoopMiddleware;

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for NoopMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        next.run(request, extensions).await
    }
}

/// A do-nothing middleware that keeps a copy of each request (`Request::try_clone`) until the
/// response is back: the cost of being able to replay, alone.
struct CloningNoopMiddleware;

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for CloningNoopMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let copy = request.try_clone();
        let response = next.run(request, extensions).await;
        drop(black_box(copy));
        response
    }
}

// ---------------------------------------------------------------------------------------------
// 2b. End to end in instructions (run under callgrind by scripts/bench-instructions.sh)

/// Set to `bare` (no `Authorization` at all), `plain` (the caller sets it), `noop`, `cloning`
/// (a do-nothing middleware keeping a replay copy) or `ours`
/// (and `RTR_BENCH_REQUESTS`): run that client alone, one
/// request in flight, so `valgrind --tool=callgrind` can count the instructions of the whole
/// process (client and loopback server). Instruction counts repeat from run to run, where
/// wall-clock ratios on a shared machine move by several percent.
const INSTRUCTIONS_ENV: &str = "RTR_BENCH_INSTRUCTIONS";

fn instructions_run(variant: &str) {
    let requests: usize = env_or("RTR_BENCH_REQUESTS", 1000);
    let server = Server::start(Duration::ZERO);
    let runtime = current_thread();
    let client = reqwest::Client::new();
    let manager = loopback_manager(&server);
    let tokens = server.issue_grant(Duration::from_secs(24 * 3600));
    let header = bearer(&tokens);
    let (client, header) = match variant {
        "bare" => (ClientBuilder::new(client).build(), None),
        "plain" => (ClientBuilder::new(client).build(), Some(&header)),
        "noop" => (
            ClientBuilder::new(client).with(NoopMiddleware).build(),
            Some(&header),
        ),
        "cloning" => (
            ClientBuilder::new(client)
                .with(CloningNoopMiddleware)
                .build(),
            Some(&header),
        ),
        "ours" => (
            ClientBuilder::new(client)
                .with(manager.middleware())
                .build(),
            None,
        ),
        other => panic!("unknown {INSTRUCTIONS_ENV} variant {other:?}"),
    };
    let url = server.api_url();
    runtime.block_on(async {
        manager
            .set_tokens(&TokenKey::default(), tokens)
            .await
            .expect("set tokens");
        batch(&client, &url, requests, 1, header).await;
    });
}

// ---------------------------------------------------------------------------------------------
// 3. Storms

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Storm {
    Valid,
    Expired,
    Rejected,
}

struct StormResult {
    wall: Duration,
    failures: usize,
    token_calls: u64,
    /// How long the refresh took, seen by the flight (the token endpoint's round trip).
    refresh: Option<Duration>,
}

async fn storm(server: &Server, client: &reqwest::Client, kind: Storm, size: usize) -> StormResult {
    let refresh = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&refresh);
    let manager = loopback_builder(&server.uri())
        .on_event(move |event| {
            if let Event::Refreshed { duration, .. } = event {
                *seen.lock().unwrap() = Some(*duration);
            }
        })
        .build();
    let tokens = server.issue_grant(Duration::from_secs(3600));
    let tokens = match kind {
        Storm::Expired => tokens.with_expires_at(SystemTime::now() - Duration::from_secs(1)),
        _ => tokens,
    };
    manager
        .set_tokens(&TokenKey::default(), tokens)
        .await
        .expect("set tokens");
    if kind == Storm::Rejected {
        server.reject_current_tokens();
    }
    let client = ClientBuilder::new(client.clone())
        .with(manager.middleware())
        .build();
    let url = server.api_url();
    let calls = server.token_calls();
    let start = Instant::now();
    let failures = size - concurrent_ok(&client, &url, size).await;
    let wall = start.elapsed();
    let refresh = *refresh.lock().unwrap();
    StormResult {
        wall,
        failures,
        token_calls: server.token_calls() - calls,
        refresh,
    }
}

fn storms(config: &Config, server: &Server, rows: &mut Vec<Row>) {
    let runtime = multi_thread();
    // HTTP/2: one connection carries the whole storm, as it would to a real API.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let kinds = [Storm::Valid, Storm::Expired, Storm::Rejected];
    let mut results: Vec<(Storm, StormResult)> = Vec::new();
    let mut added: Vec<(Storm, f64)> = Vec::new();
    runtime.block_on(async {
        storm(server, &client, Storm::Valid, config.storm).await; // warm-up
        for round in 0..config.storm_rounds {
            for i in 0..kinds.len() {
                // Rotate the order so no kind always runs first.
                let kind = kinds[(i + round) % kinds.len()];
                results.push((kind, storm(server, &client, kind, config.storm).await));
            }
            // Added time within the round, against that round's valid storm.
            let round_results = &results[results.len() - kinds.len()..];
            let wall_of = |kind: Storm| {
                round_results
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map(|(_, r)| r.wall.as_secs_f64())
                    .unwrap_or_default()
            };
            let valid = wall_of(Storm::Valid);
            for kind in [Storm::Expired, Storm::Rejected] {
                added.push((kind, wall_of(kind) - valid));
            }
        }
    });
    let wall = |kind: Storm| {
        let mut walls: Vec<f64> = results
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, r)| r.wall.as_secs_f64())
            .collect();
        median(&mut walls)
    };
    let valid = wall(Storm::Valid);
    for kind in [Storm::Expired, Storm::Rejected] {
        let of_kind: Vec<&StormResult> = results
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, r)| r)
            .collect();
        let mut rtts: Vec<f64> = of_kind
            .iter()
            .filter_map(|r| r.refresh.map(|d| d.as_secs_f64()))
            .collect();
        let rtt = if rtts.is_empty() {
            0.0
        } else {
            median(&mut rtts)
        };
        let failures: usize = of_kind.iter().map(|r| r.failures).sum();
        let max_calls = of_kind.iter().map(|r| r.token_calls).max().unwrap_or(0);
        let min_calls = of_kind.iter().map(|r| r.token_calls).min().unwrap_or(0);
        let storm_wall = wall(kind);
        let mut added_of_kind: Vec<f64> = added
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, added)| *added)
            .collect();
        let added = median(&mut added_of_kind);
        // A rejected storm sends every request twice (the 401, then the replay): its
        // baseline is two valid storms.
        let (baseline, label) = match kind {
            Storm::Rejected => (2.0 * valid, "2 × valid storm"),
            _ => (valid, "valid storm"),
        };
        let allowed = (baseline - valid) + rtt + 0.10 * baseline;
        let ratio = added / allowed;
        eprintln!(
            "  {kind:?}: wall {:.1} ms vs valid {:.1} ms, token RTT {:.1} ms, calls {min_calls}..{max_calls}, failures {failures}",
            storm_wall * 1e3,
            valid * 1e3,
            rtt * 1e3
        );
        let name = match kind {
            Storm::Expired => "3. storm, token just expired",
            _ => "3. storm, token rejected with 401",
        };
        rows.push(row(
            format!("{name}: token calls / failures"),
            format!(
                "{} concurrent requests × {} runs",
                config.storm, config.storm_rounds
            ),
            format!("{max_calls} / {failures}"),
            "1 / 0",
            Some(min_calls == 1 && max_calls == 1 && failures == 0),
        ));
        rows.push(row(
            format!("{name}: added wall time ÷ allowance"),
            format!(
                "{:.0} ms vs {:.0} ms valid; token RTT {:.0} ms; allowance = RTT + 10 % of {label}",
                storm_wall * 1e3,
                valid * 1e3,
                rtt * 1e3
            ),
            format!("{ratio:.2}"),
            "≤ 1",
            Some(ratio <= 1.0),
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Many users

fn many_users(config: &Config, rows: &mut Vec<Row>) {
    let runtime = current_thread();
    let store = Arc::new(MemoryTokenStore::new());
    // Three sizes: 1,000 keys, `RTR_BENCH_KEYS` (100,000) and `RTR_BENCH_KEYS_LARGE`
    // (1,000,000; 0 leaves it out), each served by a manager of its own on the same store.
    let mut sizes = vec![config.keys.min(1_000), config.keys];
    if config.keys_large > config.keys {
        sizes.push(config.keys_large);
    }
    let total = *sizes.last().expect("a size");
    let keys: Vec<TokenKey> = (0..total)
        .map(|i| TokenKey::new(format!("user-{i}")))
        .collect();
    let token_bytes = {
        let tokens = opaque_tokens(0, Duration::from_secs(1));
        tokens.access_token().secret().len()
            + tokens.refresh_token().map_or(0, |t| t.secret().len())
    };
    // The store's own records (and its per-key locks), counted apart from the managers.
    let (_, store_bytes, _) = counted(|| {
        runtime.block_on(async {
            for (i, key) in keys.iter().enumerate() {
                // Bound to the middleware's server, as `set_tokens` would bind them.
                let tokens = opaque_tokens(i, Duration::from_secs(24 * 3600))
                    .with_issued_for(format!("{}/token bench", stub::ORIGIN));
                let saved = store.save(key, &tokens.into(), None).await.expect("save");
                assert_eq!(saved, SaveOutcome::Saved);
                drop(store.lock(key).await.expect("lock"));
            }
        });
    });
    let middleware = || {
        loopback_builder(stub::ORIGIN)
            .store(store.clone())
            // Every key stays resident for the whole measurement.
            .evict_idle_keys(None)
            .build()
            .middleware()
    };
    let request = stub::request();
    let send = |chain: &ClientWithMiddleware, key: &TokenKey| {
        send_as(
            chain.clone(),
            request.try_clone().expect("clonable"),
            key.clone(),
        )
    };
    // Ours at each size: the chain and the bytes its manager holds once every key was used.
    let ours: Vec<(ClientWithMiddleware, i64)> = sizes
        .iter()
        .map(|&size| {
            let (_, chain) = stub::chains(middleware());
            let (_, bytes, _) = counted(|| {
                runtime.block_on(async {
                    for key in &keys[..size] {
                        send(&chain, key).await;
                    }
                });
            });
            (chain, bytes)
        })
        .collect();
    // The floor: the least a per-key lookup can do, a middleware holding an immutable
    // `HashMap<TokenKey, HeaderValue>` of the same tokens, timed with the same keys. What it
    // loses at 100,000 keys and more is the memory latency any per-key table pays.
    let table = |keys: &[TokenKey]| {
        let headers = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                (
                    key.clone(),
                    bearer(&opaque_tokens(i, Duration::from_secs(1))),
                )
            })
            .collect();
        ClientBuilder::new(reqwest::Client::new())
            .with(HeaderTable(headers))
            .with(stub::Respond200)
            .build()
    };
    let floors: Vec<ClientWithMiddleware> =
        sizes.iter().map(|&size| table(&keys[..size])).collect();
    // Random lookups, timed in interleaved rounds so that a change in machine load hits every
    // size alike; the median of the rounds' ratios is reported.
    let time = |chain: &ClientWithMiddleware, keys: &[TokenKey], seed: u64| {
        let lookups = 20_000u64;
        let mut x = seed;
        let start = Instant::now();
        runtime.block_on(async {
            for _ in 0..lookups {
                // xorshift: a key chosen at random among the resident ones.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                send(chain, &keys[(x % keys.len() as u64) as usize]).await;
            }
        });
        start.elapsed().as_nanos() as f64 / lookups as f64
    };
    // Ours at each size, then the floor at each size; the order reverses every other round.
    let chains: Vec<(&ClientWithMiddleware, &[TokenKey])> = ours
        .iter()
        .map(|(chain, _)| chain)
        .chain(&floors)
        .zip(sizes.iter().chain(&sizes))
        .map(|(chain, &size)| (chain, &keys[..size]))
        .collect();
    let n = sizes.len();
    let mut rounds: Vec<Vec<f64>> = Vec::new();
    for round in 0..9u64 {
        let seed = 0x9e37_79b9_7f4a_7c15 ^ round;
        let mut order: Vec<usize> = (0..chains.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut ns = vec![0.0; chains.len()];
        for i in order {
            let (chain, keys) = chains[i];
            ns[i] = time(chain, keys, seed);
        }
        eprintln!(
            "  round {round}: ours {} ns; floor {} ns ({} keys)",
            ns[..n]
                .iter()
                .map(|ns| format!("{ns:.0}"))
                .collect::<Vec<_>>()
                .join(" / "),
            ns[n..]
                .iter()
                .map(|ns| format!("{ns:.0}"))
                .collect::<Vec<_>>()
                .join(" / "),
            sizes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" / "),
        );
        rounds.push(ns);
    }
    let median_of =
        |f: &dyn Fn(&[f64]) -> f64| median(&mut rounds.iter().map(|ns| f(ns)).collect::<Vec<_>>());
    let store_per_key = store_bytes as f64 / total as f64;
    for (i, &size) in sizes.iter().enumerate().skip(1) {
        let per_key = ours[i].1 as f64 / size as f64;
        let beyond = per_key - token_bytes as f64;
        eprintln!(
            "  memory at {size} keys: manager {per_key:.0} B/key, memory store {store_per_key:.0} B/key, token strings {token_bytes} B"
        );
        rows.push(row(
            format!("4. many users: memory per idle key, {size} keys"),
            format!(
                "{per_key:.0} B/key in the manager incl. {token_bytes} B of token strings \
                 (+ {store_per_key:.0} B/key in `MemoryTokenStore`)"
            ),
            format!("{beyond:.0} B beyond the tokens"),
            "≤ 1024 B",
            Some(beyond <= 1024.0),
        ));
    }
    for (i, &size) in sizes.iter().enumerate().skip(1) {
        let flat = median_of(&|ns| ns[i] / ns[0]);
        rows.push(row(
            format!("4. many users: lookup time, {size} ÷ {} keys", sizes[0]),
            format!(
                "{:.0} vs {:.0} ns/request (stub transport, random keys; medians of 9 interleaved \
                 rounds of all {} chains)",
                median_of(&|ns| ns[i]),
                median_of(&|ns| ns[0]),
                2 * n
            ),
            format!("{flat:.2}"),
            "≤ 1.3 (flat)",
            Some(flat <= 1.3),
        ));
        let floor = median_of(&|ns| ns[n + i] / ns[n]);
        rows.push(row(
            format!(
                "4. floor: lookup time of a bare `HashMap<TokenKey, HeaderValue>` middleware, {size} ÷ {} keys",
                sizes[0]
            ),
            format!(
                "{:.0} vs {:.0} ns/request (same rounds, same keys)",
                median_of(&|ns| ns[n + i]),
                median_of(&|ns| ns[n])
            ),
            format!("{floor:.2}"),
            "—",
            None,
        ));
        rows.push(row(
            format!("4. ours ÷ floor, lookup time at {size} keys"),
            format!(
                "{:.0} vs {:.0} ns/request (same rounds, same keys); at {} keys {:.0} vs {:.0}",
                median_of(&|ns| ns[i]),
                median_of(&|ns| ns[n + i]),
                sizes[0],
                median_of(&|ns| ns[0]),
                median_of(&|ns| ns[n])
            ),
            format!(
                "{:.2} ({:.2} at {} keys)",
                median_of(&|ns| ns[i] / ns[n + i]),
                median_of(&|ns| ns[0] / ns[n]),
                sizes[0]
            ),
            "—",
            None,
        ));
    }
}

/// The floor of section 4: inserts the request key's header from an immutable table.
struct HeaderTable(std::collections::HashMap<TokenKey, http::HeaderValue>);

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for HeaderTable {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let header = extensions
            .get::<TokenKey>()
            .and_then(|key| self.0.get(key))
            .expect("every key is in the table");
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, header.clone());
        next.run(request, extensions).await
    }
}

/// Sends `request` through `chain` for `key`; the stub answers 200.
async fn send_as(chain: ClientWithMiddleware, request: reqwest::Request, key: TokenKey) {
    let mut extensions = Extensions::new();
    extensions.insert(key);
    let response = chain
        .execute_with_extensions(request, &mut extensions)
        .await
        .expect("stub");
    assert_eq!(response.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// 5. Across processes

const WORKER_ENV: &str = "RTR_BENCH_WORKER";

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn key_ring() -> KeyRing {
    KeyRing::new(EncryptionKey::from_bytes("bench", &[7; 32]).expect("key"))
}

async fn redis_store(prefix: &str) -> Result<RedisTokenStore, String> {
    RedisTokenStore::builder(key_ring())
        .prefix(prefix)
        .default_ttl(Duration::from_secs(600))
        .connect(&redis_url())
        .await
        .map_err(|error| error.to_string())
}

/// A store of `kind` named by `location` (a file path or a Redis prefix).
async fn open_store(kind: &str, location: &str) -> Result<Arc<dyn TokenStore>, String> {
    Ok(match kind {
        "file" => Arc::new(
            FileTokenStore::builder(location)
                .build()
                .expect("valid token file path"),
        ),
        _ => Arc::new(redis_store(location).await?),
    })
}

/// A worker process: answers each `storm` line with `reply: ok failed wall_us`.
fn worker(kind: &str) {
    let url = std::env::var("RTR_BENCH_URL").expect("url");
    let location = std::env::var("RTR_BENCH_LOCATION").expect("location");
    let concurrency: usize = env_or("RTR_BENCH_PROCESS_CONCURRENCY", 200);
    let runtime = multi_thread();
    runtime.block_on(async {
        let store = open_store(kind, &location).await.expect("store");
        let manager = loopback_builder(&url)
            .rejection_cooldown(Duration::ZERO)
            .store(store)
            .build();
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .expect("client");
        let client = ClientBuilder::new(client)
            .with(manager.middleware())
            .build();
        let api = format!("{url}/api/item");
        loop {
            let line = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map(|_| line)
            })
            .await
            .expect("stdin reader")
            .unwrap_or_default();
            if line.trim() != "storm" {
                return;
            }
            let start = Instant::now();
            let ok = concurrent_ok(&client, &api, concurrency).await;
            let wall = start.elapsed().as_micros();
            println!("reply: {ok} {} {wall}", concurrency - ok);
        }
    });
}

/// `count` GETs of `url` started at once (bodies read); how many answered 200.
async fn concurrent_ok(client: &ClientWithMiddleware, url: &str, count: usize) -> usize {
    let requests = (0..count).map(|_| {
        let client = client.clone();
        let url = url.to_owned();
        tokio::spawn(async move {
            let response = client.get(url).send().await?;
            let ok = response.status() == 200;
            response.bytes().await?;
            Ok::<_, reqwest_middleware::Error>(ok)
        })
    });
    join_all(requests)
        .await
        .into_iter()
        .filter(|result| matches!(result, Ok(Ok(true))))
        .count()
}

/// One storm in every worker at once: (ok, failed, slowest wall).
fn storm_in_workers(workers: &mut Workers) -> (usize, usize, Duration) {
    for index in 0..workers.len() {
        workers.send(index, "storm");
    }
    let (mut ok, mut failed, mut wall) = (0, 0, 0u64);
    for index in 0..workers.len() {
        let numbers: Vec<u64> = workers
            .read(index, "reply: ")
            .split_whitespace()
            .map(|n| n.parse().expect("number"))
            .collect();
        ok += numbers[0] as usize;
        failed += numbers[1] as usize;
        wall = wall.max(numbers[2]);
    }
    (ok, failed, Duration::from_micros(wall))
}

fn across_processes(config: &Config, server: &Server, rows: &mut Vec<Row>) {
    let runtime = multi_thread();
    let dir = std::env::temp_dir().join(format!("rtr-bench-{}", std::process::id()));
    let file = dir.join("tokens.json");
    let prefix = format!(
        "rtr-bench:{}:{}:",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    for (kind, location) in [
        ("file", file.display().to_string()),
        ("redis", prefix.clone()),
    ] {
        let name = format!("5. {} processes, {kind} store", config.processes);
        let store = match runtime.block_on(open_store(kind, &location)) {
            Ok(store) => store,
            Err(error) => {
                eprintln!("  {kind}: skipped ({error})");
                rows.push(row(name, format!("skipped: {error}"), "—", "—", None));
                continue;
            }
        };
        // Log in once, through a manager on the same store.
        let login = loopback_builder(&server.uri())
            .store(Arc::clone(&store))
            .build();
        runtime
            .block_on(login.set_tokens(
                &TokenKey::default(),
                server.issue_grant(Duration::from_secs(3600)),
            ))
            .expect("log in");
        // The cross-process lock alone: lock, read, release, uncontended.
        let key = TokenKey::default();
        let mut lock_times: Vec<f64> = runtime.block_on(async {
            let mut times = Vec::new();
            for _ in 0..50 {
                // Stores release their lock in the background (Redis: a spawned DEL); let it
                // finish so each sample is an uncontended acquisition.
                tokio::time::sleep(Duration::from_millis(10)).await;
                let start = Instant::now();
                let lock = store.lock(&key).await.expect("lock");
                store.load(&key).await.expect("load");
                drop(lock);
                times.push(start.elapsed().as_secs_f64());
            }
            times
        });
        let lock_time = median(&mut lock_times);
        let mut workers = Workers::spawn(
            config.processes,
            &[
                (WORKER_ENV, kind.to_owned()),
                ("RTR_BENCH_URL", server.uri()),
                ("RTR_BENCH_LOCATION", location.clone()),
                (
                    "RTR_BENCH_PROCESS_CONCURRENCY",
                    config.process_concurrency.to_string(),
                ),
            ],
        );
        storm_in_workers(&mut workers); // warm-up: every worker loads the tokens
        let (mut valid_walls, mut rejected_walls) = (Vec::new(), Vec::new());
        let (mut failures, mut calls) = (0, Vec::new());
        let reuse = server.reuse_detections();
        for _ in 0..config.process_rounds {
            let (_, failed, wall) = storm_in_workers(&mut workers);
            failures += failed;
            valid_walls.push(wall.as_secs_f64());
            server.reject_current_tokens();
            let before = server.token_calls();
            let (_, failed, wall) = storm_in_workers(&mut workers);
            calls.push(server.token_calls() - before);
            failures += failed;
            rejected_walls.push(wall.as_secs_f64());
        }
        workers.finish();
        let reuse = server.reuse_detections() - reuse;
        let valid = median(&mut valid_walls);
        let rejected = median(&mut rejected_walls);
        let rtt = config.token_delay.as_secs_f64();
        eprintln!(
            "  {kind}: token calls per expiry {calls:?}, failures {failures}, reuse {reuse}, \
             lock+load {:.2} ms, storm {:.1} ms valid vs {:.1} ms rejected",
            lock_time * 1e3,
            valid * 1e3,
            rejected * 1e3
        );
        let total_calls: u64 = calls.iter().sum();
        let per_expiry = total_calls as f64 / calls.len() as f64;
        rows.push(row(
            format!("{name}: refreshes per expiry / failures"),
            format!(
                "{} rounds × {} processes × {} concurrent requests; access token revoked \
                 (401) each round; {reuse} reuse detections",
                config.process_rounds, config.processes, config.process_concurrency
            ),
            format!("{per_expiry:.2} / {failures}"),
            "1 / 0",
            Some(calls.iter().all(|&c| c == 1) && failures == 0 && reuse == 0),
        ));
        rows.push(row(
            format!("{name}: cross-process lock ÷ token RTT"),
            format!(
                "lock + read + unlock {:.2} ms (uncontended); storm {:.0} ms after 401 vs \
                 {:.0} ms valid; token endpoint delay {:.0} ms",
                lock_time * 1e3,
                rejected * 1e3,
                valid * 1e3,
                rtt * 1e3
            ),
            format!("{:.3}", lock_time / rtt),
            "—",
            None,
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
