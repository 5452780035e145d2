//! One HTTP/2 client connection as the proxy runs it: the HTTP/2 engine
//! ([`super::Connection`]) and, for each stream, the exchange the HTTP/1.1 path runs.
//!
//! Each stream's request is written once as the HTTP/1.1 head (and body) the exchange
//! engine ([`crate::Connection`], in its per-stream mode) reads, so every rule of an
//! HTTP/1.1 exchange applies to it unchanged: routing on the raw `:path`, refusals, the
//! admin allowlist, `.well-known`, `/health`, `X-Forwarded-*`, request ids, the 413 before
//! the upstream, timeouts, worker routing. The exchange's answer comes back unframed and is
//! sent as HEADERS and DATA frames. Many exchanges run at once, each with its own upstream
//! connection; outputs about an upstream name their stream.

use core::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::connection::{Connection as H2, Event};
use super::frame::ErrorCode;
use super::request::Request;
use crate::config::{Config, ListenerId};
use crate::connection::{Connection as Exchange, ExchangeBuffers};
use crate::http1::chunked::{chunk_header, CHUNK_END, LAST_CHUNK};
use crate::output::Output;

/// Response body bytes a stream holds while the client's window is shut, before the
/// upstream is no longer read for it.
const MAX_PENDING_RESPONSE: usize = 64 * 1024;

/// Exchange buffers kept for the next streams.
const STOCK: usize = 16;

/// Response headers a head may carry (as the HTTP/1.1 path's response limit).
const MAX_HEADERS: usize = crate::http1::response::MAX_RESPONSE_HEADERS;

/// What the runtime must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutput {
    /// Write these bytes to the client.
    ToClient(Bytes),
    /// What the exchange on `stream` asks for, as [`crate::Connection`] would: an upstream
    /// to connect (`ConnectUpstream`), bytes for it (`ToUpstream`), its release
    /// (`ReleaseUpstream`), a log record (`AccessLog`, `ExchangeDone`, `UpstreamFault`).
    /// Never `ToClient` or `CloseClient`.
    Exchange { stream: u32, output: Output },
    /// Everything is written: close the client connection.
    CloseClient,
}

/// An HTTP/2 client connection with its exchanges.
///
/// # Contract
/// Create one when a client connection negotiated `h2` (ALPN, or the preface on a plain
/// listener that allows prior knowledge). Then, as with [`crate::Connection`]:
/// 1. feed one thing that happened: `handle_client_data`, `handle_client_eof`, for the
///    upstream of stream `s`: `handle_upstream_connected(s, reused)`,
///    `handle_upstream_failed(s)`, `handle_upstream_data(s, bytes)`,
///    `handle_upstream_eof(s)`, `handle_upstream_written(s)` (every `ToUpstream` of `s`
///    handed out so far is written), or `handle_timeout`, `begin_shutdown`;
/// 2. drain [`Session::poll_output`] and perform each output in order; bytes for the
///    client are written completely before more client bytes are fed;
/// 3. wait for the client readable (while `wants_client_read`), an upstream of stream `s`
///    readable (while `wants_upstream_read(s)`), an upstream write finishing, or the
///    deadline of `poll_timeout`. Stop at `is_closed`.
///
/// Each stream has at most one upstream connection at a time; a runtime keeps one per
/// stream that asked for it and drops it at its `ReleaseUpstream`. Events for a stream
/// that has gone are ignored. Request body bytes count against the client's windows until
/// the upstream write carrying them is reported done, so a slow upstream makes the client
/// wait instead of making mxgate buffer.
pub struct Session {
    config: Arc<Config>,
    listener: ListenerId,
    peer: IpAddr,
    seed: u64,
    h2: H2,
    streams: Vec<Stream>,
    outputs: std::collections::VecDeque<SessionOutput>,
    stock: Vec<ExchangeBuffers>,
    /// Storage for the HTTP/1.1 heads written for requests.
    head: BytesMut,
    /// Streams answered before their request body ended: what the client still sends is
    /// read and dropped (as an HTTP/1.1 connection lingers), so that clients which treat
    /// RST_STREAM as a failure even after a complete response (curl before 8.1) keep the
    /// answer. Bounded like lingering: `timeouts.linger`, `linger_read` between DATA
    /// frames, `limits.max_linger` bytes; past them the stream is reset (NO_ERROR).
    draining: Vec<Draining>,
    closing: bool,
}

