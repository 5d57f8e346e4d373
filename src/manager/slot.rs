//! One key's state: what callers see, read without locks, and the bookkeeping that only the
//! key's writer touches. [`KeyWriter`] is the one place that changes either.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderValue;

use super::flight::Flight;
use crate::error::{Error, ReauthorizationReason};
use crate::key::TokenKey;
use crate::policy::Unsaved;
use crate::record::TokenRecord;
use crate::revision::Revision;
use crate::token::is_b64token;
use crate::token::TokenSet;

/// A token ready to send: the set and its ready-made `Authorization` value.
// In declaration order (`repr(C)`): what every request reads (the header, when it is due, and
// whether it is DPoP-bound) comes first, next to the reference count of the state holding it,
// so that a request reads two cache lines of the state however large the token set is.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct ActiveToken {
    header: HeaderValue,
    refresh_due_at: Option<SystemTime>,
    /// For DPoP-bound tokens: the access token's hash (`ath`), the same in every proof.
    #[cfg(feature = "dpop")]
    ath: Option<Box<str>>,
    tokens: TokenSet,
}

impl ActiveToken {
    /// `tokens` ready to send; an access token that cannot go in a header is refused, and so
    /// are DPoP-bound tokens in a build without the `dpop` feature.
    pub(super) fn new(tokens: TokenSet, leeway: Duration) -> Result<Self, Error> {
        let header = authorization_header(&tokens)?;
        let refresh_due_at = tokens.refresh_due_at(leeway);
        #[cfg(feature = "dpop")]
        let ath = tokens
            .dpop_key()
            .map(|_| crate::dpop::access_token_hash(tokens.access_token().secret()).into());
        Ok(Self {
            tokens,
            header,
            refresh_due_at,
            #[cfg(feature = "dpop")]
            ath,
        })
    }

    /// The `Authorization` value: `Bearer <token>`, or `DPoP <token>` for DPoP-bound tokens.
    pub(crate) fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// The DPoP key and the `ath` of DPoP-bound tokens.
    #[cfg(feature = "dpop")]
    pub(crate) fn dpop(&self) -> Option<(&crate::dpop::DpopKey, &str)> {
        // `ath` first: a bearer token is told apart without reading the token set.
        let ath = self.ath.as_deref()?;
        Some((self.tokens.dpop_key()?, ath))
    }

    pub(crate) fn tokens(&self) -> &TokenSet {
        &self.tokens
    }

    pub(crate) fn revision(&self) -> &Revision {
        self.tokens.revision()
    }

    pub(super) fn refresh_due(&self, now: SystemTime) -> bool {
        self.refresh_due_at.is_some_and(|due| now >= due)
    }

    /// Whether this is the token a caller saw.
    pub(super) fn is(&self, seen: Option<&Revision>) -> bool {
        seen == Some(self.revision())
    }
}

/// `Authorization: Bearer <access token>` (or `DPoP <access token>` for DPoP-bound tokens),
/// marked sensitive. RFC 6750 `b64token` only: anything else could inject headers.
pub(super) fn authorization_header(tokens: &TokenSet) -> Result<HeaderValue, Error> {
    let secret = tokens.access_token().secret();
    if !is_b64token(secret) {
        return Err(Error::InvalidAccessToken);
    }
    let scheme = if tokens.is_dpop_bound() {
        if cfg!(not(feature = "dpop")) {
            return Err(Error::DpopUnavailable);
        }
        "DPoP"
    } else {
        "Bearer"
    };
    let mut value = HeaderValue::try_from(format!("{scheme} {secret}"))
        .map_err(|_| Error::InvalidAccessToken)?;
    value.set_sensitive(true);
    Ok(value)
}

/// A key's published token, sharing the allocation of the state that published it (one
/// allocation per token, however many requests hold it).
#[derive(Debug, Clone)]
pub(crate) struct PublishedToken(Arc<KeyState>);

impl PublishedToken {
    /// `state`'s token, if it holds one.
    pub(super) fn from_state(state: Arc<KeyState>) -> Option<Self> {
        matches!(*state, KeyState::Active(_)).then_some(Self(state))
    }
}

impl std::ops::Deref for PublishedToken {
    type Target = ActiveToken;

    fn deref(&self) -> &ActiveToken {
        match &*self.0 {
            KeyState::Active(token) => token,
            // Made only from states checked to be active, and a published state never changes.
            _ => unreachable!("a published token's state is active"),
        }
    }
}

/// What a key's callers see.
// The token is inline on purpose: a state is allocated once per change behind an `Arc`, and
// every request reads the token; a box would add a pointer hop to each read.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum KeyState {
    /// Not read from the store yet.
    Unloaded,
    /// Tokens in use.
    Active(ActiveToken),
    /// Nothing usable: callers fail fast until it is time to look at the store again.
    /// (Boxed: every key's state is allocated with room for its largest variant.)
    Unusable(Box<Unusable>),
}

