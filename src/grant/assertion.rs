//! `private_key_jwt` client authentication (RFC 7523 §2.2, OpenID Connect Core §9): the
//! client proves who it is with a short-lived JWT signed by its private key.

use std::sync::Arc;

use aws_lc_rs::signature::{EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::error::{ConfigError, Error};
use crate::jws::{self, b64, SigningKey};

/// How long an assertion is valid: long enough for the request, short enough that a captured
/// one is soon useless.
const LIFETIME_SECS: u64 = 60;

/// The private key of a client that authenticates with `private_key_jwt`: RS256 (an RSA key
/// of 2048 bits or more) or ES256 (a P-256 key), from PEM. Its `Debug` shows the algorithm
/// and key id only.
///
/// ```no_run
/// use reqwest_token_refresh::{ClientAssertionKey, RefreshTokenGrant};
///
/// let pem = std::fs::read_to_string("/run/secrets/client-key.pem")?;
/// let key = ClientAssertionKey::from_pem(&pem)?.with_key_id("2026-01");
/// let grant = RefreshTokenGrant::builder("https://auth.example.com/oauth/token", "my-client")
///     .private_key_jwt(key)
///     .build()?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ClientAssertionKey {
    signing: Arc<SigningKey>,
    key_id: Option<String>,
    /// The JOSE header, the same in every assertion: made once, base64url.
    header: String,
}

impl ClientAssertionKey {
    /// Reads a private key in PEM: PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1 RSA (`BEGIN RSA PRIVATE
    /// KEY`) or SEC1 EC (`BEGIN EC PRIVATE KEY`). Encrypted keys are not supported.
    pub fn from_pem(pem: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidClientAssertionKey(reason.to_owned());
        let (label, der) = pem_block(pem).ok_or_else(|| invalid("not a PEM private key"))?;
        let signing = match label {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der).ok().map(SigningKey::Rs256),
            "EC PRIVATE KEY" => {
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .ok()
                    .map(SigningKey::Es256)
            }
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der)
                .ok()
                .map(SigningKey::Rs256)
                .or_else(|| {
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                        .ok()
                        .map(SigningKey::Es256)
                }),
            "ENCRYPTED PRIVATE KEY" => return Err(invalid("encrypted keys are not supported")),
            _ => None,
        }
        .ok_or_else(|| invalid("not an RSA (2048 bits or more) or P-256 private key"))?;
        let header = assertion_header(&signing, None);
        Ok(Self {
            signing: Arc::new(signing),
            key_id: None,
            header,
        })
    }

    /// Names the key (`kid`), as registered with the server, for a server holding several.
    #[must_use]
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        let key_id = key_id.into();
        self.header = assertion_header(&self.signing, Some(&key_id));
        self.key_id = Some(key_id);
        self
    }

    /// The JWS algorithm: `RS256` or `ES256`.
    pub fn algorithm(&self) -> &'static str {
        self.signing.alg()
    }

    /// A fresh assertion for `client_id` addressed to `audience`: `iss` = `sub` = the client,
    /// a 60-second lifetime and a unique `jti` (servers refuse a replayed one, so each request
    /// gets its own).
    pub(crate) fn assertion(&self, client_id: &str, audience: &str) -> Result<String, Error> {
        let now = jws::now_secs();
        let claims = serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": jws::random_id(),
            "iat": now,
            "exp": now + LIFETIME_SECS,
        });
        jws::compact(&self.header, &claims.to_string(), &self.signing).ok_or(Error::SigningFailed)
    }
}

impl std::fmt::Debug for ClientAssertionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAssertionKey")
            .field("algorithm", &self.algorithm())
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The base64url JOSE header of the assertions `signing` signs, naming the key `key_id`.
fn assertion_header(signing: &SigningKey, key_id: Option<&str>) -> String {
    let header = match key_id {
        Some(key_id) => serde_json::json!({ "alg": signing.alg(), "typ": "JWT", "kid": key_id }),
        None => serde_json::json!({ "alg": signing.alg(), "typ": "JWT" }),
    };
    b64(header.to_string())
}

/// The label and decoded body of the first PEM block of `pem`.
fn pem_block(pem: &str) -> Option<(&str, Zeroizing<Vec<u8>>)> {
    let start = pem.find("-----BEGIN ")?;
    let rest = pem.get(start + "-----BEGIN ".len()..)?;
    let (label, rest) = rest.split_once("-----")?;
    let end = rest.find(&format!("-----END {label}-----"))?;
    let body: String = rest
        .get(..end)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    Some((label, Zeroizing::new(der)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::KeySize;

    fn pem(label: &str, der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    }

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&jws::b64_decode(part).unwrap()).unwrap()
    }

    #[test]
    fn rsa_and_p256_keys_sign_assertions() {
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let rsa_pem = pem("PRIVATE KEY", rsa.as_der().unwrap().as_ref());
        let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let ec_pem = pem("PRIVATE KEY", ec.to_pkcs8v1().unwrap().as_ref());
        for (pem, alg) in [(rsa_pem, "RS256"), (ec_pem, "ES256")] {
            let key = ClientAssertionKey::from_pem(&pem)
                .unwrap()
                .with_key_id("k1");
            assert_eq!(key.algorithm(), alg);
            let jwt = key
                .assertion("client-1", "https://auth.example.com/token")
                .unwrap();
            let parts: Vec<&str> = jwt.split('.').collect();
            let header = decode(parts[0]);
            assert_eq!(header["alg"], alg);
            assert_eq!(header["kid"], "k1");
            let claims = decode(parts[1]);
            assert_eq!(claims["iss"], "client-1");
            assert_eq!(claims["sub"], "client-1");
            assert_eq!(claims["aud"], "https://auth.example.com/token");
            let (iat, exp) = (
                claims["iat"].as_u64().unwrap(),
                claims["exp"].as_u64().unwrap(),
            );
            assert_eq!(exp - iat, LIFETIME_SECS);
            let again = key.assertion("client-1", "a").unwrap();
            assert_ne!(
                decode(again.split('.').nth(1).unwrap())["jti"],
                claims["jti"]
            );
        }
    }

    #[test]
    fn other_pem_is_a_configuration_error() {
        for text in [
            "",
            "not pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----",
        ] {
            let error = ClientAssertionKey::from_pem(text).unwrap_err();
            assert!(
                matches!(error, ConfigError::InvalidClientAssertionKey(_)),
                "{text}"
            );
        }
    }
}
