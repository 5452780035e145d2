//! HTTP/2 streams through the whole proxy (`Http2Session`): an in-memory h2 client, the
//! session, and one in-memory upstream per stream. Each test checks what a user would
//! notice: what reaches Synapse, what the client receives, that streams do not wait on
//! each other, and that flow control follows the upstream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::harness::{config, CLIENT_HTTPS};
use crate::config::Config;
use crate::http2::frame::{self, flag, kind, ErrorCode, Frame, FrameDecoder};
use crate::http2::{hpack, PREFACE};
use crate::{AccessRecord, Http2Session, Output, SessionOutput};

#[derive(Default, Debug)]
struct Upstream {
    connected: bool,
    received: Vec<u8>,
    released: Option<bool>,
}

/// What the client got on one stream.
#[derive(Default, Debug, Clone)]
struct Answer {
    fields: Vec<(String, String)>,
    /// Interim heads' statuses.
    interim: Vec<u16>,
    body: Vec<u8>,
    ended: bool,
    reset: Option<ErrorCode>,
}

impl Answer {
    fn status(&self) -> u16 {
        self.field(":status").map_or(0, |s| s.parse().unwrap())
    }
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct H2Harness {
    session: Http2Session,
    now: Instant,
    enc: hpack::Encoder,
    dec: hpack::Decoder,
    rx: BytesMut,
    upstreams: BTreeMap<u32, Upstream>,
    /// Streams whose connect is asked for and not yet answered.
    connecting: Vec<u32>,
    answers: BTreeMap<u32, Answer>,
    goaway: Option<ErrorCode>,
    /// Connection-level WINDOW_UPDATE increments received.
    conn_window_updates: u64,
    stream_window_updates: BTreeMap<u32, u64>,
    closed: bool,
    logs: Vec<AccessRecord>,
    /// With `auto_written`, upstream writes are reported done as soon as they are made.
    auto_written: bool,
}

const GET: [(&str, &str); 4] = [
    (":method", "GET"),
    (":scheme", "https"),
    (":authority", "matrix.example.org"),
    (":path", "/_matrix/client/versions"),
];

fn fields<'a>(
    method: &'a str,
    path: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut f = vec![
        (":method", method),
        (":scheme", "https"),
        (":authority", "matrix.example.org"),
        (":path", path),
    ];
    f.extend_from_slice(extra);
    f
}

impl H2Harness {
    fn new() -> Self {
        Self::with_config(config())
    }

    fn with_config(config: Config) -> Self {
        let now = crate::tests::epoch();
        let session = Http2Session::new(
            Arc::new(config),
            CLIENT_HTTPS,
            "203.0.113.9".parse().unwrap(),
            7,
            now,
        );
        let mut h = H2Harness {
            session,
            now,
            enc: hpack::Encoder::new(),
            dec: hpack::Decoder::new(65_536),
            rx: BytesMut::new(),
            upstreams: BTreeMap::new(),
            connecting: Vec::new(),
            answers: BTreeMap::new(),
            goaway: None,
            conn_window_updates: 0,
            stream_window_updates: BTreeMap::new(),
            closed: false,
            logs: Vec::new(),
            auto_written: true,
        };
        let mut hello = BytesMut::from(&PREFACE[..]);
        frame::encode_settings(&mut hello, &[]);
        frame::encode_settings_ack(&mut hello);
        h.send(&hello);
        h
    }

    fn send(&mut self, bytes: &[u8]) {
        self.session.handle_client_data(bytes, self.now);
        self.drain();
    }

