//! The key set: an issuer's verification keys at one point in time, looked up by `kid` and
//! algorithm, and the fingerprints that tie a cached verification to the key it used.

use crate::identity::signature::PreparedKey;
use jsonwebtoken::Algorithm;
use tokio::time::Instant;

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

    pub(super) fn intersect(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 & other.0)
    }

    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

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
    pub(super) keys: Vec<VerifyKey>,
    /// Tokens must name a `kid` (keys from a JWKS).
    pub(super) require_kid: bool,
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

/// SHA-256 over `parts`, each ended by a NUL: the fingerprint of a key given by its components.
pub(super) fn digest(parts: &[&str]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(b"\0");
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// SHA-256 of `bytes`: the fingerprint of a shared secret.
pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
    out
}
