//! The driver of an HTTP/2 client connection: one task owns the client stream, the
//! `Http2Session` and one upstream connection per stream that asked for one, and runs the
//! session's contract: perform its outputs in order, then wait for the client readable, any
//! upstream readable (or writable, with bytes queued, or connected), the session's deadline,
//! shutdown or a reload, and feed back everything of these that is ready at a wake-up (each
//! fed alone, its outputs performed before the next is fed), so the answers of many streams
//! leave in one write to the client. Every decision is the session's (core); this only
//! moves bytes.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mxgate_core::{Http2Session, Output, PoolId, SessionOutput};
use mxgate_std::support::report;
use smol::io::{AsyncRead, AsyncWriteExt};
use smol::{future, Timer};

use crate::driver::{with_read_buf, Guards, Opened};
use crate::stream::{bounded, write_now, write_queue, ClientStream};
use crate::upstream::UpstreamConn;
use crate::{Generation, Shared};

/// Bound on sending TLS close_notify and the TCP FIN.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

type Connecting = Pin<Box<dyn Future<Output = io::Result<Box<UpstreamConn>>> + Send>>;

/// The upstream connection of one stream.
struct Up {
    stream: u32,
    /// The generation whose pools the connection belongs to.
    generation: Arc<Generation>,
    state: UpState,
    /// Bytes for the upstream not yet written.
    queue: VecDeque<Bytes>,
    /// The last read filled the buffer: read again without waiting for readiness.
    more: bool,
    /// The last write attempt would have blocked: wait for writability (asked only then,
    /// as asking registers the socket for it).
    write_blocked: bool,
    eof: bool,
    broken: bool,
}

enum UpState {
    Connecting(Connecting),
    Connected(Box<UpstreamConn>),
}

pub(crate) struct H2Driver {
    shared: Arc<Shared>,
    generation: Arc<Generation>,
    reload_seen: u64,
    listener: usize,
    session: Http2Session,
    client: ClientStream,
    client_queue: VecDeque<Bytes>,
    client_eof: bool,
    client_broken: bool,
    /// The last client read filled the buffer: read again without waiting for readiness.
    client_more: bool,
    /// TLS: the last read found rustls empty, so readiness is the socket's alone.
    tls_socket_only: bool,
    ups: Vec<Up>,
    shutdown_key: Option<usize>,
    shutdown_seen: bool,
    timer: Timer,
    armed: Option<Instant>,
    _guards: Guards,
}

impl H2Driver {
    pub(crate) fn new(opened: Opened) -> H2Driver {
        let Opened {
            shared,
            generation,
            listener,
            peer,
            client,
            guards,
        } = opened;
        let session = Http2Session::new(
            generation.config.clone(),
            listener,
            mxgate_core::config::canonical_ip(peer),
            fastrand::u64(..),
            Instant::now(),
        );
        H2Driver {
            reload_seen: generation.id,
            shared,
            generation,
            listener,
            session,
            client,
            client_queue: VecDeque::new(),
            client_eof: false,
            client_broken: false,
            client_more: false,
            tls_socket_only: false,
            ups: Vec::new(),
            shutdown_key: None,
            shutdown_seen: false,
            timer: Timer::never(),
            armed: None,
            _guards: guards,
        }
    }

    pub(crate) async fn run(&mut self) {
        loop {
            self.perform_outputs();
            if self.flush_client().await {
                continue; // the session was told the client is gone: perform what it says
            }
            if self.session.is_closed() {
                break;
            }
            if self.flush_upstreams() {
                continue;
            }
            // Re-armed only when the deadline moved earlier: a later one is met by re-arming
            // when the earlier timer fires (an early `handle_timeout` is harmless).
            if let Some(at) = self.session.poll_timeout() {
                if self.armed.is_none_or(|armed| at < armed) {
                    self.timer.set_at(at);
                    self.armed = Some(at);
                }
            }
            future::poll_fn(|cx| self.poll_wait(cx)).await;
        }
        if let Some(key) = self.shutdown_key.take() {
            self.shared.shutdown_wakers.deregister(key);
        }
        self.ups.clear();
        if !self.client_broken {
            let closed = bounded(self.client.close(), CLOSE_TIMEOUT).await;
            if let Err(err) = closed.and_then(|()| self.client.shutdown_write()) {
                tracing::debug!(error = %err, "closing the client connection failed");
            }
        }
        tracing::trace!(listener = self.listener, "h2 connection closed");
    }

    /// Performs every output the session has (nothing here waits).
    fn perform_outputs(&mut self) {
        while let Some(output) = self.session.poll_output() {
            match output {
                SessionOutput::ToClient(bytes) => {
                    if !self.client_broken && !bytes.is_empty() {
                        self.client_queue.push_back(bytes);
                    }
                }
                SessionOutput::CloseClient => {}
                SessionOutput::Exchange { stream, output } => self.perform(stream, output),
            }
        }
    }

