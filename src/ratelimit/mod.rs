//! Rate limiting (contract §4): one [`Limiter`] per configuration decides each request of a
//! limited route under its named policy — in process ([`local`]) or shared in Redis ([`redis`]) —
//! and describes the decision in the IETF httpapi `RateLimit-Policy` / `RateLimit` headers.
//!
//! # Header semantics (GCRA)
//!
//! A policy with rate `n/period` has the emission interval `T = period / n` and a `burst` `b`.
//!
//! - `RateLimit-Policy: "<policy>";q=<burst>;w=<period>` — exactly the contract's form: `q` is the
//!   burst (requests available at once from a rested bucket) and `w` the period of the configured
//!   rate in seconds (`20/s` → `w=1`, `3000/min` → `w=60`). So `rate = "20/s", burst = 40` reads
//!   `q=40;w=1`. (Overrides report their own `q` and `w`.)
//! - `RateLimit: "<policy>";r=<remaining>;t=<seconds>` — `r` requests may be sent right now;
//!   `t` is the number of seconds (rounded up) until the bucket is full again, i.e. until `r = q`.
//! - `Retry-After` (429 only) — whole seconds, at least 1, until the next request conforms.
//!
//! # Shadow policies
//!
//! A policy with `shadow = true` is decided exactly like an enforced one (same buckets, same
//! backend), but its answer is never enforced and never shown: no headers, no 429. A request it
//! would have refused is [`Admitted::ShadowLimited`] and counted in
//! `airgate_rate_limit_shadow_total{pipeline,route}`; the stack audits it with reason
//! [`SHADOW_REASON`]. A would-be refusal does not consume the bucket (GCRA never does), so the state
//! is the one enforcement would have: flipping `shadow` off hands nobody a fresh burst.

pub mod local;
mod redis;

use crate::quota::Quota;
use crate::{
    carry::{CarryOver, carry_over},
    config::ratelimit::{Backend, KeyKind, Limit, OnBackendError, RateLimits},
    identity::Identity,
    metrics::Metrics,
    policy::Permit,
};
use governor::clock::{Clock, DefaultClock};
use http::HeaderValue;
use local::PolicyLimiter;
use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

/// The audit reason of a request a shadow policy would have refused.
pub const SHADOW_REASON: &str = "rate_limited_shadow";

/// A request the limiter refuses.
#[derive(Debug)]
pub enum Refused {
    /// Over the limit (429).
    Limited {
        /// Whole seconds until a retry can succeed (≥ 1).
        retry_after: u64,
        /// `RateLimit-Policy` / `RateLimit` header values.
        quota: Quota,
    },
    /// The backend is down and `on_backend_error = "deny"` (503).
    BackendDown {
        /// Whole seconds to wait.
        retry_after: u64,
    },
}

/// A request the limiter lets through.
#[derive(Debug, Clone)]
pub enum Admitted {
    /// Within an enforced policy's limit: the response carries these headers.
    Quota(Quota),
    /// Within a shadow policy's limit (no headers).
    Shadow,
    /// Over a shadow policy's limit: forwarded anyway, counted and audited (no headers).
    ShadowLimited,
}

impl Admitted {
    /// The headers to send: only enforced policies have them.
    pub fn quota(self) -> Option<Quota> {
        match self {
            Admitted::Quota(q) => Some(q),
            Admitted::Shadow | Admitted::ShadowLimited => None,
        }
    }

    /// The audit reason of an allowed request: [`SHADOW_REASON`] when a shadow policy would have
    /// refused it.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Admitted::ShadowLimited => Some(SHADOW_REASON),
            Admitted::Quota(_) | Admitted::Shadow => None,
        }
    }
}

