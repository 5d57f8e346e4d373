// cargo run --example axum_backend --features test-util
//
// A web backend (axum) that calls an OAuth-protected API for its users. Refresh tokens and
// access tokens stay on the server, kept per user by the token middleware; the browser only
// gets a session id and the proxied results, so no token ever reaches a front end.
//
// The example starts, in this process on loopback, the authorization server and API (the
// crate's test kit), the backend, and a "browser" that logs in, reads its inbox across a token
// rejection, and logs out (which revokes the refresh token).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_token_refresh::test_util::MockAuthorizationServer;
use reqwest_token_refresh::{Error, RefreshTokenGrant, TokenKey, TokenManager};

#[derive(Clone)]
struct Backend {
    api: ClientWithMiddleware,
    tokens: TokenManager,
    auth: MockAuthorizationServer,
}

/// The user behind a request. A real backend verifies a signed session cookie here.
fn session_user(headers: &HeaderMap) -> Result<TokenKey, StatusCode> {
    headers
        .get("x-session")
        .and_then(|value| value.to_str().ok())
        .map(TokenKey::new)
        .ok_or(StatusCode::UNAUTHORIZED)
}

/// The OAuth callback: in a real backend, exchange the authorization code here. The tokens go
/// to the token manager; the browser gets a session id only.
async fn login(
    State(backend): State<Backend>,
    Path(user): Path<String>,
) -> Result<String, StatusCode> {
    let tokens = backend.auth.issue_grant();
    backend
        .tokens
        .set_tokens(&TokenKey::new(&user), tokens)
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    Ok(user)
}

/// Proxies the user's inbox from the protected API with the user's own token.
async fn inbox(State(backend): State<Backend>, headers: HeaderMap) -> Result<String, StatusCode> {
    let user = session_user(&headers)?;
    let url = backend.auth.api_url(&format!("{user}/inbox"));
    let response = backend
        .api
        .get(url)
        .with_extension(user)
        .send()
        .await
        .map_err(|error| match Error::from_middleware(&error) {
            // The front end sends the user to log in again.
            Some(error) if error.is_reauthorization_required() => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_GATEWAY,
        })?;
    let status = response.status();
    let body = response.text().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
    Ok(format!("{status}: {body}"))
}

/// Logs out: revokes the refresh token at the authorization server and forgets the tokens.
async fn logout(State(backend): State<Backend>, headers: HeaderMap) -> StatusCode {
    let Ok(user) = session_user(&headers) else {
        return StatusCode::UNAUTHORIZED;
    };
    match backend.tokens.revoke(&user).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let auth = MockAuthorizationServer::start(Duration::from_secs(3600)).await;
    let grant = RefreshTokenGrant::builder(auth.token_url(), "web-backend")
        .revocation_endpoint(auth.revocation_url())
        .danger_allow_http_loopback() // loopback demo only
        .build()?;
    let tokens = TokenManager::builder(grant)
        .allow_origin(&auth.uri())?
        .build();
    let api = ClientBuilder::new(reqwest::Client::new())
        .with(tokens.middleware())
        .build();
    let backend = Backend {
        api,
        tokens,
        auth: auth.clone(),
    };
    let app = Router::new()
        .route("/login/{user}", post(login))
        .route("/inbox", get(inbox))
        .route("/logout", post(logout))
        .with_state(backend);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let backend_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The browser: it only ever sees a session id and inbox contents.
    let browser = reqwest::Client::new();
    let mut seen_by_browser = String::new();
    let session = browser
        .post(format!("{backend_url}/login/alice"))
        .send()
        .await?
        .text()
        .await?;
    seen_by_browser.push_str(&session);
    for round in 0..3 {
        if round == 1 {
            auth.reject_current_access_tokens(); // the API starts rejecting the token
        }
        let inbox = browser
            .get(format!("{backend_url}/inbox"))
            .header("x-session", &session)
            .send()
            .await?
            .text()
            .await?;
        println!("inbox, round {round}:        {inbox}");
        seen_by_browser.push_str(&inbox);
    }
    let logout = browser
        .post(format!("{backend_url}/logout"))
        .header("x-session", &session)
        .send()
        .await?;
    let after = browser
        .get(format!("{backend_url}/inbox"))
        .header("x-session", &session)
        .send()
        .await?;
    println!("logout:                {}", logout.status());
    println!("inbox after logout:    {} (log in again)", after.status());
    println!("token refreshes:       {}", auth.refresh_calls());
    let leaked = seen_by_browser.contains("rt-") || seen_by_browser.contains("at-");
    println!(
        "tokens seen by browser: {}",
        if leaked { "SOME (bug!)" } else { "none" }
    );
    println!("grant revoked at server: {}", auth.is_revoked());
    if leaked || after.status() != 401 || auth.reuse_detections() > 0 || !auth.is_revoked() {
        return Err("the backend leaked a token or misbehaved".into());
    }
    Ok(())
}
