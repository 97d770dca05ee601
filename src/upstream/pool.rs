//! The lean HTTP/1.1 transport for a plain `http://` upstream: keep-alive connections of the
//! gateway's own upstream HTTP/1.1 ([`h1`](crate::h1)), kept in a small per-upstream stack of idle
//! connections.
//!
//! Why not hyper-util's pooled client here: its checkout hashes `(scheme, authority)` into a map
//! under a mutex on both checkout and return, wraps every connection in a `Pooled` guard and
//! re-derives the request target per request: ~5.6 k instructions of the ~97 k a warm request
//! costs (BENCHMARKS.md). One upstream has one origin, so this pool is a `Vec` behind a mutex
//! held for one push or pop (never across an `.await`), newest first, so that surplus
//! connections age out. TLS upstreams (ALPN may pick HTTP/2) and prior-knowledge HTTP/2 keep
//! the pooled client.
//!
//! A connection goes back to the stack only when its response body ended exactly where its
//! framing said, with nothing left over, and is taken out again only when the upstream has
//! neither closed it nor sent anything meanwhile ([`Conn::is_open`]). A request that failed on a
//! reused connection before anything was answered, with its body untouched, is sent once more on a
//! new connection (the upstream closed the idle connection under it); a non-idempotent one only
//! when the write itself failed.

use crate::{
    body::{BoxError, RequestBody},
    h1::{Conn, Failed, Fields, GiveBack, ResponseBody},
};
use http::{Method, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use std::{
    fmt,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};
use tower::Service;

/// Idle keep-alive connections to one plain-HTTP upstream.
pub struct Http1Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connector: HttpConnector,
    /// `http://authority/`: where to connect.
    origin: Uri,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl fmt::Debug for Http1Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http1Pool").field("origin", &self.origin).field("max_idle", &self.max_idle).finish()
    }
}

/// Why a request could not be sent: the error, and whether it was the connect that failed.
pub type SendError = (BoxError, bool);

impl Http1Pool {
    /// A pool for `authority` (host and port of a plain `http://` upstream). Inside a tokio
    /// runtime it also starts the reaper that closes connections idle past `idle_timeout`
    /// (outside one, they are dropped when next seen).
    pub fn new(
        authority: &http::uri::Authority,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Result<Arc<Self>, String> {
        let origin = Uri::builder()
            .scheme(http::uri::Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| e.to_string())?;
        let connector = crate::client::tcp_connector(connect_timeout);
        let pool = Arc::new(Http1Pool { idle: Mutex::new(Vec::new()), max_idle, idle_timeout, connector, origin });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reap(Arc::downgrade(&pool)));
        }
        Ok(pool)
    }

    /// Sends `req` (any request target; it is sent in origin form) on an idle connection, or on
    /// a new one when none is idle.
    pub async fn send(self: &Arc<Self>, req: Request<RequestBody>) -> Result<Response<ResponseBody>, SendError> {
        let (parts, body) = req.into_parts();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        self.exchange(&parts.method, target, &parts.headers, body).await
    }

    /// Sends a request head given as its parts (`target` in origin form) as [`Http1Pool::send`]
    /// does.
    pub async fn exchange(
        self: &Arc<Self>,
        method: &Method,
        target: &str,
        fields: &impl Fields,
        body: RequestBody,
    ) -> Result<Response<ResponseBody>, SendError> {
        let conn = match self.checkout() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let failed = match conn.send(method, target, fields, body).await {
            Ok(resp) => return Ok(self.lease(resp)),
            Err(failed) => failed,
        };
        match failed {
            // The idle connection was closed under the request: once more, on a new one.
            Failed { retry: Some(body), .. } => match self.connect().await?.send(method, target, fields, body).await {
                Ok(resp) => Ok(self.lease(resp)),
                Err(failed) => Err((Box::new(failed.error), false)),
            },
            Failed { error, retry: None } => Err((Box::new(error), false)),
        }
    }

    fn lease(self: &Arc<Self>, resp: Response<ResponseBody>) -> Response<ResponseBody> {
        let pool: Arc<dyn GiveBack> = self.clone();
        resp.map(|body| body.give_back_to(pool))
    }

    /// The newest idle connection that is still open.
    fn checkout(&self) -> Option<Conn> {
        let mut stack = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(idle) = stack.pop() {
            if idle.since.elapsed() >= self.idle_timeout {
                // The newest is too old, so is every one below it.
                stack.clear();
                return None;
            }
            if idle.conn.is_open() {
                return Some(idle.conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let io = self.connector.clone().call(self.origin.clone()).await.map_err(|e| (Box::new(e) as BoxError, true))?;
        Ok(Conn::new(io.into_inner()))
    }

    /// Connections on the idle stack, open or not (for tests).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Connections on the idle stack the upstream has not closed (for tests).
    pub fn idle_open_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|i| i.conn.is_open()).count()
    }

    /// Drops (and so closes) the connections idle for `idle_timeout` or longer.
    fn drop_expired(&self, stack: &mut Vec<Idle>, now: Instant) {
        // Pushed in time order, so the stack is sorted oldest first.
        let expired = stack.partition_point(|i| now.duration_since(i.since) >= self.idle_timeout);
        if expired > 0 {
            stack.drain(..expired);
        }
    }
}

/// Closes idle connections past their timeout, every half timeout (but no more often than every
/// 100 ms and no less often than every 30 s), until the pool is gone (a reload replaced its
/// upstream).
async fn reap(pool: Weak<Http1Pool>) {
    let Some(period) =
        pool.upgrade().map(|p| (p.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30)))
    else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let mut stack = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        pool.drop_expired(&mut stack, Instant::now());
    }
}

impl GiveBack for Http1Pool {
    /// Puts a connection whose response has been read whole back on the stack, dropping (and so
    /// closing) those idle too long and any beyond `max_idle`.
    fn give_back(&self, conn: Conn) {
        if self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut stack = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        self.drop_expired(&mut stack, now);
        if stack.len() >= self.max_idle {
            stack.remove(0);
        }
        stack.push(Idle { conn, since: now });
    }
}