/// The outcome of one decision, in the backends' common terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The request conforms.
    pub(crate) allowed: bool,
    /// Requests that would conform right after this one.
    pub(crate) remaining: u32,
    /// Until the next request conforms (zero when allowed).
    pub(crate) retry_after: Duration,
    /// Until the bucket is full again.
    pub(crate) reset: Duration,
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Renders `name` as an RFC 8941 string item (config names are printable ASCII).
fn sf_string(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn header(text: String) -> HeaderValue {
    // Names are validated printable ASCII and numbers are digits: this cannot fail.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
}

/// A policy's state and its precomputed `RateLimit-Policy` values (one per bucket).
struct PolicyState<C: Clock> {
    local: Arc<PolicyLimiter<C>>,
    /// From the current configuration: a kept `local` carries the policy it was built for, whose
    /// `shadow` may be stale.
    shadow: bool,
    name: String,
    policy_headers: Vec<HeaderValue>,
}

impl<C: Clock> PolicyState<C> {
    fn new(local: Arc<PolicyLimiter<C>>, shadow: bool) -> Self {
        let name = sf_string(&local.policy.name);
        let policy_headers = local
            .buckets()
            .map(|b| header(format!("{name};q={};w={}", b.limit.burst, ceil_secs(b.limit.rate.per).max(1))))
            .collect();
        PolicyState { local, shadow, name, policy_headers }
    }

    fn quota(&self, bucket: usize, d: &Decision) -> Quota {
        Quota {
            policy: self.policy_headers.get(bucket).cloned().unwrap_or_else(|| HeaderValue::from_static("")),
            state: Quota::state_value(&self.name, d.remaining, ceil_secs(d.reset)),
        }
    }
}

impl<C: Clock> CarryOver for PolicyState<C> {
    fn carry_key(&self) -> &str {
        &self.local.policy.name
    }
}

/// The carry-over name of the one Redis connection of a limiter.
const REDIS: &str = "redis";

impl CarryOver for Arc<redis::RedisBackend> {
    fn carry_key(&self) -> &str {
        REDIS
    }
}

/// Decides requests of limited routes under their named policies.
///
/// Generic over the clock of the in-process limiter so tests inject time; production uses
/// `governor`'s default monotonic clock.
pub struct Limiter<C: Clock = DefaultClock> {
    policies: HashMap<Arc<str>, PolicyState<C>>,
    redis: Option<Arc<redis::RedisBackend>>,
    on_backend_error: OnBackendError,
    metrics: Arc<Metrics>,
}

impl<C: Clock> fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("policies", &self.policies.keys().collect::<Vec<_>>())
            .field("backend", &if self.redis.is_some() { "redis" } else { "local" })
            .field("on_backend_error", &self.on_backend_error)
            .finish()
    }
}

impl Limiter {
    /// Builds the limiter of a configuration. `previous`: keep limiter state of policies whose
    /// buckets are unchanged ([`Policy::same_buckets`](crate::config::ratelimit::Policy::same_buckets):
    /// flipping `shadow` keeps it) and the Redis connection, when its settings are unchanged,
    /// across hot reloads.
    ///
    /// Inside a tokio runtime this also starts the background work: sweeping idle keys every
    /// [`local::SWEEP_INTERVAL`] and probing Redis; both end when the limiter is dropped.
    pub fn new(cfg: &RateLimits, metrics: Arc<Metrics>, previous: Option<&Limiter>) -> Result<Self, String> {
        Self::build(cfg, metrics, previous, DefaultClock::default(), true)
    }
}

