//! Expiry (RFC 6749 §5.1 `expires_in`) and wall-clock jumps. Expiry is counted from when the token request was *sent* (never
//! later than the server's "now"), and a wall clock that jumps forward or backward costs at
//! most one refresh, never a storm. Cooldowns and backoffs use the monotonic clock, so a jump
//! cannot shorten them (not testable from outside without a fake clock; see SECURITY.md).

use std::time::{Duration, SystemTime};

use futures::future::join_all;
use reqwest_token_refresh::{AccessToken, RefreshToken, TokenSet};

use super::support::*;

async fn burst(client: &reqwest_middleware::ClientWithMiddleware, url: &str, count: usize) {
    let statuses = join_all(
        (0..count).map(|_| async { client.get(url).send().await.unwrap().status().as_u16() }),
    )
    .await;
    assert_eq!(statuses, vec![200; count]);
}

#[tokio::test]
async fn r16_expiry_is_measured_from_the_time_the_request_was_sent() {
    let delay = Duration::from_millis(400);
    let server = AuthServer::builder().token_delay(delay).start().await;
    let (client, manager) = client_for(&server, server.issue_expired_grant()).await;
    let before = SystemTime::now();
    client.get(server.api_url("x")).send().await.unwrap();
    let after = SystemTime::now();
    let tokens = manager.tokens(&key()).await.unwrap().unwrap();
    let issued = tokens.issued_at().unwrap();
    assert!(issued >= before, "issued before the request started");
    assert!(
        issued + delay <= after,
        "issued_at is the send time, not the receive time"
    );
    assert_eq!(
        tokens.expires_at(),
        Some(issued + Duration::from_secs(3600))
    );
}

fn tokens_from(server: &AuthServer, issued: SystemTime, expires: SystemTime) -> TokenSet {
    let grant = server.issue_grant();
    TokenSet::new(AccessToken::new(grant.access_token().secret()))
        .with_refresh_token(RefreshToken::new(grant.refresh_token().unwrap().secret()))
        .with_expires_in(Duration::from_secs(1))
        .with_expires_at(expires)
        .pipe_issued(issued)
}

/// `TokenSet` has no public setter for `issued_at` alone; round-trip through its JSON form, as
/// a store written by a process with another clock would hand it over.
trait PipeIssued {
    fn pipe_issued(self, issued: SystemTime) -> Self;
}

impl PipeIssued for TokenSet {
    fn pipe_issued(self, issued: SystemTime) -> Self {
        let mut json = serde_json::to_value(&self).unwrap();
        json["issued_at"] = issued
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .into();
        serde_json::from_value(json).unwrap()
    }
}

#[tokio::test]
async fn a_clock_that_jumped_forward_costs_one_refresh_not_a_storm() {
    let server = AuthServer::builder().start().await;
    // Issued "a day ago" by our clock: the token looks long expired.
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let tokens = tokens_from(&server, now - day - Duration::from_secs(3600), now - day);
    let (client, manager) = client_for(&server, tokens).await;
    burst(&client, &server.api_url("x"), 24).await;
    burst(&client, &server.api_url("y"), 24).await;
    assert_eq!(server.refresh_calls(), 1);
    let held = manager.tokens(&key()).await.unwrap().unwrap();
    assert!(held.expires_at().unwrap() > SystemTime::now() + Duration::from_secs(3000));
}

#[tokio::test]
async fn a_clock_that_jumped_backward_refreshes_nothing_until_rejected_once() {
    let server = AuthServer::builder().start().await;
    // Issued "tomorrow" by our clock (it jumped back a day after the login).
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let tokens = tokens_from(&server, now + day, now + day + Duration::from_secs(3600));
    let (client, _) = client_for(&server, tokens).await;
    burst(&client, &server.api_url("x"), 24).await;
    assert_eq!(server.refresh_calls(), 0, "not due by our clock");
    // The server's clock says it has expired: one 401-driven refresh for all.
    server.reject_current_access_tokens();
    burst(&client, &server.api_url("y"), 24).await;
    assert_eq!(server.refresh_calls(), 1);
}

#[tokio::test]
async fn inconsistent_timestamps_cost_one_refresh() {
    let server = AuthServer::builder().start().await;
    // Expires before it was issued: the lifetime is unknowable, the token is simply expired.
    let now = SystemTime::now();
    let tokens = tokens_from(&server, now, now - Duration::from_secs(60));
    let (client, _) = client_for(&server, tokens).await;
    burst(&client, &server.api_url("x"), 24).await;
    burst(&client, &server.api_url("x"), 24).await;
    assert_eq!(server.refresh_calls(), 1);
}
