//! The in-process backend: one `governor` keyed GCRA limiter per policy bucket (the policy's
//! default limit and each override), generic over a clock so tests inject time, with idle keys
//! swept away so memory follows the number of *active* keys, not of keys ever seen.

use super::Decision;
use crate::config::ratelimit::{Limit, Policy};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, Reference},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use std::{sync::Weak, time::Duration};

/// How often idle keys are swept: they are dropped once their bucket is full again, so memory is
/// bounded by the keys active within one sweep interval plus one recovery time.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

type Keyed<C> = RateLimiter<String, DefaultKeyedStateStore<String>, C, StateInformationMiddleware>;

/// One limit applied to many keys (a sharded, mostly lock-free map inside governor).
pub(crate) struct Bucket<C: Clock> {
    pub(crate) limit: Limit,
    limiter: Keyed<C>,
}

impl<C: Clock> Bucket<C> {
    fn new(limit: Limit, clock: C) -> Self {
        let quota = Quota::with_period(limit.interval())
            .unwrap_or_else(|| Quota::per_second(limit.burst))
            .allow_burst(limit.burst);
        Bucket { limit, limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock) }
    }

    /// Decides one request for `key`.
    pub(crate) fn decide(&self, key: &String) -> Decision {
        let t = self.limit.interval();
        let burst = self.limit.burst.get();
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(burst);
                // governor keeps the theoretical arrival time private; from the remaining capacity
                // it lies within one interval below (burst - remaining) × T: report the upper bound.
                let reset = t.saturating_mul(burst - remaining);
                Decision { allowed: true, remaining, retry_after: Duration::ZERO, reset }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let reset = wait.saturating_add(t.saturating_mul(burst - 1));
                Decision { allowed: false, remaining: 0, retry_after: wait, reset }
            }
        }
    }

    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// A policy's in-process state: its default bucket and one bucket per override.
pub(crate) struct PolicyLimiter<C: Clock> {
    pub(crate) policy: Policy,
    default: Bucket<C>,
    overrides: Vec<Bucket<C>>,
}

impl<C: Clock + Clone> PolicyLimiter<C> {
    pub(crate) fn new(policy: Policy, clock: &C) -> Self {
        let default = Bucket::new(policy.limit, clock.clone());
        let overrides = policy.overrides.iter().map(|o| Bucket::new(o.limit, clock.clone())).collect();
        PolicyLimiter { policy, default, overrides }
    }
}

impl<C: Clock> PolicyLimiter<C> {
    /// The bucket for a pipeline, with its index: 0 is the default, `i + 1` override `i`.
    pub(crate) fn bucket(&self, pipeline: &str) -> (usize, &Bucket<C>) {
        self.policy
            .override_for(pipeline)
            .and_then(|i| self.overrides.get(i).map(|b| (i + 1, b)))
            .unwrap_or((0, &self.default))
    }

    /// Every bucket, in index order.
    pub(crate) fn buckets(&self) -> impl Iterator<Item = &Bucket<C>> {
        std::iter::once(&self.default).chain(&self.overrides)
    }

    /// Drops keys whose buckets are full again (indistinguishable from new ones).
    pub(crate) fn sweep(&self) {
        self.buckets().for_each(Bucket::sweep);
    }

    /// Keys currently held.
    pub(crate) fn len(&self) -> usize {
        self.buckets().map(Bucket::len).sum()
    }
}

/// Sweeps `policy` every [`SWEEP_INTERVAL`] until it is dropped (a reload that no longer uses it).
pub(crate) fn spawn_sweeper<C>(policy: Weak<PolicyLimiter<C>>)
where
    C: Clock + Send + Sync + 'static,
    C::Instant: Reference,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(policy) = policy.upgrade() else { return };
            // A sweep of a large map takes milliseconds: keep it off the async workers.
            if tokio::task::spawn_blocking(move || policy.sweep()).await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::Rate;
    use governor::clock::FakeRelativeClock;
    use std::num::NonZeroU32;

    fn bucket(count: u32, per: u64, burst: u32) -> (Bucket<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let limit =
            Limit { rate: Rate { count, per: Duration::from_secs(per) }, burst: NonZeroU32::new(burst).unwrap() };
        (Bucket::new(limit, clock.clone()), clock)
    }

    #[test]
    fn burst_then_steady_rate() {
        // 20/s, burst 40: 40 at once, then one every 50 ms.
        let (b, clock) = bucket(20, 1, 40);
        let k = "sales".to_owned();
        for i in 0..40 {
            let d = b.decide(&k);
            assert!(d.allowed, "request {i} of the burst");
            assert_eq!(d.remaining, 39 - i);
        }
        let denied = b.decide(&k);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_millis(50));
        assert_eq!(denied.reset, Duration::from_secs(2));
        clock.advance(Duration::from_millis(49));
        assert!(!b.decide(&k).allowed);
        clock.advance(Duration::from_millis(1));
        assert!(b.decide(&k).allowed);
        assert!(!b.decide(&k).allowed);
        // Over one simulated second at 1 ms steps: exactly 20 more (±1).
        let mut allowed = 0;
        for _ in 0..1000 {
            clock.advance(Duration::from_millis(1));
            allowed += u32::from(b.decide(&k).allowed);
        }
        assert!((19..=21).contains(&allowed), "{allowed}");
    }

    #[test]
    fn recovers_fully_after_burst_times_interval() {
        let (b, clock) = bucket(2, 1, 4);
        let k = "p".to_owned();
        (0..4).for_each(|_| assert!(b.decide(&k).allowed));
        clock.advance(Duration::from_secs(2));
        let d = b.decide(&k);
        assert!(d.allowed);
        assert_eq!(d.remaining, 3);
        assert_eq!(d.reset, Duration::from_millis(500));
    }

    #[test]
    fn keys_are_independent() {
        let (b, _clock) = bucket(1, 1, 1);
        assert!(b.decide(&"a".to_owned()).allowed);
        assert!(!b.decide(&"a".to_owned()).allowed);
        assert!(b.decide(&"b".to_owned()).allowed);
    }

    #[test]
    fn retry_after_for_slow_rates() {
        // 3/min, burst 1: the second request waits 20 s.
        let (b, clock) = bucket(3, 60, 1);
        let k = "p".to_owned();
        assert!(b.decide(&k).allowed);
        let d = b.decide(&k);
        assert_eq!(d.retry_after, Duration::from_secs(20));
        clock.advance(Duration::from_millis(12_500));
        assert_eq!(b.decide(&k).retry_after, Duration::from_millis(7_500));
    }

    #[test]
    fn sweep_drops_recovered_keys_only() {
        let (b, clock) = bucket(10, 1, 10);
        for i in 0..1000 {
            assert!(b.decide(&format!("dag_{i}")).allowed);
        }
        assert_eq!(b.len(), 1000);
        b.sweep();
        assert_eq!(b.len(), 1000, "keys still recovering are kept");
        clock.advance(Duration::from_millis(150));
        for _ in 0..10 {
            b.decide(&"busy".to_owned());
        }
        clock.advance(Duration::from_millis(100));
        b.sweep();
        assert_eq!(b.len(), 1, "only the busy key is left");
    }
}
