//! airgate's own upstream token lifecycle (contract §5): one background task per upstream fetches
//! a token at start, refreshes it ahead of expiry on a pure schedule ([`refresh_in`]) with
//! jitter, retries failures with the shared jittered backoff ([`Timing::backoff`]) while the old token
//! stays in use until it really expires (less a small margin), and publishes the result in a
//! lock-free cell. Requests only read that cell ([`CredentialSource::header`]): no I/O, no await,
//! never a fetch, never an expired token. Single flight follows: the task is the only fetcher.
//!
//! Time is `tokio::time::Instant` throughout, so tests drive the lifecycle with a paused clock;
//! token sources report what is left of a token as a duration, mapped onto this clock on arrival.

use super::azure::AzureTokenSource;
use crate::{
    backoff::Backoff,
    config::{Secret, WatchedSecret, credential::Credential},
    metrics::Metrics,
};
use arc_swap::ArcSwap;
use bytes::{BufMut, BytesMut};
use http::HeaderValue;
use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    sync::{Notify, oneshot, watch},
    time::Instant,
};

/// A freshly issued token.
pub struct Issued {
    /// The access token.
    pub token: Secret,
    /// What is left of its lifetime as it arrived.
    pub expires_in: Duration,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued").field("token", &self.token).field("expires_in", &self.expires_in).finish()
    }
}

/// Something that fetches one new token (azure_identity in production, fakes in tests).
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug + 'static {
    /// Fetches a token. The error is one log line without secrets.
    async fn fetch(&self) -> Result<Issued, String>;
}

/// Knobs of the lifecycle. `Default` is what production uses; tests shorten them.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Outer deadline of one fetch. The SDK's IMDS retry policy alone can take ~72 s.
    pub fetch_timeout: Duration,
    /// First retry delay after a failed fetch; doubles per failure.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// At most one forced refresh per this interval ([`CredentialSource::upstream_rejected`]).
    pub rejected_interval: Duration,
    /// How often `airgate_upstream_token_expiry_seconds` is brought up to date.
    pub gauge_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            fetch_timeout: Duration::from_secs(20),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            rejected_interval: Duration::from_secs(10),
            gauge_interval: Duration::from_secs(5),
        }
    }
}

/// Refresh when this fraction of the lifetime is left, less up to [`REFRESH_JITTER`].
const REFRESH_LEFT: f64 = 0.5;
/// Spread of the refresh point, as a fraction of the lifetime, so replicas do not refresh together.
const REFRESH_JITTER: f64 = 0.1;
/// Never schedule refreshes closer than this (nor closer than a quarter of the lifetime).
const MIN_REFRESH_IN: Duration = Duration::from_secs(1);
/// A token with less than this left on arrival is treated as a failed fetch.
const MIN_LIFETIME: Duration = Duration::from_secs(1);
/// The largest safety margin before expiry (clock skew, time in flight).
const MAX_SAFETY: Duration = Duration::from_secs(30);

/// How long after `now` to refresh a token that expires at `expires_at` and had `lifetime` left
/// when it arrived; `jitter` in `[0, 1]`. The refresh falls when 40–50 % of the lifetime is left:
/// early enough that the rest of the lifetime absorbs an identity outage with many retries, late
/// enough to cost a handful of fetches per token. (A token endpoint that hands back the same
/// token — IMDS caches — just halves the wait each time: a logarithmic number of cheap calls.)
pub fn refresh_in(now: Instant, expires_at: Instant, lifetime: Duration, jitter: f64) -> Duration {
    let left = lifetime.mul_f64(REFRESH_LEFT - REFRESH_JITTER * jitter.clamp(0.0, 1.0));
    let at = expires_at.checked_sub(left).unwrap_or(now);
    at.saturating_duration_since(now).max(MIN_REFRESH_IN.min(lifetime / 4))
}

/// The margin before expiry after which a token is no longer sent: a tenth of the lifetime, at
/// most 30 s, so it scales down for short-lived tokens.
pub fn safety_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(MAX_SAFETY)
}

impl Timing {
    /// The retry schedule: the shared [`Backoff`] from `backoff_initial` up to `backoff_max`.
    pub fn backoff(&self) -> Backoff {
        Backoff { initial: self.backoff_initial, max: self.backoff_max }
    }
}

