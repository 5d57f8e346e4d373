//! [`SqlTokenStore`]: sealed token sets in a SQL table, written conditionally on their
//! generation, with refreshes coordinated across processes by the database.

mod errors;
#[cfg(feature = "postgres")]
mod postgres;
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;

use self::errors::store_error;
use self::schema::Table;
use super::{KeyRing, SaveOutcome, StoreError, StoreErrorKind, StoreLock, TokenStore};
use crate::error::ConfigError;
use crate::key::TokenKey;
use crate::record::TokenRecord;
use crate::revision::Revision;
use crate::token::TokenSet;

/// How long [`TokenStore::lock`] waits by default.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SQLite lease outlives a holder that died without releasing it, by default.
const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// Keeps token sets in a SQL table: SQLite (feature `sqlite`) for several processes on one
/// host, PostgreSQL (feature `postgres`) for a fleet.
///
/// - **Encrypted at rest.** Each row holds the token set sealed with a [`KeyRing`], bound to
///   its key; no column holds a plaintext token. Values sealed with an older key are re-sealed
///   with the primary key on their next save.
/// - **Conditional writes.** A save is `UPDATE … WHERE token_key = ? AND revision = <expected
///   revision>` (an `INSERT … ON CONFLICT DO NOTHING` for the first one), and the affected-row
///   count decides: zero rows is a [`SaveOutcome::Conflict`] carrying the stored record, never
///   an overwrite. Two processes inserting the first record at once get one `Saved` and one
///   `Conflict`. Rows written before revisions existed compare as `legacy-<version>` and get a
///   revision on their next save; [`migrate`](Self::migrate) adds the column to such tables.
/// - **One refresh across processes.** [`lock`](TokenStore::lock) takes, on PostgreSQL, a
///   session advisory lock on a hash of the table and key, held on a connection of its own
///   (outside the pool, so a small pool cannot deadlock), pinged while held so that a lost
///   session is noticed, and released by closing that connection before the refresh returns
///   (or by the server when the holder dies). On SQLite it takes a lease row (`<table>_lease`)
///   that a heartbeat extends while held and that is deleted before the refresh returns; a dead
///   holder's lease expires after [the lease](SqlTokenStoreBuilder::lock_lease) (15 s by default). Before
///   calling the token endpoint the holder checks that the lock is still its own. Waiting
///   longer than the [lock timeout](SqlTokenStoreBuilder::lock_timeout) (30 s by default) is a
///   [`StoreErrorKind::LockTimeout`] error.
/// - **Typed failures.** A database that is down or busy is [`StoreErrorKind::Unavailable`]; a
///   missing table is [`StoreErrorKind::Misconfigured`] with the hint "table `…` missing; run
///   SqlTokenStore::migrate()". Nothing is written on failure, and messages never contain a
///   token.
///
/// The schema ships with the crate ([`schema`](Self::schema)) and is applied by
/// [`migrate`](Self::migrate). For SQLite, open the pool with WAL journaling and a busy timeout
/// so that processes wait for each other instead of failing:
/// `SqliteConnectOptions::from_str(url)?.journal_mode(SqliteJournalMode::Wal).busy_timeout(..)`.
///
/// # Example
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use reqwest_token_refresh::{EncryptionKey, KeyRing, RefreshTokenGrant, SqlTokenStore, TokenManager};
///
/// let pool = sqlx::PgPool::connect("postgres://app@db.internal/app").await?;
/// let keys = KeyRing::new(EncryptionKey::from_base64(
///     "2026-01",
///     &std::env::var("TOKEN_ENCRYPTION_KEY")?,
/// )?);
/// let store = SqlTokenStore::postgres(pool, keys).build()?;
/// store.migrate().await?;
///
/// let grant = RefreshTokenGrant::builder("https://auth.example.com/oauth/token", "my-client").build()?;
/// let tokens = TokenManager::builder(grant)
///     .allow_origin("https://api.example.com")?
///     .store(store)
///     .build();
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(tokens.middleware())
///     .build();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqlTokenStore {
    backend: Backend,
    table: Table,
    keys: KeyRing,
    lock_timeout: Duration,
    /// SQLite: how long a lease outlives a holder that died without releasing it.
    lease: Duration,
}

