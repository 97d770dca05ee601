//! The gateway's own upstream HTTP/1.1 (`src/h1`) over real loopback sockets, against an upstream
//! that plays a script of raw bytes: what goes on the wire (framing headers set by the gateway,
//! never the client's; chunked request bodies), how responses are framed (chunked, until close,
//! `HEAD`, interim 1xx, early answers), and that a connection is never reused when a response was
//! framed two ways, left bytes over, or was cut short — the response desync cases a shared
//! upstream connection must not fall for.

use airgate::{
    body::{Counters, Inbound, RequestBody},
    upstream::pool::Http1Pool,
};
use bytes::Bytes;
use http::Request;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Full, StreamBody};
use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// What the upstream does with one request.
#[derive(Clone)]
enum Reply {
    /// Reads the request, writes these bytes.
    Send(&'static [u8]),
    /// Reads the request, writes these bytes, closes.
    SendClose(&'static [u8]),
    /// Reads the request, closes without answering.
    Close,
    /// Reads only the head, answers with these bytes and reads nothing more for 5 s.
    Early(&'static [u8]),
}

const OK: Reply = Reply::Send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");

struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Raw requests received (head and body), in order.
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// An upstream whose n-th connection plays `scripts[n]` (one reply per request); connections past
/// the scripts answer `OK` to everything.
async fn upstream(scripts: Vec<Vec<Reply>>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (a, r) = (accepted.clone(), requests.clone());
    let scripts = Arc::new(Mutex::new(VecDeque::from(scripts)));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            let script = scripts.lock().unwrap().pop_front().unwrap_or_else(|| vec![OK; 64]);
            tokio::spawn(play(stream, script, r.clone()));
        }
    });
    Upstream { addr, accepted, requests }
}

