//! Header rewriting between client and upstream (contract §3): what is stripped is one static
//! table ([`STRIPPED`]) matched against every inbound name with `_` read as `-` (so
//! `X_Airflow_Dag_Id` is `X-Airflow-Dag-Id`, as WSGI/CGI servers read it); hop-by-hop headers
//! (RFC 9110 §7.6.1, including names listed in `Connection`) go both ways; the gateway's own
//! headers are set from verified facts only, identity values percent-encoded when not visible
//! ASCII.

use crate::{identity::Identity, text::TraceId};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use ipnet::IpNet;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use smallvec::SmallVec;
use std::net::IpAddr;

/// `X-Airflow-*` headers the gateway sets from the verified identity.
pub const X_AIRFLOW_DAG_ID: HeaderName = HeaderName::from_static("x-airflow-dag-id");
/// Task id.
pub const X_AIRFLOW_TASK_ID: HeaderName = HeaderName::from_static("x-airflow-task-id");
/// Run id.
pub const X_AIRFLOW_RUN_ID: HeaderName = HeaderName::from_static("x-airflow-run-id");
/// Try number.
pub const X_AIRFLOW_TRY_NUMBER: HeaderName = HeaderName::from_static("x-airflow-try-number");
/// Map index.
pub const X_AIRFLOW_MAP_INDEX: HeaderName = HeaderName::from_static("x-airflow-map-index");
/// Request id, kept from the client when sane.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C trace context.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What happens to an inbound header toward the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Hop-by-hop: removed in both directions.
    Hop,
    /// Removed from every request (credentials, assertions, URL and method overrides).
    Always,
    /// Client-address claims: removed unless the peer is a trusted proxy (an `_` spelling always).
    Untrusted,
    /// Set or checked by the gateway (or the HTTP library) itself: the `-` spelling is handled
    /// there, an `_` spelling is removed so that no upstream reads it as the real one.
    Managed,
}

/// Every name the rewrite knows, lowercase with `-`. Name prefixes are in [`STRIPPED_PREFIXES`].
const STRIPPED: [(&str, Class); 41] = [
    // RFC 9110 §7.6.1, plus the names HTTP/1 upgrades and old proxies use.
    ("connection", Class::Hop),
    ("keep-alive", Class::Hop),
    ("proxy-connection", Class::Hop),
    ("te", Class::Hop),
    ("trailer", Class::Hop),
    ("transfer-encoding", Class::Hop),
    ("upgrade", Class::Hop),
    ("http2-settings", Class::Hop),
    // The caller's credential never reaches the upstream.
    ("authorization", Class::Always),
    // URL and method overrides (IIS/ASP.NET, Symfony, Rails/Rack, Spring, Express middleware):
    // they would make the upstream serve another path or method than the one airgate authorised.
    ("x-original-url", Class::Always),
    ("x-rewrite-url", Class::Always),
    ("x-original-uri", Class::Always),
    ("x-forwarded-uri", Class::Always),
    ("x-http-method-override", Class::Always),
    ("x-http-method", Class::Always),
    ("x-method-override", Class::Always),
    // Client-address and scheme claims only a trusted proxy may make.
    ("x-real-ip", Class::Untrusted),
    ("true-client-ip", Class::Untrusted),
    ("x-client-ip", Class::Untrusted),
    ("x-forwarded-port", Class::Untrusted),
    ("x-forwarded-prefix", Class::Untrusted),
    ("x-forwarded-server", Class::Untrusted),
    ("x-forwarded", Class::Untrusted),
    ("forwarded-for", Class::Untrusted),
    ("x-original-forwarded-for", Class::Untrusted),
    ("x-cluster-client-ip", Class::Untrusted),
    ("cf-connecting-ip", Class::Untrusted),
    ("fastly-client-ip", Class::Untrusted),
    ("x-azure-clientip", Class::Untrusted),
    ("x-azure-socketip", Class::Untrusted),
    ("x-forwarded-scheme", Class::Untrusted),
    ("x-forwarded-ssl", Class::Untrusted),
    ("x-url-scheme", Class::Untrusted),
    ("front-end-https", Class::Untrusted),
    // Client-address claims the gateway replaces with its own unless the peer is trusted.
    ("forwarded", Class::Untrusted),
    ("x-forwarded-for", Class::Untrusted),
    ("x-forwarded-proto", Class::Untrusted),
    ("x-forwarded-host", Class::Untrusted),
    // Set by the gateway or by the HTTP library.
    ("host", Class::Managed),
    ("content-length", Class::Managed),
    ("x-request-id", Class::Managed),
];