#[derive(Clone)]
enum Backend {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

/// A stored row, as read.
struct Row {
    version: i64,
    revision: Option<String>,
    sealed: String,
}

/// The columns `SELECT version, revision, sealed` returns.
type Columns = (i64, Option<String>, String);

impl From<Columns> for Row {
    fn from((version, revision, sealed): Columns) -> Self {
        Self {
            version,
            revision,
            sealed,
        }
    }
}

/// A row to write.
struct Write<'a> {
    key: &'a str,
    version: i64,
    revision: &'a str,
    sealed: String,
    /// Unix seconds.
    access_expires_at: Option<i64>,
    /// Unix seconds.
    refresh_expires_at: Option<i64>,
}

impl SqlTokenStore {
    /// Starts configuring a store in the SQLite database behind `pool`, sealing with `keys`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::str::FromStr;
    /// use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
    /// use reqwest_token_refresh::{EncryptionKey, KeyRing, SqlTokenStore};
    ///
    /// let options = SqliteConnectOptions::from_str("sqlite:///var/lib/app/tokens.db")?
    ///     .create_if_missing(true)
    ///     .journal_mode(SqliteJournalMode::Wal)
    ///     .busy_timeout(std::time::Duration::from_secs(5));
    /// let pool = SqlitePool::connect_with(options).await?;
    /// let keys = KeyRing::new(EncryptionKey::from_base64("k1", &std::env::var("TOKEN_KEY")?)?);
    /// let store = SqlTokenStore::sqlite(pool, keys).build()?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "sqlite")]
    pub fn sqlite(pool: sqlx::SqlitePool, keys: KeyRing) -> SqlTokenStoreBuilder {
        SqlTokenStoreBuilder::new(Backend::Sqlite(pool), keys)
    }

