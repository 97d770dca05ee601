//! Upstreams: the pooled client, header rewriting toward the upstream, and credentials.

pub mod azure;
pub mod client;
pub mod credential;
pub mod subscription;
