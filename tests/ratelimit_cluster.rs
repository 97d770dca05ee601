//! The Redis Cluster backend against a real cluster on loopback (3 masters + 3 replicas, see
//! `redis_cluster/mod.rs`): three `airgate` processes share one pipeline's limit through it, and
//! the §4 bound — admitted ≤ burst + rate × elapsed + one per replica — holds while traffic is
//! healthy, again within 5 s of a failover of the master that owns the key's slot (during which
//! each replica follows its `on_backend_error`), and while one replica restarts. Plus the cluster
//! over TLS with a password, with keys spread over every master.

mod support;

#[path = "redis_cluster/mod.rs"]
mod cluster;

use airgate::{
    config::{
        Problems,
        ratelimit::{RawRateLimits, validate},
    },
    identity::Identity,
    metrics::Metrics,
    ratelimit::Limiter,
    ratelimit::Refused,
};
use bytes::Bytes;
use cluster::Cluster;
use http::{Method, Request};
use http_body_util::Full;
use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use support::{Binary, client, permit, send, token};

const RATE: f64 = 20.0;
const BURST: f64 = 10.0;
const PIPELINE: &str = "shared_dag";
const BACKEND_ERRORS: &str = "airgate_ratelimit_backend_errors_total{backend=\"redis\"}";

/// One answered request: which replica, when it was sent and answered, and the status (0: no
/// answer, e.g. the replica was restarting).
#[derive(Debug, Clone, Copy)]
struct Hit {
    replica: usize,
    sent: Instant,
    done: Instant,
    status: u16,
}