struct Draining {
    id: u32,
    /// The overall end, and the deadline for the next DATA frame.
    until: Instant,
    next: Instant,
    discarded: u64,
}

struct Stream {
    id: u32,
    /// The exchange, until it is over.
    exchange: Option<Exchange>,
    /// Request body bytes not yet fed to the exchange, with how many payload bytes each
    /// carries (chunk framing added around the payload does not count).
    request: std::collections::VecDeque<(Bytes, usize)>,
    /// The request body is chunked for the exchange (no content-length was given).
    chunked: bool,
    /// The client ended its side.
    request_ended: bool,
    /// Payload bytes fed to the exchange while an upstream write was outstanding: given
    /// back to the client's window when the write is done.
    unreleased: usize,
    writes_pending: bool,
    response: Response,
    /// Response body bytes waiting for the client's window.
    pending: std::collections::VecDeque<Bytes>,
    pending_bytes: usize,
    /// The exchange is over: once `pending` is sent, the stream ends.
    finished: bool,
}

enum Response {
    /// Reading the head the exchange wrote (kept here while incomplete).
    Head(BytesMut),
    /// A final head parsed but not yet sent: sent with the first body bytes, or with
    /// END_STREAM when the exchange ends first.
    Parked {
        status: u16,
        head: Bytes,
        fields: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    },
    Body,
}

impl Session {
    /// `peer`, `seed` as for [`crate::Connection::new`].
    pub fn new(
        config: Arc<Config>,
        listener: ListenerId,
        peer: IpAddr,
        seed: u64,
        now: Instant,
    ) -> Self {
        let h2 = H2::new(config.http2.clone(), now);
        let mut session = Session {
            config,
            listener,
            peer,
            seed,
            h2,
            streams: Vec::new(),
            outputs: std::collections::VecDeque::new(),
            stock: Vec::new(),
            head: BytesMut::new(),
            draining: Vec::new(),
            closing: false,
        };
        session.collect(now);
        session
    }

    // ----------------------------------------------------------------------------- inputs

    /// Bytes read from the client.
    pub fn handle_client_data(&mut self, data: &[u8], now: Instant) {
        self.h2.handle_data(data, now);
        self.collect(now);
    }

    /// The client closed its side (or a read or write on it failed): every stream is gone.
    pub fn handle_client_eof(&mut self, now: Instant) {
        self.h2.handle_eof(now);
        self.collect(now);
    }

