//! One client connection: admission (PROXY header, TLS handshake), the choice between
//! HTTP/1.1 and HTTP/2 (`super::h2`), and the HTTP/1.1 connection loop. Its thread owns the
//! engine's `Connection`, the client socket with its rustls session and at most one
//! upstream socket, and writes with blocking writes; two reader threads read for it, one
//! permitted read at a time (see [`super`]).

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use mxgate_core::config::{canonical_ip, Scheme};
use mxgate_core::{Connection, ListenerId, Output, PoolId, TimerKind};

use super::client::{handshake, Client};
use super::h2;
use super::reader::{Event, Reader, Side};
use super::reload::Generation;
use super::Shared;
use crate::support::limit::Permit;
use crate::support::metrics::ListenerMetrics;
use crate::support::proxy_header::{self, Admission};
use crate::support::{net, report};

/// The upstream connection the engine holds.
struct Upstream {
    stream: Arc<TcpStream>,
    pool: PoolId,
    backend: usize,
    side: Side,
    /// EOF (or a failure) was reported to the engine.
    eof: bool,
    /// A write failed: EOF is reported next.
    broken: bool,
}

struct Driver {
    shared: Arc<Shared>,
    /// The configuration generation the engine runs on (see [`Driver::follow_reload`]).
    generation: Arc<Generation>,
    /// The newest generation this connection has looked at.
    reload_seen: u64,
    conn: Connection,
    metrics: ListenerMetrics,
    events: Receiver<Event>,
    client: Client,
    up: Option<Upstream>,
    up_reader: Reader,
    upstreams_opened: u64,
    shutting_down: bool,
    /// Shutdown began while a request waited unread, or before the first: begun once it
    /// is fed, or at this instant (the grace).
    shutdown_deferred: Option<Instant>,
    /// The client sent something (a connection that has not gets a grace at shutdown).
    had_input: bool,
    /// The last deadline `handle_timeout` was called for.
    fired: Option<Instant>,
}

/// Runs one accepted client connection to its end, on the calling thread.
pub(crate) fn serve(
    shared: Arc<Shared>,
    generation: Arc<Generation>,
    listener: ListenerId,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: Permit,
) {
    let _permit = permit;
    let metrics = generation.metrics.listener(listener);
    let _open = metrics.open();
    if let Err(err) = net::tune(&tcp) {
        tracing::debug!(%peer, error = %err, "cannot set client socket options");
    }
    let timeouts = &generation.config.timeouts;
    // On PROXY protocol listeners the client address comes from the header, before TLS.
    let admitted = match proxy_header::admit(&generation.config, listener, peer) {
        Ok(Admission::Direct) => Ok(peer),
        Ok(Admission::ReadHeader) => {
            proxy_header::read_blocking(&tcp, peer, Instant::now() + timeouts.client_header)
        }
        Err(err) => Err(err),
    };
    let client_addr = match admitted {
        Ok(client) => client,
        Err(err) => {
            tracing::debug!(%peer, error = %err, "connection refused on a PROXY protocol listener");
            return;
        }
    };
    let offers = &generation.config.listeners[listener];
    let https = offers.scheme == Scheme::Https;
    let tls_config = generation.tls.as_ref().filter(|_| https);
    let (tls, pending) = match tls_config.map(|t| t.for_listener(offers.http2)) {
        None => (None, Vec::new()),
        Some(config) => match handshake(config, &tcp, timeouts.tls_handshake) {
            Ok((tls, early)) => (Some(tls), early),
            Err(err) => {
                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                metrics.tls_failures.inc();
                return;
            }
        },
    };
    // Prior knowledge of HTTP/2 on a plain listener that allows it: told by the first
    // bytes (nothing is consumed).
    let http2 = match tls.as_ref() {
        Some(tls) => tls.alpn_protocol() == Some(b"h2"),
        None if offers.http2 => {
            match h2::preface_follows(&tcp, timeouts.client_header, || shared.is_stopping()) {
                Ok(http2) => http2,
                Err(err) => {
                    tracing::debug!(%peer, error = %err, "no request came");
                    return;
                }
            }
        }
        None => false,
    };
    let (events_tx, events) = mpsc::channel();
    let _registered = shared.register(events_tx.clone());
    // A write to the client must make progress within the send timeout: a client that stops
    // reading a large response gets its connection closed, and the upstream one with it.
    let ready = tcp.set_write_timeout(Some(timeouts.send));
    let reader = ready.and_then(|()| Reader::spawn(&events_tx));
    let client = match reader {
        Ok(reader) => Client::new(tcp, tls, pending, reader),
        Err(err) => {
            tracing::warn!(%peer, error = %err, "cannot start a connection");
            return;
        }
    };
    // Registered first, then checked: a shutdown is never missed.
    if shared.is_stopping() {
        let _ = events_tx.send(Event::Shutdown);
    }
    let client_ip = canonical_ip(client_addr.ip());
    if http2 {
        return h2::serve(
            shared.clone(),
            generation,
            listener,
            client,
            client_ip,
            events_tx,
            events,
        );
    }
    let up_reader = match Reader::spawn(&events_tx) {
        Ok(reader) => reader,
        Err(err) => {
            tracing::warn!(%peer, error = %err, "cannot start a connection");
            return;
        }
    };
    let seed = fastrand::u64(..);
    let conn = Connection::new(
        generation.config.clone(),
        listener,
        client_ip,
        seed,
        Instant::now(),
    );
    let driver = Driver {
        shared: shared.clone(),
        reload_seen: generation.id,
        generation,
        conn,
        metrics,
        events,
        client,
        up: None,
        up_reader,
        upstreams_opened: 0,
        shutting_down: false,
        shutdown_deferred: None,
        had_input: false,
        fired: None,
    };
    driver.run();
}

