//! The HTTP/2 connection driven by a scripted client in memory, section by section of
//! RFC 9113 (following h2spec's list), plus each known attack and the chunking property.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::frame::{self, flag, kind, setting, ErrorCode, Frame, FrameDecoder};
use super::hpack;
use super::*;

/// A client talking to one server connection.
struct Client {
    conn: Connection,
    now: Instant,
    enc: hpack::Encoder,
    dec: hpack::Decoder,
    /// Server bytes not yet decoded into frames.
    rx: BytesMut,
}

type Fields<'a> = &'a [(&'a str, &'a str)];

const GET: [(&str, &str); 4] = [
    (":method", "GET"),
    (":scheme", "https"),
    (":authority", "example.org"),
    (":path", "/_matrix/client/versions"),
];

impl Client {
    /// A connection past the preface and the SETTINGS exchange, its output drained.
    fn new() -> Client {
        Client::with(Limits::default())
    }

    fn with(limits: Limits) -> Client {
        let now = crate::tests::epoch();
        let mut c = Client {
            conn: Connection::new(limits, now),
            now,
            enc: hpack::Encoder::new(),
            dec: hpack::Decoder::new(65_536),
            rx: BytesMut::new(),
        };
        let mut hello = BytesMut::from(&PREFACE[..]);
        frame::encode_settings(&mut hello, &[]);
        frame::encode_settings_ack(&mut hello);
        c.send(&hello);
        let frames = c.frames();
        assert!(matches!(frames[0], Frame::Settings { ack: false, .. }));
        assert!(frames.contains(&Frame::Settings {
            ack: true,
            settings: Default::default()
        }));
        assert_eq!(c.events(), []);
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.conn.handle_data(bytes, self.now);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.conn.handle_timeout(self.now);
    }

    fn transmitted(&mut self) -> BytesMut {
        let mut all = BytesMut::new();
        while let Some(b) = self.conn.poll_transmit() {
            all.extend_from_slice(&b);
        }
        all
    }

