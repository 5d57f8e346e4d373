//! A flight: the one detached task per key that reloads, adopts or refreshes, persists and
//! publishes, while every concurrent caller awaits its shared outcome.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::{lock, ActiveToken, Backoff, Inner, KeySlot, KeyState, PublishedToken, Seen, Unsaved};
use crate::error::{Error, ReauthorizationReason};
use crate::event::{emit, Event};
use crate::key::TokenKey;
use crate::log;
use crate::store::{SaveOutcome, StoreError, StoreErrorKind};
use crate::token::TokenSet;

/// First and longest pause between attempts to save tokens whose save failed.
const SAVE_RETRY_FIRST_DELAY: Duration = Duration::from_millis(500);
const SAVE_RETRY_MAX_DELAY: Duration = Duration::from_secs(30);
/// First and longest pause after a refresh failure that retrying at once cannot fix.
const BACKOFF_FIRST_DELAY: Duration = Duration::from_secs(5);
const BACKOFF_MAX_DELAY: Duration = Duration::from_secs(300);

type Outcome = Result<PublishedToken, Error>;

/// Why a flight was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    /// The key is unloaded, or its token is due: load, adopt or refresh as needed.
    Due,
    /// The resource server rejected the token `seen`: get any other token.
    Rejected,
}

pub(super) struct Flight {
    id: u64,
    trigger: Trigger,
    outcome: Shared<BoxFuture<'static, Outcome>>,
}

/// What happened to a conditional save made under the locks.
enum Persisted {
    /// Written, or kept in memory with a retry scheduled.
    Kept,
    /// Someone wrote the store while we held the lock (an expired lease): theirs is newer.
    Superseded(TokenSet),
    /// Someone cleared the store meanwhile (a logout elsewhere).
    Cleared,
}

impl Inner {
    /// Joins the key's flight, or starts one. `seen` is the token the caller holds.
    pub(super) async fn fly(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        seen: Option<Seen>,
        trigger: Trigger,
    ) -> Outcome {
        // Two rounds at most: a flight we joined may have been started for a weaker reason
        // (a load, a due token) and leave the rejected generation in place.
        let mut last = None;
        for _ in 0..2 {
            let (outcome, answers_us) = {
                let mut flight = slot.flight();
                // Re-check under the flight lock: a flight that just finished published first.
                let state = slot.state.load();
                match &**state {
                    KeyState::Active(token) if !token.is(seen.as_ref()) => {
                        return Ok(PublishedToken(arc_swap::Guard::into_inner(state)))
                    }
                    KeyState::Reauthorize { error, .. } => return Err(Error::clone(error)),
                    _ => {}
                }
                match &*flight {
                    Some(running) => {
                        self.emit(Event::Coalesced {
                            key: slot.key.clone(),
                        });
                        (
                            running.outcome.clone(),
                            running.trigger == trigger || trigger == Trigger::Due,
                        )
                    }
                    None => {
                        let started = self.start_flight(slot, seen.clone(), trigger);
                        let outcome = started.outcome.clone();
                        *flight = Some(started);
                        (outcome, true)
                    }
                }
            };
            let token = outcome.await?;
            if answers_us || !token.is(seen.as_ref()) {
                return Ok(token);
            }
            last = Some(token);
        }
        last.ok_or(Error::RefreshAborted)
    }

    fn start_flight(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        seen: Option<Seen>,
        trigger: Trigger,
    ) -> Flight {
        let id = self.next_flight_id.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(self);
        let task_slot = Arc::clone(slot);
        let task = tokio::spawn(log::in_flight_span(
            async move {
                let _clear = ClearFlight {
                    slot: Arc::clone(&task_slot),
                    id,
                };
                inner.run_flight(&task_slot, seen, trigger).await
            },
            &slot.key,
            &trigger,
        ));
        let outcome = async move { task.await.unwrap_or(Err(Error::RefreshAborted)) }
            .boxed()
            .shared();
        Flight {
            id,
            trigger,
            outcome,
        }
    }

