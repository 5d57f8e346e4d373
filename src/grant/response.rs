//! Parsing and classifying token-endpoint responses (RFC 6749 §5.1, §5.2).

use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, ErrorCode, InvalidResponse, OAuthError, TransientError};
use crate::key::TokenKey;
use crate::secret::{AccessToken, RefreshToken};
use crate::token::{is_b64token, TokenResponse};
use crate::ReauthorizationReason;

/// Longest `error_description` kept, in characters.
const MAX_DESCRIPTION_CHARS: usize = 200;

/// The fields we read. Unknown fields are ignored (RFC 6749 §5.1); a known field given twice is
/// refused by serde (RFC 6749 §3.2). Every field is a raw `Value` so that a wrong type becomes
/// our typed error instead of a generic parse failure.
#[derive(Deserialize)]
struct RawBody {
    access_token: Option<Value>,
    token_type: Option<Value>,
    expires_in: Option<Value>,
    refresh_token: Option<Value>,
    scope: Option<Value>,
    refresh_expires_in: Option<Value>,
    refresh_token_expires_in: Option<Value>,
    error: Option<Value>,
    error_description: Option<Value>,
}

/// Turns a token-endpoint response into tokens or a classified error.
///
/// `secrets` are the values the request carried (refresh token, client secret); they are
/// redacted from any text kept from the response. A success whose tokens cannot be used but
/// which rotated the refresh token is returned as a response marked unusable, so that the new
/// refresh token is kept (the server consumed the old one).
pub(crate) fn classify(
    key: &TokenKey,
    answer: &Answer,
    secrets: &[&str],
    token_type: TokenType,
) -> Result<TokenResponse, Error> {
    let (status, body) = (answer.status, answer.body.as_slice());
    let parsed = parse_object(body);
    if let Ok(raw) = &parsed {
        if let Some(Value::String(code)) = &raw.error {
            let description = match &raw.error_description {
                Some(Value::String(text)) => Some(sanitize(text, secrets)),
                _ => None,
            };
            let code = ErrorCode::parse(&sanitize(code, secrets));
            let error = OAuthError::new(code, description, status);
            return Err(oauth_error(key, error, answer.retry_after));
        }
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Error::Transient(TransientError::Status {
            status,
            retry_after: answer.retry_after,
        }));
    }
    if status == StatusCode::UNAUTHORIZED {
        // A 401 from the token endpoint is the client failing to authenticate (RFC 6749 §5.2).
        let error = OAuthError::new(ErrorCode::InvalidClient, None, status);
        return Err(Error::ClientRejected(error));
    }
    if !status.is_success() {
        let error = OAuthError::new(ErrorCode::Extension("unknown".into()), None, status);
        return Err(Error::TokenEndpoint(error));
    }
    let raw = parsed.map_err(Error::InvalidResponse)?;
    // A server that rotated has already consumed the old refresh token: if the rest of the
    // answer is unusable, the new refresh token must still reach the manager, which keeps it.
    let rotated = match &raw.refresh_token {
        Some(Value::String(token)) if !token.is_empty() => Some(RefreshToken::new(token.clone())),
        _ => None,
    };
    success(raw, secrets, token_type).or_else(|error| match rotated {
        Some(refresh_token) => {
            let mut unusable =
                TokenResponse::new(AccessToken::new("")).with_refresh_token(refresh_token);
            unusable.unusable = Some(error);
            Ok(unusable)
        }
        None => Err(Error::InvalidResponse(error)),
    })
}

/// What the token endpoint answered.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// `Retry-After`, in its delay-seconds form.
    pub(crate) retry_after: Option<Duration>,
    /// The server's `DPoP-Nonce`, if it sent one.
    pub(crate) dpop_nonce: Option<http::HeaderValue>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// Whether the server refused a DPoP proof for lacking its nonce (RFC 9449 §8): a 400 with
    /// `use_dpop_nonce` and a nonce to use. The server refuses before processing the grant.
    pub(crate) fn asks_for_dpop_nonce(&self) -> bool {
        self.status == StatusCode::BAD_REQUEST
            && self.dpop_nonce.is_some()
            && parse_object(&self.body).is_ok_and(
                |raw| matches!(raw.error, Some(Value::String(code)) if code == "use_dpop_nonce"),
            )
    }
}

