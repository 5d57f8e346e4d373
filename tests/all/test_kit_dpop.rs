//! The test kit's DPoP (RFC 9449) and `private_key_jwt` (RFC 7523) checks, driven directly
//! with reqwest: proofs signed with `DpopKey::proof`, or by hand (with aws-lc-rs) where a test
//! needs a proof `DpopKey` would never make; client assertions signed by hand. Each refusal
//! checks the answer and that the grant was left as it was.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::Engine as _;
use reqwest::header::HeaderMap;
use reqwest::Url;
use reqwest_token_refresh::test_util::MockAuthorizationServer;
use reqwest_token_refresh::{AccessToken, DpopAlgorithm, DpopKey, TokenSet};
use serde_json::{json, Value};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A `jti` no other JWT of these tests shares.
fn unique_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("id-{nanos}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn new_key(algorithm: DpopAlgorithm) -> DpopKey {
    DpopKey::generate(algorithm).unwrap()
}

fn url(text: &str) -> Url {
    text.parse().unwrap()
}

/// A key that signs whatever JWT a test needs: RS256 or ES256.
enum Signer {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

impl Signer {
    fn es256() -> Self {
        Signer::Es256(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }

    fn rs256() -> Self {
        Signer::Rs256(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
    }

    fn alg(&self) -> &'static str {
        match self {
            Signer::Es256(_) => "ES256",
            Signer::Rs256(_) => "RS256",
        }
    }

    fn public_jwk(&self) -> Value {
        match self {
            Signer::Es256(key) => {
                let point = key.public_key().as_ref();
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": b64(&point[1..33]),
                    "y": b64(&point[33..65]),
                })
            }
            Signer::Rs256(key) => {
                let public = key.public_key();
                json!({
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
        }
    }

    /// The public JWK with the private key `d` added (ES256 only).
    fn private_jwk(&self) -> Value {
        let Signer::Es256(key) = self else {
            panic!("ES256 only")
        };
        let mut jwk = self.public_jwk();
        jwk["d"] = b64(key.private_key().as_be_bytes().unwrap().as_ref()).into();
        jwk
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let signature = match self {
            Signer::Es256(key) => key
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            Signer::Rs256(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut signature,
                )
                .unwrap();
                signature
            }
        };
        format!("{input}.{}", b64(signature))
    }

    /// A DPoP proof with `claims`, whose header carries `jwk`.
    fn proof(&self, jwk: Value, claims: &Value) -> String {
        self.sign(
            &json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": jwk }),
            claims,
        )
    }

    /// A client assertion for `client_id`, addressed to `aud`, valid one minute.
    fn assertion(&self, client_id: &str, aud: &str) -> String {
        self.sign(
            &json!({ "alg": self.alg(), "typ": "JWT" }),
            &assertion_claims(client_id, aud),
        )
    }
}

/// A token request's form.
type Form = Vec<(&'static str, String)>;

/// A refresh of `refresh_token` authenticated by `assertion`.
fn assertion_form(refresh_token: &str, assertion: &str) -> Form {
    vec![
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", refresh_token.to_owned()),
        ("client_assertion_type", JWT_BEARER.to_owned()),
        ("client_assertion", assertion.to_owned()),
    ]
}

fn assertion_claims(client_id: &str, aud: &str) -> Value {
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "jti": unique_id(),
        "iat": now(),
        "exp": now() + 60,
    })
}

/// The claims of a valid proof for `htm` `htu`, fresh.
fn proof_claims(htm: &str, htu: &str) -> Value {
    json!({ "jti": unique_id(), "htm": htm, "htu": htu, "iat": now() })
}

/// What the server answered.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Self {
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The OAuth error code of the body.
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    fn challenges(&self) -> Vec<&str> {
        self.headers
            .get_all("www-authenticate")
            .iter()
            .map(|value| value.to_str().unwrap())
            .collect()
    }
}

/// Posts `form` to the token endpoint with these `DPoP` headers.
async fn post_token(
    server: &MockAuthorizationServer,
    form: &[(&str, &str)],
    proofs: &[&str],
) -> Answer {
    let mut request = reqwest::Client::new().post(server.token_url()).form(form);
    for proof in proofs {
        request = request.header("DPoP", *proof);
    }
    Answer::of(request.send().await.unwrap()).await
}