    fn drain(&mut self) {
        let mut written = Vec::new();
        while let Some(out) = self.session.poll_output() {
            match out {
                SessionOutput::ToClient(b) => {
                    assert!(!self.closed, "bytes after close");
                    self.rx.extend_from_slice(&b);
                }
                SessionOutput::CloseClient => self.closed = true,
                SessionOutput::Exchange { stream, output } => match output {
                    Output::ConnectUpstream { .. } => {
                        assert!(
                            !self.upstreams.contains_key(&stream),
                            "one upstream per stream"
                        );
                        self.upstreams.insert(stream, Upstream::default());
                        self.connecting.push(stream);
                    }
                    Output::ToUpstream(b) => {
                        let up = self.upstreams.get_mut(&stream).expect("connected first");
                        assert!(up.connected && up.released.is_none());
                        up.received.extend_from_slice(&b);
                        written.push(stream);
                    }
                    Output::ReleaseUpstream { reusable } => {
                        self.connecting.retain(|s| *s != stream);
                        if let Some(up) = self.upstreams.get_mut(&stream) {
                            up.released = Some(reusable);
                        }
                    }
                    Output::AccessLog(r) => self.logs.push(*r),
                    Output::ExchangeDone(_) | Output::UpstreamFault { .. } => {}
                    Output::ToClient(_) | Output::CloseClient => {
                        panic!("client output named an exchange")
                    }
                },
            }
        }
        self.read_frames();
        if self.auto_written {
            written.dedup();
            let again = !written.is_empty();
            for s in written {
                self.session.handle_upstream_written(s, self.now);
            }
            if again {
                self.drain();
            }
        }
    }

    fn read_frames(&mut self) {
        let dec = FrameDecoder::new(frame::MAX_MAX_FRAME_SIZE);
        while let Some(f) = dec.decode(&mut self.rx).expect("server frames are valid") {
            match f {
                Frame::Headers {
                    stream,
                    block,
                    end_stream,
                    ..
                } => {
                    let mut out = Vec::new();
                    self.dec
                        .decode(&block, usize::MAX, &mut out)
                        .expect("server HPACK is valid");
                    let fields: Vec<(String, String)> = out
                        .into_iter()
                        .map(|(n, v)| {
                            (
                                String::from_utf8_lossy(&n).into_owned(),
                                String::from_utf8_lossy(&v).into_owned(),
                            )
                        })
                        .collect();
                    let a = self.answers.entry(stream).or_default();
                    let status: u16 = fields[0].1.parse().unwrap();
                    if status < 200 {
                        a.interim.push(status);
                    } else {
                        assert!(a.fields.is_empty(), "two final heads on {stream}");
                        a.fields = fields;
                    }
                    a.ended |= end_stream;
                }
                Frame::Data {
                    stream,
                    data,
                    end_stream,
                    ..
                } => {
                    let a = self.answers.entry(stream).or_default();
                    assert!(!a.fields.is_empty(), "DATA before HEADERS on {stream}");
                    assert!(!a.ended, "DATA after END_STREAM on {stream}");
                    a.body.extend_from_slice(&data);
                    a.ended |= end_stream;
                }
                Frame::RstStream { stream, code } => {
                    self.answers.entry(stream).or_default().reset = Some(code);
                }
                Frame::GoAway { code, .. } => self.goaway = Some(code),
                Frame::WindowUpdate {
                    stream: 0,
                    increment,
                } => self.conn_window_updates += u64::from(increment),
                Frame::WindowUpdate { stream, increment } => {
                    *self.stream_window_updates.entry(stream).or_default() += u64::from(increment)
                }
                _ => {}
            }
        }
    }

    fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) {
        let mut block = BytesMut::new();
        self.enc.encode(
            fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            &mut block,
        );
        let mut b = BytesMut::new();
        frame::encode_headers(&mut b, stream, &block, end_stream, 16_384);
        self.send(&b);
    }

    fn data(&mut self, stream: u32, payload: &[u8], end_stream: bool) {
        let mut b = BytesMut::new();
        for (i, chunk) in payload.chunks(16_384).enumerate() {
            let last = (i + 1) * 16_384 >= payload.len();
            let flags = if end_stream && last {
                flag::END_STREAM
            } else {
                0
            };
            frame::encode_frame(&mut b, kind::DATA, flags, stream, chunk);
        }
        if payload.is_empty() {
            let flags = if end_stream { flag::END_STREAM } else { 0 };
            frame::encode_frame(&mut b, kind::DATA, flags, stream, b"");
        }
        self.send(&b);
    }

    fn rst(&mut self, stream: u32, code: ErrorCode) {
        let mut b = BytesMut::new();
        frame::encode_frame(&mut b, kind::RST_STREAM, 0, stream, &code.0.to_be_bytes());
        self.send(&b);
    }

    fn connect(&mut self, stream: u32) {
        assert!(
            self.connecting.contains(&stream),
            "no connect asked for {stream}: {:?}",
            self.connecting
        );
        self.connecting.retain(|s| *s != stream);
        self.upstreams.get_mut(&stream).unwrap().connected = true;
        self.session
            .handle_upstream_connected(stream, false, self.now);
        self.drain();
    }

    fn upstream(&mut self, stream: u32, bytes: &[u8]) {
        self.session.handle_upstream_data(stream, bytes, self.now);
        self.drain();
    }

    fn upstream_eof(&mut self, stream: u32) {
        self.session.handle_upstream_eof(stream, self.now);
        self.drain();
    }

    fn upstream_text(&self, stream: u32) -> String {
        String::from_utf8_lossy(&self.upstreams[&stream].received).into_owned()
    }

    fn answer(&self, stream: u32) -> Answer {
        self.answers.get(&stream).cloned().unwrap_or_default()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.session.handle_timeout(self.now);
        self.drain();
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}";

#[test]
fn a_get_reaches_the_upstream_as_http11_and_comes_back_as_frames() {
    let mut h = H2Harness::new();
    h.headers(1, &GET, true);
    h.connect(1);
    let up = h.upstream_text(1);
    assert!(
        up.starts_with("GET /_matrix/client/versions HTTP/1.1\r\n"),
        "{up}"
    );
    assert!(
        up.to_ascii_lowercase()
            .contains("host: matrix.example.org\r\n"),
        "{up}"
    );
    assert!(up.contains("X-Forwarded-For: 203.0.113.9\r\n"), "{up}");
    assert!(up.contains("X-Forwarded-Proto: https\r\n"), "{up}");
    h.upstream(1, OK);
    let a = h.answer(1);
    assert_eq!(a.status(), 200);
    assert_eq!(a.body, b"{}");
    assert!(a.ended);
    assert_eq!(a.field("content-type"), Some("application/json"));
    assert_eq!(
        a.field("connection"),
        None,
        "no connection-specific field: {:?}",
        a.fields
    );
    assert!(a.field("x-request-id").is_some(), "{:?}", a.fields);
    assert_eq!(
        h.upstreams[&1].released,
        Some(true),
        "the upstream connection is pooled"
    );
    assert_eq!(h.logs.len(), 1);
    assert_eq!(h.logs[0].version, "HTTP/2.0");
    assert_eq!(h.logs[0].status, 200);
    assert!(h.session.is_idle());
}

#[test]
fn the_path_reaches_the_upstream_byte_for_byte() {
    let mut h = H2Harness::new();
    let path = "/_matrix/client/v3/rooms/%21abc%3Aexample.org/state/m.room.name/%2F?x=%2F%2e&y=a+b";
    h.headers(1, &fields("GET", path, &[]), true);
    h.connect(1);
    assert!(h
        .upstream_text(1)
        .starts_with(&format!("GET {path} HTTP/1.1\r\n")));
}

#[test]
fn a_long_poll_on_one_stream_never_delays_another() {
    let mut h = H2Harness::new();
    h.headers(
        1,
        &fields("GET", "/_matrix/client/v3/sync?timeout=30000", &[]),
        true,
    );
    h.connect(1);
    h.headers(3, &GET, true);
    h.connect(3);
    h.upstream(3, OK);
    assert_eq!(h.answer(3).status(), 200);
    assert!(h.answer(3).ended);
    assert_eq!(h.answer(1).status(), 0, "the long-poll is still waiting");
    h.advance(Duration::from_secs(29));
    h.upstream(1, OK);
    assert_eq!(h.answer(1).status(), 200);
    assert_eq!(h.upstreams.len(), 2, "one upstream connection per stream");
}

