//! Upstreams: the pooled client per upstream, the request sent to it (path rewrite, headers,
//! credential), and the mapping of its failures to 502/504. Credentials and subscription keys
//! live in their own files; this file only asks them for the current header value.

pub mod azure;
pub mod credential;
pub mod headers;
pub mod subscription;

use crate::{
    body::{BodyTooLarge, ClientBodyError, Counters, RequestBody},
    carry::{CarryOver, carry_over},
    client,
    config::{self, Route},
    error::GatewayError,
    metrics::Metrics,
    policy::Permit,
};
use credential::CredentialSource;
use http::{HeaderValue, Request, Response, Uri, Version, header, request};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};
use std::{
    sync::{Arc, atomic::Ordering},
    time::Instant,
};
use subscription::SubscriptionKey;

/// One upstream of a configuration snapshot: its settings, pooled client and credentials.
#[derive(Debug, Clone)]
pub struct Upstream {
    config: Arc<config::Upstream>,
    client: Client<client::Connector, RequestBody>,
    credential: Arc<CredentialSource>,
    subscription: Option<Arc<SubscriptionKey>>,
    host: HeaderValue,
    metrics: Arc<Metrics>,
}

impl CarryOver for Upstream {
    fn carry_key(&self) -> &str {
        &self.config.name
    }
}

/// Facts about the inbound request the forwarder needs besides the request itself.
#[derive(Debug)]
pub struct Forwarding<'a> {
    /// The client connection.
    pub peer: headers::Peer,
    /// `server.trusted_proxies`.
    pub trusted_proxies: &'a [ipnet::IpNet],
    /// The request id sent upstream and back to the client.
    pub request_id: &'a HeaderValue,
    /// `traceparent` to send (the client's when valid, else generated).
    pub traceparent: HeaderValue,
    /// Byte counters of this request (to tell a 413 from an upstream failure).
    pub counters: &'a Counters,
}

