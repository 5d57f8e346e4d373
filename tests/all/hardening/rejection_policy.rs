//! RFC 6750 §3.1: a rejected token is refreshed at most once, each request is
//! replayed at most once, and a resource server that rejects every token costs a bounded
//! number of token calls (one per cooldown).

use std::time::Duration;

use futures::future::join_all;
use wiremock::matchers::{any, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::support::*;

async fn burst(
    client: &reqwest_middleware::ClientWithMiddleware,
    url: &str,
    count: usize,
) -> Vec<u16> {
    join_all((0..count).map(|_| async { client.get(url).send().await.unwrap().status().as_u16() }))
        .await
}

#[tokio::test]
async fn r34_many_401s_for_one_generation_cost_one_refresh() {
    let server = AuthServer::builder().start().await;
    let (client, _) = client_for(&server, server.issue_grant()).await;
    server.reject_current_access_tokens();
    let statuses = burst(&client, &server.api_url("x"), 32).await;
    assert_eq!(statuses, vec![200; 32]);
    assert_eq!(server.refresh_calls(), 1);
    assert!(
        server.api_calls() <= 64,
        "each request reaches the API at most twice: {} API calls",
        server.api_calls()
    );
    server.assert_no_refresh_token_reused();
}

/// An API at an allowed origin that answers 401 `invalid_token` to everything.
async fn hostile_api() -> MockServer {
    let api = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("www-authenticate", r#"Bearer error="invalid_token""#),
        )
        .mount(&api)
        .await;
    api
}

#[tokio::test]
async fn d10_a_server_rejecting_every_token_costs_one_call_per_cooldown() {
    let server = AuthServer::builder().start().await;
    let api = hostile_api().await;
    let (client, manager) = client(
        middleware(grant(&server.token_url()), &api.uri())
            .rejection_cooldown(Duration::from_millis(300))
            .build(),
    );
    manager
        .set_tokens(&key(), server.issue_grant())
        .await
        .unwrap();
    let url = format!("{}/x", api.uri());
    for _ in 0..3 {
        assert_eq!(burst(&client, &url, 16).await, vec![401; 16]);
    }
    assert_eq!(server.refresh_calls(), 1, "within the cooldown");
    let requests = api.received_requests().await.unwrap().len();
    assert!(
        requests <= 2 * 48,
        "each request reaches the API at most twice: {requests} API calls for 48 requests"
    );
    // Time passes (not a synchronisation: the cooldown is what is measured).
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..3 {
        assert_eq!(burst(&client, &url, 16).await, vec![401; 16]);
    }
    assert_eq!(
        server.refresh_calls(),
        2,
        "one more after the cooldown, no more"
    );
    server.assert_no_refresh_token_reused();
}

#[tokio::test]
async fn d10_a_late_401_for_an_old_generation_replays_without_refreshing() {
    let server = AuthServer::builder().start().await;
    Mock::given(path("/api/slow"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("www-authenticate", r#"Bearer error="invalid_token""#)
                .set_delay(Duration::from_millis(300)),
        )
        .with_priority(1)
        .mount(server.mock_server())
        .await;
    let (client, _) = client_for(&server, server.issue_grant()).await;
    server.reject_current_access_tokens();
    let slow_client = client.clone();
    let slow_url = server.api_url("slow");
    let slow = tokio::spawn(async move { slow_client.get(slow_url).send().await });
    // Meanwhile another request sees the 401 first and refreshes (or joins the slow one's
    // refresh: either way one token call).
    let fast = client.get(server.api_url("fast")).send().await.unwrap();
    assert_eq!(fast.status(), 200);
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), 401, "the replay's answer is returned as is");
    assert_eq!(server.refresh_calls(), 1);
    let slow_tokens: Vec<_> = server
        .mock_server()
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/api/slow")
        .map(|r| bearer(r).unwrap())
        .collect();
    assert_eq!(
        slow_tokens,
        vec!["at-1", "at-2"],
        "replayed once, with the new token"
    );
}

#[tokio::test]
async fn d11_a_streaming_body_is_not_replayed_and_causes_no_refresh_loop() {
    let server = AuthServer::builder().start().await;
    let (client, _) = client_for(&server, server.issue_grant()).await;
    server.reject_current_access_tokens();
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>("chunk")]);
    let response = client
        .post(server.api_url("upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(server.api_calls(), 1);
}
