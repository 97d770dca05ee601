//! Key sets: where an issuer's verification keys come from and how they stay fresh.
//!
//! A [`KeyStore`] holds the issuer's current [`KeySet`] behind an `ArcSwap` (read lock-free on the
//! request path). Remote sets (`jwks_url`, `discovery_url`) are refreshed in the background every
//! `refresh_interval` (shortened, within bounds, by `Cache-Control: max-age`), and on an unknown
//! `kid` by one single-flight refetch at most once per cooldown. A failed fetch keeps the last good
//! set until it is `max_stale` old. `jwks_file` is watched by a [`FileWatch`]; secrets and signing
//! keys are loaded once.
//!
//! Remote documents come through a [`KeyFetcher`] (HTTP in production, fakes in the tests below),
//! and time is `tokio::time`, so refresh, cooldown and staleness are tested on a paused clock.

use super::{mint::SigningKey, signature::PreparedKey};
use crate::config::urls::Redacted;
use crate::{
    backoff::Backoff,
    client::{ClientSettings, FetchClient, Fetched, fetch, fetch_client},
    config::issuer::{Issuer, KeySource, is_hmac},
    metrics::Metrics,
    watch::{self as file, FileWatch, Fingerprint},
};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::{
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock, Weak},
    time::Duration,
};
use tokio::{sync::watch, time::Instant};
use url::Url;

/// Deadline of one JWKS or discovery fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS or discovery document read.
const MAX_DOCUMENT: usize = 1 << 20;
/// `Cache-Control: max-age` never shortens the refresh period below this.
const MIN_MAX_AGE: Duration = Duration::from_secs(30);
/// Retries after failed fetches: from 1 s, doubling up to a minute, jittered.
const BACKOFF: Backoff = Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(60) };

/// A set of algorithms, as a bitmask over [`Algorithm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AlgSet(u16);

impl AlgSet {
    fn bit(alg: Algorithm) -> u16 {
        1 << (match alg {
            Algorithm::HS256 => 0,
            Algorithm::HS384 => 1,
            Algorithm::HS512 => 2,
            Algorithm::ES256 => 3,
            Algorithm::ES384 => 4,
            Algorithm::RS256 => 5,
            Algorithm::RS384 => 6,
            Algorithm::RS512 => 7,
            Algorithm::PS256 => 8,
            Algorithm::PS384 => 9,
            Algorithm::PS512 => 10,
            Algorithm::EdDSA => 11,
        })
    }

    /// The set of `algs`.
    pub(crate) fn of(algs: &[Algorithm]) -> Self {
        AlgSet(algs.iter().fold(0, |acc, a| acc | Self::bit(*a)))
    }

    /// True when `alg` is in the set.
    pub(crate) fn contains(self, alg: Algorithm) -> bool {
        self.0 & Self::bit(alg) != 0
    }

    fn intersect(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 & other.0)
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

const RSA_ALGS: [Algorithm; 6] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

/// One verification key.
#[derive(Debug)]
pub(crate) struct VerifyKey {
    /// `kid`; `None` matches any token (shared secrets, signing keys without a JWKS).
    pub kid: Option<Box<str>>,
    /// The key, parsed once for every algorithm in `algs`.
    pub key: PreparedKey,
    /// Algorithms this key verifies (already intersected with the issuer's allow-list).
    pub algs: AlgSet,
    /// SHA-256 of the key material: a cached verification stays valid only while this key does.
    pub fingerprint: [u8; 32],
}

/// An issuer's keys at one point in time.
#[derive(Debug)]
pub(crate) struct KeySet {
    keys: Vec<VerifyKey>,
    /// Tokens must name a `kid` (keys from a JWKS).
    require_kid: bool,
    /// When the set was last confirmed by its source.
    pub fetched_at: Instant,
    /// Unusable after this (remote sets only).
    pub stale_at: Option<Instant>,
    /// Increases with every stored set; single-flight waiters compare it.
    pub generation: u64,
}

/// Result of looking a token's key up.
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    /// This key verifies the token's algorithm.
    Found(&'a VerifyKey),
    /// The `kid` is not in the set (or the token has none where one is required).
    UnknownKid,
    /// A key matches the `kid` but not the algorithm.
    WrongAlg,
}

impl KeySet {
    /// The key for `kid` and `alg`.
    pub(crate) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        if kid.is_none() && self.require_kid {
            return Lookup::UnknownKid;
        }
        let mut kid_seen = false;
        for k in &self.keys {
            let matches = match (&k.kid, kid) {
                (None, _) => true,
                (Some(a), Some(b)) => **a == *b,
                (Some(_), None) => self.keys.len() == 1,
            };
            if matches {
                kid_seen = true;
                if k.algs.contains(alg) {
                    return Lookup::Found(k);
                }
            }
        }
        if kid_seen { Lookup::WrongAlg } else { Lookup::UnknownKid }
    }

