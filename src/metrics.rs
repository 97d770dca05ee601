//! Metric families (contract §7), registered once into a [`Registry`] owned by [`Metrics`] and
//! handed to every constructor that records something. Label values are bounded: issuers,
//! routes, upstreams and policies by configuration name, pipelines folded into `_other` beyond
//! `metrics.max_pipelines`. A request is counted in one place, [`Metrics::observe_request`]
//! (called by the audit's request lifecycle when the response head is ready).

use http::StatusCode;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use std::{
    collections::HashSet,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

/// The label value that pipelines beyond `metrics.max_pipelines` are folded into.
pub const OTHER_PIPELINE: &str = "_other";

/// The label value where a request has no route or no identity.
const NONE: &str = "_none";

/// Every metric family airgate exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `airgate_requests_total{pipeline,route,code,outcome}`.
    pub requests: IntCounterVec,
    /// `airgate_request_duration_seconds{route,outcome}`.
    pub request_duration: HistogramVec,
    /// `airgate_rate_limited_total{pipeline,route}`.
    pub rate_limited: IntCounterVec,
    /// `airgate_rate_limit_shadow_total{pipeline,route}`: requests a shadow policy would have refused.
    pub rate_limit_shadow: IntCounterVec,
    /// `airgate_auth_failures_total{issuer,reason}`.
    pub auth_failures: IntCounterVec,
    /// `airgate_upstream_request_duration_seconds{upstream,code}`.
    pub upstream_duration: HistogramVec,
    /// `airgate_upstream_token_refreshes_total{upstream,result}`.
    pub token_refreshes: IntCounterVec,
    /// `airgate_upstream_token_expiry_seconds{upstream}`: seconds the current token has left.
    pub token_expiry: GaugeVec,
    /// `airgate_subscription_key_reload_errors_total{upstream}`: a key file could not be re-read.
    pub subscription_key_errors: IntCounterVec,
    /// `airgate_jwks_refreshes_total{issuer,result}`.
    pub jwks_refreshes: IntCounterVec,
    /// `airgate_jwks_age_seconds{issuer}`: age of the key set in use.
    pub jwks_age: GaugeVec,
    /// `airgate_ratelimit_backend_errors_total{backend}`.
    pub ratelimit_backend_errors: IntCounterVec,
    /// `airgate_policy_dry_run_denials_total{route}`.
    pub dry_run_denials: IntCounterVec,
    /// `airgate_config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
    /// `airgate_audit_dropped_total`.
    pub audit_dropped: IntCounter,
    /// `airgate_in_flight_requests`.
    pub in_flight: IntGauge,
    /// `airgate_pod_lookups_total{issuer,result}` (contract §9).
    pub pod_lookups: IntCounterVec,
    pipelines: PipelineLabels,
}

impl Metrics {
    /// Creates and registers every family in a fresh registry.
    pub fn new(max_pipelines: usize) -> Arc<Self> {
        let registry = Registry::new();
        let latency = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let r = &registry;
        Arc::new(Metrics {
            requests: counter(
                r,
                "airgate_requests_total",
                "Requests answered, by pipeline, route, status code and outcome.",
                &["pipeline", "route", "code", "outcome"],
            ),
            request_duration: histogram(
                r,
                "airgate_request_duration_seconds",
                "Time from request head to response head, by route and outcome.",
                &["route", "outcome"],
                latency.clone(),
            ),
            rate_limited: counter(
                r,
                "airgate_rate_limited_total",
                "Requests refused by a rate limit.",
                &["pipeline", "route"],
            ),
            rate_limit_shadow: counter(
                r,
                "airgate_rate_limit_shadow_total",
                "Requests a shadow rate-limit policy would have refused (forwarded anyway).",
                &["pipeline", "route"],
            ),
            auth_failures: counter(
                r,
                "airgate_auth_failures_total",
                "Requests whose identity could not be established.",
                &["issuer", "reason"],
            ),
            upstream_duration: histogram(
                r,
                "airgate_upstream_request_duration_seconds",
                "Time from forwarding to the upstream's response head.",
                &["upstream", "code"],
                latency,
            ),
            token_refreshes: counter(
                r,
                "airgate_upstream_token_refreshes_total",
                "Upstream credential fetches, by result.",
                &["upstream", "result"],
            ),
            token_expiry: gauge(
                r,
                "airgate_upstream_token_expiry_seconds",
                "Seconds until the upstream token in use expires.",
                &["upstream"],
            ),
            subscription_key_errors: counter(
                r,
                "airgate_subscription_key_reload_errors_total",
                "Subscription key files that could not be re-read (the last good key stays in use).",
                &["upstream"],
            ),
            jwks_refreshes: counter(
                r,
                "airgate_jwks_refreshes_total",
                "Key set fetches, by issuer and result.",
                &["issuer", "result"],
            ),
            jwks_age: gauge(
                r,
                "airgate_jwks_age_seconds",
                "Seconds since the key set in use was fetched.",
                &["issuer"],
            ),
            ratelimit_backend_errors: counter(
                r,
                "airgate_ratelimit_backend_errors_total",
                "Rate-limit decisions the backend could not make.",
                &["backend"],
            ),
            dry_run_denials: counter(
                r,
                "airgate_policy_dry_run_denials_total",
                "Requests a dry-run route would have denied.",
                &["route"],
            ),
            config_reloads: counter(
                r,
                "airgate_config_reloads_total",
                "Configuration reloads, by result.",
                &["result"],
            ),
            audit_dropped: {
                let c = IntCounter::new(
                    "airgate_audit_dropped_total",
                    "Audit records dropped because the writer fell behind.",
                )
                .unwrap_or_else(|_| unreachable_metric());
                register(r, c.clone());
                c
            },
            in_flight: {
                let g = IntGauge::new("airgate_in_flight_requests", "Requests being handled now.")
                    .unwrap_or_else(|_| unreachable_metric());
                register(r, g.clone());
                g
            },
            pod_lookups: counter(
                r,
                "airgate_pod_lookups_total",
                "Requests that needed a Kubernetes pod, by how it was found (cached, fetched, mismatch, not_found, error).",
                &["issuer", "result"],
            ),
            pipelines: PipelineLabels::new(max_pipelines),
            registry,
        })
    }

