//! The origins a middleware sends tokens to (RFC 6749 §10.3), and the check every request and response
//! goes through.

use url::{Origin, Url};

use crate::error::ConfigError;
use crate::url_policy::{self, has_credentials};

/// An origin tokens may be sent to.
pub(crate) struct AllowedOrigin {
    origin: Origin,
    /// `scheme://host[:port]`: how a URL of this origin without credentials begins.
    serialized: String,
}

impl std::fmt::Debug for AllowedOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.serialized)
    }
}

impl AllowedOrigin {
    /// The origin of `url` (its path is ignored): https, or plain http to a loopback host when
    /// allowed.
    pub(crate) fn parse(url: &str, allow_http_loopback: bool) -> Result<Self, ConfigError> {
        let parsed = url_policy::parse("allow_origin", url)?;
        url_policy::check_secure("allow_origin", &parsed, allow_http_loopback)?;
        Ok(Self::new(parsed.origin()))
    }

    fn new(origin: Origin) -> Self {
        let serialized = origin.ascii_serialization();
        Self { origin, serialized }
    }

    /// `scheme://host[:port]`, as `Origin::ascii_serialization` writes it.
    #[cfg(feature = "dpop")]
    pub(crate) fn as_str(&self) -> &str {
        &self.serialized
    }

    /// Whether `url` belongs to this origin (`url.origin() == origin`).
    ///
    /// This runs for every request and response, so a URL is compared as text, without the
    /// allocations of `Url::origin`: the url crate serializes an origin and a URL's start alike
    /// (lowercase ASCII host, no default port), and the path of an `http(s)` URL starts with
    /// `/`, so a URL of this origin is `serialized` followed by `/`. Only a URL with
    /// credentials (`user:password@` between the scheme and the host) is compared field by
    /// field.
    pub(crate) fn contains(&self, url: &Url) -> bool {
        match url.as_str().strip_prefix(self.serialized.as_str()) {
            Some(rest) => rest.starts_with('/'),
            None => has_credentials(url) && url.origin() == self.origin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(origin: &str) -> AllowedOrigin {
        AllowedOrigin::new(Url::parse(origin).unwrap().origin())
    }

    /// Every case agrees with `Url::origin`, the definition the fast check stands in for.
    #[track_caller]
    fn check(origin: &str, url: &str, expected: bool) {
        let allowed = allowed(origin);
        let url = Url::parse(url).unwrap();
        assert_eq!(
            url.origin() == allowed.origin,
            expected,
            "{url} vs {origin}"
        );
        assert_eq!(allowed.contains(&url), expected, "{url} vs {origin}");
    }

    #[test]
    fn r40_same_origin() {
        let cases = [
            ("https://api.example.com", "https://api.example.com/"),
            (
                "https://api.example.com/ignored",
                "https://api.example.com/a?b#c",
            ),
            ("https://API.Example.com", "https://api.example.COM/x"),
            ("https://api.example.com:443", "https://api.example.com/x"),
            ("https://api.example.com", "https://api.example.com:443/x"),
            (
                "https://api.example.com:8443",
                "https://api.example.com:8443/x",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/x"),
            ("https://[::1]:8443", "https://[0:0::1]:8443/x"),
            ("https://bücher.example", "https://xn--bcher-kva.example/x"),
            (
                "https://api.example.com",
                "https://user:secret@api.example.com/x",
            ),
            ("https://api.example.com", "https://user@api.example.com/x"),
        ];
        for (origin, url) in cases {
            check(origin, url, true);
        }
    }

    #[test]
    fn r40_other_origins() {
        let cases = [
            ("https://api.example.com", "http://api.example.com/x"),
            (
                "https://api.example.com",
                "https://api.example.com.evil.test/x",
            ),
            ("https://api.example.com", "https://api.example.community/x"),
            ("https://api.example.com", "https://api.example.com:8443/x"),
            (
                "https://api.example.com:844",
                "https://api.example.com:8443/x",
            ),
            ("https://api.example.com:8443", "https://api.example.com/x"),
            ("https://api.example.com", "https://other.example.com/x"),
            (
                "https://api.example.com",
                "https://evil.test/api.example.com/x",
            ),
            (
                "https://api.example.com",
                "https://api.example.com@evil.test/x",
            ),
            ("https://api.example.com", "https://u:p@evil.test/x"),
            ("https://[::1]", "https://[::2]/x"),
            ("https://api.example.com", "ftp://api.example.com/x"),
            (
                "https://api.example.com",
                "data:text/plain,https://api.example.com/",
            ),
        ];
        for (origin, url) in cases {
            check(origin, url, false);
        }
    }
}
