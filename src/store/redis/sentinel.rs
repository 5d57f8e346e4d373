//! A connection to the master that Redis Sentinel names, found again after a failover.
//!
//! redis-rs finds the master through the sentinels (and checks with `ROLE` that it is one), but
//! its connections stay with the server they were opened to. This one asks the sentinels again
//! whenever the master it holds stops being usable: its connection broke (Sentinel closes the
//! clients of a server it demotes) or it answered `READONLY` (it is a replica now). The command
//! is then sent once more, to the master the sentinels name now. That is safe for every command
//! the store sends, even one the old master ran before its connection broke: reads, a lease
//! taken with a token of its own (a repeat finds it taken and waits out that lease), a renewal
//! and a release conditional on that token, and saves conditional on the stored revision (a
//! repeat conflicts and is told what is stored). When the new master cannot be reached either,
//! the error is returned: the store's callers treat it as transient.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionInfo, ErrorKind, Pipeline, RedisError, RedisFuture,
    RedisResult, ServerErrorKind, Value,
};

/// How long asking the sentinels for the master may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the failure of asking is the answer for the commands that waited for it, so a
/// burst of commands during a failover asks a few times, not once each.
const DISCOVERY_FAILURE_HOLDS: Duration = Duration::from_millis(250);

/// A handle on the master named `master_name`; clones share one connection.
#[derive(Clone)]
pub(super) struct SentinelConnection {
    shared: Arc<Shared>,
}

struct Shared {
    master_name: String,
    node: SentinelNodeConnectionInfo,
    db: i64,
    config: AsyncConnectionConfig,
    /// One discovery at a time (the sentinels' own connections are cached inside), and when
    /// and how the last one failed.
    sentinels: tokio::sync::Mutex<(Sentinel, Option<(Instant, RedisError)>)>,
    /// The master in use, `None` once it proved unusable.
    master: Mutex<Option<Arc<MultiplexedConnection>>>,
}

impl SentinelConnection {
    /// Asks `sentinels` for the master named `master_name` and connects to it with `node`'s
    /// credentials and TLS mode.
    pub(super) async fn connect(
        sentinels: Vec<ConnectionInfo>,
        master_name: &str,
        node: SentinelNodeConnectionInfo,
        db: i64,
        config: AsyncConnectionConfig,
    ) -> RedisResult<Self> {
        let connection = Self {
            shared: Arc::new(Shared {
                master_name: master_name.to_owned(),
                node,
                db,
                config,
                sentinels: tokio::sync::Mutex::new((Sentinel::build(sentinels)?, None)),
                master: Mutex::new(None),
            }),
        };
        connection.master().await?;
        Ok(connection)
    }

    /// The name of the master the sentinels are asked for.
    pub(super) fn master_name(&self) -> &str {
        &self.shared.master_name
    }

    /// The master in use, or the one the sentinels name now.
    async fn master(&self) -> RedisResult<Arc<MultiplexedConnection>> {
        if let Some(master) = self.held() {
            return Ok(master);
        }
        let mut discovery = self.shared.sentinels.lock().await;
        // Another command may have found it, or failed to, while this one waited.
        if let Some(master) = self.held() {
            return Ok(master);
        }
        if let Some((at, error)) = &discovery.1 {
            if at.elapsed() < DISCOVERY_FAILURE_HOLDS {
                return Err(error.clone());
            }
        }
        let (sentinels, failure) = &mut *discovery;
        let found = tokio::time::timeout(DISCOVERY_TIMEOUT, async {
            let client = sentinels
                .async_master_for(&self.shared.master_name, Some(&self.shared.node))
                .await?;
            client
                .get_multiplexed_async_connection_with_config(&self.shared.config)
                .await
        })
        .await
        .map_err(|_| {
            RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the sentinels did not name a reachable master in time",
            ))
        })
        .and_then(|found| found);
        let found = match found {
            Ok(found) => found,
            Err(error) => {
                *failure = Some((Instant::now(), error.clone()));
                return Err(error);
            }
        };
        *failure = None;
        let master = Arc::new(found);
        *self.slot() = Some(Arc::clone(&master));
        Ok(master)
    }

    fn held(&self) -> Option<Arc<MultiplexedConnection>> {
        self.slot().clone()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<MultiplexedConnection>>> {
        self.shared
            .master
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops using `master` (unless another command replaced it already).
    fn forget(&self, master: &Arc<MultiplexedConnection>) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|held| Arc::ptr_eq(held, master)) {
            *slot = None;
        }
    }

    /// Forgets `master` if `result` shows that it is gone or no longer the master; whether it
    /// did.
    fn check<T>(&self, master: &Arc<MultiplexedConnection>, result: &RedisResult<T>) -> bool {
        let gone = result
            .as_ref()
            .is_err_and(|error| is_connection_lost(error) || is_replica_refusal(error));
        if gone {
            self.forget(master);
        }
        gone
    }

    async fn request(&self, cmd: &Cmd) -> RedisResult<Value> {
        let master = self.master().await?;
        let answer = send(&master, cmd).await;
        if !self.check(&master, &answer) {
            return answer;
        }
        // Demoted or gone (a failover): once more, to the master the sentinels name now.
        let master = self.master().await?;
        let answer = send(&master, cmd).await;
        self.check(&master, &answer);
        answer
    }

    async fn request_pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let master = self.master().await?;
        let answer = (*master)
            .clone()
            .send_packed_commands(pipeline, offset, count)
            .await;
        self.check(&master, &answer);
        answer
    }
}

/// Sends `cmd` to `master`; a server error in the answer is returned as an error.
async fn send(master: &MultiplexedConnection, cmd: &Cmd) -> RedisResult<Value> {
    match master.clone().send_packed_command(cmd).await? {
        Value::ServerError(error) => Err(error.into()),
        value => Ok(value),
    }
}

/// A broken, refused or timed-out connection: the master may be gone.
fn is_connection_lost(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
}

/// `READONLY`: the server is a replica now, and did not run the command.
fn is_replica_refusal(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) || error.code() == Some("READONLY")
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.request(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.request_pipeline(pipeline, offset, count))
    }

    fn get_db(&self) -> i64 {
        self.shared.db
    }
}
