//! Requests with DPoP-bound tokens (RFC 9449 §7): `Authorization: DPoP <token>` and a fresh
//! proof on every request, the resource server's nonce answered once, and the same single
//! refresh-and-replay as bearer tokens when the token is rejected.

use std::borrow::Cow;
use std::sync::Arc;

use http::{Extensions, HeaderValue};
use reqwest::{Request, Response};
use reqwest_middleware::Next;

use super::TokenRefreshMiddleware;
use crate::classify::{dpop_challenge, DpopChallenge};
use crate::error::Error;
use crate::key::TokenKey;
use crate::log;
use crate::manager::{ActiveToken, PublishedToken};
use crate::origin::AllowedOrigin;

impl TokenRefreshMiddleware {
    /// Sends `request` with the DPoP-bound `token`: answers a nonce challenge once, and
    /// replays once with a fresh token if the response rejects this one.
    pub(super) async fn send_dpop(
        &self,
        request: Request,
        origin: &AllowedOrigin,
        key: Cow<'_, TokenKey>,
        token: PublishedToken,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        // Only a request whose body can be cloned is sent again (a stream cannot be).
        let mut replay = request.try_clone();
        let response = self
            .send_proven(request, origin, &mut replay, &token, extensions, &next)
            .await?;
        let rejected = origin.contains(response.url())
            && (self.rejection.is_token_rejected(&response)
                || dpop_challenge(&response) == Some(DpopChallenge::Rejected));
        if !rejected {
            return Ok(response);
        }
        let Some(replay) = replay else {
            log::debug!(%key, "DPoP token rejected; request body cannot be replayed");
            if let Err(error) = self.manager.token_after_rejection(&key, &token).await {
                log::debug!(%key, %error, "refresh after a rejected streaming request failed");
            }
            return Ok(response);
        };
        let fresh = self
            .manager
            .token_after_rejection(&key, &token)
            .await
            .map_err(middleware_error)?;
        let Some(fresh) = fresh else {
            return Ok(response);
        };
        drop(response);
        let mut again = replay.try_clone();
        // Replayed once (a nonce challenge to the replay is answered once too).
        self.send_proven(replay, origin, &mut again, &fresh, extensions, &next)
            .await
    }

    /// Sends `request` to `origin` with `token` and a proof, keeps the nonce the response
    /// carries (unless a redirect brought it from another origin), and if the response asks
    /// for a nonce other than the one the proof carried, sends `copy` (taken before) once more
    /// with a proof that carries it.
    async fn send_proven(
        &self,
        mut request: Request,
        origin: &AllowedOrigin,
        copy: &mut Option<Request>,
        token: &ActiveToken,
        extensions: &mut Extensions,
        next: &Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let used = self
            .authorize(&mut request, token)
            .map_err(middleware_error)?;
        let response = next.clone().run(request, extensions).await?;
        let nonces = self.manager.dpop_nonces();
        let keep_nonce = |response: &Response| {
            if origin.contains(response.url()) {
                nonces.update(origin.as_str(), response.headers().get("dpop-nonce"));
            }
        };
        keep_nonce(&response);
        let offered = nonces.get(origin.as_str());
        if dpop_challenge(&response) != Some(DpopChallenge::UseNonce)
            || offered.is_none()
            || offered == used
        {
            // A server asking again for the nonce it was given, or offering none usable, gets
            // no second try: its answer is returned as it is.
            return Ok(response);
        }
        let Some(mut retry) = copy.take() else {
            return Ok(response);
        };
        // A copy is kept back for a replay after a rejection.
        *copy = retry.try_clone();
        drop(response);
        self.authorize(&mut retry, token)
            .map_err(middleware_error)?;
        let response = next.clone().run(retry, extensions).await?;
        keep_nonce(&response);
        Ok(response)
    }

    /// Adds the proof of `token`'s key for `request` (its method and URL, the token's hash,
    /// the origin's latest nonce); returns the nonce it carries.
    pub(super) fn prove(
        &self,
        request: &mut Request,
        token: &ActiveToken,
    ) -> Result<Option<Arc<str>>, Error> {
        let Some((dpop_key, ath)) = token.dpop() else {
            return Ok(None);
        };
        let origin = request.url().origin().ascii_serialization();
        let nonce = self.manager.dpop_nonces().get(&origin);
        let htu = crate::dpop::htu(request.url());
        let proof =
            dpop_key.sign_proof(request.method().as_str(), &htu, nonce.as_deref(), Some(ath))?;
        let mut value = HeaderValue::try_from(proof).map_err(|_| Error::SigningFailed)?;
        value.set_sensitive(true);
        request.headers_mut().insert("dpop", value);
        Ok(nonce)
    }
}

fn middleware_error(error: Error) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(error)
}