async fn play(mut s: TcpStream, script: Vec<Reply>, requests: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut buf = Vec::new();
    for reply in script {
        let Some(head_end) = read_until(&mut s, &mut buf, |b| find(b, b"\r\n\r\n").map(|i| i + 4)).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        if let Reply::Early(bytes) = reply {
            requests.lock().unwrap().push(buf[..head_end].to_vec());
            let _ = s.write_all(bytes).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            return;
        }
        let end = if let Some(n) = head.split("content-length: ").nth(1) {
            let n: usize = n.split("\r\n").next().unwrap().parse().unwrap();
            read_until(&mut s, &mut buf, |b| (b.len() >= head_end + n).then_some(head_end + n)).await
        } else if head.contains("transfer-encoding: chunked") {
            read_until(&mut s, &mut buf, |b| find(&b[head_end..], b"0\r\n\r\n").map(|i| head_end + i + 5)).await
        } else {
            Some(head_end)
        };
        let Some(end) = end else { return };
        requests.lock().unwrap().push(buf.drain(..end).collect());
        match reply {
            Reply::Send(bytes) => {
                if s.write_all(bytes).await.is_err() {
                    return;
                }
            }
            Reply::SendClose(bytes) => {
                let _ = s.write_all(bytes).await;
                return;
            }
            Reply::Close | Reply::Early(_) => return,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads into `buf` until `done` finds an end in it; `None` when the peer closed first.
async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, done: impl Fn(&[u8]) -> Option<usize>) -> Option<usize> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = done(buf) {
            return Some(end);
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn pool(addr: SocketAddr) -> Arc<Http1Pool> {
    let authority = addr.to_string().parse().unwrap();
    Http1Pool::new(&authority, Duration::from_secs(2), Duration::from_secs(60), 8).unwrap()
}

fn request(method: &str, body: Option<Inbound>) -> Request<RequestBody> {
    Request::builder()
        .method(method)
        .uri("/r")
        .header("host", "upstream.test")
        .body(RequestBody::new(body, u64::MAX, Arc::new(Counters::default())))
        .unwrap()
}

/// One request; the status and the whole body, or the error's text.
async fn exchange(pool: &Arc<Http1Pool>, req: Request<RequestBody>) -> Result<(u16, Bytes), String> {
    let resp = pool.send(req).await.map_err(|(e, _)| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body))
}

async fn get(pool: &Arc<Http1Pool>) -> Result<(u16, Bytes), String> {
    exchange(pool, request("GET", None)).await
}

fn sent(up: &Upstream, n: usize) -> String {
    String::from_utf8_lossy(&up.requests.lock().unwrap()[n]).into_owned()
}

#[tokio::test]
async fn a_chunked_response_is_decoded_and_the_connection_reused() {
    let chunked = Reply::Send(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n",
    );
    let up = upstream(vec![vec![chunked.clone(), chunked]]).await;
    let pool = pool(up.addr);
    assert_eq!(get(&pool).await.unwrap(), (200, Bytes::from_static(b"abcde")));
    assert_eq!(get(&pool).await.unwrap(), (200, Bytes::from_static(b"abcde")));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_response_framed_two_ways_fails_and_its_connection_is_closed() {
    for smuggled in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 40\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, identity\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx: a\r\n folded\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;a\nb\r\nok\r\n0\r\n\r\n",
    ] {
        let up = upstream(vec![vec![Reply::Send(smuggled)]]).await;
        let pool = pool(up.addr);
        let refused = get(&pool).await;
        assert!(refused.is_err(), "{:?} was accepted: {refused:?}", String::from_utf8_lossy(smuggled));
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(get(&pool).await.unwrap().1, "ok");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2, "the refused connection was reused");
    }
}

#[tokio::test]
async fn bytes_after_a_response_are_never_read_as_the_next_one() {
    // In the same segment as the response, and a moment after it.
    let up = upstream(vec![
        vec![Reply::Send(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret",
        )],
        vec![OK, Reply::Send(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret")],
    ])
    .await;
    let pool = pool(up.addr);
    assert_eq!(get(&pool).await.unwrap().1, "ok");
    assert_eq!(pool.idle_count(), 0, "a connection with bytes left over went back");
    assert_eq!(get(&pool).await.unwrap().1, "ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unasked_bytes_on_an_idle_connection_retire_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let first = a.fetch_add(1, Ordering::SeqCst) == 0;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_until(&mut s, &mut buf, |b| find(b, b"\r\n\r\n").map(|i| i + 4)).await.is_some() {
                    buf.clear();
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                    if first {
                        // A stray response nobody asked for, after the first one was read.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret").await.unwrap();
                    }
                }
            });
        }
    });
    let pool = pool(addr);
    assert_eq!(get(&pool).await.unwrap().1, "ok");
    for _ in 0..200 {
        if pool.idle_open_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pool.idle_open_count(), 0, "a connection that sent unasked bytes looks usable");
    assert_eq!(get(&pool).await.unwrap().1, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_framing_headers_on_the_wire_are_the_gateways_own() {
    let up = upstream(vec![]).await;
    let pool = pool(up.addr);
    // The client's Content-Length and Transfer-Encoding never reach the wire: the length is the
    // body's own.
    let mut req = request("POST", Some(Inbound::other(Full::new(Bytes::from_static(b"ab")))));
    req.headers_mut().insert("content-length", "5".parse().unwrap());
    req.headers_mut().append("content-length", "2".parse().unwrap());
    req.headers_mut().insert("transfer-encoding", "chunked".parse().unwrap());
    assert_eq!(exchange(&pool, req).await.unwrap().1, "ok");
    let wire = sent(&up, 0).to_ascii_lowercase();
    assert_eq!(wire.matches("content-length").count(), 1, "{wire}");
    assert!(wire.contains("\r\ncontent-length: 2\r\n") && !wire.contains("transfer-encoding"), "{wire}");
    assert!(wire.ends_with("\r\n\r\nab"), "{wire}");

    // An empty POST says so; an empty GET sends no length at all.
    exchange(&pool, request("POST", None)).await.unwrap();
    assert!(sent(&up, 1).contains("\r\ncontent-length: 0\r\n"), "{}", sent(&up, 1));
    get(&pool).await.unwrap();
    assert!(!sent(&up, 2).contains("content-length"), "{}", sent(&up, 2));
    assert_eq!(sent(&up, 2).lines().next().unwrap(), "GET /r HTTP/1.1");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_of_unknown_length_is_sent_chunked() {
    let up = upstream(vec![]).await;
    let pool = pool(up.addr);
    let frames = futures_util::stream::iter(
        [&b"ab"[..], b"", b"cde"].map(|d| Ok::<_, Infallible>(Frame::data(Bytes::from_static(d)))),
    );
    let req = request("POST", Some(Inbound::other(StreamBody::new(frames))));
    assert_eq!(exchange(&pool, req).await.unwrap().1, "ok");
    let wire = sent(&up, 0);
    assert!(wire.contains("\r\ntransfer-encoding: chunked\r\n"), "{wire}");
    assert!(wire.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"), "{wire:?}");
    // The body ended where its framing said: the connection is reused.
    get(&pool).await.unwrap();
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

/// A body whose size hint says `claimed` bytes and which yields `actual`.
struct Lying {
    claimed: u64,
    actual: Option<Bytes>,
}

impl http_body::Body for Lying {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.actual.take().map(|d| Ok(Frame::data(d))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.claimed)
    }
}

#[tokio::test]
async fn a_body_longer_or_shorter_than_its_length_is_refused() {
    for (claimed, actual) in [(2, &b"abcd"[..]), (4, b"ab")] {
        let up = upstream(vec![]).await;
        let pool = pool(up.addr);
        let body = Lying { claimed, actual: Some(Bytes::from_static(actual)) };
        let err = exchange(&pool, request("POST", Some(Inbound::other(body)))).await.unwrap_err();
        assert!(err.contains("content-length"), "{claimed} vs {}: {err}", actual.len());
        if claimed < actual.len() as u64 {
            // Not one byte past the length reached the upstream.
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(up.requests.lock().unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn a_head_response_has_no_body_and_keeps_the_connection() {
    let up = upstream(vec![vec![Reply::Send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"), OK]]).await;
    let pool = pool(up.addr);
    let resp = pool.send(request("HEAD", None)).await.map_err(|(e, _)| e).unwrap();
    assert_eq!(resp.headers()["content-length"], "10");
    assert!(http_body::Body::is_end_stream(resp.body()));
    assert!(resp.into_body().collect().await.unwrap().to_bytes().is_empty());
    assert_eq!(get(&pool).await.unwrap().1, "ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let up = upstream(vec![vec![Reply::Send(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
    )]])
    .await;
    let pool = pool(up.addr);
    assert_eq!(get(&pool).await.unwrap(), (201, Bytes::from_static(b"ok")));
}

#[tokio::test]
async fn a_body_until_close_is_read_whole_and_its_connection_not_reused() {
    let up = upstream(vec![vec![Reply::SendClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")]]).await;
    let pool = pool(up.addr);
    assert_eq!(get(&pool).await.unwrap().1, "until the end");
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn a_response_cut_short_is_an_error() {
    let up = upstream(vec![vec![Reply::SendClose(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")]]).await;
    let pool = pool(up.addr);
    assert!(get(&pool).await.unwrap_err().contains("closed"));
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn an_early_answer_is_passed_on_without_the_rest_of_the_body() {
    let up = upstream(vec![vec![Reply::Early(
        b"HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 4\r\n\r\nbig!",
    )]])
    .await;
    let pool = pool(up.addr);
    // Far more than the socket buffers hold: the upstream never reads it.
    let big = Bytes::from(vec![b'x'; 64 << 20]);
    let req = request("POST", Some(Inbound::other(Full::new(big))));
    let answered = tokio::time::timeout(Duration::from_secs(4), exchange(&pool, req)).await;
    assert_eq!(answered.expect("the early answer was not read").unwrap(), (413, Bytes::from_static(b"big!")));
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn a_get_on_a_connection_closed_under_it_is_retried_once_a_post_is_not() {
    // The upstream reads the second request on the connection and closes without answering (its
    // keep-alive timeout racing the request).
    let up = upstream(vec![vec![OK, Reply::Close], vec![OK, Reply::Close]]).await;
    let pool = pool(up.addr);
    assert_eq!(get(&pool).await.unwrap().1, "ok");
    assert_eq!(get(&pool).await.unwrap().1, "ok", "the GET was not retried");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);

    let post = || request("POST", Some(Inbound::other(Full::new(Bytes::from_static(b"{}")))));
    // The second connection is idle now, and its next request is read and dropped.
    assert!(exchange(&pool, post()).await.is_err(), "a POST was sent twice");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}
