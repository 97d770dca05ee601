//! RBAC: identity × route → permit. PLACEHOLDER until the policy issue lands.

use crate::{
    config::{Problems, Route, raw::RawAllow},
    error::GatewayError,
    identity::Identity,
    metrics::Metrics,
};
use std::sync::Arc;

/// A route's compiled `allow` rule.
#[derive(Debug, Clone)]
pub struct Allow {
    pipelines: Vec<String>,
}

impl Allow {
    /// Compiles `routes[i].allow`.
    pub fn compile(raw: RawAllow, _at: &str, _issuers: &[&str], _p: &mut Problems) -> Option<Allow> {
        Some(Allow { pipelines: raw.pipelines })
    }
}

/// Proof that an identity may use a route.
#[derive(Debug)]
pub struct Permit {
    identity: Arc<Identity>,
}

impl Permit {
    /// The caller.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }
}

/// Decides whether `identity` may use `route`.
pub fn authorize(route: &Route, identity: Arc<Identity>, _metrics: &Metrics) -> Result<Permit, GatewayError> {
    if route
        .allow
        .pipelines
        .iter()
        .any(|p| p.strip_suffix('*').map_or(*p == identity.pipeline, |head| identity.pipeline.starts_with(head)))
    {
        Ok(Permit { identity })
    } else {
        Err(GatewayError::Forbidden { reason: "pipeline_not_allowed".into() })
    }
}
