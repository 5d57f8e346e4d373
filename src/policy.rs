//! The refresh policy: every decision about one key's tokens, in one place.
//!
//! Everything here is a pure function of what the caller wants, what this process holds, what
//! the store holds and the time it is given: no I/O, no locks, no clock reads. The flight
//! runner (`manager/runner.rs`) takes the key's locks, reads the store, asks [`decide`] for the
//! next [`Step`], carries it out, and asks again until a step ends the flight. The states and
//! transitions are drawn in `docs/DESIGN.md`; the tables in `policy/tests.rs` are the spec.
//!
//! Three promises rest on these rules:
//! - **A consumed refresh token is never sent again.** A record of ours that the store has not
//!   taken yet replaces the record it was made from, never the other way round; a dead grant
//!   is recorded as [`Ended`](crate::Ended), never forgotten; a flight calls the token endpoint
//!   at most once, and only while it holds the store's lock.
//! - **Newer tokens are never overwritten by older ones.** Every save is conditional on the
//!   revision it replaces; a conflict hands the decision back here with what the store holds.
//! - **A refresh token goes only to the server that issued it.** A stored record bound to
//!   another server, or (unless allowed) to none, is never adopted, refreshed, revoked or
//!   replaced by a refresh.

// Public only to the crate, and to `tests/model.rs` through `__fuzz` (feature `fuzzing`).
#![cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))]

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::backoff::{jittered, Backoff};
use crate::error::{Error, TransientError};
use crate::record::{EndReason, TokenRecord};
use crate::revision::Revision;
use crate::secret::RefreshToken;
use crate::token::{TokenResponse, TokenSet};

/// How long a key that needs a new login waits before looking at the store again (a login
/// may have happened in another process).
pub(crate) const RECHECK_AFTER: Duration = Duration::from_secs(10);
/// Pauses after a transient token-endpoint failure (5xx, 429, timeout, connection refused).
pub(crate) const TRANSIENT_BACKOFF: Backoff =
    Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
/// Pauses after a failure that retrying at once cannot fix (a rejected client, an unusable
/// answer): the configuration or the server has to change first.
pub(crate) const PERMANENT_BACKOFF: Backoff =
    Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
/// The longest a request waits for a backed-off refresh to be tried again before failing.
pub(crate) const MAX_BACKOFF_WAIT: Duration = Duration::from_secs(5);

/// What the caller wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// A token to send: the held one unless a refresh is due.
    Send,
    /// The resource server rejected the token the caller saw: another one, refreshing only if
    /// the rejected one is still the newest.
    Replace,
    /// `set_tokens`: tokens from a new login replace whatever is stored.
    Set,
    /// `clear`: the key is logged out and needs a new login.
    Clear,
    /// `revoke`: the newest tokens are revoked at the server, then the key is logged out.
    Revoke,
    /// A background save retry: bring the store up to date, nothing else.
    Sync,
}

/// A record this process holds that the store has not taken yet (its save failed). It
/// replaces `parent`, what the store held when it was made (`None`: nothing), and any stored
/// record whose refresh token it consumed on the way (such a record can appear when another
/// process starts from the same initial tokens while our saves fail).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsaved {
    /// What the store held when the record was made.
    pub parent: Option<Revision>,
    /// The refresh tokens this process consumed since the store last took one of its records.
    pub consumed: Vec<RefreshToken>,
}

impl Unsaved {
    /// The bookkeeping of a record that failed to save over `parent`, made by a call that
    /// consumed `spent` (if any), after `previous` (the unsaved record it was made from).
    pub fn after(
        previous: Option<&Unsaved>,
        parent: Option<&TokenRecord>,
        spent: Option<&RefreshToken>,
    ) -> Self {
        let mut consumed = previous
            .map(|previous| previous.consumed.clone())
            .unwrap_or_default();
        consumed.extend(spent.cloned());
        Self {
            parent: parent.map(|parent| parent.revision().clone()),
            consumed,
        }
    }

    /// Whether the store holding `stored` still holds what our record replaces.
    fn replaces(&self, stored: Option<&TokenRecord>) -> bool {
        let spent = stored
            .and_then(TokenRecord::tokens)
            .and_then(TokenSet::refresh_token)
            .is_some_and(|refresh| self.consumed.contains(refresh));
        spent || self.parent.as_ref() == stored.map(TokenRecord::revision)
    }
}

