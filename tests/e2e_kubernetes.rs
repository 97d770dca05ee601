//! Kubernetes pod identity end to end (contract §9), over real sockets: a loopback stand-in of the
//! kube-apiserver that speaks its protocol (HTTPS with a test CA, bearer auth, `v1.Pod` objects,
//! `v1.Status` bodies for 401/403/404/503, and the OIDC discovery + JWKS documents the API server
//! serves itself), projected tokens minted here with exactly the claim shape of the TokenRequest
//! API (`pkg/serviceaccount/claims.go`), and task pods as the KubernetesExecutor's pod generator
//! writes them (`tests/fixtures/kubernetes/`, made by `generate_pods.py`).

mod credentials_support;
mod kube_api;
mod support;

use airgate::{app, config, identity::mint::SigningKey};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use kube_api::{ISSUER, KubeApi, Mode, fixture};
use serde_json::{Value, json};
use std::time::Duration;
use support::*;

const SA: &str = "airflow-worker";
const PRINCIPAL: &str = "system:serviceaccount:airflow:airflow-worker";
const TEAM_KEY: &str = "airflow.example.com/team";

// ---------------------------------------------------------------------------------------------
// Pods, tokens, the gateway
// ---------------------------------------------------------------------------------------------

fn name_of(pod: &Value) -> &str {
    pod["metadata"]["name"].as_str().unwrap()
}

fn uid_of(pod: &Value) -> &str {
    pod["metadata"]["uid"].as_str().unwrap()
}

fn annotation<'a>(pod: &'a Value, key: &str) -> &'a str {
    pod["metadata"]["annotations"][key].as_str().unwrap()
}

/// The sales pod of the fixtures, with the team annotation the platform team adds.
fn sales_pod() -> Value {
    let mut pod = fixture("pod_sales.json");
    pod["metadata"]["annotations"][TEAM_KEY] = json!("sales");
    pod
}

/// A Celery worker: a pod of the same service account that no KubernetesExecutor made, so it has
/// no task annotations (what the Airflow Helm chart's worker StatefulSet runs).
fn celery_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "airflow-worker-0", "namespace": "airflow", "uid": "0f6ad1f3-9c1e-4b9e-8d5c-celery000001",
                     "labels": {"component": "worker", "release": "airflow"},
                     "annotations": {"checksum/airflow-config": "3f1e"}},
        "spec": {"serviceAccountName": SA, "containers": [{"name": "worker", "image": "apache/airflow:3.1.0"}]},
        "status": {"phase": "Running"}})
}

fn rsa_key() -> SigningKey {
    use aws_lc_rs::{encoding::AsDer, rsa::KeySize, signature::RsaKeyPair};
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> = pair.as_der().unwrap();
    SigningKey::from_pem(airgate::identity::mint::pem("PRIVATE KEY", der.as_ref()).as_bytes()).unwrap()
}

/// A projected service-account token as the kube-apiserver's TokenRequest API writes it for a
/// pod-bound token (`expirationSeconds: 3600`, audience `urn:airgate`).
fn pod_token(key: &SigningKey, ns: &str, sa: &str, pod: Option<(&str, &str)>) -> String {
    let now = unix_now();
    let mut k8s = json!({
        "namespace": ns,
        "node": {"name": "aks-nodepool1-12345678-vmss000000", "uid": "7d3b2c1a-0000-4000-8000-000000000001"},
        "serviceaccount": {"name": sa, "uid": "c3f6a0de-0000-4000-8000-0000000000aa"},
    });
    if let Some((name, uid)) = pod {
        k8s["pod"] = json!({"name": name, "uid": uid});
    }
    let claims = json!({
        "aud": ["urn:airgate"], "exp": now + 3600, "iat": now, "nbf": now, "iss": ISSUER,
        "jti": format!("{:032x}", fastrand::u128(..)), "kubernetes.io": k8s,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
    });
    let header = json!({"alg": "RS256", "kid": key.kid()});
    key.sign(header.as_object().unwrap(), claims.as_object().unwrap()).unwrap()
}

fn token_for(key: &SigningKey, pod: &Value) -> String {
    pod_token(key, "airflow", SA, Some((name_of(pod), uid_of(pod))))
}

