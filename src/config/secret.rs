//! Secret references (`env:NAME`, `file:/path`) and the [`Secret`] value that never prints itself.

use std::{fmt, path::PathBuf, sync::Arc};

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
            SecretRef::File(path) => std::fs::read(path)
                .map(|mut bytes| {
                    if bytes.last() == Some(&b'\n') {
                        bytes.pop();
                        if bytes.last() == Some(&b'\r') {
                            bytes.pop();
                        }
                    }
                    Secret::new(bytes)
                })
                .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind())),
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