    /// True while the set may be used at `now`.
    pub(crate) fn usable(&self, now: Instant) -> bool {
        self.stale_at.is_none_or(|t| now < t)
    }

    /// True while the set still holds the key a cached verification used.
    pub(crate) fn still_has(&self, kid: Option<&str>, fingerprint: &[u8; 32]) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == kid && k.fingerprint == *fingerprint)
    }
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(b"\0");
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
    out
}

fn b64len(s: &str) -> Option<usize> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok().map(|v| v.len())
}

/// One JWK → a verification key, or why it is skipped. Symmetric (`oct`) keys are never taken
/// from a JWKS: that would let anyone holding the published set mint HS tokens.
fn jwk_key(raw: RawJwk, allowed: AlgSet) -> Result<VerifyKey, String> {
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err("not a signature key".into());
    }
    let kid = raw.kid.ok_or("no kid")?;
    let kty = raw.kty.as_deref().unwrap_or("");
    let (key, derived, fingerprint) = match (kty, raw.crv.as_deref()) {
        ("OKP", Some("Ed25519")) => {
            let x = raw.x.as_deref().ok_or("no x")?;
            if b64len(x) != Some(32) {
                return Err("bad Ed25519 x".into());
            }
            (
                DecodingKey::from_ed_components(x).map_err(|e| e.to_string())?,
                AlgSet::of(&[Algorithm::EdDSA]),
                digest(&["OKP", x]),
            )
        }
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (x, y) = (raw.x.as_deref().ok_or("no x")?, raw.y.as_deref().ok_or("no y")?);
            let (size, alg) = if crv == "P-256" { (32, Algorithm::ES256) } else { (48, Algorithm::ES384) };
            if b64len(x) != Some(size) || b64len(y) != Some(size) {
                return Err(format!("bad {crv} coordinates"));
            }
            (
                DecodingKey::from_ec_components(x, y).map_err(|e| e.to_string())?,
                AlgSet::of(&[alg]),
                digest(&["EC", crv, x, y]),
            )
        }
        ("RSA", _) => {
            let (n, e) = (raw.n.as_deref().ok_or("no n")?, raw.e.as_deref().ok_or("no e")?);
            if b64len(n).is_none_or(|l| l < 256) || b64len(e).is_none() {
                return Err("RSA modulus missing or under 2048 bits".into());
            }
            (
                DecodingKey::from_rsa_components(n, e).map_err(|e| e.to_string())?,
                AlgSet::of(&RSA_ALGS),
                digest(&["RSA", n, e]),
            )
        }
        (kty, crv) => return Err(format!("unsupported key type {kty:?}/{crv:?}")),
    };
    // A JWK's own `alg` narrows it; without one (Airflow writes none) kty/crv decide.
    let algs = match raw.alg.as_deref() {
        None => derived,
        Some(a) => {
            let alg: Algorithm = a.parse().map_err(|_| format!("unknown alg {a:?}"))?;
            if !derived.contains(alg) {
                return Err(format!("alg {a} does not fit key type {kty}"));
            }
            AlgSet::of(&[alg])
        }
    }
    .intersect(allowed);
    if algs.is_empty() {
        return Err("no allowed algorithm fits this key".into());
    }
    let key = PreparedKey::new(&key, |a| algs.contains(a))?;
    Ok(VerifyKey { kid: Some(kid.into()), key, algs, fingerprint })
}