/// Everything a decision depends on.
#[derive(Debug)]
pub struct Facts<'a> {
    /// What the caller wants.
    pub intent: Intent,
    /// The revision of the token the caller sent (or saw).
    pub seen: Option<&'a Revision>,
    /// What this process holds and publishes for the key.
    pub held: Option<&'a TokenRecord>,
    /// Set when `held` is not in the store yet.
    pub unsaved: Option<&'a Unsaved>,
    /// What the store holds: read under its lock, or known from this flight's own saves.
    pub stored: Option<&'a TokenRecord>,
    /// A re-save of `held` failed in this flight: act on `held` without waiting for the store.
    pub store_behind: bool,
    /// Whether the store's lock is still ours (a lease can expire while held).
    pub lock_held: bool,
    /// This flight already called the token endpoint.
    pub called: bool,
    /// Initial tokens are configured for this key and this process never held any record.
    pub initial_available: bool,
    /// Until when refreshes of this key are held back after failures.
    pub backoff_until: Option<Instant>,
    /// Until when a rejection of the newest token does not cause another refresh.
    pub cooldown_until: Option<Instant>,
    /// The time, for the deadlines above.
    pub now: Instant,
    /// The time, for token expiry.
    pub wall_now: SystemTime,
}

/// The settings decisions depend on.
#[derive(Debug, Clone)]
pub struct Rules {
    /// How long before expiry a token is refreshed (at most half its lifetime).
    pub leeway: Duration,
    /// The server and client this middleware's records are bound to (`None`: not known).
    pub binding: Option<Arc<str>>,
    /// Whether records bound to no server are used.
    pub accept_unbound: bool,
    /// Whether the grant obtains tokens without any (client credentials).
    pub can_mint: bool,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Done: answer with the held tokens.
    Use,
    /// Done: the caller's change is in place.
    Done,
    /// Done: the caller gets this refusal.
    Fail(Refusal),
    /// Hold what the store holds (publish it), then decide again.
    Adopt,
    /// Save the held record over its parent, then decide again.
    Resave,
    /// Call the token endpoint with the held refresh token.
    Refresh {
        /// The refresh answers a rejection: the next rejection of its result is not answered
        /// with another one for a while.
        cooldown: bool,
    },
    /// Obtain tokens without any (client credentials).
    Mint,
    /// Save the initial tokens (the store never held a record for the key), then decide again.
    Seed,
    /// Save the caller's new tokens over whatever is stored.
    Replace,
    /// Revoke the held tokens at the server, then end the grant.
    Revoke,
    /// Save a record that the grant ended over what is stored, and hold it.
    End(EndReason),
}

impl Step {
    /// Whether the step calls the authorization server, which only the holder of the store's
    /// lock may do.
    pub fn calls_authorization_server(&self) -> bool {
        matches!(self, Step::Refresh { .. } | Step::Mint | Step::Revoke)
    }
}

/// Why there is nothing to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing was ever stored for the key.
    NoTokens,
    /// The key's grant ended.
    Ended(EndReason),
    /// The stored record belongs to another server or client.
    Foreign(Arc<str>),
    /// The stored record names no server and unbound records are not accepted.
    Unbound,
    /// Refreshes are held back after a failure, for this long still.
    BackingOff(Duration),
    /// The store's lock was lost: another process may be refreshing.
    LockLost,
}

/// The next step for `facts`.
pub fn decide(facts: &Facts<'_>, rules: &Rules) -> Step {
    match facts.intent {
        // A new login replaces anything, even another server's record under this key.
        Intent::Set => Step::Replace,
        intent => reconcile(facts, rules).unwrap_or_else(|| act(intent, facts, rules)),
    }
}

/// The step for `intent` once held and stored agree.
fn act(intent: Intent, facts: &Facts<'_>, rules: &Rules) -> Step {
    match intent {
        Intent::Send => send(facts, rules),
        Intent::Replace => replace(facts, rules),
        Intent::Set => Step::Replace,
        Intent::Clear => match facts.held {
            Some(TokenRecord::Ended(_)) => Step::Done,
            _ => Step::End(EndReason::LoggedOut),
        },
        Intent::Revoke => match facts.held {
            // Revoked at the server: never use them again.
            Some(TokenRecord::Tokens(_)) if facts.called => Step::End(EndReason::Revoked),
            Some(TokenRecord::Tokens(_)) => call(facts, Step::Revoke),
            Some(TokenRecord::Ended(_)) => Step::Done,
            None => Step::End(EndReason::LoggedOut),
        },
        Intent::Sync => Step::Done,
    }
}

