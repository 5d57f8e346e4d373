//! The token set kept per key, and the expiry maths.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::InvalidResponse;
use crate::revision::Revision;
use crate::secret::{AccessToken, RefreshToken};

/// The longest lifetime believed from `expires_in`; larger values are clamped (no overflow).
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The tokens held for one key: what the middleware sends, and what it refreshes with.
///
/// It is persisted as JSON with data fields only (times are unix seconds, to the microsecond):
///
/// ```json
/// {"access_token":"…","refresh_token":"…","token_type":"Bearer","expires_at":1767225600.25,
///  "issued_at":1767222000.25,"scope":"read","issued_for":"https://auth.example.com/token my-client",
///  "generation":7,"revision":"9f2c…"}
/// ```
///
/// `revision` identifies the set: every set the middleware makes gets a new random one, and
/// stores write conditionally on it (see [`Revision`]). `generation` counts the changes of the
/// key's tokens (refresh, rotation, new login), for events and logs.
///
/// `Debug` never prints the tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredTokenSet")]
pub struct TokenSet {
    access_token: AccessToken,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<RefreshToken>,
    token_type: String,
    #[serde(with = "unix_time", skip_serializing_if = "Option::is_none")]
    expires_at: Option<SystemTime>,
    #[serde(with = "unix_time", skip_serializing_if = "Option::is_none")]
    issued_at: Option<SystemTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(with = "unix_time", skip_serializing_if = "Option::is_none")]
    refresh_expires_at: Option<SystemTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_for: Option<Arc<str>>,
    /// The DPoP key the tokens are bound to: kept with them, since a DPoP-bound refresh token
    /// is useless without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    dpop_key: Option<DpopKeyField>,
    generation: u64,
    revision: Revision,
}

/// The DPoP key of a set, as this build can use it.
#[cfg(feature = "dpop")]
pub(crate) type DpopKeyField = crate::dpop::DpopKey;
/// The DPoP key of a set, kept as stored: a build without the `dpop` feature cannot use the
/// set, but must not lose the key when it rewrites the record.
#[cfg(not(feature = "dpop"))]
pub(crate) type DpopKeyField = OpaqueDpopKey;

/// A stored DPoP key, as its JWK, carried along unread.
#[cfg(not(feature = "dpop"))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct OpaqueDpopKey(serde_json::Value);

#[cfg(not(feature = "dpop"))]
impl std::fmt::Debug for OpaqueDpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A token set as read from a store: records written before revisions existed have none.
#[derive(Deserialize)]
struct StoredTokenSet {
    access_token: AccessToken,
    #[serde(default)]
    refresh_token: Option<RefreshToken>,
    token_type: String,
    #[serde(default, with = "unix_time")]
    expires_at: Option<SystemTime>,
    #[serde(default, with = "unix_time")]
    issued_at: Option<SystemTime>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default, with = "unix_time")]
    refresh_expires_at: Option<SystemTime>,
    #[serde(default)]
    issued_for: Option<Arc<str>>,
    #[serde(default)]
    dpop_key: Option<DpopKeyField>,
    #[serde(default)]
    generation: u64,
    #[serde(default)]
    revision: Option<Revision>,
}

impl From<StoredTokenSet> for TokenSet {
    fn from(stored: StoredTokenSet) -> Self {
        Self {
            access_token: stored.access_token,
            refresh_token: stored.refresh_token,
            token_type: stored.token_type,
            expires_at: stored.expires_at,
            issued_at: stored.issued_at,
            scope: stored.scope,
            refresh_expires_at: stored.refresh_expires_at,
            issued_for: stored.issued_for,
            dpop_key: stored.dpop_key,
            generation: stored.generation,
            revision: stored
                .revision
                .unwrap_or_else(|| Revision::legacy(stored.generation)),
        }
    }
}