/// A refresh of `refresh_token` with these `DPoP` headers.
async fn refresh(server: &MockAuthorizationServer, refresh_token: &str, proofs: &[&str]) -> Answer {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    post_token(server, &form, proofs).await
}

/// A proof of `key` for a token request to `server`.
fn token_proof(server: &MockAuthorizationServer, key: &DpopKey, nonce: Option<&str>) -> String {
    key.proof("POST", &url(&server.token_url()), nonce, None)
        .unwrap()
}

/// `GET` on the API with this `Authorization` and `DPoP` header.
async fn api_get(target: &str, authorization: &str, proof: Option<&str>) -> Answer {
    let mut request = reqwest::Client::new()
        .get(target)
        .header("authorization", authorization);
    if let Some(proof) = proof {
        request = request.header("DPoP", proof);
    }
    Answer::of(request.send().await.unwrap()).await
}

/// A proof of `key` for `GET target` carrying `token`'s hash.
fn api_proof(key: &DpopKey, target: &str, token: &str, nonce: Option<&str>) -> String {
    key.proof(
        "GET",
        &url(target),
        nonce,
        Some(&AccessToken::new(token.to_owned())),
    )
    .unwrap()
}

fn refresh_token_of(tokens: &TokenSet) -> String {
    tokens.refresh_token().unwrap().secret().to_owned()
}

async fn dpop_server() -> MockAuthorizationServer {
    MockAuthorizationServer::builder().dpop().start().await
}

/// Panics unless the latest grant still has `refresh_token` current and nothing was revoked.
fn assert_untouched(server: &MockAuthorizationServer, refresh_token: &str) {
    assert_eq!(
        server.current_refresh_token().as_deref(),
        Some(refresh_token),
        "the refresh token is not consumed"
    );
    assert!(!server.is_revoked(), "the grant is not revoked");
    assert_eq!(server.reuse_detections(), 0);
}

#[tokio::test]
async fn test_kit_a_dpop_refresh_rotates_and_answers_token_type_dpop() {
    for algorithm in [DpopAlgorithm::Es256, DpopAlgorithm::EdDsa] {
        let server = dpop_server().await;
        let key = new_key(algorithm);
        let tokens = server.issue_dpop_grant(&key);
        assert_eq!(tokens.token_type(), "DPoP");
        assert_eq!(tokens.dpop_key(), Some(&key));
        let old = refresh_token_of(&tokens);

        let answer = refresh(&server, &old, &[&token_proof(&server, &key, None)]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let body = answer.json();
        assert_eq!(body["token_type"], "DPoP");
        let new = body["refresh_token"].as_str().unwrap();
        assert_ne!(new, old);
        assert_eq!(server.current_refresh_token().as_deref(), Some(new));
        assert_eq!(server.presented_refresh_tokens(), [old.as_str()]);
        assert_eq!(answer.header("dpop-nonce"), None, "no nonce unless asked");

        // The new access token is bound to the same key.
        let access = body["access_token"].as_str().unwrap();
        let target = server.api_url("me");
        let proof = api_proof(&key, &target, access, None);
        let answer = api_get(&target, &format!("DPoP {access}"), Some(&proof)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "ok");
        // And so is the new refresh token.
        let thief = new_key(algorithm);
        let answer = refresh(&server, new, &[&token_proof(&server, &thief, None)]).await;
        assert_eq!(answer.error(), "invalid_grant");
        assert_untouched(&server, new);
        assert_eq!(server.presented_refresh_tokens(), [old.as_str(), new]);
    }
}

#[tokio::test]
async fn test_kit_a_proof_of_another_key_is_invalid_grant_and_spends_nothing() {
    let server = dpop_server().await;
    let key = new_key(DpopAlgorithm::Es256);
    let old = refresh_token_of(&server.issue_dpop_grant(&key));
    let thief = new_key(DpopAlgorithm::Es256);

    let answer = refresh(&server, &old, &[&token_proof(&server, &thief, None)]).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error(), "invalid_grant");
    assert_untouched(&server, &old);
    assert_eq!(
        server.dpop_proofs_rejected(),
        0,
        "the proof itself is valid"
    );

    let answer = refresh(&server, &old, &[&token_proof(&server, &key, None)]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(server.reuse_detections(), 0);
    assert!(!server.is_revoked());
    // Both requests reached the grant.
    assert_eq!(server.presented_refresh_tokens(), [old.clone(), old]);
}

#[tokio::test]
async fn test_kit_a_replayed_proof_is_invalid_dpop_proof_and_spends_nothing() {
    let server = dpop_server().await;
    let key = new_key(DpopAlgorithm::Es256);
    let first = refresh_token_of(&server.issue_dpop_grant(&key));
    let proof = token_proof(&server, &key, None);
    let answer = refresh(&server, &first, &[&proof]).await;
    assert_eq!(answer.status, 200);
    let second = answer.json()["refresh_token"].as_str().unwrap().to_owned();

    let answer = refresh(&server, &second, &[&proof]).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error(), "invalid_dpop_proof");
    assert_untouched(&server, &second);
    assert_eq!(server.dpop_proofs_rejected(), 1);
    assert_eq!(
        server.presented_refresh_tokens(),
        [first],
        "never reached the grant"
    );

    let answer = refresh(&server, &second, &[&token_proof(&server, &key, None)]).await;
    assert_eq!(answer.status, 200);
    server.assert_no_refresh_token_reused();
}

