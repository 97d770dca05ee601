//! What one client connection may hold (contract §3 "Connections"): a complete request head
//! within `header_read_timeout` of being accepted, and no connection kept without an open
//! request for longer than `header_read_timeout` (HTTP/1 keep-alive) or `idle_timeout` (HTTP/2:
//! closed with GOAWAY). Also tells which connection errors were requests refused by hyper's own
//! parser, so they can be audited.
//!
//! hyper's own HTTP/1 `header_read_timeout` is off: it arms a boxed timer for every keep-alive
//! request head (a clock read, an allocation, a timer-wheel insert and removal per request),
//! where this schedule's one timer per connection is only looked at when it fires.
//!
//! The rules are a pure schedule ([`Schedule::next`]); [`drive`] runs a connection future
//! against it; [`Tracker`] is what the request path touches — one counter increment when a
//! request arrives and one decrement (plus a clock read when the connection turns idle) when
//! its response body is done, via the [`Open`] body wrapper.

use bytes::Bytes;
use http::StatusCode;
use http_body::{Frame, SizeHint};
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{sync::watch, time::Instant};

/// After a graceful shutdown for a deadline, how long the connection may take to flush its
/// GOAWAY or last bytes before it is dropped (nothing is in flight then: this only bounds a
/// peer that stopped reading or never finished a head).
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// `idle_since` before the first request head arrived.
const NEVER: u64 = u64::MAX;

/// The connection's deadlines, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// When the connection was accepted.
    pub accepted: Instant,
    /// `header_read_timeout`: the first complete request head must arrive by `accepted + head`,
    /// and an HTTP/1 connection may go this long without an open request.
    pub head: Duration,
    /// `idle_timeout`: longest time an HTTP/2 connection may go without an open request (an
    /// HTTP/1 one gets `head`: its next request head is due within `header_read_timeout`).
    pub idle: Duration,
}

/// What the connection holds now, as its [`Tracker`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Requests open now.
    pub open: u32,
    /// When none is open: time after accept when the last one finished; `None` before the
    /// first request head.
    pub idle_since: Option<Duration>,
    /// The connection's requests are HTTP/2.
    pub http2: bool,
}

/// What the connection's timer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing to do before this instant.
    At(Instant),
    /// No complete request head within `header_read_timeout` of accept.
    HeadTimeout,
    /// No open request for `idle_timeout`.
    Idle,
}

impl Schedule {
    /// When to look first: no deadline can fall earlier (the head deadline is `head` after
    /// accept, an idle one at least `idle` after accept).
    pub fn first(&self) -> Instant {
        self.accepted + self.head.min(self.idle)
    }

    /// The decision at `now`, given what the connection holds.
    pub fn next(&self, now: Instant, state: State) -> Next {
        let State { open, idle_since, http2 } = state;
        let Some(idle_since) = idle_since.or((open > 0).then_some(Duration::ZERO)) else {
            let at = self.accepted + self.head;
            return if now >= at { Next::HeadTimeout } else { Next::At(at) };
        };
        let idle = if http2 { self.idle } else { self.head };
        if open > 0 {
            return Next::At(now + idle);
        }
        let at = self.accepted + idle_since + idle;
        if now >= at { Next::Idle } else { Next::At(at) }
    }
}

/// Open requests of one connection, shared between the connection's timer and its requests.
#[derive(Debug, Clone)]
pub struct Tracker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    accepted: Instant,
    open: AtomicU32,
    /// Nanoseconds after accept when the open count last fell to zero; [`NEVER`] before the
    /// first request.
    idle_since: AtomicU64,
    /// A request on this connection was HTTP/2.
    http2: AtomicBool,
}

impl Tracker {
    /// A tracker for a connection accepted at `accepted`.
    pub fn new(accepted: Instant) -> Self {
        Tracker {
            shared: Arc::new(Shared {
                accepted,
                open: AtomicU32::new(0),
                idle_since: AtomicU64::new(NEVER),
                http2: AtomicBool::new(false),
            }),
        }
    }

    /// A request head arrived (`http2`: as an HTTP/2 stream): the connection is busy until the
    /// returned guard is dropped.
    pub fn open(&self, http2: bool) -> StreamGuard {
        let s = &self.shared;
        s.open.fetch_add(1, Ordering::Relaxed);
        if s.idle_since.load(Ordering::Relaxed) == NEVER {
            s.idle_since.store(0, Ordering::Relaxed);
            s.http2.store(http2, Ordering::Relaxed);
        }
        StreamGuard { shared: self.shared.clone() }
    }

    fn state(&self) -> State {
        let s = &self.shared;
        let since = s.idle_since.load(Ordering::Relaxed);
        State {
            open: s.open.load(Ordering::Relaxed),
            idle_since: (since != NEVER).then(|| Duration::from_nanos(since)),
            http2: s.http2.load(Ordering::Relaxed),
        }
    }
}

