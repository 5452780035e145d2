//! ns per HTTP/2 stream through the engine alone: a browser-like GET (HPACK-indexed after
//! the first) in, the request event out, a small JSON response head and body back out; and
//! through the whole `Http2Session` (the request in, the HTTP/1.1 exchange's upstream bytes
//! out, the upstream's response in, the frames out), one stream at a time and 100 at once.
//! `cargo bench -p mxgate-core --bench h2_exchange`.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mxgate_core::config::Config;
use mxgate_core::http2::frame::{self, flag, kind};
use mxgate_core::http2::{hpack, Connection, Event, Limits, PREFACE};
use mxgate_core::{Http2Session, Output, SessionOutput};

#[path = "../tests/common/mod.rs"]
#[allow(dead_code)] // the request constants serve the other benches
mod common;
use common::{bench_config, RESPONSE};

const FIELDS: [(&[u8], &[u8]); 8] = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"matrix.example.org"),
    (b":path", b"/_matrix/client/v3/profile/@alice:example.org"),
    (
        b"user-agent",
        b"Mozilla/5.0 (X11; Linux x86_64) Element/1.11",
    ),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (
        b"authorization",
        b"Bearer syt_YWxpY2U_abcdefghijklmnop_0123456",
    ),
];

const BODY: &[u8] = b"{\"displayname\":\"Alice\",\"avatar_url\":\"mxc://example.org/abc\"}";

struct Bench {
    conn: Connection,
    now: Instant,
    /// The request block once the dynamic table holds its fields (reusable).
    block: Bytes,
    next: u32,
    input: BytesMut,
}

impl Bench {
    fn new() -> Bench {
        let now = Instant::now();
        let mut conn = Connection::new(Limits::default(), now);
        let mut enc = hpack::Encoder::new();
        let mut hello = BytesMut::from(&PREFACE[..]);
        frame::encode_settings(&mut hello, &[]);
        frame::encode_settings_ack(&mut hello);
        let mut first = BytesMut::new();
        enc.encode(FIELDS, &mut first);
        frame::encode_headers(&mut hello, 1, &first, true, 16_384);
        conn.handle_data(&hello, now);
        let mut b = Bench {
            conn,
            now,
            block: Bytes::new(),
            next: 1,
            input: BytesMut::new(),
        };
        b.drain();
        let mut warm = BytesMut::new();
        enc.encode(FIELDS, &mut warm);
        b.block = warm.freeze();
        b.next = 3;
        b
    }

    fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(e) = self.conn.poll_event() {
            if let Event::Request { stream, request } = e {
                n += request.path.len();
                let _ = self.conn.send_response_head(
                    stream,
                    200,
                    [
                        (&b"content-type"[..], &b"application/json"[..]),
                        (b"content-length", b"61"),
                        (b"x-request-id", b"a1b2c3d4e5f6"),
                    ],
                    false,
                );
                let _ = self.conn.send_data(stream, Bytes::from_static(BODY), true);
            }
        }
        while let Some(b) = self.conn.poll_transmit() {
            n += b.len();
        }
        n
    }

    fn one(&mut self) -> usize {
        self.input.clear();
        frame::encode_frame(
            &mut self.input,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            self.next,
            &self.block,
        );
        frame::encode_window_update(&mut self.input, 0, BODY.len() as u32);
        self.next += 2;
        self.conn.handle_data(&self.input, self.now);
        self.drain()
    }
}

/// A client on an `Http2Session`, with in-memory upstreams that are always connected
/// (reused), take every write at once and answer `RESPONSE`.
struct SessionBench {
    session: Http2Session,
    now: Instant,
    block: Bytes,
    next: u32,
    input: BytesMut,
    /// Streams whose request went upstream, waiting for their answer.
    asked: Vec<u32>,
}

impl SessionBench {
    fn new(config: Arc<Config>) -> SessionBench {
        let now = Instant::now();
        let mut session = Http2Session::new(config, 0, "203.0.113.5".parse().unwrap(), 7, now);
        let mut enc = hpack::Encoder::new();
        let mut hello = BytesMut::from(&PREFACE[..]);
        frame::encode_settings(&mut hello, &[]);
        frame::encode_settings_ack(&mut hello);
        // The client's connection window, large enough for every answer of the run.
        frame::encode_window_update(&mut hello, 0, (1 << 31) - 1 - 65_535);
        let mut first = BytesMut::new();
        enc.encode(FIELDS, &mut first);
        frame::encode_headers(&mut hello, 1, &first, true, 16_384);
        session.handle_client_data(&hello, now);
        let mut b = SessionBench {
            session,
            now,
            block: Bytes::new(),
            next: 3,
            input: BytesMut::new(),
            asked: Vec::new(),
        };
        b.drain();
        b.answer();
        let mut warm = BytesMut::new();
        enc.encode(FIELDS, &mut warm);
        b.block = warm.freeze();
        b
    }

    /// Performs the session's outputs; returns the bytes for the client and the upstreams.
    fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(out) = self.session.poll_output() {
            match out {
                SessionOutput::ToClient(b) => n += b.len(),
                SessionOutput::Exchange { stream, output } => match output {
                    Output::ConnectUpstream { .. } => self
                        .session
                        .handle_upstream_connected(stream, true, self.now),
                    Output::ToUpstream(b) => {
                        n += b.len();
                        self.asked.push(stream);
                    }
                    _ => {}
                },
                SessionOutput::CloseClient => {}
            }
        }
        n
    }

    /// Every upstream asked reports its write done and answers.
    fn answer(&mut self) -> usize {
        let mut n = 0;
        for stream in std::mem::take(&mut self.asked) {
            self.session.handle_upstream_written(stream, self.now);
            n += self.drain();
            self.session
                .handle_upstream_data(stream, RESPONSE, self.now);
            n += self.drain();
        }
        n
    }

    /// `streams` GETs in one read, then their upstreams answer one by one.
    fn round(&mut self, streams: u32) -> usize {
        self.input.clear();
        for _ in 0..streams {
            frame::encode_frame(
                &mut self.input,
                kind::HEADERS,
                flag::END_HEADERS | flag::END_STREAM,
                self.next,
                &self.block,
            );
            self.next += 2;
        }
        self.session.handle_client_data(&self.input, self.now);
        self.drain() + self.answer()
    }
}

fn h2(c: &mut Criterion) {
    let mut b = Bench::new();
    c.bench_function("h2 stream: GET in, 200 + 61-byte body out", |bench| {
        bench.iter(|| black_box(b.one()))
    });
    let config = bench_config("off");
    // Stream ids run out after 2^30 streams: far beyond a bench run.
    let mut s = SessionBench::new(config.clone());
    c.bench_function(
        "h2 session: 1 GET through the exchange and upstream",
        |bench| bench.iter(|| black_box(s.round(1))),
    );
    let mut s = SessionBench::new(config);
    c.bench_function("h2 session: 100 GETs at once (per round of 100)", |bench| {
        bench.iter(|| black_box(s.round(100)))
    });
}

criterion_group!(benches, h2);
criterion_main!(benches);