    /// A deadline passed (extra calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.h2.handle_timeout(now);
        let h2 = &mut self.h2;
        self.draining.retain(|d| {
            let due = now >= d.next;
            if due {
                h2.reset(d.id, ErrorCode::NO_ERROR);
            }
            !due
        });
        for s in &mut self.streams {
            if let Some(ex) = &mut s.exchange {
                ex.handle_timeout(now);
            }
        }
        self.run_all(now);
    }

    /// Drain and reload: GOAWAY (in two steps); streams already open run to their end.
    pub fn begin_shutdown(&mut self, now: Instant) {
        // Draining should not wait for uploads already answered.
        for d in std::mem::take(&mut self.draining) {
            self.h2.reset(d.id, ErrorCode::NO_ERROR);
        }
        self.h2.begin_shutdown(now);
        self.collect(now);
    }

    /// New streams follow `config` (`listener`: this connection's listener in it); streams
    /// in flight finish on theirs. Refused (`false`) for a listener id it does not have.
    pub fn reconfigure(&mut self, config: Arc<Config>, listener: ListenerId) -> bool {
        if listener >= config.listeners.len() {
            return false;
        }
        self.config = config;
        self.listener = listener;
        true
    }

    pub fn handle_upstream_connected(&mut self, stream: u32, reused: bool, now: Instant) {
        self.with_exchange(stream, now, |ex| ex.handle_upstream_connected(reused, now));
    }

    pub fn handle_upstream_failed(&mut self, stream: u32, now: Instant) {
        self.with_exchange(stream, now, |ex| ex.handle_upstream_failed(now));
    }

    pub fn handle_upstream_data(&mut self, stream: u32, data: &[u8], now: Instant) {
        self.with_exchange(stream, now, |ex| ex.handle_upstream_data(data, now));
    }

    pub fn handle_upstream_eof(&mut self, stream: u32, now: Instant) {
        self.with_exchange(stream, now, |ex| ex.handle_upstream_eof(now));
    }

    /// Every `ToUpstream` of `stream` handed out so far is written: the request body
    /// bytes they carried are given back to the client's windows.
    pub fn handle_upstream_written(&mut self, stream: u32, now: Instant) {
        if let Some(i) = self.find(stream) {
            let s = &mut self.streams[i];
            s.writes_pending = false;
            let n = std::mem::take(&mut s.unreleased);
            if n > 0 {
                self.h2.release_capacity(stream, n);
            }
            self.run_stream(i, now);
            self.collect(now);
        }
    }

    // ---------------------------------------------------------------------------- outputs

    pub fn poll_output(&mut self) -> Option<SessionOutput> {
        if self.outputs.is_empty() {
            while let Some(bytes) = self.h2.poll_transmit() {
                self.outputs.push_back(SessionOutput::ToClient(bytes));
            }
            if self.h2.is_closed() && self.streams.is_empty() && !self.closing {
                self.closing = true;
                self.outputs.push_back(SessionOutput::CloseClient);
            }
        }
        self.outputs.pop_front()
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let engine = self.h2.poll_timeout().map(|(at, _)| at);
        self.streams
            .iter()
            .filter_map(|s| s.exchange.as_ref()?.poll_timeout().map(|(at, _)| at))
            .chain(engine)
            .chain(self.draining.iter().map(|d| d.next))
            .min()
    }

    // ---------------------------------------------------------------------------- getters

    pub fn wants_client_read(&self) -> bool {
        self.h2.wants_read()
    }

    /// Whether to read the upstream of `stream` now: its exchange wants it, and the client
    /// is taking what it already has.
    pub fn wants_upstream_read(&self, stream: u32) -> bool {
        self.find(stream).is_some_and(|i| {
            let s = &self.streams[i];
            s.pending_bytes < MAX_PENDING_RESPONSE
                && s.exchange
                    .as_ref()
                    .is_some_and(|ex| ex.wants_upstream_read())
        })
    }

    /// Streams with an exchange or a response still going out.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    pub fn is_idle(&self) -> bool {
        self.streams.is_empty()
    }

    pub fn is_closed(&self) -> bool {
        self.closing && self.outputs.is_empty()
    }

    pub fn listener(&self) -> ListenerId {
        self.listener
    }

    // --------------------------------------------------------------------------- internals

    fn find(&self, stream: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == stream)
    }

    fn with_exchange(&mut self, stream: u32, now: Instant, f: impl FnOnce(&mut Exchange)) {
        let Some(i) = self.find(stream) else {
            return;
        };
        if let Some(ex) = &mut self.streams[i].exchange {
            f(ex);
        }
        self.run_stream(i, now);
        self.collect(now);
    }

    /// Acts on the engine's events and sends what the streams have for the client.
    fn collect(&mut self, now: Instant) {
        while let Some(event) = self.h2.poll_event() {
            match event {
                Event::Request { stream, request } => self.start(stream, request, now),
                Event::Data {
                    stream,
                    data,
                    end_stream,
                } => {
                    let Some(i) = self.find(stream) else {
                        self.h2.release_capacity(stream, data.len());
                        self.discard(stream, data.len(), end_stream, now);
                        continue;
                    };
                    let s = &mut self.streams[i];
                    if s.exchange.is_none() || s.finished {
                        // The answer is out already: nothing wants the body.
                        self.h2.release_capacity(stream, data.len());
                        continue;
                    }
                    let n = data.len();
                    if s.chunked {
                        if n > 0 {
                            s.request.push_back((chunk_header(n), 0));
                            s.request.push_back((data, n));
                            s.request.push_back((Bytes::from_static(CHUNK_END), 0));
                        }
                        if end_stream {
                            s.request.push_back((Bytes::from_static(LAST_CHUNK), 0));
                        }
                    } else if n > 0 {
                        s.request.push_back((data, n));
                    }
                    if end_stream {
                        s.request_ended = true;
                    }
                    self.run_stream(i, now);
                }
                Event::Reset { stream, .. } => {
                    self.draining.retain(|d| d.id != stream);
                    if let Some(i) = self.find(stream) {
                        self.abandon(i, now);
                    }
                }
                Event::WindowOpen { stream } => {
                    if let Some(i) = self.find(stream) {
                        self.flush_response(i, now);
                    }
                }
                Event::PeerGoAway { .. } => {}
                Event::Closed { .. } => {
                    self.draining.clear();
                    while !self.streams.is_empty() {
                        self.abandon(0, now);
                    }
                }
            }
        }
    }

    /// A new stream: its exchange reads the request as an HTTP/1.1 head.
    fn start(&mut self, stream: u32, request: Request, now: Instant) {
        if !request_line_safe(&request) {
            self.h2.reset(stream, ErrorCode::PROTOCOL_ERROR);
            return;
        }
        let chunked = !request.end_stream && request.content_length.is_none();
        write_head(&mut self.head, &request, chunked);
        let head = self.head.split().freeze();
        let seed = self.seed ^ u64::from(stream).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut ex =
            Exchange::for_http2_stream(self.config.clone(), self.listener, self.peer, seed, now);
        if let Some(buffers) = self.stock.pop() {
            if let Some(back) = ex.lend_buffers(buffers) {
                self.stock.push(back);
            }
        }
        self.streams.push(Stream {
            id: stream,
            exchange: Some(ex),
            request: std::collections::VecDeque::from([(head, 0)]),
            chunked,
            request_ended: request.end_stream,
            unreleased: 0,
            writes_pending: false,
            response: Response::Head(BytesMut::new()),
            pending: std::collections::VecDeque::new(),
            pending_bytes: 0,
            finished: false,
        });
        let i = self.streams.len() - 1;
        self.run_stream(i, now);
    }

    fn run_all(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.streams.len() {
            let before = self.streams.len();
            self.run_stream(i, now);
            if self.streams.len() == before {
                i += 1;
            }
        }
        self.collect(now);
    }

    /// Feeds the stream's exchange what it can take and passes on what it produced.
    fn run_stream(&mut self, i: usize, now: Instant) {
        let s = &mut self.streams[i];
        let Some(ex) = &mut s.exchange else {
            return;
        };
        let mut fed = 0;
        while ex.wants_client_read() {
            let Some((bytes, payload)) = s.request.pop_front() else {
                break;
            };
            ex.handle_client_data(&bytes, now);
            fed += payload;
        }
        let stream = s.id;
        let mut wrote = false;
        let mut unreadable = false;
        while let Some(output) = ex.poll_output() {
            match output {
                Output::ToClient(bytes) => {
                    if !read_response(
                        &mut self.h2,
                        stream,
                        &mut s.response,
                        &mut s.pending,
                        &mut s.pending_bytes,
                        bytes,
                    ) {
                        unreadable = true;
                    }
                }
                Output::CloseClient => {}
                Output::ToUpstream(_) => {
                    wrote = true;
                    self.outputs
                        .push_back(SessionOutput::Exchange { stream, output });
                }
                output => self
                    .outputs
                    .push_back(SessionOutput::Exchange { stream, output }),
            }
        }
        if wrote {
            s.writes_pending = true;
        }
        if s.writes_pending {
            s.unreleased += fed;
        } else if fed > 0 {
            self.h2.release_capacity(stream, fed);
        }
        if unreadable {
            self.h2.reset(stream, ErrorCode::INTERNAL_ERROR);
            return self.abandon(i, now);
        }
        let s = &mut self.streams[i];
        let over = s.exchange.as_ref().is_some_and(|ex| !ex.in_exchange());
        if over {
            let cut = s.exchange.as_ref().is_some_and(Exchange::response_cut);
            if let Some(mut ex) = s.exchange.take() {
                if let Some(buffers) = ex.take_buffers() {
                    if self.stock.len() < STOCK {
                        self.stock.push(buffers);
                    }
                }
            }
            let s = &mut self.streams[i];
            let held = std::mem::take(&mut s.unreleased)
                + s.request.drain(..).map(|(_, n)| n).sum::<usize>();
            if held > 0 {
                self.h2.release_capacity(stream, held);
            }
            if cut || !matches!(s.response, Response::Body | Response::Parked { .. }) {
                // A response cut after it began, or none at all: the stream cannot end
                // well.
                self.h2.reset(stream, ErrorCode::INTERNAL_ERROR);
                self.streams.swap_remove(i);
                return;
            }
            s.finished = true;
            if !s.request_ended {
                // The rest of the body will be dropped: window for it goes out before the
                // answer's END_STREAM (see `grant_rest`), bounded like lingering.
                self.h2
                    .grant_rest(stream, self.config.limits.max_linger_bytes);
            }
        }
        self.flush_response(i, now);
    }

    /// Sends what the stream has for the client, as far as the client's windows allow;
    /// ends the stream when its exchange is over and everything is sent.
    fn flush_response(&mut self, i: usize, now: Instant) {
        let s = &mut self.streams[i];
        let stream = s.id;
        if let Response::Parked { .. } = s.response {
            let last = s.finished && s.pending.is_empty();
            let Response::Parked {
                status,
                head,
                fields,
            } = std::mem::replace(&mut s.response, Response::Body)
            else {
                return;
            };
            let sent = self.h2.send_response_head(
                stream,
                status,
                fields
                    .iter()
                    .map(|(n, v)| (&head[n.clone()], &head[v.clone()])),
                last,
            );
            if sent.is_err() {
                return self.abandon(i, now);
            }
            if last {
                return self.end_stream(i, now);
            }
        }
        let s = &mut self.streams[i];
        if !matches!(s.response, Response::Body) {
            return;
        }
        while let Some(bytes) = s.pending.pop_front() {
            let last = s.finished && s.pending.is_empty();
            let len = bytes.len();
            match self.h2.send_data(stream, bytes.clone(), last) {
                Ok(n) if n == len => s.pending_bytes -= n,
                Ok(n) => {
                    s.pending_bytes -= n;
                    s.pending.push_front(bytes.slice(n..));
                    return;
                }
                Err(_) => return self.abandon(i, now),
            }
        }
        if s.finished {
            if s.pending.is_empty() && self.h2.send_capacity(stream).is_some() {
                // Every body byte went out without END_STREAM (the end was learned later).
                let _ = self.h2.send_data(stream, Bytes::new(), true);
            }
            self.end_stream(i, now);
        }
    }

    /// The response is complete. A client still sending its body may go on (its bytes
    /// are dropped, see `draining`) within the lingering bounds.
    fn end_stream(&mut self, i: usize, now: Instant) {
        let s = self.streams.swap_remove(i);
        if s.request_ended {
            return;
        }
        let t = &self.config.timeouts;
        if t.linger.is_zero() || self.closing {
            self.h2.reset(s.id, ErrorCode::NO_ERROR);
            return;
        }
        let until = now + t.linger;
        self.draining.push(Draining {
            id: s.id,
            until,
            next: until.min(now + t.linger_read),
            discarded: 0,
        });
    }

    /// Request body bytes for a stream whose answer is out: dropped, within bounds.
    fn discard(&mut self, stream: u32, n: usize, end_stream: bool, now: Instant) {
        let Some(i) = self.draining.iter().position(|d| d.id == stream) else {
            return;
        };
        let d = &mut self.draining[i];
        d.discarded = d.discarded.saturating_add(n as u64);
        if end_stream {
            self.draining.swap_remove(i);
        } else if d.discarded > self.config.limits.max_linger_bytes {
            self.h2.reset(stream, ErrorCode::NO_ERROR);
            self.draining.swap_remove(i);
        } else {
            d.next = d.until.min(now + self.config.timeouts.linger_read);
        }
    }

    /// The stream is gone (the client reset it, the connection ended, or the engine
    /// refused to send on it): its exchange is abandoned as when an HTTP/1.1 client goes
    /// away, and its upstream released.
    fn abandon(&mut self, i: usize, now: Instant) {
        let mut s = self.streams.swap_remove(i);
        if let Some(mut ex) = s.exchange.take() {
            ex.handle_client_eof(now);
            while let Some(output) = ex.poll_output() {
                match output {
                    Output::ToClient(_) | Output::CloseClient => {}
                    output => self.outputs.push_back(SessionOutput::Exchange {
                        stream: s.id,
                        output,
                    }),
                }
            }
        }
    }
}

