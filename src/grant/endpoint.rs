//! The token-endpoint HTTP client shared by the grants: no redirects, timeouts, a size cap.

use std::time::Duration;

use reqwest::Url;

use super::response::Answer;
use crate::error::{ConfigError, Error, InvalidResponse, TransientError};

/// How the client authenticates to the token endpoint (RFC 6749 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the form-encoded id and secret (RFC 6749 §2.3.1).
    /// The default when a secret is configured (RFC 8414 §2).
    #[default]
    ClientSecretBasic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A public client: `client_id` in the body, no secret.
    None,
}

/// Limits and transport settings of the token-endpoint client.
#[derive(Debug, Clone)]
pub(crate) struct EndpointSettings {
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) allow_http_loopback: bool,
}

impl Default for EndpointSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 1024 * 1024,
            allow_http_loopback: false,
        }
    }
}

impl EndpointSettings {
    /// The HTTP client for the token endpoint. It never follows redirects: a 307/308 would
    /// re-post the refresh token and client secret to wherever it points (RFC 9700 §4.12).
    pub(crate) fn client(&self) -> Result<reqwest::Client, ConfigError> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .https_only(!self.allow_http_loopback)
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            .build()
            .map_err(|error| ConfigError::HttpClient(error.to_string()))
    }

    /// Checks an endpoint URL: https (or loopback http when allowed), no credentials, no
    /// fragment.
    pub(crate) fn endpoint_url(&self, url: &str) -> Result<Url, ConfigError> {
        let parsed = Url::parse(url).map_err(|_| ConfigError::InvalidUrl(redact_userinfo(url)))?;
        if has_credentials(&parsed) {
            return Err(ConfigError::CredentialsInUrl(redact_userinfo(url)));
        }
        if parsed.fragment().is_some() {
            return Err(ConfigError::FragmentInTokenEndpoint(redact_userinfo(url)));
        }
        check_secure(&parsed, self.allow_http_loopback)?;
        Ok(parsed)
    }
}

/// Tokens travel over TLS only (RFC 6749 §10.3–10.4): https everywhere, plain http only to a
/// loopback host and only when explicitly allowed.
pub(crate) fn check_secure(url: &Url, allow_http_loopback: bool) -> Result<(), ConfigError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http_loopback && is_loopback(url) => Ok(()),
        _ => Err(ConfigError::InsecureUrl(redact_userinfo(url.as_str()))),
    }
}

/// A URL fit for an error message: any `user:password@` part is replaced.
///
/// Works on the text as given, parsable or not, however the slashes after the scheme are
/// written: URL parsers read `https:/user:pw@host` and `https:user:pw@host` as carrying
/// credentials too.
pub(crate) fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.split_once(':') {
        Some((scheme, rest)) if is_scheme(scheme) => (Some(scheme), rest),
        _ => (None, url),
    };
    let authority = rest.trim_start_matches(['/', '\\']);
    let lead = &rest[..rest.len() - authority.len()];
    let authority_end = authority
        .find(['/', '?', '#', '\\'])
        .unwrap_or(authority.len());
    match authority[..authority_end].rfind('@') {
        Some(at) => {
            let scheme = scheme
                .map(|scheme| format!("{scheme}:"))
                .unwrap_or_default();
            format!("{scheme}{lead}[redacted]@{}", &authority[at + 1..])
        }
        None => url.to_owned(),
    }
}

fn is_scheme(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Whether `url` carries credentials (`user[:password]@` before the host).
pub(crate) fn has_credentials(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Sends a token request and reads at most `limit` bytes of the answer.
pub(crate) async fn send(request: reqwest::RequestBuilder, limit: usize) -> Result<Answer, Error> {
    let mut response = request.send().await.map_err(transport)?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(Error::InvalidResponse(InvalidResponse::TooLarge { limit }));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > limit {
            return Err(Error::InvalidResponse(InvalidResponse::TooLarge { limit }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// The longest `Retry-After` believed: a server asking for more is waited on this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// `Retry-After` in its delay-seconds form (RFC 9110 §10.2.3); a date or garbage is ignored.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

fn transport(error: reqwest::Error) -> Error {
    if error.is_timeout() {
        Error::Transient(TransientError::Timeout)
    } else {
        Error::Transient(TransientError::Transport(std::sync::Arc::new(
            error.without_url(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_never_show_url_credentials() {
        assert_eq!(
            redact_userinfo("http://user:pa55@auth.example.com/token?x=1"),
            "http://[redacted]@auth.example.com/token?x=1"
        );
        assert_eq!(
            redact_userinfo("https://a.example/p@th"),
            "https://a.example/p@th"
        );
        for (url, shown) in [
            (
                "https:/user:pa55@auth.example.com/token",
                "https:/[redacted]@auth.example.com/token",
            ),
            (
                "https:user:pa55@auth.example.com",
                "https:[redacted]@auth.example.com",
            ),
            (
                "https:\\\\user:pa55@auth.example.com/t",
                "https:\\\\[redacted]@auth.example.com/t",
            ),
            ("not a url user:pa55@x", "[redacted]@x"),
        ] {
            assert_eq!(redact_userinfo(url), shown, "{url}");
        }
        let error = EndpointSettings::default()
            .endpoint_url("http://user:pa55@auth.example.com/token")
            .unwrap_err();
        assert!(!error.to_string().contains("pa55"));
    }

    /// Credentials in an endpoint URL would reach `Debug` output and every stored token set
    /// (the issuer binding names the endpoint), so they are refused.
    #[test]
    fn endpoint_urls_with_credentials_are_refused() {
        for url in [
            "https://user:pa55@auth.example.com/token",
            "https://user@auth.example.com/token",
        ] {
            let error = EndpointSettings::default().endpoint_url(url).unwrap_err();
            assert_eq!(
                error,
                ConfigError::CredentialsInUrl("https://[redacted]@auth.example.com/token".into())
            );
        }
    }
}
