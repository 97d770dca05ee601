//! The one place where a request's path through the gateway is assembled.
//!
//! [`Gateway::handle`] loads the current [`Snapshot`] once and runs the phases in this order —
//! each one a module of its own, each able to refuse with a [`GatewayError`]:
//!
//! 1. **head limits and route** ([`route`](crate::route)): cheapest checks first; 400/404/405/413/431 need no
//!    identity and must not cost a signature verification.
//! 2. **identity** ([`identity`](crate::identity)): who is calling — 401, or 403 on contradicting assertions.
//! 3. **policy** ([`policy`](crate::policy)): may this identity use this route — 403; yields a [`Permit`].
//! 4. **rate limit** ([`ratelimit`](crate::ratelimit)): after policy, so a forbidden caller cannot drain an allowed
//!    pipeline's budget; before the upstream, so a limited request never reaches it nor
//!    triggers a token fetch — 429 (or 503 when the backend is down and the policy denies).
//! 5. **forward** ([`upstream`](crate::upstream)): credential swap, header rewrite, the upstream call — 502/503/504.
//!
//! Errors become responses at exactly one rescue point ([`GatewayError::into_response`]); metrics
//! are counted when the response head is ready, the audit record when the body has been sent.
//!
//! [`Permit`]: crate::policy::Permit

use crate::{
    audit::{Auditor, Pending, Record, Tracked},
    body::{Body, Counters, Inbound, RequestBody},
    config::Config,
    error::{GatewayError, Outcome},
    identity::Authenticator,
    metrics::Metrics,
    policy,
    ratelimit::Limiter,
    route::RouteTable,
    upstream::{self, Forwarding, MakeTransport, Transport, Upstream, headers},
};
use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::Body as _;
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Instant, SystemTime},
};

/// Everything one configuration generation needs to serve requests. Immutable; a reload builds a
/// new one (reusing unchanged parts of the old) and swaps it in whole.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated configuration.
    pub config: Arc<Config>,
    routes: RouteTable,
    auth: Authenticator,
    limiter: Limiter,
    upstreams: Vec<Upstream>,
}

impl Snapshot {
    /// Builds a snapshot. `previous` lends key sets, tokens, pools and limiter state of parts
    /// whose configuration did not change.
    pub fn build(config: Config, metrics: &Arc<Metrics>, previous: Option<&Snapshot>) -> Result<Self, String> {
        Self::build_with(config, metrics, previous, &Transport::pooled)
    }

    /// [`Snapshot::build`] with the transport of new or changed upstreams made by `make` (the
    /// layer tests hand in a `service_fn`).
    pub fn build_with(
        config: Config,
        metrics: &Arc<Metrics>,
        previous: Option<&Snapshot>,
        make: MakeTransport<'_>,
    ) -> Result<Self, String> {
        let auth = Authenticator::new(&config.issuers, metrics.clone(), previous.map(|p| &p.auth))?;
        let limiter = Limiter::new(&config.rate_limits, metrics.clone(), previous.map(|p| &p.limiter))?;
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Upstream::new(u, metrics, previous.map_or(&[], |p| &p.upstreams), make))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot { routes: RouteTable::new(&config.routes), config: Arc::new(config), auth, limiter, upstreams })
    }

    /// What keeps this snapshot from serving (for `/readyz`); empty when ready.
    pub fn not_ready(&self) -> Vec<String> {
        let mut missing = self.auth.not_ready();
        missing.extend(self.upstreams.iter().filter_map(Upstream::not_ready));
        missing.extend(self.limiter.not_ready());
        missing
    }
}

/// The client side of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// Peer address.
    pub peer: SocketAddr,
    /// The connection is TLS.
    pub tls: bool,
}

/// The gateway: the current snapshot plus process-wide metrics, audit and drain state.
#[derive(Debug)]
pub struct Gateway {
    current: ArcSwap<Snapshot>,
    metrics: Arc<Metrics>,
    auditor: Auditor,
    draining: AtomicBool,
}

