//! The table name, checked once, and the schema files shipped with the crate.

use crate::error::ConfigError;

/// The PostgreSQL schema; `{table}` is replaced by the quoted table name.
#[cfg(feature = "postgres")]
pub(super) const POSTGRES: &str = include_str!("postgres.sql");
/// The SQLite schema; `{table}` and `{lease}` are replaced by the quoted table names.
#[cfg(feature = "sqlite")]
pub(super) const SQLITE: &str = include_str!("sqlite.sql");

/// The table used when none is configured.
const DEFAULT_TABLE: &str = "oauth_tokens";
/// Appended to the table name to name the SQLite lease table.
const LEASE_SUFFIX: &str = "_lease";
/// PostgreSQL truncates identifiers longer than this; refuse them instead.
const MAX_IDENTIFIER: usize = 63;

/// A table name that is safe to splice into SQL: one or two dot-separated parts
/// (`table` or `schema.table`) of lowercase ASCII letters, digits and underscores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Table {
    /// As the user wrote it, for messages.
    name: String,
    /// Quoted, for SQL.
    quoted: String,
    /// The lease table (SQLite), quoted.
    lease: String,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            name: DEFAULT_TABLE.to_owned(),
            quoted: format!("\"{DEFAULT_TABLE}\""),
            lease: format!("\"{DEFAULT_TABLE}{LEASE_SUFFIX}\""),
        }
    }
}

impl Table {
    pub(super) fn parse(name: &str) -> Result<Self, ConfigError> {
        let invalid = |why: &str| ConfigError::Store {
            setting: "table",
            reason: format!("invalid table name `{}`: {why}", name.escape_debug()),
        };
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() > 2 {
            return Err(invalid("use `table` or `schema.table`"));
        }
        for part in &parts {
            let valid_start = part
                .chars()
                .next()
                .is_some_and(|first| first.is_ascii_lowercase() || first == '_');
            let valid_rest = part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid_start || !valid_rest {
                return Err(invalid(
                    "use lowercase ascii letters, digits and underscores, not starting with a digit",
                ));
            }
            if part.len() + LEASE_SUFFIX.len() > MAX_IDENTIFIER {
                return Err(invalid("too long"));
            }
        }
        let quote = |parts: &[&str]| {
            parts
                .iter()
                .map(|part| format!("\"{part}\""))
                .collect::<Vec<_>>()
                .join(".")
        };
        let mut lease_parts: Vec<String> = parts.iter().map(|part| (*part).to_owned()).collect();
        if let Some(last) = lease_parts.last_mut() {
            last.push_str(LEASE_SUFFIX);
        }
        let lease_refs: Vec<&str> = lease_parts.iter().map(String::as_str).collect();
        Ok(Self {
            name: name.to_owned(),
            quoted: quote(&parts),
            lease: quote(&lease_refs),
        })
    }

    /// The name as configured.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The quoted token table, ready for SQL.
    pub(super) fn quoted(&self) -> &str {
        &self.quoted
    }

    /// The quoted lease table, ready for SQL.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(super) fn lease(&self) -> &str {
        &self.lease
    }

    /// `template` with the table names filled in.
    pub(super) fn render(&self, template: &str) -> String {
        template
            .replace("{table}", &self.quoted)
            .replace("{lease}", &self.lease)
    }

    /// A stable 64-bit id for `what` in this table (FNV-1a), for PostgreSQL advisory locks.
    /// Stable across processes, builds and Rust versions; a collision only serializes two
    /// keys' refreshes.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(super) fn lock_id(&self, what: &str) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in "reqwest-token-refresh"
            .bytes()
            .chain([0])
            .chain(self.name.bytes())
            .chain([0])
            .chain(what.bytes())
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        i64::from_ne_bytes(hash.to_ne_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_schema_qualified_names_are_quoted() {
        let table = Table::parse("oauth_tokens").unwrap();
        assert_eq!(table.quoted(), "\"oauth_tokens\"");
        assert_eq!(table.lease(), "\"oauth_tokens_lease\"");
        let table = Table::parse("auth.tokens_2").unwrap();
        assert_eq!(table.quoted(), "\"auth\".\"tokens_2\"");
        assert_eq!(table.lease(), "\"auth\".\"tokens_2_lease\"");
    }

    #[test]
    fn the_default_table_is_a_valid_name() {
        assert_eq!(Table::default(), Table::parse(DEFAULT_TABLE).unwrap());
    }

    #[test]
    fn names_that_could_inject_sql_are_refused() {
        for name in [
            "",
            "tokens; drop table users",
            "\"tokens\"",
            "Tokens",
            "1tokens",
            "a.b.c",
            "a.",
            "tökens",
            &"t".repeat(60),
        ] {
            let error = Table::parse(name).unwrap_err();
            assert!(
                matches!(
                    error,
                    ConfigError::Store {
                        setting: "table",
                        ..
                    }
                ),
                "{name}: {error}"
            );
        }
    }

    #[test]
    fn lock_ids_are_stable_and_distinct() {
        let table = Table::parse("oauth_tokens").unwrap();
        // Processes of different builds must agree: the value is pinned.
        assert_eq!(table.lock_id("user-1"), -8_334_555_559_274_835_175);
        assert_ne!(table.lock_id("user-1"), table.lock_id("user-2"));
        let other = Table::parse("other_tokens").unwrap();
        assert_ne!(table.lock_id("user-1"), other.lock_id("user-1"));
    }
}
