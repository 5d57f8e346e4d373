//! No secret leaks: a canary audit. Scenarios covering the whole story (rotation, 401 and replay,
//! echoing error bodies, malformed tokens, persistence failures, redirects, stores) run with
//! `tracing` captured at TRACE (and `log` records bridged into it), every public type and error
//! is formatted with `Debug` and `Display`, and every request every server received is
//! inspected. No canary access token, refresh token, client secret or encryption key may appear
//! anywhere, except:
//! - refresh tokens and the client secret in the *body or Authorization header* of requests to
//!   the token endpoint;
//! - access tokens in the `Authorization` header of requests to the allowed origin.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use reqwest_token_refresh::{
    AccessToken, ClientAuth, ClientSecret, Event, RefreshToken, RefreshTokenGrant, TokenSet,
};
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::support::*;

const AT: &str = "canaryAT7f3aQ";
const AT2: &str = "canaryAT2b8eW";
const RT: &str = "canaryRT9b1cX";
const RT2: &str = "canaryRT2d4fY";
const SECRET: &str = "canarySECRET4d2eZ";
const KEY: &[u8; 32] = b"canaryKEY-0123456789abcdefghijkl";

fn canaries() -> Vec<String> {
    let mut all: Vec<String> = [AT, AT2, RT, RT2, SECRET].map(str::to_owned).to_vec();
    all.push(String::from_utf8_lossy(KEY).into_owned());
    all.push(base64::engine::general_purpose::STANDARD.encode(KEY));
    all.push(KEY.iter().map(|b| format!("{b:02x}")).collect());
    all.push(basic_credentials());
    all
}

/// The Basic credentials carry the secret base64-encoded.
fn basic_credentials() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("audit:{SECRET}"))
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Audit {
    texts: Vec<String>,
}

impl Audit {
    fn add(&mut self, what: &str, text: String) {
        self.texts.push(format!("[{what}] {text}"));
    }
    fn debug(&mut self, what: &str, value: &dyn std::fmt::Debug) {
        self.add(what, format!("{value:?} {value:#?}"));
    }
}

fn leaked_in(text: &str) -> Vec<String> {
    canaries()
        .into_iter()
        .filter(|c| text.contains(c.as_str()))
        .collect()
}

