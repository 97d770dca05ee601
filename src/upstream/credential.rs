//! Upstream credential lifecycle. PLACEHOLDER until the credentials issue lands.

use crate::{config::credential::Credential, error::GatewayError, metrics::Metrics};
use http::HeaderValue;
use std::sync::Arc;

/// The gateway's own credential for one upstream.
#[derive(Debug)]
pub struct CredentialSource {}

impl CredentialSource {
    /// Starts the source.
    pub fn start(_upstream: Arc<str>, _credential: &Credential, _metrics: Arc<Metrics>) -> Result<Arc<Self>, String> {
        Ok(Arc::new(CredentialSource {}))
    }

    /// The Authorization header value for the next request.
    pub fn header(&self) -> Result<Option<HeaderValue>, GatewayError> {
        Ok(None)
    }

    /// For /readyz.
    pub fn not_ready(&self) -> Option<String> {
        None
    }

    /// The upstream rejected our token.
    pub fn upstream_rejected(&self) {}
}
