//! The audit record: what is known about one request, and its JSON line (contract §7). Never a
//! token, secret, key or body.

use crate::{error::Outcome, identity::Identity, text::TraceId};
use http::{HeaderValue, Method};
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
    pub trace_id: TraceId,
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
            trace_id: TraceId::default(),
        }
    }
}

/// Appends one audit line (JSON and a newline) for `r` to `out`: the fields of contract §7 in a
/// fixed order, every one present (`null` when unknown). Written field by field instead of through
/// a serde struct: no intermediate `String` for the timestamp or the address, and strings that
/// need no escaping (nearly all) copied whole. The tests check it byte for byte against
/// `serde_json` on the same values.
pub fn encode(r: &Record, duration_ms: f64, bytes_in: u64, bytes_out: u64, out: &mut Vec<u8>) {
    let id = r.identity.as_deref();
    let mut w = Fields { out, first: true };
    w.plain(b"ts", crate::text::rfc3339_millis(r.ts, &mut [0; 24]));
    w.str(b"request_id", Some(r.request_id.to_str().unwrap_or("")));
    w.str(b"outcome", Some(r.outcome.as_str()));
    w.str(b"reason", r.reason.as_deref());
    w.uint(b"status", r.status.into());
    w.str(b"method", r.method.as_ref().map(Method::as_str));
    w.str(b"route", r.route.as_deref());
    w.str(b"path", Some(&r.path));
    w.str(b"upstream", r.upstream.as_deref());
    w.str(b"issuer", r.issuer.as_deref().or(id.map(|i| &*i.issuer)));
    w.str(b"principal", id.and_then(|i| i.principal.as_deref()));
    w.str(b"pipeline", id.map(|i| i.pipeline.as_str()));
    w.str(b"task", id.and_then(|i| i.task.as_deref()));
    w.str(b"run_id", id.and_then(|i| i.run_id.as_deref()));
    w.num_or_str(b"try_number", id.and_then(|i| i.try_number.as_deref()));
    w.num_or_str(b"map_index", id.and_then(|i| i.map_index.as_deref()));
    w.str(b"team", id.and_then(|i| i.team.as_deref()));
    w.str(b"jti", id.and_then(|i| i.jti.as_deref()));
    w.str(b"pod", r.pod.as_deref().or(id.and_then(|i| i.pod.as_deref())));
    w.plain(b"client_ip", crate::text::ip(r.client_ip, &mut [0; crate::text::IP_MAX]));
    w.float(b"duration_ms", Some(round3(duration_ms)));
    w.float(b"upstream_duration_ms", r.upstream_duration_ms.map(round3));
    w.uint(b"bytes_in", bytes_in);
    w.uint(b"bytes_out", bytes_out);
    w.str(b"trace_id", Some(r.trace_id.as_str()));
    w.out.extend_from_slice(b"}\n");
}

