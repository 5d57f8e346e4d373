//! Errors returned by the middleware, the refreshers and the builders.
//!
//! None of them ever carries a token, a client secret or a raw response body.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::key::TokenKey;
use crate::record::EndReason;
use crate::store::StoreError;

/// Why a request could not get a token.
///
/// The middleware returns it wrapped in [`reqwest_middleware::Error::Middleware`]; get it back
/// with [`Error::from_middleware`]:
///
/// ```
/// # async fn run(client: reqwest_middleware::ClientWithMiddleware) {
/// use reqwest_token_refresh::Error;
///
/// match client.get("https://api.example.com/me").send().await {
///     Ok(response) => println!("status {}", response.status()),
///     Err(error) => match Error::from_middleware(&error) {
///         Some(error) if error.is_reauthorization_required() => println!("please log in again"),
///         Some(error) if error.is_transient() => println!("try again later: {error}"),
///         _ => println!("failed: {error}"),
///     },
/// }
/// # }
/// ```
///
/// The value is cheap to clone: every caller that waited for the same refresh gets the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The grant is gone (`invalid_grant`, or no usable tokens): the user must authorize again.
    /// No token-endpoint call is made for this key until new tokens are supplied with
    /// [`TokenManager::set_tokens`](crate::TokenManager::set_tokens).
    #[error("re-authorization required for token key `{key}`: {reason}")]
    ReauthorizationRequired {
        /// The credential that needs a new authorization.
        key: TokenKey,
        /// What made it so.
        reason: ReauthorizationReason,
    },
    /// The token endpoint rejected the client itself (`invalid_client`, `unauthorized_client`,
    /// `unsupported_grant_type`, `invalid_scope`). The refresh token is kept; fix the
    /// configuration.
    #[error("token endpoint rejected the client configuration")]
    ClientRejected(#[source] OAuthError),
    /// The token endpoint answered with another error (`invalid_request`, a non-standard body, an
    /// unexpected status). Not terminal, not retried automatically.
    #[error("token endpoint refused the refresh")]
    TokenEndpoint(#[source] OAuthError),
    /// The token endpoint could not be reached or failed temporarily (5xx, 429, timeout,
    /// connection error). Retrying later may succeed; `reqwest-retry` can do it.
    #[error("token endpoint temporarily unavailable")]
    Transient(#[source] TransientError),
    /// The token endpoint's success response could not be used. If it carried a new refresh
    /// token, that token was kept (the old one is consumed at the server).
    #[error("unusable token response")]
    InvalidResponse(#[source] InvalidResponse),
    /// The stored tokens of this key were issued for another authorization server or client
    /// (two services sharing a store and key by mistake). They are never sent to this one,
    /// revoked or replaced by a refresh; use another key or store, or hand this middleware its
    /// own tokens with [`TokenManager::set_tokens`](crate::TokenManager::set_tokens).
    #[error(
        "the stored tokens of `{key}` were issued for another authorization server or client \
         ({issued_for}); they are not used here (use another key or store)"
    )]
    ForeignTokens {
        /// The key whose record was refused.
        key: TokenKey,
        /// What the record is bound to (any credentials in its URL are redacted).
        issued_for: String,
    },
    /// The stored tokens of this key record no authorization server (they were written to the
    /// store by other means than this middleware), so their refresh token could belong to any.
    #[error(
        "the stored tokens of `{key}` record no authorization server; bind them with \
         TokenSet::with_issued_for (or hand them over with TokenManager::set_tokens), or allow \
         unbound tokens with TokenManagerBuilder::accept_unbound_tokens"
    )]
    UnboundTokens {
        /// The key whose record was refused.
        key: TokenKey,
    },
    /// The token store failed.
    #[error("token store failed")]
    Store(#[source] StoreError),
    /// A setting cannot work (returned by constructors, never by requests).
    #[error("invalid configuration")]
    Config(#[source] ConfigError),
    /// An access token (supplied, stored or received) contains characters that RFC 6750
    /// `b64token` does not allow, so it cannot be sent in a header.
    #[error("access token is not a valid RFC 6750 b64token")]
    InvalidAccessToken,
    /// The background refresh task stopped without an outcome (it panicked or the runtime is
    /// shutting down).
    #[error("token refresh task stopped before finishing")]
    RefreshAborted,
    /// The key's tokens are DPoP-bound, and this build of the crate has no `dpop` feature: they
    /// cannot be used (nor sent as bearer tokens, which the server would refuse).
    #[error("the tokens are DPoP-bound; enable the `dpop` feature to use them")]
    DpopUnavailable,
    /// A DPoP proof or a client assertion could not be signed (the crypto library failed).
    #[error("could not sign a DPoP proof or client assertion")]
    SigningFailed,
}

impl TransientError {
    /// How long to wait before trying again, when known (the server's `Retry-After`, or the
    /// remaining backoff).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TransientError::Status { retry_after, .. } => *retry_after,
            TransientError::BackingOff { retry_in } => Some(*retry_in),
            _ => None,
        }
    }
}

