//! mxgate-std: everything a runtime needs that does not depend on how it does I/O.
//!
//! The smol runtime (`mxgate`) and the std-threads runtime share this crate, so that the
//! command line, configuration loading, TLS setup, logging, access-log lines, metrics,
//! backend resolution and idle-connection bookkeeping exist exactly once.

pub mod support;
pub mod threads;
