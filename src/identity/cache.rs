//! The verified-token cache: the token itself → what its verification established. Bounded in
//! memory (entries are weighed, the token included), each entry living at most until the token's
//! `exp`. A hit skips the signature check, never the time checks, and only counts while the key
//! that verified the token is still in its issuer's key set.
//!
//! Keyed by the whole token, compared byte for byte on a hit, so no hash collision can make one
//! token find another's entry. The map's hash is foldhash, seeded per process: a quarter of
//! SipHash's cost on a ~500-byte token. Its weaker resistance to crafted collisions does not
//! matter here, because only tokens that passed a signature check are ever inserted: nobody
//! without a signing key can fill one bucket, and a lookup only walks the entries already there.
//! (The key was a SHA-256 digest once: ~19 k instructions of ~125 k per warm request.)

use super::{
    Identity,
    claims::Times,
    pod::{PodClaims, PodFacts},
};
use arc_swap::ArcSwapOption;
use moka::{Expiry, sync::Cache};
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Memory budget of the cache (approximate bytes).
const MAX_WEIGHT: u64 = 64 << 20;

/// What a successful verification established.
#[derive(Debug)]
pub(crate) struct Verified {
    /// The identity (pipeline empty for `pipeline_from_header` issuers).
    pub identity: Arc<Identity>,
    /// Index of the issuer in the authenticator.
    pub issuer: usize,
    /// `kid` of the verifying key.
    pub kid: Option<Box<str>>,
    /// Fingerprint of the verifying key.
    pub fingerprint: [u8; 32],
    /// Validity window.
    pub times: Times,
    /// The pod a Kubernetes issuer's token is bound to.
    pub pod: Option<PodBinding>,
}

/// A token's pod binding, and the identity last built from its pod (so a cached pod costs no
/// allocation per request: rebuilt only when the pod's facts are refreshed).
#[derive(Debug)]
pub(crate) struct PodBinding {
    /// The `kubernetes.io` claim.
    pub claims: PodClaims,
    memo: ArcSwapOption<(Arc<PodFacts>, Arc<Identity>)>,
}

impl PodBinding {
    /// A binding with nothing built yet.
    pub(crate) fn new(claims: PodClaims) -> Self {
        PodBinding { claims, memo: ArcSwapOption::empty() }
    }

    /// The identity of this token from `facts`, reused while the facts are the same.
    pub(crate) fn identity(&self, facts: &Arc<PodFacts>, token: &Identity) -> Arc<Identity> {
        if let Some(memo) = self.memo.load().as_ref()
            && Arc::ptr_eq(&memo.0, facts)
        {
            return Arc::clone(&memo.1);
        }
        let identity = Arc::new(facts.identity(token, &self.claims));
        self.memo.store(Some(Arc::new((Arc::clone(facts), Arc::clone(&identity)))));
        identity
    }
}

/// The cache key: the compact token's bytes (looked up before they are checked as text).
pub(crate) type Key = Box<[u8]>;

struct UntilExp;

impl Expiry<Key, Arc<Verified>> for UntilExp {
    fn expire_after_create(&self, _key: &Key, value: &Arc<Verified>, _created_at: Instant) -> Option<Duration> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        Some(Duration::from_secs(value.times.exp.saturating_sub(now)))
    }
}

fn weight(key: &Key, v: &Arc<Verified>) -> u32 {
    let i = &v.identity;
    let strings = [&i.task, &i.run_id, &i.try_number, &i.map_index, &i.team, &i.jti, &i.principal]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum::<usize>()
        + i.pipeline.len()
        + i.roles.iter().map(|r| r.len() + 24).sum::<usize>();
    u32::try_from(key.len() + strings + 512).unwrap_or(u32::MAX)
}

/// The cache itself.
pub(crate) struct TokenCache {
    inner: Cache<Key, Arc<Verified>, foldhash::quality::RandomState>,
}

impl TokenCache {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        let builder = Cache::builder().max_capacity(MAX_WEIGHT).weigher(weight).expire_after(UntilExp);
        TokenCache { inner: builder.build_with_hasher(foldhash::quality::RandomState::default()) }
    }

    /// The entry for `token`, if any (the caller re-checks times and key).
    pub(crate) fn get(&self, token: &[u8]) -> Option<Arc<Verified>> {
        self.inner.get(token)
    }

    /// Remembers a verification of `token`.
    pub(crate) fn insert(&self, token: &str, value: Arc<Verified>) {
        self.inner.insert(Box::from(token.as_bytes()), value);
    }

    /// Forgets a token (its key is gone).
    pub(crate) fn remove(&self, token: &[u8]) {
        self.inner.invalidate(token);
    }
}
