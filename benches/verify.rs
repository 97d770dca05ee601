//! Token verification per algorithm: the full `authenticate` path (bearer extraction, parsing,
//! signature, claims, header assertions), uncached and from the verified-token cache.

use airgate::{
    config::{self, Secret, SecretRef, issuer::KeySource},
    identity::{
        Authenticator,
        mint::{MintRequest, mint, pem},
    },
    metrics::Metrics,
};
use aws_lc_rs::{
    encoding::{AsDer, Pkcs8V1Der},
    rand::SystemRandom,
    rsa::KeySize,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair},
};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use std::{hint::black_box, time::Duration};

fn key_pem(alg: &str) -> String {
    let rng = SystemRandom::new();
    match alg {
        "eddsa" => pem("PRIVATE KEY", Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()),
        "es256" => {
            pem("PRIVATE KEY", EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap().as_ref())
        }
        _ => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
            let der: Pkcs8V1Der<'_> = pair.as_der().unwrap();
            pem("PRIVATE KEY", der.as_ref())
        }
    }
}

/// An authenticator for one signing-key issuer, and request headers carrying a minted token.
fn setup(alg: &str) -> (Authenticator, HeaderMap) {
    let text = "[[issuers]]\nname = \"bench\"\nissuer = \"https://airflow.example\"\naudiences = [\"urn:airgate\"]\n\
                required_scope = \"egress\"\nsigning_key = \"env:UNUSED\"\n";
    let mut issuer = config::parse(text).unwrap().issuers.remove(0);
    issuer.keys = KeySource::SigningKey(SecretRef::Inline(Secret::new(key_pem(alg).into_bytes())));
    let auth = Authenticator::new(std::slice::from_ref(&issuer), Metrics::new(10), None).unwrap();
    let token = mint(
        &issuer,
        &MintRequest {
            dag: "sales_daily".into(),
            task: "load".into(),
            run: Some("scheduled__2026-01-01T00:00:00+00:00".into()),
            try_number: Some(1),
            map_index: Some(-1),
            team: Some("sales".into()),
            ttl: Duration::from_secs(600),
            audience: None,
            extra_scope: None,
        },
    )
    .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    headers.insert("x-airflow-dag-id", HeaderValue::from_static("sales_daily"));
    (auth, headers)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for alg in ["es256", "eddsa", "rs256"] {
        let (auth, headers) = rt.block_on(async { setup(alg) });
        c.bench_function(&format!("verify_{alg}_uncached"), |b| {
            b.to_async(&rt).iter(|| async { black_box(auth.authenticate_uncached(&headers).await.unwrap()) })
        });
        c.bench_function(&format!("verify_{alg}_cached"), |b| {
            b.to_async(&rt).iter(|| async { black_box(auth.authenticate(&headers).await.unwrap()) })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