/// Holds one request open (see [`Tracker::open`]).
#[derive(Debug)]
pub struct StreamGuard {
    shared: Arc<Shared>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let s = &self.shared;
        if s.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            let since = Instant::now().saturating_duration_since(s.accepted);
            s.idle_since.store(u64::try_from(since.as_nanos()).unwrap_or(NEVER - 1), Ordering::Relaxed);
        }
    }
}

/// A response body that keeps its request counted as open until the body is done or dropped.
#[derive(Debug)]
pub struct Open<B> {
    inner: B,
    guard: Option<StreamGuard>,
}

impl<B> Open<B> {
    /// Wraps `inner`, holding `guard` until the body ends.
    pub fn new(inner: B, guard: StreamGuard) -> Self {
        Open { inner, guard: Some(guard) }
    }
}

impl<B> http_body::Body for Open<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.guard = None;
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

/// How [`drive`] ended.
#[derive(Debug)]
pub enum Ended<E> {
    /// The connection future finished by itself (or after a graceful shutdown).
    Finished(Result<(), E>),
    /// Dropped: a deadline passed and the peer did not finish within [`CLOSE_GRACE`].
    Dropped(Next),
}

/// Polls `conn` until it finishes, enforcing `schedule`. `graceful` starts the connection's
/// graceful shutdown (GOAWAY for HTTP/2); it is called on a deadline and when `drain` flips.
pub async fn drive<C, E>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    schedule: Schedule,
    tracker: &Tracker,
    mut drain: watch::Receiver<bool>,
) -> Ended<E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut conn = std::pin::pin!(conn);
    let timer = tokio::time::sleep_until(schedule.first());
    let mut timer = std::pin::pin!(timer);
    let mut draining = *drain.borrow();
    if draining {
        graceful(conn.as_mut());
    }
    // Set once a deadline asked the connection to close: the reason, and whether the timer now
    // stands for the end of CLOSE_GRACE.
    let mut closing: Option<Next> = None;
    let mut timer_armed = true;
    loop {
        tokio::select! {
            biased;
            done = conn.as_mut() => return Ended::Finished(done),
            () = &mut timer, if timer_armed => {
                let now = Instant::now();
                let state = tracker.state();
                if let Some(why) = closing {
                    if state.open == 0 {
                        return Ended::Dropped(why);
                    }
                    // A request slipped in while closing: let it finish like a drained one.
                    timer_armed = false;
                    continue;
                }
                match schedule.next(now, state) {
                    Next::At(at) => timer.as_mut().reset(at),
                    why @ (Next::HeadTimeout | Next::Idle) => {
                        graceful(conn.as_mut());
                        closing = Some(why);
                        timer.as_mut().reset(now + CLOSE_GRACE);
                    }
                }
            }
            changed = drain.changed(), if !draining => {
                if changed.is_err() || *drain.borrow() {
                    draining = true;
                    graceful(conn.as_mut());
                }
            }
        }
    }
}

/// A request hyper's HTTP/1 parser refused and answered itself (a bare response, no body): the
/// gateway never saw it as a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParserRefusal {
    /// The status hyper answered with.
    pub status: StatusCode,
    /// The audit reason, naming the parse error class.
    pub reason: &'static str,
}

