//! The policy as tables: one row per situation, read as the spec.
//!
//! Records used in the rows: `fresh` and `due` are this middleware's tokens (not due / due for
//! a refresh), `newer` is another set of ours written since, `ended` our record that the grant
//! ended, `foreign` a set bound to another server, `unbound` a set bound to none.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::*;
use crate::error::{ErrorCode, OAuthError, ReauthorizationReason, TransientError};
use crate::key::TokenKey;
use crate::record::Ended;
use crate::secret::{AccessToken, RefreshToken};

const OURS: &str = "https://auth.example/token ours";

fn tokens(name: &str, expires_at: SystemTime, issued_for: Option<&str>) -> TokenRecord {
    let set = TokenSet::new(AccessToken::new(format!("at-{name}")))
        .with_refresh_token(RefreshToken::new(format!("rt-{name}")))
        .with_expires_at(expires_at)
        .bound_to(issued_for.map(Arc::from));
    TokenRecord::Tokens(set)
}

struct Records {
    fresh: TokenRecord,
    due: TokenRecord,
    newer: TokenRecord,
    ended: TokenRecord,
    foreign: TokenRecord,
    unbound: TokenRecord,
}

fn records() -> Records {
    let later = SystemTime::now() + Duration::from_secs(3600);
    let past = UNIX_EPOCH + Duration::from_secs(1);
    Records {
        fresh: tokens("fresh", later, Some(OURS)),
        due: tokens("due", past, Some(OURS)),
        newer: tokens("newer", later, Some(OURS)),
        ended: TokenRecord::Ended(Ended::new(
            EndReason::LoggedOut,
            SystemTime::now(),
            3,
            Some(Arc::from(OURS)),
        )),
        foreign: tokens("foreign", later, Some("https://other.example/token them")),
        unbound: tokens("unbound", later, None),
    }
}

fn rules() -> Rules {
    Rules {
        leeway: Duration::from_secs(60),
        binding: Some(Arc::from(OURS)),
        accept_unbound: false,
        can_mint: false,
    }
}

/// One situation; the defaults are "nothing special".
#[derive(Clone)]
struct Case<'a> {
    intent: Intent,
    seen: Option<&'a TokenRecord>,
    held: Option<&'a TokenRecord>,
    /// `Some(parent)`: held is unsaved and replaces `parent` (`None`: nothing).
    unsaved: Option<Option<&'a TokenRecord>>,
    /// Refresh tokens consumed on the way to the unsaved held record.
    consumed: Vec<RefreshToken>,
    stored: Option<&'a TokenRecord>,
    store_behind: bool,
    lock_lost: bool,
    called: bool,
    initial: bool,
    backing_off: bool,
    cooling_down: bool,
    rules: Rules,
}

fn case(intent: Intent) -> Case<'static> {
    Case {
        intent,
        seen: None,
        held: None,
        unsaved: None,
        consumed: Vec::new(),
        stored: None,
        store_behind: false,
        lock_lost: false,
        called: false,
        initial: false,
        backing_off: false,
        cooling_down: false,
        rules: rules(),
    }
}

impl<'a> Case<'a> {
    fn holding(mut self, held: &'a TokenRecord) -> Self {
        self.held = Some(held);
        self
    }
    fn storing(mut self, stored: &'a TokenRecord) -> Self {
        self.stored = Some(stored);
        self
    }
    fn in_sync(self, record: &'a TokenRecord) -> Self {
        self.holding(record).storing(record)
    }
    fn seeing(mut self, seen: &'a TokenRecord) -> Self {
        self.seen = Some(seen);
        self
    }
    fn unsaved_over(mut self, parent: Option<&'a TokenRecord>) -> Self {
        self.unsaved = Some(parent);
        self
    }
    fn having_consumed(mut self, record: &TokenRecord) -> Self {
        let refresh = record.tokens().and_then(TokenSet::refresh_token).unwrap();
        self.consumed.push(refresh.clone());
        self
    }
    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }

    fn run<T>(&self, decide: impl FnOnce(&Facts<'_>, &Rules) -> T) -> T {
        let now = Instant::now();
        let unsaved = self.unsaved.map(|parent| Unsaved {
            parent: parent.map(|parent| parent.revision().clone()),
            consumed: self.consumed.clone(),
        });
        let facts = Facts {
            intent: self.intent,
            seen: self.seen.map(TokenRecord::revision),
            held: self.held,
            unsaved: unsaved.as_ref(),
            stored: self.stored,
            store_behind: self.store_behind,
            lock_held: !self.lock_lost,
            called: self.called,
            initial_available: self.initial,
            backoff_until: self.backing_off.then(|| now + Duration::from_secs(2)),
            cooldown_until: self.cooling_down.then(|| now + Duration::from_secs(2)),
            now,
            wall_now: SystemTime::now(),
        };
        decide(&facts, &self.rules)
    }
}

