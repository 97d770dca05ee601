//! Listeners: accept loop with a connection cap, TLS, HTTP/1.1 and HTTP/2 (h2c prior knowledge on
//! plain TCP, ALPN on TLS), the connection deadlines of [`conn`], and graceful drain.

use crate::{
    config,
    conn::{self, Ended, Open, Schedule, Tracker},
    stack::{ConnInfo, Gateway},
    tls,
};
use http::{HeaderName, Request, Version, header};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use std::{
    convert::Infallible,
    sync::{Arc, OnceLock},
    time::Duration,
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};
use tower::ServiceBuilder;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

/// Binds a listener, naming the address in the error.
pub async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

/// The HTTP server settings taken from `[server]` at start (listeners are not reloadable).
fn builder(settings: &config::Server) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper rejects heads beyond its buffer itself (plain 431); the buffer is sized above
    // max_header_bytes so that the gateway's own check answers with problem+json first.
    let buf = (settings.max_header_bytes * 2 + 16 * 1024).max(8 * 1024);
    b.http1()
        // Off: `conn::drive` enforces header_read_timeout for the first head and between
        // keep-alive requests with one timer per connection (see src/conn.rs).
        .header_read_timeout(None::<Duration>)
        .max_buf_size(buf)
        // Envoy's and HAProxy's default too. Above hyper's inline 100, every parse would
        // allocate two arrays of that many entries (2 × 8 KiB per request at 256).
        .max_headers(100)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(buf).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Serves the proxy listener until `shutdown` flips, then drains in-flight requests for at most
/// `shutdown_grace`. Returns true when every connection finished in time.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    settings: config::Server,
    mut shutdown: watch::Receiver<bool>,
) -> Result<bool, String> {
    let tls = match &settings.tls {
        Some(files) => {
            let store = tls::CertStore::new(files)?;
            store.spawn_watch(crate::watch::PERIOD);
            Some(tls::acceptor(store)?)
        }
        None => None,
    };
    let builder = Arc::new(builder(&settings));
    // Every connection holds a receiver: the flag asks it to shut down gracefully, and the
    // sender's `closed()` is the wait group for the drain.
    let (drain, drain_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    loop {
        // Take a slot before accepting: beyond the cap, connections wait in the kernel backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot { Ok(s) => s, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        // Every deadline counts from here: TLS handshake and protocol detection included.
        let schedule = Schedule {
            accepted: tokio::time::Instant::now(),
            head: settings.header_read_timeout,
            idle: settings.idle_timeout,
        };
        let conn = ConnInfo { peer, tls: tls.is_some() };
        let drain = drain_rx.clone();
        let builder = builder.clone();
        let gateway = gateway.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_conn(&builder, schedule, drain, stream, gateway, conn).await,
                Some(acceptor) => {
                    let deadline = schedule.accepted + schedule.head;
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => serve_conn(&builder, schedule, drain, tls_stream, gateway, conn).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    drop(drain_rx);
    gateway.start_draining();
    let _ = drain.send(true);
    Ok(tokio::time::timeout(settings.shutdown_grace, drain.closed()).await.is_ok())
}

async fn serve_conn<IO>(
    builder: &auto::Builder<TokioExecutor>,
    schedule: Schedule,
    drain: watch::Receiver<bool>,
    io: IO,
    gateway: Arc<Gateway>,
    conn: ConnInfo,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let tracker = Tracker::new(schedule.accepted);
    let service = ServiceBuilder::new()
        // First, before anything could log a request: credentials become `Sensitive` in every
        // Debug print of the headers, so no trace or panic message can carry a token.
        .layer(SetSensitiveRequestHeadersLayer::from_shared(sensitive_headers()))
        .service_fn({
            let gateway = gateway.clone();
            let tracker = tracker.clone();
            move |req: Request<hyper::body::Incoming>| {
                let gateway = gateway.clone();
                // Counted open from the moment its head arrived until its response body is done.
                let open = tracker.open(req.version() == Version::HTTP_2);
                // Boxed: hyper keeps a slot the size of this future for every connection, busy or
                // idle (its h1 dispatcher's `in_flight`), and the request path's future is ~5 KiB;
                // boxed, an idle connection holds a pointer and a request pays one allocation.
                Box::pin(
                    async move { Ok::<_, Infallible>(gateway.handle(req, conn).await.map(|b| Open::new(b, open))) },
                )
            }
        });
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    match conn::drive(connection, |c| c.graceful_shutdown(), schedule, &tracker, drain).await {
        Ended::Finished(Ok(())) => {}
        Ended::Finished(Err(e)) => match conn::parser_refusal(&*e) {
            // hyper answered a bare 400/414/431 itself: audit and count it like any refusal.
            Some(refusal) => gateway.refused_by_parser(conn, refusal.status, refusal.reason),
            None => tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error"),
        },
        Ended::Dropped(why) => tracing::debug!(peer = %conn.peer, ?why, "connection closed by its deadline"),
    }
}

/// Request headers that carry credentials.
fn sensitive_headers() -> Arc<[HeaderName]> {
    static NAMES: OnceLock<Arc<[HeaderName]>> = OnceLock::new();
    NAMES
        .get_or_init(|| {
            Arc::new([
                header::AUTHORIZATION,
                header::PROXY_AUTHORIZATION,
                header::COOKIE,
                HeaderName::from_static("ocp-apim-subscription-key"),
            ])
        })
        .clone()
}