    /// Every frame the server sent since the last call.
    fn frames(&mut self) -> Vec<Frame> {
        let bytes = self.transmitted();
        self.rx.extend_from_slice(&bytes);
        let dec = FrameDecoder::new(frame::MAX_MAX_FRAME_SIZE);
        let mut out = Vec::new();
        while let Some(f) = dec.decode(&mut self.rx).expect("server frames are valid") {
            out.push(f);
        }
        out
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    fn block(&mut self, fields: Fields<'_>) -> BytesMut {
        let mut b = BytesMut::new();
        self.enc.encode(
            fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            &mut b,
        );
        b
    }

    fn headers(&mut self, stream: u32, fields: Fields<'_>, end_stream: bool) {
        let block = self.block(fields);
        let mut b = BytesMut::new();
        frame::encode_headers(&mut b, stream, &block, end_stream, 16_384);
        self.send(&b);
    }

    fn raw(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut b = BytesMut::new();
        frame::encode_frame(&mut b, kind, flags, stream, payload);
        self.send(&b);
    }

    fn data(&mut self, stream: u32, payload: &[u8], end_stream: bool) {
        let flags = if end_stream { flag::END_STREAM } else { 0 };
        self.raw(kind::DATA, flags, stream, payload);
    }

    fn rst(&mut self, stream: u32, code: ErrorCode) {
        self.raw(kind::RST_STREAM, 0, stream, &code.0.to_be_bytes());
    }

    fn window_update(&mut self, stream: u32, inc: u32) {
        self.raw(kind::WINDOW_UPDATE, 0, stream, &inc.to_be_bytes());
    }

    fn settings(&mut self, values: &[(u16, u32)]) {
        let mut b = BytesMut::new();
        frame::encode_settings(&mut b, values);
        self.send(&b);
    }

    /// The GOAWAY the server sent (there must be one), and that the connection closed.
    fn goaway(&mut self) -> ErrorCode {
        let frames = self.frames();
        let code = frames
            .iter()
            .find_map(|f| match f {
                Frame::GoAway { code, .. } => Some(*code),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no GOAWAY in {frames:?}"));
        assert!(self.conn.is_closed(), "closed after GOAWAY");
        code
    }

    /// The RST_STREAM codes the server sent, by stream.
    fn resets(&mut self) -> Vec<(u32, ErrorCode)> {
        self.frames()
            .into_iter()
            .filter_map(|f| match f {
                Frame::RstStream { stream, code } => Some((stream, code)),
                _ => None,
            })
            .collect()
    }

    fn request(&mut self, stream: u32, end_stream: bool) -> Request {
        self.headers(stream, &GET, end_stream);
        match self.events().as_slice() {
            [Event::Request { stream: s, request }] if *s == stream => request.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// Decodes a response HEADERS block from the server.
    fn response_fields(&mut self, block: &Bytes) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.dec
            .decode(block, usize::MAX, &mut out)
            .expect("server HPACK is valid");
        out.into_iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(&n).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }
}

// ---- §3.4 connection preface, §6.5 SETTINGS ----

#[test]
fn rfc9113_3_4_server_preface_is_settings_with_our_limits() {
    let now = crate::tests::epoch();
    let mut conn = Connection::new(Limits::default(), now);
    let mut out = BytesMut::new();
    while let Some(b) = conn.poll_transmit() {
        out.extend_from_slice(&b);
    }
    let dec = FrameDecoder::new(frame::MAX_MAX_FRAME_SIZE);
    let first = dec.decode(&mut out).expect("valid").expect("a frame");
    let Frame::Settings {
        ack: false,
        settings,
    } = first
    else {
        panic!("{first:?}")
    };
    assert_eq!(settings.max_concurrent_streams, Some(100));
    assert_eq!(settings.initial_window_size, Some(256 * 1024));
    assert_eq!(settings.max_header_list_size, Some(64 * 1024));
    assert_eq!(
        settings.enable_push, None,
        "a server never sends ENABLE_PUSH"
    );
    assert_eq!(
        dec.decode(&mut out),
        Ok(Some(Frame::WindowUpdate {
            stream: 0,
            increment: 1024 * 1024 - 65_535
        })),
        "the connection window is raised at once"
    );
}

#[test]
fn rfc9113_3_4_preface_may_arrive_byte_by_byte() {
    let now = crate::tests::epoch();
    let mut conn = Connection::new(Limits::default(), now);
    let mut hello = BytesMut::from(&PREFACE[..]);
    frame::encode_settings(&mut hello, &[]);
    for b in hello.iter() {
        conn.handle_data(&[*b], now);
    }
    assert!(conn.poll_event().is_none());
    assert!(!conn.is_closed());
}

#[test]
fn rfc9113_3_4_invalid_preface_is_a_protocol_error() {
    let mut c = Client {
        conn: Connection::new(Limits::default(), crate::tests::epoch()),
        now: crate::tests::epoch(),
        enc: hpack::Encoder::new(),
        dec: hpack::Decoder::new(4096),
        rx: BytesMut::new(),
    };
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.goaway(), ErrorCode::PROTOCOL_ERROR);
}

#[test]
fn rfc9113_3_4_preface_not_followed_by_settings() {
    let mut c = Client {
        conn: Connection::new(Limits::default(), crate::tests::epoch()),
        now: crate::tests::epoch(),
        enc: hpack::Encoder::new(),
        dec: hpack::Decoder::new(4096),
        rx: BytesMut::new(),
    };
    let mut b = BytesMut::from(&PREFACE[..]);
    frame::encode_ping(&mut b, false, [0; 8]);
    c.send(&b);
    assert_eq!(c.goaway(), ErrorCode::PROTOCOL_ERROR);
}

#[test]
fn rfc9113_6_5_3_settings_not_acknowledged_in_time() {
    let now = crate::tests::epoch();
    let mut conn = Connection::new(Limits::default(), now);
    let mut hello = BytesMut::from(&PREFACE[..]);
    frame::encode_settings(&mut hello, &[]);
    conn.handle_data(&hello, now);
    let (at, timer) = conn.poll_timeout().expect("a deadline");
    assert_eq!(timer, Timer::SettingsAck);
    conn.handle_timeout(at);
    let mut c = Client {
        conn,
        now: at,
        enc: hpack::Encoder::new(),
        dec: hpack::Decoder::new(4096),
        rx: BytesMut::new(),
    };
    assert_eq!(c.goaway(), ErrorCode::SETTINGS_TIMEOUT);
}

#[test]
fn rfc9113_6_5_settings_are_acknowledged_and_the_ack_timer_stops() {
    let mut c = Client::new();
    assert_ne!(
        c.conn.poll_timeout().map(|t| t.1),
        Some(Timer::SettingsAck),
        "acknowledged in Client::new"
    );
    c.settings(&[(setting::MAX_FRAME_SIZE, 20_000)]);
    assert_eq!(
        c.frames(),
        [Frame::Settings {
            ack: true,
            settings: Default::default()
        }]
    );
}

#[test]
fn rfc9113_6_5_2_invalid_settings_values() {
    for (id, value, code) in [
        (setting::ENABLE_PUSH, 2, ErrorCode::PROTOCOL_ERROR),
        (
            setting::INITIAL_WINDOW_SIZE,
            1 << 31,
            ErrorCode::FLOW_CONTROL_ERROR,
        ),
        (setting::MAX_FRAME_SIZE, 16_383, ErrorCode::PROTOCOL_ERROR),
        (setting::MAX_FRAME_SIZE, 1 << 24, ErrorCode::PROTOCOL_ERROR),
    ] {
        let mut c = Client::new();
        c.settings(&[(id, value)]);
        assert_eq!(c.goaway(), code, "setting {id} = {value}");
    }
}

// ---- a request and its response ----

#[test]
fn a_request_and_its_response_travel_as_frames() {
    let mut c = Client::new();
    let path = "/_matrix/media/v3/download/ex%2Fample.org/AbC?x=%2e%2E/..//";
    c.headers(
        1,
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "matrix.example.org"),
            (":path", path),
            ("accept", "*/*"),
        ],
        true,
    );
    let events = c.events();
    let [Event::Request { stream: 1, request }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(request.path, path.as_bytes(), "byte for byte");
    assert_eq!(request.method, "GET");
    assert_eq!(request.scheme, "https");
    assert_eq!(
        request.authority.as_deref(),
        Some(&b"matrix.example.org"[..])
    );
    assert!(request.end_stream);

    c.conn
        .send_response_head(
            1,
            200,
            [
                (&b"Content-Type"[..], &b"application/json"[..]),
                (b"Connection", b"keep-alive"),
                (b"content-length", b"2"),
            ],
            false,
        )
        .expect("head");
    assert_eq!(c.conn.send_data(1, Bytes::from_static(b"{}"), true), Ok(2));
    let frames = c.frames();
    let Frame::Headers {
        stream: 1,
        block,
        end_stream: false,
        end_headers: true,
        ..
    } = &frames[0]
    else {
        panic!("{frames:?}")
    };
    assert_eq!(
        c.response_fields(block),
        [
            (":status".to_string(), "200".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
            ("content-length".to_string(), "2".to_string()),
        ],
        "names lower-cased, connection-specific fields dropped"
    );
    assert_eq!(
        frames[1],
        Frame::Data {
            stream: 1,
            data: Bytes::from_static(b"{}"),
            end_stream: true,
            flow_len: 2
        }
    );
    assert_eq!(
        c.conn.stream_count(),
        0,
        "both sides ended: the stream is gone"
    );
    assert_eq!(
        c.conn.send_data(1, Bytes::from_static(b"x"), false),
        Err(SendError::NoStream)
    );
}

#[test]
fn rfc9113_8_1_informational_heads_come_before_the_final_one() {
    let mut c = Client::new();
    c.request(1, false);
    let none = || std::iter::empty::<(&[u8], &[u8])>();
    assert_eq!(
        c.conn.send_response_head(1, 101, none(), false),
        Err(SendError::BadStatus)
    );
    assert_eq!(
        c.conn.send_response_head(1, 100, none(), true),
        Err(SendError::BadStatus)
    );
    assert_eq!(c.conn.send_response_head(1, 100, none(), false), Ok(()));
    assert_eq!(
        c.conn.send_data(1, Bytes::from_static(b"x"), false),
        Err(SendError::WrongOrder),
        "no body before the final head"
    );
    assert_eq!(c.conn.send_response_head(1, 200, none(), false), Ok(()));
    assert_eq!(
        c.conn.send_response_head(1, 200, none(), false),
        Err(SendError::WrongOrder)
    );
    let statuses: Vec<String> = c
        .frames()
        .into_iter()
        .filter_map(|f| match f {
            Frame::Headers { block, .. } => Some(block),
            _ => None,
        })
        .collect::<Vec<_>>()
        .iter()
        .map(|b| c.response_fields(b)[0].1.clone())
        .collect();
    assert_eq!(statuses, ["100", "200"]);
}

#[test]
fn rfc9113_8_1_request_body_flows_and_trailers_end_it() {
    let mut c = Client::new();
    let mut fields = GET.to_vec();
    fields[0] = (":method", "PUT");
    fields.push(("content-length", "5"));
    c.headers(1, &fields, false);
    assert!(matches!(c.events()[..], [Event::Request { stream: 1, .. }]));
    c.data(1, b"hel", false);
    c.data(1, b"lo", false);
    let trailers = c.block(&[("x-checksum", "abc")]);
    c.raw(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &trailers,
    );
    assert_eq!(
        c.events(),
        [
            Event::Data {
                stream: 1,
                data: Bytes::from_static(b"hel"),
                end_stream: false
            },
            Event::Data {
                stream: 1,
                data: Bytes::from_static(b"lo"),
                end_stream: false
            },
            Event::Data {
                stream: 1,
                data: Bytes::new(),
                end_stream: true
            },
        ]
    );
}

#[test]
fn rfc9113_8_1_1_content_length_disagreeing_with_data_is_a_stream_error() {
    let mut c = Client::new();
    let mut fields = GET.to_vec();
    fields.push(("content-length", "3"));
    c.headers(1, &fields, false);
    c.events();
    c.data(1, b"toolong", true);
    assert_eq!(c.resets(), [(1, ErrorCode::PROTOCOL_ERROR)]);
    assert_eq!(
        c.events(),
        [Event::Reset {
            stream: 1,
            code: ErrorCode::PROTOCOL_ERROR,
            by_peer: false
        }]
    );
    // The connection goes on.
    c.request(3, true);
}

#[test]
fn rfc9113_8_2_malformed_requests_are_reset_unseen() {
    let cases: [&[(&str, &str)]; 5] = [
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            ("Upper", "x"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            ("connection", "close"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            ("te", "gzip"),
        ],
        &[(":method", "GET"), (":scheme", "https")],
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            (":foo", "x"),
        ],
    ];
    for fields in cases {
        let mut c = Client::new();
        c.headers(1, fields, true);
        assert_eq!(c.events(), [], "{fields:?}");
        assert_eq!(c.resets(), [(1, ErrorCode::PROTOCOL_ERROR)], "{fields:?}");
        c.request(3, true);
    }
}

#[test]
fn rfc8441_connect_is_answered_501_unseen() {
    let mut c = Client::new();
    c.headers(
        1,
        &[(":method", "CONNECT"), (":authority", "example.org:443")],
        false,
    );
    assert_eq!(c.events(), []);
    let frames = c.frames();
    let Frame::Headers {
        block,
        end_stream: true,
        ..
    } = &frames[0]
    else {
        panic!("{frames:?}")
    };
    assert_eq!(c.response_fields(block)[0].1, "501");
    assert_eq!(
        frames[1],
        Frame::RstStream {
            stream: 1,
            code: ErrorCode::NO_ERROR
        }
    );
    // DATA the client had in flight is ignored, not an error.
    c.data(1, b"x", false);
    assert_eq!(c.frames(), []);
}

// ---- §5.1 stream states ----

#[test]
fn rfc9113_5_1_1_even_stream_id_is_a_protocol_error() {
    let mut c = Client::new();
    c.headers(2, &GET, true);
    assert_eq!(c.goaway(), ErrorCode::PROTOCOL_ERROR);
}

#[test]
fn rfc9113_5_1_1_stream_id_going_backwards_is_a_protocol_error() {
    let mut c = Client::new();
    c.request(5, true);
    c.headers(3, &GET, true);
    assert_eq!(c.goaway(), ErrorCode::PROTOCOL_ERROR);
}

#[test]
fn rfc9113_5_1_idle_stream_frames() {
    for send in [
        |c: &mut Client| c.data(1, b"x", false),
        |c: &mut Client| c.rst(1, ErrorCode::CANCEL),
        |c: &mut Client| c.window_update(1, 10),
        |c: &mut Client| c.raw(kind::CONTINUATION, flag::END_HEADERS, 1, b"\x82"),
    ] {
        let mut c = Client::new();
        send(&mut c);
        assert_eq!(c.goaway(), ErrorCode::PROTOCOL_ERROR);
    }
    // PRIORITY on an idle stream is fine.
    let mut c = Client::new();
    c.raw(kind::PRIORITY, 0, 7, &[0, 0, 0, 0, 16]);
    assert_eq!(c.frames(), []);
    assert!(!c.conn.is_closed());
}

#[test]
fn rfc9113_5_1_half_closed_remote_refuses_data_and_headers() {
    let mut c = Client::new();
    c.request(1, true);
    c.data(1, b"x", false);
    assert_eq!(c.resets(), [(1, ErrorCode::STREAM_CLOSED)]);
    let mut c = Client::new();
    c.request(1, true);
    c.headers(1, &[("x", "y")], true);
    assert_eq!(c.resets(), [(1, ErrorCode::STREAM_CLOSED)]);
}

#[test]
fn rfc9113_5_1_closed_after_client_reset() {
    let mut c = Client::new();
    c.request(1, false);
    c.rst(1, ErrorCode::CANCEL);
    assert_eq!(
        c.events(),
        [Event::Reset {
            stream: 1,
            code: ErrorCode::CANCEL,
            by_peer: true
        }]
    );
    c.data(1, b"x", false);
    assert_eq!(c.resets(), [(1, ErrorCode::STREAM_CLOSED)]);
    c.headers(1, &GET, true);
    assert_eq!(c.goaway(), ErrorCode::STREAM_CLOSED);
}

#[test]
fn rfc9113_5_1_closed_after_both_ends() {
    let mut c = Client::new();
    c.request(1, true);
    c.conn
        .send_response_head(1, 204, std::iter::empty(), true)
        .expect("head");
    c.frames();
    c.data(1, b"x", true);
    assert_eq!(c.resets(), [(1, ErrorCode::STREAM_CLOSED)]);
    c.headers(1, &GET, true);
    assert_eq!(c.goaway(), ErrorCode::STREAM_CLOSED);
}

#[test]
fn rfc9113_5_1_2_concurrent_streams_over_the_limit_are_refused() {
    let mut c = Client::with(Limits {
        max_concurrent_streams: 2,
        ..Limits::default()
    });
    c.request(1, true);
    c.request(3, true);
    c.headers(5, &GET, true);
    assert_eq!(c.events(), []);
    assert_eq!(c.resets(), [(5, ErrorCode::REFUSED_STREAM)]);
    assert_eq!(c.conn.stream_count(), 2);
    // Once one ends, a new stream is accepted.
    c.conn
        .send_response_head(1, 200, std::iter::empty(), true)
        .expect("head");
    c.request(7, true);
}

#[test]
fn rfc9113_5_3_1_stream_depending_on_itself() {
    let mut c = Client::new();
    let block = c.block(&GET);
    let mut payload = vec![0, 0, 0, 1, 16];
    payload.extend_from_slice(&block);
    c.raw(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM | flag::PRIORITY,
        1,
        &payload,
    );
    assert_eq!(c.resets(), [(1, ErrorCode::PROTOCOL_ERROR)]);
    // The block was decoded all the same: the HPACK state is intact.
    c.request(3, true);
    c.raw(kind::PRIORITY, 0, 3, &[0, 0, 0, 3, 16]);
    assert_eq!(c.resets(), [(3, ErrorCode::PROTOCOL_ERROR)]);
}

// ---- §6 frame rules in the connection ----

#[test]
fn rfc9113_6_2_headers_with_continuation() {
    let mut c = Client::new();
    let block = c.block(&GET);
    let (a, b) = block.split_at(3);
    c.raw(kind::HEADERS, flag::END_STREAM, 1, a);
    assert_eq!(c.events(), []);
    c.raw(kind::CONTINUATION, flag::END_HEADERS, 1, b);
    assert!(matches!(c.events()[..], [Event::Request { stream: 1, .. }]));
}

#[test]
fn rfc9113_6_10_other_frame_inside_a_header_block() {
    let mut c = Client::new();
    let block = c.block(&GET);
    c.raw(kind::HEADERS, flag::END_STREAM, 1, &block);
    c.raw(kind::PING, 0, 0, &[0; 8]);
    assert_eq!(c.goaway(), ErrorCode::PROTOCOL_ERROR);

    let mut c = Client::new();
    let block = c.block(&GET);
    c.raw(kind::HEADERS, flag::END_STREAM, 1, &block);
    c.raw(kind::CONTINUATION, flag::END_HEADERS, 3, b"");
    assert_eq!(c.goaway(), ErrorCode::PROTOCOL_ERROR);
}

#[test]
fn rfc9113_6_6_push_promise_from_a_client() {
    let mut c = Client::new();
    c.request(1, false);
    c.raw(
        kind::PUSH_PROMISE,
        flag::END_HEADERS,
        1,
        &[0, 0, 0, 2, 0x82],
    );
    assert_eq!(c.goaway(), ErrorCode::PROTOCOL_ERROR);
}

#[test]
fn rfc9113_6_7_ping_is_answered() {
    let mut c = Client::new();
    c.raw(kind::PING, 0, 0, b"abcdefgh");
    assert_eq!(
        c.frames(),
        [Frame::Ping {
            ack: true,
            data: *b"abcdefgh"
        }]
    );
    // An unsolicited ACK is ignored.
    c.raw(kind::PING, flag::ACK, 0, b"abcdefgh");
    assert_eq!(c.frames(), []);
}

#[test]
fn rfc9113_4_3_bad_header_block_is_a_compression_error() {
    let mut c = Client::new();
    c.raw(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &[0x80],
    );
    assert_eq!(c.goaway(), ErrorCode::COMPRESSION_ERROR);
}

#[test]
fn rfc9113_4_2_frame_over_max_frame_size() {
    let mut c = Client::new();
    c.request(1, false);
    c.data(1, &vec![0; 16_385], false);
    assert_eq!(c.goaway(), ErrorCode::FRAME_SIZE_ERROR);
}

#[test]
fn rfc9113_5_5_unknown_frame_types_are_ignored() {
    let mut c = Client::new();
    c.raw(0x77, 0xff, 0, b"hello");
    c.request(1, true);
}

#[test]
fn rfc9113_6_8_client_goaway_closes_once_streams_end() {
    let mut c = Client::new();
    c.request(1, true);
    let mut b = BytesMut::new();
    frame::encode_goaway(&mut b, 0, ErrorCode::NO_ERROR, b"");
    c.send(&b);
    assert_eq!(
        c.events(),
        [Event::PeerGoAway {
            last_stream: 0,
            code: ErrorCode::NO_ERROR
        }]
    );
    assert!(!c.conn.is_closed());
    c.conn
        .send_response_head(1, 200, std::iter::empty(), true)
        .expect("head");
    assert_eq!(c.events(), [Event::Closed { error: None }]);
    c.frames();
    assert!(c.conn.is_closed());
}

/// The rest of h2spec's list that the tests above do not name, one case each: what the
/// client sends after a request on stream 1 (open, no END_STREAM), and the answer.
#[test]
fn h2spec_remaining_cases() {
    enum Want {
        Fine,
        Conn(ErrorCode),
        Stream(ErrorCode),
    }
    type Case = (&'static str, fn(&mut Client), Want);
    let cases: [Case; 10] = [
        (
            "4.2/1 DATA of exactly 2^14 octets",
            |c| c.data(1, &[0; 16_384], false),
            Want::Fine,
        ),
        (
            "4.1/2 undefined flags are ignored",
            |c| c.raw(kind::PING, 0xfe, 0, &[0; 8]),
            Want::Fine,
        ),
        (
            "6.5/2 SETTINGS on a stream",
            |c| c.raw(kind::SETTINGS, 0, 1, &[]),
            Want::Conn(ErrorCode::PROTOCOL_ERROR),
        ),
        (
            "6.8/1 GOAWAY on a stream",
            |c| c.raw(kind::GOAWAY, 0, 1, &[0; 8]),
            Want::Conn(ErrorCode::PROTOCOL_ERROR),
        ),
        (
            "7/1 GOAWAY with an unknown code",
            |c| c.raw(kind::GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0xff]),
            Want::Fine,
        ),
        (
            "7/2 RST_STREAM with an unknown code",
            |c| c.rst(1, ErrorCode(0xff)),
            Want::Fine,
        ),
        (
            "6.10/4 CONTINUATION after END_HEADERS",
            |c| c.raw(kind::CONTINUATION, flag::END_HEADERS, 1, b"\x82"),
            Want::Conn(ErrorCode::PROTOCOL_ERROR),
        ),
        (
            "8.1/1 second HEADERS without END_STREAM",
            |c| {
                let b = c.block(&[("x-t", "1")]);
                c.raw(kind::HEADERS, flag::END_HEADERS, 1, &b);
            },
            Want::Stream(ErrorCode::PROTOCOL_ERROR),
        ),
        (
            "8.1.2.1/3 pseudo-header in trailers",
            |c| {
                let b = c.block(&[(":path", "/x")]);
                c.raw(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &b);
            },
            Want::Stream(ErrorCode::PROTOCOL_ERROR),
        ),
        (
            "hpack 6.3 table size update at the end of a block",
            |c| {
                let mut b = c.block(&[("x-t", "1")]);
                b.extend_from_slice(&[0x20]);
                c.raw(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &b);
            },
            Want::Conn(ErrorCode::COMPRESSION_ERROR),
        ),
    ];
    for (name, send, want) in cases {
        let mut c = Client::new();
        c.request(1, false);
        send(&mut c);
        match want {
            Want::Fine => {
                c.frames();
                assert!(!c.conn.is_closed(), "{name}");
            }
            Want::Conn(code) => assert_eq!(c.goaway(), code, "{name}"),
            Want::Stream(code) => assert_eq!(c.resets(), [(1, code)], "{name}"),
        }
    }
}

// ---- §5.2, §6.9 flow control ----

#[test]
fn rfc9113_6_9_window_update_only_after_release() {
    let mut c = Client::new();
    let mut fields = GET.to_vec();
    fields[0] = (":method", "POST");
    c.headers(1, &fields, false);
    c.events();
    c.data(1, &[1; 16_000], false);
    c.data(1, &[2; 16_000], false);
    assert_eq!(c.events().len(), 2);
    assert_eq!(
        c.frames(),
        [],
        "nothing granted before the consumer takes bytes"
    );
    c.conn.release_capacity(1, 100_000); // clamped to what was received
    let frames = c.frames();
    // 32 000 < half of 256 KiB: the stream waits; the connection too (half of 1 MiB).
    assert_eq!(frames, []);
    for _ in 0..8 {
        c.data(1, &[3; 16_000], false);
    }
    c.events();
    c.conn.release_capacity(1, 128_000);
    let frames = c.frames();
    assert_eq!(
        frames,
        [Frame::WindowUpdate {
            stream: 1,
            increment: 160_000
        }]
    );
}

#[test]
fn rfc9113_6_9_1_client_exceeding_the_stream_window() {
    let mut c = Client::new();
    c.request(1, false);
    for _ in 0..16 {
        c.data(1, &[0; 16_384], false);
    }
    assert_eq!(c.frames(), []);
    c.data(1, b"x", false);
    assert_eq!(c.resets(), [(1, ErrorCode::FLOW_CONTROL_ERROR)]);
}

#[test]
fn rfc9113_6_9_1_client_exceeding_the_connection_window() {
    let mut c = Client::with(Limits {
        initial_stream_window: 1024 * 1024,
        connection_window: 100_000,
        ..Limits::default()
    });
    c.request(1, false);
    for _ in 0..6 {
        c.data(1, &[0; 16_384], false);
    }
    c.data(1, &[0; 2_000], false);
    assert_eq!(c.goaway(), ErrorCode::FLOW_CONTROL_ERROR);
}

#[test]
fn rfc9113_6_9_1_window_overflow() {
    let mut c = Client::new();
    c.request(1, true);
    c.window_update(1, (1 << 31) - 1);
    assert_eq!(c.resets(), [(1, ErrorCode::FLOW_CONTROL_ERROR)]);
    c.window_update(0, (1 << 31) - 1);
    assert_eq!(c.goaway(), ErrorCode::FLOW_CONTROL_ERROR);
}

#[test]
fn rfc9113_6_9_send_data_honours_the_client_windows() {
    let mut c = Client::new();
    c.settings(&[(setting::INITIAL_WINDOW_SIZE, 10)]);
    c.frames();
    c.request(1, true);
    c.conn
        .send_response_head(1, 200, std::iter::empty(), false)
        .expect("head");
    let body = Bytes::from_static(b"0123456789abcdefghij");
    assert_eq!(c.conn.send_data(1, body.clone(), true), Ok(10));
    assert_eq!(c.conn.send_data(1, body.slice(10..), true), Ok(0));
    c.window_update(1, 4);
    assert_eq!(c.events(), [Event::WindowOpen { stream: 1 }]);
    assert_eq!(c.conn.send_data(1, body.slice(10..), true), Ok(4));
    let data: Vec<_> = c
        .frames()
        .into_iter()
        .filter_map(|f| match f {
            Frame::Data {
                data, end_stream, ..
            } => Some((data, end_stream)),
            _ => None,
        })
        .collect();
    assert_eq!(
        data,
        [(body.slice(..10), false), (body.slice(10..14), false)]
    );
}

#[test]
fn rfc9113_4_2_data_is_framed_at_the_peer_max_frame_size() {
    let mut c = Client::new();
    c.settings(&[
        (setting::MAX_FRAME_SIZE, 20_000),
        (setting::INITIAL_WINDOW_SIZE, 1 << 20),
    ]);
    c.window_update(0, 1 << 20);
    c.request(1, true);
    c.conn
        .send_response_head(1, 200, std::iter::empty(), false)
        .expect("head");
    let body = Bytes::from(vec![7u8; 50_000]);
    assert_eq!(c.conn.send_data(1, body, true), Ok(50_000));
    let sizes: Vec<(usize, bool)> = c
        .frames()
        .into_iter()
        .filter_map(|f| match f {
            Frame::Data {
                data, end_stream, ..
            } => Some((data.len(), end_stream)),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [(20_000, false), (20_000, false), (10_000, true)]);
}

#[test]
fn rfc9113_6_9_2_initial_window_change_applies_to_open_streams_and_may_go_negative() {
    let mut c = Client::new();
    c.request(1, true);
    c.conn
        .send_response_head(1, 200, std::iter::empty(), false)
        .expect("head");
    assert_eq!(
        c.conn.send_data(1, Bytes::from(vec![0; 60_000]), false),
        Ok(60_000)
    );
    c.settings(&[(setting::INITIAL_WINDOW_SIZE, 50_000)]);
    assert_eq!(c.conn.send_capacity(1), Some(0), "window is now -10 000");
    assert_eq!(c.conn.send_data(1, Bytes::from_static(b"x"), false), Ok(0));
    c.window_update(1, 10_001);
    c.window_update(0, 100_000);
    assert_eq!(c.events(), [Event::WindowOpen { stream: 1 }]);
    assert_eq!(c.conn.send_capacity(1), Some(1));
    c.settings(&[(setting::INITIAL_WINDOW_SIZE, 60_000)]);
    assert_eq!(c.conn.send_capacity(1), Some(10_001));
}

#[test]
fn rfc9113_6_1_padding_is_given_back_at_once() {
    let mut c = Client::with(Limits {
        initial_stream_window: 65_535,
        connection_window: 65_535,
        ..Limits::default()
    });
    c.request(1, false);
    // 130 frames of pure padding (256 flow-controlled bytes each): nothing reaches the
    // application, and the windows come back without it releasing anything.
    let mut payload = vec![255u8];
    payload.extend_from_slice(&[0; 255]);
    for _ in 0..130 {
        c.raw(kind::DATA, flag::PADDED, 1, &payload);
    }
    assert_eq!(c.events(), []);
    let updates: Vec<u32> = c
        .frames()
        .into_iter()
        .filter_map(|f| match f {
            Frame::WindowUpdate { increment, .. } => Some(increment),
            _ => None,
        })
        .collect();
    assert_eq!(updates, [32_768, 32_768], "stream and connection");
    // And the data of a padded frame is delivered without its padding.
    c.raw(kind::DATA, flag::PADDED, 1, &[2, b'h', b'i', 0, 0]);
    assert_eq!(
        c.events(),
        [Event::Data {
            stream: 1,
            data: Bytes::from_static(b"hi"),
            end_stream: false
        }]
    );
}

// ---- graceful shutdown and timers ----

#[test]
fn rfc9113_6_8_graceful_shutdown_in_two_steps() {
    let mut c = Client::new();
    c.request(1, true);
    c.conn.begin_shutdown(c.now);
    let frames = c.frames();
    let Frame::Ping { ack: false, data } = frames[0] else {
        panic!("{frames:?}")
    };
    assert_eq!(
        frames[1],
        Frame::GoAway {
            last_stream: (1 << 31) - 1,
            code: ErrorCode::NO_ERROR,
            debug: Bytes::new()
        }
    );
    // A stream opened before the client saw the first GOAWAY is still served.
    c.request(3, true);
    c.raw(kind::PING, flag::ACK, 0, &data);
    assert_eq!(
        c.frames(),
        [Frame::GoAway {
            last_stream: 3,
            code: ErrorCode::NO_ERROR,
            debug: Bytes::new()
        }]
    );
    // Streams after the final GOAWAY are ignored.
    c.headers(5, &GET, true);
    assert_eq!(c.events(), []);
    for s in [1, 3] {
        c.conn
            .send_response_head(s, 200, std::iter::empty(), true)
            .expect("head");
    }
    assert_eq!(c.events(), [Event::Closed { error: None }]);
    c.frames();
    assert!(c.conn.is_closed());
}

#[test]
fn graceful_shutdown_goes_on_without_the_ping_ack() {
    let mut c = Client::new();
    c.conn.begin_shutdown(c.now);
    c.frames();
    let (at, timer) = c.conn.poll_timeout().expect("deadline");
    assert_eq!(timer, Timer::ShutdownPing);
    c.advance(at - c.now);
    assert!(matches!(
        c.frames()[..],
        [Frame::GoAway {
            last_stream: 0,
            code: ErrorCode::NO_ERROR,
            ..
        }]
    ));
    assert!(c.conn.is_closed());
}

#[test]
fn idle_connection_is_closed_with_goaway() {
    let mut c = Client::new();
    c.request(1, true);
    assert_ne!(c.conn.poll_timeout().map(|t| t.1), Some(Timer::Idle));
    c.conn
        .send_response_head(1, 200, std::iter::empty(), true)
        .expect("head");
    let (at, timer) = c.conn.poll_timeout().expect("deadline");
    assert_eq!(timer, Timer::Idle);
    c.advance(at - c.now);
    assert_eq!(c.goaway(), ErrorCode::NO_ERROR);
}

#[test]
fn no_event_names_a_stream_after_the_application_resets_it() {
    let mut c = Client::new();
    c.headers(1, &GET, false);
    c.data(1, b"queued", false);
    c.rst(1, ErrorCode::CANCEL);
    c.headers(3, &GET, true);
    // The application handles the Request, resets stream 1: the queued Data and Reset go.
    assert!(matches!(
        c.conn.poll_event(),
        Some(Event::Request { stream: 1, .. })
    ));
    c.conn.reset(1, ErrorCode::CANCEL);
    assert!(matches!(c.events()[..], [Event::Request { stream: 3, .. }]));
}

#[test]
fn closed_is_always_the_last_event() {
    let mut c = Client::new();
    c.request(1, false);
    let mut b = BytesMut::new();
    frame::encode_goaway(&mut b, 0, ErrorCode::NO_ERROR, b"");
    frame::encode_rst_stream(&mut b, 1, ErrorCode::CANCEL);
    c.send(&b);
    assert_eq!(
        c.events(),
        [
            Event::PeerGoAway {
                last_stream: 0,
                code: ErrorCode::NO_ERROR
            },
            Event::Reset {
                stream: 1,
                code: ErrorCode::CANCEL,
                by_peer: true
            },
            Event::Closed { error: None }
        ]
    );
}

#[test]
fn client_eof_resets_every_stream() {
    let mut c = Client::new();
    c.request(1, false);
    c.conn.handle_eof(c.now);
    assert_eq!(
        c.events(),
        [
            Event::Reset {
                stream: 1,
                code: ErrorCode::CANCEL,
                by_peer: true
            },
            Event::Closed { error: None }
        ]
    );
    assert!(c.conn.is_closed());
}

// ---- attacks ----

fn calm(c: &mut Client, abuse: Abuse) {
    let events = c.events();
    let closed = events.iter().find_map(|e| match e {
        Event::Closed { error: Some(e) } => Some(*e),
        _ => None,
    });
    assert_eq!(closed.and_then(|e| e.abuse), Some(abuse), "{events:?}");
    assert_eq!(c.goaway(), ErrorCode::ENHANCE_YOUR_CALM);
}

#[test]
fn cve_2023_44487_rapid_reset() {
    let mut c = Client::new();
    let mut id = 1;
    for _ in 0..200 {
        c.headers(id, &GET, false);
        c.rst(id, ErrorCode::CANCEL);
        id += 2;
        assert!(c.conn.stream_count() <= 1);
        assert!(c.conn.buffered_bytes() < 64 * 1024);
    }
    assert!(
        !c.conn.is_closed(),
        "200 resets in the window are tolerated"
    );
    c.headers(id, &GET, false);
    c.rst(id, ErrorCode::CANCEL);
    calm(&mut c, Abuse::Reset);
}

#[test]
fn cve_2025_8671_made_you_reset() {
    // Resets the client provokes (here: WINDOW_UPDATE 0 on an open stream) count too.
    let mut c = Client::new();
    let mut id = 1;
    for _ in 0..201 {
        c.headers(id, &GET, false);
        c.raw(kind::WINDOW_UPDATE, 0, id, &[0, 0, 0, 0]);
        id += 2;
        assert!(c.conn.stream_count() <= 1);
        if c.conn.is_closed() {
            break;
        }
    }
    calm(&mut c, Abuse::Reset);
}

#[test]
fn cve_2024_27316_continuation_flood_by_count() {
    let mut c = Client::new();
    c.raw(kind::HEADERS, 0, 1, b"\x82");
    for _ in 0..40 {
        c.raw(kind::CONTINUATION, 0, 1, b"");
        assert!(c.conn.buffered_bytes() < 64 * 1024);
    }
    assert_eq!(c.goaway(), ErrorCode::ENHANCE_YOUR_CALM);
}

#[test]
fn cve_2024_27316_continuation_flood_by_size() {
    let mut c = Client::new();
    c.raw(kind::HEADERS, 0, 1, &[0x82; 16_000]);
    for _ in 0..31 {
        c.raw(kind::CONTINUATION, 0, 1, &[0x82; 16_000]);
        assert!(c.conn.buffered_bytes() <= 128 * 1024 + 16_384 + 4096 + 200);
        if c.conn.is_closed() {
            break;
        }
    }
    assert_eq!(c.goaway(), ErrorCode::ENHANCE_YOUR_CALM);
}

#[test]
fn hpack_bomb_is_answered_431_with_bounded_memory() {
    let mut c = Client::new();
    // Stream 1 inserts a 4 000-byte entry; stream 3 references it 16 000 times (64 MB).
    let mut block = BytesMut::new();
    let big = "a".repeat(4000);
    let fields = [GET.as_slice(), &[("x-big", big.as_str())]].concat();
    c.enc.encode(
        fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        &mut block,
    );
    let mut b = BytesMut::new();
    frame::encode_headers(&mut b, 1, &block, true, 16_384);
    c.send(&b);
    assert!(matches!(c.events()[..], [Event::Request { stream: 1, .. }]));
    // The entry is the newest in the dynamic table: index 62.
    let mut bomb = c.block(&GET).to_vec();
    bomb.extend(std::iter::repeat_n(0xbe, 16_000));
    c.raw(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &bomb,
    );
    assert_eq!(c.events(), [], "never reaches the application");
    let frames = c.frames();
    let Frame::Headers {
        block, stream: 3, ..
    } = &frames[0]
    else {
        panic!("{frames:?}")
    };
    assert_eq!(c.response_fields(block)[0].1, "431");
    assert!(c.conn.buffered_bytes() < 64 * 1024);
    // Repeated, it closes the connection.
    let mut id = 5;
    while !c.conn.is_closed() && id < 100 {
        c.raw(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            id,
            &bomb,
        );
        id += 2;
    }
    calm(&mut c, Abuse::OversizedHeaders);
}

#[test]
fn dynamic_table_size_update_above_our_setting() {
    let mut c = Client::new();
    let mut block = BytesMut::new();
    hpack::write_integer(&mut block, 0x20, 5, 1 << 20);
    block.extend_from_slice(&c.block(&GET));
    c.raw(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block,
    );
    assert_eq!(c.goaway(), ErrorCode::COMPRESSION_ERROR);
}

#[test]
fn dynamic_table_churn_stays_within_the_table() {
    let mut c = Client::new();
    for i in 0..500u32 {
        let v = format!("{i:0>3000}");
        let fields = [GET.as_slice(), &[("x-churn", v.as_str())]].concat();
        let id = 1 + 2 * i;
        c.headers(id, &fields, true);
        c.conn.reset(id, ErrorCode::CANCEL);
        assert!(c.conn.buffered_bytes() < 16 * 1024);
    }
    assert!(!c.conn.is_closed());
}

fn flood(frame: impl Fn(&mut Client), abuse: Abuse, allowed: u32) {
    let mut c = Client::new();
    c.request(1, false);
    for _ in 0..allowed - 1 {
        frame(&mut c);
        c.frames();
        assert!(!c.conn.is_closed(), "{abuse:?} tolerated up to its limit");
        assert!(c.conn.buffered_bytes() < 64 * 1024);
    }
    frame(&mut c);
    frame(&mut c);
    calm(&mut c, abuse);
}

#[test]
fn settings_flood() {
    // Client::new sent one SETTINGS (and its ACK) already.
    flood(|c| c.settings(&[]), Abuse::Settings, 99);
}

#[test]
fn ping_flood() {
    flood(|c| c.raw(kind::PING, 0, 0, &[0; 8]), Abuse::Ping, 100);
}

#[test]
fn priority_flood() {
    flood(
        |c| c.raw(kind::PRIORITY, 0, 1, &[0, 0, 0, 0, 16]),
        Abuse::Ignored,
        1000,
    );
}

#[test]
fn empty_data_flood() {
    flood(|c| c.data(1, b"", false), Abuse::EmptyData, 200);
}

#[test]
fn window_update_flood() {
    flood(|c| c.window_update(0, 1), Abuse::WindowUpdate, 1000);
}

#[test]
fn abuse_counters_forget_after_their_window() {
    let mut c = Client::new();
    for _ in 0..3 {
        for _ in 0..90 {
            c.raw(kind::PING, 0, 0, &[0; 8]);
        }
        c.frames();
        c.now += Duration::from_secs(11);
        // A request keeps the idle timer from firing.
    }
    assert!(!c.conn.is_closed());
}

#[test]
fn zero_window_never_opened_times_the_stream_out_with_nothing_buffered() {
    let mut c = Client::new();
    c.settings(&[(setting::INITIAL_WINDOW_SIZE, 0)]);
    c.request(1, true);
    c.conn
        .send_response_head(1, 200, std::iter::empty(), false)
        .expect("head");
    let big = Bytes::from(vec![0u8; 1 << 20]);
    assert_eq!(c.conn.send_data(1, big.clone(), true), Ok(0));
    c.frames();
    assert!(
        c.conn.buffered_bytes() < 8 * 1024,
        "the body stays with the caller"
    );
    let (at, timer) = c.conn.poll_timeout().expect("deadline");
    assert_eq!(timer, Timer::SendStall);
    assert_eq!(at - c.now, Limits::default().send_stall_timeout);
    c.advance(at - c.now);
    assert_eq!(
        c.events(),
        [Event::Reset {
            stream: 1,
            code: ErrorCode::CANCEL,
            by_peer: false
        }]
    );
    assert_eq!(c.resets(), [(1, ErrorCode::CANCEL)]);
    assert_eq!(c.conn.stream_count(), 0);
}

#[test]
fn streams_that_go_away_release_their_held_connection_window() {
    let mut c = Client::with(Limits {
        initial_stream_window: 65_535,
        connection_window: 65_535,
        ..Limits::default()
    });
    c.request(1, false);
    for _ in 0..3 {
        c.data(1, &[0; 16_000], false);
    }
    c.events();
    c.rst(1, ErrorCode::CANCEL);
    // The application never released those bytes; the connection gets them back anyway.
    assert_eq!(
        c.frames(),
        [Frame::WindowUpdate {
            stream: 0,
            increment: 48_000
        }]
    );
}

// ---- properties ----

/// A client script: a few requests with bodies, pings, window updates and resets.
fn script(paths: &[Vec<u8>], body: &[u8]) -> Vec<u8> {
    let mut enc = hpack::Encoder::new();
    let mut out = BytesMut::from(&PREFACE[..]);
    frame::encode_settings(&mut out, &[(setting::INITIAL_WINDOW_SIZE, 1000)]);
    frame::encode_settings_ack(&mut out);
    let mut id = 1;
    for path in paths {
        let mut block = BytesMut::new();
        enc.encode(
            [
                (&b":method"[..], &b"POST"[..]),
                (b":scheme", b"https"),
                (b":authority", b"example.org"),
                (b":path", path.as_slice()),
                (b"content-type", b"application/json"),
            ],
            &mut block,
        );
        frame::encode_headers(&mut out, id, &block, false, 16_384);
        frame::encode_ping(&mut out, false, [id as u8; 8]);
        frame::encode_frame(&mut out, kind::DATA, 0, id, body);
        frame::encode_frame(&mut out, kind::DATA, flag::END_STREAM, id, b"");
        frame::encode_window_update(&mut out, 0, 100);
        id += 2;
    }
    frame::encode_rst_stream(&mut out, 1, ErrorCode::CANCEL);
    out.to_vec()
}

/// Feeds `input` in pieces cut at `cuts`; returns every event and every byte sent. (The
/// application side does not act in between: what it does, and when, is its own input.)
fn run(input: &[u8], cuts: &[usize]) -> (Vec<Event>, Vec<u8>) {
    let now = crate::tests::epoch();
    let mut conn = Connection::new(Limits::default(), now);
    let mut events = Vec::new();
    let mut sent = Vec::new();
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    points.push(input.len());
    for p in points {
        if p < at {
            continue;
        }
        conn.handle_data(&input[at..p], now);
        at = p;
        while let Some(e) = conn.poll_event() {
            events.push(e);
        }
        while let Some(b) = conn.poll_transmit() {
            sent.extend_from_slice(&b);
        }
    }
    (events, sent)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn splitting_the_client_bytes_never_changes_the_outcome(
        paths in proptest::collection::vec(proptest::collection::vec(0x21u8..0x7f, 1..40), 1..5),
        body in proptest::collection::vec(any::<u8>(), 0..300),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let input = script(&paths, &body);
        let whole = run(&input, &[]);
        let split = run(&input, &cuts);
        prop_assert_eq!(&whole, &split);
        let byte_by_byte: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(&whole, &run(&input, &byte_by_byte));
    }

    #[test]
    fn path_comes_out_byte_for_byte(
        path in proptest::collection::vec(0x21u8..0x7f, 1..200),
    ) {
        let mut path = path;
        path[0] = b'/';
        let (events, _) = run(&script(std::slice::from_ref(&path), b""), &[]);
        let got = events.iter().find_map(|e| match e {
            Event::Request { request, .. } => Some(request.path.clone()),
            _ => None,
        });
        prop_assert_eq!(got.as_deref(), Some(path.as_slice()));
    }

    #[test]
    fn arbitrary_frames_never_panic_and_memory_stays_bounded(
        frames in proptest::collection::vec(
            (0u8..12, any::<u8>(), 0u32..8, proptest::collection::vec(any::<u8>(), 0..64)),
            0..40),
    ) {
        let now = crate::tests::epoch();
        let mut conn = Connection::new(Limits::default(), now);
        let mut input = BytesMut::from(&PREFACE[..]);
        frame::encode_settings(&mut input, &[]);
        for (k, flags, stream, payload) in &frames {
            frame::encode_frame(&mut input, *k, *flags, *stream, payload);
        }
        conn.handle_data(&input, now);
        while conn.poll_event().is_some() {}
        prop_assert!(conn.stream_count() <= 100);
        prop_assert!(conn.buffered_bytes() < 64 * 1024);
        conn.handle_timeout(now + Duration::from_secs(3600));
        while conn.poll_transmit().is_some() {}
        prop_assert!(conn.is_closed(), "every connection ends by a deadline");
    }
}

// ---- interoperation ----

/// What python-hyper's `h2` sends as a client (`testdata/make_interop.py`): Huffman-coded
/// HPACK with its dynamic table, a block split into CONTINUATION, padded DATA, PING,
/// WINDOW_UPDATE and RST_STREAM — decoded as it was sent, however it is chunked.
#[test]
fn python_h2_client_bytes_decode_as_sent() {
    let input = include_bytes!("testdata/client_h2.bin");
    let body: Vec<u8> = (0..=255u8)
        .cycle()
        .take(256 * 273)
        .chain(std::iter::repeat_n(0, 112))
        .collect();
    for piece in [input.len(), 1000, 7, 1] {
        let now = crate::tests::epoch();
        let mut conn = Connection::new(Limits::default(), now);
        let mut events = Vec::new();
        let mut sent = BytesMut::new();
        for chunk in input.chunks(piece) {
            conn.handle_data(chunk, now);
            events.extend(std::iter::from_fn(|| conn.poll_event()));
            while let Some(b) = conn.poll_transmit() {
                sent.extend_from_slice(&b);
            }
        }
        assert!(!conn.is_closed(), "no error");
        let requests: Vec<&Request> = events
            .iter()
            .filter_map(|e| match e {
                Event::Request { request, .. } => Some(request),
                _ => None,
            })
            .collect();
        assert_eq!(requests.len(), 3);
        assert_eq!(
            requests[0].path,
            "/_matrix/client/v3/rooms/%21abc%3Aexample.org/messages?dir=b&limit=10"
        );
        assert_eq!(
            requests[0].authority.as_deref(),
            Some(&b"matrix.example.org"[..])
        );
        assert_eq!(requests[0].header(b"cookie"), Some(&b"a=1; b=2"[..]));
        assert_eq!(requests[0].header(b"user-agent"), Some(&b"python-h2"[..]));
        assert_eq!(requests[1].method, "PUT");
        assert_eq!(
            requests[1].path,
            "/_matrix/media/v3/upload?filename=%E2%9C%93.png"
        );
        assert_eq!(requests[1].content_length, Some(70_000));
        assert_eq!(requests[1].header(b"x-big").map(<[u8]>::len), Some(20_000));
        assert_eq!(requests[2].path, "/_matrix/client/v3/sync?timeout=30000");
        let received: Vec<u8> = events
            .iter()
            .filter_map(|e| match e {
                Event::Data {
                    stream: 3, data, ..
                } => Some(data.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(received, body[..65_000], "piece size {piece}");
        assert_eq!(
            events.last(),
            Some(&Event::Reset {
                stream: 5,
                code: ErrorCode::NO_ERROR,
                by_peer: true
            })
        );
        let dec = FrameDecoder::new(frame::MAX_MAX_FRAME_SIZE);
        let mut frames = Vec::new();
        while let Some(f) = dec.decode(&mut sent).expect("valid") {
            frames.push(f);
        }
        assert!(frames.contains(&Frame::Ping {
            ack: true,
            data: *b"12345678"
        }));
    }
}

#[test]
fn rfc9113_3_4_prior_knowledge_is_told_by_the_preface() {
    use super::{sniff_preface, Preface};
    assert_eq!(sniff_preface(PREFACE), Preface::Http2);
    let mut more = PREFACE.to_vec();
    more.extend_from_slice(b"\0\0\0\x04");
    assert_eq!(sniff_preface(&more), Preface::Http2);
    assert_eq!(sniff_preface(&PREFACE[..3]), Preface::Partial);
    assert_eq!(sniff_preface(b"POST /_matrix HTTP/1.1\r\n"), Preface::Http1);
    assert_eq!(sniff_preface(b"GET"), Preface::Http1);
    assert_eq!(sniff_preface(b""), Preface::Http1);
}