fn check(rows: Vec<(&str, Case<'_>, Step)>, decide: fn(&Facts<'_>, &Rules) -> Step) {
    for (name, case, expected) in rows {
        let step = case.run(decide);
        let step = match step {
            // The remaining time is not part of the spec.
            Step::Fail(Refusal::BackingOff(_)) => Step::Fail(Refusal::BackingOff(Duration::ZERO)),
            step => step,
        };
        assert_eq!(step, expected, "{name}");
    }
}

const BACKING_OFF: Step = Step::Fail(Refusal::BackingOff(Duration::ZERO));
const REFRESH: Step = Step::Refresh { cooldown: false };

#[test]
fn sending_a_request() {
    let r = records();
    let foreign = Refusal::Foreign(Arc::from("https://other.example/token them"));
    check(
        vec![
            (
                "nothing anywhere",
                case(Intent::Send),
                Step::Fail(Refusal::NoTokens),
            ),
            (
                "first run with initial tokens",
                case(Intent::Send).with(|c| c.initial = true),
                Step::Seed,
            ),
            (
                "nothing, but the grant mints",
                case(Intent::Send).with(|c| c.rules.can_mint = true),
                Step::Mint,
            ),
            (
                "first load",
                case(Intent::Send).storing(&r.fresh),
                Step::Adopt,
            ),
            (
                "in sync, not due",
                case(Intent::Send).in_sync(&r.fresh),
                Step::Use,
            ),
            ("in sync, due", case(Intent::Send).in_sync(&r.due), REFRESH),
            (
                "due while backing off",
                case(Intent::Send)
                    .in_sync(&r.due)
                    .with(|c| c.backing_off = true),
                BACKING_OFF,
            ),
            (
                "due, but the lock was lost",
                case(Intent::Send)
                    .in_sync(&r.due)
                    .with(|c| c.lock_lost = true),
                Step::Fail(Refusal::LockLost),
            ),
            (
                "due after this flight's call",
                case(Intent::Send).in_sync(&r.due).with(|c| c.called = true),
                Step::Use,
            ),
            (
                "another process refreshed",
                case(Intent::Send).holding(&r.due).storing(&r.newer),
                Step::Adopt,
            ),
            (
                "ours unsaved, parent stored",
                case(Intent::Send)
                    .holding(&r.due)
                    .unsaved_over(Some(&r.fresh))
                    .storing(&r.fresh),
                Step::Resave,
            ),
            (
                "ours unsaved over nothing, nothing stored",
                case(Intent::Send).holding(&r.fresh).unsaved_over(None),
                Step::Resave,
            ),
            (
                "ours unsaved, someone else wrote since",
                case(Intent::Send)
                    .holding(&r.due)
                    .unsaved_over(Some(&r.fresh))
                    .storing(&r.newer),
                Step::Adopt,
            ),
            (
                "ours unsaved, stored is one whose token ours consumed",
                case(Intent::Send)
                    .holding(&r.newer)
                    .unsaved_over(None)
                    .having_consumed(&r.due)
                    .storing(&r.due),
                Step::Resave,
            ),
            (
                "ours unsaved, re-save failed",
                case(Intent::Send)
                    .holding(&r.due)
                    .unsaved_over(Some(&r.fresh))
                    .storing(&r.fresh)
                    .with(|c| c.store_behind = true),
                REFRESH,
            ),
            (
                "logged out elsewhere",
                case(Intent::Send).holding(&r.fresh).storing(&r.ended),
                Step::Adopt,
            ),
            (
                "grant ended",
                case(Intent::Send).in_sync(&r.ended),
                Step::Fail(Refusal::Ended(EndReason::LoggedOut)),
            ),
            (
                "grant ended, initial tokens never come back",
                case(Intent::Send)
                    .in_sync(&r.ended)
                    .with(|c| c.initial = true),
                Step::Fail(Refusal::Ended(EndReason::LoggedOut)),
            ),
            (
                "grant ended, the grant mints",
                case(Intent::Send)
                    .in_sync(&r.ended)
                    .with(|c| c.rules.can_mint = true),
                Step::Mint,
            ),
            (
                "record removed by someone else",
                case(Intent::Send).holding(&r.fresh),
                Step::Adopt,
            ),
            (
                "another server's record",
                case(Intent::Send).storing(&r.foreign),
                Step::Fail(foreign.clone()),
            ),
            (
                "another server's record, over ours",
                case(Intent::Send).holding(&r.fresh).storing(&r.foreign),
                Step::Fail(foreign),
            ),
            (
                "an unbound record",
                case(Intent::Send).storing(&r.unbound),
                Step::Fail(Refusal::Unbound),
            ),
            (
                "an unbound record, allowed",
                case(Intent::Send)
                    .storing(&r.unbound)
                    .with(|c| c.rules.accept_unbound = true),
                Step::Adopt,
            ),
            (
                "no binding to check against",
                case(Intent::Send)
                    .storing(&r.foreign)
                    .with(|c| c.rules.binding = None),
                Step::Adopt,
            ),
        ],
        decide,
    );
}

