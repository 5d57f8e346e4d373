//! Fuzz-style property tests (proptest; `cargo fuzz` needs nightly) for every parser that reads
//! input an attacker may control: the token-endpoint response parser, the `WWW-Authenticate`
//! parser, and the decoders of the file store and of sealed records (Redis and SQL stores).
//!
//! Properties: no panic on any input; a result is either a validated value or a typed error;
//! no error text ever contains a secret the request carried or a token held in a corrupt record.
//!
//! A short run (64 cases per target) is part of `cargo test --all-features`. For a longer run:
//!
//! ```sh
//! PROPTEST_CASES=100000 cargo test --release --all-features --test fuzz
//! ```
//!
//! Crate-private parsers are reached through `reqwest_token_refresh::__fuzz` (feature
//! `fuzzing`), which is not part of the API.

use proptest::prelude::*;
use reqwest::StatusCode;
use reqwest_token_refresh::{__fuzz, Error};

const SECRET_RT: &str = "fuzzRefreshSecret77";
const SECRET_CLIENT: &str = "fuzzClientSecret42";

/// 64 cases unless `PROPTEST_CASES` asks for more.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    config.failure_persistence = None;
    config
}

/// JSON values shaped like token responses: the known fields with values of every type, the
/// secrets sprinkled in, unknown fields, nesting.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        "[ -~]{0,24}".prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::from(SECRET_RT)),
        Just(serde_json::Value::from(format!("x {SECRET_CLIENT}\r\n"))),
        Just(serde_json::Value::from("Bearer")),
        Just(serde_json::Value::from("invalid_grant")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

fn token_body() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        Just("access_token"),
        Just("token_type"),
        Just("expires_in"),
        Just("refresh_token"),
        Just("scope"),
        Just("error"),
        Just("error_description"),
        Just("id_token"),
    ];
    let object = prop::collection::vec((field, json_value()), 0..8)
        .prop_map(|fields| {
            // Built by hand so that duplicate keys survive.
            let members: Vec<String> = fields
                .iter()
                .map(|(name, value)| format!("\"{name}\":{value}"))
                .collect();
            format!("{{{}}}", members.join(",")).into_bytes()
        })
        .boxed();
    prop_oneof![
        4 => object.clone(),
        1 => any::<Vec<u8>>(),
        // Truncations of plausible bodies.
        1 => (object, any::<prop::sample::Index>()).prop_map(|(body, cut)| {
            let cut = cut.index(body.len() + 1);
            body[..cut].to_vec()
        }),
    ]
}

fn status() -> impl Strategy<Value = StatusCode> {
    prop_oneof![
        Just(StatusCode::OK),
        Just(StatusCode::BAD_REQUEST),
        Just(StatusCode::UNAUTHORIZED),
        Just(StatusCode::FORBIDDEN),
        (100u16..600).prop_map(|code| StatusCode::from_u16(code).unwrap()),
    ]
}

