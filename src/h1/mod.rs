//! HTTP/1.1 on the upstream leg, built for a proxy: the request's own task writes the head and
//! body to a kept-alive upstream connection and reads the response back — no connection task, no
//! channel between a request and its connection, one parse of the response head, header values
//! sliced out of the read buffer instead of copied.
//!
//! Why not hyper's `client::conn::http1` here: it runs every connection as a task of its own and
//! hands each request and response across a channel, ~12 k of a warm request's ~78 k instructions
//! (BENCHMARKS.md). The client-facing side stays hyper's server: that is the parser an attacker
//! talks to. This side talks to one configured upstream, and is strict where it parses
//! ([`framing`]): a response that could be framed two ways fails (502) and its connection is
//! closed, and a connection is reused only when its response ended exactly where its framing
//! said, with no byte left over.
//!
//! While the request body is still being sent, the connection is watched for an early answer (an
//! upstream may refuse a large upload before reading it): the response is read, the rest of the
//! body is not sent, and the connection is not reused.

mod body;
pub mod framing;

pub use body::{GiveBack, ResponseBody};

use bytes::{Bytes, BytesMut};
use framing::{Head, Malformed, parse_head};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, header};
use http_body::{Body, Frame};
use std::{
    future::{Future as _, poll_fn},
    io,
    pin::Pin,
    task::{Context, Poll, Waker},
};
use tokio::{io::AsyncReadExt, net::TcpStream};

/// A boxed request-body error (the same type as the body module's; h1 depends on nothing else
/// in the crate).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Read buffer size; grown when a head needs more.
const READ_BUF: usize = 8 * 1024;
/// Request body bytes gathered into the head's write when they are ready at once.
const COALESCE: usize = 64 * 1024;

/// One upstream connection, idle between requests.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The head (and ready body bytes) being written; kept for its capacity.
    out: Vec<u8>,
    /// It served a response before: a failure before any answer may be the upstream closing it
    /// while it was idle, and the request may be sent again on a new connection.
    reused: bool,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the connection failed.
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before the response was complete.
    #[error("upstream closed the connection before the response was complete")]
    Closed,
    /// The response could not be framed.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// The request body (the client's) failed; its error is the source.
    #[error("request body failed")]
    Body(#[source] BoxError),
    /// The request body held more or fewer bytes than its `Content-Length`.
    #[error("request body length differs from its content-length")]
    BodyLength,
}

/// A failed exchange, with the request body back when it is safe to send the request again on a
/// new connection (the reused one was closed under it before anything was answered or read
/// from the body).
#[derive(Debug)]
pub struct Failed<B> {
    /// What went wrong.
    pub error: Error,
    /// The untouched body, when the request may be retried.
    pub retry: Option<B>,
}

/// The header fields of a request to send: a map, or a map seen through the gateway's rewrite
/// (written straight from the client's map, no map edited). The encoder skips `Content-Length`
/// and `Transfer-Encoding` itself: the framing comes from the body.
pub trait Fields {
    /// Calls `f` with every field, in order.
    fn each(&self, f: impl FnMut(&HeaderName, &HeaderValue));
    /// A field named `name` is sent.
    fn has(&self, name: &HeaderName) -> bool;
}

impl Fields for HeaderMap {
    fn each(&self, mut f: impl FnMut(&HeaderName, &HeaderValue)) {
        for (name, value) in self {
            f(name, value);
        }
    }

