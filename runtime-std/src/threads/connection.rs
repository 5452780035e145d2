//! One client connection. Its thread owns the engine's `Connection`, the client socket with
//! its rustls session and at most one upstream socket, and writes with blocking writes; two
//! reader threads read for it, one permitted read at a time (see [`super`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mxgate_core::config::{canonical_ip, Scheme};
use mxgate_core::{Connection, ListenerId, Output, PoolId, TimerKind};
use rustls::{ServerConfig, ServerConnection};

use super::reload::Generation;
use super::Shared;
use crate::support::limit::Permit;
use crate::support::metrics::ListenerMetrics;
use crate::support::proxy_header::{self, Admission};
use crate::support::{net, report};

/// Each reader's buffer: the most either side is ever read ahead of the engine.
const READ_BUF: usize = 32 * 1024;

/// What wakes a connection thread.
pub(crate) enum Event {
    /// A permitted read finished (`Ok(0)`: end of stream), handing its buffer back.
    Read(Side, Box<[u8]>, io::Result<usize>),
    /// Graceful shutdown began: finish the exchange in flight, then close.
    Shutdown,
    /// The drain time is over: close now.
    Abort,
    /// A reload installed a new configuration generation.
    Reload,
}

/// Which socket a read was of. Upstream connections are numbered, so that a late read of
/// one already given up is not taken for a read of the next.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Upstream(u64),
}

type Job = (Arc<TcpStream>, Side, Box<[u8]>);

/// A reader thread, and its buffer while it is not reading.
struct Reader {
    jobs: Sender<Job>,
    buf: Option<Box<[u8]>>,
    busy: bool,
}

impl Reader {
    /// Starts a reader thread. Each job permits one read; the result comes back as an event.
    fn spawn(events: &Sender<Event>) -> io::Result<Reader> {
        let (jobs, permits) = mpsc::channel::<Job>();
        let events = events.clone();
        thread::Builder::new()
            .name("mxgate-read".into())
            .spawn(move || {
                for (stream, side, mut buf) in permits {
                    let result = (&*stream).read(&mut buf);
                    drop(stream); // before reporting: the socket may be pooled at once
                    if events.send(Event::Read(side, buf, result)).is_err() {
                        return;
                    }
                }
            })?;
        let (buf, busy) = (None, false);
        Ok(Reader { jobs, buf, busy })
    }

    /// Permits one read of `stream`.
    fn start(&mut self, stream: &Arc<TcpStream>, side: Side) {
        let buf = self.buf.take();
        let buf = buf.unwrap_or_else(|| vec![0; READ_BUF].into());
        self.busy = self.jobs.send((stream.clone(), side, buf)).is_ok();
    }

    fn done(&mut self, buf: Box<[u8]>) {
        self.busy = false;
        self.buf = Some(buf);
    }
}

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
    client: Arc<TcpStream>,
    tls: Option<ServerConnection>,
    client_reader: Reader,
    /// Client bytes read (and decrypted) that the engine did not want yet: one read at most.
    pending: Vec<u8>,
    /// The client's side ended (EOF, read or TLS error); reported after `pending`.
    pending_eof: bool,
    /// EOF was reported to the engine.
    client_eof: bool,
    /// A write failed: nothing more is written.
    client_broken: bool,
    /// `CloseClient` was performed.
    client_closed: bool,
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
    let client = match admitted {
        Ok(client) => client,
        Err(err) => {
            tracing::debug!(%peer, error = %err, "connection refused on a PROXY protocol listener");
            return;
        }
    };
    let https = generation.config.listeners[listener].scheme == Scheme::Https;
    let (tls, pending) = match generation.tls.as_ref().filter(|_| https) {
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
    let (events_tx, events) = mpsc::channel();
    let _registered = shared.register(events_tx.clone());
    // A write to the client must make progress within the send timeout: a client that stops
    // reading a large response gets its connection closed, and the upstream one with it.
    let ready = tcp.set_write_timeout(Some(timeouts.send));
    let readers = ready.and_then(|()| Ok((Reader::spawn(&events_tx)?, Reader::spawn(&events_tx)?)));
    let (client_reader, up_reader) = match readers {
        Ok(readers) => readers,
        Err(err) => {
            tracing::warn!(%peer, error = %err, "cannot start a connection");
            return;
        }
    };
    let seed = fastrand::u64(..);
    let conn = Connection::new(
        generation.config.clone(),
        listener,
        canonical_ip(client.ip()),
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
        client: Arc::new(tcp),
        tls,
        client_reader,
        pending,
        pending_eof: false,
        client_eof: false,
        client_broken: false,
        client_closed: false,
        up: None,
        up_reader,
        upstreams_opened: 0,
        shutting_down: false,
        shutdown_deferred: None,
        had_input: false,
        fired: None,
    };
    // Registered first, then checked: a shutdown is never missed.
    if shared.is_stopping() {
        let _ = events_tx.send(Event::Shutdown);
    }
    driver.run();
}