/// Parses a JWKS document into verification keys. Unusable keys are skipped (and logged); a
/// document with none left is an error, so that the last good set stays in use.
pub(crate) fn parse_jwks(issuer: &str, bytes: &[u8], allowed: AlgSet) -> Result<Vec<VerifyKey>, String> {
    let raw: RawJwks = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = Vec::with_capacity(raw.keys.len());
    for (i, value) in raw.keys.into_iter().enumerate() {
        let parsed =
            serde_json::from_value::<RawJwk>(value).map_err(|e| e.to_string()).and_then(|k| jwk_key(k, allowed));
        match parsed {
            Ok(k) => keys.push(k),
            Err(why) => tracing::debug!(issuer, index = i, why, "JWKS key skipped"),
        }
    }
    if keys.is_empty() {
        return Err("the JWKS has no usable signature key".into());
    }
    Ok(keys)
}

/// The next refresh delay: `refresh_interval` after success (shortened to the response's
/// `max-age`, but not below 30 s or the interval itself), the shared jittered backoff after
/// failures (`jitter` in `[0, 1]`), never longer than the interval.
pub(crate) fn next_refresh(
    refresh_interval: Duration,
    max_age: Option<Duration>,
    failures: u32,
    jitter: f64,
) -> Duration {
    if failures > 0 {
        return BACKOFF.delay(failures, jitter).min(refresh_interval);
    }
    match max_age {
        Some(age) => age.max(MIN_MAX_AGE.min(refresh_interval)).min(refresh_interval),
        None => refresh_interval,
    }
}

fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let cc = headers.get(header::CACHE_CONTROL)?.to_str().ok()?;
    cc.split(',').find_map(|d| d.trim().strip_prefix("max-age=")?.trim().parse().ok().map(Duration::from_secs))
}

/// A freshly fetched key set and the `max-age` it came with.
pub(crate) type FetchedKeys = (Vec<VerifyKey>, Option<Duration>);

/// Fetches an issuer's remote key set (HTTP in production, fakes in tests). The store calls it
/// from one task at a time; the error is one log line without secrets.
#[async_trait::async_trait]
pub(crate) trait KeyFetcher: Send + Sync + 'static {
    /// Fetches and parses the current set, keeping only keys of the `allowed` algorithms.
    async fn fetch(&self, issuer: &str, allowed: AlgSet) -> Result<FetchedKeys, String>;
}

/// `jwks_url` / `discovery_url` over HTTP(S).
struct HttpKeys {
    client: FetchClient,
    url: Url,
    discovery: bool,
}

#[async_trait::async_trait]
impl KeyFetcher for HttpKeys {
    async fn fetch(&self, issuer: &str, allowed: AlgSet) -> Result<FetchedKeys, String> {
        let HttpKeys { client, url, discovery } = self;
        let jwks_url = if *discovery {
            let doc = get(client, url).await?;
            #[derive(Deserialize)]
            struct Discovery {
                jwks_uri: String,
            }
            let d: Discovery = serde_json::from_slice(&doc.body)
                .map_err(|e| format!("discovery document from {}: {e}", Redacted(url)))?;
            let u = Url::parse(&d.jwks_uri).map_err(|e| format!("jwks_uri: {e}"))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err("jwks_uri is not http(s)".to_owned());
            }
            u
        } else {
            url.clone()
        };
        let fetched = get(client, &jwks_url).await?;
        let keys = parse_jwks(issuer, &fetched.body, allowed).map_err(|e| format!("{}: {e}", Redacted(&jwks_url)))?;
        Ok((keys, max_age(&fetched.headers)))
    }
}

enum Source {
    Remote(Box<dyn KeyFetcher>),
    /// The file, the content loaded at start, and its watch once started.
    File {
        path: PathBuf,
        loaded: Fingerprint,
        watch: OnceLock<FileWatch>,
    },
    Static,
}

#[derive(Default)]
struct FetchState {
    last_kid_fetch: Option<Instant>,
    failures: u32,
}

