//! The stores processes share in the interop scenarios, opened alike by the test and by its
//! worker processes from a kind and a location.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use reqwest_token_refresh::{
    EncryptionKey, FileTokenStore, KeyRing, RedisTokenStore, SqlTokenStore, TokenStore,
};

fn keys() -> KeyRing {
    KeyRing::new(EncryptionKey::from_bytes("interop", &[9; 32]).expect("key"))
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A place for one test's tokens in a store of `kind`: a temporary directory (file, SQLite,
/// removed when dropped), a key prefix (Redis; its records expire) or a table (PostgreSQL),
/// named after the test and the process.
pub struct Place {
    pub kind: &'static str,
    pub location: String,
    _dir: Option<tempfile::TempDir>,
}

impl Place {
    /// A fresh place, or `None` (skipped with a note) when the store's server is not running
    /// outside CI.
    pub async fn new(kind: &'static str, name: &str) -> Option<Self> {
        let unique = format!("{name}_{}", std::process::id());
        let (location, dir) = match kind {
            "file" | "sqlite" => {
                let dir = tempfile::Builder::new()
                    .prefix("rtr-interop-")
                    .tempdir()
                    .expect("temp dir");
                let file = if kind == "file" {
                    "tokens.json"
                } else {
                    "tokens.db"
                };
                (dir.path().join(file).display().to_string(), Some(dir))
            }
            "redis" => (format!("interop:{unique}:"), None),
            _ => (format!("interop_{unique}"), None),
        };
        let place = Self {
            kind,
            location,
            _dir: dir,
        };
        match open(kind, &place.location).await {
            Ok(_) => Some(place),
            Err(error) if std::env::var_os("CI").is_none() => {
                eprintln!("skipping the {kind} store: {error}");
                None
            }
            Err(error) => panic!("the {kind} store is required in CI: {error}"),
        }
    }

    /// The store, as every process opens it.
    pub async fn open(&self) -> Arc<dyn TokenStore> {
        open(self.kind, &self.location)
            .await
            .expect("open the store")
    }

    /// The environment a worker process needs to open the same store.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RTR_INTEROP_STORE", self.kind.to_owned()),
            ("RTR_INTEROP_LOCATION", self.location.clone()),
        ]
    }
}

/// Opens the store of `kind` at `location` (from a worker's environment, or a [`Place`]),
/// creating the SQL schema if needed (idempotent, safe from several processes at once).
pub async fn open(kind: &str, location: &str) -> Result<Arc<dyn TokenStore>, String> {
    match kind {
        "file" => FileTokenStore::builder(location)
            .build()
            .map(|store| Arc::new(store) as Arc<dyn TokenStore>)
            .map_err(|error| error.to_string()),
        "sqlite" => {
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{location}"))
                .map_err(|error| error.to_string())?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePool::connect_with(options)
                .await
                .map_err(|error| error.to_string())?;
            let store = SqlTokenStore::sqlite(pool, keys())
                .lock_lease(Duration::from_secs(2))
                .build()
                .map_err(|error| error.to_string())?;
            migrated(store).await
        }
        "redis" => RedisTokenStore::builder(keys())
            .prefix(location)
            .lock_lease(Duration::from_secs(2))
            .connect(&redis_url())
            .await
            .map(|store| Arc::new(store) as Arc<dyn TokenStore>)
            .map_err(|error| format!("no redis at {}: {error}", redis_url())),
        "postgres" => {
            let pool = tokio::time::timeout(
                Duration::from_secs(5),
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .connect(&database_url()),
            )
            .await
            .map_err(|_| format!("postgres at {} did not answer", database_url()))?
            .map_err(|error| format!("no postgres at {}: {error}", database_url()))?;
            let store = SqlTokenStore::postgres(pool, keys())
                .table(location)
                .build()
                .map_err(|error| error.to_string())?;
            migrated(store).await
        }
        other => Err(format!("unknown store kind {other}")),
    }
}

async fn migrated(store: SqlTokenStore) -> Result<Arc<dyn TokenStore>, String> {
    store.migrate().await.map_err(|error| error.to_string())?;
    Ok(Arc::new(store))
}
