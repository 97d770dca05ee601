//! The APIM subscription key header, and the watched secret cell behind it (also used by the
//! `static` credential): the value is read once at start, a `file:` reference is re-read when the
//! file changes (Key Vault CSI rotation swaps a symlink), and the request path reads the current
//! value lock-free with no I/O.

use crate::{
    config::{Secret, SecretRef},
    metrics::Metrics,
};
use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use std::{sync::Arc, time::Duration};
use tokio::sync::oneshot;

/// How often a `file:` secret is re-read. The files are tiny; reading and comparing the content
/// catches every way a file can change (symlink swap, rewrite in place, same mtime).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The subscription key of one upstream.
#[derive(Debug)]
pub struct SubscriptionKey {
    header: HeaderName,
    value: Arc<WatchedSecret>,
}

impl SubscriptionKey {
    /// Reads the key now (an unreadable key fails the start) and, for a `file:` reference, watches
    /// the file. A later unreadable file keeps the last good key and counts
    /// `airgate_subscription_key_reload_errors_total{upstream}`. Needs a Tokio runtime.
    pub fn start(
        upstream: Arc<str>,
        header: HeaderName,
        secret: &SecretRef,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let counter = metrics.subscription_key_errors.with_label_values(&[&*upstream]);
        let label = format!("upstream {upstream}: subscription key");
        let value = WatchedSecret::start(&label, secret, render_key, move || counter.inc(), POLL_INTERVAL)?;
        Ok(Arc::new(SubscriptionKey { header, value }))
    }

    /// The header to add to the next upstream request (the value is marked sensitive).
    pub fn header(&self) -> Option<(&HeaderName, HeaderValue)> {
        Some((&self.header, self.value.get()))
    }
}

