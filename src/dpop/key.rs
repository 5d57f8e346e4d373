//! The DPoP key of a token set.

use std::sync::Arc;

use reqwest::Url;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use super::proof;
use crate::error::ConfigError;
use crate::jws::{b64, SigningKey};
use crate::secret::AccessToken;

/// The signature algorithm of a [`DpopKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DpopAlgorithm {
    /// ECDSA on P-256 with SHA-256: the algorithm every DPoP server supports.
    #[default]
    Es256,
    /// Ed25519: smaller and faster, where the server lists `EdDSA` in
    /// `dpop_signing_alg_values_supported`.
    EdDsa,
}

impl DpopAlgorithm {
    /// The JWS `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            DpopAlgorithm::Es256 => "ES256",
            DpopAlgorithm::EdDsa => "EdDSA",
        }
    }
}

/// A DPoP key pair: the private key that signs proofs, and its public JWK that the server binds
/// the tokens to. Cheap to clone.
///
/// Its `Debug` output shows the algorithm and the JWK thumbprint, never the private key. It
/// serializes as its private JWK (so that a store keeps it with the tokens it binds), which
/// is why it lives only where tokens live.
///
/// ```
/// use reqwest_token_refresh::{DpopAlgorithm, DpopKey};
///
/// let key = DpopKey::generate(DpopAlgorithm::Es256)?;
/// // The proof for the application's own authorization-code exchange:
/// let url = "https://auth.example.com/token".parse()?;
/// let proof = key.proof("POST", &url, None, None)?;
/// assert_eq!(proof.split('.').count(), 3);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct DpopKey(Arc<Inner>);

struct Inner {
    signing: SigningKey,
    algorithm: DpopAlgorithm,
    /// The public JWK members, in the order of the thumbprint (RFC 7638 §3.2).
    public: PublicJwk,
    /// The private JWK member `d` (base64url).
    d: Zeroizing<String>,
    /// The JWK SHA-256 thumbprint (RFC 7638), base64url: the token's `cnf.jkt`.
    thumbprint: String,
    /// The proof header, `{"typ":"dpop+jwt","alg":…,"jwk":{…}}`, base64url: the same for every
    /// proof of this key.
    header: String,
}

/// The public members of the key's JWK.
#[derive(Clone)]
enum PublicJwk {
    Ec { x: String, y: String },
    Okp { x: String },
}

impl PublicJwk {
    /// The required members in lexicographic order, as JSON without spaces (RFC 7638 §3).
    fn canonical(&self) -> String {
        match self {
            PublicJwk::Ec { x, y } => {
                format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            PublicJwk::Okp { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
        }
    }
}

impl DpopKey {
    /// A new key pair from the operating system's random generator.
    pub fn generate(algorithm: DpopAlgorithm) -> Result<Self, ConfigError> {
        let signing = match algorithm {
            DpopAlgorithm::Es256 => SigningKey::generate_es256(),
            DpopAlgorithm::EdDsa => SigningKey::generate_ed25519(),
        }
        .ok_or_else(|| invalid("the key could not be generated"))?;
        Self::new(signing, algorithm)
    }

    /// The key whose private JWK is `jwk` (an EC P-256 key with `d`, `x`, `y`, or an OKP
    /// Ed25519 key with `d`, `x`), as [`to_jwk`](Self::to_jwk) writes it.
    pub fn from_jwk(jwk: &str) -> Result<Self, ConfigError> {
        let parsed: PrivateJwk =
            serde_json::from_str(jwk).map_err(|_| invalid("not a private JWK object"))?;
        parsed.into_key()
    }

    /// The private JWK, for the application to keep the key itself. It holds the private key:
    /// treat it like a refresh token.
    pub fn to_jwk(&self) -> Zeroizing<String> {
        Zeroizing::new(serde_json::to_string(&self.private_jwk()).unwrap_or_default())
    }

    /// The public JWK (what a proof's header carries).
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::from_str(&self.0.public.canonical()).unwrap_or_default()
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> DpopAlgorithm {
        self.0.algorithm
    }

    /// The JWK SHA-256 thumbprint (RFC 7638, base64url): the `dpop_jkt` of an authorization
    /// request, and the `cnf.jkt` of the tokens bound to this key.
    pub fn thumbprint(&self) -> &str {
        &self.0.thumbprint
    }

    /// A proof for one request (RFC 9449 §4.2): `method`, `url` (its query and fragment are
    /// left out), a fresh `jti`, the current time, the server's `nonce` if it asked for one,
    /// and for a request carrying an access token its hash (`ath`).
    pub fn proof(
        &self,
        method: &str,
        url: &Url,
        nonce: Option<&str>,
        access_token: Option<&AccessToken>,
    ) -> Result<String, crate::Error> {
        let ath = access_token.map(|token| proof::access_token_hash(token.secret()));
        self.sign_proof(method, &proof::htu(url), nonce, ath.as_deref())
    }

    /// A proof with `htu` and `ath` already computed.
    pub(crate) fn sign_proof(
        &self,
        method: &str,
        htu: &str,
        nonce: Option<&str>,
        ath: Option<&str>,
    ) -> Result<String, crate::Error> {
        proof::sign(&self.0.signing, &self.0.header, method, htu, nonce, ath)
    }

    fn new(signing: SigningKey, algorithm: DpopAlgorithm) -> Result<Self, ConfigError> {
        let parts = signing
            .jwk_parts()
            .ok_or_else(|| invalid("the key cannot be exported"))?;
        let public = match (algorithm, parts.y) {
            (DpopAlgorithm::Es256, Some(y)) => PublicJwk::Ec { x: parts.x, y },
            (DpopAlgorithm::EdDsa, None) => PublicJwk::Okp { x: parts.x },
            _ => return Err(invalid("the key does not match its algorithm")),
        };
        let canonical = public.canonical();
        let thumbprint = b64(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            canonical.as_bytes(),
        ));
        let header = b64(format!(
            r#"{{"typ":"dpop+jwt","alg":"{}","jwk":{canonical}}}"#,
            algorithm.as_str()
        ));
        Ok(Self(Arc::new(Inner {
            signing,
            algorithm,
            public,
            d: parts.d,
            thumbprint,
            header,
        })))
    }

    fn private_jwk(&self) -> PrivateJwk {
        let d = self.0.d.clone();
        match &self.0.public {
            PublicJwk::Ec { x, y } => PrivateJwk {
                kty: "EC".into(),
                crv: "P-256".into(),
                x: x.clone(),
                y: Some(y.clone()),
                d,
            },
            PublicJwk::Okp { x } => PrivateJwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: x.clone(),
                y: None,
                d,
            },
        }
    }
}

