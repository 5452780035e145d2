//! One client connection's state machine (API skeleton; being implemented).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, ListenerId};
use crate::output::{Output, TimerKind};

/// The engine for one client connection.
///
/// Contract: after creating it, and after every `handle_*` call, drain [`Connection::poll_output`]
/// until it returns `None`, performing each output in order (write bytes completely before
/// reading more); then wait for I/O (client readable if [`Connection::wants_client_read`],
/// upstream readable if [`Connection::wants_upstream_read`]) or the deadline of
/// [`Connection::poll_timeout`], whichever comes first, and feed what happened back.
/// Stop when [`Connection::is_closed`].
pub struct Connection {
    _config: Arc<Config>,
}

impl Connection {
    /// `peer` is the client's address as the socket reports it; `seed` makes request ids
    /// unique (any random number per connection).
    pub fn new(
        config: Arc<Config>,
        listener: ListenerId,
        peer: IpAddr,
        seed: u64,
        now: Instant,
    ) -> Self {
        let _ = (listener, peer, seed, now);
        Connection { _config: config }
    }
    /// Bytes read from the client.
    pub fn handle_client_data(&mut self, data: &[u8], now: Instant) {
        let _ = (data, now);
    }
    /// The client closed its sending side (or the read failed).
    pub fn handle_client_eof(&mut self, now: Instant) {
        let _ = now;
    }
    /// The upstream connection asked for by `ConnectUpstream` is ready; `reused` when it came from the idle pool.
    pub fn handle_upstream_connected(&mut self, reused: bool, now: Instant) {
        let _ = (reused, now);
    }
    /// Connecting failed (refused, unreachable, resolution failed).
    pub fn handle_upstream_failed(&mut self, now: Instant) {
        let _ = now;
    }
    /// Bytes read from the upstream.
    pub fn handle_upstream_data(&mut self, data: &[u8], now: Instant) {
        let _ = (data, now);
    }
    /// The upstream closed (or a read/write on it failed).
    pub fn handle_upstream_eof(&mut self, now: Instant) {
        let _ = now;
    }
    /// A deadline passed; extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }
    /// The next thing to do, or `None` when there is nothing until more input.
    pub fn poll_output(&mut self) -> Option<Output> {
        None
    }
    /// The next deadline and why.
    pub fn poll_timeout(&self) -> Option<(Instant, TimerKind)> {
        None
    }
    /// Whether the runtime should read from the client now (backpressure).
    pub fn wants_client_read(&self) -> bool {
        true
    }
    /// Whether the runtime should read from the upstream now.
    pub fn wants_upstream_read(&self) -> bool {
        false
    }
    /// No more input will be accepted and every output has been drained.
    pub fn is_closed(&self) -> bool {
        false
    }
    /// The runtime is shutting down: finish the exchange in flight (if any), then close.
    pub fn begin_shutdown(&mut self, now: Instant) {
        let _ = now;
    }
    /// Nothing is in flight: a runtime draining for shutdown may close this connection now.
    pub fn is_idle(&self) -> bool {
        true
    }
}
