//! The `TokenStore` contract suite (`test_util::store_contract`) on the in-memory stores; the
//! file, Redis and SQL stores run it in their own modules, with their ways of losing a lock
//! and of spoiling a record.

use std::sync::Arc;

use reqwest_token_refresh::test_util::store_contract::StoreContract;
use reqwest_token_refresh::{CallbackTokenStore, MemoryTokenStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store() {
    let shared = Arc::new(MemoryTokenStore::new());
    StoreContract::new(move || {
        let shared = Arc::clone(&shared);
        async move { shared }
    })
    .run()
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_store() {
    let saved = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&saved);
    let shared = Arc::new(CallbackTokenStore::new(move |_, _| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    StoreContract::new(move || {
        let shared = Arc::clone(&shared);
        async move { shared }
    })
    .run()
    .await;
    assert!(
        saved.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "saves were reported"
    );
}
