//! End-to-end policy through a running gateway: allow-lists (pipeline globs, teams, roles,
//! principals, issuers), dry run, per-pipeline rate limits with their 429 and `RateLimit`
//! headers, overrides, two replicas sharing one limit in the real Redis at 127.0.0.1:6379, and
//! what each `on_backend_error` mode does when Redis cannot be reached.

mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use support::*;

/// A shared-secret issuer (HS256) whose tokens carry `roles`, which `mint` cannot add.
struct Hs {
    _dir: tempfile::TempDir,
    secret: String,
    section: String,
}

fn hs_issuer() -> Hs {
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("{:016x}{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..), fastrand::u64(..));
    let path = dir.path().join("hs.key");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    let section = format!(
        "[[issuers]]\nname = \"hs\"\nissuer = \"https://hs.test.invalid\"\naudiences = [\"urn:airgate\"]\n\
         algorithms = [\"HS256\"]\nshared_secret = \"file:{}\"\n",
        path.display()
    );
    Hs { _dir: dir, secret, section }
}

impl Hs {
    fn token(&self, dag: &str, roles: &[&str]) -> String {
        let now = unix_now();
        let claims = json!({
            "iss": "https://hs.test.invalid", "aud": "urn:airgate", "sub": "hs-minter", "dag_id": dag,
            "roles": roles, "iat": now, "exp": now + 300,
        });
        let header = json!({"alg": "HS256", "typ": "JWT"});
        airgate::identity::mint::sign_hmac(
            Algorithm::HS256,
            self.secret.as_bytes(),
            header.as_object().unwrap(),
            claims.as_object().unwrap(),
        )
        .unwrap()
    }
}

fn upstream_section(url: &str) -> String {
    format!("[[upstreams]]\nname = \"up\"\nurl = \"{url}\"\ntimeout = \"5s\"\n")
}

fn route(name: &str, allow: &str, extra: &str) -> String {
    format!("[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}/\"\nupstream = \"up\"\nallow = {allow}\n{extra}\n")
}

async fn call(gw: &Gateway, path: &str, token: &str) -> Got {
    let req = Request::builder()
        .method(Method::GET)
        .uri(gw.url(path))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    send(&client(), req).await
}

async fn audit_of(gw: &Gateway, got: &Got) -> Value {
    let id = got.headers["x-request-id"].to_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), "the audit record", || async {
        let text = std::fs::read_to_string(&gw.audit).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|r| r["request_id"] == id.as_str())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_match_pipelines_teams_roles_principals_and_issuers() {
    let up = upstream().await;
    let hs = hs_issuer();
    let config = [
        hs.section.clone(),
        upstream_section(&up.url()),
        route("globs", r#"{ pipelines = ["sales_*", "finance_daily"] }"#, ""),
        route("teams", r#"{ teams = ["finance"] }"#, ""),
        route("roles", r#"{ roles = ["Reports.Read"] }"#, ""),
        route("principals", r#"{ principals = ["airflow/ops_dag/task_a"] }"#, ""),
        route("issuers", r#"{ issuers = ["hs"] }"#, ""),
    ]
    .concat();
    let gw = gateway(&config).await;
    let team = |dag: &str, t: Option<&str>| token_with(dag, |r| r.team = t.map(str::to_owned));
    let cases: Vec<(&str, String, u16)> = vec![
        ("/globs/x", token("sales_eu"), 200),
        ("/globs/x", token("finance_daily"), 200),
        ("/globs/x", token("finance_daily_2"), 403),
        ("/globs/x", token("marketing"), 403),
        ("/globs/x", token("Sales_eu"), 403),
        ("/teams/x", team("any_dag", Some("finance")), 200),
        ("/teams/x", team("any_dag", Some("sales")), 403),
        ("/teams/x", team("any_dag", None), 403),
        ("/roles/x", hs.token("reports_dag", &["Other", "Reports.Read"]), 200),
        ("/roles/x", hs.token("reports_dag", &["Reports.Write"]), 403),
        ("/roles/x", token("reports_dag"), 403),
        ("/principals/x", token("ops_dag"), 200),
        ("/principals/x", token("ops_dag_2"), 403),
        ("/issuers/x", hs.token("any_dag", &[]), 200),
        ("/issuers/x", token("any_dag"), 403),
    ];
    let mut allowed = 0;
    for (path, t, status) in &cases {
        let got = call(&gw, path, t).await;
        if *status == 200 {
            assert_eq!(got.status, 200, "{path}: {}", got.text());
            allowed += 1;
        } else {
            got.problem(403);
            let rec = audit_of(&gw, &got).await;
            assert_eq!(rec["outcome"], "forbidden", "{path}");
            let route = path.trim_matches('/').split('/').next().unwrap();
            let reason = rec["reason"].as_str().unwrap();
            assert!(reason.ends_with(&format!("not allowed on route {route}")), "{path}: {reason}");
        }
    }
    assert_eq!(up.count(), allowed, "a denied request reached the upstream");
    let rec = audit_of(&gw, &call(&gw, "/globs/x", &token("marketing")).await).await;
    assert_eq!(rec["reason"], "pipeline marketing not allowed on route globs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_lets_a_denied_request_through_and_counts_it() {
    let up = upstream().await;
    let config = upstream_section(&up.url()) + &route("dry", r#"{ pipelines = ["sales_*"] }"#, "dry_run = true");
    let gw = gateway(&config).await;
    let got = call(&gw, "/dry/x", &token("marketing_sync")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(up.last().headers["x-airflow-dag-id"], "marketing_sync");
    let audit = audit_of(&gw, &got).await;
    assert_eq!(audit["outcome"], "allowed", "{audit}");
    assert_eq!(audit["reason"], "dry_run:pipeline marketing_sync not allowed on route dry", "{audit}");
    let allowed = call(&gw, "/dry/x", &token("sales_daily")).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(audit_of(&gw, &allowed).await["reason"], Value::Null, "an allowed caller has no reason");
    assert_eq!(up.count(), 2);
    let text = gw.metrics().await;
    assert_eq!(metric_value(&text, "airgate_policy_dry_run_denials_total", &[("route", "dry")]), Some(1.0), "{text}");
}

fn limited_config(upstream: &str, rate_limits: &str) -> String {
    upstream_section(upstream)
        + &route("limited", r#"{ pipelines = ["*"] }"#, "rate_limit = \"per-dag\"")
        + &route("free", r#"{ pipelines = ["*"] }"#, "")
        + rate_limits
}

const LOCAL_LIMITS: &str = r#"
[rate_limits]
backend = "local"

[[rate_limits.policies]]
name = "per-dag"
key = "pipeline"
rate = "1/min"
burst = 3
overrides = [{ pipelines = ["sales_backfill*"], rate = "1/min", burst = 1 }]
"#;

fn header<'a>(got: &'a Got, name: &str) -> &'a str {
    got.headers.get(name).unwrap_or_else(|| panic!("no {name}: {:?}", got.headers)).to_str().unwrap()
}

/// Parses `"per-dag";r=<r>;t=<t>` strictly.
fn ratelimit(value: &str) -> (u64, u64) {
    let rest = value.strip_prefix("\"per-dag\";r=").unwrap_or_else(|| panic!("bad RateLimit: {value}"));
    let (r, t) = rest.split_once(";t=").unwrap_or_else(|| panic!("bad RateLimit: {value}"));
    (r.parse().unwrap(), t.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_then_429_with_retry_after_and_ratelimit_headers() {
    let up = upstream().await;
    let gw = gateway(&limited_config(&up.url(), LOCAL_LIMITS)).await;
    let t = token("sales_daily");

    for expected_r in [2, 1, 0] {
        let got = call(&gw, "/limited/x", &t).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(header(&got, "ratelimit-policy"), "\"per-dag\";q=3;w=60");
        let (r, reset) = ratelimit(header(&got, "ratelimit"));
        assert_eq!(r, expected_r);
        assert!((1..=180).contains(&reset), "t={reset}");
        assert_eq!(got.headers["x-upstream"], "1", "the upstream's answer passes through");
    }
    assert_eq!(up.count(), 3);

    for _ in 0..2 {
        let got = call(&gw, "/limited/x", &t).await;
        got.problem(429);
        let retry: u64 = header(&got, "retry-after").parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        assert_eq!(header(&got, "ratelimit-policy"), "\"per-dag\";q=3;w=60");
        let (r, reset) = ratelimit(header(&got, "ratelimit"));
        assert_eq!(r, 0);
        assert!((retry..=180).contains(&reset), "t={reset} Retry-After={retry}");
        let rec = audit_of(&gw, &got).await;
        assert_eq!(rec["outcome"], "rate_limited");
        assert_eq!(rec["pipeline"], "sales_daily");
    }
    assert_eq!(up.count(), 3, "a limited request reached the upstream");

    // Another pipeline has its own bucket; a route without rate_limit is not limited.
    let other = call(&gw, "/limited/x", &token("sales_other")).await;
    assert_eq!(other.status, 200);
    assert_eq!(ratelimit(header(&other, "ratelimit")).0, 2);
    let free = call(&gw, "/free/x", &t).await;
    assert_eq!(free.status, 200);
    assert!(!free.headers.contains_key("ratelimit") && !free.headers.contains_key("ratelimit-policy"));

    // The override: its own quota.
    let backfill = token("sales_backfill_eu");
    let got = call(&gw, "/limited/x", &backfill).await;
    assert_eq!(got.status, 200);
    assert_eq!(header(&got, "ratelimit-policy"), "\"per-dag\";q=1;w=60");
    assert_eq!(ratelimit(header(&got, "ratelimit")).0, 0);
    let got = call(&gw, "/limited/x", &backfill).await;
    got.problem(429);
    assert_eq!(header(&got, "ratelimit-policy"), "\"per-dag\";q=1;w=60");
    assert_eq!(up.count(), 6, "exactly the allowed requests reached the upstream");

    let text = gw.metrics().await;
    let limited = |p: &str| metric_value(&text, "airgate_rate_limited_total", &[("pipeline", p), ("route", "limited")]);
    assert_eq!(limited("sales_daily"), Some(2.0), "{text}");
    assert_eq!(limited("sales_backfill_eu"), Some(1.0), "{text}");
    assert_eq!(limited("sales_other"), None, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_burst_the_steady_rate_applies() {
    let up = upstream().await;
    let limits = "[rate_limits]\n[[rate_limits.policies]]\nname = \"per-dag\"\nrate = \"2/s\"\nburst = 2\n";
    let gw = gateway(&limited_config(&up.url(), limits)).await;
    let t = token("steady_dag");
    assert_eq!(call(&gw, "/limited/x", &t).await.status, 200);
    assert_eq!(call(&gw, "/limited/x", &t).await.status, 200);
    // The bucket is empty now; on a slow machine it may have refilled a little meanwhile, so
    // send until refused (bounded) instead of assuming the very next request is.
    let mut refused = None;
    for _ in 0..20 {
        let got = call(&gw, "/limited/x", &t).await;
        if got.status == 429 {
            refused = Some(got);
            break;
        }
    }
    let got = refused.expect("never limited after the burst");
    got.problem(429);
    assert_eq!(header(&got, "retry-after"), "1", "at most 500 ms rounds up to one whole second");
    // One emission interval (500 ms) later, one more conforms.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(call(&gw, "/limited/x", &t).await.status, 200);

    // Over a window: at most burst + rate × elapsed + 1 pass.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let start = std::time::Instant::now();
    let mut passed = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        if call(&gw, "/limited/x", &t).await.status == 200 {
            passed += 1;
        }
    }
    let bound = 2.0 + 2.0 * start.elapsed().as_secs_f64() + 1.0;
    assert!(passed as f64 <= bound, "{passed} passed, bound {bound}");
    assert!(passed >= 2, "the burst passes: {passed}");
}

/// The real Redis at 127.0.0.1:6379; panics (never skips) when it is not there.
async fn require_redis() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect("127.0.0.1:6379")
        .await
        .unwrap_or_else(|e| panic!("these tests need Redis at 127.0.0.1:6379: {e}"));
    s.write_all(b"PING\r\n").await.unwrap();
    let mut buf = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"+PONG\r\n", "127.0.0.1:6379 is not a Redis that answers PING");
}

fn redis_limits(url: &str, prefix: &str, on_error: &str, rate: &str, burst: u32) -> String {
    format!(
        r#"
[rate_limits]
backend = "redis"
redis_url = "{url}"
redis_key_prefix = "{prefix}"
redis_timeout = "2s"
on_backend_error = "{on_error}"

[[rate_limits.policies]]
name = "per-dag"
rate = "{rate}"
burst = {burst}
"#
    )
}

fn unique_prefix() -> String {
    format!("airgate-e2e-{:016x}:", fastrand::u64(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_limit_in_redis() {
    require_redis().await;
    let up = upstream().await;
    // "deny": a replica that lost Redis would answer 503 rather than quietly limit on its own.
    let config =
        limited_config(&up.url(), &redis_limits("redis://127.0.0.1:6379", &unique_prefix(), "deny", "10/s", 5));
    let (a, b) = (Arc::new(gateway(&config).await), Arc::new(gateway(&config).await));
    let t = Arc::new(token("shared_dag"));
    let allowed = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let start = std::time::Instant::now();
    let window = Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let gw = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (t, allowed, sent) = (t.clone(), allowed.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            while start.elapsed() < window {
                let got = call(&gw, "/limited/x", &t).await;
                sent.fetch_add(1, Ordering::SeqCst);
                match got.status.as_u16() {
                    200 => {
                        allowed.fetch_add(1, Ordering::SeqCst);
                    }
                    429 => {}
                    other => codes.push(other),
                }
            }
            codes
        }));
    }
    for task in tasks {
        let unexpected = task.await.unwrap();
        assert!(unexpected.is_empty(), "answers other than 200/429: {unexpected:?}");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (allowed, sent) = (allowed.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));
    let bound = 5.0 + 10.0 * elapsed + 1.0;
    eprintln!("two replicas: {allowed} of {sent} allowed in {elapsed:.2}s (bound {bound:.1})");
    assert!(
        allowed as f64 <= bound,
        "{allowed} of {sent} allowed in {elapsed:.2}s; one shared limit allows {bound:.1}"
    );
    assert!(allowed >= 5, "the burst passes: {allowed} of {sent}");
    assert!(sent as f64 > bound, "the test sent too few requests ({sent}) to exceed the limit");
    assert_eq!(up.count(), allowed, "only allowed requests reach the upstream");
    // Both replicas took part.
    for gw in [&a, &b] {
        let text = gw.metrics().await;
        assert!(
            metric_value(&text, "airgate_requests_total", &[("route", "limited"), ("code", "200")]).unwrap_or(0.0)
                + metric_value(&text, "airgate_requests_total", &[("route", "limited"), ("code", "429")])
                    .unwrap_or(0.0)
                > 0.0
        );
        assert_eq!(metric_value(&text, "airgate_ratelimit_backend_errors_total", &[("backend", "redis")]), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_with_deny_is_503_and_not_ready() {
    let up = upstream().await;
    let config = limited_config(&up.url(), &redis_limits("redis://127.0.0.1:1", &unique_prefix(), "deny", "10/s", 5));
    let gw = gateway(&config).await;
    let got = call(&gw, "/limited/x", &token("some_dag")).await;
    let p = got.problem(503);
    assert!(header(&got, "retry-after").parse::<u64>().unwrap() >= 1, "{p}");
    assert_eq!(audit_of(&gw, &got).await["outcome"], "ratelimit_unavailable");
    assert_eq!(up.count(), 0);
    // Routes without a rate limit are not affected.
    assert_eq!(call(&gw, "/free/x", &token("some_dag")).await.status, 200);

    let (status, body) = gw.readyz().await;
    assert_eq!(status, 503, "{body}");
    let missing = body["missing"].as_array().unwrap();
    assert!(missing.iter().any(|m| m.as_str().unwrap().contains("redis")), "{body}");
    let text = gw.metrics().await;
    assert!(metric_value(&text, "airgate_ratelimit_backend_errors_total", &[("backend", "redis")]).unwrap() >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_with_allow_or_local_keeps_serving() {
    let up = upstream().await;
    let allow = limited_config(&up.url(), &redis_limits("redis://127.0.0.1:1", &unique_prefix(), "allow", "1/min", 1));
    let gw = gateway(&allow).await;
    for _ in 0..3 {
        let got = call(&gw, "/limited/x", &token("some_dag")).await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    assert_eq!(gw.readyz().await.0, 200, "readiness includes Redis only with on_backend_error = \"deny\"");

    let local = limited_config(&up.url(), &redis_limits("redis://127.0.0.1:1", &unique_prefix(), "local", "1/min", 1));
    let gw = gateway(&local).await;
    let t = token("some_dag");
    assert_eq!(call(&gw, "/limited/x", &t).await.status, 200);
    call(&gw, "/limited/x", &t).await.problem(429);
    assert_eq!(gw.readyz().await.0, 200);
}

/// A `redis-server` of this test's own on a fixed port; killed when dropped.
struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn start_on(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed?): {e}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server on port {port} did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis { port, child: Some(child) }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_denies_and_recovers_when_it_returns() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut redis = tokio::task::spawn_blocking(move || PrivateRedis::start_on(port)).await.unwrap();
    let up = upstream().await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let gw = gateway(&limited_config(&up.url(), &redis_limits(&url, &unique_prefix(), "deny", "100/s", 100))).await;
    let t = token("some_dag");
    assert_eq!(call(&gw, "/limited/x", &t).await.status, 200);
    ready_is(&gw, 200).await;

    redis.stop();
    let got = eventually(Duration::from_secs(15), "503 while Redis is down", || async {
        let got = call(&gw, "/limited/x", &t).await;
        (got.status == 503).then_some(got)
    })
    .await;
    got.problem(503);
    assert!(header(&got, "retry-after").parse::<u64>().unwrap() >= 1);
    ready_is(&gw, 503).await;

    let _redis = tokio::task::spawn_blocking(move || PrivateRedis::start_on(port)).await.unwrap();
    eventually(Duration::from_secs(20), "200 after Redis returned", || async {
        (call(&gw, "/limited/x", &t).await.status == 200).then_some(())
    })
    .await;
    ready_is(&gw, 200).await;
}

async fn ready_is(gw: &Gateway, status: u16) {
    eventually(Duration::from_secs(15), &format!("/readyz {status}"), || async {
        (gw.readyz().await.0 == status).then_some(())
    })
    .await;
}