fn render_key(secret: &Secret) -> Result<HeaderValue, String> {
    if secret.expose().is_empty() {
        return Err("is empty".into());
    }
    let mut value =
        HeaderValue::from_bytes(secret.expose()).map_err(|_| "contains bytes not allowed in a header".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// A header value rendered from a secret reference, kept current by a background task.
pub(crate) struct WatchedSecret {
    current: ArcSwap<HeaderValue>,
    // Dropping the sender ends the watcher task.
    _stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for WatchedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchedSecret([redacted])")
    }
}

impl WatchedSecret {
    /// Loads and renders `secret` now; for a `file:` reference spawns a task that re-reads it
    /// every `poll` until the cell is dropped. `on_error` runs for every failed re-read.
    /// `what` names the secret in logs ("upstream apim: subscription key").
    pub(crate) fn start(
        what: &str,
        secret: &SecretRef,
        render: fn(&Secret) -> Result<HeaderValue, String>,
        on_error: impl Fn() + Send + Sync + 'static,
        poll: Duration,
    ) -> Result<Arc<Self>, String> {
        let first = secret.load().and_then(|s| render(&s)).map_err(|e| format!("{what} {secret}: {e}"))?;
        let (stop, stopped) = match secret {
            SecretRef::File(_) => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            SecretRef::Env(_) | SecretRef::Inline(_) => (None, None),
        };
        let cell = Arc::new(WatchedSecret { current: ArcSwap::from_pointee(first), _stop: stop });
        if let Some(stopped) = stopped {
            let task = Watcher {
                what: what.to_owned(),
                secret: secret.clone(),
                render,
                on_error: Box::new(on_error),
                poll,
                cell: Arc::downgrade(&cell),
            };
            tokio::spawn(task.run(stopped));
        }
        Ok(cell)
    }

    /// The current value (a cheap reference-counted copy).
    pub(crate) fn get(&self) -> HeaderValue {
        HeaderValue::clone(&self.current.load())
    }
}

struct Watcher {
    what: String,
    secret: SecretRef,
    render: fn(&Secret) -> Result<HeaderValue, String>,
    on_error: Box<dyn Fn() + Send + Sync>,
    poll: Duration,
    cell: std::sync::Weak<WatchedSecret>,
}

impl Watcher {
    async fn run(self, mut stopped: oneshot::Receiver<()>) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                () = tokio::time::sleep(self.poll) => {}
            }
            let secret = self.secret.clone();
            let loaded = tokio::task::spawn_blocking(move || secret.load())
                .await
                .unwrap_or_else(|e| Err(format!("reader task failed: {e}")));
            let Some(cell) = self.cell.upgrade() else { return };
            match loaded.and_then(|s| (self.render)(&s)) {
                Ok(value) => {
                    if failing {
                        tracing::info!("{} {} is readable again", self.what, self.secret);
                        failing = false;
                    }
                    if *cell.current.load_full() != value {
                        cell.current.store(Arc::new(value));
                        tracing::info!("{} {} changed; the new value is in use", self.what, self.secret);
                    }
                }
                Err(e) => {
                    (self.on_error)();
                    if !failing {
                        tracing::warn!("{} {}: {e}; keeping the last good value", self.what, self.secret);
                        failing = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn file_key_follows_rotation_and_survives_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "first-key\n").unwrap();
        let metrics = Metrics::new(10);
        let key = SubscriptionKey::start(
            "apim".into(),
            HeaderName::from_static("ocp-apim-subscription-key"),
            &SecretRef::File(path.clone()),
            metrics.clone(),
        )
        .unwrap();
        let (name, value) = key.header().unwrap();
        assert_eq!(name, "ocp-apim-subscription-key");
        assert_eq!(value, "first-key");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?} {key:?}").contains("first-key"));

        std::fs::write(&path, "second-key").unwrap();
        wait_for(|| key.header().unwrap().1 == "second-key").await;

        std::fs::remove_file(&path).unwrap();
        let errors = metrics.subscription_key_errors.with_label_values(&["apim"]);
        wait_for(|| errors.get() > 0).await;
        assert_eq!(key.header().unwrap().1, "second-key");

        std::fs::write(&path, "third-key").unwrap();
        wait_for(|| key.header().unwrap().1 == "third-key").await;
    }

    /// The Secrets Store CSI driver's layout: `key -> ..data/key`, `..data -> ..<timestamp>`;
    /// rotation writes a new timestamped directory and renames a new `..data` link over the old.
    #[cfg(unix)]
    #[tokio::test]
    async fn csi_symlink_swap_is_picked_up() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..2026_01")).unwrap();
        std::fs::write(d.join("..2026_01/key"), "key-one").unwrap();
        symlink("..2026_01", d.join("..data")).unwrap();
        symlink("..data/key", d.join("key")).unwrap();
        let key = SubscriptionKey::start(
            "apim".into(),
            HeaderName::from_static("ocp-apim-subscription-key"),
            &SecretRef::File(d.join("key")),
            Metrics::new(10),
        )
        .unwrap();
        assert_eq!(key.header().unwrap().1, "key-one");
        std::fs::create_dir(d.join("..2026_02")).unwrap();
        std::fs::write(d.join("..2026_02/key"), "key-two").unwrap();
        symlink("..2026_02", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..2026_01")).unwrap();
        for _ in 0..50 {
            if key.header().unwrap().1 == "key-two" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("rotation not picked up");
    }

    #[test]
    fn env_key_is_read_once_and_bad_keys_fail_the_start() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = rt.enter();
        let metrics = Metrics::new(10);
        let name = HeaderName::from_static("x-key");
        let inline = SecretRef::Inline(Secret::new(b"abc".to_vec()));
        let key = SubscriptionKey::start("u".into(), name.clone(), &inline, metrics.clone()).unwrap();
        assert_eq!(key.header().unwrap().1, "abc");
        let bad = SecretRef::Inline(Secret::new(b"a\nb".to_vec()));
        let err = SubscriptionKey::start("u".into(), name.clone(), &bad, metrics.clone()).unwrap_err();
        assert!(!err.contains("a\nb"), "{err}");
        let missing = SecretRef::Env("AIRGATE_TEST_SURELY_UNSET_KEY".into());
        let err = SubscriptionKey::start("u".into(), name, &missing, metrics).unwrap_err();
        assert!(err.contains("AIRGATE_TEST_SURELY_UNSET_KEY"), "{err}");
    }

    /// Polls `done` while letting (paused) time pass; real file I/O runs on the blocking pool.
    async fn wait_for(mut done: impl FnMut() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            // spawn_blocking completes in real time; give it a moment outside the paused clock.
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("condition not reached");
    }
}
