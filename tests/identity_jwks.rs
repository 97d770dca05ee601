//! `Authenticator` against a loopback JWKS server: algorithms, rotation, unknown-kid floods,
//! outages, key removal, discovery, `jwks_file` changes and hot-reload carry-over — one
//! real-socket test per behaviour. The timing (refresh schedule, backoff, cooldown windows,
//! `max_stale`, the file poll) is tested on a paused clock with a fake fetcher in
//! `src/identity/keys/mod.rs`; these tests trigger fetches by an unknown `kid` instead of waiting.

use airgate::{
    config::{self, issuer::Issuer},
    identity::{
        Authenticator,
        mint::{SigningKey, pem},
        reason,
    },
    metrics::Metrics,
};
use aws_lc_rs::{
    encoding::{AsDer, Pkcs8V1Der},
    rand::SystemRandom,
    rsa::KeySize,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair},
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header::AUTHORIZATION};
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::net::TcpListener;

/// A JWKS (and discovery) server whose document, availability and request count the test controls.
struct JwksServer {
    addr: SocketAddr,
    jwks: Arc<Mutex<String>>,
    down: Arc<AtomicBool>,
    jwks_fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(keys: &[&SigningKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let jwks = Arc::new(Mutex::new(jwks_of(keys)));
        let down = Arc::new(AtomicBool::new(false));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let (j, d, n) = (jwks.clone(), down.clone(), jwks_fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (j, d, n) = (j.clone(), d.clone(), n.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (j, d, n) = (j.clone(), d.clone(), n.clone());
                        async move {
                            let resp = if d.load(Ordering::SeqCst) {
                                Response::builder()
                                    .status(StatusCode::SERVICE_UNAVAILABLE)
                                    .body(Full::new(Bytes::new()))
                            } else if req.uri().path() == "/.well-known/openid-configuration" {
                                let doc = json!({"issuer": "https://idp", "jwks_uri": format!("http://{addr}/jwks")});
                                Response::builder().body(Full::new(Bytes::from(doc.to_string())))
                            } else {
                                n.fetch_add(1, Ordering::SeqCst);
                                let body = j.lock().unwrap().clone();
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                            };
                            Ok::<_, Infallible>(resp.unwrap())
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        JwksServer { addr, jwks, down, jwks_fetches, task }
    }

    fn set(&self, keys: &[&SigningKey]) {
        *self.jwks.lock().unwrap() = jwks_of(keys);
    }

    fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn jwks_of(keys: &[&SigningKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() }).to_string()
}

fn ed25519() -> SigningKey {
    let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    SigningKey::from_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes()).unwrap()
}

fn es256() -> SigningKey {
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
    SigningKey::from_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes()).unwrap()
}

fn rs256() -> SigningKey {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let der: Pkcs8V1Der<'_> = pair.as_der().unwrap();
    SigningKey::from_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes()).unwrap()
}

fn issuer(keys: &str, extra: &str) -> Issuer {
    let text = format!(
        "[[issuers]]\nname = \"airflow\"\nissuer = \"https://idp\"\naudiences = [\"urn:airgate\"]\n\
         required_scope = \"egress\"\n{keys}\n{extra}\n"
    );
    let mut c = config::parse(&text).unwrap_or_else(|p| panic!("{p}"));
    c.issuers.remove(0)
}

fn token(key: &SigningKey, kid: Option<&str>) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let alg = match key.algorithm() {
        jsonwebtoken::Algorithm::EdDSA => "EdDSA",
        jsonwebtoken::Algorithm::ES256 => "ES256",
        _ => "RS256",
    };
    let header: Map<String, Value> =
        json!({"alg": alg, "typ": "JWT", "kid": kid.unwrap_or(key.kid())}).as_object().unwrap().clone();
    let claims = json!({
        "iss": "https://idp", "aud": "urn:airgate", "sub": "minter", "scope": "egress",
        "dag_id": "sales_daily", "task_id": "load", "jti": format!("{:x}", fastrand::u64(..)),
        "iat": now, "nbf": now, "exp": now + 300,
    });
    key.sign(&header, claims.as_object().unwrap()).unwrap()
}

