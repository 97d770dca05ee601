//! Memory of the in-process limiter stays bounded when many distinct pipelines pass: rounds of
//! 100 000 new pipelines each, with eviction between rounds, hold the key count at zero and the
//! resident set flat. (Its own test binary, so no other test's allocations move RSS.)

mod support;

use airgate::{
    config::{
        Problems,
        ratelimit::{RawRateLimits, validate},
    },
    identity::Identity,
    metrics::Metrics,
    ratelimit::Limiter,
};
use governor::clock::FakeRelativeClock;
use std::time::Duration;
use support::permit;

const PIPELINES: usize = 100_000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn hundred_thousand_pipelines_keep_memory_bounded() {
    let raw: RawRateLimits = toml::from_str("[[policies]]\nname = \"per-dag\"\nrate = \"20/s\"\nburst = 40\n").unwrap();
    let mut p = Problems::default();
    let cfg = validate(raw, "rate_limits", &mut p);
    assert!(p.is_empty());
    let clock = FakeRelativeClock::default();
    let limiter = Limiter::with_clock(&cfg, Metrics::new(10), None, clock.clone()).unwrap();

    let mut after_eviction = Vec::new();
    let mut peak_keys = 0;
    for round in 0..5 {
        for i in 0..PIPELINES {
            let id = Identity { pipeline: format!("dag_{round}_{i:06}"), ..Identity::default() };
            assert!(limiter.check("per-dag", "r", &permit(id)).await.is_ok());
        }
        peak_keys = peak_keys.max(limiter.tracked_keys());
        // Each bucket is full again after one request's interval (50 ms); eviction then drops it.
        clock.advance(Duration::from_millis(200));
        limiter.sweep();
        assert_eq!(limiter.tracked_keys(), 0, "round {round}: every idle key is evicted");
        after_eviction.push(rss_kib());
    }
    assert_eq!(peak_keys, PIPELINES);
    let (first, last) = (after_eviction[0], after_eviction[4]);
    println!("RSS after eviction, per round (KiB): {after_eviction:?}");
    // Without eviction 500 000 keys would add tens of MiB; with it the process stays flat.
    assert!(last <= first + 8 * 1024, "RSS grew from {first} KiB to {last} KiB over 400 000 more pipelines");
}
