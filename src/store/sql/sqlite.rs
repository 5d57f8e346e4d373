//! SQLite: statements, and the refresh lock as a lease row.
//!
//! The lock is a row in the lease table (`<table>_lease`) naming its holder and an expiry.
//! Taking it is one upsert that succeeds only when no row exists or the row has expired; a
//! heartbeat task extends the lease while it is held, so a slow token endpoint does not let a
//! second process in; releasing it deletes the row. A holder that dies stops renewing, and its
//! lease expires. Expiries are wall-clock times; every process sharing a SQLite file runs on
//! the same host, so they share the clock.
//!
//! An immediate transaction would lock the whole database file for the length of a token
//! call, and the store's own save (on another pooled connection) would wait for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::SqlitePool;
use tokio::task::JoinHandle;

use super::errors::{is_contention, store_error};
use super::schema::Table;
use super::{Columns, Row, Write};
use crate::backoff::Backoff;
use crate::key::TokenKey;
use crate::log;
use crate::store::{HeldLock, StoreError, StoreErrorKind, StoreLock};
use std::sync::Arc;

/// Pauses between attempts to take a held lease.
const MAX_PAUSE: Duration = Duration::from_millis(50);
const POLL: Backoff = Backoff::new(Duration::from_millis(2), MAX_PAUSE);

pub(super) async fn fetch(
    pool: &SqlitePool,
    table: &Table,
    key: &str,
) -> Result<Option<Row>, sqlx::Error> {
    let sql = format!(
        "SELECT version, revision, sealed FROM {} WHERE token_key = ?1",
        table.quoted()
    );
    let row: Option<Columns> = sqlx::query_as(&sql).bind(key).fetch_optional(pool).await?;
    Ok(row.map(Row::from))
}

pub(super) async fn insert(
    pool: &SqlitePool,
    table: &Table,
    write: &Write<'_>,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "INSERT INTO {} (token_key, version, sealed, access_expires_at, updated_at, \
         refresh_expires_at, revision) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (token_key) DO NOTHING",
        table.quoted()
    );
    let done = sqlx::query(&sql)
        .bind(write.key)
        .bind(write.version)
        .bind(&write.sealed)
        .bind(write.access_expires_at)
        .bind(unix_seconds())
        .bind(write.refresh_expires_at)
        .bind(write.revision)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn update(
    pool: &SqlitePool,
    table: &Table,
    write: &Write<'_>,
    expected: &str,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "UPDATE {} SET version = ?2, sealed = ?3, access_expires_at = ?4, updated_at = ?5, \
         refresh_expires_at = ?7, revision = ?8 \
         WHERE token_key = ?1 AND COALESCE(revision, 'legacy-' || version) = ?6",
        table.quoted()
    );
    let done = sqlx::query(&sql)
        .bind(write.key)
        .bind(write.version)
        .bind(&write.sealed)
        .bind(write.access_expires_at)
        .bind(unix_seconds())
        .bind(expected)
        .bind(write.refresh_expires_at)
        .bind(write.revision)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Creates the tables, and adds the `revision` column to a token table created without it
