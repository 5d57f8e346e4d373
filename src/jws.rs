//! Signed JWTs in compact form (RFC 7515 §7.1): the DPoP proofs and the `private_key_jwt`
//! client assertions. Signing uses aws-lc-rs, which reqwest's TLS already builds.
// DPoP uses ES256 and EdDSA keys, client assertions RS256 and ES256: with one of the two
// features, part of this module is unused.
#![cfg_attr(
    not(all(feature = "dpop", feature = "private-key-jwt")),
    allow(dead_code)
)]

use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    RSA_PKCS1_SHA256,
};
use base64::Engine as _;
use zeroize::Zeroizing;

/// base64url without padding (RFC 7515 §2).
pub(crate) fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub(crate) fn b64_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

/// A private key that signs JWTs.
pub(crate) enum SigningKey {
    /// ECDSA on P-256 with SHA-256 (`ES256`).
    Es256(EcdsaKeyPair),
    /// Ed25519 (`EdDSA`).
    EdDsa(Ed25519KeyPair),
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`RS256`).
    Rs256(RsaKeyPair),
}

impl SigningKey {
    /// The JWS `alg` value.
    pub(crate) fn alg(&self) -> &'static str {
        match self {
            SigningKey::Es256(_) => "ES256",
            SigningKey::EdDsa(_) => "EdDSA",
            SigningKey::Rs256(_) => "RS256",
        }
    }

    /// The JWS signature of `message`. Signing with a valid key does not fail in practice;
    /// `None` if the library reports a failure.
    pub(crate) fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        match self {
            SigningKey::Es256(key) => key
                .sign(&SystemRandom::new(), message)
                .ok()
                .map(|signature| signature.as_ref().to_vec()),
            SigningKey::EdDsa(key) => Some(key.sign(message).as_ref().to_vec()),
            SigningKey::Rs256(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .ok()?;
                Some(signature)
            }
        }
    }

    /// A new ES256 key.
    pub(crate) fn generate_es256() -> Option<Self> {
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .ok()
            .map(SigningKey::Es256)
    }

    /// A new Ed25519 key.
    pub(crate) fn generate_ed25519() -> Option<Self> {
        Ed25519KeyPair::generate().ok().map(SigningKey::EdDsa)
    }

    /// The key's private part as the JWK members that hold it (`d`), and its public part
    /// (`x`, and `y` for EC). RSA keys are not exported.
    pub(crate) fn jwk_parts(&self) -> Option<JwkParts> {
        match self {
            SigningKey::Es256(key) => {
                // The public key is the uncompressed point: 0x04 || x || y.
                let point = key.public_key().as_ref();
                let (x, y) = point.get(1..33).zip(point.get(33..65))?;
                let private = key.private_key().as_be_bytes().ok()?;
                Some(JwkParts {
                    x: b64(x),
                    y: Some(b64(y)),
                    d: Zeroizing::new(b64(private.as_ref())),
                })
            }
            SigningKey::EdDsa(key) => {
                let seed = key.seed().ok()?;
                let seed = seed.as_be_bytes().ok()?;
                Some(JwkParts {
                    x: b64(key.public_key().as_ref()),
                    y: None,
                    d: Zeroizing::new(b64(seed.as_ref())),
                })
            }
            SigningKey::Rs256(_) => None,
        }
    }

    /// An ES256 key from its JWK members (`d`, `x`, `y`, base64url).
    pub(crate) fn es256_from_jwk(d: &str, x: &str, y: &str) -> Option<Self> {
        let d = Zeroizing::new(b64_decode(d)?);
        let mut point = vec![4u8];
        point.extend(b64_decode(x)?);
        point.extend(b64_decode(y)?);
        EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P256_SHA256_FIXED_SIGNING, &d, &point)
            .ok()
            .map(SigningKey::Es256)
    }

    /// An Ed25519 key from its JWK members (`d` = the seed, `x` = the public key).
    pub(crate) fn ed25519_from_jwk(d: &str, x: &str) -> Option<Self> {
        let seed = Zeroizing::new(b64_decode(d)?);
        let public = b64_decode(x)?;
        Ed25519KeyPair::from_seed_and_public_key(&seed, &public)
            .ok()
            .map(SigningKey::EdDsa)
    }
}

/// The members of a JWK that describe a key pair.
pub(crate) struct JwkParts {
    pub(crate) x: String,
    pub(crate) y: Option<String>,
    pub(crate) d: Zeroizing<String>,
}

/// `header.claims.signature`, with `header_b64` already encoded (it rarely changes).
pub(crate) fn compact(header_b64: &str, claims: &str, key: &SigningKey) -> Option<String> {
    let mut token = String::with_capacity(header_b64.len() + claims.len() * 4 / 3 + 100);
    token.push_str(header_b64);
    token.push('.');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Some(token)
}

/// 16 random bytes, base64url: a `jti` no other JWT of ours shares.
pub(crate) fn random_id() -> String {
    b64(crate::revision::random_bytes::<16>())
}

/// Now, in seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