fn assert_clean(text: &str) {
    assert!(!text.contains(SECRET_RT), "refresh token in: {text}");
    assert!(!text.contains(SECRET_CLIENT), "client secret in: {text}");
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn token_response_parser_never_panics_and_validates(status in status(), body in token_body()) {
        match __fuzz::token_response(status, &body, &[SECRET_RT, SECRET_CLIENT]) {
            Ok(response) => {
                prop_assert!(status.is_success() || status.is_informational() || status.is_redirection());
                if let Some(refresh) = &response.refresh_token {
                    prop_assert!(!refresh.secret().is_empty());
                }
                match __fuzz::unusable(&response) {
                    // Unusable, but it rotated: the new refresh token reaches the manager,
                    // which keeps it; the problem is typed and shows no secret.
                    Some(problem) => {
                        prop_assert!(response.refresh_token.is_some());
                        assert_clean(&format!("{problem} {problem:?}"));
                    }
                    None => {
                        prop_assert!(__fuzz::is_b64token(response.access_token.secret()));
                        if let Some(lifetime) = response.expires_in {
                            prop_assert!(lifetime.as_secs() >= 1);
                        }
                    }
                }
            }
            Err(error) => {
                let text = format!("{error} | {error:?} | {:?}", error.oauth_error());
                assert_clean(&text);
                prop_assert!(!error.to_string().chars().any(char::is_control), "{error}");
                if let Some(oauth) = error.oauth_error() {
                    let description = oauth.description().unwrap_or_default();
                    prop_assert!(description.chars().count() <= 200 * 10 + 1);
                }
                let typed = matches!(
                    error,
                    Error::ReauthorizationRequired { .. }
                        | Error::ClientRejected(_)
                        | Error::TokenEndpoint(_)
                        | Error::Transient(_)
                        | Error::InvalidResponse(_)
                );
                prop_assert!(typed, "{:?}", error);
            }
        }
    }

    #[test]
    fn www_authenticate_parser_never_panics(value in any::<String>()) {
        let challenges = __fuzz::challenges(&value);
        let _ = __fuzz::rejects_token(&[value.as_str()]);
        for (scheme, _) in challenges {
            prop_assert!(!scheme.is_empty());
        }
    }

    #[test]
    fn www_authenticate_parser_reads_back_what_was_written(
        challenges in prop::collection::vec(
            ("[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,8}",
             prop::collection::vec(("[a-z_]{1,8}", "[ !#-\\[\\]-~\"\\\\]{0,12}"), 0..4)),
            1..4,
        )
    ) {
        let header = challenges
            .iter()
            .map(|(scheme, params)| {
                let params: Vec<String> = params
                    .iter()
                    .map(|(name, value)| {
                        let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
                        format!("{name}=\"{quoted}\"")
                    })
                    .collect();
                format!("{scheme} {}", params.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let parsed = __fuzz::challenges(&header);
        prop_assert_eq!(parsed.len(), challenges.len(), "{}", header);
        for ((scheme, params), (parsed_scheme, parsed_params)) in challenges.iter().zip(&parsed) {
            prop_assert_eq!(scheme, parsed_scheme);
            let expected: Vec<(String, String)> = params.clone();
            prop_assert_eq!(&expected, parsed_params);
        }
    }

    #[test]
    fn the_401_decision_on_arbitrary_header_bytes_never_panics(bytes in any::<Vec<u8>>()) {
        if let Ok(value) = http::HeaderValue::from_bytes(&bytes) {
            let response = http::Response::builder()
                .status(401)
                .header("www-authenticate", value)
                .body(Vec::<u8>::new())
                .unwrap();
            let _ = reqwest_token_refresh::TokenRejection::is_token_rejected(
                &reqwest_token_refresh::DefaultTokenRejection,
                &reqwest::Response::from(response),
            );
        }
    }
}

#[cfg(feature = "encryption")]
mod sealed {
    //! The decoder shared by the Redis and SQL stores: `KeyRing::open`.

    use super::*;
    use reqwest_token_refresh::{
        AccessToken, EncryptionKey, KeyRing, RefreshToken, StoreErrorKind, TokenRecord, TokenSet,
    };

    fn ring() -> KeyRing {
        KeyRing::new(EncryptionKey::from_bytes("fuzz", &[9; 32]).unwrap())
    }

    fn tokens() -> TokenRecord {
        TokenRecord::Tokens(
            TokenSet::new(AccessToken::new("fuzzAccessCanary"))
                .with_refresh_token(RefreshToken::new(SECRET_RT)),
        )
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_records_are_corrupt_never_a_panic(bytes in any::<Vec<u8>>(), record in "[a-z:]{0,12}") {
            let error = ring().open(&record, &bytes).unwrap_err();
            prop_assert_eq!(error.kind(), StoreErrorKind::Corrupt);
        }

        #[test]
        fn a_mutated_sealed_record_is_refused_or_unchanged(
            position in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            truncate in any::<bool>(),
        ) {
            let ring = ring();
            let record = tokens();
            let mut sealed = ring.seal("user-1", &record).unwrap().into_bytes();
            let at = position.index(sealed.len());
            if truncate { sealed.truncate(at) } else { sealed[at] = byte }
            match ring.open("user-1", &sealed) {
                Ok(opened) => prop_assert_eq!(opened.record, record),
                Err(error) => {
                    prop_assert_eq!(error.kind(), StoreErrorKind::Corrupt);
                    let text = format!("{error} {error:?}");
                    prop_assert!(!text.contains("fuzzAccessCanary") && !text.contains(SECRET_RT));
                }
            }
        }
    }
}

#[cfg(feature = "file")]
mod file {
    //! The file store's decoder, through real files.

    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use reqwest_token_refresh::{FileTokenStore, StoreErrorKind, TokenKey, TokenStore};

    fn document() -> impl Strategy<Value = Vec<u8>> {
        let valid = format!(
            r#"{{"version":1,"tokens":{{"default":{{"access_token":"fuzzAccessCanary","refresh_token":"{SECRET_RT}","token_type":"Bearer","generation":3}}}}}}"#
        );
        prop_oneof![
            any::<Vec<u8>>(),
            (any::<prop::sample::Index>(), any::<u8>()).prop_map(move |(at, byte)| {
                let mut bytes = valid.clone().into_bytes();
                let at = at.index(bytes.len());
                bytes[at] = byte;
                bytes
            }),
            json_value().prop_map(|value| {
                serde_json::json!({"version": 1, "tokens": {"default": value}})
                    .to_string()
                    .into_bytes()
            }),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_token_files_load_or_are_corrupt(bytes in document()) {
            let dir = std::env::temp_dir().join(format!(
                "rtr-fuzz-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("tokens.json");
            std::fs::write(&path, &bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let loaded = runtime.block_on(FileTokenStore::builder(&path).build().unwrap().load(&TokenKey::default()));
            let _ = std::fs::remove_dir_all(&dir);
            match loaded {
                Ok(_) => {}
                Err(error) => {
                    prop_assert_eq!(error.kind(), StoreErrorKind::Corrupt, "{}", error);
                    let text = format!("{error} {error:?}");
                    prop_assert!(!text.contains("fuzzAccessCanary") && !text.contains(SECRET_RT), "{}", text);
                }
            }
        }
    }
}