#[derive(Debug)]
pub(super) struct Unusable {
    /// What is held: a record that the grant ended, or nothing.
    pub(super) record: Option<TokenRecord>,
    /// What callers get.
    pub(super) error: Error,
    /// Since when; the store is looked at again [`RECHECK_AFTER`](crate::policy::RECHECK_AFTER)
    /// later.
    pub(super) since: Instant,
}

/// Refreshes of a key held back after a failure.
#[derive(Debug)]
pub(super) struct HeldBack {
    pub(super) until: Instant,
    /// The un-jittered pause, which the next failure doubles.
    pub(super) pause: Duration,
    /// The failure, for callers arriving while refreshes are held back.
    pub(super) error: Error,
}

/// What only the key's writer reads and writes.
#[derive(Debug, Default)]
pub(super) struct Book {
    unsaved: Option<Unsaved>,
    held_back: Option<Box<HeldBack>>,
    cooldown_until: Option<Instant>,
    /// A background task is retrying a failed save.
    retrying: bool,
}

/// One key: its published state, its writer lock and its flight.
// In declaration order (`repr(C)`): the two fields a request reads and writes (the state and
// the last use) come first, so that they share one cache line of the slot.
#[repr(C)]
pub(super) struct KeySlot {
    state: ArcSwap<KeyState>,
    /// When the key was last asked for, in seconds since the Unix epoch (coarse on purpose:
    /// a request writes it at most once a second).
    last_used: AtomicU64,
    pub(super) key: TokenKey,
    /// The writer lock: serializes everything that changes this key in this process (the
    /// store's lock does the same across processes).
    book: tokio::sync::Mutex<Book>,
    /// The refresh that concurrent callers join.
    pub(super) flight: Mutex<Option<Flight>>,
    /// Until when refreshes are held back after a failure, readable without the writer lock:
    /// a still-valid token is then used without starting a run.
    held_back_until: Mutex<Option<Instant>>,
}

impl KeySlot {
    pub(super) fn new(key: TokenKey) -> Self {
        Self {
            key,
            state: ArcSwap::from_pointee(KeyState::Unloaded),
            book: tokio::sync::Mutex::new(Book::default()),
            flight: Mutex::new(None),
            held_back_until: Mutex::new(None),
            last_used: AtomicU64::new(unix_secs(SystemTime::now())),
        }
    }

    /// Records a use at `now`. The slot's cache line is written only when the second changes.
    pub(super) fn touch(&self, now: SystemTime) {
        let now = unix_secs(now);
        if self.last_used.load(Ordering::Relaxed) != now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    /// When the key was last asked for (Unix seconds).
    pub(super) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// Whether forgetting this slot loses nothing: no run holds or waits for it (the caller
    /// holds the only reference, under the key map's write lock, so none can start), no
    /// rotation waits to be saved, no backoff or cooldown is running. A later request for the
    /// key makes a new slot, which reads the store again before using anything.
    pub(super) fn is_evictable(self: &Arc<Self>, now: Instant) -> bool {
        if Arc::strong_count(self) != 1 || lock(&self.flight).is_some() {
            return false;
        }
        let Ok(book) = self.book.try_lock() else {
            return false;
        };
        // A backoff or cooldown that is over is kept by nothing: it stays in the book until
        // the key's next run, which an idle key never has.
        book.unsaved.is_none()
            && !book.retrying
            && book
                .held_back
                .as_ref()
                .is_none_or(|held_back| held_back.until <= now)
            && book.cooldown_until.is_none_or(|until| until <= now)
    }

    /// Until when refreshes are held back, if they are.
    pub(super) fn held_back_until(&self) -> Option<Instant> {
        *lock(&self.held_back_until)
    }

    /// What callers see now.
    pub(super) fn state(&self) -> arc_swap::Guard<Arc<KeyState>> {
        self.state.load()
    }

    /// The published token, if there is one.
    pub(super) fn token(&self) -> Option<PublishedToken> {
        PublishedToken::from_state(self.state.load_full())
    }

    pub(super) fn flight(&self) -> MutexGuard<'_, Option<Flight>> {
        lock(&self.flight)
    }

    /// Takes the writer lock.
    pub(super) async fn writer(&self) -> KeyWriter<'_> {
        KeyWriter {
            slot: self,
            book: self.book.lock().await,
        }
    }
}

/// The key's writer: the only code that changes what callers see and the key's bookkeeping.
pub(super) struct KeyWriter<'a> {
    slot: &'a KeySlot,
    book: tokio::sync::MutexGuard<'a, Book>,
}

