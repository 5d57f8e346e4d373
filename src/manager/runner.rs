//! The runner: carries out the steps the policy decides, one at a time, under the key's writer
//! lock and the store's lock: lock → load → decide → act → persist → publish, then decide
//! again. It makes no decision of its own; `src/policy.rs` makes them all.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::slot::{HeldBack, KeySlot, KeyWriter, PublishedToken};
use super::{Inner, Order};
use crate::backoff::{random_jitter, Backoff};
use crate::error::{Error, TransientError};
use crate::event::Event;
use crate::key::TokenKey;
use crate::log;
use crate::policy::{self, Answer, Call, Facts, Intent, Refusal, Step, Unsaved};
use crate::record::{EndReason, Ended, TokenRecord};
use crate::secret::RefreshToken;
use crate::store::{SaveOutcome, StoreError, StoreErrorKind, StoreLock};
use crate::token::TokenSet;
use crate::url_policy::redact_userinfo;

/// More steps than any path takes (reload, re-save, adopt, refresh, save, use): reaching it
/// means the store kept changing under the lock.
const MAX_STEPS: usize = 8;
/// Pauses between background attempts to save a record whose save failed.
const SAVE_RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// What one run knows besides what the key holds.
struct Run {
    order: Order,
    /// What the store holds, as last read or written.
    stored: Option<TokenRecord>,
    /// A re-save failed: the store is behind what this process holds.
    store_behind: bool,
    /// The authorization server was called.
    called: bool,
    /// A save of this run failed, for callers that asked for a change.
    save_failed: Option<StoreError>,
    /// The store's lock turned out to be lost when checked before a call.
    lock_lost: bool,
}

impl Run {
    /// The end of a run that made a change: done, unless one of its saves failed (the change
    /// is in place in memory and saved later).
    fn finished(&mut self) -> Result<Option<PublishedToken>, Error> {
        match self.save_failed.take() {
            Some(error) => Err(Error::Store(error)),
            None => Ok(None),
        }
    }
}

impl Inner {
    /// Runs `order` for `slot` to its end. Returns the token to use for
    /// [`Intent::Send`]/[`Intent::Replace`], nothing for the others.
    ///
    /// The store's lock is released, and the release awaited, before this returns: a process
    /// that exits right after leaves no lock behind for the next one.
    pub(super) async fn run(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        order: Order,
    ) -> Result<Option<PublishedToken>, Error> {
        let key = &slot.key;
        let waiting = Instant::now();
        let mut writer = slot.writer().await;
        let lock = self.store.lock(key).await.map_err(Error::Store)?;
        self.emit(Event::LockAcquired {
            key: key.clone(),
            waited: waiting.elapsed(),
        });
        let outcome = self.locked(&mut writer, &lock, order).await;
        lock.release().await;
        outcome
    }

    /// The steps of a run, under both locks.
    async fn locked(
        self: &Arc<Self>,
        writer: &mut KeyWriter<'_>,
        lock: &StoreLock,
        order: Order,
    ) -> Result<Option<PublishedToken>, Error> {
        let key = &writer.key().clone();
        let stored = self.store.load(key).await.map_err(Error::Store)?;
        let mut run = Run {
            order,
            stored,
            store_behind: false,
            called: false,
            save_failed: None,
            lock_lost: false,
        };
        for _ in 0..MAX_STEPS {
            let held = writer.held();
            if (run.stored.is_some() || held.is_some()) && self.is_initial_key(key) {
                // Initial tokens are for a key whose store never held a record.
                self.initial_used.store(true, Ordering::Release);
            }
            let step = policy::decide(&self.facts(writer, &run, held.as_ref(), lock), &self.rules);
            log::trace!(%key, ?step, "next step");
            // The loss flag can lag behind: ask the backend before a call, and decide again
            // if the lock is gone.
            if step.calls_authorization_server() && !lock.still_held().await {
                run.lock_lost = true;
                continue;
            }
            match step {
                Step::Use => return writer.token().map(Some).ok_or(Error::RefreshAborted),
                Step::Done => return run.finished(),
                Step::Fail(refusal) => return Err(self.refusal(writer, refusal)),
                Step::Adopt => self.adopt(writer, &run, held.as_ref())?,
                Step::Resave => self.resave(writer, &mut run, held).await,
                Step::Refresh { cooldown } => {
                    if cooldown {
                        writer.start_cooldown(Instant::now() + self.config.rejection_cooldown);
                    }
                    let base = held.as_ref().and_then(TokenRecord::tokens);
                    self.call(writer, &mut run, base, lock).await?;
                }
                Step::Mint => self.call(writer, &mut run, None, lock).await?,
                Step::Seed => self.seed(writer, &mut run).await?,
                Step::Replace => {
                    if self.replace(writer, &mut run, held.as_ref()).await? {
                        return run.finished();
                    }
                }
                Step::Revoke => {
                    let tokens = held.as_ref().and_then(TokenRecord::tokens);
                    if let Some(tokens) = tokens {
                        // A failure leaves everything as it was: the token still exists.
                        self.refresher.revoke(key, tokens).await?;
                    }
                    run.called = true;
                }
                Step::End(reason) => {
                    self.end(writer, &mut run, held.as_ref(), reason, None)
                        .await;
                }
            }
        }
        log::warn!(%key, "the store kept changing while locked; giving up this run");
        Err(Error::Store(StoreError::new(
            StoreErrorKind::Conflict,
            format!("the record of `{key}` kept changing while locked (a lost lock?); try again"),
        )))
    }

