//! The HTTP/2 connection loop: a client connection that negotiated `h2` (ALPN, or prior
//! knowledge on a plain listener that allows it) driven through [`Http2Session`], with one
//! upstream connection per stream that asked for one. Connects run on helper threads and
//! each upstream has its own reader, so a stream waiting on its upstream (a `/sync`
//! long-poll) never holds up another.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mxgate_core::http2::{sniff_preface, Preface, PREFACE};
use mxgate_core::{Http2Session, ListenerId, Output, PoolId, SessionOutput};

use super::client::Client;
use super::connection::close_upstream;
use super::reader::{Event, Reader, Side};
use super::reload::Generation;
use super::Shared;
use crate::support::metrics::ListenerMetrics;
use crate::support::report;

/// How long one wait for the client's first bytes lasts before shutdown is checked again.
const PEEK_STEP: Duration = Duration::from_millis(200);
/// Between looks at a preface that came in part.
const PEEK_PAUSE: Duration = Duration::from_millis(5);
/// Idle reader threads kept for the next streams' upstreams.
const SPARE_READERS: usize = 8;

/// Whether the client's first bytes are the HTTP/2 connection preface (prior knowledge),
/// looked at without consuming anything: `true` once all 24 match, `false` as soon as one
/// differs or the client ends its side (the HTTP/1.1 path then reads them). Fails when
/// nothing decides it within `limit`, or once `stopping` (shutdown began).
pub(crate) fn preface_follows(
    tcp: &TcpStream,
    limit: Duration,
    stopping: impl Fn() -> bool,
) -> io::Result<bool> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; PREFACE.len()];
    let mut seen = 0;
    let decided = loop {
        if stopping() {
            break Err(io::Error::other("shutting down"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(io::ErrorKind::TimedOut.into());
        }
        tcp.set_read_timeout(Some(left.min(PEEK_STEP)))?;
        match tcp.peek(&mut buf) {
            // (The end of the stream before any byte reads as HTTP/1.1; after some, it is
            // not seen: the limit ends the wait.)
            Ok(n) => match sniff_preface(&buf[..n]) {
                Preface::Http2 => break Ok(true),
                Preface::Http1 => break Ok(false),
                Preface::Partial => {
                    // Peeking again returns at once until more arrives.
                    if n == seen {
                        thread::sleep(PEEK_PAUSE);
                    }
                    seen = n;
                }
            },
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(err) => break Err(err),
        }
    };
    tcp.set_read_timeout(None)?;
    decided
}

/// One stream's upstream connection.
struct Upstream {
    stream: Arc<TcpStream>,
    pool: PoolId,
    backend: usize,
    side: Side,
    reader: Reader,
    /// EOF (or a failure) was reported to the session.
    eof: bool,
    /// A write failed: EOF is reported next.
    broken: bool,
}

enum Link {
    /// A helper thread is obtaining one of `pool`; its result carries `token`.
    Connecting {
        token: u64,
        pool: PoolId,
    },
    Open(Upstream),
}

/// What the runtime keeps for a stream that asked for an upstream.
struct StreamState {
    /// The generation its exchange runs on (streams in flight at a reload finish on
    /// theirs): its pools, metrics and access log.
    generation: Arc<Generation>,
    link: Option<Link>,
}

struct Driver {
    shared: Arc<Shared>,
    /// The generation new streams run on.
    generation: Arc<Generation>,
    /// The newest generation this connection has looked at.
    reload_seen: u64,
    session: Http2Session,
    metrics: ListenerMetrics,
    events: Receiver<Event>,
    /// For connect helper threads.
    events_tx: Sender<Event>,
    client: Client,
    streams: HashMap<u32, StreamState>,
    spare_readers: Vec<Reader>,
    /// Numbers upstream connections and connect attempts.
    next_id: u64,
    shutting_down: bool,
    /// The last deadline `handle_timeout` was called for.
    fired: Option<Instant>,
}

/// Runs an HTTP/2 client connection to its end, on the calling thread.
pub(crate) fn serve(
    shared: Arc<Shared>,
    generation: Arc<Generation>,
    listener: ListenerId,
    client: Client,
    peer: IpAddr,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
) {
    let session = Http2Session::new(
        generation.config.clone(),
        listener,
        peer,
        fastrand::u64(..),
        Instant::now(),
    );
    let driver = Driver {
        shared,
        reload_seen: generation.id,
        metrics: generation.metrics.listener(listener),
        generation,
        session,
        events,
        events_tx,
        client,
        streams: HashMap::new(),
        spare_readers: Vec::new(),
        next_id: 0,
        shutting_down: false,
        fired: None,
    };
    driver.run();
}

impl Driver {
    /// The session contract: perform the outputs, feed one event, until closed.
    fn run(mut self) {
        loop {
            self.perform_outputs();
            if self.session.is_closed() {
                return self.finish();
            }
            if self.session.is_idle() {
                // No stream can come back (ids are never reused).
                self.streams.retain(|_, s| s.link.is_some());
            }
            if self.reload_due() {
                self.follow_reload();
                continue;
            }
            if self.feed_client() {
                continue;
            }
            self.start_reads();
            let deadline = self.deadline();
            let event = match deadline {
                Some(at) => self
                    .events
                    .recv_timeout(at.saturating_duration_since(Instant::now())),
                // Disconnected cannot happen: this thread holds a sender.
                None => self.events.recv().map_err(RecvTimeoutError::from),
            };
            let now = Instant::now();
            match event {
                Err(RecvTimeoutError::Timeout) => {
                    self.fired = deadline;
                    self.session.handle_timeout(now);
                }
                Ok(Event::Read(Side::Client, buf, result)) => self.client.read_done(buf, result),
                Ok(Event::Read(side, buf, result)) => self.upstream_input(side, buf, result, now),
                Ok(Event::Connected { token, result }) => self.connected(token, result, now),
                Ok(Event::Shutdown) => self.begin_shutdown(now),
                Ok(Event::Reload) => {} // followed at the top of the loop
                Ok(Event::Abort) | Err(RecvTimeoutError::Disconnected) => return self.finish(),
            }
        }
    }

    /// A generation not looked at yet.
    fn reload_due(&self) -> bool {
        !self.shutting_down && self.shared.generation() != self.reload_seen
    }

    /// Follows a reload: new streams run on the new configuration at once (streams in
    /// flight finish on theirs); a connection whose listener is gone is drained.
    fn follow_reload(&mut self) {
        let current = self.shared.current();
        self.reload_seen = current.id;
        if current.id == self.generation.id {
            return;
        }
        let listener = self.session.listener();
        let found =
            crate::support::reload::listener_in(&self.generation.config, listener, &current.config);
        let Some(listener) = found else {
            tracing::debug!(
                listener,
                "listener removed by a reload: draining the connection"
            );
            return self.begin_shutdown(Instant::now());
        };
        if self.session.reconfigure(current.config.clone(), listener) {
            self.metrics = current.metrics.listener(listener);
            self.generation = current;
        }
    }

    /// The session's next deadline, ignoring one it keeps after it was handled (no busy
    /// loop).
    fn deadline(&self) -> Option<Instant> {
        let at = self.session.poll_timeout()?;
        let handled = self.fired == Some(at) && at <= Instant::now();
        (!handled).then_some(at)
    }

    /// Permits a read of the client and of each upstream the session wants read, unless
    /// one is under way.
    fn start_reads(&mut self) {
        self.client.start_read(self.session.wants_client_read());
        for (&id, state) in &mut self.streams {
            if let Some(Link::Open(up)) = &mut state.link {
                if !up.eof && !up.reader.busy() && self.session.wants_upstream_read(id) {
                    up.reader.start(&up.stream, up.side);
                }
            }
        }
    }

    /// Hands what the client sent (or its end) to the session if it wants it.
    fn feed_client(&mut self) -> bool {
        let now = Instant::now();
        let client = &mut self.client;
        if client.eof || (!client.pending.is_empty() && !self.session.wants_client_read()) {
            false
        } else if !client.pending.is_empty() {
            self.metrics.bytes_in.inc_by(client.pending.len() as u64);
            self.session.handle_client_data(&client.pending, now);
            client.pending.clear();
            true
        } else if client.pending_eof {
            client.eof = true;
            self.session.handle_client_eof(now);
            true
        } else {
            false
        }
    }

    fn upstream_input(
        &mut self,
        side: Side,
        buf: Box<[u8]>,
        read: io::Result<usize>,
        now: Instant,
    ) {
        let found = self
            .streams
            .iter_mut()
            .find_map(|(&id, state)| match &mut state.link {
                Some(Link::Open(up)) if up.side == side => Some((id, up)),
                _ => None,
            });
        let Some((stream, up)) = found else {
            return; // a late read of a connection already given up
        };
        match read {
            Ok(n) if n > 0 && !up.eof => self.session.handle_upstream_data(stream, &buf[..n], now),
            _ if up.eof => {}
            read => {
                if let Err(err) = read {
                    tracing::debug!(stream, error = %err, "upstream read failed");
                }
                up.eof = true;
                self.session.handle_upstream_eof(stream, now);
            }
        }
        if let Some(Link::Open(up)) = self.streams.get_mut(&stream).and_then(|s| s.link.as_mut()) {
            if up.side == side {
                up.reader.done(buf);
            }
        }
    }

    /// A connect helper thread's result: the stream's upstream if it still waits for it,
    /// else closed.
    fn connected(
        &mut self,
        token: u64,
        result: io::Result<(TcpStream, usize, bool)>,
        now: Instant,
    ) {
        let found = self
            .streams
            .iter_mut()
            .find_map(|(&id, state)| match state.link {
                Some(Link::Connecting { token: t, pool }) if t == token => Some((id, state, pool)),
                _ => None,
            });
        let Some((stream, state, pool)) = found else {
            return; // the stream no longer wants it: dropping closes it
        };
        state.link = None;
        let (tcp, backend, reused) = match result {
            Ok(obtained) => obtained,
            Err(_) => return self.session.handle_upstream_failed(stream, now),
        };
        let reader = match self.spare_readers.pop() {
            Some(reader) => reader,
            None => match Reader::spawn(&self.events_tx) {
                Ok(reader) => reader,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start an upstream reader");
                    return self.session.handle_upstream_failed(stream, now);
                }
            },
        };
        self.next_id += 1;
        state.link = Some(Link::Open(Upstream {
            stream: Arc::new(tcp),
            pool,
            backend,
            side: Side::Upstream(self.next_id),
            reader,
            eof: false,
            broken: false,
        }));
        self.session.handle_upstream_connected(stream, reused, now);
    }

    /// Performs the session's outputs in order, then feeds back what performing them
    /// produced (write completions and failures), until the session has nothing more.
    fn perform_outputs(&mut self) {
        let mut written = Vec::new();
        loop {
            while let Some(output) = self.session.poll_output() {
                match output {
                    SessionOutput::ToClient(bytes) => {
                        if self.client.write(&bytes) {
                            self.metrics.bytes_out.inc_by(bytes.len() as u64);
                        }
                    }
                    SessionOutput::CloseClient => self.client.close(),
                    SessionOutput::Exchange { stream, output } => {
                        self.exchange_output(stream, output, &mut written)
                    }
                }
            }
            let now = Instant::now();
            if self.client.broken && !self.client.eof {
                self.client.eof = true;
                self.session.handle_client_eof(now);
            } else if let Some(stream) = self.broken_upstream() {
                self.session.handle_upstream_eof(stream, now);
            } else if let Some(stream) = written.pop() {
                self.session.handle_upstream_written(stream, now);
            } else {
                return;
            }
        }
    }

    /// A stream whose upstream write failed, marked as reported.
    fn broken_upstream(&mut self) -> Option<u32> {
        self.streams
            .iter_mut()
            .find_map(|(&id, state)| match &mut state.link {
                Some(Link::Open(up)) if up.broken && !up.eof => {
                    up.eof = true;
                    Some(id)
                }
                _ => None,
            })
    }

    fn exchange_output(&mut self, stream: u32, output: Output, written: &mut Vec<u32>) {
        match output {
            Output::ToUpstream(bytes) => {
                let link = self.streams.get_mut(&stream).and_then(|s| s.link.as_mut());
                if let Some(Link::Open(up)) = link {
                    if up.broken {
                        return;
                    }
                    if let Err(err) = (&*up.stream).write_all(&bytes) {
                        tracing::debug!(stream, error = %err, "upstream write failed");
                        up.broken = true;
                    } else if !written.contains(&stream) {
                        written.push(stream);
                    }
                }
            }
            Output::ConnectUpstream {
                pool,
                backend,
                fresh,
            } => self.connect(stream, pool, backend, fresh),
            Output::ReleaseUpstream { reusable } => self.release(stream, reusable),
            report @ (Output::AccessLog(_)
            | Output::ExchangeDone(_)
            | Output::UpstreamFault { .. }) => {
                let generation = self
                    .streams
                    .get(&stream)
                    .map_or(&self.generation, |s| &s.generation);
                let health = generation.upstreams.health();
                report::handle(&generation.config, &generation.metrics, health, report)
            }
            Output::ToClient(_) | Output::CloseClient => {} // never for an exchange
        }
    }

    /// Obtains an upstream for `stream` on a helper thread (a pooled one, or a new
    /// connection within the connect timeout); the result comes back as an event.
    fn connect(&mut self, stream: u32, pool: PoolId, backend: usize, fresh: bool) {
        let current = &self.generation;
        let state = self.streams.entry(stream).or_insert_with(|| StreamState {
            generation: current.clone(),
            link: None,
        });
        if let Some(Link::Open(up)) = state.link.take() {
            close_upstream(up.stream); // not expected: the exchange released it first
        }
        self.next_id += 1;
        let token = self.next_id;
        state.link = Some(Link::Connecting { token, pool });
        let generation = state.generation.clone();
        let events = self.events_tx.clone();
        let spawned = thread::Builder::new()
            .name("mxgate-connect".into())
            .spawn(move || {
                let deadline = Instant::now() + generation.config.timeouts.upstream_connect;
                let (upstreams, metrics) = (&generation.upstreams, &generation.metrics);
                let result = upstreams
                    .obtain(pool, backend, fresh, deadline, metrics)
                    .map(|(tcp, backend, reused)| (tcp, backend, reused, pool));
                if let Err(err) = &result {
                    let name = &generation.config.pools[pool].name;
                    tracing::warn!(pool = %name, error = %err, "cannot connect to any backend");
                }
                let result = result.map(|(tcp, backend, reused, _)| (tcp, backend, reused));
                let _ = events.send(Event::Connected { token, result });
            });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "cannot start a connect thread");
            state.link = None;
            let _ = self.events_tx.send(Event::Connected {
                token,
                result: Err(err),
            });
            state.link = Some(Link::Connecting { token, pool });
        }
    }

    /// The stream's upstream is done with: pooled when reusable, else closed.
    fn release(&mut self, stream: u32, reusable: bool) {
        let Some(state) = self.streams.get_mut(&stream) else {
            return;
        };
        if let Some(Link::Open(up)) = state.link.take() {
            let idle = !up.reader.busy();
            if reusable && !up.broken && !up.eof && idle {
                // No read is under way once the response is complete: the socket is ours.
                match Arc::try_unwrap(up.stream) {
                    Ok(tcp) => state.generation.upstreams.release(up.pool, up.backend, tcp),
                    Err(stream) => close_upstream(stream),
                }
            } else {
                close_upstream(up.stream);
            }
            if idle && self.spare_readers.len() < SPARE_READERS {
                self.spare_readers.push(up.reader);
            }
        }
        if state.generation.id == self.generation.id {
            self.streams.remove(&stream); // nothing to remember: a later connect is the same
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if !std::mem::replace(&mut self.shutting_down, true) {
            self.session.begin_shutdown(now);
        }
    }

    /// Closes every upstream and the client.
    fn finish(mut self) {
        for (_, state) in self.streams.drain() {
            if let Some(Link::Open(up)) = state.link {
                close_upstream(up.stream);
            }
        }
        // Ends a read under way; the reader threads exit as their job channels close.
        self.client.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair: (what the client writes to, what the proxy peeks at).
    fn pair() -> (TcpStream, TcpStream) {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(socket.local_addr().unwrap()).unwrap();
        (client, socket.accept().unwrap().0)
    }

    const LIMIT: Duration = Duration::from_secs(5);

    #[test]
    fn preface_in_pieces_is_http2_and_nothing_is_consumed() {
        let (mut client, server) = pair();
        let writer = thread::spawn(move || {
            for piece in PREFACE.chunks(5) {
                client.write_all(piece).unwrap();
                thread::sleep(Duration::from_millis(20));
            }
            client
        });
        assert!(preface_follows(&server, LIMIT, || false).unwrap());
        let _client = writer.join().unwrap();
        let mut first = [0u8; 24];
        (&server).read_exact(&mut first).unwrap();
        assert_eq!(
            &first, PREFACE,
            "the preface is left for the session to read"
        );
    }

    #[test]
    fn http1_is_told_at_the_first_differing_byte() {
        for start in [&b"GET / HTTP/1.1\r\n"[..], b"PRI * HTTP/1.1\r\n", b"\r\n"] {
            let (mut client, server) = pair();
            client.write_all(start).unwrap();
            let started = Instant::now();
            assert!(
                !preface_follows(&server, LIMIT, || false).unwrap(),
                "{start:?}"
            );
            assert!(started.elapsed() < LIMIT);
            let mut seen = vec![0u8; start.len()];
            (&server).read_exact(&mut seen).unwrap();
            assert_eq!(seen, start, "nothing consumed");
        }
    }

    #[test]
    fn silence_fails_within_the_limit_and_shutdown_ends_the_wait() {
        let (_client, server) = pair();
        let err = preface_follows(&server, Duration::from_millis(300), || false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let started = Instant::now();
        assert!(preface_follows(&server, LIMIT, || true).is_err());
        assert!(started.elapsed() < LIMIT);
    }
}
