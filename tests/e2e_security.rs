//! The holes an attack run found (issue 14), closed end to end over loopback: route confusion by
//! path spelling (empty segments, case, encodings, `;`), method fall-back to an outer route,
//! headers and trailers smuggled past the rewrite, identity values that are not visible ASCII,
//! credentials in key-set URLs printed in logs, `/readyz` and `check`, and `airgate demo` killed
//! by SIGTERM instead of draining.

mod support;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::{
    convert::Infallible,
    process::Command,
    time::{Duration, Instant},
};
use support::{Gateway, Upstream, authed, client, gateway, send, token, upstream};

/// `/sales/` (any `sales_*`, rewritten to `/sales/v2/`) with a nested, GET-only `/sales/admin/`
/// for `sales_admin` alone: the layout the attack run used.
async fn nested(up: &Upstream) -> Gateway {
    gateway(&format!(
        r#"
[[upstreams]]
name = "apim"
url = "{}"
http2 = true
[[routes]]
name = "sales"
path_prefix = "/sales/"
rewrite_prefix = "/sales/v2/"
upstream = "apim"
allow = {{ pipelines = ["sales_*"] }}
[[routes]]
name = "sales-admin"
path_prefix = "/sales/admin/"
methods = ["GET"]
upstream = "apim"
allow = {{ pipelines = ["sales_admin"] }}
"#,
        up.url()
    ))
    .await
}

#[tokio::test]
async fn an_empty_segment_cannot_reach_another_routes_path() {
    let up = upstream().await;
    let gw = nested(&up).await;
    let got = support::get(&gw.url("/sales//admin/users"), "sales_daily").await;
    let problem = got.problem(400);
    assert_eq!(problem["type"], "urn:airgate:problem:bad-request");
    assert_eq!(up.count(), 0, "the upstream saw {:?}", up.requests());
    let audit = gw.audit_lines(1).await;
    assert_eq!(audit[0]["outcome"], "bad_request");
    assert_eq!(audit[0]["reason"], "empty_segment");
    // A trailing slash is not an empty segment.
    assert_eq!(support::get(&gw.url("/sales/"), "sales_daily").await.status, 200);
}

