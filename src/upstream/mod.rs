//! Upstreams: the [`Transport`] per upstream (hyper's pooled client, or any `tower::Service`),
//! the request sent through it (path rewrite, headers, credential), and the classification of its
//! failures ([`ForwardError`]). Credentials and subscription keys live in their own files; this
//! file only asks them for the current header value.

pub mod azure;
pub mod credential;
pub mod headers;
pub mod pool;
pub mod subscription;

use crate::{
    body::{Body, BodyTooLarge, BoxError, ClientBodyError, Counters, RequestBody},
    carry::{CarryOver, carry_over},
    client,
    config::{self, Route},
    metrics::Metrics,
    policy::Permit,
};
use credential::{CredentialSource, NoCredential};
use http::{HeaderValue, Request, Response, Uri, Version, header, request};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};
use std::{
    fmt,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};
use subscription::SubscriptionKey;
use tower::{ServiceExt, util::BoxCloneSyncService};

/// Why a request could not be forwarded (or its answer not received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// No valid upstream credential: nothing was sent (503).
    NoCredential(NoCredential),
    /// The rewritten request target is not a valid URI (400).
    Unrepresentable,
    /// The client's body grew past `max_request_body` while streaming (413).
    BodyTooLarge,
    /// Reading the client's body failed: it ended early, or its framing was malformed (400).
    ClientBody {
        /// The body ended before it was complete.
        incomplete: bool,
    },
    /// A deadline passed while the gateway was waiting for the client's body (408).
    ClientTimeout,
    /// The upstream did not answer in time (504).
    Timeout,
    /// The upstream could not be connected to (502).
    Connect,
    /// The upstream reset the request or answered nonsense (502).
    Reset,
}

/// How requests leave the gateway for one upstream: hyper's pooled client in production, or any
/// `tower::Service` — the layer tests put a `service_fn` here, so the whole request path runs
/// in-process without sockets. An enum, not a boxed service, so production pays no dynamic call.
#[derive(Clone)]
// One per upstream per snapshot: the size does not matter, a box would cost a pointer chase per
// request.
#[allow(clippy::large_enum_variant)]
pub enum Transport {
    /// Plain `http://` HTTP/1.1: the lean keep-alive pool ([`pool`]).
    Http1(Arc<pool::Http1Pool>),
    /// hyper-util's pooled HTTP/1.1 + HTTP/2 client with the project's TLS settings (`https://`,
    /// where ALPN picks the protocol, and prior-knowledge HTTP/2).
    Pooled(Client<client::Connector, RequestBody>),
    /// Any service.
    Service(BoxCloneSyncService<Request<RequestBody>, Response<Body>, BoxError>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Http1(_) => "Transport::Http1",
            Transport::Pooled(_) => "Transport::Pooled",
            Transport::Service(_) => "Transport::Service",
        })
    }
}

impl Transport {
    /// The transport for `cfg` (connect timeout, custom CA, pool sizes, HTTP/2 choice): the lean
    /// HTTP/1.1 pool for plain HTTP/1.1, else the pooled client.
    pub fn pooled(cfg: &config::Upstream) -> Result<Self, String> {
        let https = cfg.scheme == http::uri::Scheme::HTTPS;
        if !https && !cfg.http2 {
            let pool =
                pool::Http1Pool::new(&cfg.authority, cfg.connect_timeout, cfg.pool_idle_timeout, cfg.pool_max_idle)?;
            return Ok(Transport::Http1(pool));
        }
        let connector = client::connector(&client::ClientSettings {
            ca_file: cfg.ca_file.as_deref(),
            connect_timeout: cfg.connect_timeout,
            enable_http2: https,
        })?;
        Ok(Transport::Pooled(
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(cfg.pool_idle_timeout)
                .pool_max_idle_per_host(cfg.pool_max_idle)
                // Prior-knowledge HTTP/2 only for plain http; for https ALPN decides.
                .http2_only(cfg.http2 && !https)
                .build(connector),
        ))
    }

    /// Any service as the transport.
    pub fn service<S>(service: S) -> Self
    where
        S: tower::Service<Request<RequestBody>, Response = Response<Body>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Transport::Service(BoxCloneSyncService::new(service.map_err(Into::into)))
    }

    /// Sends one request (`parts` as the client sent them, with the upstream URI, and the
    /// rewrite of its headers); a failure says whether connecting failed.
    ///
    /// Both are borrowed: this future is nested in every request's, which is moved whole at
    /// each level of nesting, so what it holds by value is copied several times per request.
    async fn send(
        &self,
        parts: &mut request::Parts,
        rewrite: &headers::Rewrite<'_>,
        body: RequestBody,
    ) -> Result<Response<Body>, (BoxError, bool)> {
        match self {
            Transport::Http1(pool) => {
                // Written straight from the client's map through the rewrite: no map is edited.
                let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let fields = rewrite.fields(&parts.headers);
                pool.exchange(&parts.method, target, &fields, body).await.map(|resp| resp.map(Body::Pooled))
            }
            Transport::Pooled(client) => {
                rewrite.apply(&mut parts.headers);
                match client.request(Request::from_parts(take_parts(parts), body)).await {
                    Ok(resp) => Ok(resp.map(Body::Upstream)),
                    Err(e) => {
                        let connect = e.is_connect();
                        Err((Box::new(e), connect))
                    }
                }
            }
            Transport::Service(service) => {
                rewrite.apply(&mut parts.headers);
                service.clone().oneshot(Request::from_parts(take_parts(parts), body)).await.map_err(|e| (e, false))
            }
        }
    }
}

