//! Where a key's record and lock live in the keyspace, on one server and on a cluster.
//!
//! On one server (also behind sentinels) the names are those of every earlier version:
//! `prefix + "tokens:" + name` and `prefix + "lock:" + name`. On a cluster the key's name is
//! wrapped in a hash tag, `prefix + "tokens:{" + name + "}"` and `prefix + "lock:{" + name +
//! "}"`, so that a record and its lock always hash to the same slot: one master answers for
//! both, and a slot migration moves them together. Inside the tag, `%`, `{` and `}` are
//! percent-encoded (so a name cannot end the tag early or leave it empty), and the empty name
//! is written `%`.
//!
//! Either way the seal binds the one-server record name (the key's *logical* name): a record
//! copied from a single server into a cluster under its tagged name still opens, and a value
//! copied to another key still does not.

use crate::error::{ConfigError, Error};

/// How record and lock names are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// One server, or a master found through sentinels: the names of every earlier version.
    Plain,
    /// A cluster: the key's name in a hash tag.
    HashTagged,
}

/// The Redis keys of one token key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Names {
    /// The hash holding the sealed record.
    pub(super) record: String,
    /// The lease lock.
    pub(super) lock: String,
    /// What the seal binds: the record's name on one server.
    pub(super) sealed_as: String,
}

impl Layout {
    /// The names for the key named `name` (as given, or its HMAC) under `prefix`.
    pub(super) fn names(self, prefix: &str, name: &str) -> Names {
        let sealed_as = format!("{prefix}tokens:{name}");
        match self {
            Self::Plain => Names {
                lock: format!("{prefix}lock:{name}"),
                record: sealed_as.clone(),
                sealed_as,
            },
            Self::HashTagged => {
                let tag = hash_tag(name);
                Names {
                    record: format!("{prefix}tokens:{tag}"),
                    lock: format!("{prefix}lock:{tag}"),
                    sealed_as,
                }
            }
        }
    }

    /// Refuses a prefix that would take the hash tag over: on a cluster the store places the
    /// tags itself, and a brace in the prefix would split a record from its lock.
    pub(super) fn check_prefix(self, prefix: &str) -> Result<(), Error> {
        if self == Self::HashTagged && prefix.contains(['{', '}']) {
            return Err(Error::Config(ConfigError::Store {
                setting: "redis prefix",
                reason: "must not contain `{` or `}` on a cluster: the store places the hash \
                         tags itself"
                    .into(),
            }));
        }
        Ok(())
    }
}

/// `{name}`, with `%`, `{` and `}` percent-encoded and the empty name written `%` (which no
/// other name encodes to), so the tag is never empty and never ends early.
fn hash_tag(name: &str) -> String {
    let mut tag = String::with_capacity(name.len() + 2);
    tag.push('{');
    if name.is_empty() {
        tag.push('%');
    }
    for character in name.chars() {
        match character {
            '%' => tag.push_str("%25"),
            '{' => tag.push_str("%7B"),
            '}' => tag.push_str("%7D"),
            other => tag.push(other),
        }
    }
    tag.push('}');
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Redis Cluster hashes: the first `{…}` with something inside, else the whole key.
    fn hashed_part(key: &str) -> &str {
        if let Some(open) = key.find('{') {
            if let Some(close) = key[open + 1..].find('}') {
                if close > 0 {
                    return &key[open + 1..open + 1 + close];
                }
            }
        }
        key
    }

    #[test]
    fn one_server_names_are_those_of_earlier_versions() {
        let names = Layout::Plain.names("app:", "user-1");
        assert_eq!(names.record, "app:tokens:user-1");
        assert_eq!(names.lock, "app:lock:user-1");
        assert_eq!(names.sealed_as, names.record);
    }

    #[test]
    fn cluster_names_tag_the_key_and_seal_the_one_server_name() {
        let names = Layout::HashTagged.names("app:", "user-1");
        assert_eq!(names.record, "app:tokens:{user-1}");
        assert_eq!(names.lock, "app:lock:{user-1}");
        assert_eq!(names.sealed_as, "app:tokens:user-1");
    }

    #[test]
    fn a_record_and_its_lock_share_a_nonempty_tag_whatever_the_key() {
        for name in [
            "", "}", "{", "{}", "}{", "a}b", "a{b}c", "%", "%7D", "%25", "x:lock", "ü{}",
        ] {
            let names = Layout::HashTagged.names("reqwest-token-refresh:", name);
            let tag = hashed_part(&names.record);
            assert_eq!(tag, hashed_part(&names.lock), "{name:?}");
            assert!(
                names.record.ends_with(&format!("{{{tag}}}")),
                "{name:?}: the whole name is the tag ({})",
                names.record
            );
        }
    }

    #[test]
    fn distinct_keys_get_distinct_names() {
        let keys = ["", "%", "%25", "}", "%7D", "{", "%7B", "a", "a}", "a%7D"];
        let mut records: Vec<String> = keys
            .iter()
            .map(|key| Layout::HashTagged.names("p:", key).record)
            .collect();
        records.sort();
        records.dedup();
        assert_eq!(records.len(), keys.len(), "{records:?}");
    }

    #[test]
    fn braces_in_the_prefix_are_refused_on_a_cluster_only() {
        assert!(Layout::HashTagged.check_prefix("{app}:").is_err());
        assert!(Layout::HashTagged.check_prefix("app:").is_ok());
        assert!(Layout::Plain.check_prefix("{app}:").is_ok());
    }
}
