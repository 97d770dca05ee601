//! Layer tests: the whole request path of [`Gateway::handle`] in-process, with the upstream a
//! `tower::service_fn` behind [`Transport::service`] — no sockets, a paused clock where time
//! matters. Header rules and every problem+json answer the gateway can give are checked here;
//! `tests/core.rs` keeps the end-to-end checks over real sockets.

mod support;

use airgate::{
    audit::Auditor,
    body::{Body, Inbound, RequestBody},
    config,
    metrics::Metrics,
    stack::{ConnInfo, Gateway, Snapshot},
    upstream::Transport,
};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use support::{Got, Seen, base_config, token};

/// The address every in-process request comes from unless a test says otherwise.
const PEER: &str = "192.0.2.10:40000";

fn routes() -> &'static str {
    r#"
[[upstreams]]
name = "up"
url = "http://upstream.test:8080"
timeout = "1s"

[rate_limits]
[[rate_limits.policies]]
name = "tight"
rate = "2/min"
burst = 2

[[routes]]
name = "sales"
path_prefix = "/sales/"
rewrite_prefix = "/api/v2/sales/"
upstream = "up"
allow = { pipelines = ["sales_*"] }

[[routes]]
name = "reports"
path_prefix = "/reports"
methods = ["GET"]
upstream = "up"
allow = { pipelines = ["*"] }

[[routes]]
name = "limited"
path_prefix = "/limited/"
upstream = "up"
rate_limit = "tight"
allow = { pipelines = ["*"] }
"#
}

/// A gateway whose one upstream is an in-process service. The service answers by path: a path
/// containing `/reset` fails (as a reset connection would), `/slow` never answers, anything else
/// is 200 `ok` with a few headers of its own (two of them hop-by-hop).
struct Layer {
    gateway: Arc<Gateway>,
    seen: Arc<Mutex<Vec<Seen>>>,
    closer: Option<airgate::audit::Closer>,
    dir: tempfile::TempDir,
}

impl Layer {
    /// `server` is added to the `[server]` section.
    fn new(server: &str) -> Layer {
        let dir = tempfile::tempdir().unwrap();
        let text = base_config(dir.path()).replace("[admin]", &format!("{server}\n[admin]")) + routes();
        let config = config::parse(&text).unwrap_or_else(|p| panic!("test config invalid:\n{p}\n{text}"));
        let metrics = Metrics::new(100);
        let (auditor, closer) = Auditor::start(&config.audit, metrics.clone()).unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let upstream = {
            let seen = seen.clone();
            tower::service_fn(move |req: Request<RequestBody>| {
                let seen = seen.clone();
                async move { upstream(req, &seen).await }
            })
        };
        let make = move |_: &config::Upstream| Ok(Transport::service(upstream.clone()));
        let snapshot = Snapshot::build_with(config, &metrics, None, &make).unwrap();
        Layer { gateway: Gateway::new(snapshot, metrics, auditor), seen, closer: Some(closer), dir }
    }

    async fn call(&self, req: http::request::Builder) -> Got {
        self.call_from(PEER, req.body(Full::default()).unwrap()).await
    }

    async fn call_from<B>(&self, peer: &str, req: Request<B>) -> Got
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<airgate::body::BoxError>,
    {
        let conn = ConnInfo { peer: peer.parse::<SocketAddr>().unwrap(), tls: false };
        let resp = self.gateway.handle(req.map(Inbound::other), conn).await;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Got { status: parts.status, headers: parts.headers, body }
    }

