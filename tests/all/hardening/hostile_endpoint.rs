//! A hostile or broken token endpoint (RFC 6749 §5.1): every malformed answer is a
//! typed error within the configured limits, nothing panics, memory stays bounded, and the
//! tokens held before the refresh stay intact in memory *and* in the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest_token_refresh::{
    AccessToken, Error, InvalidResponse, RefreshToken, RefreshTokenGrant, TokenSet, TransientError,
};
use tokio::io::AsyncWriteExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::support::*;

/// Tokens that must survive every failed refresh: expired, so the next request must refresh.
fn held() -> TokenSet {
    TokenSet::new(AccessToken::new("held-access"))
        .with_refresh_token(RefreshToken::new("held-refresh"))
        .with_expires_at(SystemTime::UNIX_EPOCH + Duration::from_secs(10))
}

/// Refreshes once against a token endpoint answering `status` + `body`; returns the error and
/// checks that memory and store still hold the previous tokens.
async fn refresh_against(status: u16, body: Vec<u8>) -> Error {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let store = TestStore::memory();
    let (client, manager) = client(
        middleware(grant(&format!("{}/token", server.uri())), &server.uri())
            .store(store.clone())
            .build(),
    );
    manager.set_tokens(&key(), held()).await.unwrap();
    let before = store.stored().await.unwrap();
    let error = client
        .get(format!("{}/api/me", server.uri()))
        .send()
        .await
        .expect_err("an expired token and a failed refresh fail the request");
    let error = token_error(&error).clone();
    assert_eq!(
        store.stored().await.as_ref(),
        Some(&before),
        "store changed"
    );
    assert_eq!(
        manager.tokens(&key()).await.unwrap().as_ref(),
        Some(&before),
        "memory changed"
    );
    error
}