impl Gateway {
    /// A gateway serving `snapshot`.
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>, auditor: Auditor) -> Arc<Self> {
        Arc::new(Gateway {
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            auditor,
            draining: AtomicBool::new(false),
        })
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot; requests already running finish on the one they started with.
    pub fn swap(&self, next: Snapshot) {
        self.current.store(Arc::new(next));
    }

    /// Metrics shared by every snapshot.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Marks the gateway as draining: `/readyz` turns 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// True after [`Gateway::start_draining`].
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Serves one request. Never fails: every refusal is a problem+json response. The body is
    /// hyper's from a connection, or any body ([`Inbound::other`]) from an in-process caller.
    pub async fn handle<B: Into<Inbound>>(&self, req: Request<B>, conn: ConnInfo) -> Response<Tracked> {
        let start = Instant::now();
        let snap = self.current.load_full();
        let server = &snap.config.server;

        let request_id = match req.headers().get(&headers::X_REQUEST_ID) {
            Some(v) if headers::sane_request_id(v) => v.clone(),
            _ => headers::new_request_id(),
        };
        let (traceparent, trace_id) = headers::traceparent(req.headers().get(&headers::TRACEPARENT));
        let path = match (snap.config.audit.include_query, req.uri().query()) {
            (true, Some(q)) => format!("{}?{q}", req.uri().path()),
            _ => req.uri().path().to_owned(),
        };
        let record = Record {
            ts: SystemTime::now(),
            start,
            request_id: request_id.clone(),
            outcome: Outcome::Allowed,
            reason: None,
            status: 0,
            method: Some(req.method().clone()),
            route: None,
            path,
            upstream: None,
            issuer: None,
            identity: None,
            pod: None,
            client_ip: headers::client_ip(req.headers(), conn.peer.ip(), &server.trusted_proxies),
            upstream_duration_ms: None,
            trace_id,
        };
        let counters = Arc::new(Counters::default());
        // From here on the request is counted and audited exactly once, however it ends.
        let mut pending = Pending::new(record, counters.clone(), self.auditor.clone());

        let result = if self.is_draining() {
            Err(GatewayError::Draining)
        } else {
            let ctx = Ctx {
                snap: &snap,
                conn,
                record: pending.record(),
                counters: &counters,
                request_id: &request_id,
                traceparent,
            };
            match tokio::time::timeout(server.request_timeout, self.phases(ctx, req.map(Into::into))).await {
                Ok(result) => result,
                Err(_) => Err(upstream::timed_out(&counters).into()),
            }
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                let record = pending.record();
                record.outcome = err.outcome();
                record.reason = Some(err.reason());
                err.into_response(request_id.to_str().unwrap_or(""))
            }
        };
        resp.headers_mut().insert(headers::X_REQUEST_ID, request_id);
        pending.answered(resp.status());
        resp.map(|body| Tracked::new(body, pending))
    }

    /// Audits and counts a request that hyper's HTTP/1 parser refused and answered itself with
    /// `status` (the gateway never saw it: no method, path or identity are known).
    pub fn refused_by_parser(&self, conn: ConnInfo, status: StatusCode, reason: &'static str) {
        let record = Record {
            ts: SystemTime::now(),
            request_id: headers::new_request_id(),
            outcome: Outcome::BadRequest,
            reason: Some(reason.into()),
            client_ip: conn.peer.ip(),
            ..Record::vacant(Instant::now())
        };
        Pending::new(record, Arc::default(), self.auditor.clone()).answered(status);
    }

    /// The phases in order (module docs); `Err` is the one refusal the request gets.
    async fn phases(&self, ctx: Ctx<'_>, req: Request<Inbound>) -> Result<Response<Body>, GatewayError> {
        let Ctx { snap, conn, record, counters, request_id, traceparent } = ctx;
        let server = &snap.config.server;

        // 1. Head limits and route.
        if head_size(&req) > server.max_header_bytes {
            return Err(GatewayError::HeadersTooLarge);
        }
        check_host(&req)?;
        let index = snap.routes.find(req.method(), req.uri().path())?;
        let route = &snap.config.routes[index];
        record.route = Some(route.name.clone());
        let upstream = &snap.upstreams[route.upstream];
        record.upstream = Some(upstream.name().clone());
        if req.body().size_hint().lower() > server.max_request_body {
            return Err(GatewayError::PayloadTooLarge);
        }

        // 2. Identity.
        let identity = snap.auth.authenticate(req.headers()).await.map_err(|rejection| {
            record.issuer = rejection.issuer.clone();
            record.pod = rejection.pod.clone();
            GatewayError::from(rejection)
        })?;
        record.identity = Some(identity.clone());

        // 3. Policy.
        let permit = policy::authorize(&route.name, &route.allow, route.dry_run, identity, &self.metrics)?;
        // A dry-run denial is allowed; the audit says what enforcement would have refused.
        if let Some(denied) = permit.dry_run_denied() {
            record.reason = Some(format!("{}{denied}", policy::DRY_RUN_REASON_PREFIX).into());
        }

        // 4. Rate limit.
        let quota = match &route.rate_limit {
            Some(policy) => {
                let admitted = snap.limiter.check(policy, &route.name, &permit).await?;
                // A shadow policy that would have refused: allowed, with the reason in the audit.
                if let Some(reason) = admitted.reason() {
                    record.reason = Some(match record.reason.take() {
                        // Both a dry-run denial and a shadow refusal: keep both.
                        Some(dry_run) => format!("{dry_run}; {reason}").into(),
                        None => reason.into(),
                    });
                }
                admitted.quota()
            }
            None => None,
        };

        // 5. Forward.
        let (mut parts, body) = req.into_parts();
        let body = RequestBody::new((!body.is_end_stream()).then_some(body), server.max_request_body, counters.clone());
        let fwd = Forwarding {
            peer: headers::Peer { ip: conn.peer.ip(), tls: conn.tls },
            trusted_proxies: &server.trusted_proxies,
            request_id,
            traceparent,
            counters,
        };
        let started = Instant::now();
        let sent = upstream.forward(&permit, route, &mut parts, body, &fwd).await;
        record.upstream_duration_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        let mut resp = sent?;
        if let Some(quota) = quota {
            quota.apply(resp.headers_mut());
        }
        Ok(resp)
    }
}

