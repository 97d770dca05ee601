//! Test harness: a loopback upstream that records what it receives, an in-process gateway
//! started on port 0, and small HTTP clients. Shared by the end-to-end test binaries.
#![allow(dead_code)]

use airgate::{app, config};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::net::TcpListener;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Request trailers, when any arrived.
    pub trailers: Option<HeaderMap>,
    /// When the upstream had read the request.
    pub at: std::time::SystemTime,
}

/// A loopback upstream. Behaviour by path: `/slow/<ms>`, `/status/<code>`, `/close`
/// (drops the connection), `/bytes/<n>` (n response bytes); anything else answers 200 `ok`.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("the upstream saw no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn upstream_answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, mut body) = req.into_parts();
    if parts.uri.path().ends_with("/discard") {
        // Stream the body away without keeping it: memory stays flat whatever the size.
        let mut n: u64 = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map(|f| f.into_data()) {
                n += data.map_or(0, |d| d.len() as u64);
            } else {
                break;
            }
        }
        return Ok(Response::new(Full::new(Bytes::from(n.to_string()))));
    }
    let (body, trailers) = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            (collected.to_bytes(), trailers)
        }
        Err(_) => (Bytes::new(), None),
    };
    let path = parts.uri.path().to_owned();
    seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: body.clone(),
        trailers,
        at: std::time::SystemTime::now(),
    });
    let mut status = StatusCode::OK;
    let mut out = Bytes::from_static(b"ok");
    if let Some(ms) = path.strip_prefix("/slow/").and_then(|s| s.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    } else if let Some(code) = path.strip_prefix("/status/").and_then(|s| s.parse().ok()) {
        status = StatusCode::from_u16(code).unwrap();
    } else if path == "/close" {
        return Err(std::io::Error::other("closing on purpose"));
    } else if let Some(n) = path.strip_prefix("/bytes/").and_then(|s| s.parse::<usize>().ok()) {
        out = Bytes::from(vec![b'x'; n]);
    } else if path.ends_with("/echo-body") {
        out = body;
    }
    let mut resp = Response::new(Full::new(out));
    *resp.status_mut() = status;
    resp.headers_mut().insert("x-upstream", "1".parse().unwrap());
    resp.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
    resp.headers_mut().insert("connection", "x-upstream-hop".parse().unwrap());
    resp.headers_mut().insert("x-upstream-hop", "1".parse().unwrap());
    Ok(resp)
}

/// Starts a plain-TCP upstream speaking HTTP/1.1 and h2c (prior knowledge).
pub async fn upstream() -> Upstream {
    upstream_with(None).await
}

/// Starts an upstream; with `tls`, it speaks TLS with ALPN h2/http1.1.
pub async fn upstream_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = Upstream { addr, seen: seen.clone() };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| upstream_answer(req, seen.clone()));
                let builder = auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(acc) => {
                        if let Ok(s) = acc.accept(stream).await {
                            let _ = builder.serve_connection(TokioIo::new(s), service).await;
                        }
                    }
                }
            });
        }
    });
    up
}

/// A gateway running in this process.
pub struct Gateway {
    pub running: app::Running,
    pub dir: tempfile::TempDir,
    pub audit: PathBuf,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.proxy_addr)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.admin_addr)
    }

    /// Audit lines written so far (waits briefly for the writer).
    pub async fn audit_lines(&self, at_least: usize) -> Vec<serde_json::Value> {
        for _ in 0..100 {
            let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            if lines.len() >= at_least {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("fewer than {at_least} audit lines in {}", self.audit.display());
    }
}

/// The test issuer: an Ed25519 key generated once per test process.
struct TestIssuer {
    _dir: tempfile::TempDir,
    section: String,
    issuer: config::issuer::Issuer,
}

fn test_issuer() -> &'static TestIssuer {
    static ISSUER: std::sync::OnceLock<TestIssuer> = std::sync::OnceLock::new();
    ISSUER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("signing.pem");
        let pem = airgate::identity::mint::generate_dev_signing_key().unwrap();
        std::fs::write(&key, pem.expose()).unwrap();
        let section = format!(
            "[[issuers]]\nname = \"test\"\nissuer = \"https://airflow.test.invalid\"\naudiences = [\"urn:airgate\"]\nrequired_scope = \"egress\"\nsigning_key = \"file:{}\"\n",
            key.display()
        );
        let issuer = config::parse(&section).unwrap().issuers.remove(0);
        TestIssuer { _dir: dir, section, issuer }
    })
}

/// The configuration header every test gateway shares: port-0 listeners, audit to a file, and
/// the test issuer.
pub fn base_config(dir: &std::path::Path) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[audit]\nsink = \"file\"\npath = \"{}\"\n{}",
        dir.join("audit.jsonl").display(),
        test_issuer().section
    )
}