impl TokenSet {
    /// A token set holding only an access token of unknown lifetime, with a new revision.
    ///
    /// Add the rest with the `with_*` methods. The middleware gives the set its own generation
    /// and revision when it is handed to
    /// [`TokenManager::set_tokens`](crate::TokenManager::set_tokens).
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
            dpop_key: None,
            generation: 0,
            revision: Revision::random(),
        }
    }

    /// Binds the set to `key`: its tokens were issued for proofs signed by that key (the
    /// login's code exchange sent them). From then on every token and resource request for the
    /// set carries a DPoP proof, and the access token goes in `Authorization: DPoP …`. The key
    /// is stored and adopted with the set, and replaced only with a new login.
    #[cfg(feature = "dpop")]
    pub fn with_dpop_key(mut self, key: crate::dpop::DpopKey) -> Self {
        self.dpop_key = Some(key);
        self.token_type = "DPoP".to_owned();
        self
    }

    /// The DPoP key the tokens are bound to, if they are DPoP-bound.
    #[cfg(feature = "dpop")]
    pub fn dpop_key(&self) -> Option<&crate::dpop::DpopKey> {
        self.dpop_key.as_ref()
    }

    /// Whether the tokens are DPoP-bound (they need their key on every request).
    pub(crate) fn is_dpop_bound(&self) -> bool {
        self.dpop_key.is_some()
    }

    /// Sets the refresh token.
    pub fn with_refresh_token(mut self, refresh_token: RefreshToken) -> Self {
        self.refresh_token = Some(refresh_token);
        self
    }

    /// Sets the absolute expiry of the access token.
    pub fn with_expires_at(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(to_micros(expires_at));
        self
    }

    /// Sets the expiry as a lifetime counted from now, as the token endpoint's `expires_in`.
    pub fn with_expires_in(self, lifetime: Duration) -> Self {
        self.with_lifetime_from(SystemTime::now(), lifetime)
    }

    /// Sets when the refresh token expires, if the server told it.
    pub fn with_refresh_expires_at(mut self, expires_at: SystemTime) -> Self {
        self.refresh_expires_at = Some(to_micros(expires_at));
        self
    }

    /// Sets the granted scope (space separated, RFC 6749 §3.3).
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    pub(crate) fn with_lifetime_from(mut self, issued_at: SystemTime, lifetime: Duration) -> Self {
        let lifetime = lifetime.min(MAX_LIFETIME);
        let issued_at = to_micros(issued_at);
        self.issued_at = Some(issued_at);
        self.expires_at = issued_at.checked_add(lifetime).map(to_micros);
        self
    }

    /// Records which authorization server and client the tokens were issued by: the
    /// [`TokenRefresher::issuer_binding`](crate::TokenRefresher::issuer_binding) of the grant
    /// that will refresh them (for the built-in grants, `"<token endpoint> <client id>"`).
    ///
    /// Only needed for sets written to a store by other means than the middleware (a login
    /// tool, a migration): [`set_tokens`](crate::TokenManager::set_tokens) binds the sets it is
    /// given. A middleware refuses stored tokens bound to another server, and by default tokens
    /// bound to none, so that a refresh token never reaches a server that did not issue it.
    pub fn with_issued_for(self, binding: impl Into<String>) -> Self {
        self.bound_to(Some(Arc::from(binding.into())))
    }

    pub(crate) fn bound_to(mut self, issued_for: Option<Arc<str>>) -> Self {
        self.issued_for = issued_for;
        self
    }

    /// This set as a new record: `generation` and a new revision.
    pub(crate) fn renewed(mut self, generation: u64) -> Self {
        self.generation = generation;
        self.revision = Revision::random();
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

    /// The token type: `Bearer`, or `DPoP` for DPoP-bound tokens.
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
    /// id>` for the built-in grants), recorded by the middleware or by
    /// [`with_issued_for`](Self::with_issued_for). A middleware configured for another server
    /// never uses, revokes or replaces the set.
    pub fn issued_for(&self) -> Option<&str> {
        self.issued_for.as_deref()
    }

    /// How many times the key's tokens changed before this set (a counter for events and
    /// logs; stores compare the [`revision`](Self::revision)).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The set's identity, which conditional saves compare.
    pub fn revision(&self) -> &Revision {
        &self.revision
    }

    /// Whether a proactive refresh is due at `now` with `leeway` (see
    /// [`refresh_due_at`](Self::refresh_due_at)).
    pub(crate) fn is_due(&self, leeway: Duration, now: SystemTime) -> bool {
        self.refresh_due_at(leeway).is_some_and(|due| now >= due)
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
                .bound_to(self.issued_for.clone());
        // The key stays with the tokens it binds, unless the answer came with a new one.
        if next.dpop_key.is_none() {
            next.dpop_key = self.dpop_key.clone();
            next.token_type = self.token_type.clone();
        }
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
        let mut next = self.clone().renewed(self.generation.saturating_add(1));
        next.refresh_token = Some(refresh_token);
        next.refresh_expires_at = None;
        next.expires_at = Some(UNIX_EPOCH);
        next
    }

    /// A set made from a token response alone (a client-credentials grant).
    pub(crate) fn from_response(
        response: TokenResponse,
        sent_at: SystemTime,
        generation: u64,
    ) -> TokenSet {
        let mut set = TokenSet::new(response.access_token);
        if let Some(key) = response.dpop_key {
            set.dpop_key = Some(key);
            set.token_type = "DPoP".to_owned();
        }
        set.refresh_token = response.refresh_token;
        set.scope = response.scope;
        set.refresh_expires_at = response
            .refresh_expires_in
            .and_then(|lifetime| sent_at.checked_add(lifetime.min(MAX_LIFETIME)))
            .map(to_micros);
        if let Some(lifetime) = response.expires_in {
            set = set.with_lifetime_from(sent_at, lifetime);
        }
        set.generation = generation;
        set
    }
}