/// Requests for one pipeline from two tasks per replica until stopped.
struct Traffic {
    hits: Arc<Mutex<Vec<Hit>>>,
    targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(targets: Vec<String>) -> Traffic {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let targets = Arc::new(Mutex::new(targets));
        let stop = Arc::new(AtomicBool::new(false));
        let token = token(PIPELINE);
        let n = targets.lock().unwrap().len();
        let mut tasks = Vec::new();
        for replica in 0..n {
            for task in 0..2 {
                let (hits, targets, stop, token) = (hits.clone(), targets.clone(), stop.clone(), token.clone());
                tasks.push(tokio::spawn(async move {
                    let client = client();
                    // Bounded: at most 3 minutes of requests even if nobody stops us.
                    for i in 0..20_000u32 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let base = targets.lock().unwrap()[replica].clone();
                        // Mixed traffic: two paths and both methods count against the one limit.
                        let (method, path) = if (i + task) % 3 == 0 {
                            (Method::POST, "/limited/b")
                        } else {
                            (Method::GET, "/limited/a")
                        };
                        let req = Request::builder()
                            .method(method)
                            .uri(format!("{base}{path}"))
                            .header("authorization", format!("Bearer {token}"))
                            .body(Full::<Bytes>::default())
                            .unwrap();
                        let sent = Instant::now();
                        let status = match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
                            Ok(Ok(resp)) => resp.status().as_u16(),
                            _ => 0,
                        };
                        hits.lock().unwrap().push(Hit { replica, sent, done: Instant::now(), status });
                        tokio::time::sleep(Duration::from_millis(if status == 0 { 50 } else { 12 })).await;
                    }
                }));
            }
        }
        Traffic { hits, targets, stop, tasks }
    }

    fn set_target(&self, replica: usize, url: String) {
        self.targets.lock().unwrap()[replica] = url;
    }

    /// Requests decided entirely within `[from, to]`.
    fn within(&self, from: Instant, to: Instant) -> Vec<Hit> {
        self.hits.lock().unwrap().iter().filter(|h| h.sent >= from && h.done <= to).copied().collect()
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

fn count(hits: &[Hit], replica: Option<usize>, status: u16) -> usize {
    hits.iter().filter(|h| h.status == status && replica.is_none_or(|r| h.replica == r)).count()
}

/// Checks the §4 bound for the requests decided within `[from, to]`; returns the admitted count.
fn assert_bound(traffic: &Traffic, from: Instant, to: Instant, replicas: f64, what: &str) -> usize {
    let hits = traffic.within(from, to);
    let admitted = count(&hits, None, 200);
    let elapsed = (to - from).as_secs_f64();
    let bound = BURST + RATE * elapsed + replicas;
    let summary = format!(
        "{what}: admitted {admitted}, 429 {}, 503 {}, no answer {} in {elapsed:.2}s; bound {bound:.1}",
        count(&hits, None, 429),
        count(&hits, None, 503),
        count(&hits, None, 0)
    );
    println!("{summary}");
    assert!((admitted as f64) <= bound, "{summary}: over burst + rate × elapsed + one per replica");
    // Not vacuous: the traffic was well over the limit and the shared limit let through most of
    // what it could.
    assert!(count(&hits, None, 429) > admitted, "{summary}: traffic was not over the limit");
    assert!((admitted as f64) >= RATE * elapsed * 0.6, "{summary}: far fewer admitted than the rate allows");
    admitted
}

struct Replica {
    bin: Binary,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn spawn(upstream: &str, seed: &str, prefix: &str, on_backend_error: &str) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{}[[upstreams]]\nname = \"up\"\nurl = \"{upstream}\"\ntimeout = \"5s\"\n\
             [[routes]]\nname = \"limited\"\npath_prefix = \"/limited/\"\nupstream = \"up\"\n\
             allow = {{ pipelines = [\"*\"] }}\nrate_limit = \"per-dag\"\n\
             [rate_limits]\nbackend = \"redis\"\nredis_url = \"{seed}\"\nredis_cluster = true\n\
             redis_key_prefix = \"{prefix}\"\nredis_timeout = \"1s\"\non_backend_error = \"{on_backend_error}\"\n\
             [[rate_limits.policies]]\nname = \"per-dag\"\nrate = \"{RATE}/s\"\nburst = {BURST}\n",
            support::base_config(dir.path())
        );
        let config = dir.path().join("airgate.toml");
        std::fs::write(&config, text).unwrap();
        Replica { bin: Binary::spawn(&config), config, _dir: dir }
    }

    fn restart(&mut self) {
        let _ = self.bin.child.kill();
        let _ = self.bin.child.wait();
        self.bin = Binary::spawn(&self.config);
    }

    async fn backend_errors(&self) -> f64 {
        self.bin.counter(BACKEND_ERRORS).await
    }

    /// Sends one request for `pipeline` and returns its status.
    async fn call(&self, pipeline: &str) -> u16 {
        let req = Request::get(self.bin.url("/limited/x"))
            .header("authorization", format!("Bearer {}", token(pipeline)))
            .body(Full::<Bytes>::default())
            .unwrap();
        send(&client(), req).await.status.as_u16()
    }
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(t.into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_limit_through_failover_and_restart() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let test_start = Instant::now();
    let mut cluster = Cluster::start(false);
    let prefix = format!("airgate-test:cluster:{}:", std::process::id());
    // The key format of src/ratelimit/redis.rs: {prefix}{policy}:{kind}:{value}.
    let key = format!("{prefix}per-dag:pipeline:{PIPELINE}");
    let slot = cluster.keyslot(&key);
    let owner = cluster.master_of(slot).expect("a master serves the key's slot");
    // The seed is another master: a seed is only where discovery starts (an Azure endpoint
    // stays reachable through a failover; a killed loopback node does not).
    let seed = cluster.url(cluster.masters().into_iter().find(|&p| p != owner).unwrap());
    println!("cluster up after {:?}; key slot {slot} on master {owner}; seed {seed}", test_start.elapsed());

    let up = support::upstream().await;
    // Replicas 0 and 2 refuse when Redis cannot decide; replica 1 falls back to its own limiter.
    let modes = ["deny", "local", "deny"];
    let mut replicas: Vec<Replica> = modes.iter().map(|m| Replica::spawn(&up.url(), &seed, &prefix, m)).collect();
    // Every replica reaches the cluster before traffic starts: a warm-up decision per replica,
    // in Redis (its key exists), without a backend error.
    for (i, r) in replicas.iter().enumerate() {
        let warm = format!("warmup_{i}");
        support::eventually(Duration::from_secs(10), "the replica deciding in the cluster", || async {
            (r.call(&warm).await == 200 && cluster.exists(&format!("{prefix}per-dag:pipeline:{warm}"))).then_some(())
        })
        .await;
    }
    let errors_before: Vec<f64> = futures_util::future::join_all(replicas.iter().map(Replica::backend_errors)).await;

    let traffic = Traffic::start(replicas.iter().map(|r| r.bin.url("")).collect());

    // 1. Healthy: one shared limit.
    let t0 = Instant::now();
    sleep_until(t0 + Duration::from_millis(2500)).await;
    let t1 = Instant::now();
    assert_bound(&traffic, t0, t1, 3.0, "healthy");
    assert_eq!(count(&traffic.within(t0, t1), None, 503), 0, "no backend error while the cluster is healthy");
    for (r, before) in replicas.iter().zip(&errors_before) {
        assert_eq!(r.backend_errors().await, *before, "a decision failed while the cluster was healthy");
    }

    // 2. Kill the master of the key's slot mid-run.
    let killed = Instant::now();
    cluster.kill(owner);
    let new_owner = tokio::task::block_in_place(|| cluster.wait_failover(slot, owner, Duration::from_secs(20)));
    let failed_over = Instant::now();
    println!("failover of slot {slot}: {owner} -> {new_owner} in {:?}", failed_over - killed);
    let during = traffic.within(killed, failed_over);
    // deny → 503 while nobody serves the slot; local → this replica's own limiter, never a 503.
    for (i, mode) in modes.iter().enumerate() {
        let (ok, unavailable) = (count(&during, Some(i), 200), count(&during, Some(i), 503));
        println!(
            "during failover, replica {i} ({mode}): 200 {ok}, 429 {}, 503 {unavailable}",
            count(&during, Some(i), 429)
        );
        match *mode {
            "deny" => assert!(unavailable > 0, "deny-mode replica {i} did not answer 503 during the failover"),
            _ => {
                assert_eq!(unavailable, 0, "local-mode replica {i} answered 503");
                assert!(ok > 0, "local-mode replica {i} admitted nothing from its own limiter");
            }
        }
    }
    let local_errors = replicas[1].backend_errors().await;
    assert!(local_errors > errors_before[1], "the local fallback was not counted as a backend error");

    // 3. Within 5 s of the cluster reporting the failover complete, the shared limit is exact again.
    let t2 = failed_over + Duration::from_secs(5);
    sleep_until(t2).await;
    let errors_at_t2: Vec<f64> = futures_util::future::join_all(replicas.iter().map(Replica::backend_errors)).await;
    let t3 = t2 + Duration::from_millis(2500);
    sleep_until(t3).await;
    assert_bound(&traffic, t2, t3, 3.0, "after failover");
    assert_eq!(count(&traffic.within(t2, t3), None, 503), 0, "deny-mode replicas still cannot decide in Redis");
    for (i, (r, before)) in replicas.iter().zip(&errors_at_t2).enumerate() {
        assert_eq!(r.backend_errors().await, *before, "replica {i} still falls back 5 s after the failover");
    }
    assert!(cluster.exists(&key), "the bucket lives in the cluster again");
    // How long after the cluster reported the failover the deny-mode replicas decided in Redis
    // again (their first 200 after the kill): the figure docs/ratelimits.md quotes.
    for i in [0, 2] {
        let back = traffic.within(killed, t3).iter().find(|h| h.replica == i && h.status == 200).map(|h| h.sent);
        let back = back.expect("deny-mode replica admitted nothing after the failover");
        println!(
            "replica {i} decides in Redis again {:?} after the failover was reported",
            back.saturating_duration_since(failed_over)
        );
    }

    // 4. Restart one replica mid-run: the bound holds, the restarted replica counting once more.
    let t4 = Instant::now();
    tokio::task::block_in_place(|| replicas[2].restart());
    traffic.set_target(2, replicas[2].bin.url(""));
    let t5 = Instant::now() + Duration::from_millis(2500);
    sleep_until(t5).await;
    assert_bound(&traffic, t4, t5, 4.0, "replica restart");
    let after_restart = traffic.within(t4, t5);
    assert!(
        count(&after_restart, Some(2), 200) + count(&after_restart, Some(2), 429) > 0,
        "the restarted replica served nothing"
    );
    traffic.stop().await;
    println!("whole test: {:?}", test_start.elapsed());
}

