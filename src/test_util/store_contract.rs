//! The [`TokenStore`] contract as a test suite, for the stores of this crate and yours.
//!
//! ```no_run
//! # async fn run() {
//! use reqwest_token_refresh::test_util::store_contract::StoreContract;
//! use reqwest_token_refresh::MemoryTokenStore;
//!
//! let shared = std::sync::Arc::new(MemoryTokenStore::new());
//! StoreContract::new(move || {
//!     let shared = std::sync::Arc::clone(&shared);
//!     async move { shared }
//! })
//! .run()
//! .await;
//! # }
//! ```
//!
//! `make` is called several times: each call must return a store on the same backend, opened
//! as another process would open it (a new connection, a new instance on the same file), so
//! that what one writes, the others read. Every check uses keys of its own, with a random part,
//! so the suite can run against a shared backend and in parallel with other tests.
//!
//! What it checks, panicking with the broken rule:
//! - `load` of a key never written is `None`;
//! - a save expecting nothing stores the record, which every instance then reads back equal
//!   (revision and all);
//! - a save is conditional on the stored record's revision, not its generation: a stale
//!   writer conflicts (and is told what is stored) even after a logout and a new login that
//!   started the generations over, and a conflict writes nothing;
//! - records that a grant ended round-trip;
//! - the lock excludes a second holder (on another instance) until released, and a released
//!   or dropped lock, or one whose release was abandoned midway, can be taken again at once;
//! - with [`lock_breaker`](StoreContract::lock_breaker): a lock taken away behind its holder's
//!   back is reported lost ([`StoreLock::still_held`](crate::StoreLock::still_held));
//! - with [`corrupter`](StoreContract::corrupter): a record that cannot be read is an error,
//!   never "nothing stored", and is never overwritten.
//!
//! Release at process exit and exclusion between real processes need processes; this crate's
//! own tests check them for each built-in store.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::key::TokenKey;
use crate::record::{EndReason, Ended, TokenRecord};
use crate::revision::random_bytes;
use crate::secret::{AccessToken, RefreshToken};
use crate::store::{SaveOutcome, TokenStore};
use crate::token::TokenSet;

type Hook = Arc<dyn Fn(TokenKey) -> BoxFuture<'static, ()> + Send + Sync>;

/// How long a lock may take to become free again after its release, or to be taken.
const PROMPTLY: Duration = Duration::from_secs(5);
/// How long a second holder is given to (wrongly) take a held lock.
const EXCLUSION_WINDOW: Duration = Duration::from_millis(300);

/// The contract suite for the stores `make` returns. See the [module documentation](self).
pub struct StoreContract<F> {
    make: F,
    breaker: Option<Hook>,
    corrupter: Option<Hook>,
}