/// A successful token-endpoint response (RFC 6749 §5.1).
///
/// Returned by [`TokenRefresher`](crate::TokenRefresher) implementations; the middleware checks
/// it (an access token that cannot go in a header is refused) and merges it into the current
/// [`TokenSet`], keeping the old refresh token when none is returned. If the response is refused
/// but carries a new refresh token, that token is still kept: the server consumed the old one.
///
/// ```
/// use std::time::Duration;
/// use reqwest_token_refresh::{AccessToken, RefreshToken, TokenResponse};
///
/// let response = TokenResponse::new(AccessToken::new("eyJhbGciOi…"))
///     .with_refresh_token(RefreshToken::new("8xLOxBtZp8"))
///     .with_expires_in(Duration::from_secs(3600));
/// assert_eq!(response.expires_in, Some(Duration::from_secs(3600)));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// Set by the built-in parser when the answer cannot be used (but did rotate).
    pub(crate) unusable: Option<InvalidResponse>,
    /// The DPoP key a grant generated for these tokens (client credentials).
    pub(crate) dpop_key: Option<DpopKeyField>,
}

impl TokenResponse {
    /// A response carrying `access_token` and nothing else.
    pub fn new(access_token: AccessToken) -> Self {
        Self {
            access_token,
            refresh_token: None,
            expires_in: None,
            scope: None,
            refresh_expires_in: None,
            unusable: None,
            dpop_key: None,
        }
    }

    /// The tokens are bound to `key`, a DPoP key the refresher made for them (a grant that
    /// obtains tokens without a login, such as client credentials, generates its own).
    #[cfg(feature = "dpop")]
    #[must_use]
    pub fn with_dpop_key(mut self, key: crate::dpop::DpopKey) -> Self {
        self.dpop_key = Some(key);
        self
    }

    /// Sets the new refresh token (the server rotated it).
    #[must_use]
    pub fn with_refresh_token(mut self, refresh_token: RefreshToken) -> Self {
        self.refresh_token = Some(refresh_token);
        self
    }

