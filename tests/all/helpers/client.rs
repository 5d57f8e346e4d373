//! Client fixtures: a client over a middleware, its events, and the crate error inside a
//! middleware error.

use std::time::Duration;

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_token_refresh::{Error, Event, TokenKey, TokenManager, TokenManagerBuilder, TokenSet};
use tokio::sync::mpsc;

/// How long an awaited event may take before the test fails (a hang is a failure).
pub const WAIT: Duration = Duration::from_secs(10);

/// A client using `manager`'s middleware, and the manager.
pub fn client(manager: TokenManager) -> (ClientWithMiddleware, TokenManager) {
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(manager.middleware())
        .build();
    (client, manager)
}

/// A client using the middleware `builder` builds, whose default key starts with `tokens`.
pub async fn built_with_tokens(
    builder: TokenManagerBuilder,
    tokens: TokenSet,
) -> (ClientWithMiddleware, TokenManager) {
    let (client, manager) = client(builder.build());
    manager
        .set_tokens(&TokenKey::default(), tokens)
        .await
        .expect("tokens accepted");
    (client, manager)
}

/// Adds a channel receiving every event of the middleware `builder` builds.
pub fn events(
    builder: TokenManagerBuilder,
) -> (TokenManagerBuilder, mpsc::UnboundedReceiver<Event>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let builder = builder.on_event(move |event| {
        let _ = sender.send(event.clone());
    });
    (builder, receiver)
}

/// The first event matching `wanted` (bounded wait: a missing event fails the test).
pub async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<Event>,
    wanted: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("event channel open");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the expected event arrived within the bound")
}

/// The crate error inside a middleware error.
pub fn token_error(error: &reqwest_middleware::Error) -> &Error {
    Error::from_middleware(error)
        .unwrap_or_else(|| panic!("expected a reqwest_token_refresh::Error, got {error}"))
}