impl<S, F, Fut> StoreContract<F>
where
    S: TokenStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    /// A suite for the stores `make` returns.
    pub fn new(make: F) -> Self {
        Self {
            make,
            breaker: None,
            corrupter: None,
        }
    }

    /// Takes the lock of a key away from its holder, as the backend can (a lease deleted or
    /// expired, a database session terminated, a lock file removed). Enables the check that a
    /// lost lock is reported.
    #[must_use]
    pub fn lock_breaker<B, BFut>(mut self, breaker: B) -> Self
    where
        B: Fn(TokenKey) -> BFut + Send + Sync + 'static,
        BFut: Future<Output = ()> + Send + 'static,
    {
        self.breaker = Some(Arc::new(move |key| breaker(key).boxed()));
        self
    }

    /// Makes the stored record of a key unreadable (garbage bytes, a tampered seal). Enables the
    /// check that such a record is an error and is never overwritten.
    #[must_use]
    pub fn corrupter<C, CFut>(mut self, corrupter: C) -> Self
    where
        C: Fn(TokenKey) -> CFut + Send + Sync + 'static,
        CFut: Future<Output = ()> + Send + 'static,
    {
        self.corrupter = Some(Arc::new(move |key| corrupter(key).boxed()));
        self
    }

    /// Runs every check; panics on the first broken rule.
    pub async fn run(self) {
        self.absent_and_first_save().await;
        self.conditional_saves_compare_revisions().await;
        self.a_stale_writer_never_overwrites_a_new_login().await;
        self.ended_records_round_trip().await;
        #[cfg(feature = "dpop")]
        self.dpop_keys_travel_with_their_tokens().await;
        self.the_lock_excludes_and_is_released().await;
        if let Some(breaker) = &self.breaker {
            self.a_lost_lock_is_reported(breaker).await;
        }
        if let Some(corrupter) = &self.corrupter {
            self.unreadable_records_are_errors_and_kept(corrupter).await;
        }
    }

    /// A DPoP-bound set is useless without its key: it must come back with it, exactly.
    #[cfg(feature = "dpop")]
    async fn dpop_keys_travel_with_their_tokens(&self) {
        use crate::{DpopAlgorithm, DpopKey};
        let (store, other) = ((self.make)().await, (self.make)().await);
        for algorithm in [DpopAlgorithm::Es256, DpopAlgorithm::EdDsa] {
            let key = unique_key("dpop");
            let dpop_key = DpopKey::generate(algorithm).expect("a key");
            let bound = match tokens(1) {
                TokenRecord::Tokens(set) => {
                    TokenRecord::Tokens(set.with_dpop_key(dpop_key.clone()))
                }
                other => other,
            };
            saved(
                store.save(&key, &bound, None).await,
                "a DPoP-bound first save",
            );
            let loaded = other.load(&key).await.expect("load");
            assert_eq!(loaded.as_ref(), Some(&bound), "the set comes back whole");
            let loaded_key = loaded
                .as_ref()
                .and_then(TokenRecord::tokens)
                .and_then(crate::TokenSet::dpop_key);
            assert_eq!(
                loaded_key.map(crate::DpopKey::to_jwk),
                Some(dpop_key.to_jwk()),
                "with the key it is bound to, private half included"
            );
        }
    }

    async fn absent_and_first_save(&self) {
        let (store, other) = ((self.make)().await, (self.make)().await);
        let key = unique_key("first-save");
        assert_eq!(
            store.load(&key).await.expect("load"),
            None,
            "a key never written loads as None"
        );
        let first = tokens(1);
        saved(
            store.save(&key, &first, None).await,
            "a first save expecting nothing",
        );
        assert_eq!(
            other.load(&key).await.expect("load").as_ref(),
            Some(&first),
            "another instance reads back exactly what was saved"
        );
        assert_eq!(
            store.save(&key, &tokens(1), None).await.expect("save"),
            conflict(&first),
            "a save expecting nothing over a record conflicts, and says what is stored"
        );
    }

    async fn conditional_saves_compare_revisions(&self) {
        let (store, other) = ((self.make)().await, (self.make)().await);
        let key = unique_key("conditional");
        let first = tokens(1);
        saved(store.save(&key, &first, None).await, "a first save");
        let second = tokens(2);
        saved(
            other.save(&key, &second, Some(first.revision())).await,
            "a save expecting the stored revision",
        );
        // A stranger of the same generation as the stored record is still not it.
        let stranger = tokens(2);
        assert_eq!(
            store
                .save(&key, &tokens(3), Some(stranger.revision()))
                .await
                .expect("save"),
            conflict(&second),
            "a save expecting another revision of the same generation conflicts"
        );
        assert_eq!(
            store
                .save(&key, &tokens(3), Some(first.revision()))
                .await
                .expect("save"),
            conflict(&second),
            "a save expecting a replaced revision conflicts"
        );
        assert_eq!(
            other.load(&key).await.expect("load").as_ref(),
            Some(&second),
            "a conflicting save writes nothing"
        );
    }

    async fn a_stale_writer_never_overwrites_a_new_login(&self) {
        let (stale, other) = ((self.make)().await, (self.make)().await);
        let key = unique_key("new-login");
        let first_login = tokens(1);
        saved(stale.save(&key, &first_login, None).await, "a first login");
        let logout = ended(2);
        saved(
            other
                .save(&key, &logout, Some(first_login.revision()))
                .await,
            "a logout over the first login",
        );
        // The generations start over with the next login.
        let second_login = tokens(1);
        saved(
            other
                .save(&key, &second_login, Some(logout.revision()))
                .await,
            "a login over the logout",
        );
        assert_eq!(
            stale
                .save(&key, &tokens(2), Some(first_login.revision()))
                .await
                .expect("save"),
            conflict(&second_login),
            "a writer still expecting the first login must not replace the second"
        );
    }

    async fn ended_records_round_trip(&self) {
        let (store, other) = ((self.make)().await, (self.make)().await);
        let key = unique_key("ended");
        let record = ended(4);
        saved(store.save(&key, &record, None).await, "an ended record");
        assert_eq!(
            other.load(&key).await.expect("load"),
            Some(record),
            "an ended record reads back as saved"
        );
    }

    async fn the_lock_excludes_and_is_released(&self) {
        let (first, second) = ((self.make)().await, (self.make)().await);
        let key = unique_key("lock");
        let held = within(first.lock(&key), "taking a free lock")
            .await
            .expect("lock");
        assert!(held.still_held().await, "a lock just taken is held");
        let mut waiter = std::pin::pin!(second.lock(&key));
        let early = tokio::time::timeout(EXCLUSION_WINDOW, &mut waiter).await;
        assert!(early.is_err(), "a second holder took a held lock");
        held.release().await;
        let taken = within(waiter, "taking a lock just released")
            .await
            .expect("lock");
        drop(taken);
        let again = within(first.lock(&key), "taking a lock whose holder dropped it")
            .await
            .expect("lock");
        // A release abandoned at its first await (its caller was cancelled) still frees it.
        let _ = again.release().now_or_never();
        let freed = within(
            second.lock(&key),
            "taking a lock whose release was abandoned",
        )
        .await
        .expect("lock");
        freed.release().await;
    }

    async fn a_lost_lock_is_reported(&self, breaker: &Hook) {
        let store = (self.make)().await;
        let key = unique_key("lost-lock");
        let held = within(store.lock(&key), "taking a free lock")
            .await
            .expect("lock");
        breaker(key.clone()).await;
        assert!(
            !held.still_held().await,
            "a lock taken away from its holder must be reported lost"
        );
        held.release().await;
    }

    async fn unreadable_records_are_errors_and_kept(&self, corrupter: &Hook) {
        let (store, other) = ((self.make)().await, (self.make)().await);
        let key = unique_key("corrupt");
        let first = tokens(1);
        saved(store.save(&key, &first, None).await, "a first save");
        corrupter(key.clone()).await;
        assert!(
            other.load(&key).await.is_err(),
            "an unreadable record is an error, never \"nothing stored\""
        );
        for expected in [None, Some(first.revision())] {
            let outcome = other.save(&key, &tokens(2), expected).await;
            assert!(
                !matches!(outcome, Ok(SaveOutcome::Saved)),
                "an unreadable record must never be overwritten"
            );
        }
        assert!(
            store.load(&key).await.is_err(),
            "the unreadable record is left in place"
        );
    }
}

