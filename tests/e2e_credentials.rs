//! End-to-end credential swap through a running gateway: static tokens and subscription keys
//! from files (with rotation), a client-secret credential against the HTTPS Entra ID fake
//! (single flight, outage at start and recovery, no fetch for limited requests), and no secret
//! in the audit log, the metrics or the gateway's own answers.

#[path = "credentials_support/mod.rs"]
mod creds;
mod support;

use bytes::Bytes;
use creds::{Fake, Protocol};
use http::{Method, Request};
use http_body_util::Full;
use serde_json::Value;
use std::{sync::atomic::Ordering, time::Duration};
use support::*;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT_SECRET: &str = "e2e-client-secret~Q8x.very-private";
const STATIC_TOKEN: &str = "e2e-static-upstream-token-5f1c9a";
const SUB_KEY: &str = "e2e-subscription-key-0a1b2c3d";
const SUB_KEY_ROTATED: &str = "e2e-subscription-key-rotated-9z8y";

/// Files holding secrets, written before the gateway starts (it reads them at start).
struct Secrets {
    dir: tempfile::TempDir,
}

impl Secrets {
    fn new() -> Self {
        Secrets { dir: tempfile::tempdir().unwrap() }
    }

    /// Writes `value` (with a trailing newline, as secret mounts have) and returns its path.
    fn write(&self, name: &str, value: &str) -> String {
        let path = self.dir.path().join(name);
        // Write then rename, as the Key Vault CSI driver swaps files: no torn reads.
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, format!("{value}\n")).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path.display().to_string()
    }
}

fn routes(limit: &str) -> String {
    format!(
        r#"
[[routes]]
name = "api"
path_prefix = "/api/"
upstream = "apim"
allow = {{ pipelines = ["*"] }}
{limit}
"#
    )
}

async fn call(gw: &Gateway, token: &str) -> Got {
    let req = Request::builder()
        .method(Method::GET)
        .uri(gw.url("/api/x"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    send(&client(), req).await
}

fn value<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|v| v.to_str().unwrap())
}

