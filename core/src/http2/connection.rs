//! One server-side HTTP/2 connection (RFC 9113): client bytes in, request events and
//! frames out, flow control both ways, graceful shutdown, and the abuse limits.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::abuse::{Abuse, Counters};
use super::frame::{
    self, setting, ErrorCode, Frame, FrameDecoder, FrameError, Priority, Settings,
    DEFAULT_MAX_FRAME_SIZE, DEFAULT_WINDOW, MAX_MAX_FRAME_SIZE, MAX_WINDOW,
};
use super::hpack::{self, Decoded};
use super::limits::{after, Limits};
use super::request::{self, Malformed, Request};
use super::stream::{RecvWindow, State, Stream, StreamError};

/// The client connection preface (§3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The payload of the PING that follows the first GOAWAY of a graceful shutdown.
const SHUTDOWN_PING: [u8; 8] = *b"mxgate\x00\x01";

/// Streams remembered after they close, to tell "closed" from "never opened" (§5.1).
const RECENT_CLOSED: usize = 128;

/// Something the application side must act on, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new request on `stream`. Its body follows as [`Event::Data`] unless
    /// `request.end_stream`.
    Request { stream: u32, request: Request },
    /// Request body bytes (possibly empty when only `end_stream` is news). Hand
    /// `data.len()` back through [`Connection::release_capacity`] once the upstream took
    /// them: that is what lets the client send more.
    Data {
        stream: u32,
        data: Bytes,
        end_stream: bool,
    },
    /// The stream is gone: the client reset it (`by_peer`), or we did (a rule the client
    /// broke, a stalled response, the connection failing). Drop its exchange.
    Reset {
        stream: u32,
        code: ErrorCode,
        by_peer: bool,
    },
    /// `send_data` on this stream accepted less than offered; there is room again.
    WindowOpen { stream: u32 },
    /// The client sent GOAWAY: it opens no more streams.
    PeerGoAway { last_stream: u32, code: ErrorCode },
    /// The connection is over: write what [`Connection::poll_transmit`] still has, then
    /// close. `error` is why, when it ended on an error (for the log).
    Closed { error: Option<ConnectionError> },
}

impl Event {
    /// The stream the event is about, if any.
    pub fn stream(&self) -> Option<u32> {
        match self {
            Event::Request { stream, .. }
            | Event::Data { stream, .. }
            | Event::Reset { stream, .. }
            | Event::WindowOpen { stream } => Some(*stream),
            Event::PeerGoAway { .. } | Event::Closed { .. } => None,
        }
    }
}

/// Why the connection ended in error: the code sent in GOAWAY (or received), and a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionError {
    pub code: ErrorCode,
    pub reason: &'static str,
    /// Set when a limit on a kind of abuse closed it.
    pub abuse: Option<Abuse>,
}

impl ConnectionError {
    fn new(code: ErrorCode, reason: &'static str) -> Self {
        ConnectionError {
            code,
            reason,
            abuse: None,
        }
    }

    fn abuse(what: Abuse) -> Self {
        ConnectionError {
            code: ErrorCode::ENHANCE_YOUR_CALM,
            reason: what.describe(),
            abuse: Some(what),
        }
    }
}

/// Why a call from the application side could not be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No such stream any more (reset, finished, or never opened): drop the exchange.
    NoStream,
    /// The response head was already sent (or not yet, for `send_data`).
    WrongOrder,
    /// Our side of the stream is already closed.
    Closed,
    /// A status HTTP/2 cannot carry (101, §8.6) or an informational one with END_STREAM.
    BadStatus,
}

/// Which deadline [`Connection::poll_timeout`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The client has not acknowledged our SETTINGS.
    SettingsAck,
    /// No stream open (or no preface yet) for the idle timeout.
    Idle,
    /// The graceful shutdown's PING went unanswered.
    ShutdownPing,
    /// A response has been blocked by a zero window for too long.
    SendStall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the 24-byte preface.
    Preface,
    /// Preface read; the first frame must be SETTINGS (§3.4).
    FirstSettings,
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    None,
    /// First GOAWAY (2^31-1) and a PING sent; the final GOAWAY follows its ACK.
    Pinging {
        deadline: Instant,
    },
    /// Final GOAWAY sent: streams above `last` are ignored.
    Final {
        last: u32,
    },
}

/// What to do with a header block once decoded (it is always decoded: the HPACK state
/// is shared by the whole connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    New,
    Trailers,
    /// A new stream above the final GOAWAY's id.
    Ignore,
    /// Over MAX_CONCURRENT_STREAMS.
    Refuse,
    /// A stream error, sent once the block is decoded.
    Reject(ErrorCode, &'static str),
}

/// A header block spread over HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct Assembly {
    stream: u32,
    block: BytesMut,
    end_stream: bool,
    disposition: Disposition,
    continuations: u32,
}

