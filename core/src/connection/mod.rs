//! One client connection's state machine: requests in, decisions and bytes out.
//!
//! This file holds the connection itself: its public contract, its states, timers and
//! reusable buffers. The rest is split by job: `head.rs` reads request heads and answers
//! what mxgate answers itself; `exchange.rs` runs one exchange with an upstream (backend
//! choice, the request going up, how the exchange ends); `relay.rs` carries the upstream's
//! response back to the client.

use core::net::IpAddr;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::answer::{self, AnswerCtx};
use crate::config::{AccessLogFormat, Config, ListenerId, PoolId};
use crate::forwarded::{self, identify, ClientIdentity, RequestId, RequestIds};
use crate::http1::chunked::{chunk_header, ChunkedDecoder, CHUNK_END, LAST_CHUNK};
use crate::http1::lines::{
    head_start, request_line_lacks_version, scan_head, strict_lines, HeadScan, ScanLimits,
    ScanState,
};
use crate::http1::reject::Reject;
use crate::http1::request::{self, RawHeader, RequestBody, RequestHead, Version};
use crate::http1::response::{self, ResponseBody, ResponseHead, MAX_RESPONSE_HEADERS};
use crate::output::{AccessRecord, ExchangeStats, Output, TimerKind, UpstreamFault};
use crate::rewrite::{self, ClientFraming};
use crate::route::{self, Decision, PathBuffers, WellKnownDoc};
use crate::timer::{earliest, Deadline, ExchangeTimers};
use crate::workers::hash::RequestParts;

mod exchange;
mod head;
mod relay;

use exchange::{Exchange, Failure, Upstream};
use relay::{ResponseBodyState, ResponseState};

/// The engine for one client connection.
///
/// # Contract
/// Create one per accepted client connection. After creating it, and after every
/// `handle_*` call, drain [`Connection::poll_output`] until it returns `None`, performing
/// each [`Output`] in order (write bytes completely before feeding more input). Then wait
/// for the first of: the client readable (only if [`Connection::wants_client_read`]), the
/// upstream readable (only if [`Connection::wants_upstream_read`]), or the deadline of
/// [`Connection::poll_timeout`]; feed what happened back with the matching `handle_*`
/// call. Stop when [`Connection::is_closed`]. Time is only ever passed in (`now`), and
/// must not go backwards.
///
/// # Methods
/// - inputs: `handle_client_data`, `handle_client_eof`, `handle_upstream_connected`,
///   `handle_upstream_failed`, `handle_upstream_data`, `handle_upstream_eof`,
///   `handle_timeout`, `begin_shutdown`;
/// - outputs: `poll_output`, `poll_timeout`;
/// - getters: `wants_client_read`, `wants_upstream_read`, `is_idle`, `is_closed`.
///
/// One exchange is in flight at a time. Pipelined requests wait in a bounded buffer and
/// are answered in order. An HTTP/2 client connection ([`crate::Http2Session`]) runs one
/// of these per stream, in its per-stream mode, so both protocols share every rule.
pub struct Connection {
    config: Arc<Config>,
    /// A `ListenerId`, stored small (with `exchanges`, it packs with the peer address).
    listener: u32,
    /// The client address as the socket reports it, canonical.
    peer: IpAddr,
    ids: RequestIds,
    /// Client bytes not yet consumed.
    rx: BytesMut,
    outputs: VecDeque<Output>,
    /// The header or idle timer (the exchange holds the others).
    client_timer: Deadline,
    state: State,
    /// Storage reused from one exchange to the next (none while idle for long).
    scratch: Option<Box<Scratch>>,
    client_eof: bool,
    shutting_down: bool,
    /// This engine runs one HTTP/2 stream's exchange (see [`crate::Http2Session`]): the
    /// response's body is passed on unframed (no chunked re-framing, no `Connection:
    /// close` for a length-less body: the stream's END_STREAM ends it), and the access log
    /// says `HTTP/2.0`.
    h2_stream: bool,
    /// A response was cut after it had begun (its upstream broke): over HTTP/2 the stream
    /// is reset rather than ended.
    cut: bool,
    /// Exchanges started so far: tells a handler whether the exchange it began with is
    /// still the one in flight.
    exchanges: u32,
}

