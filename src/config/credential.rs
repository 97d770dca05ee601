//! `[upstreams.credential]`: how airgate obtains its own token for an upstream (contract §5).
//! STUB — the credentials issue fills this in.

use super::Problems;
use serde::Deserialize;

/// The credential as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCredential {
    /// `managed_identity`, `workload_identity`, `client_secret`, `static` or `none`.
    pub kind: Option<String>,
}

/// A validated credential.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Credential {
    /// Forward no credential.
    #[default]
    None,
}

/// Validates an upstream's credential; absent means [`Credential::None`].
pub fn validate(_raw: Option<RawCredential>, _at: &str, _p: &mut Problems) -> Option<Credential> {
    Some(Credential::None)
}