fn invalid(reason: &str) -> ConfigError {
    ConfigError::InvalidDpopKey(reason.to_owned())
}

/// A private JWK as stored.
#[derive(Serialize, Deserialize)]
struct PrivateJwk {
    kty: String,
    crv: String,
    x: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    d: Zeroizing<String>,
}

impl PrivateJwk {
    fn into_key(self) -> Result<DpopKey, ConfigError> {
        match (self.kty.as_str(), self.crv.as_str(), &self.y) {
            ("EC", "P-256", Some(y)) => {
                let signing = SigningKey::es256_from_jwk(&self.d, &self.x, y)
                    .ok_or_else(|| invalid("not a valid P-256 key pair"))?;
                DpopKey::new(signing, DpopAlgorithm::Es256)
            }
            ("OKP", "Ed25519", None) => {
                let signing = SigningKey::ed25519_from_jwk(&self.d, &self.x)
                    .ok_or_else(|| invalid("not a valid Ed25519 key pair"))?;
                DpopKey::new(signing, DpopAlgorithm::EdDsa)
            }
            _ => Err(invalid("only EC P-256 and OKP Ed25519 keys are supported")),
        }
    }
}

impl Serialize for DpopKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.private_jwk().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DpopKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PrivateJwk::deserialize(deserializer)?
            .into_key()
            .map_err(serde::de::Error::custom)
    }
}

impl PartialEq for DpopKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.thumbprint == other.0.thumbprint
    }
}

impl Eq for DpopKey {}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey")
            .field("algorithm", &self.0.algorithm)
            .field("thumbprint", &self.0.thumbprint)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_private_jwk() {
        for algorithm in [DpopAlgorithm::Es256, DpopAlgorithm::EdDsa] {
            let key = DpopKey::generate(algorithm).unwrap();
            let again = DpopKey::from_jwk(&key.to_jwk()).unwrap();
            assert_eq!(again, key);
            assert_eq!(again.thumbprint(), key.thumbprint());
            let json = serde_json::to_string(&key).unwrap();
            let back: DpopKey = serde_json::from_str(&json).unwrap();
            assert_eq!(back, key);
        }
    }

    #[test]
    fn the_thumbprint_follows_rfc_7638() {
        // RFC 7638 §3.1 example is RSA; this EC key is from RFC 9449 §4.1 (figure 4's header),
        // whose thumbprint the RFC's examples use as `jkt` (§6.1).
        let public = PublicJwk::Ec {
            x: "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs".into(),
            y: "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA".into(),
        };
        let thumbprint = b64(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            public.canonical().as_bytes(),
        ));
        assert_eq!(thumbprint, "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
    }

    #[test]
    fn malformed_jwks_are_configuration_errors() {
        for jwk in [
            "",
            "[]",
            r#"{"kty":"RSA","crv":"P-256","x":"a","d":"b"}"#,
            r#"{"kty":"EC","crv":"P-256","x":"a","y":"b","d":"c"}"#,
            r#"{"kty":"OKP","crv":"Ed25519","x":"AAAA","d":"AAAA"}"#,
        ] {
            let error = DpopKey::from_jwk(jwk).unwrap_err();
            assert!(matches!(error, ConfigError::InvalidDpopKey(_)), "{jwk}");
        }
    }

    #[test]
    fn a_key_from_another_keys_public_half_is_refused() {
        let one = DpopKey::generate(DpopAlgorithm::Es256).unwrap();
        let two = DpopKey::generate(DpopAlgorithm::Es256).unwrap();
        let mut jwk: serde_json::Value = serde_json::from_str(&one.to_jwk()).unwrap();
        let other: serde_json::Value = serde_json::from_str(&two.to_jwk()).unwrap();
        jwk["x"] = other["x"].clone();
        jwk["y"] = other["y"].clone();
        assert!(DpopKey::from_jwk(&jwk.to_string()).is_err());
    }

    #[test]
    fn debug_shows_no_private_key() {
        let key = DpopKey::generate(DpopAlgorithm::Es256).unwrap();
        let jwk: serde_json::Value = serde_json::from_str(&key.to_jwk()).unwrap();
        let d = jwk["d"].as_str().unwrap();
        assert!(!format!("{key:?} {key:#?}").contains(d));
    }
}