async fn check(auth: &Authenticator, token: &str) -> Result<String, &'static str> {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    auth.authenticate(&h).await.map(|id| id.pipeline.clone()).map_err(|r| r.reason)
}

/// Waits (bounded) until the authenticator has keys.
async fn ready(auth: &Authenticator) {
    for _ in 0..100 {
        if auth.not_ready().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never ready: {:?}", auth.not_ready());
}

#[tokio::test]
async fn ed25519_rs256_and_es256_keys_without_alg_are_accepted() {
    let (ed, es, rs) = (ed25519(), es256(), rs256());
    let server = JwksServer::start(&[&ed, &es, &rs]).await;
    let auth =
        Authenticator::new(&[issuer(&format!("jwks_url = \"{}\"", server.url()), "")], Metrics::new(10), None).unwrap();
    for key in [&ed, &es, &rs] {
        assert_eq!(check(&auth, &token(key, None)).await, Ok("sales_daily".into()), "{:?}", key.algorithm());
    }
    // A signature by a key the JWKS does not hold, under a kid it does hold, is refused.
    let impostor = ed25519();
    assert_eq!(check(&auth, &token(&impostor, Some(ed.kid()))).await, Err(reason::BAD_SIGNATURE));
}

#[tokio::test]
async fn rotation_to_a_new_kid_is_accepted_on_first_sight() {
    let (old, new) = (ed25519(), ed25519());
    let server = JwksServer::start(&[&old]).await;
    let auth = Authenticator::new(
        &[issuer(&format!("jwks_url = \"{}\"", server.url()), "refresh_interval = \"1h\"")],
        Metrics::new(10),
        None,
    )
    .unwrap();
    ready(&auth).await;
    assert!(check(&auth, &token(&old, None)).await.is_ok());
    let before = server.fetches();
    server.set(&[&old, &new]);
    assert_eq!(check(&auth, &token(&new, None)).await, Ok("sales_daily".into()));
    assert_eq!(server.fetches(), before + 1);
}

#[tokio::test]
async fn an_unknown_kid_flood_fetches_at_most_once_per_cooldown() {
    let key = ed25519();
    let server = JwksServer::start(&[&key]).await;
    let auth = Arc::new(
        Authenticator::new(
            &[issuer(&format!("jwks_url = \"{}\"", server.url()), "refresh_interval = \"1h\"")],
            Metrics::new(10),
            None,
        )
        .unwrap(),
    );
    ready(&auth).await;
    let before = server.fetches();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (auth, t) = (auth.clone(), token(&key, Some(&format!("kid-{:x}", fastrand::u64(..)))));
        tasks.push(tokio::spawn(async move { check(&auth, &t).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Err(reason::UNKNOWN_KID));
    }
    // A second wave inside the cooldown fetches nothing more.
    assert_eq!(check(&auth, &token(&key, Some("yet-another"))).await, Err(reason::UNKNOWN_KID));
    assert!(server.fetches() - before <= 1, "{} fetches", server.fetches() - before);
    // Known keys still verify throughout.
    assert!(check(&auth, &token(&key, None)).await.is_ok());
}

#[tokio::test]
async fn cached_keys_still_verify_while_the_jwks_server_is_down() {
    let key = ed25519();
    let server = JwksServer::start(&[&key]).await;
    let metrics = Metrics::new(10);
    let auth = Authenticator::new(
        &[issuer(&format!("jwks_url = \"{}\"", server.url()), "refresh_interval = \"1h\"")],
        metrics.clone(),
        None,
    )
    .unwrap();
    ready(&auth).await;
    server.down.store(true, Ordering::SeqCst);
    // An unknown kid makes the store fetch now; the server answers 503.
    assert_eq!(check(&auth, &token(&key, Some("unknown"))).await, Err(reason::UNKNOWN_KID));
    assert!(metrics.render().contains(r#"airgate_jwks_refreshes_total{issuer="airflow",result="error"}"#));
    // A fresh token (not in the verified-token cache) verifies with the last good key set.
    assert_eq!(check(&auth, &token(&key, None)).await, Ok("sales_daily".into()));
    assert!(auth.not_ready().is_empty());
}

#[tokio::test]
async fn a_removed_key_is_rejected_after_the_next_refresh() {
    let (a, b) = (ed25519(), ed25519());
    let server = JwksServer::start(&[&a, &b]).await;
    let auth = Authenticator::new(
        &[issuer(&format!("jwks_url = \"{}\"", server.url()), "refresh_interval = \"1h\"")],
        Metrics::new(10),
        None,
    )
    .unwrap();
    ready(&auth).await;
    let t = token(&a, None);
    assert!(check(&auth, &t).await.is_ok());
    server.set(&[&b]);
    // The next fetch (triggered by an unknown kid rather than awaited) drops `a`.
    let before = server.fetches();
    assert_eq!(check(&auth, &token(&b, Some("unknown"))).await, Err(reason::UNKNOWN_KID));
    assert_eq!(server.fetches(), before + 1);
    // Even the cached verification of that very token no longer counts.
    assert_eq!(check(&auth, &t).await, Err(reason::UNKNOWN_KID));
    assert!(check(&auth, &token(&b, None)).await.is_ok());
}

#[tokio::test]
async fn an_issuer_without_keys_is_not_ready_and_refuses() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let auth = Authenticator::new(&[issuer(&format!("jwks_url = \"http://{addr}/jwks\""), "")], Metrics::new(10), None)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let missing = auth.not_ready();
    assert_eq!(missing.len(), 1);
    assert!(missing[0].starts_with("issuer airflow: no key set yet"), "{missing:?}");
    assert_eq!(check(&auth, &token(&ed25519(), None)).await, Err(reason::KEYS_UNAVAILABLE));
}

#[tokio::test]
async fn discovery_url_leads_to_the_jwks() {
    let key = es256();
    let server = JwksServer::start(&[&key]).await;
    let url = format!("http://{}/.well-known/openid-configuration", server.addr);
    let auth =
        Authenticator::new(&[issuer(&format!("discovery_url = \"{url}\""), "")], Metrics::new(10), None).unwrap();
    assert_eq!(check(&auth, &token(&key, None)).await, Ok("sales_daily".into()));
}

#[tokio::test]
async fn a_jwks_file_is_reread_when_it_changes() {
    let (a, b) = (ed25519(), rs256());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks_of(&[&a])).unwrap();
    let auth = Authenticator::new(
        &[issuer(&format!("jwks_file = {:?}", path.display().to_string()), "")],
        Metrics::new(10),
        None,
    )
    .unwrap();
    assert!(check(&auth, &token(&a, None)).await.is_ok());
    std::fs::write(&path, jwks_of(&[&b])).unwrap();
    // Picked up on first sight of the new kid (the poll itself is tested in identity/keys/mod.rs).
    assert!(check(&auth, &token(&b, None)).await.is_ok());
    assert_eq!(check(&auth, &token(&a, None)).await, Err(reason::UNKNOWN_KID));
}

#[tokio::test]
async fn hot_reload_carries_unchanged_key_sets_over() {
    let key = ed25519();
    let server = JwksServer::start(&[&key]).await;
    let cfg = issuer(&format!("jwks_url = \"{}\"", server.url()), "refresh_interval = \"1h\"");
    let first = Authenticator::new(std::slice::from_ref(&cfg), Metrics::new(10), None).unwrap();
    ready(&first).await;
    let fetched = server.fetches();
    let second = Authenticator::new(&[cfg], Metrics::new(10), Some(&first)).unwrap();
    drop(first);
    assert!(second.not_ready().is_empty());
    assert!(check(&second, &token(&key, None)).await.is_ok());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.fetches(), fetched);
}
