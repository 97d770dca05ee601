//! End-to-end identity through a running gateway (real sockets, port 0): verified identity
//! forwarded as `X-Airflow-*`, header assertions, every 401 with its audit reason and metric,
//! JWKS-served ES256/RS256 keys, an Entra-style issuer with header-derived pipelines, the
//! `airgate token` → `airgate run` round trip, and the printed `airgate demo` commands.

mod support;

use airgate::identity::mint::{SigningKey, generate_dev_signing_key, pem, public_jwks};
use aws_lc_rs::{
    encoding::{AsDer, Pkcs8V1Der},
    rand::SystemRandom,
    rsa::KeySize,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair},
};
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::{convert::Infallible, net::SocketAddr, process::Command, time::Duration};
use support::*;
use tokio::net::TcpListener;

const RUN_ID: &str = "scheduled__2026-11-30T00:00:00+00:00";

fn routes(upstream: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "up"
url = "{upstream}"
timeout = "5s"

[[routes]]
name = "api"
path_prefix = "/api/"
upstream = "up"
allow = {{ pipelines = ["*"] }}
"#
    )
}

fn get_with(url: &str, auth: &[&str], extra: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(Method::GET).uri(url);
    for a in auth {
        b = b.header("authorization", *a);
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Full::default()).unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The audit record with `request_id` (waits for it).
async fn audit_of(gw: &Gateway, request_id: &str) -> Value {
    eventually(Duration::from_secs(10), "the audit record", || async {
        let text = std::fs::read_to_string(&gw.audit).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|r| r["request_id"] == request_id)
    })
    .await
}