/// How long a keep-alive connection keeps its buffers after an exchange: a busy
/// connection reuses them for its next request without allocating; an idle one gives them
/// back (one allocation each on its next request).
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// Per-connection storage kept between exchanges, so that a warm keep-alive exchange
/// allocates nothing.
#[derive(Default)]
struct Scratch {
    /// While lent out ([`ExchangeBuffers`]): the idle connection's read buffer and output
    /// queue (empty, with their capacity). Empty while the scratch is in use.
    rx: BytesMut,
    outputs: VecDeque<Output>,
    /// Rewritten heads are written here and split off as `Bytes`. Each is written after
    /// the one before it was sent (and dropped by the runtime), so the buffer is reclaimed
    /// (`BytesMut::reserve` on a buffer no `Bytes` shares any more), not reallocated.
    out: BytesMut,
    request_headers: Vec<RawHeader>,
    response_headers: Vec<RawHeader>,
    paths: PathBuffers,
    /// The last exchange, emptied, for the next one to reuse its box and `urx`.
    exchange: Option<Box<Exchange>>,
}

/// The buffers a connection reuses from one exchange to the next (read buffer, output
/// queue, rewritten heads, header lists, the exchange record), taken out of an idle
/// connection with [`Connection::take_buffers`] and lent to a busy one with
/// [`Connection::lend_buffers`]. A runtime holding many keep-alive connections keeps a small
/// stock of these per thread: idle connections then hold no buffers at all, and busy ones
/// allocate none. (A runtime that never takes them loses nothing: an idle connection drops
/// its own a second after its last exchange.)
pub struct ExchangeBuffers(Box<Scratch>);

impl std::fmt::Debug for ExchangeBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeBuffers")
            .field("rx_capacity", &self.0.rx.capacity())
            .field("out_capacity", &self.0.out.capacity())
            .finish_non_exhaustive()
    }
}

fn scratch(slot: &mut Option<Box<Scratch>>) -> &mut Scratch {
    slot.get_or_insert_with(Box::default)
}

