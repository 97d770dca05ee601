//! `[issuers.kubernetes]`: where a Kubernetes issuer reads task pods from (contract §9), parsed
//! once into a typed [`Kubernetes`]. In-cluster defaults are the service-account mount and the
//! `KUBERNETES_SERVICE_HOST`/`PORT` variables; the API address is resolved when the gateway
//! starts, so `airgate check` works outside a cluster.

use super::{Problems, SecretRef, duration_or, join, required};
use serde::Deserialize;
use std::{path::PathBuf, time::Duration};
use url::Url;

/// The service-account mount every pod gets.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// `[issuers.kubernetes]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawKubernetes {
    /// Kubernetes API base URL.
    pub api_url: Option<String>,
    /// CA bundle that signs the API server's certificate.
    pub ca_file: Option<PathBuf>,
    /// airgate's own API token (secret reference).
    pub token: Option<String>,
    /// Namespaces whose pods may call.
    pub namespaces: Option<Vec<String>>,
    /// Service-account names whose pods may call.
    pub service_accounts: Option<Vec<String>>,
    /// How long a looked-up pod is trusted.
    pub pod_cache_ttl: Option<String>,
    /// Pod annotation naming the team.
    pub team_annotation: Option<String>,
    /// Deadline of one pod lookup.
    pub timeout: Option<String>,
}

/// Where the Kubernetes API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiUrl {
    /// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, read at start.
    InCluster,
    /// Configured.
    Url(Url),
}

impl ApiUrl {
    /// The base URL (no trailing `/`), or why there is none.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            ApiUrl::Url(u) => Ok(u.as_str().trim_end_matches('/').to_owned()),
            ApiUrl::InCluster => {
                in_cluster(std::env::var("KUBERNETES_SERVICE_HOST").ok(), std::env::var("KUBERNETES_SERVICE_PORT").ok())
            }
        }
    }
}

/// The in-cluster API address from the two variables the kubelet sets in every pod.
fn in_cluster(host: Option<String>, port: Option<String>) -> Result<String, String> {
    let host = host.filter(|h| !h.is_empty()).ok_or_else(|| {
        "KUBERNETES_SERVICE_HOST is not set (not running in a pod?); set [issuers.kubernetes] api_url".to_owned()
    })?;
    let port = port.filter(|p| !p.is_empty()).unwrap_or_else(|| "443".to_owned());
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    Ok(format!("https://{host}:{port}"))
}

/// A validated `[issuers.kubernetes]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    /// The API server.
    pub api_url: ApiUrl,
    /// Trust anchors for the API server (only these; not the system roots).
    pub ca_file: PathBuf,
    /// airgate's own bearer token for the API; a file is re-read when it changes.
    pub token: SecretRef,
    /// Allowed namespaces (never empty).
    pub namespaces: Vec<String>,
    /// Allowed service-account names, when restricted.
    pub service_accounts: Option<Vec<String>>,
    /// How long a looked-up pod is trusted (capped by the filling token's `exp`).
    pub pod_cache_ttl: Duration,
    /// Pod annotation naming the team.
    pub team_annotation: Option<String>,
    /// Deadline of one pod lookup (connect included).
    pub timeout: Duration,
}

impl Kubernetes {
    /// True when `namespace` may call.
    pub fn namespace_allowed(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|n| n == namespace)
    }

    /// True when `service_account` may call.
    pub fn service_account_allowed(&self, service_account: &str) -> bool {
        self.service_accounts.as_ref().is_none_or(|list| list.iter().any(|s| s == service_account))
    }
}

/// A DNS-1123 label (namespaces, service-account names are subdomains but usually labels).
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// True for a name the Kubernetes API accepts as a namespace or pod name in a path.
pub fn is_object_name(s: &str) -> bool {
    is_dns_subdomain(s)
}

