//! Caller identity. PLACEHOLDER until the identity issue lands: accepts no token.

use crate::{error::GatewayError, metrics::Metrics};
use std::sync::Arc;

/// A verified caller identity.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// Issuer config name.
    pub issuer: Arc<str>,
    /// Principal.
    pub principal: Option<String>,
    /// DAG id.
    pub pipeline: String,
    /// Task id.
    pub task: Option<String>,
    /// Run id.
    pub run_id: Option<String>,
    /// Try.
    pub try_number: Option<String>,
    /// Map index.
    pub map_index: Option<String>,
    /// Team.
    pub team: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Token id.
    pub jti: Option<String>,
    /// Expiry, unix seconds.
    pub expires_at: u64,
}

/// Why a request has no acceptable identity.
#[derive(Debug)]
pub struct Rejection {
    /// Audit reason.
    pub reason: &'static str,
    /// Issuer name when known.
    pub issuer: Option<Arc<str>>,
    /// A token was sent.
    pub token_sent: bool,
}

impl From<Rejection> for GatewayError {
    fn from(r: Rejection) -> Self {
        GatewayError::Unauthenticated { reason: r.reason, token_sent: r.token_sent }
    }
}

/// Verifies caller tokens.
#[derive(Debug)]
pub struct Authenticator {}

impl Authenticator {
    /// Builds the authenticator.
    pub fn new(
        _issuers: &[crate::config::issuer::Issuer],
        _metrics: Arc<Metrics>,
        _previous: Option<&Authenticator>,
    ) -> Result<Self, String> {
        Ok(Authenticator {})
    }

    /// Authenticates a request.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Arc<Identity>, Rejection> {
        if let Some(dag) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer placeholder:"))
        {
            return Ok(Arc::new(Identity {
                pipeline: dag.to_owned(),
                issuer: "placeholder".into(),
                ..Default::default()
            }));
        }
        Err(Rejection {
            reason: "missing_token",
            issuer: None,
            token_sent: headers.contains_key(http::header::AUTHORIZATION),
        })
    }

    /// Issuers without usable keys.
    pub fn not_ready(&self) -> Vec<String> {
        Vec::new()
    }
}