/// Recently closed stream ids, and whether we reset them (frames the client sent before
/// seeing our RST_STREAM are then ignored, §5.1 "closed").
#[derive(Debug, Default)]
struct Recent {
    ids: VecDeque<(u32, bool)>,
}

impl Recent {
    fn add(&mut self, id: u32, reset_by_us: bool) {
        if self.ids.len() == RECENT_CLOSED {
            self.ids.pop_front();
        }
        self.ids.push_back((id, reset_by_us));
    }

    fn get(&self, id: u32) -> Option<bool> {
        self.ids
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, r)| *r)
    }
}

type Fatal = ConnectionError;

/// The server side of one HTTP/2 connection. See the module documentation of
/// [`crate::http2`] for the contract.
#[derive(Debug)]
pub struct Connection {
    limits: Limits,
    phase: Phase,
    now: Instant,
    rx: BytesMut,
    decoder: FrameDecoder,
    hpack_in: hpack::Decoder,
    hpack_out: hpack::Encoder,
    streams: BTreeMap<u32, Stream>,
    last_client_stream: u32,
    recent: Recent,
    conn_recv: RecvWindow,
    conn_send: i64,
    peer_initial_window: u32,
    peer_max_frame: u32,
    assembly: Option<Assembly>,
    /// Frames are written here, then split off into `tx` in order.
    out: BytesMut,
    /// A response's header block before it is framed (reused).
    block: BytesMut,
    tx: VecDeque<Bytes>,
    events: VecDeque<Event>,
    settings_ack_due: Option<Instant>,
    idle_since: Option<Instant>,
    shutdown: Shutdown,
    peer_goaway: bool,
    counters: Counters,
}

impl Connection {
    /// A connection whose TLS (ALPN `h2`) or prior-knowledge detection is done. Queues
    /// our SETTINGS (§3.4: the server's preface) at once.
    pub fn new(limits: Limits, now: Instant) -> Self {
        let mut limits = limits;
        // Values below the protocol's defaults could be exceeded legally before the
        // client acknowledges our SETTINGS; we do not shrink below them.
        limits.initial_stream_window = limits
            .initial_stream_window
            .clamp(DEFAULT_WINDOW, MAX_WINDOW);
        limits.connection_window = limits.connection_window.clamp(DEFAULT_WINDOW, MAX_WINDOW);
        limits.max_frame_size = limits
            .max_frame_size
            .clamp(DEFAULT_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE);
        limits.header_table_size = limits.header_table_size.max(4096);
        let mut conn = Connection {
            phase: Phase::Preface,
            now,
            rx: BytesMut::new(),
            decoder: FrameDecoder::new(limits.max_frame_size),
            hpack_in: hpack::Decoder::new(limits.header_table_size as usize),
            hpack_out: hpack::Encoder::new(),
            streams: BTreeMap::new(),
            last_client_stream: 0,
            recent: Recent::default(),
            conn_recv: RecvWindow::new(limits.connection_window),
            conn_send: i64::from(DEFAULT_WINDOW),
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame: DEFAULT_MAX_FRAME_SIZE,
            assembly: None,
            out: BytesMut::new(),
            block: BytesMut::new(),
            tx: VecDeque::new(),
            events: VecDeque::new(),
            settings_ack_due: Some(after(now, limits.settings_timeout)),
            idle_since: Some(now),
            shutdown: Shutdown::None,
            peer_goaway: false,
            counters: Counters::new(),
            limits,
        };
        let l = &conn.limits;
        frame::encode_settings(
            &mut conn.out,
            &[
                (setting::MAX_CONCURRENT_STREAMS, l.max_concurrent_streams),
                (setting::INITIAL_WINDOW_SIZE, l.initial_stream_window),
                (setting::MAX_FRAME_SIZE, l.max_frame_size),
                (setting::MAX_HEADER_LIST_SIZE, l.max_header_list_size),
                (setting::HEADER_TABLE_SIZE, l.header_table_size),
            ],
        );
        if l.connection_window > DEFAULT_WINDOW {
            frame::encode_window_update(&mut conn.out, 0, l.connection_window - DEFAULT_WINDOW);
        }
        conn
    }

    // ---- getters ----

