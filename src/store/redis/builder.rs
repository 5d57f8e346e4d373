//! Configuring a [`RedisTokenStore`] and connecting it to one server, a cluster, or the master
//! that sentinels name.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use zeroize::Zeroizing;

use super::connection::{self, Connection, MasterAuth};
use super::{ttl_before, RedisTokenStore, DEFAULT_LEASE};
use crate::error::Error;
use crate::store::seal::KeyRing;

/// Configures a [`RedisTokenStore`]; ends with one of the `connect` methods (or a `build` on a
/// connection you made).
///
/// | deployment | method | key names |
/// |---|---|---|
/// | one server | [`connect`](Self::connect) | `prefix + "tokens:" + key` |
/// | Redis Cluster | [`connect_cluster`](Self::connect_cluster) | `prefix + "tokens:{" + key + "}"` |
/// | Redis Sentinel | [`connect_sentinel`](Self::connect_sentinel) | `prefix + "tokens:" + key` |
///
/// Every URL may name a user and a password (`redis://user:password@host:6379`, Redis ACLs)
/// and ask for TLS (`rediss://`, verified against the system's root certificates, or the
/// file `SSL_CERT_FILE` names). Passwords never appear in errors or in `Debug` output.
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
    master_auth: Option<MasterAuth>,
}

impl std::fmt::Debug for RedisTokenStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTokenStoreBuilder")
            .field("prefix", &self.prefix)
            .field("hashed_key_names", &self.salt.is_some())
            .field(
                "sentinel_master_auth",
                &self.master_auth.as_ref().map(|auth| {
                    format!(
                        "{}:<redacted>",
                        auth.username.as_deref().unwrap_or("default")
                    )
                }),
            )
            .finish_non_exhaustive()
    }
}

impl RedisTokenStoreBuilder {
    pub(super) fn new(keys: KeyRing) -> Self {
        Self {
            keys,
            prefix: "reqwest-token-refresh:".to_owned(),
            salt: None,
            refresh_token_lifetime: None,
            default_ttl: Duration::from_secs(30 * 24 * 60 * 60),
            ttl_margin: Duration::from_secs(5 * 60),
            lease: DEFAULT_LEASE,
            lock_timeout: None,
            master_auth: None,
        }
    }

    /// Prefix of every Redis key the store writes (default `reqwest-token-refresh:`). On a
    /// cluster it must not contain `{` or `}`: the store places the hash tags itself.
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

