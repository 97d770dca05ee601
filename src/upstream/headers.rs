//! Header rewriting between client and upstream (contract §3): hop-by-hop and `Proxy-*` removal
//! (RFC 9110 §7.6.1, including names listed in `Connection`), the inbound `Authorization` and
//! `X-Airflow-*` stripped, and the gateway's own headers set from verified facts only.

use crate::identity::Identity;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use ipnet::IpNet;
use std::net::IpAddr;

/// Hop-by-hop headers that never cross a proxy, whatever `Connection` says.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

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
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Removes hop-by-hop headers, including every name listed in `Connection`, and `Proxy-*`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in Connection must be collected before Connection itself goes.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let proxy: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with("proxy-")).cloned().collect();
        for name in proxy {
            headers.remove(name);
        }
    }
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

/// Rewrites the request headers in place for the upstream.
///
/// `host` is the inbound authority (Host header or HTTP/2 `:authority`), used for
/// `X-Forwarded-Host` when the client's own value is not trusted.
pub fn to_upstream(
    headers: &mut HeaderMap,
    identity: &Identity,
    peer: Peer,
    trusted: &[IpNet],
    inbound_host: Option<HeaderValue>,
    request_id: &HeaderValue,
    traceparent: Option<HeaderValue>,
) {
    strip_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    let airflow: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with("x-airflow-")).cloned().collect();
    for name in airflow {
        headers.remove(name);
    }

    let trusted_peer = is_trusted(peer.ip, trusted);
    let peer_ip = HeaderValue::from_str(&peer.ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""));
    if trusted_peer {
        let prior: Vec<&str> = headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
        if prior.is_empty() {
            headers.insert(X_FORWARDED_FOR, peer_ip);
        } else {
            let joined = format!("{}, {}", prior.join(", "), peer.ip);
            headers.insert(X_FORWARDED_FOR, HeaderValue::from_str(&joined).unwrap_or(peer_ip));
        }
    } else {
        headers.remove(FORWARDED);
        headers.insert(X_FORWARDED_FOR, peer_ip);
    }
    if !trusted_peer || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(if peer.tls { "https" } else { "http" }));
    }
    if !trusted_peer || !headers.contains_key(&X_FORWARDED_HOST) {
        match inbound_host {
            Some(h) => headers.insert(X_FORWARDED_HOST, h),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }

    headers.insert(X_REQUEST_ID, request_id.clone());
    if let Some(tp) = traceparent {
        headers.insert(TRACEPARENT, tp);
    }

    set_text(headers, X_AIRFLOW_DAG_ID, Some(&identity.pipeline));
    set_text(headers, X_AIRFLOW_TASK_ID, identity.task.as_deref());
    set_text(headers, X_AIRFLOW_RUN_ID, identity.run_id.as_deref());
    set_text(headers, X_AIRFLOW_TRY_NUMBER, identity.try_number.as_deref());
    set_text(headers, X_AIRFLOW_MAP_INDEX, identity.map_index.as_deref());
}

fn set_text(headers: &mut HeaderMap, name: HeaderName, value: Option<&str>) {
    if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(name, v);
    }
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
    hex_into(&mut buf, fastrand::u128(..));
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn hex_into(out: &mut [u8], mut v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// A valid W3C `traceparent` (version 00) is passed through; otherwise a new one is generated.
/// Returns the header value and its trace id (32 hex digits).
pub fn traceparent(inbound: Option<&HeaderValue>) -> (HeaderValue, String) {
    if let Some(v) = inbound
        && let Ok(s) = v.to_str()
        && valid_traceparent(s)
    {
        return (v.clone(), s[3..35].to_owned());
    }
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-01";
    let mut trace = fastrand::u128(..);
    if trace == 0 {
        trace = 1;
    }
    hex_into(&mut buf[3..35], trace);
    hex_into(&mut buf[36..52], u128::from(fastrand::u64(1..)));
    let id = String::from_utf8_lossy(&buf[3..35]).into_owned();
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

    #[test]
    fn client_ip_skips_trusted_proxies_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = map(&[("x-forwarded-for", "203.0.113.9, 198.51.100.1, 10.1.1.1")]);
        assert_eq!(client_ip(&h, "10.0.0.2".parse().unwrap(), &trusted), "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(&h, "192.0.2.1".parse().unwrap(), &trusted), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn traceparent_kept_when_valid_else_generated() {
        let good = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let (v, id) = traceparent(Some(&good));
        assert_eq!(v, good);
        assert_eq!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let bad = HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01");
        let (v, id) = traceparent(Some(&bad));
        assert_ne!(v, bad);
        assert!(valid_traceparent(v.to_str().unwrap()), "{v:?}");
        assert_eq!(id.len(), 32);
    }

    #[test]
    fn request_ids() {
        assert!(sane_request_id(&HeaderValue::from_static("abc-123_x.y")));
        assert!(!sane_request_id(&HeaderValue::from_static("a b")));
        assert!(!sane_request_id(&HeaderValue::from_str(&"a".repeat(200)).unwrap()));
        assert_eq!(new_request_id().len(), 32);
    }
}
