//! Deciding whether a response rejected the access token we sent.

use http::{header::WWW_AUTHENTICATE, StatusCode};
use reqwest::Response;

/// Decides whether a resource server's response says the access token was rejected, which
/// makes the middleware refresh (once per token generation) and replay the request (once).
///
/// A provider that signals expired tokens its own way adds its case and defers the rest:
///
/// ```
/// use reqwest::Response;
/// use reqwest_token_refresh::{DefaultTokenRejection, TokenRejection};
///
/// /// This API answers 403 with `{"code":"token_expired"}`, and we check a header for it.
/// struct ExpiredOn403;
///
/// impl TokenRejection for ExpiredOn403 {
///     fn is_token_rejected(&self, response: &Response) -> bool {
///         response.status() == 403 && response.headers().contains_key("x-token-expired")
///             || DefaultTokenRejection.is_token_rejected(response)
///     }
/// }
/// ```
pub trait TokenRejection: Send + Sync + 'static {
    /// Whether `response` rejects the token the request carried.
    fn is_token_rejected(&self, response: &Response) -> bool;
}

/// The default [`TokenRejection`], the RFC 6750 §3.1 reading of a response:
///
/// | response | rejected? |
/// |---|---|
/// | 401, `Bearer error="invalid_token"` | yes |
/// | 401, Bearer challenge without `error`, or no `WWW-Authenticate` at all | yes |
/// | 401, `Bearer error="insufficient_scope"` or any other error | no |
/// | 401 with only non-Bearer challenges (`DPoP`, `Basic`) | no |
/// | any other status (403, 400, …) | no |
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultTokenRejection;

impl TokenRejection for DefaultTokenRejection {
    fn is_token_rejected(&self, response: &Response) -> bool {
        is_token_rejected(response)
    }
}

fn is_token_rejected(response: &Response) -> bool {
    response.status() == StatusCode::UNAUTHORIZED
        && challenges_reject_token(
            response
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                // Not `to_str`: a non-ASCII description must not hide the challenge.
                .map(|value| String::from_utf8_lossy(value.as_bytes())),
        )
}

/// What the `DPoP` challenge of a 401 asks (RFC 9449 §7.1, §9).
#[cfg_attr(not(feature = "dpop"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DpopChallenge {
    /// `error="use_dpop_nonce"`: send again with the server's `DPoP-Nonce`.
    UseNonce,
    /// `error="invalid_token"`, or no error: the token was rejected.
    Rejected,
    /// Another error (`invalid_dpop_proof`, `insufficient_scope`, …).
    Other,
}

/// The `DPoP` challenge of `response`, if it is a 401 carrying one.
pub(crate) fn dpop_challenge(response: &Response) -> Option<DpopChallenge> {
    if response.status() != StatusCode::UNAUTHORIZED {
        return None;
    }
    response
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .flat_map(|value| parse_challenges(&String::from_utf8_lossy(value.as_bytes())))
        .find(|challenge| challenge.scheme.eq_ignore_ascii_case("dpop"))
        .map(|challenge| match challenge.param("error") {
            Some("use_dpop_nonce") => DpopChallenge::UseNonce,
            None | Some("invalid_token") => DpopChallenge::Rejected,
            Some(_) => DpopChallenge::Other,
        })
}

/// The decision on the `WWW-Authenticate` values of a 401.
pub(crate) fn challenges_reject_token<S: AsRef<str>>(values: impl Iterator<Item = S>) -> bool {
    let mut any = false;
    for value in values {
        for challenge in parse_challenges(value.as_ref()) {
            any = true;
            if challenge.scheme.eq_ignore_ascii_case("bearer") {
                return match challenge.param("error") {
                    None => true,
                    Some(error) => error == "invalid_token",
                };
            }
        }
    }
    !any
}

/// One challenge of a `WWW-Authenticate` header (RFC 9110 §11.6.1).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub(crate) scheme: String,
    pub(crate) params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Parses every challenge of one header value. Malformed input yields what could be read
