//! A model check of the per-key refresh state machine (`src/manager.rs`, `src/manager/flight.rs`)
//! under [`shuttle`], which explores thread interleavings (random and PCT schedules).
//!
//! Neither loom nor shuttle can drive tokio and reqwest, so this is a small, faithful model of
//! the *protocol*, not the code itself:
//!
//! | real code | model |
//! |---|---|
//! | published `KeyState` (`ArcSwap`) | `Slot::state`, a generation read/written atomically |
//! | the flight slot (`Mutex<Option<Flight>>`) + `Shared` outcome | `Slot::flight` + `Outcome` (mutex + condvar) |
//! | detached `tokio::spawn` of the flight | a detached thread; a cancelled caller just stops waiting |
//! | writer lock + store lock | `Slot::writer` (one process) |
//! | reload, unpersisted re-save, adopt, generation check, cooldown | same decisions, same order |
//! | persist before publish; failed save keeps memory, flags it, retries | same |
//! | token endpoint with rotation and reuse detection (P-STRICT) | `Server` |
//!
//! It abstracts away: time (a token is "due" when a caller says so; the cooldown never expires
//! within one run), other processes, lost responses, and the access token itself (a generation
//! *is* the token set: `at-g`, `rt-g`).
//!
//! Checked in every explored schedule: no refresh token is presented twice (INV-1), at most one
//! token call at a time (INV-2), the store's generation never goes backwards (INV-5), no waiter
//! hangs (shuttle reports a deadlock), and every caller ends with the newest token.
//!
//! Scenarios from the issue: the leader cancelled, a 401 arriving during publish, a save failing
//! during publish. A negative control proves the model has teeth: a flight that trusts the store
//! over unsaved memory re-presents a consumed refresh token, and shuttle finds it.

use std::sync::Arc;

use shuttle::sync::{Condvar, Mutex};
use shuttle::thread::{self, JoinHandle};

const ITERATIONS: usize = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Due,
    Rejected,
}

/// P-STRICT: accepts only the current refresh token; anything else revokes the grant.
#[derive(Default)]
struct Server {
    current: u64,
    presented: Vec<u64>,
    in_flight: u32,
    revoked: bool,
}

#[derive(Default)]
struct Store {
    stored: Option<u64>,
    failing_saves: u32,
}

#[derive(Default)]
struct Outcome {
    value: Mutex<Option<Result<u64, ()>>>,
    ready: Condvar,
}

impl Outcome {
    fn wait(&self) -> Result<u64, ()> {
        let mut value = self.value.lock().unwrap();
        while value.is_none() {
            value = self.ready.wait(value).unwrap();
        }
        value.unwrap()
    }
}

struct Flight {
    id: u64,
    trigger: Trigger,
    outcome: Arc<Outcome>,
}

#[derive(Default, Clone, Copy)]
struct Bugs {
    /// Negative control: refresh from the stored set even when memory holds a newer, unsaved one.
    trust_store_over_memory: bool,
}

#[derive(Default)]
struct Slot {
    state: Mutex<Option<u64>>,
    flight: Mutex<Option<Flight>>,
    writer: Mutex<()>,
    unpersisted: Mutex<Option<u64>>,
    in_cooldown: Mutex<bool>,
    next_id: Mutex<u64>,
    store: Mutex<Store>,
    server: Mutex<Server>,
    detached: Mutex<Vec<JoinHandle<()>>>,
    bugs: Bugs,
}

impl Slot {
    fn new(bugs: Bugs) -> Arc<Self> {
        let slot = Slot {
            bugs,
            ..Slot::default()
        };
        *slot.state.lock().unwrap() = Some(1);
        slot.store.lock().unwrap().stored = Some(1);
        slot.server.lock().unwrap().current = 1;
        Arc::new(slot)
    }

    fn current(&self) -> Option<u64> {
        *self.state.lock().unwrap()
    }

    /// `Inner::fly`: join the key's flight or start one; `cancel` drops the caller right after.
    fn fly(self: &Arc<Self>, seen: u64, trigger: Trigger, cancel: bool) -> Option<Result<u64, ()>> {
        let mut last = None;
        for _ in 0..2 {
            let (outcome, answers_us) = {
                let mut flight = self.flight.lock().unwrap();
                if let Some(current) = self.current() {
                    if current != seen {
                        return Some(Ok(current));
                    }
                }
                match &*flight {
                    Some(running) => (
                        Arc::clone(&running.outcome),
                        running.trigger == trigger || trigger == Trigger::Due,
                    ),
                    None => {
                        let started = self.start_flight(seen, trigger);
                        let outcome = Arc::clone(&started.outcome);
                        *flight = Some(started);
                        (outcome, true)
                    }
                }
            };
            if cancel {
                return None;
            }
            let token = outcome.wait();
            match token {
                Ok(generation) if answers_us || generation != seen => return Some(token),
                Ok(generation) => last = Some(generation),
                Err(()) => return Some(token),
            }
        }
        Some(last.ok_or(()))
    }

