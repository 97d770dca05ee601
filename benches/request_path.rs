//! The whole request path in one process over loopback sockets: a keep-alive client → airgate
//! (ES256 token, RBAC, in-process rate limit that does not trigger, static upstream credential,
//! metrics, audit to a file) → a trivial upstream; and the same client straight to the upstream
//! for the ratio. Plus the audit record serialisation on its own.

use airgate::{
    app,
    audit::{self, Record},
    config,
    error::Outcome,
    identity::mint::{MintRequest, mint},
};
use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

fn es256_pem() -> String {
    use aws_lc_rs::{
        rand::SystemRandom,
        signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair},
    };
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
    airgate::identity::mint::pem("PRIVATE KEY", doc.as_ref())
}

struct Setup {
    _dir: tempfile::TempDir,
    running: app::Running,
    upstream: SocketAddr,
    issuer: config::issuer::Issuer,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("es256.pem");
    std::fs::write(&key, es256_pem()).unwrap();
    let token = dir.path().join("upstream-token");
    std::fs::write(&token, "bench-upstream-token").unwrap();
    let upstream = upstream().await;
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[audit]
sink = "file"
path = "{audit}"
[[issuers]]
name = "bench"
issuer = "https://airflow.bench.invalid"
audiences = ["urn:airgate"]
algorithms = ["ES256"]
required_scope = "egress"
signing_key = "file:{key}"
[[upstreams]]
name = "up"
url = "http://{upstream}"
[upstreams.credential]
kind = "static"
token = "file:{token}"
[[routes]]
name = "bench"
path_prefix = "/bench/"
upstream = "up"
rate_limit = "huge"
allow = {{ pipelines = ["bench_*"] }}
[rate_limits]
backend = "local"
[[rate_limits.policies]]
name = "huge"
rate = "1000000/s"
burst = 1000000
"#,
        audit = dir.path().join("audit.jsonl").display(),
        key = key.display(),
        token = token.display(),
    );
    let config = config::parse(&text).unwrap();
    let issuer = config.issuers[0].clone();
    let running = app::start(config, app::Options { watch_config: None }).await.unwrap();
    Setup { _dir: dir, running, upstream, issuer }
}

fn token(issuer: &config::issuer::Issuer, dag: &str) -> String {
    let req = MintRequest {
        dag: dag.into(),
        task: "t".into(),
        run: Some("scheduled__2026-11-30".into()),
        try_number: Some(1),
        map_index: None,
        team: None,
        ttl: Duration::from_secs(600),
        audience: None,
        extra_scope: None,
    };
    mint(issuer, &req).unwrap()
}

async fn call(client: &Client<HttpConnector, Full<Bytes>>, url: &str, token: Option<&str>) {
    let mut req = Request::get(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client.request(req.body(Full::default()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
}

fn request_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let s = rt.block_on(setup());
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let via_gateway = format!("http://{}/bench/x", s.running.proxy_addr);
    let direct = format!("http://{}/bench/x", s.upstream);
    let warm = token(&s.issuer, "bench_daily");
    rt.block_on(call(&client, &via_gateway, Some(&warm)));

    let mut g = c.benchmark_group("request_path");
    g.bench_function("direct_to_upstream", |b| b.to_async(&rt).iter(|| call(&client, &direct, None)));
    g.bench_function("gateway_es256_cached", |b| b.to_async(&rt).iter(|| call(&client, &via_gateway, Some(&warm))));
    let issuer = Arc::new(s.issuer.clone());
    g.bench_function("gateway_es256_new_token", |b| {
        b.to_async(&rt).iter_batched(
            || token(&issuer, &format!("bench_{}", fastrand::u32(..1000))),
            |t| {
                let client = &client;
                let url = &via_gateway;
                async move { call(client, url, Some(&t)).await }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn audit_serialise(c: &mut Criterion) {
    let identity = Arc::new(airgate::identity::Identity {
        issuer: "airflow-prod".into(),
        principal: Some("airflow/sales_daily/load".into()),
        pipeline: "sales_daily".into(),
        task: Some("load_orders".into()),
        run_id: Some("scheduled__2026-11-30T00:00:00+00:00".into()),
        try_number: Some("1".into()),
        map_index: Some("-1".into()),
        team: Some("sales".into()),
        roles: vec![],
        jti: Some("0123456789abcdef".into()),
        expires_at: 0,
        pod: None,
        upstream_values: Default::default(),
    });
    let record = Record {
        ts: std::time::SystemTime::now(),
        start: std::time::Instant::now(),
        request_id: http::HeaderValue::from_static("4bf92f3577b34da6a3ce929d0e0e4736"),
        outcome: Outcome::Allowed,
        reason: None,
        status: 200,
        method: Some(http::Method::POST),
        route: Some("sales".into()),
        path: "/sales/orders/123".into(),
        upstream: Some("apim".into()),
        issuer: None,
        identity: Some(identity),
        pod: None,
        client_ip: "10.1.2.3".parse().unwrap(),
        upstream_duration_ms: Some(12.5),
        trace_id: airgate::text::TraceId::from_hex(b"4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
    };
    let mut out = Vec::with_capacity(1024);
    c.bench_function("audit_record_serialise", |b| {
        b.iter(|| {
            out.clear();
            audit::encode(&record, 13.2, 512, 2048, &mut out);
        })
    });
}

criterion_group!(benches, request_path, audit_serialise);
criterion_main!(benches);