/// before the damage; it never panics.
pub(crate) fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut parser = Parser {
        rest: value.as_bytes(),
    };
    let mut challenges = Vec::new();
    loop {
        parser.skip_separators();
        let Some(scheme) = parser.token() else { break };
        let mut challenge = Challenge {
            scheme,
            params: Vec::new(),
        };
        loop {
            parser.skip_separators();
            let checkpoint = parser.rest;
            let Some(name) = parser.token() else { break };
            parser.skip_spaces();
            if !parser.eat(b'=') {
                // A token not followed by `=` starts the next challenge (or is token68).
                parser.rest = checkpoint;
                break;
            }
            parser.skip_spaces();
            let value = if parser.peek() == Some(b'"') {
                parser.quoted()
            } else {
                parser.token()
            };
            match value {
                Some(value) => challenge.params.push((name, value)),
                None => {
                    // token68 (`Basic abc==`): consume the padding and keep going.
                    while parser.eat(b'=') {}
                }
            }
        }
        challenges.push(challenge);
    }
    challenges
}

struct Parser<'a> {
    rest: &'a [u8],
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn advance(&mut self) {
        self.rest = self.rest.get(1..).unwrap_or_default();
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.advance();
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.advance();
        }
    }

    fn token(&mut self) -> Option<String> {
        let length = self.rest.iter().take_while(|b| is_tchar(**b)).count();
        if length == 0 {
            return None;
        }
        let (token, rest) = self.rest.split_at(length);
        self.rest = rest;
        Some(String::from_utf8_lossy(token).into_owned())
    }

    fn quoted(&mut self) -> Option<String> {
        self.eat(b'"');
        let mut value = Vec::new();
        while let Some(byte) = self.peek() {
            self.advance();
            match byte {
                b'"' => return Some(String::from_utf8_lossy(&value).into_owned()),
                b'\\' => {
                    if let Some(escaped) = self.peek() {
                        value.push(escaped);
                        self.advance();
                    }
                }
                other => value.push(other),
            }
        }
        // Unterminated quote: keep what was read.
        Some(String::from_utf8_lossy(&value).into_owned())
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejects(values: &[&str]) -> bool {
        challenges_reject_token(values.iter().copied())
    }

    #[test]
    fn r34_invalid_token_rejects() {
        assert!(rejects(&[
            r#"Bearer realm="example", error="invalid_token", error_description="expired""#
        ]));
    }

    #[test]
    fn r37_no_error_or_no_header_rejects() {
        assert!(rejects(&[]));
        assert!(rejects(&[r#"Bearer realm="example""#]));
        assert!(rejects(&["Bearer"]));
    }

    #[test]
    fn r35_insufficient_scope_does_not_reject() {
        assert!(!rejects(&[
            r#"Bearer error="insufficient_scope", scope="admin""#
        ]));
        assert!(!rejects(&[r#"Bearer error="invalid_request""#]));
    }

    #[test]
    fn r38_dpop_and_basic_challenges_do_not_reject() {
        assert!(!rejects(&[r#"DPoP error="use_dpop_nonce""#]));
        assert!(!rejects(&[r#"Basic realm="x""#]));
    }

    #[test]
    fn r33_several_challenges_in_one_header() {
        let challenges =
            parse_challenges(r#"Basic realm="a", Bearer realm="b", error="invalid_token""#);
        assert_eq!(challenges.len(), 2);
        assert_eq!(challenges[1].scheme, "Bearer");
        assert_eq!(challenges[1].param("error"), Some("invalid_token"));
        assert!(rejects(&[
            r#"Basic realm="a", Bearer error="invalid_token""#
        ]));
        assert!(rejects(&[r#"Newauth realm="apps", type=1, Bearer"#]));
    }

    #[test]
    fn r35_non_ascii_descriptions_do_not_hide_insufficient_scope() {
        assert!(!rejects(&[
            "Bearer error=\"insufficient_scope\", error_description=\"f\u{fc}r \u{c4}\""
        ]));
    }

    #[test]
    fn token68_and_escapes_parse() {
        let challenges = parse_challenges(r#"Negotiate abc==, Bearer error="in\"valid""#);
        assert_eq!(challenges[1].param("error"), Some("in\"valid"));
    }

    #[test]
    fn r33_malformed_headers_never_panic() {
        for value in [
            "",
            ",,,",
            "=",
            "Bearer =",
            "Bearer error=",
            "Bearer error=\"",
            "\"\"\"",
            "Bearer error=\"\\",
            "é Bearer",
            "Bearer, , error",
            "\u{0}\u{1}",
        ] {
            let _ = parse_challenges(value);
            let _ = rejects(&[value]);
        }
    }
}