    /// What the upstream saw last.
    fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("nothing reached the upstream")
    }

    fn forwarded(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Stops the audit writer and returns every record it wrote.
    async fn audit(mut self) -> Vec<serde_json::Value> {
        drop(self.gateway);
        self.closer.take().unwrap().close(Duration::from_secs(10)).await;
        let text = std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

async fn upstream(req: Request<RequestBody>, seen: &Mutex<Vec<Seen>>) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if path.contains("/slow") {
        std::future::pending::<()>().await;
    }
    let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    seen.lock().unwrap().push(Seen {
        method: parts.method,
        uri: parts.uri.path_and_query().map_or_else(String::new, ToString::to_string),
        version: parts.version,
        headers: parts.headers,
        body,
        trailers: None,
        at: std::time::SystemTime::now(),
    });
    if path.contains("/reset") {
        return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by the test upstream"));
    }
    let mut resp = Response::new(Body::full("ok"));
    let h = resp.headers_mut();
    h.insert("x-upstream", "1".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("connection", "x-upstream-hop".parse().unwrap());
    h.insert("x-upstream-hop", "1".parse().unwrap());
    Ok(resp)
}

/// A request from `dag` with the test issuer's token, as hyper hands it to the gateway.
fn authed(method: Method, path: &str, dag: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "airgate.test")
        .header("authorization", format!("Bearer {}", token(dag)))
}

#[tokio::test]
async fn forwards_with_rewrite_and_the_upstream_authority() {
    let l = Layer::new("");
    let req = authed(Method::POST, "/sales/orders/7?x=1&y=%20z", "sales_daily").header("host", "evil.example.com");
    let got = l.call_from(PEER, req.body(Full::new(Bytes::from("{\"a\":1}"))).unwrap()).await;
    // Two Host headers: refused before anything else.
    got.problem(400);
    assert_eq!(l.forwarded(), 0);

    let mut req = authed(Method::POST, "/sales/orders/7?x=1&y=%20z", "sales_daily");
    req.headers_mut().unwrap().insert("host", "evil.example.com".parse().unwrap());
    let got = l.call_from(PEER, req.body(Full::new(Bytes::from("{\"a\":1}"))).unwrap()).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), "ok");
    let seen = l.last();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri, "/api/v2/sales/orders/7?x=1&y=%20z");
    assert_eq!(seen.body, "{\"a\":1}");
    assert_eq!(seen.headers["host"], "upstream.test:8080", "the upstream is never derived from Host");
    assert_eq!(seen.headers["x-forwarded-host"], "evil.example.com");
}

#[tokio::test]
async fn hop_by_hop_proxy_and_caller_credentials_never_cross() {
    let l = Layer::new("");
    let req = authed(Method::GET, "/reports/x", "any")
        .header("connection", "x-listed")
        .header("x-listed", "secret-hop")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("proxy-foo", "1")
        .header("te", "trailers")
        .header("x-custom", "kept");
    let got = l.call(req).await;
    assert_eq!(got.status, 200);
    let h = l.last().headers;
    for gone in ["x-listed", "keep-alive", "proxy-authorization", "proxy-foo", "te", "connection"] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream: {h:?}");
    }
    assert!(!h.contains_key("authorization"), "the caller's token must not reach the upstream");
    assert_eq!(h["x-custom"], "kept");
    // The upstream's hop-by-hop headers, and those its Connection names, stop at the gateway.
    for gone in ["keep-alive", "connection", "x-upstream-hop"] {
        assert!(!got.headers.contains_key(gone), "{gone} reached the client: {:?}", got.headers);
    }
    assert_eq!(got.headers["x-upstream"], "1");
}

#[tokio::test]
async fn airflow_headers_are_the_verified_identity_in_every_spelling() {
    let l = Layer::new("");
    // An assertion that contradicts the token is refused, not overwritten.
    l.call(authed(Method::GET, "/reports/x", "real_dag").header("x-airflow-dag-id", "forged")).await.problem(403);
    assert_eq!(l.forwarded(), 0);
    let req = authed(Method::GET, "/reports/x", "real_dag")
        .header("x-airflow-dag-id", "real_dag")
        .header("x_airflow_dag_id", "forged")
        .header("x-airflow-something-else", "forged");
    assert_eq!(l.call(req).await.status, 200);
    let h = l.last().headers;
    assert_eq!(h.get_all("x-airflow-dag-id").iter().collect::<Vec<_>>(), ["real_dag"]);
    assert!(!h.contains_key("x_airflow_dag_id"));
    assert!(!h.contains_key("x-airflow-something-else"));
    assert_eq!(l.audit().await[0]["reason"], "identity_mismatch");
}

