//! DPoP (RFC 9449) on the kit's server: the builder switches, proofs checked as §4.3 asks,
//! replayed proofs refused, server nonces (§8, §9), tokens bound to the key of the proof that
//! obtained them (§5), and the protected API's checks (§7).
//!
//! Every proof carries a public key; the server checks the signature with it, then binds what
//! it issues to the key's thumbprint (RFC 7638, the `jkt`): the access token and the refresh
//! token. A later refresh or API request must prove possession of that same key.

use std::collections::HashSet;

use serde_json::Value;
use wiremock::{Request, ResponseTemplate};

use super::jwt::{self, Jwt, PublicKey};
use super::{Grant, MockAuthorizationServer, MockAuthorizationServerBuilder};
use crate::{DpopKey, TokenSet};

/// The proof algorithms the server accepts, as its challenges list them (`algs`, RFC 9449
/// §7.1).
pub(super) const ALGS: &str = "ES256 EdDSA";

/// How far a proof's `iat` may be from the server's clock, either way (RFC 9449 §11.1).
const IAT_WINDOW_SECS: f64 = 60.0;

/// What the server demands of DPoP clients; set by the builder.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Settings {
    /// Every token request must carry a proof ([`MockAuthorizationServerBuilder::dpop`]).
    required: bool,
    nonce: NoncePolicy,
    /// The API answers anything but a DPoP request with a bare DPoP challenge.
    api_requires: bool,
}

/// Whether and how the server hands out nonces (RFC 9449 §8, §9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum NoncePolicy {
    /// No nonce: a proof carrying one is refused (the server never issued it).
    #[default]
    Off,
    /// One nonce, changed by [`MockAuthorizationServer::rotate_dpop_nonce`].
    Required,
    /// A new nonce with every response.
    RotateEveryResponse,
}

/// Server-side DPoP state, kept with the grants (under the same lock).
#[derive(Default)]
pub(super) struct State {
    settings: Settings,
    /// The nonce proofs must carry now; `Some` exactly when nonces are on.
    nonce: Option<String>,
    /// Every `jti` of a proof that passed the checks, token endpoint and API alike.
    seen: HashSet<String>,
    challenges: u64,
    rejected: u64,
}

/// A proof that passed every check of RFC 9449 §4.3 but the nonce.
struct Proof {
    /// The thumbprint of its key.
    jkt: String,
    nonce: Option<String>,
    ath: Option<String>,
}

/// Why a proof is refused.
enum Refusal {
    /// `invalid_dpop_proof`, with the reason (the `error_description`).
    Invalid(&'static str),
    /// `use_dpop_nonce`: the proof lacks the current nonce.
    UseNonce,
}

/// DPoP, RFC 9449.
impl MockAuthorizationServerBuilder {
    /// Requires a valid DPoP proof (RFC 9449 §4.3) on every token request, and binds the tokens
    /// it issues (access and refresh) to the proof's key (§5).
    ///
    /// A proof must be one `DPoP` header holding a compact JWS with `typ` `dpop+jwt`, `alg`
    /// `ES256` or `EdDSA`, a public `jwk` in its header (no private member), a signature valid
    /// for that key, `htm` = the request method (`POST`), `htu` = the token endpoint URL (query
    /// and fragment are ignored), `iat` within 60 seconds of the server's clock, and a `jti`
    /// the server has never seen (§11.1). Otherwise the answer is `400` with
    /// `{"error":"invalid_dpop_proof","error_description":…}`, before the grant is looked at
    /// (nothing is spent), counted by [`MockAuthorizationServer::dpop_proofs_rejected`].
    ///
    /// A refresh token bound to a key is refused with `400 invalid_grant` when the proof is
    /// signed by another key (or, without this switch, when there is no proof): the refresh
    /// token is **not** consumed and the grant **not** revoked, as node-oidc-provider does
    /// (the presenter does not hold the key, so it is not the client that rotated it). The
    /// tokens issued have `token_type` `DPoP`.
    ///
    /// Without this switch the server still checks a proof when a request carries one, binds
    /// the tokens to it, and holds bound refresh tokens to their key (as a server that
    /// supports DPoP without requiring it does).
    ///
    /// ```
    /// use reqwest_token_refresh::test_util::MockAuthorizationServer;
    /// use reqwest_token_refresh::{DpopAlgorithm, DpopKey};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = MockAuthorizationServer::builder().dpop().start().await;
    /// let key = DpopKey::generate(DpopAlgorithm::Es256)?;
    /// let tokens = server.issue_dpop_grant(&key);
    /// let refresh_token = tokens.refresh_token().ok_or("no refresh token")?.secret();
    /// let proof = key.proof("POST", &server.token_url().parse()?, None, None)?;
    /// let response = reqwest::Client::new()
    ///     .post(server.token_url())
    ///     .header("DPoP", proof)
    ///     .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)])
    ///     .send()
    ///     .await?;
    /// assert_eq!(response.status(), 200);
    /// let body: serde_json::Value = response.json().await?;
    /// assert_eq!(body["token_type"], "DPoP");
    /// # Ok(()) }
    /// ```
    pub fn dpop(mut self) -> Self {
        self.dpop.required = true;
        self
    }