fn oauth_error(key: &TokenKey, error: OAuthError, retry_after: Option<Duration>) -> Error {
    match error.code() {
        ErrorCode::InvalidGrant => Error::ReauthorizationRequired {
            key: key.clone(),
            reason: ReauthorizationReason::InvalidGrant(error),
        },
        code if code.is_client_configuration() => Error::ClientRejected(error),
        ErrorCode::Extension(code)
            if code == "temporarily_unavailable"
                || code == "server_error"
                || error.status().is_server_error()
                || error.status() == StatusCode::TOO_MANY_REQUESTS =>
        {
            Error::Transient(TransientError::Status {
                status: error.status(),
                retry_after,
            })
        }
        _ => Error::TokenEndpoint(error),
    }
}

fn parse_object(body: &[u8]) -> Result<RawBody, InvalidResponse> {
    let text = std::str::from_utf8(body)
        .map_err(|_| InvalidResponse::NotJson("body is not valid UTF-8".into()))?;
    // serde accepts a JSON array for a struct; a token response must be an object.
    if !text.trim_start().starts_with('{') {
        return Err(InvalidResponse::NotJson("expected a JSON object".into()));
    }
    serde_json::from_str::<RawBody>(text).map_err(|error| {
        if error.to_string().starts_with("duplicate field") {
            InvalidResponse::DuplicateField
        } else {
            // serde_json's messages name the position and the expected type, never the input.
            InvalidResponse::NotJson(error.to_string())
        }
    })
}

/// The token type a request asked for: `DPoP` when it carried a proof (RFC 9449 §5), else
/// `Bearer`. The answer must name the same, in any case (RFC 6749 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenType {
    Bearer,
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    Dpop,
}

impl TokenType {
    fn as_str(self) -> &'static str {
        match self {
            TokenType::Bearer => "bearer",
            TokenType::Dpop => "dpop",
        }
    }
}

fn success(
    raw: RawBody,
    secrets: &[&str],
    token_type: TokenType,
) -> Result<TokenResponse, InvalidResponse> {
    let access_token = match raw.access_token {
        Some(Value::String(token)) if !token.is_empty() => token,
        _ => return Err(InvalidResponse::MissingAccessToken),
    };
    if !is_b64token(&access_token) {
        return Err(InvalidResponse::MalformedAccessToken);
    }
    match raw.token_type {
        Some(Value::String(kind)) if kind.eq_ignore_ascii_case(token_type.as_str()) => {}
        Some(Value::String(kind)) => {
            return Err(InvalidResponse::UnsupportedTokenType(sanitize(
                &kind, secrets,
            )))
        }
        _ => return Err(InvalidResponse::UnsupportedTokenType(String::new())),
    }
    let refresh_token = match raw.refresh_token {
        Some(Value::String(token)) if !token.is_empty() => Some(RefreshToken::new(token)),
        Some(Value::String(_)) | Some(Value::Null) | None => None,
        Some(_) => return Err(InvalidResponse::MalformedRefreshToken),
    };
    let scope = match raw.scope {
        Some(Value::String(scope)) if !scope.is_empty() => Some(scope),
        _ => None,
    };
    let mut response = TokenResponse::new(AccessToken::new(access_token));
    response.refresh_token = refresh_token;
    response.expires_in = raw.expires_in.as_ref().and_then(lifetime);
    response.scope = scope;
    response.refresh_expires_in = raw
        .refresh_expires_in
        .as_ref()
        .or(raw.refresh_token_expires_in.as_ref())
        .and_then(lifetime);
    Ok(response)
}