/// Name prefixes stripped in any spelling: `Proxy-*` both ways, `X-Airflow-*` toward the upstream.
const STRIPPED_PREFIXES: [(&str, Class); 2] = [("proxy-", Class::Hop), ("x-airflow-", Class::Always)];

/// Headers the gateway sets whose `_` spellings are also removed (beyond [`STRIPPED`]).
const MANAGED_EXTRA: [&str; 3] = ["traceparent", "tracestate", "ocp-apim-subscription-key"];

/// `name` (lowercase, as `HeaderName` stores it) equals `canonical` with `_` read as `-`.
fn same_name(name: &[u8], canonical: &[u8]) -> bool {
    name.len() == canonical.len() && name.iter().zip(canonical).all(|(n, c)| n == c || (*n == b'_' && *c == b'-'))
}

/// The longest name in [`STRIPPED`] and [`MANAGED_EXTRA`].
const LONGEST: usize = 25;
const KNOWN: usize = STRIPPED.len() + MANAGED_EXTRA.len();

/// [`STRIPPED`] and [`MANAGED_EXTRA`] (as `Managed`) ordered by length, and for each length the
/// range of its entries: a name is compared only with the known names as long as it (seven at
/// most), not with all 44 (~290 instructions per header name before).
static BY_LENGTH: ByLength = by_length();

/// The known names ordered by length, and the range of each length's entries.
struct ByLength {
    names: [(&'static str, Class); KNOWN],
    ranges: [(usize, usize); LONGEST + 1],
}

const fn by_length() -> ByLength {
    let mut all = [("", Class::Managed); KNOWN];
    let mut i = 0;
    while i < KNOWN {
        all[i] = if i < STRIPPED.len() { STRIPPED[i] } else { (MANAGED_EXTRA[i - STRIPPED.len()], Class::Managed) };
        assert!(all[i].0.len() <= LONGEST, "LONGEST is the longest known name");
        // Insertion sort by length (stable: the table's order within a length is kept).
        let mut j = i;
        while j > 0 && all[j - 1].0.len() > all[j].0.len() {
            let t = all[j - 1];
            all[j - 1] = all[j];
            all[j] = t;
            j -= 1;
        }
        i += 1;
    }
    let mut ranges = [(0, 0); LONGEST + 1];
    let mut at = 0;
    while at < KNOWN {
        let len = all[at].0.len();
        let mut end = at;
        while end < KNOWN && all[end].0.len() == len {
            end += 1;
        }
        ranges[len] = (at, end);
        at = end;
    }
    ByLength { names: all, ranges }
}

/// The class of an inbound header name; `None` for names the rewrite leaves alone.
fn classify(name: &str) -> Option<Class> {
    let n = name.as_bytes();
    for (prefix, class) in &STRIPPED_PREFIXES {
        if n.len() >= prefix.len() && same_name(&n[..prefix.len()], prefix.as_bytes()) {
            return Some(*class);
        }
    }
    let &(start, end) = BY_LENGTH.ranges.get(n.len())?;
    BY_LENGTH.names[start..end].iter().find(|(c, _)| same_name(n, c.as_bytes())).map(|(_, class)| *class)
}

/// `name` is listed in one of the `Connection` values of `headers`; `connection` says whether
/// there are any (read once per message, so a message without `Connection` pays no lookup per name).
fn listed(headers: &HeaderMap, connection: bool, name: &HeaderName) -> bool {
    connection
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|listed| listed.trim().eq_ignore_ascii_case(name.as_str()))
}

/// Removes every field whose name `keeps` refuses. The names are gathered first (`keeps` may
/// read `Connection`, which may itself go); a handful fit on the stack, so a usual message
/// allocates nothing here.
fn retain_names(headers: &mut HeaderMap, keeps: impl Fn(&HeaderMap, &HeaderName) -> bool) {
    let doomed: SmallVec<[HeaderName; 8]> = headers.keys().filter(|n| !keeps(headers, n)).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers, including every name listed in `Connection`, and `Proxy-*`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let connection = headers.contains_key(header::CONNECTION);
    retain_names(headers, |h, name| classify(name.as_str()) != Some(Class::Hop) && !listed(h, connection, name));
}

/// Characters of an `X-Airflow-*` value sent percent-encoded: everything outside visible ASCII
/// (0x21–0x7E; bytes past ASCII are always encoded) and `%` itself.
const IDENTITY_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'%');