    fn start_flight(self: &Arc<Self>, seen: u64, trigger: Trigger) -> Flight {
        let id = {
            let mut next = self.next_id.lock().unwrap();
            *next += 1;
            *next
        };
        let outcome = Arc::new(Outcome::default());
        let slot = Arc::clone(self);
        let shared = Arc::clone(&outcome);
        let handle = thread::spawn(move || {
            let result = slot.run_flight(seen, trigger);
            // `ClearFlight` runs before the shared outcome resolves.
            {
                let mut flight = slot.flight.lock().unwrap();
                if flight.as_ref().is_some_and(|f| f.id == id) {
                    *flight = None;
                }
            }
            *shared.value.lock().unwrap() = Some(result);
            shared.ready.notify_all();
        });
        self.detached.lock().unwrap().push(handle);
        Flight {
            id,
            trigger,
            outcome,
        }
    }

    /// `Inner::run_flight` + `refresh` + `persist`.
    fn run_flight(&self, seen: u64, trigger: Trigger) -> Result<u64, ()> {
        let _writer = self.writer.lock().unwrap();
        let stored = self.store.lock().unwrap().stored;
        let memory = self.current();
        let unpersisted = *self.unpersisted.lock().unwrap();
        let mut expected = stored;
        let base = match (stored, memory) {
            (Some(stored), Some(memory)) if stored == memory => memory,
            (stored, Some(memory))
                if unpersisted == Some(memory)
                    && stored.is_none_or(|s| s < memory)
                    && !self.bugs.trust_store_over_memory =>
            {
                if self.save(memory, stored) {
                    expected = Some(memory);
                }
                memory
            }
            (Some(stored), _) => {
                self.publish(stored);
                *self.unpersisted.lock().unwrap() = None;
                if stored != seen && trigger == Trigger::Due {
                    return Ok(stored);
                }
                stored
            }
            _ => return Err(()),
        };
        let needs_refresh = match trigger {
            Trigger::Rejected => {
                let mut cooldown = self.in_cooldown.lock().unwrap();
                let refresh = base == seen && !*cooldown;
                if refresh {
                    *cooldown = true;
                }
                refresh
            }
            Trigger::Due => is_due(base),
        };
        if !needs_refresh {
            return Ok(base);
        }
        let next = self.call_server(base)?;
        // Persist before publish.
        self.save(next, expected);
        self.publish(next);
        Ok(next)
    }

    fn call_server(&self, refresh_token: u64) -> Result<u64, ()> {
        let mut server = self.server.lock().unwrap();
        server.in_flight += 1;
        assert_eq!(
            server.in_flight, 1,
            "INVARIANT INV-2: two token calls at once"
        );
        assert!(
            !server.presented.contains(&refresh_token),
            "INVARIANT INV-1: rt-{refresh_token} presented again ({:?})",
            server.presented
        );
        server.presented.push(refresh_token);
        let result = if server.current == refresh_token && !server.revoked {
            server.current += 1;
            Ok(server.current)
        } else {
            server.revoked = true;
            Err(())
        };
        server.in_flight -= 1;
        result
    }

    /// A conditional save; a failure keeps the set in memory, flagged unpersisted.
    fn save(&self, generation: u64, expected: Option<u64>) -> bool {
        let mut store = self.store.lock().unwrap();
        if store.failing_saves > 0 {
            store.failing_saves -= 1;
            *self.unpersisted.lock().unwrap() = Some(generation);
            return false;
        }
        if store.stored != expected {
            return false;
        }
        assert!(
            store.stored.is_none_or(|old| old < generation),
            "INVARIANT INV-5: store generation went from {:?} to {generation}",
            store.stored
        );
        store.stored = Some(generation);
        *self.unpersisted.lock().unwrap() = None;
        true
    }

    fn publish(&self, generation: u64) {
        *self.state.lock().unwrap() = Some(generation);
    }

