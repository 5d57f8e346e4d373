//! DPoP proof JWTs (RFC 9449 §4.2).

use reqwest::Url;

use crate::error::Error;
use crate::jws::{self, b64, SigningKey};

/// The `htu` of a request to `url`: the URL without query and fragment (RFC 9449 §4.2).
pub(crate) fn htu(url: &Url) -> String {
    let full = url.as_str();
    let end = full.find(['?', '#']).unwrap_or(full.len());
    full.get(..end).unwrap_or(full).to_owned()
}

/// The `ath` of `access_token`: base64url of its SHA-256 (RFC 9449 §4.2).
pub(crate) fn access_token_hash(access_token: &str) -> String {
    b64(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        access_token.as_bytes(),
    ))
}

/// Signs a proof with `key`, whose encoded header is `header`.
pub(super) fn sign(
    key: &SigningKey,
    header: &str,
    method: &str,
    htu: &str,
    nonce: Option<&str>,
    ath: Option<&str>,
) -> Result<String, Error> {
    // Built by hand: a handful of fields, two of which need JSON string escaping.
    let mut claims = String::with_capacity(160 + htu.len() + nonce.map_or(0, str::len));
    claims.push_str(r#"{"jti":""#);
    claims.push_str(&jws::random_id());
    claims.push_str(r#"","htm":"#);
    push_json_string(&mut claims, method);
    claims.push_str(r#","htu":"#);
    push_json_string(&mut claims, htu);
    claims.push_str(r#","iat":"#);
    claims.push_str(&jws::now_secs().to_string());
    if let Some(ath) = ath {
        claims.push_str(r#","ath":""#);
        claims.push_str(ath);
        claims.push('"');
    }
    if let Some(nonce) = nonce {
        claims.push_str(r#","nonce":"#);
        push_json_string(&mut claims, nonce);
    }
    claims.push('}');
    jws::compact(header, &claims, key).ok_or(Error::SigningFailed)
}

fn push_json_string(out: &mut String, value: &str) {
    out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dpop::{DpopAlgorithm, DpopKey};
    use crate::secret::AccessToken;

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&jws::b64_decode(part).unwrap()).unwrap()
    }

    #[test]
    fn a_proof_carries_what_rfc_9449_asks() {
        let key = DpopKey::generate(DpopAlgorithm::Es256).unwrap();
        let url: Url = "https://api.example.com/items/1?page=2#top"
            .parse()
            .unwrap();
        let token = AccessToken::new("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU");
        let proof = key
            .proof("GET", &url, Some("eyJ7S_zG"), Some(&token))
            .unwrap();
        let parts: Vec<&str> = proof.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode(parts[0]);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"], key.public_jwk());
        assert!(
            header["jwk"].get("d").is_none(),
            "no private key in the header"
        );
        let claims = decode(parts[1]);
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://api.example.com/items/1");
        assert_eq!(claims["nonce"], "eyJ7S_zG");
        // RFC 9449 §7.1's example access token and its hash.
        assert_eq!(claims["ath"], "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
        assert!(claims["iat"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(
            jws::b64_decode(claims["jti"].as_str().unwrap())
                .unwrap()
                .len(),
            16
        );
        let again = key.proof("GET", &url, None, None).unwrap();
        assert_ne!(
            decode(again.split('.').nth(1).unwrap())["jti"],
            claims["jti"]
        );
    }

    #[test]
    fn proofs_verify_with_the_public_key() {
        use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519};
        for algorithm in [DpopAlgorithm::Es256, DpopAlgorithm::EdDsa] {
            let key = DpopKey::generate(algorithm).unwrap();
            let url: Url = "https://auth.example.com/token".parse().unwrap();
            let proof = key.proof("POST", &url, None, None).unwrap();
            let (signed, signature) = proof.rsplit_once('.').unwrap();
            let jwk = key.public_jwk();
            let x = jws::b64_decode(jwk["x"].as_str().unwrap()).unwrap();
            let (algorithm, public): (&dyn aws_lc_rs::signature::VerificationAlgorithm, Vec<u8>) =
                match algorithm {
                    DpopAlgorithm::Es256 => {
                        let mut point = vec![4];
                        point.extend(x);
                        point.extend(jws::b64_decode(jwk["y"].as_str().unwrap()).unwrap());
                        (&ECDSA_P256_SHA256_FIXED, point)
                    }
                    _ => (&ED25519, x),
                };
            UnparsedPublicKey::new(algorithm, public)
                .verify(signed.as_bytes(), &jws::b64_decode(signature).unwrap())
                .expect("the signature verifies");
        }
    }

    #[test]
    fn htu_drops_query_and_fragment_only() {
        let htu = |url: &str| htu(&url.parse().unwrap());
        assert_eq!(htu("https://a.example/p/q?x=1#f"), "https://a.example/p/q");
        assert_eq!(htu("https://a.example:8443/"), "https://a.example:8443/");
        assert_eq!(htu("http://127.0.0.1:9/token"), "http://127.0.0.1:9/token");
    }
}
