//! Header rewrite toward the upstream (contract §3): whatever the client sends, no stripped name
//! survives in any spelling (ASCII case, `_` for `-`): `Authorization`, hop-by-hop headers and
//! those named in `Connection`, `Proxy-*`, `X-Airflow-*`, the URL/method override headers, and —
//! from an untrusted peer — the client-address headers and client `X-Forwarded-*`/`Forwarded`.
//! `X-Airflow-*` carry exactly the identity's values, percent-encoded when not visible ASCII.
//! Besides the contract's names, the extra ones the gateway strips (README's "…": `X-Original-URI`,
//! `X-Forwarded-URI`, `HTTP2-Settings`, `CF-Connecting-IP` and the other client-address and scheme
//! claims of CDNs and load balancers) are held to the same rule. Responses (bit 2): hop-by-hop
//! headers, those named in `Connection` and `Proxy-*` go, every other header passes unchanged.
//!
//! Input: a first byte of flags (bit 0: the peer is a trusted proxy; bit 1: TLS; bit 2: a response
//! from the upstream), then lines `name: value`; a line `=field value` sets an identity field
//! (`dag`, `task`, `run`, `try`, `map`).
#![no_main]

use airgate::{
    h1::Fields as _,
    identity::Identity,
    upstream::headers::{Peer, Rewrite},
};
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

/// Hop-by-hop (RFC 9110 §7.6.1 and HTTP/1 upgrades): removed in both directions.
const HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "http2-settings"];