/// Reads what the exchange wrote for the client: heads (interim ones go out at once, the
/// final one is parked until the first body bytes or the end), then body bytes as they are.
/// `false` if what it wrote cannot be read (never expected: the exchange writes these heads).
fn read_response(
    h2: &mut H2,
    stream: u32,
    response: &mut Response,
    pending: &mut std::collections::VecDeque<Bytes>,
    pending_bytes: &mut usize,
    bytes: Bytes,
) -> bool {
    let mut data = match response {
        Response::Body | Response::Parked { .. } => {
            if !bytes.is_empty() {
                *pending_bytes += bytes.len();
                pending.push_back(bytes);
            }
            return true;
        }
        Response::Head(buf) if buf.is_empty() => bytes,
        Response::Head(buf) => {
            buf.extend_from_slice(&bytes);
            buf.split().freeze()
        }
    };
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let len = match parsed.parse(&data) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                *response = Response::Head(BytesMut::from(&data[..]));
                return true;
            }
            Err(_) => return false,
        };
        let Some(status) = parsed.code else {
            return false;
        };
        let base = data.as_ptr() as usize;
        let fields: Vec<_> = parsed
            .headers
            .iter()
            .map(|h| {
                let n = h.name.as_ptr() as usize - base;
                let v = h.value.as_ptr() as usize - base;
                (n..n + h.name.len(), v..v + h.value.len())
            })
            .collect();
        if (100..200).contains(&status) {
            let sent = h2.send_response_head(
                stream,
                status,
                fields
                    .iter()
                    .map(|(n, v)| (&data[n.clone()], &data[v.clone()])),
                false,
            );
            if sent.is_err() {
                return false;
            }
            data = data.slice(len..);
            if data.is_empty() {
                *response = Response::Head(BytesMut::new());
                return true;
            }
            continue;
        }
        let body = data.slice(len..);
        *response = Response::Parked {
            status,
            head: data,
            fields,
        };
        if !body.is_empty() {
            *pending_bytes += body.len();
            pending.push_back(body);
        }
        return true;
    }
}

