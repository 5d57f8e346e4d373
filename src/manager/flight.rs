//! Coalescing: at most one run per key at a time for callers that need a token, shared by every
//! concurrent caller, and detached so that dropping a caller never cancels it half-way.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::slot::{KeySlot, KeyState, PublishedToken};
use super::{Inner, Order};
use crate::error::Error;
use crate::event::Event;
use crate::log;
use crate::policy::{self, Intent};
use crate::revision::Revision;

type Outcome = Result<PublishedToken, Error>;

/// The run in progress for a key, which callers join.
pub(super) struct Flight {
    id: u64,
    intent: Intent,
    outcome: Shared<BoxFuture<'static, Outcome>>,
}

impl Inner {
    /// Joins the key's flight, or starts one. `seen` is the token the caller holds; `intent`
    /// is [`Intent::Send`] or [`Intent::Replace`].
    pub(super) async fn fly(
        self: &Arc<Self>,
        slot: &Arc<KeySlot>,
        seen: Option<Revision>,
        intent: Intent,
    ) -> Outcome {
        // Two rounds at most: a flight we joined may have been started for a weaker reason
        // (a due token) and leave the rejected token in place.
        let mut last = None;
        for _ in 0..2 {
            let (outcome, answers_us) = {
                let mut flight = slot.flight();
                // Re-check under the flight lock: a flight that just finished published first.
                let state = slot.state();
                match &**state {
                    KeyState::Active(token) if !token.is(seen.as_ref()) => {
                        if let Some(token) =
                            PublishedToken::from_state(arc_swap::Guard::into_inner(state))
                        {
                            return Ok(token);
                        }
                    }
                    KeyState::Unusable(unusable)
                        if !policy::recheck_due(unusable.since, std::time::Instant::now()) =>
                    {
                        return Err(unusable.error.clone())
                    }
                    _ => {}
                }
                match &*flight {
                    Some(running) => {
                        self.emit(Event::Coalesced {
                            key: slot.key.clone(),
                        });
                        (
                            running.outcome.clone(),
                            running.intent == intent || intent == Intent::Send,
                        )
                    }
                    None => {
                        let started = self.start_flight(slot, seen.clone(), intent);
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
        seen: Option<Revision>,
        intent: Intent,
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
                let order = Order {
                    intent,
                    seen,
                    tokens: None,
                };
                match inner.run(&task_slot, order).await {
                    Ok(Some(token)) => Ok(token),
                    Ok(None) => Err(Error::RefreshAborted),
                    Err(error) => Err(error),
                }
            },
            &slot.key,
            &intent,
        ));
        let outcome = async move { task.await.unwrap_or(Err(Error::RefreshAborted)) }
            .boxed()
            .shared();
        Flight {
            id,
            intent,
            outcome,
        }
    }
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
