//! Verification of one token on the slow path (cache miss): parse, refuse what is never
//! acceptable, choose the issuer by `iss` (and `aud`), find the key (refetching once on an
//! unknown `kid`), check the signature with the key prepared when its set was built
//! ([`PreparedKey`](super::signature::PreparedKey)), then the claims. Its tests, one table row
//! per broken rule, are in `verify_tests.rs`.

use super::{
    Authenticator, Rejection, Runtime,
    cache::{PodBinding, Verified},
    claims, jose,
    keys::Lookup,
    pod, reason,
};
use crate::config::AIRFLOW_EXECUTION_AUDIENCE;
use jsonwebtoken::Algorithm;
use serde_json::Value;
use std::{
    str::FromStr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

/// Seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn reject(reason: &'static str, rt: Option<&Runtime>) -> Rejection {
    Rejection::unauthenticated(reason, rt.map(|r| &r.config.name), true)
}

impl Authenticator {
    /// Verifies `token` from scratch.
    pub(super) async fn verify(&self, token: &str, now: u64) -> Result<Verified, Rejection> {
        let parsed = jose::parse(token).map_err(|_| reject(reason::MALFORMED, None))?;
        let iss = parsed.claims.get("iss").and_then(Value::as_str);
        // Several issuers may share an `iss` (one Entra tenant, two audiences): `aud` picks.
        let candidates = || self.issuers.iter().enumerate().filter(|(_, r)| Some(r.config.issuer.as_str()) == iss);
        let chosen = candidates()
            .find(|(_, r)| r.config.audiences.iter().any(|a| jose::audience_contains(&parsed.claims, a)))
            .or_else(|| candidates().next());
        let rt = chosen.map(|(_, r)| r);

        // First, once the payload is readable: an Airflow Execution API token must never be used here.
        if jose::audience_contains(&parsed.claims, AIRFLOW_EXECUTION_AUDIENCE) {
            return Err(reject(reason::AIRFLOW_EXECUTION_TOKEN, rt));
        }
        if parsed.header.contains_key("crit") {
            return Err(reject(reason::CRIT_HEADER, rt));
        }
        if jose::EMBEDDED_KEY_PARAMS.iter().any(|p| parsed.header.contains_key(*p)) {
            return Err(reject(reason::EMBEDDED_KEY, rt));
        }
        let alg = match parsed.header.get("alg") {
            Some(Value::String(a)) => Algorithm::from_str(a).map_err(|_| reject(reason::ALG_NOT_ALLOWED, rt))?,
            _ => return Err(reject(reason::MALFORMED, rt)),
        };
        let kid = match parsed.header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(reject(reason::MALFORMED, rt)),
        };
        let Some((index, rt)) = chosen else {
            return Err(reject(if iss.is_some() { reason::UNKNOWN_ISSUER } else { reason::MISSING_CLAIM }, None));
        };
        let cfg = &rt.config;
        if token.len() > cfg.max_token_bytes {
            return Err(reject(reason::TOKEN_TOO_LARGE, Some(rt)));
        }
        if !cfg.algorithms.contains(&alg) {
            return Err(reject(reason::ALG_NOT_ALLOWED, Some(rt)));
        }

        // The key: look, and on a miss refetch once (single flight, cooldown) and look again.
        let mut set = rt.keys.current().clone();
        let mut refetched = false;
        let (key_kid, fingerprint) = loop {
            let usable = set.as_ref().filter(|s| s.usable(tokio::time::Instant::now()));
            let outcome = usable.map(|s| s.find(kid, alg));
            match outcome {
                Some(Lookup::Found(key)) => {
                    if !key.key.verify(alg, parsed.signing_input.as_bytes(), parsed.signature) {
                        return Err(reject(reason::BAD_SIGNATURE, Some(rt)));
                    }
                    break (key.kid.clone(), key.fingerprint);
                }
                Some(Lookup::WrongAlg) => return Err(reject(reason::ALG_NOT_ALLOWED, Some(rt))),
                Some(Lookup::UnknownKid) if refetched || kid.is_none() => {
                    return Err(reject(reason::UNKNOWN_KID, Some(rt)));
                }
                None if refetched => return Err(reject(reason::KEYS_UNAVAILABLE, Some(rt))),
                Some(Lookup::UnknownKid) | None => {
                    let seen = set.as_ref().map_or(0, |s| s.generation);
                    set = rt.keys.refetch(seen, &self.metrics).await;
                    refetched = true;
                }
            }
        };

        // Signed by a key airgate trusts for this issuer: now the claims.
        if !cfg.audiences.iter().any(|a| jose::audience_contains(&parsed.claims, a)) {
            return Err(reject(reason::WRONG_AUDIENCE, Some(rt)));
        }
        let times = claims::times(&parsed.claims).map_err(|r| reject(r, Some(rt)))?;
        claims::check_window(&times, now, cfg.leeway.as_secs()).map_err(|r| reject(r, Some(rt)))?;
        claims::check_lifetime(&times, cfg.max_lifetime.as_secs()).map_err(|r| reject(r, Some(rt)))?;
        claims::check_scope(&parsed.claims, cfg.required_scope.as_deref()).map_err(|r| reject(r, Some(rt)))?;
        let identity = claims::identity(cfg, &parsed.claims, times.exp).map_err(|r| reject(r, Some(rt)))?;
        let pod = match &cfg.kubernetes {
            None => None,
            Some(_) => {
                let bound = pod::pod_claims(&parsed.claims).ok_or_else(|| reject(reason::NOT_POD_BOUND, Some(rt)))?;
                Some(PodBinding::new(bound))
            }
        };
        Ok(Verified { identity: Arc::new(identity), issuer: index, kid: key_kid, fingerprint, times, pod })
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