impl Error {
    /// This crate's error inside an error of a [`ClientWithMiddleware`] request, if it is one.
    ///
    /// ```
    /// # async fn run(client: reqwest_middleware::ClientWithMiddleware) {
    /// use reqwest_token_refresh::Error;
    ///
    /// if let Err(error) = client.get("https://api.example.com/me").send().await {
    ///     match Error::from_middleware(&error) {
    ///         Some(error) if error.is_reauthorization_required() => println!("log in again"),
    ///         Some(error) => println!("token error: {error}"),
    ///         None => println!("transport error: {error}"),
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// [`ClientWithMiddleware`]: reqwest_middleware::ClientWithMiddleware
    pub fn from_middleware(error: &reqwest_middleware::Error) -> Option<&Error> {
        match error {
            reqwest_middleware::Error::Middleware(error) => error.downcast_ref(),
            reqwest_middleware::Error::Reqwest(_) => None,
        }
    }

    /// Whether the user must authorize again (the refresh token is dead or missing).
    pub fn is_reauthorization_required(&self) -> bool {
        matches!(self, Error::ReauthorizationRequired { .. })
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transient(_) | Error::RefreshAborted => true,
            Error::Store(error) => error.is_transient(),
            _ => false,
        }
    }

    /// Whether the client configuration (credentials, scope, grant type) was rejected.
    pub fn is_client_rejected(&self) -> bool {
        matches!(self, Error::ClientRejected(_))
    }

    /// The OAuth error the token endpoint returned, if any.
    pub fn oauth_error(&self) -> Option<&OAuthError> {
        match self {
            Error::ClientRejected(error) | Error::TokenEndpoint(error) => Some(error),
            Error::ReauthorizationRequired {
                reason: ReauthorizationReason::InvalidGrant(error),
                ..
            } => Some(error),
            _ => None,
        }
    }
}

/// Why a key needs a new authorization.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ReauthorizationReason {
    /// The token endpoint answered `invalid_grant`: the refresh token is expired, revoked or was
    /// already used.
    InvalidGrant(OAuthError),
    /// The store records that the key's grant ended: in this process or another, now or in an
    /// earlier run.
    Ended(EndReason),
    /// No tokens are known for the key.
    NoTokens,
    /// The access token expired and there is no refresh token to renew it.
    NoRefreshToken,
    /// A DPoP-bound refresh was sent and no answer came back, and sending the same request
    /// again was refused or unanswered: the server may have rotated the refresh token. Sending
    /// it once more with a new proof would count as reuse, which revokes the whole grant.
    RotationLost,
}

