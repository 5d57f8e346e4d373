//! Which URLs tokens may travel to, and how a URL is shown in an error.
//!
//! Tokens travel over TLS only (RFC 6749 §10.3–10.4): every endpoint and every origin tokens are
//! sent to must be `https`, or plain `http` to a loopback host when the grant allows it for
//! tests. A URL never carries credentials (they would end up in logs, `Debug` output and stored
//! token sets), and is never shown with them.

use reqwest::Url;

use crate::error::ConfigError;

/// The URL of the setting `setting` for an endpoint tokens are sent to: parsed, without
/// credentials or fragment (RFC 6749 §3.2), and secure.
pub(crate) fn endpoint(
    setting: &'static str,
    url: &str,
    allow_http_loopback: bool,
) -> Result<Url, ConfigError> {
    let parsed = parse(setting, url)?;
    if parsed.fragment().is_some() {
        return Err(ConfigError::FragmentInUrl {
            setting,
            url: redact_userinfo(url),
        });
    }
    check_secure(setting, &parsed, allow_http_loopback)?;
    Ok(parsed)
}

/// `url`, parsed, without credentials.
pub(crate) fn parse(setting: &'static str, url: &str) -> Result<Url, ConfigError> {
    let parsed = Url::parse(url).map_err(|_| ConfigError::InvalidUrl {
        setting,
        url: redact_userinfo(url),
    })?;
    if has_credentials(&parsed) {
        return Err(ConfigError::CredentialsInUrl {
            setting,
            url: redact_userinfo(url),
        });
    }
    Ok(parsed)
}

/// https, or plain http to a loopback host when allowed.
pub(crate) fn check_secure(
    setting: &'static str,
    url: &Url,
    allow_http_loopback: bool,
) -> Result<(), ConfigError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http_loopback && is_loopback(url) => Ok(()),
        _ => Err(ConfigError::InsecureUrl {
            setting,
            url: redact_userinfo(url.as_str()),
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_never_show_url_credentials() {
        for (url, shown) in [
            (
                "http://user:pa55@auth.example.com/token?x=1",
                "http://[redacted]@auth.example.com/token?x=1",
            ),
            ("https://a.example/p@th", "https://a.example/p@th"),
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
        let error = endpoint(
            "token_endpoint",
            "http://user:pa55@auth.example.com/token",
            false,
        )
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
            let error = endpoint("token_endpoint", url, false).unwrap_err();
            assert_eq!(
                error,
                ConfigError::CredentialsInUrl {
                    setting: "token_endpoint",
                    url: "https://[redacted]@auth.example.com/token".into()
                }
            );
        }
    }

    #[test]
    fn plain_http_only_to_loopback_and_only_when_allowed() {
        let insecure = |url: &str, allow: bool| {
            matches!(
                endpoint("token_endpoint", url, allow),
                Err(ConfigError::InsecureUrl { .. })
            )
        };
        assert!(insecure("http://auth.example.com/token", false));
        assert!(insecure("http://auth.example.com/token", true));
        assert!(insecure("http://127.0.0.1:9/token", false));
        assert!(!insecure("http://127.0.0.1:9/token", true));
        assert!(!insecure("http://[::1]:9/token", true));
        assert!(!insecure("http://localhost:9/token", true));
        assert!(insecure("ftp://auth.example.com/token", true));
    }

    #[test]
    fn a_fragment_is_refused_and_the_error_names_the_setting() {
        let error =
            endpoint("revocation_endpoint", "https://a.example/revoke#x", false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "revocation_endpoint `https://a.example/revoke#x` must not have a fragment"
        );
    }
}
