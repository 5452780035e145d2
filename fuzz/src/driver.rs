//! Drives one [`Connection`] in memory: a client that sends fuzzer-chosen pieces, scripted
//! upstream servers, an idle pool, and virtual time. Every output is checked as it comes
//! out, against the independent reader in [`super::wire`].
//!
//! Shared like `wire.rs`: the core's regression tests compile it too, with `super::mx`
//! naming the core crate's API and `super::live_heap_bytes` a heap probe (or none).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mx::*;
use super::wire::{self, Read};

pub const CLIENT_HTTP: ListenerId = 0;
pub const CLIENT_HTTPS: ListenerId = 1;
pub const FEDERATION: ListenerId = 2;

/// Whether a core bug that is already reported (by name) should be let through, so a
/// long campaign keeps finding new ones. The fuzz binaries read the names from
/// `MXGATE_FUZZ_TOLERATE` (comma-separated); the core's regression tests never tolerate.
pub fn tolerated(bug: &str) -> bool {
    super::tolerated_core_bugs().iter().any(|b| b == bug)
}

/// The peer addresses a target can pick: untrusted, a trusted proxy, the admin allowlist.
pub const PEERS: [&str; 3] = ["203.0.113.5", "10.0.0.2", "192.0.2.7"];

/// Small limits, so that inputs of a few hundred bytes reach every limit.
pub fn small_limits() -> Limits {
    Limits {
        max_body_bytes: 600,
        max_request_line_bytes: 200,
        max_head_bytes: 700,
        max_headers: 12,
        max_response_head_bytes: 700,
        max_pipelined_bytes: 300,
        max_linger_bytes: 2000,
    }
}

/// The core test harness's configuration (client and federation listeners in front of one
/// homeserver, well-known documents, an admin allowlist), with `limits`.
pub fn config(limits: Limits) -> Config {
    let routes = |prefixes: &[&str]| {
        prefixes
            .iter()
            .map(|p| Route {
                prefix: p.to_string(),
                action: RouteAction::Upstream(0),
            })
            .collect::<Vec<_>>()
    };
    let listener = |name: &str, role, scheme, r: Vec<Route>| Listener {
        name: name.into(),
        role,
        scheme,
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        routes: r,
        proxy_protocol: false,
        http2: scheme == Scheme::Https,
    };
    Config {
        server_name: "example.org".into(),
        listeners: vec![
            listener(
                "plain",
                Role::Client,
                Scheme::Http,
                routes(&["/_matrix", "/_synapse/client"]),
            ),
            listener(
                "client",
                Role::Client,
                Scheme::Https,
                routes(&["/_matrix", "/_synapse/client"]),
            ),
            listener(
                "federation",
                Role::Federation,
                Scheme::Https,
                routes(&["/_matrix"]),
            ),
        ],
        pools: vec![{
            let mut pool = UpstreamPool::new(
                "homeserver",
                vec![Backend {
                    host: "127.0.0.1".into(),
                    port: 8008,
                }],
            );
            pool.max_idle_per_backend = 8;
            pool.idle_timeout = Duration::from_secs(60);
            pool
        }],
        virtual_hosts: VirtualHosts::default(),
        well_known: WellKnown {
            server: Some(bytes::Bytes::from_static(
                br#"{"m.server":"matrix.example.org:443"}"#,
            )),
            client: Some(bytes::Bytes::from_static(
                br#"{"m.homeserver":{"base_url":"https://matrix.example.org"}}"#,
            )),
            support: None,
        },
        limits,
        timeouts: Timeouts::default(),
        forwarding: Forwarding {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..Forwarding::default()
        },
        admin: AdminPolicy {
            allow: vec!["192.0.2.7".parse().unwrap()],
            pool: Some(0),
        },
        tls: TlsSettings::default(),
        runtime: RuntimeSettings::default(),
        workers: None,
        acme: None,
        http2: Default::default(),
    }
}

/// The response a well-behaved upstream gives.
pub const OK_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
pub const OK_HEAD_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n";