impl fmt::Display for ReauthorizationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReauthorizationReason::InvalidGrant(error) => write!(f, "{error}"),
            ReauthorizationReason::Ended(reason) => write!(f, "{reason}"),
            ReauthorizationReason::NoTokens => f.write_str("no tokens are stored"),
            ReauthorizationReason::NoRefreshToken => {
                f.write_str("access token expired and no refresh token is held")
            }
            ReauthorizationReason::RotationLost => f.write_str(
                "the answer to a DPoP-bound refresh was lost; the refresh token may be spent",
            ),
        }
    }
}

/// An error response from the token endpoint (RFC 6749 §5.2).
///
/// `description` is sanitized: control characters are escaped, it is cut to
/// 200 characters, and any secret the request carried is replaced by `[redacted]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    code: ErrorCode,
    description: Option<String>,
    status: StatusCode,
}

impl OAuthError {
    pub(crate) fn new(code: ErrorCode, description: Option<String>, status: StatusCode) -> Self {
        Self {
            code,
            description,
            status,
        }
    }

    /// The `error` code.
    pub fn code(&self) -> &ErrorCode {
        &self.code
    }

    /// The sanitized `error_description`.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The HTTP status that carried the error (servers use 400, 401, 403 and even 200).
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (HTTP {})", self.code, self.status.as_u16())?;
        if let Some(description) = &self.description {
            write!(f, ": {description}")?;
        }
        Ok(())
    }
}

impl std::error::Error for OAuthError {}

/// The `error` codes of RFC 6749 §5.2, with a fallback for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `invalid_request`
    InvalidRequest,
    /// `invalid_client`
    InvalidClient,
    /// `invalid_grant`
    InvalidGrant,
    /// `unauthorized_client`
    UnauthorizedClient,
    /// `unsupported_grant_type`
    UnsupportedGrantType,
    /// `invalid_scope`
    InvalidScope,
    /// Any other code (sanitized), or `unknown` when the body had no `error` field.
    Extension(String),
}

impl ErrorCode {
    pub(crate) fn parse(code: &str) -> Self {
        match code {
            "invalid_request" => ErrorCode::InvalidRequest,
            "invalid_client" => ErrorCode::InvalidClient,
            "invalid_grant" => ErrorCode::InvalidGrant,
            "unauthorized_client" => ErrorCode::UnauthorizedClient,
            "unsupported_grant_type" => ErrorCode::UnsupportedGrantType,
            "invalid_scope" => ErrorCode::InvalidScope,
            other => ErrorCode::Extension(other.to_owned()),
        }
    }

