//! Policy benchmarks: in-process rate-limit decisions (one key, 100 000 keys, 1 000 keys contended
//! by several tasks), one Redis decision round trip on loopback — standalone (127.0.0.1:6379) and
//! Redis Cluster — sequentially (added latency per request) and 64 at once (decisions/s of one
//! replica), and RBAC matching against 1 000 compiled allow rules. Setup stays outside the timed
//! loops.
//!
//! The cluster benches start their own 3 + 3 node cluster on loopback (`redis-server` and
//! `redis-cli` must be installed), or use the seed node in `AIRGATE_BENCH_REDIS_CLUSTER`
//! (`redis://host:port`) when it is set.

use airgate::{
    config::{
        Problems,
        allow::Allow,
        ratelimit::{RateLimits, RawRateLimits, validate},
        raw::RawAllow,
    },
    identity::Identity,
    metrics::Metrics,
    policy::Permit,
    ratelimit::Limiter,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt;
use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

fn config(extra: &str) -> RateLimits {
    // A rate high enough that the measured path is the common one: allowed.
    let text = format!("{extra}\n[[policies]]\nname = \"per-dag\"\nrate = \"100000000/s\"\nburst = 1000000\n");
    let raw: RawRateLimits = toml::from_str(&text).unwrap();
    let mut p = Problems::default();
    let cfg = validate(raw, "rate_limits", &mut p);
    assert!(p.is_empty(), "{p:?}");
    cfg
}

/// Permits for `n` pipelines, issued by `policy::authorize` as on the request path.
fn ids(n: usize) -> Vec<Permit> {
    let permits = support::Permits::new();
    (0..n).map(|i| permits.permit(Identity { pipeline: format!("dag_{i:06}"), ..Identity::default() })).collect()
}

/// A local decision never awaits: poll it once, without a runtime in the measurement.
fn decide(limiter: &Limiter, id: &Permit) -> bool {
    matches!(limiter.check("per-dag", "r", id).now_or_never(), Some(Ok(_)))
}

fn local(c: &mut Criterion) {
    let limiter = Limiter::new(&config(""), Metrics::new(10), None).unwrap();
    let one = ids(1);
    c.bench_function("limiter_1_key", |b| b.iter(|| decide(&limiter, black_box(&one[0]))));

    let many = ids(100_000);
    many.iter().for_each(|id| assert!(decide(&limiter, id)));
    let mut i = 0;
    c.bench_function("limiter_100k_keys", |b| {
        b.iter(|| {
            i = (i + 7919) % many.len();
            decide(&limiter, black_box(&many[i]))
        })
    });
}

fn contended(c: &mut Criterion) {
    const TASKS: usize = 4;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let limiter = Arc::new(Limiter::new(&config(""), Metrics::new(10), None).unwrap());
    let keys = Arc::new(ids(1000));
    c.bench_function("limiter_1k_keys_contended", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (limiter, keys) = (Arc::clone(&limiter), Arc::clone(&keys));
            async move {
                let start = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|t| {
                        let (limiter, keys) = (Arc::clone(&limiter), Arc::clone(&keys));
                        tokio::spawn(async move {
                            for n in (t as u64..iters).step_by(TASKS) {
                                let id = &keys[(n as usize * 31) % keys.len()];
                                black_box(limiter.check("per-dag", "r", id).await.is_ok());
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            }
        })
    });
}

#[path = "../tests/redis_cluster/mod.rs"]
mod cluster;
#[path = "../tests/support/mod.rs"]
mod support;

/// Decisions in flight at once for the throughput benches (one replica's concurrent requests).
const CONCURRENT: usize = 64;

/// The `*_roundtrip` (one decision at a time) and `*_concurrent_64` benches of one Redis backend.
fn redis_backend(c: &mut Criterion, name: &str, settings: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let prefix = format!("airgate-bench:{name}:{}:", std::process::id());
    let cfg = config(&format!(
        "backend = \"redis\"\n{settings}\nredis_key_prefix = \"{prefix}\"\non_backend_error = \"deny\"\nredis_timeout = \"1s\""
    ));
    let limiter = rt.block_on(async { Limiter::new(&cfg, Metrics::new(10), None).unwrap() });
    // Leaked: the benches' futures borrow them for the whole run (one small Vec per backend).
    let keys: &'static [Permit] = ids(CONCURRENT).leak();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while limiter.check("per-dag", "r", &keys[0]).await.is_err() {
            assert!(Instant::now() < deadline, "{name}: Redis does not answer ({settings})");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let limiter = &limiter;
    let check = |id: &'static Permit| async move { limiter.check("per-dag", "r", id).await.is_ok() };
    c.bench_function(&format!("{name}_decision_roundtrip"), |b| {
        b.to_async(&rt).iter(|| async { assert!(black_box(check(&keys[0]).await)) })
    });
    let mut group = c.benchmark_group(format!("{name}_decisions"));
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.bench_function(format!("concurrent_{CONCURRENT}"), |b| {
        b.to_async(&rt).iter(|| async {
            let all = futures_util::future::join_all(keys.iter().map(check)).await;
            assert!(all.into_iter().all(|ok| ok));
        })
    });
    group.finish();
}

fn redis(c: &mut Criterion) {
    redis_backend(c, "redis", "redis_url = \"redis://127.0.0.1:6379\"");
}

fn redis_cluster(c: &mut Criterion) {
    let (_cluster, seed) = match std::env::var("AIRGATE_BENCH_REDIS_CLUSTER") {
        Ok(seed) => (None, seed),
        Err(_) => {
            let cluster = cluster::Cluster::start(false);
            let seed = cluster.url(cluster.masters()[0]);
            (Some(cluster), seed)
        }
    };
    redis_backend(c, "redis_cluster", &format!("redis_url = \"{seed}\"\nredis_cluster = true"));
}

fn local_concurrent(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let limiter = Limiter::new(&config(""), Metrics::new(10), None).unwrap();
    let keys = ids(CONCURRENT);
    let mut group = c.benchmark_group("local_decisions");
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.bench_function(format!("concurrent_{CONCURRENT}"), |b| {
        b.to_async(&rt).iter(|| async {
            let all = futures_util::future::join_all(keys.iter().map(|id| limiter.check("per-dag", "r", id))).await;
            assert!(all.iter().all(Result::is_ok));
        })
    });
    group.finish();
}

fn rbac(c: &mut Criterion) {
    let mut p = Problems::default();
    let rules: Vec<Allow> = (0..1000)
        .map(|i| {
            let raw = RawAllow {
                pipelines: vec![format!("team{i}_*"), format!("shared_{i}_daily"), format!("report_{i}_v?")],
                teams: vec![format!("team{i}")],
                roles: vec![format!("role{i}")],
                ..RawAllow::default()
            };
            Allow::compile(raw, "routes[0].allow", &["airflow"], &mut p).unwrap()
        })
        .collect();
    assert!(p.is_empty());
    let id = Identity {
        issuer: "airflow".into(),
        pipeline: "team999_ingest".into(),
        team: Some("analytics".into()),
        roles: vec!["reader".into()],
        ..Identity::default()
    };
    c.bench_function("rbac_match_1000_routes", |b| {
        b.iter(|| rules.iter().filter(|rule| rule.matches(black_box(&id))).count())
    });
}

criterion_group!(benches, local, local_concurrent, contended, redis, redis_cluster, rbac);
criterion_main!(benches);
