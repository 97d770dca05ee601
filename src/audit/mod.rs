//! Audit: one JSON object per line per request (contract §7), written when the response has been
//! sent or the client went away. Never a token, secret, key or body.
//!
//! The parts: [`record`] is the record and its JSON line, [`writer`] the bounded queue and the
//! writer thread, [`lifecycle`] a request's record from head to end of body ([`Pending`],
//! [`Tracked`]), which also counts the request in the metrics (through [`crate::metrics`]).

mod lifecycle;
mod record;
mod writer;

pub use lifecycle::{Pending, Tracked};
pub use record::{Record, encode};
pub use writer::{Auditor, Closer};