    /// The body of a flight, under the key's writer lock and the store's lock.
    async fn run_flight(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        seen: Option<Seen>,
        trigger: Trigger,
    ) -> Outcome {
        let key = &slot.key;
        let waiting = Instant::now();
        let _writer = slot.writer.lock().await;
        let _lock = self.store.lock(key).await.map_err(Error::Store)?;
        self.emit(Event::LockAcquired {
            key: key.clone(),
            waited: waiting.elapsed(),
        });
        let stored = self.store.load(key).await.map_err(Error::Store)?;
        let memory = slot.token();
        let unsaved = memory
            .as_ref()
            .and_then(|memory| slot.unsaved(memory.generation()));
        // What the store holds once this flight's saves are done: the parent of a refresh.
        let mut parent = stored.clone();

        let base = match (stored, memory) {
            // Same generation *and* same tokens: a logout and new login elsewhere restarts
            // generations, so a number alone does not identify a token set.
            (Some(stored), Some(memory)) if stored == memory.tokens => memory,
            // Our last save failed and the store still holds what our tokens replaced: save
            // them again first. (Anything else there was written by someone else since, and
            // wins below.)
            (stored, Some(memory)) if unsaved.is_some_and(|unsaved| unsaved.parent == stored) => {
                match self.persist(slot, &memory, stored.as_ref()).await {
                    Persisted::Kept => {
                        if slot.unsaved(memory.generation()).is_none() {
                            parent = Some(memory.tokens.clone());
                        }
                        memory
                    }
                    Persisted::Superseded(newer) => {
                        parent = Some(newer.clone());
                        self.adopt(slot, newer)?
                    }
                    Persisted::Cleared => {
                        return Err(self.reauthorize(slot, ReauthorizationReason::NoTokens))
                    }
                }
            }
            // Another process refreshed, or the user logged in again elsewhere: the store
            // holds the tokens to use.
            (Some(stored), _) => {
                let adopted = self.adopt(slot, stored)?;
                let still_good =
                    !adopted.is(seen.as_ref()) && !adopted.refresh_due(SystemTime::now());
                if still_good {
                    return Ok(adopted);
                }
                adopted
            }
            // Nothing usable stored, but the grant can mint tokens (client credentials).
            (None, _) if self.refresher.obtains_without_tokens() => {
                still_held(&_lock)?;
                return self.refresh(slot, None, None).await;
            }
            // Our tokens were persisted and the record is gone: logged out elsewhere, or the
            // grant died in another process.
            (None, Some(_)) => {
                return Err(self.reauthorize(slot, ReauthorizationReason::NoTokens));
            }
            (None, None) => match self.initial_tokens(key) {
                Some(initial) => {
                    let initial = slot.publish(ActiveToken::new(initial, self.config.leeway)?);
                    match self.persist(slot, &initial, None).await {
                        Persisted::Kept => {}
                        Persisted::Superseded(newer) => return self.adopt(slot, newer),
                        Persisted::Cleared => {
                            return Err(self.reauthorize(slot, ReauthorizationReason::NoTokens))
                        }
                    }
                    if slot.unsaved(initial.generation()).is_none() {
                        parent = Some(initial.tokens.clone());
                    }
                    if trigger == Trigger::Due && !initial.refresh_due(SystemTime::now()) {
                        return Ok(initial);
                    }
                    initial
                }
                None => return Err(self.reauthorize(slot, ReauthorizationReason::NoTokens)),
            },
        };
        let needs_refresh = match trigger {
            // D10: a token that replaced a rejected one less than the cooldown ago and is
            // rejected again means the resource server takes no token; do not refresh. (The
            // store was re-read above, so another process's newer token is still adopted.)
            Trigger::Rejected => base.is(seen.as_ref()) && !self.in_rejection_cooldown(slot),
            Trigger::Due => base.refresh_due(SystemTime::now()),
        };
        if !needs_refresh {
            return Ok(base);
        }
        if let Some(backoff) = lock(&slot.backoff)
            .as_ref()
            .filter(|backoff| Instant::now() < backoff.until)
        {
            return Err(backoff.error.clone());
        }
        still_held(&_lock)?;
        self.refresh(slot, Some(&base), parent).await
    }