#[test]
fn answering_a_rejection() {
    let r = records();
    check(
        vec![
            (
                "the rejected token is the newest",
                case(Intent::Replace).in_sync(&r.fresh).seeing(&r.fresh),
                Step::Refresh { cooldown: true },
            ),
            (
                "a newer token is held",
                case(Intent::Replace).in_sync(&r.newer).seeing(&r.fresh),
                Step::Use,
            ),
            (
                "a newer token is stored",
                case(Intent::Replace)
                    .holding(&r.fresh)
                    .storing(&r.newer)
                    .seeing(&r.fresh),
                Step::Adopt,
            ),
            (
                "rejected again within the cooldown",
                case(Intent::Replace)
                    .in_sync(&r.fresh)
                    .seeing(&r.fresh)
                    .with(|c| c.cooling_down = true),
                Step::Use,
            ),
            (
                "rejected while backing off",
                case(Intent::Replace)
                    .in_sync(&r.fresh)
                    .seeing(&r.fresh)
                    .with(|c| c.backing_off = true),
                BACKING_OFF,
            ),
            (
                "rejected, lock lost",
                case(Intent::Replace)
                    .in_sync(&r.fresh)
                    .seeing(&r.fresh)
                    .with(|c| c.lock_lost = true),
                Step::Fail(Refusal::LockLost),
            ),
            (
                "after this flight's call",
                case(Intent::Replace)
                    .in_sync(&r.fresh)
                    .seeing(&r.fresh)
                    .with(|c| c.called = true),
                Step::Use,
            ),
            (
                "the grant ended meanwhile",
                case(Intent::Replace).in_sync(&r.ended).seeing(&r.fresh),
                Step::Fail(Refusal::Ended(EndReason::LoggedOut)),
            ),
        ],
        decide,
    );
}

