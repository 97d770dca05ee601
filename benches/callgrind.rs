//! Instructions per request through the whole path, for `valgrind --tool=callgrind` (driven by
//! `benches/callgrind.sh`). One process, one current-thread runtime: a raw keep-alive HTTP/1.1
//! client → airgate (full policy, as in `benches/request_path.rs`) → a raw loopback upstream, over
//! real loopback sockets. The client and the upstream are hand-written byte loops so that every
//! hyper frame in the profile is airgate's; the `direct` case (client straight to the upstream)
//! measures what they cost.
//!
//! Usage: `callgrind mint TOKENS_FILE COUNT` writes ES256 tokens (and the key they are signed
//! with, `TOKENS_FILE.key`); `callgrind CASE N TOKENS_FILE` runs `WARMUP` unmeasured requests, then
//! N measured ones inside [`callgrind_measured`] (the function `--toggle-collect` names). Cases:
//! `direct`, `warm`, `new_token`, `not_found`, `unauthenticated`, `limited`, `routes_1000` (`warm`
//! with 1 000 more routes, all looked at before the request's). Reusing one token file
//! makes runs repeat exactly: ECDSA signatures are randomised, and P-256 verification takes a
//! slightly different number of instructions for each signature.

use airgate::{
    app, config,
    identity::mint::{MintRequest, mint},
};
use std::{future::Future, net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
};

/// Unmeasured requests before the measured ones: connections open, pools and caches warm.
const WARMUP: usize = 20;
const UPSTREAM_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";

fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The upstream: answers every request head with a fixed 200 (the gateway sends no body).
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(8192);
                loop {
                    while let Some(end) = header_end(&buf) {
                        buf.drain(..end);
                        if stream.write_all(UPSTREAM_RESPONSE).await.is_err() {
                            return;
                        }
                    }
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    addr
}

/// A keep-alive client connection that sends prepared request bytes and reads one response.
struct Conn {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { addr, stream, buf: Vec::with_capacity(8192) }
    }

    /// Sends `req` and returns the response status (reconnects if the server closed).
    async fn call(&mut self, req: &[u8]) -> u16 {
        self.stream.write_all(req).await.unwrap();
        self.buf.clear();
        let end = loop {
            if let Some(end) = header_end(&self.buf) {
                break end;
            }
            if self.stream.read_buf(&mut self.buf).await.unwrap() == 0 {
                panic!("connection closed before a response");
            }
        };
        let head = std::str::from_utf8(&self.buf[..end]).unwrap();
        let status: u16 = head[9..12].parse().unwrap();
        let length: usize = head
            .split("\r\n")
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .map(|(_, v)| v.trim().parse().unwrap())
            .unwrap_or(0);
        let close = head.to_ascii_lowercase().contains("connection: close");
        while self.buf.len() < end + length {
            if self.stream.read_buf(&mut self.buf).await.unwrap() == 0 {
                panic!("connection closed in a response body");
            }
        }
        if close {
            *self = Conn::open(self.addr).await;
        }
        status
    }
}

/// Routes added ahead of the bench routes for the `routes_1000` case.
const MANY_ROUTES: usize = 1000;

fn config_text(dir: &std::path::Path, key: &std::path::Path, upstream: SocketAddr, extra_routes: usize) -> String {
    std::fs::write(dir.join("upstream-token"), "bench-upstream-token").unwrap();
    // Longer prefixes than `/bench/`: the route table looks at every one of them first.
    let extra: String = (0..extra_routes)
        .map(|i| {
            format!(
                "[[routes]]\nname = \"svc{i:04}\"\npath_prefix = \"/service-{i:04}/\"\nupstream = \"up\"\nallow = {{ pipelines = [\"svc{i:04}_*\"] }}\n"
            )
        })
        .collect();
    extra
        + &format!(
            r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[audit]
sink = "file"
path = "{audit}"
[[issuers]]
name = "bench"
issuer = "https://airflow.bench.invalid"
audiences = ["urn:airgate"]
algorithms = ["ES256"]
required_scope = "egress"
max_lifetime = "3h"
signing_key = "file:{key}"
[[upstreams]]
name = "up"
url = "http://{upstream}"
[upstreams.credential]
kind = "static"
token = "file:{token}"
[[routes]]
name = "bench"
path_prefix = "/bench/"
upstream = "up"
rate_limit = "huge"
allow = {{ pipelines = ["bench_*"] }}
[[routes]]
name = "tight"
path_prefix = "/tight/"
upstream = "up"
rate_limit = "tiny"
allow = {{ pipelines = ["bench_*"] }}
[rate_limits]
backend = "local"
[[rate_limits.policies]]
name = "huge"
rate = "1000000/s"
burst = 1000000
[[rate_limits.policies]]
name = "tiny"
rate = "1/h"
burst = 1
"#,
            audit = dir.join("audit.jsonl").display(),
            key = key.display(),
            token = dir.join("upstream-token").display(),
        )
}

