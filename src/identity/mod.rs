//! Caller identity. (placeholder until the identity module lands)
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