#[test]
fn a_body_of_unknown_length_goes_up_chunked_and_windows_follow_the_upstream() {
    let mut h = H2Harness::new();
    h.auto_written = false;
    let initial = h.conn_window_updates;
    h.headers(
        1,
        &fields(
            "POST",
            "/_matrix/client/v3/rooms/!r:x/send/m.room.message/1",
            &[],
        ),
        false,
    );
    h.data(1, b"hello ", false);
    assert!(
        h.upstreams[&1].received.is_empty(),
        "nothing goes up before the connection"
    );
    h.connect(1);
    let up = h.upstream_text(1);
    assert!(
        up.to_ascii_lowercase()
            .contains("transfer-encoding: chunked\r\n"),
        "{up}"
    );
    assert!(up.ends_with("6\r\nhello \r\n"), "{up}");
    assert_eq!(
        h.conn_window_updates, initial,
        "nothing released before the write is done"
    );
    h.session.handle_upstream_written(1, h.now);
    h.drain();
    h.data(1, b"world", true);
    h.session.handle_upstream_written(1, h.now);
    h.drain();
    assert!(h.upstream_text(1).ends_with("5\r\nworld\r\n0\r\n\r\n"));
    h.upstream(
        1,
        b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"event_id\":1}",
    );
    let a = h.answer(1);
    assert_eq!(a.status(), 200);
    assert!(a.ended);
}

#[test]
fn a_body_with_content_length_goes_up_as_is() {
    let mut h = H2Harness::new();
    let body = vec![b'x'; 150_000];
    h.headers(
        1,
        &fields(
            "PUT",
            "/_matrix/media/v3/upload",
            &[("content-length", "150000")],
        ),
        false,
    );
    h.connect(1);
    h.data(1, &body, false);
    let window_updates = h.stream_window_updates.get(&1).copied().unwrap_or(0);
    h.data(1, b"", true);
    let up = h.upstreams[&1].received.clone();
    let head_end = up.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(String::from_utf8_lossy(&up[..head_end])
        .to_ascii_lowercase()
        .contains("content-length: 150000"));
    assert_eq!(&up[head_end..], &body[..]);
    // Windows are granted back as the upstream takes the bytes (batched at half a window).
    assert!(
        window_updates >= 131_072,
        "the client may send more: {:?}",
        h.stream_window_updates
    );
}

#[test]
fn a_chunked_response_is_sent_unframed_and_ends_with_the_stream() {
    let mut h = H2Harness::new();
    h.headers(1, &GET, true);
    h.connect(1);
    h.upstream(
        1,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    );
    let a = h.answer(1);
    assert_eq!(a.status(), 200);
    assert_eq!(a.body, b"hello");
    assert!(!a.ended);
    assert_eq!(a.field("transfer-encoding"), None);
    h.upstream(1, b"6\r\n world\r\n0\r\n\r\n");
    let a = h.answer(1);
    assert_eq!(a.body, b"hello world");
    assert!(a.ended);
    assert_eq!(h.upstreams[&1].released, Some(true));
}

