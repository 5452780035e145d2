//! mxgate-core: a sans-IO HTTP/1.1 reverse-proxy engine for Matrix homeservers.
//!
//! See [`Connection`] for the contract a runtime follows.

pub mod config;
mod connection;
mod output;

pub use config::{Config, ListenerId, PoolId, UpstreamPool};
pub use connection::Connection;
pub use output::{AccessRecord, Output, TimerKind};
