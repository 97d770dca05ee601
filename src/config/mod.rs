//! Configuration: the TOML file (contract §8) parsed once into typed, validated settings.
//!
//! [`load`] reads a file, [`parse`] a string. Both report *every* problem they find — unknown keys,
//! wrong types, bad values, dangling references — each with its zero-based key path and, where the
//! file has one, line and column. After this module nothing re-validates: a [`Config`] is correct
//! by construction.

pub mod allow;
pub mod credential;
pub mod issuer;
pub mod kubernetes;
mod problems;
pub mod ratelimit;
pub mod raw;
mod secret;
mod summary;
pub mod units;
pub mod urls;

pub use problems::{Problem, Problems};
pub use secret::{Secret, SecretRef, WatchedSecret};
pub use summary::summary;

use http::{HeaderName, Method, Uri};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
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

/// `[server]`: the proxy listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Address to bind.
    pub listen: SocketAddr,
    /// TLS termination files, when set.
    pub tls: Option<TlsFiles>,
    /// Largest request body forwarded (413 beyond).
    pub max_request_body: u64,
    /// Largest request head (431 beyond).
    pub max_header_bytes: usize,
    /// Deadline for one whole request, gateway to upstream and back.
    pub request_timeout: Duration,
    /// Deadline for a client to send a request head, also between keep-alive requests (slowloris
    /// guard and idle timeout).
    pub header_read_timeout: Duration,
    /// An HTTP/2 connection with no open stream for this long is closed with GOAWAY.
    pub idle_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Concurrent client connections at most; further connections wait in the kernel backlog.
    pub max_connections: usize,
}

/// PEM files for TLS termination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Address of the metrics and probes listener.
    pub listen: SocketAddr,
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Where records go.
    pub sink: AuditSink,
    /// Keep the query string in `path`.
    pub include_query: bool,
    /// Records buffered between the request path and the writer before they are dropped.
    pub queue: usize,
}

/// Destination of audit records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Standard output, one JSON object per line.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Distinct `pipeline` label values before folding into `_other`.
    pub max_pipelines: usize,
}

/// One `[[upstreams]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// Configuration name (metrics, audit).
    pub name: Arc<str>,
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// Host and port; also the `Host` header sent upstream.
    pub authority: http::uri::Authority,
    /// Path prepended to every forwarded path (empty or starting with `/`, no trailing `/`).
    pub base_path: String,
    /// Extra trust anchors for `https` upstreams.
    pub ca_file: Option<PathBuf>,
    /// TCP (and TLS) connect deadline → 502 past it.
    pub connect_timeout: Duration,
    /// Deadline for the upstream's response head → 504 past it.
    pub timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per upstream.
    pub pool_max_idle: usize,
    /// Speak HTTP/2 with prior knowledge to a plain `http` upstream (ALPN decides for `https`).
    pub http2: bool,
    /// APIM subscription key, when set.
    pub subscription_key: Option<SecretRef>,
    /// Header that carries the subscription key.
    pub subscription_key_header: HeaderName,
    /// How the gateway's own token for this upstream is obtained.
    pub credential: credential::Credential,
}

/// One `[[routes]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Configuration name (metrics, audit).
    pub name: Arc<str>,
    /// Matched segment-wise against the request path; starts with `/`.
    pub path_prefix: String,
    /// Replaces `path_prefix` toward the upstream.
    pub rewrite_prefix: Option<String>,
    /// Methods taken; `None` takes every method.
    pub methods: Option<Vec<Method>>,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Name of the rate-limit policy, when limited.
    pub rate_limit: Option<Arc<str>>,
    /// Who may call.
    pub allow: allow::Allow,
    /// Count and log denials but let them through.
    pub dry_run: bool,
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

    let server = server_section(server.and_then(|v| section(v, "server", p)).unwrap_or_default(), p);
    let admin = admin_section(admin.and_then(|v| section(v, "admin", p)).unwrap_or_default(), p);
    let audit = audit_section(audit.and_then(|v| section(v, "audit", p)).unwrap_or_default(), p);
    let metrics_raw: raw::RawMetrics = metrics.and_then(|v| section(v, "metrics", p)).unwrap_or_default();
    let metrics = MetricsSettings { max_pipelines: metrics_raw.max_pipelines.unwrap_or(1000) };

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
        .filter_map(|(at, v)| upstream_section(section(v, &at, p)?, &at, p))
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
        .filter_map(|(at, v)| route_section(section(v, &at, p)?, &at, &upstreams, &rate_limits, &issuer_names, p))
        .collect();
    unique(routes.iter().map(|r| &*r.name), "routes", p);
    prefixes_differing_in_case(&routes, p);

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