struct Harness {
    gw: Gateway,
    api: KubeApi,
    up: Upstream,
    key: SigningKey,
    token_file: std::path::PathBuf,
}

const API_TOKEN: &str = "airgate-own-sa-token-eyJhbGciOiJSUzI1NiJ9.first";

async fn harness(issuer_extra: &str, k8s_extra: &str) -> Harness {
    harness_with(issuer_extra, k8s_extra, false).await
}

/// With `foreign_ca`, airgate's `[issuers.kubernetes] ca_file` holds a CA that did not sign the
/// API server's certificate (the OIDC keys still load with the right one).
async fn harness_with(issuer_extra: &str, k8s_extra: &str, foreign_ca: bool) -> Harness {
    let pki = pki();
    let key = rsa_key();
    let api = KubeApi::start(&pki, &key, API_TOKEN).await;
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let kube_ca = dir.path().join("kube-ca.crt");
    std::fs::write(&kube_ca, if foreign_ca { support::pki().ca_pem } else { pki.ca_pem.clone() }).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{API_TOKEN}\n")).unwrap();
    let addr = api.addr;
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
name = "aks"
issuer = "{ISSUER}"
audiences = ["urn:airgate"]
discovery_url = "https://{addr}/.well-known/openid-configuration"
ca_file = "{ca}"
algorithms = ["RS256"]
max_lifetime = "24h"
{issuer_extra}
[issuers.kubernetes]
api_url = "https://{addr}"
ca_file = "{kube_ca}"
token = "file:{token}"
namespaces = ["airflow"]
service_accounts = ["{SA}"]
team_annotation = "{TEAM_KEY}"
timeout = "2s"
{k8s_extra}

[[upstreams]]
name = "apim"
url = "{upstream}"
timeout = "5s"

[[routes]]
name = "sales"
path_prefix = "/sales/"
upstream = "apim"
allow = {{ pipelines = ["sales_*", "finance_*"] }}
"#,
        audit = dir.path().join("audit.jsonl").display(),
        ca = ca.display(),
        kube_ca = kube_ca.display(),
        token = token_file.display(),
        upstream = up.url(),
    );
    let config = config::parse(&text).unwrap_or_else(|p| panic!("test config invalid:\n{p}\n{text}"));
    let running = app::start(config, app::Options { watch_config: None }).await.unwrap();
    let gw = Gateway { audit: dir.path().join("audit.jsonl"), running, dir };
    // Ready once the OIDC keys are in.
    eventually(Duration::from_secs(10), "issuer keys", || async { (gw.readyz().await.0 == 200).then_some(()) }).await;
    Harness { gw, api, up, key, token_file }
}

impl Harness {
    async fn call(&self, token: &str, extra: &[(&str, &str)]) -> Got {
        let mut b = Request::builder()
            .method(Method::GET)
            .uri(self.gw.url("/sales/orders"))
            .header("authorization", format!("Bearer {token}"));
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        send(&client(), b.body(Full::default()).unwrap()).await
    }

    async fn lookups(&self, result: &str) -> f64 {
        metric_value(&self.gw.metrics().await, "airgate_pod_lookups_total", &[("issuer", "aks"), ("result", result)])
            .unwrap_or(0.0)
    }

    /// The `n`th audit line (one-based), once written.
    async fn last_audit(&self, n: usize) -> Value {
        self.gw.audit_lines(n).await.swap_remove(n - 1)
    }
}

fn reason_is(line: &Value, outcome: &str, reason: &str) {
    assert_eq!(line["outcome"], outcome, "{line}");
    assert_eq!(line["reason"], reason, "{line}");
}