/// An identity value as sent upstream: percent-encoded as [`IDENTITY_VALUE`] says.
pub fn identity_value(value: &str) -> Option<HeaderValue> {
    let encoded: std::borrow::Cow<'_, str> = utf8_percent_encode(value, IDENTITY_VALUE).into();
    HeaderValue::from_str(&encoded).ok()
}

/// What the client connection tells us, for `X-Forwarded-*`.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// TCP peer address.
    pub ip: IpAddr,
    /// The client spoke TLS to airgate.
    pub tls: bool,
}

/// The client address for audit: the peer, or when the peer is a trusted proxy, the right-most
/// untrusted address of `X-Forwarded-For`.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut last = peer;
    for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(value) = value.to_str() else { return last };
        for part in value.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) if is_trusted(ip, trusted) => last = ip,
                Ok(ip) => return ip,
                Err(_) => return last,
            }
        }
    }
    last
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The upstream request's headers (contract §3), decided once per request: the client's fields
/// that [`Rewrite::keeps`] passes, then the gateway's own. What goes: hop-by-hop headers and the
/// names `Connection` lists, `Proxy-*`, `Authorization`, `X-Airflow-*`, URL and method overrides,
/// client-address claims unless the peer is a trusted proxy, `_` spellings of the names the
/// gateway manages, and every client value of a name the gateway sets.
///
/// Two sinks read the one decision: [`Rewrite::apply`] edits a `HeaderMap` (hyper's client, the
/// in-process transports of the tests), and [`Fields`] streams the fields to the HTTP/1 encoder
/// without editing any map — a map insert hashes the name and may grow and rehash the table,
/// ~4 k instructions per request for the dozen fields the gateway sets. The gateway's values are
/// borrowed where they already exist: the rewrite lives in the request's future, and every byte
/// of that future is copied when it is boxed.
#[derive(Debug)]
pub struct Rewrite<'a> {
    trusted_peer: bool,
    /// The client sent `Connection`: the names it lists go too.
    connection: bool,
    forwarded_for: HeaderValue,
    /// `X-Forwarded-Proto` to set (true: `https`), unless a trusted proxy's is kept.
    forwarded_proto: Option<bool>,
    forwarded_host: Option<HeaderValue>,
    request_id: &'a HeaderValue,
    traceparent: &'a HeaderValue,
    airflow: &'a [Option<HeaderValue>; 5],
    /// Set by [`Rewrite::upstream`].
    host: Option<&'a HeaderValue>,
    credential: Option<HeaderValue>,
    subscription: Option<(&'a HeaderName, HeaderValue)>,
}

impl<'a> Rewrite<'a> {
    /// The rewrite of a request from `peer` whose inbound headers are `headers`; `inbound_host`
    /// is its authority (Host or HTTP/2 `:authority`), sent as `X-Forwarded-Host` when the
    /// client's own value is not trusted. Sets `X-Forwarded-For/Proto/Host`, `X-Request-Id`,
    /// `traceparent` and the `X-Airflow-*` fields of `identity`; [`Rewrite::upstream`] the rest.
    pub fn new(
        headers: &HeaderMap,
        identity: &'a Identity,
        peer: Peer,
        trusted: &[IpNet],
        inbound_host: Option<HeaderValue>,
        request_id: &'a HeaderValue,
        traceparent: &'a HeaderValue,
    ) -> Self {
        let trusted_peer = is_trusted(peer.ip, trusted);
        let connection = headers.contains_key(header::CONNECTION);
        // A trusted proxy's `-` spellings are kept unless `Connection` lists them.
        let passed =
            |name: &HeaderName| trusted_peer && headers.contains_key(name) && !listed(headers, connection, name);
        let peer_ip = ip_value(peer.ip);
        let forwarded_for = if passed(&X_FORWARDED_FOR) {
            let prior: Vec<&str> = headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
            HeaderValue::from_str(&format!("{}, {}", prior.join(", "), peer.ip)).unwrap_or(peer_ip)
        } else {
            peer_ip
        };
        // Encoded once per identity (so per verified token), then shared by every request it makes.
        let airflow = identity.upstream_values.get_or_init(|| {
            [
                Some(identity.pipeline.as_str()),
                identity.task.as_deref(),
                identity.run_id.as_deref(),
                identity.try_number.as_deref(),
                identity.map_index.as_deref(),
            ]
            .map(|v| v.and_then(identity_value))
        });
        Rewrite {
            trusted_peer,
            connection,
            forwarded_for,
            forwarded_proto: (!passed(&X_FORWARDED_PROTO)).then_some(peer.tls),
            forwarded_host: if passed(&X_FORWARDED_HOST) { None } else { inbound_host },
            request_id,
            traceparent,
            airflow,
            host: None,
            credential: None,
            subscription: None,
        }
    }