/// One issuer's keys and the means to keep them fresh.
pub(crate) struct KeyStore {
    name: Arc<str>,
    source: Source,
    allowed: AlgSet,
    current: ArcSwapOption<KeySet>,
    fetch: tokio::sync::Mutex<FetchState>,
    last_error: Mutex<Option<String>>,
    refresh_interval: Duration,
    max_stale: Duration,
    cooldown: Duration,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").field("issuer", &self.name).finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Builds the store for `issuer`; local sources are loaded now (an error here fails startup).
    pub(crate) fn new(issuer: &Issuer) -> Result<Self, String> {
        let fetcher = match &issuer.keys {
            KeySource::JwksUrl(url) | KeySource::Discovery(url) => {
                let client =
                    fetch_client(&ClientSettings { ca_file: issuer.ca_file.as_deref(), ..ClientSettings::default() })?;
                let discovery = matches!(issuer.keys, KeySource::Discovery(_));
                Some(Box::new(HttpKeys { client, url: url.clone(), discovery }) as Box<dyn KeyFetcher>)
            }
            _ => None,
        };
        Self::with_fetcher(issuer, fetcher)
    }

    /// [`KeyStore::new`] with the remote set fetched by `fetcher` (ignored for local sources).
    pub(crate) fn with_fetcher(issuer: &Issuer, fetcher: Option<Box<dyn KeyFetcher>>) -> Result<Self, String> {
        let allowed = AlgSet::of(&issuer.algorithms);
        let state = FetchState::default();
        let (source, initial) = match &issuer.keys {
            KeySource::JwksUrl(_) | KeySource::Discovery(_) => {
                (Source::Remote(fetcher.ok_or("a remote key source needs a fetcher")?), None)
            }
            KeySource::JwksFile(path) => {
                // The watch starts from exactly the content parsed here.
                let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let keys = parse_jwks(&issuer.name, &bytes, allowed).map_err(|e| format!("{}: {e}", path.display()))?;
                let loaded = Fingerprint::of(&bytes);
                (Source::File { path: path.clone(), loaded, watch: OnceLock::new() }, Some((keys, true)))
            }
            KeySource::SharedSecret(secret) => {
                let secret = secret.load()?;
                if secret.expose().len() < 32 {
                    return Err("shared_secret must be at least 32 bytes (RFC 7518 §3.2)".into());
                }
                let hmac: Vec<Algorithm> = issuer.algorithms.iter().copied().filter(|a| is_hmac(*a)).collect();
                let algs = AlgSet::of(&hmac);
                let key = VerifyKey {
                    kid: None,
                    key: PreparedKey::new(&DecodingKey::from_secret(secret.expose()), |a| algs.contains(a))?,
                    algs,
                    fingerprint: sha256(secret.expose()),
                };
                (Source::Static, Some((vec![key], false)))
            }
            KeySource::SigningKey(secret) => {
                let signer = SigningKey::from_pem(secret.load()?.expose())?;
                let alg = signer.algorithm();
                if !issuer.algorithms.contains(&alg) {
                    return Err(format!("signing_key is a {alg:?} key but algorithms does not list {alg:?}"));
                }
                let key = VerifyKey {
                    kid: Some(signer.kid().into()),
                    key: PreparedKey::new(&signer.decoding_key(), |a| a == alg)?,
                    algs: AlgSet::of(&[alg]),
                    fingerprint: digest(&["signing_key", signer.kid()]),
                };
                (Source::Static, Some((vec![key], false)))
            }
        };
        let store = KeyStore {
            name: issuer.name.clone(),
            source,
            allowed,
            current: ArcSwapOption::empty(),
            fetch: tokio::sync::Mutex::new(state),
            last_error: Mutex::new(None),
            refresh_interval: issuer.refresh_interval,
            max_stale: issuer.max_stale,
            cooldown: issuer.unknown_kid_cooldown,
        };
        if let Some((keys, require_kid)) = initial {
            store.store(keys, require_kid, None);
        }
        Ok(store)
    }

    /// Starts from `other`'s key set (hot reload of an issuer whose refresh settings changed but
    /// whose key source did not): its tokens keep verifying while the new store refetches.
    pub(crate) fn seed_from(&self, other: &KeyStore) {
        if self.current.load().is_none() {
            self.current.store(other.current.load_full());
        }
    }

    /// The current set (lock-free).
    pub(crate) fn current(&self) -> arc_swap::Guard<Option<Arc<KeySet>>> {
        self.current.load()
    }

    fn generation(&self) -> u64 {
        self.current.load().as_ref().map_or(0, |s| s.generation)
    }

