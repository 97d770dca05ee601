//! The key store: where an issuer's verification keys come from and how they stay fresh.
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
//!
//! The parts: [`jwk`] turns JWKS documents into keys, [`set`] is the key set and its lookup,
//! [`remote`] is the production (HTTP) fetcher.

mod jwk;
mod remote;
mod set;

use super::{mint::SigningKey, signature::PreparedKey};
use crate::{
    backoff::Backoff,
    client::{ClientSettings, fetch_client},
    config::issuer::{Issuer, KeySource, is_hmac},
    metrics::Metrics,
    watch::{self as file, FileWatch, Fingerprint},
};
use arc_swap::ArcSwapOption;
use jsonwebtoken::{Algorithm, DecodingKey};
use jwk::parse_jwks;
use remote::HttpKeys;
pub(crate) use set::{AlgSet, KeySet, Lookup, VerifyKey};
use set::{digest, sha256};
use std::{
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock, Weak},
    time::Duration,
};
use tokio::{sync::watch, time::Instant};

/// `Cache-Control: max-age` never shortens the refresh period below this.
const MIN_MAX_AGE: Duration = Duration::from_secs(30);
/// Retries after failed fetches: from 1 s, doubling up to a minute, jittered.
const BACKOFF: Backoff = Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(60) };

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

/// A freshly fetched key set and the `max-age` it came with.
pub(crate) type FetchedKeys = (Vec<VerifyKey>, Option<Duration>);

/// Fetches an issuer's remote key set (HTTP in production, fakes in tests). The store calls it
/// from one task at a time; the error is one log line without secrets.
#[async_trait::async_trait]
pub(crate) trait KeyFetcher: Send + Sync + 'static {
    /// Fetches and parses the current set, keeping only keys of the `allowed` algorithms.
    async fn fetch(&self, issuer: &str, allowed: AlgSet) -> Result<FetchedKeys, String>;
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