fn request_id(got: &Got) -> String {
    got.headers["x-request-id"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_gets_the_verified_identity_and_never_the_callers_token() {
    let up = upstream().await;
    let gw = gateway(&routes(&up.url())).await;
    let t = token("sales_daily");
    let got = send(&client(), get_with(&gw.url("/api/orders"), &[&bearer(&t)], &[])).await;
    assert_eq!(got.status, 200, "{}", got.text());

    let seen = up.last();
    let h = &seen.headers;
    assert_eq!(h["x-airflow-dag-id"], "sales_daily");
    assert_eq!(h["x-airflow-task-id"], "task_a");
    assert_eq!(h["x-airflow-run-id"], RUN_ID);
    assert_eq!(h["x-airflow-try-number"], "1");
    assert!(!h.contains_key("authorization"), "an upstream without credential gets no Authorization: {h:?}");
    for (name, value) in h {
        assert!(!value.as_bytes().windows(t.len()).any(|w| w == t.as_bytes()), "the caller's token leaked in {name}");
    }

    let rec = audit_of(&gw, &request_id(&got)).await;
    assert_eq!(rec["outcome"], "allowed");
    assert_eq!(rec["issuer"], "test");
    assert_eq!(rec["pipeline"], "sales_daily");
    assert_eq!(rec["task"], "task_a");
    assert_eq!(rec["run_id"], RUN_ID);
    assert!(!std::fs::read_to_string(&gw.audit).unwrap().contains(&t), "the token reached the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_header_assertions_must_match_the_token() {
    let up = upstream().await;
    let gw = gateway(&routes(&up.url())).await;
    let c = client();
    let auth = bearer(&token("sales_daily"));
    let url = gw.url("/api/orders");

    for contradiction in [("x-airflow-dag-id", "finance_daily"), ("x-airflow-task-id", "other_task")] {
        let got = send(&c, get_with(&url, &[&auth], &[contradiction])).await;
        got.problem(403);
        let rec = audit_of(&gw, &request_id(&got)).await;
        assert_eq!(rec["outcome"], "forbidden", "{contradiction:?}");
        assert_eq!(rec["reason"], "identity_mismatch", "{contradiction:?}");
    }
    assert_eq!(up.count(), 0, "a contradicted request reached the upstream");

    let matching = [
        ("x-airflow-dag-id", "sales_daily"),
        ("x-airflow-task-id", "task_a"),
        ("x-airflow-run-id", RUN_ID),
        ("x-airflow-try-number", "1"),
    ];
    let got = send(&c, get_with(&url, &[&auth], &matching)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(up.last().headers["x-airflow-dag-id"], "sales_daily");

    let text = gw.metrics().await;
    let mismatches =
        metric_value(&text, "airgate_auth_failures_total", &[("issuer", "test"), ("reason", "identity_mismatch")]);
    assert_eq!(mismatches, Some(2.0), "{text}");
}

fn tamper(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let at = chars.len() - 20;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_token_is_401_with_a_bearer_challenge_and_a_precise_reason() {
    let up = upstream().await;
    let gw = gateway(&routes(&up.url())).await;
    let now = unix_now();

    let mut expired = test_claims("sales_daily");
    expired.insert("iat".into(), json!(now - 600));
    expired.insert("nbf".into(), json!(now - 600));
    expired.insert("exp".into(), json!(now - 120));
    let mut wrong_scope = test_claims("sales_daily");
    wrong_scope.insert("scope".into(), json!("read write"));
    let good = token("sales_daily");

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("expired", vec![bearer(&sign_test(&expired))], "expired"),
        (
            "wrong audience",
            vec![bearer(&token_with("sales_daily", |r| r.audience = Some("urn:someone-else".into())))],
            "wrong_audience",
        ),
        (
            "Airflow execution audience",
            vec![bearer(&token_with("sales_daily", |r| r.audience = Some("urn:airflow.apache.org:task".into())))],
            "airflow_execution_token",
        ),
        ("wrong scope", vec![bearer(&sign_test(&wrong_scope))], "wrong_scope"),
        ("tampered signature", vec![bearer(&tamper(&good))], "bad_signature"),
        ("two Authorization headers", vec![bearer(&good), bearer(&token("sales_daily"))], "multiple_tokens"),
        ("Basic scheme", vec!["Basic c2FsZXM6aHVudGVyMg==".to_owned()], "bad_scheme"),
        // A valid token with more after it, in one header: refused for what follows (the
        // characters are checked on a cache miss, and this is never a hit).
        ("two tokens in one header", vec![format!("Bearer {good} {good}")], "multiple_tokens"),
        ("a byte outside token68", vec![format!("Bearer {good}+")], "malformed"),
    ];
    let c = client();
    for (what, auth, reason) in &cases {
        let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
        let got = send(&c, get_with(&gw.url("/api/orders"), &auth, &[])).await;
        let problem = got.problem(401);
        assert_eq!(got.headers["www-authenticate"], r#"Bearer realm="airgate", error="invalid_token""#, "{what}");
        for a in &auth {
            let token = a.split_once(' ').unwrap().1;
            assert!(!got.text().contains(token), "{what}: the problem echoes the token: {problem}");
        }
        let rec = audit_of(&gw, &request_id(&got)).await;
        assert_eq!(rec["outcome"], "unauthenticated", "{what}");
        assert_eq!(rec["reason"], *reason, "{what}: {rec}");
    }
    assert_eq!(up.count(), 0, "an unauthenticated request reached the upstream");

    // No token at all: a challenge without error="invalid_token" (RFC 6750 §3.1).
    let got = send(&c, get_with(&gw.url("/api/orders"), &[], &[])).await;
    got.problem(401);
    assert_eq!(got.headers["www-authenticate"], r#"Bearer realm="airgate""#);

    let text = gw.metrics().await;
    for (what, _, reason) in &cases {
        let n = metric_value(&text, "airgate_auth_failures_total", &[("reason", reason)]);
        let cases_with_it = cases.iter().filter(|c| c.2 == *reason).count() as f64;
        assert_eq!(n, Some(cases_with_it), "{what}: airgate_auth_failures_total{{reason={reason:?}}} in\n{text}");
    }
    // Token-level failures of a token from the test issuer are labelled with it.
    for reason in ["expired", "wrong_audience", "wrong_scope", "bad_signature", "airflow_execution_token"] {
        assert_eq!(
            metric_value(&text, "airgate_auth_failures_total", &[("issuer", "test"), ("reason", reason)]),
            Some(1.0),
            "{reason}"
        );
    }
    let audit = std::fs::read_to_string(&gw.audit).unwrap();
    assert!(!audit.contains(&good[good.len() - 40..]), "a token reached the audit log");
}

/// A JWKS server on loopback answering one fixed document.
async fn jwks_server(document: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let doc = document.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let doc = doc.clone();
                    async move {
                        let resp = Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(doc)))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

fn es256() -> SigningKey {
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
    SigningKey::from_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes()).unwrap()
}

fn rs256() -> SigningKey {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let der: Pkcs8V1Der<'_> = pair.as_der().unwrap();
    SigningKey::from_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes()).unwrap()
}

fn alg(key: &SigningKey) -> &'static str {
    airgate::identity::mint::alg_name(key.algorithm())
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    let header = json!({"alg": alg(key), "typ": "JWT", "kid": key.kid()});
    key.sign(header.as_object().unwrap(), claims.as_object().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_and_rs256_keys_from_a_jwks_url_are_accepted() {
    let (es, rs) = (es256(), rs256());
    let doc = json!({"keys": [es.public_jwk(), rs.public_jwk()]}).to_string();
    assert!(!doc.contains("\"alg\""), "JWKs without alg, as Airflow publishes them");
    let jwks = jwks_server(doc).await;
    let up = upstream().await;
    let issuer = format!(
        "[[issuers]]\nname = \"minter\"\nissuer = \"https://minter.test.invalid\"\naudiences = [\"urn:airgate\"]\n\
         required_scope = \"egress\"\njwks_url = \"http://{jwks}/jwks\"\n"
    );
    let gw = gateway(&(issuer + &routes(&up.url()))).await;
    let c = client();
    for (key, dag) in [(&es, "es_dag"), (&rs, "rs_dag")] {
        let now = unix_now();
        let claims = json!({
            "iss": "https://minter.test.invalid", "aud": ["urn:airgate", "urn:other"], "sub": "minter",
            "scope": "egress", "dag_id": dag, "task_id": "t1", "try_number": 2,
            "iat": now, "nbf": now, "exp": now + 300,
        });
        let got = send(&c, get_with(&gw.url("/api/x"), &[&bearer(&sign(key, &claims))], &[])).await;
        assert_eq!(got.status, 200, "{}: {}", alg(key), got.text());
        let h = up.last().headers;
        assert_eq!(h["x-airflow-dag-id"], dag);
        assert_eq!(h["x-airflow-try-number"], "2");
        let rec = audit_of(&gw, &request_id(&got)).await;
        assert_eq!(rec["issuer"], "minter");
    }
    // A key the JWKS does not publish, under a kid it does: refused.
    let impostor = es256();
    let now = unix_now();
    let claims = json!({
        "iss": "https://minter.test.invalid", "aud": "urn:airgate", "scope": "egress", "dag_id": "d",
        "iat": now, "exp": now + 60,
    });
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": es.kid()});
    let forged = impostor.sign(header.as_object().unwrap(), claims.as_object().unwrap()).unwrap();
    let got = send(&c, get_with(&gw.url("/api/x"), &[&bearer(&forged)], &[])).await;
    got.problem(401);
    assert_eq!(audit_of(&gw, &request_id(&got)).await["reason"], "bad_signature");
    assert_eq!(gw.readyz().await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entra_style_issuer_takes_granted_pipelines_from_the_header() {
    let key = es256();
    let keys_dir = tempfile::tempdir().unwrap();
    let jwks_file = keys_dir.path().join("entra-jwks.json");
    std::fs::write(&jwks_file, json!({"keys": [key.public_jwk()]}).to_string()).unwrap();
    let tenant = "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0";
    let up = upstream().await;
    let issuer = format!(
        r#"[[issuers]]
name = "entra"
issuer = "{tenant}"
audiences = ["api://airgate"]
jwks_file = "{}"
max_lifetime = "2h"
pipeline_from_header = true
principal_pipelines = {{ "svc-team-a" = ["team_a_*"] }}
[issuers.claims]
principal = "oid"
"#,
        jwks_file.display()
    );
    let gw = gateway(&(issuer + &routes(&up.url()))).await;
    let now = unix_now();
    let entra_token = |oid: &str| {
        sign(
            &key,
            &json!({
                "iss": tenant, "aud": "api://airgate", "oid": oid, "azp": "11111111-2222-3333-4444-555555555555",
                "roles": ["Pipelines.Call"], "iat": now, "nbf": now, "exp": now + 3600,
            }),
        )
    };
    let c = client();
    let url = gw.url("/api/x");
    let team_a = bearer(&entra_token("svc-team-a"));

    let got = send(&c, get_with(&url, &[&team_a], &[("x-airflow-dag-id", "team_a_daily")])).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(up.last().headers["x-airflow-dag-id"], "team_a_daily");
    let rec = audit_of(&gw, &request_id(&got)).await;
    assert_eq!((rec["issuer"].as_str(), rec["principal"].as_str()), (Some("entra"), Some("svc-team-a")));
    assert_eq!(rec["pipeline"], "team_a_daily");

    let denied = [
        (bearer(&entra_token("svc-team-a")), Some("team_b_daily"), "pipeline_not_granted"),
        (bearer(&entra_token("svc-team-a")), None, "missing_pipeline_header"),
        (bearer(&entra_token("svc-team-b")), Some("team_a_daily"), "pipeline_not_granted"),
    ];
    for (auth, dag, reason) in &denied {
        let extra: Vec<(&str, &str)> = dag.iter().map(|d| ("x-airflow-dag-id", *d)).collect();
        let got = send(&c, get_with(&url, &[auth], &extra)).await;
        got.problem(403);
        let rec = audit_of(&gw, &request_id(&got)).await;
        assert_eq!(rec["reason"], *reason, "{dag:?}");
        assert_eq!(rec["outcome"], "forbidden");
    }
    assert_eq!(up.count(), 1);
}

fn airgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_airgate"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airgate_token_output_is_accepted_by_airgate_run() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("signing.pem"), generate_dev_signing_key().unwrap().expose()).unwrap();
    // A second issuer that only has public keys: `airgate token` must refuse it.
    let other = generate_dev_signing_key().unwrap();
    std::fs::write(d.join("other.pem"), other.expose()).unwrap();
    let other_cfg = airgate::config::parse(&format!(
        "[[issuers]]\nname = \"x\"\nissuer = \"https://x\"\naudiences = [\"urn:airgate\"]\nsigning_key = \"file:{}\"\n",
        d.join("other.pem").display()
    ))
    .unwrap();
    std::fs::write(d.join("jwks.json"), public_jwks(&other_cfg.issuers[0]).unwrap()).unwrap();

    let config = format!(
        r#"[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[audit]
sink = "file"
path = "{d}/audit.jsonl"

[[issuers]]
name = "dev"
issuer = "https://airflow.dev.invalid"
audiences = ["urn:airgate"]
required_scope = "egress"
signing_key = "file:{d}/signing.pem"

[[issuers]]
name = "published"
issuer = "https://airflow.published.invalid"
audiences = ["urn:airgate"]
jwks_file = "{d}/jwks.json"

[[upstreams]]
name = "up"
url = "{up}"

[[routes]]
name = "sales"
path_prefix = "/sales/"
upstream = "up"
allow = {{ pipelines = ["sales_*"] }}
"#,
        d = d.display(),
        up = up.url()
    );
    let path = d.join("airgate.toml");
    std::fs::write(&path, config).unwrap();

    let p = path.clone();
    let out = tokio::task::spawn_blocking(move || {
        airgate()
            .args(["token", "--config"])
            .arg(&p)
            .args(["--issuer", "dev", "--dag", "sales_daily", "--task", "extract", "--run", "manual__1"])
            .args(["--try", "3", "--ttl", "2m"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(minted.split('.').count(), 3, "{minted}");

    let p = path.clone();
    let refused = tokio::task::spawn_blocking(move || {
        airgate()
            .args(["token", "--config"])
            .arg(&p)
            .args(["--issuer", "published", "--dag", "sales_daily", "--task", "extract"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_ne!(refused.status.code(), Some(0));
    assert!(refused.stdout.is_empty(), "no token may be printed");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("published") && err.contains("only public keys"), "{err}");

    let p = path.clone();
    let run = tokio::task::spawn_blocking(move || Binary::spawn(&p)).await.unwrap();
    let got = send(&client(), get_with(&format!("http://{}/sales/orders", run.proxy), &[&bearer(&minted)], &[])).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let h = up.last().headers;
    assert_eq!(h["x-airflow-dag-id"], "sales_daily");
    assert_eq!(h["x-airflow-task-id"], "extract");
    assert_eq!(h["x-airflow-run-id"], "manual__1");
    assert_eq!(h["x-airflow-try-number"], "3");
    drop(run);
}

/// `airgate demo --port 0`: every printed curl command does what its comment says.
#[test]
fn the_demo_commands_work_as_printed() {
    let demo = support::Demo::spawn();
    let curls = demo.curls();
    assert!(curls.len() >= 4, "{curls:#?}");
    let sh = |cmd: &str| {
        let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
        assert!(out.status.success(), "{cmd}\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };

    let allowed = sh(&curls[0]);
    assert!(allowed.contains(r#""x-airflow-dag-id": "sales_daily""#), "{allowed}");
    let forbidden: Value = serde_json::from_str(&sh(&curls[1])).unwrap();
    assert_eq!(forbidden["status"], 403, "{forbidden}");
    let invalid: Value = serde_json::from_str(&sh(&curls[2])).unwrap();
    assert_eq!(invalid["status"], 401, "{invalid}");
    let codes = sh(&curls[3]);
    let codes: Vec<&str> = codes.lines().collect();
    assert!(codes.contains(&"200") && codes.contains(&"429"), "{codes:?}");
    assert_eq!(codes.first(), Some(&"200"), "{codes:?}");
    assert_eq!(codes.last(), Some(&"429"), "{codes:?}");
}
