//! **Not part of the API.** Thin wrappers over crate-private parsers, and the refresh policy,
//! compiled only with the `fuzzing` feature so that `tests/fuzz.rs` can drive them with
//! arbitrary input and `tests/model.rs` can model-check the policy. No semver guarantee; do
//! not use.

use std::sync::Arc;
use std::time::SystemTime;

use http::StatusCode;

use crate::error::{Error, InvalidResponse};
use crate::grant::response::Answer;
use crate::key::TokenKey;
use crate::record::{EndReason, Ended, TokenRecord};
use crate::token::{TokenResponse, TokenSet};

pub use crate::policy::{
    after_call, after_invalid_grant, decide, next_generation, Answer as CallAnswer, Call, Facts,
    Intent, Refusal, Rules, Step, Unsaved,
};

/// The token-endpoint response parser and classifier (RFC 6749 §5.1, §5.2), as the refresh
/// grant calls it: `secrets` are the values the request carried, to be redacted.
pub fn token_response(
    status: StatusCode,
    body: &[u8],
    secrets: &[&str],
) -> Result<TokenResponse, Error> {
    let answer = Answer {
        status,
        retry_after: None,
        dpop_nonce: None,
        body: body.to_vec(),
    };
    crate::grant::response::classify(
        &TokenKey::default(),
        &answer,
        secrets,
        crate::grant::response::TokenType::Bearer,
    )
}

/// Why the middleware would refuse `response`, if it would (what the parser found, or an
/// access token that cannot go in a header).
pub fn unusable(response: &TokenResponse) -> Option<InvalidResponse> {
    response.check().err()
}

/// `tokens` as the runner stores a set it makes: `generation`, a new revision, `binding`.
pub fn renewed(tokens: TokenSet, generation: u64, binding: Option<Arc<str>>) -> TokenSet {
    tokens.renewed(generation).bound_to(binding)
}

/// The record the runner writes when a grant ends.
pub fn ended(reason: EndReason, generation: u64, binding: Option<Arc<str>>) -> TokenRecord {
    TokenRecord::Ended(Ended::new(reason, SystemTime::now(), generation, binding))
}

/// The `WWW-Authenticate` parser: each challenge's scheme and parameters, in order.
pub fn challenges(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    crate::classify::parse_challenges(value)
        .into_iter()
        .map(|challenge| (challenge.scheme, challenge.params))
        .collect()
}

/// Whether a 401 carrying these `WWW-Authenticate` values rejects the token.
pub fn rejects_token(values: &[&str]) -> bool {
    crate::classify::challenges_reject_token(values.iter())
}

/// Whether `token` is an RFC 6750 `b64token` (what may go into `Authorization: Bearer`).
pub fn is_b64token(token: &str) -> bool {
    crate::token::is_b64token(token)
}
