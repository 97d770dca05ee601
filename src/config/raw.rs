//! The configuration file as written: serde structs with optional fields. Unknown keys are not
//! rejected here but collected by [`super::load`] (via `serde_ignored`), so that *every* unknown key
//! is reported with its path instead of only the first one.

// Field names are the configuration keys themselves, documented in docs/configuration.md.
#![allow(missing_docs)]
use serde::Deserialize;
use std::path::PathBuf;

/// `[server]`: the proxy listener.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub listen: Option<String>,
    pub tls: Option<RawTls>,
    pub max_request_body: Option<String>,
    pub max_header_bytes: Option<String>,
    pub request_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_connections: Option<usize>,
}

/// `server.tls`: PEM certificate chain and private key.
#[derive(Debug, Deserialize)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[admin]`: the metrics and probes listener.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAdmin {
    pub listen: Option<String>,
}

/// `[audit]`: where the per-request audit records go.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAudit {
    pub sink: Option<String>,
    pub path: Option<PathBuf>,
    pub include_query: Option<bool>,
    pub queue: Option<usize>,
}

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawMetrics {
    pub max_pipelines: Option<usize>,
}

/// One `[[upstreams]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawUpstream {
    pub name: Option<String>,
    pub url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    pub pool_idle_timeout: Option<String>,
    pub pool_max_idle_per_host: Option<usize>,
    pub http2: Option<bool>,
    pub subscription_key: Option<String>,
    pub subscription_key_header: Option<String>,
    pub credential: Option<super::credential::RawCredential>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRoute {
    pub name: Option<String>,
    pub path_prefix: Option<String>,
    pub rewrite_prefix: Option<String>,
    pub methods: Option<Vec<String>>,
    pub upstream: Option<String>,
    pub rate_limit: Option<String>,
    pub allow: Option<RawAllow>,
    pub dry_run: Option<bool>,
}

/// `routes[].allow`: any-of rules.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct RawAllow {
    pub pipelines: Vec<String>,
    pub teams: Vec<String>,
    pub roles: Vec<String>,
    pub principals: Vec<String>,
    pub issuers: Vec<String>,
}