    /// What the upstream itself takes: its `Host`, the gateway's credential, and the
    /// subscription key header.
    pub fn upstream(
        &mut self,
        host: &'a HeaderValue,
        credential: Option<HeaderValue>,
        subscription: Option<(&'a HeaderName, HeaderValue)>,
    ) {
        self.host = Some(host);
        self.credential = credential;
        self.subscription = subscription;
    }

    /// Calls `f` with every field the gateway sets.
    fn each_set(&self, mut f: impl FnMut(&HeaderName, &HeaderValue)) {
        f(&X_FORWARDED_FOR, &self.forwarded_for);
        if let Some(tls) = self.forwarded_proto {
            f(&X_FORWARDED_PROTO, &HeaderValue::from_static(if tls { "https" } else { "http" }));
        }
        if let Some(host) = &self.forwarded_host {
            f(&X_FORWARDED_HOST, host);
        }
        f(&X_REQUEST_ID, self.request_id);
        f(&TRACEPARENT, self.traceparent);
        for (name, value) in AIRFLOW_HEADERS.iter().zip(self.airflow) {
            if let Some(value) = value {
                f(name, value);
            }
        }
        if let Some(host) = self.host {
            f(&header::HOST, host);
        }
        if let Some(credential) = &self.credential {
            f(&header::AUTHORIZATION, credential);
        }
        if let Some((name, value)) = &self.subscription {
            f(name, value);
        }
    }

    /// The gateway sets `name` (one of the managed names; `X-Airflow-*` and `Authorization` go
    /// by their class anyway). The client's `Host` never passes: it names the gateway.
    fn sets(&self, name: &HeaderName) -> bool {
        *name == header::HOST
            || *name == X_REQUEST_ID
            || *name == TRACEPARENT
            || *name == X_FORWARDED_FOR
            || (*name == X_FORWARDED_PROTO && self.forwarded_proto.is_some())
            || (*name == X_FORWARDED_HOST && self.forwarded_host.is_some())
            || self.subscription.as_ref().is_some_and(|(n, _)| *n == name)
    }

    /// `name` is an `_` spelling of the subscription key header (a custom name: the known ones
    /// have a class of their own).
    fn spells_subscription(&self, name: &HeaderName) -> bool {
        self.subscription.as_ref().is_some_and(|(s, _)| {
            *s != name && name.as_str().contains('_') && same_name(name.as_str().as_bytes(), s.as_str().as_bytes())
        })
    }

    /// The client's field `name` (of the request whose headers are `headers`) goes upstream.
    pub fn keeps(&self, headers: &HeaderMap, name: &HeaderName) -> bool {
        let n = name.as_str();
        let kept = match classify(n) {
            Some(Class::Hop | Class::Always) => return false,
            // A trusted proxy sets the `-` spelling; an `_` spelling is the client's own (relayed
            // by the proxy untouched), so it goes even from a trusted peer.
            Some(Class::Untrusted) => self.trusted_peer && !n.contains('_') && !self.sets(name),
            Some(Class::Managed) => !n.contains('_') && !self.sets(name),
            None => !self.spells_subscription(name) && !self.sets(name),
        };
        kept && !listed(headers, self.connection, name)
    }

    /// The rewrite applied to the request's own map: what does not go is removed, what the
    /// gateway sets is added.
    pub fn apply(&self, headers: &mut HeaderMap) {
        retain_names(headers, |h, name| self.keeps(h, name));
        // Room for every field the gateway sets (at most 13) at once.
        headers.reserve(16);
        self.each_set(|name, value| {
            headers.append(name.clone(), value.clone());
        });
    }

    /// The fields to send: the client's that go, then the gateway's.
    pub fn fields<'r>(&'r self, headers: &'r HeaderMap) -> Fields<'r, 'a> {
        Fields { headers, rewrite: self }
    }
}