    /// Calls the token endpoint, persists, publishes. `stored` is what the store holds (read
    /// under the lock).
    async fn refresh(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        base: Option<&ActiveToken>,
        stored: Option<TokenSet>,
    ) -> Outcome {
        let key = &slot.key;
        let sent_at = SystemTime::now();
        let started = Instant::now();
        let current = base.map(|base| &base.tokens);
        self.emit(Event::RefreshStarted {
            key: key.clone(),
            generation: current.map(TokenSet::generation),
        });
        let response = match self.refresher.refresh(key, current).await {
            Ok(response) => response,
            Err(error) => {
                return self
                    .refresh_failed(slot, base, stored.as_ref(), error)
                    .await
            }
        };
        *lock(&slot.backoff) = None;
        let rotated = response.refresh_token.is_some();
        let next = match current {
            Some(current) => current.next(response, sent_at),
            None => {
                let generation = stored.as_ref().map_or(0, TokenSet::generation);
                TokenSet::from_response(response, sent_at, generation.saturating_add(1))
                    .with_issued_for(self.binding.clone())
            }
        };
        let next = ActiveToken::new(next, self.config.leeway)?;
        // Persist before publish: waiters are released only after the save was attempted,
        // and a failed save keeps the new tokens in memory.
        let published = match self.persist(slot, &next, stored.as_ref()).await {
            Persisted::Kept => slot.publish(next),
            Persisted::Superseded(newer) => self.adopt(slot, newer)?,
            Persisted::Cleared => {
                return Err(self.reauthorize(slot, ReauthorizationReason::NoTokens))
            }
        };
        self.emit(Event::Refreshed {
            key: key.clone(),
            generation: published.generation(),
            rotated,
            duration: started.elapsed(),
        });
        Ok(published)
    }

    /// Records a failed refresh and returns what every waiter gets: the error, or newer tokens
    /// another process stored.
    async fn refresh_failed(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        base: Option<&ActiveToken>,
        stored: Option<&TokenSet>,
        error: Error,
    ) -> Outcome {
        let key = &slot.key;
        let error = match error {
            Error::UnusableRotation {
                error,
                refresh_token,
            } => {
                if let Some(base) = base {
                    self.keep_rotation(slot, base, stored, refresh_token).await;
                }
                Error::InvalidResponse(error)
            }
            error => error,
        };
        if !error.is_reauthorization_required() {
            if !error.is_transient() {
                // R27: retrying at once cannot fix this; transient errors are left to the
                // caller's retry policy (reqwest-retry).
                let mut backoff = lock(&slot.backoff);
                let delay = backoff.as_ref().map_or(BACKOFF_FIRST_DELAY, |b| {
                    (b.delay * 2).min(BACKOFF_MAX_DELAY)
                });
                *backoff = Some(Box::new(Backoff {
                    until: Instant::now() + delay,
                    delay,
                    error: error.clone(),
                }));
            }
            self.emit(Event::RefreshFailed {
                key: key.clone(),
                error: error.clone(),
            });
            return Err(error);
        }
        // R26: the grant is dead, unless another process rotated past us meanwhile.
        if let Ok(Some(stored)) = self.store.load(key).await {
            if self.store_supersedes(slot, base, &stored) {
                log::debug!(%key, "invalid_grant, but the store holds newer tokens");
                return self.adopt(slot, stored);
            }
        }
        // D9: forget the dead refresh token everywhere; other processes fail fast too.
        if let Err(store_error) = self.store.clear(key).await {
            log::warn!(%key, error = %store_error, "could not clear a dead grant");
        }
        slot.set_unsaved(None);
        let reason = match &error {
            Error::ReauthorizationRequired { reason, .. } => reason.clone(),
            _ => ReauthorizationReason::NoTokens,
        };
        Err(self.reauthorize(slot, reason))
    }

