//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, OpenID Connect Core §9) on
//! the kit's server: the client proves who it is with a short-lived JWT signed by its private
//! key, which the server checks with the public key registered for it.

use std::collections::HashSet;

use serde_json::Value;
use wiremock::Request;

use super::jwt::{self, Jwt, PublicKey};
use super::{ClientAuth, MockAuthorizationServerBuilder};

/// `client_assertion_type` of `private_key_jwt` (RFC 7523 §2.2).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The furthest in the future an assertion's `exp` may be.
const MAX_LIFETIME_SECS: f64 = 300.0;

/// How far ahead of the server's clock an `iat` or `nbf` may be.
const SKEW_SECS: f64 = 60.0;

/// `private_key_jwt`, RFC 7523.
impl MockAuthorizationServerBuilder {
    /// Requires token and revocation requests to authenticate as `client_id` with
    /// `private_key_jwt` (RFC 7523 §2.2, §3; OpenID Connect Core §9), verified with
    /// `public_jwk`: an RSA key (`{"kty":"RSA","n":…,"e":…}`, for `RS256`) or a P-256 key
    /// (`{"kty":"EC","crv":"P-256","x":…,"y":…}`, for `ES256`). Replaces
    /// [`client`](Self::client).
    ///
    /// A request must carry `client_assertion_type` =
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and a `client_assertion`: a
    /// JWT whose `alg` is the key's (`RS256` or `ES256`; its `kid`, if both have one, the
    /// key's), signed by that key, with `iss` = `sub` = `client_id`, `aud` = the token endpoint
    /// URL or the issuer ([`MockAuthorizationServer::uri`]; on `/revoke`, also the revocation
    /// URL), a string or an array holding one of them, `exp` in the future and at most five
    /// minutes ahead, and a `jti` the server has never seen. The request may also carry
    /// `client_id` (then equal to `client_id`), and no other client authentication (no
    /// `Authorization` header, no `client_secret`: RFC 6749 §2.3). Anything else gets `401
    /// {"error":"invalid_client","error_description":…}`.
    ///
    /// An assertion is spent once it is accepted, even if the request is then refused for
    /// another reason (a DPoP nonce challenge, which comes after client authentication, or an
    /// invalid grant): every request needs a freshly signed one.
    ///
    /// # Panics
    ///
    /// If `public_jwk` is not a public RSA or P-256 key (a private member such as `d` is a
    /// broken fixture too), or names an `alg` other than its key's.
    ///
    /// [`MockAuthorizationServer::uri`]: super::MockAuthorizationServer::uri
    pub fn private_key_jwt_client(
        mut self,
        client_id: impl Into<String>,
        public_jwk: serde_json::Value,
    ) -> Self {
        self.client = Some(ClientAuth::PrivateKeyJwt(AssertionClient::new(
            client_id.into(),
            &public_jwk,
        )));
        self
    }
}

/// A client registered for `private_key_jwt`.
#[derive(Debug, Clone)]
pub(super) struct AssertionClient {
    client_id: String,
    /// `RS256` or `ES256`.
    alg: &'static str,
    key: PublicKey,
    kid: Option<String>,
}

impl AssertionClient {
    fn new(client_id: String, jwk: &Value) -> Self {
        let jwk = jwk
            .as_object()
            .expect("private_key_jwt_client: the JWK is a JSON object");
        assert!(
            !jwt::has_private_members(jwk),
            "private_key_jwt_client: pass the client's public JWK, without its private key"
        );
        let alg = match jwk.get("kty").and_then(Value::as_str) {
            Some("RSA") => "RS256",
            Some("EC") => "ES256",
            other => panic!("private_key_jwt_client: an RSA or EC key, not {other:?}"),
        };
        if let Some(named) = jwk.get("alg") {
            assert_eq!(
                named.as_str(),
                Some(alg),
                "private_key_jwt_client: the JWK's alg"
            );
        }
        let key = PublicKey::from_jwk(jwk, alg).unwrap_or_else(|| {
            panic!("private_key_jwt_client: not a valid {alg} public JWK: {jwk:?}")
        });
        Self {
            client_id,
            alg,
            key,
            kid: jwk.get("kid").and_then(Value::as_str).map(str::to_owned),
        }
    }

    /// Checks the client authentication of `request` (whose form is `field`) for one of
    /// `audiences`; the assertion's `jti` is added to `seen` once everything else checked out.
    /// `Err` with the reason (the `error_description`).
    pub(super) fn authenticate(
        &self,
        request: &Request,
        field: &dyn Fn(&str) -> Option<String>,
        audiences: &[&str],
        seen: &mut HashSet<String>,
    ) -> Result<(), &'static str> {
        if request.headers.contains_key("authorization") || field("client_secret").is_some() {
            return Err("more than one client authentication method");
        }
        if field("client_assertion_type").as_deref() != Some(JWT_BEARER) {
            return Err("client_assertion_type is not jwt-bearer");
        }
        if field("client_id").is_some_and(|id| id != self.client_id) {
            return Err("client_id is not the assertion's client");
        }
        let assertion = field("client_assertion").ok_or("no client_assertion")?;
        let jwt = Jwt::parse(&assertion).ok_or("the assertion is not a compact JWS")?;
        if jwt.header_str("alg") != Some(self.alg) {
            return Err("the assertion's alg is not the client key's");
        }
        if jwt.header_str("typ") == Some("dpop+jwt") {
            return Err("a DPoP proof is not a client assertion");
        }
        if let (Some(registered), Some(named)) = (&self.kid, jwt.header_str("kid")) {
            if registered != named {
                return Err("the assertion's kid is not the client key's");
            }
        }
        if !jwt.verify(&self.key) {
            return Err("the assertion's signature does not verify with the client key");
        }
        if jwt.claim_str("iss") != Some(self.client_id.as_str()) {
            return Err("the assertion's iss is not the client");
        }
        if jwt.claim_str("sub") != Some(self.client_id.as_str()) {
            return Err("the assertion's sub is not the client");
        }
        let for_us = |value: &Value| value.as_str().is_some_and(|aud| audiences.contains(&aud));
        let addressed = match jwt.claims.get("aud") {
            Some(Value::Array(values)) => values.iter().any(for_us),
            Some(value) => for_us(value),
            None => false,
        };
        if !addressed {
            return Err("the assertion's aud is neither the issuer nor the endpoint");
        }
        let now = jwt::now_secs();
        let exp = jwt.claim_number("exp").ok_or("no exp in the assertion")?;
        if exp <= now {
            return Err("the assertion expired");
        }
        if exp > now + MAX_LIFETIME_SECS {
            return Err("the assertion's exp is more than five minutes ahead");
        }
        for name in ["iat", "nbf"] {
            match jwt.claims.get(name) {
                None => {}
                Some(value) if value.as_f64().is_some_and(|at| at <= now + SKEW_SECS) => {}
                Some(_) => return Err("the assertion's iat or nbf is not a past time"),
            }
        }
        let jti = jwt
            .claim_str("jti")
            .filter(|jti| !jti.is_empty())
            .ok_or("no jti in the assertion")?;
        if !seen.insert(jti.to_owned()) {
            return Err("the assertion was used before (its jti is not new)");
        }
        Ok(())
    }
}