/// `expires_in` as a lifetime; anything unusable (negative, zero, not a number) means unknown.
fn lifetime(value: &Value) -> Option<Duration> {
    let seconds = match value {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !seconds.is_finite() || seconds < 1.0 {
        return None;
    }
    // Clamped later to the crate's maximum lifetime; the cast saturates.
    Some(Duration::from_secs(seconds as u64))
}

/// Makes server-supplied text safe to display: secrets redacted, control characters escaped,
/// length capped.
fn sanitize(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        text = text.replace(secret, "[redacted]");
    }
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == MAX_DESCRIPTION_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &[u8]) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: None,
            dpop_nonce: None,
            body: body.to_vec(),
        }
    }

    fn run(status: u16, body: &str) -> Result<TokenResponse, Error> {
        classify(
            &TokenKey::default(),
            &answer(status, body.as_bytes()),
            &["rt-secret", "client-secret"],
            TokenType::Bearer,
        )
    }

    #[test]
    fn a_dpop_request_needs_a_dpop_token_type_in_any_case() {
        let dpop = |body: &str| {
            classify(
                &TokenKey::default(),
                &answer(200, body.as_bytes()),
                &[],
                TokenType::Dpop,
            )
        };
        assert!(dpop(r#"{"access_token":"a","token_type":"DPoP"}"#).is_ok());
        assert!(dpop(r#"{"access_token":"a","token_type":"dpop"}"#).is_ok());
        // A bearer token answered to a proof is refused; a rotation in it is still kept.
        assert!(dpop(r#"{"access_token":"a","token_type":"Bearer"}"#).is_err());
        let kept =
            dpop(r#"{"access_token":"a","token_type":"Bearer","refresh_token":"rt-2"}"#).unwrap();
        assert!(kept.unusable.is_some());
        assert!(run(200, r#"{"access_token":"a","token_type":"DPoP"}"#).is_err());
    }

    #[test]
    fn r14_token_type_is_case_insensitive() {
        let response = run(200, r#"{"access_token":"a","token_type":"bearer"}"#).unwrap();
        assert_eq!(response.access_token.secret(), "a");
        assert!(run(200, r#"{"access_token":"a","token_type":"BEARER"}"#).is_ok());
    }

    #[test]
    fn r15_unknown_token_types_are_refused() {
        for kind in ["mac", "DPoP", "N_A"] {
            let body = format!(r#"{{"access_token":"a","token_type":"{kind}"}}"#);
            assert!(matches!(
                run(200, &body),
                Err(Error::InvalidResponse(
                    InvalidResponse::UnsupportedTokenType(_)
                ))
            ));
        }
        assert!(matches!(
            run(200, r#"{"access_token":"a"}"#),
            Err(Error::InvalidResponse(
                InvalidResponse::UnsupportedTokenType(_)
            ))
        ));
    }

    #[test]
    fn r13_access_token_is_required() {
        for body in [
            r#"{"token_type":"Bearer"}"#,
            r#"{"access_token":"","token_type":"Bearer"}"#,
            r#"{"access_token":12,"token_type":"Bearer"}"#,
        ] {
            assert!(matches!(
                run(200, body),
                Err(Error::InvalidResponse(InvalidResponse::MissingAccessToken))
            ));
        }
    }

    #[test]
    fn r23_header_unsafe_access_tokens_are_refused() {
        for token in ["a b", "a\\r\\nX-Evil: 1", "a\\u0000", "é", "=abc"] {
            let body = format!(r#"{{"access_token":"{token}","token_type":"Bearer"}}"#);
            assert!(
                matches!(
                    run(200, &body),
                    Err(Error::InvalidResponse(
                        InvalidResponse::MalformedAccessToken
                    ))
                ),
                "{token}"
            );
        }
        assert!(run(
            200,
            r#"{"access_token":"a.b-c_d~e+f/g==","token_type":"Bearer"}"#
        )
        .is_ok());
    }

    #[test]
    fn r17_empty_or_null_refresh_token_means_none() {
        for value in [r#""""#, "null"] {
            let body =
                format!(r#"{{"access_token":"a","token_type":"Bearer","refresh_token":{value}}}"#);
            assert!(run(200, &body).unwrap().refresh_token.is_none());
        }
        let body = r#"{"access_token":"a","token_type":"Bearer","refresh_token":"rt-2"}"#;
        assert_eq!(
            run(200, body).unwrap().refresh_token.unwrap().secret(),
            "rt-2"
        );
    }

    #[test]
    fn inv1_an_unusable_answer_that_rotated_keeps_the_new_refresh_token() {
        for (body, problem) in [
            (
                r#"{"access_token":"bad token","token_type":"Bearer","refresh_token":"rt-9"}"#,
                InvalidResponse::MalformedAccessToken,
            ),
            (
                r#"{"token_type":"Bearer","refresh_token":"rt-9"}"#,
                InvalidResponse::MissingAccessToken,
            ),
            (
                r#"{"access_token":"a","token_type":"mac","refresh_token":"rt-9"}"#,
                InvalidResponse::UnsupportedTokenType("mac".into()),
            ),
        ] {
            let response = run(200, body).expect("the rotation reaches the manager");
            assert_eq!(response.refresh_token.unwrap().secret(), "rt-9");
            assert_eq!(response.unusable, Some(problem));
        }
    }

    #[test]
    fn r4_duplicate_fields_are_refused() {
        let body = r#"{"access_token":"a","access_token":"b","token_type":"Bearer"}"#;
        assert!(matches!(
            run(200, body),
            Err(Error::InvalidResponse(InvalidResponse::DuplicateField))
        ));
    }

    #[test]
    fn r20_unknown_fields_are_ignored() {
        let body = r#"{"access_token":"a","token_type":"Bearer","id_token":"x","extra":{"a":[1]}}"#;
        assert!(run(200, body).is_ok());
    }

    #[test]
    fn r16_expires_in_is_optional_and_tolerant() {
        let cases = [
            ("3600", Some(3600)),
            ("\"120\"", Some(120)),
            ("59.9", Some(59)),
            ("0", None),
            ("-5", None),
            ("\"soon\"", None),
            ("null", None),
            ("1e300", Some(u64::MAX)),
        ];
        for (value, expected) in cases {
            let body =
                format!(r#"{{"access_token":"a","token_type":"Bearer","expires_in":{value}}}"#);
            let response = run(200, &body).unwrap();
            assert_eq!(
                response.expires_in.map(|d| d.as_secs()),
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn refresh_token_lifetimes_are_read_from_the_common_extensions() {
        for field in ["refresh_expires_in", "refresh_token_expires_in"] {
            let body = format!(r#"{{"access_token":"a","token_type":"Bearer","{field}":1800}}"#);
            let response = run(200, &body).unwrap();
            assert_eq!(response.refresh_expires_in, Some(Duration::from_secs(1800)));
        }
        let plain = run(200, r#"{"access_token":"a","token_type":"Bearer"}"#).unwrap();
        assert_eq!(plain.refresh_expires_in, None);
    }

    #[test]
    fn r24_errors_are_classified_by_body_whatever_the_status() {
        for status in [200, 400, 401, 403] {
            let error = run(status, r#"{"error":"invalid_grant"}"#).unwrap_err();
            assert!(error.is_reauthorization_required(), "{status}");
        }
        let error = run(400, r#"{"error":"invalid_client"}"#).unwrap_err();
        assert!(error.is_client_rejected());
        let error = run(200, r#"{"error":"bad_refresh_token"}"#).unwrap_err();
        assert!(matches!(error, Error::TokenEndpoint(_)));
    }

    #[test]
    fn server_failures_are_transient() {
        for status in [500, 502, 503, 429] {
            assert!(run(status, "<html>oops</html>").unwrap_err().is_transient());
        }
        assert!(run(503, r#"{"error":"temporarily_unavailable"}"#)
            .unwrap_err()
            .is_transient());
    }

    #[test]
    fn non_standard_error_bodies_are_not_terminal() {
        let error = run(
            400,
            r#"{"code":400,"error_code":"refresh_token_not_found"}"#,
        )
        .unwrap_err();
        assert!(matches!(error, Error::TokenEndpoint(_)));
        assert!(!error.is_reauthorization_required());
        assert!(!error.is_transient());
    }

    #[test]
    fn malformed_success_bodies_are_typed_errors() {
        for body in ["", "<html>", "[1,2]", "{\"access_token\":", "null"] {
            assert!(
                matches!(run(200, body), Err(Error::InvalidResponse(_))),
                "{body:?}"
            );
        }
        let nested = "[".repeat(10_000);
        assert!(matches!(run(200, &nested), Err(Error::InvalidResponse(_))));
        let deep_object = format!("{{\"a\":{}", "[".repeat(10_000));
        assert!(matches!(
            run(200, &deep_object),
            Err(Error::InvalidResponse(_))
        ));
        assert!(matches!(
            classify(
                &TokenKey::default(),
                &answer(200, &[0xff, 0xfe]),
                &[],
                TokenType::Bearer
            ),
            Err(Error::InvalidResponse(_))
        ));
    }

    #[test]
    fn a_token_type_echoing_a_secret_is_redacted() {
        let body = r#"{"access_token":"a","token_type":"client-secret rt-secret"}"#;
        match run(200, body) {
            Err(Error::InvalidResponse(InvalidResponse::UnsupportedTokenType(kind))) => {
                assert_eq!(kind, "[redacted] [redacted]");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_travels_with_a_transient_status() {
        let mut busy = answer(503, b"");
        busy.retry_after = Some(Duration::from_secs(7));
        match classify(&TokenKey::default(), &busy, &[], TokenType::Bearer) {
            Err(Error::Transient(error)) => {
                assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn r25_descriptions_are_escaped_truncated_and_redacted() {
        let long = "x".repeat(500);
        let body = format!(
            r#"{{"error":"invalid_grant","error_description":"token rt-secret\nbad {long}"}}"#
        );
        let text = run(400, &body).unwrap_err().to_string();
        assert!(!text.contains("rt-secret"));
        assert!(text.contains("[redacted]"));
        assert!(text.contains("\\n"));
        assert!(!text.contains('\n'));
        assert!(text.len() < 400);
    }
}