    /// Keeps the refresh token of a rotation whose answer was otherwise unusable: the old one
    /// is consumed at the server and must never be sent again (INV-1).
    async fn keep_rotation(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        base: &ActiveToken,
        stored: Option<&TokenSet>,
        refresh_token: crate::RefreshToken,
    ) {
        let kept = base.tokens.with_rotated_refresh_token(refresh_token);
        let Ok(kept) = ActiveToken::new(kept, self.config.leeway) else {
            return;
        };
        match self.persist(slot, &kept, stored).await {
            Persisted::Kept => {
                slot.publish(kept);
            }
            Persisted::Superseded(newer) => {
                let _ = self.adopt(slot, newer);
            }
            Persisted::Cleared => {}
        }
    }

    /// Whether `stored` replaces the `base` we refreshed from: a newer generation, or (when
    /// `base` was saved) any other set, such as a new login elsewhere that restarted
    /// generations. While `base` is unsaved, an older stored set is our own consumed parent and
    /// must never come back (INV-1, INV-5).
    fn store_supersedes(
        &self,
        slot: &KeySlot,
        base: Option<&ActiveToken>,
        stored: &TokenSet,
    ) -> bool {
        let Some(base) = base else { return true };
        match slot.unsaved(base.generation()) {
            // Unsaved: the store still holding our parent (or the consumed set before it) is
            // ours to replace; anything else was written by someone else since.
            Some(unsaved) => unsaved.parent.as_ref() != Some(stored),
            None => *stored != base.tokens,
        }
    }

    /// Publishes a token set found in the store.
    fn adopt(&self, slot: &KeySlot, tokens: TokenSet) -> Outcome {
        if let (Some(ours), Some(theirs)) = (&self.binding, tokens.issued_for()) {
            if **ours != *theirs {
                // D15: never send a refresh token to a server that did not issue it.
                return Err(Error::Store(StoreError::new(
                    StoreErrorKind::Refused,
                    format!(
                        "the stored tokens of `{}` were issued for another authorization server \
                         or client ({}); refusing to use them (use another key or store)",
                        slot.key,
                        crate::grant::endpoint::redact_userinfo(theirs)
                    ),
                )));
            }
        }
        // A record read from the store brings its own copy of the (equal) binding; the
        // manager's is used instead, so that all its keys share one string.
        let tokens = match &self.binding {
            Some(ours) if tokens.issued_for().is_some() => {
                tokens.with_issued_for(Some(Arc::clone(ours)))
            }
            _ => tokens,
        };
        let adopted = ActiveToken::new(tokens, self.config.leeway)?;
        let had_tokens = matches!(**slot.state.load(), KeyState::Active(_));
        slot.set_unsaved(None);
        let adopted = slot.publish(adopted);
        if had_tokens {
            self.emit(Event::Adopted {
                key: slot.key.clone(),
                generation: adopted.generation(),
            });
        }
        Ok(adopted)
    }

    /// Saves `token` over `parent` (what the store holds). On failure the tokens stay
    /// authoritative in memory and a background task retries, over that same parent only.
    async fn persist(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        token: &ActiveToken,
        parent: Option<&TokenSet>,
    ) -> Persisted {
        let generation = token.generation();
        let expected = parent.map(TokenSet::generation);
        match self.save(&slot.key, &token.tokens, expected).await {
            Ok(SaveOutcome::Saved) => {
                slot.set_unsaved(None);
                Persisted::Kept
            }
            Ok(SaveOutcome::Conflict {
                current: Some(current),
            }) => Persisted::Superseded(current),
            Ok(SaveOutcome::Conflict { current: None }) => Persisted::Cleared,
            Err(_) => {
                slot.set_unsaved(Some(Unsaved {
                    generation,
                    parent: parent.cloned(),
                }));
                self.retry_save_later(slot, generation);
                Persisted::Kept
            }
        }
    }

    /// One conditional save, with its events.
    pub(super) async fn save(
        &self,
        key: &TokenKey,
        tokens: &TokenSet,
        expected: Option<u64>,
    ) -> Result<SaveOutcome, StoreError> {
        let outcome = self.store.save(key, tokens, expected).await;
        match &outcome {
            Ok(SaveOutcome::Saved) => self.emit(Event::Persisted {
                key: key.clone(),
                generation: tokens.generation(),
            }),
            Err(error) => self.emit(Event::PersistFailed {
                key: key.clone(),
                generation: tokens.generation(),
                error: error.clone(),
            }),
            Ok(SaveOutcome::Conflict { .. }) => {}
        }
        outcome
    }