#[tokio::test]
async fn every_refused_path_form_is_400_audited_counted_and_never_forwarded() {
    let up = upstream().await;
    let gw = nested(&up).await;
    let cases = [
        ("/sales/./admin/users", "dot_segment"),
        ("/sales/x/../admin/users", "dot_segment"),
        ("/sales//admin/users", "empty_segment"),
        ("/sales/admin./users", "trailing_dot"),
        ("/sales/admin%20/users", "trailing_space"),
        ("/sales/..;/admin/users", "semicolon_in_path"),
        ("/sales/admin;jsessionid=1/users", "semicolon_in_path"),
        ("/sales/%00", "nul_in_path"),
        ("/sales/%zz", "bad_percent_encoding"),
        ("/sales/%2fadmin/users", "encoded_separator"),
        ("/sales/%5cadmin", "encoded_separator"),
        ("/sales/%61dmin/users", "encoded_unreserved"),
        ("/sales/%2e%2e/admin", "encoded_unreserved"),
        ("/sales/%252e%252e/admin", "double_encoding"),
        ("/sales/%C0%AFadmin", "invalid_utf8"),
    ];
    for (path, _) in &cases {
        support::get(&gw.url(path), "sales_daily").await.problem(400);
    }
    assert_eq!(up.count(), 0, "the upstream saw {:?}", up.requests());
    let audit = gw.audit_lines(cases.len()).await;
    for (line, (path, reason)) in audit.iter().zip(&cases) {
        assert_eq!((line["path"].as_str(), line["outcome"].as_str()), (Some(*path), Some("bad_request")), "{line}");
        assert_eq!(line["reason"], *reason, "{path}");
    }
    let metrics = gw.metrics().await;
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("airgate_requests_total{") && l.contains("outcome=\"bad_request\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, cases.len() as f64, "{metrics}");
}

#[tokio::test]
async fn case_cannot_dodge_a_nested_route() {
    let up = upstream().await;
    let gw = nested(&up).await;
    // Matched by `/sales/admin/` whatever the case, so `sales_daily` is not allowed.
    support::get(&gw.url("/SALES/ADMIN/users"), "sales_daily").await.problem(403);
    support::get(&gw.url("/Sales/Admin/users"), "sales_daily").await.problem(403);
    assert_eq!(up.count(), 0);
    assert_eq!(support::get(&gw.url("/SALES/Admin/users"), "sales_admin").await.status, 200);
    assert_eq!(up.last().uri, format!("http://{}/sales/admin/users", up.addr), "the configured spelling goes upstream");
    assert_eq!(support::get(&gw.url("/Sales/orders/Q1"), "sales_daily").await.status, 200);
    assert_eq!(up.last().uri, format!("http://{}/sales/v2/orders/Q1", up.addr), "prefix replaced in the case sent");
}

#[tokio::test]
async fn a_method_the_nested_route_refuses_is_405_never_the_outer_route() {
    let up = upstream().await;
    let gw = nested(&up).await;
    for method in [Method::POST, Method::DELETE] {
        let req =
            authed(method.clone(), &gw.url("/sales/admin/users"), "sales_daily", "").body(Full::default()).unwrap();
        let got = send(&client(), req).await;
        got.problem(405);
        assert_eq!(got.headers["allow"], "GET", "{method}");
    }
    assert_eq!(up.count(), 0, "fell back to /sales/: {:?}", up.requests());
}

type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

#[tokio::test]
async fn trailers_and_smuggled_headers_never_reach_the_upstream() {
    let up = upstream().await;
    let gw = nested(&up).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("authorization", "Bearer smuggled".parse().unwrap());
    trailers.insert("x-airflow-dag-id", "sales_admin".parse().unwrap());
    trailers.insert("ocp-apim-subscription-key", "stolen".parse().unwrap());
    let frames = vec![Ok(Frame::data(Bytes::from_static(b"payload"))), Ok(Frame::trailers(trailers))];
    let smuggled = [
        ("x_airflow_dag_id", "sales_admin"),
        ("X-Airflow_Dag-Id", "sales_admin"),
        ("X_Airflow_Task_Id", "t"),
        ("x-original-url", "/sales/admin/users"),
        ("x-rewrite-url", "/sales/admin/users"),
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x_original_url", "/sales/admin/users"),
        ("x-real-ip", "10.0.0.1"),
        ("true-client-ip", "10.0.0.1"),
        ("x-client-ip", "10.0.0.1"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-prefix", "/admin"),
        ("x-forwarded-server", "internal"),
        ("x_real_ip", "10.0.0.1"),
        ("x_forwarded_for", "10.0.0.1"),
    ];
    let mut req =
        Request::post(gw.url("/sales/orders")).header("authorization", format!("Bearer {}", token("sales_daily")));
    for (name, value) in smuggled {
        req = req.header(name, value);
    }
    let req = req.body(StreamBody::new(futures_util::stream::iter(frames) as Frames)).unwrap();
    let h2: Client<_, StreamBody<Frames>> = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;

    let seen = up.last();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.body, "payload");
    assert!(seen.trailers.is_none(), "trailers reached the upstream: {:?}", seen.trailers);
    for (name, _) in smuggled {
        let canonical = name.to_ascii_lowercase().replace('_', "-");
        let survivors: Vec<&str> =
            seen.headers.keys().map(|k| k.as_str()).filter(|k| k.replace('_', "-") == canonical).collect();
        assert!(
            survivors.iter().all(|s| *s == canonical && gateway_sets(s)),
            "{name} reached the upstream as {survivors:?}"
        );
    }
    assert_eq!(seen.headers["x-airflow-dag-id"], "sales_daily");
    assert_eq!(seen.headers.get_all("x-airflow-dag-id").iter().count(), 1);
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert!(seen.headers.get("authorization").is_none(), "the upstream has no credential configured");
}

/// Headers the gateway sets itself (from verified facts), so their `-` spelling may arrive.
fn gateway_sets(name: &str) -> bool {
    matches!(name, "x-airflow-dag-id" | "x-airflow-task-id" | "x-forwarded-for")
}

#[tokio::test]
async fn identity_values_are_percent_encoded_upstream_and_raw_in_the_audit() {
    let up = upstream().await;
    let gw = nested(&up).await;
    let t = support::token_with("sales_daily", |r| {
        r.task = "load orders café".into();
        r.run = Some("manual 100%".into());
    });
    let req = Request::get(gw.url("/sales/x")).header("authorization", format!("Bearer {t}")).body(Full::default());
    assert_eq!(send(&client(), req.unwrap()).await.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-airflow-task-id"], "load%20orders%20caf%C3%A9");
    assert_eq!(seen.headers["x-airflow-run-id"], "manual%20100%25");
    assert_eq!(seen.headers["x-airflow-dag-id"], "sales_daily");
    let audit = gw.audit_lines(1).await;
    assert_eq!(audit[0]["task"], "load orders café", "{}", audit[0]);
}

const SAS: &str = "sv=2024-05-04&sig=SECRETSASsignature";

fn sas_issuer(host: &str) -> String {
    format!(
        "[[issuers]]\nname = \"blob\"\nissuer = \"https://blob.test.invalid\"\naudiences = [\"urn:airgate\"]\njwks_url = \"http://{host}/keys/jwks.json?{SAS}\"\n"
    )
}

#[tokio::test]
async fn a_key_set_urls_query_is_never_shown_in_readyz() {
    let up = upstream().await;
    // Nothing listens on port 1: every fetch fails and the error names the URL.
    let gw = gateway(&format!(
        "{}[[upstreams]]\nname = \"apim\"\nurl = \"{}\"\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"apim\"\nallow = {{ pipelines = [\"*\"] }}\n",
        sas_issuer("127.0.0.1:1"),
        up.url()
    ))
    .await;
    let missing = support::eventually(Duration::from_secs(10), "a failed key fetch in /readyz", || async {
        let (_, body) = gw.readyz().await;
        let text = body["missing"].to_string();
        text.contains("last error").then_some(text)
    })
    .await;
    assert!(missing.contains("http://127.0.0.1:1/keys/jwks.json?…"), "{missing}");
    assert!(!missing.contains("SECRETSAS") && !missing.contains("sv=2024"), "{missing}");
}

fn airgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_airgate"))
}

#[test]
fn check_and_run_never_print_a_key_set_urls_query_and_refuse_userinfo() {
    let dir = tempfile::tempdir().unwrap();
    let base = support::base_config(dir.path());
    let routes = "[[upstreams]]\nname = \"apim\"\nurl = \"https://contoso.azure-api.net\"\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"apim\"\nallow = { pipelines = [\"*\"] }\n";
    let good = dir.path().join("good.toml");
    std::fs::write(&good, format!("{base}{}{routes}", sas_issuer("127.0.0.1:1"))).unwrap();
    let out = airgate().args(["check", "--config"]).arg(&good).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("blob keys: jwks_url http://127.0.0.1:1/keys/jwks.json?…"), "{stdout}");
    assert!(!stdout.contains("SECRETSAS"), "{stdout}");

    // `run`: the failed refreshes are logged, with the query redacted.
    let run = support::Binary::spawn(&good);
    let deadline = Instant::now() + Duration::from_secs(10);
    while run.logged("key set refresh failed").is_empty() {
        assert!(Instant::now() < deadline, "no refresh failure logged: {:?}", run.stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = run.stderr.lock().unwrap().join("\n");
    assert!(logs.contains("jwks.json?…"), "{logs}");
    assert!(!logs.contains("SECRETSAS"), "{logs}");
    drop(run);

    for (key, url) in [
        ("jwks_url", "https://minter:hunter2@idp.example/jwks"),
        ("discovery_url", "https://minter:hunter2@idp.example/.well-known/openid-configuration"),
    ] {
        let bad = dir.path().join("bad.toml");
        let issuer = format!(
            "[[issuers]]\nname = \"u\"\nissuer = \"https://u.invalid\"\naudiences = [\"urn:airgate\"]\n{key} = \"{url}\"\n"
        );
        std::fs::write(&bad, format!("{base}{issuer}{routes}")).unwrap();
        for cmd in ["check", "run"] {
            let out = airgate().args([cmd, "--config"]).arg(&bad).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
            assert!(stderr.contains(&format!("issuers[1].{key}")) && stderr.contains("user info"), "{cmd}: {stderr}");
            assert!(!stderr.contains("hunter2"), "{cmd}: {stderr}");
        }
    }
}

#[test]
fn the_demo_drains_and_exits_0_on_sigterm() {
    let mut demo = support::Demo::spawn();
    assert!(!demo.curls().is_empty());
    let child = &mut demo.child;
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        // Dropping `demo` kills the child.
        assert!(Instant::now() < deadline, "the demo did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status}");
}
