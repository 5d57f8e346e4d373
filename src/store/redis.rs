//! A token store in Redis: sealed token sets with a TTL, conditional writes and a lease lock,
//! so many replicas of a service share per-user tokens and refresh each one once. It runs on
//! one server, on Redis Cluster and behind Redis Sentinel.

mod builder;
mod connection;
mod lease;
mod names;
mod sentinel;

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use redis::Script;
use sha2::Sha256;
use zeroize::Zeroizing;

pub use self::builder::RedisTokenStoreBuilder;
use self::connection::Connection;
use self::names::{Layout, Names};
use super::seal::KeyRing;
use super::{SaveOutcome, StoreError, StoreErrorKind, StoreLock, TokenStore};
use crate::key::TokenKey;
use crate::record::TokenRecord;
use crate::revision::Revision;
use crate::token::TokenSet;

/// Writes the record only if its stored revision is the expected one (`""`: no record), and
/// (re)sets its TTL in the same step. A record written before revisions existed is compared
/// on `legacy-<generation>`, the revision it reads back with. Touches one key, the record.
static SAVE_IF_REVISION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
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
",
    )
});

/// Stores token sets in Redis, sealed with a [`KeyRing`] (feature `redis`), on one server,
/// on Redis Cluster or behind Redis Sentinel (see [`RedisTokenStoreBuilder`]).
///
/// - **Encrypted at rest:** each record is a hash `{generation, revision, sealed}`; `sealed` is
///   the [`TokenRecord`] encrypted with XChaCha20-Poly1305, with the record's key name on a
///   single server as associated data (a value copied to another user's key fails to open).
/// - **Key names:** on one server and behind sentinels, records are `prefix + "tokens:" + key`
///   and locks `prefix + "lock:" + key` (separate namespaces, so no key name can collide with
///   another key's lock), as in every earlier version. On a cluster the key is a hash tag,
///   `prefix + "tokens:{" + key + "}"` and `prefix + "lock:{" + key + "}"` (`%`, `{` and `}`
///   in the key percent-encoded), so a record and its lock are always in one slot. With
///   [`hash_key_names`](RedisTokenStoreBuilder::hash_key_names), `key` is replaced by
///   `HMAC-SHA256(salt, key)` in hex, so user ids cannot be read from the keyspace (the salt is a
///   deployment secret; changing it orphans every record).
/// - **Moving to a cluster:** the seal binds the single-server name on every topology, so a
///   record copied under its cluster name still opens: `DUMP` each `prefix + "tokens:" + key`
///   from the old server and `RESTORE` it (with its remaining TTL) as
///   [`record_name`](Self::record_name) names it on the cluster. Locks need no copy.
/// - **TTL:** every write sets the record's expiry to the refresh token's lifetime minus a
///   margin (5 min by default, at most a tenth of the lifetime): the lifetime the server sent
///   (`refresh_expires_in`), else the one configured, else a default (30 days). A rotation sets
///   it again, never drops it. An expired record is "no tokens": re-authorization required. A
///   record that the grant ended lives for the configured lifetime (or the default).
/// - **One refresh across replicas:** [`lock`](TokenStore::lock) takes a lease
///   (`SET NX PX` with a random token, 15 s by default, renewed while held), released by a
///   compare-and-delete script before the refresh returns (so a process that exits at once
///   leaves nothing behind); a waiter waits longer than a lease (20 s by default), so a dead
///   holder never makes it fail. Before calling the token endpoint the holder checks that the
///   lease is still its own. Saves are conditional on the record's revision, so a holder whose
///   lease expired during a slow refresh cannot overwrite newer tokens or a new login (it
///   adopts them instead). Every script touches one key.
/// - **Failover:** Redis replicates asynchronously, so a failover (Sentinel or Cluster) can
///   lose the last writes the old master acknowledged. A lost lease lets a second holder in, as
///   a lease lost while held does; a lost rotation leaves the spent refresh token stored, which
///   a server with reuse detection answers by revoking the grant (the key then needs a new
///   login). Redis's `min-replicas-to-write` narrows that window.
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
    connection: Connection,
    layout: Layout,
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
        RedisTokenStoreBuilder::new(keys)
    }

    /// The Redis key holding `key`'s record: `prefix + "tokens:" + name` on one server or
    /// behind sentinels, `prefix + "tokens:{" + name + "}"` on a cluster.
    pub fn record_name(&self, key: &TokenKey) -> String {
        self.names(key).record
    }

    /// The Redis key of `key`'s lock: `prefix + "lock:" + name` (on a cluster `prefix +
    /// "lock:{" + name + "}"`, in the slot of the record). Records and locks live in separate
    /// namespaces, so no key's record can ever be another key's lock (key names are often
    /// user-controlled).
    pub fn lock_name(&self, key: &TokenKey) -> String {
        self.names(key).lock
    }

    fn names(&self, key: &TokenKey) -> Names {
        self.layout.names(&self.prefix, &self.name(key))
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

    async fn read(&self, names: &Names) -> Result<Option<TokenRecord>, StoreError> {
        let name = &names.record;
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
        let record = self.keys.open(&names.sealed_as, &sealed)?.record;
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
            .field("connection", &self.connection)
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
        self.read(&self.names(key)).await
    }

    async fn save(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        expected: Option<&Revision>,
    ) -> Result<SaveOutcome, StoreError> {
        let names = self.names(key);
        // A record that does not open (tampered, unknown key) is never replaced silently.
        self.read(&names).await?;
        let sealed = self.keys.seal(&names.sealed_as, record)?;
        let mut connection = self.connection.clone();
        let written: i64 = SAVE_IF_REVISION
            .key(&names.record)
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
            current: self.read(&names).await?,
        })
    }

    async fn lock(&self, key: &TokenKey) -> Result<StoreLock, StoreError> {
        lease::acquire(
            self.connection.clone(),
            self.names(key).lock,
            self.lease,
            self.lock_wait(),
        )
        .await
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
    failed("redis request failed", error)
}

/// A failed request or connection, described by `message` (never a URL: it may hold a
/// password), with redis-rs's error as its source.
fn failed(message: &str, error: redis::RedisError) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind};
    let kind = match error.kind() {
        _ if error.is_timeout()
            || error.is_io_error()
            || error.is_connection_refusal()
            || error.is_connection_dropped() =>
        {
            StoreErrorKind::Unavailable
        }
        // A cluster or a failover in progress (sentinels naming no master that is up):
        // retrying may succeed.
        ErrorKind::ClusterConnectionNotFound
        | ErrorKind::MasterNameNotFoundBySentinel
        | ErrorKind::Server(
            ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::BusyLoading
            | ServerErrorKind::ReadOnly,
        ) => StoreErrorKind::Unavailable,
        ErrorKind::AuthenticationFailed | ErrorKind::EmptySentinelList => {
            StoreErrorKind::Misconfigured
        }
        _ => StoreErrorKind::Other,
    };
    StoreError::new(kind, message).with_source(error)
}