/// Brings what this process holds in line with the store, or says nothing when they agree.
///
/// The store wins, with one exception: a record of ours it has not taken yet, while it still
/// holds that record's parent (or a record whose refresh token ours consumed). Then ours is
/// saved over it, never the other way round (its refresh token is consumed). Anything else in
/// the store was written by someone else since, and is held instead of ours, if it is ours to
/// hold.
fn reconcile(facts: &Facts<'_>, rules: &Rules) -> Option<Step> {
    let stored = facts.stored.map(TokenRecord::revision);
    if facts.held.map(TokenRecord::revision) == stored {
        return None;
    }
    if let Some(unsaved) = facts.unsaved {
        if facts.store_behind {
            return None;
        }
        if unsaved.replaces(facts.stored) {
            return Some(Step::Resave);
        }
    }
    match facts.stored {
        Some(record) => Some(match refusal_to_hold(record, rules) {
            Some(refusal) => Step::Fail(refusal),
            None => Step::Adopt,
        }),
        // Removed by someone else (an operator, an expiry): nothing to hold any more.
        None => Some(Step::Adopt),
    }
}

/// Why `record` is not ours to hold, if it is not.
pub(crate) fn refusal_to_hold(record: &TokenRecord, rules: &Rules) -> Option<Refusal> {
    let ours = rules.binding.as_ref()?;
    match record.issued_for() {
        Some(theirs) if theirs == &**ours => None,
        Some(theirs) => Some(Refusal::Foreign(Arc::from(theirs))),
        None if rules.accept_unbound => None,
        None => Some(Refusal::Unbound),
    }
}

/// `Intent::Send` once held and stored agree.
fn send(facts: &Facts<'_>, rules: &Rules) -> Step {
    match facts.held {
        // A flight calls the token endpoint once: a server whose fresh tokens are due at
        // once is not called in a loop.
        Some(TokenRecord::Tokens(tokens))
            if facts.called || !tokens.is_due(rules.leeway, facts.wall_now) =>
        {
            Step::Use
        }
        Some(TokenRecord::Tokens(_)) => refresh(facts, Step::Refresh { cooldown: false }),
        Some(TokenRecord::Ended(_)) | None if rules.can_mint && !facts.called => {
            refresh(facts, Step::Mint)
        }
        Some(TokenRecord::Ended(ended)) => Step::Fail(Refusal::Ended(ended.reason())),
        None if facts.initial_available => Step::Seed,
        None => Step::Fail(Refusal::NoTokens),
    }
}

/// `Intent::Replace` once held and stored agree.
fn replace(facts: &Facts<'_>, rules: &Rules) -> Step {
    match facts.held {
        // Someone already replaced the rejected token: try the new one.
        Some(TokenRecord::Tokens(tokens)) if Some(tokens.revision()) != facts.seen => Step::Use,
        // Rejected again right after a refresh for a rejection: the resource server takes no
        // token from us, and another refresh would not change that.
        Some(TokenRecord::Tokens(_))
            if facts.called || facts.cooldown_until.is_some_and(|end| facts.now < end) =>
        {
            Step::Use
        }
        Some(TokenRecord::Tokens(_)) => refresh(facts, Step::Refresh { cooldown: true }),
        _ => send(facts, rules),
    }
}

/// `step` (a token request), unless refreshes are held back after a failure.
fn refresh(facts: &Facts<'_>, step: Step) -> Step {
    match facts.backoff_until {
        Some(until) if facts.now < until => Step::Fail(Refusal::BackingOff(until - facts.now)),
        _ => call(facts, step),
    }
}

/// `step` (a call to the authorization server), unless the lock that makes this process the
/// only caller was lost: the new holder may be calling with the same refresh token.
fn call(facts: &Facts<'_>, step: Step) -> Step {
    if facts.lock_held {
        step
    } else {
        Step::Fail(Refusal::LockLost)
    }
}

/// What a token-endpoint answer leads to.
#[derive(Debug)]
pub enum Answer {
    /// New tokens: save them over what is stored, and hold them.
    Tokens(TokenSet),
    /// An unusable answer that rotated the refresh token: keep the new refresh token (save and
    /// hold `kept`, whose access token is marked expired), then fail like `Failed`.
    KeepRotation {
        /// The held set with the new refresh token.
        kept: TokenSet,
        /// What was wrong with the answer.
        error: Error,
        /// The un-jittered pause before the next refresh.
        pause: Duration,
    },
    /// The grant is dead (`invalid_grant`): look at the store once more, then
    /// [`after_invalid_grant`].
    InvalidGrant(Error),
    /// A failure: hold refreshes back, then fail.
    Failed {
        /// What failed.
        error: Error,
        /// The un-jittered pause before the next refresh (the next failure doubles it).
        pause: Duration,
    },
}

