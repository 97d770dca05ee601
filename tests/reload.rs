//! Hot reload as operators use it: SIGHUP (the binary) and file changes (the in-process watcher,
//! including a Kubernetes ConfigMap symlink swap) apply new routes and policies; a bad file is
//! refused and the old configuration keeps serving; reloads under load lose no request; key sets,
//! upstream tokens and limiter state of unchanged parts are carried over; TLS certificate files
//! are re-read; a changed listener address is reported without blocking the rest.

mod support;

#[path = "credentials_support/mod.rs"]
mod creds;

use airgate::{app, config};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use support::{Binary, authed, client, counter_in, send, token};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Writes `text` to `path` atomically (a rename), so a polling watcher never sees half a file.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// An in-process gateway started from a file on disk.
struct FileGateway {
    running: app::Running,
    path: PathBuf,
    dir: tempfile::TempDir,
}

impl FileGateway {
    /// `body` is appended to the shared base configuration (listeners, audit, test issuer).
    async fn start(body: &str, watch: Option<Duration>) -> FileGateway {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{}{body}", support::base_config(dir.path()));
        Self::start_raw(dir, "airgate.toml", &text, watch).await
    }

    async fn start_raw(dir: tempfile::TempDir, name: &str, text: &str, watch: Option<Duration>) -> FileGateway {
        let path = dir.path().join(name);
        if !path.exists() {
            std::fs::write(&path, text).unwrap();
        }
        let cfg = match config::load(&path) {
            Ok(c) => c,
            Err(p) => panic!("test config invalid:\n{p}\n{text}"),
        };
        let running = app::start(cfg, app::Options { watch_config: watch }).await.unwrap();
        FileGateway { running, path, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.proxy_addr)
    }

    /// Replaces the body after the base configuration.
    fn rewrite(&self, body: &str) {
        write_atomic(&self.path, &format!("{}{body}", support::base_config(self.dir.path())));
    }

    fn counter(&self, line_start: &str) -> f64 {
        counter_in(&self.running.gateway.metrics().render(), line_start)
    }
}

const RELOAD_OK: &str = "airgate_config_reloads_total{result=\"success\"}";
const RELOAD_ERR: &str = "airgate_config_reloads_total{result=\"error\"}";

/// GET `url` with a fresh token for `dag`; returns the status.
async fn status(url: &str, dag: &str) -> StatusCode {
    let req = authed(Method::GET, url, dag, "").body(Full::default()).unwrap();
    send(&client(), req).await.status
}

/// Polls `f` every 50 ms until it returns true or `within` passes.
async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn routes(upstream: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"up\"\nurl = \"{upstream}\"\n\
         [[routes]]\nname = \"sales\"\npath_prefix = \"/sales/\"\nupstream = \"up\"\nallow = {{ pipelines = [\"sales_*\"] }}\n"
    )
}

/// `routes` plus a route `/new/` limited by a new policy `tight` (burst 1 per minute).
fn routes_with_new(upstream: &str) -> String {
    routes(upstream)
        + "[[routes]]\nname = \"new\"\npath_prefix = \"/new/\"\nupstream = \"up\"\nrate_limit = \"tight\"\n\
           allow = { pipelines = [\"*\"] }\n\
           [[rate_limits.policies]]\nname = \"tight\"\nkey = \"pipeline\"\nrate = \"1/min\"\nburst = 1\n"
}

/// After the reload that introduced `/new/` and `tight`: the route answers 200 once, then 429.
async fn new_route_and_policy_apply(url: &str) {
    assert_eq!(status(url, "sales_daily").await, StatusCode::OK, "the new route serves");
    assert_eq!(status(url, "sales_daily").await, StatusCode::TOO_MANY_REQUESTS, "the new policy limits it");
}

// ---------------------------------------------------------------------------------------------
// The binary, for real signals and its stderr
// ---------------------------------------------------------------------------------------------

fn binary_config(dir: &Path, body: &str) -> String {
    format!("{}{body}", support::base_config(dir))
}