/// Validates `[issuers.kubernetes]` at `at` (`issuers[0].kubernetes`).
pub fn validate(raw: RawKubernetes, at: &str, p: &mut Problems) -> Option<Kubernetes> {
    let before = p.len();
    let api_url = match raw.api_url {
        None => Some(ApiUrl::InCluster),
        Some(text) => match Url::parse(&text) {
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                p.push(join(at, "api_url"), "must not carry user info");
                None
            }
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.query().is_none() => {
                Some(ApiUrl::Url(u))
            }
            _ => {
                p.push(
                    join(at, "api_url"),
                    "not an http(s) URL without a query, e.g. \"https://kubernetes.default.svc\"",
                );
                None
            }
        },
    };
    let token = match raw.token {
        None => Some(SecretRef::File(PathBuf::from(format!("{SERVICE_ACCOUNT_DIR}/token")))),
        Some(text) => SecretRef::parse(&text).map_err(|e| p.push(join(at, "token"), e)).ok(),
    };
    let namespaces = required(raw.namespaces, at, "namespaces", p);
    if namespaces.as_ref().is_some_and(Vec::is_empty) {
        p.push(join(at, "namespaces"), "must list at least one namespace (pods elsewhere are refused)");
    }
    for (key, list) in [("namespaces", namespaces.as_ref()), ("service_accounts", raw.service_accounts.as_ref())] {
        for (i, name) in list.into_iter().flatten().enumerate() {
            if !is_dns_subdomain(name) {
                p.push(format!("{at}.{key}[{i}]"), format!("{name:?} is not a Kubernetes object name"));
            }
        }
    }
    if raw.service_accounts.as_ref().is_some_and(Vec::is_empty) {
        p.push(join(at, "service_accounts"), "must list at least one service account (leave it out for any)");
    }
    let pod_cache_ttl = duration_or(raw.pod_cache_ttl, Duration::from_secs(300), at, "pod_cache_ttl", p);
    let timeout = duration_or(raw.timeout, Duration::from_secs(5), at, "timeout", p);
    for (key, d) in [("pod_cache_ttl", pod_cache_ttl), ("timeout", timeout)] {
        if d < Duration::from_millis(1) {
            p.push(join(at, key), "must be more than zero");
        }
    }
    if raw.team_annotation.as_deref().is_some_and(str::is_empty) {
        p.push(join(at, "team_annotation"), "must not be empty");
    }
    if p.len() != before {
        return None;
    }
    Some(Kubernetes {
        api_url: api_url?,
        ca_file: raw.ca_file.unwrap_or_else(|| PathBuf::from(format!("{SERVICE_ACCOUNT_DIR}/ca.crt"))),
        token: token?,
        namespaces: namespaces?,
        service_accounts: raw.service_accounts,
        pod_cache_ttl,
        team_annotation: raw.team_annotation,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> (Option<Kubernetes>, Vec<String>) {
        let mut p = Problems::default();
        let raw: RawKubernetes =
            crate::config::section(toml::from_str(text).unwrap(), "issuers[0].kubernetes", &mut p).unwrap_or_default();
        let k = validate(raw, "issuers[0].kubernetes", &mut p);
        (k, p.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn in_cluster_defaults() {
        let (k, p) = check("namespaces = [\"airflow\"]\n");
        assert!(p.is_empty(), "{p:?}");
        let k = k.unwrap();
        assert_eq!(k.api_url, ApiUrl::InCluster);
        assert_eq!(k.ca_file, PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"));
        assert_eq!(k.token, SecretRef::File("/var/run/secrets/kubernetes.io/serviceaccount/token".into()));
        assert_eq!(k.pod_cache_ttl, Duration::from_secs(300));
        assert!(k.service_account_allowed("anything"));
        assert!(k.namespace_allowed("airflow") && !k.namespace_allowed("default"));
    }

    #[test]
    fn namespaces_are_required_and_names_checked() {
        let (_, p) = check("api_url = \"https://k8s:6443\"\n");
        assert!(p.iter().any(|m| m.starts_with("issuers[0].kubernetes.namespaces") && m.contains("required")), "{p:?}");
        let (_, p) = check("namespaces = []\n");
        assert!(p.iter().any(|m| m.contains("at least one namespace")), "{p:?}");
        let (_, p) = check("namespaces = [\"Air_flow\"]\nservice_accounts = []\n");
        assert!(p.iter().any(|m| m.starts_with("issuers[0].kubernetes.namespaces[0]")), "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("issuers[0].kubernetes.service_accounts")), "{p:?}");
    }

    #[test]
    fn unknown_keys_secrets_and_urls() {
        let (_, p) = check("namespaces = [\"a\"]\nnamespace = \"a\"\n");
        assert!(
            p.iter().any(|m| m.starts_with("issuers[0].kubernetes.namespace") && m.contains("unknown key")),
            "{p:?}"
        );
        let (_, p) = check("namespaces = [\"a\"]\ntoken = \"eyJhbGciOi\"\n");
        assert!(p.iter().any(|m| m.starts_with("issuers[0].kubernetes.token") && !m.contains("eyJ")), "{p:?}");
        let (_, p) = check("namespaces = [\"a\"]\napi_url = \"https://u:pw@k8s\"\n");
        assert!(p.iter().any(|m| m.contains("user info") && !m.contains("pw")), "{p:?}");
    }

    #[test]
    fn in_cluster_address_from_the_service_variables() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(in_cluster(s("10.0.0.1"), s("443")).unwrap(), "https://10.0.0.1:443");
        assert_eq!(in_cluster(s("fd00::1"), None).unwrap(), "https://[fd00::1]:443");
        assert!(in_cluster(None, s("443")).unwrap_err().contains("api_url"));
        let k = ApiUrl::Url(Url::parse("https://k8s.example:6443/").unwrap());
        assert_eq!(k.resolve().unwrap(), "https://k8s.example:6443");
    }
}
