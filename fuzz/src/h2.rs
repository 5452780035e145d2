//! The `h2_frames` target: arbitrary client frames into the core's HTTP/2 server engine
//! (`mxgate_core::http2`), with an application side that answers, releases and resets.
//!
//! Input: one flags byte, then the client's bytes after the preface and an empty SETTINGS
//! (which the target sends first, so the fuzzer need not find them). Flags: bits 0–2 the
//! piece size the bytes are fed in (1, 3, 7, 16, 64, 256, 1024, all), bit 3 the
//! application releases what it receives, bit 4 it answers each request (a head and up to
//! 64 KiB of body, then more whenever the window opens), bit 5 it resets every other
//! stream itself, bit 6 one second passes between pieces, bit 7 a graceful shutdown
//! begins halfway.
//!
//! Invariants: no panic; every byte the server sends is a valid frame sequence whose
//! header blocks decode; the stream table stays within MAX_CONCURRENT_STREAMS and the
//! bytes the engine holds within one frame, one header block and the HPACK table; events
//! only name streams a `Request` opened, and none follow `Closed`; a connection with no
//! stream always has a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mxgate_core::http2::frame::{self, Frame, FrameDecoder};
use mxgate_core::http2::{hpack, Connection, ErrorCode, Event, Limits, SendError, PREFACE};

const MAX_INPUT: usize = 64 * 1024;
const PIECES: [usize; 8] = [1, 3, 7, 16, 64, 256, 1024, usize::MAX];

/// What the server sent, checked as a client would read it (shared with `h2proxy`).
pub(crate) struct ClientView {
    rx: BytesMut,
    frames: FrameDecoder,
    hpack: hpack::Decoder,
    block: Option<BytesMut>,
}

impl ClientView {
    pub(crate) fn new() -> ClientView {
        ClientView {
            rx: BytesMut::new(),
            frames: FrameDecoder::new(frame::MAX_MAX_FRAME_SIZE),
            hpack: hpack::Decoder::new(4096),
            block: None,
        }
    }

    pub(crate) fn read(&mut self, bytes: &[u8]) {
        self.rx.extend_from_slice(bytes);
        loop {
            let f = match self.frames.decode(&mut self.rx) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => panic!("the server sent an invalid frame: {e:?}"),
            };
            match f {
                Frame::Headers {
                    block, end_headers, ..
                } => {
                    assert!(self.block.is_none(), "HEADERS inside a header block");
                    let mut b = BytesMut::from(&block[..]);
                    if end_headers {
                        self.decode(&mut b);
                    } else {
                        self.block = Some(b);
                    }
                }
                Frame::Continuation {
                    block, end_headers, ..
                } => {
                    let mut b = self.block.take().expect("CONTINUATION without HEADERS");
                    b.extend_from_slice(&block);
                    if end_headers {
                        self.decode(&mut b);
                    } else {
                        self.block = Some(b);
                    }
                }
                _ => assert!(self.block.is_none(), "frame inside a header block"),
            }
        }
    }

    fn decode(&mut self, block: &mut BytesMut) {
        let mut fields = Vec::new();
        let block = block.split().freeze();
        self.hpack
            .decode(&block, usize::MAX, &mut fields)
            .expect("the server's header block decodes");
        assert_eq!(
            fields.first().map(|(n, _)| n.as_ref()),
            Some(&b":status"[..]),
            "a response starts with :status"
        );
        for (name, _) in &fields[1..] {
            assert!(
                !name.starts_with(b":")
                    && ![
                        &b"connection"[..],
                        b"transfer-encoding",
                        b"keep-alive",
                        b"upgrade"
                    ]
                    .contains(&name.as_ref()),
                "a connection-specific or pseudo field in a response: {:?}",
                String::from_utf8_lossy(name)
            );
        }
    }
}

