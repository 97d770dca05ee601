//! Minting pipeline identity tokens (`airgate token`, `airgate demo`, tests) with an issuer's
//! `signing_key` or `shared_secret`. Production tokens are minted outside airgate, by the
//! deployment's scheduler hook or token exchange; this module exists for development and tests.

use crate::config::{
    Secret,
    issuer::{Issuer, KeySource},
};
use aws_lc_rs::{
    hmac,
    rand::{SecureRandom, SystemRandom},
    rsa::PublicKeyComponents,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{Algorithm, DecodingKey};
use rustls_pemfile::Item;
use serde_json::{Map, Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What to put in a minted token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// `dag_id` (the pipeline).
    pub dag: String,
    /// `task_id`.
    pub task: String,
    /// `run_id`.
    pub run: Option<String>,
    /// `try_number`.
    pub try_number: Option<u32>,
    /// `map_index`.
    pub map_index: Option<i64>,
    /// `team`.
    pub team: Option<String>,
    /// Lifetime (`exp - iat`); at most the issuer's `max_lifetime`.
    pub ttl: Duration,
    /// `aud`; the issuer's first audience when `None`.
    pub audience: Option<String>,
    /// Scope added after the issuer's `required_scope`.
    pub extra_scope: Option<String>,
}

/// Mints a token for `issuer`. Refuses issuers that hold only public keys.
pub fn mint(issuer: &Issuer, req: &MintRequest) -> Result<String, String> {
    let (signer, alg): (Signer, Algorithm) = match &issuer.keys {
        KeySource::SigningKey(r) => {
            let key = SigningKey::from_pem(r.load()?.expose())?;
            let alg = key.algorithm();
            (Signer::Key(key), alg)
        }
        KeySource::SharedSecret(r) => {
            let alg = issuer.algorithms.first().copied().unwrap_or(Algorithm::HS256);
            (Signer::Hmac(r.load()?), alg)
        }
        KeySource::JwksUrl(_) | KeySource::Discovery(_) | KeySource::JwksFile(_) => {
            return Err(format!(
                "issuer {} has only public keys; minting needs signing_key or shared_secret",
                issuer.name
            ));
        }
    };
    if req.ttl.is_zero() || req.ttl > issuer.max_lifetime {
        return Err(format!(
            "ttl must be between 1s and the issuer's max_lifetime ({})",
            humantime::format_duration(issuer.max_lifetime)
        ));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|_| "clock before 1970")?.as_secs();
    let c = &issuer.claims;
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(issuer.issuer));
    let aud = req.audience.clone().or_else(|| issuer.audiences.first().cloned()).ok_or("issuer has no audience")?;
    claims.insert("aud".into(), json!(aud));
    claims.insert("sub".into(), json!(format!("airflow/{}/{}", req.dag, req.task)));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + req.ttl.as_secs().max(1)));
    claims.insert("jti".into(), json!(random_id()?));
    let scope: Vec<&str> = issuer.required_scope.as_deref().into_iter().chain(req.extra_scope.as_deref()).collect();
    if !scope.is_empty() {
        claims.insert("scope".into(), json!(scope.join(" ")));
    }
    claims.insert(c.pipeline.to_string(), json!(req.dag));
    claims.insert(c.task.to_string(), json!(req.task));
    if let Some(run) = &req.run {
        claims.insert(c.run.to_string(), json!(run));
    }
    if let Some(t) = req.try_number {
        claims.insert(c.try_number.to_string(), json!(t));
    }
    if let Some(m) = req.map_index {
        claims.insert(c.map_index.to_string(), json!(m));
    }
    if let Some(team) = &req.team {
        claims.insert(c.team.to_string(), json!(team));
    }
    let mut header = Map::new();
    header.insert("alg".into(), json!(alg_name(alg)));
    header.insert("typ".into(), json!("JWT"));
    if let Signer::Key(k) = &signer {
        header.insert("kid".into(), json!(k.kid()));
    }
    match signer {
        Signer::Key(k) => k.sign(&header, &claims),
        Signer::Hmac(secret) => sign_hmac(alg, secret.expose(), &header, &claims),
    }
}

/// The public JWKS of an issuer's `signing_key` (what a minter would publish), as JSON text.
pub fn public_jwks(issuer: &Issuer) -> Result<String, String> {
    let KeySource::SigningKey(r) = &issuer.keys else {
        return Err(format!("issuer {} has no signing_key", issuer.name));
    };
    let key = SigningKey::from_pem(r.load()?.expose())?;
    Ok(json!({ "keys": [key.public_jwk()] }).to_string())
}

/// A fresh Ed25519 private key as PKCS#8 PEM, for `airgate demo` (wrap it in `SecretRef::Inline`).
pub fn generate_dev_signing_key() -> Result<Secret, String> {
    let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| "cannot generate an Ed25519 key")?;
    Ok(Secret::new(pem("PRIVATE KEY", der.as_ref()).into_bytes()))
}

/// Wraps DER in PEM armour.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

enum Signer {
    Key(SigningKey),
    Hmac(Secret),
}

fn random_id() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| "no randomness")?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The JOSE name of an algorithm.
pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

fn signing_input(header: &Map<String, Value>, claims: &Map<String, Value>) -> String {
    let h = URL_SAFE_NO_PAD.encode(Value::Object(header.clone()).to_string());
    let c = URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string());
    format!("{h}.{c}")
}

