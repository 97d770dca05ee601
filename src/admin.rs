//! The admin listener (separate from the proxy): `/metrics` (Prometheus text format), `/healthz`
//! (200 while the process serves) and `/readyz` (200 when every issuer has keys and every
//! upstream with a credential holds a valid token; 503 with a JSON list of what is missing, and
//! while draining).

use crate::stack::Gateway;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use std::{convert::Infallible, sync::Arc, time::Duration};
use tokio::{net::TcpListener, sync::watch};

/// Answers one admin request.
pub fn respond<B>(gateway: &Gateway, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", gateway.metrics().render()),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let mut missing = gateway.snapshot().not_ready();
            if gateway.is_draining() {
                missing.insert(0, "draining".to_owned());
            }
            let status = if missing.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            let body = serde_json::json!({ "ready": missing.is_empty(), "missing": missing });
            reply(status, "application/json", format!("{body}\n"))
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found; try /metrics, /healthz, /readyz\n".into()),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Serves the admin listener until `shutdown` flips.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder.http1_only());
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let gateway = gateway.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = respond(&gateway, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