/// A JSON object being written, one field at a time.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl Fields<'_> {
    fn key<const N: usize>(&mut self, key: &[u8; N]) {
        // A key of constant length is copied inline, not through a `memcpy` call.
        self.out.push(if std::mem::take(&mut self.first) { b'{' } else { b',' });
        self.out.push(b'"');
        self.out.extend_from_slice(key);
        self.out.extend_from_slice(b"\":");
    }

    fn str<const N: usize>(&mut self, key: &[u8; N], value: Option<&str>) {
        self.key(key);
        match value {
            Some(v) => string(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// A string whose text never needs escaping (a timestamp, an address).
    fn plain<const N: usize>(&mut self, key: &[u8; N], value: &[u8]) {
        self.key(key);
        self.out.push(b'"');
        self.out.extend_from_slice(value);
        self.out.push(b'"');
    }

    fn uint<const N: usize>(&mut self, key: &[u8; N], value: u64) {
        self.key(key);
        self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A number when the text is an `i64`, else the text.
    fn num_or_str<const N: usize>(&mut self, key: &[u8; N], value: Option<&str>) {
        match value.map(|v| (v, v.parse::<i64>())) {
            Some((_, Ok(n))) => {
                self.key(key);
                self.out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            }
            Some((v, Err(_))) => self.str(key, Some(v)),
            None => self.str(key, None),
        }
    }

    fn float<const N: usize>(&mut self, key: &[u8; N], value: Option<f64>) {
        self.key(key);
        match value.filter(|v| v.is_finite()) {
            Some(v) => self.out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes()),
            None => self.out.extend_from_slice(b"null"),
        }
    }
}

/// A JSON string: `"` and `\` escaped, control characters as `\n`-style or `\u00XX` escapes
/// (the same bytes as serde_json), everything else copied.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Branch-free, so LLVM vectorises it: nearly every value needs no escape at all.
    let plain = bytes.iter().fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.extend_from_slice(bytes);
    } else {
        let (mut run, mut unicode) = (0, *b"\\u0000");
        for (i, &b) in bytes.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..0x20 => {
                    crate::text::hex(&[b], &mut unicode[4..]);
                    &unicode
                }
                _ => continue,
            };
            out.extend_from_slice(&bytes[run..i]);
            out.extend_from_slice(escape);
            run = i + 1;
        }
        out.extend_from_slice(&bytes[run..]);
    }
    out.push(b'"');
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    //! The encoder against serde_json, byte for byte: the line the previous serde struct wrote.
    use super::*;
    use crate::identity::Identity;
    use serde::Serialize;

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

    fn oracle(r: &Record, duration_ms: f64, bytes_in: u64, bytes_out: u64) -> Vec<u8> {
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
            trace_id: r.trace_id.as_str(),
        };
        let mut out = serde_json::to_vec(&line).unwrap();
        out.push(b'\n');
        out
    }

    fn encoded(r: &Record, duration_ms: f64, bytes_in: u64, bytes_out: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode(r, duration_ms, bytes_in, bytes_out, &mut out);
        out
    }

    /// Every byte value a Rust string can hold at the ASCII end, and some beyond it.
    fn awkward() -> String {
        let mut s: String = (0u8..0x80).map(char::from).collect();
        s.push_str("é\u{2028}\u{fffd}😀");
        s
    }

    #[test]
    fn a_bare_record_matches_serde_json() {
        let r = Record::vacant(Instant::now());
        assert_eq!(
            String::from_utf8(encoded(&r, 0.0, 0, 0)).unwrap(),
            String::from_utf8(oracle(&r, 0.0, 0, 0)).unwrap()
        );
    }

    #[test]
    fn a_full_record_with_awkward_strings_matches_serde_json() {
        let awkward = awkward();
        let mut identity =
            Identity { pipeline: "dag\"\\\n\u{1}".into(), issuer: "issuer\t".into(), ..Identity::default() };
        identity.principal = Some(awkward.clone());
        identity.task = Some("task".into());
        identity.run_id = Some("manual__2026-12-02T00:00:00+00:00".into());
        identity.team = Some("team\u{7f}".into());
        identity.jti = Some(String::new());
        identity.pod = Some("ns/pod".into());
        for (try_number, map_index) in
            [("3", "-1"), ("x3", "9223372036854775808"), ("-9223372036854775808", ""), (" 1", "+1")]
        {
            identity.try_number = Some(try_number.into());
            identity.map_index = Some(map_index.into());
            let r = Record {
                ts: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_633_600_123),
                start: Instant::now(),
                request_id: HeaderValue::from_static("req-1"),
                outcome: Outcome::Allowed,
                reason: Some(Cow::Owned(awkward.clone())),
                status: 200,
                method: Some(Method::PATCH),
                route: Some(Arc::from("route\u{0}\u{1f}")),
                path: format!("/p?q={awkward}"),
                upstream: Some(Arc::from("up")),
                issuer: None,
                identity: Some(Arc::new(identity.clone())),
                pod: None,
                client_ip: "2001:db8::1".parse().unwrap(),
                upstream_duration_ms: Some(1.0 / 3.0),
                trace_id: TraceId::from_hex(b"0af7651916cd43dd8448eb211c80319c").unwrap(),
            };
            for duration in [0.0, 12.3456, 1e-7, 1e21, f64::NAN, f64::INFINITY] {
                let (ours, theirs) = (encoded(&r, duration, u64::MAX, 7), oracle(&r, duration, u64::MAX, 7));
                assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap());
            }
        }
    }

    #[test]
    fn every_line_is_one_json_object() {
        let r = Record { path: awkward(), ..Record::vacant(Instant::now()) };
        let line = encoded(&r, 1.5, 1, 2);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["path"], awkward());
        assert_eq!(v["client_ip"], "0.0.0.0");
    }
}