    /// Demands a server nonce in every proof (RFC 9449 §8 at the token endpoint, §9 at the API);
    /// implies [`dpop`](Self::dpop).
    ///
    /// A token request whose proof lacks the current nonce (or carries an old one) is answered
    /// `400 {"error":"use_dpop_nonce"}` with a `DPoP-Nonce` header, after client authentication
    /// and the proof's other checks but before the grant is looked at: nothing is spent. A DPoP
    /// request to the API without it gets `401` with `WWW-Authenticate: DPoP
    /// error="use_dpop_nonce"` and `DPoP-Nonce`. Both are counted by
    /// [`MockAuthorizationServer::dpop_nonce_challenges`]. Every response of the token
    /// endpoint and the API carries the current nonce in `DPoP-Nonce` (one nonce for both: they
    /// share an origin). [`MockAuthorizationServer::rotate_dpop_nonce`] changes it.
    ///
    /// With `private_key_jwt` ([`private_key_jwt_client`](Self::private_key_jwt_client)), the
    /// client assertion is checked, and spent, before the nonce, as real servers do: the retry
    /// after a nonce challenge must carry a freshly signed assertion.
    pub fn require_dpop_nonce(mut self) -> Self {
        self.dpop.required = true;
        if self.dpop.nonce == NoncePolicy::Off {
            self.dpop.nonce = NoncePolicy::Required;
        }
        self
    }

    /// A hostile nonce policy: a new nonce with every response, token endpoint and API alike
    /// (the previous one is refused from then on; RFC 9449 §8.2 lets a server change it at
    /// any time). A client that keeps the nonce of each response and sends one request at a
    /// time still gets through. Implies [`require_dpop_nonce`](Self::require_dpop_nonce).
    pub fn rotate_dpop_nonce_every_response(mut self) -> Self {
        self.dpop.required = true;
        self.dpop.nonce = NoncePolicy::RotateEveryResponse;
        self
    }

    /// Makes the protected API demand DPoP (RFC 9449 §7.1): a request with a bearer token, or
    /// without a token, gets `401` with only `WWW-Authenticate: DPoP algs="ES256 EdDSA"`, the
    /// challenge of a resource server that accepts nothing else. It does not change the token
    /// endpoint (a bearer client can still refresh: the resource is what refuses it).
    pub fn api_requires_dpop(mut self) -> Self {
        self.dpop.api_requires = true;
        self
    }
}

/// DPoP, RFC 9449.
impl MockAuthorizationServer {
    /// Issues a new grant bound to `key` (RFC 9449 §5, §6), as a login whose code exchange was
    /// proved with `key` would: the access and refresh tokens are bound to its thumbprint, and
    /// the set carries the key ([`TokenSet::with_dpop_key`], `token_type` `DPoP`).
    pub fn issue_dpop_grant(&self, key: &DpopKey) -> TokenSet {
        self.issue(Some(key.thumbprint().to_owned()))
            .with_dpop_key(key.clone())
    }

    /// Same DPoP-bound grant, but the access token already expired on our side.
    pub fn issue_expired_dpop_grant(&self, key: &DpopKey) -> TokenSet {
        self.issue_dpop_grant(key)
            .with_expires_at(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1))
    }