    /// Starts configuring a store in the PostgreSQL database behind `pool`, sealing with
    /// `keys`.
    ///
    /// **Connections.** Each held [`lock`](TokenStore::lock) uses one extra connection, opened
    /// with the pool's options but outside it, for the length of one refresh: a process needs
    /// the pool's connections plus one per refresh in flight (one per key being refreshed, not
    /// per key), so `max_connections` on the server must leave room for them across the fleet.
    /// The pool itself is used for one read and one write per refresh; when the application
    /// holds all of its connections, the store waits for the pool's `acquire_timeout` and the
    /// refresh fails with a transient [`StoreErrorKind::Unavailable`] error (no deadlock: the
    /// lock's connection is not taken from the pool). The lock is a session advisory lock:
    /// point the pool at the server or at a session-mode pooler, not at a transaction-mode
    /// PgBouncer.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use reqwest_token_refresh::{EncryptionKey, KeyRing, SqlTokenStore};
    ///
    /// let pool = sqlx::PgPool::connect("postgres://app@db.internal/app").await?;
    /// let keys = KeyRing::new(EncryptionKey::from_base64("k1", &std::env::var("TOKEN_KEY")?)?);
    /// let store = SqlTokenStore::postgres(pool, keys).build()?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: sqlx::PgPool, keys: KeyRing) -> SqlTokenStoreBuilder {
        SqlTokenStoreBuilder::new(Backend::Postgres(pool), keys)
    }

    /// The id of the PostgreSQL session advisory lock that guards `key`'s refreshes, to find its
    /// holder in `pg_locks` (`locktype = 'advisory'`, `classid = (id >> 32) & 0xffffffff`,
    /// `objid = id & 0xffffffff`, `objsubid = 1`). Stable across processes and versions.
    ///
    /// ```no_run
    /// # fn run(store: reqwest_token_refresh::SqlTokenStore) {
    /// let id = store.advisory_lock_id(&reqwest_token_refresh::TokenKey::new("user-42"));
    /// # }
    /// ```
    #[cfg(feature = "postgres")]
    pub fn advisory_lock_id(&self, key: &TokenKey) -> i64 {
        self.table.lock_id(key.as_str())
    }

    /// The table name in use.
    ///
    /// ```no_run
    /// # fn run(store: reqwest_token_refresh::SqlTokenStore) {
    /// println!("tokens are kept in {}", store.table());
    /// # }
    /// ```
    pub fn table(&self) -> &str {
        self.table.name()
    }

    /// The SQL that [`migrate`](Self::migrate) runs, for review or for applying it with your
    /// own migration tool. It creates the token table (key, version, sealed token set, access
    /// and refresh expiry, update time) and, on SQLite, the lease table `<table>_lease`.
    ///
    /// ```no_run
    /// # fn run(store: reqwest_token_refresh::SqlTokenStore) -> std::io::Result<()> {
    /// std::fs::write("migrations/0001_oauth_tokens.sql", store.schema())?;
    /// # Ok(()) }
    /// ```
    pub fn schema(&self) -> String {
        let template = match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => schema::SQLITE,
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => schema::POSTGRES,
        };
        self.table.render(template)
    }

    /// Creates the tables if they do not exist. Idempotent, and safe to run from several
    /// processes at once; it never alters or drops an existing table.
    ///
    /// ```no_run
    /// # async fn run(store: reqwest_token_refresh::SqlTokenStore) -> Result<(), reqwest_token_refresh::StoreError> {
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrated = match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => sqlite::migrate(pool, &self.table).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pool) => postgres::migrate(pool, &self.table).await,
        };
        migrated.map_err(|error| store_error(error, &self.table, "creating the schema"))
    }

    async fn fetch(&self, key: &TokenKey) -> Result<Option<TokenRecord>, StoreError> {
        let fetched = match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => sqlite::fetch(pool, &self.table, key.as_str()).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pool) => postgres::fetch(pool, &self.table, key.as_str()).await,
        };
        let row = fetched
            .map_err(|error| store_error(error, &self.table, &format!("loading `{key}`")))?;
        row.map(|row| self.open(key, row)).transpose()
    }

    fn open(&self, key: &TokenKey, row: Row) -> Result<TokenRecord, StoreError> {
        let record = self.keys.open(key.as_str(), row.sealed.as_bytes())?.record;
        // The columns writes compare must agree with the sealed record; anything else was put
        // there by something other than this store (a restored or copied payload).
        let revision = row
            .revision
            .unwrap_or_else(|| format!("legacy-{}", row.version));
        if u64::try_from(row.version).ok() != Some(record.generation())
            || revision != record.revision().as_str()
        {
            return Err(StoreError::new(
                StoreErrorKind::Corrupt,
                format!(
                    "token record `{key}` in table `{}` has a version or revision that does not \
                     match its sealed content",
                    self.table.name(),
                ),
            ));
        }
        Ok(record)
    }
}

impl std::fmt::Debug for SqlTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => "postgres",
        };
        f.debug_struct("SqlTokenStore")
            .field("backend", &backend)
            .field("table", &self.table.name())
            .field("keys", &self.keys)
            .field("lock_timeout", &self.lock_timeout)
            .field("lease", &self.lease)
            .finish()
    }
}

/// Configures a [`SqlTokenStore`]; made by [`SqlTokenStore::sqlite`] or
/// [`SqlTokenStore::postgres`].
#[must_use]
pub struct SqlTokenStoreBuilder {
    backend: Backend,
    keys: KeyRing,
    table: String,
    lock_timeout: Duration,
    lease: Duration,
}