// ---------------------------------------------------------------------------------------------
// 1. SIGHUP and a file change each apply a new route and a new rate-limit policy
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_route_and_a_new_policy() {
    let up = support::upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airgate.toml");
    std::fs::write(&path, binary_config(dir.path(), &routes(&up.url()))).unwrap();
    let bin = Binary::spawn(&path);
    assert_eq!(status(&bin.url("/sales/x"), "sales_daily").await, StatusCode::OK);
    assert_eq!(status(&bin.url("/new/x"), "sales_daily").await, StatusCode::NOT_FOUND);

    // SIGHUP with an unchanged file still reloads: the watcher never would, so this is the signal.
    bin.hup();
    eventually(Duration::from_secs(10), "a reload after SIGHUP", || async { bin.counter(RELOAD_OK).await >= 1.0 })
        .await;

    // Now a new route and a new policy, applied by the next SIGHUP.
    write_atomic(&path, &binary_config(dir.path(), &routes_with_new(&up.url())));
    bin.hup();
    let url = bin.url("/new/x");
    eventually(Duration::from_secs(10), "the new route after SIGHUP", || async { bin.counter(RELOAD_OK).await >= 2.0 })
        .await;
    new_route_and_policy_apply(&url).await;
    assert_eq!(bin.counter(RELOAD_ERR).await, 0.0);
    assert!(!bin.logged("configuration reloaded").is_empty(), "{:?}", bin.stderr.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_applies_a_new_route_and_a_new_policy() {
    let up = support::upstream().await;
    let gw = FileGateway::start(&routes(&up.url()), Some(Duration::from_millis(100))).await;
    assert_eq!(status(&gw.url("/new/x"), "sales_daily").await, StatusCode::NOT_FOUND);

    gw.rewrite(&routes_with_new(&up.url()));
    eventually(Duration::from_secs(10), "the watcher reloads", || async { gw.counter(RELOAD_OK) >= 1.0 }).await;
    new_route_and_policy_apply(&gw.url("/new/x")).await;
    assert_eq!(status(&gw.url("/sales/x"), "sales_daily").await, StatusCode::OK);
    assert_eq!(gw.counter(RELOAD_ERR), 0.0);
}

// ---------------------------------------------------------------------------------------------
// 2. A bad file keeps the old configuration
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_refused_with_one_log_line_and_the_old_configuration_keeps_serving() {
    let up = support::upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airgate.toml");
    std::fs::write(&path, binary_config(dir.path(), &routes(&up.url()))).unwrap();
    let bin = Binary::spawn(&path);
    assert_eq!(status(&bin.url("/sales/x"), "sales_daily").await, StatusCode::OK);

    // Valid TOML, invalid configuration: a route to an upstream that does not exist.
    let bad = routes(&up.url()) + "[[routes]]\nname = \"b\"\npath_prefix = \"/b/\"\nupstream = \"nowhere\"\n";
    write_atomic(&path, &binary_config(dir.path(), &bad));
    bin.hup();
    eventually(Duration::from_secs(10), "the refusal is counted", || async { bin.counter(RELOAD_ERR).await >= 1.0 })
        .await;
    eventually(Duration::from_secs(5), "the refusal is logged", || async {
        !bin.logged("configuration reload refused").is_empty()
    })
    .await;
    // That the binary's watcher does not load the same edit again is tested on a paused clock
    // (`reload::tests`); here the one line and the one count after SIGHUP.
    let refused = bin.logged("configuration reload refused");
    assert_eq!(refused.len(), 1, "one line for one bad edit: {refused:?}");
    assert_eq!(bin.counter(RELOAD_ERR).await, 1.0);
    assert!(refused[0].contains("routes[1].upstream"), "the line names the problem: {}", refused[0]);
    assert_eq!(status(&bin.url("/sales/x"), "sales_daily").await, StatusCode::OK, "old config still serves");
    assert_eq!(status(&bin.url("/b/x"), "sales_daily").await, StatusCode::NOT_FOUND);
    assert_eq!(bin.counter(RELOAD_OK).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_refused_in_process_and_the_error_counter_moves() {
    let up = support::upstream().await;
    let gw = FileGateway::start(&routes(&up.url()), None).await;
    let before = gw.counter(RELOAD_ERR);
    for bad in ["[broken\n", "[server]\ncolour = \"blue\"\n"] {
        write_atomic(&gw.path, bad);
        assert!(gw.running.reload().is_err(), "{bad:?} must be refused");
    }
    assert_eq!(gw.counter(RELOAD_ERR), before + 2.0);
    assert_eq!(status(&gw.url("/sales/x"), "sales_daily").await, StatusCode::OK);
    // A missing file is refused the same way.
    std::fs::remove_file(&gw.path).unwrap();
    assert!(gw.running.reload().is_err());
    assert_eq!(gw.counter(RELOAD_ERR), before + 3.0);
    assert_eq!(status(&gw.url("/sales/x"), "sales_daily").await, StatusCode::OK);
    assert_eq!(gw.counter(RELOAD_OK), 0.0);
}

// ---------------------------------------------------------------------------------------------
// 3. Kubernetes ConfigMap symlink swap
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_picked_up_by_the_watcher() {
    use std::os::unix::fs::symlink;
    let up = support::upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // The layout the kubelet makes: airgate.toml -> ..data/airgate.toml, ..data -> ..<timestamp>.
    let first = root.join("..2026_11_30_03_00_00.000000001");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(first.join("airgate.toml"), binary_config(root, &routes(&up.url()))).unwrap();
    symlink(first.file_name().unwrap(), root.join("..data")).unwrap();
    symlink("..data/airgate.toml", root.join("airgate.toml")).unwrap();

    let gw = FileGateway::start_raw(dir, "airgate.toml", "", Some(Duration::from_millis(100))).await;
    assert_eq!(status(&gw.url("/new/x"), "sales_daily").await, StatusCode::NOT_FOUND);

    // The kubelet's update: a new timestamped dir, a new symlink, renamed over `..data` at once.
    let root = gw.dir.path();
    let second = root.join("..2026_11_30_03_01_00.000000002");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(second.join("airgate.toml"), binary_config(root, &routes_with_new(&up.url()))).unwrap();
    symlink(second.file_name().unwrap(), root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();

    eventually(Duration::from_secs(10), "the watcher follows the swap", || async { gw.counter(RELOAD_OK) >= 1.0 })
        .await;
    new_route_and_policy_apply(&gw.url("/new/x")).await;
    assert_eq!(gw.counter(RELOAD_ERR), 0.0);
}

// ---------------------------------------------------------------------------------------------
// 4. Reloads under load lose no request
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_request() {
    let up = support::upstream().await;
    // Two valid configurations; `/sales/` exists in both. The second changes the upstream's
    // timeout (so its client pool is rebuilt) and adds a route and a policy.
    let a = routes(&up.url()).replace("url = ", "timeout = \"30s\"\nurl = ");
    let b = routes_with_new(&up.url()).replace("url = ", "timeout = \"31s\"\nurl = ");
    let gw = Arc::new(FileGateway::start(&a, None).await);

    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 375;
    const RELOADS: usize = 5;
    let reloads_done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (gw, done, sent) = (gw.clone(), reloads_done.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            // One client each, keep-alive: its connection lives through every reload. Half speak
            // HTTP/1.1, half HTTP/2; none retries, so a connection closed under it shows up.
            let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .retry_canceled_requests(false)
                .http2_only(i % 2 == 1)
                .build_http::<Full<Bytes>>();
            let bearer = format!("Bearer {}", token(&format!("sales_load_{i}")));
            let url = gw.url("/sales/load");
            let mut failures = Vec::new();
            let mut n = 0usize;
            // Run until every reload happened and at least PER_CLIENT requests went out.
            while n < PER_CLIENT || !done.load(Ordering::SeqCst) {
                let req = Request::get(&url).header("authorization", &bearer).body(Full::default()).unwrap();
                match http.request(req).await {
                    Ok(resp) => {
                        let code = resp.status();
                        let body = http_body_util::BodyExt::collect(resp.into_body()).await;
                        if code != StatusCode::OK || body.is_err() {
                            failures.push(format!("request {n}: {code} (body ok: {})", body.is_ok()));
                        }
                    }
                    Err(e) => failures.push(format!("request {n}: {e:?}")),
                }
                n += 1;
                sent.fetch_add(1, Ordering::SeqCst);
                assert!(n < 200_000, "bounded");
            }
            failures
        }));
    }
    for r in 0..RELOADS {
        // Spread the reloads over the load: wait for some traffic between them.
        let target = (r + 1) * CLIENTS * PER_CLIENT / (RELOADS + 2);
        let deadline = Instant::now() + Duration::from_secs(60);
        while sent.load(Ordering::SeqCst) < target {
            assert!(Instant::now() < deadline, "the load stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        gw.rewrite(if r % 2 == 0 { &b } else { &a });
        gw.running.reload().unwrap();
    }
    reloads_done.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    let total = sent.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(total >= CLIENTS * PER_CLIENT);
    assert_eq!(gw.counter(RELOAD_OK), RELOADS as f64);
    assert_eq!(up.count(), total, "every request reached the upstream once");
}

// ---------------------------------------------------------------------------------------------
// 5. Carry-over of key sets, upstream tokens and limiter state
// ---------------------------------------------------------------------------------------------

/// A loopback JWKS endpoint that counts its fetches and answers 503 while its switch is on.
struct Jwks {
    addr: SocketAddr,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

async fn jwks_server(body: String) -> Jwks {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fetches = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let (count, flag) = (fetches.clone(), down.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (body, count, flag) = (body.clone(), count.clone(), flag.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    count.fetch_add(1, Ordering::SeqCst);
                    let status = if flag.load(Ordering::SeqCst) { 503 } else { 200 };
                    let resp = http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.clone())))
                        .unwrap();
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Jwks { addr, fetches, down }
}

/// A whole configuration with one JWKS issuer refreshed every `refresh`, and [`routes`].
fn jwks_issuer_config(jwks: SocketAddr, audit: &Path, upstream: &str, refresh: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [audit]\nsink = \"file\"\npath = \"{}\"\n\
         [[issuers]]\nname = \"airflow\"\nissuer = \"https://airflow.test.invalid\"\n\
         audiences = [\"urn:airgate\"]\nrequired_scope = \"egress\"\n\
         jwks_url = \"http://{jwks}/jwks\"\nrefresh_interval = \"{refresh}\"\n{}",
        audit.display(),
        routes(upstream)
    )
}

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT_SECRET: &str = "reload-test-client-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_issuers_upstreams_and_policies_are_carried_over() {
    let up = support::upstream().await;
    let Jwks { addr: keep_addr, fetches: keep_fetches, .. } = jwks_server(support::test_jwks()).await;
    let Jwks { addr: change_addr, fetches: change_fetches, .. } = jwks_server(support::test_jwks()).await;
    let pki = creds::pki();
    let entra = creds::Fake::start(
        creds::Protocol::Entra {
            tenant: TENANT.into(),
            client_id: CLIENT_ID.into(),
            secret: Some(CLIENT_SECRET.into()),
            assertion: None,
        },
        Some(pki.server.clone()),
        3600,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, CLIENT_SECRET).unwrap();

    let audit = dir.path().join("audit.jsonl");
    let text = |other_refresh: &str, extra_route: bool| {
        let mut t = format!(
            r#"[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[audit]
sink = "file"
path = "{audit}"

[[issuers]]
name = "airflow"
issuer = "https://airflow.test.invalid"
audiences = ["urn:airgate"]
required_scope = "egress"
jwks_url = "http://{keep_addr}/jwks"
refresh_interval = "1h"

[[issuers]]
name = "other"
issuer = "https://other.test.invalid"
audiences = ["urn:airgate"]
jwks_url = "http://{change_addr}/jwks"
refresh_interval = "{other_refresh}"

[[upstreams]]
name = "apim"
url = "{upstream}"
[upstreams.credential]
kind = "client_secret"
scope = "api://apim-backend/.default"
tenant_id = "{TENANT}"
client_id = "{CLIENT_ID}"
secret = "file:{secret}"
authority_host = "https://localhost:{entra_port}"
ca_file = "{ca}"

[[routes]]
name = "sales"
path_prefix = "/sales/"
upstream = "apim"
rate_limit = "tight"
allow = {{ pipelines = ["sales_*"] }}

[[rate_limits.policies]]
name = "tight"
rate = "1/min"
burst = 2
"#,
            audit = audit.display(),
            upstream = up.url(),
            secret = secret_file.display(),
            entra_port = entra.addr.port(),
            ca = pki.ca_file.display(),
        );
        if extra_route {
            t += "\n[[routes]]\nname = \"extra\"\npath_prefix = \"/extra/\"\nupstream = \"apim\"\n\
                  allow = { pipelines = [\"*\"] }\n";
        }
        t
    };
    let gw = FileGateway::start_raw(dir, "airgate.toml", &text("1h", false), None).await;
    let url = gw.url("/sales/x");

    // Ready: both key sets fetched, the upstream token fetched.
    eventually(Duration::from_secs(15), "gateway ready", || async {
        gw.running.gateway.snapshot().not_ready().is_empty()
    })
    .await;
    assert_eq!(status(&url, "sales_daily").await, StatusCode::OK);
    assert_eq!(status(&url, "sales_daily").await, StatusCode::OK);
    assert_eq!(status(&url, "sales_daily").await, StatusCode::TOO_MANY_REQUESTS, "burst of 2 used up");
    assert_eq!(status(&url, "sales_other").await, StatusCode::OK);
    let bearer_before = up.last().headers["authorization"].clone();
    let (keep0, change0, tokens0) =
        (keep_fetches.load(Ordering::SeqCst), change_fetches.load(Ordering::SeqCst), entra.log.fetches());
    assert!(keep0 >= 1 && change0 >= 1 && tokens0 >= 1, "{keep0} {change0} {tokens0}");

    // Reload: a new route, and the issuer `other` changes how its keys are fetched.
    write_atomic(&gw.path, &text("2h", true));
    gw.running.reload().unwrap();
    assert_eq!(gw.counter(RELOAD_OK), 1.0);

    eventually(Duration::from_secs(10), "the changed issuer refetches its keys", || async {
        change_fetches.load(Ordering::SeqCst) > change0
    })
    .await;
    assert_eq!(status(&gw.url("/extra/x"), "sales_daily").await, StatusCode::OK, "the reload applied");
    assert_eq!(status(&url, "sales_daily").await, StatusCode::TOO_MANY_REQUESTS, "limiter state kept");
    assert_eq!(status(&url, "sales_other").await, StatusCode::OK, "its second token of the burst");
    assert_eq!(status(&url, "sales_other").await, StatusCode::TOO_MANY_REQUESTS, "and no more");
    assert_eq!(up.last().headers["authorization"], bearer_before, "the same upstream token");
    // Give any (wrong) background refetch a moment to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(keep_fetches.load(Ordering::SeqCst), keep0, "the unchanged issuer's keys were not refetched");
    assert_eq!(entra.log.fetches(), tokens0, "the unchanged upstream's token was not refetched");
    assert!(gw.running.gateway.snapshot().not_ready().is_empty());

    // A second reload changes the upstream's timeout but not its credential: the token is kept,
    // and the very next request is served with it (no 503 while a new token would be fetched).
    let retimed = text("2h", true).replace("[[upstreams]]\n", "[[upstreams]]\ntimeout = \"29s\"\n");
    write_atomic(&gw.path, &retimed);
    gw.running.reload().unwrap();
    assert_eq!(gw.counter(RELOAD_OK), 2.0);
    assert_eq!(status(&gw.url("/extra/x"), "sales_daily").await, StatusCode::OK, "served right after the reload");
    assert_eq!(up.last().headers["authorization"], bearer_before, "with the same upstream token");
    assert_eq!(entra.log.fetches(), tokens0, "the unchanged credential's token was not refetched");
}

// ---------------------------------------------------------------------------------------------
// 6. TLS certificate rotation
// ---------------------------------------------------------------------------------------------

/// The leaf certificate (DER) the server presents to a new connection.
async fn served_leaf(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).ok_or("no peer certificate")?;
    Ok(leaf.as_ref().to_vec())
}

fn leaf_der(pki: &support::Pki) -> Vec<u8> {
    rustls_pemfile::certs(&mut pki.cert_pem.as_bytes()).next().unwrap().unwrap().as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections() {
    let up = support::upstream().await;
    let (old, new) = (support::pki(), support::pki());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &old.cert_pem).unwrap();
    std::fs::write(&key, &old.key_pem).unwrap();
    let tls_line = format!("[server]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n", cert.display(), key.display());
    let text = support::base_config(dir.path()).replacen("[server]\n", &tls_line, 1) + &routes(&up.url());
    let gw = FileGateway::start_raw(dir, "airgate.toml", &text, None).await;
    let addr = gw.running.proxy_addr;

    // A client trusting both CAs, so it connects before and after and can tell which it got.
    let mut roots = rustls::RootCertStore::empty();
    for pki in [&old, &new] {
        for c in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    assert_eq!(served_leaf(addr, cfg.clone()).await.unwrap(), leaf_der(&old));

    // cert-manager style: both files replaced in place.
    write_atomic(&gw.dir.path().join("tls.key"), &new.key_pem);
    write_atomic(&gw.dir.path().join("tls.crt"), &new.cert_pem);
    let rotated = Instant::now();
    let want = leaf_der(&new);
    eventually(Duration::from_secs(15), "new connections get the new certificate", || async {
        served_leaf(addr, cfg.clone()).await.is_ok_and(|der| der == want)
    })
    .await;
    // The files are polled every 5 s; allow for a loaded machine but not for "never".
    assert!(rotated.elapsed() < Duration::from_secs(12), "rotation took {:?}", rotated.elapsed());
    assert_eq!(served_leaf(addr, cfg).await.unwrap(), want, "and it stays");
}

// ---------------------------------------------------------------------------------------------
// 7. A changed listener address is reported and does not block the rest
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_listener_address_is_reported_and_the_rest_reloads() {
    let up = support::upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airgate.toml");
    std::fs::write(&path, binary_config(dir.path(), &routes(&up.url()))).unwrap();
    let bin = Binary::spawn(&path);

    let moved = binary_config(dir.path(), &routes_with_new(&up.url())).replacen(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:18080\"",
        1,
    );
    write_atomic(&path, &moved);
    bin.hup();
    eventually(Duration::from_secs(10), "the reload succeeds", || async { bin.counter(RELOAD_OK).await >= 1.0 }).await;
    let reported = bin.logged("listener addresses changed");
    assert!(!reported.is_empty(), "no report of the listener change: {:?}", bin.stderr.lock().unwrap());
    assert!(reported[0].contains("restart"), "{}", reported[0]);
    // Still on the old address, with the new route and policy.
    new_route_and_policy_apply(&bin.url("/new/x")).await;
    assert_eq!(bin.counter(RELOAD_ERR).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_issuer_refetches_its_keys_without_refusing_tokens_meanwhile() {
    let up = support::upstream().await;
    let Jwks { addr, fetches, .. } = jwks_server(support::test_jwks()).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let text = |refresh: &str| jwks_issuer_config(addr, &audit, &up.url(), refresh);
    let gw = FileGateway::start_raw(dir, "airgate.toml", &text("1h"), None).await;
    eventually(Duration::from_secs(15), "keys fetched", || async {
        gw.running.gateway.snapshot().not_ready().is_empty()
    })
    .await;
    let url = gw.url("/sales/x");
    assert_eq!(status(&url, "sales_daily").await, StatusCode::OK);
    let before = fetches.load(Ordering::SeqCst);

    // The issuer's key configuration changes: its key set is built afresh and fetched (on demand
    // by the first token, or by its refresh task); tokens keep passing across the swap.
    write_atomic(&gw.path, &text("2h"));
    gw.running.reload().unwrap();
    assert_eq!(status(&url, "sales_daily").await, StatusCode::OK, "served right after the reload");
    assert!(gw.running.gateway.snapshot().not_ready().is_empty(), "ready after the first token");
    eventually(Duration::from_secs(10), "the changed issuer refetches", || async {
        fetches.load(Ordering::SeqCst) > before
    })
    .await;
    assert_eq!(status(&url, "sales_daily").await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_right_after_startup_reloads_and_does_not_kill_the_process() {
    let up = support::upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airgate.toml");
    std::fs::write(&path, binary_config(dir.path(), &routes(&up.url()))).unwrap();
    // SIGHUP the moment the listeners are announced (a deploy tool reacting to the log): it must
    // reload, not end the process with the signal's default action. A few times, as it is a race.
    for _ in 0..5 {
        let mut bin = Binary::spawn_with(&path, true);
        eventually(Duration::from_secs(10), "the early SIGHUP reloads", || async {
            bin.counter(RELOAD_OK).await >= 1.0
        })
        .await;
        assert!(bin.child.try_wait().unwrap().is_none(), "SIGHUP killed airgate");
        assert_eq!(status(&bin.url("/sales/x"), "sales_daily").await, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_issuer_keeps_its_keys_when_the_jwks_endpoint_is_down_at_reload() {
    let up = support::upstream().await;
    let jwks = jwks_server(support::test_jwks()).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let text = |refresh: &str| jwks_issuer_config(jwks.addr, &audit, &up.url(), refresh);
    let gw = FileGateway::start_raw(dir, "airgate.toml", &text("1h"), None).await;
    eventually(Duration::from_secs(15), "keys fetched", || async {
        gw.running.gateway.snapshot().not_ready().is_empty()
    })
    .await;
    let url = gw.url("/sales/x");
    assert_eq!(status(&url, "sales_daily").await, StatusCode::OK);

    // The endpoint goes down, then the issuer's refresh settings change: the new key store starts
    // from the old set, so tokens keep passing and the issuer stays ready.
    jwks.down.store(true, Ordering::SeqCst);
    write_atomic(&gw.path, &text("2h"));
    gw.running.reload().unwrap();
    assert_eq!(status(&url, "sales_daily").await, StatusCode::OK, "the old key set still verifies");
    assert!(gw.running.gateway.snapshot().not_ready().is_empty(), "{:?}", gw.running.gateway.snapshot().not_ready());
}