/// The public JWKS of the test issuer (what a JWKS endpoint of the token minter serves).
pub fn test_jwks() -> String {
    airgate::identity::mint::public_jwks(&test_issuer().issuer).unwrap()
}

/// Starts a gateway with `body` appended to the base configuration. `{dir}` in `body` is the
/// test's temporary directory.
pub async fn gateway(body: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{}{}", base_config(dir.path()), body.replace("{dir}", &dir.path().display().to_string()));
    let config = match config::parse(&text) {
        Ok(c) => c,
        Err(p) => panic!("test config invalid:\n{p}\n{text}"),
    };
    let running = app::start(config, app::Options { watch_config: None }).await.unwrap();
    Gateway { audit: dir.path().join("audit.jsonl"), running, dir }
}

/// A caller token for `dag` from the test issuer.
pub fn token(dag: &str) -> String {
    token_with(dag, |_| {})
}

/// A caller token for `dag`, with the request adjusted by `f` first.
pub fn token_with(dag: &str, f: impl FnOnce(&mut airgate::identity::mint::MintRequest)) -> String {
    let mut req = airgate::identity::mint::MintRequest {
        dag: dag.into(),
        task: "task_a".into(),
        run: Some("scheduled__2026-11-30T00:00:00+00:00".into()),
        try_number: Some(1),
        map_index: None,
        team: None,
        ttl: Duration::from_secs(300),
        audience: None,
        extra_scope: None,
    };
    f(&mut req);
    airgate::identity::mint::mint(&test_issuer().issuer, &req).unwrap()
}

/// The test issuer's private key, for tokens `mint` cannot make (expired, wrong scope, roles).
pub fn test_signing_key() -> airgate::identity::mint::SigningKey {
    let config::issuer::KeySource::SigningKey(r) = &test_issuer().issuer.keys else {
        panic!("the test issuer has a signing key")
    };
    airgate::identity::mint::SigningKey::from_pem(r.load().unwrap().expose()).unwrap()
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The claims a `token(dag)` carries (fresh `iat`/`exp`), for a test to alter before [`sign_test`].
pub fn test_claims(dag: &str) -> serde_json::Map<String, serde_json::Value> {
    let now = unix_now();
    serde_json::json!({
        "iss": "https://airflow.test.invalid", "aud": "urn:airgate", "sub": format!("airflow/{dag}/task_a"),
        "scope": "egress", "dag_id": dag, "task_id": "task_a",
        "run_id": "scheduled__2026-11-30T00:00:00+00:00", "try_number": 1,
        "jti": format!("{:016x}", fastrand::u64(..)), "iat": now, "nbf": now, "exp": now + 300,
    })
    .as_object()
    .unwrap()
    .clone()
}

/// Signs `claims` with the test issuer's key (EdDSA, its `kid`).
pub fn sign_test(claims: &serde_json::Map<String, serde_json::Value>) -> String {
    let key = test_signing_key();
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()});
    key.sign(header.as_object().unwrap(), claims).unwrap()
}

/// The value of the first sample of metric `name` whose labels include every `labels` pair.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (set, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| set.split(',').any(|p| p == format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

impl Gateway {
    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let req = Request::get(self.admin("/metrics")).body(Full::default()).unwrap();
        send(&client(), req).await.text()
    }

    /// `/readyz`: status and JSON body.
    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        let req = Request::get(self.admin("/readyz")).body(Full::default()).unwrap();
        let got = send(&client(), req).await;
        (got.status.as_u16(), got.json())
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `within`; panics with `what`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A prior-knowledge HTTP/2 client.
pub fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// A whole response.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a problem+json answer with `status` and returns it.
    pub fn problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(self.headers["content-type"], "application/problem+json");
        let p = self.json();
        assert_eq!(p["status"], status);
        for key in ["type", "title", "detail", "request_id"] {
            assert!(p[key].is_string(), "problem lacks {key}: {p}");
        }
        assert_eq!(p["request_id"], self.headers["x-request-id"].to_str().unwrap());
        p
    }
}

/// Sends a request with `client`.
pub async fn send(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Got {
    let resp = client.request(req).await.expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got { status: parts.status, headers: parts.headers, body }
}

/// Builds a request with a bearer token for `dag`.
pub fn authed(method: Method, url: &str, dag: &str, body: &'static str) -> http::request::Builder {
    let _ = body;
    Request::builder().method(method).uri(url).header("authorization", format!("Bearer {}", token(dag)))
}

/// GET with a token for `dag`.
pub async fn get(url: &str, dag: &str) -> Got {
    send(&client(), authed(Method::GET, url, dag, "").body(Full::default()).unwrap()).await
}

/// Sends raw bytes on a fresh TCP connection and returns everything read until close or `wait`.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A CA and a leaf certificate for `127.0.0.1`/`localhost`, as PEM strings.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: with rcgen's default name on both, OpenSSL (Python's ssl) takes the leaf
    // for a self-signed certificate; rustls does not look at names.
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "airgate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    Pki { ca_pem: ca.pem(), cert_pem: leaf.pem(), key_pem: leaf_key.serialize_pem() }
}