    /// The username (`None`: the `default` user) and password of the master that
    /// [`connect_sentinel`](Self::connect_sentinel) finds, when they are not those of the
    /// sentinels. By default the master is reached with the credentials of the first sentinel
    /// URL.
    ///
    /// ```no_run
    /// # use reqwest_token_refresh::{KeyRing, RedisTokenStore};
    /// # async fn run(keys: KeyRing) -> Result<(), Box<dyn std::error::Error>> {
    /// let store = RedisTokenStore::builder(keys)
    ///     .sentinel_master_auth(Some("tokens"), &std::env::var("REDIS_PASSWORD")?)
    ///     .connect_sentinel(&["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"], "tokens")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn sentinel_master_auth(mut self, username: Option<&str>, password: &str) -> Self {
        self.master_auth = Some(MasterAuth {
            username: username.map(str::to_owned),
            password: Zeroizing::new(password.to_owned()),
        });
        self
    }

    /// Connects to the Redis server at `url` (`redis://`, `rediss://` or `redis+unix://`).
    ///
    /// A URL that does not parse is [`Error::Config`]; a server that cannot be reached is
    /// [`Error::Store`] with [`StoreErrorKind::Unavailable`](crate::StoreErrorKind::Unavailable).
    ///
    /// ```no_run
    /// # use reqwest_token_refresh::{KeyRing, RedisTokenStore};
    /// # async fn run(keys: KeyRing) -> Result<(), Box<dyn std::error::Error>> {
    /// let store = RedisTokenStore::builder(keys)
    ///     .connect("rediss://tokens:secret@redis.internal:6380/2")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(self, url: &str) -> Result<RedisTokenStore, Error> {
        let connection = connection::open_node(url).await?;
        Ok(self.assemble(connection))
    }

    /// Connects to the Redis Cluster that the nodes at `urls` belong to; one reachable node is
    /// enough, the others are tried when it does not answer. The URLs must share one scheme,
    /// username and password.
    ///
    /// Each command goes to the master of its key's slot; redirections (`MOVED`, `ASK`) during
    /// a slot migration or a failover are followed. A record and its lock share a hash tag,
    /// so they live in one slot and move together. Records of a single server are not found
    /// under a cluster's names; see [`RedisTokenStore`] for moving them.
    ///
    /// Errors as for [`connect`](Self::connect); a prefix with `{` or `}` is [`Error::Config`].
    ///
    /// ```no_run
    /// # use reqwest_token_refresh::{KeyRing, RedisTokenStore};
    /// # async fn run(keys: KeyRing) -> Result<(), Box<dyn std::error::Error>> {
    /// let store = RedisTokenStore::builder(keys)
    ///     .connect_cluster(&[
    ///         "redis://10.0.0.1:6379",
    ///         "redis://10.0.0.2:6379",
    ///         "redis://10.0.0.3:6379",
    ///     ])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_cluster(self, urls: &[impl AsRef<str>]) -> Result<RedisTokenStore, Error> {
        self.check_cluster_prefix()?;
        let connection = connection::open_cluster(urls).await?;
        Ok(self.assemble(connection))
    }

    /// Connects to the master that the Redis Sentinels at `sentinels` know as `master_name`,
    /// and finds it again through them after a failover.
    ///
    /// The sentinel URLs carry the sentinels' own credentials and scheme; the master is reached
    /// with the same scheme (`rediss://`: TLS), the database in the first URL's path, and its
    /// credentials unless [`sentinel_master_auth`](Self::sentinel_master_auth) says otherwise.
    /// Key names are those of a single server, so a deployment that moves from one server to
    /// Sentinel keeps its records.
    ///
    /// Errors as for [`connect`](Self::connect); sentinels that name no master that is up
    /// under `master_name` (an unknown name, a failover in progress) leave the store
    /// [`Unavailable`](crate::StoreErrorKind::Unavailable).
    ///
    /// ```no_run
    /// # use reqwest_token_refresh::{KeyRing, RedisTokenStore};
    /// # async fn run(keys: KeyRing) -> Result<(), Box<dyn std::error::Error>> {
    /// let store = RedisTokenStore::builder(keys)
    ///     .connect_sentinel(
    ///         &["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    ///         "tokens",
    ///     )
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_sentinel(
        self,
        sentinels: &[impl AsRef<str>],
        master_name: &str,
    ) -> Result<RedisTokenStore, Error> {
        let connection =
            connection::open_sentinel(sentinels, master_name, self.master_auth.as_ref()).await?;
        Ok(self.assemble(connection))
    }

    /// Builds the store on a connection manager you made (to one server).
    pub fn build(self, connection: ConnectionManager) -> RedisTokenStore {
        self.assemble(Connection::Node(connection))
    }

    /// Builds the store on a cluster connection you made (for instance with your own TLS
    /// certificates: `redis::cluster::ClusterClientBuilder::certs`).
    ///
    /// A prefix with `{` or `}` is [`Error::Config`].
    pub fn build_cluster(self, connection: ClusterConnection) -> Result<RedisTokenStore, Error> {
        self.check_cluster_prefix()?;
        Ok(self.assemble(Connection::Cluster(connection)))
    }

    fn check_cluster_prefix(&self) -> Result<(), Error> {
        super::names::Layout::HashTagged.check_prefix(&self.prefix)
    }

    fn assemble(self, connection: Connection) -> RedisTokenStore {
        let ttl = match self.refresh_token_lifetime {
            Some(lifetime) => ttl_before(lifetime, self.ttl_margin),
            None => self.default_ttl,
        };
        RedisTokenStore {
            layout: connection.layout(),
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
