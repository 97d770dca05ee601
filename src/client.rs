//! Outbound HTTP clients: a pooled keep-alive hyper-util client over rustls (system roots plus an
//! optional extra CA file), HTTP/1.1 and HTTP/2. Used for upstreams, JWKS and the identity
//! endpoints, so the whole process has one TLS stack and no OpenSSL.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use std::{path::Path, sync::Arc, time::Duration};

/// The connector every outbound client uses.
pub type Connector = HttpsConnector<HttpConnector>;

/// A pooled client for small, fully buffered control-plane requests (JWKS, tokens).
pub type FetchClient = Client<Connector, Full<Bytes>>;

/// Settings for building a connector.
#[derive(Debug, Clone)]
pub struct ClientSettings<'a> {
    /// Extra PEM trust anchors besides the system roots.
    pub ca_file: Option<&'a Path>,
    /// TCP connect deadline.
    pub connect_timeout: Duration,
    /// Offer HTTP/2 via ALPN on TLS.
    pub enable_http2: bool,
}

impl Default for ClientSettings<'_> {
    fn default() -> Self {
        ClientSettings { ca_file: None, connect_timeout: Duration::from_secs(3), enable_http2: true }
    }
}

/// Trust anchors: the system's roots plus every certificate in `ca_file`.
pub fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system roots are not fatal: an explicit ca_file may be all this deployment needs.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        add_pem_file(&mut roots, path)?;
    }
    Ok(roots)
}

/// Adds every certificate of a PEM file; a file without one is an error.
fn add_pem_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    let mut found = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("bad PEM in {}: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
        found += 1;
    }
    if found == 0 {
        return Err(format!("no certificate in CA file {}", path.display()));
    }
    Ok(())
}

/// Builds the HTTPS-capable connector (plain `http://` also works).
pub fn connector(settings: &ClientSettings<'_>) -> Result<Connector, String> {
    connector_with_roots(root_store(settings.ca_file)?, settings)
}

fn connector_with_roots(roots: rustls::RootCertStore, settings: &ClientSettings<'_>) -> Result<Connector, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = tcp_connector(settings.connect_timeout);
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    Ok(if settings.enable_http2 {
        builder.enable_http1().enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    })
}

/// The TCP settings of every outbound connection: no Nagle delay, the connect deadline, TCP
/// keep-alive probes after 30 s idle. Plain `http://` only until `enforce_http(false)`.
pub fn tcp_connector(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(30)));
    http
}

/// A client for control-plane fetches.
pub fn fetch_client(settings: &ClientSettings<'_>) -> Result<FetchClient, String> {
    Ok(pooled(connector(settings)?))
}

fn pooled(connector: Connector) -> FetchClient {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// A control-plane client that trusts only the certificates in `ca_file` (a private cluster CA),
/// not the system roots.
pub fn fetch_client_trusting(ca_file: &Path, connect_timeout: Duration) -> Result<FetchClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    add_pem_file(&mut roots, ca_file)?;
    let settings = ClientSettings { ca_file: None, connect_timeout, enable_http2: true };
    Ok(pooled(connector_with_roots(roots, &settings)?))
}

/// A fully read response.
#[derive(Debug)]
pub struct Fetched {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Whole body.
    pub body: Bytes,
}

/// Why a fetch failed. Messages carry no request content (which may hold secrets).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Nothing came back within the deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connection or protocol failure.
    #[error("transport error: {0}")]
    Transport(String),
    /// The body was larger than allowed.
    #[error("response body over {0} bytes")]
    TooLarge(usize),
}

/// Sends `req` and reads the whole response (at most `max_body` bytes) within `timeout`.
pub async fn fetch(
    client: &FetchClient,
    req: Request<Full<Bytes>>,
    timeout: Duration,
    max_body: usize,
) -> Result<Fetched, FetchError> {
    let work = async {
        let resp = client.request(req).await.map_err(|e| FetchError::Transport(error_chain(&e)))?;
        let (parts, body) = resp.into_parts();
        let limited = http_body_util::Limited::new(body, max_body);
        let body = limited
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    FetchError::TooLarge(max_body)
                } else {
                    FetchError::Transport(e.to_string())
                }
            })?
            .to_bytes();
        Ok(Fetched { status: parts.status, headers: parts.headers, body })
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| FetchError::Timeout(timeout))?
}

/// Renders an error with its sources, for logs (`connect: connection refused`).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