impl<C> Limiter<C>
where
    C: Clock + Clone + Send + Sync + 'static,
{
    /// As [`Limiter::new`] with an injected clock for the in-process limiter and no background
    /// sweeping (call [`Limiter::sweep`]). For tests and benchmarks.
    pub fn with_clock(
        cfg: &RateLimits,
        metrics: Arc<Metrics>,
        previous: Option<&Limiter<C>>,
        clock: C,
    ) -> Result<Self, String> {
        Self::build(cfg, metrics, previous, clock, false)
    }

    fn build(
        cfg: &RateLimits,
        metrics: Arc<Metrics>,
        previous: Option<&Limiter<C>>,
        clock: C,
        sweep: bool,
    ) -> Result<Self, String> {
        let mut policies = HashMap::with_capacity(cfg.policies.len());
        for policy in &cfg.policies {
            let before = previous.into_iter().flat_map(|prev| prev.policies.values());
            let kept = carry_over(before, &policy.name, |old| old.local.policy.same_buckets(policy))
                .map(|old| Arc::clone(&old.local));
            let local = kept.unwrap_or_else(|| {
                let fresh = Arc::new(PolicyLimiter::new(policy.clone(), &clock));
                if sweep {
                    local::spawn_sweeper(Arc::downgrade(&fresh));
                }
                fresh
            });
            policies.insert(Arc::clone(&policy.name), PolicyState::new(local, policy.shadow));
        }
        let redis = match &cfg.backend {
            Backend::Local => None,
            Backend::Redis(settings) => {
                let before = previous.and_then(|prev| prev.redis.as_ref());
                let kept = carry_over(before, REDIS, |old| old.settings == *settings).map(Arc::clone);
                let backend = match kept {
                    Some(b) => b,
                    None => redis::RedisBackend::new(settings.clone())?,
                };
                backend.start();
                Some(backend)
            }
        };
        Ok(Limiter { policies, redis, on_backend_error: cfg.on_backend_error, metrics })
    }

    /// Decides one request for `route` under policy `policy` (the route's `rate_limit` name).
    ///
    /// `Ok(Admitted::Quota)` → allowed, with header values for the response;
    /// `Err(Refused::Limited { retry_after, quota })`, or
    /// `Err(Refused::BackendDown { retry_after })` when the backend is down and
    /// `on_backend_error = "deny"`. A shadow policy never refuses: `Ok(Admitted::Shadow)` or
    /// `Ok(Admitted::ShadowLimited)` (counted in `airgate_rate_limit_shadow_total`), also when the
    /// backend is down. Counts `airgate_ratelimit_backend_errors_total{backend}`; does not count
    /// `airgate_rate_limited_total` (`Metrics::observe_request` does, once per request, from the
    /// audit's request lifecycle, with the pipeline label).
    ///
    /// Takes the caller's [`Permit`], so a request is rate limited only once policy allowed it: a
    /// forbidden caller cannot spend an allowed pipeline's budget.
    pub async fn check(&self, policy: &str, route: &str, permit: &Permit) -> Result<Admitted, Refused> {
        let identity: &Identity = permit.identity();
        let Some(state) = self.policies.get(policy) else {
            // Validation makes this unreachable (a route names an existing policy); fail closed.
            tracing::error!(%policy, %route, "route refers to a rate-limit policy this limiter does not have");
            return Err(Refused::BackendDown { retry_after: 1 });
        };
        let (index, bucket) = state.local.bucket(&identity.pipeline);
        let key = bucket_key(state.local.policy.key, route, identity);
        let decision = match &self.redis {
            None => bucket.decide(&key),
            Some(redis) => {
                match redis.decide(&redis_key(&redis.settings.key_prefix, policy, index, &key), &bucket.limit).await {
                    Ok(d) => d,
                    Err(e) => {
                        self.metrics.ratelimit_backend_errors.with_label_values(&["redis"]).inc();
                        tracing::debug!(error = %e, %policy, "rate-limit decision falls back");
                        match self.on_backend_error {
                            OnBackendError::Local => bucket.decide(&key),
                            OnBackendError::Allow => unlimited(&bucket.limit),
                            // Shadow never refuses: nothing was decided, so nothing to count.
                            OnBackendError::Deny if state.shadow => return Ok(Admitted::Shadow),
                            OnBackendError::Deny => return Err(Refused::BackendDown { retry_after: 1 }),
                        }
                    }
                }
            }
        };
        if state.shadow {
            if decision.allowed {
                return Ok(Admitted::Shadow);
            }
            let pipeline = self.metrics.pipeline_label(&identity.pipeline);
            self.metrics.rate_limit_shadow.with_label_values(&[pipeline, route]).inc();
            return Ok(Admitted::ShadowLimited);
        }
        let quota = state.quota(index, &decision);
        if decision.allowed {
            Ok(Admitted::Quota(quota))
        } else {
            Err(Refused::Limited { retry_after: ceil_secs(decision.retry_after).max(1), quota })
        }
    }

    /// For `/readyz`: the Redis backend when `on_backend_error = "deny"` and it is unreachable.
    pub fn not_ready(&self) -> Vec<String> {
        match &self.redis {
            Some(r) if self.on_backend_error == OnBackendError::Deny && !r.is_up() => {
                vec![format!("rate-limit backend redis at {} is unreachable", r.settings.url.host_str().unwrap_or("?"))]
            }
            _ => Vec::new(),
        }
    }

    /// Drops in-process keys whose buckets are full again. Runs every [`local::SWEEP_INTERVAL`]
    /// in the background for limiters made by [`Limiter::new`].
    pub fn sweep(&self) {
        self.policies.values().for_each(|p| p.local.sweep());
    }

    /// Keys held by the in-process limiter, over all policies (memory tests, diagnostics).
    pub fn tracked_keys(&self) -> usize {
        self.policies.values().map(|p| p.local.len()).sum()
    }
}