/// How the scripted upstream treats one forwarded exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// [`OK_RESPONSE`] once the request is complete.
    Ok,
    /// Closes once the request is complete, without a byte.
    Eof,
    /// [`OK_RESPONSE`] as soon as the head arrived, before any body.
    Early,
    /// The connection cannot be made.
    Refuse,
    /// These bytes, in pieces of the given sizes (cycled; 0 = all the rest), once the
    /// request is complete; then a close if `eof`.
    Bytes {
        data: Vec<u8>,
        pieces: Vec<usize>,
        eof: bool,
    },
}

/// One connection to an upstream, as its server saw it.
#[derive(Debug, Default, Clone)]
pub struct UpstreamConn {
    /// Every byte mxgate wrote to it.
    pub received: Vec<u8>,
    /// Every byte the server wrote to mxgate.
    pub sent: Vec<u8>,
    /// Where the exchange in progress starts in `received` and `sent`.
    pub exchange_start: (usize, usize),
    /// The exchange index (see [`Driver::exchange`]) being served.
    pub exchange: usize,
    /// How far into its reply the server is (bytes of `Reply::Bytes::data` sent).
    pub reply_at: usize,
    pub reply_piece: usize,
    /// The server sent everything it meant to for this exchange.
    pub reply_done: bool,
    /// The connection is closed (by the server, or by the runtime).
    pub closed: bool,
    /// The server closed it while serving the exchange in progress.
    pub server_eof: bool,
    /// Exchanges served on this connection.
    pub exchanges: usize,
}

/// An exchange as mxgate logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub status: u16,
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub pool: Option<PoolId>,
    /// Connects asked for during this exchange, and bytes written upstream.
    pub connects: usize,
    pub upstream_bytes: usize,
}

/// What one forwarded exchange looked like on its upstream connection.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// Index into [`Driver::upstreams`].
    pub conn: usize,
    /// The exchange (a retry has the same one as the attempt before it).
    pub exchange: usize,
    /// The request as the upstream read it (head complete, body perhaps not).
    pub request: Result<wire::Message, wire::PartialRequest>,
    /// What the upstream sent back for it.
    pub response_bytes: Vec<u8>,
    /// The server closed after `response_bytes`.
    pub upstream_eof: bool,
    pub reusable: bool,
}

pub struct Driver {
    pub conn: Connection,
    pub config: Arc<Config>,
    pub now: Instant,
    pub start: Instant,
    pub client_in: Vec<u8>,
    pub to_client: Vec<u8>,
    pub client_eof: bool,
    pub client_closed: bool,
    pub upstreams: Vec<UpstreamConn>,
    /// The connection the exchange in flight holds.
    pub held: Option<usize>,
    /// Idle pooled connections.
    pub idle: Vec<usize>,
    /// A connect was asked for: `Some(fresh)`.
    pub pending_connect: Option<bool>,
    /// Forwarded exchanges so far (retries included in theirs).
    pub exchange: usize,
    pub replies: Vec<Reply>,
    /// Give pooled connections to connects that allow them.
    pub reuse: bool,
    pub logs: Vec<Logged>,
    pub forwarded: Vec<Forwarded>,
    connects_now: usize,
    upstream_bytes_now: usize,
    /// Heap probe baseline and the largest input piece fed, for the buffering bound.
    heap_base: Option<usize>,
    largest_piece: usize,
    pub max_engine_heap: usize,
    /// Times the driver had client bytes but the engine did not want them.
    pub backpressure: usize,
    /// Upstream answers the engine reported as not passed on.
    pub faults: usize,
}

/// Heap the engine may hold beyond its input: limits plus buffers' slack.
const HEAP_SLACK: usize = 16 * 1024;

impl Driver {
    pub fn new(config: Config, listener: ListenerId, peer: &str, replies: Vec<Reply>) -> Self {
        let config = Arc::new(config);
        let peer: IpAddr = peer.parse().unwrap();
        let now = Instant::now();
        let conn = Connection::new(Arc::clone(&config), listener, peer, 7, now);
        let replies = if replies.is_empty() {
            vec![Reply::Ok]
        } else {
            replies
        };
        let mut d = Driver {
            conn,
            config,
            now,
            start: now,
            client_in: Vec::new(),
            to_client: Vec::new(),
            client_eof: false,
            client_closed: false,
            upstreams: Vec::new(),
            held: None,
            idle: Vec::new(),
            pending_connect: None,
            exchange: 0,
            replies,
            reuse: false,
            logs: Vec::new(),
            forwarded: Vec::new(),
            connects_now: 0,
            upstream_bytes_now: 0,
            heap_base: None,
            largest_piece: 0,
            max_engine_heap: 0,
            backpressure: 0,
            faults: 0,
        };
        d.drain();
        d.heap_base = super::live_heap_bytes().map(|b| b.saturating_sub(d.own_heap()));
        d
    }