    fn has(&self, name: &HeaderName) -> bool {
        self.contains_key(name)
    }
}

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    /// No body, no `Content-Length`.
    None,
    /// `Content-Length: n`.
    Exact(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

impl Length {
    /// From the body's size hint: exact sizes as `Content-Length` (an empty body only for methods
    /// that carry one, or when the client sent `Content-Length: 0`), anything else chunked.
    fn of<B: Body>(method: &Method, fields: &impl Fields, body: &B) -> Length {
        match body.size_hint().exact() {
            Some(0) if body.is_end_stream() => {
                let carries = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
                if carries || fields.has(&header::CONTENT_LENGTH) { Length::Exact(0) } else { Length::None }
            }
            Some(n) => Length::Exact(n),
            None => Length::Chunked,
        }
    }
}

impl Conn {
    /// A connection over `io` (connected, `TCP_NODELAY` set by the caller).
    pub fn new(io: TcpStream) -> Self {
        Conn { io, buf: BytesMut::with_capacity(READ_BUF), out: Vec::with_capacity(1024), reused: false }
    }

    /// The idle connection is still open: the upstream has neither closed it nor sent anything
    /// (unasked bytes make it unusable). Costs no system call unless the socket became readable.
    pub fn is_open(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends a request (`target` in origin form, `Content-Length`/`Transfer-Encoding` set from
    /// the body) and reads the response head; the body streams from the connection.
    pub async fn send<B>(
        mut self,
        method: &Method,
        target: &str,
        fields: &impl Fields,
        mut body: B,
    ) -> Result<Response<ResponseBody>, Failed<B>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let length = Length::of(method, fields, &body);
        encode_head(&mut self.out, method, target, fields, length);
        let head_request = method == Method::HEAD;
        let idempotent = matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
        );
        let mut sending =
            Sending { length, sent: 0, done: matches!(length, Length::None | Length::Exact(0)), big: None };
        let mut touched = false;

        // Body bytes that are ready now go out with the head, in one write.
        if !sending.done {
            touched = true;
            if let Err(error) = self.gather(&mut body, &mut sending).await {
                return Err(Failed { error, retry: None });
            }
        }
        let retry = |conn: &Conn, error: Error, body: B, safe: bool| {
            let retry = (conn.reused && !touched && conn.buf.is_empty() && safe).then_some(body);
            Err(Failed { error, retry })
        };
        let mut answered_early = match self.flush(&mut sending).await {
            Ok(early) => early,
            // Nothing of the answer was read: a reused connection closed while idle.
            Err(error) => return retry(&self, error, body, true),
        };
        while !(answered_early || sending.done && self.out.is_empty()) {
            let step = if sending.done {
                self.flush(&mut sending).await
            } else {
                self.next_frame_watching(&mut body, &mut sending).await
            };
            match step {
                Ok(early) => answered_early = early,
                Err(error) => return Err(Failed { error, retry: None }),
            }
        }

        let head = loop {
            match parse_head(&self.buf, head_request) {
                Ok(Some(head)) if head.interim => {
                    let _ = self.buf.split_to(head.len);
                }
                Ok(Some(head)) => break head,
                Ok(None) => match self.read().await {
                    Ok(0) if self.buf.is_empty() => return retry(&self, Error::Closed, body, idempotent),
                    Ok(0) => return Err(Failed { error: Error::Closed, retry: None }),
                    Ok(_) => {}
                    Err(e) if self.buf.is_empty() => return retry(&self, e.into(), body, idempotent),
                    Err(e) => return Err(Failed { error: e.into(), retry: None }),
                },
                Err(malformed) => return Err(Failed { error: malformed.into(), retry: None }),
            }
        };
        self.finish(head, sending.done).map_err(|error| Failed { error, retry: None })
    }

    /// The response from its parsed head: the head split off the buffer, the body left to stream.
    fn finish(mut self, head: Head, request_sent: bool) -> Result<Response<ResponseBody>, Error> {
        let bytes = self.buf.split_to(head.len).freeze();
        let (framing, keep_alive) = (head.framing, head.keep_alive && request_sent);
        let parts = head.into_parts(&bytes)?;
        self.reused = true;
        Ok(Response::from_parts(parts, ResponseBody::new(self, framing, keep_alive)))
    }

    /// Appends body frames that are ready without waiting to `out`, up to [`COALESCE`] bytes or
    /// one large frame (held aside, not copied).
    async fn gather<B>(&mut self, body: &mut B, sending: &mut Sending) -> Result<(), Error>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        while !sending.done && sending.big.is_none() && self.out.len() < COALESCE {
            let polled = poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => Poll::Ready(None),
                Poll::Ready(frame) => Poll::Ready(Some(frame)),
            })
            .await;
            match polled {
                None => break,
                Some(frame) => sending.take(frame, &mut self.out)?,
            }
        }
        Ok(())
    }

    /// Waits for the next body frame and writes it, watching for an early answer meanwhile.
    async fn next_frame_watching<B>(&mut self, body: &mut B, sending: &mut Sending) -> Result<bool, Error>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let frame = tokio::select! {
            biased;
            readable = self.io.readable() => Err(readable),
            frame = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)) => Ok(frame),
        };
        match frame {
            Err(readable) => {
                readable?;
                self.read_answer()
            }
            Ok(frame) => {
                sending.take(frame, &mut self.out)?;
                self.gather(body, sending).await?;
                self.flush(sending).await
            }
        }
    }

    /// Writes what is pending: `out`, then a large frame held aside. True when the upstream
    /// answered before all of it was taken.
    async fn flush(&mut self, sending: &mut Sending) -> Result<bool, Error> {
        let out = std::mem::take(&mut self.out);
        let early = self.write_watching(&out).await;
        self.out = out;
        self.out.clear();
        if early? {
            return Ok(true);
        }
        if let Some(big) = sending.big.take() {
            if self.write_watching(&big).await? {
                return Ok(true);
            }
            if sending.length == Length::Chunked {
                // The chunk's CRLF goes out with whatever comes next.
                self.out.extend_from_slice(b"\r\n");
            }
        }
        Ok(false)
    }

    /// Writes all of `data`; while the upstream does not take it, reads what it says. True when
    /// a final response head arrived before everything was written (the rest is not sent).
    async fn write_watching(&mut self, data: &[u8]) -> Result<bool, Error> {
        let mut written = 0;
        while written < data.len() {
            match self.io.try_write(&data[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let readable = tokio::select! {
                        biased;
                        r = self.io.readable() => Some(r),
                        w = self.io.writable() => { w?; None }
                    };
                    if let Some(r) = readable {
                        r?;
                        if self.read_answer()? {
                            return Ok(true);
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Reads what the upstream sent while the request was still going out. True when it holds a
    /// complete final response head (interim ones are left for the response loop to skip).
    fn read_answer(&mut self) -> Result<bool, Error> {
        match self.io.try_read_buf(&mut self.buf) {
            Ok(0) => return Err(Error::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let mut at = 0;
        while let Some(head) = parse_head(&self.buf[at..], false)? {
            if !head.interim {
                return Ok(true);
            }
            at += head.len;
        }
        Ok(false)
    }

    /// Reads more into the buffer (0 at end of stream).
    async fn read(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_BUF / 2 {
            self.buf.reserve(READ_BUF);
        }
        self.io.read_buf(&mut self.buf).await
    }

    /// [`Conn::read`] from a poll function.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_BUF / 2 {
            self.buf.reserve(READ_BUF);
        }
        std::pin::pin!(self.io.read_buf(&mut self.buf)).poll(cx)
    }
}

/// Progress of the request body.
struct Sending {
    length: Length,
    sent: u64,
    done: bool,
    /// A frame too large to copy into the write buffer, written on its own after it.
    big: Option<Bytes>,
}

/// Frames larger than this are written from their own buffer instead of copied.
const BIG: usize = 16 * 1024;

impl Sending {
    /// Appends one polled frame to `out` in the body's framing.
    fn take<E: Into<BoxError>>(
        &mut self,
        frame: Option<Result<Frame<Bytes>, E>>,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        match frame {
            Some(Ok(frame)) => {
                // Trailers are never forwarded (the client's body already drops them).
                let Ok(data) = frame.into_data() else { return Ok(()) };
                if data.is_empty() {
                    return Ok(());
                }
                self.sent += data.len() as u64;
                let big = data.len() > BIG;
                match self.length {
                    Length::Exact(n) if self.sent > n => return Err(Error::BodyLength),
                    Length::Chunked => {
                        let mut size = [0u8; 16];
                        out.extend_from_slice(hex(data.len(), &mut size));
                        out.extend_from_slice(b"\r\n");
                        if !big {
                            out.extend_from_slice(&data);
                            out.extend_from_slice(b"\r\n");
                        }
                    }
                    _ if !big => out.extend_from_slice(&data),
                    _ => {}
                }
                if big {
                    self.big = Some(data);
                }
                Ok(())
            }
            Some(Err(e)) => Err(Error::Body(e.into())),
            None => {
                self.done = true;
                match self.length {
                    Length::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
                    Length::Exact(n) if self.sent != n => return Err(Error::BodyLength),
                    _ => {}
                }
                Ok(())
            }
        }
    }
}

/// `n` in lowercase hex, written into `buf`.
fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = crate::text::HEX_DIGITS[n & 15];
        n >>= 4;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The request head in origin form; the framing header comes from `length`, never from the
/// client's `Content-Length` or `Transfer-Encoding`.
// Not inlined: its own phase in the instruction-count breakdown (benches/callgrind_phases.py).
#[inline(never)]
fn encode_head(out: &mut Vec<u8>, method: &Method, target: &str, fields: &impl Fields, length: Length) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    fields.each(|name, value| {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            return;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
    match length {
        Length::None => {}
        Length::Exact(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Length::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}