fn es256_pem() -> String {
    use aws_lc_rs::{
        rand::SystemRandom,
        signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair},
    };
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
    airgate::identity::mint::pem("PRIVATE KEY", doc.as_ref())
}

/// Mints `count` tokens (distinct `dag_id`s, same length) into `path`, one a line.
fn mint_tokens(path: &str, count: usize) {
    let key = format!("{path}.key");
    std::fs::write(&key, es256_pem()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), std::path::Path::new(&key), "127.0.0.1:9".parse().unwrap(), 0);
    let issuer = config::parse(&text).unwrap().issuers.remove(0);
    let mut out = String::new();
    for i in 0..count {
        let req = MintRequest {
            dag: format!("bench_{i:08}"),
            task: "t".into(),
            run: Some("scheduled__2026-11-30".into()),
            try_number: Some(1),
            map_index: None,
            team: None,
            ttl: Duration::from_secs(7200),
            audience: None,
            extra_scope: None,
        };
        out.push_str(&mint(&issuer, &req).unwrap());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

fn request(path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nhost: bench.invalid\r\nuser-agent: callgrind-bench\r\naccept: */*\r\n{auth}\r\n")
        .into_bytes()
}

/// The measured section: everything the runtime does while `f` runs (the client, the gateway's
/// tasks and the upstream all live on this one thread).
#[inline(never)]
fn callgrind_measured<F: Future>(rt: &Runtime, f: F) -> F::Output {
    rt.block_on(f)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("mint") {
        mint_tokens(&args[1], args[2].parse().unwrap());
        return;
    }
    let [case, n, tokens_file] = &args[..] else {
        eprintln!("usage: callgrind CASE N TOKENS_FILE | callgrind mint TOKENS_FILE COUNT");
        std::process::exit(2);
    };
    let n: usize = n.parse().unwrap();
    let tokens: Vec<String> = std::fs::read_to_string(tokens_file).unwrap().lines().map(str::to_owned).collect();
    assert!(tokens.len() > n + WARMUP, "need {} tokens in {tokens_file}", n + WARMUP + 1);
    let key = format!("{tokens_file}.key");

    // A paused clock: the timer wheel then does the same work whatever the wall clock does (with a
    // running clock its bookkeeping depends on the elapsed milliseconds, and counts drift by
    // ~0.1 %). Nothing here waits on a timer: loopback I/O is always ready first.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (running, upstream_addr) = rt.block_on(async {
        let upstream_addr = upstream().await;
        let extra = if case == "routes_1000" { MANY_ROUTES } else { 0 };
        let config = config::parse(&config_text(dir.path(), std::path::Path::new(&key), upstream_addr, extra)).unwrap();
        let running = app::start(config, app::Options { watch_config: None }).await.unwrap();
        (running, upstream_addr)
    });
    let warm = &tokens[0];
    // Requests prepared before anything is measured: (warm-up, measured).
    let (target, want, warmup, measured): (SocketAddr, u16, Vec<Vec<u8>>, Vec<Vec<u8>>) = match case.as_str() {
        "direct" => {
            let r = request("/bench/x", Some(warm));
            (upstream_addr, 200, vec![r.clone(); WARMUP], vec![r; n])
        }
        // `warm` behind 1 000 routes with longer prefixes than the one the request takes.
        "warm" | "routes_1000" => {
            let r = request("/bench/x", Some(warm));
            (running.proxy_addr, 200, vec![r.clone(); WARMUP], vec![r; n])
        }
        "new_token" => {
            let mut all = tokens[1..=n + WARMUP].iter().map(|t| request("/bench/x", Some(t)));
            let warmup = all.by_ref().take(WARMUP).collect();
            (running.proxy_addr, 200, warmup, all.collect())
        }
        "not_found" => {
            let r = request("/nowhere/x", Some(warm));
            (running.proxy_addr, 404, vec![r.clone(); WARMUP], vec![r; n])
        }
        "unauthenticated" => {
            let r = request("/bench/x", None);
            (running.proxy_addr, 401, vec![r.clone(); WARMUP], vec![r; n])
        }
        "limited" => {
            // The first request takes the only token of the bucket; the rest are limited.
            let first = request("/tight/x", Some(warm));
            let r = first.clone();
            let mut warmup = vec![first];
            warmup.extend(std::iter::repeat_n(r.clone(), WARMUP - 1));
            (running.proxy_addr, 429, warmup, vec![r; n])
        }
        other => panic!("unknown case {other}"),
    };
    let mut conn = rt.block_on(async {
        let mut conn = Conn::open(target).await;
        for (i, r) in warmup.iter().enumerate() {
            let status = conn.call(r).await;
            assert!(status == want || (case == "limited" && i == 0 && status == 200), "warm-up: {status}");
        }
        conn
    });
    let bad = callgrind_measured(&rt, async {
        let mut bad = 0usize;
        for r in &measured {
            bad += usize::from(conn.call(r).await != want);
        }
        bad
    });
    assert_eq!(bad, 0, "{bad} responses were not {want}");
    drop(conn);
    rt.block_on(running.shutdown());
    println!("{case}: {n} requests, all {want}");
}