fn invalid(error: &Error) -> &InvalidResponse {
    match error {
        Error::InvalidResponse(invalid) => invalid,
        other => panic!("expected InvalidResponse, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_bodies_are_typed_errors_and_keep_the_previous_tokens() {
    let deep_array = "[".repeat(100_000).into_bytes();
    let deep_object = format!("{}{}", r#"{"a":"#.repeat(50_000), "1").into_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", br#"{"access_token":"abc","token_ty"#.to_vec()),
        ("html", b"<html><body>Login</body></html>".to_vec()),
        ("empty", Vec::new()),
        ("non-utf8", vec![0x7b, 0xff, 0xfe, 0x7d]),
        ("deeply nested array", deep_array),
        ("deeply nested object", deep_object),
        (
            "json array",
            br#"[{"access_token":"a","token_type":"Bearer"}]"#.to_vec(),
        ),
        ("json string", br#""access_token""#.to_vec()),
        ("null", b"null".to_vec()),
    ];
    for (name, body) in cases {
        let error = refresh_against(200, body).await;
        assert!(
            matches!(invalid(&error), InvalidResponse::NotJson(_)),
            "{name}: {error:?}"
        );
    }
}

#[tokio::test]
async fn r4_duplicate_keys_are_refused() {
    for body in [
        r#"{"access_token":"a","access_token":"b","token_type":"Bearer"}"#,
        r#"{"access_token":"a","token_type":"Bearer","refresh_token":"x","refresh_token":"y"}"#,
    ] {
        let error = refresh_against(200, body.into()).await;
        assert_eq!(invalid(&error), &InvalidResponse::DuplicateField, "{body}");
    }
}

#[tokio::test]
async fn r13_wrong_types_and_missing_access_tokens_are_refused() {
    for body in [
        r#"{"token_type":"Bearer"}"#,
        r#"{"access_token":"","token_type":"Bearer"}"#,
        r#"{"access_token":null,"token_type":"Bearer"}"#,
        r#"{"access_token":42,"token_type":"Bearer"}"#,
        r#"{"access_token":["a"],"token_type":"Bearer"}"#,
        r#"{"access_token":{"value":"a"},"token_type":"Bearer"}"#,
    ] {
        let error = refresh_against(200, body.into()).await;
        assert_eq!(
            invalid(&error),
            &InvalidResponse::MissingAccessToken,
            "{body}"
        );
    }
    for body in [
        r#"{"access_token":"a","token_type":"Bearer","refresh_token":42}"#,
        r#"{"access_token":"a","token_type":"Bearer","refresh_token":{"v":"x"}}"#,
    ] {
        let error = refresh_against(200, body.into()).await;
        assert_eq!(
            invalid(&error),
            &InvalidResponse::MalformedRefreshToken,
            "{body}"
        );
    }
}

#[tokio::test]
async fn r23_header_unsafe_access_tokens_are_refused_before_any_header() {
    for token in [
        "a b",
        "a\r\nX-Injected: 1",
        "a\nb",
        "a\u{0}b",
        "a\"b",
        "a,b",
        "tök",
        "=abc",
        "abc=def",
        "a\u{7f}",
    ] {
        let body = serde_json::json!({ "access_token": token, "token_type": "Bearer" });
        let error = refresh_against(200, body.to_string().into()).await;
        assert_eq!(
            invalid(&error),
            &InvalidResponse::MalformedAccessToken,
            "{token:?}"
        );
    }
}

#[tokio::test]
async fn r23_an_unsafe_token_from_a_proactive_refresh_never_reaches_the_api() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "evil\r\nX-Injected: yes",
            "token_type": "Bearer",
            "expires_in": 3600,
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/me"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let (client, manager) =
        client(middleware(grant(&format!("{}/token", server.uri())), &server.uri()).build());
    // Due for a proactive refresh (inside the 60 s leeway) but still valid.
    let due = held().with_expires_at(SystemTime::now() + Duration::from_secs(30));
    manager.set_tokens(&key(), due).await.unwrap();
    let response = client
        .get(format!("{}/api/me", server.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let requests = server.received_requests().await.unwrap();
    let api = requests.iter().find(|r| r.url.path() == "/api/me").unwrap();
    assert_eq!(bearer(api).as_deref(), Some("held-access"));
    assert!(!api.headers.contains_key("x-injected"));
}

#[tokio::test]
async fn r15_unknown_token_types_are_refused() {
    for kind in [
        serde_json::json!("mac"),
        serde_json::json!("DPoP"),
        serde_json::json!("N_A"),
        serde_json::json!("Bearer "),
        serde_json::json!(1),
        serde_json::Value::Null,
    ] {
        let body = serde_json::json!({ "access_token": "a", "token_type": kind });
        let error = refresh_against(200, body.to_string().into()).await;
        assert!(
            matches!(invalid(&error), InvalidResponse::UnsupportedTokenType(_)),
            "{kind}: {error:?}"
        );
    }
}

#[tokio::test]
async fn r16_odd_expires_in_values_are_tolerated_without_a_refresh_storm() {
    // (value, lifetime believed): unusable values mean "unknown" (reactive refresh only), huge
    // ones are clamped, fractions truncated.
    let year = 365 * 24 * 3600;
    let cases = [
        ("-5", None),
        ("0", None),
        ("-1e308", None),
        ("\"soon\"", None),
        ("\"\"", None),
        ("true", None),
        ("{}", None),
        ("59.9", Some(59)),
        ("\"120\"", Some(120)),
        ("1e300", Some(year)),
        ("18446744073709551616", Some(year)),
    ];
    for (value, expected) in cases {
        let server = MockServer::start().await;
        let body =
            format!(r#"{{"access_token":"fresh","token_type":"Bearer","expires_in":{value}}}"#);
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
            // One refresh however many requests follow: no storm on a tiny or unknown lifetime.
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(path("/api/me"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        let (client, manager) =
            client(middleware(grant(&format!("{}/token", server.uri())), &server.uri()).build());
        manager.set_tokens(&key(), held()).await.unwrap();
        for _ in 0..5 {
            let response = client
                .get(format!("{}/api/me", server.uri()))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{value}");
        }
        let tokens = manager.tokens(&key()).await.unwrap().unwrap();
        let lifetime = tokens.expires_at().map(|at| {
            at.duration_since(tokens.issued_at().unwrap())
                .unwrap()
                .as_secs()
        });
        assert_eq!(lifetime, expected, "expires_in {value}");
        assert_eq!(tokens.refresh_token().unwrap().secret(), "held-refresh");
        server.verify().await;
    }
}

fn limited_grant(url: &str, limit: usize, timeout: Duration) -> RefreshTokenGrant {
    RefreshTokenGrant::builder(format!("{url}/token"), "hardening")
        .max_response_bytes(limit)
        .timeout(timeout)
        .danger_allow_http_loopback()
        .build()
        .unwrap()
}

const HUNDRED_MIB: u64 = 100 * 1024 * 1024;
const LIMIT: usize = 64 * 1024;

async fn refresh_with(grant: RefreshTokenGrant, origin: &str) -> (Error, TokenSet) {
    let (client, manager, store) = client_with_store(grant, origin, held()).await;
    let before = store.stored().await.unwrap();
    let error = failed_request(&client, format!("{origin}/api/me")).await;
    assert_eq!(store.stored().await.as_ref(), Some(&before));
    assert_eq!(
        manager.tokens(&key()).await.unwrap().as_ref(),
        Some(&before)
    );
    (error, before)
}

/// A refresh against a server streaming 100 MiB fails as too large, and the client stops
/// reading: only what the socket buffers held was ever `written`.
async fn assert_refused_as_too_large(url: &str, written: &AtomicU64) {
    let (error, _) = refresh_with(limited_grant(url, LIMIT, WAIT), url).await;
    assert!(
        matches!(
            error,
            Error::InvalidResponse(InvalidResponse::TooLarge { limit: LIMIT })
        ),
        "{error:?}"
    );
    assert!(written.load(Ordering::SeqCst) < 32 * 1024 * 1024);
}

#[tokio::test]
async fn d14_a_100_mib_body_with_content_length_is_refused_unread() {
    let (url, written) = raw_server(|mut stream, written| async move {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {HUNDRED_MIB}\r\n\r\n"
        );
        let _ = stream.write_all(head.as_bytes()).await;
        stream_body(&mut stream, HUNDRED_MIB, &written).await;
    })
    .await;
    assert_refused_as_too_large(&url, &written).await;
}

#[tokio::test]
async fn d14_a_100_mib_body_without_length_is_cut_at_the_limit() {
    let (url, written) = raw_server(|mut stream, written| async move {
        // Close-delimited body: no content-length, no chunking; the size is unknown upfront.
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(br#"{"access_token":""#).await;
        stream_body(&mut stream, HUNDRED_MIB, &written).await;
    })
    .await;
    assert_refused_as_too_large(&url, &written).await;
}

#[tokio::test]
async fn d14_a_body_trickling_one_byte_a_second_times_out() {
    let (url, _) = raw_server(|mut stream, _| async move {
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 60\r\n\r\n";
        let _ = stream.write_all(head.as_bytes()).await;
        for byte in br#"{"access_token":"slow","token_type":"Bearer"}"# {
            if stream.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    let started = std::time::Instant::now();
    let (error, _) =
        refresh_with(limited_grant(&url, LIMIT, Duration::from_millis(300)), &url).await;
    assert!(
        matches!(error, Error::Transient(TransientError::Timeout)),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn d14_headers_that_never_come_time_out() {
    let (url, _) = raw_server(|stream, _| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    })
    .await;
    let (error, _) =
        refresh_with(limited_grant(&url, LIMIT, Duration::from_millis(300)), &url).await;
    assert!(
        matches!(error, Error::Transient(TransientError::Timeout)),
        "{error:?}"
    );
}
