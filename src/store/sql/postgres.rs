//! PostgreSQL: statements, and the refresh lock as a session advisory lock.
//!
//! The lock is `pg_advisory_lock` on a 64-bit hash of the table and key, taken on a connection
//! of its own, opened with the pool's options but outside the pool. Releasing it closes that
//! connection; the server ends the session, and with it the lock. The same happens when the
//! holder dies or its network goes away, so a lock is never left behind; and a session that
//! dies under a live holder is noticed (the connection is pinged while held and before every
//! token call).
//!
//! Keeping the lock connection out of the pool has two reasons: the store's loads and saves
//! under the lock can never wait for a pool that the locks have drained, whatever its size;
//! and no pooled connection ever carries a session lock, which another task of this process
//! would otherwise re-enter (advisory locks are re-entrant per session).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::errors::store_error;
use super::schema::Table;
use super::{Columns, Row, Write};
use crate::key::TokenKey;
use crate::log;
use crate::store::{HeldLock, StoreError, StoreErrorKind, StoreLock};

pub(super) async fn fetch(
    pool: &PgPool,
    table: &Table,
    key: &str,
) -> Result<Option<Row>, sqlx::Error> {
    let sql = format!(
        "SELECT version, revision, sealed FROM {} WHERE token_key = $1",
        table.quoted()
    );
    let row: Option<Columns> = sqlx::query_as(&sql).bind(key).fetch_optional(pool).await?;
    Ok(row.map(Row::from))
}

pub(super) async fn insert(
    pool: &PgPool,
    table: &Table,
    write: &Write<'_>,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "INSERT INTO {} (token_key, version, sealed, access_expires_at, refresh_expires_at, \
         updated_at, revision) \
         VALUES ($1, $2, $3, to_timestamp($4::bigint), to_timestamp($5::bigint), now(), $6) \
         ON CONFLICT (token_key) DO NOTHING",
        table.quoted()
    );
    let done = sqlx::query(&sql)
        .bind(write.key)
        .bind(write.version)
        .bind(&write.sealed)
        .bind(write.access_expires_at)
        .bind(write.refresh_expires_at)
        .bind(write.revision)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn update(
    pool: &PgPool,
    table: &Table,
    write: &Write<'_>,
    expected: &str,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "UPDATE {} SET version = $2, sealed = $3, access_expires_at = to_timestamp($4::bigint), \
         refresh_expires_at = to_timestamp($6::bigint), updated_at = now(), revision = $7 \
         WHERE token_key = $1 AND COALESCE(revision, 'legacy-' || version) = $5",
        table.quoted()
    );
    let done = sqlx::query(&sql)
        .bind(write.key)
        .bind(write.version)
        .bind(&write.sealed)
        .bind(write.access_expires_at)
        .bind(expected)
        .bind(write.refresh_expires_at)
        .bind(write.revision)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Creates the table. Concurrent `CREATE TABLE IF NOT EXISTS` can fail on PostgreSQL's
/// catalogs, so migrations of one table are serialized with a transaction-scoped lock.
pub(super) async fn migrate(pool: &PgPool, table: &Table) -> Result<(), sqlx::Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(table.lock_id(""))
        .execute(&mut *transaction)
        .await?;
    sqlx::raw_sql(&table.render(super::schema::POSTGRES))
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await
}

