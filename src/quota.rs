//! The IETF httpapi `RateLimit-Policy` / `RateLimit` header values of one rate-limit decision:
//! made by `ratelimit`, sent on a forwarded response by the stack and on a 429
//! by `error`. A leaf module (it names no other), so both can use it.

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