/// The upstream request's fields, read from the client's map through its [`Rewrite`].
#[derive(Debug, Clone, Copy)]
pub struct Fields<'r, 'a> {
    headers: &'r HeaderMap,
    rewrite: &'r Rewrite<'a>,
}

impl crate::h1::Fields for Fields<'_, '_> {
    fn each(&self, mut f: impl FnMut(&HeaderName, &HeaderValue)) {
        for (name, value) in self.headers {
            if self.rewrite.keeps(self.headers, name) {
                f(name, value);
            }
        }
        self.rewrite.each_set(f);
    }

    fn has(&self, name: &HeaderName) -> bool {
        let mut set = false;
        self.rewrite.each_set(|n, _| set |= n == name);
        set || (self.headers.contains_key(name) && self.rewrite.keeps(self.headers, name))
    }
}

/// The `X-Airflow-*` names, in the order of [`Identity::upstream_values`].
const AIRFLOW_HEADERS: [HeaderName; 5] =
    [X_AIRFLOW_DAG_ID, X_AIRFLOW_TASK_ID, X_AIRFLOW_RUN_ID, X_AIRFLOW_TRY_NUMBER, X_AIRFLOW_MAP_INDEX];

/// The peer address as a header value, written on the stack (an IPv4 address digit by digit)
/// instead of through a `String`.
fn ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_bytes(crate::text::ip(ip, &mut [0; crate::text::IP_MAX]))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A client `X-Request-Id` is kept when it is a sane token: 1–128 visible ASCII characters from
/// `[A-Za-z0-9._~:-]`. Anything else is replaced by a generated id.
pub fn sane_request_id(value: &HeaderValue) -> bool {
    let b = value.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._~:-".contains(c))
}

/// A random 128-bit id as 32 lowercase hex digits.
pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    crate::text::hex(&fastrand::u128(..).to_be_bytes(), &mut buf);
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A valid W3C `traceparent` (version 00) is passed through; otherwise a new one is generated.
/// Returns the header value and its trace id.
pub fn traceparent(inbound: Option<&HeaderValue>) -> (HeaderValue, TraceId) {
    if let Some(v) = inbound
        && let Ok(s) = v.to_str()
        && valid_traceparent(s)
        && let Some(id) = TraceId::from_hex(&s.as_bytes()[3..35])
    {
        return (v.clone(), id);
    }
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-01";
    crate::text::hex(&fastrand::u128(1..).to_be_bytes(), &mut buf[3..35]);
    crate::text::hex(&fastrand::u64(1..).to_be_bytes(), &mut buf[36..52]);
    let id = TraceId::from_hex(&buf[3..35]).unwrap_or_default();
    (HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("")), id)
}

