//! The Kubernetes API client of a pod-identity issuer: one `GET /api/v1/namespaces/{ns}/pods/{name}`
//! with airgate's own bearer token, over the project's pooled rustls client trusting only the
//! cluster CA, with a deadline. Typed serde structs hold the three fields read (`metadata.uid`,
//! `metadata.annotations`, `status.phase`); no Kubernetes SDK.

use crate::{
    client::{self, FetchClient},
    config::{Secret, WatchedSecret, kubernetes::Kubernetes},
};
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::Full;
use serde::Deserialize;
use std::{collections::HashMap, sync::Arc, time::Duration};

/// Largest pod object read (etcd's own object limit is 1.5 MiB).
const MAX_POD_BYTES: usize = 2 << 20;

/// The parts of a `v1.Pod` airgate reads.
#[derive(Debug, Deserialize)]
pub(crate) struct Pod {
    /// `metadata`.
    pub metadata: PodMeta,
    /// `status` (absent on a pod not yet seen by the scheduler).
    #[serde(default)]
    pub status: PodStatus,
}

/// `metadata` of a pod.
#[derive(Debug, Deserialize)]
pub(crate) struct PodMeta {
    /// The pod's UID.
    pub uid: String,
    /// Annotations (the KubernetesExecutor writes the task instance here).
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

/// `status` of a pod.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    #[serde(default)]
    pub phase: Option<String>,
}

/// What one lookup found.
#[derive(Debug)]
pub(crate) enum PodAnswer {
    /// The API returned the pod.
    Pod(Pod),
    /// 404: no pod of that name.
    NotFound,
    /// The API could not answer (unreachable, timeout, 5xx, 401/403 to airgate, nonsense); the text
    /// is for logs and carries no token.
    Unavailable(String),
}

/// A client for one issuer's cluster.
pub(crate) struct KubeApi {
    base: String,
    client: FetchClient,
    token: Arc<WatchedSecret<HeaderValue>>,
    timeout: Duration,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi").field("base", &self.base).finish_non_exhaustive()
    }
}

fn render_bearer(secret: &Secret) -> Result<HeaderValue, String> {
    let token = secret.expose_str().map(str::trim).filter(|t| !t.is_empty()).ok_or("is empty or not text")?;
    let mut value = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| "contains bytes not allowed in a header".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// airgate's own API token, re-read when its file changes (the kubelet rotates it). The one place
/// that knows how a secret file is watched.
/// A failed re-read keeps the last good token and is logged by the watcher.
fn watch_token(issuer: &str, k: &Kubernetes) -> Result<Arc<WatchedSecret<HeaderValue>>, String> {
    let what = format!("issuer {issuer}: Kubernetes API token");
    WatchedSecret::start(&what, &k.token, render_bearer, || {})
}

impl KubeApi {
    /// Resolves the API address, reads the CA and the token. Needs a Tokio runtime (token watch).
    pub(crate) fn new(issuer: &str, k: &Kubernetes) -> Result<Self, String> {
        let base = k.api_url.resolve().map_err(|e| format!("issuer {issuer}: {e}"))?;
        let client = client::fetch_client_trusting(&k.ca_file, k.timeout)
            .map_err(|e| format!("issuer {issuer}: Kubernetes API client: {e}"))?;
        let token = watch_token(issuer, k)?;
        Ok(KubeApi { base, client, token, timeout: k.timeout })
    }

    /// `GET /api/v1/namespaces/{namespace}/pods/{name}`. Both names are checked object names.
    pub(crate) async fn pod(&self, namespace: &str, name: &str) -> PodAnswer {
        let url = format!("{}/api/v1/namespaces/{namespace}/pods/{name}", self.base);
        let req = Request::get(url)
            .header(header::AUTHORIZATION, HeaderValue::clone(&self.token.get()))
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .header(header::USER_AGENT, HeaderValue::from_static(concat!("airgate/", env!("CARGO_PKG_VERSION"))))
            .body(Full::new(Bytes::new()));
        let req = match req {
            Ok(r) => r,
            Err(e) => return PodAnswer::Unavailable(format!("bad request URL: {e}")),
        };
        let resp = match client::fetch(&self.client, req, self.timeout, MAX_POD_BYTES).await {
            Ok(r) => r,
            Err(e) => return PodAnswer::Unavailable(e.to_string()),
        };
        match resp.status {
            StatusCode::OK => match serde_json::from_slice::<Pod>(&resp.body) {
                Ok(pod) => PodAnswer::Pod(pod),
                Err(e) => PodAnswer::Unavailable(format!("the API returned a pod airgate cannot read: {e}")),
            },
            StatusCode::NOT_FOUND => PodAnswer::NotFound,
            status => PodAnswer::Unavailable(format!("the API answered {status}{}", status_message(&resp.body))),
        }
    }
}

/// `: <message>` from a `v1.Status` body (what RBAC denied, say), for the log.
fn status_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Status {
        message: Option<String>,
    }
    match serde_json::from_slice::<Status>(body) {
        Ok(Status { message: Some(m) }) => format!(": {}", m.chars().take(200).collect::<String>()),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_what_it_needs_from_a_pod() {
        let pod: Pod = serde_json::from_str(
            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","uid":"u1","annotations":{"dag_id":"d"},
               "labels":{"x":"y"}},"spec":{"containers":[]},"status":{"phase":"Running","podIP":"10.0.0.1"}}"#,
        )
        .unwrap();
        assert_eq!(pod.metadata.uid, "u1");
        assert_eq!(pod.metadata.annotations["dag_id"], "d");
        assert_eq!(pod.status.phase.as_deref(), Some("Running"));
        let bare: Pod = serde_json::from_str(r#"{"metadata":{"uid":"u"}}"#).unwrap();
        assert!(bare.status.phase.is_none() && bare.metadata.annotations.is_empty());
    }

    #[test]
    fn status_messages_are_short_and_the_token_is_sensitive() {
        let body = br#"{"kind":"Status","status":"Failure","message":"pods \"x\" is forbidden","code":403}"#;
        assert_eq!(status_message(body), ": pods \"x\" is forbidden");
        assert_eq!(status_message(b"<html>"), "");
        let v = render_bearer(&Secret::new(b"tok\n".to_vec())).unwrap();
        assert!(v.is_sensitive());
        assert_eq!(v, "Bearer tok");
        assert!(render_bearer(&Secret::new(b"".to_vec())).is_err());
    }
}
