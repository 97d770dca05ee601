//! The lean HTTP/1.1 upstream pool (`src/upstream/pool.rs`) against a byte-level loopback
//! upstream that counts its connections: keep-alive reuse, `Connection: close`, an idle
//! connection the upstream closed, the idle timeout, `max_idle`, a body dropped half read, the
//! request target sent in origin form, and a connect failure told apart from a reset.

use airgate::{
    body::{Counters, Inbound, RequestBody},
    upstream::pool::Http1Pool,
};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// How the loopback upstream answers each request.
#[derive(Clone, Copy)]
enum Answer {
    /// `200`, `Content-Length: 2`, keep-alive.
    KeepAlive,
    /// `200` with `Connection: close`, then closes.
    Close,
    /// `200` keep-alive by its headers, then closes the connection anyway.
    CloseAfter,
    /// `200` with a 1 MiB body, keep-alive.
    Big,
}

struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Request lines received, in order.
    lines: Arc<Mutex<Vec<String>>>,
    /// Connections the upstream has closed.
    closed: Arc<AtomicUsize>,
}

async fn upstream(answer: Answer) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (a, c, l) = (accepted.clone(), closed.clone(), lines.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, answer, l.clone(), c.clone()));
        }
    });
    Upstream { addr, accepted, lines, closed }
}

async fn serve(mut s: TcpStream, answer: Answer, lines: Arc<Mutex<Vec<String>>>, closed: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        lines.lock().unwrap().push(head.lines().next().unwrap_or_default().to_owned());
        let reply: Vec<u8> = match answer {
            Answer::KeepAlive | Answer::CloseAfter => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            Answer::Close => b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            Answer::Big => {
                let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
                r.resize(r.len() + (1 << 20), b'x');
                r
            }
        };
        if s.write_all(&reply).await.is_err() {
            return;
        }
        if matches!(answer, Answer::Close | Answer::CloseAfter) {
            let _ = s.shutdown().await;
            closed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

fn pool(addr: SocketAddr, idle_timeout: Duration, max_idle: usize) -> Arc<Http1Pool> {
    let authority = addr.to_string().parse().unwrap();
    Http1Pool::new(&authority, Duration::from_secs(2), idle_timeout, max_idle).unwrap()
}

fn get(target: &str) -> Request<RequestBody> {
    Request::get(target)
        .header("host", "upstream.test")
        .body(RequestBody::new(None, u64::MAX, Arc::new(Counters::default())))
        .unwrap()
}

/// One request, its body read whole; returns the body.
async fn fetch(pool: &Arc<Http1Pool>, target: &str) -> Bytes {
    let resp = pool.send(get(target)).await.map_err(|(e, _)| e).unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap().to_bytes()
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let up = upstream(Answer::KeepAlive).await;
    let pool = pool(up.addr, MINUTE, 8);
    for _ in 0..3 {
        assert_eq!(fetch(&pool, "/x").await, "ok");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn the_request_target_is_sent_in_origin_form() {
    let up = upstream(Answer::KeepAlive).await;
    let pool = pool(up.addr, MINUTE, 8);
    fetch(&pool, &format!("http://{}/a/b?c=d", up.addr)).await;
    fetch(&pool, "/e").await;
    assert_eq!(*up.lines.lock().unwrap(), ["GET /a/b?c=d HTTP/1.1", "GET /e HTTP/1.1"]);
}

#[tokio::test]
async fn a_post_body_is_sent_and_the_connection_reused() {
    let up = upstream(Answer::KeepAlive).await;
    let pool = pool(up.addr, MINUTE, 8);
    for _ in 0..2 {
        let body = Inbound::other(Full::new(Bytes::from_static(b"{}")));
        let req = Request::post("/p")
            .header("host", "upstream.test")
            .header("content-length", "2")
            .body(RequestBody::new(Some(body), 1024, Arc::new(Counters::default())))
            .unwrap();
        let resp = pool.send(req).await.map_err(|(e, _)| e).unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connection_close_is_not_reused() {
    let up = upstream(Answer::Close).await;
    let pool = pool(up.addr, MINUTE, 8);
    fetch(&pool, "/x").await;
    fetch(&pool, "/x").await;
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_passed_over() {
    let up = upstream(Answer::CloseAfter).await;
    let pool = pool(up.addr, MINUTE, 8);
    fetch(&pool, "/x").await;
    // Bounded wait until the upstream has closed and the connection task has seen it.
    for _ in 0..200 {
        if up.closed.load(Ordering::SeqCst) == 1 && pool.idle_open_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pool.idle_open_count(), 0, "the closed connection is still open to the pool");
    assert_eq!(fetch(&pool, "/x").await, "ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_idle_past_the_timeout_is_not_reused() {
    let up = upstream(Answer::KeepAlive).await;
    // Any idle time is past a zero timeout.
    let pool = pool(up.addr, Duration::ZERO, 8);
    fetch(&pool, "/x").await;
    fetch(&pool, "/x").await;
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert!(pool.idle_count() <= 1, "expired connections are dropped when another is given back");
}

#[tokio::test]
async fn the_reaper_closes_connections_idle_past_the_timeout_without_traffic() {
    let up = upstream(Answer::KeepAlive).await;
    let pool = pool(up.addr, Duration::from_millis(200), 8);
    fetch(&pool, "/x").await;
    assert_eq!(pool.idle_count(), 1);
    // Bounded wait: the reaper runs every 100 ms here; nothing else touches the pool.
    for _ in 0..100 {
        if pool.idle_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pool.idle_count(), 0, "an idle connection outlived pool_idle_timeout");
}

#[tokio::test]
async fn no_more_than_max_idle_connections_are_kept() {
    let up = upstream(Answer::KeepAlive).await;
    let pool = pool(up.addr, MINUTE, 2);
    // Four at once need four connections; three of them are idle afterwards, two are kept.
    let responses = futures_util::future::join_all((0..4).map(|_| pool.send(get("/x")))).await;
    let mut bodies = Vec::new();
    for resp in responses {
        bodies.push(resp.map_err(|(e, _)| e).unwrap().into_body());
    }
    for body in bodies {
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 4);
    assert_eq!(pool.idle_count(), 2);
    fetch(&pool, "/x").await;
    assert_eq!(up.accepted.load(Ordering::SeqCst), 4, "a kept connection serves the next request");
}

#[tokio::test]
async fn a_body_dropped_half_read_does_not_return_its_connection() {
    let up = upstream(Answer::Big).await;
    let pool = pool(up.addr, MINUTE, 8);
    let resp = pool.send(get("/big")).await.map_err(|(e, _)| e).unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some_and(|d| d.len() < 1 << 20));
    drop(body);
    assert_eq!(pool.idle_count(), 0);
    // The next request gets a new connection, and a complete body.
    let resp = pool.send(get("/big")).await.map_err(|(e, _)| e).unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes().len(), 1 << 20);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn a_refused_connect_is_a_connect_error() {
    // A port that was free a moment ago: nothing listens there now.
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let pool = pool(addr, MINUTE, 8);
    let (_, connect) = pool.send(get("/x")).await.unwrap_err();
    assert!(connect);
}

#[tokio::test]
async fn an_upstream_that_closes_without_answering_is_a_reset() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        drop(s);
    });
    let pool = pool(addr, MINUTE, 8);
    let (_, connect) = pool.send(get(&format!("http://{addr}/x"))).await.unwrap_err();
    assert!(!connect);
}