impl Upstream {
    /// Builds the upstream; reuses the previous upstream of that name whole (pool, token, key)
    /// when its configuration is unchanged, and its credential and subscription key when only
    /// those are unchanged ([`carry_over`]).
    pub fn new(cfg: &config::Upstream, metrics: &Arc<Metrics>, previous: &[Upstream]) -> Result<Self, String> {
        if let Some(prev) = carry_over(previous, &cfg.name, |p| *p.config == *cfg) {
            return Ok(prev.clone());
        }
        let https = cfg.scheme == http::uri::Scheme::HTTPS;
        let connector = client::connector(&client::ClientSettings {
            ca_file: cfg.ca_file.as_deref(),
            connect_timeout: cfg.connect_timeout,
            enable_http2: https,
        })
        .map_err(|e| format!("upstream {}: {e}", cfg.name))?;
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle)
            // Prior-knowledge HTTP/2 only for plain http; for https ALPN decides.
            .http2_only(cfg.http2 && !https)
            .build(connector);
        // Another setting changed (timeout, pool, …): the client is rebuilt, but an unchanged
        // credential keeps its token — a fresh one would answer 503 until its first fetch.
        let credential = match carry_over(previous, &cfg.name, |p| p.config.credential == cfg.credential) {
            Some(prev) => Arc::clone(&prev.credential),
            None => CredentialSource::start(cfg.name.clone(), &cfg.credential, metrics.clone())
                .map_err(|e| format!("upstream {}: credential: {e}", cfg.name))?,
        };
        let kept_key = carry_over(previous, &cfg.name, |p| {
            p.config.subscription_key == cfg.subscription_key
                && p.config.subscription_key_header == cfg.subscription_key_header
        });
        let subscription = match (&cfg.subscription_key, kept_key) {
            (None, _) => None,
            (Some(_), Some(prev)) => prev.subscription.clone(),
            (Some(secret), None) => Some(
                SubscriptionKey::start(cfg.name.clone(), cfg.subscription_key_header.clone(), secret, metrics.clone())
                    .map_err(|e| format!("upstream {}: subscription_key: {e}", cfg.name))?,
            ),
        };
        let host = HeaderValue::from_str(cfg.authority.as_str()).map_err(|e| format!("upstream {}: {e}", cfg.name))?;
        Ok(Upstream { config: Arc::new(cfg.clone()), client, credential, subscription, host, metrics: metrics.clone() })
    }

    /// Configuration name.
    pub fn name(&self) -> &Arc<str> {
        &self.config.name
    }

    /// Why this upstream cannot serve now (no valid credential), for `/readyz`.
    pub fn not_ready(&self) -> Option<String> {
        self.credential.not_ready()
    }

    /// Sends the request upstream with the gateway's credential. Takes a [`Permit`]: nothing is
    /// forwarded without an authorised identity.
    pub async fn forward(
        &self,
        permit: &Permit,
        route: &Route,
        mut parts: request::Parts,
        body: RequestBody,
        fwd: &Forwarding<'_>,
    ) -> Result<Response<Incoming>, GatewayError> {
        // The credential comes first: without one nothing leaves the gateway (503, no I/O).
        let bearer = self.credential.header()?;

        let path_and_query = crate::route::rewrite(route, &self.config.base_path, parts.uri.path(), parts.uri.query());
        let inbound_host = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        let inbound_host = inbound_host.or_else(|| parts.headers.get(header::HOST).cloned());
        parts.uri = Uri::builder()
            .scheme(self.config.scheme.clone())
            .authority(self.config.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| GatewayError::BadRequest { reason: "unrepresentable_path" })?;
        parts.version = Version::HTTP_11;
        headers::to_upstream(
            &mut parts.headers,
            permit.identity(),
            fwd.peer,
            fwd.trusted_proxies,
            inbound_host,
            fwd.request_id,
            Some(fwd.traceparent.clone()),
        );
        parts.headers.insert(header::HOST, self.host.clone());
        if let Some(mut bearer) = bearer {
            bearer.set_sensitive(true);
            parts.headers.insert(header::AUTHORIZATION, bearer);
        }
        if let Some((name, value)) = self.subscription.as_ref().and_then(|s| s.header()) {
            parts.headers.insert(name.clone(), value);
        }

        let started = Instant::now();
        let sent =
            tokio::time::timeout(self.config.timeout, self.client.request(Request::from_parts(parts, body))).await;
        let result = match sent {
            Err(_) => Err(timed_out(fwd.counters)),
            Ok(Err(e)) if fwd.counters.too_large.load(Ordering::Relaxed) || has_source::<BodyTooLarge>(&e) => {
                Err(GatewayError::PayloadTooLarge)
            }
            // The upstream client wraps errors of the body it was sending: reading the client's
            // body failed, so the fault is the client's (400), not the upstream's.
            Ok(Err(e)) if has_source::<ClientBodyError>(&e) => {
                let incomplete = find_source::<ClientBodyError>(&e).is_some_and(|b| b.incomplete);
                Err(GatewayError::BadRequest { reason: if incomplete { "body_incomplete" } else { "malformed_body" } })
            }
            Ok(Err(e)) if e.is_connect() => {
                tracing::debug!(upstream = %self.config.name, error = %client::error_chain(&e), "upstream connect failed");
                Err(GatewayError::UpstreamError { reason: "upstream_connect" })
            }
            Ok(Err(e)) => {
                tracing::debug!(upstream = %self.config.name, error = %client::error_chain(&e), "upstream request failed");
                Err(GatewayError::UpstreamError { reason: "upstream_reset" })
            }
            Ok(Ok(resp)) => Ok(resp),
        };
        let status = result.as_ref().map(Response::status);
        let code = match &status {
            Ok(status) => status.as_str(),
            Err(GatewayError::UpstreamTimeout) => "timeout",
            Err(_) => "error",
        };
        self.metrics
            .upstream_duration
            .with_label_values(&[&*self.config.name, code])
            .observe(started.elapsed().as_secs_f64());
        let mut resp = result?;
        if credential::rejects_token(resp.status(), resp.headers()) {
            self.credential.upstream_rejected();
        }
        headers::strip_hop_by_hop(resp.headers_mut());
        Ok(resp)
    }
}

/// The answer when a deadline passed while forwarding: the client's fault (408) when the
/// request body was waiting for the client's bytes, else the upstream's (504).
pub fn timed_out(counters: &Counters) -> GatewayError {
    if counters.awaiting_client.load(Ordering::Relaxed) {
        GatewayError::ClientTimeout
    } else {
        GatewayError::UpstreamTimeout
    }
}

fn has_source<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    find_source::<E>(e).is_some()
}

fn find_source<'a, E: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        cur = err.source();
    }
    None
}