fn size_or(value: Option<String>, default: u64, at: &str, key: &str, p: &mut Problems) -> u64 {
    match value {
        None => default,
        Some(text) => units::byte_size(&text).unwrap_or_else(|e| {
            p.push(join(at, key), e);
            default
        }),
    }
}

fn addr_or(value: Option<String>, default: &str, at: &str, p: &mut Problems) -> SocketAddr {
    let text = value.unwrap_or_else(|| default.to_owned());
    text.parse().unwrap_or_else(|_| {
        p.push(join(at, "listen"), format!("not a socket address: {text:?} (example: \"0.0.0.0:8080\")"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn server_section(raw: raw::RawServer, p: &mut Problems) -> Server {
    let at = "server";
    let trusted_proxies = raw
        .trusted_proxies
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| p.push(format!("{at}.trusted_proxies[{i}]"), format!("not an address or CIDR: {s:?}")))
                .ok()
        })
        .collect();
    let max_header_bytes = size_or(raw.max_header_bytes, 64 << 10, at, "max_header_bytes", p);
    if max_header_bytes < 1024 {
        p.push("server.max_header_bytes", "must be at least 1KiB");
    }
    let idle_timeout = duration_or(raw.idle_timeout, Duration::from_secs(60), at, "idle_timeout", p);
    if idle_timeout.is_zero() {
        p.push("server.idle_timeout", "must be more than 0s");
    }
    let max_connections = raw.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        p.push("server.max_connections", "must be at least 1");
    }
    Server {
        listen: addr_or(raw.listen, "0.0.0.0:8080", at, p),
        tls: raw.tls.map(|t| TlsFiles { cert: t.cert, key: t.key }),
        max_request_body: size_or(raw.max_request_body, 10 << 20, at, "max_request_body", p),
        max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
        request_timeout: duration_or(raw.request_timeout, Duration::from_secs(60), at, "request_timeout", p),
        header_read_timeout: duration_or(
            raw.header_read_timeout,
            Duration::from_secs(10),
            at,
            "header_read_timeout",
            p,
        ),
        idle_timeout,
        shutdown_grace: duration_or(raw.shutdown_grace, Duration::from_secs(30), at, "shutdown_grace", p),
        trusted_proxies,
        max_connections,
    }
}

fn admin_section(raw: raw::RawAdmin, p: &mut Problems) -> Admin {
    Admin { listen: addr_or(raw.listen, "127.0.0.1:9090", "admin", p) }
}

fn audit_section(raw: raw::RawAudit, p: &mut Problems) -> Audit {
    let sink = match (raw.sink.as_deref(), raw.path) {
        (None | Some("stdout"), None) => AuditSink::Stdout,
        (Some("file"), Some(path)) => AuditSink::File(path),
        (Some("file"), None) => {
            p.push("audit.path", "is required when sink = \"file\"");
            AuditSink::Stdout
        }
        (None | Some("stdout"), Some(_)) => {
            p.push("audit.path", "only applies to sink = \"file\"");
            AuditSink::Stdout
        }
        (Some(other), _) => {
            p.push("audit.sink", format!("unknown sink {other:?}; use \"stdout\" or \"file\""));
            AuditSink::Stdout
        }
    };
    Audit { sink, include_query: raw.include_query.unwrap_or(false), queue: raw.queue.unwrap_or(65_536).max(1) }
}

fn upstream_section(raw: raw::RawUpstream, at: &str, p: &mut Problems) -> Option<Upstream> {
    let name = required(raw.name, at, "name", p);
    let url = required(raw.url, at, "url", p);
    let credential = credential::validate(raw.credential, &join(at, "credential"), p);
    let subscription_key = raw
        .subscription_key
        .and_then(|s| SecretRef::parse(&s).map_err(|e| p.push(join(at, "subscription_key"), e)).ok());
    let subscription_key_header = match raw.subscription_key_header {
        None => HeaderName::from_static("ocp-apim-subscription-key"),
        Some(h) => HeaderName::from_bytes(h.as_bytes()).unwrap_or_else(|_| {
            p.push(join(at, "subscription_key_header"), format!("not a header name: {h:?}"));
            HeaderName::from_static("ocp-apim-subscription-key")
        }),
    };
    let connect_timeout = duration_or(raw.connect_timeout, Duration::from_secs(3), at, "connect_timeout", p);
    let timeout = duration_or(raw.timeout, Duration::from_secs(30), at, "timeout", p);
    let pool_idle_timeout = duration_or(raw.pool_idle_timeout, Duration::from_secs(60), at, "pool_idle_timeout", p);
    let url = url?;
    let uri: Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => {
            // Not echoed: a mistyped URL may hold a password.
            p.push(join(at, "url"), "not a URL");
            return None;
        }
    };
    let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
        p.push(join(at, "url"), "needs a scheme and a host, e.g. \"https://contoso.azure-api.net\"");
        return None;
    };
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        p.push(join(at, "url"), "scheme must be http or https");
    }
    if uri.query().is_some() || authority.as_str().contains('@') {
        p.push(join(at, "url"), "must not carry a query or user info");
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Some(Upstream {
        name: name?.into(),
        scheme,
        authority,
        base_path,
        ca_file: raw.ca_file,
        connect_timeout,
        timeout,
        pool_idle_timeout,
        pool_max_idle: raw.pool_max_idle_per_host.unwrap_or(256),
        http2: raw.http2.unwrap_or(false),
        subscription_key,
        subscription_key_header,
        credential: credential?,
    })
}