impl Driver {
    /// The engine contract: perform the outputs, feed one event, until closed.
    fn run(mut self) {
        loop {
            self.perform_outputs();
            if self.conn.is_closed() {
                return self.finish();
            }
            if self.reload_due() {
                self.follow_reload();
                continue;
            }
            if self.feed_client() {
                if self.shutdown_deferred.take().is_some() {
                    self.begin_shutdown(Instant::now());
                }
                continue;
            }
            self.start_reads();
            let deadline = match (self.deadline(), self.shutdown_deferred) {
                (Some(engine), Some(grace)) => Some(engine.min(grace)),
                (engine, grace) => engine.or(grace),
            };
            let event = match deadline {
                Some(at) => self
                    .events
                    .recv_timeout(at.saturating_duration_since(Instant::now())),
                None if self.wants_client() || self.wants_upstream() => {
                    self.events.recv().map_err(RecvTimeoutError::from)
                }
                None => {
                    tracing::warn!("engine waits for nothing and is not closed (engine bug)");
                    return self.finish();
                }
            };
            let now = Instant::now();
            match event {
                Err(RecvTimeoutError::Timeout) => {
                    if self.shutdown_deferred.is_some_and(|grace| now >= grace) {
                        self.shutdown_deferred = None;
                        self.begin_shutdown(now); // the grace is over
                    }
                    self.fired = deadline;
                    self.conn.handle_timeout(now);
                }
                Ok(Event::Read(Side::Client, buf, result)) => self.client.read_done(buf, result),
                Ok(Event::Read(side, buf, result)) => {
                    self.upstream_input(side, &buf, result, now);
                    self.up_reader.done(buf);
                }
                Ok(Event::Shutdown) => {
                    // A request already sent (bytes waiting, or read and not fed yet) is
                    // served first, and a connection accepted a moment ago gets a short
                    // grace to send its first: closing now would lose it.
                    let sent =
                        !self.client.pending.is_empty() || net::pending_input(&self.client.stream);
                    if self.conn.is_idle() && (sent || !self.had_input) {
                        self.shutdown_deferred = Some(now + net::SHUTDOWN_GRACE);
                    } else {
                        self.begin_shutdown(now);
                    }
                }
                Ok(Event::Reload) => {} // followed at the top of the loop
                Ok(Event::Connected { .. }) => {} // not asked for on HTTP/1.1
                // Disconnected cannot happen: the shutdown registry holds a sender.
                Ok(Event::Abort) | Err(RecvTimeoutError::Disconnected) => return self.finish(),
            }
        }
    }

