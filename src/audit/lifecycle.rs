//! The request lifecycle: a [`Pending`] record from the request head to the end of the response
//! body ([`Tracked`]), counted in the metrics once and written to the audit stream once, whichever
//! way the request ends.

use super::{Auditor, Record, writer::Done};
use crate::body::{Body, BoxError, Counters};
use crate::error::Outcome;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::{
    borrow::Cow,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
};

/// One request's record from the moment its head arrived until its response body ended: it is
/// counted in the metrics once, when the response head is ready ([`Pending::answered`]), and
/// written to the audit stream once, when it is dropped — at the end of the response body
/// ([`Tracked`]), or earlier when the client went away before any answer (then as
/// `client_closed` with status 499, so no request ever goes unrecorded). Also keeps
/// `airgate_in_flight_requests` exact whichever way the request ends.
#[derive(Debug)]
pub struct Pending {
    record: Record,
    counters: Arc<Counters>,
    auditor: Auditor,
    answered: bool,
}

impl Pending {
    /// Starts tracking a request.
    pub fn new(record: Record, counters: Arc<Counters>, auditor: Auditor) -> Self {
        auditor.metrics.in_flight.inc();
        Pending { record, counters, auditor, answered: false }
    }

    /// The record, for the phases to fill in.
    pub fn record(&mut self) -> &mut Record {
        &mut self.record
    }

    /// The response head is ready with `status`: counts the request.
    pub fn answered(&mut self, status: http::StatusCode) {
        self.record.status = status.as_u16();
        self.count(status);
    }

    fn count(&mut self, status: http::StatusCode) {
        self.answered = true;
        let m = &self.auditor.metrics;
        m.in_flight.dec();
        let r = &self.record;
        let pipeline = r.identity.as_ref().map(|i| i.pipeline.as_str());
        let rate_limited = r.outcome == Outcome::RateLimited;
        m.observe_request(r.route.as_deref(), pipeline, status, r.outcome.as_str(), rate_limited, r.start.elapsed());
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.answered {
            self.record.outcome = Outcome::ClientClosed;
            self.record.reason = Some(Cow::Borrowed("client_closed"));
            self.record.status = CLIENT_CLOSED.as_u16();
            self.count(CLIENT_CLOSED);
        }
        let start = self.record.start;
        let done = Done {
            duration_ms: start.elapsed().as_secs_f64() * 1000.0,
            bytes_in: self.counters.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.counters.bytes_out.load(Ordering::Relaxed),
            record: std::mem::replace(&mut self.record, Record::vacant(start)),
        };
        self.auditor.submit(done);
    }
}

/// Status recorded when the client went away before an answer (nginx's convention).
const CLIENT_CLOSED: http::StatusCode = match http::StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => http::StatusCode::BAD_REQUEST,
};

/// A response body that writes the request's audit record when it ends or is dropped (the
/// client went away), with the bytes actually sent.
#[derive(Debug)]
pub struct Tracked {
    inner: Body,
    pending: Option<Pending>,
}

impl Tracked {
    /// Wraps a response body with its pending audit record.
    pub fn new(inner: Body, pending: Pending) -> Self {
        Tracked { inner, pending: Some(pending) }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(p)) = (frame.data_ref(), &this.pending) {
                    p.counters.bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            // The body is complete: write the record now rather than when hyper drops the body.
            Poll::Ready(None) => drop(this.pending.take()),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