    /// Sets the access token's lifetime (`expires_in`).
    #[must_use]
    pub fn with_expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_in = Some(lifetime);
        self
    }

    /// Sets the granted scope.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Sets the refresh token's lifetime.
    #[must_use]
    pub fn with_refresh_expires_in(mut self, lifetime: Duration) -> Self {
        self.refresh_expires_in = Some(lifetime);
        self
    }

    /// Whether the response can be used: the parser found nothing wrong, and the access token
    /// fits an `Authorization` header (RFC 6750 `b64token`).
    pub(crate) fn check(&self) -> Result<(), InvalidResponse> {
        if let Some(problem) = &self.unusable {
            return Err(problem.clone());
        }
        if !is_b64token(self.access_token.secret()) {
            return Err(InvalidResponse::MalformedAccessToken);
        }
        Ok(())
    }
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
/// Anything else could not be sent in a header safely (CR/LF injection) or is not a bearer token.
pub(crate) fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// `time` to the microsecond: what a store keeps, so a set reads back equal to itself.
pub(crate) fn to_micros(time: SystemTime) -> SystemTime {
    match time.duration_since(UNIX_EPOCH) {
        Ok(elapsed) => UNIX_EPOCH + Duration::from_micros(elapsed.as_micros() as u64),
        Err(_) => UNIX_EPOCH,
    }
}

/// Times as unix seconds with a fraction to the microsecond (records written with whole
/// seconds still read).
pub(crate) mod unix_time {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let micros = value
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |elapsed| elapsed.as_micros() as u64);
        if micros.is_multiple_of(1_000_000) {
            serializer.serialize_u64(micros / 1_000_000)
        } else {
            // Exact enough: below 2^53 microseconds (year 2255), the nearest f64 rounds back.
            serializer.serialize_f64(micros as f64 / 1e6)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        let seconds = Option::<f64>::deserialize(deserializer)?;
        Ok(seconds
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0 && *seconds < 1e11)
            .map(|seconds| UNIX_EPOCH + Duration::from_micros((seconds * 1e6).round() as u64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(refresh: Option<&str>) -> TokenResponse {
        let response =
            TokenResponse::new(AccessToken::new("at-2")).with_expires_in(Duration::from_secs(3600));
        match refresh {
            Some(refresh) => response.with_refresh_token(RefreshToken::new(refresh)),
            None => response,
        }
    }

    fn current() -> TokenSet {
        TokenSet::new(AccessToken::new("at-1"))
            .with_refresh_token(RefreshToken::new("rt-1"))
            .with_scope("read write")
            .renewed(4)
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
    fn times_keep_microseconds_and_whole_seconds_still_read() {
        let at = UNIX_EPOCH + Duration::from_nanos(1_767_225_600_123_456_789);
        let set = TokenSet::new(AccessToken::new("a")).with_expires_at(at);
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(json["expires_at"], 1_767_225_600.123_456);
        let back: TokenSet = serde_json::from_value(json).unwrap();
        assert_eq!(back, set);
        let old: TokenSet = serde_json::from_str(
            r#"{"access_token":"a","token_type":"Bearer","expires_at":1767225600}"#,
        )
        .unwrap();
        assert_eq!(
            old.expires_at(),
            Some(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
        );
    }

    #[test]
    fn each_new_set_has_its_own_revision() {
        let one = current();
        let next = one.next(response(Some("rt-2")), SystemTime::now());
        assert_ne!(one.revision(), next.revision());
        assert_ne!(
            TokenSet::new(AccessToken::new("a")).revision(),
            TokenSet::new(AccessToken::new("a")).revision()
        );
    }

    #[test]
    fn debug_hides_both_tokens() {
        let debug = format!("{:?}", current());
        assert!(!debug.contains("at-1"));
        assert!(!debug.contains("rt-1"));
    }
}
