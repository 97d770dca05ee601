//! TLS termination with rustls: ALPN `h2`/`http/1.1`, certificate and key from PEM files, and
//! the files re-read when they change (cert-manager / Key Vault rotation) — new connections get
//! the new certificate, existing ones keep theirs.

use crate::{
    config::TlsFiles,
    watch::{FileWatch, Fingerprint},
};
use arc_swap::ArcSwap;
use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use std::{
    path::Path,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};
use tokio_rustls::TlsAcceptor;

/// Serves the current certificate; swapped atomically on rotation.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
    /// The content of (cert, key) loaded at start, where the watches begin.
    loaded: (Fingerprint, Fingerprint),
    // The watches of both files; they stop with the store.
    watches: Mutex<Vec<FileWatch>>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("TLS {what} {}: {e}", path.display()))
}

fn load(files: &TlsFiles, certs_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let certs = rustls_pemfile::certs(&mut &*certs_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS cert {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("TLS cert {}: no certificate found", files.cert.display()));
    }
    let key = rustls_pemfile::private_key(&mut &*key_pem)
        .map_err(|e| format!("TLS key {}: {e}", files.key.display()))?
        .ok_or_else(|| format!("TLS key {}: no private key found", files.key.display()))?;
    CertifiedKey::from_der(certs, key, &rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|e| format!("TLS key {} does not fit cert {}: {e}", files.key.display(), files.cert.display()))
}

impl CertStore {
    /// Loads the files once; fails when they are missing or do not match.
    pub fn new(files: &TlsFiles) -> Result<Arc<Self>, String> {
        let (cert, key) = (read(&files.cert, "cert")?, read(&files.key, "key")?);
        let certified = load(files, &cert, &key)?;
        Ok(Arc::new(CertStore {
            files: files.clone(),
            current: ArcSwap::from_pointee(certified),
            loaded: (Fingerprint::of(&cert), Fingerprint::of(&key)),
            watches: Mutex::new(Vec::new()),
        }))
    }

    /// Re-reads both files (one of them changed). Returns true on a swap.
    fn reload(&self) -> bool {
        let pair = read(&self.files.cert, "cert")
            .and_then(|cert| Ok((cert, read(&self.files.key, "key")?)))
            .and_then(|(cert, key)| load(&self.files, &cert, &key));
        match pair {
            // Both files changed within one period: the second watch finds the pair in use.
            Ok(key) if key.cert == self.current.load().cert => false,
            Ok(key) => {
                self.current.store(Arc::new(key));
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            // A half-written pair (cert updated, key not yet) is retried on the next change.
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate change not applied yet");
                false
            }
        }
    }

    /// Watches both files every `every` (by content, following symlink swaps) until the store
    /// is dropped.
    pub fn spawn_watch(self: &Arc<Self>, every: Duration) {
        let watch = |path: &Path, loaded: Fingerprint| {
            let weak: Weak<Self> = Arc::downgrade(self);
            FileWatch::start(path, every, Some(loaded), move |update| {
                if let (Ok(_), Some(store)) = (update, weak.upgrade()) {
                    store.reload();
                }
            })
        };
        let both = [watch(&self.files.cert, self.loaded.0), watch(&self.files.key, self.loaded.1)];
        self.watches.lock().unwrap_or_else(|p| p.into_inner()).extend(both);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn leaf(store: &CertStore) -> Vec<u8> {
        store.current.load().cert[0].as_ref().to_vec()
    }

    fn der(pem: &str) -> Vec<u8> {
        rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap().as_ref().to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotated_pair_is_served_once_both_halves_are_in() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key") };
        let (old, new) = (pair(), pair());
        std::fs::write(&files.cert, &old.0).unwrap();
        std::fs::write(&files.key, &old.1).unwrap();
        let store = CertStore::new(&files).unwrap();
        store.spawn_watch(crate::watch::PERIOD);
        let tick = || tokio::time::sleep(crate::watch::PERIOD + Duration::from_millis(1));
        tick().await;
        assert_eq!(leaf(&store), der(&old.0));

        // Half a rotation: the new cert does not fit the old key; the old pair keeps serving.
        std::fs::write(&files.cert, &new.0).unwrap();
        tick().await;
        assert_eq!(leaf(&store), der(&old.0));
        std::fs::write(&files.key, &new.1).unwrap();
        tick().await;
        assert_eq!(leaf(&store), der(&new.0));

        // Dropping the store ends both watches (they held only a `Weak`).
        let weak = Arc::downgrade(&store);
        drop(store);
        assert!(weak.upgrade().is_none());
    }
}
