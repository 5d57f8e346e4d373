//! **Not part of the API.** Thin wrappers over crate-private parsers, compiled only with the
//! `fuzzing` feature so that `tests/fuzz.rs` can drive them with arbitrary input. No semver
//! guarantee; do not use.

use http::StatusCode;

use crate::error::Error;
use crate::key::TokenKey;
use crate::token::TokenResponse;

/// The token-endpoint response parser and classifier (RFC 6749 §5.1, §5.2), as the refresh
/// grant calls it: `secrets` are the values the request carried, to be redacted.
pub fn token_response(
    status: StatusCode,
    body: &[u8],
    secrets: &[&str],
) -> Result<TokenResponse, Error> {
    crate::grant::response::classify(&TokenKey::default(), status, body, secrets)
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
    crate::grant::is_b64token(token)
}
