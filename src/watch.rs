//! The one file watcher: every file airgate re-reads while running (the configuration, the TLS
//! certificate and key, a `jwks_file`, `file:` secrets) is polled by a [`FileWatch`].
//!
//! The rule is the same for all of them: every [`PERIOD`] the file is read by path and its content
//! hashed; new content is handed to the owner's callback. Content, not the modification time:
//! a Kubernetes ConfigMap or Key Vault CSI rotation swaps a symlink (`file -> ..data/file`,
//! `..data -> ..<timestamp>`), a rewrite can keep the mtime, and a coarse mtime misses two writes
//! in one second — reading the content by path sees every one of them. Polling rather than
//! inotify, because it follows symlink swaps and works on every filesystem a container mounts.
//!
//! A watch stops when its [`FileWatch`] is dropped. This module names no other airgate module.

use bytes::Bytes;
use std::{
    fmt,
    hash::{DefaultHasher, Hasher},
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::oneshot;

/// How often every watched file is read: the one period of all file watches.
pub const PERIOD: Duration = Duration::from_secs(1);

/// A hash of a file's content: equal content, equal fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// The fingerprint of `content`.
    pub fn of(content: &[u8]) -> Self {
        // SipHash with fixed keys: stable within the process, which is all a change check needs.
        let mut h = DefaultHasher::new();
        h.write(content);
        Fingerprint(h.finish())
    }
}

/// What a watch hands its callback.
pub type Update = Result<Bytes, io::Error>;

type Callback = Box<dyn FnMut(Update) + Send>;

/// A file polled for content changes until this handle is dropped.
pub struct FileWatch {
    inner: Arc<Inner>,
    // Dropping the sender ends the polling task.
    _stop: oneshot::Sender<()>,
}

struct Inner {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    last: Option<Fingerprint>,
    failing: bool,
    on_change: Callback,
}

impl fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileWatch").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

impl FileWatch {
    /// Polls `path` every `period` (the first read one period from now). `on_change` receives
    /// `Ok(content)` whenever the content differs from the content last seen — `seen`, the
    /// content the owner loaded itself, at first — and when the file is readable again after a
    /// failure; `Err` for every failed read (the last content stays "seen"). The callback runs
    /// on the polling task or in [`FileWatch::check`], one call at a time. Needs a Tokio runtime.
    pub fn start(
        path: impl Into<PathBuf>,
        period: Duration,
        seen: Option<Fingerprint>,
        on_change: impl FnMut(Update) + Send + 'static,
    ) -> FileWatch {
        let inner = Arc::new(Inner {
            path: path.into(),
            state: Mutex::new(State { last: seen, failing: false, on_change: Box::new(on_change) }),
        });
        let (stop, mut stopped) = oneshot::channel();
        let task = Arc::clone(&inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tick.tick() => {}
                }
                task.check();
            }
        });
        FileWatch { inner, _stop: stop }
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Reads the file now (outside the schedule) and calls back as a poll would. True when the
    /// callback saw new content.
    pub fn check(&self) -> bool {
        self.inner.check()
    }

    /// Records `content` as seen (the owner loaded it itself, on SIGHUP say), so that the next
    /// poll reports only a later change.
    pub fn seen(&self, content: &[u8]) {
        let mut state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        state.last = Some(Fingerprint::of(content));
        state.failing = false;
    }
}

impl Inner {
    fn check(&self) -> bool {
        // Read under the lock: a concurrent `check` or `seen` cannot interleave with this one.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match std::fs::read(&self.path) {
            Ok(content) => {
                let now = Fingerprint::of(&content);
                if state.last == Some(now) && !state.failing {
                    return false;
                }
                state.last = Some(now);
                state.failing = false;
                (state.on_change)(Ok(Bytes::from(content)));
                true
            }
            Err(e) => {
                state.failing = true;
                (state.on_change)(Err(e));
                false
            }
        }
    }
}

/// The layout the kubelet (ConfigMap, projected volume) and the Secrets Store CSI driver make:
/// `name -> ..data/name`, `..data -> ..<generation>`; a rotation writes a new generation
/// directory and renames a new `..data` link over the old one. For tests of every watcher.
#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
pub(crate) mod mount {
    use std::{os::unix::fs::symlink, path::Path};

    /// Mounts `name` with `content` in `dir` as generation 1; returns the path to watch.
    pub(crate) fn create(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
        std::fs::create_dir(dir.join("..1")).unwrap();
        std::fs::write(dir.join("..1").join(name), content).unwrap();
        symlink("..1", dir.join("..data")).unwrap();
        symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        dir.join(name)
    }

