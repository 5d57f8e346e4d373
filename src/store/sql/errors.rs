//! Turns `sqlx` errors into [`StoreError`]s with a kind and a hint. Messages name the table and
//! the key, never a value.

use super::schema::Table;
use crate::store::{StoreError, StoreErrorKind};

/// What went wrong, independent of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    MissingTable,
    SchemaMismatch,
    Busy,
    Unavailable,
    LockTimeout,
    CorruptDatabase,
    Misconfigured,
    Other,
}

/// `error` met while `doing` (e.g. "loading `user-1`") on `table`.
pub(super) fn store_error(error: sqlx::Error, table: &Table, doing: &str) -> StoreError {
    let name = table.name();
    let (kind, message) = match classify(&error) {
        Cause::MissingTable => (
            StoreErrorKind::Misconfigured,
            format!("table `{name}` missing; run SqlTokenStore::migrate()"),
        ),
        Cause::SchemaMismatch => (
            StoreErrorKind::Misconfigured,
            format!(
                "table `{name}` does not have the expected columns; compare it with \
                 SqlTokenStore::schema()"
            ),
        ),
        Cause::Busy => (
            StoreErrorKind::Unavailable,
            format!("database busy while {doing} in table `{name}`; retry later"),
        ),
        Cause::Unavailable => (
            StoreErrorKind::Unavailable,
            format!("database unavailable while {doing} in table `{name}`"),
        ),
        Cause::LockTimeout => (
            StoreErrorKind::LockTimeout,
            format!("timed out while {doing} in table `{name}`"),
        ),
        Cause::CorruptDatabase => (
            StoreErrorKind::Corrupt,
            format!("database file is corrupt or not a database while {doing}"),
        ),
        Cause::Misconfigured => (
            StoreErrorKind::Misconfigured,
            format!("database connection misconfigured while {doing} in table `{name}`"),
        ),
        Cause::Other => (
            StoreErrorKind::Other,
            format!("database error while {doing} in table `{name}`"),
        ),
    };
    StoreError::new(kind, message).with_source(error)
}

/// Whether `error` is a lock wait that gave up (SQLite busy, PostgreSQL `lock_not_available`),
/// worth another try while a deadline allows.
#[cfg(feature = "sqlite")]
pub(super) fn is_contention(error: &sqlx::Error) -> bool {
    matches!(classify(error), Cause::Busy | Cause::LockTimeout)
}

fn classify(error: &sqlx::Error) -> Cause {
    match error {
        sqlx::Error::Database(database) => {
            let code = database.code().map(std::borrow::Cow::into_owned);
            let code = code.as_deref();
            if is_sqlite(database.as_ref()) {
                code.and_then(|code| code.parse().ok())
                    .map_or(Cause::Other, |code| {
                        classify_sqlite(code, database.message())
                    })
            } else {
                classify_postgres(code)
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Cause::Unavailable,
        sqlx::Error::Configuration(_) => Cause::Misconfigured,
        sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::TypeNotFound { .. } => Cause::SchemaMismatch,
        _ => Cause::Other,
    }
}

/// SQLite reports numeric result codes, PostgreSQL SQLSTATEs (which may be all digits too).
fn is_sqlite(error: &dyn sqlx::error::DatabaseError) -> bool {
    #[cfg(feature = "sqlite")]
    {
        error
            .try_downcast_ref::<sqlx::sqlite::SqliteError>()
            .is_some()
    }
    #[cfg(not(feature = "sqlite"))]
    {
        let _ = error;
        false
    }
}

fn classify_postgres(code: Option<&str>) -> Cause {
    let Some(code) = code else {
        return Cause::Other;
    };
    match code {
        // undefined_table
        "42P01" => Cause::MissingTable,
        // undefined_column, datatype_mismatch, wrong_object_type
        "42703" | "42804" | "42809" => Cause::SchemaMismatch,
        // lock_not_available (lock_timeout), query_canceled (statement_timeout)
        "55P03" | "57014" => Cause::LockTimeout,
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => Cause::Busy,
        // connection exceptions, insufficient resources, operator intervention (shutdown),
        // read-only transaction (a standby after failover)
        _ if code.starts_with("08") || code.starts_with("53") || code.starts_with("57") => {
            Cause::Unavailable
        }
        "25006" => Cause::Unavailable,
        // invalid_authorization_specification, invalid_password, insufficient_privilege
        "28000" | "28P01" | "42501" => Cause::Misconfigured,
        _ => Cause::Other,
    }
}

fn classify_sqlite(code: u32, message: &str) -> Cause {
    // The primary result code is the low byte of the extended one.
    match code & 0xff {
        // SQLITE_BUSY, SQLITE_LOCKED
        5 | 6 => Cause::Busy,
        // SQLITE_CORRUPT, SQLITE_NOTADB
        11 | 26 => Cause::CorruptDatabase,
        // SQLITE_NOMEM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN,
        // SQLITE_PROTOCOL
        7 | 8 | 10 | 13 | 14 | 15 => Cause::Unavailable,
        // SQLITE_AUTH, SQLITE_PERM
        23 | 3 => Cause::Misconfigured,
        // SQLITE_ERROR: the message tells which.
        1 if message.starts_with("no such table") => Cause::MissingTable,
        1 if message.starts_with("no such column") || message.contains("has no column named") => {
            Cause::SchemaMismatch
        }
        _ => Cause::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_sqlstates_map_to_kinds() {
        assert_eq!(classify_postgres(Some("42P01")), Cause::MissingTable);
        assert_eq!(classify_postgres(Some("42703")), Cause::SchemaMismatch);
        assert_eq!(classify_postgres(Some("55P03")), Cause::LockTimeout);
        assert_eq!(classify_postgres(Some("57P01")), Cause::Unavailable);
        assert_eq!(classify_postgres(Some("08006")), Cause::Unavailable);
        assert_eq!(classify_postgres(Some("40001")), Cause::Busy);
        assert_eq!(classify_postgres(Some("23505")), Cause::Other);
        assert_eq!(classify_postgres(None), Cause::Other);
    }

    #[test]
    fn sqlite_result_codes_map_to_kinds() {
        assert_eq!(
            classify_sqlite(1, "no such table: tokens"),
            Cause::MissingTable
        );
        assert_eq!(
            classify_sqlite(1, "table tokens has no column named sealed"),
            Cause::SchemaMismatch
        );
        // SQLITE_BUSY_SNAPSHOT is an extended SQLITE_BUSY.
        assert_eq!(classify_sqlite(517, ""), Cause::Busy);
        assert_eq!(classify_sqlite(26, ""), Cause::CorruptDatabase);
        assert_eq!(classify_sqlite(14, ""), Cause::Unavailable);
        assert_eq!(classify_sqlite(1, "syntax error"), Cause::Other);
    }

    #[test]
    fn messages_are_lowercase_and_carry_the_hint() {
        let table = Table::parse("tokens").unwrap();
        let error = store_error(sqlx::Error::PoolTimedOut, &table, "loading `k`");
        assert_eq!(error.kind(), StoreErrorKind::Unavailable);
        assert_eq!(
            error.to_string(),
            "database unavailable while loading `k` in table `tokens`"
        );
    }
}
