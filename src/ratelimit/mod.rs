//! Rate limiting (contract §4). STUB — the policy issue fills this in.

use http::{HeaderMap, HeaderValue};

/// The IETF httpapi `RateLimit-Policy` and `RateLimit` header values of one decision.
#[derive(Debug, Clone)]
pub struct Quota {
    /// `RateLimit-Policy: "per-dag";q=40;w=1`.
    pub policy: HeaderValue,
    /// `RateLimit: "per-dag";r=0;t=2`.
    pub state: HeaderValue,
}

impl Quota {
    /// Adds both headers to a response.
    pub fn apply(self, h: &mut HeaderMap) {
        h.insert("ratelimit-policy", self.policy);
        h.insert("ratelimit", self.state);
    }
}

/// Rate limiter of one configuration. PLACEHOLDER until the policy issue lands.
#[derive(Debug)]
pub struct Limiter {}

impl Limiter {
    /// Builds the limiter.
    pub fn new(
        _cfg: &crate::config::ratelimit::RateLimits,
        _metrics: std::sync::Arc<crate::metrics::Metrics>,
        _previous: Option<&Limiter>,
    ) -> Result<Self, String> {
        Ok(Limiter {})
    }

    /// Decides one request.
    pub async fn check(
        &self,
        _policy: &str,
        _route: &str,
        _identity: &crate::identity::Identity,
    ) -> Result<Quota, crate::error::GatewayError> {
        Ok(Quota { policy: HeaderValue::from_static(""), state: HeaderValue::from_static("") })
    }

    /// For /readyz.
    pub fn not_ready(&self) -> Vec<String> {
        Vec::new()
    }
}
