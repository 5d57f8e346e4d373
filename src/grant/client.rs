//! The authorization-server client shared by the grants: client authentication, form posts to
//! the token endpoint, and revocation (RFC 7009).

use std::time::Duration;

use reqwest::Url;
use url::form_urlencoded;

use super::endpoint;
use super::response::{self, Answer, TokenType};
use crate::error::{Error, ReauthorizationReason, TransientError};
use crate::key::TokenKey;
use crate::secret::ClientSecret;
use crate::token::TokenResponse;

/// The key that signs a token request's DPoP proof.
#[cfg(feature = "dpop")]
pub(crate) type ProofKey = crate::dpop::DpopKey;
/// Without the `dpop` feature no request carries a proof.
#[cfg(not(feature = "dpop"))]
pub(crate) type ProofKey = std::convert::Infallible;

/// When a DPoP-bound token request got no answer, the identical request is sent again after
/// these pauses (see [`OAuthClient::resend_identical`]).
const IDENTICAL_RESENDS: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(2)];

/// `client_assertion_type` of `private_key_jwt` (RFC 7523 §2.2).
#[cfg(feature = "private-key-jwt")]
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

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
    /// `private_key_jwt`: a JWT signed by the client's key (RFC 7523 §2.2); set with
    /// [`GrantBuilder::private_key_jwt`](crate::GrantBuilder::private_key_jwt).
    #[cfg(feature = "private-key-jwt")]
    PrivateKeyJwt,
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
    /// The `private_key_jwt` key and the assertions' audience.
    #[cfg(feature = "private-key-jwt")]
    pub(crate) assertion: Option<(super::assertion::ClientAssertionKey, String)>,
    /// The token endpoint's latest DPoP nonce.
    #[cfg(feature = "dpop")]
    pub(crate) nonces: crate::dpop::Nonces,
}

impl OAuthClient {
    /// A form POST to `url` with the client's authentication added (RFC 6749 §2.3): HTTP Basic
    /// with form-encoded parts, the credentials in the body, or a fresh client assertion;
    /// never two of them.
    pub(crate) fn post(
        &self,
        url: &Url,
        form: &[(&str, &str)],
    ) -> Result<reqwest::RequestBuilder, Error> {
        let mut fields = form.to_vec();
        let mut request = self
            .http
            .post(url.clone())
            .header(http::header::ACCEPT, "application/json");
        #[cfg(feature = "private-key-jwt")]
        let assertion = match &self.assertion {
            Some((key, audience)) => Some(key.assertion(&self.client_id, audience)?),
            None => None,
        };
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
                fields.push(("client_id", &self.client_id));
                fields.push(("client_secret", secret.secret()));
            }
            #[cfg(feature = "private-key-jwt")]
            (ClientAuth::PrivateKeyJwt, _) => {
                fields.push(("client_id", &self.client_id));
                fields.push(("client_assertion_type", JWT_BEARER));
                fields.push(("client_assertion", assertion.as_deref().unwrap_or_default()));
            }
            _ => fields.push(("client_id", &self.client_id)),
        }
        Ok(request.form(&fields))
    }

    /// Posts `form` to the token endpoint and classifies the answer. `secret` (a refresh token)
    /// is redacted, with the client secret, from any text kept from the response. With
    /// `proof_key`, the request carries a DPoP proof and must get a DPoP-bound token.
    pub(crate) async fn request_tokens(
        &self,
        key: &TokenKey,
        form: &[(&str, &str)],
        secret: &str,
        proof_key: Option<&ProofKey>,
    ) -> Result<TokenResponse, Error> {
        let mut answer = self.send_token_request(key, form, proof_key).await?;
        if proof_key.is_some() && answer.asks_for_dpop_nonce() {
            // RFC 9449 §8: the server refused the proof before processing the grant (the
            // refresh token is not spent); once more with its nonce, a new proof and, for
            // `private_key_jwt`, a new assertion (the first one was spent on authentication).
            answer = self.send_token_request(key, form, proof_key).await?;
        }
        let token_type = match proof_key {
            Some(_) => TokenType::Dpop,
            None => TokenType::Bearer,
        };
        response::classify(key, &answer, &[secret, self.client_secret()], token_type)
    }

    /// One token request: built (authentication, proof), sent, its nonce kept.
    async fn send_token_request(
        &self,
        key: &TokenKey,
        form: &[(&str, &str)],
        proof_key: Option<&ProofKey>,
    ) -> Result<Answer, Error> {
        let request = self.post(&self.token_endpoint, form)?;
        #[cfg(feature = "dpop")]
        let request = match proof_key {
            Some(dpop) => {
                let nonce = self.nonces.get(&self.token_origin());
                let htu = crate::dpop::htu(&self.token_endpoint);
                let proof = dpop.sign_proof("POST", &htu, nonce.as_deref(), None)?;
                request.header("dpop", proof)
            }
            None => request,
        };
        let request = request.build().map_err(|error| {
            Error::Transient(TransientError::Transport(error.without_url().into()))
        })?;
        let identical = proof_key.and_then(|_| request.try_clone());
        let answer = match endpoint::execute(&self.http, request, self.max_response_bytes).await {
            Ok(answer) => answer,
            Err(failure) => match identical {
                Some(identical) if failure.in_doubt => {
                    self.resend_identical(key, identical).await?
                }
                _ => return Err(failure.error),
            },
        };
        #[cfg(feature = "dpop")]
        self.nonces
            .update(&self.token_origin(), answer.dpop_nonce.as_ref());
        Ok(answer)
    }

    /// A DPoP-bound token request went out and no answer came back: the server may have
    /// rotated the refresh token. A new request would carry a new proof, and a server that
    /// processed the first one counts that as reuse and revokes the whole grant. The identical
    /// request (same proof, same `jti`) is safe: a server that never saw it processes it; one
    /// that did refuses it as a replay, spending nothing more. So only the identical request is
    /// sent again, a few times; if it is refused or never answered, the refresh token is lost.
    async fn resend_identical(
        &self,
        key: &TokenKey,
        request: reqwest::Request,
    ) -> Result<Answer, Error> {
        for pause in IDENTICAL_RESENDS {
            tokio::time::sleep(pause).await;
            let Some(copy) = request.try_clone() else {
                break;
            };
            match endpoint::execute(&self.http, copy, self.max_response_bytes).await {
                Ok(answer) if answer.status.is_success() => return Ok(answer),
                // Refused: the server had seen it (a replayed proof or assertion).
                Ok(_) => break,
                Err(_) => {}
            }
        }
        Err(Error::ReauthorizationRequired {
            key: key.clone(),
            reason: ReauthorizationReason::RotationLost,
        })
    }

    #[cfg(feature = "dpop")]
    fn token_origin(&self) -> String {
        self.token_endpoint.origin().ascii_serialization()
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
        let form = [("token", token), ("token_type_hint", hint)];
        let answer = endpoint::send(self.post(url, &form)?, self.max_response_bytes).await?;
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
        match response::classify(
            key,
            &answer,
            &[token, self.client_secret()],
            TokenType::Bearer,
        ) {
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
