//! Rate-limit shadow mode through a running gateway (contract §4, §7): a shadow policy forwards
//! the requests it would refuse, audits them `allowed` with reason `rate_limited_shadow`, counts
//! them in `airgate_rate_limit_shadow_total{pipeline,route}`, sends no `RateLimit*`/`Retry-After`
//! headers, and a reload that flips `shadow` keeps the limiter state and the metric — with the
//! in-process limiter and with Redis (the real one at 127.0.0.1:6379).

mod support;

use airgate::{app, config};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::Value;
use std::{
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use support::*;

const SHADOW_METRIC: &str = "airgate_rate_limit_shadow_total";

/// An in-process gateway started from a file, reloaded by the test.
struct FileGateway {
    running: app::Running,
    path: PathBuf,
    dir: tempfile::TempDir,
    upstream: Upstream,
}

impl FileGateway {
    async fn start(rate_limits: &str) -> FileGateway {
        let upstream = upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("airgate.toml");
        std::fs::write(&path, config_text(&dir, &upstream, rate_limits)).unwrap();
        let cfg = config::load(&path).unwrap_or_else(|p| panic!("test config invalid:\n{p}"));
        let running = app::start(cfg, app::Options { watch_config: None }).await.unwrap();
        FileGateway { running, path, dir, upstream }
    }

    /// Rewrites the file and reloads it (as SIGHUP does).
    fn reload(&self, rate_limits: &str) {
        std::fs::write(&self.path, config_text(&self.dir, &self.upstream, rate_limits)).unwrap();
        self.running.reload().unwrap();
    }

    async fn call(&self, dag: &str) -> Got {
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{}/limited/x", self.running.proxy_addr))
            .header("authorization", format!("Bearer {}", token(dag)))
            .body(Full::<Bytes>::default())
            .unwrap();
        send(&client(), req).await
    }

    async fn audit_of(&self, got: &Got) -> Value {
        let id = got.headers["x-request-id"].to_str().unwrap().to_owned();
        let audit = self.dir.path().join("audit.jsonl");
        eventually(Duration::from_secs(10), "the audit record", || async {
            let text = std::fs::read_to_string(&audit).unwrap_or_default();
            text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|r| r["request_id"] == id.as_str())
        })
        .await
    }

    fn metric(&self, name: &str, pipeline: &str) -> Option<f64> {
        let text = self.running.gateway.metrics().render();
        metric_value(&text, name, &[("pipeline", pipeline), ("route", "limited")])
    }
}

fn config_text(dir: &tempfile::TempDir, upstream: &Upstream, rate_limits: &str) -> String {
    format!(
        "{}[[upstreams]]\nname = \"up\"\nurl = \"{}\"\ntimeout = \"5s\"\n\
         [[routes]]\nname = \"limited\"\npath_prefix = \"/limited/\"\nupstream = \"up\"\n\
         allow = {{ pipelines = [\"*\"] }}\nrate_limit = \"rollout\"\n{rate_limits}",
        base_config(dir.path()),
        upstream.url()
    )
}

fn limits(backend: &str, shadow: bool) -> String {
    format!(
        "[rate_limits]\n{backend}\n[[rate_limits.policies]]\nname = \"rollout\"\nrate = \"1/min\"\nburst = 2\nshadow = {shadow}\n"
    )
}

fn no_ratelimit_headers(got: &Got) {
    for h in ["ratelimit", "ratelimit-policy", "retry-after"] {
        assert!(!got.headers.contains_key(h), "a shadow policy sent {h}: {:?}", got.headers);
    }
}

async fn shadow_then_enforced(backend: &str) {
    let gw = FileGateway::start(&limits(backend, true)).await;
    let dag = "shadow_dag";

    // Within the limit: forwarded, no reason, no headers.
    for _ in 0..2 {
        let got = gw.call(dag).await;
        assert_eq!(got.status, 200);
        no_ratelimit_headers(&got);
        let rec = gw.audit_of(&got).await;
        assert_eq!(rec["outcome"], "allowed");
        assert!(rec["reason"].is_null(), "{rec}");
    }
    // Over it: still forwarded, audited allowed with the shadow reason, counted, no headers.
    for _ in 0..3 {
        let got = gw.call(dag).await;
        assert_eq!(got.status, 200, "a shadow policy never refuses");
        no_ratelimit_headers(&got);
        let rec = gw.audit_of(&got).await;
        assert_eq!(rec["outcome"], "allowed", "{rec}");
        assert_eq!(rec["reason"], "rate_limited_shadow", "{rec}");
        assert_eq!(rec["pipeline"], dag);
    }
    assert_eq!(gw.upstream.count(), 5, "every request reached the upstream");
    assert_eq!(gw.metric(SHADOW_METRIC, dag), Some(3.0));
    assert_eq!(gw.metric("airgate_rate_limited_total", dag), None);

    // Enforce: the same bucket, still empty — no fresh burst — and the metric is kept.
    gw.reload(&limits(backend, false));
    let got = gw.call(dag).await;
    assert_eq!(got.status, 429, "turning shadow off handed out a fresh burst");
    assert!(got.headers.contains_key("retry-after") && got.headers.contains_key("ratelimit"));
    assert_eq!(gw.audit_of(&got).await["outcome"], "rate_limited");
    assert_eq!(gw.metric(SHADOW_METRIC, dag), Some(3.0), "the reload kept the shadow metric");
    assert_eq!(gw.metric("airgate_rate_limited_total", dag), Some(1.0));
    // Another pipeline has its own burst, now with headers.
    let other = gw.call("other_dag").await;
    assert_eq!(other.status, 200);
    assert_eq!(other.headers["ratelimit-policy"], "\"rollout\";q=2;w=60");

    // And back to shadow: the state is still kept, the metric goes on counting.
    gw.reload(&limits(backend, true));
    let got = gw.call(dag).await;
    assert_eq!(got.status, 200);
    no_ratelimit_headers(&got);
    assert_eq!(gw.audit_of(&got).await["reason"], "rate_limited_shadow");
    assert_eq!(gw.metric(SHADOW_METRIC, dag), Some(4.0));
    assert_eq!(gw.upstream.count(), 7, "the one refused request never reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_with_the_local_backend() {
    shadow_then_enforced("backend = \"local\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_with_the_redis_backend() {
    assert!(
        std::net::TcpStream::connect_timeout(&"127.0.0.1:6379".parse().unwrap(), Duration::from_secs(1)).is_ok(),
        "this test needs the real Redis at 127.0.0.1:6379 (`redis-server --save '' --appendonly no`)"
    );
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    // deny: a decision Redis could not make would be a 503 (or, in shadow, a silent allow), so the
    // 429 after the reload can only come from the state kept in Redis.
    let backend = format!(
        "backend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nredis_key_prefix = \"airgate-test:shadow:{}:{nanos}:\"\n\
         redis_timeout = \"1s\"\non_backend_error = \"deny\"",
        std::process::id()
    );
    shadow_then_enforced(&backend).await;
}