    /// Whether the connection is over and everything to send was taken.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed && self.out.is_empty() && self.tx.is_empty()
    }

    /// Whether client bytes are still wanted.
    pub fn wants_read(&self) -> bool {
        self.phase != Phase::Closed
    }

    /// Streams open or half-closed (bounded by MAX_CONCURRENT_STREAMS).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Bytes this connection holds: unparsed input, a header block being assembled, and
    /// output not yet taken (request bodies the application holds are bounded by the
    /// receive windows, not counted here).
    pub fn buffered_bytes(&self) -> usize {
        self.rx.len()
            + self.assembly.as_ref().map_or(0, |a| a.block.len())
            + self.out.len()
            + self.tx.iter().map(Bytes::len).sum::<usize>()
            + self.hpack_in.table_size()
    }

    /// The window the client left us on `stream` (for the caller's information: how much
    /// `send_data` can take right now), or `None` if there is no such stream.
    pub fn send_capacity(&self, stream: u32) -> Option<usize> {
        let s = self.streams.get(&stream)?;
        Some(s.send_window.min(self.conn_send).max(0) as usize)
    }

    // ---- outputs ----

    /// The next bytes to write to the client, in order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.flush_out();
        self.tx.pop_front()
    }

    /// The next event for the application side.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Connection::handle_timeout`], and why.
    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        if self.phase == Phase::Closed {
            return None;
        }
        let stall = self
            .streams
            .values()
            .filter_map(|s| s.stalled_since)
            .min()
            .map(|t| (after(t, self.limits.send_stall_timeout), Timer::SendStall));
        let idle = self
            .idle_since
            .map(|t| (after(t, self.limits.idle_timeout), Timer::Idle));
        let ping = match self.shutdown {
            Shutdown::Pinging { deadline } => Some((deadline, Timer::ShutdownPing)),
            _ => None,
        };
        let settings = self.settings_ack_due.map(|t| (t, Timer::SettingsAck));
        [settings, idle, ping, stall]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    // ---- inputs ----

    /// Bytes read from the client.
    pub fn handle_data(&mut self, data: &[u8], now: Instant) {
        self.now = now;
        if self.phase == Phase::Closed {
            return;
        }
        self.rx.extend_from_slice(data);
        if let Err(e) = self.process() {
            self.fail(e);
        }
        self.check_done();
    }

    /// The client closed its side: every stream is gone.
    pub fn handle_eof(&mut self, now: Instant) {
        self.now = now;
        if self.phase == Phase::Closed {
            return;
        }
        self.drop_streams(ErrorCode::CANCEL, true);
        self.close(None);
    }

    /// A deadline from [`Connection::poll_timeout`] passed (extra calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.phase == Phase::Closed {
            return;
        }
        if self.settings_ack_due.is_some_and(|t| now >= t) {
            self.fail(ConnectionError::new(
                ErrorCode::SETTINGS_TIMEOUT,
                "SETTINGS not acknowledged in time",
            ));
            return;
        }
        if let Shutdown::Pinging { deadline } = self.shutdown {
            if now >= deadline {
                self.final_goaway();
            }
        }
        let stalled: Vec<u32> = self
            .streams
            .values()
            .filter(|s| {
                s.stalled_since
                    .is_some_and(|t| now >= after(t, self.limits.send_stall_timeout))
            })
            .map(|s| s.id)
            .collect();
        for id in stalled {
            self.send_rst(id, ErrorCode::CANCEL);
            if self.remove(id, true) {
                self.events.push_back(Event::Reset {
                    stream: id,
                    code: ErrorCode::CANCEL,
                    by_peer: false,
                });
            }
        }
        if self
            .idle_since
            .is_some_and(|t| now >= after(t, self.limits.idle_timeout))
            && self.streams.is_empty()
        {
            frame::encode_goaway(
                &mut self.out,
                self.last_client_stream,
                ErrorCode::NO_ERROR,
                b"idle",
            );
            self.close(None);
        }
        self.check_done();
    }

    // ---- commands (the application side) ----

    /// Sends the response head of `stream`: `status`, then `headers` (names are
    /// lower-cased; connection-specific fields are dropped, RFC 9113 §8.2.2).
    /// Informational heads (1xx but 101) may come first, any number of them (§8.1).
    pub fn send_response_head<'a>(
        &mut self,
        stream: u32,
        status: u16,
        headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        end_stream: bool,
    ) -> Result<(), SendError> {
        let s = self.streams.get_mut(&stream).ok_or(SendError::NoStream)?;
        if s.responded {
            return Err(SendError::WrongOrder);
        }
        if !s.send_open() {
            return Err(SendError::Closed);
        }
        let informational = status < 200;
        if status == 101 || (informational && end_stream) {
            return Err(SendError::BadStatus);
        }
        s.responded = !informational;
        let digits = status_digits(status);
        self.block.clear();
        self.hpack_out.encode_lowercase(
            std::iter::once((&b":status"[..], &digits[..])).chain(
                headers
                    .into_iter()
                    .filter(|(n, _)| !is_connection_specific(n))
                    .map(shorten),
            ),
            &mut self.block,
        );
        frame::encode_headers(
            &mut self.out,
            stream,
            &self.block,
            end_stream,
            self.peer_max_frame,
        );
        if end_stream {
            if let Some(s) = self.streams.get_mut(&stream) {
                s.send_end();
            }
            self.remove_if_closed(stream);
            self.check_done();
        }
        Ok(())
    }

    /// Sends response body bytes, as much as the client's windows allow now: returns how
    /// many were taken (`end_stream` applies only once all of `data` is taken). When
    /// fewer were taken, wait for [`Event::WindowOpen`] and offer the rest again; nothing
    /// is buffered here beyond what was taken.
    pub fn send_data(
        &mut self,
        stream: u32,
        data: Bytes,
        end_stream: bool,
    ) -> Result<usize, SendError> {
        let now = self.now;
        let max_frame = self.peer_max_frame as usize;
        let conn_window = self.conn_send;
        let s = self.streams.get_mut(&stream).ok_or(SendError::NoStream)?;
        if !s.responded {
            return Err(SendError::WrongOrder);
        }
        if !s.send_open() {
            return Err(SendError::Closed);
        }
        if data.is_empty() && !end_stream {
            return Ok(0);
        }
        let window = s.send_window.min(conn_window).max(0) as usize;
        let n = data.len().min(window);
        let all = n == data.len();
        if n == 0 && !(all && end_stream) {
            s.send_blocked = true;
            s.stalled_since.get_or_insert(now);
            return Ok(0);
        }
        let mut frames = 0u32;
        let mut off = 0;
        loop {
            let take = (n - off).min(max_frame);
            let last = off + take == n;
            frame::encode_data_header(
                &mut self.out,
                stream,
                take as u32,
                last && all && end_stream,
            );
            if take > 0 {
                flush(&mut self.out, &mut self.tx);
                self.tx.push_back(data.slice(off..off + take));
            }
            frames += 1;
            off += take;
            if last {
                break;
            }
        }
        s.send_window -= n as i64;
        self.conn_send -= n as i64;
        if all {
            s.send_blocked = false;
            s.stalled_since = None;
        } else {
            s.send_blocked = true;
            s.stalled_since.get_or_insert(now);
        }
        self.counters.data_sent(frames);
        if all && end_stream {
            s.send_end();
            self.remove_if_closed(stream);
            self.check_done();
        }
        Ok(n)
    }

    /// The application took `n` bytes of `stream`'s request body: the client may send
    /// that much more (WINDOW_UPDATE once half a window was taken).
    pub fn release_capacity(&mut self, stream: u32, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let Some(s) = self.streams.get_mut(&stream) else {
            // A removed stream's held bytes went back to the connection already.
            return;
        };
        let n = n.min(s.recv.held);
        let stream_inc = s.recv.release(n).filter(|_| s.recv_open());
        if let Some(inc) = stream_inc {
            frame::encode_window_update(&mut self.out, stream, inc);
        }
        self.release_conn(n);
    }

    /// The application answered `stream` before its request body ended and drops the rest:
    /// the client gets window for all of it at once (at most `cap` bytes: the rest of a
    /// known content-length, else `cap`), before the answer's END_STREAM goes out. Some
    /// clients (curl 7.88) ignore WINDOW_UPDATE on a stream whose response has ended, and
    /// would otherwise wait for window forever instead of finishing their upload.
    pub fn grant_rest(&mut self, stream: u32, cap: u64) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if !s.recv_open() {
            return;
        }
        let rest = s
            .content_length
            .map_or(cap, |len| len.saturating_sub(s.received))
            .min(cap);
        let available = u64::from(s.recv.available);
        if rest <= available {
            return;
        }
        let room = u64::from(MAX_WINDOW).saturating_sub(available + u64::from(s.recv.pending));
        let want = u32::try_from((rest - available).min(room)).unwrap_or(0);
        let inc = want.saturating_add(s.recv.pending);
        if inc == 0 {
            return;
        }
        s.recv.available += inc;
        s.recv.pending = 0;
        s.recv.target = s.recv.target.saturating_add(want);
        frame::encode_window_update(&mut self.out, stream, inc);
    }

    /// Resets `stream` (the application gives up on it, or answered early and wants no
    /// more of the request: NO_ERROR after a complete response, RFC 9113 §8.1). No event
    /// names the stream afterwards, not even one already queued.
    pub fn reset(&mut self, stream: u32, code: ErrorCode) {
        if self.streams.contains_key(&stream) {
            self.send_rst(stream, code);
            self.remove(stream, true);
        }
        self.events.retain(|e| e.stream() != Some(stream));
        self.check_done();
    }

    /// Begins a graceful shutdown (drain, reload): a PING and GOAWAY with 2^31-1, then,
    /// once the PING is answered (or after `shutdown_ping_timeout`), GOAWAY with the last
    /// stream id processed. Streams already open run to their end; then the connection
    /// closes.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.now = now;
        if self.phase == Phase::Closed || self.shutdown != Shutdown::None {
            return;
        }
        // The PING goes first: some clients (python-hyper's h2) accept nothing but GOAWAY
        // once they have one. Its ACK still tells us the client has read the GOAWAY that
        // follows it in the same write; a stream it opened in between is above the final
        // GOAWAY's id, which tells the client it is safe to retry.
        frame::encode_ping(&mut self.out, false, SHUTDOWN_PING);
        frame::encode_goaway(&mut self.out, MAX_WINDOW, ErrorCode::NO_ERROR, b"");
        self.shutdown = Shutdown::Pinging {
            deadline: after(now, self.limits.shutdown_ping_timeout),
        };
    }

    // ---- internals ----

    fn flush_out(&mut self) {
        flush(&mut self.out, &mut self.tx);
        // A large response head must not stay with the connection for its life.
        if self.block.capacity() > 16 * 1024 {
            self.block = BytesMut::new();
        }
    }

    fn process(&mut self) -> Result<(), Fatal> {
        if self.phase == Phase::Preface {
            let n = self.rx.len().min(PREFACE.len());
            if self.rx[..n] != PREFACE[..n] {
                return Err(ConnectionError::new(
                    ErrorCode::PROTOCOL_ERROR,
                    "invalid connection preface",
                ));
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            let _ = self.rx.split_to(PREFACE.len());
            self.phase = Phase::FirstSettings;
        }
        while self.phase != Phase::Closed {
            let kind = self.rx.get(3).copied();
            let frame = match self.decoder.decode(&mut self.rx) {
                Ok(None) => break,
                Ok(Some(f)) => f,
                Err(FrameError::Connection(code, why)) => {
                    return Err(ConnectionError::new(code, why))
                }
                Err(FrameError::Stream(id, code, why)) => {
                    // Only PRIORITY and WINDOW_UPDATE give stream errors: never allowed
                    // inside a header block, nor as the first frame.
                    if self.phase == Phase::FirstSettings {
                        return Err(ConnectionError::new(
                            ErrorCode::PROTOCOL_ERROR,
                            "the preface is not followed by SETTINGS",
                        ));
                    }
                    if self.assembly.is_some() {
                        return Err(ConnectionError::new(
                            ErrorCode::PROTOCOL_ERROR,
                            "frame inside a header block",
                        ));
                    }
                    if id > self.last_client_stream && kind != Some(frame::kind::PRIORITY) {
                        // §5.1: only HEADERS and PRIORITY may name an idle stream.
                        return Err(ConnectionError::new(ErrorCode::PROTOCOL_ERROR, why));
                    }
                    self.stream_error(id, code)?;
                    continue;
                }
            };
            if self.phase == Phase::FirstSettings {
                if !matches!(frame, Frame::Settings { ack: false, .. }) {
                    return Err(ConnectionError::new(
                        ErrorCode::PROTOCOL_ERROR,
                        "the preface is not followed by SETTINGS",
                    ));
                }
                self.phase = Phase::Open;
            }
            if let Some(a) = &self.assembly {
                let ok = matches!(frame, Frame::Continuation { stream, .. } if stream == a.stream);
                if !ok {
                    return Err(ConnectionError::new(
                        ErrorCode::PROTOCOL_ERROR,
                        "frame inside a header block",
                    ));
                }
            }
            self.on_frame(frame)?;
        }
        if self.rx.is_empty() && self.rx.capacity() > 64 * 1024 {
            self.rx = BytesMut::new();
        }
        Ok(())
    }

    fn count(&mut self, what: Abuse) -> Result<(), Fatal> {
        self.counters
            .count(what, self.now, &self.limits)
            .map_err(ConnectionError::abuse)
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), Fatal> {
        match frame {
            Frame::Data {
                stream,
                data,
                end_stream,
                flow_len,
            } => self.on_data(stream, data, end_stream, flow_len),
            Frame::Headers {
                stream,
                block,
                end_stream,
                end_headers,
                priority,
            } => self.on_headers(stream, block, end_stream, end_headers, priority),
            Frame::Continuation {
                stream,
                block,
                end_headers,
            } => self.on_continuation(stream, block, end_headers),
            Frame::Priority { .. } => self.count(Abuse::Ignored),
            Frame::Unknown { .. } => self.count(Abuse::Ignored),
            Frame::RstStream { stream, code } => {
                if stream > self.last_client_stream {
                    return Err(ConnectionError::new(
                        ErrorCode::PROTOCOL_ERROR,
                        "RST_STREAM on an idle stream",
                    ));
                }
                if self.remove(stream, false) {
                    self.events.push_back(Event::Reset {
                        stream,
                        code,
                        by_peer: true,
                    });
                }
                self.count(Abuse::Reset)
            }
            Frame::Settings { ack, settings } => {
                self.count(Abuse::Settings)?;
                if ack {
                    self.settings_ack_due = None;
                    Ok(())
                } else {
                    self.apply_settings(settings)?;
                    frame::encode_settings_ack(&mut self.out);
                    Ok(())
                }
            }
            Frame::PushPromise { .. } => Err(ConnectionError::new(
                ErrorCode::PROTOCOL_ERROR,
                "PUSH_PROMISE from a client",
            )),
            Frame::Ping { ack, data } => {
                self.count(Abuse::Ping)?;
                if ack {
                    if data == SHUTDOWN_PING && matches!(self.shutdown, Shutdown::Pinging { .. }) {
                        self.final_goaway();
                    }
                    return Ok(());
                }
                frame::encode_ping(&mut self.out, true, data);
                Ok(())
            }
            Frame::GoAway {
                last_stream, code, ..
            } => {
                if self.peer_goaway {
                    return self.count(Abuse::Ignored);
                }
                self.peer_goaway = true;
                self.events
                    .push_back(Event::PeerGoAway { last_stream, code });
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => {
                self.count(Abuse::WindowUpdate)?;
                self.on_window_update(stream, increment)
            }
        }
    }

    fn apply_settings(&mut self, s: Settings) -> Result<(), Fatal> {
        if let Some(size) = s.header_table_size {
            self.hpack_out.set_peer_table_size(size);
        }
        if let Some(size) = s.max_frame_size {
            self.peer_max_frame = size;
        }
        if let Some(new) = s.initial_window_size {
            // §6.9.2: the difference applies to every stream's window, which may go
            // negative; above 2^31-1 is a connection error.
            let delta = i64::from(new) - i64::from(self.peer_initial_window);
            self.peer_initial_window = new;
            for st in self.streams.values_mut() {
                st.send_window += delta;
                if st.send_window > i64::from(MAX_WINDOW) {
                    return Err(ConnectionError::new(
                        ErrorCode::FLOW_CONTROL_ERROR,
                        "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window",
                    ));
                }
            }
            if delta > 0 {
                self.wake_blocked();
            }
        }
        Ok(())
    }

    fn on_window_update(&mut self, stream: u32, increment: u32) -> Result<(), Fatal> {
        if stream == 0 {
            let w = self.conn_send + i64::from(increment);
            if w > i64::from(MAX_WINDOW) {
                return Err(ConnectionError::new(
                    ErrorCode::FLOW_CONTROL_ERROR,
                    "connection window above 2^31-1",
                ));
            }
            self.conn_send = w;
            self.wake_blocked();
            return Ok(());
        }
        if stream > self.last_client_stream {
            return Err(ConnectionError::new(
                ErrorCode::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let Some(s) = self.streams.get_mut(&stream) else {
            return Ok(()); // closed: ignored (§6.9)
        };
        match s.grow_send_window(increment) {
            Ok(()) => {
                self.wake_blocked();
                Ok(())
            }
            Err(StreamError(code, _)) => self.stream_error(stream, code),
        }
    }

    fn wake_blocked(&mut self) {
        if self.conn_send <= 0 {
            return;
        }
        for s in self.streams.values_mut() {
            if s.send_blocked && s.send_window > 0 {
                s.send_blocked = false;
                s.stalled_since = None;
                self.events.push_back(Event::WindowOpen { stream: s.id });
            }
        }
    }

    fn release_conn(&mut self, n: u32) {
        if let Some(inc) = self.conn_recv.release(n) {
            frame::encode_window_update(&mut self.out, 0, inc);
        }
    }

    fn on_data(
        &mut self,
        stream: u32,
        data: Bytes,
        end_stream: bool,
        flow_len: u32,
    ) -> Result<(), Fatal> {
        if stream > self.last_client_stream {
            return Err(ConnectionError::new(
                ErrorCode::PROTOCOL_ERROR,
                "DATA on an idle stream",
            ));
        }
        if !self.conn_recv.receive(flow_len) {
            return Err(ConnectionError::new(
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the connection window",
            ));
        }
        let Some(s) = self.streams.get_mut(&stream) else {
            // Never delivered: the connection window is ours to give back at once.
            self.release_conn(flow_len);
            if self.recent.get(stream) == Some(true) {
                return Ok(()); // sent before the client saw our RST_STREAM
            }
            return self.stream_error(stream, ErrorCode::STREAM_CLOSED);
        };
        let held_before = s.recv.held;
        if let Err(StreamError(code, _)) = s.recv_data(flow_len, data.len(), end_stream) {
            // Bytes the stream window took are released with the stream; the rest now.
            let taken = s.recv.held - held_before;
            self.release_conn(flow_len - taken);
            return self.stream_error(stream, code);
        }
        // Padding never reaches the application: give it back now.
        let padding = flow_len - data.len() as u32;
        if padding > 0 {
            if let Some(inc) = s.recv.release(padding).filter(|_| s.recv_open()) {
                frame::encode_window_update(&mut self.out, stream, inc);
            }
            self.release_conn(padding);
        }
        if data.is_empty() && !end_stream {
            self.count(Abuse::EmptyData)?;
            return Ok(());
        }
        // A copy of its own: a slice would pin the whole read buffer it came in for as
        // long as the application holds it (a slow upstream, many streams: megabytes held
        // for a few bytes of window). It also lets the read buffer be reused.
        let data = if data.is_empty() {
            data
        } else {
            Bytes::copy_from_slice(&data)
        };
        self.events.push_back(Event::Data {
            stream,
            data,
            end_stream,
        });
        self.remove_if_closed(stream);
        Ok(())
    }

    fn on_headers(
        &mut self,
        stream: u32,
        block: Bytes,
        end_stream: bool,
        end_headers: bool,
        priority: Option<Priority>,
    ) -> Result<(), Fatal> {
        if stream & 1 == 0 {
            return Err(ConnectionError::new(
                ErrorCode::PROTOCOL_ERROR,
                "client stream id is even",
            ));
        }
        let disposition = if let Some(s) = self.streams.get(&stream) {
            if !s.recv_open() {
                Disposition::Reject(ErrorCode::STREAM_CLOSED, "HEADERS after END_STREAM")
            } else if !end_stream {
                Disposition::Reject(ErrorCode::PROTOCOL_ERROR, "trailers without END_STREAM")
            } else {
                Disposition::Trailers
            }
        } else if stream <= self.last_client_stream {
            match self.recent.get(stream) {
                Some(true) => Disposition::Ignore,
                Some(false) => {
                    return Err(ConnectionError::new(
                        ErrorCode::STREAM_CLOSED,
                        "HEADERS on a closed stream",
                    ))
                }
                None => {
                    return Err(ConnectionError::new(
                        ErrorCode::PROTOCOL_ERROR,
                        "stream id went backwards",
                    ))
                }
            }
        } else {
            self.last_client_stream = stream;
            if matches!(self.shutdown, Shutdown::Final { last } if stream > last) {
                Disposition::Ignore
            } else if self.streams.len() >= self.limits.max_concurrent_streams as usize {
                Disposition::Refuse
            } else if priority.is_some_and(|p| p.dependency == stream) {
                Disposition::Reject(ErrorCode::PROTOCOL_ERROR, "stream depends on itself")
            } else {
                Disposition::New
            }
        };
        if block.len() > self.limits.max_header_block as usize {
            return Err(ConnectionError::abuse(Abuse::OversizedHeaders));
        }
        if end_headers {
            // Copied for the same reason as DATA: the request's fields are slices of it and
            // live as long as the exchange.
            let block = Bytes::copy_from_slice(&block);
            return self.finish_block(stream, block, end_stream, disposition);
        }
        self.assembly = Some(Assembly {
            stream,
            block: BytesMut::from(&block[..]),
            end_stream,
            disposition,
            continuations: 0,
        });
        Ok(())
    }

    fn on_continuation(
        &mut self,
        stream: u32,
        block: Bytes,
        end_headers: bool,
    ) -> Result<(), Fatal> {
        let Some(a) = self.assembly.as_mut() else {
            return Err(ConnectionError::new(
                ErrorCode::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS",
            ));
        };
        debug_assert_eq!(a.stream, stream);
        a.continuations += 1;
        if a.continuations > self.limits.max_continuations {
            return Err(ConnectionError {
                code: ErrorCode::ENHANCE_YOUR_CALM,
                reason: "CONTINUATION flood",
                abuse: None,
            });
        }
        if a.block.len() + block.len() > self.limits.max_header_block as usize {
            return Err(ConnectionError {
                code: ErrorCode::ENHANCE_YOUR_CALM,
                reason: "header block too large",
                abuse: None,
            });
        }
        a.block.extend_from_slice(&block);
        if !end_headers {
            return Ok(());
        }
        let Some(a) = self.assembly.take() else {
            return Ok(());
        };
        self.finish_block(a.stream, a.block.freeze(), a.end_stream, a.disposition)
    }

    fn finish_block(
        &mut self,
        stream: u32,
        block: Bytes,
        end_stream: bool,
        disposition: Disposition,
    ) -> Result<(), Fatal> {
        let mut fields = Vec::new();
        let decoded = self
            .hpack_in
            .decode(
                &block,
                self.limits.max_header_list_size as usize,
                &mut fields,
            )
            .map_err(|e| ConnectionError::new(ErrorCode::COMPRESSION_ERROR, e.0))?;
        match disposition {
            Disposition::Ignore => Ok(()),
            Disposition::Refuse => {
                self.send_rst(stream, ErrorCode::REFUSED_STREAM);
                self.recent.add(stream, true);
                self.count(Abuse::Reset)
            }
            Disposition::Reject(code, _) => self.stream_error(stream, code),
            Disposition::Trailers => {
                // Trailers end the body; an HTTP/1.1 upstream gets none of them.
                if decoded != Decoded::Complete || fields.iter().any(|(n, _)| n.starts_with(b":")) {
                    return self.stream_error(stream, ErrorCode::PROTOCOL_ERROR);
                }
                let Some(s) = self.streams.get_mut(&stream) else {
                    return Ok(());
                };
                if s.content_length.is_some_and(|cl| cl != s.received) {
                    return self.stream_error(stream, ErrorCode::PROTOCOL_ERROR);
                }
                s.recv_end();
                self.events.push_back(Event::Data {
                    stream,
                    data: Bytes::new(),
                    end_stream: true,
                });
                self.remove_if_closed(stream);
                Ok(())
            }
            Disposition::New => {
                if decoded != Decoded::Complete {
                    self.count(Abuse::OversizedHeaders)?;
                    return self.answer(stream, 431, end_stream);
                }
                match request::validate(fields, end_stream) {
                    Ok(req) => {
                        let mut s = Stream::open(
                            stream,
                            end_stream,
                            self.limits.initial_stream_window,
                            self.peer_initial_window,
                        );
                        s.content_length = req.content_length;
                        self.streams.insert(stream, s);
                        self.idle_since = None;
                        self.events.push_back(Event::Request {
                            stream,
                            request: req,
                        });
                        Ok(())
                    }
                    Err(Malformed::Connect) => self.answer(stream, 501, end_stream),
                    Err(_) => self.stream_error(stream, ErrorCode::PROTOCOL_ERROR),
                }
            }
        }
    }

    /// Answers a request the application never sees with an empty response, and asks
    /// the client to stop sending its body (RST_STREAM NO_ERROR, §8.1).
    fn answer(&mut self, stream: u32, status: u16, end_stream: bool) -> Result<(), Fatal> {
        let digits = status_digits(status);
        self.block.clear();
        self.hpack_out.encode(
            [
                (&b":status"[..], &digits[..]),
                (&b"content-length"[..], &b"0"[..]),
            ],
            &mut self.block,
        );
        frame::encode_headers(
            &mut self.out,
            stream,
            &self.block,
            true,
            self.peer_max_frame,
        );
        if !end_stream {
            self.send_rst(stream, ErrorCode::NO_ERROR);
        }
        self.recent.add(stream, !end_stream);
        Ok(())
    }

    fn send_rst(&mut self, stream: u32, code: ErrorCode) {
        frame::encode_rst_stream(&mut self.out, stream, code);
    }

    /// A stream error caused by what the client sent: RST_STREAM, the stream's exchange
    /// told, and counted like a client reset (MadeYouReset, CVE-2025-8671).
    fn stream_error(&mut self, stream: u32, code: ErrorCode) -> Result<(), Fatal> {
        self.send_rst(stream, code);
        if self.remove(stream, true) {
            self.events.push_back(Event::Reset {
                stream,
                code,
                by_peer: false,
            });
        } else if self.recent.get(stream).is_none() {
            self.recent.add(stream, true);
        }
        self.count(Abuse::Reset)
    }

    /// Removes a stream from the table; its unreleased request bytes go back to the
    /// connection window. Returns whether it was there.
    fn remove(&mut self, stream: u32, reset_by_us: bool) -> bool {
        let Some(s) = self.streams.remove(&stream) else {
            return false;
        };
        self.recent.add(stream, reset_by_us);
        if s.recv.held > 0 {
            self.release_conn(s.recv.held);
        }
        if self.streams.is_empty() {
            self.idle_since = Some(self.now);
        }
        true
    }

    fn remove_if_closed(&mut self, stream: u32) {
        if self
            .streams
            .get(&stream)
            .is_some_and(|s| s.state == State::Closed)
        {
            self.remove(stream, false);
        }
    }

    fn final_goaway(&mut self) {
        let last = self.last_client_stream;
        frame::encode_goaway(&mut self.out, last, ErrorCode::NO_ERROR, b"");
        self.shutdown = Shutdown::Final { last };
    }

    /// Closes once nothing is left to do after a final GOAWAY, or the client's. Called
    /// at the end of each input or command, so `Closed` is the last event.
    fn check_done(&mut self) {
        if self.phase == Phase::Closed || !self.streams.is_empty() {
            return;
        }
        if matches!(self.shutdown, Shutdown::Final { .. }) || self.peer_goaway {
            self.close(None);
        }
    }

    fn drop_streams(&mut self, code: ErrorCode, by_peer: bool) {
        let streams = std::mem::take(&mut self.streams);
        for id in streams.into_keys() {
            self.events.push_back(Event::Reset {
                stream: id,
                code,
                by_peer,
            });
        }
    }

    /// A connection error: GOAWAY with the last stream processed, then closed.
    fn fail(&mut self, e: ConnectionError) {
        if self.phase == Phase::Closed {
            return;
        }
        frame::encode_goaway(
            &mut self.out,
            self.last_client_stream,
            e.code,
            e.reason.as_bytes(),
        );
        self.drop_streams(e.code, false);
        self.close(Some(e));
    }

    fn close(&mut self, error: Option<ConnectionError>) {
        self.phase = Phase::Closed;
        self.assembly = None;
        self.rx = BytesMut::new();
        self.settings_ack_due = None;
        self.idle_since = None;
        self.events.push_back(Event::Closed { error });
    }
}

fn flush(out: &mut BytesMut, tx: &mut VecDeque<Bytes>) {
    if !out.is_empty() {
        tx.push_back(out.split().freeze());
    }
}

/// A field with a shorter lifetime, to chain with one borrowed from a local.
fn shorten<'s, 'a: 's>(field: (&'a [u8], &'a [u8])) -> (&'s [u8], &'s [u8]) {
    field
}

fn status_digits(status: u16) -> [u8; 3] {
    let s = status.clamp(100, 999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

fn is_connection_specific(name: &[u8]) -> bool {
    [
        &b"connection"[..],
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}
