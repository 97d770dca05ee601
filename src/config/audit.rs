//! `[audit]`: where audit records go (stdout or a file), whether the query is kept, the queue size.

use super::{Problems, raw};
use std::path::PathBuf;

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Where records go.
    pub sink: AuditSink,
    /// Keep the query string in `path`.
    pub include_query: bool,
    /// Records buffered between the request path and the writer before they are dropped.
    pub queue: usize,
}

/// Destination of audit records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Standard output, one JSON object per line.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

/// `[audit]`, with its defaults.
pub(super) fn validate(raw: raw::RawAudit, p: &mut Problems) -> Audit {
    let sink = match (raw.sink.as_deref(), raw.path) {
        (None | Some("stdout"), None) => AuditSink::Stdout,
        (Some("file"), Some(path)) => AuditSink::File(path),
        (Some("file"), None) => {
            p.push("audit.path", "is required when sink = \"file\"");
            AuditSink::Stdout
        }
        (None | Some("stdout"), Some(_)) => {
            p.push("audit.path", "only applies to sink = \"file\"");
            AuditSink::Stdout
        }
        (Some(other), _) => {
            p.push("audit.sink", format!("unknown sink {other:?}; use \"stdout\" or \"file\""));
            AuditSink::Stdout
        }
    };
    Audit { sink, include_query: raw.include_query.unwrap_or(false), queue: raw.queue.unwrap_or(65_536).max(1) }
}