#[tokio::test]
async fn test_kit_malformed_proofs_are_invalid_dpop_proof() {
    let server = dpop_server().await;
    let signer = Signer::es256();
    let key = DpopKey::from_jwk(&signer.private_jwk().to_string()).unwrap();
    let rt = refresh_token_of(&server.issue_dpop_grant(&key));
    let token_url = server.token_url();
    let jwk = signer.public_jwk();
    let with = |changes: Value| {
        let mut claims = proof_claims("POST", &token_url);
        for (name, value) in changes.as_object().unwrap() {
            match value {
                Value::Null => claims.as_object_mut().unwrap().remove(name),
                value => claims
                    .as_object_mut()
                    .unwrap()
                    .insert(name.clone(), value.clone()),
            };
        }
        signer.proof(jwk.clone(), &claims)
    };
    let other = Signer::es256();
    let header = |header: Value| signer.sign(&header, &proof_claims("POST", &token_url));
    let valid = token_proof(&server, &key, None);
    // Each case, its proofs, and the reason the server gives (its `error_description`).
    let claims = || proof_claims("POST", &token_url);
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("no proof", vec![], "no DPoP proof"),
        (
            "two proofs",
            vec![valid.clone(), token_proof(&server, &key, None)],
            "more than one",
        ),
        ("not a JWT", vec!["not-a-jwt".to_owned()], "compact JWS"),
        (
            "another URL",
            vec![key
                .proof("POST", &url(&server.api_url("token")), None, None)
                .unwrap()],
            "htu",
        ),
        (
            "another method",
            vec![key.proof("GET", &url(&token_url), None, None).unwrap()],
            "htm",
        ),
        (
            "iat two minutes ago",
            vec![with(json!({ "iat": now() - 120 }))],
            "iat",
        ),
        (
            "iat in two minutes",
            vec![with(json!({ "iat": now() + 120 }))],
            "iat",
        ),
        (
            "iat a string",
            vec![with(json!({ "iat": now().to_string() }))],
            "iat",
        ),
        ("no jti", vec![with(json!({ "jti": null }))], "jti"),
        ("no htu", vec![with(json!({ "htu": null }))], "htu"),
        (
            "ath not a string",
            vec![with(json!({ "ath": 1 }))],
            "strings",
        ),
        (
            "a nonce the server never issued",
            vec![with(json!({ "nonce": "n" }))],
            "nonce",
        ),
        (
            "the private key in the header",
            vec![signer.proof(signer.private_jwk(), &claims())],
            "private key",
        ),
        (
            "signed by another key",
            vec![other.proof(jwk.clone(), &claims())],
            "signature",
        ),
        (
            "typ JWT",
            vec![header(json!({ "typ": "JWT", "alg": "ES256", "jwk": jwk }))],
            "typ",
        ),
        (
            "no typ",
            vec![header(json!({ "alg": "ES256", "jwk": jwk }))],
            "typ",
        ),
        (
            "alg RS256",
            vec![header(
                json!({ "typ": "dpop+jwt", "alg": "RS256", "jwk": jwk }),
            )],
            "alg",
        ),
        (
            "alg none",
            vec![format!(
                "{}.{}.",
                b64(json!({ "typ": "dpop+jwt", "alg": "none", "jwk": jwk }).to_string()),
                b64(claims().to_string())
            )],
            "alg",
        ),
        (
            "no jwk",
            vec![header(json!({ "typ": "dpop+jwt", "alg": "ES256" }))],
            "no jwk",
        ),
        (
            "an RSA jwk",
            vec![header(
                json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": { "kty": "RSA", "n": "sXch", "e": "AQAB" } }),
            )],
            "not a key for its alg",
        ),
        (
            "an Ed25519 jwk for ES256",
            vec![header(
                json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": new_key(DpopAlgorithm::EdDsa).public_jwk() }),
            )],
            "not a key for its alg",
        ),
    ];
    let count = cases.len() as u64;
    for (case, proofs, reason) in cases {
        let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
        let answer = refresh(&server, &rt, &proofs).await;
        assert_eq!(answer.status, 400, "{case}: {}", answer.body);
        assert_eq!(answer.error(), "invalid_dpop_proof", "{case}");
        let description = answer.json()["error_description"].to_string();
        assert!(description.contains(reason), "{case}: {description}");
        assert_untouched(&server, &rt);
    }
    assert_eq!(server.dpop_proofs_rejected(), count);
    assert!(server.presented_refresh_tokens().is_empty());

    // The control: the same hand-made proof, unaltered, is accepted (and `valid`, whose jti
    // was never spent since its request had two proofs, is still good too).
    assert_eq!(refresh(&server, &rt, &[&with(json!({}))]).await.status, 200);
    let rt = server.current_refresh_token().unwrap();
    assert_eq!(refresh(&server, &rt, &[&valid]).await.status, 200);
    server.assert_no_refresh_token_reused();
}