/// A token endpoint scripted per refresh token, and an API that accepts `AT2` only.
async fn servers() -> (MockServer, MockServer) {
    let auth = MockServer::start().await;
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(move |request: &Request| {
            let body = String::from_utf8_lossy(&request.body).into_owned();
            if body.contains(RT2) {
                // Echo everything back in an error, as broken servers do.
                return ResponseTemplate::new(400).set_body_json(serde_json::json!({
                    "error": "invalid_grant",
                    "error_description": format!("bad {RT2} / {SECRET} / {body}"),
                }));
            }
            ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": AT2,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": RT2,
            }))
        })
        .mount(&auth)
        .await;
    Mock::given(path("/moved"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("location", format!("{}/landing", auth.uri())),
        )
        .with_priority(1)
        .mount(&api)
        .await;
    Mock::given(any())
        .respond_with(move |request: &Request| {
            if bearer(request).as_deref() == Some(AT2) {
                ResponseTemplate::new(200)
            } else {
                ResponseTemplate::new(401)
                    .insert_header("www-authenticate", r#"Bearer error="invalid_token""#)
            }
        })
        .mount(&api)
        .await;
    (auth, api)
}

async fn scenarios(audit: &mut Audit) -> (MockServer, MockServer) {
    let (auth, api) = servers().await;
    let grant = |auth_method| {
        RefreshTokenGrant::builder(format!("{}/token", auth.uri()), "audit")
            .client_secret(ClientSecret::new(SECRET))
            .client_auth(auth_method)
            .danger_allow_http_loopback()
            .build()
            .unwrap()
    };
    let tokens = TokenSet::new(AccessToken::new(AT))
        .with_refresh_token(RefreshToken::new(RT))
        .with_expires_in(Duration::from_secs(3600));
    audit.debug("token set", &tokens);
    audit.debug(
        "secrets",
        &(
            AccessToken::new(AT),
            RefreshToken::new(RT),
            ClientSecret::new(SECRET),
        ),
    );
    audit.add(
        "builder",
        format!(
            "{:?}",
            RefreshTokenGrant::builder("https://a.example/t", "c")
                .client_secret(ClientSecret::new(SECRET))
        ),
    );

    for auth_method in [ClientAuth::ClientSecretBasic, ClientAuth::ClientSecretPost] {
        let store = TestStore::memory();
        let grant = grant(auth_method);
        audit.debug("grant", &grant);
        let (builder, mut events) = events(
            middleware(grant, &api.uri())
                .store(store.clone())
                .rejection_cooldown(Duration::ZERO),
        );
        let manager = builder.build();
        audit.debug("middleware", &manager.middleware());
        audit.debug("manager", &manager);
        let (client, manager) = client(manager);
        manager.set_tokens(&key(), tokens.clone()).await.unwrap();

        // 401 -> refresh (rotation) -> replay; the first save fails.
        store.fail_saves(1);
        let response = client
            .get(format!("{}/me?q=1", api.uri()))
            .send()
            .await
            .unwrap();
        audit.debug("response", &response);
        // A redirect to another origin; then an API that rejects AT2 too -> refresh with RT2 ->
        // an error echoing everything.
        let _ = client.get(format!("{}/moved", api.uri())).send().await;
        let held = manager.tokens(&key()).await.unwrap();
        audit.debug("held tokens", &held);
        audit.debug("stored", &store.stored().await);
        let outcome = client.get(format!("{}/again", api.uri())).send().await;
        audit.debug("outcome", &outcome);
        if let Err(error) = &outcome {
            audit.add("error display", format!("{error} {error:#}"));
            let inner = token_error(error);
            audit.add(
                "inner",
                format!("{inner} {inner:?} {:?}", inner.oauth_error()),
            );
            let mut source = std::error::Error::source(inner);
            while let Some(cause) = source {
                audit.add("cause", format!("{cause} {cause:?}"));
                source = cause.source();
            }
        }
        while let Ok(event) = events.try_recv() {
            audit.debug("event", &event);
            if let Event::PersistFailed { error, .. } = &event {
                audit.add("store error", error.to_string());
            }
        }
    }

    // A malformed access token that embeds a canary.
    let broken = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": format!("{AT} {RT}\r\n"), "token_type": format!("x{SECRET}"),
        })))
        .mount(&broken)
        .await;
    let (client, manager) = client(middleware(grant_for(&broken), &broken.uri()).build());
    manager
        .set_tokens(
            &key(),
            tokens
                .clone()
                .with_expires_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let error = client
        .get(format!("{}/x", broken.uri()))
        .send()
        .await
        .unwrap_err();
    audit.add(
        "malformed",
        format!("{error} {error:?} {:?}", token_error(&error)),
    );

    stores(audit, &tokens).await;
    (auth, api)
}

fn grant_for(server: &MockServer) -> RefreshTokenGrant {
    RefreshTokenGrant::builder(format!("{}/token", server.uri()), "audit")
        .client_secret(ClientSecret::new(SECRET))
        .danger_allow_http_loopback()
        .build()
        .unwrap()
}

#[cfg(feature = "encryption")]
async fn stores(audit: &mut Audit, tokens: &TokenSet) {
    use reqwest_token_refresh::{EncryptionKey, KeyRing};
    let key = EncryptionKey::from_bytes("audit", KEY).unwrap();
    audit.debug("encryption key", &key);
    let ring = KeyRing::new(key);
    audit.debug("key ring", &ring);
    let record = reqwest_token_refresh::TokenRecord::Tokens(tokens.clone());
    let sealed = ring.seal("record", &record).unwrap();
    audit.add("sealed value", sealed.clone());
    let opened = ring.open("record", sealed.as_bytes()).unwrap();
    audit.debug("opened", &opened);
    let error = ring.open("other-record", sealed.as_bytes()).unwrap_err();
    audit.add("open error", format!("{error} {error:?}"));
    let other = KeyRing::new(EncryptionKey::from_bytes("other", &[1; 32]).unwrap());
    let error = other.open("record", sealed.as_bytes()).unwrap_err();
    audit.add("open error", format!("{error} {error:?}"));
    #[cfg(feature = "file")]
    file_store(audit, tokens).await;
}

