//! `airgate demo`: a complete gateway on 127.0.0.1 in front of a built-in demo upstream, with a
//! built-in development issuer (a fresh Ed25519 key per run), printing ready-to-paste curl
//! commands. No files, no network: every secret is generated in memory.

use crate::{
    app,
    config::{self, Secret, SecretRef, credential::Credential, issuer::KeySource},
    identity::mint::{MintRequest, generate_dev_signing_key, mint},
};
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use std::{convert::Infallible, net::SocketAddr, time::Duration};
use tokio::net::TcpListener;

/// Requests the demo's rate-limited route allows at once.
const DEMO_BURST: u32 = 5;

/// The demo configuration; secrets are placeholders replaced in memory by [`patch_secrets`].
fn demo_config(port: u16, admin_port: u16, upstream: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"

[admin]
listen = "127.0.0.1:{admin_port}"

[[issuers]]
name = "demo-dev"
issuer = "https://airflow.demo.invalid"
audiences = ["urn:airgate"]
required_scope = "egress"
max_lifetime = "1h"
signing_key = "env:AIRGATE_DEMO_UNUSED"

[[upstreams]]
name = "demo-apim"
url = "http://{upstream}"
subscription_key = "env:AIRGATE_DEMO_UNUSED"
[upstreams.credential]
kind = "static"
token = "env:AIRGATE_DEMO_UNUSED"

[[routes]]
name = "orders"
path_prefix = "/demo/orders"
rewrite_prefix = "/api/v1/orders"
upstream = "demo-apim"
allow = {{ pipelines = ["sales_*"] }}

[[routes]]
name = "limited"
path_prefix = "/demo/limited"
upstream = "demo-apim"
rate_limit = "demo-per-dag"
allow = {{ pipelines = ["sales_*"] }}

[rate_limits]
backend = "local"

[[rate_limits.policies]]
name = "demo-per-dag"
key = "pipeline"
rate = "5/min"
burst = {DEMO_BURST}
"#
    )
}

/// Puts the generated secrets where the file has placeholders.
fn patch_secrets(config: &mut config::Config, signing_key: Secret) -> Result<(), String> {
    for issuer in &mut config.issuers {
        issuer.keys = KeySource::SigningKey(SecretRef::Inline(signing_key.clone()));
    }
    for upstream in &mut config.upstreams {
        let token = Secret::new(format!("demo-gateway-token-{:016x}", fastrand::u64(..)).into_bytes());
        upstream.credential = Credential::Static { token: SecretRef::Inline(token) };
        upstream.subscription_key = Some(SecretRef::Inline(Secret::new(b"demo-subscription-key".to_vec())));
    }
    Ok(())
}

/// Runs the demo until SIGTERM or SIGINT (Ctrl-C), then drains like `airgate run`.
pub async fn run(port: u16, admin_port: u16) -> Result<(), String> {
    let upstream = start_demo_upstream().await?;
    let text = demo_config(port, admin_port, upstream);
    let mut config = config::parse(&text).map_err(|p| format!("built-in demo configuration: {p}"))?;
    patch_secrets(&mut config, generate_dev_signing_key()?)?;
    let issuer = config.issuers.first().cloned().ok_or("the demo has no issuer")?;
    let token = |dag: &str, task: &str| {
        mint(
            &issuer,
            &MintRequest {
                dag: dag.into(),
                task: task.into(),
                run: Some("manual__2026-11-30T00:00:00+00:00".into()),
                try_number: Some(1),
                map_index: None,
                team: Some("sales".into()),
                ttl: Duration::from_secs(3600),
                audience: None,
                extra_scope: None,
            },
        )
    };
    let allowed = token("sales_daily", "load_orders")?;
    let forbidden = token("marketing_sync", "push")?;
    let limited = token("sales_backfill", "replay")?;
    let invalid = tamper(&allowed);

    // Installed before the commands are printed: from then on SIGTERM (`docker stop`, a test
    // harness) drains like Ctrl-C instead of killing the process.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let running = app::start(config, app::Options { watch_config: None }).await?;
    let base = format!("http://{}", running.proxy_addr);
    println!("airgate demo: proxy {base}, admin http://{} (Ctrl-C to stop)", running.admin_addr);
    println!("# allowed (200): pipeline sales_daily may call the orders API");
    println!("curl -sS -H 'Authorization: Bearer {allowed}' {base}/demo/orders");
    println!("# forbidden (403): pipeline marketing_sync is not allowed on this route");
    println!("curl -sS -H 'Authorization: Bearer {forbidden}' {base}/demo/orders");
    println!("# invalid (401): a token whose signature does not verify");
    println!("curl -sS -H 'Authorization: Bearer {invalid}' {base}/demo/orders");
    println!("# rate limited (429): 12 calls in a row; the first {DEMO_BURST} pass, the rest get 429 with Retry-After");
    println!(
        "curl -sS -o /dev/null -w '%{{http_code}}\\n' -H 'Authorization: Bearer {limited}' '{base}/demo/limited/[1-12]'"
    );
    println!("# metrics and readiness: http://{0}/metrics and http://{0}/readyz", running.admin_addr);
    println!("# audit records follow, one JSON object per request:");

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    running.shutdown().await;
    Ok(())
}

/// Changes one character in the middle of the signature so it no longer verifies. (The last
/// character is avoided: some of its bits are base64 padding.)
fn tamper(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let at = chars.len().saturating_sub(20);
    if let Some(c) = chars.get_mut(at) {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    chars.into_iter().collect()
}

/// A small upstream that answers with what it received (the gateway's headers, not the caller's).
async fn start_demo_upstream() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("demo upstream: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move { Ok::<_, Infallible>(echo(&req)) });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(addr)
}

fn echo(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // Show that a gateway credential arrived without printing it.
    let auth = h("authorization")
        .map(|v| if v.starts_with("Bearer demo-gateway-token-") { "Bearer <gateway token>" } else { "<other>" });
    let body = serde_json::json!({
        "upstream": "demo-apim",
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "received": {
            "authorization": auth,
            "ocp-apim-subscription-key": h("ocp-apim-subscription-key").map(|_| "<present>"),
            "x-airflow-dag-id": h("x-airflow-dag-id"),
            "x-airflow-task-id": h("x-airflow-task-id"),
            "x-airflow-run-id": h("x-airflow-run-id"),
            "x-airflow-try-number": h("x-airflow-try-number"),
            "x-request-id": h("x-request-id"),
            "traceparent": h("traceparent"),
        }
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body:#}\n"))));
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}