/// No unexpired token is held: nothing may be sent upstream (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no valid upstream token; retry in {retry_after} s")]
pub struct NoCredential {
    /// Whole seconds until the next fetch is expected to have succeeded.
    pub retry_after: u64,
}

/// The credential of one upstream, as the request path sees it.
pub struct CredentialSource {
    kind: Kind,
}

enum Kind {
    None,
    Static(Arc<WatchedSecret<HeaderValue>>),
    Fetched {
        shared: Arc<Shared>,
        // Dropping the sender (with the source) ends the refresh task, even mid-sleep or mid-fetch.
        _stop: oneshot::Sender<()>,
    },
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::None => "none".to_owned(),
            Kind::Static(_) => "static".to_owned(),
            Kind::Fetched { shared, .. } => format!("fetched for upstream {}", shared.upstream),
        };
        f.debug_struct("CredentialSource").field("kind", &kind).finish_non_exhaustive()
    }
}

/// What the refresh task publishes.
struct State {
    token: Option<Current>,
    last_error: Option<Arc<str>>,
    /// When the task will fetch next, while it is retrying (for `Retry-After`).
    retry_at: Option<Instant>,
}

struct Current {
    header: HeaderValue,
    expires_at: Instant,
    usable_until: Instant,
}

struct Shared {
    upstream: Arc<str>,
    state: ArcSwap<State>,
    changed: watch::Sender<()>,
    wake: Notify,
    last_forced: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
    timing: Timing,
}

impl CredentialSource {
    /// Starts the source: first fetch right away in the background, then refresh ahead of expiry
    /// (the background task ends when the source is dropped). Fails on settings that can never
    /// work (missing workload identity settings, unreadable static token). Needs a Tokio runtime.
    pub fn start(upstream: Arc<str>, credential: &Credential, metrics: Arc<Metrics>) -> Result<Arc<Self>, String> {
        Self::start_with(upstream, credential, metrics, Timing::default())
    }

    /// [`CredentialSource::start`] with explicit timing.
    pub fn start_with(
        upstream: Arc<str>,
        credential: &Credential,
        metrics: Arc<Metrics>,
        timing: Timing,
    ) -> Result<Arc<Self>, String> {
        match credential {
            Credential::None => Ok(Arc::new(CredentialSource { kind: Kind::None })),
            Credential::Static { token } => {
                let errors = metrics.token_refreshes.with_label_values(&[&*upstream, "error"]);
                let cell = WatchedSecret::start(
                    &format!("upstream {upstream}: static token"),
                    token,
                    |s| bearer(s).map_err(str::to_owned),
                    move || errors.inc(),
                )?;
                Ok(Arc::new(CredentialSource { kind: Kind::Static(cell) }))
            }
            Credential::ManagedIdentity(_) | Credential::WorkloadIdentity(_) | Credential::ClientSecret(_) => {
                let source = AzureTokenSource::new(credential)?
                    .ok_or_else(|| format!("upstream {upstream}: not an Azure credential"))?;
                Ok(Self::start_source(upstream, Arc::new(source), metrics, timing))
            }
        }
    }

    /// Starts the lifecycle around any [`TokenSource`].
    pub fn start_source(
        upstream: Arc<str>,
        source: Arc<dyn TokenSource>,
        metrics: Arc<Metrics>,
        timing: Timing,
    ) -> Arc<Self> {
        let shared = Arc::new(Shared {
            upstream,
            state: ArcSwap::from_pointee(State { token: None, last_error: None, retry_at: None }),
            changed: watch::channel(()).0,
            wake: Notify::new(),
            last_forced: Mutex::new(None),
            metrics,
            timing,
        });
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(refresh_loop(shared.clone(), source, stopped));
        Arc::new(CredentialSource { kind: Kind::Fetched { shared, _stop: stop } })
    }

    /// The Authorization header value for the next request: sync, lock-free, no I/O, no await.
    /// `Ok(None)` for kind `none`; [`NoCredential`] when no unexpired token is held.
    pub fn header(&self) -> Result<Option<HeaderValue>, NoCredential> {
        match &self.kind {
            Kind::None => Ok(None),
            Kind::Static(cell) => Ok(Some(HeaderValue::clone(&cell.get()))),
            Kind::Fetched { shared, .. } => shared.header(Instant::now()).map(Some),
        }
    }