/// A rustls server acceptor for the PKI's leaf.
pub fn tls_acceptor(pki: &Pki) -> tokio_rustls::TlsAcceptor {
    let certs = rustls_pemfile::certs(&mut pki.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls_pemfile::private_key(&mut pki.key_pem.as_bytes()).unwrap().unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// A rustls client config trusting only the PKI's CA, offering `alpn`.
pub fn tls_client_config(pki: &Pki, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg
}

/// The process's resident set size in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A child `airgate run` with its stderr collected line by line. Killed when dropped.
pub struct Binary {
    pub child: std::process::Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    pub fn spawn(config: &std::path::Path) -> Binary {
        Self::spawn_with(config, false)
    }

    /// With `hup_on_listen`, SIGHUP is sent the moment the admin listener is announced.
    pub fn spawn_with(config: &std::path::Path, hup_on_listen: bool) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_airgate"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        let pid = child.id().to_string();
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if hup_on_listen && line.contains("admin listening") {
                    let _ = Command::new("kill").args(["-HUP", &pid]).status();
                }
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut proxy, mut admin) = (None, None);
        while proxy.is_none() || admin.is_none() {
            assert!(Instant::now() < deadline, "airgate did not report its listeners: {:?}", stderr.lock().unwrap());
            if let Some(status) = child.try_wait().unwrap() {
                panic!("airgate exited early ({status}): {:?}", stderr.lock().unwrap());
            }
            for line in stderr.lock().unwrap().iter() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                let addr = || v["listen"].as_str().and_then(|a| a.parse().ok());
                match v["message"].as_str() {
                    Some("proxy listening") => proxy = addr(),
                    Some(m) if m.starts_with("admin listening") => admin = addr(),
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Binary { child, proxy: proxy.unwrap(), admin: admin.unwrap(), stderr }
    }

    pub fn hup(&self) {
        self.signal("-HUP");
    }

    /// Sends a signal (`-TERM`, `-HUP`, …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig} failed");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// Lines of stderr containing `needle`.
    pub fn logged(&self, needle: &str) -> Vec<String> {
        self.stderr.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    pub async fn counter(&self, line_start: &str) -> f64 {
        let req = Request::get(format!("http://{}/metrics", self.admin)).body(Full::<Bytes>::default()).unwrap();
        counter_in(&send(&client(), req).await.text(), line_start)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the first sample line starting with `line_start` (0 when absent).
pub fn counter_in(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A child `airgate demo --port 0` with its stdout lines on a channel (drained until it exits).
pub struct Demo {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Demo {
    pub fn spawn() -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_airgate"))
            .args(["--log-format", "json", "demo", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        // Reads the banner, then keeps draining (audit records follow on stdout).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Demo { child, lines }
    }

    /// The printed `curl` commands, once the banner is complete (30 s at most).
    pub fn curls(&self) -> Vec<String> {
        let mut curls = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).expect("the demo did not print its commands in time");
            if line.starts_with("curl") {
                curls.push(line);
            } else if line.starts_with("# audit records follow") {
                return curls;
            }
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Limiter permits issued the way the stack issues them: `policy::authorize` on a route that
/// allows every pipeline (a [`Permit`](airgate::policy::Permit) cannot be made any other way).
pub struct Permits {
    allow: config::allow::Allow,
    metrics: Arc<airgate::metrics::Metrics>,
}

impl Permits {
    pub fn new() -> Permits {
        let mut p = config::Problems::default();
        let raw = config::raw::RawAllow { pipelines: vec!["*".into()], ..Default::default() };
        let allow = config::allow::Allow::compile(raw, "allow", &[], &mut p).unwrap();
        Permits { allow, metrics: airgate::metrics::Metrics::new(10) }
    }

    pub fn permit(&self, identity: airgate::identity::Identity) -> airgate::policy::Permit {
        airgate::policy::authorize("r", &self.allow, false, Arc::new(identity), &self.metrics).unwrap()
    }
}

/// A limiter permit for `identity` (see [`Permits`]).
pub fn permit(identity: airgate::identity::Identity) -> airgate::policy::Permit {
    static PERMITS: std::sync::OnceLock<Permits> = std::sync::OnceLock::new();
    PERMITS.get_or_init(Permits::new).permit(identity)
}
