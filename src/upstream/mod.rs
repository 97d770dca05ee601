//! Upstreams: the pooled client, header rewriting toward the upstream, and credentials.

pub mod client;
