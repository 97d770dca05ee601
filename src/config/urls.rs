//! URLs in the configuration (contract §6): none may carry userinfo (`user:password@`), and the
//! query of a key-set URL (a SAS token, say) is never printed — [`Redacted`] shows it as `?…`.

use super::Problems;
use std::fmt;
use url::Url;

/// A URL as logs, `/readyz`, `check` and errors may show it: scheme, host, port and path; a
/// query becomes `?…`; userinfo and fragment are left out.
#[derive(Debug, Clone, Copy)]
pub struct Redacted<'a>(pub &'a Url);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.0;
        write!(f, "{}://{}", url.scheme(), url.host_str().unwrap_or(""))?;
        if let Some(port) = url.port() {
            write!(f, ":{port}")?;
        }
        f.write_str(url.path())?;
        if url.query().is_some() {
            f.write_str("?…")?;
        }
        Ok(())
    }
}

/// True when `url` carries a user name or password.
pub fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// Records a problem at `at` when `url` carries userinfo; true when it does not.
pub(crate) fn refuse_userinfo(url: &Url, at: &str, p: &mut Problems) -> bool {
    if has_userinfo(url) {
        p.push(at, "must not carry user info (`user:password@`); credentials belong in a secret reference");
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_userinfo_are_never_shown() {
        for (text, shown) in [
            ("https://idp.example/jwks", "https://idp.example/jwks"),
            (
                "https://store.blob.core.windows.net/k/jwks.json?sv=2024&sig=SECRETSIG",
                "https://store.blob.core.windows.net/k/jwks.json?…",
            ),
            ("http://127.0.0.1:8080/jwks?x=1#frag", "http://127.0.0.1:8080/jwks?…"),
            ("https://u:hunter2@idp.example/", "https://idp.example/"),
            ("http://[::1]:9/a", "http://[::1]:9/a"),
        ] {
            let url = Url::parse(text).unwrap();
            assert_eq!(Redacted(&url).to_string(), shown);
        }
    }

    #[test]
    fn userinfo_is_refused_with_the_key_path() {
        for text in ["https://u:p@idp/", "https://u@idp/", "https://:p@idp/"] {
            let mut p = Problems::default();
            assert!(!refuse_userinfo(&Url::parse(text).unwrap(), "issuers[0].jwks_url", &mut p), "{text}");
            let got: Vec<String> = p.iter().map(ToString::to_string).collect();
            assert!(got[0].starts_with("issuers[0].jwks_url") && !got[0].contains("idp"), "{got:?}");
        }
        assert!(refuse_userinfo(&Url::parse("https://idp/?sig=1").unwrap(), "x", &mut Problems::default()));
    }
}
