//! Audit: one JSON object per line per request (contract §7), written when the response has been
//! sent or the client went away. Records leave the request path through a bounded queue; a
//! writer thread of its own drains it every few milliseconds, serialises and writes in batches.
//! A full queue drops the record and counts `airgate_audit_dropped_total` rather than slowing
//! requests. Never a token, secret, key or body.

use crate::{
    body::{Body, BoxError, Counters},
    config::{self, AuditSink},
    error::Outcome,
    identity::Identity,
    metrics::Metrics,
};
use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body::{Frame, SizeHint};
use serde::Serialize;
use std::{
    borrow::Cow,
    io::Write,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
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

/// A finished record with its end-of-response facts.
#[derive(Debug)]
struct Done {
    record: Record,
    duration_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Done {
    fn write_json(&self, out: &mut Vec<u8>) {
        encode(&self.record, self.duration_ms, self.bytes_in, self.bytes_out, out);
    }
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

/// How often the writer thread drains the queue. Requests never wake the writer: they only
/// push into a bounded queue, so an audit record costs no context switch on the request path.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// The request path's handle on the audit stream.
#[derive(Debug, Clone)]
pub struct Auditor {
    tx: std::sync::mpsc::SyncSender<Box<Done>>,
    metrics: Arc<Metrics>,
}

impl Auditor {
    /// Opens the sink and starts the writer thread. The thread ends, after writing everything
    /// queued, when the returned [`Closer`] is closed.
    pub fn start(cfg: &config::Audit, metrics: Arc<Metrics>) -> Result<(Self, Closer), String> {
        let sink: Box<dyn Write + Send> = match &cfg.sink {
            AuditSink::Stdout => Box::new(std::io::stdout()),
            AuditSink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("audit file {}: {e}", path.display()))?,
            ),
        };
        // The queue holds boxes: std's bounded channel allocates all its slots up front, and a
        // whole record per slot would cost tens of MiB of idle memory.
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("airgate-audit".into())
            .spawn({
                let stop = stop.clone();
                move || write_loop(&rx, sink, &stop)
            })
            .map_err(|e| format!("audit writer thread: {e}"))?;
        Ok((Auditor { tx, metrics }, Closer { stop, thread }))
    }

    fn submit(&self, done: Done) {
        if self.tx.try_send(Box::new(done)).is_err() {
            self.metrics.audit_dropped.inc();
        }
    }
}

/// Ends the audit writer after it has written everything already queued.
#[derive(Debug)]
pub struct Closer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Closer {
    /// Writes the queued records, flushes and stops the writer; waits at most `deadline`.
    pub async fn close(self, deadline: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread;
        let _ = tokio::time::timeout(deadline, tokio::task::spawn_blocking(move || thread.join())).await;
    }
}

fn write_loop(rx: &std::sync::mpsc::Receiver<Box<Done>>, mut sink: Box<dyn Write + Send>, stop: &AtomicBool) {
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        // Read the flag before draining: a record queued before `close` is always written.
        let stopping = stop.load(Ordering::SeqCst);
        for done in rx.try_iter() {
            done.write_json(&mut out);
            if out.len() >= 256 * 1024 {
                flush(&mut sink, &mut out);
            }
        }
        flush(&mut sink, &mut out);
        if stopping {
            return;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
}

fn flush(sink: &mut Box<dyn Write + Send>, out: &mut Vec<u8>) {
    if out.is_empty() {
        return;
    }
    if let Err(e) = sink.write_all(out).and_then(|()| sink.flush()) {
        tracing::error!(error = %e, "audit write failed");
    }
    out.clear();
}

/// One request's record from the moment its head arrived until its response body ended: it is
/// counted in the metrics once, when the response head is ready ([`Pending::answered`]), and
/// written to the audit stream once, when it is dropped — at the end of the response body
/// ([`Tracked`]), or earlier when the client went away before any answer (then as
/// `client_closed` with status 499, so no request ever goes unrecorded). Also keeps
/// `airgate_in_flight_requests` exact whichever way the request ends.
#[derive(Debug)]
pub struct Pending {
    record: Record,
    counters: Arc<Counters>,
    auditor: Auditor,
    answered: bool,
}

impl Pending {
    /// Starts tracking a request.
    pub fn new(record: Record, counters: Arc<Counters>, auditor: Auditor) -> Self {
        auditor.metrics.in_flight.inc();
        Pending { record, counters, auditor, answered: false }
    }

    /// The record, for the phases to fill in.
    pub fn record(&mut self) -> &mut Record {
        &mut self.record
    }

    /// The response head is ready with `status`: counts the request.
    pub fn answered(&mut self, status: http::StatusCode) {
        self.record.status = status.as_u16();
        self.count(status);
    }

    fn count(&mut self, status: http::StatusCode) {
        self.answered = true;
        let m = &self.auditor.metrics;
        m.in_flight.dec();
        let r = &self.record;
        let route = r.route.as_deref().unwrap_or(NONE);
        let pipeline = r.identity.as_ref().map_or(NONE, |i| m.pipeline_label(&i.pipeline));
        let outcome = r.outcome.as_str();
        m.requests.with_label_values(&[pipeline, route, status.as_str(), outcome]).inc();
        m.request_duration.with_label_values(&[route, outcome]).observe(r.start.elapsed().as_secs_f64());
        if r.outcome == Outcome::RateLimited {
            m.rate_limited.with_label_values(&[pipeline, route]).inc();
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.answered {
            self.record.outcome = Outcome::ClientClosed;
            self.record.reason = Some(Cow::Borrowed("client_closed"));
            self.record.status = CLIENT_CLOSED.as_u16();
            self.count(CLIENT_CLOSED);
        }
        let start = self.record.start;
        let done = Done {
            duration_ms: start.elapsed().as_secs_f64() * 1000.0,
            bytes_in: self.counters.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.counters.bytes_out.load(Ordering::Relaxed),
            record: std::mem::replace(&mut self.record, Record::vacant(start)),
        };
        self.auditor.submit(done);
    }
}

/// Label value where a request has no route or no identity.
const NONE: &str = "_none";

/// Status recorded when the client went away before an answer (nginx's convention).
const CLIENT_CLOSED: http::StatusCode = match http::StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => http::StatusCode::BAD_REQUEST,
};

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

/// A response body that writes the request's audit record when it ends or is dropped (the
/// client went away), with the bytes actually sent.
#[derive(Debug)]
pub struct Tracked {
    inner: Body,
    pending: Option<Pending>,
}

impl Tracked {
    /// Wraps a response body with its pending audit record.
    pub fn new(inner: Body, pending: Pending) -> Self {
        Tracked { inner, pending: Some(pending) }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(p)) = (frame.data_ref(), &this.pending) {
                    p.counters.bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            // The body is complete: write the record now rather than when hyper drops the body.
            Poll::Ready(None) => drop(this.pending.take()),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
