//! Runtime-agnostic pieces shared by mxgate's runtimes. Nothing here is async or parses HTTP
//! traffic: the engine in `mxgate-core` makes every proxying decision.

pub mod access_log;
pub mod acme_store;
pub mod backend;
pub mod cli;
pub mod config;
pub mod dial;
pub mod health;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod proxy_header;
pub mod reload;
pub mod report;
pub mod systemd;
pub mod tls;

#[cfg(test)]
mod testutil;
