//! Managed identity on App Service: `IDENTITY_ENDPOINT` / `IDENTITY_HEADER` point azure_identity
//! at a loopback fake of the App Service identity endpoint. One test only: environment variables
//! are process-wide, so this binary holds nothing else.

#[path = "credentials_support/mod.rs"]
mod support;

use airgate::{
    config::{SecretRef, credential::Credential},
    metrics::Metrics,
    upstream::credential::{CredentialSource, Timing},
};
use std::time::Duration;
use support::{Fake, Protocol, captured_logs, expiry_gauge};

const IDENTITY_HEADER: &str = "app-service-identity-header-secret";

#[tokio::test]
async fn app_service_endpoint_with_identity_header() {
    let logs = captured_logs();
    let fake = Fake::start(Protocol::ManagedIdentity { identity_header: Some(IDENTITY_HEADER.into()) }, None, 4).await;
    set_identity_env(&format!("http://{}/msi/token", fake.addr));

    let config = r#"
        kind = "managed_identity"
        scope = "https://apim.example/.default"
    "#;
    let raw: airgate::config::credential::RawCredential = toml::from_str(config).unwrap();
    let mut problems = airgate::config::Problems::default();
    let credential = airgate::config::credential::validate(Some(raw), "upstreams[0].credential", &mut problems)
        .expect("valid credential");
    assert!(problems.is_empty());

    let timing = Timing {
        fetch_timeout: Duration::from_secs(3),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_millis(800),
        ..Timing::default()
    };
    let metrics = Metrics::new(10);
    let source = CredentialSource::start_with("apim".into(), &credential, metrics.clone(), timing).unwrap();
    assert!(source.wait_ready(Duration::from_secs(10)).await, "{:?}", source.not_ready());

    let seen = fake.log.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/msi/token");
    assert_eq!(seen.query["api-version"], "2019-08-01");
    assert_eq!(seen.query["resource"], "https://apim.example");
    assert_eq!(seen.headers["x-identity-header"], IDENTITY_HEADER);

    // The lifetime comes from the endpoint's `expires_on`; refreshing ahead and outages are
    // tested on a paused clock (`upstream::credential`) and once end to end (`e2e_credentials`).
    let last = fake.log.issued.lock().unwrap().last().cloned().unwrap();
    assert_eq!(source.header().unwrap().unwrap().to_str().unwrap(), format!("Bearer {}", last.token));
    let left = expiry_gauge(&metrics).await;
    assert!(left > 2.0 && left <= 4.0, "{left} s left of a 4 s token");

    // A static credential for comparison: never expires, never fetches.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "dev-static-token\n").unwrap();
    let fixed =
        CredentialSource::start("dev".into(), &Credential::Static { token: SecretRef::File(file.clone()) }, metrics)
            .unwrap();
    assert_eq!(fixed.header().unwrap().unwrap(), "Bearer dev-static-token");
    std::fs::write(&file, "rotated-static-token").unwrap();
    for _ in 0..50 {
        if fixed.header().unwrap().unwrap() == "Bearer rotated-static-token" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fixed.header().unwrap().unwrap(), "Bearer rotated-static-token");

    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!logs.contains(IDENTITY_HEADER), "identity header leaked into logs");
    assert!(!logs.contains("static-token"), "static token leaked into logs");
    assert!(!logs.contains(&last.token), "token leaked into logs");
}

/// Sets the App Service variables. `set_var` is unsafe in edition 2024 because another thread
/// may read the environment meanwhile; this binary has a single test, which sets them first.
fn set_identity_env(endpoint: &str) {
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("IDENTITY_ENDPOINT", endpoint);
        std::env::set_var("IDENTITY_HEADER", IDENTITY_HEADER);
    }
}
