//! Kubernetes pod identity (contract §9) next to a plain pipeline token, both RS256 (what AKS
//! signs with): the `authenticate` path from the caches (the usual request), and a cache miss —
//! a new pod's first request, which verifies the signature and looks the pod up over loopback HTTP
//! from a Kubernetes API stand-in. The miss minus `plain_rs256_uncached` is the lookup's cost.

use airgate::{
    config,
    identity::{Authenticator, mint::SigningKey},
    metrics::Metrics,
};
use aws_lc_rs::{
    encoding::{AsDer, Pkcs8V1Der},
    rsa::KeySize,
    signature::RsaKeyPair,
};
use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Response, header::AUTHORIZATION};
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::{
    convert::Infallible,
    hint::black_box,
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

const ISSUER: &str = "https://oidc.bench.invalid/";

fn rsa_key() -> SigningKey {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let der: Pkcs8V1Der<'_> = pair.as_der().unwrap();
    SigningKey::from_pem(airgate::identity::mint::pem("PRIVATE KEY", der.as_ref()).as_bytes()).unwrap()
}

/// A Kubernetes API stand-in: pod `pod-N` exists with uid `uid-N` and executor annotations.
async fn kube_api() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let name = req.uri().path().rsplit('/').next().unwrap_or("").to_owned();
                    let n = name.strip_prefix("pod-").unwrap_or("0");
                    let pod = json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "namespace": "airflow", "uid": format!("uid-{n}"),
                            "annotations": {"dag_id": "sales_daily", "task_id": "load", "try_number": "1",
                                "run_id": "scheduled__2026-01-01T00:00:00+00:00"}},
                        "status": {"phase": "Running"}});
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(pod.to_string())))
                            .unwrap(),
                    )
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    h
}

struct Setup {
    _dir: tempfile::TempDir,
    pods: Authenticator,
    plain: Authenticator,
    key: SigningKey,
}

async fn setup() -> Setup {
    let key = rsa_key();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.public_jwk()]}).to_string()).unwrap();
    // Any CA will do: the stand-in speaks plain HTTP on loopback.
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca.cert.pem()).unwrap();
    std::fs::write(dir.path().join("token"), "bench-api-token").unwrap();
    let api = kube_api().await;
    let common = format!(
        "name = \"x\"\nissuer = \"{ISSUER}\"\naudiences = [\"urn:airgate\"]\nalgorithms = [\"RS256\"]\n\
         jwks_file = \"{}\"\nmax_lifetime = \"24h\"\n",
        jwks.display()
    );
    let pods_text = format!(
        "[[issuers]]\n{common}[issuers.kubernetes]\napi_url = \"http://{api}\"\nca_file = \"{d}/ca.crt\"\n\
         token = \"file:{d}/token\"\nnamespaces = [\"airflow\"]\n",
        d = dir.path().display()
    );
    let pods_issuer = config::parse(&pods_text).unwrap().issuers.remove(0);
    let plain_issuer = config::parse(&format!("[[issuers]]\n{common}")).unwrap().issuers.remove(0);
    Setup {
        pods: Authenticator::new(&[pods_issuer], Metrics::new(10), None).unwrap(),
        plain: Authenticator::new(&[plain_issuer], Metrics::new(10), None).unwrap(),
        _dir: dir,
        key,
    }
}

static POD: AtomicU64 = AtomicU64::new(0);

/// A projected token of a pod never seen before (so both caches miss).
fn pod_token(key: &SigningKey) -> String {
    let n = POD.fetch_add(1, Ordering::Relaxed);
    let t = now();
    let claims = json!({"aud": ["urn:airgate"], "exp": t + 3600, "iat": t, "nbf": t, "iss": ISSUER,
        "sub": "system:serviceaccount:airflow:airflow-worker",
        "kubernetes.io": {"namespace": "airflow", "pod": {"name": format!("pod-{n}"), "uid": format!("uid-{n}")},
            "serviceaccount": {"name": "airflow-worker", "uid": "sa-1"}}});
    key.sign(json!({"alg": "RS256", "kid": key.kid()}).as_object().unwrap(), claims.as_object().unwrap()).unwrap()
}

fn plain_token(key: &SigningKey) -> String {
    let t = now();
    let claims = json!({"aud": "urn:airgate", "exp": t + 600, "iat": t, "iss": ISSUER, "sub": "minter",
        "dag_id": "sales_daily", "task_id": "load", "run_id": "scheduled__2026-01-01T00:00:00+00:00", "try_number": 1});
    key.sign(json!({"alg": "RS256", "kid": key.kid()}).as_object().unwrap(), claims.as_object().unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let s = rt.block_on(setup());
    let plain = bearer(&plain_token(&s.key));
    let pod = bearer(&pod_token(&s.key));
    rt.block_on(async {
        s.plain.authenticate(&plain).await.unwrap();
        s.pods.authenticate(&pod).await.unwrap();
    });
    c.bench_function("plain_rs256_cached", |b| {
        b.to_async(&rt).iter(|| async { black_box(s.plain.authenticate(&plain).await.unwrap()) })
    });
    c.bench_function("pod_identity_rs256_cached", |b| {
        b.to_async(&rt).iter(|| async { black_box(s.pods.authenticate(&pod).await.unwrap()) })
    });
    c.bench_function("plain_rs256_uncached", |b| {
        b.to_async(&rt).iter(|| async { black_box(s.plain.authenticate_uncached(&plain).await.unwrap()) })
    });
    let pods = &s.pods;
    c.bench_function("pod_identity_rs256_cache_miss", |b| {
        b.to_async(&rt).iter_batched(
            || bearer(&pod_token(&s.key)),
            |h| async move { black_box(pods.authenticate(&h).await.unwrap()) },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
