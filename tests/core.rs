//! End-to-end tests of the gateway core over real loopback sockets: forwarding, path rewrite,
//! every header rule, HTTP/2, TLS in and out, the gateway's own answers, limits, slowloris,
//! connection cap, graceful drain, audit and metrics.

mod support;

use bytes::Bytes;
use http::{Method, Request, Version};
use http_body_util::Full;
use std::time::Duration;
use support::*;

fn routes(upstream: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "up"
url = "{upstream}"
timeout = "1s"
connect_timeout = "500ms"

[[routes]]
name = "sales"
path_prefix = "/sales/"
rewrite_prefix = "/api/v2/sales/"
upstream = "up"
allow = {{ pipelines = ["sales_*"] }}

[[routes]]
name = "reports"
path_prefix = "/reports"
methods = ["GET"]
upstream = "up"
allow = {{ pipelines = ["*"] }}

[[routes]]
name = "root"
path_prefix = "/"
upstream = "up"
allow = {{ pipelines = ["*"] }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_methods_bodies_and_query_with_rewrite() {
    let up = upstream().await;
    let gw = gateway(&routes(&up.url())).await;
    let c = client();
    for (method, body) in [(Method::GET, ""), (Method::POST, "{\"a\":1}"), (Method::PUT, "put-body")] {
        let req = authed(method.clone(), &gw.url("/sales/orders/7?x=1&y=%20z"), "sales_daily", "")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let got = send(&c, req).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.text(), "ok");
        let seen = up.last();
        assert_eq!(seen.method, method);
        assert_eq!(seen.uri, "/api/v2/sales/orders/7?x=1&y=%20z");
        assert_eq!(seen.body, body.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_proxy_and_authorization_headers_are_removed() {
    let up = upstream().await;
    let gw = gateway(&routes(&up.url())).await;
    let req = authed(Method::GET, &gw.url("/reports/x"), "any", "")
        .header("connection", "x-listed")
        .header("x-listed", "secret-hop")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("proxy-foo", "1")
        .header("te", "trailers")
        .header("x-custom", "kept")
        .body(Full::default())
        .unwrap();
    let got = send(&client(), req).await;
    assert_eq!(got.status, 200);
    let h = up.last().headers;
    for gone in ["x-listed", "keep-alive", "proxy-authorization", "proxy-foo", "te", "authorization"] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream: {h:?}");
    }
    assert_eq!(h["x-custom"], "kept");
    // The upstream's own hop-by-hop headers do not reach the client either.
    assert!(!got.headers.contains_key("keep-alive"));
    assert!(!got.headers.contains_key("x-upstream-hop"));
    assert_eq!(got.headers["x-upstream"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_in_and_out() {
    let up = upstream().await;
    let gw = gateway(&routes(&up.url()).replace("timeout = \"1s\"", "timeout = \"1s\"\nhttp2 = true")).await;
    let req = authed(Method::POST, &gw.url("/reports/x"), "d", "").body(Full::new(Bytes::from("h2"))).unwrap();
    let req = Request::builder()
        .method(Method::GET)
        .uri(req.uri().clone())
        .header("authorization", req.headers()["authorization"].clone())
        .body(Full::default())
        .unwrap();
    let got = send(&h2_client(), req).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(up.last().version, Version::HTTP_2, "upstream leg should be h2 with prior knowledge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_in_and_tls_to_upstream_with_custom_ca() {
    let upstream_pki = pki();
    let up = upstream_with(Some(tls_acceptor(&upstream_pki))).await;
    let front_pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    let upstream_ca = p("up-ca.pem", &upstream_pki.ca_pem);
    let cert = p("cert.pem", &front_pki.cert_pem);
    let key = p("key.pem", &front_pki.key_pem);
    let body = routes(&format!("https://localhost:{}", up.addr.port()))
        .replace("timeout = \"1s\"", &format!("timeout = \"1s\"\nca_file = \"{upstream_ca}\""));
    let text = base_config(dir.path())
        .replace("[admin]", &format!("tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n[admin]"))
        + &body;
    let running =
        airgate::app::start(airgate::config::parse(&text).unwrap(), airgate::app::Options { watch_config: None })
            .await
            .unwrap();

    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let builder =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_client_config(&front_pki, &[])).https_only();
        let connector = if alpn == b"h2" { builder.enable_http2().build() } else { builder.enable_http1().build() };
        let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build::<_, Full<Bytes>>(connector);
        let req = Request::get(format!("https://localhost:{}/reports/x", running.proxy_addr.port()))
            .header("authorization", format!("Bearer {}", token("d")))
            .body(Full::default())
            .unwrap();
        let resp = c.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let expected = if alpn == b"h2" { Version::HTTP_2 } else { Version::HTTP_11 };
        assert_eq!(resp.version(), expected);
        let seen = up.last();
        assert_eq!(seen.headers["x-forwarded-proto"], "https");
        assert_eq!(seen.headers["host"], format!("localhost:{}", up.addr.port()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_are_problem_json() {
    // Every refusal is checked in-process (tests/layer.rs); these are the ones whose cause is on
    // the wire: a raw request line no client would normalise, and a real upstream hanging up.
    let up = upstream().await;
    let gw = gateway(&routes(&up.url())).await;

    // 400: dot segments and bad escapes, sent raw so no client normalises them.
    for path in ["/reports/../sales/x", "/reports/%zz", "/reports/%00"] {
        let resp = raw(
            gw.running.proxy_addr,
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(2),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{path}: {resp}");
        assert!(resp.contains("application/problem+json"), "{resp}");
    }

    // 502: the upstream closes the connection.
    get(&gw.url("/close"), "d").await.problem(502);
    let audit = gw.audit_lines(4).await;
    assert_eq!(audit[3]["reason"], "upstream_reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_and_unreachable_upstream_is_502() {
    let gw = gateway(
        r#"
[[upstreams]]
name = "down"
url = "http://127.0.0.1:9"
connect_timeout = "300ms"
[[routes]]
name = "only"
path_prefix = "/only/"
upstream = "down"
allow = { pipelines = ["*"] }
"#,
    )
    .await;
    get(&gw.url("/elsewhere"), "d").await.problem(404);
    get(&gw.url("/only/x"), "d").await.problem(502);
    let audit = gw.audit_lines(2).await;
    assert_eq!(audit[0]["outcome"], "no_route");
    assert_eq!(audit[1]["outcome"], "upstream_error");
    assert_eq!(audit[1]["reason"], "upstream_connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_and_header_limits() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path())
        .replace("[admin]", "max_request_body = \"1KiB\"\nmax_header_bytes = \"2KiB\"\n[admin]")
        + &routes(&up.url());
    let running =
        airgate::app::start(airgate::config::parse(&text).unwrap(), airgate::app::Options { watch_config: None })
            .await
            .unwrap();
    let url = |p: &str| format!("http://{}{p}", running.proxy_addr);
    let c = client();
    let before = up.count();

    // Content-Length over the limit: refused before anything is forwarded.
    let got = send(
        &c,
        authed(Method::POST, &url("/files/x"), "d", "").body(Full::new(Bytes::from(vec![b'a'; 2048]))).unwrap(),
    )
    .await;
    got.problem(413);

    // Chunked body that grows past the limit mid-stream.
    let (tx, body) = {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
        (tx, http_body_util::StreamBody::new(tokio_stream_from(rx)))
    };
    let c2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::StreamBody<_>>();
    let sender = tokio::spawn(async move {
        for _ in 0..8 {
            if tx.send(Ok(http_body::Frame::data(Bytes::from(vec![b'b'; 512])))).await.is_err() {
                break;
            }
        }
    });
    let req = Request::post(url("/files/x/echo-body"))
        .header("authorization", format!("Bearer {}", token("d")))
        .body(body)
        .unwrap();
    let resp = c2.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    let _ = sender.await;

    // Headers over max_header_bytes.
    let big = "v".repeat(3000);
    let got =
        send(&c, authed(Method::GET, &url("/files/x"), "d", "").header("x-big", big).body(Full::default()).unwrap())
            .await;
    got.problem(431);
    // Nothing but the streamed request (which started before the limit hit) reached the upstream.
    assert!(up.count() <= before + 1);
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_client_is_dropped() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let text =
        base_config(dir.path()).replace("[admin]", "header_read_timeout = \"500ms\"\n[admin]") + &routes(&up.url());
    let running =
        airgate::app::start(airgate::config::parse(&text).unwrap(), airgate::app::Options { watch_config: None })
            .await
            .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(running.proxy_addr).await.unwrap();
    s.write_all(b"GET /reports/x HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    // Trickle one header byte at a time; the server must close within the timeout (+ slack).
    let mut buf = [0u8; 256];
    let closed_after = loop {
        if s.write_all(b"x").await.is_err() {
            break started.elapsed();
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => break started.elapsed(), // a 408 or similar before close is fine
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(5), "slowloris connection still open after 5s");
    };
    assert!(closed_after >= Duration::from_millis(400), "closed too early: {closed_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_holds_extra_connections_back() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path()).replace("[admin]", "max_connections = 1\n[admin]") + &routes(&up.url());
    let running =
        airgate::app::start(airgate::config::parse(&text).unwrap(), airgate::app::Options { watch_config: None })
            .await
            .unwrap();
    use tokio::io::AsyncWriteExt;
    // The first connection occupies the only slot.
    let mut first = tokio::net::TcpStream::connect(running.proxy_addr).await.unwrap();
    first.write_all(b"GET /reports/x HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let req = format!(
        "GET /reports/x HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
        token("d")
    );
    let second = raw(running.proxy_addr, req.as_bytes(), Duration::from_millis(500)).await;
    assert_eq!(second, "", "the second connection must wait while the cap is reached");
    drop(first);
    let third = raw(running.proxy_addr, req.as_bytes(), Duration::from_secs(3)).await;
    assert!(third.starts_with("HTTP/1.1 200"), "{third}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_drain_finishes_in_flight_requests() {
    let up = upstream().await;
    let gw = gateway(&routes(&up.url()).replace("timeout = \"1s\"", "timeout = \"5s\"")).await;
    let url = gw.url("/slow/800");
    let admin = gw.admin("/readyz");
    let proxy = gw.running.proxy_addr;
    let in_flight = tokio::spawn(async move { get(&url, "d").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let Gateway { running, dir: _dir, .. } = gw;
    let gateway = running.gateway.clone();
    let drain = tokio::spawn(running.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(gateway.is_draining());
    let ready = airgate::admin::respond(&gateway, &Request::get(admin).body(()).unwrap());
    assert_eq!(ready.status(), 503);
    // New connections are refused once the listener is closed.
    assert!(tokio::net::TcpStream::connect(proxy).await.is_err(), "listener still accepting while draining");
    let got = in_flight.await.unwrap();
    assert_eq!(got.status, 200, "the in-flight request must finish");
    assert!(drain.await.unwrap(), "drain should finish within shutdown_grace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_line_per_request_with_contract_fields() {
    let up = upstream().await;
    let gw = gateway(&routes(&up.url())).await;
    get(&gw.url("/sales/a?secret=1"), "sales_x").await;
    get(&gw.url("/sales/b"), "other").await;
    let lines = gw.audit_lines(2).await;
    assert_eq!(lines.len(), 2);
    let a = &lines[0];
    for field in [
        "ts",
        "request_id",
        "outcome",
        "reason",
        "status",
        "method",
        "route",
        "path",
        "upstream",
        "issuer",
        "principal",
        "pipeline",
        "task",
        "run_id",
        "try_number",
        "map_index",
        "team",
        "jti",
        "client_ip",
        "duration_ms",
        "upstream_duration_ms",
        "bytes_in",
        "bytes_out",
        "trace_id",
    ] {
        assert!(a.get(field).is_some(), "audit record lacks {field}: {a}");
    }
    assert_eq!(a["outcome"], "allowed");
    assert_eq!(a["status"], 200);
    assert_eq!(a["path"], "/sales/a", "no query string by default");
    assert_eq!(a["pipeline"], "sales_x");
    assert_eq!(a["route"], "sales");
    assert_eq!(a["bytes_out"], 2);
    assert!(a["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[1]["outcome"], "forbidden");
    assert_eq!(lines[1]["status"], 403);
    let text = std::fs::read_to_string(&gw.audit).unwrap();
    assert!(!text.contains(&token("sales_x")), "the audit log must never hold a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_traffic() {
    let up = upstream().await;
    let gw = gateway(&routes(&up.url())).await;
    get(&gw.url("/sales/a"), "sales_x").await;
    get(&gw.url("/sales/a"), "nope").await;
    let m = send(&client(), Request::get(gw.admin("/metrics")).body(Full::default()).unwrap()).await;
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(
        text.contains(r#"airgate_requests_total{code="200",outcome="allowed",pipeline="sales_x",route="sales"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"airgate_requests_total{code="403",outcome="forbidden",pipeline="nope",route="sales"} 1"#),
        "{text}"
    );
    assert!(text.contains("# TYPE airgate_request_duration_seconds histogram"));
    assert!(text.contains(r#"airgate_upstream_request_duration_seconds_count{code="200",upstream="up"} 1"#), "{text}");
    assert!(text.contains("airgate_in_flight_requests 0"));
    let health = send(&client(), Request::get(gw.admin("/healthz")).body(Full::default()).unwrap()).await;
    assert_eq!(health.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_streams_with_flat_memory() {
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 4096; // 1 GiB
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path()).replace("[admin]", "max_request_body = \"2GiB\"\n[admin]")
        + &routes(&up.url()).replace("timeout = \"1s\"", "timeout = \"60s\"");
    let running =
        airgate::app::start(airgate::config::parse(&text).unwrap(), airgate::app::Options { watch_config: None })
            .await
            .unwrap();
    let chunk = Bytes::from(vec![b'z'; CHUNK]);
    let stream = futures_util::stream::iter(
        (0..CHUNKS).map(move |_| Ok::<_, std::io::Error>(http_body::Frame::data(chunk.clone()))),
    );
    let body = http_body_util::StreamBody::new(stream);
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let before = rss_kib();
    let req = Request::post(format!("http://{}/files/discard", running.proxy_addr))
        .header("authorization", format!("Bearer {}", token("d")))
        .body(body)
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    assert_eq!(got, (CHUNK * CHUNKS).to_string().as_bytes());
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 64, "RSS grew by {grown_mib} MiB while streaming 1 GiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_is_still_audited_and_counted() {
    let up = upstream().await;
    let gw = gateway(&routes(&up.url()).replace("timeout = \"1s\"", "timeout = \"5s\"")).await;
    let req = format!("GET /slow/1500 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n", token("d"));
    // Send the request, then hang up while the upstream is still working on it.
    let _ = raw(gw.running.proxy_addr, req.as_bytes(), Duration::from_millis(300)).await;
    let audit = gw.audit_lines(1).await;
    assert_eq!(audit[0]["outcome"], "client_closed", "{}", audit[0]);
    assert_eq!(audit[0]["status"], 499);
    assert_eq!(audit[0]["pipeline"], "d");
    let metrics = send(&client(), Request::get(gw.admin("/metrics")).body(Full::default()).unwrap()).await.text();
    assert!(metrics.contains("airgate_in_flight_requests 0"), "{metrics}");
    assert!(metrics.contains(r#"code="499",outcome="client_closed",pipeline="d""#), "{metrics}");
}