#[tokio::test]
async fn request_id_is_kept_when_sane_and_generated_otherwise() {
    let l = Layer::new("");
    let got = l.call(authed(Method::GET, "/reports/x", "d").header("x-request-id", "abc-123")).await;
    assert_eq!(got.headers["x-request-id"], "abc-123");
    assert_eq!(l.last().headers["x-request-id"], "abc-123");

    let got = l.call(authed(Method::GET, "/reports/x", "d").header("x-request-id", "bad id with spaces")).await;
    let id = got.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(l.last().headers["x-request-id"], id.as_str());
    // A refusal carries the id too, in the header and in the problem body.
    let got = l.call(Request::get("/reports/x").header("host", "a").header("x-request-id", "r-1")).await;
    assert_eq!(got.problem(401)["request_id"], "r-1");
}

#[tokio::test]
async fn client_address_headers_from_untrusted_and_trusted_peers() {
    let forged = |req: http::request::Builder| {
        req.header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "airflow.example.com")
            .header("forwarded", "for=203.0.113.7")
            .header("x-real-ip", "203.0.113.7")
    };
    let l = Layer::new("trusted_proxies = [\"192.0.2.0/24\"]");
    // An untrusted peer: its claims are replaced by what the gateway saw.
    let got =
        l.call_from("198.51.100.1:1234", forged(authed(Method::GET, "/reports/x", "d")).body(Full::default()).unwrap());
    assert_eq!(got.await.status, 200);
    let h = l.last().headers;
    assert_eq!(h["x-forwarded-for"], "198.51.100.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "airgate.test");
    assert!(!h.contains_key("forwarded"));
    assert!(!h.contains_key("x-real-ip"));
    // A trusted proxy: its chain is extended.
    assert_eq!(l.call(forged(authed(Method::GET, "/reports/x", "d"))).await.status, 200);
    let h = l.last().headers;
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 192.0.2.10");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "airflow.example.com");
    let audit = l.audit().await;
    assert_eq!(audit[0]["client_ip"], "198.51.100.1");
    assert_eq!(audit[1]["client_ip"], "203.0.113.7");
}