#[tokio::test]
async fn test_kit_htu_ignores_query_and_fragment() {
    let server = dpop_server().await;
    let signer = Signer::es256();
    let key = DpopKey::from_jwk(&signer.private_jwk().to_string()).unwrap();
    let rt = refresh_token_of(&server.issue_dpop_grant(&key));
    let htu = format!("{}?query=1#fragment", server.token_url());
    let proof = signer.proof(signer.public_jwk(), &proof_claims("POST", &htu));
    assert_eq!(refresh(&server, &rt, &[&proof]).await.status, 200);
}

#[tokio::test]
async fn test_kit_a_required_nonce_is_challenged_before_the_grant() {
    let server = MockAuthorizationServer::builder()
        .require_dpop_nonce()
        .start()
        .await;
    let key = new_key(DpopAlgorithm::Es256);
    let rt = refresh_token_of(&server.issue_dpop_grant(&key));
    let nonce = server.dpop_nonce().unwrap();

    let answer = refresh(&server, &rt, &[&token_proof(&server, &key, None)]).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error(), "use_dpop_nonce");
    assert_eq!(answer.header("dpop-nonce"), Some(nonce.as_str()));
    assert_untouched(&server, &rt);
    assert!(server.presented_refresh_tokens().is_empty());
    assert_eq!(server.dpop_nonce_challenges(), 1);

    let proof = token_proof(&server, &key, Some(&nonce));
    let answer = refresh(&server, &rt, &[&proof]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("dpop-nonce"), Some(nonce.as_str()));
    assert_eq!(
        server.presented_refresh_tokens(),
        [rt],
        "consumed exactly once"
    );
    assert_eq!(server.refresh_calls(), 2);

    // A rotated nonce: the old one is challenged.
    server.rotate_dpop_nonce();
    let rotated = server.dpop_nonce().unwrap();
    assert_ne!(rotated, nonce);
    let rt = server.current_refresh_token().unwrap();
    let answer = refresh(&server, &rt, &[&token_proof(&server, &key, Some(&nonce))]).await;
    assert_eq!(answer.error(), "use_dpop_nonce");
    assert_eq!(answer.header("dpop-nonce"), Some(rotated.as_str()));
    assert_untouched(&server, &rt);
    assert_eq!(server.dpop_nonce_challenges(), 2);
    assert_eq!(server.dpop_proofs_rejected(), 0);
    let answer = refresh(&server, &rt, &[&token_proof(&server, &key, Some(&rotated))]).await;
    assert_eq!(answer.status, 200);
    server.assert_no_refresh_token_reused();
}