/// A prefix the route table can match: a path airgate would accept from a client (no `//`,
/// `..`, `;`, needless percent-encoding, …), so that no request can meet it in another spelling.
fn route_path(value: &str, at: &str, p: &mut Problems) {
    if !value.starts_with('/') {
        p.push(at, "must start with `/`");
    } else if !value.is_ascii() {
        p.push(at, "must be ASCII: percent-encode other characters as UTF-8 (`caf%C3%A9`)");
    } else if let Err(e) = crate::path::check(value) {
        p.push(at, format!("is a path form airgate refuses in requests: {e}"));
    }
}

/// Prefixes match ignoring ASCII case, so two that differ only in case would be one prefix with
/// two spellings: refused, naming the later route.
fn prefixes_differing_in_case(routes: &[Route], p: &mut Problems) {
    for (i, route) in routes.iter().enumerate() {
        let other = routes[..i]
            .iter()
            .position(|r| r.path_prefix != route.path_prefix && r.path_prefix.eq_ignore_ascii_case(&route.path_prefix));
        if let Some(j) = other {
            p.push(
                format!("routes[{i}].path_prefix"),
                format!(
                    "{:?} differs from routes[{j}].path_prefix {:?} only in case; prefixes ignore ASCII case, \
                     so spell them the same",
                    route.path_prefix, routes[j].path_prefix
                ),
            );
        }
    }
}