#[cfg(not(feature = "encryption"))]
async fn stores(_audit: &mut Audit, _tokens: &TokenSet) {}

#[cfg(feature = "file")]
async fn file_store(audit: &mut Audit, tokens: &TokenSet) {
    use reqwest_token_refresh::{FileTokenStore, TokenStore};
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("rtr-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens.json");
    let store = FileTokenStore::builder(&file)
        .build()
        .expect("valid token file path");
    audit.debug("file store", &store);
    let record = reqwest_token_refresh::TokenRecord::Tokens(tokens.clone());
    let _ = store.save(&key(), &record, None).await;
    // Corrupt it with the canaries inside, then with bad permissions.
    std::fs::write(&file, format!(r#"{{"version":1,"tokens":{{"default":{{"access_token":"{AT}","refresh_token":{RT}}}}}}}"#)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let error = store.load(&key()).await.unwrap_err();
    audit.add("corrupt file", format!("{error} {error:?}"));
    std::fs::write(
        &file,
        format!(
            r#"{{"version":1,"tokens":{{"default":{{"access_token":7,"refresh_token":"{RT}"}}}}}}"#
        ),
    )
    .unwrap();
    let error = store.load(&key()).await.unwrap_err();
    audit.add("invalid file", format!("{error} {error:?}"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = store.load(&key()).await.unwrap_err();
    audit.add("open file", format!("{error} {error:?}"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where a request may carry which canary.
fn check_requests(
    audit: &mut Audit,
    server: &str,
    requests: &[Request],
    token_endpoint: bool,
    allowed_origin: bool,
) {
    for request in requests {
        audit.add("request url", format!("{server} {}", request.url));
        for (name, value) in &request.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            let line = format!("{server} {} {name}: {value}", request.url);
            let allowed: Vec<String> = match (name.as_str(), token_endpoint, allowed_origin) {
                ("authorization", true, _) => vec![SECRET.into(), basic_credentials()],
                ("authorization", _, true) => vec![AT.into(), AT2.into()],
                _ => Vec::new(),
            };
            let leaks: Vec<_> = leaked_in(&line)
                .into_iter()
                .filter(|c| !allowed.contains(c))
                .collect();
            assert!(leaks.is_empty(), "{leaks:?} in header: {line}");
        }
        let body = String::from_utf8_lossy(&request.body).into_owned();
        let allowed: &[&str] = if token_endpoint {
            &[RT, RT2, SECRET]
        } else {
            &[]
        };
        let leaks: Vec<_> = leaked_in(&body)
            .into_iter()
            .filter(|c| !allowed.contains(&c.as_str()))
            .collect();
        assert!(
            leaks.is_empty(),
            "{leaks:?} in a body sent to {server}: {body}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn inv3_no_canary_secret_appears_in_logs_debug_display_urls_or_foreign_requests() {
    let _ = tracing_log::LogTracer::init();
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    tracing::trace!("audit capture started");

    let mut audit = Audit { texts: Vec::new() };
    let (auth, api) = scenarios(&mut audit).await;
    let auth_requests = auth.received_requests().await.unwrap();
    assert!(!auth_requests.is_empty());
    check_requests(&mut audit, "token endpoint", &auth_requests, true, false);
    check_requests(
        &mut audit,
        "api",
        &api.received_requests().await.unwrap(),
        false,
        true,
    );

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("audit capture started"), "capture works");
    audit.add("logs", logs);
    let mut leaks = Vec::new();
    for text in &audit.texts {
        for canary in leaked_in(text) {
            leaks.push(format!(
                "{canary} in {}",
                text.chars().take(300).collect::<String>()
            ));
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
