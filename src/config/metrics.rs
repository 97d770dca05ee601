//! `[metrics]`: how many distinct `pipeline` label values are kept before folding into `_other`.

use super::raw;

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Distinct `pipeline` label values before folding into `_other`.
    pub max_pipelines: usize,
}

/// `[metrics]`, with its default.
pub(super) fn validate(raw: raw::RawMetrics) -> MetricsSettings {
    MetricsSettings { max_pipelines: raw.max_pipelines.unwrap_or(1000) }
}
