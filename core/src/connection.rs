//! One client connection's state machine: requests in, decisions and bytes out.

use core::net::IpAddr;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::answer::{self, AnswerCtx};
use crate::config::{AccessLogFormat, Config, ListenerId, PoolId};
use crate::forwarded::{self, identify, ClientIdentity, RequestId, RequestIds};
use crate::http1::chunked::{chunk_header, ChunkedDecoder, CHUNK_END, LAST_CHUNK};
use crate::http1::lines::{head_start, scan_head, strict_lines, HeadScan, ScanLimits, ScanState};
use crate::http1::reject::Reject;
use crate::http1::request::{self, RawHeader, RequestBody, RequestHead, Version};
use crate::http1::response::{self, ResponseBody, ResponseHead, MAX_RESPONSE_HEADERS};
use crate::output::{AccessRecord, ExchangeStats, Output, TimerKind, UpstreamFault};
use crate::rewrite::{self, ClientFraming};
use crate::route::{self, Decision, PathBuffers, WellKnownDoc};
use crate::timer::{earliest, Deadline, ExchangeTimers};
use crate::workers::hash::RequestParts;

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
/// are answered in order.
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
    /// After `101 Switching Protocols`: bytes pass both ways untouched.
    Tunnel,
    Closed,
}

/// Where the request body stands.
enum RequestBodyState {
    Length { remaining: u64 },
    Chunked { decoder: ChunkedDecoder, total: u64 },
    Done,
}

/// Where the upstream connection stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Upstream {
    Connecting { fresh: bool },
    Connected { reused: bool },
    Released,
}

/// Where the response stands.
enum ResponseState {
    /// No head yet; `scanned` is the scanner's resume point in `urx`.
    AwaitingHead {
        scanned: ScanState,
    },
    Body(ResponseBodyState),
    Done,
}

enum ResponseBodyState {
    Length {
        remaining: u64,
    },
    Chunked {
        decoder: ChunkedDecoder,
        reframe: bool,
    },
    UntilClose,
}

struct Exchange {
    started: Instant,
    head: RequestHead,
    identity: ClientIdentity,
    pool: PoolId,
    /// The backend of `pool` chosen for this exchange (counted in its in-flight counter).
    backend: usize,
    /// The head to send upstream, until it is sent.
    upstream_head: Bytes,
    body: RequestBodyState,
    body_bytes_in: u64,
    sent_continue: bool,
    retryable: bool,
    retried: bool,
    upstream: Upstream,
    urx: BytesMut,
    response: ResponseState,
    status: u16,
    /// Bytes sent to the client for this exchange (0: nothing yet, an error can still be sent).
    bytes_out: u64,
    sent_upstream_at: Option<Instant>,
    upstream_duration: Option<Duration>,
    /// The client connection closes after this exchange.
    close_after: bool,
    /// The upstream connection cannot be reused.
    upstream_spoiled: bool,
    timers: ExchangeTimers,
}

impl Exchange {
    fn request_done(&self) -> bool {
        matches!(self.body, RequestBodyState::Done)
    }
    fn response_started(&self) -> bool {
        self.bytes_out > 0
    }
}

/// Why an exchange ends badly; each becomes a status (or a cut connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    UpstreamUnreachable,
    UpstreamBroken(UpstreamFault),
    UpstreamTimeout,
    ClientBodyTimeout,
    BodyTooLarge,
    BadRequestBody,
}

