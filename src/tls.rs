//! TLS termination with rustls: ALPN `h2`/`http/1.1`, certificate and key from PEM files, and
//! the files re-read when they change (cert-manager / Key Vault rotation) — new connections get
//! the new certificate, existing ones keep theirs.

use crate::config::TlsFiles;
use arc_swap::ArcSwap;
use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use std::{
    sync::{Arc, Weak},
    time::{Duration, SystemTime},
};
use tokio_rustls::TlsAcceptor;

/// Serves the current certificate; swapped atomically on rotation.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
    stamp: std::sync::Mutex<Option<(SystemTime, SystemTime)>>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn load(files: &TlsFiles) -> Result<CertifiedKey, String> {
    let certs_pem = std::fs::read(&files.cert).map_err(|e| format!("TLS cert {}: {e}", files.cert.display()))?;
    let certs = rustls_pemfile::certs(&mut certs_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS cert {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("TLS cert {}: no certificate found", files.cert.display()));
    }
    let key_pem = std::fs::read(&files.key).map_err(|e| format!("TLS key {}: {e}", files.key.display()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("TLS key {}: {e}", files.key.display()))?
        .ok_or_else(|| format!("TLS key {}: no private key found", files.key.display()))?;
    CertifiedKey::from_der(certs, key, &rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|e| format!("TLS key {} does not fit cert {}: {e}", files.key.display(), files.cert.display()))
}

fn stamps(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&files.cert)?, m(&files.key)?))
}

impl CertStore {
    /// Loads the files once; fails when they are missing or do not match.
    pub fn new(files: &TlsFiles) -> Result<Arc<Self>, String> {
        let key = load(files)?;
        Ok(Arc::new(CertStore {
            files: files.clone(),
            current: ArcSwap::from_pointee(key),
            stamp: std::sync::Mutex::new(stamps(files)),
        }))
    }

    /// Re-reads the files when their modification time changed. Returns true on a swap.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.files);
        let Ok(mut last) = self.stamp.lock() else { return false };
        if now.is_none() || now == *last {
            return false;
        }
        match load(&self.files) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                *last = now;
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            // A half-written pair (cert updated, key not yet) is retried on the next tick.
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate change not applied yet");
                false
            }
        }
    }

    /// Polls the files every `every` until the store is dropped.
    pub fn spawn_watch(self: &Arc<Self>, every: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.reload_if_changed();
            }
        });
    }
}

/// A TLS acceptor offering HTTP/2 and HTTP/1.1 over ALPN.
pub fn acceptor(store: Arc<CertStore>) -> Result<TlsAcceptor, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