    fn store(&self, keys: Vec<VerifyKey>, require_kid: bool, stale_after: Option<Duration>) {
        let now = Instant::now();
        let set = KeySet {
            keys,
            require_kid,
            fetched_at: now,
            // A max_stale too large to represent means "never stale".
            stale_at: stale_after.and_then(|d| now.checked_add(d)),
            generation: self.generation() + 1,
        };
        self.current.store(Some(Arc::new(set)));
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
    }

    fn record_error(&self, metrics: &Metrics, error: String) {
        metrics.jwks_refreshes.with_label_values(&[&*self.name, "error"]).inc();
        tracing::warn!(issuer = %self.name, error, "key set refresh failed; keeping the last good key set");
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error);
        }
    }

    /// Why this issuer cannot verify tokens now, if it cannot.
    pub(crate) fn not_ready(&self, metrics: &Metrics) -> Option<String> {
        let now = Instant::now();
        let current = self.current();
        if let Some(set) = current.as_ref() {
            metrics.jwks_age.with_label_values(&[&*self.name]).set(now.duration_since(set.fetched_at).as_secs_f64());
        }
        let why = match current.as_ref() {
            Some(set) if set.usable(now) => return None,
            Some(_) => "key set older than max_stale".to_owned(),
            None => "no key set yet".to_owned(),
        };
        let last = self.last_error.lock().ok().and_then(|e| e.clone());
        Some(match last {
            Some(e) => format!("issuer {}: {why} (last error: {e})", self.name),
            None => format!("issuer {}: {why}", self.name),
        })
    }

    /// Unknown `kid` (or no usable set): refetch once for every concurrent caller, at most once
    /// per cooldown for remote sources. Returns the set to look in again.
    pub(crate) async fn refetch(&self, seen_generation: u64, metrics: &Metrics) -> Option<Arc<KeySet>> {
        let mut state = self.fetch.lock().await;
        // Someone refreshed while this caller waited: look in their set, do not fetch again.
        if self.generation() != seen_generation {
            return self.current.load_full();
        }
        match &self.source {
            Source::Static => {}
            Source::File { watch: file_watch, .. } => {
                // A change not yet polled is applied now (through the watch's callback).
                if let Some(w) = file_watch.get() {
                    w.check();
                }
            }
            Source::Remote(_) => {
                let now = Instant::now();
                if state.last_kid_fetch.is_none_or(|t| now.duration_since(t) >= self.cooldown) {
                    state.last_kid_fetch = Some(now);
                    self.fetch_remote(&mut state, metrics).await;
                }
            }
        }
        self.current.load_full()
    }

    async fn fetch_remote(&self, state: &mut FetchState, metrics: &Metrics) -> Option<Duration> {
        let Source::Remote(fetcher) = &self.source else { return None };
        let result = fetcher.fetch(&self.name, self.allowed).await;
        match result {
            Ok((keys, age)) => {
                let count = keys.len();
                self.store(keys, true, Some(self.max_stale));
                state.failures = 0;
                metrics.jwks_refreshes.with_label_values(&[&*self.name, "success"]).inc();
                metrics.jwks_age.with_label_values(&[&*self.name]).set(0.0);
                tracing::debug!(issuer = %self.name, keys = count, "key set refreshed");
                Some(next_refresh(self.refresh_interval, age, 0, 0.0))
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                self.record_error(metrics, e);
                Some(next_refresh(self.refresh_interval, None, state.failures, fastrand::f64()))
            }
        }
    }

    /// Applies what the `jwks_file` watch saw.
    fn file_changed(&self, update: file::Update, metrics: &Metrics) {
        let Source::File { path, .. } = &self.source else { return };
        let result = update
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|b| parse_jwks(&self.name, &b, self.allowed).map_err(|e| format!("{}: {e}", path.display())));
        match result {
            Ok(keys) => {
                self.store(keys, true, None);
                metrics.jwks_refreshes.with_label_values(&[&*self.name, "success"]).inc();
                tracing::info!(issuer = %self.name, "jwks_file changed; key set reloaded");
            }
            Err(e) => self.record_error(metrics, e),
        }
    }

    /// Starts the background refresh (remote) or the file watch (`jwks_file`) of `store`. The
    /// refresh task holds only a `Weak` and stops when `shutdown`'s sender is dropped or the store
    /// is gone; the file watch stops with the store.
    pub(crate) fn spawn_refresh(
        store: &Arc<KeyStore>,
        metrics: Arc<Metrics>,
        mut shutdown: watch::Receiver<()>,
        carried_over: bool,
    ) {
        let weak: Weak<KeyStore> = Arc::downgrade(store);
        match &store.source {
            Source::Static => return,
            Source::File { path, loaded, watch: file_watch } => {
                let on_change = move |update| {
                    if let Some(store) = weak.upgrade() {
                        store.file_changed(update, &metrics);
                    }
                };
                let _ = file_watch.set(FileWatch::start(path, file::PERIOD, Some(*loaded), on_change));
                return;
            }
            Source::Remote(_) => {}
        }
        // A carried-over set that is still good is refreshed on schedule; anything else at once.
        let fresh = store.current().as_ref().is_some_and(|s| s.usable(Instant::now()));
        let mut delay = if carried_over && fresh { store.refresh_interval } else { Duration::ZERO };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return,
                }
                let Some(store) = weak.upgrade() else { return };
                let mut state = store.fetch.lock().await;
                delay = store.fetch_remote(&mut state, &metrics).await.unwrap_or(store.refresh_interval);
                drop(state);
                if let Some(set) = store.current().as_ref() {
                    metrics
                        .jwks_age
                        .with_label_values(&[&*store.name])
                        .set(Instant::now().duration_since(set.fetched_at).as_secs_f64());
                }
            }
        });
    }
}

