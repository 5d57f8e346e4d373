//! The application's own HTTP client settings for the token endpoint (`http_client`): a proxy
//! and a private certificate authority, each checked against a control without them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use reqwest_token_refresh::{AccessToken, RefreshToken, RefreshTokenGrant, TokenManager, TokenSet};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{client, token_error};

/// Tokens whose access token has expired: the first request must call the token endpoint.
fn expired_tokens() -> TokenSet {
    TokenSet::new(AccessToken::new("at-old"))
        .with_refresh_token(RefreshToken::new("rt-old"))
        .with_expires_at(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1))
}

fn token_json() -> serde_json::Value {
    serde_json::json!({
        "access_token": "at-new",
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": "rt-new",
    })
}

/// A manager whose expired tokens must be refreshed at `token_endpoint` (with the application's
/// `http` client builder, if given) before a request to `api`. The loopback opt-in is for the
/// plain-http API and, in the proxy test, the token endpoint.
fn manager(
    token_endpoint: &str,
    api: &MockServer,
    http: Option<reqwest::ClientBuilder>,
) -> TokenManager {
    let mut grant = RefreshTokenGrant::builder(token_endpoint, "c").danger_allow_http_loopback();
    if let Some(http) = http {
        grant = grant.http_client(http);
    }
    TokenManager::builder(grant.build().unwrap())
        .allow_origin(&api.uri())
        .unwrap()
        .initial_tokens(expired_tokens())
        .build()
}

/// An API that answers 200 to the refreshed token only.
async fn api() -> MockServer {
    let api = MockServer::start().await;
    Mock::given(header("authorization", "Bearer at-new"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&api)
        .await;
    api
}

#[tokio::test]
async fn the_token_call_goes_through_the_configured_proxy() {
    // Nothing listens on the token endpoint's own port: only the proxy can answer.
    let token_endpoint = "http://127.0.0.1:9/oauth/token";
    let proxy = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(header("host", "127.0.0.1:9"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_json()))
        .expect(1)
        .mount(&proxy)
        .await;
    let api = api().await;
    // Control: without the proxy the token endpoint cannot be reached.
    let (direct, _) = client(manager(token_endpoint, &api, None));
    let error = direct
        .get(format!("{}/me", api.uri()))
        .send()
        .await
        .unwrap_err();
    assert!(token_error(&error).is_transient(), "{error:?}");

    let http = reqwest::Client::builder().proxy(reqwest::Proxy::http(proxy.uri()).unwrap());
    let (proxied, _) = client(manager(token_endpoint, &api, Some(http)));
    let response = proxied
        .get(format!("{}/me", api.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A certificate authority of its own, and a certificate it issued for `localhost`.
struct PrivateCa {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

fn private_ca() -> PrivateCa {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    PrivateCa {
        ca_pem: ca_cert.pem(),
        server_chain: vec![server_cert.der().clone()],
        server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
    }
}

/// A token endpoint over TLS with `ca`'s certificate, on loopback; its URL and a count of the
/// token requests it answered.
async fn tls_token_endpoint(ca: &PrivateCa) -> (String, Arc<AtomicU64>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            ca.server_chain.clone(),
            PrivateKeyDer::Pkcs8(ca.server_key.clone_key()),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&calls);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, calls) = (acceptor.clone(), Arc::clone(&counted));
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to serve.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |_request| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let body = token_json().to_string();
                    async move {
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(bytes::Bytes::from(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("https://localhost:{port}/oauth/token"), calls)
}

#[tokio::test]
async fn a_private_root_certificate_reaches_a_token_endpoint_it_signed() {
    let ca = private_ca();
    let (token_endpoint, calls) = tls_token_endpoint(&ca).await;
    let api = api().await;
    // Control: the default client does not trust the private authority.
    let (default, _) = client(manager(&token_endpoint, &api, None));
    let error = default
        .get(format!("{}/me", api.uri()))
        .send()
        .await
        .unwrap_err();
    assert!(token_error(&error).is_transient(), "{error:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no request got through");

    let root = reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap();
    let http = reqwest::Client::builder().add_root_certificate(root);
    let (trusting, _) = client(manager(&token_endpoint, &api, Some(http)));
    let response = trusting
        .get(format!("{}/me", api.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_given_client_still_follows_no_redirect() {
    // The application's builder asks for redirects; the token call must not follow them (a
    // 307 would re-post the refresh token to wherever it points).
    let auth = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/steal", elsewhere.uri()).as_str()),
        )
        .expect(1)
        .mount(&auth)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_json()))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let api = api().await;
    let grant = RefreshTokenGrant::builder(format!("{}/token", auth.uri()), "c")
        .danger_allow_http_loopback()
        .http_client(reqwest::Client::builder().redirect(reqwest::redirect::Policy::limited(5)))
        .build()
        .unwrap();
    let manager = TokenManager::builder(grant)
        .allow_origin(&api.uri())
        .unwrap()
        .initial_tokens(expired_tokens())
        .build();
    let (client, _) = client(manager);
    let error = client
        .get(format!("{}/me", api.uri()))
        .send()
        .await
        .unwrap_err();
    assert!(
        !token_error(&error).is_reauthorization_required(),
        "{error:?}"
    );
}