/// Signs `header.claims` with an HMAC secret (`alg` must be HS256/384/512). For tests and minting.
pub fn sign_hmac(
    alg: Algorithm,
    secret: &[u8],
    header: &Map<String, Value>,
    claims: &Map<String, Value>,
) -> Result<String, String> {
    let h = match alg {
        Algorithm::HS256 => hmac::HMAC_SHA256,
        Algorithm::HS384 => hmac::HMAC_SHA384,
        Algorithm::HS512 => hmac::HMAC_SHA512,
        other => return Err(format!("{other:?} is not an HMAC algorithm")),
    };
    let input = signing_input(header, claims);
    let tag = hmac::sign(&hmac::Key::new(h, secret), input.as_bytes());
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
}

/// A private signing key (Ed25519, ECDSA P-256 or RSA) read from PEM.
pub struct SigningKey {
    pair: Pair,
    kid: String,
    jwk: Value,
}

enum Pair {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PEM private key: PKCS#8 (Ed25519, P-256, RSA), PKCS#1 (RSA) or SEC1 (P-256).
    /// Errors never contain key material.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let mut reader = pem;
        let pair = loop {
            match rustls_pemfile::read_one(&mut reader) {
                Ok(Some(Item::Pkcs8Key(der))) => {
                    let der = der.secret_pkcs8_der();
                    if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                        break Pair::Ed25519(k);
                    }
                    if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
                        break Pair::Es256(k);
                    }
                    if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
                        break Pair::Rsa(k);
                    }
                    return Err("PKCS#8 key is not Ed25519, ECDSA P-256 or RSA (2048-8192 bits)".into());
                }
                Ok(Some(Item::Pkcs1Key(der))) => {
                    break Pair::Rsa(RsaKeyPair::from_der(der.secret_pkcs1_der()).map_err(|_| "bad RSA private key")?);
                }
                Ok(Some(Item::Sec1Key(der))) => {
                    break Pair::Es256(
                        EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_sec1_der())
                            .map_err(|_| "bad EC private key (only P-256 is supported)")?,
                    );
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err("no private key in PEM".into()),
                Err(_) => return Err("unreadable PEM".into()),
            }
        };
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        // RFC 7638 thumbprint input: required members only, lexicographic order, no whitespace.
        let (thumb_input, mut jwk) = match &pair {
            Pair::Ed25519(k) => {
                let x = b64(k.public_key().as_ref());
                (
                    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
                    json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
                )
            }
            Pair::Es256(k) => {
                let point = k.public_key().as_ref();
                let (x, y) = point.get(1..).ok_or("bad EC public key")?.split_at(32);
                let (x, y) = (b64(x), b64(y));
                (
                    format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
                    json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
                )
            }
            Pair::Rsa(k) => {
                let c = PublicKeyComponents::<Vec<u8>>::from(k.public_key());
                let (n, e) = (b64(&c.n), b64(&c.e));
                (format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#), json!({"kty": "RSA", "n": n, "e": e}))
            }
        };
        let kid = b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, thumb_input.as_bytes()).as_ref());
        if let Value::Object(m) = &mut jwk {
            m.insert("kid".into(), json!(kid));
            m.insert("use".into(), json!("sig"));
        }
        Ok(SigningKey { pair, kid, jwk })
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self.pair {
            Pair::Ed25519(_) => Algorithm::EdDSA,
            Pair::Es256(_) => Algorithm::ES256,
            Pair::Rsa(_) => Algorithm::RS256,
        }
    }

    /// `kid`: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK with `kid` and `use`, and without `alg` (as Airflow publishes).
    pub fn public_jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// The public key for verification.
    pub fn decoding_key(&self) -> DecodingKey {
        match &self.pair {
            Pair::Ed25519(k) => DecodingKey::from_ed_der(k.public_key().as_ref()),
            Pair::Es256(k) => DecodingKey::from_ec_der(k.public_key().as_ref()),
            Pair::Rsa(k) => {
                let c = PublicKeyComponents::<Vec<u8>>::from(k.public_key());
                DecodingKey::from_rsa_raw_components(&c.n, &c.e)
            }
        }
    }

    /// Signs `header.claims` as given (the caller sets `alg` and `kid`); compact JWS.
    pub fn sign(&self, header: &Map<String, Value>, claims: &Map<String, Value>) -> Result<String, String> {
        let input = signing_input(header, claims);
        let sig = match &self.pair {
            Pair::Ed25519(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
            Pair::Es256(k) => {
                k.sign(&SystemRandom::new(), input.as_bytes()).map_err(|_| "ECDSA signing failed")?.as_ref().to_vec()
            }
            Pair::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig)
                    .map_err(|_| "RSA signing failed")?;
                sig
            }
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_key_round_trips_and_has_a_thumbprint_kid() {
        let pem = generate_dev_signing_key().unwrap();
        let key = SigningKey::from_pem(pem.expose()).unwrap();
        assert_eq!(key.algorithm(), Algorithm::EdDSA);
        assert_eq!(key.kid().len(), 43);
        assert!(key.public_jwk().get("alg").is_none());
        assert_eq!(format!("{:?}", pem), "[redacted]");
    }

    #[test]
    fn ec_and_rsa_pkcs8_keys_are_read() {
        let rng = SystemRandom::new();
        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let k = SigningKey::from_pem(pem("PRIVATE KEY", ec.as_ref()).as_bytes()).unwrap();
        assert_eq!(k.algorithm(), Algorithm::ES256);
        assert!(SigningKey::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
        assert!(SigningKey::from_pem(b"nothing").is_err());
    }
}
