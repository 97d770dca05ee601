//! Configuration: the TOML file (contract §8) parsed once into typed, validated settings.
//!
//! [`load`] reads a file, [`parse`] a string. Both report *every* problem they find — unknown keys,
//! wrong types, bad values, dangling references — each with its zero-based key path and, where the
//! file has one, line and column. After this module nothing re-validates: a [`Config`] is correct
//! by construction.
//!
//! This file holds the load: splitting the file into its sections, the shared field helpers and
//! the checks across entries (unique names). Each section is validated in a file of its own:
//! `server.rs` (`[server]`, `[admin]`), `audit.rs`, `metrics.rs`, `issuer.rs` (with
//! `kubernetes.rs`), `upstream.rs` (with `credential.rs`), `route.rs` (with `allow.rs`),
//! `ratelimit.rs`; `raw.rs` is the file as written, `secret.rs` secret references.

pub mod allow;
mod audit;
pub mod credential;
pub mod issuer;
pub mod kubernetes;
mod metrics;
mod problems;
pub mod ratelimit;
pub mod raw;
mod route;
mod secret;
mod server;
mod summary;
pub mod units;
mod upstream;
pub mod urls;

pub use audit::{Audit, AuditSink};
pub use metrics::MetricsSettings;
pub use problems::{Problem, Problems};
pub use route::Route;
pub use secret::{Secret, SecretRef, WatchedSecret};
pub use server::{Admin, Server, TlsFiles};
pub use summary::summary;
pub use upstream::Upstream;

use serde::de::DeserializeOwned;
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// The audience of Airflow's Execution API tokens: never acceptable at airgate (contract §2).
pub const AIRFLOW_EXECUTION_AUDIENCE: &str = "urn:airflow.apache.org:task";

/// A whole, validated configuration.
#[derive(Debug)]
pub struct Config {
    /// `[server]`.
    pub server: Server,
    /// `[admin]`.
    pub admin: Admin,
    /// `[audit]`.
    pub audit: Audit,
    /// `[[issuers]]`.
    pub issuers: Vec<issuer::Issuer>,
    /// `[[upstreams]]`.
    pub upstreams: Vec<Upstream>,
    /// `[[routes]]`, in file order.
    pub routes: Vec<Route>,
    /// `[rate_limits]`.
    pub rate_limits: ratelimit::RateLimits,
    /// `[metrics]`.
    pub metrics: MetricsSettings,
    /// Things that are allowed but worth a word (`signing_key` outside development, …).
    pub warnings: Vec<String>,
    /// The file this came from, if any.
    pub source: Option<PathBuf>,
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut p = Problems::default();
        p.push("", format!("cannot read {}: {e}", path.display()));
        p
    })?;
    let mut config = parse(&text)?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Parses and validates configuration text.
pub fn parse(text: &str) -> Result<Config, Problems> {
    let mut p = Problems::default();
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let e: toml::de::Error = e;
            let loc = e.span().map(|s| problems::line_col(text, s.start)).unwrap_or((1, 1));
            p.push_at("", e.message().to_owned(), loc);
            return Err(p);
        }
    };
    let config = from_table(table, &mut p);
    p.locate(text);
    match config {
        Some(c) if p.is_empty() => Ok(c),
        _ => Err(p),
    }
}

/// Deserializes one value at `at`, recording every unknown key and the first type error.
pub(crate) fn section<T: DeserializeOwned + Default>(value: toml::Value, at: &str, p: &mut Problems) -> Option<T> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
    let de = serde_ignored::Deserializer::new(value, &mut record);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    for key in unknown {
        p.push(join(at, &key), "unknown key");
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let mut path = String::new();
            for seg in e.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                    serde_path_to_error::Segment::Map { key } => {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(key);
                    }
                    serde_path_to_error::Segment::Enum { variant } => path.push_str(variant),
                    serde_path_to_error::Segment::Unknown => {}
                }
            }
            p.push(join(at, &path), e.into_inner().message().to_owned());
            None
        }
    }
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() { key.clone() } else { format!("{parent}.{key}") }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// Joins a parent path and a child path (`routes[1]` + `allow` → `routes[1].allow`).
pub(crate) fn join(at: &str, child: &str) -> String {
    match (at.is_empty(), child.is_empty()) {
        (true, _) => child.to_owned(),
        (_, true) => at.to_owned(),
        _ if child.starts_with('[') => format!("{at}{child}"),
        _ => format!("{at}.{child}"),
    }
}