// ---------------------------------------------------------------------------------------------
// The answers of §9
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_task_pod_is_attributed_to_its_dag_task_run_and_try() {
    let h = harness("", "").await;
    let pod = sales_pod();
    h.api.put(&pod);
    let token = token_for(&h.key, &pod);

    let got = h.call(&token, &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let seen = h.up.last();
    assert!(seen.headers.get("authorization").is_none(), "the pod's token never reaches the upstream");
    let ann = |k| annotation(&pod, k).to_owned();
    assert_eq!(seen.headers["x-airflow-dag-id"], "sales_daily");
    assert_eq!(seen.headers["x-airflow-task-id"], "extract.load");
    assert_eq!(seen.headers["x-airflow-run-id"], ann("run_id").as_str());
    assert_eq!(seen.headers["x-airflow-try-number"], "1");
    assert!(seen.headers.get("x-airflow-map-index").is_none(), "not a mapped task");

    let line = h.last_audit(1).await;
    assert_eq!(line["outcome"], "allowed");
    assert_eq!(line["pod"], format!("airflow/{}", name_of(&pod)));
    assert_eq!(line["pipeline"], "sales_daily");
    assert_eq!(line["task"], "extract.load");
    assert_eq!(line["run_id"], "scheduled__2026-03-01T06:00:00+00:00");
    assert_eq!(line["try_number"], 1);
    assert_eq!(line["team"], "sales");
    assert_eq!(line["principal"], PRINCIPAL);
    assert_eq!(line["issuer"], "aks");

    // The second request is served from the cache: no second lookup.
    assert_eq!(h.call(&token, &[]).await.status, StatusCode::OK);
    assert_eq!(h.api.gets(), 1);
    assert_eq!(h.lookups("fetched").await, 1.0);
    assert_eq!(h.lookups("cached").await, 1.0);
}

#[tokio::test]
async fn long_dag_ids_mapped_tasks_and_odd_run_ids_come_raw_from_the_annotations() {
    let h = harness("", "").await;
    let long = fixture("pod_long_dag.json");
    let mapped = fixture("pod_mapped.json");
    h.api.put(&long);
    h.api.put(&mapped);
    let dag = annotation(&long, "dag_id");
    assert!(dag.len() > 63, "longer than a label can hold");
    assert_ne!(long["metadata"]["labels"]["dag_id"].as_str().unwrap(), dag, "the label is shortened");

    assert_eq!(h.call(&token_for(&h.key, &long), &[]).await.status, StatusCode::OK);
    let seen = h.up.last();
    assert_eq!(seen.headers["x-airflow-dag-id"], dag);
    assert_eq!(seen.headers["x-airflow-run-id"], "manual__2026-03-01T06:00:00.123456+00:00");
    assert_eq!(seen.headers["x-airflow-try-number"], "3");

    assert_eq!(h.call(&token_for(&h.key, &mapped), &[("x-airflow-map-index", "7")]).await.status, StatusCode::OK);
    let seen = h.up.last();
    assert_eq!(seen.headers["x-airflow-map-index"], "7");
    assert_eq!(seen.headers["x-airflow-task-id"], "transform");
    let line = h.last_audit(2).await;
    assert_eq!(line["map_index"], 7);
}

#[tokio::test]
async fn rbac_and_assertions_apply_to_the_pod_derived_identity() {
    let h = harness("", "").await;
    let mut hr = fixture("pod_sales.json");
    hr["metadata"]["annotations"]["dag_id"] = json!("hr_payroll");
    hr["metadata"]["name"] = json!("hr-payroll-run-abc12345");
    hr["metadata"]["uid"] = json!("5b0a3f0e-6c1d-4c8e-9a47-0d2b8d1f0aff");
    h.api.put(&hr);
    let got = h.call(&token_for(&h.key, &hr), &[]).await;
    got.problem(403);
    assert_eq!(h.last_audit(1).await["pipeline"], "hr_payroll", "refused for the pod's DAG");

    let pod = sales_pod();
    h.api.put(&pod);
    let token = token_for(&h.key, &pod);
    // The task asserts what Airflow told it: fine. Naming another DAG: 403 identity_mismatch.
    let run = annotation(&pod, "run_id").to_owned();
    let ok = h
        .call(&token, &[("x-airflow-dag-id", "sales_daily"), ("x-airflow-run-id", &run), ("x-airflow-try-number", "1")])
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    h.call(&token, &[("x-airflow-dag-id", "sales_other")]).await.problem(403);
    let line = h.last_audit(3).await;
    reason_is(&line, "forbidden", "identity_mismatch");
    assert_eq!(line["pod"], format!("airflow/{}", name_of(&pod)));
    h.call(&token, &[("x-airflow-try-number", "2")]).await.problem(403);
}

#[tokio::test]
async fn unbound_tokens_and_foreign_namespaces_are_refused_without_a_lookup() {
    let h = harness("", "").await;
    let pod = sales_pod();
    h.api.put(&pod);

    let plain = pod_token(&h.key, "airflow", SA, None);
    let got = h.call(&plain, &[]).await;
    got.problem(401);
    assert!(got.headers["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    let line = h.last_audit(1).await;
    reason_is(&line, "unauthenticated", "not_pod_bound");
    assert!(line["pod"].is_null());

    let elsewhere = pod_token(&h.key, "default", SA, Some((name_of(&pod), uid_of(&pod))));
    h.call(&elsewhere, &[]).await.problem(403);
    let line = h.last_audit(2).await;
    reason_is(&line, "forbidden", "namespace_not_allowed");
    assert_eq!(line["pod"], format!("default/{}", name_of(&pod)));

    let other_sa = pod_token(&h.key, "airflow", "airflow-scheduler", Some((name_of(&pod), uid_of(&pod))));
    h.call(&other_sa, &[]).await.problem(403);
    reason_is(&h.last_audit(3).await, "forbidden", "service_account_not_allowed");

    assert_eq!(h.api.gets(), 0, "refused before any lookup");
    assert_eq!(h.up.count(), 0);
    let metrics = h.gw.metrics().await;
    assert_eq!(
        metric_value(&metrics, "airgate_auth_failures_total", &[("issuer", "aks"), ("reason", "not_pod_bound")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn replaced_gone_and_finished_pods_are_refused() {
    let h = harness("", "").await;
    let pod = sales_pod();
    h.api.put(&pod);

    // The token names the pod's name with an older UID: the pod was replaced.
    let stale = pod_token(&h.key, "airflow", SA, Some((name_of(&pod), "00000000-dead-4000-8000-000000000000")));
    h.call(&stale, &[]).await.problem(401);
    reason_is(&h.last_audit(1).await, "unauthenticated", "pod_mismatch");
    assert_eq!(h.lookups("mismatch").await, 1.0);

    let gone =
        pod_token(&h.key, "airflow", SA, Some(("sales-daily-gone-00000000", "11111111-0000-4000-8000-000000000000")));
    h.call(&gone, &[]).await.problem(401);
    let line = h.last_audit(2).await;
    reason_is(&line, "unauthenticated", "pod_not_found");
    assert_eq!(line["pod"], "airflow/sales-daily-gone-00000000");
    assert_eq!(h.lookups("not_found").await, 1.0);

    let mut done = fixture("pod_mapped.json");
    done["status"]["phase"] = json!("Succeeded");
    h.api.put(&done);
    h.call(&token_for(&h.key, &done), &[]).await.problem(401);
    reason_is(&h.last_audit(3).await, "unauthenticated", "pod_not_running");
    let mut failed = fixture("pod_long_dag.json");
    failed["status"]["phase"] = json!("Failed");
    h.api.put(&failed);
    h.call(&token_for(&h.key, &failed), &[]).await.problem(401);
    reason_is(&h.last_audit(4).await, "unauthenticated", "pod_not_running");
    assert_eq!(h.lookups("fetched").await, 2.0, "a finished pod was still fetched");
    assert_eq!(h.up.count(), 0);
}

#[tokio::test]
async fn a_deleted_pod_stops_working_at_its_next_lookup() {
    let h = harness("", "pod_cache_ttl = \"1s\"").await;
    let pod = sales_pod();
    h.api.put(&pod);
    let token = token_for(&h.key, &pod);
    assert_eq!(h.call(&token, &[]).await.status, StatusCode::OK);
    h.api.remove("airflow", name_of(&pod));
    // Within pod_cache_ttl the cached pod is still trusted; after it, the lookup finds it gone.
    assert_eq!(h.call(&token, &[]).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.call(&token, &[]).await.problem(401);
    reason_is(&h.last_audit(3).await, "unauthenticated", "pod_not_found");
    assert_eq!(h.api.gets(), 2);
}

#[tokio::test]
async fn twenty_concurrent_first_requests_cause_one_lookup() {
    let h = harness("", "").await;
    let pod = sales_pod();
    h.api.put(&pod);
    let token = token_for(&h.key, &pod);
    let calls = (0..20).map(|_| h.call(&token, &[]));
    let answers = futures_join_all(calls).await;
    assert!(answers.iter().all(|g| g.status == StatusCode::OK));
    assert_eq!(h.api.gets(), 1);
    assert_eq!(h.lookups("fetched").await, 1.0);
    assert_eq!(h.lookups("cached").await, 19.0);
}

async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(f);
    }
    // Poll them together on this task.
    let mut pinned: Vec<_> = set.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn through_an_api_outage_cached_pods_keep_working_and_new_ones_get_503() {
    let h = harness("", "pod_cache_ttl = \"1s\"").await;
    let cached = sales_pod();
    let fresh = fixture("pod_mapped.json");
    h.api.put(&cached);
    h.api.put(&fresh);
    let cached_token = token_for(&h.key, &cached);
    let fresh_token = token_for(&h.key, &fresh);
    assert_eq!(h.call(&cached_token, &[]).await.status, StatusCode::OK);

    let modes = [(Mode::Status(503), "5xx"), (Mode::Status(403), "403 to airgate"), (Mode::Drop, "unreachable")];
    for (round, (mode, what)) in modes.into_iter().enumerate() {
        h.api.mode(mode);
        // Past pod_cache_ttl, so the cached pod needs a refresh that fails: it is still served.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let got = h.call(&cached_token, &[]).await;
        assert_eq!(got.status, StatusCode::OK, "{what}: cached pod refused: {}", got.text());
        let got = h.call(&fresh_token, &[]).await;
        let p = got.problem(503);
        assert_eq!(p["type"], "urn:airgate:problem:identity-unavailable", "{what}");
        assert!(got.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        let line = h.last_audit(3 + 2 * round).await;
        reason_is(&line, "identity_unavailable", "identity_unavailable");
        assert_eq!(line["pod"], format!("airflow/{}", name_of(&fresh)));
    }
    assert!(h.lookups("error").await >= 6.0);

    // Recovery: the next request of the uncached pod looks it up and passes.
    h.api.mode(Mode::Normal);
    let got = h.call(&fresh_token, &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(h.up.last().headers["x-airflow-map-index"], "7");
    let metrics = h.gw.metrics().await;
    assert!(
        metric_value(&metrics, "airgate_requests_total", &[("outcome", "identity_unavailable"), ("code", "503")])
            .is_some(),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_api_server_certificate_is_verified_with_ca_file_only() {
    let h = harness_with("", "", true).await;
    let pod = sales_pod();
    h.api.put(&pod);
    h.call(&token_for(&h.key, &pod), &[]).await.problem(503);
    assert_eq!(h.api.gets(), 0, "no request was sent over an unverified connection");
    assert_eq!(h.lookups("error").await, 1.0);
}

#[tokio::test]
async fn airgate_follows_the_rotation_of_its_own_api_token() {
    let h = harness("", "").await;
    let a = sales_pod();
    let b = fixture("pod_mapped.json");
    h.api.put(&a);
    h.api.put(&b);
    assert_eq!(h.call(&token_for(&h.key, &a), &[]).await.status, StatusCode::OK);

    // The kubelet rotates the token: the API now takes only the new one.
    let rotated = "airgate-own-sa-token-eyJhbGciOiJSUzI1NiJ9.second";
    h.api.accept_token(rotated);
    h.call(&token_for(&h.key, &b), &[]).await.problem(503);
    std::fs::write(&h.token_file, format!("{rotated}\n")).unwrap();
    let b_token = token_for(&h.key, &b);
    eventually(Duration::from_secs(10), "the rotated token in use", || async {
        (h.call(&b_token, &[]).await.status == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test]
async fn celery_workers_get_team_level_trust_only_when_configured() {
    // Without pipeline_from_header a pod without dag_id has no pipeline.
    let h = harness("", "").await;
    let worker = celery_pod();
    h.api.put(&worker);
    h.call(&token_for(&h.key, &worker), &[("x-airflow-dag-id", "sales_daily")]).await.problem(401);
    reason_is(&h.last_audit(1).await, "unauthenticated", "no_pipeline");
    drop(h);

    let grants = format!("pipeline_from_header = true\nprincipal_pipelines = {{ \"{PRINCIPAL}\" = [\"sales_*\"] }}");
    let h = harness(&grants, "").await;
    h.api.put(&worker);
    let token = token_for(&h.key, &worker);
    let got = h.call(&token, &[("x-airflow-dag-id", "sales_weekly"), ("x-airflow-task-id", "send")]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let seen = h.up.last();
    assert_eq!(seen.headers["x-airflow-dag-id"], "sales_weekly");
    assert_eq!(seen.headers["x-airflow-task-id"], "send");
    let line = h.last_audit(1).await;
    assert_eq!(line["principal"], PRINCIPAL);
    assert_eq!(line["pod"], "airflow/airflow-worker-0");
    h.call(&token, &[("x-airflow-dag-id", "finance_daily")]).await.problem(403);
    reason_is(&h.last_audit(2).await, "forbidden", "pipeline_not_granted");
    h.call(&token, &[]).await.problem(403);
    reason_is(&h.last_audit(3).await, "forbidden", "missing_pipeline_header");

    // On an executor pod of the same issuer the annotation is the identity, the header only an
    // assertion.
    let pod = sales_pod();
    h.api.put(&pod);
    h.call(&token_for(&h.key, &pod), &[("x-airflow-dag-id", "sales_weekly")]).await.problem(403);
    reason_is(&h.last_audit(4).await, "forbidden", "identity_mismatch");
    assert_eq!(h.call(&token_for(&h.key, &pod), &[]).await.status, StatusCode::OK);
    assert_eq!(h.up.last().headers["x-airflow-dag-id"], "sales_daily");
}

#[tokio::test]
async fn no_service_account_token_in_logs_audit_metrics_or_problems() {
    let logs = credentials_support::captured_logs();
    let h = harness("", "pod_cache_ttl = \"1s\"").await;
    let pod = sales_pod();
    h.api.put(&pod);
    let mut tokens = Vec::new();
    let mut bodies = Vec::new();
    let mut record = |t: String, g: Got| {
        bodies.push(g.text());
        tokens.push(t);
    };
    let good = token_for(&h.key, &pod);
    record(good.clone(), h.call(&good, &[]).await);
    let plain = pod_token(&h.key, "airflow", SA, None);
    record(plain.clone(), h.call(&plain, &[]).await);
    let foreign = pod_token(&h.key, "default", SA, Some(("x", "y")));
    record(foreign.clone(), h.call(&foreign, &[]).await);
    let gone = pod_token(&h.key, "airflow", SA, Some(("gone", "z")));
    record(gone.clone(), h.call(&gone, &[]).await);
    h.api.accept_token("something-else");
    let other = token_for(&h.key, &fixture("pod_mapped.json"));
    h.api.put(&fixture("pod_mapped.json"));
    record(other.clone(), h.call(&other, &[]).await);
    h.api.mode(Mode::Status(500));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    record(good.clone(), h.call(&good, &[]).await);
    std::fs::write(&h.token_file, "").unwrap(); // unreadable: the last good token stays
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let audit = std::fs::read_to_string(&h.gw.audit).unwrap();
    let metrics = h.gw.metrics().await;
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("pod lookup failed"), "the outage was logged: {logs}");
    for (what, text) in [("audit", &audit), ("metrics", &metrics), ("logs", &logs), ("problems", &bodies.join("\n"))] {
        assert!(
            !text.contains(API_TOKEN) && !text.contains("eyJhbGciOiJSUzI1NiJ9.first"),
            "{what} leaks airgate's token"
        );
        for t in &tokens {
            let signature = t.rsplit('.').next().unwrap();
            assert!(!text.contains(t.as_str()) && !text.contains(signature), "{what} leaks a caller token");
        }
    }
}