    /// `retry_save_later`, one attempt.
    fn retry_save(&self) {
        let _writer = self.writer.lock().unwrap();
        let current = self.current();
        if let Some(generation) = current {
            if *self.unpersisted.lock().unwrap() == current {
                let stored = self.store.lock().unwrap().stored;
                self.save(generation, stored);
            }
        }
    }

    /// Joins the detached flights, then checks the end state.
    fn settle(&self) {
        loop {
            let handles: Vec<_> = self.detached.lock().unwrap().drain(..).collect();
            if handles.is_empty() {
                break;
            }
            for handle in handles {
                handle.join().unwrap();
            }
        }
        let server = self.server.lock().unwrap();
        assert!(
            !server.revoked,
            "INVARIANT: the grant was revoked: {:?}",
            server.presented
        );
        assert_eq!(
            self.current(),
            Some(server.current),
            "INVARIANT: memory holds the newest token"
        );
    }
}

/// Generations the model treats as expiring (the initial one): `refresh_due(now)`.
fn is_due(generation: u64) -> bool {
    generation <= 1
}

/// A request that reads the token and refreshes it first if it is due.
fn due_request(slot: &Arc<Slot>, cancel: bool) -> Option<u64> {
    let seen = slot.current().unwrap();
    if !is_due(seen) {
        return Some(seen);
    }
    outcome(slot.fly(seen, Trigger::Due, cancel))
}

/// A request whose token `seen` was just rejected with a 401.
fn rejected_request(slot: &Arc<Slot>, seen: u64) -> Option<u64> {
    outcome(slot.fly(seen, Trigger::Rejected, false))
}

fn outcome(result: Option<Result<u64, ()>>) -> Option<u64> {
    match result? {
        Ok(generation) => Some(generation),
        Err(()) => panic!("INVARIANT: a refresh failed"),
    }
}

#[test]
fn leader_cancelled_waiters_complete_and_nothing_is_lost() {
    shuttle::check_pct(
        || {
            let slot = Slot::new(Bugs::default());
            let leader = {
                let slot = Arc::clone(&slot);
                thread::spawn(move || due_request(&slot, true))
            };
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let slot = Arc::clone(&slot);
                    thread::spawn(move || due_request(&slot, false))
                })
                .collect();
            leader.join().unwrap();
            for waiter in waiters {
                assert_eq!(waiter.join().unwrap(), Some(2));
            }
            slot.settle();
            assert_eq!(slot.server.lock().unwrap().presented, vec![1]);
            assert_eq!(slot.store.lock().unwrap().stored, Some(2));
        },
        ITERATIONS,
        3,
    );
}

#[test]
fn a_401_arriving_during_publish_causes_no_second_refresh() {
    shuttle::check_random(
        || {
            let slot = Slot::new(Bugs::default());
            let due = {
                let slot = Arc::clone(&slot);
                thread::spawn(move || due_request(&slot, false))
            };
            let rejected = {
                let slot = Arc::clone(&slot);
                thread::spawn(move || rejected_request(&slot, 1))
            };
            assert_eq!(due.join().unwrap(), Some(2));
            assert_eq!(rejected.join().unwrap(), Some(2));
            slot.settle();
            assert_eq!(slot.server.lock().unwrap().presented, vec![1]);
        },
        ITERATIONS,
    );
}

/// A save fails while a flight publishes; 401s keep arriving; the background retry runs at an
/// arbitrary moment.
fn save_failing_during_publish(bugs: Bugs) {
    let slot = Slot::new(bugs);
    slot.store.lock().unwrap().failing_saves = 1;
    let first = due_request(&slot, false);
    assert_eq!(first, Some(2));
    // Two requests whose new token (generation 2, unsaved) is rejected.
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let slot = Arc::clone(&slot);
            thread::spawn(move || {
                rejected_request(&slot, 2);
            })
        })
        .chain(std::iter::once({
            let slot = Arc::clone(&slot);
            thread::spawn(move || slot.retry_save())
        }))
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    slot.settle();
    slot.retry_save();
    let stored = slot.store.lock().unwrap().stored;
    assert_eq!(stored, slot.current(), "the newest set is saved in the end");
}

#[test]
fn a_save_failing_during_publish_never_resends_the_consumed_token() {
    shuttle::check_random(|| save_failing_during_publish(Bugs::default()), ITERATIONS);
}

#[test]
#[should_panic(expected = "INVARIANT")]
fn negative_control_trusting_the_store_over_unsaved_memory_is_caught() {
    shuttle::check_random(
        || {
            save_failing_during_publish(Bugs {
                trust_store_over_memory: true,
            })
        },
        ITERATIONS,
    );
}