    fn reply(&self, exchange: usize) -> &Reply {
        &self.replies[exchange % self.replies.len()]
    }

    /// Heap the driver itself holds (so the probe can leave it out).
    fn own_heap(&self) -> usize {
        self.client_in.capacity()
            + self.to_client.capacity()
            + self.upstreams.capacity() * std::mem::size_of::<UpstreamConn>()
            + self
                .upstreams
                .iter()
                .map(|u| u.received.capacity() + u.sent.capacity())
                .sum::<usize>()
            + self.idle.capacity() * std::mem::size_of::<usize>()
            + self.logs.capacity() * std::mem::size_of::<Logged>()
            + self
                .logs
                .iter()
                .map(|l| l.method.capacity() + l.target.capacity())
                .sum::<usize>()
            + self.forwarded.capacity() * std::mem::size_of::<Forwarded>()
            + self.forwarded.iter().map(forwarded_heap).sum::<usize>()
    }

    /// The engine's buffering stays bounded by what it was given at once plus a constant.
    fn check_heap(&mut self) {
        let (Some(base), Some(now)) = (self.heap_base, super::live_heap_bytes()) else {
            return;
        };
        let engine = now.saturating_sub(base).saturating_sub(self.own_heap());
        self.max_engine_heap = self.max_engine_heap.max(engine);
        let bound = HEAP_SLACK + 4 * self.largest_piece;
        assert!(
            engine <= bound,
            "engine holds {engine} heap bytes (bound {bound}; largest piece {})",
            self.largest_piece
        );
    }

    /// Performs every pending output, checking each.
    pub fn drain(&mut self) {
        while let Some(out) = self.conn.poll_output() {
            match out {
                Output::ToClient(b) => {
                    assert!(!self.client_closed, "bytes to a closed client");
                    self.to_client.extend_from_slice(&b);
                }
                Output::ConnectUpstream { pool, fresh, .. } => {
                    assert_eq!(pool, 0, "unknown pool");
                    assert!(self.pending_connect.is_none(), "two connects at once");
                    assert!(self.held.is_none(), "connect while holding a connection");
                    assert!(!self.client_closed, "connect after closing the client");
                    if !fresh {
                        self.exchange += 1;
                    }
                    self.connects_now += 1;
                    self.pending_connect = Some(fresh);
                }
                Output::ToUpstream(b) => {
                    let up = self.held.expect("bytes upstream without a connection");
                    self.upstreams[up].received.extend_from_slice(&b);
                    self.upstream_bytes_now += b.len();
                }
                Output::ReleaseUpstream { reusable } => {
                    if self.pending_connect.take().is_some() {
                        assert!(!reusable, "a connection never made released as reusable");
                    } else {
                        let up = self.held.take().expect("release without a connection");
                        self.release(up, reusable);
                    }
                }
                Output::CloseClient => {
                    assert!(!self.client_closed, "closed twice");
                    self.client_closed = true;
                }
                Output::AccessLog(r) => {
                    self.logs.push(Logged {
                        status: r.status,
                        method: r.method.to_vec(),
                        target: r.target.to_vec(),
                        pool: r.pool,
                        connects: self.connects_now,
                        upstream_bytes: self.upstream_bytes_now,
                    });
                    self.connects_now = 0;
                    self.upstream_bytes_now = 0;
                }
                Output::ExchangeDone(stats) => {
                    // Access logging off: the same bookkeeping, without method and target.
                    self.logs.push(Logged {
                        status: stats.status(),
                        method: Vec::new(),
                        target: Vec::new(),
                        pool: stats.pool(),
                        connects: self.connects_now,
                        upstream_bytes: self.upstream_bytes_now,
                    });
                    self.connects_now = 0;
                    self.upstream_bytes_now = 0;
                }
                Output::UpstreamFault { .. } => {
                    // Reported about the answer on the connection the exchange holds.
                    assert!(self.held.is_some(), "an upstream fault without an upstream");
                    self.faults += 1;
                }
            }
        }
        if self.client_closed {
            assert!(
                self.held.is_none() && self.pending_connect.is_none(),
                "client closed while an upstream is held"
            );
        }
        self.check_heap();
    }