fn route_section(
    raw: raw::RawRoute,
    at: &str,
    upstreams: &[Upstream],
    rate_limits: &ratelimit::RateLimits,
    issuers: &[&str],
    p: &mut Problems,
) -> Option<Route> {
    let name = required(raw.name, at, "name", p);
    let prefix = required(raw.path_prefix, at, "path_prefix", p);
    for (key, value) in [("path_prefix", &prefix), ("rewrite_prefix", &raw.rewrite_prefix)] {
        if let Some(value) = value {
            route_path(value, &join(at, key), p);
        }
    }
    let methods = raw.methods.map(|list| {
        list.iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let upper = m.to_ascii_uppercase();
                Method::from_bytes(upper.as_bytes())
                    .map_err(|_| p.push(format!("{at}.methods[{i}]"), format!("not an HTTP method: {m:?}")))
                    .ok()
            })
            .collect::<Vec<_>>()
    });
    if methods.as_ref().is_some_and(Vec::is_empty) {
        p.push(join(at, "methods"), "must list at least one method (leave it out to take every method)");
    }
    let upstream = required(raw.upstream, at, "upstream", p).and_then(|u| {
        let found = upstreams.iter().position(|x| *x.name == *u);
        if found.is_none() {
            p.push(join(at, "upstream"), format!("no upstream named {u:?}"));
        }
        found
    });
    if let Some(policy) = &raw.rate_limit
        && !rate_limits.has_policy(policy)
    {
        p.push(join(at, "rate_limit"), format!("no rate-limit policy named {policy:?}"));
    }
    let allow = match raw.allow {
        None => {
            p.push(
                join(at, "allow"),
                "is required: say who may call this route (pipelines, teams, roles, principals or issuers)",
            );
            None
        }
        Some(allow) => allow::Allow::compile(allow, &join(at, "allow"), issuers, p),
    };
    Some(Route {
        name: name?.into(),
        path_prefix: prefix?,
        rewrite_prefix: raw.rewrite_prefix,
        methods,
        upstream: upstream?,
        rate_limit: raw.rate_limit.map(Into::into),
        allow: allow?,
        dry_run: raw.dry_run.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
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
    fn route_problems_name_their_keys() {
        let got = problems(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://x\"\n[[routes]]\nname = \"r\"\npath_prefix = \"x\"\nupstream = \"b\"\n",
        );
        assert!(got.iter().any(|p| p.starts_with("routes[0].path_prefix")), "{got:?}");
        assert!(got.iter().any(|p| p.starts_with("routes[0].upstream") && p.contains("no upstream named")), "{got:?}");
        assert!(got.iter().any(|p| p.starts_with("routes[0].allow") && p.contains("required")), "{got:?}");
    }

    const ROUTES: &str = "[[upstreams]]\nname = \"a\"\nurl = \"http://x\"\n";

    fn route(name: &str, prefix: &str, extra: &str) -> String {
        format!(
            "[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"a\"\nallow = {{ pipelines = [\"*\"] }}\n{extra}\n"
        )
    }

    #[test]
    fn prefixes_differing_only_in_case_are_refused() {
        let got = problems(&format!("{ROUTES}{}{}", route("a", "/sales/", ""), route("b", "/Sales/", "")));
        assert!(got.iter().any(|p| p.starts_with("routes[1].path_prefix") && p.contains("only in case")), "{got:?}");
        // The same prefix twice, chosen by method, is fine.
        let same = format!(
            "{ROUTES}{}{}",
            route("a", "/sales/", "methods = [\"GET\"]"),
            route("b", "/sales/", "methods = [\"POST\"]")
        );
        assert_eq!(problems(&same), Vec::<String>::new());
    }

    #[test]
    fn prefixes_must_be_paths_a_request_could_match() {
        for bad in ["/a//b/", "/a/../b", "/a;b/", "/%61/", "/a./", "/café/"] {
            let got = problems(&format!("{ROUTES}{}", route("a", bad, "")));
            assert!(got.iter().any(|p| p.starts_with("routes[0].path_prefix")), "{bad}: {got:?}");
        }
        let got = problems(&format!("{ROUTES}{}", route("a", "/a/", "rewrite_prefix = \"/b//\"")));
        assert!(got.iter().any(|p| p.starts_with("routes[0].rewrite_prefix")), "{got:?}");
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

    #[test]
    fn idle_timeout_is_a_positive_duration_defaulting_to_a_minute() {
        let got = problems("[server]\nidle_timeout = \"soon\"\n");
        assert!(got.iter().any(|p| p.starts_with("server.idle_timeout") && p.contains("not a duration")), "{got:?}");
        let got = problems("[server]\nidle_timeout = \"0s\"\n");
        assert!(got.iter().any(|p| p.starts_with("server.idle_timeout") && p.contains("more than 0s")), "{got:?}");
        let mut p = Problems::default();
        let server = server_section(raw::RawServer::default(), &mut p);
        assert_eq!(server.idle_timeout, Duration::from_secs(60));
        let raw = raw::RawServer { idle_timeout: Some("90s".into()), ..Default::default() };
        assert_eq!(server_section(raw, &mut p).idle_timeout, Duration::from_secs(90));
    }
}