#[test]
fn a_close_delimited_response_ends_the_stream_not_the_connection() {
    let mut h = H2Harness::new();
    h.headers(1, &GET, true);
    h.connect(1);
    h.upstream(1, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it");
    h.upstream_eof(1);
    let a = h.answer(1);
    assert_eq!(a.body, b"all of it");
    assert!(a.ended);
    assert!(!h.closed);
    assert_eq!(h.upstreams[&1].released, Some(false));
    h.headers(3, &GET, true);
    h.connect(3);
    h.upstream(3, OK);
    assert_eq!(h.answer(3).status(), 200);
}

#[test]
fn mxgate_answers_health_and_well_known_itself() {
    let mut h = H2Harness::new();
    h.headers(1, &fields("GET", "/health", &[]), true);
    h.headers(3, &fields("GET", "/.well-known/matrix/client", &[]), true);
    assert!(h.upstreams.is_empty());
    let a = h.answer(1);
    assert_eq!(a.status(), 200);
    assert!(a.ended);
    let a = h.answer(3);
    assert_eq!(a.status(), 200);
    assert!(String::from_utf8_lossy(&a.body).contains("m.homeserver"));
    assert_eq!(a.field("access-control-allow-origin"), Some("*"));
}

#[test]
fn admin_paths_are_refused_over_h2_too() {
    let mut h = H2Harness::new();
    h.headers(1, &fields("GET", "/_synapse/admin/v1/users", &[]), true);
    assert!(h.upstreams.is_empty());
    assert_eq!(h.answer(1).status(), 404);
    h.headers(
        3,
        &fields("GET", "/_matrix/../_synapse/admin/v1/users", &[]),
        true,
    );
    assert!(h.upstreams.is_empty());
    assert_eq!(h.answer(3).status(), 400);
}

#[test]
fn an_oversized_upload_gets_413_and_the_rest_of_the_body_is_refused_politely() {
    let mut config = config();
    config.limits.max_body_bytes = 1000;
    let mut h = H2Harness::with_config(config);
    h.headers(
        1,
        &fields(
            "POST",
            "/_matrix/media/v3/upload",
            &[("content-length", "5000")],
        ),
        false,
    );
    let a = h.answer(1);
    assert_eq!(a.status(), 413);
    assert!(String::from_utf8_lossy(&a.body).contains("M_TOO_LARGE"));
    assert!(a.ended);
    assert_eq!(
        a.reset, None,
        "a client still sending may go on (curl < 8.1 fails on a reset)"
    );
    assert!(h.upstreams.is_empty());
    // What it sends is dropped, its window given back; quiet for `linger_read`: reset.
    h.data(1, &[b'x'; 4000], false);
    assert_eq!(h.answer(1).reset, None);
    h.advance(Duration::from_secs(6));
    assert_eq!(
        h.answer(1).reset,
        Some(ErrorCode::NO_ERROR),
        "RST_STREAM NO_ERROR at last"
    );
    // A body of unknown length that grows too large: 413 as soon as it passes the limit.
    h.headers(3, &fields("POST", "/_matrix/media/v3/upload", &[]), false);
    h.connect(3);
    h.data(3, &[b'y'; 800], false);
    h.data(3, &[b'y'; 800], false);
    let a = h.answer(3);
    assert_eq!(a.status(), 413);
    assert!(a.ended);
    assert_eq!(h.upstreams[&3].released, Some(false));
    assert!(h.goaway.is_none());
}

#[test]
fn a_client_reset_frees_the_upstream_connection() {
    let mut h = H2Harness::new();
    h.headers(
        1,
        &fields("GET", "/_matrix/client/v3/sync?timeout=30000", &[]),
        true,
    );
    h.connect(1);
    h.rst(1, ErrorCode::CANCEL);
    assert_eq!(h.upstreams[&1].released, Some(false));
    assert!(h.session.is_idle());
    // A reset while connecting: the connect is given up.
    h.headers(3, &GET, true);
    h.rst(3, ErrorCode::CANCEL);
    assert!(h.connecting.is_empty());
}

#[test]
fn a_response_cut_by_the_upstream_resets_the_stream() {
    let mut h = H2Harness::new();
    h.headers(1, &GET, true);
    h.connect(1);
    h.upstream(
        1,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
    );
    h.upstream_eof(1);
    let a = h.answer(1);
    assert_eq!(a.body, b"only ten b");
    assert!(!a.ended, "a cut response never looks complete");
    assert_eq!(a.reset, Some(ErrorCode::INTERNAL_ERROR));
    assert!(h.goaway.is_none(), "other streams go on");
}

#[test]
fn an_upstream_that_fails_gets_502_on_its_stream_only() {
    let mut h = H2Harness::new();
    h.headers(1, &GET, true);
    h.session.handle_upstream_failed(1, h.now);
    h.drain();
    assert_eq!(h.answer(1).status(), 502);
    assert!(h.answer(1).ended);
}

#[test]
fn a_method_that_would_change_the_request_line_is_a_stream_error() {
    let mut h = H2Harness::new();
    h.headers(1, &fields("GET /admin HTTP/1.1", "/x", &[]), true);
    assert!(h.upstreams.is_empty());
    assert_eq!(h.answer(1).reset, Some(ErrorCode::PROTOCOL_ERROR));
    h.headers(3, &fields("GET", "/a b", &[]), true);
    assert!(h.upstreams.is_empty());
    assert_eq!(h.answer(3).reset, Some(ErrorCode::PROTOCOL_ERROR));
}

#[test]
fn a_response_larger_than_the_window_waits_for_window_updates() {
    let mut h = H2Harness::new();
    h.headers(1, &GET, true);
    h.connect(1);
    let body = vec![b'z'; 200_000];
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n".to_vec();
    resp.extend_from_slice(&body);
    h.upstream(1, &resp);
    let a = h.answer(1);
    assert_eq!(a.body.len(), 65_535, "the client's initial window");
    assert!(
        !h.session.wants_upstream_read(1),
        "the upstream is not read while the client lags"
    );
    let mut b = BytesMut::new();
    frame::encode_frame(&mut b, kind::WINDOW_UPDATE, 0, 0, &200_000u32.to_be_bytes());
    frame::encode_frame(&mut b, kind::WINDOW_UPDATE, 0, 1, &200_000u32.to_be_bytes());
    h.send(&b);
    let a = h.answer(1);
    assert_eq!(a.body, body);
    assert!(a.ended);
}

#[test]
fn shutdown_lets_open_streams_finish_then_closes() {
    let mut h = H2Harness::new();
    h.headers(1, &GET, true);
    h.connect(1);
    h.session.begin_shutdown(h.now);
    h.drain();
    assert!(!h.closed);
    h.upstream(1, OK);
    assert_eq!(h.answer(1).status(), 200);
    h.advance(Duration::from_secs(10));
    assert!(
        h.closed,
        "closed once the streams ended and GOAWAY went out"
    );
}

#[test]
fn upstream_timeouts_apply_per_stream() {
    let mut h = H2Harness::new();
    h.headers(1, &GET, true);
    h.connect(1);
    let at = h.session.poll_timeout().expect("a response deadline");
    h.now = at;
    h.session.handle_timeout(at);
    h.drain();
    assert_eq!(h.answer(1).status(), 504);
}

#[test]
fn the_client_going_away_releases_every_upstream() {
    let mut h = H2Harness::new();
    for id in [1, 3, 5] {
        h.headers(id, &GET, true);
        h.connect(id);
    }
    h.session.handle_client_eof(h.now);
    h.drain();
    for id in [1, 3, 5] {
        assert_eq!(h.upstreams[&id].released, Some(false));
    }
    assert!(h.closed);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any `:path` the engine accepts reaches the upstream byte for byte (or is refused
    /// without reaching it), and splitting the client's bytes anywhere changes nothing.
    #[test]
    fn path_is_forwarded_byte_for_byte_however_the_bytes_are_split(
        path in "/[A-Za-z0-9%!$&'()*+,;=:@/?._~-]{0,60}",
        cuts in proptest::collection::vec(0usize..400, 0..6),
    ) {
        let forwarded = |cuts: &[usize]| {
            let now = crate::tests::epoch();
            let mut session = Http2Session::new(
                Arc::new(config()), CLIENT_HTTPS, "203.0.113.9".parse().unwrap(), 7, now);
            let mut enc = hpack::Encoder::new();
            let mut wire = BytesMut::from(&PREFACE[..]);
            frame::encode_settings(&mut wire, &[]);
            let mut block = BytesMut::new();
            enc.encode(fields("GET", &path, &[]).iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())), &mut block);
            frame::encode_headers(&mut wire, 1, &block, true, 16_384);
            let wire = wire.freeze();
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
            points.sort_unstable();
            let mut up = Vec::new();
            let mut last = 0;
            for p in points.into_iter().chain([wire.len()]) {
                session.handle_client_data(&wire[last..p], now);
                last = p;
                while let Some(out) = session.poll_output() {
                    if let SessionOutput::Exchange { stream, output: Output::ConnectUpstream { .. } } = out {
                        session.handle_upstream_connected(stream, false, now);
                    } else if let SessionOutput::Exchange { output: Output::ToUpstream(b), .. } = out {
                        up.extend_from_slice(&b);
                    }
                }
            }
            up
        };
        let whole = forwarded(&[]);
        if !whole.is_empty() {
            let line = format!("GET {path} HTTP/1.1\r\n");
            prop_assert!(whole.starts_with(line.as_bytes()), "{}", String::from_utf8_lossy(&whole));
        }
        let split = forwarded(&cuts);
        // Request ids are random per exchange: compare everything else.
        let strip = |b: &[u8]| String::from_utf8_lossy(b).lines().filter(|l| !l.starts_with("X-Request-Id")).collect::<Vec<_>>().join("\n");
        prop_assert_eq!(strip(&whole), strip(&split));
    }
}