fn valid_traceparent(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: &[u8]| r.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    b.len() >= 55
        && hex(&b[0..2])
        && &b[0..2] != b"ff"
        && b[2] == b'-'
        && hex(&b[3..35])
        && b[3..35].iter().any(|c| *c != b'0')
        && b[35] == b'-'
        && hex(&b[36..52])
        && b[36..52].iter().any(|c| *c != b'0')
        && b[52] == b'-'
        && hex(&b[53..55])
        && (b.len() == 55 || (&b[0..2] != b"00" && b[55] == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// The rewrite of `h` for a request of `identity` from `peer` (trusted when in 10.0.0.0/8).
    fn rewrite_of<'a>(
        h: &HeaderMap,
        identity: &'a Identity,
        peer: &str,
        inbound_host: Option<&'static str>,
    ) -> Rewrite<'a> {
        static R: HeaderValue = HeaderValue::from_static("r");
        static TRACE: HeaderValue = HeaderValue::from_static(TP);
        let peer = Peer { ip: peer.parse().unwrap(), tls: false };
        let trusted: [IpNet; 1] = ["10.0.0.0/8".parse().unwrap()];
        Rewrite::new(h, identity, peer, &trusted, inbound_host.map(HeaderValue::from_static), &R, &TRACE)
    }

    /// What reaches the upstream, sorted, from both sinks of the rewrite, which must agree: the
    /// map edited (hyper's client) and the fields streamed (the HTTP/1 encoder).
    fn sent(h: HeaderMap, rewrite: Rewrite<'_>) -> Vec<(String, String)> {
        use crate::h1::Fields as _;
        let pair = |n: &HeaderName, v: &HeaderValue| (n.as_str().to_owned(), v.to_str().unwrap().to_owned());
        let mut streamed = Vec::new();
        rewrite.fields(&h).each(|n, v| streamed.push(pair(n, v)));
        let mut edited = h;
        rewrite.apply(&mut edited);
        let mut applied: Vec<_> = edited.iter().map(|(n, v)| pair(n, v)).collect();
        streamed.sort();
        applied.sort();
        assert_eq!(streamed, applied, "the two sinks disagree");
        applied
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = expected.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        v.sort();
        v
    }

    #[test]
    fn connection_listed_and_proxy_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("x-keep", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    /// Every stripped name in its `-`, `_` and mixed spellings, in any case.
    fn spellings(name: &str) -> Vec<String> {
        let upper: String = name
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-");
        let mut mixed = upper.clone();
        if let Some(i) = mixed.rfind('-') {
            mixed.replace_range(i..=i, "_");
        }
        vec![name.to_owned(), name.replace('-', "_"), upper.replace('-', "_"), mixed, upper]
    }

    #[test]
    fn no_stripped_name_survives_in_any_spelling() {
        let always = [
            "authorization",
            "x-airflow-dag-id",
            "x-airflow-task-id",
            "x-airflow-anything-else",
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "proxy-authorization",
            "keep-alive",
            "transfer-encoding",
            "te",
            "upgrade",
        ];
        let client_address = [
            "x-real-ip",
            "true-client-ip",
            "x-client-ip",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
        ];
        for trusted in [false, true] {
            for name in always.iter().chain(&client_address) {
                for spelling in spellings(name) {
                    let h = map(&[(&spelling, "v"), ("x-keep", "1"), ("x_keep_too", "1")]);
                    let peer = if trusted { "10.0.0.1" } else { "192.0.2.1" };
                    let identity = Identity { pipeline: "p".into(), ..Identity::default() };
                    let rewrite = rewrite_of(&h, &identity, peer, None);
                    let out = sent(h, rewrite);
                    let survives = out.iter().any(|(n, v)| *n == spelling.to_ascii_lowercase() && v == "v");
                    let should = trusted && client_address.contains(name) && !spelling.contains('_');
                    assert_eq!(survives, should, "{spelling} (trusted peer: {trusted}): {out:?}");
                    assert!(out.iter().any(|(n, _)| n == "x-keep") && out.iter().any(|(n, _)| n == "x_keep_too"));
                }
            }
        }
    }

    #[test]
    fn managed_names_lose_their_underscore_spellings_and_set_ones_their_client_values() {
        let h = map(&[
            ("x-request-id", "abc"),
            ("x_request_id", "evil"),
            ("x_forwarded_for", "203.0.113.1"),
            ("X_Forwarded_Proto", "https"),
            ("x-forwarded-proto", "https"),
            ("ocp_apim_subscription_key", "stolen"),
            ("content_length", "0"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("tracestate", "k=v"),
        ]);
        let identity = Identity { pipeline: "p".into(), ..Identity::default() };
        let rewrite = rewrite_of(&h, &identity, "10.0.0.1", None);
        assert_eq!(
            sent(h, rewrite),
            pairs(&[
                ("tracestate", "k=v"),
                ("traceparent", TP),
                ("x-airflow-dag-id", "p"),
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-proto", "https"),
                ("x-request-id", "r"),
            ])
        );
    }

    #[test]
    fn forwarding_claims_are_replaced_unless_a_trusted_proxy_made_them() {
        let identity = Identity { pipeline: "p".into(), ..Identity::default() };
        let claims = [
            ("host", "client.example"),
            ("forwarded", "for=203.0.113.9"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-host", "orig.example"),
            ("x-forwarded-proto", "https"),
            ("authorization", "Bearer caller"),
            ("accept", "*/*"),
        ];
        let gateway = [("host", "apim.example"), ("authorization", "Bearer gateway")];
        static UPSTREAM: HeaderValue = HeaderValue::from_static("apim.example");
        let credential = || Some(HeaderValue::from_static("Bearer gateway"));
        let base = [("traceparent", TP), ("x-airflow-dag-id", "p"), ("x-request-id", "r"), ("accept", "*/*")];

        let h = map(&claims);
        let mut rewrite = rewrite_of(&h, &identity, "192.0.2.1", Some("client.example"));
        rewrite.upstream(&UPSTREAM, credential(), None);
        let untrusted =
            [("x-forwarded-for", "192.0.2.1"), ("x-forwarded-proto", "http"), ("x-forwarded-host", "client.example")];
        assert_eq!(sent(h, rewrite), pairs(&[&base[..], &gateway, &untrusted].concat()));

        // From a trusted proxy: its claims are kept (the address list extended), except one its
        // own `Connection` lists, which the gateway sets again.
        let h = map(&[&claims[..], &[("connection", "x-forwarded-proto")]].concat());
        let mut rewrite = rewrite_of(&h, &identity, "10.0.0.1", Some("client.example"));
        rewrite.upstream(&UPSTREAM, credential(), None);
        let trusted = [
            ("forwarded", "for=203.0.113.9"),
            ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
            ("x-forwarded-host", "orig.example"),
            ("x-forwarded-proto", "http"),
        ];
        assert_eq!(sent(h, rewrite), pairs(&[&base[..], &gateway, &trusted].concat()));
    }

    #[test]
    fn underscore_assertions_do_not_reach_the_upstream() {
        let identity = Identity { pipeline: "sales_daily".into(), ..Identity::default() };
        let h = map(&[("X_Airflow_Dag_Id", "finance"), ("X-Airflow_Dag-Id", "finance"), ("x-airflow-team", "x")]);
        let rewrite = rewrite_of(&h, &identity, "192.0.2.1", None);
        let airflow: Vec<_> =
            sent(h, rewrite).into_iter().filter(|(k, _)| k.replace('_', "-").starts_with("x-airflow-")).collect();
        assert_eq!(airflow, pairs(&[("x-airflow-dag-id", "sales_daily")]));
    }

    #[test]
    fn identity_values_outside_visible_ascii_are_percent_encoded() {
        for (raw, sent) in [
            ("sales_daily", "sales_daily"),
            ("manual__2026-11-30T00:00:00+00:00", "manual__2026-11-30T00:00:00+00:00"),
            ("a b", "a%20b"),
            ("caf\u{e9}", "caf%C3%A9"),
            ("100%", "100%25"),
            ("tab\there", "tab%09here"),
            ("del\u{7f}", "del%7F"),
            ("\u{1F600}", "%F0%9F%98%80"),
        ] {
            assert_eq!(identity_value(raw).unwrap(), sent, "{raw:?}");
        }
        let identity =
            Identity { pipeline: "ventes d\u{e9}j\u{e0}".into(), task: Some("t 1".into()), ..Identity::default() };
        let mut h = HeaderMap::new();
        rewrite_of(&HeaderMap::new(), &identity, "192.0.2.1", None).apply(&mut h);
        assert_eq!(h["x-airflow-dag-id"], "ventes%20d%C3%A9j%C3%A0");
        assert_eq!(h["x-airflow-task-id"], "t%201");
    }

    #[test]
    fn an_identity_built_from_another_is_sent_with_its_own_values() {
        let first = Identity { pipeline: "team_a".into(), task: Some("t".into()), ..Identity::default() };
        let mut h = HeaderMap::new();
        rewrite_of(&HeaderMap::new(), &first, "192.0.2.1", None).apply(&mut h);
        assert_eq!(h["x-airflow-dag-id"], "team_a");
        // As `pipeline_from_header` does: the copy must not reuse the values made for `first`.
        let derived = Identity { pipeline: "team_b".into(), ..first.clone() };
        let mut h = HeaderMap::new();
        rewrite_of(&HeaderMap::new(), &derived, "192.0.2.1", None).apply(&mut h);
        assert_eq!(h["x-airflow-dag-id"], "team_b");
        assert_eq!(h["x-airflow-task-id"], "t");
    }

    #[test]
    fn client_ip_skips_trusted_proxies_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = map(&[("x-forwarded-for", "203.0.113.9, 198.51.100.1, 10.1.1.1")]);
        assert_eq!(client_ip(&h, "10.0.0.2".parse().unwrap(), &trusted), "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(&h, "192.0.2.1".parse().unwrap(), &trusted), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    /// The table scanned whole, as `classify` did before it was indexed by length.
    fn classify_by_scan(name: &str) -> Option<Class> {
        let n = name.as_bytes();
        let prefix =
            STRIPPED_PREFIXES.iter().find(|(p, _)| n.len() >= p.len() && same_name(&n[..p.len()], p.as_bytes()));
        prefix
            .or_else(|| STRIPPED.iter().find(|(c, _)| same_name(n, c.as_bytes())))
            .map(|(_, class)| *class)
            .or_else(|| MANAGED_EXTRA.iter().any(|c| same_name(n, c.as_bytes())).then_some(Class::Managed))
    }

    #[test]
    fn every_known_name_is_classified_in_every_spelling() {
        let known: Vec<&str> = STRIPPED.iter().map(|(n, _)| *n).chain(MANAGED_EXTRA).collect();
        let mut names = vec![
            "accept",
            "user-agent",
            "x",
            "",
            "proxy-x",
            "x-airflow-anything",
            "a-header-longer-than-any-known-one",
        ];
        let variants: Vec<String> = known
            .iter()
            .flat_map(|n| {
                [n.to_string(), n.replace('-', "_"), format!("{n}s"), n[1..].to_owned(), n[..n.len() - 1].to_owned()]
            })
            .collect();
        names.extend(variants.iter().map(String::as_str));
        for name in names {
            assert_eq!(classify(name), classify_by_scan(name), "{name}");
        }
        for n in known {
            assert!(classify(n).is_some(), "{n}");
        }
    }

    #[test]
    fn traceparent_kept_when_valid_else_generated() {
        let good = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let (v, id) = traceparent(Some(&good));
        assert_eq!(v, good);
        assert_eq!(id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let bad = HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01");
        let (v, id) = traceparent(Some(&bad));
        assert_ne!(v, bad);
        assert!(valid_traceparent(v.to_str().unwrap()), "{v:?}");
        assert_eq!(id.as_str(), &v.to_str().unwrap()[3..35]);
    }

    #[test]
    fn peer_addresses_are_written_as_rust_displays_them() {
        for ip in ["0.0.0.0", "10.0.0.1", "192.168.100.9", "255.255.255.255", "::1", "2001:db8::8a2e:370:7334"]
            .into_iter()
            .chain(["::ffff:255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"])
        {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip), ip.to_string().as_str(), "{ip}");
        }
    }

    #[test]
    fn request_ids() {
        assert!(sane_request_id(&HeaderValue::from_static("abc-123_x.y")));
        assert!(!sane_request_id(&HeaderValue::from_static("a b")));
        assert!(!sane_request_id(&HeaderValue::from_str(&"a".repeat(200)).unwrap()));
        assert_eq!(new_request_id().len(), 32);
    }

    #[test]
    fn a_custom_subscription_header_loses_its_underscore_spellings() {
        let h =
            map(&[("x_team_key", "stolen"), ("x-team_key", "stolen"), ("x-team-key", "client"), ("x-teamkey", "kept")]);
        let identity = Identity { pipeline: "p".into(), ..Identity::default() };
        let mut rewrite = rewrite_of(&h, &identity, "192.0.2.1", None);
        static UPSTREAM: HeaderValue = HeaderValue::from_static("apim.example");
        let name = HeaderName::from_static("x-team-key");
        rewrite.upstream(&UPSTREAM, None, Some((&name, HeaderValue::from_static("gateway"))));
        let sent: Vec<_> =
            sent(h, rewrite).into_iter().filter(|(n, _)| n.starts_with("x-team") || n.starts_with("x_team")).collect();
        assert_eq!(sent, pairs(&[("x-team-key", "gateway"), ("x-teamkey", "kept")]));
    }
}
