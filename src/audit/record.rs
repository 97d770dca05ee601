//! The audit record: what is known about one request, and its JSON line (contract §7). Never a
//! token, secret, key or body.

use crate::{error::Outcome, identity::Identity};
use http::{HeaderValue, Method};
use serde::Serialize;
use std::{
    borrow::Cow,
    net::IpAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};

/// Everything known about one request, filled in as it passes the phases.
#[derive(Debug)]
pub struct Record {
    /// When the request head arrived.
    pub ts: SystemTime,
    /// Monotonic start, for durations.
    pub start: Instant,
    /// `X-Request-Id`.
    pub request_id: HeaderValue,
    /// What happened.
    pub outcome: Outcome,
    /// Why (refusals only).
    pub reason: Option<Cow<'static, str>>,
    /// Status sent.
    pub status: u16,
    /// Request method (`None` when hyper's parser refused the request line).
    pub method: Option<Method>,
    /// Route name, once matched.
    pub route: Option<Arc<str>>,
    /// Path (and query when `audit.include_query`).
    pub path: String,
    /// Upstream name, once known.
    pub upstream: Option<Arc<str>>,
    /// Issuer name, once known (also for failed verification).
    pub issuer: Option<Arc<str>>,
    /// The verified identity.
    pub identity: Option<Arc<Identity>>,
    /// `<namespace>/<name>` of the pod a refused Kubernetes token named.
    pub pod: Option<Arc<str>>,
    /// Client address (see `trusted_proxies`).
    pub client_ip: IpAddr,
    /// Time spent waiting for the upstream's response head.
    pub upstream_duration_ms: Option<f64>,
    /// W3C trace id.
    pub trace_id: String,
}

impl Record {
    /// An empty record (no allocation), left behind when a finished one is moved to the writer.
    pub(crate) fn vacant(start: Instant) -> Self {
        Record {
            ts: SystemTime::UNIX_EPOCH,
            start,
            request_id: HeaderValue::from_static(""),
            outcome: Outcome::Allowed,
            reason: None,
            status: 0,
            method: None,
            route: None,
            path: String::new(),
            upstream: None,
            issuer: None,
            identity: None,
            pod: None,
            client_ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            upstream_duration_ms: None,
            trace_id: String::new(),
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    request_id: &'a str,
    outcome: &'static str,
    reason: Option<&'a str>,
    status: u16,
    method: Option<&'a str>,
    route: Option<&'a str>,
    path: &'a str,
    upstream: Option<&'a str>,
    issuer: Option<&'a str>,
    principal: Option<&'a str>,
    pipeline: Option<&'a str>,
    task: Option<&'a str>,
    run_id: Option<&'a str>,
    try_number: Option<NumOrText<'a>>,
    map_index: Option<NumOrText<'a>>,
    team: Option<&'a str>,
    jti: Option<&'a str>,
    pod: Option<&'a str>,
    client_ip: String,
    duration_ms: f64,
    upstream_duration_ms: Option<f64>,
    bytes_in: u64,
    bytes_out: u64,
    trace_id: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum NumOrText<'a> {
    Num(i64),
    Text(&'a str),
}

fn num_or_text(s: Option<&str>) -> Option<NumOrText<'_>> {
    s.map(|s| s.parse().map_or(NumOrText::Text(s), NumOrText::Num))
}

/// Appends one audit line (JSON and a newline) for `r` to `out`.
pub fn encode(r: &Record, duration_ms: f64, bytes_in: u64, bytes_out: u64, out: &mut Vec<u8>) {
    {
        let id = r.identity.as_deref();
        let line = Line {
            ts: humantime::format_rfc3339_millis(r.ts).to_string(),
            request_id: r.request_id.to_str().unwrap_or(""),
            outcome: r.outcome.as_str(),
            reason: r.reason.as_deref(),
            status: r.status,
            method: r.method.as_ref().map(Method::as_str),
            route: r.route.as_deref(),
            path: &r.path,
            upstream: r.upstream.as_deref(),
            issuer: r.issuer.as_deref().or(id.map(|i| &*i.issuer)),
            principal: id.and_then(|i| i.principal.as_deref()),
            pipeline: id.map(|i| i.pipeline.as_str()),
            task: id.and_then(|i| i.task.as_deref()),
            run_id: id.and_then(|i| i.run_id.as_deref()),
            try_number: num_or_text(id.and_then(|i| i.try_number.as_deref())),
            map_index: num_or_text(id.and_then(|i| i.map_index.as_deref())),
            team: id.and_then(|i| i.team.as_deref()),
            jti: id.and_then(|i| i.jti.as_deref()),
            pod: r.pod.as_deref().or(id.and_then(|i| i.pod.as_deref())),
            client_ip: r.client_ip.to_string(),
            duration_ms: round3(duration_ms),
            upstream_duration_ms: r.upstream_duration_ms.map(round3),
            bytes_in,
            bytes_out,
            trace_id: &r.trace_id,
        };
        // Serialising plain strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &line);
        out.push(b'\n');
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