/// Nothing in `secrets` appears in the audit file, the metrics text or any of `bodies`.
async fn assert_no_secret(gw: &Gateway, bodies: &[String], secrets: &[&str]) {
    let audit = std::fs::read_to_string(&gw.audit).unwrap_or_default();
    let metrics = gw.metrics().await;
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(!audit.contains(secret), "a secret reached the audit log");
        assert!(!metrics.contains(secret), "a secret reached the metrics");
        for body in bodies {
            assert!(!body.contains(secret), "a secret reached an answer: {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_token_replaces_the_callers_and_subscription_keys_rotate() {
    let up = upstream().await;
    let secrets = Secrets::new();
    let token_file = secrets.write("upstream-token", STATIC_TOKEN);
    let key_file = secrets.write("subscription-key", SUB_KEY);
    let config = format!(
        r#"
[[upstreams]]
name = "apim"
url = "{}"
subscription_key = "file:{key_file}"
[upstreams.credential]
kind = "static"
token = "file:{token_file}"
"#,
        up.url()
    ) + &routes("");
    let gw = gateway(&config).await;
    let caller = token("sales_daily");
    let got = call(&gw, &caller).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = up.last();
    assert_eq!(value(&seen, "authorization"), Some(format!("Bearer {STATIC_TOKEN}").as_str()));
    assert_eq!(value(&seen, "ocp-apim-subscription-key"), Some(SUB_KEY));
    for (name, v) in &seen.headers {
        assert!(!v.to_str().unwrap_or("").contains(&caller), "the caller's token reached the upstream in {name}");
    }

    // Key Vault CSI rotation: the new key is used without a restart.
    secrets.write("subscription-key", SUB_KEY_ROTATED);
    eventually(Duration::from_secs(10), "the rotated subscription key upstream", || async {
        assert_eq!(call(&gw, &caller).await.status, 200);
        (value(&up.last(), "ocp-apim-subscription-key") == Some(SUB_KEY_ROTATED)).then_some(())
    })
    .await;
    assert_eq!(value(&up.last(), "authorization"), Some(format!("Bearer {STATIC_TOKEN}").as_str()));

    // A refusal, for the secret check of problem bodies.
    let denied = call(&gw, "not-a-token").await;
    denied.problem(401);
    assert_no_secret(&gw, &[got.text(), denied.text()], &[STATIC_TOKEN, SUB_KEY, SUB_KEY_ROTATED, &caller]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_key_header_renames_the_header() {
    let up = upstream().await;
    let secrets = Secrets::new();
    let key_file = secrets.write("subscription-key", SUB_KEY);
    let config = format!(
        "[[upstreams]]\nname = \"apim\"\nurl = \"{}\"\nsubscription_key = \"file:{key_file}\"\n\
         subscription_key_header = \"X-Api-Key\"\n",
        up.url()
    ) + &routes("");
    let gw = gateway(&config).await;
    assert_eq!(call(&gw, &token("d")).await.status, 200);
    let seen = up.last();
    assert_eq!(value(&seen, "x-api-key"), Some(SUB_KEY));
    assert_eq!(value(&seen, "ocp-apim-subscription-key"), None);
    assert_eq!(value(&seen, "authorization"), None, "an upstream without credential gets no Authorization");
}

/// An HTTPS Entra ID fake accepting [`CLIENT_SECRET`], and the upstream section using it.
struct Entra {
    fake: Fake,
    pki: creds::TestPki,
    secrets: Secrets,
}

async fn entra(lifetime: u64) -> Entra {
    let pki = creds::pki();
    let protocol = Protocol::Entra {
        tenant: TENANT.into(),
        client_id: CLIENT.into(),
        secret: Some(CLIENT_SECRET.into()),
        assertion: None,
    };
    let fake = Fake::start(protocol, Some(pki.server.clone()), lifetime).await;
    Entra { fake, pki, secrets: Secrets::new() }
}

impl Entra {
    fn upstream(&self, url: &str) -> String {
        let secret = self.secrets.write("client-secret", CLIENT_SECRET);
        format!(
            r#"
[[upstreams]]
name = "apim"
url = "{url}"
[upstreams.credential]
kind = "client_secret"
scope = "api://apim-backend/.default"
tenant_id = "{TENANT}"
client_id = "{CLIENT}"
secret = "file:{secret}"
authority_host = "https://localhost:{port}"
ca_file = "{ca}"
"#,
            port = self.fake.addr.port(),
            ca = self.pki.ca_file.display()
        )
    }

    fn issued(&self) -> Vec<String> {
        self.fake.log.issued.lock().unwrap().iter().map(|i| i.token.clone()).collect()
    }
}

async fn audit_of(gw: &Gateway, got: &Got) -> Value {
    let id = got.headers["x-request-id"].to_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), "the audit record", || async {
        let text = std::fs::read_to_string(&gw.audit).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|r| r["request_id"] == id.as_str())
    })
    .await
}

async fn ready(gw: &Gateway) {
    eventually(Duration::from_secs(30), "/readyz 200", || async { (gw.readyz().await.0 == 200).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_secret_token_from_entra_reaches_the_upstream_fetched_once() {
    let up = upstream().await;
    let entra = entra(3600).await;
    // Slow enough that the burst below arrives while the first fetch is still pending.
    entra.fake.log.delay_ms.store(300, Ordering::SeqCst);
    let gw = gateway(&(entra.upstream(&up.url()) + &routes(""))).await;
    let caller = token("sales_daily");

    let burst = |n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (url, caller) = (gw.url("/api/x"), caller.clone());
                tokio::spawn(async move {
                    let req = Request::get(url)
                        .header("authorization", format!("Bearer {caller}"))
                        .body(Full::<Bytes>::default())
                        .unwrap();
                    send(&client(), req).await
                })
            })
            .collect();
        async move {
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    let mut bodies = Vec::new();
    let mut early = 0;
    for got in burst(100).await {
        match got.status.as_u16() {
            200 => {}
            503 => {
                early += 1;
                got.problem(503);
                assert!(got.headers.contains_key("retry-after"));
            }
            other => panic!("{other}: {}", got.text()),
        }
        bodies.push(got.text());
    }
    eprintln!("{early} of the first 100 requests came before the first token");
    ready(&gw).await;
    for got in burst(100).await {
        assert_eq!(got.status, 200, "{}", got.text());
        bodies.push(got.text());
    }
    let issued = entra.issued();
    assert_eq!(issued.len(), 1, "one token fetch for any number of concurrent requests");
    assert_eq!(entra.fake.log.seen.lock().unwrap().len(), 1);
    let seen = up.last();
    assert_eq!(value(&seen, "authorization"), Some(format!("Bearer {}", issued[0]).as_str()));
    assert!(up.requests().iter().all(|s| value(s, "authorization") == value(&seen, "authorization")));

    let text = gw.metrics().await;
    assert_eq!(
        metric_value(&text, "airgate_upstream_token_refreshes_total", &[("upstream", "apim"), ("result", "success")]),
        Some(1.0)
    );
    assert_no_secret(&gw, &bodies, &[CLIENT_SECRET, &issued[0], &caller]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_at_start_is_503_and_not_ready_then_recovers() {
    let up = upstream().await;
    let entra = entra(3600).await;
    entra.fake.log.set_down(true);
    let gw = gateway(&(entra.upstream(&up.url()) + &routes(""))).await;
    let caller = token("sales_daily");

    // Wait until the first fetch has failed, so the answer reflects the outage.
    eventually(Duration::from_secs(10), "a failed fetch", || async {
        (!entra.fake.log.seen.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let got = call(&gw, &caller).await;
    let problem = got.problem(503);
    assert_eq!(problem["type"], "urn:airgate:problem:credential-unavailable");
    let retry: u64 = got.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let rec = audit_of(&gw, &got).await;
    assert_eq!(rec["outcome"], "credential_unavailable");
    assert_eq!(up.count(), 0);

    let (status, body) = gw.readyz().await;
    assert_eq!(status, 503);
    let missing: Vec<&str> = body["missing"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert!(missing.iter().any(|m| m.starts_with("upstream apim: no valid token")), "{body}");
    assert!(!body.to_string().contains(CLIENT_SECRET));

    entra.fake.log.set_down(false);
    ready(&gw).await;
    let ok = call(&gw, &caller).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let issued = entra.issued();
    assert_eq!(value(&up.last(), "authorization"), Some(format!("Bearer {}", issued[0]).as_str()));
    let text = gw.metrics().await;
    assert!(
        metric_value(&text, "airgate_upstream_token_refreshes_total", &[("upstream", "apim"), ("result", "error")])
            .unwrap()
            >= 1.0
    );
    assert_no_secret(&gw, &[got.text(), body.to_string()], &[CLIENT_SECRET, &issued[0], &caller]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_request_triggers_no_token_fetch() {
    let up = upstream().await;
    let entra = entra(3600).await;
    let limits = "\n[rate_limits]\n[[rate_limits.policies]]\nname = \"tight\"\nrate = \"1/min\"\nburst = 1\n";
    let gw = gateway(&(entra.upstream(&up.url()) + &routes("rate_limit = \"tight\"") + limits)).await;
    ready(&gw).await;
    assert_eq!(entra.fake.log.fetches(), 1);
    let caller = token("sales_daily");
    assert_eq!(call(&gw, &caller).await.status, 200);
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let got = call(&gw, &caller).await;
        got.problem(429);
        bodies.push(got.text());
    }
    // Give any (wrongly) triggered fetch time to show up at the fake.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(entra.fake.log.fetches(), 1, "a limited request caused a token fetch");
    assert_eq!(entra.fake.log.seen.lock().unwrap().len(), 1);
    assert_eq!(up.count(), 1);
    let issued = entra.issued();
    assert_no_secret(&gw, &bodies, &[CLIENT_SECRET, &issued[0], &caller]).await;
}

/// Every request the upstream saw carried a token the fake issued, unexpired when it arrived.
fn assert_never_expired(up: &support::Upstream, entra: &Entra) {
    let log = &entra.fake.log;
    for seen in up.requests() {
        let auth = value(&seen, "authorization").expect("an Authorization header");
        let token = auth.strip_prefix("Bearer ").expect("a bearer token");
        let expires = log.expiry_of(token).expect("a token the fake issued");
        assert!(
            seen.at < expires,
            "{token} reached the upstream {:?} after its expiry",
            seen.at.duration_since(expires)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_refreshed_ahead_and_never_reach_the_upstream_expired() {
    let up = upstream().await;
    let entra = entra(6).await;
    let gw = gateway(&(entra.upstream(&up.url()) + &routes(""))).await;
    ready(&gw).await;
    let caller = token("sales_daily");
    let start = std::time::Instant::now();
    let mut unavailable = 0;
    while start.elapsed() < Duration::from_secs(8) {
        match call(&gw, &caller).await.status.as_u16() {
            200 => {}
            503 => unavailable += 1,
            other => panic!("{other}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_never_expired(&up, &entra);
    let issued = entra.issued();
    assert!(issued.len() >= 2, "refreshed ahead: {} tokens in 8 s of 6 s tokens", issued.len());
    let used: std::collections::HashSet<String> =
        up.requests().iter().filter_map(|s| value(s, "authorization").map(str::to_owned)).collect();
    assert!(used.len() >= 2, "requests moved on to the refreshed token");
    // Refreshing ahead means no gap between tokens (a generous allowance for a loaded machine).
    assert!(unavailable <= 2, "{unavailable} requests found no valid token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_later_keeps_the_valid_token_until_expiry_then_503_then_recovery() {
    let up = upstream().await;
    let entra = entra(6).await;
    let gw = gateway(&(entra.upstream(&up.url()) + &routes(""))).await;
    ready(&gw).await;
    entra.fake.log.set_down(true);
    let caller = token("sales_daily");
    // The token fetched before the outage keeps serving…
    let got = call(&gw, &caller).await;
    assert_eq!(got.status, 200, "{}", got.text());
    // …until it is no longer valid; then 503, never an expired token.
    let refused = eventually(Duration::from_secs(15), "503 once the token ran out", || async {
        let got = call(&gw, &caller).await;
        (got.status == 503).then_some(got)
    })
    .await;
    refused.problem(503);
    assert_never_expired(&up, &entra);
    assert_eq!(entra.issued().len(), 1, "no token was issued during the outage");
    assert_eq!(gw.readyz().await.0, 503);

    entra.fake.log.set_down(false);
    ready(&gw).await;
    assert_eq!(call(&gw, &caller).await.status, 200);
    assert_never_expired(&up, &entra);
}
