//! `[rate_limits]`: named rate-limit policies (contract §4). STUB — the policy issue fills this in.

use super::Problems;
use serde::Deserialize;

/// `[rate_limits]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRateLimits {}

/// Validated rate-limit settings.
#[derive(Debug, Clone, Default)]
pub struct RateLimits {}

impl RateLimits {
    /// True when a policy of that name exists.
    pub fn has_policy(&self, _name: &str) -> bool {
        false
    }
}

/// Validates `[rate_limits]`.
pub fn validate(_raw: RawRateLimits, _at: &str, _p: &mut Problems) -> RateLimits {
    RateLimits {}
}
