//! Client secret and workload identity credentials against a loopback Entra ID v2 token endpoint
//! over TLS (a CA made here, trusted only through `ca_file`): tokens flow, refresh ahead of
//! expiry, survive outages until expiry, recover, and no secret reaches a log or a Debug string.

#[path = "credentials_support/mod.rs"]
mod support;

use airgate::{
    config::{
        SecretRef,
        credential::{ClientSecret, Credential, IdentityTransport, WorkloadIdentity},
    },
    metrics::Metrics,
    upstream::credential::NoCredential,
    upstream::credential::{CredentialSource, Timing},
};
use std::{sync::Arc, time::Duration};
use support::{Fake, Protocol, captured_logs, expiry_gauge, pki};
use url::Url;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "s3cr3t-client-value~very-private";
const ASSERTION: &str = "eyJhbGciOiJSUzI1NiJ9.federated-service-account-token.sig";

fn timing() -> Timing {
    Timing {
        fetch_timeout: Duration::from_secs(3),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_millis(800),
        rejected_interval: Duration::from_secs(10),
        gauge_interval: Duration::from_millis(500),
    }
}

struct Setup {
    fake: Fake,
    credential: Credential,
    _pki: support::TestPki,
    _dir: tempfile::TempDir,
}

async fn client_secret(lifetime: u64) -> Setup {
    let pki = pki();
    let protocol = Protocol::Entra {
        tenant: TENANT.into(),
        client_id: CLIENT.into(),
        secret: Some(SECRET.into()),
        assertion: None,
    };
    let fake = Fake::start(protocol, Some(pki.server.clone()), lifetime).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let credential = Credential::ClientSecret(ClientSecret {
        scope: "api://apim-backend/.default".into(),
        tenant_id: TENANT.into(),
        client_id: CLIENT.into(),
        secret: SecretRef::File(secret_file),
        authority_host: Some(Url::parse(&format!("https://localhost:{}", fake.addr.port())).unwrap()),
        transport: IdentityTransport { ca_file: Some(pki.ca_file.clone()), imds_endpoint: None },
    });
    Setup { fake, credential, _pki: pki, _dir: dir }
}

fn start(setup: &Setup) -> (Arc<CredentialSource>, Arc<Metrics>) {
    let metrics = Metrics::new(10);
    let source = CredentialSource::start_with("apim".into(), &setup.credential, metrics.clone(), timing()).unwrap();
    (source, metrics)
}

#[tokio::test]
async fn client_secret_token_is_fetched_over_tls_with_the_form_body() {
    let logs = captured_logs();
    let setup = client_secret(3600).await;
    let (source, metrics) = start(&setup);
    assert!(source.wait_ready(Duration::from_secs(10)).await, "{:?}", source.not_ready());
    let header = source.header().unwrap().unwrap();
    assert!(header.is_sensitive());
    let issued = setup.fake.log.issued.lock().unwrap().clone();
    assert_eq!(issued.len(), 1);
    assert_eq!(header.to_str().unwrap(), format!("Bearer {}", issued[0].token));

    let seen = setup.fake.log.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(seen.headers["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(seen.form["scope"], "api://apim-backend/.default");
    assert_eq!(seen.form["client_secret"], SECRET, "trailing newline of the file trimmed");
    assert_eq!(metrics.token_refreshes.with_label_values(&["apim", "success"]).get(), 1);
    let left = metrics.token_expiry.with_label_values(&["apim"]).get();
    assert!(left > 3500.0 && left <= 3600.0, "{left}");

    // Nothing secret in Debug output, logs or metrics.
    let debug = format!("{source:?} {:?} {header:?}", setup.credential);
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let metrics_text = metrics.render();
    for text in [&debug, &logs, &metrics_text] {
        assert!(!text.contains(SECRET), "secret leaked");
        assert!(!text.contains(&issued[0].token), "token leaked");
    }
}

#[tokio::test]
async fn a_rejected_secret_is_reported_without_echoing_it() {
    let setup = client_secret(3600).await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "wrong-secret-value").unwrap();
    let Credential::ClientSecret(mut c) = setup.credential.clone() else { unreachable!() };
    c.secret = SecretRef::File(wrong);
    let metrics = Metrics::new(10);
    let source =
        CredentialSource::start_with("apim".into(), &Credential::ClientSecret(c), metrics.clone(), timing()).unwrap();
    let why = first_failure(&source).await;
    assert!(why.starts_with("upstream apim: no valid token (last error: "), "{why}");
    assert!(why.contains("AADSTS7000215"), "{why}");
    assert!(!why.contains("wrong-secret-value"), "{why}");
    assert!(metrics.token_refreshes.with_label_values(&["apim", "error"]).get() >= 1);
}

#[tokio::test]
async fn workload_identity_sends_the_federated_token_as_client_assertion() {
    let logs = captured_logs();
    let pki = pki();
    let protocol = Protocol::Entra {
        tenant: TENANT.into(),
        client_id: CLIENT.into(),
        secret: None,
        assertion: Some(ASSERTION.into()),
    };
    let fake = Fake::start(protocol, Some(pki.server.clone()), 3600).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, ASSERTION).unwrap();
    let credential = Credential::WorkloadIdentity(WorkloadIdentity {
        scope: "api://apim-backend/.default".into(),
        tenant_id: Some(TENANT.into()),
        client_id: Some(CLIENT.into()),
        token_file: Some(token_file),
        authority_host: Some(Url::parse(&format!("https://localhost:{}", fake.addr.port())).unwrap()),
        transport: IdentityTransport { ca_file: Some(pki.ca_file.clone()), imds_endpoint: None },
    });
    let source = CredentialSource::start_with("apim".into(), &credential, Metrics::new(10), timing()).unwrap();
    assert!(source.wait_ready(Duration::from_secs(10)).await, "{:?}", source.not_ready());
    let seen = fake.log.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.form["client_assertion"], ASSERTION);
    assert_eq!(seen.form["client_id"], CLIENT);
    let token = fake.log.issued.lock().unwrap()[0].token.clone();
    assert_eq!(source.header().unwrap().unwrap().to_str().unwrap(), format!("Bearer {token}"));
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!logs.contains(ASSERTION) && !logs.contains(&token));
}

