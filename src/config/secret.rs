//! Secret references (`env:NAME`, `file:/path`), the [`Secret`] value that never prints itself,
//! and the [`WatchedSecret`] that keeps a value rendered from a `file:` secret current.

use crate::watch::{FileWatch, Fingerprint, PERIOD, Update};
use arc_swap::ArcSwap;
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// Where a secret comes from. A configuration file can only name `env:` or `file:`; the literal
/// secret is refused so that config files can be shared and committed safely.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `env:NAME`: the value of an environment variable.
    Env(String),
    /// `file:/path`: the file's content, one trailing newline trimmed (Key Vault CSI mounts).
    File(PathBuf),
    /// A value built in code (the demo, tests). Not reachable from a configuration file.
    Inline(Secret),
}

impl SecretRef {
    /// Parses `env:NAME` or `file:/path`; anything else is refused without echoing it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix("env:") {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err("`env:` needs a variable name".into());
            }
            Ok(SecretRef::Env(name.to_owned()))
        } else if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err("`file:` needs a path".into());
            }
            Ok(SecretRef::File(PathBuf::from(path)))
        } else {
            Err("must be a secret reference (\"env:NAME\" or \"file:/path\"); a literal secret is \
                 never accepted in the configuration file"
                .into())
        }
    }

    /// Reads the secret now. Errors name the reference, never the value.
    pub fn load(&self) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(|v| Secret::new(v.into_bytes()))
                .map_err(|_| format!("environment variable {name} is not set")),
            SecretRef::File(path) => read(path).map(Secret::from_file),
            SecretRef::Inline(secret) => Ok(secret.clone()),
        }
    }

    /// The file behind a `file:` reference, for change watching.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            SecretRef::File(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::Inline(_) => f.write_str("<built-in>"),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Secret bytes. `Debug` and `Display` print `[redacted]`; use [`Secret::expose`] deliberately.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        Secret(bytes.into())
    }

    /// The secret itself. Every call site is a place where a secret may leave the process.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// A `file:` secret from the file's content: one trailing newline (`\n` or `\r\n`) trimmed.
    pub fn from_file(mut bytes: Vec<u8>) -> Self {
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Secret::new(bytes)
    }

    /// The secret as UTF-8, if it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| read_error(path, &e))
}

/// The error kind only: an `io::Error`'s text could quote more than a path.
fn read_error(path: &Path, e: &std::io::Error) -> String {
    format!("cannot read {}: {}", path.display(), e.kind())
}

/// A value rendered from a secret reference (a header value, say) and kept current: rendered once
/// at start, and for a `file:` reference rendered again whenever the file's content changes — a
/// Key Vault CSI or Kubernetes projected-volume rotation swaps a symlink, which the
/// [`FileWatch`] follows. Readers get the current value lock-free with no I/O; a later unreadable
/// or unrenderable file keeps the last good value.
///
/// The one way to use a secret file that may rotate: upstream tokens and subscription keys go
/// through it, and so should any new one.
pub struct WatchedSecret<T> {
    current: ArcSwap<T>,
    // Dropping the watch (with the cell) ends the polling.
    _watch: Option<FileWatch>,
}

impl<T> fmt::Debug for WatchedSecret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WatchedSecret([redacted])")
    }
}

impl<T: PartialEq + Send + Sync + 'static> WatchedSecret<T> {
    /// Loads and renders `secret` now (an error fails the start); a `file:` reference is then
    /// watched every [`PERIOD`] until the cell is dropped. `on_error` runs for every failed
    /// re-read or render. `what` names the secret in logs ("upstream apim: subscription key"),
    /// next to the reference — never the value. Needs a Tokio runtime for `file:` references.
    pub fn start(
        what: &str,
        secret: &SecretRef,
        render: fn(&Secret) -> Result<T, String>,
        on_error: impl Fn() + Send + Sync + 'static,
    ) -> Result<Arc<Self>, String> {
        let failed = |e: String| format!("{what} {secret}: {e}");
        let SecretRef::File(path) = secret else {
            let first = secret.load().and_then(|s| render(&s)).map_err(failed)?;
            return Ok(Arc::new(WatchedSecret { current: ArcSwap::from_pointee(first), _watch: None }));
        };
        let content = read(path).map_err(failed)?;
        let loaded = Fingerprint::of(&content);
        let first = render(&Secret::from_file(content)).map_err(failed)?;
        let watched = path.clone();
        let (what, shown, path) = (what.to_owned(), secret.to_string(), path.clone());
        Ok(Arc::new_cyclic(|cell: &std::sync::Weak<Self>| {
            let cell = cell.clone();
            let mut failing = false;
            let on_change = move |update: Update| {
                let Some(cell) = cell.upgrade() else { return };
                let rendered = update
                    .map_err(|e| read_error(&path, &e))
                    .and_then(|bytes| render(&Secret::from_file(bytes.into())));
                match rendered {
                    Ok(value) => {
                        if failing {
                            tracing::info!("{what} {shown} is readable again");
                            failing = false;
                        }
                        if **cell.current.load() != value {
                            cell.current.store(Arc::new(value));
                            tracing::info!("{what} {shown} changed; the new value is in use");
                        }
                    }
                    Err(e) => {
                        on_error();
                        if !failing {
                            tracing::warn!("{what} {shown}: {e}; keeping the last good value");
                            failing = true;
                        }
                    }
                }
            };
            let watch = FileWatch::start(watched, PERIOD, Some(loaded), on_change);
            WatchedSecret { current: ArcSwap::from_pointee(first), _watch: Some(watch) }
        }))
    }

    /// The current value.
    pub fn get(&self) -> arc_swap::Guard<Arc<T>> {
        self.current.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_secrets_are_refused_without_echo() {
        let err = SecretRef::parse("hunter2").unwrap_err();
        assert!(!err.contains("hunter2"));
        assert_eq!(SecretRef::parse("env:KEY").unwrap(), SecretRef::Env("KEY".into()));
        assert!(SecretRef::parse("env:").is_err());
    }

    #[test]
    fn file_secrets_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "abc\n").unwrap();
        let s = SecretRef::File(path).load().unwrap();
        assert_eq!(s.expose(), b"abc");
        assert_eq!(format!("{s:?}"), "[redacted]");
    }
}
