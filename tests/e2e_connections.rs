//! Contract §3 "Connections" and the honest-answer rows: silent or slow peers lose their
//! `max_connections` slot at the deadlines, idle HTTP/2 connections get GOAWAY, requests refused
//! by hyper's parser are audited and counted, client body faults are 400/408 (never 502/504),
//! and `Host` must be present once and agree with the request target.

mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use support::*;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn routes(upstream: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "up"
url = "{upstream}"
timeout = "10s"
connect_timeout = "500ms"

[[routes]]
name = "reports"
path_prefix = "/reports/"
rewrite_prefix = "/"
upstream = "up"
allow = {{ pipelines = ["*"] }}
"#
    )
}

/// A gateway with `server` lines added to `[server]` and the test routes.
async fn gateway_with(server: &str, upstream: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path()).replace("[admin]", &format!("{server}\n[admin]")) + &routes(upstream);
    let config = airgate::config::parse(&text).unwrap_or_else(|p| panic!("{p}\n{text}"));
    let running = airgate::app::start(config, airgate::app::Options { watch_config: None }).await.unwrap();
    Gateway { audit: dir.path().join("audit.jsonl"), running, dir }
}

fn authed_get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n", token("d"))
}

/// Reads until EOF or error, for at most `within`; returns how long the peer kept it open.
async fn closed_within(s: &mut (impl AsyncRead + Unpin), within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(started.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK block of literal fields (never indexed, no Huffman): enough for a test request.
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    fn int(out: &mut Vec<u8>, n: usize) {
        if n < 127 {
            out.push(u8::try_from(n).unwrap());
            return;
        }
        out.push(127);
        let mut rest = n - 127;
        while rest >= 128 {
            out.push(u8::try_from(rest % 128).unwrap() | 0x80);
            rest /= 128;
        }
        out.push(u8::try_from(rest).unwrap());
    }
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x10);
        int(&mut out, name.len());
        out.extend_from_slice(name.as_bytes());
        int(&mut out, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Reads one HTTP/2 frame: (type, flags, stream, payload); `None` at EOF.
async fn read_frame(s: &mut (impl AsyncRead + Unpin)) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

const GOAWAY: u8 = 7;

/// Serves one legitimate request right after the silent peers' deadline, while they hold every slot.
async fn legitimate_client_is_served_after(
    started: Instant,
    deadline: Duration,
    request: impl Future<Output = String>,
) {
    let resp = tokio::time::timeout(deadline + Duration::from_secs(3), request)
        .await
        .expect("the legitimate client was locked out by silent connections");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let waited = started.elapsed();
    assert!(waited >= deadline - Duration::from_millis(100), "served before the slots were free: {waited:?}");
    assert!(waited < deadline + Duration::from_secs(2), "served only after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_plain_connections_lose_their_slots_at_the_head_deadline() {
    let up = upstream().await;
    let gw = gateway_with("max_connections = 4\nheader_read_timeout = \"1s\"", &up.url()).await;
    let addr = gw.running.proxy_addr;
    let started = Instant::now();
    // Ways to hold a slot without ever completing a request head (a dripped head: see below).
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half_preface = TcpStream::connect(addr).await.unwrap();
    half_preface.write_all(&PREFACE[..10]).await.unwrap();
    let mut settings_only = TcpStream::connect(addr).await.unwrap();
    settings_only.write_all(PREFACE).await.unwrap();
    settings_only.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let mut silent2 = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Every slot is taken: this client waits in the backlog until the deadline frees one.
    legitimate_client_is_served_after(
        started,
        Duration::from_secs(1),
        raw(addr, authed_get("/reports/x").as_bytes(), Duration::from_secs(5)),
    )
    .await;

    for (what, s) in [("silent", &mut silent), ("second silent", &mut silent2), ("half preface", &mut half_preface)] {
        let open = closed_within(s, Duration::from_secs(2)).await;
        assert!(open.is_some(), "the {what} connection is still open");
    }
    // The HTTP/2 peer that only sent SETTINGS is told to go away, then closed.
    let mut kinds = Vec::new();
    while let Ok(Some((kind, ..))) = tokio::time::timeout(Duration::from_secs(2), read_frame(&mut settings_only)).await
    {
        kinds.push(kind);
    }
    assert!(kinds.contains(&GOAWAY), "no GOAWAY for the SETTINGS-only peer: frame types {kinds:?}");
    // Nothing here was a request: no audit record, no count.
    let lines = gw.audit_lines(1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], 200);
}

/// Starts a request head and drips it a byte every 200 ms (bounded: the gateway must cut it long
/// before the loop ends); returns how long the gateway kept reading it.
async fn drip_head(s: &mut TcpStream) -> Duration {
    s.write_all(b"GET /reports/x HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = Instant::now();
    for _ in 0..50 {
        if s.write_all(b"x").await.is_err() {
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            break;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripped_head_is_cut_at_the_deadline() {
    let up = upstream().await;
    let gw = gateway_with("header_read_timeout = \"1s\"", &up.url()).await;
    let addr = gw.running.proxy_addr;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let dripped = drip_head(&mut s).await;
    assert!(dripped < Duration::from_secs(3), "the dripping peer was kept for {dripped:?}");
    assert!(dripped >= Duration::from_millis(800), "cut before the deadline: {dripped:?}");
}

/// Reads one complete response with a `content-length` body (enough for the test upstream's).
async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the response was complete: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_keep_alive_connection_is_closed_after_the_head_timeout() {
    let up = upstream().await;
    // idle_timeout is HTTP/2's: an HTTP/1 connection must not get its 60 s.
    let gw = gateway_with("header_read_timeout = \"1s\"\nidle_timeout = \"60s\"", &up.url()).await;
    let keep_alive = authed_get("/reports/x").replace("connection: close\r\n", "");
    let mut s = TcpStream::connect(gw.running.proxy_addr).await.unwrap();
    // Two requests on the connection, the second 600 ms after the first: a connection in use is
    // kept whatever its age.
    for _ in 0..2 {
        s.write_all(keep_alive.as_bytes()).await.unwrap();
        let resp = read_response(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // Then silence: closed about one head timeout after the last response.
    let open = closed_within(&mut s, Duration::from_secs(5)).await.expect("idle keep-alive connection kept");
    assert!(open >= Duration::from_millis(200), "closed {open:?} after 600 ms of idleness");
    assert!(open < Duration::from_secs(3), "an idle HTTP/1 connection was kept {open:?} more");

    // A second head dripped on a kept-alive connection is cut like a first one.
    let mut s = TcpStream::connect(gw.running.proxy_addr).await.unwrap();
    s.write_all(keep_alive.as_bytes()).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    let dripped = drip_head(&mut s).await;
    assert!(dripped < Duration::from_secs(3), "the dripped second head was kept for {dripped:?}");
    assert!(dripped >= Duration::from_millis(600), "cut before the deadline: {dripped:?}");
}

fn tls_config(pki: &Pki, dir: &std::path::Path) -> String {
    std::fs::write(dir.join("tls.crt"), &pki.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &pki.key_pem).unwrap();
    format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\nmax_connections = 2\nheader_read_timeout = \"1s\"",
        dir.join("tls.crt").display(),
        dir.join("tls.key").display()
    )
}

async fn tls_connect(addr: SocketAddr, pki: &Pki) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(pki, &[b"http/1.1"])));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_connections_lose_their_slots_at_the_head_deadline() {
    let up = upstream().await;
    let pki = pki();
    let keys = tempfile::tempdir().unwrap();
    let gw = gateway_with(&tls_config(&pki, keys.path()), &up.url()).await;
    let addr = gw.running.proxy_addr;
    let started = Instant::now();
    // Handshake done, then nothing: both slots held.
    let mut after_handshake = tls_connect(addr, &pki).await;
    let mut after_handshake2 = tls_connect(addr, &pki).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let legit = async {
        let mut s = tls_connect(addr, &pki).await;
        s.write_all(authed_get("/reports/x").as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    legitimate_client_is_served_after(started, Duration::from_secs(1), legit).await;

    assert!(closed_within(&mut after_handshake, Duration::from_secs(2)).await.is_some());
    assert!(closed_within(&mut after_handshake2, Duration::from_secs(2)).await.is_some());
    // A ClientHello record header with nothing after it never finishes the handshake.
    let mut hello_only = TcpStream::connect(addr).await.unwrap();
    hello_only.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    let open = closed_within(&mut hello_only, Duration::from_secs(3)).await.expect("ClientHello-only peer kept");
    assert!(open >= Duration::from_millis(800), "closed before the deadline: {open:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_with_goaway_after_idle_timeout() {
    let up = upstream().await;
    let gw = gateway_with("header_read_timeout = \"5s\"\nidle_timeout = \"1s\"", &up.url()).await;
    let mut s = TcpStream::connect(gw.running.proxy_addr).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let block = hpack(&[(":method", "GET"), (":scheme", "http"), (":path", "/reports/x"), (":authority", "x")]);
    s.write_all(&frame(1, 0x5, 1, &block)).await.unwrap();
    let mut answered = None;
    let goaway = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some((kind, flags, stream, payload)) = read_frame(&mut s).await {
            match kind {
                // SETTINGS (not an ACK) and PING are answered, as a live client would.
                4 if flags & 1 == 0 => s.write_all(&frame(4, 1, 0, &[])).await.unwrap(),
                6 if flags & 1 == 0 => s.write_all(&frame(6, 1, 0, &payload)).await.unwrap(),
                0 | 1 if stream == 1 && flags & 1 == 1 => answered = Some(Instant::now()),
                GOAWAY => return Instant::now(),
                _ => {}
            }
        }
        panic!("closed without GOAWAY")
    })
    .await
    .expect("no GOAWAY within 5 s of an idle HTTP/2 connection");
    let answered = answered.expect("the request was not answered");
    let idle = goaway - answered;
    assert!(idle >= Duration::from_millis(900), "GOAWAY after only {idle:?} idle");
    assert!(idle < Duration::from_secs(3), "GOAWAY after {idle:?} idle");
    assert!(closed_within(&mut s, Duration::from_secs(2)).await.is_some(), "still open after GOAWAY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_http2_connection_outlives_idle_timeout() {
    let up = upstream().await;
    let gw = gateway_with("idle_timeout = \"1s\"", &up.url()).await;
    // One request that takes longer than idle_timeout, then another on the same connection.
    let c = h2_client();
    let got =
        send(&c, authed(Method::GET, &gw.url("/reports/slow/1500"), "d", "").body(Full::default()).unwrap()).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let got = send(&c, authed(Method::GET, &gw.url("/reports/x"), "d", "").body(Full::default()).unwrap()).await;
    assert_eq!(got.status, 200, "{}", got.text());
}

/// Sends `bytes` raw and checks the parser's bare answer, one audit record and the counter.
async fn refused_by_parser(bytes: &[u8], status: u16, reason: &str) {
    let up = upstream().await;
    let gw = gateway_with("", &up.url()).await;
    let resp = raw(gw.running.proxy_addr, bytes, Duration::from_secs(3)).await;
    assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{reason}: {resp:.200}");
    let lines = gw.audit_lines(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lines_after = gw.audit_lines(1).await;
    assert_eq!(lines_after.len(), 1, "{lines_after:?}");
    let line = &lines[0];
    assert_eq!(line["outcome"], "bad_request", "{line}");
    assert_eq!(line["reason"], reason, "{line}");
    assert_eq!(line["status"], status, "{line}");
    assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
    assert!(line["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{line}");
    let labels =
        [("pipeline", "_none"), ("route", "_none"), ("code", &*status.to_string()), ("outcome", "bad_request")];
    assert_eq!(metric_value(&gw.metrics().await, "airgate_requests_total", &labels), Some(1.0));
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_line_is_audited_and_counted() {
    refused_by_parser(b"GET /reports/x HTTP/7.1\r\nhost: x\r\n\r\n", 400, "parse_version").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_method_character_is_audited_and_counted() {
    refused_by_parser(b"G(T /reports/x HTTP/1.1\r\nhost: x\r\n\r\n", 400, "parse_method").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_without_colon_is_audited_and_counted() {
    refused_by_parser(b"GET /reports/x HTTP/1.1\r\nhost: x\r\nno-colon-here\r\n\r\n", 400, "parse_header").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_obs_fold_is_audited_and_counted() {
    refused_by_parser(b"GET /reports/x HTTP/1.1\r\nhost: x\r\nx-a: b\r\n  folded\r\n\r\n", 400, "parse_header").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_cr_is_audited_and_counted() {
    refused_by_parser(b"GET /reports/x HTTP/1.1\r\nhost: x\r\nx-a: b\rc\r\n\r\n", 400, "parse_header").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_content_length_is_audited_and_counted() {
    refused_by_parser(
        b"POST /reports/x HTTP/1.1\r\nhost: x\r\ncontent-length: 1, 2\r\n\r\n",
        400,
        "parse_content_length",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_the_parser_buffer_is_audited_and_counted() {
    // Default max_header_bytes 64 KiB: hyper's buffer is 144 KiB, so 200 KiB is hyper's 431.
    let req = format!("GET /reports/x HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(200 << 10));
    refused_by_parser(req.as_bytes(), 431, "head_too_large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100_header_fields_are_audited_and_counted() {
    // host + 100 more: one over the parser's field limit, however small the fields.
    let fields: String = (0..100).map(|i| format!("x-f{i}: v\r\n")).collect();
    let req = format!("GET /reports/x HTTP/1.1\r\nhost: x\r\n{fields}\r\n");
    refused_by_parser(req.as_bytes(), 431, "head_too_large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_header_fields_pass_the_parser() {
    let up = upstream().await;
    let gw = gateway_with("", &up.url()).await;
    let fields: String = (0..97).map(|i| format!("x-f{i}: v\r\n")).collect();
    // host, authorization, connection and 97 more: exactly 100.
    let req = authed_get("/reports/x").replacen("\r\n\r\n", &format!("\r\n{fields}\r\n"), 1);
    let resp = raw(gw.running.proxy_addr, req.as_bytes(), Duration::from_secs(5)).await;
    // The gateway read it as a request and forwarded it (the test upstream, hyper with its
    // default limit of 100, refuses the forwarded head: the gateway adds fields of its own).
    assert!(resp.contains("x-request-id:"), "{resp:.300}");
    let lines = gw.audit_lines(1).await;
    assert_eq!(lines[0]["route"], "reports", "{}", lines[0]);
    assert_eq!(lines[0]["outcome"], "allowed", "{}", lines[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uri_over_the_parser_limit_is_audited_and_counted() {
    let req = format!("GET /reports/{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    refused_by_parser(req.as_bytes(), 414, "parse_uri_too_long").await;
}

/// The one audit line of a test gateway (waits for it, then checks no second one follows).
async fn only_audit_line(gw: &Gateway) -> serde_json::Value {
    let lines = gw.audit_lines(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(gw.audit_lines(1).await.len(), 1, "{lines:?}");
    lines[0].clone()
}

fn problem_of(resp: &str, status: u16) -> serde_json::Value {
    assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("content-type: application/problem+json"), "{resp}");
    let body = resp.split_once("\r\n\r\n").unwrap().1;
    let body = body.find('{').map_or(body, |i| &body[i..body.rfind('}').unwrap() + 1]);
    let p: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {resp}"));
    assert_eq!(p["status"], status);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_the_clients_fault() {
    let up = upstream().await;
    let gw = gateway_with("", &up.url()).await;
    let req = format!(
        "POST /reports/x HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        token("d")
    );
    let resp = raw(gw.running.proxy_addr, req.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(problem_of(&resp, 400)["type"], "urn:airgate:problem:bad-request");
    let line = only_audit_line(&gw).await;
    assert_eq!(line["outcome"], "bad_request", "{line}");
    assert_eq!(line["reason"], "malformed_body", "{line}");
    assert_eq!(line["status"], 400, "{line}");
}

async fn body_timeout_case(drip: bool) {
    let up = upstream().await;
    let gw = gateway_with("request_timeout = \"1s\"", &up.url()).await;
    let mut s = TcpStream::connect(gw.running.proxy_addr).await.unwrap();
    let head = format!(
        "POST /reports/x HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-length: 100\r\n\r\n0123456789",
        token("d")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    // Stalled: nothing more. Dripped: a byte every 100 ms, never reaching 100 within the deadline.
    for _ in 0..40 {
        if drip && s.write_all(b"x").await.is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let resp = String::from_utf8_lossy(&out).into_owned();
    let p = problem_of(&resp, 408);
    assert_eq!(p["type"], "urn:airgate:problem:client-timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
    let line = only_audit_line(&gw).await;
    assert_eq!(line["outcome"], "client_timeout", "{line}");
    assert_eq!(line["status"], 408, "{line}");
    let labels = [("pipeline", "d"), ("route", "reports"), ("code", "408"), ("outcome", "client_timeout")];
    assert_eq!(metric_value(&gw.metrics().await, "airgate_requests_total", &labels), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_a_client_timeout() {
    body_timeout_case(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripped_body_is_a_client_timeout() {
    body_timeout_case(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_still_an_upstream_timeout() {
    let up = upstream().await;
    let gw = gateway_with("request_timeout = \"1s\"", &up.url()).await;
    let req = Request::post(gw.url("/reports/slow/3000"))
        .header("authorization", format!("Bearer {}", token("d")))
        .body(Full::new(Bytes::from_static(b"a complete body")))
        .unwrap();
    send(&client(), req).await.problem(504);
    assert_eq!(only_audit_line(&gw).await["outcome"], "upstream_timeout");
}

async fn host_case(head: &str, status: u16, reason: Option<&str>) {
    let up = upstream().await;
    let gw = gateway_with("", &up.url()).await;
    let req = format!("{head}authorization: Bearer {}\r\nconnection: close\r\n\r\n", token("d"));
    let resp = raw(gw.running.proxy_addr, req.as_bytes(), Duration::from_secs(3)).await;
    if status == 400 {
        problem_of(&resp, 400);
    } else {
        assert!(resp.starts_with(&format!("HTTP/1.0 {status}")), "{resp}");
    }
    let line = only_audit_line(&gw).await;
    if let Some(reason) = reason {
        assert_eq!(line["outcome"], "bad_request", "{line}");
        assert_eq!(line["reason"], reason, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_host_is_refused() {
    host_case("GET /reports/x HTTP/1.1\r\n", 400, Some("missing_host")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_host_is_refused() {
    host_case("GET /reports/x HTTP/1.1\r\nhost: x\r\nhost: y\r\n", 400, Some("repeated_host")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_target_that_disagrees_with_host_is_refused() {
    host_case("GET http://a.example/reports/x HTTP/1.1\r\nhost: b.example\r\n", 400, Some("host_mismatch")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_needs_no_host() {
    host_case("GET /reports/x HTTP/1.0\r\n", 200, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_and_host_must_agree() {
    let up = upstream().await;
    let gw = gateway_with("", &up.url()).await;
    let c = h2_client();
    let req = authed(Method::GET, &gw.url("/reports/x"), "d", "").header("host", "elsewhere.example");
    let p = send(&c, req.body(Full::default()).unwrap()).await.problem(400);
    assert_eq!(p["type"], "urn:airgate:problem:bad-request");
    assert_eq!(only_audit_line(&gw).await["reason"], "host_mismatch");
    // The same authority in both (any case) is fine, and so is :authority alone.
    let authority = gw.running.proxy_addr.to_string();
    let req = authed(Method::GET, &gw.url("/reports/x"), "d", "").header("host", authority.to_uppercase());
    assert_eq!(send(&c, req.body(Full::default()).unwrap()).await.status, 200);
    assert_eq!(get(&gw.url("/reports/x"), "d").await.status, 200);
}