    /// Changes the DPoP nonce (RFC 9449 §8.2): proofs carrying the previous one are
    /// challenged from now on.
    ///
    /// # Panics
    ///
    /// If the server was not built with
    /// [`require_dpop_nonce`](MockAuthorizationServerBuilder::require_dpop_nonce).
    pub fn rotate_dpop_nonce(&self) {
        let mut grant = self.grant.lock().unwrap();
        assert!(
            grant.dpop.nonce.is_some(),
            "rotate_dpop_nonce: the server issues no nonce (build it with require_dpop_nonce())"
        );
        grant.dpop.rotate_nonce();
    }

    /// The nonce proofs must carry now, if the server demands one.
    pub fn dpop_nonce(&self) -> Option<String> {
        self.grant.lock().unwrap().dpop.nonce.clone()
    }

    /// `use_dpop_nonce` challenges sent: `400` from the token endpoint and `401` from the API.
    pub fn dpop_nonce_challenges(&self) -> u64 {
        self.grant.lock().unwrap().dpop.challenges
    }

    /// Requests refused for their DPoP proof (`invalid_dpop_proof`: missing, malformed, badly
    /// signed, replayed, for another request, or without the right `ath`), token endpoint and
    /// API alike. Nonce challenges and key mismatches (`invalid_grant`, `invalid_token`) are
    /// not counted here.
    pub fn dpop_proofs_rejected(&self) -> u64 {
        self.grant.lock().unwrap().dpop.rejected
    }
}

impl State {
    pub(super) fn new(settings: Settings) -> Self {
        let mut state = State {
            settings,
            ..State::default()
        };
        if settings.nonce != NoncePolicy::Off {
            state.rotate_nonce();
        }
        state
    }

    /// Whether the API accepts nothing but DPoP.
    pub(super) fn api_requires(&self) -> bool {
        self.settings.api_requires
    }

    /// The token endpoint's check (RFC 9449 §5, §8): `Ok` with the thumbprint of the proof's
    /// key, or `None` for a request without a proof where none is required; `Err` with the
    /// error code and description of the `400`.
    pub(super) fn token_request(
        &mut self,
        request: &Request,
        token_url: &str,
    ) -> Result<Option<String>, (&'static str, &'static str)> {
        if !self.settings.required && !request.headers.contains_key("dpop") {
            return Ok(None);
        }
        match self.verify(request, token_url) {
            Ok(proof) => Ok(Some(proof.jkt)),
            Err(Refusal::Invalid(reason)) => {
                self.rejected += 1;
                Err(("invalid_dpop_proof", reason))
            }
            Err(Refusal::UseNonce) => {
                self.challenges += 1;
                // The `DPoP-Nonce` header is added to every response (`finish`).
                Err((
                    "use_dpop_nonce",
                    "the DPoP proof must carry the server's nonce",
                ))
            }
        }
    }

    /// Adds the current nonce to a response (changing it first when it changes every time).
    pub(super) fn finish(&mut self, response: ResponseTemplate) -> ResponseTemplate {
        if self.settings.nonce == NoncePolicy::RotateEveryResponse {
            self.rotate_nonce();
        }
        match &self.nonce {
            Some(nonce) => response.insert_header("DPoP-Nonce", nonce.as_str()),
            None => response,
        }
    }

    /// Checks the request's proof for `htu` (RFC 9449 §4.3) and its nonce (§8), spending its
    /// `jti` once it is valid.
    fn verify(&mut self, request: &Request, htu: &str) -> Result<Proof, Refusal> {
        let proof = verify_proof(request, htu, &mut self.seen).map_err(Refusal::Invalid)?;
        match (&self.nonce, &proof.nonce) {
            (None, None) => Ok(proof),
            (None, Some(_)) => Err(Refusal::Invalid("this server issued no DPoP nonce")),
            (Some(current), Some(sent)) if current == sent => Ok(proof),
            (Some(_), _) => Err(Refusal::UseNonce),
        }
    }

    fn rotate_nonce(&mut self) {
        // 128 random bits in base64url, whose characters are all NQCHAR (RFC 9449 §8.1).
        self.nonce = Some(crate::jws::random_id());
    }
}