pub fn h2_frames(data: &[u8]) {
    if data.is_empty() || data.len() > MAX_INPUT {
        return;
    }
    let flags = data[0];
    let piece = PIECES[(flags & 7) as usize];
    let release = flags & 8 != 0;
    let answer = flags & 16 != 0;
    let resets = flags & 32 != 0;
    let tick = flags & 64 != 0;
    let shutdown = flags & 128 != 0;

    let mut input = BytesMut::from(&PREFACE[..]);
    frame::encode_settings(&mut input, &[]);
    input.extend_from_slice(&data[1..]);

    let limits = Limits::default();
    let bound = (limits.max_frame_size as usize + 9)
        + limits.max_header_block as usize
        + limits.header_table_size as usize;
    let max_streams = limits.max_concurrent_streams as usize;
    let mut now = Instant::now();
    let mut conn = Connection::new(limits, now);
    let mut view = ClientView::new();
    let mut opened = BTreeSet::new();
    let mut live = BTreeSet::new();
    // Body still to send per answered stream.
    let mut pending: BTreeMap<u32, Bytes> = BTreeMap::new();
    let mut closed = false;

    let chunks: Vec<&[u8]> = input.chunks(piece.min(input.len()).max(1)).collect();
    let half = chunks.len() / 2;
    for (i, chunk) in chunks.iter().enumerate() {
        if tick {
            now += Duration::from_secs(1);
            conn.handle_timeout(now);
        }
        if shutdown && i == half {
            conn.begin_shutdown(now);
        }
        conn.handle_data(chunk, now);
        while let Some(e) = conn.poll_event() {
            assert!(!closed, "an event after Closed: {e:?}");
            match e {
                Event::Request { stream, request } => {
                    assert!(opened.insert(stream), "stream {stream} opened twice");
                    assert!(!request.path.is_empty());
                    live.insert(stream);
                    if resets && stream % 4 == 3 {
                        conn.reset(stream, ErrorCode::CANCEL);
                        live.remove(&stream);
                    } else if answer {
                        let head = conn.send_response_head(
                            stream,
                            200,
                            [(&b"content-type"[..], &b"application/json"[..])],
                            false,
                        );
                        match head {
                            Ok(()) => {
                                pending.insert(stream, Bytes::from(vec![b'x'; 65_536]));
                            }
                            // Reset in the same input: its Reset event is still queued.
                            Err(SendError::NoStream) => {}
                            Err(e) => panic!("response head refused: {e:?}"),
                        }
                    }
                }
                Event::Data {
                    stream,
                    data,
                    end_stream: _,
                } => {
                    assert!(live.contains(&stream), "Data for stream {stream}");
                    if release {
                        conn.release_capacity(stream, data.len());
                    }
                }
                Event::Reset { stream, .. } => {
                    assert!(live.remove(&stream), "Reset for stream {stream}");
                    pending.remove(&stream);
                }
                Event::WindowOpen { stream } => {
                    assert!(live.contains(&stream), "WindowOpen for stream {stream}");
                }
                Event::PeerGoAway { .. } => {}
                Event::Closed { .. } => closed = true,
            }
        }
        // Offer every pending body again (what the window allows is taken).
        let streams: Vec<u32> = pending.keys().copied().collect();
        for s in streams {
            let Some(body) = pending.remove(&s) else {
                continue;
            };
            if let Ok(n) = conn.send_data(s, body.clone(), true) {
                if n < body.len() {
                    pending.insert(s, body.slice(n..));
                }
            }
        }
        while let Some(b) = conn.poll_transmit() {
            view.read(&b);
        }
        assert!(conn.stream_count() <= max_streams);
        assert!(
            conn.buffered_bytes() <= bound,
            "{} bytes held",
            conn.buffered_bytes()
        );
        if !conn.is_closed() && conn.stream_count() == 0 {
            assert!(
                conn.poll_timeout().is_some(),
                "an idle connection without a deadline"
            );
        }
    }
}