/// A request line built from these cannot be read as anything else: a method token, a
/// path and authority without spaces (CR, LF and NUL are refused already, RFC 9113
/// §8.2.1).
fn request_line_safe(request: &Request) -> bool {
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    !request.method.is_empty()
        && request.method.iter().all(token)
        && !request.path.iter().any(|b| *b == b' ' || *b == b'\t')
        && !request
            .authority
            .as_ref()
            .is_some_and(|a| a.iter().any(|b| *b == b' ' || *b == b'\t'))
}

/// The HTTP/1.1 head the stream's exchange reads: request line, `Host` from `:authority`,
/// the fields in order, and `Transfer-Encoding: chunked` when the body's length is not
/// known.
fn write_head(out: &mut BytesMut, request: &Request, chunked: bool) {
    let fields: usize = request
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 4)
        .sum();
    out.reserve(request.method.len() + request.path.len() + 64 + fields);
    out.put_slice(&request.method);
    out.put_u8(b' ');
    out.put_slice(&request.path);
    out.put_slice(b" HTTP/1.1\r\n");
    if let Some(authority) = &request.authority {
        out.put_slice(b"host: ");
        out.put_slice(authority);
        out.put_slice(b"\r\n");
    }
    for (name, value) in &request.headers {
        out.put_slice(name);
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }
    if chunked {
        out.put_slice(b"transfer-encoding: chunked\r\n");
    }
    out.put_slice(b"\r\n");
}