/// Context of a token-endpoint answer.
#[derive(Debug)]
pub struct Call<'a> {
    /// The tokens refreshed (`None`: minted).
    pub base: Option<&'a TokenSet>,
    /// What the store held, for the generation of minted tokens.
    pub stored: Option<&'a TokenRecord>,
    /// When the request was sent: lifetimes count from it.
    pub sent_at: SystemTime,
    /// The un-jittered pause of the previous failure, if refreshes are backing off.
    pub previous_pause: Option<Duration>,
}

/// What the token endpoint's `result` leads to.
pub fn after_call(call: &Call<'_>, result: Result<TokenResponse, Error>, rules: &Rules) -> Answer {
    let response = match result {
        Ok(response) => response,
        Err(error) if error.is_reauthorization_required() => return Answer::InvalidGrant(error),
        Err(error) => return failed(call, error),
    };
    match (response.check(), call.base, &response.refresh_token) {
        (Ok(()), Some(base), _) => Answer::Tokens(base.next(response, call.sent_at)),
        (Ok(()), None, _) => {
            let generation = call
                .stored
                .map_or(0, TokenRecord::generation)
                .saturating_add(1);
            Answer::Tokens(
                TokenSet::from_response(response, call.sent_at, generation)
                    .bound_to(rules.binding.clone()),
            )
        }
        (Err(problem), Some(base), Some(rotated)) => {
            let error = Error::InvalidResponse(problem);
            Answer::KeepRotation {
                kept: base.with_rotated_refresh_token(rotated.clone()),
                pause: pause_after(call, &error),
                error,
            }
        }
        (Err(problem), _, _) => failed(call, Error::InvalidResponse(problem)),
    }
}

fn failed(call: &Call<'_>, error: Error) -> Answer {
    Answer::Failed {
        pause: pause_after(call, &error),
        error,
    }
}

/// The un-jittered pause after `error`: transient failures start short, the others long.
fn pause_after(call: &Call<'_>, error: &Error) -> Duration {
    let schedule = if error.is_transient() {
        TRANSIENT_BACKOFF
    } else {
        PERMANENT_BACKOFF
    };
    schedule.next(call.previous_pause)
}

/// How long refreshes are held back after a failure whose un-jittered pause is `pause`: the
/// pause, shortened by up to half at random, but never shorter than the server's
/// `Retry-After`.
pub(crate) fn hold_back(pause: Duration, error: &Error, jitter: f64) -> Duration {
    let asked = match error {
        Error::Transient(transient) => transient.retry_after(),
        _ => None,
    };
    jittered(pause, jitter).max(asked.unwrap_or_default())
}

/// After `invalid_grant` and a fresh look at the store: hold what someone else stored since
/// (another process rotated, or a login happened), or else record that the grant ended.
pub fn after_invalid_grant(facts: &Facts<'_>, rules: &Rules) -> Step {
    match (reconcile(facts, rules), facts.stored) {
        (Some(step @ (Step::Adopt | Step::Fail(_))), Some(_)) => step,
        _ => Step::End(EndReason::InvalidGrant),
    }
}

/// Whether a caller whose proactive refresh failed with `error` may still send `current`: a
/// passing failure does not stop a token that has not expired.
pub(crate) fn send_anyway(current: &TokenSet, error: &Error, now: SystemTime) -> bool {
    !error.is_reauthorization_required() && !current.is_expired_at(now)
}

/// Whether a due but unexpired `current` is sent without even trying a refresh: refreshes are
/// held back after a failure until `held_back_until`.
pub(crate) fn use_while_held_back(
    current: &TokenSet,
    held_back_until: Option<Instant>,
    now: Instant,
    wall_now: SystemTime,
) -> bool {
    held_back_until.is_some_and(|until| now < until) && !current.is_expired_at(wall_now)
}

/// How long a caller waits for the next attempt of a backed-off refresh, if it waits at all.
pub(crate) fn wait_for_retry(error: &Error) -> Option<Duration> {
    match error {
        Error::Transient(TransientError::BackingOff { retry_in })
            if *retry_in <= MAX_BACKOFF_WAIT =>
        {
            Some(*retry_in)
        }
        _ => None,
    }
}

/// Whether a key that needed a new login since `since` may look at the store again.
pub(crate) fn recheck_due(since: Instant, now: Instant) -> bool {
    now.duration_since(since) >= RECHECK_AFTER
}

/// The generation of a record that replaces `held` and `stored`.
pub fn next_generation(held: Option<&TokenRecord>, stored: Option<&TokenRecord>) -> u64 {
    held.map(TokenRecord::generation)
        .max(stored.map(TokenRecord::generation))
        .unwrap_or(0)
        .saturating_add(1)
}
