//! Tests of [`super`]: token verification. Each token breaks exactly one rule; `good()` breaks
//! none. The rules and their reasons are one table (`each_broken_rule_has_its_reason`).

use super::super::{Authenticator, RejectionKind, mint::SigningKey, reason};
use crate::{
    config::{
        Problems, SecretRef,
        issuer::{Issuer, KeySource, validate},
    },
    identity::mint::{pem, sign_hmac},
    metrics::Metrics,
};
use aws_lc_rs::{encoding::AsDer, rsa::KeySize, signature::RsaKeyPair};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};

fn issuer(extra: &str, key_pem: &str) -> Issuer {
    let text = format!(
        "name = \"t\"\nissuer = \"https://idp\"\naudiences = [\"urn:airgate\"]\nrequired_scope = \"egress\"\n\
         signing_key = \"env:UNUSED\"\n{extra}"
    );
    let mut p = Problems::default();
    let raw = crate::config::section(toml::from_str(&text).unwrap(), "issuers[0]", &mut p).unwrap();
    let mut i = validate(raw, "issuers[0]", &mut p, &mut Vec::new()).unwrap();
    assert!(p.is_empty(), "{p}");
    i.keys = KeySource::SigningKey(SecretRef::Inline(crate::config::Secret::new(key_pem.as_bytes().to_vec())));
    i
}

struct Fixture {
    auth: Authenticator,
    key: SigningKey,
    metrics: std::sync::Arc<Metrics>,
}

fn ed_pem() -> String {
    String::from_utf8(super::super::mint::generate_dev_signing_key().unwrap().expose().to_vec()).unwrap()
}

fn fixture_with(extra: &str, key_pem: String) -> Fixture {
    let metrics = Metrics::new(100);
    let i = issuer(extra, &key_pem);
    let auth = Authenticator::new(&[i], metrics.clone(), None).unwrap();
    Fixture { auth, key: SigningKey::from_pem(key_pem.as_bytes()).unwrap(), metrics }
}

fn fixture() -> Fixture {
    fixture_with("", ed_pem())
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn now() -> u64 {
    super::unix_now()
}

fn good_claims() -> Map<String, Value> {
    let n = now();
    obj(json!({
        "iss": "https://idp", "aud": "urn:airgate", "sub": "minter", "scope": "egress",
        "dag_id": "sales_daily", "task_id": "load", "run_id": "manual__1", "try_number": 2, "map_index": "-1",
        "team": "sales", "jti": "j1", "iat": n, "nbf": n, "exp": n + 300,
    }))
}

impl Fixture {
    fn header(&self) -> Map<String, Value> {
        obj(json!({"alg": "EdDSA", "typ": "JWT", "kid": self.key.kid()}))
    }
    fn token(
        &self,
        edit_header: impl FnOnce(&mut Map<String, Value>),
        edit: impl FnOnce(&mut Map<String, Value>),
    ) -> String {
        let mut h = self.header();
        edit_header(&mut h);
        let mut c = good_claims();
        edit(&mut c);
        self.key.sign(&h, &c).unwrap()
    }
    fn good(&self) -> String {
        self.token(|_| {}, |_| {})
    }
    async fn run(
        &self,
        token: &str,
        extra: &[(&str, &str)],
    ) -> Result<std::sync::Arc<super::super::Identity>, (RejectionKind, &'static str)> {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        for (k, v) in extra {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        self.auth.authenticate(&h).await.map_err(|r| (r.kind, r.reason))
    }
    async fn reason(&self, token: &str) -> &'static str {
        self.run(token, &[]).await.err().map(|e| e.1).unwrap_or("accepted")
    }
}

#[tokio::test]
async fn a_good_token_maps_every_field() {
    let f = fixture();
    let id = f.run(&f.good(), &[]).await.unwrap();
    assert_eq!(&*id.issuer, "t");
    assert_eq!(id.pipeline, "sales_daily");
    assert_eq!(id.task.as_deref(), Some("load"));
    assert_eq!(id.run_id.as_deref(), Some("manual__1"));
    assert_eq!(id.try_number.as_deref(), Some("2"));
    assert_eq!(id.map_index.as_deref(), Some("-1"));
    assert_eq!(id.team.as_deref(), Some("sales"));
    assert_eq!(id.principal.as_deref(), Some("minter"));
    assert_eq!(id.jti.as_deref(), Some("j1"));
    // The cached path gives the same identity.
    assert_eq!(f.run(&f.good(), &[]).await.unwrap().pipeline, "sales_daily");
}