/// What the phases of one request share besides the request itself.
struct Ctx<'a> {
    /// The configuration generation the request started on.
    snap: &'a Snapshot,
    /// The client connection.
    conn: ConnInfo,
    /// The request's audit record, filled in as the phases learn things.
    record: &'a mut Record,
    /// Body byte counters (audit) and who is being waited on (408 vs 504).
    counters: &'a Arc<Counters>,
    /// The request id sent upstream and back.
    request_id: &'a HeaderValue,
    /// `traceparent` to send upstream (the client's when valid, else generated).
    traceparent: HeaderValue,
}

/// Exactly one authority per request (contract §3): HTTP/1.1 needs one `Host`, no request may
/// repeat it, and where both the request target's authority (HTTP/2 `:authority`, an HTTP/1
/// absolute-form target) and `Host` are present they must agree — an upstream stack that reads
/// the other one must not see a different host than the gateway did.
fn check_host<B>(req: &Request<B>) -> Result<(), GatewayError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::BadRequest { reason: "repeated_host" });
    }
    match (req.uri().authority(), host) {
        (Some(authority), Some(host)) if !authority.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes()) => {
            Err(GatewayError::BadRequest { reason: "host_mismatch" })
        }
        // HTTP/1.1 requires `Host` even with an absolute-form target (RFC 9112 §3.2).
        (_, None) if req.version() == Version::HTTP_11 => Err(GatewayError::BadRequest { reason: "missing_host" }),
        (None, None) if req.version() != Version::HTTP_10 && req.version() != Version::HTTP_09 => {
            Err(GatewayError::BadRequest { reason: "missing_host" })
        }
        _ => Ok(()),
    }
}

/// Size of the request head as the client sent it (request line plus header fields).
fn head_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    req.headers().iter().fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

#[cfg(test)]
mod tests {
    use super::check_host;
    use http::{Request, Version};

    fn host_reason(version: Version, uri: &str, hosts: &[&str]) -> Option<&'static str> {
        let mut req = Request::builder().version(version).uri(uri);
        for h in hosts {
            req = req.header("host", *h);
        }
        match check_host(&req.body(()).unwrap()) {
            Ok(()) => None,
            Err(crate::error::GatewayError::BadRequest { reason }) => Some(reason),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_authority_per_request() {
        const HTTP_10: Version = Version::HTTP_10;
        const HTTP_11: Version = Version::HTTP_11;
        const HTTP_2: Version = Version::HTTP_2;
        assert_eq!(host_reason(HTTP_11, "/x", &["a.example"]), None);
        assert_eq!(host_reason(HTTP_11, "/x", &[]), Some("missing_host"));
        // An absolute-form target does not stand in for Host on HTTP/1.1.
        assert_eq!(host_reason(HTTP_11, "http://a.example/x", &[]), Some("missing_host"));
        assert_eq!(host_reason(HTTP_11, "http://a.example/x", &["A.example"]), None);
        assert_eq!(host_reason(HTTP_11, "http://a.example/x", &["b.example"]), Some("host_mismatch"));
        assert_eq!(host_reason(HTTP_11, "/x", &["a.example", "a.example"]), Some("repeated_host"));
        assert_eq!(host_reason(HTTP_10, "/x", &[]), None);
        assert_eq!(host_reason(HTTP_2, "https://a.example/x", &[]), None);
        assert_eq!(host_reason(HTTP_2, "/x", &[]), Some("missing_host"));
    }
}
