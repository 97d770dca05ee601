//! `[[upstreams]]`: one backend (an APIM gateway) — URL, timeouts, pool, HTTP/2, subscription key
//! and the credential airgate presents there.

use super::{Problems, SecretRef, credential, duration_or, join, raw, required};
use http::{HeaderName, Uri};
use std::{path::PathBuf, sync::Arc, time::Duration};

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

/// One `[[upstreams]]` entry at `at`; `None` when it cannot be used.
pub(super) fn validate(raw: raw::RawUpstream, at: &str, p: &mut Problems) -> Option<Upstream> {
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