    /// The bytes of the exchange in progress on `up`, as (request, response).
    fn exchange_bytes(&self, up: usize) -> (&[u8], &[u8]) {
        let u = &self.upstreams[up];
        (
            &u.received[u.exchange_start.0..],
            &u.sent[u.exchange_start.1..],
        )
    }

    /// The upstream connection goes back to the pool or is closed. What it carried for the
    /// exchange must be exactly one request, and if reusable, exactly one response.
    fn release(&mut self, up: usize, reusable: bool) {
        let (req, resp) = self.exchange_bytes(up);
        let (req, resp) = (req.to_vec(), resp.to_vec());
        let request = match wire::request_so_far(&req) {
            Ok(Read::Done(m)) => {
                // After a 101 to an upgrade request, what follows is the new protocol.
                let switched = m.head.has("upgrade")
                    && matches!(wire::response(&resp, false, false),
                        Read::Done(ref e) if e.last.head.status == 101);
                assert!(
                    m.len == req.len() || switched,
                    "upstream got bytes after the request: {:?}",
                    String::from_utf8_lossy(&req)
                );
                Ok(m)
            }
            Ok(Read::Bad(e)) => panic!(
                "mxgate sent upstream a request a strict parser refuses ({e}): {:?}",
                String::from_utf8_lossy(&req)
            ),
            Ok(Read::Partial) => panic!(
                "mxgate sent upstream an incomplete head: {:?}",
                String::from_utf8_lossy(&req)
            ),
            Err(partial) => {
                assert!(
                    !reusable,
                    "connection reused after an incomplete request: {:?}",
                    String::from_utf8_lossy(&req)
                );
                Err(partial)
            }
        };
        let head = match &request {
            Ok(m) => &m.head,
            Err(p) => &p.head,
        };
        check_forwarded_head(head);
        let u = &self.upstreams[up];
        if reusable {
            let head_request = head.method == b"HEAD";
            match wire::response(&resp, head_request, false) {
                Read::Done(e) => assert_eq!(
                    e.len,
                    resp.len(),
                    "connection reused with bytes after the response"
                ),
                other => panic!(
                    "connection reused after a response that is not complete ({other:?}): {:?}",
                    String::from_utf8_lossy(&resp)
                ),
            }
            assert!(!u.closed, "a closed connection released as reusable");
        }
        self.forwarded.push(Forwarded {
            conn: up,
            exchange: u.exchange,
            request,
            response_bytes: resp,
            upstream_eof: u.server_eof,
            reusable,
        });
        let u = &mut self.upstreams[up];
        u.exchanges += 1;
        // A runtime's pool drops a connection with unread bytes or a close pending.
        let unread = match self.replies[u.exchange % self.replies.len()] {
            Reply::Bytes { ref data, eof, .. } => u.reply_at < data.len() || eof,
            _ => false,
        };
        if reusable && !unread && !u.closed {
            self.idle.push(up);
        } else {
            u.closed = true;
        }
    }

    /// Puts a connection in the idle pool, as if an earlier exchange had left it there.
    pub fn add_idle(&mut self) {
        self.upstreams.push(UpstreamConn::default());
        self.idle.push(self.upstreams.len() - 1);
    }

    /// Answers a pending connect. Returns whether there was one.
    pub fn answer_connect(&mut self) -> bool {
        let Some(fresh) = self.pending_connect else {
            return false;
        };
        self.pending_connect = None;
        if *self.reply(self.exchange - 1) == Reply::Refuse {
            self.conn.handle_upstream_failed(self.now);
            self.drain();
            return true;
        }
        let (up, reused) = match self.idle.pop() {
            Some(up) if self.reuse && !fresh => (up, true),
            other => {
                if let Some(up) = other {
                    // Not reusing: the runtime closes it.
                    self.upstreams[up].closed = true;
                }
                self.upstreams.push(UpstreamConn::default());
                (self.upstreams.len() - 1, false)
            }
        };
        let u = &mut self.upstreams[up];
        u.exchange_start = (u.received.len(), u.sent.len());
        u.exchange = self.exchange - 1;
        u.reply_at = 0;
        u.reply_piece = 0;
        u.reply_done = false;
        u.server_eof = false;
        self.held = Some(up);
        self.conn.handle_upstream_connected(reused, self.now);
        self.drain();
        true
    }