    /// Swaps generation 1 for generation 2 holding `content`, as the kubelet does.
    pub(crate) fn rotate(dir: &Path, name: &str, content: &str) {
        std::fs::create_dir(dir.join("..2")).unwrap();
        std::fs::write(dir.join("..2").join(name), content).unwrap();
        symlink("..2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        std::fs::remove_dir_all(dir.join("..1")).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a callback saw, in order.
    type Seen = Arc<Mutex<Vec<Result<String, io::ErrorKind>>>>;

    /// Collects what the callback saw.
    fn recorder() -> (Seen, impl FnMut(Update) + Send + 'static) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let cb = move |u: Update| {
            sink.lock().unwrap().push(u.map(|b| String::from_utf8_lossy(&b).into_owned()).map_err(|e| e.kind()));
        };
        (seen, cb)
    }

    /// A file `f` holding "one", watched every [`PERIOD`] from that content on.
    fn watched() -> (tempfile::TempDir, PathBuf, Seen, FileWatch) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let (seen, cb) = recorder();
        let watch = FileWatch::start(&path, PERIOD, Some(Fingerprint::of(b"one")), cb);
        (dir, path, seen, watch)
    }

    /// Lets (paused) time pass by `d` and the polling task run.
    async fn pass(d: Duration) {
        tokio::time::sleep(d).await;
        tokio::task::yield_now().await;
    }

    #[tokio::test(start_paused = true)]
    async fn content_changes_are_published_once_each() {
        let (_dir, path, seen, watch) = watched();
        pass(PERIOD * 3).await;
        assert!(seen.lock().unwrap().is_empty(), "the content the owner loaded is not news");

        std::fs::write(&path, "two").unwrap();
        pass(PERIOD / 2).await;
        assert!(seen.lock().unwrap().is_empty(), "nothing before the next tick");
        pass(PERIOD).await;
        pass(PERIOD * 3).await;
        assert_eq!(*seen.lock().unwrap(), vec![Ok("two".to_owned())]);

        // Same length, written within the same second: a coarse mtime + length check misses it.
        std::fs::write(&path, "owt").unwrap();
        pass(PERIOD).await;
        assert_eq!(seen.lock().unwrap().last(), Some(&Ok("owt".to_owned())));
        drop(watch);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_file_reports_every_failed_read_and_its_return() {
        let (_dir, path, seen, _watch) = watched();
        std::fs::remove_file(&path).unwrap();
        pass(PERIOD * 2 + PERIOD / 2).await;
        assert_eq!(*seen.lock().unwrap(), vec![Err(io::ErrorKind::NotFound); 2]);
        // Back with the same content: published once, so the owner knows it is readable again.
        std::fs::write(&path, "one").unwrap();
        pass(PERIOD * 3).await;
        assert_eq!(seen.lock().unwrap().len(), 3);
        assert_eq!(seen.lock().unwrap()[2], Ok("one".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn seen_and_check_share_the_state_of_the_poll() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let (seen, cb) = recorder();
        let watch = FileWatch::start(&path, Duration::from_secs(3600), None, cb);
        assert!(watch.check(), "without `seen`, the first read is news");
        assert!(!watch.check());
        std::fs::write(&path, "two").unwrap();
        // The owner loaded "two" itself (SIGHUP): the watch does not report it again.
        watch.seen(b"two");
        assert!(!watch.check());
        assert_eq!(*seen.lock().unwrap(), vec![Ok("one".to_owned())]);
        assert_eq!(watch.path(), path);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_watch_stops_polling() {
        let (_dir, path, seen, watch) = watched();
        drop(watch);
        std::fs::write(&path, "two").unwrap();
        pass(PERIOD * 5).await;
        assert!(seen.lock().unwrap().is_empty());
        // The task let go of the callback (and whatever it holds).
        assert_eq!(Arc::strong_count(&seen), 1);
    }

    #[cfg(unix)]
    #[tokio::test(start_paused = true)]
    async fn a_symlink_swap_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = mount::create(dir.path(), "f", "one");
        let (seen, cb) = recorder();
        let _watch = FileWatch::start(path, PERIOD, Some(Fingerprint::of(b"one")), cb);
        mount::rotate(dir.path(), "f", "two");
        pass(PERIOD * 2).await;
        assert_eq!(*seen.lock().unwrap(), vec![Ok("two".to_owned())]);
    }
}