impl Failure {
    fn status(self) -> u16 {
        match self {
            Failure::UpstreamUnreachable | Failure::UpstreamBroken(_) => 502,
            Failure::UpstreamTimeout => 504,
            Failure::ClientBodyTimeout => 408,
            Failure::BodyTooLarge => 413,
            Failure::BadRequestBody => 400,
        }
    }
    fn message(self) -> &'static str {
        match self {
            Failure::UpstreamUnreachable => "The homeserver could not be reached",
            Failure::UpstreamBroken(_) => "The homeserver sent an invalid or incomplete response",
            Failure::UpstreamTimeout => "The homeserver did not answer in time",
            Failure::ClientBodyTimeout => "The request body stalled",
            Failure::BodyTooLarge => "Request body too large",
            Failure::BadRequestBody => "Malformed chunked request body",
        }
    }
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
        };
        conn.arm_head_timer();
        conn
    }

    // ----------------------------------------------------------------------------- inputs

    /// Bytes read from the client.
    pub fn handle_client_data(&mut self, data: &[u8], now: Instant) {
        if data.is_empty() || self.client_eof {
            return;
        }
        match self.state {
            State::Closed => {}
            State::Tunnel => self
                .outputs
                .push_back(Output::ToUpstream(Bytes::copy_from_slice(data))),
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
            State::Head { .. } => self.close(),
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

    /// The upstream connection asked for by [`Output::ConnectUpstream`] is ready;
    /// `reused` when it came from the idle pool.
    pub fn handle_upstream_connected(&mut self, reused: bool, now: Instant) {
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        if !matches!(ex.upstream, Upstream::Connecting { .. }) {
            return;
        }
        ex.upstream = Upstream::Connected { reused };
        ex.sent_upstream_at = Some(now);
        let timeout = response_timeout(&self.config, ex.pool);
        ex.timers.upstream.stop(TimerKind::UpstreamConnect);
        ex.timers
            .upstream
            .set(TimerKind::UpstreamResponse, now + timeout);
        self.outputs
            .push_back(Output::ToUpstream(std::mem::take(&mut ex.upstream_head)));
        if !ex.request_done() {
            if ex.head.expect_continue && !ex.sent_continue && ex.head.version == Version::Http11 {
                ex.sent_continue = true;
                self.outputs
                    .push_back(Output::ToClient(Bytes::from_static(answer::CONTINUE)));
            }
            ex.timers.body.set(
                TimerKind::ClientBody,
                now + self.config.timeouts.client_body,
            );
        }
        self.progress(now);
    }

    /// Connecting to the upstream failed (refused, unreachable, name not resolved).
    pub fn handle_upstream_failed(&mut self, now: Instant) {
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        if !matches!(ex.upstream, Upstream::Connecting { .. }) {
            return;
        }
        ex.upstream = Upstream::Released;
        ex.timers.upstream.stop(TimerKind::UpstreamConnect);
        self.fail(now, Failure::UpstreamUnreachable);
    }

    /// Bytes read from the upstream.
    pub fn handle_upstream_data(&mut self, data: &[u8], now: Instant) {
        match &mut self.state {
            State::Tunnel => self
                .outputs
                .push_back(Output::ToClient(Bytes::copy_from_slice(data))),
            State::Exchange(ex) if matches!(ex.upstream, Upstream::Connected { .. }) => {
                ex.urx.extend_from_slice(data);
                let timeout = response_timeout(&self.config, ex.pool);
                ex.timers
                    .upstream
                    .set(TimerKind::UpstreamResponse, now + timeout);
                self.progress_response(now);
            }
            _ => {}
        }
    }

    /// The upstream closed (or a read or write on it failed).
    pub fn handle_upstream_eof(&mut self, now: Instant) {
        let State::Exchange(ex) = &mut self.state else {
            if matches!(self.state, State::Tunnel) {
                self.outputs
                    .push_back(Output::ReleaseUpstream { reusable: false });
                self.close();
            }
            return;
        };
        if !matches!(ex.upstream, Upstream::Connected { .. }) {
            return;
        }
        ex.upstream_spoiled = true;
        let exchange = self.exchanges;
        // Whatever arrived before the close still counts.
        self.progress_response(now);
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        if self.exchanges != exchange {
            return;
        }
        match &ex.response {
            ResponseState::Body(ResponseBodyState::UntilClose) => {
                ex.response = ResponseState::Done;
                self.try_finish(now);
            }
            ResponseState::AwaitingHead { .. }
                if ex.retryable
                    && !ex.retried
                    && ex.urx.is_empty()
                    && ex.upstream == (Upstream::Connected { reused: true }) =>
            {
                // A pooled connection the upstream had already closed: the request never
                // got there. Safe to send once more on a fresh connection (idempotent, no body).
                ex.retried = true;
                // The head went out with the first attempt: written again, the same.
                ex.upstream_head = rewrite::upstream_request(
                    &mut scratch(&mut self.scratch).out,
                    &ex.head,
                    &ex.identity,
                    forwarded::IpText::new(self.peer).as_bytes(),
                    self.config.forwarding.request_id_header.as_str(),
                    &self.config.server_name,
                );
                ex.upstream = Upstream::Connecting { fresh: true };
                ex.upstream_spoiled = false;
                ex.sent_upstream_at = None;
                let (pool, backend) = (ex.pool, ex.backend);
                ex.timers.upstream.stop(TimerKind::UpstreamResponse);
                ex.timers.upstream.set(
                    TimerKind::UpstreamConnect,
                    now + self.config.timeouts.upstream_connect,
                );
                self.outputs
                    .push_back(Output::ReleaseUpstream { reusable: false });
                self.outputs.push_back(Output::ConnectUpstream {
                    pool,
                    backend,
                    fresh: true,
                });
            }
            ResponseState::Done => {}
            _ => self.fail(now, Failure::UpstreamBroken(UpstreamFault::ClosedEarly)),
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
                TimerKind::ClientBody => self.fail(now, Failure::ClientBodyTimeout),
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
            State::Exchange(ex) => ex.close_after = true,
            _ => {}
        }
        self.progress(now);
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
        if self.scratch.is_some() || matches!(self.state, State::Closed) {
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
            State::Tunnel => true,
            State::Head { .. } => true,
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
            (TimerKind::ClientHeader | TimerKind::ClientIdle, _) => self.client_timer.stop(kind),
            (TimerKind::ClientBody, State::Exchange(ex)) => ex.timers.body.stop(kind),
            (TimerKind::UpstreamConnect | TimerKind::UpstreamResponse, State::Exchange(ex)) => {
                ex.timers.upstream.stop(kind)
            }
            // Without an exchange, its timers are gone already.
            _ => {}
        }
    }

    fn close(&mut self) {
        if !matches!(self.state, State::Closed) {
            self.state = State::Closed;
            self.client_timer.clear();
            self.rx = BytesMut::new();
            self.scratch = None;
            self.outputs.push_back(Output::CloseClient);
        }
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

    /// Moves the connection forward as far as the buffered client bytes allow.
    fn progress(&mut self, now: Instant) {
        loop {
            match &mut self.state {
                State::Closed => return,
                State::Tunnel => {
                    if !self.rx.is_empty() {
                        let bytes = self.rx.split().freeze();
                        self.outputs.push_back(Output::ToUpstream(bytes));
                    }
                    return;
                }
                State::Head { .. } => {
                    if self.rx.is_empty() {
                        if self.client_eof || self.shutting_down {
                            self.close();
                        }
                        return;
                    }
                    if !self.read_head(now) {
                        return;
                    }
                }
                State::Exchange(_) => {
                    self.pump_request_body(now);
                    return;
                }
            }
        }
    }

    /// Tries to read a request head; `true` if the state changed.
    fn read_head(&mut self, now: Instant) -> bool {
        let State::Head {
            since,
            scanned,
            receiving,
        } = &mut self.state
        else {
            return false;
        };
        if !*receiving {
            // The first byte of a new request: the header timeout starts now.
            *receiving = true;
            *since = now;
        }
        let started = *since;
        let first_look = *scanned == ScanState::default();
        let limits = &self.config.limits;
        let scan_limits = ScanLimits {
            max_first_line: limits.max_request_line_bytes,
            max_head: limits.max_head_bytes,
            max_lines: limits.max_headers + 1,
        };
        let max_headers = limits.max_headers;
        if first_look {
            if let Some(head) = self.parse_whole_head(scan_limits, max_headers) {
                self.start_exchange(head, started, now);
                return true;
            }
        }
        let State::Head { scanned, .. } = &mut self.state else {
            return false;
        };
        let scan = scan_head(&self.rx, scanned, scan_limits);
        match scan {
            Ok(HeadScan::Partial) => {
                self.arm_head_timer();
                false
            }
            Ok(HeadScan::Complete { start, end }) => {
                let head = self.rx.split_to(end).freeze().slice(start..);
                let scratch = scratch(&mut self.scratch);
                let headers = std::mem::take(&mut scratch.request_headers);
                match request::parse_head_into(head.clone(), max_headers, headers) {
                    Ok(parsed) => self.start_exchange(parsed, started, now),
                    Err(reject) => self.reject(reject, Some(&head), started, now),
                }
                true
            }
            Err(reject) => {
                self.reject(reject, None, started, now);
                true
            }
        }
    }

    /// The common case, in one parse: a whole head at the start of `rx` that httparse
    /// accepts and whose lines `scan_head` would accept as they are. `None`: leave it to
    /// `scan_head` and `parse_head` (an incomplete or refused head), as if not tried.
    fn parse_whole_head(&mut self, limits: ScanLimits, max_headers: usize) -> Option<RequestHead> {
        let start = head_start(&self.rx)?;
        let buf = &self.rx[start..];
        let scratch = scratch(&mut self.scratch);
        let (mut head, len) = request::parse_prefix(buf, max_headers, &mut scratch.request_headers)
            .ok()
            .flatten()?;
        if !strict_lines(buf, len, head.raw_headers(), limits) {
            scratch.request_headers = head.take_header_storage();
            return None;
        }
        let raw = self.rx.split_to(start + len).freeze();
        head.raw = if start == 0 { raw } else { raw.slice(start..) };
        Some(head)
    }

    /// Answers a request that cannot be passed on, and closes: after a framing error
    /// nothing that follows on this connection can be trusted.
    fn reject(&mut self, reject: Reject, head: Option<&Bytes>, started: Instant, now: Instant) {
        let (method, target) = head
            .and_then(|h| {
                let mut parts = h.splitn(3, |&b| b == b' ');
                Some((h.slice_ref(parts.next()?), h.slice_ref(parts.next()?)))
            })
            .unwrap_or_default();
        let path_end = target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(target.len());
        let status = reject.status();
        let bytes = answer::error_for_path(
            &target[..path_end],
            status,
            answer::errcode_for(status),
            reject.reason(),
            AnswerCtx {
                close: true,
                // The method may be all that is readable of a refused head (a 414, say): a
                // HEAD still gets no body.
                head_only: &method[..] == b"HEAD"
                    || (head.is_none() && first_token(&self.rx) == b"HEAD"),
                request_id: None,
            },
        );
        let bytes_out = bytes.len() as u64;
        self.outputs.push_back(Output::ToClient(bytes));
        let stats = ExchangeStats::new(self.listener(), None, status, None);
        self.push_log(stats, |c| AccessRecord {
            listener: c.listener(),
            client: c.peer,
            method,
            target,
            version: "HTTP/1.1",
            status,
            body_bytes_in: 0,
            bytes_out,
            duration: now.saturating_duration_since(started),
            upstream_duration: None,
            pool: None,
            request_id: Bytes::new(),
            user_agent: Bytes::new(),
            referer: Bytes::new(),
            started,
        });
        self.close();
    }

    fn start_exchange(&mut self, head: RequestHead, started: Instant, now: Instant) {
        self.client_timer.clear();
        // Borrowed, not cloned, on the forwarding path: an `Arc` clone is two atomic
        // operations per request.
        let config = &*self.config;
        let listener = &config.listeners[self.listener()];
        let identity = identify(config, listener.scheme, self.peer, &head, &mut self.ids);
        let paths = &mut scratch(&mut self.scratch).paths;
        let decision = route::decide_reusing(config, listener, head.path(), identity.client, paths)
            .map(|d| self.apply_virtual_hosts(d, &head));
        let decision = match decision {
            Ok(Decision::Forward(pool)) => {
                self.forward(head, identity, pool, started, now);
                return;
            }
            Ok(d) => d,
            Err(reject) => {
                let raw = head_bytes_for_log(&head);
                self.reject(reject, Some(&raw), started, now);
                return;
            }
        };
        let config = Arc::clone(&self.config);
        let has_body = !matches!(head.body, RequestBody::None | RequestBody::Length(0));
        let close = head.close || self.shutting_down || self.client_eof || has_body;
        let id_header = config.forwarding.request_id_header.as_str();
        let ctx = AnswerCtx {
            close,
            head_only: head.is_head_method(),
            request_id: Some((id_header, &identity.request_id[..])),
        };
        let method = head.method();
        let (bytes, log) = match decision {
            // Handled above.
            Decision::Forward(_) => return,
            Decision::Health => (answer::health(ctx), false),
            Decision::WellKnown(doc) => {
                let bytes = if method == b"OPTIONS" {
                    answer::preflight(ctx)
                } else if method != b"GET" && method != b"HEAD" {
                    answer::matrix_error(405, "M_UNRECOGNIZED", "Method not allowed", ctx)
                } else {
                    let wk = &config.well_known;
                    answer::well_known(
                        match doc {
                            WellKnownDoc::Server => wk.server.as_ref(),
                            WellKnownDoc::Client => wk.client.as_ref(),
                            WellKnownDoc::Support => wk.support.as_ref(),
                            WellKnownDoc::Unknown => None,
                        },
                        ctx,
                    )
                };
                (bytes, true)
            }
            Decision::AdminRefused | Decision::NotFound => {
                let bytes = answer::error_for_path(
                    head.path(),
                    404,
                    "M_UNRECOGNIZED",
                    "Unrecognized request",
                    ctx,
                );
                (bytes, true)
            }
            Decision::Misdirected => {
                let bytes = answer::error_for_path(
                    head.path(),
                    421,
                    "M_UNRECOGNIZED",
                    "This server does not serve that host",
                    ctx,
                );
                (bytes, true)
            }
            Decision::AcmeChallenge => {
                let token = head
                    .path()
                    .get(route::ACME_CHALLENGE_PREFIX.len() + 1..)
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .unwrap_or("");
                let answer = config
                    .acme
                    .as_ref()
                    .filter(|_| !token.is_empty())
                    .and_then(|acme| acme.http01.key_authorization(token));
                let bytes = match answer {
                    Some(key_authorization) => answer::render(
                        200,
                        Some("application/octet-stream"),
                        false,
                        key_authorization.as_bytes(),
                        ctx,
                    ),
                    None => answer::text_error(404, "No such ACME challenge", ctx),
                };
                (bytes, true)
            }
            Decision::RedirectHttps => (https_redirect(&config, &head, ctx), true),
        };
        let status = status_of(&bytes);
        let bytes_out = bytes.len() as u64;
        self.outputs.push_back(Output::ToClient(bytes));
        if log {
            let stats = ExchangeStats::new(self.listener(), None, status, None);
            self.push_log(stats, |c| {
                c.record(
                    &head, &identity, None, status, 0, bytes_out, started, now, None,
                )
            });
        }
        let mut head = head;
        scratch(&mut self.scratch).request_headers = head.take_header_storage();
        if close {
            self.close();
        } else {
            self.next_request(now);
        }
    }

    /// With virtual hosts configured, a forwarded request for another host goes to the
    /// fallback pool, or is misdirected.
    fn apply_virtual_hosts(&self, decision: Decision, head: &RequestHead) -> Decision {
        let vhosts = &self.config.virtual_hosts;
        if vhosts.names.is_empty() || !matches!(decision, Decision::Forward(_)) {
            return decision;
        }
        let host = head.host().map(host_without_port).unwrap_or(b"");
        if vhosts
            .names
            .iter()
            .any(|n| crate::http1::tokens::eq_ignore_case(host, n.as_bytes()))
        {
            return decision;
        }
        match vhosts.fallback {
            Some(pool) => Decision::Forward(pool),
            None => Decision::Misdirected,
        }
    }

    fn forward(
        &mut self,
        head: RequestHead,
        identity: ClientIdentity,
        pool: PoolId,
        started: Instant,
        now: Instant,
    ) {
        let body = match head.body {
            RequestBody::None | RequestBody::Length(0) => RequestBodyState::Done,
            RequestBody::Length(n) => {
                if n > self.config.limits.max_body_bytes {
                    let config = Arc::clone(&self.config);
                    // Refused before a byte goes upstream; the body is never read, so the
                    // connection cannot carry another request.
                    let ctx = AnswerCtx {
                        close: true,
                        head_only: head.is_head_method(),
                        request_id: Some((
                            config.forwarding.request_id_header.as_str(),
                            &identity.request_id[..],
                        )),
                    };
                    let bytes = answer::matrix_error(
                        413,
                        "M_TOO_LARGE",
                        Failure::BodyTooLarge.message(),
                        ctx,
                    );
                    let out = bytes.len() as u64;
                    self.outputs.push_back(Output::ToClient(bytes));
                    let stats = ExchangeStats::new(self.listener(), Some(pool), 413, None);
                    self.push_log(stats, |c| {
                        c.record(
                            &head,
                            &identity,
                            Some(pool),
                            413,
                            0,
                            out,
                            started,
                            now,
                            None,
                        )
                    });
                    self.close();
                    return;
                }
                RequestBodyState::Length { remaining: n }
            }
            RequestBody::Chunked => RequestBodyState::Chunked {
                decoder: ChunkedDecoder::new(),
                total: 0,
            },
        };
        let upstream_head = rewrite::upstream_request(
            &mut scratch(&mut self.scratch).out,
            &head,
            &identity,
            forwarded::IpText::new(self.peer).as_bytes(),
            self.config.forwarding.request_id_header.as_str(),
            &self.config.server_name,
        );
        let retryable = head.is_idempotent() && matches!(body, RequestBodyState::Done);
        let close_after = head.close || self.shutting_down || self.client_eof;
        let (pool, backend) = self.choose_backend(&head, identity.client, pool);
        self.config.pools[pool].balancer.exchange_started(backend);
        self.exchanges = self.exchanges.wrapping_add(1);
        let mut timers = ExchangeTimers::default();
        timers.upstream.set(
            TimerKind::UpstreamConnect,
            now + self.config.timeouts.upstream_connect,
        );
        // Built where it lives (the last exchange's box, when kept), not on the stack and
        // then copied: the exchange is a few hundred bytes.
        let exchange = |urx| Exchange {
            started,
            head,
            identity,
            pool,
            backend,
            upstream_head,
            body,
            body_bytes_in: 0,
            sent_continue: false,
            retryable,
            retried: false,
            upstream: Upstream::Connecting { fresh: false },
            urx,
            response: ResponseState::AwaitingHead {
                scanned: ScanState::default(),
            },
            status: 0,
            bytes_out: 0,
            sent_upstream_at: None,
            upstream_duration: None,
            close_after,
            upstream_spoiled: false,
            timers,
        };
        let exchange = match scratch(&mut self.scratch).exchange.take() {
            Some(mut reused) => {
                let urx = std::mem::take(&mut reused.urx);
                *reused = exchange(urx);
                reused
            }
            None => Box::new(exchange(BytesMut::new())),
        };
        self.state = State::Exchange(exchange);
        self.outputs.push_back(Output::ConnectUpstream {
            pool,
            backend,
            fresh: false,
        });
    }

    /// The pool and backend for a request routed to `pool`: with Synapse workers
    /// configured, requests for the main process go to the worker pool that claims them;
    /// the pool's policy picks the backend; a pool with no healthy backend falls back to
    /// the main process.
    fn choose_backend(&self, head: &RequestHead, client: IpAddr, pool: PoolId) -> (PoolId, usize) {
        let config = &self.config;
        // The `Authorization` lookup is only for hashing policies and worker routing.
        let parts = if config.workers.is_some()
            || config.pools[pool].balancer.policy().key_kind().is_some()
        {
            RequestParts::from_head(head, client)
        } else {
            RequestParts {
                method: head.method(),
                target: head.target(),
                authorization: None,
                client,
            }
        };
        let mut chosen = pool;
        let mut sticky = None;
        if let Some(workers) = config.workers.as_ref().filter(|w| w.main == pool) {
            let matched = workers.router.route(head.method(), head.target());
            if let Some(p) = config.pool_for_role(matched.role) {
                chosen = p;
                sticky = matched.sticky;
            }
        }
        if let Some(backend) = config.pools[chosen].balancer.pick(sticky, &parts) {
            return (chosen, backend);
        }
        let fallback = config.workers.as_ref().map_or(chosen, |w| w.main);
        let balancer = &config.pools[fallback].balancer;
        // Nothing healthy anywhere: still try; a 502 says more than a refusal.
        (fallback, balancer.pick(None, &parts).unwrap_or(0))
    }

    /// Passes buffered request-body bytes upstream, re-framing chunked bodies.
    fn pump_request_body(&mut self, now: Instant) {
        let max_body = self.config.limits.max_body_bytes;
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        if !matches!(ex.upstream, Upstream::Connected { .. }) || self.rx.is_empty() {
            return;
        }
        let before = ex.body_bytes_in;
        let mut failure = None;
        match &mut ex.body {
            RequestBodyState::Done => return,
            RequestBodyState::Length { remaining } => {
                let take = (*remaining).min(self.rx.len() as u64) as usize;
                let bytes = self.rx.split_to(take).freeze();
                *remaining -= take as u64;
                ex.body_bytes_in += take as u64;
                self.outputs.push_back(Output::ToUpstream(bytes));
                if *remaining == 0 {
                    ex.body = RequestBodyState::Done;
                }
            }
            RequestBodyState::Chunked { decoder, total } => {
                while !self.rx.is_empty() && !decoder.is_done() {
                    let step = match decoder.step(&self.rx) {
                        Ok(s) => s,
                        Err(_) => {
                            failure = Some(Failure::BadRequestBody);
                            break;
                        }
                    };
                    let used = self.rx.split_to(step.consumed).freeze();
                    if let Some((a, b)) = step.data {
                        *total += (b - a) as u64;
                        ex.body_bytes_in += (b - a) as u64;
                        if *total > max_body {
                            failure = Some(Failure::BodyTooLarge);
                            break;
                        }
                        self.outputs
                            .push_back(Output::ToUpstream(chunk_header(b - a)));
                        self.outputs.push_back(Output::ToUpstream(used.slice(a..b)));
                        self.outputs
                            .push_back(Output::ToUpstream(Bytes::from_static(CHUNK_END)));
                    }
                }
                if failure.is_none() && decoder.is_done() {
                    self.outputs
                        .push_back(Output::ToUpstream(Bytes::from_static(LAST_CHUNK)));
                    ex.body = RequestBodyState::Done;
                }
            }
        }
        if let Some(f) = failure {
            ex.upstream_spoiled = true;
            ex.close_after = true;
            self.fail(now, f);
            return;
        }
        if ex.request_done() {
            ex.timers.body.stop(TimerKind::ClientBody);
            self.try_finish(now);
        } else if ex.body_bytes_in > before {
            ex.timers.body.set(
                TimerKind::ClientBody,
                now + self.config.timeouts.client_body,
            );
        }
    }

    /// Reads the response from `urx` as far as it goes.
    fn progress_response(&mut self, now: Instant) {
        loop {
            let State::Exchange(ex) = &mut self.state else {
                return;
            };
            match &mut ex.response {
                ResponseState::Done => {
                    if !ex.urx.is_empty() {
                        // Bytes after a complete response: this upstream is not to be reused.
                        ex.upstream_spoiled = true;
                        ex.urx.clear();
                    }
                    self.try_finish(now);
                    return;
                }
                ResponseState::AwaitingHead { scanned } => {
                    let limit = self.config.limits.max_response_head_bytes;
                    let limits = ScanLimits {
                        max_first_line: limit,
                        max_head: limit,
                        max_lines: MAX_RESPONSE_HEADERS,
                    };
                    let head_request = ex.head.is_head_method();
                    if *scanned == ScanState::default() {
                        // The common case in one parse, as for requests (`parse_whole_head`).
                        let headers = &mut scratch(&mut self.scratch).response_headers;
                        if let Some(mut resp) =
                            parse_whole_response(&mut ex.urx, head_request, limits, headers)
                        {
                            let go_on = self.start_response(&resp, now);
                            scratch(&mut self.scratch).response_headers =
                                resp.take_header_storage();
                            if !go_on {
                                return;
                            }
                            continue;
                        }
                    }
                    let scan = scan_head(&ex.urx, scanned, limits);
                    let (start, end) = match scan {
                        Ok(HeadScan::Partial) => return,
                        Ok(HeadScan::Complete { start, end }) => (start, end),
                        Err(rule) => {
                            ex.upstream_spoiled = true;
                            self.fail(now, Failure::UpstreamBroken(UpstreamFault::Refused(rule)));
                            return;
                        }
                    };
                    let raw = ex.urx.split_to(end).freeze().slice(start..);
                    let headers = std::mem::take(&mut scratch(&mut self.scratch).response_headers);
                    match response::parse_head_into(raw, head_request, headers) {
                        Ok(mut resp) => {
                            let go_on = self.start_response(&resp, now);
                            scratch(&mut self.scratch).response_headers =
                                resp.take_header_storage();
                            if !go_on {
                                return;
                            }
                        }
                        Err(rule) => {
                            let State::Exchange(ex) = &mut self.state else {
                                return;
                            };
                            ex.upstream_spoiled = true;
                            self.fail(now, Failure::UpstreamBroken(UpstreamFault::Refused(rule)));
                            return;
                        }
                    }
                }
                ResponseState::Body(body) => {
                    if ex.urx.is_empty() {
                        return;
                    }
                    let mut broken = false;
                    match body {
                        ResponseBodyState::Length { remaining } => {
                            let take = (*remaining).min(ex.urx.len() as u64) as usize;
                            let bytes = ex.urx.split_to(take).freeze();
                            *remaining -= take as u64;
                            ex.bytes_out += take as u64;
                            self.outputs.push_back(Output::ToClient(bytes));
                            if *remaining == 0 {
                                ex.response = ResponseState::Done;
                            }
                        }
                        ResponseBodyState::UntilClose => {
                            let bytes = ex.urx.split().freeze();
                            ex.bytes_out += bytes.len() as u64;
                            self.outputs.push_back(Output::ToClient(bytes));
                        }
                        ResponseBodyState::Chunked { decoder, reframe } => {
                            while !ex.urx.is_empty() && !decoder.is_done() {
                                let Ok(step) = decoder.step(&ex.urx) else {
                                    broken = true;
                                    break;
                                };
                                let used = ex.urx.split_to(step.consumed).freeze();
                                if let Some((a, b)) = step.data {
                                    if *reframe {
                                        self.outputs
                                            .push_back(Output::ToClient(chunk_header(b - a)));
                                    }
                                    self.outputs.push_back(Output::ToClient(used.slice(a..b)));
                                    if *reframe {
                                        self.outputs.push_back(Output::ToClient(
                                            Bytes::from_static(CHUNK_END),
                                        ));
                                    }
                                    ex.bytes_out += (b - a) as u64;
                                }
                            }
                            if !broken && decoder.is_done() {
                                if *reframe {
                                    self.outputs.push_back(Output::ToClient(Bytes::from_static(
                                        LAST_CHUNK,
                                    )));
                                    ex.bytes_out += LAST_CHUNK.len() as u64;
                                }
                                ex.response = ResponseState::Done;
                            }
                        }
                    }
                    if broken {
                        ex.upstream_spoiled = true;
                        let fault = UpstreamFault::Refused(Reject::BadChunk);
                        self.fail(now, Failure::UpstreamBroken(fault));
                        return;
                    }
                    if !matches!(ex.response, ResponseState::Done) {
                        return;
                    }
                }
            }
        }
    }

    /// Handles a parsed response head. `false` when processing should stop.
    fn start_response(&mut self, resp: &ResponseHead, now: Instant) -> bool {
        let id_header = self.config.forwarding.request_id_header.as_str();
        let shutting_down = self.shutting_down;
        let State::Exchange(ex) = &mut self.state else {
            return false;
        };
        if ex.upstream_duration.is_none() {
            ex.upstream_duration = ex
                .sent_upstream_at
                .map(|t| now.saturating_duration_since(t));
        }
        let client_version = ex.head.version;
        if resp.status == 101 {
            if !ex.head.upgrade {
                ex.upstream_spoiled = true;
                self.fail(now, Failure::UpstreamBroken(UpstreamFault::UnaskedUpgrade));
                return false;
            }
            let head = rewrite::client_response(
                &mut scratch(&mut self.scratch).out,
                resp,
                ClientFraming::AsIs,
                client_version,
                false,
                Some((id_header, &ex.identity.request_id)),
                true,
            );
            ex.status = 101;
            ex.bytes_out += head.len() as u64;
            self.outputs.push_back(Output::ToClient(head));
            let rest = ex.urx.split().freeze();
            if !rest.is_empty() {
                self.outputs.push_back(Output::ToClient(rest));
            }
            let stats = ExchangeStats::new(
                self.listener as ListenerId,
                Some(ex.pool),
                101,
                ex.upstream_duration,
            );
            self.push_log(stats, |c| c.exchange_record(now));
            // The exchange's timers end with it; a tunnel has none.
            self.client_timer.clear();
            self.state = State::Tunnel;
            self.progress(now);
            return false;
        }
        if (100..200).contains(&resp.status) {
            // Interim responses: our own 100 Continue already went out; others (103)
            // are passed on to HTTP/1.1 clients.
            if resp.status != 100 && client_version == Version::Http11 {
                let head = rewrite::client_response(
                    &mut scratch(&mut self.scratch).out,
                    resp,
                    ClientFraming::AsIs,
                    client_version,
                    false,
                    None,
                    false,
                );
                self.outputs.push_back(Output::ToClient(head));
            }
            ex.response = ResponseState::AwaitingHead {
                scanned: ScanState::default(),
            };
            return true;
        }
        let (framing, body) = match resp.body {
            ResponseBody::None => (ClientFraming::AsIs, None),
            ResponseBody::Length(n) => (
                ClientFraming::AsIs,
                Some(ResponseBodyState::Length { remaining: n }),
            ),
            ResponseBody::Chunked if client_version == Version::Http11 => (
                ClientFraming::Chunked,
                Some(ResponseBodyState::Chunked {
                    decoder: ChunkedDecoder::new(),
                    reframe: true,
                }),
            ),
            ResponseBody::Chunked => (
                ClientFraming::Close,
                Some(ResponseBodyState::Chunked {
                    decoder: ChunkedDecoder::new(),
                    reframe: false,
                }),
            ),
            ResponseBody::UntilClose => (ClientFraming::Close, Some(ResponseBodyState::UntilClose)),
        };
        if resp.close {
            ex.upstream_spoiled = true;
        }
        if framing == ClientFraming::Close || !ex.request_done() || shutting_down {
            // A response before the whole request body: the rest of the body would have
            // to be read and thrown away to find the next request; closing is simpler.
            ex.close_after = true;
        }
        let head = rewrite::client_response(
            &mut scratch(&mut self.scratch).out,
            resp,
            framing,
            client_version,
            ex.close_after,
            Some((id_header, &ex.identity.request_id)),
            false,
        );
        ex.status = resp.status;
        ex.bytes_out += head.len() as u64;
        self.outputs.push_back(Output::ToClient(head));
        ex.response = match body {
            None | Some(ResponseBodyState::Length { remaining: 0 }) => ResponseState::Done,
            Some(b) => ResponseState::Body(b),
        };
        true
    }

    /// Ends the exchange when both the request and the response are complete.
    fn try_finish(&mut self, now: Instant) {
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        if !matches!(ex.response, ResponseState::Done) {
            return;
        }
        if !ex.request_done() {
            // The upstream answered without reading the whole body: it cannot be reused,
            // and neither can the client connection.
            ex.upstream_spoiled = true;
            ex.close_after = true;
        }
        let status = ex.status;
        self.end_exchange(now, status);
    }

    /// Ends the exchange in flight with what has been sent, releasing the upstream.
    fn end_exchange(&mut self, now: Instant, status: u16) {
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        ex.status = status;
        if matches!(
            ex.upstream,
            Upstream::Connecting { .. } | Upstream::Connected { .. }
        ) {
            let reusable = matches!(ex.upstream, Upstream::Connected { .. })
                && !ex.upstream_spoiled
                && ex.request_done()
                && matches!(ex.response, ResponseState::Done)
                && ex.urx.is_empty();
            ex.upstream = Upstream::Released;
            self.outputs.push_back(Output::ReleaseUpstream { reusable });
        }
        self.config.pools[ex.pool]
            .balancer
            .exchange_finished(ex.backend);
        let close = ex.close_after;
        let stats = ExchangeStats::new(
            self.listener as ListenerId,
            Some(ex.pool),
            ex.status,
            ex.upstream_duration,
        );
        self.push_log(stats, |c| c.exchange_record(now));
        // The exchange's timers end with it (the state changes below).
        if close {
            self.close();
        } else {
            self.next_request(now);
        }
    }

    /// Sends an error for the exchange in flight if nothing was sent yet, else cuts the
    /// client connection (a truncated response must never look complete).
    fn fail(&mut self, now: Instant, failure: Failure) {
        let id_header = self.config.forwarding.request_id_header.as_str();
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        ex.upstream_spoiled = true;
        if let Failure::UpstreamBroken(fault) = failure {
            self.outputs.push_back(Output::UpstreamFault {
                pool: ex.pool,
                backend: ex.backend,
                fault,
            });
        }
        if ex.response_started() {
            ex.close_after = true;
            let status = ex.status;
            self.end_exchange(now, status);
            return;
        }
        if !ex.request_done() {
            ex.close_after = true;
        }
        let status = failure.status();
        let ctx = AnswerCtx {
            close: ex.close_after,
            head_only: ex.head.is_head_method(),
            request_id: Some((id_header, &ex.identity.request_id)),
        };
        let bytes = answer::error_for_path(
            ex.head.path(),
            status,
            answer::errcode_for(status),
            failure.message(),
            ctx,
        );
        ex.bytes_out += bytes.len() as u64;
        ex.response = ResponseState::Done;
        self.outputs.push_back(Output::ToClient(bytes));
        self.end_exchange(now, status);
    }

    /// Back to reading heads, starting with any pipelined bytes.
    fn next_request(&mut self, now: Instant) {
        let previous = std::mem::replace(
            &mut self.state,
            State::Head {
                since: now,
                scanned: ScanState::default(),
                receiving: false,
            },
        );
        if let State::Exchange(ex) = previous {
            self.recycle(ex);
        }
        // Buffers stay for a next request soon; the idle timer releases them otherwise.
        self.arm_head_timer();
        self.progress(now);
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

    fn exchange_record(&self, now: Instant) -> AccessRecord {
        let State::Exchange(ex) = &self.state else {
            unreachable!("exchange_record outside an exchange");
        };
        self.record(
            &ex.head,
            &ex.identity,
            Some(ex.pool),
            ex.status,
            ex.body_bytes_in,
            ex.bytes_out,
            ex.started,
            now,
            ex.upstream_duration,
        )
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
            version: head.version.as_str(),
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

/// A whole response head at the start of `urx` that httparse accepts and whose lines
/// `scan_head` would accept as they are, split off `urx`. `None`: leave it to `scan_head`
/// and `parse_head` (incomplete or refused), as if not tried.
fn parse_whole_response(
    urx: &mut BytesMut,
    head_request: bool,
    limits: ScanLimits,
    headers: &mut Vec<RawHeader>,
) -> Option<ResponseHead> {
    let start = head_start(urx)?;
    let buf = &urx[start..];
    let (mut head, len) = response::parse_prefix(buf, head_request, headers)
        .ok()
        .flatten()?;
    if !strict_lines(buf, len, head.raw_headers(), limits) {
        *headers = head.take_header_storage();
        return None;
    }
    let raw = urx.split_to(start + len).freeze();
    head.raw = if start == 0 { raw } else { raw.slice(start..) };
    Some(head)
}

/// How long `pool`'s upstream may take to answer (its own setting, else the default).
fn response_timeout(config: &Config, pool: PoolId) -> Duration {
    config.pools[pool]
        .response_timeout
        .unwrap_or(config.timeouts.upstream_response)
}

/// The first space-delimited token after any leading empty lines (a method, if readable).
fn first_token(buf: &[u8]) -> &[u8] {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    &rest[..end]
}

/// The status code of a response mxgate rendered itself.
fn status_of(rendered: &[u8]) -> u16 {
    rendered
        .get(9..12)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// 308 to the same target on HTTPS: the request's host (or the first certified name when
/// it has none, or an unusable one), and the TLS listener's port unless it is 443.
fn https_redirect(config: &Config, head: &RequestHead, ctx: answer::AnswerCtx<'_>) -> Bytes {
    let usable = |h: &&[u8]| {
        !h.is_empty()
            && h.iter().all(|&b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
            })
    };
    let acme = config.acme.as_ref();
    let host = head
        .host()
        .map(host_without_port)
        .filter(usable)
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .or_else(|| acme.and_then(|a| a.names.first().cloned()))
        .unwrap_or_else(|| config.server_name.clone());
    let port = acme.map_or(443, |a| a.https_port);
    let target = head.target();
    let target = if target.starts_with(b"/") {
        target
    } else {
        head.path()
    };
    let mut location = format!("https://{host}");
    if port != 443 {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(&String::from_utf8_lossy(target));
    answer::redirect(308, &location, ctx)
}

fn host_without_port(host: &[u8]) -> &[u8] {
    if host.starts_with(b"[") {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

/// The request line again, for logging a request refused after parsing.
fn head_bytes_for_log(head: &RequestHead) -> Bytes {
    let mut v = Vec::with_capacity(head.method().len() + head.target().len() + 2);
    v.extend_from_slice(head.method());
    v.push(b' ');
    v.extend_from_slice(head.target());
    v.push(b' ');
    Bytes::from(v)
}