fn from_table(mut table: toml::Table, p: &mut Problems) -> Option<Config> {
    let mut take = |key: &str| table.remove(key);
    let server = take("server");
    let admin = take("admin");
    let audit = take("audit");
    let metrics = take("metrics");
    let issuers = take("issuers");
    let upstreams = take("upstreams");
    let routes = take("routes");
    let rate_limits = take("rate_limits");
    for key in table.keys() {
        p.push(key, "unknown key");
    }
    let mut warnings = Vec::new();

    let server = server::validate(server.and_then(|v| section(v, "server", p)).unwrap_or_default(), p);
    let admin = server::validate_admin(admin.and_then(|v| section(v, "admin", p)).unwrap_or_default(), p);
    let audit = audit::validate(audit.and_then(|v| section(v, "audit", p)).unwrap_or_default(), p);
    let metrics = metrics::validate(metrics.and_then(|v| section(v, "metrics", p)).unwrap_or_default());

    let issuers: Vec<issuer::Issuer> = array(issuers, "issuers", p)
        .into_iter()
        .filter_map(|(at, v)| {
            let raw = section(v, &at, p)?;
            issuer::validate(raw, &at, p, &mut warnings)
        })
        .collect();
    unique(issuers.iter().map(|i| &*i.name), "issuers", p);

    let upstreams: Vec<Upstream> = array(upstreams, "upstreams", p)
        .into_iter()
        .filter_map(|(at, v)| upstream::validate(section(v, &at, p)?, &at, p))
        .collect();
    unique(upstreams.iter().map(|u| &*u.name), "upstreams", p);

    let rate_limits = ratelimit::validate(
        rate_limits.and_then(|v| section(v, "rate_limits", p)).unwrap_or_default(),
        "rate_limits",
        p,
    );

    let issuer_names: Vec<&str> = issuers.iter().map(|i| &*i.name).collect();
    let routes: Vec<Route> = array(routes, "routes", p)
        .into_iter()
        .filter_map(|(at, v)| route::validate(section(v, &at, p)?, &at, &upstreams, &rate_limits, &issuer_names, p))
        .collect();
    unique(routes.iter().map(|r| &*r.name), "routes", p);
    route::prefixes_differing_in_case(&routes, p);
    route::methods_taken_twice(&routes, p);

    Some(Config { server, admin, audit, issuers, upstreams, routes, rate_limits, metrics, warnings, source: None })
}

/// Elements of an array of tables, each with its path.
fn array(value: Option<toml::Value>, at: &'static str, p: &mut Problems) -> Vec<(String, toml::Value)> {
    let items = match value {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items,
        Some(_) => {
            p.push(at, "must be an array of tables (`[[...]]`)");
            Vec::new()
        }
    };
    items.into_iter().enumerate().map(|(i, v)| (format!("{at}[{i}]"), v)).collect()
}

fn unique<'a>(names: impl Iterator<Item = &'a str>, at: &str, p: &mut Problems) {
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            p.push(format!("{at}[{i}].name"), format!("duplicate name {name:?}"));
        }
    }
}

/// A required field: records "is required" when missing.
pub(crate) fn required<T>(value: Option<T>, at: &str, key: &str, p: &mut Problems) -> Option<T> {
    if value.is_none() {
        p.push(join(at, key), "is required");
    }
    value
}

/// Parses an optional duration field, defaulting when absent.
pub(crate) fn duration_or(value: Option<String>, default: Duration, at: &str, key: &str, p: &mut Problems) -> Duration {
    match value {
        None => default,
        Some(text) => units::duration(&text).unwrap_or_else(|e| {
            p.push(join(at, key), e);
            default
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every problem `text` has, as displayed.
    pub(super) fn problems(text: &str) -> Vec<String> {
        parse(text).err().map(|p| p.iter().map(ToString::to_string).collect()).unwrap_or_default()
    }

    #[test]
    fn every_unknown_key_is_reported_with_path_and_line() {
        let got = problems(
            "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n[[upstreams]]\nname = \"a\"\nurl = \"http://x\"\ncolour = 1\n[bogus]\n",
        );
        assert!(got.iter().any(|p| p.starts_with("server.lisen (line 3, column 1): unknown key")), "{got:?}");
        assert!(got.iter().any(|p| p.starts_with("upstreams[0].colour (line 7, column 1)")), "{got:?}");
        assert!(got.iter().any(|p| p.starts_with("bogus (line 8")), "{got:?}");
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let got = problems("[server]\nlisten = \n");
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("line 2"), "{got:?}");
    }

    #[test]
    fn type_errors_have_paths() {
        let got = problems("[server]\nmax_connections = \"many\"\n");
        assert!(got.iter().any(|p| p.starts_with("server.max_connections (line 2")), "{got:?}");
    }
}
