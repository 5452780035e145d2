//! ns per HTTP/2 stream through the engine alone: a browser-like GET (HPACK-indexed after
//! the first) in, the request event out, a small JSON response head and body back out.
//! `cargo bench -p mxgate-core --bench h2_exchange`.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mxgate_core::http2::frame::{self, flag, kind};
use mxgate_core::http2::{hpack, Connection, Event, Limits, PREFACE};

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

fn h2(c: &mut Criterion) {
    let mut b = Bench::new();
    c.bench_function("h2 stream: GET in, 200 + 61-byte body out", |bench| {
        bench.iter(|| black_box(b.one()))
    });
}

criterion_group!(benches, h2);
criterion_main!(benches);
