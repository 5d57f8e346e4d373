//! The authorization-server client shared by the grants: client authentication, form posts to
//! the token endpoint, and revocation (RFC 7009).

use reqwest::Url;
use url::form_urlencoded;

use super::endpoint;
use super::response;
use crate::error::{Error, TransientError};
use crate::key::TokenKey;
use crate::secret::ClientSecret;
use crate::token::TokenResponse;

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

/// A configured OAuth client of one authorization server.
pub(crate) struct OAuthClient {
    pub(crate) token_endpoint: Url,
    pub(crate) revocation_endpoint: Option<Url>,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<ClientSecret>,
    pub(crate) auth: ClientAuth,
    pub(crate) max_response_bytes: usize,
    pub(crate) http: reqwest::Client,
    /// Plain http to loopback hosts was allowed (tests and demos).
    pub(crate) allow_http_loopback: bool,
}

impl OAuthClient {
    /// A form POST to `url` with the client's authentication added (RFC 6749 §2.3): HTTP Basic
    /// with form-encoded parts, or the credentials in the body; never both (RFC 6749 §2.3).
    pub(crate) fn post<'a>(
        &'a self,
        url: &Url,
        mut form: Vec<(&'a str, &'a str)>,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(url.clone())
            .header(http::header::ACCEPT, "application/json");
        match (self.auth, &self.client_secret) {
            (ClientAuth::ClientSecretBasic, Some(secret)) => {
                // RFC 6749 §2.3.1: each part is form-encoded before reqwest joins and
                // base64-encodes them; reqwest marks the header sensitive.
                request = request.basic_auth(
                    form_encode(&self.client_id),
                    Some(form_encode(secret.secret())),
                );
            }
            (ClientAuth::ClientSecretPost, Some(secret)) => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", secret.secret()));
            }
            _ => form.push(("client_id", &self.client_id)),
        }
        request.form(&form)
    }

    /// Posts `form` to the token endpoint and classifies the answer. `secret` (a refresh token)
    /// is redacted, with the client secret, from any text kept from the response.
    pub(crate) async fn request_tokens<'a>(
        &'a self,
        key: &TokenKey,
        form: Vec<(&'a str, &'a str)>,
        secret: &str,
    ) -> Result<TokenResponse, Error> {
        let request = self.post(&self.token_endpoint, form);
        let answer = endpoint::send(request, self.max_response_bytes).await?;
        response::classify(key, &answer, &[secret, self.client_secret()])
    }

    /// Revokes `token` at the revocation endpoint (RFC 7009 §2.1). A 200 means revoked, also
    /// for a token the server did not know (§2.2); a 503 means it still exists (§2.2.1).
    pub(crate) async fn revoke<'a>(
        &'a self,
        key: &TokenKey,
        token: &'a str,
        hint: &'a str,
    ) -> Result<(), Error> {
        let Some(url) = &self.revocation_endpoint else {
            return Ok(());
        };
        let form = vec![("token", token), ("token_type_hint", hint)];
        let answer = endpoint::send(self.post(url, form), self.max_response_bytes).await?;
        let status = answer.status;
        if status.is_success() {
            return Ok(());
        }
        if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
            return Err(Error::Transient(TransientError::Status {
                status,
                retry_after: answer.retry_after,
            }));
        }
        // An error body classifies like a token-endpoint error; anything else is unknown.
        match response::classify(key, &answer, &[token, self.client_secret()]) {
            Err(error) => Err(error),
            Ok(_) => Ok(()),
        }
    }

    /// `<token endpoint> <client id>`: what a stored token set is bound to, so that its refresh
    /// token is never sent to another server.
    pub(crate) fn binding(&self) -> String {
        format!("{} {}", self.token_endpoint, self.client_id)
    }

    fn client_secret(&self) -> &str {
        self.client_secret.as_ref().map_or("", |s| s.secret())
    }
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("token_endpoint", &self.token_endpoint.as_str())
            .field(
                "revocation_endpoint",
                &self.revocation_endpoint.as_ref().map(Url::as_str),
            )
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