    /// For `/readyz`: why this upstream cannot be called now, if it cannot.
    pub fn not_ready(&self) -> Option<String> {
        let Kind::Fetched { shared, .. } = &self.kind else { return None };
        if shared.header(Instant::now()).is_ok() {
            return None;
        }
        let state = shared.state.load();
        Some(match &state.last_error {
            Some(e) => format!("upstream {}: no valid token (last error: {e})", shared.upstream),
            None => format!("upstream {}: no valid token (first fetch pending)", shared.upstream),
        })
    }

    /// The upstream answered 401 with `WWW-Authenticate: … error="invalid_token"`: refresh now.
    /// At most once per [`Timing::rejected_interval`]; the current token stays in use meanwhile.
    pub fn upstream_rejected(&self) {
        let Kind::Fetched { shared, .. } = &self.kind else { return };
        let now = Instant::now();
        let mut last = shared.last_forced.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| now.saturating_duration_since(at) < shared.timing.rejected_interval) {
            return;
        }
        *last = Some(now);
        drop(last);
        tracing::info!(upstream = %shared.upstream, "upstream rejected the token; refreshing now");
        shared.wake.notify_one();
    }

    /// Waits until a valid token is held, at most `timeout`; whether one is.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let Kind::Fetched { shared, .. } = &self.kind else { return true };
        let mut changed = shared.changed.subscribe();
        let ready = async {
            loop {
                if shared.header(Instant::now()).is_ok() {
                    return true;
                }
                if changed.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, ready).await.unwrap_or(false)
    }
}

impl Shared {
    fn header(&self, now: Instant) -> Result<HeaderValue, NoCredential> {
        let state = self.state.load();
        match &state.token {
            Some(t) if now < t.usable_until => Ok(t.header.clone()),
            _ => {
                // The next attempt plus a second for the fetch itself; at least 1 s.
                let wait = state.retry_at.map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
                Err(NoCredential { retry_after: wait.as_secs() + 1 })
            }
        }
    }

    fn publish(&self, state: State) {
        self.state.store(Arc::new(state));
        self.changed.send_replace(());
    }

    fn update_gauge(&self, now: Instant) {
        let state = self.state.load();
        let left = state.token.as_ref().map_or(0.0, |t| t.expires_at.saturating_duration_since(now).as_secs_f64());
        self.metrics.token_expiry.with_label_values(&[&*self.upstream]).set(left);
    }

    fn count(&self, result: &str) {
        self.metrics.token_refreshes.with_label_values(&[&*self.upstream, result]).inc();
    }
}

/// Whether an upstream answer says our token was refused (RFC 6750): 401 with a
/// `WWW-Authenticate` challenge carrying `error="invalid_token"`. The request path calls
/// [`CredentialSource::upstream_rejected`] when this holds.
pub fn rejects_token(status: http::StatusCode, headers: &http::HeaderMap) -> bool {
    status == http::StatusCode::UNAUTHORIZED
        && headers.get_all(http::header::WWW_AUTHENTICATE).iter().any(|v| {
            let v = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
            v.contains("error=\"invalid_token\"") || v.contains("error=invalid_token")
        })
}

/// `Bearer <token>`, marked sensitive. The error never contains the token.
fn bearer(token: &Secret) -> Result<HeaderValue, &'static str> {
    if token.expose().is_empty() {
        return Err("the token is empty");
    }
    let mut buf = BytesMut::with_capacity(7 + token.expose().len());
    buf.put_slice(b"Bearer ");
    buf.put_slice(token.expose());
    let mut value =
        HeaderValue::from_maybe_shared(buf.freeze()).map_err(|_| "the token has bytes not allowed in a header")?;
    value.set_sensitive(true);
    Ok(value)
}

