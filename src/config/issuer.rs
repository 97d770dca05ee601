//! `[[issuers]]`: who may sign caller tokens (contract §2). STUB — the identity issue fills this in.

use super::Problems;
use serde::Deserialize;
use std::sync::Arc;

/// One issuer as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawIssuer {
    /// Configuration name.
    pub name: Option<String>,
}

/// One validated issuer.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// Configuration name (metrics, audit).
    pub name: Arc<str>,
}

/// Validates one issuer at `at` (`issuers[0]`).
pub fn validate(raw: RawIssuer, at: &str, p: &mut Problems, _warnings: &mut Vec<String>) -> Option<Issuer> {
    Some(Issuer { name: super::required(raw.name, at, "name", p)?.into() })
}
