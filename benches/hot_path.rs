//! cargo bench --bench hot_path
//!
//! The per-request cost of the middleware with a valid token: key lookup, token load and
//! header injection, measured as a middleware chain ending in a stub that answers 200 without
//! I/O, with and without the token middleware; on one thread and on every core at once.

#[path = "support/stub.rs"]
mod stub;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use reqwest_middleware::ClientWithMiddleware;
use reqwest_token_refresh::{AccessToken, RefreshToken, TokenKey, TokenSet};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn chains() -> (ClientWithMiddleware, ClientWithMiddleware) {
    let manager = stub::manager();
    runtime()
        .block_on(
            manager.set_tokens(
                &TokenKey::default(),
                TokenSet::new(AccessToken::new("a".repeat(43)))
                    .with_refresh_token(RefreshToken::new("r".repeat(43)))
                    .with_expires_in(Duration::from_secs(24 * 3600)),
            ),
        )
        .expect("set tokens");
    stub::chains(manager.middleware())
}

fn hot_path(c: &mut Criterion) {
    let (plain, ours) = chains();
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let runtime = runtime();
    let request = stub::request();
    let mut group = c.benchmark_group("hot_path");
    for (name, client) in [("plain_chain", &plain), ("with_token_middleware", &ours)] {
        group.bench_function(format!("{name}/1_thread"), |b| {
            b.iter(|| {
                let request = request.try_clone().expect("clonable");
                runtime.block_on(client.execute(request)).expect("stub")
            });
        });
        group.bench_function(format!("{name}/{threads}_threads"), |b| {
            b.iter_custom(|iters| stub::mean_thread_time(client, threads, iters));
        });
    }
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
