//! The one retry schedule of every background fetcher (upstream tokens, JWKS): capped exponential
//! backoff with "equal jitter", so that replicas that failed together do not retry in lockstep.
//! Pure; the fetchers draw the jitter. This module names no other airgate module.

use std::{ops::RangeInclusive, time::Duration};

/// Capped exponential backoff: retry `n` (1 = the first after a failure) waits between half and
/// all of `initial · 2^(n−1)`, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The full delay of the first retry.
    pub initial: Duration,
    /// The largest full delay.
    pub max: Duration,
}

impl Backoff {
    /// The delays retry number `failures` may wait: `full/2 ..= full`.
    pub fn range(&self, failures: u32) -> RangeInclusive<Duration> {
        let exp = failures.saturating_sub(1).min(20);
        let full = self.initial.saturating_mul(1 << exp).min(self.max);
        full / 2..=full
    }

    /// The delay of retry number `failures` for a `jitter` in `[0, 1]` (0: the shortest).
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let range = self.range(failures);
        let (low, high) = (*range.start(), *range.end());
        low + (high - low).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn doubles_up_to_the_cap_with_equal_jitter() {
        let b = Backoff { initial: S(1), max: S(60) };
        assert_eq!(b.range(0), Duration::from_millis(500)..=S(1), "no failure yet reads as the first");
        assert_eq!(b.range(1), Duration::from_millis(500)..=S(1));
        assert_eq!(b.range(4), S(4)..=S(8));
        assert_eq!(b.range(7), S(30)..=S(60));
        assert_eq!(b.range(u32::MAX), S(30)..=S(60));
        assert_eq!(b.delay(1, 1.0), S(1));
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(4, 0.5), S(6));
        assert_eq!(b.delay(7, 1.0), S(60));
        assert_eq!(b.delay(3, 7.0), S(4), "jitter is clamped");
    }

    #[test]
    fn every_delay_lies_in_its_range() {
        let b = Backoff { initial: Duration::from_millis(200), max: S(8) };
        for failures in 0..40 {
            let range = b.range(failures);
            for jitter in [0.0, 0.25, 0.5, 0.99, 1.0] {
                assert!(range.contains(&b.delay(failures, jitter)), "{failures} {jitter}");
            }
            assert!(*range.end() <= b.max && *range.start() * 2 == *range.end());
        }
    }
}