#[test]
fn setting_clearing_revoking_and_syncing() {
    let r = records();
    let foreign = Step::Fail(Refusal::Foreign(Arc::from(
        "https://other.example/token them",
    )));
    check(
        vec![
            (
                "set over anything",
                case(Intent::Set).holding(&r.fresh).storing(&r.foreign),
                Step::Replace,
            ),
            ("set with nothing stored", case(Intent::Set), Step::Replace),
            (
                "clear tokens",
                case(Intent::Clear).in_sync(&r.fresh),
                Step::End(EndReason::LoggedOut),
            ),
            (
                "clear nothing: remembered too",
                case(Intent::Clear),
                Step::End(EndReason::LoggedOut),
            ),
            (
                "clear twice",
                case(Intent::Clear).in_sync(&r.ended),
                Step::Done,
            ),
            (
                "clear another server's record",
                case(Intent::Clear).storing(&r.foreign),
                foreign.clone(),
            ),
            (
                "clear with ours unsaved",
                case(Intent::Clear)
                    .holding(&r.newer)
                    .unsaved_over(Some(&r.fresh))
                    .storing(&r.fresh),
                Step::Resave,
            ),
            (
                "revoke",
                case(Intent::Revoke).in_sync(&r.fresh),
                Step::Revoke,
            ),
            (
                "revoke while backing off",
                case(Intent::Revoke)
                    .in_sync(&r.fresh)
                    .with(|c| c.backing_off = true),
                Step::Revoke,
            ),
            (
                "revoked at the server",
                case(Intent::Revoke)
                    .in_sync(&r.fresh)
                    .with(|c| c.called = true),
                Step::End(EndReason::Revoked),
            ),
            (
                "revoke, lock lost",
                case(Intent::Revoke)
                    .in_sync(&r.fresh)
                    .with(|c| c.lock_lost = true),
                Step::Fail(Refusal::LockLost),
            ),
            (
                "revoke another server's record",
                case(Intent::Revoke).storing(&r.foreign),
                foreign,
            ),
            (
                "revoke an unbound record",
                case(Intent::Revoke).storing(&r.unbound),
                Step::Fail(Refusal::Unbound),
            ),
            (
                "revoke the newest: ours unsaved",
                case(Intent::Revoke)
                    .holding(&r.newer)
                    .unsaved_over(Some(&r.fresh))
                    .storing(&r.fresh),
                Step::Resave,
            ),
            (
                "revoke an ended grant",
                case(Intent::Revoke).in_sync(&r.ended),
                Step::Done,
            ),
            (
                "revoke nothing",
                case(Intent::Revoke),
                Step::End(EndReason::LoggedOut),
            ),
            (
                "sync, in sync",
                case(Intent::Sync).in_sync(&r.fresh),
                Step::Done,
            ),
            (
                "sync, parent stored",
                case(Intent::Sync)
                    .holding(&r.newer)
                    .unsaved_over(Some(&r.fresh))
                    .storing(&r.fresh),
                Step::Resave,
            ),
            (
                "sync, someone else wrote",
                case(Intent::Sync)
                    .holding(&r.newer)
                    .unsaved_over(Some(&r.fresh))
                    .storing(&r.due),
                Step::Adopt,
            ),
        ],
        decide,
    );
}

#[test]
fn after_invalid_grant_and_a_fresh_look_at_the_store() {
    let r = records();
    check(
        vec![
            (
                "nothing newer",
                case(Intent::Send).in_sync(&r.due),
                Step::End(EndReason::InvalidGrant),
            ),
            (
                "another process rotated",
                case(Intent::Send).holding(&r.due).storing(&r.newer),
                Step::Adopt,
            ),
            (
                "a login happened (ended record replaced)",
                case(Intent::Send).holding(&r.ended).storing(&r.fresh),
                Step::Adopt,
            ),
            (
                "another server's record appeared",
                case(Intent::Send).holding(&r.due).storing(&r.foreign),
                Step::Fail(Refusal::Foreign(Arc::from(
                    "https://other.example/token them",
                ))),
            ),
            (
                "ours unsaved, parent stored: the same grant",
                case(Intent::Send)
                    .holding(&r.newer)
                    .unsaved_over(Some(&r.due))
                    .storing(&r.due),
                Step::End(EndReason::InvalidGrant),
            ),
            (
                "the record was removed",
                case(Intent::Send).holding(&r.due),
                Step::End(EndReason::InvalidGrant),
            ),
        ],
        after_invalid_grant,
    );
}

