//! The APIM subscription key header: the value is read once at start and a `file:` reference is
//! re-read when the file changes (Key Vault CSI rotation swaps a symlink) through a
//! [`WatchedSecret`]; the request path reads the current value lock-free with no I/O.

use crate::{
    config::{Secret, SecretRef, WatchedSecret},
    metrics::Metrics,
};
use http::{HeaderName, HeaderValue};
use std::sync::Arc;

/// The subscription key of one upstream.
#[derive(Debug)]
pub struct SubscriptionKey {
    header: HeaderName,
    value: Arc<WatchedSecret<HeaderValue>>,
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
        let value = WatchedSecret::start(&label, secret, render_key, move || counter.inc())?;
        Ok(Arc::new(SubscriptionKey { header, value }))
    }

    /// The header to add to the next upstream request (the value is marked sensitive).
    pub fn header(&self) -> Option<(&HeaderName, HeaderValue)> {
        Some((&self.header, HeaderValue::clone(&self.value.get())))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    /// A Key Vault CSI rotation (a symlink swap, [`crate::watch::mount`]) reaches the header.
    #[cfg(unix)]
    #[tokio::test(start_paused = true)]
    async fn csi_symlink_swap_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::watch::mount::create(dir.path(), "key", "key-one");
        let key = SubscriptionKey::start(
            "apim".into(),
            HeaderName::from_static("ocp-apim-subscription-key"),
            &SecretRef::File(path),
            Metrics::new(10),
        )
        .unwrap();
        assert_eq!(key.header().unwrap().1, "key-one");
        crate::watch::mount::rotate(dir.path(), "key", "key-two");
        wait_for(|| key.header().unwrap().1 == "key-two").await;
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

    /// Polls `done` while letting (paused) time pass; the watch reads the file on its tick.
    async fn wait_for(mut done: impl FnMut() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("condition not reached");
    }
}
