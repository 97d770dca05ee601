//! The one-screen summary `airgate check` prints for a valid configuration.

use super::{Config, issuer::KeySource, urls::Redacted};
use std::fmt::Write;

/// Renders listeners, issuers, upstreams, routes and rate policies; never a secret.
pub fn summary(c: &Config) -> String {
    let mut s = String::new();
    let tls = if c.server.tls.is_some() { " (TLS)" } else { "" };
    let _ = writeln!(s, "listeners: proxy {}{tls}, admin {}", c.server.listen, c.admin.listen);
    let _ = writeln!(s, "issuers ({}): {}", c.issuers.len(), names(c.issuers.iter().map(|i| &*i.name)));
    for i in &c.issuers {
        let _ = match &i.keys {
            KeySource::JwksUrl(u) => writeln!(s, "  {} keys: jwks_url {}", i.name, Redacted(u)),
            KeySource::Discovery(u) => writeln!(s, "  {} keys: discovery_url {}", i.name, Redacted(u)),
            KeySource::JwksFile(path) => writeln!(s, "  {} keys: jwks_file {}", i.name, path.display()),
            KeySource::SharedSecret(_) => writeln!(s, "  {} keys: shared_secret", i.name),
            KeySource::SigningKey(_) => writeln!(s, "  {} keys: signing_key", i.name),
        };
        if let Some(k) = &i.kubernetes {
            let accounts = k.service_accounts.as_ref().map_or_else(|| "any".to_owned(), |s| s.join(", "));
            let _ = writeln!(
                s,
                "  {}: kubernetes pods in {} (service accounts: {accounts}), cached {}",
                i.name,
                k.namespaces.join(", "),
                humantime::format_duration(k.pod_cache_ttl)
            );
        }
    }
    let _ = writeln!(s, "upstreams ({}):", c.upstreams.len());
    for u in &c.upstreams {
        let _ = writeln!(s, "  {} -> {}://{}{}", u.name, u.scheme, u.authority, u.base_path);
    }
    let _ = writeln!(s, "routes ({}):", c.routes.len());
    for r in &c.routes {
        let methods = r.methods.as_ref().map_or_else(|| "*".to_owned(), |m| names(m.iter().map(http::Method::as_str)));
        let upstream = c.upstreams.get(r.upstream).map_or("?", |u| &*u.name);
        let limit = r.rate_limit.as_deref().unwrap_or("-");
        let _ = writeln!(s, "  {} {} [{methods}] -> {upstream} (rate limit: {limit})", r.name, r.path_prefix);
    }
    for line in c.rate_limits.summary_lines() {
        let _ = writeln!(s, "{line}");
    }
    for w in &c.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() { "-".to_owned() } else { v.join(", ") }
}
