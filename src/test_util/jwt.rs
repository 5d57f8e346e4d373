//! Compact JWTs as the kit's server reads them (RFC 7515 §7.1, RFC 7519): parsing, public JWKs
//! and signature verification, for DPoP proofs and client assertions. Everything here reads
//! client input: a malformed token or key is `None` or `false`, never a panic.

use aws_lc_rs::signature::{
    RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519,
    RSA_PKCS1_2048_8192_SHA256,
};
use serde_json::{Map, Value};

/// The JWK members that hold a private (or symmetric) key (RFC 7518 §6.2.2, §6.3.2, §6.4).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

// base64url without padding (RFC 7515 §2), as the client side writes it; decoding anything
// else (padding, the standard alphabet) is `None`.
#[cfg(feature = "dpop")]
pub(super) use crate::jws::b64;
pub(super) use crate::jws::b64_decode;

/// Now, in seconds since the Unix epoch.
pub(super) fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// A JWS in compact serialization whose header and payload are JSON objects; its signature is
/// not checked yet.
pub(super) struct Jwt<'a> {
    pub(super) header: Map<String, Value>,
    pub(super) claims: Map<String, Value>,
    /// `header.payload`, as received: what the signature covers.
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> Jwt<'a> {
    /// `None` unless `token` is three base64url parts, the first two JSON objects.
    pub(super) fn parse(token: &'a str) -> Option<Self> {
        let (signing_input, signature) = token.rsplit_once('.')?;
        let (header, claims) = signing_input.split_once('.')?;
        let object = |part: &str| match serde_json::from_slice(&b64_decode(part)?) {
            Ok(Value::Object(object)) => Some(object),
            _ => None,
        };
        Some(Self {
            header: object(header)?,
            claims: object(claims)?,
            signing_input,
            signature: b64_decode(signature)?,
        })
    }

    /// A string member of the header.
    pub(super) fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// A string claim.
    pub(super) fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A numeric claim (a NumericDate may have a fraction, RFC 7519 §2).
    pub(super) fn claim_number(&self, name: &str) -> Option<f64> {
        self.claims.get(name).and_then(Value::as_f64)
    }

    /// Whether the signature is `key`'s over the signing input.
    pub(super) fn verify(&self, key: &PublicKey) -> bool {
        let message = self.signing_input.as_bytes();
        match key {
            PublicKey::Es256 { point } => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(message, &self.signature)
                .is_ok(),
            PublicKey::EdDsa { x } => UnparsedPublicKey::new(&ED25519, x)
                .verify(message, &self.signature)
                .is_ok(),
            PublicKey::Rs256 { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, &self.signature)
                .is_ok(),
        }
    }
}

/// A public key that verifies one JWS algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PublicKey {
    /// `ES256`: the uncompressed P-256 point, `0x04 || x || y`.
    Es256 { point: Vec<u8> },
    /// `EdDSA` on Ed25519: the 32-byte public key.
    EdDsa { x: Vec<u8> },
    /// `RS256`: modulus and exponent, big-endian.
    Rs256 { n: Vec<u8>, e: Vec<u8> },
}

impl PublicKey {
    /// The key of `jwk` for `alg` (`ES256`, `EdDSA` or `RS256`); `None` if `jwk` is not a
    /// well-formed public key of that algorithm (RFC 7518 §6.2.1, §6.3.1; RFC 8037 §2).
    pub(super) fn from_jwk(jwk: &Map<String, Value>, alg: &str) -> Option<Self> {
        let member = |name: &str| jwk.get(name).and_then(Value::as_str);
        let bytes = |name: &str| member(name).and_then(b64_decode);
        match (alg, member("kty")?) {
            ("ES256", "EC") if member("crv")? == "P-256" => {
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return None;
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend(x);
                point.extend(y);
                Some(PublicKey::Es256 { point })
            }
            ("EdDSA", "OKP") if member("crv")? == "Ed25519" => {
                let x = bytes("x")?;
                (x.len() == 32).then_some(PublicKey::EdDsa { x })
            }
            ("RS256", "RSA") => {
                let (n, e) = (bytes("n")?, bytes("e")?);
                // RFC 7518 §6.3.1: the minimum number of octets, so no leading zero.
                let minimal = |value: &[u8]| value.first().is_some_and(|first| *first != 0);
                (minimal(&n) && minimal(&e)).then_some(PublicKey::Rs256 { n, e })
            }
            _ => None,
        }
    }
}

/// Whether `jwk` carries a private or symmetric key member.
pub(super) fn has_private_members(jwk: &Map<String, Value>) -> bool {
    PRIVATE_MEMBERS.iter().any(|name| jwk.contains_key(*name))
}

/// The JWK SHA-256 thumbprint (RFC 7638 §3) of an `EC` or `OKP` public key, base64url: the
/// `jkt` tokens are bound to. `None` for other key types.
#[cfg(feature = "dpop")]
pub(super) fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    // The required members in lexicographic order, without spaces (RFC 7638 §3.2, §3.3).
    let canonical = match member("kty")? {
        "EC" => serde_json::json!({
            "crv": member("crv")?,
            "kty": "EC",
            "x": member("x")?,
            "y": member("y")?,
        }),
        "OKP" => serde_json::json!({ "crv": member("crv")?, "kty": "OKP", "x": member("x")? }),
        _ => return None,
    };
    // Inserted in that order, which serde_json keeps (sorted or in insertion order), compact.
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.to_string().as_bytes());
    Some(b64(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_tokens_are_none() {
        for token in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "e30.e30.!!",
            "W10.e30.AA",
            "e30.bnVsbA.AA",
        ] {
            assert!(Jwt::parse(token).is_none(), "{token}");
        }
        assert!(Jwt::parse("e30.e30.AA").is_some());
    }

    #[test]
    fn keys_must_match_their_algorithm() {
        let object = |value: Value| value.as_object().unwrap().clone();
        let ec = object(serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
        }));
        assert!(PublicKey::from_jwk(&ec, "ES256").is_some());
        assert!(PublicKey::from_jwk(&ec, "EdDSA").is_none());
        assert!(PublicKey::from_jwk(&ec, "RS256").is_none());
        assert!(PublicKey::from_jwk(&ec, "none").is_none());
        let rsa = object(serde_json::json!({ "kty": "RSA", "n": "AAEC", "e": "AQAB" }));
        assert!(PublicKey::from_jwk(&rsa, "RS256").is_none(), "leading zero");
        assert!(!has_private_members(&ec));
    }

    #[cfg(feature = "dpop")]
    #[test]
    fn the_thumbprint_follows_rfc_7638() {
        // The key of RFC 9449 §4.1's example proof, whose thumbprint §6.1 uses as `jkt`.
        let jwk = serde_json::json!({
            "kty": "EC",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
            "crv": "P-256",
            "alg": "ES256",
        });
        assert_eq!(
            thumbprint(jwk.as_object().unwrap()).as_deref(),
            Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
        );
    }
}