/// The TLS handshake in blocking mode, bounded by `limit` overall. Also returns the
/// application data that arrived with its end.
fn handshake(
    config: &Arc<ServerConfig>,
    tcp: &TcpStream,
    limit: Duration,
) -> io::Result<(ServerConnection, Vec<u8>)> {
    let mut tls = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
    let deadline = Instant::now() + limit;
    while tls.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        tcp.set_read_timeout(Some(left))?;
        tcp.set_write_timeout(Some(left))?;
        if tls.complete_io(&mut &*tcp)? == (0, 0) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    // From now on reads block until data arrives or the socket is shut down.
    tcp.set_read_timeout(None)?;
    // Outgoing records are bounded by what the engine hands over in one output.
    tls.set_buffer_limit(None);
    let mut early = Vec::new();
    // Normally WouldBlock (nothing more yet); an early close shows up on the next read.
    let _ = tls.reader().read_to_end(&mut early);
    Ok((tls, early))
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
                Ok(Event::Read(Side::Client, buf, result)) => {
                    let n = result.unwrap_or_else(|err| {
                        tracing::debug!(error = %err, "client read failed");
                        0
                    });
                    self.client_input(&buf[..n]);
                    self.client_reader.done(buf);
                }
                Ok(Event::Read(side, buf, result)) => {
                    self.upstream_input(side, &buf, result, now);
                    self.up_reader.done(buf);
                }
                Ok(Event::Shutdown) => {
                    // A request already sent (bytes waiting, or read and not fed yet) is
                    // served first, and a connection accepted a moment ago gets a short
                    // grace to send its first: closing now would lose it.
                    let sent = !self.pending.is_empty() || net::pending_input(&self.client);
                    if self.conn.is_idle() && (sent || !self.had_input) {
                        self.shutdown_deferred = Some(now + net::SHUTDOWN_GRACE);
                    } else {
                        self.begin_shutdown(now);
                    }
                }
                Ok(Event::Reload) => {} // followed at the top of the loop
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
        let ended = self.client_eof || self.pending_eof;
        !ended && self.conn.wants_client_read()
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
        if self.wants_client() && self.pending.is_empty() && !self.client_reader.busy {
            self.client_reader.start(&self.client, Side::Client);
        }
        if let Some(up) = self.up.as_ref().filter(|_| self.wants_upstream()) {
            if !self.up_reader.busy {
                self.up_reader.start(&up.stream, up.side);
            }
        }
    }

    /// Raw bytes from the client socket (none: it ended), decrypted on TLS, into `pending`.
    fn client_input(&mut self, raw: &[u8]) {
        let Some(tls) = self.tls.as_mut() else {
            self.pending.extend_from_slice(raw);
            self.pending_eof |= raw.is_empty();
            return;
        };
        let mut rest = raw;
        while !self.pending_eof {
            let before = rest.len();
            // Reading an empty slice records the end of the stream.
            let read = tls.read_tls(&mut rest);
            let processed = read.and_then(|_| tls.process_new_packets().map_err(io::Error::other));
            match processed.and_then(|_| tls.reader().read_to_end(&mut self.pending)) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Ok(_) => self.pending_eof = true, // close_notify
                Err(err) => {
                    tracing::debug!(error = %err, "TLS stream from the client ended");
                    self.pending_eof = true;
                }
            }
            if rest.is_empty() || rest.len() == before {
                break;
            }
        }
        // Alerts and key updates.
        if self.flush_tls().is_err() {
            self.client_broken = true;
        }
    }

    /// Hands `pending` (or the end of the client's stream) to the engine if it wants it.
    fn feed_client(&mut self) -> bool {
        let now = Instant::now();
        if self.client_eof || (!self.pending.is_empty() && !self.conn.wants_client_read()) {
            false
        } else if !self.pending.is_empty() {
            self.had_input = true;
            self.metrics.bytes_in.inc_by(self.pending.len() as u64);
            self.conn.handle_client_data(&self.pending, now);
            self.pending.clear();
            true
        } else if self.pending_eof {
            self.client_eof = true;
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
                    Output::CloseClient => self.close_client(),
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
            if self.client_broken && !self.client_eof {
                self.client_eof = true;
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
        if self.client_broken || self.client_closed {
            return;
        }
        let written = match self.tls.as_mut() {
            None => (&*self.client).write_all(bytes),
            Some(tls) => tls.writer().write_all(bytes), // buffered (no limit), then flushed
        };
        if let Err(err) = written.and_then(|()| self.flush_tls()) {
            tracing::debug!(error = %err, "client write failed");
            self.client_broken = true;
        } else {
            self.metrics.bytes_out.inc_by(bytes.len() as u64);
        }
    }

    /// Writes out the TLS records rustls has queued.
    fn flush_tls(&mut self) -> io::Result<()> {
        while let Some(tls) = self.tls.as_mut().filter(|tls| tls.wants_write()) {
            tls.write_tls(&mut &*self.client)?;
        }
        Ok(())
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

    /// Sends TLS close_notify and the FIN after everything written so far.
    fn close_client(&mut self) {
        if std::mem::replace(&mut self.client_closed, true) || self.client_broken {
            return;
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
        }
        let closed = self.flush_tls();
        if let Err(err) = closed.and_then(|()| self.client.shutdown(Shutdown::Write)) {
            tracing::debug!(error = %err, "closing the client connection failed");
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
        self.close_client();
        // Ends a read under way; the reader threads exit as their job channels close.
        let _ = self.client.shutdown(Shutdown::Both);
    }
}

/// Closes an upstream socket, ending a read under way on it.
fn close_upstream(stream: Arc<TcpStream>) {
    let _ = stream.shutdown(Shutdown::Both);
}
