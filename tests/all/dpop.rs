//! DPoP end to end against the test kit, which checks every proof strictly: storms, nonces,
//! keys kept with their tokens, and a lost answer to a DPoP-bound refresh.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reqwest_token_refresh::test_util::{Fault, MockAuthorizationServer};
use reqwest_token_refresh::{
    DpopAlgorithm, DpopKey, Error, ReauthorizationReason, RefreshTokenGrant, TokenKey, TokenManager,
};
use tokio::io::AsyncWriteExt;

use crate::helpers::{client, token_error};

fn manager_for(server: &MockAuthorizationServer, grant: RefreshTokenGrant) -> TokenManager {
    TokenManager::builder(grant)
        .allow_origin(&server.uri())
        .unwrap()
        .build()
}

fn grant(server: &MockAuthorizationServer) -> RefreshTokenGrant {
    RefreshTokenGrant::builder(server.token_url(), "c")
        .danger_allow_http_loopback()
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_storm_with_nonces_at_both_ends_makes_one_refresh() {
    let server = MockAuthorizationServer::builder()
        .require_dpop_nonce()
        .start()
        .await;
    let key = DpopKey::generate(DpopAlgorithm::Es256).unwrap();
    let (http, manager) = client(manager_for(&server, grant(&server)));
    manager
        .set_tokens(&TokenKey::default(), server.issue_expired_dpop_grant(&key))
        .await
        .unwrap();
    let requests = (0..300).map(|i| http.get(server.api_url(&format!("items/{i}"))).send());
    for response in join_all(requests).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_eq!(
        server.refresh_calls(),
        2,
        "the token request, again with the nonce"
    );
    assert_eq!(
        server.presented_refresh_tokens().len(),
        1,
        "one refresh reached the grant"
    );
    assert_eq!(server.dpop_proofs_rejected(), 0);
    assert!(
        server.dpop_nonce_challenges() >= 2,
        "the token endpoint and the API asked"
    );
    server.assert_no_refresh_token_reused();
    let held = manager.tokens(&TokenKey::default()).await.unwrap().unwrap();
    assert_eq!(held.dpop_key(), Some(&key));
}

#[tokio::test]
async fn a_rotated_nonce_is_answered_again_once() {
    let server = MockAuthorizationServer::builder()
        .require_dpop_nonce()
        .start()
        .await;
    let key = DpopKey::generate(DpopAlgorithm::EdDsa).unwrap();
    let (http, manager) = client(manager_for(&server, grant(&server)));
    manager
        .set_tokens(&TokenKey::default(), server.issue_dpop_grant(&key))
        .await
        .unwrap();
    assert_eq!(
        http.get(server.api_url("a")).send().await.unwrap().status(),
        200
    );
    let challenges = server.dpop_nonce_challenges();
    server.rotate_dpop_nonce();
    assert_eq!(
        http.get(server.api_url("b")).send().await.unwrap().status(),
        200
    );
    assert_eq!(server.dpop_nonce_challenges(), challenges + 1);
    assert_eq!(
        server.refresh_calls(),
        0,
        "a nonce challenge is not a refresh"
    );
}

/// The server rotates, the answer never arrives (the client times out). A fresh proof would
/// be refresh-token reuse; the crate resends the identical request, which the server refuses
/// as a replayed proof: the key needs a new login, and the grant was never reused.
#[tokio::test]
async fn a_lost_answer_is_resent_only_identically_and_never_reused() {
    let server = MockAuthorizationServer::builder().dpop().start().await;
    let key = DpopKey::generate(DpopAlgorithm::Es256).unwrap();
    let grant = RefreshTokenGrant::builder(server.token_url(), "c")
        .timeout(Duration::from_millis(300))
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let (http, manager) = client(manager_for(&server, grant));
    manager
        .set_tokens(&TokenKey::default(), server.issue_expired_dpop_grant(&key))
        .await
        .unwrap();
    server.inject(Fault::LoseResponse);
    let error = http.get(server.api_url("me")).send().await.unwrap_err();
    let error = token_error(&error);
    assert!(
        matches!(
            error,
            Error::ReauthorizationRequired {
                reason: ReauthorizationReason::RotationLost,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        server.refresh_calls(),
        2,
        "the request, then its identical copy"
    );
    assert_eq!(
        server.dpop_proofs_rejected(),
        1,
        "the copy was refused as a replay"
    );
    assert_eq!(
        server.presented_refresh_tokens().len(),
        1,
        "one refresh reached the grant"
    );
    assert_eq!(server.reuse_detections(), 0);
    assert!(!server.is_revoked(), "the grant was not revoked");
}

/// The first token request reached nothing that processed it (the connection was closed
/// after the request was read): the identical copy is answered and the refresh succeeds.
#[tokio::test]
async fn an_unprocessed_request_succeeds_on_its_identical_copy() {
    let key = DpopKey::generate(DpopAlgorithm::Es256).unwrap();
    // A token endpoint that drops the first connection after reading the request, and
    // answers the next ones; it keeps every proof it received.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_url = format!("http://{}/token", listener.local_addr().unwrap());
    let proofs = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let proofs = Arc::clone(&proofs);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (headers, _) = read_request(&mut stream).await;
                let first = {
                    let mut proofs = proofs.lock().unwrap();
                    proofs.push(headers.get("dpop").cloned().unwrap_or_default());
                    proofs.len() == 1
                };
                if first {
                    continue;
                }
                let body = r#"{"access_token":"at-new","token_type":"DPoP","refresh_token":"rt-new","expires_in":3600}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            }
        });
    }
    let api = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::header("authorization", "DPoP at-new"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .expect(1)
        .mount(&api)
        .await;
    let grant = RefreshTokenGrant::builder(token_url, "c")
        .danger_allow_http_loopback()
        .build()
        .unwrap();
    let manager = TokenManager::builder(grant)
        .allow_origin(&api.uri())
        .unwrap()
        .build();
    let (http, manager) = client(manager);
    let expired =
        reqwest_token_refresh::TokenSet::new(reqwest_token_refresh::AccessToken::new("at-old"))
            .with_refresh_token(reqwest_token_refresh::RefreshToken::new("rt-old"))
            .with_expires_at(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1))
            .with_dpop_key(key);
    manager
        .set_tokens(&TokenKey::default(), expired)
        .await
        .unwrap();
    let response = http.get(format!("{}/me", api.uri())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let proofs = proofs.lock().unwrap().clone();
    assert_eq!(proofs.len(), 2, "the request, then its identical copy");
    assert!(!proofs[0].is_empty());
    assert_eq!(proofs[0], proofs[1], "the copy carried the very same proof");
}

/// Reads one HTTP/1.1 request: its headers (lowercase names) and body.
async fn read_request(
    stream: &mut tokio::net::TcpStream,
) -> (std::collections::HashMap<String, String>, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let header_end = loop {
        let read = stream.read(&mut buffer).await.unwrap();
        data.extend_from_slice(&buffer[..read]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        assert!(read > 0, "connection closed mid-request");
    };
    let head = String::from_utf8_lossy(&data[..header_end]).into_owned();
    let headers: std::collections::HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    while data.len() < header_end + length {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "connection closed mid-body");
        data.extend_from_slice(&buffer[..read]);
    }
    (headers, data[header_end..header_end + length].to_vec())
}
