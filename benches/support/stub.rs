//! A terminal middleware that answers 200 without touching the network, so that a chain with
//! and without the token middleware measures only the middleware.
#![allow(dead_code)]

use async_trait::async_trait;
use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use reqwest_token_refresh::{RefreshTokenGrant, TokenManager, TokenRefreshMiddleware};

/// The origin the stubbed requests go to (never contacted).
pub const ORIGIN: &str = "http://127.0.0.1:9";

pub struct Respond200;

#[async_trait]
impl Middleware for Respond200 {
    async fn handle(
        &self,
        _request: Request,
        _extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        Ok(Response::from(http::Response::new("")))
    }
}

/// A manager for [`ORIGIN`] whose token endpoint is never reached while tokens are valid.
pub fn manager() -> TokenManager {
    let grant = RefreshTokenGrant::builder(format!("{ORIGIN}/token"), "bench")
        .danger_allow_http_loopback()
        .build()
        .expect("grant");
    TokenManager::builder(grant)
        .allow_origin(ORIGIN)
        .expect("valid origin")
        .build()
}

/// The stub chain alone, and the stub chain behind `middleware`.
pub fn chains(middleware: TokenRefreshMiddleware) -> (ClientWithMiddleware, ClientWithMiddleware) {
    let client = reqwest::Client::new();
    let plain = ClientBuilder::new(client.clone()).with(Respond200).build();
    let ours = ClientBuilder::new(client)
        .with(middleware)
        .with(Respond200)
        .build();
    (plain, ours)
}

/// A request to [`ORIGIN`].
pub fn request() -> Request {
    Request::new(
        reqwest::Method::GET,
        format!("{ORIGIN}/api/item").parse().expect("url"),
    )
}

/// `iters` requests through `client` on each of `threads` threads started together (each
/// with its own current-thread runtime); the mean over threads of the time for all `iters`.
pub fn mean_thread_time(
    client: &ClientWithMiddleware,
    threads: usize,
    iters: u64,
) -> std::time::Duration {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let elapsed: Vec<std::time::Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = std::sync::Arc::clone(&barrier);
                scope.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    let request = request();
                    barrier.wait();
                    let start = std::time::Instant::now();
                    runtime.block_on(async {
                        for _ in 0..iters {
                            let request = request.try_clone().expect("clonable");
                            std::hint::black_box(client.execute(request).await.expect("stub"));
                        }
                    });
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("thread"))
            .collect()
    });
    elapsed.iter().sum::<std::time::Duration>() / threads as u32
}