    fn perform(&mut self, stream: u32, output: Output) {
        match output {
            Output::ConnectUpstream {
                pool,
                backend,
                fresh,
            } => self.connect(stream, pool, backend, fresh),
            Output::ToUpstream(bytes) => {
                if let Some(up) = self.ups.iter_mut().find(|u| u.stream == stream) {
                    if !up.broken && !bytes.is_empty() {
                        up.queue.push_back(bytes);
                    }
                }
            }
            Output::ReleaseUpstream { reusable } => {
                if let Some(i) = self.ups.iter().position(|u| u.stream == stream) {
                    let up = self.ups.swap_remove(i);
                    if let UpState::Connected(conn) = up.state {
                        if reusable && up.queue.is_empty() && !up.broken && !up.eof {
                            up.generation.upstreams.release(conn);
                        }
                    }
                }
            }
            report @ (Output::AccessLog(_)
            | Output::ExchangeDone(_)
            | Output::UpstreamFault { .. }) => {
                let g = &self.generation;
                report::handle(&g.config, &g.metrics, g.upstreams.health(), report);
            }
            Output::ToClient(_) | Output::CloseClient => {}
        }
    }

    fn connect(&mut self, stream: u32, pool: PoolId, backend: usize, fresh: bool) {
        let generation = self.generation.clone();
        if let Some(conn) = generation.upstreams.take_idle(pool, backend, fresh) {
            self.ups.push(Up {
                stream,
                generation,
                state: UpState::Connected(conn),
                queue: VecDeque::new(),
                more: false,
                write_blocked: false,
                eof: false,
                broken: false,
            });
            self.session
                .handle_upstream_connected(stream, true, Instant::now());
            return;
        }
        let g = generation.clone();
        let connecting: Connecting =
            Box::pin(async move { g.upstreams.connect(pool, backend, &g.metrics).await });
        self.ups.push(Up {
            stream,
            generation,
            state: UpState::Connecting(connecting),
            queue: VecDeque::new(),
            more: false,
            write_blocked: false,
            eof: false,
            broken: false,
        });
    }

    /// Writes the client's queue, waiting (bounded by `timeouts.send`) when the client is
    /// slow: its streams wait with it.
    /// `true` when a failed write was just reported to the session as the client's end:
    /// its outputs (releasing every upstream) are to be performed before any wait.
    async fn flush_client(&mut self) -> bool {
        if self.client_queue.is_empty() {
            return false;
        }
        if self.client_broken {
            self.client_queue.clear();
            return false;
        }
        let stall = self.generation.config.timeouts.send;
        match write_queue(&mut self.client, &mut self.client_queue, stall).await {
            Ok(n) => self.count_bytes_out(n),
            Err(err) => {
                tracing::debug!(error = %err, "client write failed");
                self.client_broken = true;
                self.client_queue.clear();
                if !self.client_eof {
                    self.client_eof = true;
                    self.session.handle_client_eof(Instant::now());
                    return true;
                }
            }
        }
        false
    }

    fn count_bytes_out(&self, n: u64) {
        if let Some(metrics) = self.generation.listener_metrics.get(self.listener) {
            metrics.bytes_out.inc_by(n);
        }
    }

    /// Writes what each upstream takes now, without waiting; `true` when the session was
    /// told something (a write completed or failed) and has outputs to perform.
    fn flush_upstreams(&mut self) -> bool {
        let waker = futures_noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut told = false;
        let now = Instant::now();
        for up in &mut self.ups {
            let UpState::Connected(conn) = &mut up.state else {
                continue;
            };
            if up.queue.is_empty() || up.broken {
                continue;
            }
            let written = write_now(&mut conn.stream, &mut up.queue, &mut 0, &mut cx);
            up.write_blocked = written.is_none();
            match written {
                None => {}
                Some(Ok(())) => {
                    self.session.handle_upstream_written(up.stream, now);
                    told = true;
                }
                Some(Err(err)) => {
                    tracing::debug!(upstream = %conn.addr, error = %err, "upstream write failed");
                    up.broken = true;
                    up.queue.clear();
                    if !up.eof {
                        up.eof = true;
                        self.session.handle_upstream_eof(up.stream, now);
                    }
                    told = true;
                }
            }
        }
        told
    }