/// Makes the transport of an upstream whose configuration is new or changed.
pub type MakeTransport<'a> = &'a (dyn Fn(&config::Upstream) -> Result<Transport, String> + Sync);

/// One upstream of a configuration snapshot: its settings, pooled client and credentials.
#[derive(Debug, Clone)]
pub struct Upstream {
    config: Arc<config::Upstream>,
    transport: Transport,
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
    /// those are unchanged ([`carry_over`]). A new or changed upstream gets its transport from
    /// `make` ([`Transport::pooled`] in production).
    pub fn new(
        cfg: &config::Upstream,
        metrics: &Arc<Metrics>,
        previous: &[Upstream],
        make: MakeTransport<'_>,
    ) -> Result<Self, String> {
        if let Some(prev) = carry_over(previous, &cfg.name, |p| *p.config == *cfg) {
            return Ok(prev.clone());
        }
        let transport = make(cfg).map_err(|e| format!("upstream {}: {e}", cfg.name))?;
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
        Ok(Upstream {
            config: Arc::new(cfg.clone()),
            transport,
            credential,
            subscription,
            host,
            metrics: metrics.clone(),
        })
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
    /// forwarded without an authorised identity. `parts` are the client's, rewritten in place
    /// for the upstream (borrowed, like [`Transport::send`]'s, to keep this future small).
    pub async fn forward(
        &self,
        permit: &Permit,
        route: &Route,
        parts: &mut request::Parts,
        body: RequestBody,
        fwd: &Forwarding<'_>,
    ) -> Result<Response<Body>, ForwardError> {
        // The credential comes first: without one nothing leaves the gateway (503, no I/O).
        let bearer = self.credential.header().map_err(ForwardError::NoCredential)?;

        let path_and_query = crate::route::rewrite(route, &self.config.base_path, parts.uri.path(), parts.uri.query());
        let inbound_host = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        let inbound_host = inbound_host.or_else(|| parts.headers.get(header::HOST).cloned());
        parts.uri = Uri::builder()
            .scheme(self.config.scheme.clone())
            .authority(self.config.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| ForwardError::Unrepresentable)?;
        parts.version = Version::HTTP_11;
        let mut rewrite = headers::Rewrite::new(
            &parts.headers,
            permit.identity(),
            fwd.peer,
            fwd.trusted_proxies,
            inbound_host,
            fwd.request_id,
            &fwd.traceparent,
        );
        let credential = bearer.map(|mut bearer| {
            bearer.set_sensitive(true);
            bearer
        });
        rewrite.upstream(&self.host, credential, self.subscription.as_ref().and_then(|s| s.header()));

        let started = Instant::now();
        let sent = tokio::time::timeout(self.config.timeout, self.transport.send(parts, &rewrite, body)).await;
        let result = match sent {
            Err(_) => Err(timed_out(fwd.counters)),
            Ok(Err((e, _))) if fwd.counters.too_large.load(Ordering::Relaxed) || has_source::<BodyTooLarge>(&*e) => {
                Err(ForwardError::BodyTooLarge)
            }
            // The upstream client wraps errors of the body it was sending: reading the client's
            // body failed, so the fault is the client's (400), not the upstream's.
            Ok(Err((e, _))) if has_source::<ClientBodyError>(&*e) => {
                let incomplete = find_source::<ClientBodyError>(&*e).is_some_and(|b| b.incomplete);
                Err(ForwardError::ClientBody { incomplete })
            }
            Ok(Err((e, connect))) => {
                tracing::debug!(upstream = %self.config.name, error = %client::error_chain(&*e), connect, "upstream request failed");
                Err(if connect { ForwardError::Connect } else { ForwardError::Reset })
            }
            Ok(Ok(resp)) => Ok(resp),
        };
        let status = result.as_ref().map(Response::status);
        let code = match &status {
            Ok(status) => status.as_str(),
            Err(ForwardError::Timeout) => "timeout",
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

/// The request's parts, moved out for a transport that takes a whole [`Request`] (nothing reads
/// them after sending; an empty `GET /` is left in their place).
fn take_parts(parts: &mut request::Parts) -> request::Parts {
    std::mem::replace(parts, Request::new(()).into_parts().0)
}

/// The answer when a deadline passed while forwarding: the client's fault (408) when the
/// request body was waiting for the client's bytes, else the upstream's (504).
pub fn timed_out(counters: &Counters) -> ForwardError {
    if counters.awaiting_client.load(Ordering::Relaxed) { ForwardError::ClientTimeout } else { ForwardError::Timeout }
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