/// (SQLite has no `ADD COLUMN IF NOT EXISTS`: a process that loses the race to add it sees a
/// duplicate column, which is what it wanted).
pub(super) async fn migrate(pool: &SqlitePool, table: &Table) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(&table.render(super::schema::SQLITE))
        .execute(pool)
        .await?;
    let probe = format!("SELECT revision FROM {} LIMIT 0", table.quoted());
    if sqlx::query(&probe).execute(pool).await.is_err() {
        let add = format!("ALTER TABLE {} ADD COLUMN revision TEXT", table.quoted());
        match sqlx::query(&add).execute(pool).await {
            Err(sqlx::Error::Database(error)) if error.message().contains("duplicate column") => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// Takes the lease of `key` for `lease`, waiting up to `timeout` for its holder to release it
/// or die.
pub(super) async fn lock(
    pool: &SqlitePool,
    table: &Table,
    key: &TokenKey,
    timeout: Duration,
    lease: Duration,
) -> Result<StoreLock, StoreError> {
    let holder = holder_id();
    let acquire = format!(
        "INSERT INTO {} (token_key, holder, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (token_key) DO UPDATE SET holder = excluded.holder, \
         expires_at = excluded.expires_at WHERE expires_at <= ?4",
        table.lease()
    );
    let deadline = Instant::now() + timeout;
    let mut pauses = POLL.pauses();
    loop {
        let now = unix_millis();
        let attempt = sqlx::query(&acquire)
            .bind(key.as_str())
            .bind(&holder)
            .bind(now.saturating_add(millis(lease)))
            .bind(now)
            .execute(pool)
            .await;
        match attempt {
            Ok(done) if done.rows_affected() == 1 => break,
            Ok(_) => {}
            Err(error) if is_contention(&error) => {}
            Err(error) => {
                return Err(store_error(
                    error,
                    table,
                    &format!("taking the refresh lease of `{key}`"),
                ))
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StoreError::new(
                StoreErrorKind::LockTimeout,
                format!(
                    "timed out after {timeout:?} waiting for the refresh lease of `{key}` in \
                     table `{}` (longer than a lease: its holder is alive and busy)",
                    table.name()
                ),
            ));
        }
        tokio::time::sleep(pauses.next().unwrap_or(MAX_PAUSE).min(left)).await;
    }
    let lost = Arc::new(AtomicBool::new(false));
    let lease_row = LeaseRow {
        pool: pool.clone(),
        table: table.clone(),
        key: key.clone(),
        holder,
    };
    let heartbeat = tokio::spawn(renew(lease_row.clone(), lease, Arc::clone(&lost)));
    let held = Lease {
        row: lease_row,
        heartbeat,
        released: false,
    };
    Ok(StoreLock::held(held).with_loss_flag(lost))
}

/// Which lease row a holder owns.
#[derive(Clone)]
struct LeaseRow {
    pool: SqlitePool,
    table: Table,
    key: TokenKey,
    holder: String,
}

impl LeaseRow {
    /// Deletes the row if it is still ours (a lease that expired may be someone else's now).
    async fn delete(&self) {
        let sql = format!(
            "DELETE FROM {} WHERE token_key = ?1 AND holder = ?2",
            self.table.lease()
        );
        let deleted = sqlx::query(&sql)
            .bind(self.key.as_str())
            .bind(&self.holder)
            .execute(&self.pool)
            .await;
        if let Err(error) = deleted {
            log::warn!(key = %self.key, %error, "cannot release the refresh lease; it will expire");
        }
    }
}

/// Extends the lease every third of its length until aborted or the lease is lost.
async fn renew(row: LeaseRow, lease: Duration, lost: Arc<AtomicBool>) {
    let mut renewed_at = std::time::Instant::now();
    let sql = format!(
        "UPDATE {} SET expires_at = ?3 WHERE token_key = ?1 AND holder = ?2",
        row.table.lease()
    );
    loop {
        tokio::time::sleep(lease / 3).await;
        let renewed = sqlx::query(&sql)
            .bind(row.key.as_str())
            .bind(&row.holder)
            .bind(unix_millis().saturating_add(millis(lease)))
            .execute(&row.pool)
            .await;
        match renewed {
            Ok(done) if done.rows_affected() == 1 => renewed_at = std::time::Instant::now(),
            Ok(_) => {
                log::warn!(key = %row.key, "refresh lease lost (expired while held); conditional writes still protect the record");
                lost.store(true, Ordering::Release);
                return;
            }
            Err(error) => {
                log::warn!(key = %row.key, %error, "cannot renew the refresh lease; retrying");
                if renewed_at.elapsed() >= lease {
                    lost.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }
}

/// A held lease. [`HeldLock::release`] deletes its row and waits for the database; dropping
/// it unreleased does the same in the background, and if no runtime is left the lease expires.
struct Lease {
    row: LeaseRow,
    heartbeat: JoinHandle<()>,
    released: bool,
}

#[async_trait]
impl HeldLock for Lease {
    async fn is_held(&self) -> bool {
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE token_key = ?1 AND holder = ?2 AND expires_at > ?3",
            self.row.table.lease()
        );
        let held: Result<i64, _> = sqlx::query_scalar(&sql)
            .bind(self.row.key.as_str())
            .bind(&self.row.holder)
            .bind(unix_millis())
            .fetch_one(&self.row.pool)
            .await;
        matches!(held, Ok(1))
    }

    async fn release(mut self: Box<Self>) {
        self.heartbeat.abort();
        self.row.delete().await;
        // Only now: a release abandoned during the delete is finished by `drop` (deleting a
        // lease row that is no longer ours does nothing).
        self.released = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if self.released {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let row = self.row.clone();
        runtime.spawn(async move { row.delete().await });
    }
}

/// Unique among live holders: the process id, the start time of this process's first lock and
/// a counter.
fn holder_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static STARTED: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let started = STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos())
    });
    format!(
        "{}-{started}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