    /// Whether [`Driver::follow_reload`] has something to do: a generation not looked at
    /// yet, or one to move to now that the connection is idle.
    fn reload_due(&self) -> bool {
        if self.shutting_down {
            return false; // closing anyway (shutdown, or its listener was removed)
        }
        let current = self.shared.generation();
        current != self.reload_seen
            || (self.generation.id != current && self.conn.is_idle() && self.up.is_none())
    }

    /// Follows a reload: a connection whose listener the new configuration no longer has
    /// is drained (its exchange in flight finishes, then it closes); an idle one moves to
    /// the new generation, so its next request follows the new configuration; a busy one
    /// moves once its exchange is over (this is called again then).
    fn follow_reload(&mut self) {
        let current = self.shared.current();
        self.reload_seen = current.id;
        if current.id == self.generation.id {
            return;
        }
        let listener = self.conn.listener();
        let found =
            crate::support::reload::listener_in(&self.generation.config, listener, &current.config);
        let Some(listener) = found else {
            tracing::debug!(
                listener,
                "listener removed by a reload: draining the connection"
            );
            return self.begin_shutdown(Instant::now());
        };
        if self.up.is_none() && self.conn.reconfigure(current.config.clone(), listener) {
            self.metrics = current.metrics.listener(listener);
            self.generation = current;
        }
    }

    fn wants_client(&self) -> bool {
        // After `CloseClient` only the write side is shut: a lingering engine still reads.
        !self.client.ended() && self.conn.wants_client_read()
    }

    fn wants_upstream(&self) -> bool {
        self.up.as_ref().is_some_and(|up| !up.eof) && self.conn.wants_upstream_read()
    }

    /// The engine's next deadline, ignoring one it keeps after it was handled (no busy loop).
    fn deadline(&self) -> Option<Instant> {
        let (at, _) = self.conn.poll_timeout()?;
        let handled = self.fired == Some(at) && at <= Instant::now();
        (!handled).then_some(at)
    }

    /// Permits a read on each side the engine wants read, unless one is under way.
    fn start_reads(&mut self) {
        self.client.start_read(self.wants_client());
        if let Some(up) = self.up.as_ref().filter(|_| self.wants_upstream()) {
            if !self.up_reader.busy() {
                self.up_reader.start(&up.stream, up.side);
            }
        }
    }

    /// Hands `pending` (or the end of the client's stream) to the engine if it wants it.
    fn feed_client(&mut self) -> bool {
        let now = Instant::now();
        let client = &mut self.client;
        if client.eof || (!client.pending.is_empty() && !self.conn.wants_client_read()) {
            false
        } else if !client.pending.is_empty() {
            self.had_input = true;
            self.metrics.bytes_in.inc_by(client.pending.len() as u64);
            self.conn.handle_client_data(&client.pending, now);
            client.pending.clear();
            true
        } else if client.pending_eof {
            client.eof = true;
            self.conn.handle_client_eof(now);
            true
        } else {
            false
        }
    }

    fn upstream_input(&mut self, side: Side, buf: &[u8], read: io::Result<usize>, now: Instant) {
        let Some(up) = self.up.as_mut().filter(|up| up.side == side && !up.eof) else {
            return; // a late read of a connection already given up
        };
        match read {
            Ok(n) if n > 0 => self.conn.handle_upstream_data(&buf[..n], now),
            read => {
                if let Err(err) = read {
                    tracing::debug!(error = %err, "upstream read failed");
                }
                up.eof = true;
                self.conn.handle_upstream_eof(now);
            }
        }
    }

