//! What a store keeps for a key: its tokens, or the mark that its grant ended.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::revision::Revision;
use crate::token::{to_micros, unix_time, TokenSet};

/// What a [`TokenStore`](crate::TokenStore) keeps for one key.
///
/// Stored as JSON: a [`TokenSet`] object, or an [`Ended`] object recognized by its `ended`
/// field. Records written before `Ended` existed are token sets and still read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum TokenRecord {
    /// The tokens in use.
    Tokens(TokenSet),
    /// The grant ended (logout, revocation, `invalid_grant`): the key needs a new login.
    Ended(Ended),
}

impl TokenRecord {
    /// The record's identity, which conditional saves compare.
    pub fn revision(&self) -> &Revision {
        match self {
            TokenRecord::Tokens(tokens) => tokens.revision(),
            TokenRecord::Ended(ended) => &ended.revision,
        }
    }

    /// The record's place in the key's history: one more than the record it replaced.
    pub fn generation(&self) -> u64 {
        match self {
            TokenRecord::Tokens(tokens) => tokens.generation(),
            TokenRecord::Ended(ended) => ended.generation,
        }
    }

    /// Which authorization server and client the record belongs to, if recorded
    /// (see [`TokenSet::issued_for`]).
    pub fn issued_for(&self) -> Option<&str> {
        match self {
            TokenRecord::Tokens(tokens) => tokens.issued_for(),
            TokenRecord::Ended(ended) => ended.issued_for.as_deref(),
        }
    }

    /// The tokens, unless the grant ended.
    pub fn tokens(&self) -> Option<&TokenSet> {
        match self {
            TokenRecord::Tokens(tokens) => Some(tokens),
            TokenRecord::Ended(_) => None,
        }
    }

    /// The same record bound to the shared string `binding`, which must be equal to the one it
    /// carries (records read from a store bring their own copy).
    pub(crate) fn sharing_binding(self, binding: &Option<Arc<str>>) -> Self {
        match (self, binding) {
            (TokenRecord::Tokens(tokens), Some(ours)) if tokens.issued_for().is_some() => {
                TokenRecord::Tokens(tokens.bound_to(Some(Arc::clone(ours))))
            }
            (TokenRecord::Ended(mut ended), Some(ours)) if ended.issued_for.is_some() => {
                ended.issued_for = Some(Arc::clone(ours));
                TokenRecord::Ended(ended)
            }
            (record, _) => record,
        }
    }
}

impl From<TokenSet> for TokenRecord {
    fn from(tokens: TokenSet) -> Self {
        TokenRecord::Tokens(tokens)
    }
}

impl From<Ended> for TokenRecord {
    fn from(ended: Ended) -> Self {
        TokenRecord::Ended(ended)
    }
}

/// The record left in a store once a key's grant ended. It holds no token.
///
/// Kept instead of deleting the key's record so that every process sharing the store, and every
/// later run of the program, knows the key needs a new login: none of them falls back to older
/// tokens (such as the [initial tokens](crate::TokenManagerBuilder::initial_tokens)
/// it started with), whose refresh token the server has already consumed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    ended: EndReason,
    #[serde(with = "unix_time")]
    ended_at: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issued_for: Option<Arc<str>>,
    generation: u64,
    revision: Revision,
}

impl Ended {
    pub(crate) fn new(
        reason: EndReason,
        at: SystemTime,
        generation: u64,
        issued_for: Option<Arc<str>>,
    ) -> Self {
        Self {
            ended: reason,
            ended_at: Some(to_micros(at)),
            issued_for,
            generation,
            revision: Revision::random(),
        }
    }

    /// Why the grant ended.
    pub fn reason(&self) -> EndReason {
        self.ended
    }

    /// When it ended.
    pub fn ended_at(&self) -> Option<SystemTime> {
        self.ended_at
    }
}

/// Why a key's grant ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndReason {
    /// The token endpoint answered `invalid_grant`: the refresh token is expired, revoked or
    /// was already used.
    InvalidGrant,
    /// The application logged the key out ([`TokenManager::clear`](crate::TokenManager::clear)).
    LoggedOut,
    /// The tokens were revoked at the server ([`TokenManager::revoke`](crate::TokenManager::revoke)).
    Revoked,
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndReason::InvalidGrant => "the token endpoint answered invalid_grant",
            EndReason::LoggedOut => "the key was logged out",
            EndReason::Revoked => "the tokens were revoked",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::secret::{AccessToken, RefreshToken};

    #[test]
    fn both_kinds_round_trip_through_json_and_are_told_apart() {
        let tokens = TokenSet::new(AccessToken::new("canary-at"))
            .with_refresh_token(RefreshToken::new("canary-rt"));
        let ended = Ended::new(
            EndReason::InvalidGrant,
            UNIX_EPOCH + Duration::from_millis(1_500),
            4,
            Some(Arc::from("https://auth.example/token c")),
        );
        for record in [TokenRecord::from(tokens), TokenRecord::from(ended)] {
            let json = serde_json::to_string(&record).unwrap();
            let back: TokenRecord = serde_json::from_str(&json).unwrap();
            assert_eq!(back, record, "{json}");
        }
    }

    #[test]
    fn an_ended_record_holds_no_secret() {
        let ended = Ended::new(EndReason::Revoked, SystemTime::now(), 2, None);
        let json = serde_json::to_value(TokenRecord::from(ended)).unwrap();
        assert_eq!(json["ended"], "revoked");
        assert!(json.get("access_token").is_none());
        assert!(json.get("refresh_token").is_none());
    }

    #[test]
    fn a_record_from_before_revisions_reads_as_tokens_revised_by_generation() {
        let json = r#"{"access_token":"at","token_type":"Bearer","generation":3}"#;
        let record: TokenRecord = serde_json::from_str(json).unwrap();
        assert_eq!(record.revision().as_str(), "legacy-3");
        assert_eq!(record.tokens().unwrap().access_token().secret(), "at");
    }
}
