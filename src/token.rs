//! The token set kept per key, and the expiry maths.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::secret::{AccessToken, RefreshToken};

/// The longest lifetime believed from `expires_in`; larger values are clamped (no overflow).
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The tokens held for one key: what the middleware sends, and what it refreshes with.
///
/// It is persisted as JSON with data fields only:
///
/// ```json
/// {"access_token":"…","refresh_token":"…","token_type":"Bearer","expires_at":1767225600,
///  "issued_at":1767222000,"scope":"read","generation":7}
/// ```
///
/// `generation` grows by one on every change (refresh, rotation, new tokens supplied by the
/// application). Stores use it as the version for their conditional writes, and the middleware
/// uses it to tell a late 401 for an old token from a 401 for the current one.
///
/// `Debug` never prints the tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    access_token: AccessToken,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<RefreshToken>,
    token_type: String,
    #[serde(
        default,
        with = "unix_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    expires_at: Option<SystemTime>,
    #[serde(
        default,
        with = "unix_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    issued_at: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(
        default,
        with = "unix_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    refresh_expires_at: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issued_for: Option<Arc<str>>,
    #[serde(default)]
    generation: u64,
}

impl TokenSet {
    /// A token set holding only an access token of unknown lifetime.
    ///
    /// Add the rest with the `with_*` methods. The generation is assigned when the set is handed
    /// to [`TokenManager::set_tokens`](crate::TokenManager::set_tokens).
    pub fn new(access_token: AccessToken) -> Self {
        Self {
            access_token,
            refresh_token: None,
            token_type: "Bearer".to_owned(),
            expires_at: None,
            issued_at: None,
            scope: None,
            refresh_expires_at: None,
            issued_for: None,
            generation: 0,
        }
    }

    /// Sets the refresh token.
    pub fn with_refresh_token(mut self, refresh_token: RefreshToken) -> Self {
        self.refresh_token = Some(refresh_token);
        self
    }

    /// Sets the absolute expiry of the access token.
    pub fn with_expires_at(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Sets the expiry as a lifetime counted from now, as the token endpoint's `expires_in`.
    pub fn with_expires_in(self, lifetime: Duration) -> Self {
        self.with_lifetime_from(SystemTime::now(), lifetime)
    }

    /// Sets when the refresh token expires, if the server told it.
    pub fn with_refresh_expires_at(mut self, expires_at: SystemTime) -> Self {
        self.refresh_expires_at = Some(expires_at);
        self
    }

    /// Sets the granted scope (space separated, RFC 6749 §3.3).
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    pub(crate) fn with_lifetime_from(mut self, issued_at: SystemTime, lifetime: Duration) -> Self {
        let lifetime = lifetime.min(MAX_LIFETIME);
        self.issued_at = Some(issued_at);
        self.expires_at = issued_at.checked_add(lifetime);
        self
    }

    pub(crate) fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    pub(crate) fn with_issued_for(mut self, issued_for: Option<Arc<str>>) -> Self {
        self.issued_for = issued_for;
        self
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The refresh token, if the server issued one.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// The token type; always `Bearer` for tokens this crate accepted.
    pub fn token_type(&self) -> &str {
        &self.token_type
    }

    /// When the access token expires, if known.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// When the access token was issued (the time its request was sent), if known.
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.issued_at
    }

    /// The granted scope, if known.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// When the refresh token expires, if the server said (`refresh_expires_in`, a common
    /// extension). Stores use it to expire records.
    pub fn refresh_expires_at(&self) -> Option<SystemTime> {
        self.refresh_expires_at
    }

    /// Which authorization server and client the set belongs to (`<token endpoint> <client
    /// id>`), recorded by the middleware (D15). A middleware configured for another never
    /// adopts the set, so a refresh token is never sent to a server that did not issue it.
    pub fn issued_for(&self) -> Option<&str> {
        self.issued_for.as_deref()
    }

    /// The version of this set; grows by one on every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the access token has expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|expires_at| now >= expires_at)
    }

