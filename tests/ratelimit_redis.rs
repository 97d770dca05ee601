//! The Redis rate-limit backend against real Redis: two limiters (two replicas) sharing one limit
//! through 127.0.0.1:6379, and each `on_backend_error` mode while a private `redis-server` is
//! killed and restarted.

mod support;

use airgate::{
    config::{
        Problems,
        ratelimit::{RateLimits, RawRateLimits, validate},
    },
    identity::Identity,
    metrics::Metrics,
    ratelimit::Limiter,
    ratelimit::Refused,
};
use std::{
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use support::permit;

const SHARED_REDIS: &str = "127.0.0.1:6379";

/// A key prefix no other test run uses.
fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("airgate-test:{test}:{}:{nanos}:", std::process::id())
}

fn require_shared_redis() {
    if TcpStream::connect_timeout(&SHARED_REDIS.parse().unwrap(), Duration::from_secs(1)).is_err() {
        panic!(
            "these tests need the real Redis at {SHARED_REDIS}, and nothing answers there: \
             start one (`redis-server --save '' --appendonly no`) and rerun"
        );
    }
}

fn config(url: &str, prefix: &str, on_backend_error: &str, rate: &str, burst: u32) -> RateLimits {
    let text = format!(
        r#"
        backend = "redis"
        redis_url = "{url}"
        redis_key_prefix = "{prefix}"
        on_backend_error = "{on_backend_error}"
        [[policies]]
        name = "per-dag"
        rate = "{rate}"
        burst = {burst}
        "#
    );
    let raw: RawRateLimits = toml::from_str(&text).unwrap();
    let mut p = Problems::default();
    let cfg = validate(raw, "rate_limits", &mut p);
    assert!(p.is_empty(), "{p:?}");
    cfg
}

fn id(pipeline: &str) -> Identity {
    Identity { issuer: "airflow".into(), pipeline: pipeline.into(), ..Identity::default() }
}

fn backend_errors(m: &Metrics) -> u64 {
    m.ratelimit_backend_errors.with_label_values(&["redis"]).get()
}

async fn key_exists(url: &str, key: &str) -> bool {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("EXISTS").arg(key).query_async::<i64>(&mut conn).await.unwrap() == 1
}