fn base() -> TokenSet {
    TokenSet::new(AccessToken::new("at-1"))
        .with_refresh_token(RefreshToken::new("rt-1"))
        .with_scope("read")
        .bound_to(Some(Arc::from(OURS)))
        .renewed(4)
}

fn answer(
    base: Option<&TokenSet>,
    previous: Option<Duration>,
    result: Result<TokenResponse, Error>,
) -> Answer {
    let stored = TokenRecord::Tokens(base.cloned().unwrap_or_else(super::tests::base));
    let call = Call {
        base,
        stored: Some(&stored),
        sent_at: UNIX_EPOCH + Duration::from_secs(1_000),
        previous_pause: previous,
    };
    after_call(&call, result, &rules())
}

fn response(access: &str, refresh: Option<&str>) -> TokenResponse {
    let response =
        TokenResponse::new(AccessToken::new(access)).with_expires_in(Duration::from_secs(60));
    match refresh {
        Some(refresh) => response.with_refresh_token(RefreshToken::new(refresh)),
        None => response,
    }
}

fn oauth(code: ErrorCode) -> OAuthError {
    OAuthError::new(code, None, http::StatusCode::BAD_REQUEST)
}

#[test]
fn a_usable_answer_makes_the_next_set() {
    let base = base();
    match answer(Some(&base), None, Ok(response("at-2", Some("rt-2")))) {
        Answer::Tokens(next) => {
            assert_eq!(next.refresh_token().unwrap().secret(), "rt-2");
            assert_eq!(next.generation(), 5);
            assert_ne!(next.revision(), base.revision());
            assert_eq!(next.issued_for(), Some(OURS));
            assert_eq!(next.scope(), Some("read"));
        }
        other => panic!("{other:?}"),
    }
    match answer(Some(&base), None, Ok(response("at-2", None))) {
        Answer::Tokens(next) => assert_eq!(next.refresh_token().unwrap().secret(), "rt-1"),
        other => panic!("{other:?}"),
    }
    // Minted: generation follows the stored record, bound to this middleware.
    match answer(None, None, Ok(response("at-2", None))) {
        Answer::Tokens(next) => {
            assert_eq!(next.generation(), 5);
            assert_eq!(next.issued_for(), Some(OURS));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unusable_answer_that_rotated_keeps_the_new_refresh_token() {
    let base = base();
    match answer(
        Some(&base),
        None,
        Ok(response("not a b64token", Some("rt-2"))),
    ) {
        Answer::KeepRotation { kept, error, pause } => {
            assert_eq!(kept.refresh_token().unwrap().secret(), "rt-2");
            assert!(
                kept.is_expired_at(SystemTime::now()),
                "the next request refreshes"
            );
            assert_ne!(kept.revision(), base.revision());
            assert!(matches!(error, Error::InvalidResponse(_)));
            assert_eq!(pause, Duration::from_secs(5));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        answer(Some(&base), None, Ok(response("not a b64token", None))),
        Answer::Failed { .. }
    ));
}

#[test]
fn failures_back_off_by_kind() {
    let base = base();
    let transient = || Err(Error::Transient(TransientError::Timeout));
    let cases: Vec<(Option<Duration>, Result<TokenResponse, Error>, Duration)> = vec![
        (None, transient(), Duration::from_secs(1)),
        (
            Some(Duration::from_secs(1)),
            transient(),
            Duration::from_secs(2),
        ),
        (
            Some(Duration::from_secs(20)),
            transient(),
            Duration::from_secs(30),
        ),
        (
            None,
            Err(Error::ClientRejected(oauth(ErrorCode::InvalidClient))),
            Duration::from_secs(5),
        ),
        (
            Some(Duration::from_secs(200)),
            Err(Error::TokenEndpoint(oauth(ErrorCode::InvalidRequest))),
            Duration::from_secs(300),
        ),
    ];
    for (previous, result, expected) in cases {
        match answer(Some(&base), previous, result) {
            Answer::Failed { pause, .. } => assert_eq!(pause, expected, "{previous:?}"),
            other => panic!("{other:?}"),
        }
    }
    let dead = Error::ReauthorizationRequired {
        key: TokenKey::default(),
        reason: ReauthorizationReason::InvalidGrant(oauth(ErrorCode::InvalidGrant)),
    };
    assert!(matches!(
        answer(Some(&base), None, Err(dead)),
        Answer::InvalidGrant(_)
    ));
}

#[test]
fn the_hold_back_is_jittered_but_honours_retry_after() {
    let pause = Duration::from_secs(4);
    let timeout = Error::Transient(TransientError::Timeout);
    assert_eq!(hold_back(pause, &timeout, 0.0), pause);
    assert_eq!(hold_back(pause, &timeout, 0.5), Duration::from_secs(3));
    let busy = Error::Transient(TransientError::Status {
        status: http::StatusCode::SERVICE_UNAVAILABLE,
        retry_after: Some(Duration::from_secs(20)),
    });
    assert_eq!(hold_back(pause, &busy, 0.5), Duration::from_secs(20));
}

#[test]
fn callers_wait_briefly_for_a_backed_off_refresh_and_keep_valid_tokens() {
    let soon = Error::Transient(TransientError::BackingOff {
        retry_in: Duration::from_secs(2),
    });
    let later = Error::Transient(TransientError::BackingOff {
        retry_in: Duration::from_secs(20),
    });
    assert_eq!(wait_for_retry(&soon), Some(Duration::from_secs(2)));
    assert_eq!(wait_for_retry(&later), None);
    assert_eq!(
        wait_for_retry(&Error::Transient(TransientError::Timeout)),
        None
    );

    let valid = base().with_expires_at(SystemTime::now() + Duration::from_secs(30));
    let expired = base().with_expires_at(UNIX_EPOCH + Duration::from_secs(1));
    assert!(send_anyway(&valid, &later, SystemTime::now()));
    assert!(!send_anyway(&expired, &later, SystemTime::now()));
    let dead = Error::ReauthorizationRequired {
        key: TokenKey::default(),
        reason: ReauthorizationReason::NoTokens,
    };
    assert!(!send_anyway(&valid, &dead, SystemTime::now()));

    // While refreshes are held back, a valid token is sent without even trying.
    let (now, wall) = (Instant::now(), SystemTime::now());
    let later = Some(now + Duration::from_secs(3));
    assert!(use_while_held_back(&valid, later, now, wall));
    assert!(!use_while_held_back(&expired, later, now, wall));
    assert!(!use_while_held_back(&valid, Some(now), now, wall));
    assert!(!use_while_held_back(&valid, None, now, wall));
}

#[test]
fn generations_grow_past_both_sides() {
    let r = records();
    assert_eq!(next_generation(None, None), 1);
    assert_eq!(next_generation(Some(&r.ended), None), 4);
    assert_eq!(next_generation(Some(&r.fresh), Some(&r.ended)), 4);
}

#[test]
fn unsaved_bookkeeping_accumulates_consumed_tokens_until_a_save() {
    let r = records();
    let spent = |record: &TokenRecord| record.tokens().and_then(TokenSet::refresh_token).cloned();
    let first = Unsaved::after(None, Some(&r.fresh), spent(&r.fresh).as_ref());
    assert_eq!(first.parent.as_ref(), Some(r.fresh.revision()));
    let second = Unsaved::after(Some(&first), Some(&r.fresh), spent(&r.due).as_ref());
    assert_eq!(second.consumed.len(), 2);
    assert!(second.replaces(Some(&r.due)));
    assert!(second.replaces(Some(&r.fresh)));
    assert!(!second.replaces(Some(&r.newer)));
    assert!(!Unsaved::after(None, None, None).replaces(Some(&r.newer)));
    assert!(Unsaved::after(None, None, None).replaces(None));
}
