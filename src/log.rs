//! Logging through `tracing` when the `tracing` feature is on (the default), and nothing at
//! all when it is off. Nothing logged here ever contains a secret.

#[cfg(feature = "tracing")]
pub(crate) use tracing::{debug, error, trace, warn};

#[cfg(not(feature = "tracing"))]
mod disabled {
    macro_rules! debug {
        ($($any:tt)*) => {{}};
    }
    macro_rules! error {
        ($($any:tt)*) => {{}};
    }
    macro_rules! trace {
        ($($any:tt)*) => {{}};
    }
    macro_rules! warn_ {
        ($($any:tt)*) => {{}};
    }
    pub(crate) use {debug, error, trace, warn_ as warn};
}

#[cfg(not(feature = "tracing"))]
pub(crate) use disabled::{debug, error, trace, warn};

/// Runs `future` inside a `token_flight` span (when tracing is on).
pub(crate) fn in_flight_span<F: std::future::Future>(
    future: F,
    key: &crate::TokenKey,
    trigger: &dyn std::fmt::Debug,
) -> impl std::future::Future<Output = F::Output> {
    #[cfg(feature = "tracing")]
    {
        use tracing::Instrument;
        future.instrument(tracing::debug_span!("token_flight", %key, ?trigger))
    }
    #[cfg(not(feature = "tracing"))]
    {
        let _ = (key, trigger);
        future
    }
}