async fn ttl_ms(url: &str, key: &str) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PTTL").arg(key).query_async::<i64>(&mut conn).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_limit() {
    require_shared_redis();
    let url = format!("redis://{SHARED_REDIS}");
    let prefix = unique_prefix("two-replicas");
    // deny: a decision Redis could not make shows up as an error instead of a local allowance.
    let cfg = config(&url, &prefix, "deny", "20/s", 10);
    let (m1, m2) = (Metrics::new(10), Metrics::new(10));
    let replicas = [
        Arc::new(Limiter::new(&cfg, Arc::clone(&m1), None).unwrap()),
        Arc::new(Limiter::new(&cfg, Arc::clone(&m2), None).unwrap()),
    ];
    let allowed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let run = Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for limiter in &replicas {
        for _ in 0..2 {
            let (limiter, allowed) = (Arc::clone(limiter), Arc::clone(&allowed));
            tasks.push(tokio::spawn(async move {
                let me = id("shared_dag");
                let mut denied = 0u64;
                while start.elapsed() < run {
                    match limiter.check("per-dag", "r", &permit(me.clone())).await {
                        Ok(_) => {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Refused::Limited { retry_after, .. }) => {
                            assert!(retry_after >= 1);
                            denied += 1;
                        }
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                denied
            }));
        }
    }
    let mut denied = 0;
    for t in tasks {
        denied += t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let allowed = allowed.load(Ordering::Relaxed);
    let bound = 10.0 + 20.0 * elapsed + 1.0;
    println!("two replicas: allowed {allowed} denied {denied} in {elapsed:.3}s; bound {bound:.1}");
    assert!((allowed as f64) <= bound, "allowed {allowed} > burst + rate × elapsed + 1 = {bound:.1}");
    // Not vacuous: the shared limit let through (nearly) all it could.
    assert!((allowed as f64) >= 10.0 + 20.0 * 1.5 - 3.0, "allowed only {allowed}");
    assert!(denied > 0);
    assert_eq!(backend_errors(&m1) + backend_errors(&m2), 0);
    assert!(key_exists(&url, &format!("{prefix}per-dag:pipeline:shared_dag")).await);
    let ttl = ttl_ms(&url, &format!("{prefix}per-dag:pipeline:shared_dag")).await;
    assert!((1..=500).contains(&ttl), "TTL is the time to full recovery (≤ burst × 50 ms): {ttl}");
}

#[tokio::test]
async fn headers_and_retry_after_from_redis() {
    require_shared_redis();
    let url = format!("redis://{SHARED_REDIS}");
    let cfg = config(&url, &unique_prefix("headers"), "deny", "3/min", 2);
    let limiter = Limiter::new(&cfg, Metrics::new(10), None).unwrap();
    let p = id("slow_dag");
    let q = limiter.check("per-dag", "r", &permit(p.clone())).await.unwrap().quota().unwrap();
    assert_eq!(q.policy, "\"per-dag\";q=2;w=60");
    assert_eq!(q.state, "\"per-dag\";r=1;t=20");
    limiter.check("per-dag", "r", &permit(p.clone())).await.unwrap();
    match limiter.check("per-dag", "r", &permit(p.clone())).await {
        Err(Refused::Limited { retry_after, quota }) => {
            assert!((19..=20).contains(&retry_after), "{retry_after}");
            assert_eq!(quota.state, "\"per-dag\";r=0;t=40");
        }
        other => panic!("{other:?}"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` of this test's own, killed when dropped.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start_on(port: u16) -> Self {
        Self::start_with(port, &["--port".into(), port.to_string()])
    }

    fn start_with(port: u16, args: &[String]) -> Self {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed?): {e}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server on port {port} did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis { port, child: Some(child) }
    }

    fn start() -> Self {
        Self::start_on(free_port())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn is_limited(r: &Result<airgate::ratelimit::Admitted, Refused>) -> bool {
    matches!(r, Err(Refused::Limited { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_modes_and_recovery() {
    let mut server = PrivateRedis::start();
    let url = format!("redis://127.0.0.1:{}", server.port);
    let prefix = unique_prefix("outage");
    let metrics = Metrics::new(10);
    let make = |mode: &str| Limiter::new(&config(&url, &prefix, mode, "1/min", 2), Arc::clone(&metrics), None).unwrap();
    let (local, allow, deny) = (make("local"), make("allow"), make("deny"));
    eventually("deny-mode limiter ready", || deny.not_ready().is_empty()).await;

    // Healthy: the three share the Redis bucket of "dag_a" (same prefix and policy).
    assert!(local.check("per-dag", "r", &permit(id("dag_a"))).await.is_ok());
    assert!(allow.check("per-dag", "r", &permit(id("dag_a"))).await.is_ok());
    assert!(is_limited(&deny.check("per-dag", "r", &permit(id("dag_a"))).await), "the third request of burst 2");
    assert_eq!(backend_errors(&metrics), 0);

    server.kill();

    // local: falls back to this replica's in-process limiter (fresh: burst 2 again).
    assert!(local.check("per-dag", "r", &permit(id("dag_b"))).await.is_ok());
    assert!(local.check("per-dag", "r", &permit(id("dag_b"))).await.is_ok());
    assert!(is_limited(&local.check("per-dag", "r", &permit(id("dag_b"))).await));
    assert!(local.not_ready().is_empty(), "only deny mode makes readiness depend on Redis");
    // allow: everything passes.
    for _ in 0..5 {
        assert!(allow.check("per-dag", "r", &permit(id("dag_b"))).await.is_ok());
    }
    // deny: 503 with Retry-After, and not ready.
    match deny.check("per-dag", "r", &permit(id("dag_b"))).await {
        Err(Refused::BackendDown { retry_after }) => assert!(retry_after >= 1),
        other => panic!("{other:?}"),
    }
    assert!(!deny.not_ready().is_empty());
    assert!(backend_errors(&metrics) >= 9, "every decision Redis could not make is counted");

    // Redis returns on the same port: every mode decides in the shared Redis bucket again.
    let _server = PrivateRedis::start_on(server.port);
    eventually("deny-mode limiter ready again", || deny.not_ready().is_empty()).await;
    assert!(deny.check("per-dag", "r", &permit(id("dag_c"))).await.is_ok());
    assert!(key_exists(&url, &format!("{prefix}per-dag:pipeline:dag_c")).await);
    for (mode, limiter) in [("local", &local), ("allow", &allow)] {
        let mut back = false;
        for attempt in 0..100 {
            let pipeline = format!("{mode}_recovery_{attempt}");
            assert!(limiter.check("per-dag", "r", &permit(id(&pipeline))).await.is_ok());
            if key_exists(&url, &format!("{prefix}per-dag:pipeline:{pipeline}")).await {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(back, "{mode}-mode limiter did not return to Redis");
    }
    // Shared again: dag_c has used one of its two in Redis.
    assert!(allow.check("per-dag", "r", &permit(id("dag_c"))).await.is_ok());
    assert!(is_limited(&local.check("per-dag", "r", &permit(id("dag_c"))).await));
}

/// `rediss://` (as Azure Cache for Redis) with the password from a secret reference: a private
/// TLS-only `redis-server` whose self-signed certificate is trusted through `redis_ca_file`.
#[tokio::test]
async fn tls_and_password_from_a_secret_reference() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let (cert_file, key_file, password_file) =
        (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("redis-password"));
    std::fs::write(&cert_file, key.cert.pem()).unwrap();
    std::fs::write(&key_file, key.signing_key.serialize_pem()).unwrap();
    std::fs::write(&password_file, "s3cret-access-key\n").unwrap();
    let port = free_port();
    let _server = PrivateRedis::start_with(
        port,
        &[
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            cert_file.display().to_string(),
            "--tls-key-file".into(),
            key_file.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
            "--requirepass".into(),
            "s3cret-access-key".into(),
        ],
    );
    let prefix = unique_prefix("tls");
    let text = format!(
        "backend = \"redis\"\nredis_url = \"rediss://127.0.0.1:{port}\"\nredis_password = \"file:{}\"\nredis_ca_file = \"{}\"\n\
         redis_key_prefix = \"{prefix}\"\non_backend_error = \"deny\"\nredis_timeout = \"1s\"\n\
         [[policies]]\nname = \"per-dag\"\nrate = \"1/min\"\nburst = 1\n",
        password_file.display(),
        cert_file.display()
    );
    let raw: RawRateLimits = toml::from_str(&text).unwrap();
    let mut p = Problems::default();
    let cfg = validate(raw, "rate_limits", &mut p);
    assert!(p.is_empty(), "{p:?}");
    let metrics = Metrics::new(10);
    let limiter = Limiter::new(&cfg, Arc::clone(&metrics), None).unwrap();
    eventually("TLS connection with password", || limiter.not_ready().is_empty()).await;
    assert!(limiter.check("per-dag", "r", &permit(id("tls_dag"))).await.is_ok());
    assert!(is_limited(&limiter.check("per-dag", "r", &permit(id("tls_dag"))).await));
    assert_eq!(backend_errors(&metrics), 0);
    assert!(!format!("{limiter:?}").contains("s3cret"));
}