    /// Feeds the session everything that is ready (at most one read of each source), each
    /// with its outputs performed before the next; `Pending` when nothing was.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut woke = false;
        // The client: one read per wake-up, so its answers are written before more of it is
        // fed.
        if !self.client_eof
            && self.session.wants_client_read()
            && (self.client_more || self.client.poll_ready(self.tls_socket_only, cx).is_ready())
            && self.read_client(cx)
        {
            woke = true;
            self.perform_outputs();
        }
        // The upstreams, last first: performing outputs removes upstreams (`swap_remove`
        // brings one already visited forward) and adds new ones at the end (polled at the
        // next wake-up, which this one's progress makes immediate).
        let mut i = self.ups.len();
        while i > 0 {
            i -= 1;
            if i < self.ups.len() && self.poll_upstream(i, cx) {
                woke = true;
                self.perform_outputs();
            }
        }
        // The deadline.
        if self.armed.is_some() && Pin::new(&mut self.timer).poll(cx).is_ready() {
            self.armed = None;
            self.session.handle_timeout(Instant::now());
            woke = true;
        }
        // Shutdown and reloads.
        if !self.shutdown_seen {
            let wakers = &self.shared.shutdown_wakers;
            let begun = wakers.begun()
                || (self.shutdown_key.is_none() && {
                    match wakers.register(cx.waker()) {
                        Some(key) => {
                            self.shutdown_key = Some(key);
                            false
                        }
                        None => true,
                    }
                });
            if begun {
                self.shutdown_seen = true;
                self.session.begin_shutdown(Instant::now());
                woke = true;
            } else if self.shared.generation() != self.reload_seen {
                self.follow_reload();
                woke = true;
            }
        }
        if woke {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// One read from the client, fed to the session; `false` if it had nothing.
    fn read_client(&mut self, cx: &mut Context<'_>) -> bool {
        let (client, session) = (&mut self.client, &mut self.session);
        let (generation, listener) = (&self.generation, self.listener);
        // `Some(filled)` for bytes, `None` for nothing; EOF and errors end the client.
        let result = with_read_buf(|buf| match Pin::new(client).poll_read(cx, buf) {
            Poll::Pending => Ok(None),
            Poll::Ready(Ok(n)) if n > 0 => {
                if let Some(m) = generation.listener_metrics.get(listener) {
                    m.bytes_in.inc_by(n as u64);
                }
                session.handle_client_data(&buf[..n], Instant::now());
                Ok(Some(n == buf.len()))
            }
            Poll::Ready(_) => Err(()),
        });
        match result {
            Ok(Some(filled)) => {
                self.client_more = filled;
                self.tls_socket_only = false;
                true
            }
            Ok(None) => {
                self.client_more = false;
                self.tls_socket_only = true;
                false
            }
            Err(()) => {
                self.client_more = false;
                self.client_eof = true;
                self.session.handle_client_eof(Instant::now());
                true
            }
        }
    }

    /// Polls upstream `i`: its connect, its writability when bytes wait, and (when the
    /// session wants it) one read; `true` when the session was told something or a write
    /// can go on.
    fn poll_upstream(&mut self, i: usize, cx: &mut Context<'_>) -> bool {
        let up = &mut self.ups[i];
        let stream = up.stream;
        match &mut up.state {
            UpState::Connecting(fut) => {
                let Poll::Ready(result) = fut.as_mut().poll(cx) else {
                    return false;
                };
                match result {
                    Ok(conn) => {
                        up.state = UpState::Connected(conn);
                        self.session
                            .handle_upstream_connected(stream, false, Instant::now());
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "upstream connect failed");
                        self.ups.swap_remove(i);
                        self.session.handle_upstream_failed(stream, Instant::now());
                    }
                }
                true
            }
            UpState::Connected(conn) => {
                // `flush_upstreams` writes it.
                let writable = up.write_blocked
                    && !up.queue.is_empty()
                    && !up.broken
                    && conn.stream.poll_writable(cx).is_ready();
                // Readiness is asked of the socket only when a read is wanted: a socket
                // reported readable and not read would report it again at once.
                if up.eof
                    || !self.session.wants_upstream_read(stream)
                    || !(up.more || conn.stream.poll_readable(cx).is_ready())
                {
                    return writable;
                }
                let session = &mut self.session;
                let read = with_read_buf(|buf| {
                    match Pin::new(&mut conn.stream).poll_read(cx, buf) {
                        Poll::Pending => {
                            up.more = false;
                            false
                        }
                        Poll::Ready(Ok(n)) if n > 0 => {
                            up.more = n == buf.len();
                            session.handle_upstream_data(stream, &buf[..n], Instant::now());
                            true
                        }
                        Poll::Ready(result) => {
                            if let Err(err) = result {
                                tracing::debug!(upstream = %conn.addr, error = %err, "upstream read failed");
                            }
                            up.more = false;
                            up.eof = true;
                            session.handle_upstream_eof(stream, Instant::now());
                            true
                        }
                    }
                });
                read || writable
            }
        }
    }

    /// New streams follow a reloaded configuration; streams in flight finish on theirs. A
    /// connection whose listener is gone is drained.
    fn follow_reload(&mut self) {
        let current = self.shared.current();
        self.reload_seen = current.id;
        if current.id == self.generation.id {
            return;
        }
        let found = mxgate_std::support::reload::listener_in(
            &self.generation.config,
            self.listener,
            &current.config,
        );
        match found {
            Some(listener) if self.session.reconfigure(current.config.clone(), listener) => {
                self.listener = listener;
                self.generation = current;
            }
            _ => {
                self.shutdown_seen = true;
                self.session.begin_shutdown(Instant::now());
            }
        }
    }
}

/// A waker that does nothing: non-blocking writes attempted outside a wait (the wait
/// registers the real one for writability).
fn futures_noop_waker() -> std::task::Waker {
    std::task::Waker::noop().clone()
}