    /// When a proactive refresh is due: `leeway` before expiry, but never more than half
    /// the token's lifetime before it, so short-lived tokens are not refreshed at once.
    pub fn refresh_due_at(&self, leeway: Duration) -> Option<SystemTime> {
        let expires_at = self.expires_at?;
        let lifetime = self
            .issued_at
            .and_then(|issued_at| expires_at.duration_since(issued_at).ok());
        let margin = match lifetime {
            Some(lifetime) => leeway.min(lifetime / 2),
            None => leeway,
        };
        Some(expires_at.checked_sub(margin).unwrap_or(UNIX_EPOCH))
    }

    /// The set that follows this one after a successful token response.
    ///
    /// RFC 6749 §6: a new refresh token replaces the old one; when the response carries none,
    /// the old one is kept. The scope of the grant is kept when the response omits it (§5.1).
    pub(crate) fn next(&self, response: TokenResponse, sent_at: SystemTime) -> TokenSet {
        let mut next =
            TokenSet::from_response(response, sent_at, self.generation.saturating_add(1))
                .with_issued_for(self.issued_for.clone());
        if next.refresh_token.is_none() {
            // The old refresh token is kept, with its expiry unless the server gave a new one.
            next.refresh_token = self.refresh_token.clone();
            next.refresh_expires_at = next.refresh_expires_at.or(self.refresh_expires_at);
        }
        next.scope = next.scope.or_else(|| self.scope.clone());
        next
    }

    /// The set after a rotation whose access token was unusable: the new refresh token, the
    /// old access token marked expired (so the next request refreshes, after any backoff).
    pub(crate) fn with_rotated_refresh_token(&self, refresh_token: RefreshToken) -> TokenSet {
        let mut next = self.clone();
        next.refresh_token = Some(refresh_token);
        next.refresh_expires_at = None;
        next.expires_at = Some(UNIX_EPOCH);
        next.generation = self.generation.saturating_add(1);
        next
    }

    /// A set made from a token response alone (a client-credentials grant).
    pub(crate) fn from_response(
        response: TokenResponse,
        sent_at: SystemTime,
        generation: u64,
    ) -> TokenSet {
        let mut set = TokenSet::new(response.access_token);
        set.refresh_token = response.refresh_token;
        set.scope = response.scope;
        set.refresh_expires_at = response
            .refresh_expires_in
            .and_then(|lifetime| sent_at.checked_add(lifetime.min(MAX_LIFETIME)));
        if let Some(lifetime) = response.expires_in {
            set = set.with_lifetime_from(sent_at, lifetime);
        }
        set.generation = generation;
        set
    }
}

/// A successful token-endpoint response (RFC 6749 §5.1), already validated.
///
/// Built by [`TokenRefresher`](crate::TokenRefresher) implementations; the manager merges it into
/// the current [`TokenSet`] (keeping the old refresh token when none is returned).
#[derive(Clone, Debug)]
pub struct TokenResponse {
    /// The new access token.
    pub access_token: AccessToken,
    /// A new refresh token, when the server rotated it.
    pub refresh_token: Option<RefreshToken>,
    /// The lifetime of the access token, when the server told it.
    pub expires_in: Option<Duration>,
    /// The granted scope, when the server told it.
    pub scope: Option<String>,
    /// The refresh token's lifetime, when the server told it (`refresh_expires_in` or
    /// `refresh_token_expires_in`, extensions of Keycloak, GitHub and others).
    pub refresh_expires_in: Option<Duration>,
}

