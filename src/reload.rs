//! Hot reload: on SIGHUP or a change of the configuration file's content (a [`FileWatch`], which
//! follows the symlink swap of a Kubernetes ConfigMap mount), the new file is validated in full, a whole new snapshot is built
//! — reusing key sets, tokens, pools and limiter state of unchanged parts — and swapped in
//! atomically. A bad file is refused with one log line and the old configuration keeps serving.

use crate::{
    config,
    stack::{Gateway, Snapshot},
    watch::{FileWatch, Fingerprint},
};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

/// Why a reload was refused.
#[derive(Debug)]
pub enum ReloadError {
    /// The file is invalid.
    Invalid(config::Problems),
    /// The configuration is valid but a part could not be built (unreadable CA file, …).
    Build(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Invalid(p) => {
                let list: Vec<String> = p.iter().map(ToString::to_string).collect();
                write!(f, "{}", list.join("; "))
            }
            ReloadError::Build(e) => f.write_str(e),
        }
    }
}

/// Loads `path` and swaps it in. Counts `airgate_config_reloads_total{result}`.
pub fn reload(gateway: &Gateway, path: &Path) -> Result<(), ReloadError> {
    let result = try_reload(gateway, path);
    let label = if result.is_ok() { "success" } else { "error" };
    gateway.metrics().config_reloads.with_label_values(&[label]).inc();
    match &result {
        Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
        Err(e) => {
            tracing::error!(config = %path.display(), error = %e, "configuration reload refused; the previous configuration keeps serving")
        }
    }
    result
}

fn try_reload(gateway: &Gateway, path: &Path) -> Result<(), ReloadError> {
    let next = config::load(path).map_err(ReloadError::Invalid)?;
    let current = gateway.snapshot();
    let old = &current.config;
    if next.server.listen != old.server.listen || next.admin.listen != old.admin.listen {
        tracing::warn!("listener addresses changed in the configuration; they apply only after a restart");
    }
    if next.server.tls != old.server.tls {
        tracing::warn!(
            "server.tls file paths changed; they apply only after a restart (rotated files at the old paths are picked up live)"
        );
    }
    let snapshot = Snapshot::build(next, gateway.metrics(), Some(&current)).map_err(ReloadError::Build)?;
    gateway.swap(snapshot);
    Ok(())
}

/// [`reload`] on request (SIGHUP): always loads, and tells the file's `watch` (when the file is
/// watched) that this content is loaded, so that one edit is loaded once — and, when it is bad,
/// refused and logged once.
pub fn reload_now(gateway: &Gateway, path: &Path, watch: Option<&FileWatch>) -> Result<(), ReloadError> {
    if let (Some(watch), Ok(content)) = (watch, std::fs::read(path)) {
        watch.seen(&content);
    }
    reload(gateway, path)
}

/// Watches the configuration file every `every` and reloads when its content differs from what
/// was loaded last (at start, by SIGHUP or by the watch itself). Stops when dropped.
pub fn watch(gateway: Arc<Gateway>, path: PathBuf, every: Duration) -> FileWatch {
    // The file as it is now is what `app::start` was given (it was loaded just before).
    let loaded = std::fs::read(&path).ok().map(|c| Fingerprint::of(&c));
    let file = path.clone();
    FileWatch::start(path, every, loaded, move |update| {
        // An unreadable file is not an edit: the running configuration stays, silently.
        if update.is_ok() {
            let _ = reload(&gateway, &file);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{audit::Auditor, metrics::Metrics, watch::PERIOD};

    fn write(path: &Path, body: &str) {
        let dir = path.parent().unwrap();
        let audit = dir.join("audit.jsonl");
        std::fs::write(path, format!("[audit]\nsink = \"file\"\npath = {:?}\n{body}", audit.display().to_string()))
            .unwrap();
    }

    const BAD: &str = "[[routes]]\nname = \"b\"\npath_prefix = \"/b/\"\nupstream = \"nowhere\"\n";

    /// SIGHUP and the watch share what was loaded last: a bad edit is refused (and logged) once,
    /// however many ticks pass, and a later edit is still seen.
    #[tokio::test(start_paused = true)]
    async fn one_edit_is_loaded_once_by_sighup_and_the_watch_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("airgate.toml");
        write(&path, "");
        let cfg = config::load(&path).unwrap();
        let metrics = Metrics::new(10);
        let (auditor, _closer) = Auditor::start(&cfg.audit, metrics.clone()).unwrap();
        let gateway = Gateway::new(Snapshot::build(cfg, &metrics, None).unwrap(), metrics.clone(), auditor);
        let count = |result: &str| metrics.config_reloads.with_label_values(&[result]).get();
        let watch = watch(gateway.clone(), path.clone(), PERIOD);
        tokio::time::sleep(PERIOD * 3).await;
        assert_eq!((count("success"), count("error")), (0, 0), "the file loaded at start is not an edit");

        write(&path, BAD);
        assert!(matches!(reload_now(&gateway, &path, Some(&watch)), Err(ReloadError::Invalid(_))));
        tokio::time::sleep(PERIOD * 5).await;
        assert_eq!(count("error"), 1, "the watch does not load the edit SIGHUP loaded");

        // Another bad edit, no SIGHUP: the watch refuses it, once.
        write(&path, &format!("{BAD}# a comment\n"));
        tokio::time::sleep(PERIOD * 5).await;
        assert_eq!(count("error"), 2);

        write(&path, "");
        tokio::time::sleep(PERIOD * 2).await;
        assert_eq!(count("success"), 1);
        // A SIGHUP always loads, even an unchanged file; the watch then stays quiet.
        assert!(reload_now(&gateway, &path, Some(&watch)).is_ok());
        tokio::time::sleep(PERIOD * 3).await;
        assert_eq!((count("success"), count("error")), (2, 2));
    }
}