/// The only place tokens are fetched: one task per upstream, so one fetch at a time.
async fn refresh_loop(shared: Arc<Shared>, source: Arc<dyn TokenSource>, mut stopped: oneshot::Receiver<()>) {
    let timing = shared.timing.clone();
    let mut next = Instant::now();
    let mut failures: u32 = 0;
    loop {
        // Sleep until the next fetch, keeping the expiry gauge current, unless woken early.
        loop {
            let now = Instant::now();
            shared.update_gauge(now);
            if now >= next {
                break;
            }
            tokio::select! {
                _ = &mut stopped => return,
                () = tokio::time::sleep_until(next.min(now + timing.gauge_interval)) => {}
                () = shared.wake.notified() => break,
            }
        }

        let fetched = tokio::select! {
            _ = &mut stopped => return,
            r = tokio::time::timeout(timing.fetch_timeout, source.fetch()) => r,
        };
        let now = Instant::now();
        let result = match fetched {
            Err(_) => Err(("timeout", format!("no answer within {:?}", timing.fetch_timeout))),
            Ok(Err(e)) => Err(("error", e)),
            Ok(Ok(issued)) if issued.expires_in < MIN_LIFETIME => {
                Err(("error", format!("the token endpoint returned an expired token ({:?} left)", issued.expires_in)))
            }
            Ok(Ok(issued)) => {
                bearer(&issued.token).map(|h| (h, issued.expires_in)).map_err(|e| ("error", e.to_owned()))
            }
        };
        match result {
            Ok((header, lifetime)) => {
                shared.count("success");
                if failures > 0 || shared.state.load().token.is_none() {
                    // Worth an operator's eye: the first token, or the end of an outage.
                    tracing::info!(upstream = %shared.upstream, expires_in = ?lifetime, failures, "upstream token acquired");
                }
                failures = 0;
                let expires_at = now + lifetime;
                let usable_until = expires_at - safety_margin(lifetime);
                next = now + refresh_in(now, expires_at, lifetime, fastrand::f64());
                shared.publish(State {
                    token: Some(Current { header, expires_at, usable_until }),
                    last_error: None,
                    retry_at: None,
                });
                tracing::debug!(
                    upstream = %shared.upstream,
                    expires_in = ?lifetime,
                    refresh_in = ?next.saturating_duration_since(now),
                    "upstream token refreshed"
                );
            }
            Err((result, error)) => {
                shared.count(result);
                failures = failures.saturating_add(1);
                let delay = timing.backoff().delay(failures, fastrand::f64());
                next = now + delay;
                let old = shared.state.load_full();
                let token = old.token.as_ref().filter(|t| now < t.usable_until).map(|t| Current {
                    header: t.header.clone(),
                    expires_at: t.expires_at,
                    usable_until: t.usable_until,
                });
                let valid_for = token.as_ref().map(|t| t.usable_until.saturating_duration_since(now));
                tracing::warn!(
                    upstream = %shared.upstream,
                    %error,
                    failures,
                    retry_in = ?delay,
                    current_token_valid_for = ?valid_for,
                    "upstream token refresh failed"
                );
                shared.publish(State { token, last_error: Some(error.into()), retry_at: Some(next) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn refresh_falls_when_forty_to_fifty_percent_is_left() {
        let now = Instant::now();
        let hour = S(3600);
        assert_eq!(refresh_in(now, now + hour, hour, 0.0), S(1800));
        assert_eq!(refresh_in(now, now + hour, hour, 1.0), S(2160));
        // A token received earlier: the schedule is relative to its expiry.
        assert_eq!(refresh_in(now + S(1000), now + hour, hour, 0.0), S(800));
        // Overdue: refresh soon, but not in a hot loop.
        assert_eq!(refresh_in(now + S(3000), now + hour, hour, 0.0), S(1));
        // Short-lived tokens scale down, floor included.
        assert_eq!(refresh_in(now, now + S(6), S(6), 0.0), S(3));
        assert_eq!(refresh_in(now, now + S(2), S(2), 1.0), Duration::from_millis(1200));
        assert_eq!(refresh_in(now + S(2), now + S(2), S(2), 0.0), Duration::from_millis(500));
    }

    #[test]
    fn refresh_always_precedes_the_safety_margin() {
        for secs in [2u64, 6, 60, 300, 3600, 86_400] {
            for jitter in [0.0, 0.5, 1.0] {
                let now = Instant::now();
                let lifetime = S(secs);
                let at = now + refresh_in(now, now + lifetime, lifetime, jitter);
                assert!(at < now + lifetime - safety_margin(lifetime), "{secs} s, jitter {jitter}");
            }
        }
        assert_eq!(safety_margin(S(6)), Duration::from_millis(600));
        assert_eq!(safety_margin(S(86_400)), S(30));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_equal_jitter() {
        let t = Timing::default().backoff();
        assert_eq!(t.delay(1, 1.0), S(1));
        assert_eq!(t.delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(t.delay(4, 1.0), S(8));
        assert_eq!(t.delay(7, 1.0), S(60));
        assert_eq!(t.delay(u32::MAX, 1.0), S(60));
    }

    /// A fake source: scripted results, counts calls, takes `delay` per fetch.
    #[derive(Debug)]
    struct Script {
        calls: AtomicUsize,
        results: Mutex<Vec<Result<Duration, String>>>,
        delay: Duration,
    }

    impl Script {
        fn new(results: Vec<Result<u64, &str>>, delay: Duration) -> Arc<Self> {
            let mut results: Vec<_> = results.into_iter().map(|r| r.map(S).map_err(str::to_owned)).collect();
            results.reverse();
            Arc::new(Script { calls: AtomicUsize::new(0), results: Mutex::new(results), delay })
        }
    }

    #[async_trait::async_trait]
    impl TokenSource for Script {
        async fn fetch(&self) -> Result<Issued, String> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            let next = self.results.lock().unwrap().pop().unwrap_or_else(|| Err("script over".into()));
            next.map(|expires_in| Issued { token: Secret::new(format!("tok{n}").into_bytes()), expires_in })
        }
    }

    fn timing() -> Timing {
        Timing {
            fetch_timeout: S(5),
            backoff_initial: S(1),
            backoff_max: S(8),
            rejected_interval: S(10),
            gauge_interval: S(1),
        }
    }

    fn start(script: &Arc<Script>) -> (Arc<CredentialSource>, Arc<Metrics>) {
        let metrics = Metrics::new(10);
        let src = CredentialSource::start_source("apim".into(), script.clone(), metrics.clone(), timing());
        (src, metrics)
    }

    fn token(src: &CredentialSource) -> Option<String> {
        src.header().ok().flatten().map(|h| h.to_str().unwrap().to_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_before_the_first_token_cause_one_fetch() {
        let script = Script::new(vec![Ok(3600)], Duration::from_millis(200));
        let (src, metrics) = start(&script);
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let src = src.clone();
            tasks.push(tokio::spawn(async move { src.header().map(|_| ()) }));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Err(NoCredential { retry_after: 1 })));
        }
        assert!(src.not_ready().unwrap().contains("first fetch pending"));
        assert!(src.wait_ready(S(5)).await);
        assert_eq!(token(&src).as_deref(), Some("Bearer tok1"));
        assert!(src.header().unwrap().unwrap().is_sensitive());
        assert_eq!(script.calls.load(Ordering::SeqCst), 1);
        assert_eq!(metrics.token_refreshes.with_label_values(&["apim", "success"]).get(), 1);
        assert!(src.not_ready().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn short_tokens_are_refreshed_ahead_and_never_served_expired() {
        let script = Script::new(vec![Ok(6); 20], Duration::ZERO);
        let (src, metrics) = start(&script);
        assert!(src.wait_ready(S(1)).await);
        let mut issued_at = std::collections::HashMap::new();
        let begin = Instant::now();
        while Instant::now() < begin + S(60) {
            let t = token(&src).expect("a token at all times");
            let first_seen = *issued_at.entry(t.clone()).or_insert_with(Instant::now);
            // Every token is served at most its lifetime less the safety margin.
            assert!(Instant::now() < first_seen + S(6) - safety_margin(S(6)), "{t} served too long");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // One refresh per 3–3.6 s over a minute.
        let calls = script.calls.load(Ordering::SeqCst);
        assert!((17..=21).contains(&calls), "{calls}");
        let gauge = metrics.token_expiry.with_label_values(&["apim"]).get();
        assert!(gauge > 0.0 && gauge <= 6.0, "{gauge}");
    }

    #[tokio::test(start_paused = true)]
    async fn down_at_start_then_recovery() {
        let script = Script::new(vec![Err("connection refused"), Err("connection refused"), Ok(3600)], Duration::ZERO);
        let (src, metrics) = start(&script);
        tokio::time::sleep(Duration::from_millis(10)).await;
        match src.header() {
            Err(NoCredential { retry_after }) => assert!((1..=2).contains(&retry_after)),
            other => panic!("{other:?}"),
        }
        let why = src.not_ready().unwrap();
        assert_eq!(why, "upstream apim: no valid token (last error: connection refused)");
        assert!(src.wait_ready(S(10)).await);
        assert_eq!(token(&src).as_deref(), Some("Bearer tok3"));
        assert_eq!(metrics.token_refreshes.with_label_values(&["apim", "error"]).get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn outage_later_keeps_the_valid_token_until_it_expires() {
        let mut script = vec![Ok(100)];
        script.extend(std::iter::repeat_n(Err("503 from Entra ID"), 100));
        let script = Script::new(script, Duration::ZERO);
        let (src, _) = start(&script);
        assert!(src.wait_ready(S(1)).await);
        let start = Instant::now();
        // Refresh starts failing after 50–60 s; the token keeps serving until 100 s − 10 s.
        tokio::time::sleep(S(89)).await;
        assert_eq!(token(&src).as_deref(), Some("Bearer tok1"));
        assert!(script.calls.load(Ordering::SeqCst) > 3, "retries with backoff");
        tokio::time::sleep_until(start + S(90) + Duration::from_millis(10)).await;
        assert!(matches!(src.header(), Err(NoCredential { .. })));
        assert!(src.not_ready().unwrap().contains("503 from Entra ID"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_endpoint_hits_the_outer_timeout() {
        let script = Script::new(vec![Ok(3600)], S(3600));
        let (src, metrics) = start(&script);
        tokio::time::sleep(S(6)).await;
        assert_eq!(metrics.token_refreshes.with_label_values(&["apim", "timeout"]).get(), 1);
        assert!(src.not_ready().unwrap().contains("no answer within 5s"));
    }

    #[tokio::test(start_paused = true)]
    async fn rejection_forces_one_refresh_per_interval() {
        let script = Script::new(vec![Ok(3600); 5], Duration::ZERO);
        let (src, _) = start(&script);
        assert!(src.wait_ready(S(1)).await);
        src.upstream_rejected();
        src.upstream_rejected();
        tokio::time::sleep(S(1)).await;
        assert_eq!(script.calls.load(Ordering::SeqCst), 2);
        assert_eq!(token(&src).as_deref(), Some("Bearer tok2"));
        tokio::time::sleep(S(10)).await;
        src.upstream_rejected();
        tokio::time::sleep(S(1)).await;
        assert_eq!(script.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_source_ends_the_task() {
        let script = Script::new(vec![Ok(4); 100], Duration::ZERO);
        let (src, _) = start(&script);
        assert!(src.wait_ready(S(1)).await);
        drop(src);
        let calls = script.calls.load(Ordering::SeqCst);
        tokio::time::sleep(S(60)).await;
        assert_eq!(script.calls.load(Ordering::SeqCst), calls);
        assert_eq!(Arc::strong_count(&script), 1);
    }

    #[test]
    fn only_invalid_token_challenges_count_as_rejection() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"apim\", error=\"invalid_token\", error_description=\"expired\""),
        );
        assert!(rejects_token(http::StatusCode::UNAUTHORIZED, &h));
        assert!(!rejects_token(http::StatusCode::FORBIDDEN, &h));
        h.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"apim\""));
        assert!(!rejects_token(http::StatusCode::UNAUTHORIZED, &h));
        assert!(!rejects_token(http::StatusCode::UNAUTHORIZED, &http::HeaderMap::new()));
    }

    #[tokio::test]
    async fn static_and_none() {
        let metrics = Metrics::new(10);
        let none = CredentialSource::start("u".into(), &Credential::None, metrics.clone()).unwrap();
        assert!(none.header().unwrap().is_none());
        assert!(none.not_ready().is_none() && none.wait_ready(S(0)).await);
        let token = crate::config::SecretRef::Inline(Secret::new(b"dev-token".to_vec()));
        let fixed = CredentialSource::start("u".into(), &Credential::Static { token }, metrics).unwrap();
        assert_eq!(token_str(&fixed), "Bearer dev-token");
        assert!(!format!("{fixed:?}").contains("dev-token"));
    }

    fn token_str(src: &CredentialSource) -> String {
        token(src).unwrap()
    }
}
