//! The token-endpoint HTTP client shared by the grants: no redirects, timeouts, a size cap.

use std::time::Duration;

use reqwest::Url;

use super::response::Answer;
use crate::error::{ConfigError, Error, InvalidResponse, TransientError};
use crate::url_policy;

/// Limits and transport settings of the authorization-server client.
pub(crate) struct EndpointSettings {
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) allow_http_loopback: bool,
    /// The application's own client builder (proxy, roots, mTLS), if it gave one.
    pub(crate) http: Option<reqwest::ClientBuilder>,
}

// Written out: the application's client builder is not shown, since its `Debug` prints its
// default headers and its proxies' credentials.
impl std::fmt::Debug for EndpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSettings")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("allow_http_loopback", &self.allow_http_loopback)
            .field("custom_http_client", &self.http.is_some())
            .finish()
    }
}

impl Default for EndpointSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 1024 * 1024,
            allow_http_loopback: false,
            http: None,
        }
    }
}

impl EndpointSettings {
    /// The HTTP client for the authorization server: the application's builder, or a new one,
    /// with what safety needs set over it. It never follows redirects: a 307/308 would re-post
    /// the refresh token and client secret to wherever it points (RFC 9700 §4.12). Only https
    /// URLs (or loopback http, when allowed) are ever given to it.
    pub(crate) fn client(&mut self) -> Result<reqwest::Client, ConfigError> {
        self.http
            .take()
            .unwrap_or_default()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            .build()
            .map_err(|error| ConfigError::HttpClient(error.without_url().to_string()))
    }

    /// Checks the endpoint URL of the setting `setting` (see [`url_policy::endpoint`]).
    pub(crate) fn endpoint_url(
        &self,
        setting: &'static str,
        url: &str,
    ) -> Result<Url, ConfigError> {
        url_policy::endpoint(setting, url, self.allow_http_loopback)
    }
}

/// Sends a token request and reads at most `limit` bytes of the answer.
pub(crate) async fn send(request: reqwest::RequestBuilder, limit: usize) -> Result<Answer, Error> {
    let (client, request) = request.build_split();
    let request = request.map_err(transport)?;
    execute(&client, request, limit)
        .await
        .map_err(|failure| failure.error)
}

/// Why a request got no usable answer.
pub(crate) struct Failure {
    pub(crate) error: Error,
    /// The request may have reached the server (it was not a connection failure): the server
    /// may have acted on it.
    pub(crate) in_doubt: bool,
}

/// Sends `request` with `client` and reads at most `limit` bytes of the answer.
pub(crate) async fn execute(
    client: &reqwest::Client,
    request: reqwest::Request,
    limit: usize,
) -> Result<Answer, Failure> {
    let failed = |error: reqwest::Error| Failure {
        in_doubt: !error.is_connect(),
        error: transport(error),
    };
    let mut response = client.execute(request).await.map_err(failed)?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let dpop_nonce = response.headers().get("dpop-nonce").cloned();
    let too_large = || Failure {
        error: Error::InvalidResponse(InvalidResponse::TooLarge { limit }),
        in_doubt: false,
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        retry_after,
        dpop_nonce,
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