#[tokio::test]
async fn traceparent_passes_through_or_is_generated() {
    let l = Layer::new("");
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    l.call(authed(Method::GET, "/reports/x", "d").header("traceparent", tp).header("tracestate", "vendor=1")).await;
    let h = l.last().headers;
    assert_eq!(h["traceparent"], tp);
    assert_eq!(h["tracestate"], "vendor=1");

    l.call(authed(Method::GET, "/reports/x", "d").header("traceparent", "00-zz-bad")).await;
    let generated = l.last().headers["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 55);
    assert!(generated.starts_with("00-"));
    let audit = l.audit().await;
    assert_eq!(audit[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(audit[1]["trace_id"], &generated[3..35]);
}

/// Every answer the gateway gives itself: problem+json with the status, the protocol headers it
/// needs, nothing forwarded, and one audit record with the outcome and reason.
#[tokio::test(start_paused = true)]
async fn every_refusal_is_problem_json_with_its_headers_and_audit_reason() {
    let l = Layer::new("max_request_body = \"1KiB\"\nmax_header_bytes = \"2KiB\"");
    let get = |path: &str, dag: &str| authed(Method::GET, path, dag);
    let mut expected: Vec<(&str, &str)> = Vec::new();

    for (path, reason) in [
        ("/reports/../sales/x", "dot_segment"),
        ("/reports//x", "empty_segment"),
        ("/reports/%zz", "bad_percent_encoding"),
        ("/reports/%00", "nul_in_path"),
        ("/reports%2fx", "encoded_separator"),
    ] {
        l.call(get(path, "d")).await.problem(400);
        expected.push(("bad_request", reason));
    }
    l.call(get("/reports/x", "d").header("x-big", "v".repeat(3000))).await.problem(431);
    expected.push(("bad_request", "headers_too_large"));
    let big = Request::post("/sales/x")
        .header("host", "a")
        .header("authorization", format!("Bearer {}", token("sales_x")))
        .body(Full::new(Bytes::from(vec![b'a'; 2048])))
        .unwrap();
    l.call_from(PEER, big).await.problem(413);
    expected.push(("bad_request", "body_too_large"));

    l.call(Request::get("/nowhere").header("host", "a")).await.problem(404);
    expected.push(("no_route", "no_route"));
    let got = l.call(get("/reports/x", "d").method(Method::DELETE)).await;
    got.problem(405);
    assert_eq!(got.headers["allow"], "GET");
    expected.push(("method_not_allowed", "method_not_allowed"));

    let got = l.call(Request::get("/reports/x").header("host", "a")).await;
    assert_eq!(got.problem(401)["type"], "urn:airgate:problem:unauthenticated");
    assert_eq!(got.headers["www-authenticate"], "Bearer realm=\"airgate\"");
    expected.push(("unauthenticated", "missing_token"));
    let got = l.call(Request::get("/reports/x").header("host", "a").header("authorization", "Bearer nope")).await;
    assert_eq!(got.problem(401)["type"], "urn:airgate:problem:invalid-token");
    assert_eq!(got.headers["www-authenticate"], "Bearer realm=\"airgate\", error=\"invalid_token\"");
    assert!(!got.text().contains("nope"), "a token must never be echoed");
    expected.push(("unauthenticated", "malformed"));

    l.call(get("/sales/x", "finance_x")).await.problem(403);
    expected.push(("forbidden", "pipeline finance_x not allowed on route sales"));

    for _ in 0..2 {
        let got = l.call(get("/limited/x", "d")).await;
        assert_eq!(got.status, 200);
        assert!(got.headers.contains_key("ratelimit"));
        expected.push(("allowed", ""));
    }
    let got = l.call(get("/limited/x", "d")).await;
    got.problem(429);
    assert_eq!(got.headers["ratelimit-policy"], "\"tight\";q=2;w=60");
    assert!(got.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    expected.push(("rate_limited", "rate_limited"));

    let before = l.forwarded();
    l.call(get("/reports/reset", "d")).await.problem(502);
    assert_eq!(l.forwarded(), before + 1);
    expected.push(("upstream_error", "upstream_reset"));
    // The paused clock runs the upstream's 1 s timeout out at once.
    l.call(get("/reports/slow", "d")).await.problem(504);
    expected.push(("upstream_timeout", "upstream_timeout"));

    l.gateway.start_draining();
    let got = l.call(get("/reports/x", "d")).await;
    got.problem(503);
    assert_eq!(got.headers["retry-after"], "1");
    assert_eq!(got.headers["connection"], "close");
    expected.push(("draining", "draining"));
    // Only the 200s and the reset request reached the upstream.
    assert_eq!(l.forwarded(), 3);

    let audit = l.audit().await;
    let got: Vec<(String, String)> = audit
        .iter()
        .map(|r| (r["outcome"].as_str().unwrap().to_owned(), r["reason"].as_str().unwrap_or("").to_owned()))
        .collect();
    let expected: Vec<(String, String)> = expected.iter().map(|(o, r)| ((*o).to_owned(), (*r).to_owned())).collect();
    assert_eq!(got, expected);
}

/// A request body that stops arriving: 408 once `request_timeout` passes (paused clock), with
/// `Connection: close` because the rest of the body is unread.
#[tokio::test(start_paused = true)]
async fn a_stalled_request_body_is_408_not_504() {
    let l = Layer::new("request_timeout = \"5s\"");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(1);
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"first")))).await.unwrap();
    let mut rx = rx;
    let body = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let mut req = authed(Method::POST, "/sales/upload", "sales_x").body(body).unwrap();
    req.headers_mut().insert("content-length", "100".parse().unwrap());
    let got = l.call_from(PEER, req).await;
    got.problem(408);
    assert_eq!(got.headers["connection"], "close");
    drop(tx);
    let audit = l.audit().await;
    assert_eq!(audit[0]["outcome"], "client_timeout");
    assert_eq!(audit[0]["bytes_in"], 5);
}

/// The upstream's answer headers reach the client unchanged but for the hop-by-hop ones, and the
/// RateLimit headers of an enforced policy are added.
#[tokio::test]
async fn responses_carry_the_quota_and_the_request_id() {
    let l = Layer::new("");
    let got = l.call(authed(Method::GET, "/limited/x", "d")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.headers["ratelimit-policy"], "\"tight\";q=2;w=60");
    assert!(got.headers["ratelimit"].to_str().unwrap().starts_with("\"tight\";r=1;t="));
    assert_eq!(got.headers["x-request-id"].len(), 32);
    assert!(!got.headers.contains_key("x-upstream-hop"));
}
