//! An upstream response body read straight from its connection by whoever polls it (hyper's
//! server, writing to the client), and the connection handed back once the body ended exactly
//! where its framing said.

use super::{
    Conn, Error,
    framing::{Chunked, Decoded, Framing},
};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::{
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

/// Where a finished connection goes (the upstream's pool).
pub trait GiveBack: Send + Sync {
    /// Takes back a connection whose response was read to its end.
    fn give_back(&self, conn: Conn);
}

/// The body of an upstream response.
pub struct ResponseBody {
    conn: Option<Conn>,
    state: State,
    /// The connection may carry another request once this body is done.
    keep_alive: bool,
    pool: Option<Arc<dyn GiveBack>>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody").field("state", &self.state).field("keep_alive", &self.keep_alive).finish()
    }
}

impl ResponseBody {
    pub(super) fn new(conn: Conn, framing: Framing, keep_alive: bool) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::Size),
            Framing::UntilClose => State::UntilClose,
        };
        ResponseBody { conn: Some(conn), state, keep_alive, pool: None }
    }

    /// Hands the connection to `pool` when the body is done (at once, if it has none).
    pub fn give_back_to(mut self, pool: Arc<dyn GiveBack>) -> Self {
        self.pool = Some(pool);
        if matches!(self.state, State::Done) {
            self.release();
        }
        self
    }

    /// The body ended: the connection goes back when it may carry another request and nothing
    /// past the response was received; otherwise it is closed.
    fn release(&mut self) {
        self.state = State::Done;
        let Some(conn) = self.conn.take() else { return };
        if self.keep_alive
            && conn.buf.is_empty()
            && let Some(pool) = &self.pool
        {
            pool.give_back(conn);
        }
    }

    /// The body failed: the connection is closed.
    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                this.state = State::Done;
                return Poll::Ready(None);
            };
            match &mut this.state {
                State::Done => {
                    this.release();
                    return Poll::Ready(None);
                }
                State::Length(0) => this.release(),
                State::Length(left) if !conn.buf.is_empty() => {
                    let take = usize::try_from(*left).map_or(conn.buf.len(), |l| l.min(conn.buf.len()));
                    *left -= take as u64;
                    let data = conn.buf.split_to(take).freeze();
                    if *left == 0 {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::UntilClose if !conn.buf.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                }
                State::Chunked(chunked) => match chunked.decode(&mut conn.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::End) => this.release(),
                    Ok(Decoded::NeedMore) => match ready!(conn.poll_read(cx)) {
                        Ok(0) => return this.fail(Error::Closed),
                        Ok(_) => {}
                        Err(e) => return this.fail(e.into()),
                    },
                    Err(malformed) => return this.fail(malformed.into()),
                },
                State::Length(_) | State::UntilClose => match ready!(conn.poll_read(cx)) {
                    Ok(0) if matches!(this.state, State::UntilClose) => this.release(),
                    Ok(0) => return this.fail(Error::Closed),
                    Ok(_) => {}
                    Err(e) => return this.fail(e.into()),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            State::Chunked(_) | State::UntilClose => SizeHint::default(),
        }
    }
}