enum State {
    /// Waiting for a request head; `since` is when waiting began.
    Head {
        since: Instant,
        scanned: ScanState,
        /// Bytes of a head have arrived (or this is a new connection): the header
        /// timeout applies, else the idle timeout.
        receiving: bool,
    },
    Exchange(Box<Exchange>),
    /// A request mxgate answered itself had a small body of known length: its `remaining`
    /// bytes are read and dropped, then the next request is read.
    Discarding {
        remaining: u64,
    },
    /// After `101 Switching Protocols`: bytes pass both ways untouched.
    Tunnel,
    /// After an early answer (see [`Connection::close_after_answer`]): the write side is
    /// shut, and what the client still sends is read and thrown away until it closes, goes
    /// quiet, or the time or byte budget runs out (RFC 9112 §9.6).
    Lingering {
        until: Instant,
        discarded: u64,
    },
    Closed,
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
        let peer = forwarded::peer(peer);
        let mut conn = Connection {
            config,
            // Listener ids index the configuration's listeners: a handful.
            listener: u32::try_from(listener).unwrap_or(u32::MAX),
            peer,
            ids: RequestIds::new(seed),
            rx: BytesMut::new(),
            outputs: VecDeque::new(),
            client_timer: Deadline::new(TimerKind::ClientHeader),
            state: State::Head {
                since: now,
                scanned: ScanState::default(),
                receiving: true,
            },
            scratch: None,
            exchanges: 0,
            client_eof: false,
            shutting_down: false,
            h2_stream: false,
            cut: false,
        };
        conn.arm_head_timer();
        conn
    }

    /// The engine for one HTTP/2 stream's exchange: fed the stream's request as the HTTP/1.1
    /// head and body [`crate::Http2Session`] writes for it, it applies every rule of an
    /// HTTP/1.1 exchange unchanged, and hands the response back unframed.
    pub(crate) fn for_http2_stream(
        config: Arc<Config>,
        listener: ListenerId,
        peer: IpAddr,
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut conn = Connection::new(config, listener, peer, seed, now);
        conn.h2_stream = true;
        conn
    }

    /// An exchange (with an upstream) is in flight.
    pub(crate) fn in_exchange(&self) -> bool {
        matches!(self.state, State::Exchange(_))
    }

    /// The last response was cut after it had begun.
    pub(crate) fn response_cut(&self) -> bool {
        self.cut
    }

    // ----------------------------------------------------------------------------- inputs

    /// Bytes read from the client.
    pub fn handle_client_data(&mut self, data: &[u8], now: Instant) {
        if data.is_empty() || self.client_eof {
            return;
        }
        match &mut self.state {
            State::Closed => {}
            State::Tunnel => self
                .outputs
                .push_back(Output::ToUpstream(Bytes::copy_from_slice(data))),
            State::Lingering { until, discarded } => {
                *discarded = discarded.saturating_add(data.len() as u64);
                if self.outputs.is_empty() {
                    // Nothing more is written: the queue's storage can go.
                    self.outputs = VecDeque::new();
                }
                if *discarded > self.config.limits.max_linger_bytes {
                    self.close();
                } else {
                    let at = (*until).min(now + self.config.timeouts.linger_read);
                    self.client_timer.set(TimerKind::ClientLinger, at);
                }
            }
            _ => {
                self.rx.extend_from_slice(data);
                self.progress(now);
            }
        }
    }

    /// The client closed its sending side (or a read or write on it failed).
    pub fn handle_client_eof(&mut self, now: Instant) {
        if self.client_eof {
            return;
        }
        self.client_eof = true;
        match &mut self.state {
            State::Closed => {}
            State::Head { .. } | State::Lingering { .. } | State::Discarding { .. } => self.close(),
            State::Tunnel => {
                self.outputs
                    .push_back(Output::ReleaseUpstream { reusable: false });
                self.close();
            }
            State::Exchange(ex) => {
                // The client is gone (clients rarely half-close; a closed long-poll is the
                // common case): abandon the exchange rather than hold an upstream
                // connection for a response nobody reads. nginx does the same by default.
                ex.close_after = true;
                ex.upstream_spoiled = true;
                let status = ex.status;
                self.end_exchange(now, status);
            }
        }
    }

    /// A deadline passed. Extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(kind) = self.expired_timer(now) {
            self.stop_timer(kind);
            match kind {
                TimerKind::ClientIdle => {
                    let idle_end = match self.state {
                        State::Head { since, .. } => since + self.config.timeouts.client_idle,
                        _ => now,
                    };
                    if now < idle_end {
                        // Only the buffer release was due: the connection stays open.
                        self.release_buffers();
                        self.client_timer.set(TimerKind::ClientIdle, idle_end);
                    } else {
                        self.close();
                    }
                }
                TimerKind::ClientHeader => {
                    if let State::Head { .. } = self.state {
                        if self.rx.is_empty() {
                            self.close();
                        } else {
                            let bytes = answer::text_error(
                                408,
                                "Request header read timed out",
                                AnswerCtx {
                                    close: true,
                                    head_only: false,
                                    request_id: None,
                                },
                            );
                            self.outputs.push_back(Output::ToClient(bytes));
                            self.close();
                        }
                    }
                }
                TimerKind::ClientBody if matches!(self.state, State::Discarding { .. }) => {
                    self.close()
                }
                TimerKind::ClientBody => self.fail(now, Failure::ClientBodyTimeout),
                TimerKind::ClientLinger => self.close(),
                TimerKind::UpstreamConnect | TimerKind::UpstreamResponse => {
                    self.fail(now, Failure::UpstreamTimeout)
                }
            }
        }
    }

    /// The runtime is shutting down: finish the exchange in flight (if any), then close.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        match &mut self.state {
            State::Head { .. } if self.rx.is_empty() => self.close(),
            // Draining should not wait for a client still sending a refused body.
            State::Lingering { .. } => self.close(),
            State::Exchange(ex) => ex.close_after = true,
            _ => {}
        }
        self.progress(now);
    }

    /// Switches an idle connection to a reloaded configuration, `listener` being its
    /// listener's id in it: the next request (and the idle timeout until then) follows
    /// `config`. Refused (`false`, nothing changes) unless the connection is idle with no
    /// output pending: an exchange in flight always finishes on the configuration it began
    /// with, so the runtime tries again once [`Connection::is_idle`].
    pub fn reconfigure(&mut self, config: Arc<Config>, listener: ListenerId) -> bool {
        if !self.is_idle() || !self.outputs.is_empty() || listener >= config.listeners.len() {
            return false;
        }
        self.config = config;
        self.listener = u32::try_from(listener).unwrap_or(u32::MAX);
        self.arm_head_timer();
        true
    }

    /// Takes this idle connection's reusable buffers (see [`ExchangeBuffers`]); `None` while
    /// an exchange is in flight, output is pending, or it holds none.
    pub fn take_buffers(&mut self) -> Option<ExchangeBuffers> {
        if !self.is_idle() || !self.outputs.is_empty() || !self.holds_buffers() {
            return None;
        }
        let mut buffers = self.scratch.take().unwrap_or_default();
        buffers.rx = std::mem::take(&mut self.rx);
        buffers.outputs = std::mem::take(&mut self.outputs);
        // Holding nothing now: the idle timer goes back to the plain keep-alive timeout.
        self.arm_head_timer();
        Some(ExchangeBuffers(buffers))
    }

    /// Lends buffers for the next exchange, before feeding it data. Gives them back when
    /// this connection has its own already or is closed.
    pub fn lend_buffers(&mut self, buffers: ExchangeBuffers) -> Option<ExchangeBuffers> {
        if self.scratch.is_some() || matches!(self.state, State::Closed | State::Lingering { .. }) {
            return Some(buffers);
        }
        let mut scratch = buffers.0;
        if self.rx.capacity() == 0 {
            self.rx = std::mem::take(&mut scratch.rx);
        }
        if self.outputs.capacity() == 0 {
            self.outputs = std::mem::take(&mut scratch.outputs);
        }
        self.scratch = Some(scratch);
        None
    }

    // ---------------------------------------------------------------------------- outputs

    /// The next thing to do, or `None` until more input arrives.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next deadline and why. Call [`Connection::handle_timeout`] when it passes.
    pub fn poll_timeout(&self) -> Option<(Instant, TimerKind)> {
        if matches!(self.state, State::Closed) {
            return None;
        }
        self.next_timer()
    }

    // ---------------------------------------------------------------------------- getters

    /// Whether to read from the client now (backpressure: `false` while a pipelined
    /// request waits, or while a body has nowhere to go yet).
    pub fn wants_client_read(&self) -> bool {
        if self.client_eof {
            return false;
        }
        match &self.state {
            State::Closed => false,
            State::Tunnel | State::Lingering { .. } => true,
            State::Head { .. } | State::Discarding { .. } => true,
            State::Exchange(ex) => {
                if ex.request_done() {
                    self.rx.len() < self.config.limits.max_pipelined_bytes
                } else {
                    matches!(ex.upstream, Upstream::Connected { .. })
                        && self.rx.len() < self.config.limits.max_pipelined_bytes
                }
            }
        }
    }

    /// Whether to read from the upstream now.
    pub fn wants_upstream_read(&self) -> bool {
        match &self.state {
            State::Tunnel => true,
            State::Exchange(ex) => {
                matches!(ex.upstream, Upstream::Connected { .. })
                    && !matches!(ex.response, ResponseState::Done)
            }
            _ => false,
        }
    }

    /// Nothing is in flight (a runtime may close this connection without cutting anything).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head { .. }) && self.rx.is_empty()
    }

    /// Closed, and every output drained.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed) && self.outputs.is_empty()
    }

    /// The listener the connection was accepted on.
    pub fn listener(&self) -> ListenerId {
        self.listener as ListenerId
    }

    // --------------------------------------------------------------------------- internals

    /// Heap bytes the connection's buffers hold (not counting what `Bytes` handed out
    /// still share).
    #[cfg(test)]
    pub(crate) fn held_buffer_bytes(&self) -> usize {
        let scratch = self.scratch.as_ref().map_or(0, |s| {
            let header = std::mem::size_of::<RawHeader>();
            std::mem::size_of::<Scratch>()
                + s.out.capacity()
                + header * (s.request_headers.capacity() + s.response_headers.capacity())
                + s.exchange.as_ref().map_or(0, |ex| {
                    std::mem::size_of::<Exchange>()
                        + ex.urx.capacity()
                        + std::mem::size_of_val(ex.head.raw_headers())
                })
        });
        scratch + self.rx.capacity() + self.outputs.capacity() * std::mem::size_of::<Output>()
    }

    fn next_timer(&self) -> Option<(Instant, TimerKind)> {
        let exchange = match &self.state {
            State::Exchange(ex) => Some(&ex.timers),
            _ => None,
        };
        earliest([
            self.client_timer.get(),
            exchange.and_then(|t| t.body.get()),
            exchange.and_then(|t| t.upstream.get()),
        ])
    }

    /// A timer whose deadline is at or before `now`, if any.
    fn expired_timer(&self, now: Instant) -> Option<TimerKind> {
        self.next_timer()
            .filter(|(at, _)| *at <= now)
            .map(|(_, kind)| kind)
    }

    fn stop_timer(&mut self, kind: TimerKind) {
        match (kind, &mut self.state) {
            (TimerKind::ClientHeader | TimerKind::ClientIdle | TimerKind::ClientLinger, _) => {
                self.client_timer.stop(kind)
            }
            (TimerKind::ClientBody, State::Exchange(ex)) => ex.timers.body.stop(kind),
            (TimerKind::ClientBody, State::Discarding { .. }) => self.client_timer.stop(kind),
            (TimerKind::UpstreamConnect | TimerKind::UpstreamResponse, State::Exchange(ex)) => {
                ex.timers.upstream.stop(kind)
            }
            // Without an exchange, its timers are gone already.
            _ => {}
        }
    }

    fn close(&mut self) {
        match self.state {
            State::Closed => {}
            // The write side is shut already.
            State::Lingering { .. } => {
                self.state = State::Closed;
                self.client_timer.clear();
            }
            _ => {
                self.state = State::Closed;
                self.client_timer.clear();
                self.rx = BytesMut::new();
                self.scratch = None;
                self.outputs.push_back(Output::CloseClient);
            }
        }
    }

    /// Closes after an answer sent while the client may still be sending (its body, or
    /// more requests): the write side is shut at once, but the connection keeps reading
    /// and discarding for a while, so that the kernel does not answer those bytes with a
    /// reset that destroys the answer before the client reads it (RFC 9112 §9.6). A client
    /// that writes its whole upload before reading thus gets the 413, not a broken pipe.
    fn close_after_answer(&mut self, now: Instant) {
        let linger = self.config.timeouts.linger;
        if self.client_eof || self.shutting_down || linger.is_zero() {
            return self.close();
        }
        if matches!(self.state, State::Closed | State::Lingering { .. }) {
            return;
        }
        let until = now + linger;
        let discarded = self.rx.len() as u64;
        self.close();
        self.state = State::Lingering { until, discarded };
        let at = until.min(now + self.config.timeouts.linger_read);
        self.client_timer.set(TimerKind::ClientLinger, at);
    }

    /// Whether an idle connection still holds buffers to give back.
    fn holds_buffers(&self) -> bool {
        self.scratch.is_some() || self.rx.capacity() > 0 || self.outputs.capacity() > 0
    }

    /// Gives back every buffer an idle connection does not need.
    fn release_buffers(&mut self) {
        self.scratch = None;
        if self.rx.is_empty() {
            self.rx = BytesMut::new();
        }
        if self.outputs.is_empty() {
            self.outputs = VecDeque::new();
        }
    }

    /// Keeps the last exchange's box and buffers for the next one.
    fn recycle(&mut self, mut ex: Box<Exchange>) {
        let scratch = scratch(&mut self.scratch);
        // Dropping the handles on the client's and the upstream's buffers lets those
        // buffers be reclaimed rather than reallocated.
        scratch.request_headers = ex.head.take_header_storage();
        ex.head.raw = Bytes::new();
        ex.head.connection_tokens.clear();
        ex.identity.forwarded_for = None;
        ex.identity.request_id = RequestId::Generated([0; 16]);
        ex.upstream_head = Bytes::new();
        ex.urx.clear();
        scratch.exchange = Some(ex);
    }

    fn arm_head_timer(&mut self) {
        let State::Head {
            since, receiving, ..
        } = self.state
        else {
            return;
        };
        let t = &self.config.timeouts;
        self.client_timer.clear();
        if !receiving {
            // While buffers are held, the idle timer fires early once to release them.
            let idle = if self.holds_buffers() {
                t.client_idle.min(IDLE_RELEASE)
            } else {
                t.client_idle
            };
            self.client_timer.set(TimerKind::ClientIdle, since + idle);
        } else {
            self.client_timer
                .set(TimerKind::ClientHeader, since + t.client_header);
        }
    }

    /// Reports a finished exchange: the whole record when the configuration has an access
    /// log, else only `stats` (no allocation, no record to build).
    fn push_log(&mut self, stats: ExchangeStats, record: impl FnOnce(&Self) -> AccessRecord) {
        let output = if self.config.runtime.access_log == AccessLogFormat::Off {
            Output::ExchangeDone(stats)
        } else {
            Output::AccessLog(Box::new(record(self)))
        };
        self.outputs.push_back(output);
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        head: &RequestHead,
        identity: &ClientIdentity,
        pool: Option<PoolId>,
        status: u16,
        body_bytes_in: u64,
        bytes_out: u64,
        started: Instant,
        now: Instant,
        upstream_duration: Option<Duration>,
    ) -> AccessRecord {
        AccessRecord {
            listener: self.listener(),
            client: identity.client,
            method: head.method_bytes(),
            target: head.target_bytes(),
            version: if self.h2_stream {
                "HTTP/2.0"
            } else {
                head.version.as_str()
            },
            status,
            body_bytes_in,
            bytes_out,
            duration: now.saturating_duration_since(started),
            upstream_duration,
            pool,
            request_id: identity.request_id.to_bytes(),
            user_agent: head.header_bytes(b"user-agent").unwrap_or_default(),
            referer: head.header_bytes(b"referer").unwrap_or_default(),
            started,
        }
    }
}

impl Drop for Connection {
    /// A connection dropped mid-exchange (drain deadline, runtime error) still leaves the
    /// backend's in-flight count right.
    fn drop(&mut self) {
        if let State::Exchange(ex) = &self.state {
            self.config.pools[ex.pool]
                .balancer
                .exchange_finished(ex.backend);
        }
    }
}