#[test]
fn stream_outputs_name_their_own_exchange() {
    // Ten streams at once, answered in reverse order: each answer lands on its own stream.
    let mut h = H2Harness::new();
    let ids: Vec<u32> = (0..10).map(|i| 1 + 2 * i).collect();
    for &id in &ids {
        let path = format!("/_matrix/client/v3/profile/@u{id}:x");
        h.headers(id, &fields("GET", &path, &[]), true);
        h.connect(id);
    }
    for &id in ids.iter().rev() {
        assert!(h.upstream_text(id).contains(&format!("@u{id}:x")));
        let body = format!("{{\"id\":{id:04}}}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        h.upstream(id, resp.as_bytes());
    }
    for &id in &ids {
        assert_eq!(h.answer(id).body, format!("{{\"id\":{id:04}}}").as_bytes());
    }
    let _ = Bytes::new();
}

#[test]
fn an_upstream_answering_before_the_body_is_read_reaches_the_client() {
    let mut h = H2Harness::new();
    h.headers(
        1,
        &fields(
            "POST",
            "/_matrix/client/versions",
            &[("content-length", "65535")],
        ),
        false,
    );
    h.connect(1);
    h.data(1, &[b'p'; 60_000], false);
    h.upstream(
        1,
        b"HTTP/1.0 501 Unsupported method\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: 9\r\n\r\nno thanks",
    );
    let a = h.answer(1);
    assert_eq!(a.status(), 501, "{a:?}");
    assert_eq!(a.body, b"no thanks");
    assert!(a.ended);
    // The client finishes its upload: the stream ends cleanly, never reset.
    h.data(1, &[b'p'; 5_535], false);
    h.data(1, b"", true);
    assert_eq!(h.answer(1).reset, None);
    assert!(h
        .session
        .poll_timeout()
        .is_none_or(|t| t > h.now + Duration::from_secs(10)));
}

/// An upload answered by the upstream before it read the body (nginx's `return 200`): the
/// client, still sending, gets window for the whole rest of its body before the answer's
/// END_STREAM (curl 7.88 ignores WINDOW_UPDATE once the response has ended, and stalled
/// at 262,144 bytes), and what it sends is dropped.
#[test]
fn an_upload_answered_early_gets_window_for_the_rest_before_the_answer() {
    for written_before_answer in [false, true] {
        let mut h = H2Harness::new();
        h.auto_written = false;
        h.headers(
            1,
            &fields(
                "POST",
                "/_matrix/media/v3/upload",
                &[("content-length", "500000")],
            ),
            false,
        );
        h.connect(1);
        // The whole stream window (our SETTINGS raised it to 256 KiB).
        for _ in 0..16 {
            h.data(1, &[b'u'; 16_384], false);
        }
        if written_before_answer {
            h.session.handle_upstream_written(1, h.now);
            h.drain();
        }
        let before = h.stream_window_updates.get(&1).copied().unwrap_or(0);
        h.upstream(1, b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"ok\":1}");
        assert_eq!(h.answer(1).status(), 200);
        let after = h.stream_window_updates.get(&1).copied().unwrap_or(0);
        assert!(
            after >= 500_000 - 262_144,
            "window for the rest of the body ({written_before_answer}): {before} -> {after}"
        );
        // The client sends the rest: dropped, the stream ends cleanly.
        for _ in 0..14 {
            h.data(1, &[b'u'; 16_384], false);
        }
        h.data(1, &[b'u'; 500_000 - 262_144 - 14 * 16_384], true);
        assert_eq!(h.answer(1).reset, None);
        assert!(h.goaway.is_none(), "no flow-control error");
    }
}
