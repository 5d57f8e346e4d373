//! A token store in Redis: sealed token sets with a TTL, conditional writes and a lease lock,
//! so many replicas of a service share per-user tokens and refresh each one once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::seal::KeyRing;
use super::{HeldLock, SaveOutcome, StoreError, StoreErrorKind, StoreLock, TokenStore};
use crate::backoff::Backoff;
use crate::error::{ConfigError, Error};
use crate::key::TokenKey;
use crate::log;
use crate::record::TokenRecord;
use crate::revision::Revision;
use crate::token::TokenSet;

/// Writes the record only if its stored revision is the expected one (`""`: no record), and
/// (re)sets its TTL in the same step. A record written before revisions existed is compared
/// on `legacy-<generation>`, the revision it reads back with.
const SAVE_IF_REVISION: &str = r"
local current = redis.call('HGET', KEYS[1], 'revision')
if current == false then
  local generation = redis.call('HGET', KEYS[1], 'generation')
  if generation ~= false then current = 'legacy-' .. generation end
end
if (current == false and ARGV[1] == '') or (current ~= false and current == ARGV[1]) then
  redis.call('HSET', KEYS[1], 'generation', ARGV[2], 'revision', ARGV[3], 'sealed', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
";

/// Deletes the lock only if it still holds our token (our lease has not expired and been
/// taken by someone else).
const RELEASE_IF_OURS: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Extends the lease only if it is still ours.
const RENEW_IF_OURS: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Stores token sets in Redis, sealed with a [`KeyRing`] (feature `redis`).
///
/// - **Encrypted at rest:** each record is a hash `{generation, revision, sealed}`; `sealed` is
///   the [`TokenRecord`] encrypted with XChaCha20-Poly1305, with the Redis key name as
///   associated data (a value copied to another user's key fails to open).
/// - **Key names:** records are `prefix + "tokens:" + key` and locks `prefix + "lock:" + key`
///   (separate namespaces, so no key name can collide with another key's lock). With
///   [`hash_key_names`](RedisTokenStoreBuilder::hash_key_names), `key` is replaced by
///   `HMAC-SHA256(salt, key)` in hex, so user ids cannot be read from the keyspace (the salt is a
///   deployment secret; changing it orphans every record).
/// - **TTL:** every write sets the record's expiry to the refresh token's lifetime minus a
///   margin (5 min by default, at most a tenth of the lifetime): the lifetime the server sent
///   (`refresh_expires_in`), else the one configured, else a default (30 days). A rotation sets it again, never drops it. An
///   expired record is "no tokens": re-authorization required. A record that the grant ended
///   lives for the configured lifetime (or the default).
/// - **One refresh across replicas:** [`lock`](TokenStore::lock) takes a lease
///   (`SET NX PX` with a random token, 15 s by default, renewed while held), released by a
///   compare-and-delete script before the refresh returns (so a process that exits at once
///   leaves nothing behind); a waiter waits longer than a lease (20 s by default), so a dead
///   holder never makes it fail. Before calling the token endpoint the holder checks that the
///   lease is still its own. Saves are conditional on the record's revision, so a holder whose
///   lease expired during a slow refresh cannot overwrite newer tokens or a new login (it
///   adopts them instead).
///
/// ```no_run
/// use reqwest_token_refresh::{EncryptionKey, KeyRing, RedisTokenStore};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let key = EncryptionKey::from_base64("2026-01", &std::env::var("TOKEN_KEY")?)?;
/// let store = RedisTokenStore::builder(KeyRing::new(key))
///     .prefix("myapp:tokens:")
///     .hash_key_names(std::env::var("TOKEN_KEY_SALT")?.as_bytes())
///     .connect("redis://127.0.0.1:6379")
///     .await?;
/// # Ok(()) }
/// ```
pub struct RedisTokenStore {
    connection: ConnectionManager,
    keys: KeyRing,
    prefix: String,
    salt: Option<Zeroizing<Vec<u8>>>,
    ttl: Duration,
    ttl_margin: Duration,
    lease: Duration,
    lock_timeout: Option<Duration>,
}

/// How long a lease outlives a holder that died without releasing it.
const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// How much longer than a lease a waiter waits by default.
const WAIT_BEYOND_LEASE: Duration = Duration::from_secs(5);

impl RedisTokenStore {
    /// Starts configuring a store that seals records with `keys`.
    pub fn builder(keys: KeyRing) -> RedisTokenStoreBuilder {
        RedisTokenStoreBuilder {
            keys,
            prefix: "reqwest-token-refresh:".to_owned(),
            salt: None,
            refresh_token_lifetime: None,
            default_ttl: Duration::from_secs(30 * 24 * 60 * 60),
            ttl_margin: Duration::from_secs(5 * 60),
            lease: DEFAULT_LEASE,
            lock_timeout: None,
        }
    }

    /// The Redis key holding `key`'s record: `prefix + "tokens:" + name`.
    pub fn record_name(&self, key: &TokenKey) -> String {
        format!("{}tokens:{}", self.prefix, self.name(key))
    }

    /// The lock's Redis key: `prefix + "lock:" + name`. Records and locks live in separate
    /// namespaces, so no key's record can ever be another key's lock (key names are often
    /// user-controlled).
    fn lock_name(&self, key: &TokenKey) -> String {
        format!("{}lock:{}", self.prefix, self.name(key))
    }

    /// The key's name in the keyspace: as given, or its HMAC with the deployment salt.
    fn name(&self, key: &TokenKey) -> String {
        match &self.salt {
            None => key.as_str().to_owned(),
            Some(salt) => {
                #[allow(clippy::expect_used)]
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(salt)
                    .expect("HMAC accepts keys of any length");
                mac.update(key.as_str().as_bytes());
                hex::encode(mac.finalize().into_bytes())
            }
        }
    }

    /// How long the record lives: until the refresh token expires (minus the margin) when the
    /// server said, else the configured TTL.
    fn ttl_for(&self, record: &TokenRecord) -> Duration {
        match record.tokens().and_then(TokenSet::refresh_expires_at) {
            Some(expires_at) => ttl_before(
                expires_at
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default(),
                self.ttl_margin,
            ),
            None => self.ttl,
        }
    }

    /// How long a waiter waits for another holder: the configured timeout, but never less than
    /// a lease, so a dead holder's lock always expires before a waiter gives up.
    fn lock_wait(&self) -> Duration {
        self.lock_timeout
            .unwrap_or(self.lease + WAIT_BEYOND_LEASE)
            .max(self.lease + Duration::from_secs(1))
    }

    async fn read(&self, name: &str) -> Result<Option<TokenRecord>, StoreError> {
        let mut connection = self.connection.clone();
        let (generation, revision, sealed): (Option<String>, Option<String>, Option<Vec<u8>>) =
            redis::cmd("HMGET")
                .arg(name)
                .arg("generation")
                .arg("revision")
                .arg("sealed")
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
        let (generation, sealed) = match (generation, sealed) {
            (None, None) if revision.is_none() => return Ok(None),
            (Some(generation), Some(sealed)) => (generation, sealed),
            _ => return Err(corrupt(name, "is incomplete")),
        };
        let record = self.keys.open(name, &sealed)?.record;
        // The fields writes compare are outside the seal; they must agree with the sealed ones.
        let revision = revision.unwrap_or_else(|| format!("legacy-{generation}"));
        if generation.parse::<u64>().ok() != Some(record.generation())
            || revision != record.revision().as_str()
        {
            return Err(corrupt(
                name,
                "has a generation or revision that does not match its content",
            ));
        }
        Ok(Some(record))
    }
}

impl std::fmt::Debug for RedisTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTokenStore")
            .field("prefix", &self.prefix)
            .field("hashed_key_names", &self.salt.is_some())
            .field("keys", &self.keys)
            .field("ttl", &self.ttl)
            .field("lease", &self.lease)
            .field("lock_timeout", &self.lock_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenStore for RedisTokenStore {
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenRecord>, StoreError> {
        self.read(&self.record_name(key)).await
    }

    async fn save(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        expected: Option<&Revision>,
    ) -> Result<SaveOutcome, StoreError> {
        let name = self.record_name(key);
        // A record that does not open (tampered, unknown key) is never replaced silently.
        self.read(&name).await?;
        let sealed = self.keys.seal(&name, record)?;
        let mut connection = self.connection.clone();
        let written: i64 = Script::new(SAVE_IF_REVISION)
            .key(&name)
            .arg(expected.map_or("", Revision::as_str))
            .arg(record.generation().to_string())
            .arg(record.revision().as_str())
            .arg(sealed)
            .arg(millis(self.ttl_for(record)))
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error)?;
        if written == 1 {
            return Ok(SaveOutcome::Saved);
        }
        Ok(SaveOutcome::Conflict {
            current: self.read(&name).await?,
        })
    }

    async fn lock(&self, key: &TokenKey) -> Result<StoreLock, StoreError> {
        let name = self.lock_name(key);
        let token = hex::encode(crate::revision::random_bytes::<16>());
        let started = Instant::now();
        let mut pauses = LOCK_POLL.pauses();
        let mut connection = self.connection.clone();
        loop {
            let taken: Option<String> = redis::cmd("SET")
                .arg(&name)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(millis(self.lease))
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
            if taken.is_some() {
                let lost = Arc::new(AtomicBool::new(false));
                let renewal = tokio::spawn(renew(
                    connection.clone(),
                    name.clone(),
                    token.clone(),
                    self.lease,
                    Arc::clone(&lost),
                ));
                let lease = Lease {
                    connection,
                    name,
                    token,
                    renewal,
                    released: false,
                };
                return Ok(StoreLock::held(lease).with_loss_flag(lost));
            }
            let waited = started.elapsed();
            if waited >= self.lock_wait() {
                return Err(StoreError::new(
                    StoreErrorKind::LockTimeout,
                    format!(
                        "redis lock `{name}` still held by another process after {waited:?} \
                         (longer than its lease: the holder is alive and busy)"
                    ),
                ));
            }
            tokio::time::sleep(pauses.next().unwrap_or(LOCK_POLL_MAX)).await;
        }
    }
}

/// Pauses between attempts to take a held lock.
const LOCK_POLL_MAX: Duration = Duration::from_millis(100);
const LOCK_POLL: Backoff = Backoff::new(Duration::from_millis(2), LOCK_POLL_MAX);

/// Keeps a held lease alive (every third of its length) while its holder works, so a slow
/// token endpoint cannot let a second replica in; stops once the lease is no longer ours.
async fn renew(
    mut connection: ConnectionManager,
    name: String,
    token: String,
    lease: Duration,
    lost: Arc<AtomicBool>,
) {
    let mut renewed_at = Instant::now();
    loop {
        tokio::time::sleep(lease / 3).await;
        let renewed: redis::RedisResult<i64> = Script::new(RENEW_IF_OURS)
            .key(&name)
            .arg(&token)
            .arg(millis(lease))
            .invoke_async(&mut connection)
            .await;
        match renewed {
            Ok(1) => renewed_at = Instant::now(),
            Ok(_) => {
                log::warn!(lock = %name, "redis lock lease was lost before its holder finished");
                lost.store(true, Ordering::Release);
                return;
            }
            Err(error) => {
                log::warn!(lock = %name, %error, "could not renew redis lock");
                if renewed_at.elapsed() >= lease {
                    // The lease has run out by now: another replica may hold the lock.
                    lost.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }
}

/// A held lease. [`HeldLock::release`] deletes it (if it is still ours) and waits for Redis to
/// confirm; dropping it unreleased does the same in the background, and if no runtime is left
/// the lease expires on its own.
struct Lease {
    connection: ConnectionManager,
    name: String,
    token: String,
    renewal: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Lease {
    async fn delete(mut connection: ConnectionManager, name: &str, token: &str) {
        let released: redis::RedisResult<i64> = Script::new(RELEASE_IF_OURS)
            .key(name)
            .arg(token)
            .invoke_async(&mut connection)
            .await;
        if let Err(error) = released {
            log::debug!(lock = %name, %error, "could not release redis lock; it will expire");
        }
    }
}

#[async_trait]
impl HeldLock for Lease {
    async fn is_held(&self) -> bool {
        let mut connection = self.connection.clone();
        let holder: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(&self.name)
            .query_async(&mut connection)
            .await;
        matches!(holder, Ok(Some(holder)) if holder == self.token)
    }

    async fn release(mut self: Box<Self>) {
        self.renewal.abort();
        self.released = true;
        Self::delete(self.connection.clone(), &self.name, &self.token).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.released {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let connection = self.connection.clone();
        let name = std::mem::take(&mut self.name);
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move { Self::delete(connection, &name, &token).await });
    }
}

/// Configures a [`RedisTokenStore`].
#[must_use]
pub struct RedisTokenStoreBuilder {
    keys: KeyRing,
    prefix: String,
    salt: Option<Zeroizing<Vec<u8>>>,
    refresh_token_lifetime: Option<Duration>,
    default_ttl: Duration,
    ttl_margin: Duration,
    lease: Duration,
    lock_timeout: Option<Duration>,
}

impl std::fmt::Debug for RedisTokenStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTokenStoreBuilder")
            .field("prefix", &self.prefix)
            .field("hashed_key_names", &self.salt.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisTokenStoreBuilder {
    /// Prefix of every Redis key the store writes (default `reqwest-token-refresh:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Names records by `HMAC-SHA256(salt, key)` instead of the key itself, so user or tenant
    /// ids are not readable in the keyspace. Keep the salt secret and stable.
    pub fn hash_key_names(mut self, salt: &[u8]) -> Self {
        self.salt = Some(Zeroizing::new(salt.to_vec()));
        self
    }

    /// How long refresh tokens live at your authorization server. Records then expire that long
    /// (minus the margin) after their last write.
    pub fn refresh_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.refresh_token_lifetime = Some(lifetime);
        self
    }

    /// Record expiry when the refresh-token lifetime is not configured (default 30 days).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Safety margin subtracted from the refresh-token lifetime (default 5 minutes), so that a
    /// record never outlives its refresh token. For short lifetimes it shrinks to a tenth of
    /// the time left: a 300 s refresh token keeps its record for 270 s, not 1 s.
    pub fn ttl_margin(mut self, margin: Duration) -> Self {
        self.ttl_margin = margin;
        self
    }

    /// How long a lock lease lasts if its holder dies without releasing it (default 15 s). A
    /// live holder renews it every third of this time and releases it as soon as it is done,
    /// also when its process exits right after.
    pub fn lock_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long to wait for another holder's lock before failing (default: the lease plus
    /// 5 s). Never less than the lease: a dead holder's lock always expires before a waiter
    /// gives up.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    /// Connects to the Redis server at `url` (its password, if any, stays out of errors).
    ///
    /// A URL that does not parse is [`Error::Config`]; a server that cannot be reached is
    /// [`Error::Store`] with [`StoreErrorKind::Unavailable`].
    pub async fn connect(self, url: &str) -> Result<RedisTokenStore, Error> {
        let client = redis::Client::open(url).map_err(|_| {
            Error::Config(ConfigError::Store {
                setting: "redis url",
                reason: "not a valid redis url (redis://, rediss:// or redis+unix://)".into(),
            })
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|error| Error::Store(redis_error(error)))?;
        Ok(self.build(connection))
    }

    /// Builds the store on an existing connection manager.
    pub fn build(self, connection: ConnectionManager) -> RedisTokenStore {
        let ttl = match self.refresh_token_lifetime {
            Some(lifetime) => ttl_before(lifetime, self.ttl_margin),
            None => self.default_ttl,
        };
        RedisTokenStore {
            connection,
            keys: self.keys,
            prefix: self.prefix,
            salt: self.salt,
            ttl,
            ttl_margin: self.ttl_margin,
            lease: self.lease,
            lock_timeout: self.lock_timeout,
        }
    }
}

/// The TTL of a record whose refresh token expires in `left`: `margin` before it, but the
/// margin never takes more than a tenth of the time left (a short-lived refresh token still
/// gets almost all of its life).
fn ttl_before(left: Duration, margin: Duration) -> Duration {
    left.saturating_sub(margin.min(left / 10))
        .max(Duration::from_secs(1))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn corrupt(record: &str, what: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Corrupt,
        format!("redis record `{record}` {what}"),
    )
}

fn redis_error(error: redis::RedisError) -> StoreError {
    let kind = if error.is_timeout()
        || error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
    {
        StoreErrorKind::Unavailable
    } else {
        StoreErrorKind::Other
    };
    StoreError::new(kind, "redis request failed").with_source(error)
}