    /// The label value for a pipeline: itself while fewer than `max_pipelines` are known, else `_other`.
    pub fn pipeline_label<'a>(&self, pipeline: &'a str) -> &'a str {
        if self.pipelines.admit(pipeline) { pipeline } else { OTHER_PIPELINE }
    }

    /// Counts one answered request: `airgate_requests_total`, `airgate_request_duration_seconds`
    /// (`elapsed` since the request head) and, when `rate_limited`, `airgate_rate_limited_total`.
    /// `route` and `pipeline` are `None` where the request has none (label `_none`); the pipeline
    /// is folded by [`Metrics::pipeline_label`].
    pub fn observe_request(
        &self,
        route: Option<&str>,
        pipeline: Option<&str>,
        code: StatusCode,
        outcome: &str,
        rate_limited: bool,
        elapsed: Duration,
    ) {
        let route = route.unwrap_or(NONE);
        let pipeline = pipeline.map_or(NONE, |p| self.pipeline_label(p));
        self.requests.with_label_values(&[pipeline, route, code.as_str(), outcome]).inc();
        self.request_duration.with_label_values(&[route, outcome]).observe(elapsed.as_secs_f64());
        if rate_limited {
            self.rate_limited.with_label_values(&[pipeline, route]).inc();
        }
    }

    /// The registry, for the admin endpoint and tests.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every family in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cold]
fn unreachable_metric<T>() -> T {
    // Metric names and help strings above are static and valid; prometheus only rejects invalid ones.
    panic!("static metric definition rejected by prometheus")
}

fn register<C: prometheus::core::Collector + 'static>(registry: &Registry, c: C) {
    // A fresh registry never holds a duplicate of a static name.
    let _ = registry.register(Box::new(c));
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric());
    register(r, c.clone());
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric());
    register(r, g.clone());
    g
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|_| unreachable_metric());
    register(r, h.clone());
    h
}

/// The set of pipeline names admitted as label values, bounded at `max`.
#[derive(Debug)]
struct PipelineLabels {
    max: usize,
    count: AtomicUsize,
    known: RwLock<HashSet<Box<str>>>,
}

impl PipelineLabels {
    fn new(max: usize) -> Self {
        PipelineLabels { max, count: AtomicUsize::new(0), known: RwLock::new(HashSet::new()) }
    }

    fn admit(&self, pipeline: &str) -> bool {
        if let Ok(known) = self.known.read()
            && known.contains(pipeline)
        {
            return true;
        }
        if self.count.load(Ordering::Relaxed) >= self.max {
            return false;
        }
        let Ok(mut known) = self.known.write() else { return false };
        if known.len() >= self.max {
            return known.contains(pipeline);
        }
        known.insert(pipeline.into());
        self.count.store(known.len(), Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_beyond_the_cap_fold_into_other() {
        let m = Metrics::new(2);
        assert_eq!(m.pipeline_label("a"), "a");
        assert_eq!(m.pipeline_label("b"), "b");
        assert_eq!(m.pipeline_label("c"), OTHER_PIPELINE);
        assert_eq!(m.pipeline_label("a"), "a");
    }

    #[test]
    fn a_request_is_counted_with_its_labels() {
        let m = Metrics::new(10);
        let second = Duration::from_secs(1);
        m.observe_request(Some("r"), Some("p"), StatusCode::TOO_MANY_REQUESTS, "rate_limited", true, second);
        m.observe_request(None, None, StatusCode::NOT_FOUND, "no_route", false, second);
        assert_eq!(m.requests.with_label_values(&["p", "r", "429", "rate_limited"]).get(), 1);
        assert_eq!(m.rate_limited.with_label_values(&["p", "r"]).get(), 1);
        assert_eq!(m.requests.with_label_values(&[NONE, NONE, "404", "no_route"]).get(), 1);
        assert_eq!(m.rate_limited.with_label_values(&[NONE, NONE]).get(), 0);
        assert_eq!(m.request_duration.with_label_values(&[NONE, "no_route"]).get_sample_count(), 1);
    }

    #[test]
    fn renders_text_format() {
        let m = Metrics::new(10);
        m.requests.with_label_values(&["p", "r", "200", "allowed"]).inc();
        let text = m.render();
        assert!(text.contains("# TYPE airgate_requests_total counter"));
        assert!(text.contains("airgate_requests_total{code=\"200\",outcome=\"allowed\",pipeline=\"p\",route=\"r\"} 1"));
    }
}