#[tokio::test]
async fn test_kit_the_api_demands_the_nonce_too() {
    let server = MockAuthorizationServer::builder()
        .require_dpop_nonce()
        .start()
        .await;
    let key = new_key(DpopAlgorithm::EdDsa);
    let tokens = server.issue_dpop_grant(&key);
    let access = tokens.access_token().secret();
    let target = server.api_url("me");
    let authorization = format!("DPoP {access}");

    let answer = api_get(
        &target,
        &authorization,
        Some(&api_proof(&key, &target, access, None)),
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.challenges(), [r#"DPoP error="use_dpop_nonce""#]);
    let nonce = answer.header("dpop-nonce").unwrap().to_owned();
    assert_eq!(server.dpop_nonce_challenges(), 1);

    let proof = api_proof(&key, &target, access, Some(&nonce));
    let answer = api_get(&target, &authorization, Some(&proof)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("dpop-nonce"), Some(nonce.as_str()));
}

#[tokio::test]
async fn test_kit_a_nonce_rotated_on_every_response_works_for_a_client_that_keeps_up() {
    let server = MockAuthorizationServer::builder()
        .rotate_dpop_nonce_every_response()
        .start()
        .await;
    let key = new_key(DpopAlgorithm::Es256);
    let tokens = server.issue_dpop_grant(&key);
    let mut rt = refresh_token_of(&tokens);

    let answer = refresh(&server, &rt, &[&token_proof(&server, &key, None)]).await;
    assert_eq!(answer.error(), "use_dpop_nonce");
    let mut nonce = answer.header("dpop-nonce").unwrap().to_owned();
    let mut seen = vec![nonce.clone()];
    for _ in 0..3 {
        let answer = refresh(&server, &rt, &[&token_proof(&server, &key, Some(&nonce))]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        rt = answer.json()["refresh_token"].as_str().unwrap().to_owned();
        nonce = answer.header("dpop-nonce").unwrap().to_owned();
        assert!(!seen.contains(&nonce), "a new nonce with every response");
        seen.push(nonce.clone());
    }
    // A client that kept an older nonce is challenged.
    let answer = refresh(&server, &rt, &[&token_proof(&server, &key, Some(&seen[1]))]).await;
    assert_eq!(answer.error(), "use_dpop_nonce");
    assert_untouched(&server, &rt);
    server.assert_no_refresh_token_reused();
}

#[tokio::test]
async fn test_kit_the_api_checks_dpop_requests() {
    let server = dpop_server().await;
    let key = new_key(DpopAlgorithm::Es256);
    let tokens = server.issue_dpop_grant(&key);
    let access = tokens.access_token().secret();
    let target = server.api_url("items/1");
    let dpop = format!("DPoP {access}");

    let answer = api_get(
        &target,
        &dpop,
        Some(&api_proof(&key, &target, access, None)),
    )
    .await;
    assert_eq!(answer.status, 200);
    // The query is not part of `htu`.
    let with_query = format!("{target}?page=2");
    let proof = api_proof(&key, &with_query, access, None);
    assert_eq!(api_get(&with_query, &dpop, Some(&proof)).await.status, 200);
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let proof = api_proof(&key, &target, access, None);
    assert_eq!(
        api_get(&target, &format!("dpop {access}"), Some(&proof))
            .await
            .status,
        200
    );

    let proof_dpop = r#"DPoP error="invalid_dpop_proof""#;
    let token_dpop = r#"DPoP error="invalid_token""#;
    let thief = new_key(DpopAlgorithm::Es256);
    let other = server.issue_dpop_grant(&key);
    let cases: Vec<(&str, String, Option<String>, &str)> = vec![
        ("no proof", dpop.clone(), None, proof_dpop),
        (
            "no ath",
            dpop.clone(),
            Some(key.proof("GET", &url(&target), None, None).unwrap()),
            proof_dpop,
        ),
        (
            "the ath of another token",
            dpop.clone(),
            Some(api_proof(
                &key,
                &target,
                other.access_token().secret(),
                None,
            )),
            proof_dpop,
        ),
        (
            "another method",
            dpop.clone(),
            Some(
                key.proof("POST", &url(&target), None, Some(tokens.access_token()))
                    .unwrap(),
            ),
            proof_dpop,
        ),
        (
            "another URL",
            dpop.clone(),
            Some(api_proof(&key, &server.api_url("items/2"), access, None)),
            proof_dpop,
        ),
        (
            "another key",
            dpop.clone(),
            Some(api_proof(&thief, &target, access, None)),
            token_dpop,
        ),
        (
            "an unknown token",
            "DPoP at-unknown".to_owned(),
            Some(api_proof(&key, &target, "at-unknown", None)),
            token_dpop,
        ),
        (
            "the bearer scheme",
            format!("Bearer {access}"),
            None,
            token_dpop,
        ),
        (
            "the bearer scheme with a proof",
            format!("Bearer {access}"),
            Some(api_proof(&key, &target, access, None)),
            token_dpop,
        ),
    ];
    for (case, authorization, proof, challenge) in cases {
        let answer = api_get(&target, &authorization, proof.as_deref()).await;
        assert_eq!(answer.status, 401, "{case}");
        assert_eq!(answer.challenges(), [challenge], "{case}");
    }
    assert_eq!(server.dpop_proofs_rejected(), 5);

    // A replayed proof.
    let proof = api_proof(&key, &target, access, None);
    assert_eq!(api_get(&target, &dpop, Some(&proof)).await.status, 200);
    let answer = api_get(&target, &dpop, Some(&proof)).await;
    assert_eq!(answer.challenges(), [proof_dpop]);
}

#[tokio::test]
async fn test_kit_bearer_tokens_keep_working() {
    // On a server requiring DPoP at the token endpoint, a bearer token (an older login)
    // still works at the API; and a refresh of it with a proof binds the new tokens.
    let server = dpop_server().await;
    let tokens = server.issue_grant();
    assert_eq!(tokens.token_type(), "Bearer");
    let access = tokens.access_token().secret();
    let target = server.api_url("me");
    assert_eq!(
        api_get(&target, &format!("Bearer {access}"), None)
            .await
            .status,
        200
    );
    let answer = api_get(&target, "Bearer at-unknown", None).await;
    assert_eq!(
        answer.challenges(),
        [r#"Bearer realm="api", error="invalid_token""#]
    );
    let key = new_key(DpopAlgorithm::Es256);
    let proof = api_proof(&key, &target, access, None);
    let answer = api_get(&target, &format!("DPoP {access}"), Some(&proof)).await;
    assert_eq!(
        answer.challenges(),
        [r#"DPoP error="invalid_token""#],
        "not bound"
    );

    let rt = refresh_token_of(&tokens);
    let answer = refresh(&server, &rt, &[&token_proof(&server, &key, None)]).await;
    assert_eq!(answer.json()["token_type"], "DPoP");
    let rt = answer.json()["refresh_token"].as_str().unwrap().to_owned();
    let thief = new_key(DpopAlgorithm::Es256);
    let answer = refresh(&server, &rt, &[&token_proof(&server, &thief, None)]).await;
    assert_eq!(
        answer.error(),
        "invalid_grant",
        "the refresh token is bound now"
    );

    // Without `.dpop()`, bearer refreshes work as before; a bound refresh token still needs
    // its key.
    let server = MockAuthorizationServer::start(std::time::Duration::from_secs(60)).await;
    let rt = refresh_token_of(&server.issue_grant());
    let answer = refresh(&server, &rt, &[]).await;
    assert_eq!(answer.json()["token_type"], "Bearer");
    let rt = refresh_token_of(&server.issue_dpop_grant(&key));
    let answer = refresh(&server, &rt, &[]).await;
    assert_eq!(answer.error(), "invalid_grant");
    assert_untouched(&server, &rt);
    let answer = refresh(&server, &rt, &[&token_proof(&server, &key, None)]).await;
    assert_eq!(answer.json()["token_type"], "DPoP");
}

#[tokio::test]
async fn test_kit_an_api_requiring_dpop_challenges_bearer_clients() {
    let server = MockAuthorizationServer::builder()
        .api_requires_dpop()
        .start()
        .await;
    let tokens = server.issue_grant();
    let target = server.api_url("me");
    let bearer = format!("Bearer {}", tokens.access_token().secret());
    for authorization in [bearer.as_str(), "Basic Zm9vOmJhcg=="] {
        let answer = api_get(&target, authorization, None).await;
        assert_eq!(answer.status, 401);
        assert_eq!(answer.challenges(), [r#"DPoP algs="ES256 EdDSA""#]);
    }
    // The token endpoint still serves a bearer client.
    let answer = refresh(&server, &refresh_token_of(&tokens), &[]).await;
    assert_eq!(answer.status, 200);
    // A DPoP client gets through.
    let key = new_key(DpopAlgorithm::Es256);
    let tokens = server.issue_dpop_grant(&key);
    let access = tokens.access_token().secret();
    let proof = api_proof(&key, &target, access, None);
    assert_eq!(
        api_get(&target, &format!("DPoP {access}"), Some(&proof))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn test_kit_private_key_jwt_assertions_rs256_and_es256() {
    for signer in [Signer::rs256(), Signer::es256()] {
        let server = MockAuthorizationServer::builder()
            .private_key_jwt_client("client-1", signer.public_jwk())
            .start()
            .await;
        let rt = refresh_token_of(&server.issue_grant());
        for aud in [server.token_url(), server.uri()] {
            let assertion = signer.assertion("client-1", &aud);
            let answer = post_token(
                &server,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &server.current_refresh_token().unwrap()),
                    ("client_id", "client-1"),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &assertion),
                ],
                &[],
            )
            .await;
            assert_eq!(
                answer.status,
                200,
                "{} {aud}: {}",
                signer.alg(),
                answer.body
            );
        }
        assert_ne!(server.current_refresh_token().unwrap(), rt);

        // Revocation authenticates the same way.
        let revoke = |assertion: Option<String>| {
            let mut form = vec![("token".to_owned(), server.current_refresh_token().unwrap())];
            if let Some(assertion) = assertion {
                form.push(("client_assertion_type".to_owned(), JWT_BEARER.to_owned()));
                form.push(("client_assertion".to_owned(), assertion));
            }
            let request = reqwest::Client::new()
                .post(server.revocation_url())
                .form(&form);
            async move { Answer::of(request.send().await.unwrap()).await }
        };
        let answer = revoke(None).await;
        assert_eq!(
            (answer.status, answer.error().as_str()),
            (401, "invalid_client")
        );
        assert!(!server.is_revoked());
        let answer = revoke(Some(signer.assertion("client-1", &server.revocation_url()))).await;
        assert_eq!(answer.status, 200);
        assert!(server.is_revoked());
    }
}

#[tokio::test]
async fn test_kit_bad_client_assertions_are_invalid_client() {
    let signer = Signer::rs256();
    let server = MockAuthorizationServer::builder()
        .private_key_jwt_client("client-1", signer.public_jwk())
        .start()
        .await;
    let rt = refresh_token_of(&server.issue_grant());
    let aud = server.token_url();
    let claims = |changes: Value| {
        let mut claims = assertion_claims("client-1", &aud);
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    let rs256 = json!({ "alg": "RS256" });
    let signed = |changes: Value| signer.sign(&rs256, &claims(changes));
    let send = |form: Form| {
        let request = reqwest::Client::new().post(server.token_url()).form(&form);
        async move { Answer::of(request.send().await.unwrap()).await }
    };

    // The replayed one is first accepted.
    let replayed = signer.assertion("client-1", &aud);
    assert_eq!(send(assertion_form(&rt, &replayed)).await.status, 200);
    let rt = server.current_refresh_token().unwrap();
    let form = |assertion: &str| assertion_form(&rt, assertion);
    let with = |extra: (&'static str, &str), assertion: &str| {
        let mut form = form(assertion);
        form.push((extra.0, extra.1.to_owned()));
        form
    };
    let valid = || signer.assertion("client-1", &aud);
    // Each case, its form, and the reason the server gives (its `error_description`).
    let cases: Vec<(&str, Form, &str)> = vec![
        ("replayed", form(&replayed), "used before"),
        (
            "another iss",
            form(&signed(json!({ "iss": "client-2" }))),
            "iss",
        ),
        (
            "another sub",
            form(&signed(json!({ "sub": "client-2" }))),
            "sub",
        ),
        (
            "another aud",
            form(&signed(json!({ "aud": "https://elsewhere.example/token" }))),
            "aud",
        ),
        (
            "aud of the API",
            form(&signed(json!({ "aud": [server.api_url("me")] }))),
            "aud",
        ),
        (
            "expired",
            form(&signed(json!({ "exp": now() - 1 }))),
            "expired",
        ),
        (
            "exp in an hour",
            form(&signed(json!({ "exp": now() + 3600 }))),
            "five minutes",
        ),
        ("no exp", form(&signed(json!({ "exp": null }))), "exp"),
        ("no jti", form(&signed(json!({ "jti": null }))), "jti"),
        (
            "iat in an hour",
            form(&signed(json!({ "iat": now() + 3600 }))),
            "iat",
        ),
        (
            "signed by another key",
            form(&Signer::rs256().assertion("client-1", &aud)),
            "signature",
        ),
        (
            "alg ES256 for an RSA key",
            form(&Signer::es256().assertion("client-1", &aud)),
            "alg",
        ),
        (
            "alg none",
            form(&format!(
                "{}.{}.",
                b64(json!({ "alg": "none" }).to_string()),
                b64(claims(json!({})).to_string())
            )),
            "alg",
        ),
        ("not a JWT", form("not-a-jwt"), "compact JWS"),
        (
            "another client_id",
            with(("client_id", "client-2"), &valid()),
            "client_id",
        ),
        (
            "a client secret too",
            with(("client_secret", "s"), &valid()),
            "more than one",
        ),
        (
            "no assertion type",
            vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", rt.clone()),
                ("client_assertion", valid()),
            ],
            "client_assertion_type",
        ),
        (
            "no assertion",
            vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", rt.clone()),
                ("client_assertion_type", JWT_BEARER.to_owned()),
            ],
            "no client_assertion",
        ),
    ];
    for (case, form, reason) in cases {
        let answer = send(form).await;
        assert_eq!(answer.status, 401, "{case}: {}", answer.body);
        assert_eq!(answer.error(), "invalid_client", "{case}");
        let description = answer.json()["error_description"].to_string();
        assert!(description.contains(reason), "{case}: {description}");
        assert_untouched(&server, &rt);
    }
    // A valid assertion in an array `aud` is accepted (RFC 7519 §4.1.3), once.
    let answer = send(form(&signed(
        json!({ "aud": ["https://elsewhere.example", aud] }),
    )));
    assert_eq!(answer.await.status, 200);
    let rt = server.current_refresh_token().unwrap();
    let form = |assertion: &str| assertion_form(&rt, assertion);
    // The control: a fresh assertion is accepted.
    assert_eq!(send(form(&valid())).await.status, 200);
    server.assert_no_refresh_token_reused();
}

#[tokio::test]
async fn test_kit_an_assertion_is_spent_by_a_nonce_challenge() {
    let signer = Signer::es256();
    let server = MockAuthorizationServer::builder()
        .private_key_jwt_client("client-1", signer.public_jwk())
        .require_dpop_nonce()
        .start()
        .await;
    let key = new_key(DpopAlgorithm::Es256);
    let rt = refresh_token_of(&server.issue_dpop_grant(&key));
    let request = |assertion: &str, nonce: Option<&str>| {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.as_str()),
            ("client_id", "client-1"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ]
        .map(|(name, value)| (name, value.to_owned()));
        let proof = token_proof(&server, &key, nonce);
        let request = reqwest::Client::new()
            .post(server.token_url())
            .header("DPoP", proof)
            .form(&form);
        async move { Answer::of(request.send().await.unwrap()).await }
    };

    let assertion = signer.assertion("client-1", &server.uri());
    let answer = request(&assertion, None).await;
    assert_eq!(answer.error(), "use_dpop_nonce");
    let nonce = answer.header("dpop-nonce").unwrap().to_owned();
    // Client authentication came first: the assertion is spent.
    let answer = request(&assertion, Some(&nonce)).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "invalid_client")
    );
    assert_eq!(answer.header("dpop-nonce"), Some(nonce.as_str()));
    assert_untouched(&server, &rt);
    // A fresh assertion and the nonce get through.
    let answer = request(&signer.assertion("client-1", &server.uri()), Some(&nonce)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(server.presented_refresh_tokens(), [rt]);
}

#[test]
#[should_panic(expected = "public JWK")]
fn test_kit_a_private_jwk_is_a_broken_fixture() {
    let signer = Signer::es256();
    let _ = MockAuthorizationServer::builder().private_key_jwt_client("c", signer.private_jwk());
}
