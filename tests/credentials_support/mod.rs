//! Loopback fakes of the identity endpoints airgate's credentials talk to, speaking the real
//! protocols: the managed-identity endpoint (IMDS and App Service: `GET ?api-version=2019-08-01
//! &resource=…`, JSON with `expires_on` as a string of seconds) and the Entra ID v2 token
//! endpoint (`POST /{tenant}/oauth2/v2.0/token`, form body) over TLS with a CA made here.
//! Every issued token is logged with its expiry so tests can prove none is used expired.
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::net::TcpListener;

/// What the fake speaks and which credentials it accepts.
#[derive(Debug, Clone)]
pub enum Protocol {
    /// IMDS (`/metadata/identity/oauth2/token`, `Metadata: true`) or App Service (any path,
    /// `X-IDENTITY-HEADER` must equal `identity_header`).
    ManagedIdentity { identity_header: Option<String> },
    /// Entra ID v2 client credentials with either a client secret or a client assertion.
    Entra { tenant: String, client_id: String, secret: Option<String>, assertion: Option<String> },
}

/// One token the fake issued.
#[derive(Debug, Clone)]
pub struct Issue {
    pub token: String,
    pub expires: SystemTime,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub form: HashMap<String, String>,
}

/// Shared state of a fake.
#[derive(Debug)]
pub struct Log {
    pub issued: Mutex<Vec<Issue>>,
    pub seen: Mutex<Vec<Seen>>,
    /// While set, every request gets 503.
    pub down: AtomicBool,
    /// Lifetime of issued tokens, seconds.
    pub lifetime: AtomicU64,
    /// Extra delay before answering, milliseconds.
    pub delay_ms: AtomicU64,
}

impl Log {
    pub fn fetches(&self) -> usize {
        self.issued.lock().unwrap().len()
    }

    pub fn expiry_of(&self, token: &str) -> Option<SystemTime> {
        self.issued.lock().unwrap().iter().find(|i| i.token == token).map(|i| i.expires)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// A running fake; stops when dropped.
pub struct Fake {
    pub addr: SocketAddr,
    pub log: Arc<Log>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    /// Starts a fake on 127.0.0.1, plain HTTP or TLS.
    pub async fn start(protocol: Protocol, tls: Option<Arc<rustls::ServerConfig>>, lifetime: u64) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Log {
            issued: Mutex::default(),
            seen: Mutex::default(),
            down: AtomicBool::new(false),
            lifetime: AtomicU64::new(lifetime),
            delay_ms: AtomicU64::new(0),
        });
        let state = (Arc::new(protocol), log.clone());
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let state = state.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.0.clone(), state.1.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Fake { addr, log, task }
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

async fn handle(
    protocol: Arc<Protocol>,
    log: Arc<Log>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let seen =
        Seen { method: parts.method.clone(), path: parts.uri.path().to_owned(), query, headers: parts.headers, form };
    log.seen.lock().unwrap().push(seen.clone());
    let delay = log.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if log.down.load(Ordering::SeqCst) {
        return Ok(json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "temporarily_unavailable", "error_description": "fake outage", "error_codes": [50196]}),
        ));
    }
    let lifetime = log.lifetime.load(Ordering::SeqCst);
    let n = log.issued.lock().unwrap().len() + 1;
    let token = format!("gateway-token-{n}-{:08x}", fastrand::u32(..));
    let now = SystemTime::now();
    match &*protocol {
        Protocol::ManagedIdentity { identity_header } => {
            let ok_api = seen.method == http::Method::GET
                && seen.query.get("api-version").map(String::as_str) == Some("2019-08-01");
            let Some(resource) = seen.query.get("resource").cloned().filter(|_| ok_api) else {
                return Ok(json(StatusCode::BAD_REQUEST, serde_json::json!({"error": "invalid_request"})));
            };
            let authorized = match identity_header {
                Some(secret) => seen.headers.get("x-identity-header").is_some_and(|v| v == secret.as_str()),
                None => {
                    seen.path == "/metadata/identity/oauth2/token"
                        && seen.headers.get("metadata").is_some_and(|v| v == "true")
                }
            };
            if !authorized {
                return Ok(json(StatusCode::UNAUTHORIZED, serde_json::json!({"error": "unauthorized"})));
            }
            // Whole seconds, as the real endpoints answer: the token lives at most `lifetime`.
            let expires = UNIX_EPOCH + Duration::from_secs(unix(now) + lifetime);
            log.issued.lock().unwrap().push(Issue { token: token.clone(), expires });
            Ok(json(
                StatusCode::OK,
                serde_json::json!({
                    "access_token": token,
                    "expires_on": unix(expires).to_string(),
                    "expires_in": lifetime.to_string(),
                    "resource": resource,
                    "token_type": "Bearer",
                }),
            ))
        }
        Protocol::Entra { tenant, client_id, secret, assertion } => {
            let path_ok = seen.method == http::Method::POST && seen.path == format!("/{tenant}/oauth2/v2.0/token");
            let form = &seen.form;
            let field = |k: &str| form.get(k).map(String::as_str);
            let authenticated = path_ok
                && field("grant_type") == Some("client_credentials")
                && field("client_id") == Some(client_id.as_str())
                && field("scope").is_some()
                && (secret.as_deref().is_some_and(|s| field("client_secret") == Some(s))
                    || assertion.as_deref().is_some_and(|a| {
                        field("client_assertion") == Some(a)
                            && field("client_assertion_type")
                                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                    }));
            if !authenticated {
                return Ok(json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({
                        "error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client secret provided.",
                        "error_codes": [7000215],
                    }),
                ));
            }
            // The SDK computes the expiry from expires_in on arrival, so it is a little later
            // than ours; the recorded expiry is the strict one.
            log.issued
                .lock()
                .unwrap()
                .push(Issue { token: token.clone(), expires: now + Duration::from_secs(lifetime) });
            Ok(json(
                StatusCode::OK,
                serde_json::json!({
                    "token_type": "Bearer",
                    "expires_in": lifetime,
                    "ext_expires_in": lifetime,
                    "access_token": token,
                }),
            ))
        }
    }
}

/// A CA made for this test run, and a server certificate for `localhost` / 127.0.0.1.
pub struct TestPki {
    pub ca_file: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
    _dir: tempfile::TempDir,
}

pub fn pki() -> TestPki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "airgate test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    TestPki { ca_file, server: Arc::new(server), _dir: dir }
}

/// Everything every tracing event writes, process-wide (all levels, all crates), so tests can
/// show that no secret reaches a log.
pub fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `airgate_upstream_token_expiry_seconds{upstream="apim"}` once it is set (bounded wait): what
/// is left of the token the source holds.
pub async fn expiry_gauge(metrics: &airgate::metrics::Metrics) -> f64 {
    let gauge = metrics.token_expiry.with_label_values(&["apim"]);
    for _ in 0..100 {
        if gauge.get() > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gauge.get()
}