    /// The code as the server spells it.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::Extension(code) => code,
        }
    }

    /// Whether the code says the client configuration is wrong (the refresh token is kept).
    pub fn is_client_configuration(&self) -> bool {
        matches!(
            self,
            ErrorCode::InvalidClient
                | ErrorCode::UnauthorizedClient
                | ErrorCode::UnsupportedGrantType
                | ErrorCode::InvalidScope
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A temporary failure to get a token response.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransientError {
    /// The token endpoint answered with a 5xx or 429 status.
    #[error("token endpoint answered HTTP {}", status.as_u16())]
    Status {
        /// The status.
        status: StatusCode,
        /// How long the server asked clients to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
    /// The token endpoint failed moments ago; the key's next attempt is due in `retry_in`.
    /// Refreshes of a failing endpoint are spaced out (about 1 s, doubling to 30 s, longer if
    /// the server's `Retry-After` says so) instead of being made for every request.
    #[error("token endpoint failed recently; next attempt in {retry_in:?}")]
    BackingOff {
        /// When the next attempt will be made.
        retry_in: Duration,
    },
    /// The request or the response body took longer than the configured timeout.
    #[error("token request timed out")]
    Timeout,
    /// The connection failed or broke.
    #[error("token request failed")]
    Transport(#[source] Arc<reqwest::Error>),
}

/// Why a token response could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidResponse {
    /// The body is not a JSON object (or is not valid UTF-8, or nests too deeply).
    #[error("body is not a JSON object: {0}")]
    NotJson(String),
    /// The body is larger than the configured limit.
    #[error("body exceeds {limit} bytes")]
    TooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// `access_token` is missing, empty or not a string.
    #[error("`access_token` is missing or not a non-empty string")]
    MissingAccessToken,
    /// The access token contains characters that RFC 6750 `b64token` does not allow.
    #[error("`access_token` is not a valid RFC 6750 b64token")]
    MalformedAccessToken,
    /// `refresh_token` is neither a string nor null.
    #[error("`refresh_token` is not a string")]
    MalformedRefreshToken,
    /// `token_type` is missing or not `Bearer`.
    #[error("unsupported `token_type` {0:?}")]
    UnsupportedTokenType(String),
    /// A known field appeared twice (RFC 6749 §3.2).
    #[error("duplicate field in token response")]
    DuplicateField,
}

/// A setting that cannot work. Returned where the setting is given or built, never at the
/// first request; each variant names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A URL could not be parsed.
    #[error("{setting} `{url}` is not a valid URL")]
    InvalidUrl {
        /// The setting.
        setting: &'static str,
        /// The URL as given (credentials redacted).
        url: String,
    },
    /// A URL is not `https`. Plain `http` is allowed to loopback hosts only, after the grant's
    /// (or discovery's) `danger_allow_http_loopback()`.
    #[error(
        "{setting} `{url}` must use https (plain http is allowed to loopback hosts only, with \
         danger_allow_http_loopback)"
    )]
    InsecureUrl {
        /// The setting.
        setting: &'static str,
        /// The URL as given (credentials redacted).
        url: String,
    },
    /// A URL carries credentials (`user:password@`), which would end up in logs, `Debug` output
    /// and stored token sets; the client's go in `client_id` and `client_secret`.
    #[error("{setting} `{url}` must not contain credentials (set the client secret instead)")]
    CredentialsInUrl {
        /// The setting.
        setting: &'static str,
        /// The URL as given (credentials redacted).
        url: String,
    },
    /// An endpoint URL has a fragment (RFC 6749 §3.2).
    #[error("{setting} `{url}` must not have a fragment")]
    FragmentInUrl {
        /// The setting.
        setting: &'static str,
        /// The URL as given (credentials redacted).
        url: String,
    },
    /// A setting another one needs is missing (a client secret for `client_secret_basic`).
    #[error("missing setting: {0}")]
    Missing(&'static str),
    /// The client id is empty.
    #[error("client_id must not be empty")]
    EmptyClientId,
    /// An encryption key is malformed (wrong length, bad encoding, empty id).
    #[error("invalid encryption key: {0}")]
    InvalidEncryptionKey(String),
    /// The HTTP client for the token endpoint could not be built.
    #[error("cannot build the token endpoint HTTP client: {0}")]
    HttpClient(String),
    /// A DPoP key is malformed or could not be made.
    #[error("invalid DPoP key: {0}")]
    InvalidDpopKey(String),
    /// A client assertion key (`private_key_jwt`) is malformed or not RS256/ES256.
    #[error("invalid client assertion key: {0}")]
    InvalidClientAssertionKey(String),
    /// A store setting cannot work (a token file path without a file name, a table name that
    /// is not a plain identifier, a store URL that does not parse).
    #[error("{setting}: {reason}")]
    Store {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_error_display_is_code_status_and_description() {
        let error = OAuthError::new(
            ErrorCode::InvalidGrant,
            Some("refresh token already used".into()),
            StatusCode::FORBIDDEN,
        );
        assert_eq!(
            error.to_string(),
            "invalid_grant (HTTP 403): refresh token already used"
        );
    }

    #[test]
    fn error_codes_round_trip() {
        for code in [
            "invalid_request",
            "invalid_client",
            "invalid_grant",
            "unauthorized_client",
            "unsupported_grant_type",
            "invalid_scope",
            "bad_refresh_token",
        ] {
            assert_eq!(ErrorCode::parse(code).as_str(), code);
        }
    }
}