impl std::fmt::Debug for SqlTokenStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlTokenStoreBuilder")
            .field("table", &self.table)
            .field("lock_timeout", &self.lock_timeout)
            .field("lock_lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl SqlTokenStoreBuilder {
    fn new(backend: Backend, keys: KeyRing) -> Self {
        Self {
            backend,
            keys,
            table: Table::default().name().to_owned(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            lease: DEFAULT_LEASE,
        }
    }

    /// Uses the table `name` (`table` or `schema.table`; lowercase ASCII letters, digits and
    /// underscores; default `oauth_tokens`). It is spliced into SQL, so [`build`](Self::build)
    /// refuses any other name.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// How long [`lock`](TokenStore::lock) waits for another holder (default 30 s; then
    /// [`StoreErrorKind::LockTimeout`]).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// SQLite: how long a refresh lease lasts if its holder dies without releasing it (default
    /// 15 s). A live holder renews it every third of this time and deletes it as soon as it is
    /// done, also when its process exits right after. The lock timeout is never shorter than
    /// the lease plus a second, so a dead holder never makes a waiter fail. (PostgreSQL's
    /// advisory lock needs no lease: the server releases it with the holder's session.)
    pub fn lock_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Checks the table name and builds the store. Nothing is sent to the database until the
    /// store is used ([`migrate`](SqlTokenStore::migrate) creates the tables).
    ///
    /// ```no_run
    /// # async fn run(pool: sqlx::PgPool, keys: reqwest_token_refresh::KeyRing) -> Result<(), reqwest_token_refresh::ConfigError> {
    /// let store = reqwest_token_refresh::SqlTokenStore::postgres(pool, keys)
    ///     .table("billing.oauth_tokens")
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn build(self) -> Result<SqlTokenStore, ConfigError> {
        Ok(SqlTokenStore {
            backend: self.backend,
            table: Table::parse(&self.table)?,
            keys: self.keys,
            lock_timeout: self.lock_timeout,
            lease: self.lease,
        })
    }
}

#[async_trait]
impl TokenStore for SqlTokenStore {
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenRecord>, StoreError> {
        self.fetch(key).await
    }

    async fn save(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        expected: Option<&Revision>,
    ) -> Result<SaveOutcome, StoreError> {
        // A record that cannot be opened (tampered, an unknown key) is never replaced: the
        // conditional write below compares columns outside the seal.
        self.fetch(key).await?;
        let tokens = record.tokens();
        let write = Write {
            key: key.as_str(),
            version: column_version(record.generation())?,
            revision: record.revision().as_str(),
            sealed: self.keys.seal(key.as_str(), record)?,
            access_expires_at: unix_seconds(tokens.and_then(TokenSet::expires_at)),
            refresh_expires_at: unix_seconds(tokens.and_then(TokenSet::refresh_expires_at)),
        };
        let expected = expected.map(Revision::as_str);
        let written = match (&self.backend, expected) {
            #[cfg(feature = "sqlite")]
            (Backend::Sqlite(pool), None) => sqlite::insert(pool, &self.table, &write).await,
            #[cfg(feature = "sqlite")]
            (Backend::Sqlite(pool), Some(expected)) => {
                sqlite::update(pool, &self.table, &write, expected).await
            }
            #[cfg(feature = "postgres")]
            (Backend::Postgres(pool), None) => postgres::insert(pool, &self.table, &write).await,
            #[cfg(feature = "postgres")]
            (Backend::Postgres(pool), Some(expected)) => {
                postgres::update(pool, &self.table, &write, expected).await
            }
        };
        let written =
            written.map_err(|error| store_error(error, &self.table, &format!("saving `{key}`")))?;
        if written {
            return Ok(SaveOutcome::Saved);
        }
        Ok(SaveOutcome::Conflict {
            current: self.fetch(key).await?,
        })
    }

    async fn lock(&self, key: &TokenKey) -> Result<StoreLock, StoreError> {
        match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => {
                let wait = self.lock_timeout.max(self.lease + Duration::from_secs(1));
                sqlite::lock(pool, &self.table, key, wait, self.lease).await
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres(pool) => {
                postgres::lock(pool, &self.table, key, self.lock_timeout).await
            }
        }
    }
}

/// A generation as the signed 64-bit version column holds it.
fn column_version(generation: u64) -> Result<i64, StoreError> {
    i64::try_from(generation).map_err(|_| {
        StoreError::new(
            StoreErrorKind::Other,
            format!("generation {generation} does not fit the version column"),
        )
    })
}

/// A time as unix seconds for an expiry column.
fn unix_seconds(time: Option<std::time::SystemTime>) -> Option<i64> {
    time.and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .and_then(|elapsed| i64::try_from(elapsed.as_secs()).ok())
}