/// Takes the advisory lock of `key` on a dedicated connection, waiting up to `timeout`.
pub(super) async fn lock(
    pool: &PgPool,
    table: &Table,
    key: &TokenKey,
    timeout: Duration,
) -> Result<StoreLock, StoreError> {
    let doing = format!("taking the refresh lock of `{key}`");
    let timed_out = || {
        StoreError::new(
            StoreErrorKind::LockTimeout,
            format!(
                "timed out after {timeout:?} waiting for the refresh lock of `{key}` in table `{}`",
                table.name()
            ),
        )
    };
    let deadline = Instant::now() + timeout;
    let options = pool.connect_options();
    let mut connection = match tokio::time::timeout(timeout, options.connect()).await {
        Ok(connected) => connected.map_err(|error| store_error(error, table, &doing))?,
        Err(_) => {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                format!(
                    "cannot connect within {timeout:?} while {doing} in table `{}`",
                    table.name()
                ),
            ))
        }
    };
    // The server enforces the wait, so a timed-out waiter leaves nothing queued behind it.
    let left = deadline.saturating_duration_since(Instant::now());
    // If the holder's host dies without closing the socket, the server would keep the session
    // (and the lock) until kernel keepalive gives up, two hours by default: probe sooner.
    sqlx::query(
        "SELECT set_config('tcp_keepalives_idle', '10', false), \
                set_config('tcp_keepalives_interval', '5', false), \
                set_config('tcp_keepalives_count', '3', false)",
    )
    .execute(&mut connection)
    .await
    .map_err(|error| store_error(error, table, &doing))?;
    let lock_timeout = format!("{}ms", left.as_millis().max(1));
    let locked = async {
        sqlx::query("SELECT set_config('lock_timeout', $1, false)")
            .bind(&lock_timeout)
            .execute(&mut connection)
            .await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(table.lock_id(key.as_str()))
            .execute(&mut connection)
            .await
    };
    // A backstop in case the server ignores lock_timeout; dropping the connection then ends
    // the wait on the server.
    match tokio::time::timeout(left + Duration::from_secs(5), locked).await {
        Ok(Ok(_)) => Ok(AdvisoryLock::held(connection, key.clone())),
        Ok(Err(error)) => {
            let error = store_error(error, table, &doing);
            if error.kind() == StoreErrorKind::LockTimeout {
                Err(timed_out())
            } else {
                Err(error)
            }
        }
        Err(_) => Err(timed_out()),
    }
}

/// How often a held lock's session is pinged, and how long a ping may take.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection holding a session advisory lock, pinged while held: the lock lives exactly as
/// long as the session, and a session can die under a live holder (`idle_session_timeout`,
/// `pg_terminate_backend`, a network cut). A failed ping raises the loss flag; the holder also
/// pings before every call to the token endpoint.
///
/// [`HeldLock::release`] closes the connection, and the server releases the lock with the
/// session. Dropping it unreleased closes the socket at once (no runtime needed), which the
/// server treats the same way, as it does when the holder dies.
struct AdvisoryLock {
    connection: Arc<Mutex<Option<PgConnection>>>,
    heartbeat: JoinHandle<()>,
    key: TokenKey,
}

impl AdvisoryLock {
    fn held(connection: PgConnection, key: TokenKey) -> StoreLock {
        let connection = Arc::new(Mutex::new(Some(connection)));
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(Self::heartbeat(
            Arc::clone(&connection),
            Arc::clone(&lost),
            key.clone(),
        ));
        StoreLock::held(Self {
            connection,
            heartbeat,
            key,
        })
        .with_loss_flag(lost)
    }

    /// Whether the session answers.
    async fn ping(connection: &Mutex<Option<PgConnection>>) -> bool {
        let mut connection = connection.lock().await;
        let Some(connection) = connection.as_mut() else {
            return false;
        };
        let pinged =
            tokio::time::timeout(PING_TIMEOUT, sqlx::query("SELECT 1").execute(connection));
        matches!(pinged.await, Ok(Ok(_)))
    }

    async fn heartbeat(
        connection: Arc<Mutex<Option<PgConnection>>>,
        lost: Arc<AtomicBool>,
        key: TokenKey,
    ) {
        loop {
            tokio::time::sleep(PING_EVERY).await;
            if !Self::ping(&connection).await {
                log::warn!(%key, "the session holding the refresh lock is gone; the lock is lost");
                lost.store(true, Ordering::Release);
                return;
            }
        }
    }
}

#[async_trait]
impl HeldLock for AdvisoryLock {
    async fn is_held(&self) -> bool {
        Self::ping(&self.connection).await
    }

    async fn release(self: Box<Self>) {
        self.heartbeat.abort();
        let connection = self.connection.lock().await.take();
        if let Some(connection) = connection {
            // A clean goodbye: the server ends the session, and with it the lock.
            if let Err(error) = connection.close().await {
                log::debug!(key = %self.key, %error, "closing the lock connection failed; dropped");
            }
        }
    }
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}