/// The refusal behind a connection error, when hyper answered one (400, 414, 431).
pub fn parser_refusal(err: &(dyn std::error::Error + 'static)) -> Option<ParserRefusal> {
    let mut cur = Some(err);
    let e = loop {
        let e = cur?;
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            break h;
        }
        cur = e.source();
    };
    if !e.is_parse() {
        return None;
    }
    // hyper's parse error kinds are private; their descriptions are its stable Display text
    // (tests/e2e_connections.rs checks every class against a real hyper).
    let text = e.to_string();
    let (status, reason) = match text.as_str() {
        "message head is too large" => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "head_too_large"),
        "URI too long" => (StatusCode::URI_TOO_LONG, "parse_uri_too_long"),
        "invalid URI" => (StatusCode::BAD_REQUEST, "parse_uri"),
        "invalid HTTP method parsed" => (StatusCode::BAD_REQUEST, "parse_method"),
        "invalid HTTP version parsed" => (StatusCode::BAD_REQUEST, "parse_version"),
        "invalid HTTP header parsed" => (StatusCode::BAD_REQUEST, "parse_header"),
        "invalid content-length parsed" => (StatusCode::BAD_REQUEST, "parse_content_length"),
        "invalid transfer-encoding parsed" | "unexpected transfer-encoding parsed" => {
            (StatusCode::BAD_REQUEST, "parse_transfer_encoding")
        }
        // Other parse kinds (an HTTP/2 preface on HTTP/1, internal) get no answer from hyper.
        _ => return None,
    };
    Some(ParserRefusal { status, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule { accepted: Instant::now(), head: Duration::from_secs(10), idle: Duration::from_secs(60) }
    }

    fn st(open: u32, idle_since: Option<Duration>, http2: bool) -> State {
        State { open, idle_since, http2 }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_head_is_due_within_the_head_timeout_of_accept() {
        let s = schedule();
        for http2 in [false, true] {
            assert_eq!(s.next(s.accepted, st(0, None, http2)), Next::At(s.accepted + s.head));
            assert_eq!(s.next(s.accepted + s.head, st(0, None, http2)), Next::HeadTimeout);
        }
        // Once a request arrived the head deadline no longer applies.
        let now = s.accepted + s.head;
        assert_eq!(s.next(now, st(1, None, true)), Next::At(now + s.idle));
        assert_eq!(s.next(now, st(1, None, false)), Next::At(now + s.head));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_look_is_at_the_earlier_of_both_timeouts() {
        let s = Schedule { idle: Duration::from_secs(1), ..schedule() };
        assert_eq!(s.first(), s.accepted + s.idle);
        assert_eq!(s.next(s.first(), st(0, None, false)), Next::At(s.accepted + s.head));
        assert_eq!(schedule().first(), s.accepted + s.head);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_when_the_last_request_finished() {
        let s = schedule();
        let since = Duration::from_secs(30);
        // HTTP/2: `idle_timeout` without an open stream.
        assert_eq!(s.next(s.accepted + since, st(0, Some(since), true)), Next::At(s.accepted + since + s.idle));
        assert_eq!(s.next(s.accepted + since + s.idle, st(0, Some(since), true)), Next::Idle);
        // HTTP/1 keep-alive: the next head is due within `header_read_timeout`.
        assert_eq!(s.next(s.accepted + since, st(0, Some(since), false)), Next::At(s.accepted + since + s.head));
        assert_eq!(s.next(s.accepted + since + s.head, st(0, Some(since), false)), Next::Idle);
        // An open request keeps the connection however long ago the last one ended.
        let late = s.accepted + Duration::from_secs(600);
        assert_eq!(s.next(late, st(2, Some(since), true)), Next::At(late + s.idle));
        assert_eq!(s.next(late, st(2, Some(since), false)), Next::At(late + s.head));
    }

    #[tokio::test(start_paused = true)]
    async fn the_tracker_records_when_the_connection_turned_idle() {
        let t = Tracker::new(Instant::now());
        assert_eq!(t.state(), st(0, None, false));
        let a = t.open(true);
        let b = t.open(true);
        assert_eq!(t.state(), st(2, Some(Duration::ZERO), true));
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(a);
        assert_eq!(t.state(), st(1, Some(Duration::ZERO), true));
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(b);
        assert_eq!(t.state(), st(0, Some(Duration::from_secs(7)), true));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_http1_connection_is_shut_down_at_the_head_timeout() {
        let s = Schedule { accepted: Instant::now(), head: Duration::from_secs(1), idle: Duration::from_secs(60) };
        let t = Tracker::new(s.accepted);
        let (_tx, rx) = watch::channel(false);
        // One request that ends after 3 s, then nothing.
        let guard = t.open(false);
        let release = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(guard);
            std::future::pending::<Result<(), ()>>().await
        };
        let shut = std::cell::Cell::new(None);
        let ended = drive(release, |_| shut.set(Some(Instant::now())), s, &t, rx).await;
        assert!(matches!(ended, Ended::Dropped(Next::Idle)), "{ended:?}");
        // Closed one to two head timeouts after turning idle (while the request was open the
        // timer looked once per head timeout), not after `idle_timeout`.
        let shut = shut.get().expect("never shut down");
        assert!(shut >= s.accepted + Duration::from_secs(4), "{:?}", shut - s.accepted);
        assert!(shut <= s.accepted + Duration::from_secs(5), "{:?}", shut - s.accepted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_shut_down_then_dropped() {
        let s = Schedule { accepted: Instant::now(), head: Duration::from_secs(1), idle: Duration::from_secs(5) };
        let t = Tracker::new(s.accepted);
        let (_tx, rx) = watch::channel(false);
        let shut = std::cell::Cell::new(0);
        let ended = drive(std::future::pending::<Result<(), ()>>(), |_| shut.set(shut.get() + 1), s, &t, rx).await;
        assert!(matches!(ended, Ended::Dropped(Next::HeadTimeout)));
        assert_eq!(shut.get(), 1);
        assert_eq!(Instant::now(), s.accepted + s.head + CLOSE_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_not_closed_for_idleness() {
        let s = Schedule { accepted: Instant::now(), head: Duration::from_secs(1), idle: Duration::from_secs(5) };
        let t = Tracker::new(s.accepted);
        let guard = t.open(false);
        let (_tx, rx) = watch::channel(false);
        let conn = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(guard);
            Ok::<(), ()>(())
        };
        let ended = drive(conn, |_| panic!("closed while a request was open"), s, &t, rx).await;
        assert!(matches!(ended, Ended::Finished(Ok(()))));
    }
}
