//! Hot reload: on SIGHUP or a change of the configuration file (including the symlink swap of a
//! Kubernetes ConfigMap mount), the new file is validated in full, a whole new snapshot is built
//! — reusing key sets, tokens, pools and limiter state of unchanged parts — and swapped in
//! atomically. A bad file is refused with one log line and the old configuration keeps serving.

use crate::{
    config,
    stack::{Gateway, Snapshot},
};
use std::{
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
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

fn fingerprint(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// The content of the configuration file last loaded, shared by SIGHUP and the watcher so that
/// one edit is loaded once — and, when it is bad, refused and logged once.
#[derive(Debug, Default)]
pub struct LastLoaded(Mutex<Option<u64>>);

impl LastLoaded {
    /// Remembers the file's current content as loaded.
    pub fn of(path: &Path) -> Arc<Self> {
        Arc::new(LastLoaded(Mutex::new(fingerprint(path))))
    }

    /// Records `now`; true when it differs from what was loaded last.
    fn update(&self, now: Option<u64>) -> bool {
        let Ok(mut last) = self.0.lock() else { return false };
        let changed = now.is_some() && now != *last;
        *last = now.or(*last);
        changed
    }
}

/// [`reload`] on request (SIGHUP): always loads, and records the content so the watcher does not
/// load the same edit again.
pub fn reload_now(gateway: &Gateway, path: &Path, last: &LastLoaded) -> Result<(), ReloadError> {
    last.update(fingerprint(path));
    reload(gateway, path)
}

/// Polls the file's content every `every` and reloads when it differs from what was loaded last.
/// Polling (rather than inotify) follows ConfigMap symlink swaps and works on every filesystem a
/// container mounts.
pub fn spawn_watcher(
    gateway: Arc<Gateway>,
    path: PathBuf,
    every: Duration,
    last: Arc<LastLoaded>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if last.update(fingerprint(&path)) {
                let _ = reload(&gateway, &path);
            }
        }
    })
}