/// What `on_backend_error = "allow"` reports: nothing was counted, the whole quota is left.
fn unlimited(limit: &Limit) -> Decision {
    Decision { allowed: true, remaining: limit.burst.get(), retry_after: Duration::ZERO, reset: Duration::ZERO }
}

/// The bucket key of an identity under a policy's key kind. Team and principal fall back to the
/// pipeline when the identity has none, so such callers are still limited (per pipeline).
fn bucket_key(kind: KeyKind, route: &str, id: &Identity) -> String {
    match (kind, &id.team, &id.principal) {
        (KeyKind::Team, Some(team), _) => ["team:", team].concat(),
        (KeyKind::Principal, _, Some(principal)) => ["principal:", principal].concat(),
        (KeyKind::PipelineRoute, _, _) => ["pipeline_route:", &id.pipeline, ":", route].concat(),
        (KeyKind::Pipeline | KeyKind::Team | KeyKind::Principal, _, _) => ["pipeline:", &id.pipeline].concat(),
    }
}

/// `{prefix}{policy}:{key}`; override `n` gets `{prefix}{policy}:o{n}:{key}`.
fn redis_key(prefix: &str, policy: &str, bucket: usize, key: &str) -> String {
    match bucket {
        0 => format!("{prefix}{policy}:{key}"),
        n => format!("{prefix}{policy}:o{}:{key}", n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ratelimit::{RawRateLimits, validate};
    use governor::clock::FakeRelativeClock;

    const CONFIG: &str = r#"
        [[policies]]
        name = "per-dag"
        rate = "20/s"
        burst = 40
        overrides = [{ pipelines = ["sales_backfill*"], rate = "2/s", burst = 4 }]
        [[policies]]
        name = "per-team"
        key = "team"
        rate = "1/s"
        burst = 2
        [[policies]]
        name = "per-route"
        key = "pipeline_route"
        rate = "1/min"
        burst = 1
    "#;

    fn config(text: &str) -> RateLimits {
        let raw: RawRateLimits = toml::from_str(text).unwrap();
        let mut p = crate::config::Problems::default();
        let cfg = validate(raw, "rate_limits", &mut p);
        assert!(p.is_empty(), "{p:?}");
        cfg
    }

    fn limiter() -> (Limiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Limiter::with_clock(&config(CONFIG), Metrics::new(100), None, clock.clone()).unwrap(), clock)
    }

    fn id(pipeline: &str) -> Identity {
        Identity { issuer: "airflow".into(), pipeline: pipeline.into(), ..Identity::default() }
    }

    fn headers(a: &Admitted) -> (String, String) {
        let Admitted::Quota(q) = a else { panic!("no headers: {a:?}") };
        quota_headers(q)
    }

    fn quota_headers(q: &Quota) -> (String, String) {
        (q.policy.to_str().unwrap().to_owned(), q.state.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn burst_then_429_with_headers_and_retry_after() {
        let (l, clock) = limiter();
        let sales = id("sales_daily");
        let first = l.check("per-dag", "sales", &Permit::for_tests(sales.clone())).await.unwrap();
        assert_eq!(headers(&first), ("\"per-dag\";q=40;w=1".into(), "\"per-dag\";r=39;t=1".into()));
        for _ in 1..40 {
            l.check("per-dag", "sales", &Permit::for_tests(sales.clone())).await.unwrap();
        }
        match l.check("per-dag", "sales", &Permit::for_tests(sales.clone())).await {
            Err(Refused::Limited { retry_after, quota }) => {
                assert_eq!(retry_after, 1, "50 ms rounds up to one second");
                assert_eq!(quota_headers(&quota), ("\"per-dag\";q=40;w=1".into(), "\"per-dag\";r=0;t=2".into()));
            }
            other => panic!("{other:?}"),
        }
        // Another pipeline is untouched.
        let other = l.check("per-dag", "sales", &Permit::for_tests(id("finance"))).await.unwrap();
        assert_eq!(headers(&other).1, "\"per-dag\";r=39;t=1");
        // Steady rate afterwards: one per 50 ms.
        clock.advance(Duration::from_millis(50));
        assert!(l.check("per-dag", "sales", &Permit::for_tests(sales.clone())).await.is_ok());
        assert!(l.check("per-dag", "sales", &Permit::for_tests(sales.clone())).await.is_err());
    }

    #[tokio::test]
    async fn overrides_have_their_own_limit_and_headers() {
        let (l, clock) = limiter();
        let backfill = id("sales_backfill_2024");
        for r in (0..4).rev() {
            let q = l.check("per-dag", "sales", &Permit::for_tests(backfill.clone())).await.unwrap();
            assert_eq!(headers(&q).0, "\"per-dag\";q=4;w=1");
            assert_eq!(
                headers(&q).1,
                format!("\"per-dag\";r={r};t={}", ceil_secs(Duration::from_millis(500) * (4 - r)))
            );
        }
        match l.check("per-dag", "sales", &Permit::for_tests(backfill.clone())).await {
            Err(Refused::Limited { retry_after, .. }) => assert_eq!(retry_after, 1),
            other => panic!("{other:?}"),
        }
        clock.advance(Duration::from_millis(500));
        assert!(l.check("per-dag", "sales", &Permit::for_tests(backfill.clone())).await.is_ok());
        assert!(l.check("per-dag", "sales", &Permit::for_tests(id("sales_daily"))).await.is_ok());
    }

    #[tokio::test]
    async fn retry_after_is_computed_not_constant() {
        let (l, clock) = limiter();
        let p = id("p");
        l.check("per-route", "a", &Permit::for_tests(p.clone())).await.unwrap();
        let retry = |r: Result<Admitted, Refused>| match r {
            Err(Refused::Limited { retry_after, .. }) => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(retry(l.check("per-route", "a", &Permit::for_tests(p.clone())).await), 60);
        clock.advance(Duration::from_millis(45_500));
        assert_eq!(retry(l.check("per-route", "a", &Permit::for_tests(p.clone())).await), 15);
        // pipeline_route: the same pipeline on another route has its own bucket.
        assert!(l.check("per-route", "b", &Permit::for_tests(p.clone())).await.is_ok());
    }

    #[tokio::test]
    async fn team_key_shares_a_bucket_and_falls_back_to_the_pipeline() {
        let (l, _clock) = limiter();
        let a = Identity { team: Some("finance".into()), ..id("a") };
        let b = Identity { team: Some("finance".into()), ..id("b") };
        assert!(l.check("per-team", "r", &Permit::for_tests(a.clone())).await.is_ok());
        assert!(l.check("per-team", "r", &Permit::for_tests(b.clone())).await.is_ok());
        assert!(
            l.check("per-team", "r", &Permit::for_tests(a.clone())).await.is_err(),
            "a and b share the team's burst of 2"
        );
        // Without a team the pipeline is the key; a team named like the pipeline does not collide.
        assert!(l.check("per-team", "r", &Permit::for_tests(id("finance"))).await.is_ok());
        assert_eq!(bucket_key(KeyKind::Team, "r", &id("x")), "pipeline:x");
        assert_eq!(
            bucket_key(KeyKind::Principal, "r", &Identity { principal: Some("svc".into()), ..id("x") }),
            "principal:svc"
        );
    }

    #[tokio::test]
    async fn reload_keeps_state_of_unchanged_policies_only() {
        let (l, clock) = limiter();
        let p = id("p");
        l.check("per-route", "a", &Permit::for_tests(p.clone())).await.unwrap();
        l.check("per-team", "a", &Permit::for_tests(p.clone())).await.unwrap();
        l.check("per-team", "a", &Permit::for_tests(p.clone())).await.unwrap();
        let changed = CONFIG.replace("rate = \"1/s\"\n        burst = 2", "rate = \"1/s\"\n        burst = 3");
        let next = Limiter::with_clock(&config(&changed), Metrics::new(100), Some(&l), clock).unwrap();
        assert!(
            next.check("per-route", "a", &Permit::for_tests(p.clone())).await.is_err(),
            "unchanged policy keeps its state"
        );
        assert!(
            next.check("per-team", "a", &Permit::for_tests(p.clone())).await.is_ok(),
            "changed policy starts afresh"
        );
    }

    fn shadow_count(m: &Metrics, pipeline: &str, route: &str) -> u64 {
        m.rate_limit_shadow.with_label_values(&[pipeline, route]).get()
    }

    #[tokio::test]
    async fn shadow_decides_counts_and_never_refuses() {
        let clock = FakeRelativeClock::default();
        let metrics = Metrics::new(100);
        let shadow = CONFIG.replace("burst = 2\n", "burst = 2\n        shadow = true\n");
        let l = Limiter::with_clock(&config(&shadow), Arc::clone(&metrics), None, clock.clone()).unwrap();
        let p = id("p");
        for _ in 0..2 {
            let a = l.check("per-team", "r", &Permit::for_tests(p.clone())).await.unwrap();
            assert!(matches!(a, Admitted::Shadow) && a.reason().is_none() && a.quota().is_none());
        }
        for _ in 0..3 {
            let a = l.check("per-team", "r", &Permit::for_tests(p.clone())).await.unwrap();
            assert!(matches!(a, Admitted::ShadowLimited), "{a:?}");
            assert_eq!(a.reason(), Some(SHADOW_REASON));
            assert!(a.quota().is_none(), "no headers for a shadow policy");
        }
        assert_eq!(shadow_count(&metrics, "p", "r"), 3);
        // Enforced policies of the same limiter are untouched.
        assert!(matches!(l.check("per-route", "r", &Permit::for_tests(p.clone())).await, Ok(Admitted::Quota(_))));
        assert!(l.check("per-route", "r", &Permit::for_tests(p.clone())).await.is_err());

        // Turning shadow off keeps the state: p is still over its limit, no fresh burst.
        let enforced = Limiter::with_clock(&config(CONFIG), Arc::clone(&metrics), Some(&l), clock.clone()).unwrap();
        assert!(matches!(
            enforced.check("per-team", "r", &Permit::for_tests(p.clone())).await,
            Err(Refused::Limited { .. })
        ));
        clock.advance(Duration::from_secs(1));
        assert!(matches!(enforced.check("per-team", "r", &Permit::for_tests(p.clone())).await, Ok(Admitted::Quota(_))));
        // And back on: still the same bucket, now empty again; counted in the same family.
        let again = Limiter::with_clock(&config(&shadow), Arc::clone(&metrics), Some(&enforced), clock).unwrap();
        assert!(matches!(
            again.check("per-team", "r", &Permit::for_tests(p.clone())).await,
            Ok(Admitted::ShadowLimited)
        ));
        assert_eq!(shadow_count(&metrics, "p", "r"), 4);
    }

    #[tokio::test]
    async fn eviction_bounds_keys() {
        let (l, clock) = limiter();
        for i in 0..100_000 {
            l.check("per-dag", "r", &Permit::for_tests(id(&format!("dag_{i}")))).await.unwrap();
        }
        assert_eq!(l.tracked_keys(), 100_000);
        clock.advance(Duration::from_millis(200));
        l.sweep();
        assert_eq!(l.tracked_keys(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn limiters_from_new_sweep_in_the_background() {
        let cfg = config("[[policies]]\nname = \"fast\"\nrate = \"1000000/s\"\nburst = 1\n");
        let l = Limiter::new(&cfg, Metrics::new(10), None).unwrap();
        for i in 0..100 {
            l.check("fast", "r", &Permit::for_tests(id(&format!("d{i}")))).await.unwrap();
        }
        assert_eq!(l.tracked_keys(), 100);
        // The limiter's clock is real: let the 1 µs buckets refill; tokio's (paused) clock then
        // jumps to the sweeper's next tick.
        std::thread::sleep(Duration::from_millis(2));
        tokio::time::sleep(local::SWEEP_INTERVAL * 2).await;
        for _ in 0..500 {
            if l.tracked_keys() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
            tokio::task::yield_now().await;
        }
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn header_helpers() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(sf_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(redis_key("airgate:", "per-dag", 0, "pipeline:x"), "airgate:per-dag:pipeline:x");
        assert_eq!(redis_key("airgate:", "per-dag", 2, "pipeline:x"), "airgate:per-dag:o1:pipeline:x");
    }
}