fn limits(
    url: &str,
    ca: &std::path::Path,
    password: &std::path::Path,
    prefix: &str,
) -> airgate::config::ratelimit::RateLimits {
    let text = format!(
        "backend = \"redis\"\nredis_url = \"{url}\"\nredis_cluster = true\nredis_ca_file = \"{}\"\n\
         redis_password = \"file:{}\"\nredis_key_prefix = \"{prefix}\"\nredis_timeout = \"1s\"\n\
         on_backend_error = \"deny\"\n[[policies]]\nname = \"per-dag\"\nrate = \"1/min\"\nburst = 1\n",
        ca.display(),
        password.display()
    );
    let raw: RawRateLimits = toml::from_str(&text).unwrap();
    let mut p = Problems::default();
    let cfg = validate(raw, "rate_limits", &mut p);
    assert!(p.is_empty(), "{p:?}");
    cfg
}

/// `rediss://` to a TLS-only cluster with a password from a secret reference (as Azure Managed
/// Redis with the OSS cluster policy): the topology is discovered from one seed, and decisions
/// for many pipelines land on every master — each exactly once per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_tls_with_a_password_spreads_keys_over_every_master() {
    let cluster = Cluster::start(true);
    let tls = cluster.tls.as_ref().unwrap();
    let password_file = cluster.dir.path().join("redis-password");
    std::fs::write(&password_file, format!("{}\n", tls.password)).unwrap();
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    let prefix = format!("airgate-test:cluster-tls:{}:", std::process::id());
    let metrics = Metrics::new(100);
    let limiter =
        Limiter::new(&limits(&cluster.url(masters[0]), &tls.cert, &password_file, &prefix), Arc::clone(&metrics), None)
            .unwrap();
    support::eventually(Duration::from_secs(10), "the TLS cluster connection", || async {
        limiter.not_ready().is_empty().then_some(())
    })
    .await;
    for i in 0..30 {
        let id = Identity { issuer: "airflow".into(), pipeline: format!("dag_{i}"), ..Identity::default() };
        assert!(limiter.check("per-dag", "r", &permit(id.clone())).await.is_ok(), "dag_{i}");
        assert!(
            matches!(limiter.check("per-dag", "r", &permit(id.clone())).await, Err(Refused::Limited { .. })),
            "dag_{i}"
        );
    }
    assert_eq!(metrics.ratelimit_backend_errors.with_label_values(&["redis"]).get(), 0);
    let per_master: Vec<u64> = masters.iter().map(|&p| cluster.dbsize(p)).collect();
    assert_eq!(per_master.iter().sum::<u64>(), 30, "{per_master:?}");
    assert!(per_master.iter().all(|&n| n > 0), "keys on every master: {per_master:?}");
    assert!(!format!("{limiter:?}").contains(&tls.password));
}