/// The challenge of a resource that demands DPoP (RFC 9449 §7.1), without error.
pub(super) fn demand() -> String {
    format!(r#"DPoP algs="{ALGS}""#)
}

/// A DPoP challenge with an error code (RFC 9449 §7.1, §9).
pub(super) fn challenge(error: &str) -> String {
    format!(r#"DPoP error="{error}""#)
}

/// The API's check of a request with `Authorization: DPoP <token>` (RFC 9449 §7.1) to `htu`:
/// `Err` with the `WWW-Authenticate` challenge of the `401`.
pub(super) fn authorize(
    grant: &mut Grant,
    request: &Request,
    htu: &str,
    token: &str,
) -> Result<(), String> {
    let state = &mut grant.dpop;
    let proof = match state.verify(request, htu) {
        Ok(proof) => proof,
        Err(Refusal::Invalid(_)) => {
            state.rejected += 1;
            return Err(challenge("invalid_dpop_proof"));
        }
        Err(Refusal::UseNonce) => {
            state.challenges += 1;
            return Err(challenge("use_dpop_nonce"));
        }
    };
    // §4.3 step 12: the proof is for this very token.
    if proof.ath.as_deref() != Some(access_token_hash(token).as_str()) {
        state.rejected += 1;
        return Err(challenge("invalid_dpop_proof"));
    }
    match grant.access_binding(token) {
        Some(Some(jkt)) if jkt == proof.jkt => Ok(()),
        // Unknown, a bearer token presented as DPoP, or bound to another key (§7.1, as
        // node-oidc-provider answers a `jkt` mismatch).
        _ => Err(challenge("invalid_token")),
    }
}

/// The `ath` of `token`: base64url of its SHA-256 (RFC 9449 §4.2).
fn access_token_hash(token: &str) -> String {
    jwt::b64(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
}

/// RFC 9449 §4.3, but the nonce: the proof of `request` to `htu`, its `jti` added to `seen`
/// once everything else checked out; `Err` with the reason otherwise.
fn verify_proof(
    request: &Request,
    htu: &str,
    seen: &mut HashSet<String>,
) -> Result<Proof, &'static str> {
    let mut values = request.headers.get_all("dpop").iter();
    let value = values.next().ok_or("no DPoP proof")?;
    if values.next().is_some() {
        return Err("more than one DPoP header");
    }
    let jwt = value
        .to_str()
        .ok()
        .and_then(Jwt::parse)
        .ok_or("the DPoP proof is not a compact JWS of JSON objects")?;
    if jwt.header_str("typ") != Some("dpop+jwt") {
        return Err("the proof's typ is not dpop+jwt");
    }
    let alg = jwt
        .header_str("alg")
        .filter(|alg| ALGS.split(' ').any(|supported| supported == *alg))
        .ok_or("the proof's alg is not ES256 or EdDSA")?;
    let jwk = jwt
        .header
        .get("jwk")
        .and_then(Value::as_object)
        .ok_or("no jwk in the proof's header")?;
    if jwt::has_private_members(jwk) {
        return Err("the proof's jwk holds a private key");
    }
    let key = PublicKey::from_jwk(jwk, alg).ok_or("the proof's jwk is not a key for its alg")?;
    if !jwt.verify(&key) {
        return Err("the proof's signature does not verify with its jwk");
    }
    let jti = jwt
        .claim_str("jti")
        .filter(|jti| !jti.is_empty())
        .ok_or("no jti in the proof")?;
    if jwt.claim_str("htm") != Some(request.method.as_str()) {
        return Err("the proof's htm is not the request method");
    }
    match (
        jwt.claim_str("htu").and_then(without_query),
        without_query(htu),
    ) {
        (Some(claimed), Some(expected)) if claimed == expected => {}
        _ => return Err("the proof's htu is not the request URL"),
    }
    let iat = jwt.claim_number("iat").ok_or("no iat in the proof")?;
    if (iat - jwt::now_secs()).abs() > IAT_WINDOW_SECS {
        return Err("the proof's iat is not within 60 seconds of the server's clock");
    }
    let optional = |name: &str| match jwt.claims.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err("a proof's nonce and ath are strings"),
    };
    let (nonce, ath) = (optional("nonce")?, optional("ath")?);
    let jkt = jwt::thumbprint(jwk).ok_or("the proof's jwk has no thumbprint")?;
    if !seen.insert(jti.to_owned()) {
        return Err("the proof was used before (its jti is not new)");
    }
    Ok(Proof { jkt, nonce, ath })
}

/// `url` without query and fragment, normalized (RFC 9449 §4.3 step 9); `None` if it is not a
/// URL.
fn without_query(url: &str) -> Option<String> {
    let mut url = url::Url::parse(url).ok()?;
    url.set_query(None);
    url.set_fragment(None);
    Some(url.into())
}
