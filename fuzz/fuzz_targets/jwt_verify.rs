//! JOSE/JWT parsing and verification: arbitrary bytes as the `Authorization` value never panic,
//! and whatever verifies is a token really signed by one of the two fixed test keys — an Ed25519
//! key (issuer `https://a.invalid`) or an HS256 secret (issuer `https://b.invalid`) — whose `iss`
//! names that key's issuer, whose `aud` is `urn:airgate` and which has not expired. The oracle
//! checks signatures with aws-lc-rs directly, not through the gateway's code, and the rest of
//! contract §2 on its own reading of the claims: one `Bearer` token of at most 8 KiB, `iat`
//! present and `exp - iat` at most 15 min, `nbf` honoured (10 s leeway), `scope` containing
//! `egress` for issuer `a` (its `required_scope`; `b` has none), a non-empty `dag_id`, and an
//! identity carrying exactly those claims.
//!
//! Input: a first byte of flags (bit 0: through the verified-token cache; bits 1–2: mode). Mode 0:
//! the rest is the whole header value; mode 1: `Bearer ` + the rest; modes 2–3: a token freshly
//! minted at start-up (picked by the next byte) edited by `[op, position, byte]` triples
//! (replace / insert / delete), so valid tokens stay reachable however old the corpus is.
#![no_main]

use airgate::{
    config::{
        Secret, SecretRef,
        issuer::{Issuer, KeySource},
    },
    identity::{
        Authenticator, Identity,
        mint::{self, MintRequest, SigningKey},
    },
    metrics::Metrics,
};
use aws_lc_rs::{hmac, signature};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use std::{sync::OnceLock, time::Duration};

const HMAC_SECRET: &[u8] = b"fuzz-only-shared-secret-0123456789abcdef";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    auth: Authenticator,
    ed_public: Vec<u8>,
    templates: Vec<String>,
}

fn ed_pem() -> String {
    // PKCS#8 v1 wrapping of a fixed Ed25519 seed: the fuzz key is the same on every run.
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(&[0x5a; 32]);
    mint::pem("PRIVATE KEY", &der)
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let pem = ed_pem();
        let a = Issuer::development("a", "https://a.invalid", "urn:airgate", Secret::new(pem.as_bytes().to_vec()));
        let b = Issuer {
            name: "b".into(),
            issuer: "https://b.invalid".into(),
            algorithms: vec![jsonwebtoken::Algorithm::HS256],
            keys: KeySource::SharedSecret(SecretRef::Inline(Secret::new(HMAC_SECRET.to_vec()))),
            required_scope: None,
            ..a.clone()
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let auth =
            runtime.block_on(async { Authenticator::new(&[a.clone(), b.clone()], Metrics::new(100), None) }).unwrap();
        let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
        let x = key.public_jwk()["x"].as_str().unwrap().to_owned();
        let req = MintRequest {
            dag: "sales_daily".into(),
            task: "load".into(),
            run: Some("manual__1".into()),
            try_number: Some(1),
            map_index: Some(3),
            team: Some("sales".into()),
            ttl: Duration::from_secs(600),
            audience: None,
            extra_scope: None,
        };
        let mut templates = vec![mint::mint(&a, &req).unwrap(), mint::mint(&b, &req).unwrap()];
        // No `kid`: the verifier must still find the one key.
        let claims: serde_json::Map<String, Value> =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(templates[0].split('.').nth(1).unwrap()).unwrap()).unwrap();
        let header = json!({"alg": "EdDSA", "typ": "JWT"});
        templates.push(key.sign(header.as_object().unwrap(), &claims).unwrap());
        // The oracle path must be reachable: every template verifies as minted.
        for t in &templates {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
            runtime.block_on(auth.authenticate_uncached(&h)).unwrap();
        }
        Fixture { runtime, auth, ed_public: URL_SAFE_NO_PAD.decode(x).unwrap(), templates }
    })
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The independent oracle: true when `token` carries a good signature by a fixed key for its
/// `iss`, `aud` `urn:airgate`, and an `exp` not yet past (10 s leeway).
fn really_signed(f: &Fixture, token: &str) -> Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts[..] else { return Err("not three parts".into()) };
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())?;
    let input = format!("{h}.{p}");
    let signed = match (header["alg"].as_str(), claims["iss"].as_str()) {
        (Some("EdDSA"), Some("https://a.invalid")) => {
            signature::UnparsedPublicKey::new(&signature::ED25519, &f.ed_public).verify(input.as_bytes(), &sig).is_ok()
        }
        (Some("HS256"), Some("https://b.invalid")) => {
            hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, HMAC_SECRET), input.as_bytes(), &sig).is_ok()
        }
        (alg, iss) => return Err(format!("alg {alg:?} with iss {iss:?}")),
    };
    if !signed {
        return Err("the signature does not verify".into());
    }
    let aud_ok = match &claims["aud"] {
        Value::String(a) => a == "urn:airgate",
        Value::Array(list) => list.iter().any(|a| a == "urn:airgate"),
        _ => false,
    };
    if !aud_ok {
        return Err(format!("aud {}", claims["aud"]));
    }
    // NumericDate: a non-negative JSON number, fractions dropped.
    let date = |name: &str| claims[name].as_f64().filter(|d| *d >= 0.0).map(|d| d.floor() as u64);
    let (Some(exp), Some(iat)) = (date("exp"), date("iat")) else {
        return Err(format!("exp {} iat {}", claims["exp"], claims["iat"]));
    };
    // The gateway read the clock first: its `now` is at most ours.
    if exp + 10 < now() {
        return Err(format!("exp {exp} is past"));
    }
    if exp < iat || exp - iat > 15 * 60 {
        return Err(format!("lifetime {exp} - {iat} over max_lifetime"));
    }
    if !claims["nbf"].is_null() && date("nbf").is_none_or(|nbf| nbf > now() + 10) {
        return Err(format!("nbf {}", claims["nbf"]));
    }
    if claims["iss"] == "https://a.invalid"
        && !claims["scope"].as_str().is_some_and(|s| s.split(' ').any(|x| x == "egress"))
    {
        return Err(format!("scope {} without egress", claims["scope"]));
    }
    if !claims["dag_id"].as_str().is_some_and(|d| !d.is_empty()) {
        return Err(format!("dag_id {}", claims["dag_id"]));
    }
    Ok(claims)
}