impl KeyWriter<'_> {
    pub(super) fn key(&self) -> &TokenKey {
        &self.slot.key
    }

    /// The record this process holds.
    pub(super) fn held(&self) -> Option<TokenRecord> {
        match &**self.slot.state.load() {
            KeyState::Unloaded => None,
            KeyState::Active(token) => Some(TokenRecord::Tokens(token.tokens.clone())),
            KeyState::Unusable(unusable) => unusable.record.clone(),
        }
    }

    /// The published token, if there is one.
    pub(super) fn token(&self) -> Option<PublishedToken> {
        self.slot.token()
    }

    /// The error callers get while nothing usable is held.
    pub(super) fn unusable_error(&self) -> Option<Error> {
        match &**self.slot.state.load() {
            KeyState::Unusable(unusable) => Some(unusable.error.clone()),
            _ => None,
        }
    }

    /// Holds `record` (`unsaved`: the store has not taken it yet) and publishes it. A record
    /// without usable tokens is published with `cause`, or the error that says why.
    pub(super) fn hold(
        &mut self,
        record: Option<TokenRecord>,
        unsaved: Option<Unsaved>,
        leeway: Duration,
        cause: Option<Error>,
    ) -> Result<(), Error> {
        let state = match record {
            Some(TokenRecord::Tokens(tokens)) => {
                KeyState::Active(ActiveToken::new(tokens, leeway)?)
            }
            record => {
                let error = cause.unwrap_or_else(|| self.reauthorization(record.as_ref()));
                KeyState::Unusable(Box::new(Unusable {
                    record,
                    error,
                    since: Instant::now(),
                }))
            }
        };
        self.slot.state.store(Arc::new(state));
        self.book.unsaved = unsaved;
        Ok(())
    }

    /// Publishes `error` for a key that holds nothing (callers fail fast until the recheck).
    pub(super) fn refuse(&mut self, error: Error) {
        if matches!(
            **self.slot.state.load(),
            KeyState::Unloaded | KeyState::Unusable(_)
        ) {
            let record = self.held();
            let unsaved = self.book.unsaved.take();
            let _ = self.hold(record, unsaved, Duration::ZERO, Some(error));
        }
    }

    fn reauthorization(&self, record: Option<&TokenRecord>) -> Error {
        let reason = match record {
            Some(TokenRecord::Ended(ended)) => ReauthorizationReason::Ended(ended.reason()),
            _ => ReauthorizationReason::NoTokens,
        };
        Error::ReauthorizationRequired {
            key: self.slot.key.clone(),
            reason,
        }
    }

    pub(super) fn unsaved(&self) -> Option<&Unsaved> {
        self.book.unsaved.as_ref()
    }

    /// The store took the held record.
    pub(super) fn mark_saved(&mut self) {
        self.book.unsaved = None;
    }

    pub(super) fn held_back(&self) -> Option<&HeldBack> {
        self.book.held_back.as_deref()
    }

    pub(super) fn hold_back(&mut self, held_back: Option<HeldBack>) {
        *lock(&self.slot.held_back_until) = held_back.as_ref().map(|held_back| held_back.until);
        self.book.held_back = held_back.map(Box::new);
    }

    pub(super) fn cooldown_until(&self) -> Option<Instant> {
        self.book.cooldown_until
    }

    pub(super) fn start_cooldown(&mut self, until: Instant) {
        self.book.cooldown_until = Some(until);
    }

    /// Marks a background save retry as running; `false` if one already is.
    pub(super) fn start_retrying(&mut self) -> bool {
        !std::mem::replace(&mut self.book.retrying, true)
    }

    pub(super) fn stop_retrying(&mut self) {
        self.book.retrying = false;
    }
}

/// `time` in whole seconds since the Unix epoch.
pub(super) fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Critical sections behind these std mutexes only swap small values; a poisoned lock still
/// holds a consistent one.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key whose refresh failed and whose user went away must not stay for ever: once its
    /// backoff is over, nothing is lost by forgetting it.
    #[tokio::test]
    async fn a_key_is_kept_while_held_back_and_can_be_forgotten_after() {
        let slot = Arc::new(KeySlot::new(TokenKey::new("failed")));
        let now = Instant::now();
        slot.writer().await.hold_back(Some(HeldBack {
            until: now + Duration::from_secs(1),
            pause: Duration::from_secs(1),
            error: Error::RefreshAborted,
        }));
        assert!(!slot.is_evictable(now), "a running backoff is kept");
        assert!(
            slot.is_evictable(now + Duration::from_secs(2)),
            "a backoff that is over keeps nothing worth keeping"
        );
    }
}