impl Fixture {
    /// The good token with `header` and `claims` fields set (a `Value::Null` claim is removed).
    fn with(&self, header: &[(&str, Value)], claims: &[(&str, Value)]) -> String {
        self.token(
            |h| h.extend(header.iter().map(|(k, v)| ((*k).to_owned(), v.clone()))),
            |c| {
                for (k, v) in claims {
                    match v {
                        Value::Null => c.remove(*k),
                        v => c.insert((*k).to_owned(), v.clone()),
                    };
                }
            },
        )
    }
}

/// One row: what the case is, how the token is made from the fixture (and `now`), the reason.
type Case = (&'static str, fn(&Fixture, u64) -> String, &'static str);

const CASES: &[Case] = &[
    (
        "alg none, unsigned",
        |_, _| {
            let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
            let c = URL_SAFE_NO_PAD.encode(Value::Object(good_claims()).to_string());
            format!("{h}.{c}.AAAA")
        },
        reason::ALG_NOT_ALLOWED,
    ),
    ("another kid", |f, _| f.with(&[("kid", json!("other"))], &[]), reason::UNKNOWN_KID),
    ("another iss", |f, _| f.with(&[], &[("iss", json!("https://evil"))]), reason::UNKNOWN_ISSUER),
    ("another aud", |f, _| f.with(&[], &[("aud", json!("urn:other"))]), reason::WRONG_AUDIENCE),
    (
        "Execution API aud",
        |f, _| f.with(&[], &[("aud", json!(["urn:airgate", "urn:airflow.apache.org:task"]))]),
        reason::AIRFLOW_EXECUTION_TOKEN,
    ),
    (
        "expired past leeway",
        |f, n| f.with(&[], &[("exp", json!(n - 11)), ("iat", json!(n - 100)), ("nbf", json!(n - 100))]),
        reason::EXPIRED,
    ),
    ("nbf ahead", |f, n| f.with(&[], &[("nbf", json!(n + 60))]), reason::NOT_YET_VALID),
    ("no exp", |f, _| f.with(&[], &[("exp", Value::Null)]), reason::MISSING_CLAIM),
    ("no iat", |f, _| f.with(&[], &[("iat", Value::Null)]), reason::MISSING_CLAIM),
    ("lifetime over max", |f, n| f.with(&[], &[("exp", json!(n + 901))]), reason::LIFETIME_TOO_LONG),
    ("another scope", |f, _| f.with(&[], &[("scope", json!("read"))]), reason::WRONG_SCOPE),
    ("no scope", |f, _| f.with(&[], &[("scope", Value::Null)]), reason::WRONG_SCOPE),
    ("no dag_id", |f, _| f.with(&[], &[("dag_id", Value::Null)]), reason::MISSING_PIPELINE),
    ("embedded jwk", |f, _| f.with(&[("jwk", f.key.public_jwk())], &[]), reason::EMBEDDED_KEY),
    ("embedded jku", |f, _| f.with(&[("jku", json!("https://evil/jwks"))], &[]), reason::EMBEDDED_KEY),
    ("crit header", |f, _| f.with(&[("crit", json!(["exp"]))], &[]), reason::CRIT_HEADER),
    ("not base64url", |_, _| "%%%.e30.AAAA".to_owned(), reason::MALFORMED),
    (
        "duplicate claim",
        |f, _| {
            let t = f.good();
            let mut parts: Vec<&str> = t.split('.').collect();
            let dup = URL_SAFE_NO_PAD.encode(r#"{"iss":"https://idp","dag_id":"a","dag_id":"b"}"#);
            parts[1] = &dup;
            parts.join(".")
        },
        reason::MALFORMED,
    ),
    (
        "another signature",
        |f, _| {
            let t = f.good();
            let (rest, _) = t.rsplit_once('.').unwrap();
            format!("{rest}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]))
        },
        reason::BAD_SIGNATURE,
    ),
    ("try_number not a number", |f, _| f.with(&[], &[("try_number", json!("two"))]), reason::MALFORMED),
    ("over the size cap", |f, _| f.with(&[], &[("pad", json!("x".repeat(9000)))]), reason::TOKEN_TOO_LARGE),
];

#[tokio::test]
async fn each_broken_rule_has_its_reason() {
    let f = fixture();
    let n = now();
    for (name, make, want) in CASES {
        assert_eq!(f.reason(&make(&f, n)).await, *want, "{name}: token breaking {want}");
    }
    // Counted by issuer and reason; unknown issuers as `_unknown`.
    let text = f.metrics.render();
    assert!(text.contains(r#"airgate_auth_failures_total{issuer="t",reason="bad_signature"} 1"#), "{text}");
    assert!(text.contains(r#"airgate_auth_failures_total{issuer="_unknown",reason="unknown_issuer"} 1"#));
}

#[tokio::test]
async fn expiry_within_leeway_is_accepted_and_cache_hits_recheck_time() {
    let f = fixture_with("leeway = \"10s\"\n", ed_pem());
    let n = now();
    let t = f.with(&[], &[("exp", json!(n - 5)), ("iat", json!(n - 60)), ("nbf", json!(n - 60))]);
    assert!(f.run(&t, &[]).await.is_ok());
    // A token expiring in 1 s is cached; once past exp + leeway, the hit is re-checked and refused.
    let f = fixture_with("leeway = \"0s\"\n", ed_pem());
    let t = f.with(&[], &[("exp", json!(now() + 1))]);
    assert!(f.run(&t, &[]).await.is_ok());
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(f.reason(&t).await, reason::EXPIRED);
}

#[tokio::test]
async fn a_cached_token_with_more_after_it_is_refused_for_what_follows() {
    // The token's characters are checked on a cache miss only: a cached token followed by a
    // second token or a stray byte is another key, a miss, and refused with its own reason.
    let f = fixture();
    let good = f.good();
    assert!(f.run(&good, &[]).await.is_ok());
    assert!(f.run(&good, &[]).await.is_ok(), "a hit");
    assert_eq!(f.reason(&format!("{good} {good}")).await, reason::MULTIPLE_TOKENS);
    assert_eq!(f.reason(&format!("{good},{good}")).await, reason::MULTIPLE_TOKENS);
    assert_eq!(f.reason(&format!("{good}+")).await, reason::MALFORMED);
    assert_eq!(f.reason(&format!("{good}\u{e9}")).await, reason::MALFORMED);
    assert_eq!(f.reason(&format!("  {good}\t")).await, "accepted", "blanks around it are trimmed");
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&rsa).unwrap();
    let f = fixture_with("algorithms = [\"RS256\"]\n", pem("PRIVATE KEY", der.as_ref()));
    assert!(f.run(&f.with(&[("alg", json!("RS256"))], &[]), &[]).await.is_ok());
    let public = f.key.public_jwk().to_string();
    let mut h = f.header();
    h.insert("alg".into(), json!("HS256"));
    let forged = sign_hmac(Algorithm::HS256, public.as_bytes(), &h, &good_claims()).unwrap();
    assert_eq!(f.reason(&forged).await, reason::ALG_NOT_ALLOWED);
    // RS384 is allowed for RSA keys in general but not by this issuer.
    assert_eq!(f.reason(&f.with(&[("alg", json!("RS384"))], &[])).await, reason::ALG_NOT_ALLOWED);
}

#[tokio::test]
async fn shared_secret_issuers_accept_hs256_only() {
    let text = "name = \"h\"\nissuer = \"https://idp\"\naudiences = [\"urn:airgate\"]\nshared_secret = \"env:X\"\n";
    let mut p = Problems::default();
    let raw = crate::config::section(toml::from_str(text).unwrap(), "issuers[0]", &mut p).unwrap();
    let mut i = validate(raw, "issuers[0]", &mut p, &mut Vec::new()).unwrap();
    let secret = vec![42u8; 32];
    i.keys = KeySource::SharedSecret(SecretRef::Inline(crate::config::Secret::new(secret.clone())));
    let auth = Authenticator::new(&[i], Metrics::new(10), None).unwrap();
    let mut claims = good_claims();
    claims.remove("scope");
    let h = obj(json!({"alg": "HS256"}));
    let t = sign_hmac(Algorithm::HS256, &secret, &h, &claims).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
    assert!(auth.authenticate(&headers).await.is_ok());
    let t = sign_hmac(Algorithm::HS512, &secret, &obj(json!({"alg": "HS512"})), &claims).unwrap();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
    assert_eq!(auth.authenticate(&headers).await.unwrap_err().reason, reason::ALG_NOT_ALLOWED);
    let t = sign_hmac(Algorithm::HS256, &[1u8; 32], &h, &claims).unwrap();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
    assert_eq!(auth.authenticate(&headers).await.unwrap_err().reason, reason::BAD_SIGNATURE);
}

#[tokio::test]
async fn header_assertions_must_match_the_claims() {
    let f = fixture();
    let t = f.good();
    assert!(f.run(&t, &[("x-airflow-dag-id", "sales_daily"), ("x-airflow-try-number", "2")]).await.is_ok());
    for (h, v) in [
        ("x-airflow-dag-id", "finance"),
        ("x-airflow-task-id", "other"),
        ("x-airflow-run-id", "x"),
        ("x-airflow-try-number", "3"),
        ("x-airflow-map-index", "0"),
    ] {
        assert_eq!(
            f.run(&t, &[(h, v)]).await.unwrap_err(),
            (RejectionKind::Forbidden, reason::IDENTITY_MISMATCH),
            "{h}"
        );
    }
    // Repeated header with one wrong value.
    assert!(f.run(&t, &[("x-airflow-dag-id", "sales_daily"), ("x-airflow-dag-id", "x")]).await.is_err());
    // `_` spellings are not assertions: never read (the rewrite strips them).
    assert!(f.run(&t, &[("x_airflow_dag_id", "finance"), ("X-Airflow_Task-Id", "other")]).await.is_ok());
}

#[tokio::test]
async fn pipeline_from_header_is_limited_to_the_grant() {
    let extra = "pipeline_from_header = true\nprincipal_pipelines = { minter = [\"sales_*\"] }\n[claims]\nprincipal = \"sub\"\n";
    let f = fixture_with(extra, ed_pem());
    let t = f.with(&[], &[("dag_id", Value::Null), ("task_id", Value::Null)]);
    let id = f.run(&t, &[("x-airflow-dag-id", "sales_hourly"), ("x-airflow-task-id", "t1")]).await.unwrap();
    assert_eq!(id.pipeline, "sales_hourly");
    assert_eq!(id.task.as_deref(), Some("t1"));
    assert_eq!(f.run(&t, &[("x-airflow-dag-id", "finance")]).await.unwrap_err().1, reason::PIPELINE_NOT_GRANTED);
    assert_eq!(f.run(&t, &[]).await.unwrap_err().1, reason::MISSING_PIPELINE_HEADER);
    // Only one header holding one DAG id names the pipeline (contract §2); an `_` spelling is
    // not the header at all.
    let long = format!("sales_{}", "s".repeat(245));
    for bad in [
        &[("x-airflow-dag-id", "sales_a"), ("x-airflow-dag-id", "sales_b")][..],
        &[("x-airflow-dag-id", "sales_a,sales_b")],
        &[("x-airflow-dag-id", "sales_a, sales_b")],
        &[("x-airflow-dag-id", "sales_*")],
        &[("x-airflow-dag-id", "sales a")],
        &[("x-airflow-dag-id", "sales/a")],
        &[("x-airflow-dag-id", "")],
        &[("x-airflow-dag-id", long.as_str())],
        &[("x_airflow_dag_id", "sales_a")],
        &[("x-airflow_dag-id", "sales_a")],
    ] {
        assert_eq!(f.run(&t, bad).await.unwrap_err().1, reason::MISSING_PIPELINE_HEADER, "{bad:?}");
    }
    let ok = format!("sales_{}", "s".repeat(244));
    assert_eq!(f.run(&t, &[("x-airflow-dag-id", &ok)]).await.unwrap().pipeline, ok);
    assert_eq!(f.run(&t, &[("x-airflow-dag-id", "sales_A-1.b")]).await.unwrap().pipeline, "sales_A-1.b");
    // Claims the token does carry are still assertions.
    assert_eq!(
        f.run(&t, &[("x-airflow-dag-id", "sales_a"), ("x-airflow-run-id", "other")]).await.unwrap_err().1,
        reason::IDENTITY_MISMATCH
    );
    let other = f.with(&[], &[("sub", json!("stranger"))]);
    assert_eq!(f.run(&other, &[("x-airflow-dag-id", "sales_a")]).await.unwrap_err().1, reason::PIPELINE_NOT_GRANTED);
}

#[tokio::test]
async fn minted_tokens_verify() {
    let pem_text = ed_pem();
    let i = issuer("", &pem_text);
    let auth = Authenticator::new(std::slice::from_ref(&i), Metrics::new(10), None).unwrap();
    let req = super::super::mint::MintRequest {
        dag: "d".into(),
        task: "t".into(),
        run: Some("r".into()),
        try_number: Some(1),
        map_index: None,
        team: None,
        ttl: std::time::Duration::from_secs(300),
        audience: None,
        extra_scope: None,
    };
    let t = super::super::mint::mint(&i, &req).unwrap();
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
    let id = auth.authenticate(&h).await.unwrap();
    assert_eq!((id.pipeline.as_str(), id.try_number.as_deref()), ("d", Some("1")));
    let long = super::super::mint::MintRequest { ttl: std::time::Duration::from_secs(3600), ..req };
    assert!(super::super::mint::mint(&i, &long).is_err());
}

#[tokio::test]
async fn the_development_issuer_mints_and_verifies() {
    let key = super::super::mint::generate_dev_signing_key().unwrap();
    let i = Issuer::development("demo", "https://airgate.demo", "urn:airgate", key);
    let auth = Authenticator::new(std::slice::from_ref(&i), Metrics::new(10), None).unwrap();
    let req = super::super::mint::MintRequest {
        dag: "sales_daily".into(),
        task: "t".into(),
        run: None,
        try_number: None,
        map_index: Some(3),
        team: Some("sales".into()),
        ttl: std::time::Duration::from_secs(60),
        audience: None,
        extra_scope: Some("read".into()),
    };
    let t = super::super::mint::mint(&i, &req).unwrap();
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
    let id = auth.authenticate(&h).await.unwrap();
    assert_eq!((id.map_index.as_deref(), id.team.as_deref()), (Some("3"), Some("sales")));
    assert!(super::super::mint::public_jwks(&i).unwrap().contains("\"OKP\""));
}

#[tokio::test]
async fn issuers_are_chosen_by_iss_then_aud() {
    use super::super::mint::{MintRequest, generate_dev_signing_key, mint};
    let a = Issuer::development("a", "https://idp", "urn:a", generate_dev_signing_key().unwrap());
    let b = Issuer::development("b", "https://idp", "urn:b", generate_dev_signing_key().unwrap());
    let c = Issuer::development("c", "https://other", "urn:a", generate_dev_signing_key().unwrap());
    let auth = Authenticator::new(&[a.clone(), b.clone(), c.clone()], Metrics::new(10), None).unwrap();
    let req = MintRequest {
        dag: "d".into(),
        task: "t".into(),
        run: None,
        try_number: None,
        map_index: None,
        team: None,
        ttl: std::time::Duration::from_secs(60),
        audience: None,
        extra_scope: None,
    };
    for (issuer, want) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let t = mint(issuer, &req).unwrap();
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
        assert_eq!(&*auth.authenticate(&h).await.unwrap().issuer, want);
    }
    // Issuer b's key cannot vouch for issuer a's audience.
    let wrong = mint(&b, &MintRequest { audience: Some("urn:a".into()), ..req }).unwrap();
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {wrong}")).unwrap());
    let r = auth.authenticate(&h).await.unwrap_err();
    assert_eq!((r.reason, r.issuer.as_deref()), (reason::UNKNOWN_KID, Some("a")));
}

#[tokio::test]
async fn rejections_say_401_or_403() {
    // Their statuses are error.rs's (`GatewayError::from(Rejection)`); here, which kind is which.
    let f = fixture();
    let mut h = HeaderMap::new();
    let r = f.auth.authenticate(&h).await.unwrap_err();
    assert!(!r.token_sent);
    assert_eq!(r.kind, crate::identity::RejectionKind::Unauthenticated);
    h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", f.good())).unwrap());
    h.insert("x-airflow-dag-id", HeaderValue::from_static("nope"));
    let r = f.auth.authenticate(&h).await.unwrap_err();
    assert_eq!((r.kind, r.reason), (crate::identity::RejectionKind::Forbidden, reason::IDENTITY_MISMATCH));
    assert!(f.auth.not_ready().is_empty());
}