    /// Performs the engine's outputs in order, then feeds back what performing them produced
    /// (write failures, the outcome of a connect), until the engine has nothing more.
    fn perform_outputs(&mut self) {
        loop {
            let mut connect = None;
            while let Some(output) = self.conn.poll_output() {
                match output {
                    Output::ToClient(bytes) => self.write_client(&bytes),
                    Output::ToUpstream(bytes) => self.write_upstream(&bytes),
                    Output::ConnectUpstream {
                        pool,
                        backend,
                        fresh,
                    } => connect = Some((pool, backend, fresh)),
                    Output::ReleaseUpstream { reusable } => self.release_upstream(reusable),
                    Output::CloseClient => self.client.close(),
                    report @ (Output::AccessLog(_)
                    | Output::ExchangeDone(_)
                    | Output::UpstreamFault { .. }) => {
                        let generation = &self.generation;
                        let health = generation.upstreams.health();
                        report::handle(&generation.config, &generation.metrics, health, report)
                    }
                }
            }
            let now = Instant::now();
            if self.client.broken && !self.client.eof {
                self.client.eof = true;
                self.conn.handle_client_eof(now);
            } else if let Some(up) = self.up.as_mut().filter(|up| up.broken && !up.eof) {
                up.eof = true;
                self.conn.handle_upstream_eof(now);
            } else if let Some((pool, backend, fresh)) = connect {
                self.connect(pool, backend, fresh);
            } else {
                return;
            }
        }
    }

    fn write_client(&mut self, bytes: &[u8]) {
        if self.client.write(bytes) {
            self.metrics.bytes_out.inc_by(bytes.len() as u64);
        }
    }

    fn write_upstream(&mut self, bytes: &[u8]) {
        if let Some(up) = self.up.as_mut().filter(|up| !up.broken) {
            if let Err(err) = (&*up.stream).write_all(bytes) {
                tracing::debug!(error = %err, "upstream write failed");
                up.broken = true;
            }
        }
    }

    /// Obtains an upstream connection within the engine's connect deadline and reports it.
    fn connect(&mut self, pool: PoolId, backend: usize, fresh: bool) {
        if let Some(old) = self.up.take() {
            close_upstream(old.stream); // not expected: the engine released it first
        }
        let engine_deadline = match self.conn.poll_timeout() {
            Some((at, TimerKind::UpstreamConnect)) => Some(at),
            _ => None,
        };
        let timeouts = &self.generation.config.timeouts;
        let deadline = engine_deadline.unwrap_or(Instant::now() + timeouts.upstream_connect);
        let (upstreams, metrics) = (&self.generation.upstreams, &self.generation.metrics);
        let obtained = upstreams.obtain(pool, backend, fresh, deadline, metrics);
        let now = Instant::now();
        match obtained {
            Ok((stream, backend, reused)) => {
                self.upstreams_opened += 1;
                self.up = Some(Upstream {
                    stream: Arc::new(stream),
                    pool,
                    backend,
                    side: Side::Upstream(self.upstreams_opened),
                    eof: false,
                    broken: false,
                });
                self.conn.handle_upstream_connected(reused, now);
            }
            Err(err) => {
                let name = &self.generation.config.pools[pool].name;
                tracing::warn!(pool = %name, error = %err, "cannot connect to any backend");
                if engine_deadline.is_some_and(|at| now >= at) {
                    // The engine's own deadline passed: it answers 504.
                    self.fired = engine_deadline;
                    self.conn.handle_timeout(now);
                } else {
                    self.conn.handle_upstream_failed(now);
                }
            }
        }
    }

    fn release_upstream(&mut self, reusable: bool) {
        let Some(up) = self.up.take() else { return };
        if !reusable || up.broken || up.eof {
            return close_upstream(up.stream);
        }
        // No read is under way once the response is complete: the socket is ours alone.
        match Arc::try_unwrap(up.stream) {
            Ok(stream) => self
                .generation
                .upstreams
                .release(up.pool, up.backend, stream),
            Err(stream) => close_upstream(stream),
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if !std::mem::replace(&mut self.shutting_down, true) {
            self.conn.begin_shutdown(now);
        }
    }

    /// Closes both sides. Any lingering (reading and discarding after an early answer) was
    /// the engine's, before it reported itself closed.
    fn finish(mut self) {
        if let Some(up) = self.up.take() {
            close_upstream(up.stream);
        }
        // Ends a read under way; the reader threads exit as their job channels close.
        self.client.finish();
    }
}

/// Closes an upstream socket, ending a read under way on it.
pub(crate) fn close_upstream(stream: Arc<TcpStream>) {
    let _ = stream.shutdown(Shutdown::Both);
}
