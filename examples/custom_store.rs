// cargo run --example custom_store --features test-util
//
// Keeping tokens somewhere this crate does not cover: implement `TokenStore`. This one keeps
// each key's record as a JSON document in a directory, one file per key, and shows the
// contract every store must honour:
//
// - `load`: `Ok(None)` only when nothing is stored; unreadable data is an error.
// - `save`: conditional on the stored record's revision (`expected`, like an HTTP If-Match;
//   never the generation, which starts over after a logout and new login); otherwise
//   `Conflict` with what is stored now.
// - `lock`: an exclusive section across processes while a key is refreshed (here an
//   in-process lock: this store is for one process; see FileTokenStore for a shared one).
//
// (Not crash-safe on purpose, to stay short: use FileTokenStore, feature `file`, for real.)

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest_middleware::ClientBuilder;
use reqwest_token_refresh::test_util::store_contract::StoreContract;
use reqwest_token_refresh::test_util::MockAuthorizationServer;
use reqwest_token_refresh::{
    RefreshTokenGrant, Revision, SaveOutcome, StoreError, StoreErrorKind, StoreLock, TokenKey,
    TokenManager, TokenRecord, TokenStore,
};

/// One JSON file per key in a directory.
struct DirectoryStore {
    dir: PathBuf,
    locks: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl DirectoryStore {
    fn path(&self, key: &TokenKey) -> PathBuf {
        // Key names are ours here; a real store would escape or hash them.
        self.dir.join(format!("{}.json", key.as_str()))
    }
}

fn io_error(error: std::io::Error) -> StoreError {
    StoreError::new(StoreErrorKind::Unavailable, "token directory unreadable").with_source(error)
}

#[async_trait]
impl TokenStore for DirectoryStore {
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenRecord>, StoreError> {
        match tokio::fs::read(self.path(key)).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|_| {
                StoreError::new(StoreErrorKind::Corrupt, "token file is not a token record")
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(error)),
        }
    }

    async fn save(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        expected: Option<&Revision>,
    ) -> Result<SaveOutcome, StoreError> {
        // Compare and write under the key's lock, which the middleware holds (a store shared
        // by processes needs a compare-and-write the backend makes atomic).
        let current = self.load(key).await?;
        if current.as_ref().map(TokenRecord::revision) != expected {
            return Ok(SaveOutcome::Conflict { current });
        }
        let json = serde_json::to_vec(record)
            .map_err(|_| StoreError::new(StoreErrorKind::Other, "cannot encode tokens"))?;
        tokio::fs::write(self.path(key), json)
            .await
            .map_err(io_error)?;
        Ok(SaveOutcome::Saved)
    }

    async fn lock(&self, key: &TokenKey) -> Result<StoreLock, StoreError> {
        let lock = Arc::clone(
            self.locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(key.clone())
                .or_default(),
        );
        Ok(StoreLock::new(lock.lock_owned().await))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("custom-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server = MockAuthorizationServer::start(Duration::from_secs(3600)).await;
    let grant = RefreshTokenGrant::builder(server.token_url(), "demo-client")
        .danger_allow_http_loopback()
        .build()?;
    let manager = TokenManager::builder(grant)
        .allow_origin(&server.uri())?
        .store(DirectoryStore {
            dir: dir.clone(),
            locks: Mutex::default(),
        })
        .build();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(manager.middleware())
        .build();
    let key = TokenKey::new("alice");
    manager
        .set_tokens(&key, server.issue_expired_grant())
        .await?;
    let response = client
        .get(server.api_url("me"))
        .with_extension(key.clone())
        .send()
        .await?;
    let stored: TokenRecord = serde_json::from_slice(&std::fs::read(dir.join("alice.json"))?)?;
    println!("status:                {}", response.status());
    println!(
        "stored generation:     {} (the rotated set)",
        stored.generation()
    );
    println!("token requests:        {}", server.refresh_calls());
    if !response.status().is_success() || stored.generation() != 2 {
        return Err("expected the rotated tokens to be stored".into());
    }

    // Checking a store against the whole contract (feature `test-util`): each call of the
    // closure must return a store on the same backend; this one locks in memory, so it is
    // shared.
    let store = Arc::new(DirectoryStore {
        dir: dir.clone(),
        locks: Mutex::default(),
    });
    StoreContract::new(move || {
        let store = Arc::clone(&store);
        async move { store }
    })
    .run()
    .await;
    println!("store contract:        passed");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