    /// Retries saving the key's in-memory tokens with backoff while they are the ones in use
    /// and still unsaved.
    pub(super) fn retry_save_later(self: &Arc<Self>, slot: &Arc<KeySlot>, generation: u64) {
        let inner = Arc::clone(self);
        let slot = Arc::clone(slot);
        tokio::spawn(async move {
            let mut delay = SAVE_RETRY_FIRST_DELAY;
            loop {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(SAVE_RETRY_MAX_DELAY);
                let _writer = slot.writer.lock().await;
                // Checked under the writer lock: a flight, `set_tokens` or `clear` may have
                // moved the key on (and a cleared key must stay cleared).
                let (current, unsaved) = match (slot.token(), slot.unsaved(generation)) {
                    (Some(token), Some(unsaved)) if token.generation() == generation => {
                        (token, unsaved)
                    }
                    _ => return,
                };
                let Ok(_lock) = inner.store.lock(&slot.key).await else {
                    continue;
                };
                let stored = match inner.store.load(&slot.key).await {
                    Ok(stored) => stored,
                    Err(_) => continue,
                };
                if stored.as_ref() == Some(&current.tokens) {
                    slot.set_unsaved(None);
                    return;
                }
                if stored != unsaved.parent {
                    // Someone else wrote the record since (a refresh, a logout, a new login):
                    // never overwrite it. The next flight adopts what is there.
                    slot.set_unsaved(None);
                    return;
                }
                let expected = stored.as_ref().map(TokenSet::generation);
                match inner.save(&slot.key, &current.tokens, expected).await {
                    Ok(SaveOutcome::Saved) | Ok(SaveOutcome::Conflict { .. }) => {
                        slot.set_unsaved(None);
                        return;
                    }
                    Err(_) => continue,
                }
            }
        });
    }

    /// Whether a rejection-triggered refresh happened less than the cooldown ago; if not, the
    /// caller is about to start one and the clock restarts.
    fn in_rejection_cooldown(&self, slot: &KeySlot) -> bool {
        let mut last = lock(&slot.last_rejection_refresh);
        if last.is_some_and(|at| at.elapsed() < self.config.rejection_cooldown) {
            log::debug!(key = %slot.key, "token rejected again within the cooldown; no refresh");
            return true;
        }
        *last = Some(Instant::now());
        false
    }

    fn initial_tokens(&self, key: &TokenKey) -> Option<TokenSet> {
        let (initial_key, tokens) = self.config.initial.as_ref()?;
        if initial_key != key || self.initial_used.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(
            tokens
                .clone()
                .with_generation(1)
                .with_issued_for(self.binding.clone()),
        )
    }

    fn reauthorize(&self, slot: &KeySlot, reason: ReauthorizationReason) -> Error {
        let error = Error::ReauthorizationRequired {
            key: slot.key.clone(),
            reason,
        };
        slot.state.store(Arc::new(KeyState::Reauthorize {
            error: Box::new(error.clone()),
            since: Instant::now(),
        }));
        self.emit(Event::ReauthorizationRequired {
            key: slot.key.clone(),
        });
        error
    }

    fn emit(&self, event: Event) {
        emit(self.config.on_event.as_ref(), event);
    }
}

/// INV-2: a holder whose lease was lost must not call the token endpoint alongside the new
/// holder.
fn still_held(lock: &crate::StoreLock) -> Result<(), Error> {
    if lock.is_held() {
        return Ok(());
    }
    Err(Error::Store(StoreError::new(
        StoreErrorKind::LockTimeout,
        "the store lock was lost before the token call; not refreshing",
    )))
}

/// Removes a finished flight from its slot, also when the task panicked.
struct ClearFlight {
    slot: Arc<KeySlot>,
    id: u64,
}

impl Drop for ClearFlight {
    fn drop(&mut self) {
        let mut flight = self.slot.flight();
        if flight.as_ref().is_some_and(|f| f.id == self.id) {
            *flight = None;
        }
    }
}
