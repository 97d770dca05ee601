//! Body types on the proxy path: [`Body`] for responses (the gateway's own or the upstream's,
//! streamed), [`Inbound`] for the client's request body as received, and [`RequestBody`] for
//! requests toward the upstream (streamed, limited to `max_request_body`, counted for the audit
//! log, trailers dropped).

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

/// Boxed error for body streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: empty, one buffer, or the upstream's stream.
#[derive(Debug)]
pub enum Body {
    /// Nothing.
    Empty,
    /// A single buffer (taken on first poll).
    Full(Option<Bytes>),
    /// Streamed from the upstream (the pooled client).
    Upstream(Incoming),
    /// Streamed from the upstream over the lean HTTP/1.1 pool ([`h1`](crate::h1)).
    Pooled(crate::h1::ResponseBody),
}

impl Body {
    /// A body of one buffer.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b = bytes.into();
        if b.is_empty() { Body::Empty } else { Body::Full(Some(b)) }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Upstream(inner) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
            Body::Pooled(inner) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Upstream(inner) => inner.is_end_stream(),
            Body::Pooled(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Upstream(inner) => inner.size_hint(),
            Body::Pooled(inner) => inner.size_hint(),
        }
    }
}

/// The client's request body as the gateway received it: hyper's stream from a connection, or
/// any other body from an in-process caller (the layer tests). An enum rather than a box, so a
/// request from a socket costs no allocation for it.
#[derive(Debug)]
pub enum Inbound {
    /// From one of the gateway's own connections.
    Hyper(Incoming),
    /// Any other body.
    Other(UnsyncBoxBody<Bytes, BoxError>),
}

impl Inbound {
    /// Wraps any body.
    pub fn other<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Inbound::Other(body.map_err(Into::into).boxed_unsync())
    }
}

impl From<Incoming> for Inbound {
    fn from(body: Incoming) -> Self {
        Inbound::Hyper(body)
    }
}

impl http_body::Body for Inbound {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Inbound::Hyper(inner) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
            Inbound::Other(inner) => Pin::new(inner).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inbound::Hyper(inner) => inner.is_end_stream(),
            Inbound::Other(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inbound::Hyper(inner) => inner.size_hint(),
            Inbound::Other(inner) => inner.size_hint(),
        }
    }
}

/// Byte counters shared between a body and the request's audit record.
#[derive(Debug, Default)]
pub struct Counters {
    /// Request body bytes read from the client.
    pub bytes_in: AtomicU64,
    /// Response body bytes sent to the client.
    pub bytes_out: AtomicU64,
    /// The request body grew past `max_request_body` mid-stream.
    pub too_large: AtomicBool,
    /// The request body's last read from the client is still waiting for bytes: when a
    /// deadline passes now, the client is the slow party (408), not the upstream (504).
    pub awaiting_client: AtomicBool,
}

/// The error a [`RequestBody`] ends with when it grows past its limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit")]
pub struct BodyTooLarge;

/// The error a [`RequestBody`] ends with when reading the client's body failed (malformed
/// chunked framing, the client went away mid-body): the client's fault, never the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("reading the request body from the client failed")]
pub struct ClientBodyError {
    /// The connection closed before the body was complete (otherwise: malformed framing).
    pub incomplete: bool,
    #[source]
    source: BoxError,
}

/// The client's request body on its way upstream: streamed, limited, counted.
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<Inbound>,
    limit: u64,
    counters: Arc<Counters>,
}

impl RequestBody {
    /// Wraps the client's body. `None` sends no body.
    pub fn new(inner: Option<Inbound>, limit: u64, counters: Arc<Counters>) -> Self {
        RequestBody { inner, limit, counters }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(inner).poll_frame(cx);
        this.counters.awaiting_client.store(polled.is_pending(), Ordering::Relaxed);
        match polled {
            // Request trailers are never forwarded (contract §3): they could carry the very
            // headers the rewrite strips (`Authorization`, `X-Airflow-*`) past it. Trailers are
            // the last frame, so the body ends here.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {
                this.inner = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let total =
                        this.counters.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
                    if total > this.limit {
                        this.counters.too_large.store(true, Ordering::Relaxed);
                        this.inner = None;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.inner = None;
                let incomplete =
                    e.downcast_ref::<hyper::Error>().is_some_and(|e| e.is_incomplete_message() || has_eof(e));
                Poll::Ready(Some(Err(Box::new(ClientBodyError { incomplete, source: e }))))
            }
            Poll::Ready(None) => {
                this.inner = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

fn has_eof(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
}
