//! JWK and JWKS documents → verification keys: which keys are taken (signature keys of an
//! allowed algorithm and a sound size), which are skipped, and the algorithms each one verifies.

use super::set::{AlgSet, VerifyKey, digest};
use crate::identity::signature::PreparedKey;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

const RSA_ALGS: [Algorithm; 6] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::keys::{KeySet, Lookup};
    use tokio::time::Instant;

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
}