const ALWAYS: [&str; 16] = [
    "authorization",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "x-original-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

const UNLESS_TRUSTED: [&str; 19] = [
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "forwarded",
    "x-forwarded",
    "forwarded-for",
    "x-original-forwarded-for",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-azure-clientip",
    "x-azure-socketip",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-url-scheme",
    "front-end-https",
];

/// Names the rewrite sets itself (each at most once, with a value it chose).
const SET: [&str; 11] = [
    "host",
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "x-airflow-dag-id",
    "x-airflow-task-id",
    "x-airflow-run-id",
    "x-airflow-try-number",
    "x-airflow-map-index",
];

fn percent_decode(v: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            let s = std::str::from_utf8(v.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(s, 16).ok()?);
            i += 3;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The names listed in `Connection`, lowercase.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect()
}

/// Upstream response headers: hop-by-hop ones (also named in `Connection`) and `Proxy-*` go; a
/// `_` spelling of one may go too (the gateway matches names in any `_`/`-` spelling); every other
/// header passes with its values unchanged.
fn response(mut headers: HeaderMap) {
    let listed = connection_listed(&headers);
    let hop = |n: &str| HOP.contains(&n) || n.starts_with("proxy-");
    let must_go = |n: &str| hop(n) || listed.iter().any(|l| l == n);
    let may_go = |n: &str| hop(&n.replace('_', "-"));
    let pairs = |h: &HeaderMap| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = h
            .iter()
            .filter(|(n, _)| !may_go(n.as_str()))
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        v.sort();
        v
    };
    let mut kept = pairs(&headers);
    kept.retain(|(n, _)| !must_go(n));
    airgate::upstream::headers::strip_hop_by_hop(&mut headers);
    for name in headers.keys() {
        assert!(!must_go(name.as_str()), "{name:?} is hop-by-hop but reaches the client: {headers:?}");
    }
    assert_eq!(pairs(&headers), kept, "a response loses only hop-by-hop headers");
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let trusted_peer = flags & 1 == 1;
    let peer_ip: IpAddr = if trusted_peer { "10.0.0.7".parse().unwrap() } else { "192.0.2.9".parse().unwrap() };
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let peer = Peer { ip: peer_ip, tls: flags & 2 == 2 };

    let mut identity = Identity { issuer: "test".into(), pipeline: "sales_daily".into(), ..Default::default() };
    let mut headers = HeaderMap::new();
    for line in rest.split(|b| *b == b'\n') {
        if let Some(field) = line.strip_prefix(b"=") {
            let (key, value) = field.split_at(field.iter().position(|b| *b == b' ').unwrap_or(field.len()));
            let value = String::from_utf8_lossy(value.get(1..).unwrap_or_default()).into_owned();
            match key {
                b"dag" => identity.pipeline = value,
                b"task" => identity.task = Some(value),
                b"run" => identity.run_id = Some(value),
                b"try" => identity.try_number = Some(value),
                b"map" => identity.map_index = Some(value),
                _ => {}
            }
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let value = line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    // The rewrite sets the SET names itself, even when the client listed them.
    let listed: Vec<String> =
        connection_listed(&headers).into_iter().filter(|n| !n.is_empty() && !SET.contains(&n.as_str())).collect();
    if flags & 4 == 4 {
        return response(headers);
    }
    let host = headers.get("host").cloned();
    let request_id = HeaderValue::from_static("fuzz-request-1");
    let traceparent = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let upstream_host = HeaderValue::from_static("apim.example");
    let mut rewrite = Rewrite::new(&headers, &identity, peer, &trusted, host.clone(), &request_id, &traceparent);
    rewrite.upstream(&upstream_host, None, None);
    // Both sinks of the rewrite send the same fields: streamed to the HTTP/1 encoder, and
    // applied to the map (hyper's client).
    let pair = |n: &HeaderName, v: &HeaderValue| (n.as_str().to_owned(), v.as_bytes().to_vec());
    let mut streamed = Vec::new();
    rewrite.fields(&headers).each(|n, v| streamed.push(pair(n, v)));
    let inbound = headers.clone();
    rewrite.apply(&mut headers);
    let mut applied: Vec<_> = headers.iter().map(|(n, v)| pair(n, v)).collect();
    streamed.sort();
    applied.sort();
    assert_eq!(streamed, applied, "the streamed fields and the edited map differ for {inbound:?}");

    for name in headers.keys() {
        let spelled = name.as_str().replace('_', "-");
        let what = format!("{name:?} reaches the upstream (peer trusted: {trusted_peer}); {headers:?}");
        assert!(!ALWAYS.contains(&spelled.as_str()), "{what}");
        assert!(!spelled.starts_with("proxy-"), "{what}");
        assert!(!listed.contains(&name.as_str().to_owned()), "{what}: it is named in Connection");
        let forwarded = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"].contains(&spelled.as_str());
        if spelled.starts_with("x-airflow-") || (!trusted_peer && forwarded) {
            assert!(SET.contains(&name.as_str()), "{what}");
        }
        if !trusted_peer {
            assert!(!UNLESS_TRUSTED.contains(&spelled.as_str()), "{what}");
        }
    }
    // A trusted proxy's own `X-Forwarded-*` values pass as it sent them.
    for &name in SET.iter().filter(|n| !trusted_peer || !n.starts_with("x-forwarded-")) {
        assert!(headers.get_all(name).iter().count() <= 1, "{name} twice: {headers:?}");
    }
    assert_eq!(headers.get("x-request-id"), Some(&request_id));
    assert_eq!(headers.get("traceparent"), Some(&traceparent));
    assert_eq!(headers.get_all("host").iter().collect::<Vec<_>>(), [&upstream_host], "the client's Host never passes");
    if !trusted_peer {
        assert_eq!(headers.get("x-forwarded-for").map(|v| v.as_bytes()), Some(peer_ip.to_string().as_bytes()));
        let proto: &[u8] = if peer.tls { b"https" } else { b"http" };
        assert_eq!(headers.get("x-forwarded-proto").map(|v| v.as_bytes()), Some(proto));
        assert_eq!(headers.get("x-forwarded-host"), host.as_ref());
    }
    for (name, claim) in [
        ("x-airflow-dag-id", Some(&identity.pipeline)),
        ("x-airflow-task-id", identity.task.as_ref()),
        ("x-airflow-run-id", identity.run_id.as_ref()),
        ("x-airflow-try-number", identity.try_number.as_ref()),
        ("x-airflow-map-index", identity.map_index.as_ref()),
    ] {
        let sent = headers.get(name);
        match claim {
            None => assert!(sent.is_none(), "{name} without a claim: {sent:?}"),
            Some(c) => {
                let sent = sent.unwrap_or_else(|| panic!("{name} missing for claim {c:?}"));
                let b = sent.as_bytes();
                assert!(b.iter().all(|c| (0x21..=0x7e).contains(c)), "{name}: {sent:?} is not visible ASCII");
                assert_eq!(percent_decode(b).as_deref(), Some(c.as_bytes()), "{name}: {sent:?} is not {c:?} encoded");
            }
        }
    }
});
