//! The cross-process lock: a lease (`SET NX PX` with a random token), renewed while held,
//! checked before every token call, released by compare-and-delete. Every script here touches
//! one key, the lock, so it runs on any topology.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::Script;

use super::connection::Connection;
use super::{millis, redis_error};
use crate::backoff::Backoff;
use crate::log;
use crate::store::{HeldLock, StoreError, StoreErrorKind, StoreLock};

/// Deletes the lock only if it still holds our token (our lease has not expired and been
/// taken by someone else).
static RELEASE_IF_OURS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// Extends the lease only if it is still ours.
static RENEW_IF_OURS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Pauses between attempts to take a held lock.
const LOCK_POLL_MAX: Duration = Duration::from_millis(100);
const LOCK_POLL: Backoff = Backoff::new(Duration::from_millis(2), LOCK_POLL_MAX);

/// Takes the lock `name` for `lease`, waiting up to `wait` for another holder.
pub(super) async fn acquire(
    mut connection: Connection,
    name: String,
    lease: Duration,
    wait: Duration,
) -> Result<StoreLock, StoreError> {
    let token = hex::encode(crate::revision::random_bytes::<16>());
    let started = Instant::now();
    let mut pauses = LOCK_POLL.pauses();
    loop {
        let taken: Option<String> = redis::cmd("SET")
            .arg(&name)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(millis(lease))
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        if taken.is_some() {
            let lost = Arc::new(AtomicBool::new(false));
            let renewal = tokio::spawn(renew(
                connection.clone(),
                name.clone(),
                token.clone(),
                lease,
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
        if waited >= wait {
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

/// Keeps a held lease alive (every third of its length) while its holder works, so a slow
/// token endpoint cannot let a second replica in; stops once the lease is no longer ours.
async fn renew(
    mut connection: Connection,
    name: String,
    token: String,
    lease: Duration,
    lost: Arc<AtomicBool>,
) {
    let mut renewed_at = Instant::now();
    loop {
        tokio::time::sleep(lease / 3).await;
        let renewed: redis::RedisResult<i64> = RENEW_IF_OURS
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
    connection: Connection,
    name: String,
    token: String,
    renewal: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Lease {
    async fn delete(mut connection: Connection, name: &str, token: &str) {
        let released: redis::RedisResult<i64> = RELEASE_IF_OURS
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
        Self::delete(self.connection.clone(), &self.name, &self.token).await;
        // Only now: a release abandoned during the delete is finished by `drop` (deleting a
        // lease that is no longer ours does nothing).
        self.released = true;
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