    /// Lets the upstream server of the held connection do one thing. Returns whether it did.
    pub fn serve_upstream(&mut self) -> bool {
        enum Act {
            Respond(&'static [u8]),
            Close,
            Piece(usize, usize),
            Done(bool),
        }
        let Some(up) = self.held else {
            return false;
        };
        let u = &self.upstreams[up];
        if u.reply_done || u.closed {
            return false;
        }
        let (complete, head_request) = {
            let (req, _) = self.exchange_bytes(up);
            match wire::request_so_far(req) {
                Ok(Read::Done(m)) => (true, m.head.method == b"HEAD"),
                Ok(Read::Partial) => return false,
                Ok(Read::Bad(e)) => panic!(
                    "mxgate sent upstream a request a strict parser refuses ({e}): {:?}",
                    String::from_utf8_lossy(req)
                ),
                Err(p) => (false, p.head.method == b"HEAD"),
            }
        };
        let wants = self.conn.wants_upstream_read();
        let ok = if head_request {
            OK_HEAD_RESPONSE
        } else {
            OK_RESPONSE
        };
        let act = match self.reply(u.exchange) {
            Reply::Ok if complete && wants => Act::Respond(ok),
            Reply::Early if wants => Act::Respond(ok),
            Reply::Eof if complete => Act::Close,
            Reply::Bytes { data, pieces, eof } if complete => {
                if u.reply_at < data.len() {
                    if !wants {
                        return false;
                    }
                    let piece = pieces
                        .get(u.reply_piece % pieces.len().max(1))
                        .copied()
                        .unwrap_or(0);
                    let end = if piece == 0 {
                        data.len()
                    } else {
                        (u.reply_at + piece).min(data.len())
                    };
                    Act::Piece(u.reply_at, end)
                } else {
                    Act::Done(*eof)
                }
            }
            _ => return false,
        };
        let u = &mut self.upstreams[up];
        match act {
            Act::Respond(bytes) => {
                u.reply_done = true;
                u.sent.extend_from_slice(bytes);
                self.conn.handle_upstream_data(bytes, self.now);
            }
            Act::Close => {
                u.reply_done = true;
                u.closed = true;
                u.server_eof = true;
                self.conn.handle_upstream_eof(self.now);
            }
            Act::Piece(from, to) => {
                let Reply::Bytes { data, .. } = &self.replies[u.exchange % self.replies.len()]
                else {
                    unreachable!()
                };
                u.reply_at = to;
                u.reply_piece += 1;
                u.sent.extend_from_slice(&data[from..to]);
                self.largest_piece = self.largest_piece.max(to - from);
                self.conn.handle_upstream_data(&data[from..to], self.now);
            }
            Act::Done(eof) => {
                u.reply_done = true;
                if eof {
                    u.closed = true;
                    u.server_eof = true;
                    self.conn.handle_upstream_eof(self.now);
                }
            }
        }
        self.drain();
        true
    }

    /// Does everything the upstream side can do without time passing.
    pub fn settle(&mut self) {
        while self.answer_connect() || self.serve_upstream() {}
    }

    /// Jumps to the next deadline and handles it. Returns whether there was one.
    pub fn fire_timer(&mut self) -> bool {
        let Some((at, _)) = self.conn.poll_timeout() else {
            return false;
        };
        self.now = self.now.max(at);
        self.conn.handle_timeout(self.now);
        self.drain();
        true
    }

    /// Feeds client bytes (the driver must only do so when the engine wants them).
    pub fn client_data(&mut self, bytes: &[u8]) {
        self.largest_piece = self.largest_piece.max(bytes.len());
        self.client_in.extend_from_slice(bytes);
        self.conn.handle_client_data(bytes, self.now);
        self.drain();
    }

    pub fn client_eof(&mut self) {
        self.client_eof = true;
        self.conn.handle_client_eof(self.now);
        self.drain();
    }

    /// Sends `input` in pieces of the given sizes (cycled; 0 = all the rest), respecting
    /// backpressure and letting the upstream and the timers act; then perhaps a client EOF;
    /// then runs until the connection closes.
    pub fn run(&mut self, input: &[u8], pieces: &[usize], eof: bool) {
        let mut at = 0;
        let mut piece = 0;
        while at < input.len() {
            self.settle();
            if self.client_closed {
                break;
            }
            if !self.conn.wants_client_read() {
                self.backpressure += 1;
                if !self.fire_timer() {
                    break;
                }
                continue;
            }
            let size = pieces
                .get(piece % pieces.len().max(1))
                .copied()
                .unwrap_or(0);
            piece += 1;
            let end = if size == 0 {
                input.len()
            } else {
                (at + size).min(input.len())
            };
            self.client_data(&input[at..end]);
            at = end;
        }
        if eof && !self.client_closed {
            self.settle();
            self.client_eof();
        }
        self.finish();
    }

    /// Runs until the connection is closed: the upstream acts, timers fire; with nothing
    /// else left, the upstream of a tunnel and then the client close.
    pub fn finish(&mut self) {
        for _ in 0..10_000 {
            self.settle();
            if self.conn.is_closed() {
                break;
            }
            if self.fire_timer() {
                continue;
            }
            if let Some(up) = self.held {
                if !self.upstreams[up].closed {
                    // Only a tunnel waits without a deadline.
                    assert!(
                        self.to_client.windows(13).any(|w| w == b"HTTP/1.1 101 "),
                        "an exchange waits on its upstream with no deadline"
                    );
                    self.upstreams[up].closed = true;
                    self.upstreams[up].server_eof = true;
                    self.conn.handle_upstream_eof(self.now);
                    self.drain();
                    continue;
                }
            }
            if !self.client_eof {
                self.client_eof();
                continue;
            }
            panic!("engine stuck: not closed, no deadline, nothing to wait for");
        }
        assert!(self.conn.is_closed(), "engine never closed");
        assert!(self.client_closed, "closed without telling the runtime");
        assert!(self.held.is_none() && self.pending_connect.is_none());
        assert!(
            self.conn.poll_timeout().is_none(),
            "deadline left on a closed connection"
        );
        assert!(!self.conn.wants_client_read() && !self.conn.wants_upstream_read());
    }

    /// The common checks after [`Driver::run`]; returns the client's requests as a strict
    /// reader splits them and the responses the client got.
    pub fn check(&self) -> Outcome {
        let requests = split_requests(&self.client_in);
        let responses = split_responses(&self.to_client, &requests.heads, self.client_closed);
        // Nothing went upstream for a request refused before routing.
        for l in &self.logs {
            if [400, 413, 414, 417, 431, 501, 505].contains(&l.status) && l.connects == 0 {
                assert_eq!(l.upstream_bytes, 0, "bytes upstream for a refused request");
            }
        }
        // No more final responses than requests, and every one complete unless cut.
        assert!(
            responses.finals.len() <= requests.heads.len() + 1,
            "more responses than requests: {} for {}",
            responses.finals.len(),
            requests.heads.len()
        );
        // Each forwarded request is one the strict reader found in the client's stream, in
        // order, with the same body.
        let body_kind = |f: wire::Framing| match f {
            wire::Framing::Empty => 0,
            wire::Framing::Length(_) | wire::Framing::Chunked => 1,
            wire::Framing::UntilClose => 2,
        };
        let mut next = 0;
        let mut last: Option<(usize, usize)> = None; // (exchange, request index)
        for f in &self.forwarded {
            let (head, body, complete) = match &f.request {
                Ok(m) => (&m.head, &m.body, true),
                Err(p) => (&p.head, &p.body_prefix, false),
            };
            let index = match last {
                // A retry: the same request again.
                Some((exchange, i)) if exchange == f.exchange => i,
                _ => {
                    // Pair with a client request of the same method and target. When the
                    // client sent several such requests and one of them never went
                    // upstream (an earlier upstream failure closed the connection, say),
                    // prefer the one whose body framing agrees, so that an identical
                    // neighbour is not mistaken for it; a body that really appeared or
                    // vanished still finds no agreeing request and fails below.
                    let upstream_kind = match &f.request {
                        Ok(m) => body_kind(m.framing),
                        Err(p) => body_kind(p.framing),
                    };
                    // An absolute-form target goes upstream in origin form.
                    let same = |r: &&ClientRequest| {
                        r.head.method == head.method
                            && wire::origin_form(&r.head.target) == head.target
                    };
                    let rest = &requests.heads[next..];
                    let found = rest
                        .iter()
                        .position(|r| same(&r) && r.framing.map(body_kind) == Some(upstream_kind))
                        .or_else(|| rest.iter().position(|r| same(&r)));
                    let Some(i) = found else {
                        panic!(
                            "mxgate forwarded {} {} which a strict reader of the client's bytes does not find (it stopped: {:?})",
                            String::from_utf8_lossy(&head.method),
                            String::from_utf8_lossy(&head.target),
                            requests.stop
                        );
                    };
                    next + i
                }
            };
            last = Some((f.exchange, index));
            next = index + 1;
            let r = &requests.heads[index];
            let Some(framing) = r.framing else {
                panic!(
                    "mxgate forwarded a request whose framing a strict reader refuses: {:?}",
                    requests.stop
                );
            };
            let upstream_framing = match &f.request {
                Ok(m) => m.framing,
                Err(p) => p.framing,
            };
            assert_eq!(
                body_kind(framing),
                body_kind(upstream_framing),
                "a body appeared or vanished on the way upstream"
            );
            match &r.body {
                Some(client_body) if complete => assert_eq!(
                    client_body, body,
                    "the upstream got another body than the client sent"
                ),
                Some(client_body) => assert!(
                    client_body.starts_with(body),
                    "the upstream got body bytes the client did not send"
                ),
                None => assert!(
                    !complete,
                    "the upstream got a whole body the client never sent whole"
                ),
            }
        }
        Outcome {
            requests,
            responses,
        }
    }
}

fn forwarded_heap(f: &Forwarded) -> usize {
    let head_heap = |h: &wire::Head| {
        h.method.capacity()
            + h.target.capacity()
            + h.headers.capacity() * std::mem::size_of::<(Vec<u8>, Vec<u8>)>()
            + h.headers
                .iter()
                .map(|(n, v)| n.capacity() + v.capacity())
                .sum::<usize>()
    };
    f.response_bytes.capacity()
        + match &f.request {
            Ok(m) => head_heap(&m.head) + m.body.capacity(),
            Err(p) => head_heap(&p.head) + p.body_prefix.capacity(),
        }
}

/// What a request head that mxgate wrote must look like.
fn check_forwarded_head(head: &wire::Head) {
    assert_eq!(head.version, 1, "forwarded as HTTP/1.{}", head.version);
    assert_eq!(head.values("host").count(), 1, "forwarded without one Host");
    for name in ["x-forwarded-for", "x-forwarded-proto", "x-request-id"] {
        assert_eq!(head.values(name).count(), 1, "{name} not set exactly once");
    }
    for name in ["proxy-connection", "keep-alive", "te", "trailer", "expect"] {
        assert!(!head.has(name), "hop-by-hop {name} forwarded");
    }
}

/// One request as a strict reader splits the client's bytes.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub head: wire::Head,
    /// `None`: a strict reader cannot delimit its body.
    pub framing: Option<wire::Framing>,
    /// The whole body; `None` if it did not all arrive.
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
pub struct Requests {
    pub heads: Vec<ClientRequest>,
    /// Why the reader stopped before the end, if it did.
    pub stop: Option<String>,
}

/// Splits the client's bytes into requests, stopping at the first it cannot delimit.
pub fn split_requests(input: &[u8]) -> Requests {
    let mut out = Requests::default();
    let mut at = 0;
    while at < input.len() {
        match wire::request_so_far(&input[at..]) {
            Ok(Read::Done(m)) => {
                at += m.len;
                out.heads.push(ClientRequest {
                    head: m.head,
                    framing: Some(m.framing),
                    body: Some(m.body),
                });
            }
            Ok(Read::Partial) => {
                out.stop = Some("partial head".into());
                break;
            }
            Ok(Read::Bad(e)) => {
                // The head may still be readable (a framing error, or a malformed chunked
                // body): keep it for the response's method.
                if let Read::Done(head) = wire::request_head(&input[at..]) {
                    out.heads.push(ClientRequest {
                        framing: wire::request_framing(&head).ok(),
                        head,
                        body: None,
                    });
                }
                out.stop = Some(e);
                break;
            }
            Err(p) => {
                out.heads.push(ClientRequest {
                    head: p.head,
                    framing: Some(p.framing),
                    body: None,
                });
                out.stop = Some("partial body".into());
                break;
            }
        }
    }
    out
}

#[derive(Debug, Clone, Default)]
pub struct Responses {
    /// Final responses, in order (interim ones inside).
    pub finals: Vec<wire::Exchange>,
    /// Offsets in the client's bytes where each final response starts.
    pub starts: Vec<usize>,
    /// What is left after the complete responses (a cut response, or a tunnel).
    pub rest: Vec<u8>,
    /// The reader's verdict on `rest` (Partial when cut).
    pub rest_read: Option<Read<wire::Exchange>>,
    /// A 101 ended the reading: `rest` is tunnelled bytes.
    pub switched: bool,
}

/// Splits what the client received into responses, pairing the k-th with the k-th request
/// (for HEAD). `closed`: the client connection is closed (ends a close-delimited body).
pub fn split_responses(out: &[u8], requests: &[ClientRequest], closed: bool) -> Responses {
    let mut r = Responses::default();
    let mut at = 0;
    while at < out.len() {
        let k = r.finals.len();
        let head_request = requests.get(k).is_some_and(|q| q.head.method == b"HEAD");
        let mut read = wire::response(&out[at..], head_request, closed);
        if requests.get(k).is_none() && !matches!(read, Read::Done(_)) {
            // The strict reader could not read this request, so its method is unknown:
            // the answer (to a garbled `HEAD …`, say) may have no body.
            if let Read::Done(e) = wire::response(&out[at..], true, closed) {
                read = Read::Done(e);
            }
        }
        if head_request {
            // A response to HEAD has no body. If what follows only reads as its body, the
            // engine sent one (known core bug `head-error-body`).
            // (mxgate's own answers always carry a Content-Length.)
            let next_is_bad = match &read {
                Read::Done(h) if h.len < out.len() - at => {
                    match wire::response(&out[at + h.len..], false, closed) {
                        Read::Done(_) => false,
                        // Cut off for good, or unreadable: not a response.
                        Read::Partial => closed,
                        Read::Bad(_) => true,
                    }
                }
                _ => false,
            };
            if let (true, Read::Done(e)) = (next_is_bad, wire::response(&out[at..], false, closed))
            {
                let bodied =
                    matches!(e.last.framing, wire::Framing::Length(_)) && e.len == out.len() - at;
                if bodied {
                    assert!(
                        tolerated("head-error-body"),
                        "a response to HEAD carried a body: {:?}",
                        String::from_utf8_lossy(&out[at..])
                    );
                    read = Read::Done(e);
                }
            }
        }
        match read {
            Read::Done(e) => {
                let switched = e.last.head.status == 101;
                r.starts.push(at);
                at += e.len;
                r.finals.push(e);
                if switched {
                    r.switched = true;
                    break;
                }
            }
            Read::Bad(e) => panic!(
                "the client got bytes a strict reader refuses ({e}): {:?}",
                String::from_utf8_lossy(&out[at..])
            ),
            other => {
                r.rest_read = Some(other);
                break;
            }
        }
    }
    r.rest = out[at..].to_vec();
    r
}

/// Everything the common checks found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub requests: Requests,
    pub responses: Responses,
}

/// Reads the fuzz input's header: a flags byte, a count, then that many piece sizes.
/// Returns `(flags, pieces, rest)`.
pub fn header(data: &[u8]) -> Option<(u8, Vec<usize>, &[u8])> {
    let (&flags, rest) = data.split_first()?;
    let (&n, rest) = rest.split_first()?;
    let n = usize::from(n % 8);
    if rest.len() < n {
        return None;
    }
    let (sizes, rest) = rest.split_at(n);
    Some((flags, sizes.iter().map(|&s| usize::from(s)).collect(), rest))
}
