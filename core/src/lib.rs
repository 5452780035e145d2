//! mxgate-core: a sans-IO reverse-proxy engine for Matrix homeservers (HTTP/1.1 and
//! HTTP/2 to clients, HTTP/1.1 upstream).
//!
//! No sockets, files, threads, clocks or async here: bytes and events go in, decisions
//! and bytes come out, and time is passed in. [`Connection`] states the contract a runtime
//! follows ([`Http2Session`] the same for an HTTP/2 client connection); [`config`] holds
//! the validated configuration and its TOML file format.

mod answer;
pub mod config;
mod connection;
mod forwarded;
pub mod http1;
pub mod http2;
mod output;
pub mod proxy_protocol;
mod rewrite;
pub mod route;
mod timer;
pub mod workers;

pub use answer::overloaded as overloaded_response;
pub use config::{Config, ListenerId, PoolId, UpstreamPool};
pub use connection::{Connection, ExchangeBuffers};
pub use http2::{Session as Http2Session, SessionOutput};
pub use output::{AccessRecord, ExchangeStats, Output, TimerKind, UpstreamFault};

#[cfg(test)]
mod tests;