async fn get(client: &FetchClient, url: &Url) -> Result<Fetched, String> {
    let req = Request::get(url.as_str())
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("{}: {e}", Redacted(url)))?;
    let resp = fetch(client, req, FETCH_TIMEOUT, MAX_DOCUMENT).await.map_err(|e| format!("{}: {e}", Redacted(url)))?;
    if !resp.status.is_success() {
        return Err(format!("{}: HTTP {}", Redacted(url), resp.status));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_schedule() {
        let five = Duration::from_secs(300);
        assert_eq!(next_refresh(five, None, 0, 0.3), five);
        assert_eq!(next_refresh(five, Some(Duration::from_secs(86_400)), 0, 0.3), five);
        assert_eq!(next_refresh(five, Some(Duration::from_secs(60)), 0, 0.3), Duration::from_secs(60));
        assert_eq!(next_refresh(five, Some(Duration::from_secs(1)), 0, 0.3), Duration::from_secs(30));
        assert_eq!(next_refresh(Duration::from_secs(2), Some(Duration::from_secs(1)), 0, 0.3), Duration::from_secs(2));
        // Failures: the shared backoff, its full delay at jitter 1, half of it at jitter 0.
        assert_eq!(next_refresh(five, None, 1, 1.0), Duration::from_secs(1));
        assert_eq!(next_refresh(five, None, 3, 1.0), Duration::from_secs(4));
        assert_eq!(next_refresh(five, None, 3, 0.0), Duration::from_secs(2));
        assert_eq!(next_refresh(five, None, 30, 1.0), Duration::from_secs(60));
        assert_eq!(next_refresh(Duration::from_secs(2), None, 5, 1.0), Duration::from_secs(2));
    }

    #[test]
    fn max_age_is_read() {
        let mut h = http::HeaderMap::new();
        h.insert(header::CACHE_CONTROL, "public, max-age=120".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::from_secs(120)));
    }

    #[test]
    fn jwks_without_alg_takes_it_from_the_key_type() {
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let doc = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"a"}},
                {{"kty":"oct","k":"c2VjcmV0","kid":"h"}},
                {{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"enc","use":"enc"}},
                {{"kty":"OKP","crv":"Ed25519","x":"{x}"}}]}}"#
        );
        let keys = parse_jwks("t", doc.as_bytes(), AlgSet::of(&[Algorithm::EdDSA, Algorithm::RS256])).unwrap();
        assert_eq!(keys.len(), 1, "oct, enc and kid-less keys are skipped");
        assert!(keys[0].algs.contains(Algorithm::EdDSA));
        let set = KeySet { keys, require_kid: true, fetched_at: Instant::now(), stale_at: None, generation: 1 };
        assert!(matches!(set.find(Some("a"), Algorithm::EdDSA), Lookup::Found(_)));
        assert!(matches!(set.find(Some("a"), Algorithm::RS256), Lookup::WrongAlg));
        assert!(matches!(set.find(Some("b"), Algorithm::EdDSA), Lookup::UnknownKid));
        assert!(matches!(set.find(None, Algorithm::EdDSA), Lookup::UnknownKid));
        // Not in the issuer's allow-list: nothing usable left.
        assert!(parse_jwks("t", doc.as_bytes(), AlgSet::of(&[Algorithm::ES256])).is_err());
    }

    // ----- the store on a paused clock, with a fake fetcher -----

    use std::sync::atomic::{AtomicUsize, Ordering};

    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    /// A remote key source the test scripts: the kids it serves, or an outage.
    #[derive(Default)]
    struct Fake {
        calls: AtomicUsize,
        serving: Mutex<Option<Vec<&'static str>>>,
    }

    impl Fake {
        fn serving(kids: &[&'static str]) -> Arc<Self> {
            let fake = Arc::new(Fake::default());
            fake.serve(Some(kids));
            fake
        }

        /// `None`: every fetch fails.
        fn serve(&self, kids: Option<&[&'static str]>) {
            *self.serving.lock().unwrap() = kids.map(<[_]>::to_vec);
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl KeyFetcher for Arc<Fake> {
        async fn fetch(&self, issuer: &str, allowed: AlgSet) -> Result<FetchedKeys, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let kids = self.serving.lock().unwrap().clone().ok_or("HTTP 503")?;
            let keys: Vec<String> =
                kids.iter().map(|k| format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"{k}"}}"#)).collect();
            let doc = format!(r#"{{"keys":[{}]}}"#, keys.join(","));
            Ok((parse_jwks(issuer, doc.as_bytes(), allowed)?, None))
        }
    }

    fn issuer(keys: &str, extra: &str) -> Issuer {
        let text =
            format!("[[issuers]]\nname = \"t\"\nissuer = \"https://idp\"\naudiences = [\"a\"]\n{keys}\n{extra}\n");
        crate::config::parse(&text).unwrap_or_else(|p| panic!("{p}")).issuers.remove(0)
    }

    struct Running {
        store: Arc<KeyStore>,
        metrics: Arc<Metrics>,
        _shutdown: watch::Sender<()>,
    }

    impl Running {
        fn has(&self, kid: &str) -> bool {
            let set = self.store.current();
            set.as_ref().is_some_and(|s| {
                s.usable(Instant::now()) && matches!(s.find(Some(kid), Algorithm::EdDSA), Lookup::Found(_))
            })
        }

        fn count(&self, result: &str) -> u64 {
            self.metrics.jwks_refreshes.with_label_values(&["t", result]).get()
        }
    }

    /// A remote store with `extra` settings, refreshing in the background; the first fetch done.
    async fn remote(fake: &Arc<Fake>, extra: &str) -> Running {
        let cfg = issuer("jwks_url = \"https://idp.invalid/jwks\"", extra);
        let store = Arc::new(KeyStore::with_fetcher(&cfg, Some(Box::new(fake.clone()))).unwrap());
        let metrics = Metrics::new(10);
        let (shutdown, rx) = watch::channel(());
        KeyStore::spawn_refresh(&store, metrics.clone(), rx, false);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(fake.calls(), 1, "the first fetch happens at once");
        Running { store, metrics, _shutdown: shutdown }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[tokio::test(start_paused = true)]
    async fn the_set_is_refreshed_every_interval_and_a_removed_key_goes() {
        let fake = Fake::serving(&["a", "b"]);
        let r = remote(&fake, "refresh_interval = \"5m\"").await;
        assert!(r.has("a") && r.has("b"));
        fake.serve(Some(&["b"]));
        tokio::time::sleep(S(299)).await;
        assert!(r.has("a"), "not before the interval");
        assert_eq!(fake.calls(), 1);
        tokio::time::sleep(S(2)).await;
        assert!(!r.has("a") && r.has("b"));
        assert_eq!(fake.calls(), 2);
        tokio::time::sleep(S(300)).await;
        assert_eq!(fake.calls(), 3);
        assert_eq!(r.count("success"), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_refreshes_keep_the_last_good_set_until_max_stale() {
        let fake = Fake::serving(&["a"]);
        let r = remote(&fake, "refresh_interval = \"5m\"\nmax_stale = \"1h\"").await;
        fake.serve(None);
        tokio::time::sleep(S(3599)).await;
        assert!(r.has("a"), "the last good set serves through the outage");
        assert!(r.store.not_ready(&r.metrics).is_none());
        let errors = r.count("error");
        // Retries back off (jittered, capped at a minute) instead of hammering the endpoint.
        assert!((55..=120).contains(&errors), "{errors} failed refreshes in 55 min");
        tokio::time::sleep(S(2)).await;
        assert!(!r.has("a"), "older than max_stale: not used");
        let why = r.store.not_ready(&r.metrics).unwrap();
        assert_eq!(why, "issuer t: key set older than max_stale (last error: HTTP 503)");
        // The endpoint comes back: the next retry (at most a minute away) makes the set usable.
        fake.serve(Some(&["a"]));
        tokio::time::sleep(S(61)).await;
        assert!(r.has("a") && r.store.not_ready(&r.metrics).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_kids_refetch_at_most_once_per_cooldown() {
        let fake = Fake::serving(&["a"]);
        let r = remote(&fake, "refresh_interval = \"1h\"").await;
        let flood = |r: &Running| {
            let seen = r.store.generation();
            let tasks: Vec<_> = (0..100)
                .map(|_| {
                    let (store, metrics) = (r.store.clone(), r.metrics.clone());
                    tokio::spawn(async move { store.refetch(seen, &metrics).await.is_some() })
                })
                .collect();
            async move {
                for t in tasks {
                    assert!(t.await.unwrap());
                }
            }
        };
        // A rotation: the new kid is served; a hundred callers cause one fetch.
        fake.serve(Some(&["a", "new"]));
        flood(&r).await;
        assert_eq!(fake.calls(), 2);
        assert!(r.has("new"));
        // Inside the cooldown (30 s by default): nothing, however many callers.
        tokio::time::sleep(S(29)).await;
        flood(&r).await;
        assert_eq!(fake.calls(), 2);
        // After it: one more — and a failing one still counts for the cooldown.
        tokio::time::sleep(S(2)).await;
        fake.serve(None);
        flood(&r).await;
        flood(&r).await;
        assert_eq!(fake.calls(), 3);
        assert!(r.has("new"), "a failed refetch keeps the set");
    }

    #[tokio::test(start_paused = true)]
    async fn a_jwks_file_is_watched_and_an_unknown_kid_looks_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let doc = |kid: &str| format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"{kid}"}}]}}"#);
        std::fs::write(&path, doc("a")).unwrap();
        let cfg = issuer(&format!("jwks_file = {:?}", path.display().to_string()), "");
        let store = Arc::new(KeyStore::new(&cfg).unwrap());
        let metrics = Metrics::new(10);
        let (_shutdown, rx) = watch::channel(());
        KeyStore::spawn_refresh(&store, metrics.clone(), rx, false);
        let r = Running { store, metrics, _shutdown };
        assert!(r.has("a"));
        // The poll picks a change up within one period.
        std::fs::write(&path, doc("b")).unwrap();
        tokio::time::sleep(file::PERIOD + Duration::from_millis(1)).await;
        assert!(r.has("b") && !r.has("a"));
        assert_eq!(r.count("success"), 1);
        // An unknown kid does not wait for the poll.
        std::fs::write(&path, doc("c")).unwrap();
        let set = r.store.refetch(r.store.generation(), &r.metrics).await.unwrap();
        assert!(matches!(set.find(Some("c"), Algorithm::EdDSA), Lookup::Found(_)));
        // A broken file keeps the last good set and is counted.
        std::fs::write(&path, "not json").unwrap();
        tokio::time::sleep(file::PERIOD).await;
        assert!(r.has("c"));
        assert_eq!(r.count("error"), 1);
        assert!(r.store.not_ready(&r.metrics).is_none());
    }
}