#[tokio::test]
async fn workload_identity_without_a_token_file_fails_the_start() {
    let credential = Credential::WorkloadIdentity(WorkloadIdentity {
        scope: "api://x/.default".into(),
        tenant_id: Some(TENANT.into()),
        client_id: Some(CLIENT.into()),
        token_file: Some("/nonexistent/azure-identity-token".into()),
        authority_host: None,
        transport: IdentityTransport::default(),
    });
    let err = CredentialSource::start("apim".into(), &credential, Metrics::new(10)).unwrap_err();
    assert!(err.contains("federated token"), "{err}");
}

#[tokio::test]
async fn hundred_concurrent_callers_at_start_cause_one_fetch() {
    let setup = client_secret(3600).await;
    setup.fake.log.delay_ms.store(300, std::sync::atomic::Ordering::SeqCst);
    let (source, _) = start(&setup);
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let source = source.clone();
            tokio::spawn(async move {
                // Each caller gets an answer right away: no token yet, retry shortly.
                match source.header() {
                    Err(NoCredential { retry_after }) => assert!(retry_after >= 1),
                    other => panic!("{other:?}"),
                }
                source.wait_ready(Duration::from_secs(10)).await
            })
        })
        .collect();
    for caller in callers {
        assert!(caller.await.unwrap());
    }
    assert_eq!(setup.fake.log.seen.lock().unwrap().len(), 1);
    assert_eq!(setup.fake.log.fetches(), 1);
}

/// The lifetime is read from Entra's own answer (`expires_in`). Refreshing ahead, never serving
/// an expired token and outages later on are tested on a paused clock (`upstream::credential`)
/// and once end to end (`e2e_credentials`).
#[tokio::test]
async fn short_lived_tokens_are_held_for_what_is_left_of_them() {
    let setup = client_secret(4).await;
    let (source, metrics) = start(&setup);
    assert!(source.wait_ready(Duration::from_secs(10)).await);
    let left = expiry_gauge(&metrics).await;
    assert!(left > 2.0 && left <= 4.0, "{left} s left of a 4 s token");
    assert_eq!(setup.fake.log.fetches(), 1);
}

#[tokio::test]
async fn token_endpoint_down_at_start_then_recovery() {
    let setup = client_secret(3600).await;
    setup.fake.log.set_down(true);
    let (source, metrics) = start(&setup);
    assert!(!source.wait_ready(Duration::from_millis(600)).await);
    match source.header() {
        Err(NoCredential { retry_after }) => assert!((1..=2).contains(&retry_after)),
        other => panic!("{other:?}"),
    }
    let why = source.not_ready().unwrap();
    assert!(why.contains("fake outage"), "{why}");
    assert!(metrics.token_refreshes.with_label_values(&["apim", "error"]).get() >= 1);
    setup.fake.log.set_down(false);
    assert!(source.wait_ready(Duration::from_secs(5)).await);
    assert!(source.not_ready().is_none());
    assert!(source.header().unwrap().is_some());
}

#[tokio::test]
async fn the_test_ca_is_needed_to_reach_the_endpoint() {
    let setup = client_secret(3600).await;
    let Credential::ClientSecret(mut c) = setup.credential.clone() else { unreachable!() };
    c.transport.ca_file = None;
    let source =
        CredentialSource::start_with("apim".into(), &Credential::ClientSecret(c), Metrics::new(10), timing()).unwrap();
    let why = first_failure(&source).await;
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    assert_eq!(setup.fake.log.fetches(), 0);
}

/// The readiness text once the first fetch has failed (it never succeeds in these tests). Waits on
/// the outcome, not a fixed time, so a loaded machine cannot turn a slow failure into a pass.
async fn first_failure(source: &CredentialSource) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let why = source.not_ready().expect("never ready with a wrong secret or CA");
        if why.contains("last error") || tokio::time::Instant::now() > deadline {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