mod unix_seconds {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let seconds = value
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |elapsed| elapsed.as_secs());
        serializer.serialize_u64(seconds)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        let seconds = Option::<u64>::deserialize(deserializer)?;
        Ok(seconds.and_then(|seconds| UNIX_EPOCH.checked_add(Duration::from_secs(seconds))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(refresh: Option<&str>) -> TokenResponse {
        TokenResponse {
            access_token: AccessToken::new("at-2"),
            refresh_token: refresh.map(RefreshToken::new),
            expires_in: Some(Duration::from_secs(3600)),
            scope: None,
            refresh_expires_in: None,
        }
    }

    fn current() -> TokenSet {
        TokenSet::new(AccessToken::new("at-1"))
            .with_refresh_token(RefreshToken::new("rt-1"))
            .with_scope("read write")
            .with_generation(4)
    }

    #[test]
    fn r17_a_new_refresh_token_replaces_the_old_one() {
        let next = current().next(response(Some("rt-2")), SystemTime::now());
        assert_eq!(next.refresh_token().unwrap().secret(), "rt-2");
        assert_eq!(next.generation(), 5);
    }

    #[test]
    fn r17_an_absent_refresh_token_keeps_the_old_one() {
        let next = current().next(response(None), SystemTime::now());
        assert_eq!(next.refresh_token().unwrap().secret(), "rt-1");
        assert_eq!(next.access_token().secret(), "at-2");
    }

    #[test]
    fn the_refresh_token_expiry_follows_the_refresh_token() {
        let sent_at = UNIX_EPOCH + Duration::from_secs(1_000);
        let old_expiry = UNIX_EPOCH + Duration::from_secs(9_000);
        let base = current().with_refresh_expires_at(old_expiry);
        // Rotated, lifetime told: a new expiry.
        let mut rotated = response(Some("rt-2"));
        rotated.refresh_expires_in = Some(Duration::from_secs(600));
        let next = base.next(rotated, sent_at);
        assert_eq!(
            next.refresh_expires_at(),
            Some(sent_at + Duration::from_secs(600))
        );
        // Rotated, lifetime not told: unknown (it is a new token).
        assert_eq!(
            base.next(response(Some("rt-2")), sent_at)
                .refresh_expires_at(),
            None
        );
        // Kept: the old token keeps its expiry.
        assert_eq!(
            base.next(response(None), sent_at).refresh_expires_at(),
            Some(old_expiry)
        );
    }

    #[test]
    fn r18_scope_of_the_grant_is_kept_when_the_response_omits_it() {
        let next = current().next(response(None), SystemTime::now());
        assert_eq!(next.scope(), Some("read write"));
    }

    #[test]
    fn r16_expiry_counts_from_the_send_time() {
        let sent_at = UNIX_EPOCH + Duration::from_secs(1_000);
        let next = current().next(response(None), sent_at);
        assert_eq!(
            next.expires_at(),
            Some(UNIX_EPOCH + Duration::from_secs(4_600))
        );
    }

    #[test]
    fn leeway_is_at_most_half_the_lifetime() {
        let issued = UNIX_EPOCH + Duration::from_secs(1_000);
        let short = TokenSet::new(AccessToken::new("a"))
            .with_lifetime_from(issued, Duration::from_secs(20));
        assert_eq!(
            short.refresh_due_at(Duration::from_secs(60)),
            Some(issued + Duration::from_secs(10))
        );
        let long = TokenSet::new(AccessToken::new("a"))
            .with_lifetime_from(issued, Duration::from_secs(3600));
        assert_eq!(
            long.refresh_due_at(Duration::from_secs(60)),
            Some(issued + Duration::from_secs(3540))
        );
    }

    #[test]
    fn huge_lifetimes_are_clamped_without_overflow() {
        let set = TokenSet::new(AccessToken::new("a")).with_expires_in(Duration::MAX);
        let expires_at = set.expires_at().unwrap();
        assert!(expires_at <= SystemTime::now() + MAX_LIFETIME);
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let set = current().with_lifetime_from(
            UNIX_EPOCH + Duration::from_secs(10),
            Duration::from_secs(60),
        );
        let json = serde_json::to_string(&set).unwrap();
        let back: TokenSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
    }

    #[test]
    fn debug_hides_both_tokens() {
        let debug = format!("{:?}", current());
        assert!(!debug.contains("at-1"));
        assert!(!debug.contains("rt-1"));
    }
}
