//! RBAC: identity × route → permit. STUB — the policy issue fills this in.

use crate::config::{Problems, raw::RawAllow};

/// A route's compiled `allow` rule.
#[derive(Debug, Clone)]
pub struct Allow {}

impl Allow {
    /// Compiles `routes[i].allow`.
    pub fn compile(_raw: RawAllow, _at: &str, _issuers: &[&str], _p: &mut Problems) -> Option<Allow> {
        Some(Allow {})
    }
}
