//! airgate: an identity-aware egress gateway for Apache Airflow in front of Azure API Management.
//!
//! One request's path, in file order: [`server`] accepts it, [`stack`] runs its phases —
//! [`route`] → [`identity`] → [`policy`] → [`ratelimit`] → [`upstream`] — and [`error`] turns any
//! refusal into a problem+json answer; [`audit`] and [`metrics`] record what happened.
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

/// mimalloc for every binary that links the gateway (the server, its tests and benches): a
/// request allocates and frees a few dozen small blocks (header maps, futures, the audit record),
/// and glibc's malloc spent ~10 k instructions per request on them (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod admin;
pub mod app;
pub mod audit;
pub mod backoff;
pub mod body;
pub mod carry;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod demo;
pub mod error;
pub mod h1;
pub mod identity;
pub mod metrics;
pub mod path;
pub mod policy;
pub mod quota;
pub mod ratelimit;
pub mod reload;
pub mod route;
pub mod server;
pub mod stack;
pub mod text;
pub mod tls;
pub mod upstream;
pub mod watch;