fn unique_key(what: &str) -> TokenKey {
    let suffix: String = random_bytes::<6>()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    TokenKey::new(format!("contract-{what}-{suffix}"))
}

/// A token record of `generation` with a revision of its own.
fn tokens(generation: u64) -> TokenRecord {
    let set = TokenSet::new(AccessToken::new(format!("contract-at-{generation}")))
        .with_refresh_token(RefreshToken::new(format!("contract-rt-{generation}")))
        .with_expires_at(SystemTime::now() + Duration::from_millis(3_600_500))
        .with_issued_for("https://auth.example/token contract")
        .renewed(generation);
    TokenRecord::Tokens(set)
}

fn ended(generation: u64) -> TokenRecord {
    TokenRecord::Ended(Ended::new(
        EndReason::LoggedOut,
        SystemTime::now(),
        generation,
        Some(Arc::from("https://auth.example/token contract")),
    ))
}

fn conflict(current: &TokenRecord) -> SaveOutcome {
    SaveOutcome::Conflict {
        current: Some(current.clone()),
    }
}

fn saved(outcome: Result<SaveOutcome, crate::StoreError>, what: &str) {
    match outcome {
        Ok(SaveOutcome::Saved) => {}
        other => panic!("{what} must be saved, got {other:?}"),
    }
}

/// Waits for `future`, which must finish promptly.
async fn within<T>(
    future: impl Future<Output = Result<T, crate::StoreError>>,
    what: &str,
) -> Result<T, crate::StoreError> {
    tokio::time::timeout(PROMPTLY, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took more than {PROMPTLY:?}"))
}
