//! Exponential backoff with jitter: the one schedule behind every wait that repeats (refresh
//! failures, save retries, lock polling).

use std::time::Duration;

/// Pauses that start at `first` and double up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// The pause after `previous` (`None`: the first one).
    pub(crate) fn next(&self, previous: Option<Duration>) -> Duration {
        previous.map_or(self.first, |previous| {
            (previous * 2).min(self.max).max(self.first)
        })
    }

    /// Iterates the pauses: `first`, `2 × first`, … up to `max`, then `max` for ever.
    pub(crate) fn pauses(self) -> impl Iterator<Item = Duration> {
        std::iter::successors(Some(self.first), move |previous| {
            Some(self.next(Some(*previous)))
        })
    }
}

/// `delay` shortened by a random part of up to half of it (in `[delay / 2, delay]`), so that
/// many clients that failed together do not come back together. `jitter` is in `[0, 1)`.
pub(crate) fn jittered(delay: Duration, jitter: f64) -> Duration {
    delay.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0)
}

/// A random number in `[0, 1)`.
pub(crate) fn random_jitter() -> f64 {
    let bytes = crate::revision::random_bytes::<8>();
    // 53 random bits: every value an f64 in [0, 1) can hold at that spacing.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_maximum() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let pauses: Vec<u64> = backoff.pauses().take(7).map(|p| p.as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff.next(None), Duration::from_secs(1));
        assert_eq!(
            backoff.next(Some(Duration::from_secs(20))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn jitter_takes_off_at_most_half() {
        let delay = Duration::from_secs(10);
        assert_eq!(jittered(delay, 0.0), delay);
        assert_eq!(jittered(delay, 0.5), Duration::from_millis(7500));
        assert!(jittered(delay, 0.999_999) > Duration::from_secs(5));
        for _ in 0..1000 {
            let jitter = random_jitter();
            assert!((0.0..1.0).contains(&jitter), "{jitter}");
        }
    }
}