    fn facts<'a>(
        &self,
        writer: &'a KeyWriter<'_>,
        run: &'a Run,
        held: Option<&'a TokenRecord>,
        lock: &StoreLock,
    ) -> Facts<'a> {
        Facts {
            intent: run.order.intent,
            seen: run.order.seen.as_ref(),
            held,
            unsaved: writer.unsaved(),
            stored: run.stored.as_ref(),
            store_behind: run.store_behind,
            lock_held: lock.is_held() && !run.lock_lost,
            called: run.called,
            initial_available: self.initial_available(writer.key()),
            backoff_until: writer.held_back().map(|held_back| held_back.until),
            cooldown_until: writer.cooldown_until(),
            now: Instant::now(),
            wall_now: SystemTime::now(),
        }
    }

    /// Holds what the store holds.
    fn adopt(
        &self,
        writer: &mut KeyWriter<'_>,
        run: &Run,
        held: Option<&TokenRecord>,
    ) -> Result<(), Error> {
        let record = run
            .stored
            .clone()
            .map(|record| record.sharing_binding(&self.rules.binding));
        let generation = record.as_ref().map(TokenRecord::generation);
        writer.hold(record, None, self.config.leeway, None)?;
        if let (Some(_), Some(generation)) = (held, generation) {
            self.emit(Event::Adopted {
                key: writer.key().clone(),
                generation,
            });
        }
        Ok(())
    }

    /// Saves the held record over its parent.
    async fn resave(&self, writer: &mut KeyWriter<'_>, run: &mut Run, held: Option<TokenRecord>) {
        let Some(held) = held else { return };
        match self
            .save(&writer.key().clone(), &held, run.stored.as_ref())
            .await
        {
            Ok(SaveOutcome::Saved) => {
                run.stored = Some(held);
                writer.mark_saved();
            }
            Ok(SaveOutcome::Conflict { current }) => run.stored = current,
            Err(error) => {
                run.store_behind = true;
                run.save_failed = Some(error);
            }
        }
    }

    /// Calls the token endpoint with `base` (`None`: mints), and keeps what it answers.
    async fn call(
        self: &Arc<Self>,
        writer: &mut KeyWriter<'_>,
        run: &mut Run,
        base: Option<&TokenSet>,
        lock: &StoreLock,
    ) -> Result<(), Error> {
        let key = writer.key().clone();
        self.emit(Event::RefreshStarted {
            key: key.clone(),
            generation: base.map(TokenSet::generation),
        });
        let sent_at = SystemTime::now();
        let started = Instant::now();
        let result = self.refresher.refresh(&key, base).await;
        run.called = true;
        let call = Call {
            base,
            stored: run.stored.as_ref(),
            sent_at,
            previous_pause: writer.held_back().map(|held_back| held_back.pause),
        };
        match policy::after_call(&call, result, &self.rules) {
            Answer::Tokens(next) => {
                writer.hold_back(None);
                let generation = next.generation();
                let spent = base
                    .and_then(TokenSet::refresh_token)
                    .filter(|&spent| next.refresh_token() != Some(spent));
                let rotated = base.is_none() || spent.is_some();
                if self.keep(writer, run, next, spent).await? {
                    self.emit(Event::Refreshed {
                        key,
                        generation,
                        rotated,
                        duration: started.elapsed(),
                    });
                }
                Ok(())
            }
            Answer::KeepRotation { kept, error, pause } => {
                let spent = base.and_then(TokenSet::refresh_token);
                self.keep(writer, run, kept, spent).await?;
                Err(self.fail(writer, error, pause))
            }
            Answer::Failed { error, pause } => Err(self.fail(writer, error, pause)),
            Answer::InvalidGrant(error) => {
                // Another process may have rotated past us, or a login happened meanwhile.
                match self.store.load(&key).await {
                    Ok(stored) => run.stored = stored,
                    Err(load) => {
                        log::warn!(%key, error = %load, "cannot re-read the store after invalid_grant");
                    }
                }
                let held = writer.held();
                let facts = self.facts(writer, run, held.as_ref(), lock);
                match policy::after_invalid_grant(&facts, &self.rules) {
                    Step::Adopt => self.adopt(writer, run, held.as_ref()),
                    Step::Fail(refusal) => Err(self.refusal(writer, refusal)),
                    _ => {
                        self.end(
                            writer,
                            run,
                            held.as_ref(),
                            EndReason::InvalidGrant,
                            Some(error),
                        )
                        .await;
                        Ok(())
                    }
                }
            }
        }
    }

    /// Saves new tokens over what the store holds and holds them. `spent` is the refresh token
    /// the call that made them consumed.
    ///
    /// If the save fails they are held unsaved and saved later; if someone else wrote the store
    /// meanwhile they are held unsaved too, and the next decision settles it (`false`): theirs
    /// is adopted, unless it carries a refresh token ours consumed.
    async fn keep(
        self: &Arc<Self>,
        writer: &mut KeyWriter<'_>,
        run: &mut Run,
        tokens: TokenSet,
        spent: Option<&RefreshToken>,
    ) -> Result<bool, Error> {
        let record = TokenRecord::Tokens(tokens);
        let key = writer.key().clone();
        let saved = self.save(&key, &record, run.stored.as_ref()).await;
        let unsaved = Unsaved::after(writer.unsaved(), run.stored.as_ref(), spent);
        match saved {
            Ok(SaveOutcome::Saved) => {
                writer.hold(Some(record.clone()), None, self.config.leeway, None)?;
                run.stored = Some(record);
                Ok(true)
            }
            Ok(SaveOutcome::Conflict { current }) => {
                log::debug!(%key, "the store changed meanwhile; deciding again");
                writer.hold(Some(record), Some(unsaved), self.config.leeway, None)?;
                run.stored = current;
                Ok(false)
            }
            Err(error) => {
                // Used from memory, saved later: the new refresh token must not be lost.
                writer.hold(Some(record), Some(unsaved), self.config.leeway, None)?;
                run.store_behind = true;
                run.save_failed = Some(error);
                self.retry_save_later(writer);
                Ok(true)
            }
        }
    }

    /// Records a failed call: refreshes are held back, and every waiter gets `error`.
    fn fail(&self, writer: &mut KeyWriter<'_>, error: Error, pause: Duration) -> Error {
        let hold_for = policy::hold_back(pause, &error, random_jitter());
        writer.hold_back(Some(HeldBack {
            until: Instant::now() + hold_for,
            pause,
            error: error.clone(),
        }));
        self.emit(Event::RefreshFailed {
            key: writer.key().clone(),
            error: error.clone(),
        });
        error
    }

    /// Saves the initial tokens, and holds them.
    async fn seed(
        self: &Arc<Self>,
        writer: &mut KeyWriter<'_>,
        run: &mut Run,
    ) -> Result<(), Error> {
        let Some((_, initial)) = &self.config.initial else {
            return Ok(());
        };
        let tokens = initial
            .clone()
            .renewed(1)
            .bound_to(self.rules.binding.clone());
        self.keep(writer, run, tokens, None).await.map(drop)
    }

    /// Saves the caller's new tokens over whatever is stored, and holds them; `false` when
    /// someone else wrote the store meanwhile (the next step tries again over theirs).
    async fn replace(
        self: &Arc<Self>,
        writer: &mut KeyWriter<'_>,
        run: &mut Run,
        held: Option<&TokenRecord>,
    ) -> Result<bool, Error> {
        let Some(tokens) = run.order.tokens.clone() else {
            return Ok(true);
        };
        let generation = policy::next_generation(held, run.stored.as_ref());
        let tokens = tokens
            .renewed(generation)
            .bound_to(self.rules.binding.clone());
        writer.hold_back(None);
        self.keep(writer, run, tokens, None).await
    }

    /// Saves a record that the grant ended over what is stored, and holds it.
    async fn end(
        self: &Arc<Self>,
        writer: &mut KeyWriter<'_>,
        run: &mut Run,
        held: Option<&TokenRecord>,
        reason: EndReason,
        cause: Option<Error>,
    ) {
        let generation = policy::next_generation(held, run.stored.as_ref());
        let ended = TokenRecord::Ended(Ended::new(
            reason,
            SystemTime::now(),
            generation,
            self.rules.binding.clone(),
        ));
        let key = writer.key().clone();
        let unsaved = match self.save(&key, &ended, run.stored.as_ref()).await {
            Ok(SaveOutcome::Saved) => {
                run.stored = Some(ended.clone());
                None
            }
            Ok(SaveOutcome::Conflict { current }) => {
                run.stored = current;
                return;
            }
            Err(error) => {
                run.store_behind = true;
                run.save_failed = Some(error);
                Some(Unsaved::after(writer.unsaved(), run.stored.as_ref(), None))
            }
        };
        let retry = unsaved.is_some();
        // An ended record holds no token: holding it cannot fail.
        let _ = writer.hold(Some(ended), unsaved, self.config.leeway, cause);
        if retry {
            self.retry_save_later(writer);
        }
        self.emit(Event::ReauthorizationRequired { key });
    }

    /// The error a refusal gives callers; keys that hold nothing publish it, so that callers
    /// fail fast until the next look at the store.
    fn refusal(&self, writer: &mut KeyWriter<'_>, refusal: Refusal) -> Error {
        let key = writer.key().clone();
        match refusal {
            Refusal::NoTokens | Refusal::Ended(_) => {
                // Published again: callers fail fast until the next look at the store. An
                // ended record keeps the error it was published with (it may name the
                // server's `invalid_grant`).
                let held = writer.held();
                let error = writer.unusable_error().filter(|_| held.is_some());
                let unsaved = writer.unsaved().cloned();
                // A record without tokens: holding it cannot fail.
                let _ = writer.hold(held, unsaved, self.config.leeway, error);
                writer.unusable_error().unwrap_or(Error::RefreshAborted)
            }
            Refusal::Foreign(issued_for) => {
                let error = Error::ForeignTokens {
                    key,
                    issued_for: redact_userinfo(&issued_for),
                };
                writer.refuse(error.clone());
                error
            }
            Refusal::Unbound => {
                let error = Error::UnboundTokens { key };
                writer.refuse(error.clone());
                error
            }
            Refusal::BackingOff(retry_in) => match writer.held_back() {
                Some(held_back) if !held_back.error.is_transient() => held_back.error.clone(),
                _ => Error::Transient(TransientError::BackingOff { retry_in }),
            },
            Refusal::LockLost => Error::Store(StoreError::new(
                StoreErrorKind::LockTimeout,
                format!("the store lock of `{key}` was lost before the token call; not calling"),
            )),
        }
    }

    /// One conditional save of `record` over `stored`, with its events.
    async fn save(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        stored: Option<&TokenRecord>,
    ) -> Result<SaveOutcome, StoreError> {
        let outcome = self
            .store
            .save(key, record, stored.map(TokenRecord::revision))
            .await;
        match &outcome {
            Ok(SaveOutcome::Saved) => self.emit(Event::Persisted {
                key: key.clone(),
                generation: record.generation(),
            }),
            Err(error) => self.emit(Event::PersistFailed {
                key: key.clone(),
                generation: record.generation(),
                error: error.clone(),
            }),
            Ok(SaveOutcome::Conflict { .. }) => {}
        }
        outcome
    }

    /// Retries, in the background and with backoff, to bring the store up to date with the
    /// record held here, until it is saved or someone else's record replaces it.
    fn retry_save_later(self: &Arc<Self>, writer: &mut KeyWriter<'_>) {
        if !writer.start_retrying() {
            return;
        }
        let inner = Arc::clone(self);
        let slot = self.slot(writer.key());
        tokio::spawn(async move {
            for pause in SAVE_RETRY.pauses() {
                tokio::time::sleep(pause).await;
                let order = Order {
                    intent: Intent::Sync,
                    seen: None,
                    tokens: None,
                };
                let synced = inner.run(&slot, order).await;
                let mut writer = slot.writer().await;
                let settled = match &synced {
                    Ok(_) => true,
                    // Not the store being down: retrying will not help (a corrupt record,
                    // another server's record over ours).
                    Err(error) => !error.is_transient(),
                };
                if settled || writer.unsaved().is_none() {
                    if let Err(error) = synced {
                        log::warn!(key = %slot.key, %error, "gave up saving the tokens held in memory");
                    }
                    writer.stop_retrying();
                    return;
                }
            }
        });
    }

    fn is_initial_key(&self, key: &TokenKey) -> bool {
        self.config
            .initial
            .as_ref()
            .is_some_and(|(initial, _)| initial == key)
    }

    fn initial_available(&self, key: &TokenKey) -> bool {
        self.is_initial_key(key) && !self.initial_used.load(Ordering::Acquire)
    }
}
