//! The connection a store talks through: one server, a cluster, or the master that sentinels
//! name. Every command the store sends goes through [`Connection`], which redis-rs sees as one
//! more [`ConnectionLike`], so the store's commands and scripts are the same for all three.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelNodeConnectionInfo;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisFuture, TlsMode, Value,
};
use zeroize::Zeroizing;

use super::failed;
use super::names::Layout;
use super::sentinel::SentinelConnection;
use crate::error::{ConfigError, Error};

/// How long connecting to a server, and each answer, may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A store's connection. Cloning shares it.
#[derive(Clone)]
pub(super) enum Connection {
    /// One server, reconnected to by redis-rs when the connection drops.
    Node(ConnectionManager),
    /// A cluster: redis-rs routes each command to the master of its key's slot and follows
    /// `MOVED`/`ASK` redirections (slot migrations, failovers).
    Cluster(ClusterConnection),
    /// The master named by sentinels, found again after a failover.
    Sentinel(SentinelConnection),
}

impl Connection {
    /// How this connection's keys are named.
    pub(super) fn layout(&self) -> Layout {
        match self {
            Self::Node(_) | Self::Sentinel(_) => Layout::Plain,
            Self::Cluster(_) => Layout::HashTagged,
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node(_) => f.write_str("Node"),
            Self::Cluster(_) => f.write_str("Cluster"),
            Self::Sentinel(sentinel) => f
                .debug_struct("Sentinel")
                .field("master", &sentinel.master_name())
                .finish(),
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
            Self::Sentinel(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
            Self::Sentinel(connection) => connection.get_db(),
        }
    }
}

/// Credentials for a master found through sentinels, when they differ from the sentinels'.
#[derive(Clone)]
pub(super) struct MasterAuth {
    pub(super) username: Option<String>,
    pub(super) password: Zeroizing<String>,
}

/// Connects to the one server at `url`.
pub(super) async fn open_node(url: &str) -> Result<Connection, Error> {
    let client = redis::Client::open(url).map_err(|_| {
        bad_url(
            "redis url",
            "not a valid redis url (redis://, rediss:// or redis+unix://)".into(),
        )
    })?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(2);
    let connection = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|error| Error::Store(failed("could not connect to redis", error)))?;
    Ok(Connection::Node(connection))
}

/// Connects to the cluster that the nodes at `urls` belong to (one is enough; the others are
/// tried when it does not answer).
pub(super) async fn open_cluster(urls: &[impl AsRef<str>]) -> Result<Connection, Error> {
    let nodes = parse_all("redis cluster urls", urls)?;
    if nodes
        .iter()
        .any(|node| matches!(node.addr(), ConnectionAddr::Unix(_)))
    {
        return Err(bad_url(
            "redis cluster urls",
            "a cluster is reached over TCP (redis:// or rediss://), not a unix socket".into(),
        ));
    }
    let client = ClusterClientBuilder::new(nodes)
        .connection_timeout(TIMEOUT)
        .response_timeout(TIMEOUT)
        // Redirections during a slot migration or a failover are retried; a cluster that stays
        // down fails within seconds, not minutes.
        .retries(8)
        .min_retry_wait(10)
        .max_retry_wait(500)
        .build()
        .map_err(|_| {
            bad_url(
                "redis cluster urls",
                "the urls must share one username, password, database and scheme".into(),
            )
        })?;
    let connection = client
        .get_async_connection()
        .await
        .map_err(|error| Error::Store(failed("could not connect to redis cluster", error)))?;
    Ok(Connection::Cluster(connection))
}

/// Connects to the master named `master_name` by the sentinels at `urls`.
pub(super) async fn open_sentinel(
    urls: &[impl AsRef<str>],
    master_name: &str,
    auth: Option<&MasterAuth>,
) -> Result<Connection, Error> {
    let sentinels = parse_all("redis sentinel urls", urls)?;
    if master_name.is_empty() {
        return Err(bad_url("redis sentinel master", "is empty".into()));
    }
    let Some(first) = sentinels.first() else {
        return Err(bad_url("redis sentinel urls", "no url given".into()));
    };
    let mut master = RedisConnectionInfo::default().set_db(first.redis_settings().db());
    match auth {
        Some(auth) => {
            if let Some(username) = &auth.username {
                master = master.set_username(username);
            }
            master = master.set_password(auth.password.as_str());
        }
        None => {
            if let Some(username) = first.redis_settings().username() {
                master = master.set_username(username);
            }
            if let Some(password) = first.redis_settings().password() {
                master = master.set_password(password);
            }
        }
    }
    let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(master);
    if let ConnectionAddr::TcpTls { insecure, .. } = first.addr() {
        node = node.set_tls_mode(if *insecure {
            TlsMode::Insecure
        } else {
            TlsMode::Secure
        });
    }
    let db = first.redis_settings().db();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let connection = SentinelConnection::connect(sentinels, master_name, node, db, config)
        .await
        .map_err(|error| {
            Error::Store(failed(
                "could not reach the redis master through its sentinels",
                error,
            ))
        })?;
    Ok(Connection::Sentinel(connection))
}

/// Parses every URL; a URL that does not parse is named by its position, never quoted (it may
/// hold a password).
fn parse_all(
    setting: &'static str,
    urls: &[impl AsRef<str>],
) -> Result<Vec<ConnectionInfo>, Error> {
    if urls.is_empty() {
        return Err(bad_url(setting, "no url given".into()));
    }
    urls.iter()
        .enumerate()
        .map(|(index, url)| {
            url.as_ref().into_connection_info().map_err(|_| {
                bad_url(
                    setting,
                    format!(
                        "url #{} is not a valid redis url (redis:// or rediss://)",
                        index + 1
                    ),
                )
            })
        })
        .collect()
}

fn bad_url(setting: &'static str, reason: String) -> Error {
    Error::Config(ConfigError::Store { setting, reason })
}
