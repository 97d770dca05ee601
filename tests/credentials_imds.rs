//! Managed identity through IMDS: azure_identity's hard-coded `169.254.169.254` is sent to a
//! loopback fake by the transport's `imds_endpoint` override (no App Service variables are set in
//! this test binary, so the SDK picks IMDS).

#[path = "credentials_support/mod.rs"]
mod support;

use airgate::{
    config::credential::{Credential, IdentityTransport, ManagedIdentity, UserAssigned},
    metrics::Metrics,
    upstream::credential::NoCredential,
    upstream::credential::{CredentialSource, Timing},
};
use std::{sync::Arc, time::Duration};
use support::{Fake, Protocol, captured_logs, expiry_gauge};
use url::Url;

fn timing() -> Timing {
    Timing {
        fetch_timeout: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_millis(800),
        rejected_interval: Duration::from_secs(10),
        gauge_interval: Duration::from_millis(500),
    }
}

async fn imds(lifetime: u64, user_assigned: Option<UserAssigned>) -> (Fake, Credential) {
    let fake = Fake::start(Protocol::ManagedIdentity { identity_header: None }, None, lifetime).await;
    let credential = Credential::ManagedIdentity(ManagedIdentity {
        scope: "api://apim-backend/.default".into(),
        user_assigned,
        transport: IdentityTransport {
            ca_file: None,
            imds_endpoint: Some(Url::parse(&format!("http://{}", fake.addr)).unwrap()),
        },
    });
    (fake, credential)
}

fn start(credential: &Credential) -> Arc<CredentialSource> {
    CredentialSource::start_with("apim".into(), credential, Metrics::new(10), timing()).unwrap()
}

#[tokio::test]
async fn imds_token_for_a_user_assigned_identity() {
    let logs = captured_logs();
    let (fake, credential) = imds(86_400, Some(UserAssigned::ClientId("mi-client-id".into()))).await;
    let source = start(&credential);
    assert!(source.wait_ready(Duration::from_secs(10)).await, "{:?}", source.not_ready());
    let seen = fake.log.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.method, http::Method::GET);
    assert_eq!(seen.path, "/metadata/identity/oauth2/token");
    assert_eq!(seen.query["api-version"], "2019-08-01");
    assert_eq!(seen.query["resource"], "api://apim-backend", "scope without /.default");
    assert_eq!(seen.query["client_id"], "mi-client-id");
    assert_eq!(seen.headers["metadata"], "true");
    let token = fake.log.issued.lock().unwrap()[0].token.clone();
    assert_eq!(source.header().unwrap().unwrap().to_str().unwrap(), format!("Bearer {token}"));
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!logs.contains(&token), "token leaked into logs");
}

#[tokio::test]
async fn hundred_concurrent_callers_at_start_cause_one_imds_call() {
    let (fake, credential) = imds(86_400, None).await;
    fake.log.delay_ms.store(300, std::sync::atomic::Ordering::SeqCst);
    let source = start(&credential);
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let source = source.clone();
            tokio::spawn(async move {
                let first = source.header().map(|_| ());
                (first, source.wait_ready(Duration::from_secs(10)).await)
            })
        })
        .collect();
    for caller in callers {
        let (first, ready) = caller.await.unwrap();
        assert!(matches!(first, Err(NoCredential { .. })));
        assert!(ready);
    }
    assert_eq!(fake.log.seen.lock().unwrap().len(), 1);
}

/// The lifetime is read from IMDS's own answer (`expires_on`, whole seconds, so a "4 s" token has
/// 3–4 s left on arrival). Refreshing ahead and never serving an expired token are tested on a
/// paused clock (`upstream::credential`) and once end to end (`e2e_credentials`).
#[tokio::test]
async fn short_lived_imds_tokens_are_held_for_what_is_left_of_them() {
    let (fake, credential) = imds(4, None).await;
    let metrics = Metrics::new(10);
    let source = CredentialSource::start_with("apim".into(), &credential, metrics.clone(), timing()).unwrap();
    assert!(source.wait_ready(Duration::from_secs(10)).await);
    let left = expiry_gauge(&metrics).await;
    assert!(left > 2.0 && left <= 4.0, "{left} s left of a 4 s token");
    assert_eq!(fake.log.fetches(), 1);
}

#[tokio::test]
async fn an_imds_outage_is_cut_by_the_outer_timeout() {
    // IMDS answers 503; the SDK's own IMDS retry policy would keep trying for ~72 s.
    let (fake, credential) = imds(3600, None).await;
    fake.log.set_down(true);
    let metrics = Metrics::new(10);
    let source = CredentialSource::start_with("apim".into(), &credential, metrics.clone(), timing()).unwrap();
    assert!(!source.wait_ready(Duration::from_millis(2500)).await);
    assert_eq!(metrics.token_refreshes.with_label_values(&["apim", "timeout"]).get(), 1);
    assert!(source.not_ready().unwrap().contains("no answer within 2s"));
    fake.log.set_down(false);
    assert!(source.wait_ready(Duration::from_secs(6)).await, "{:?}", source.not_ready());
}