/// The identity holds the verified claims: issuer by configuration name, pipeline, expiry.
fn same_identity(identity: &Identity, claims: &Value) -> Result<(), String> {
    let issuer = if claims["iss"] == "https://a.invalid" { "a" } else { "b" };
    if &*identity.issuer != issuer || claims["dag_id"].as_str() != Some(identity.pipeline.as_str()) {
        return Err(format!(
            "identity {}/{} for iss {} dag_id {}",
            identity.issuer, identity.pipeline, claims["iss"], claims["dag_id"]
        ));
    }
    if claims["exp"].as_f64().map(|e| e.floor() as u64) != Some(identity.expires_at) {
        return Err(format!("expires_at {} for exp {}", identity.expires_at, claims["exp"]));
    }
    Ok(())
}

fn edit(template: &str, ops: &[u8]) -> Vec<u8> {
    let mut t = template.as_bytes().to_vec();
    for op in ops.chunks_exact(3) {
        let at = usize::from(op[1]) * t.len() / 256;
        match op[0] % 3 {
            0 if at < t.len() => t[at] = op[2],
            1 => t.insert(at.min(t.len()), op[2]),
            2 if at < t.len() => {
                t.remove(at);
            }
            _ => {}
        }
    }
    t
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let f = fixture();
    let value: Vec<u8> = match (flags >> 1) & 3 {
        0 => rest.to_vec(),
        1 => [b"Bearer ".as_slice(), rest].concat(),
        _ => {
            let Some((&which, ops)) = rest.split_first() else { return };
            let token = edit(&f.templates[usize::from(which) % f.templates.len()], ops);
            [b"Bearer ".as_slice(), &token].concat()
        }
    };
    let Ok(value) = HeaderValue::from_bytes(&value) else { return };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value.clone());
    let result = f.runtime.block_on(async {
        if flags & 1 == 1 { f.auth.authenticate(&headers).await } else { f.auth.authenticate_uncached(&headers).await }
    });
    if let Ok(identity) = result {
        let text = value.to_str().expect("an accepted Authorization value is text");
        let (scheme, token) = text.split_once(' ').expect("an accepted Authorization value has a scheme");
        assert!(scheme.eq_ignore_ascii_case("bearer"), "accepted scheme {scheme:?}");
        let token = token.trim_matches([' ', '\t']);
        assert!(token.len() <= 8 << 10, "accepted a token of {} bytes", token.len());
        if let Err(why) = really_signed(f, token).and_then(|claims| same_identity(&identity, &claims)) {
            panic!("accepted {token:?} as {identity:?}, but {why}");
        }
    }
});
