//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte header, incremental decoding of every frame
//! type with its size, flag and stream-id rules, and encoding of the frames a server sends.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The length of a frame header (§4.1).
pub const HEADER_LEN: usize = 9;
/// The initial (and smallest allowed) SETTINGS_MAX_FRAME_SIZE (§4.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest SETTINGS_MAX_FRAME_SIZE (§6.5.2).
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window (§6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// The initial flow-control window of every stream and of the connection (§6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;

pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS parameter identifiers (§6.5.2).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    /// RFC 8441; we never advertise it.
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// An HTTP/2 error code (§7). Unknown codes are kept as received.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    pub const NO_ERROR: ErrorCode = ErrorCode(0x0);
    pub const PROTOCOL_ERROR: ErrorCode = ErrorCode(0x1);
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(0x2);
    pub const FLOW_CONTROL_ERROR: ErrorCode = ErrorCode(0x3);
    pub const SETTINGS_TIMEOUT: ErrorCode = ErrorCode(0x4);
    pub const STREAM_CLOSED: ErrorCode = ErrorCode(0x5);
    pub const FRAME_SIZE_ERROR: ErrorCode = ErrorCode(0x6);
    pub const REFUSED_STREAM: ErrorCode = ErrorCode(0x7);
    pub const CANCEL: ErrorCode = ErrorCode(0x8);
    pub const COMPRESSION_ERROR: ErrorCode = ErrorCode(0x9);
    pub const CONNECT_ERROR: ErrorCode = ErrorCode(0xa);
    pub const ENHANCE_YOUR_CALM: ErrorCode = ErrorCode(0xb);
    pub const INADEQUATE_SECURITY: ErrorCode = ErrorCode(0xc);
    pub const HTTP_1_1_REQUIRED: ErrorCode = ErrorCode(0xd);

    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 14] = [
            "NO_ERROR",
            "PROTOCOL_ERROR",
            "INTERNAL_ERROR",
            "FLOW_CONTROL_ERROR",
            "SETTINGS_TIMEOUT",
            "STREAM_CLOSED",
            "FRAME_SIZE_ERROR",
            "REFUSED_STREAM",
            "CANCEL",
            "COMPRESSION_ERROR",
            "CONNECT_ERROR",
            "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY",
            "HTTP_1_1_REQUIRED",
        ];
        NAMES.get(self.0 as usize).copied()
    }
}

impl std::fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "ErrorCode({:#x})", self.0),
        }
    }
}

/// A frame that breaks a rule of §4–§6, and the error it calls for. The frame's bytes are
/// consumed either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Ends the connection (GOAWAY with this code).
    Connection(ErrorCode, &'static str),
    /// Ends only this stream (RST_STREAM with this code); the connection goes on.
    Stream(u32, ErrorCode, &'static str),
}

/// The priority fields of HEADERS or PRIORITY (§5.3.2, §6.3): parsed to check them,
/// otherwise ignored (RFC 9113 deprecates the scheme).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub exclusive: bool,
    pub dependency: u32,
    pub weight: u8,
}

/// The values of a SETTINGS frame (§6.5.2), each present if sent (the last one wins).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    pub header_table_size: Option<u32>,
    pub enable_push: Option<bool>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_window_size: Option<u32>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
    pub enable_connect_protocol: Option<bool>,
}

/// A decoded frame. Payloads are handles on the received bytes (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        /// The data without padding.
        data: Bytes,
        end_stream: bool,
        /// The whole payload length (padding included): what flow control counts (§6.9).
        flow_len: u32,
    },
    Headers {
        stream: u32,
        /// The header block fragment, padding and priority fields removed.
        block: Bytes,
        end_stream: bool,
        end_headers: bool,
        priority: Option<Priority>,
    },
    Priority {
        stream: u32,
        priority: Priority,
    },
    RstStream {
        stream: u32,
        code: ErrorCode,
    },
    Settings {
        ack: bool,
        settings: Settings,
    },
    PushPromise {
        stream: u32,
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        code: ErrorCode,
        debug: Bytes,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        block: Bytes,
        end_headers: bool,
    },
    /// A frame of a type this endpoint does not know: ignored (§4.1, §5.5).
    Unknown {
        kind: u8,
        stream: u32,
    },
}

/// The 9-byte frame header (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// The reserved bit is ignored on receipt (§4.1).
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_WINDOW,
        }
    }

    pub fn write(&self, out: &mut BytesMut) {
        let len = self.len.to_be_bytes();
        out.put_slice(&len[1..]);
        out.put_u8(self.kind);
        out.put_u8(self.flags);
        out.put_u32(self.stream & MAX_WINDOW);
    }
}

/// Decodes frames one at a time from the front of a receive buffer.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    /// Our SETTINGS_MAX_FRAME_SIZE: larger frames are FRAME_SIZE_ERROR.
    pub max_frame_size: u32,
}

impl FrameDecoder {
    pub fn new(max_frame_size: u32) -> Self {
        FrameDecoder { max_frame_size }
    }

    /// The frame header at the front of `buf`, once its 9 bytes are there. A header whose
    /// length exceeds our limit is an error before its payload is waited for, so an
    /// oversized frame is never buffered.
    pub fn peek_header(&self, buf: &[u8]) -> Result<Option<FrameHeader>, FrameError> {
        let Some(raw) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = FrameHeader::parse(raw);
        if header.len > self.max_frame_size {
            // §4.2: any frame may alter connection state once it can't be read; treat
            // every oversize frame as a connection error (allowed for all types).
            return Err(FrameError::Connection(
                ErrorCode::FRAME_SIZE_ERROR,
                "frame larger than SETTINGS_MAX_FRAME_SIZE",
            ));
        }
        Ok(Some(header))
    }

    /// Takes the next complete frame off the front of `buf`: `Ok(None)` while it is
    /// incomplete (nothing is consumed). On `Err` the offending frame was consumed (a
    /// stream error lets the connection go on; after a connection error, stop reading).
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = self.peek_header(buf)? else {
            return Ok(None);
        };
        let total = HEADER_LEN + header.len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(header.len as usize).freeze();
        parse_payload(header, payload).map(Some)
    }
}

fn need_stream(h: &FrameHeader, what: &'static str) -> Result<(), FrameError> {
    if h.stream == 0 {
        Err(FrameError::Connection(ErrorCode::PROTOCOL_ERROR, what))
    } else {
        Ok(())
    }
}

fn need_no_stream(h: &FrameHeader, what: &'static str) -> Result<(), FrameError> {
    if h.stream != 0 {
        Err(FrameError::Connection(ErrorCode::PROTOCOL_ERROR, what))
    } else {
        Ok(())
    }
}

/// Removes the pad length field and the padding (§6.1, §6.2) when PADDED is set.
fn strip_padding(h: &FrameHeader, mut payload: Bytes) -> Result<Bytes, FrameError> {
    if h.flags & flag::PADDED == 0 {
        return Ok(payload);
    }
    let Some(&pad) = payload.first() else {
        return Err(FrameError::Connection(
            ErrorCode::FRAME_SIZE_ERROR,
            "PADDED frame without a pad length",
        ));
    };
    payload.advance(1);
    let pad = pad as usize;
    if pad > payload.len() {
        return Err(FrameError::Connection(
            ErrorCode::PROTOCOL_ERROR,
            "padding longer than the payload",
        ));
    }
    payload.truncate(payload.len() - pad);
    Ok(payload)
}

/// The priority fields. A stream depending on itself is for the caller to judge: on
/// HEADERS the block must still be decoded (the HPACK state is shared), on PRIORITY it is
/// a stream error.
fn parse_priority(b: &[u8]) -> Result<Priority, FrameError> {
    let Some(raw) = b.first_chunk::<5>() else {
        return Err(FrameError::Connection(
            ErrorCode::FRAME_SIZE_ERROR,
            "priority fields truncated",
        ));
    };
    let dep = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    Ok(Priority {
        exclusive: dep & !MAX_WINDOW != 0,
        dependency: dep & MAX_WINDOW,
        weight: raw[4],
    })
}

fn parse_payload(h: FrameHeader, mut payload: Bytes) -> Result<Frame, FrameError> {
    use FrameError::{Connection, Stream};
    match h.kind {
        kind::DATA => {
            need_stream(&h, "DATA on stream 0")?;
            let flow_len = h.len;
            let data = strip_padding(&h, payload)?;
            Ok(Frame::Data {
                stream: h.stream,
                data,
                end_stream: h.flags & flag::END_STREAM != 0,
                flow_len,
            })
        }
        kind::HEADERS => {
            need_stream(&h, "HEADERS on stream 0")?;
            let mut block = strip_padding(&h, payload)?;
            let priority = if h.flags & flag::PRIORITY != 0 {
                let p = parse_priority(&block)?;
                block.advance(5);
                Some(p)
            } else {
                None
            };
            Ok(Frame::Headers {
                stream: h.stream,
                block,
                end_stream: h.flags & flag::END_STREAM != 0,
                end_headers: h.flags & flag::END_HEADERS != 0,
                priority,
            })
        }
        kind::PRIORITY => {
            need_stream(&h, "PRIORITY on stream 0")?;
            if h.len != 5 {
                // §6.3: a stream error.
                return Err(Stream(
                    h.stream,
                    ErrorCode::FRAME_SIZE_ERROR,
                    "PRIORITY length is not 5",
                ));
            }
            let priority = parse_priority(&payload)?;
            if priority.dependency == h.stream {
                // §5.3.1 (RFC 7540): a stream cannot depend on itself.
                return Err(Stream(
                    h.stream,
                    ErrorCode::PROTOCOL_ERROR,
                    "stream depends on itself",
                ));
            }
            Ok(Frame::Priority {
                stream: h.stream,
                priority,
            })
        }
        kind::RST_STREAM => {
            need_stream(&h, "RST_STREAM on stream 0")?;
            if h.len != 4 {
                return Err(Connection(
                    ErrorCode::FRAME_SIZE_ERROR,
                    "RST_STREAM length is not 4",
                ));
            }
            Ok(Frame::RstStream {
                stream: h.stream,
                code: ErrorCode(payload.get_u32()),
            })
        }
        kind::SETTINGS => {
            need_no_stream(&h, "SETTINGS on a stream")?;
            let ack = h.flags & flag::ACK != 0;
            if ack && h.len != 0 {
                return Err(Connection(
                    ErrorCode::FRAME_SIZE_ERROR,
                    "SETTINGS ACK with a payload",
                ));
            }
            if h.len.checked_rem(6) != Some(0) {
                return Err(Connection(
                    ErrorCode::FRAME_SIZE_ERROR,
                    "SETTINGS length is not a multiple of 6",
                ));
            }
            let settings = parse_settings(&payload)?;
            Ok(Frame::Settings { ack, settings })
        }
        kind::PUSH_PROMISE => {
            // A client never sends it (§8.4): the caller refuses it; still check what it can.
            need_stream(&h, "PUSH_PROMISE on stream 0")?;
            Ok(Frame::PushPromise { stream: h.stream })
        }
        kind::PING => {
            need_no_stream(&h, "PING on a stream")?;
            let Some(data) = payload.first_chunk::<8>().filter(|_| h.len == 8) else {
                return Err(Connection(
                    ErrorCode::FRAME_SIZE_ERROR,
                    "PING length is not 8",
                ));
            };
            Ok(Frame::Ping {
                ack: h.flags & flag::ACK != 0,
                data: *data,
            })
        }
        kind::GOAWAY => {
            need_no_stream(&h, "GOAWAY on a stream")?;
            if h.len < 8 {
                return Err(Connection(
                    ErrorCode::FRAME_SIZE_ERROR,
                    "GOAWAY shorter than 8",
                ));
            }
            let last_stream = payload.get_u32() & MAX_WINDOW;
            let code = ErrorCode(payload.get_u32());
            Ok(Frame::GoAway {
                last_stream,
                code,
                debug: payload,
            })
        }
        kind::WINDOW_UPDATE => {
            if h.len != 4 {
                return Err(Connection(
                    ErrorCode::FRAME_SIZE_ERROR,
                    "WINDOW_UPDATE length is not 4",
                ));
            }
            let increment = payload.get_u32() & MAX_WINDOW;
            if increment == 0 {
                const WHY: &str = "WINDOW_UPDATE with a zero increment";
                return Err(if h.stream == 0 {
                    Connection(ErrorCode::PROTOCOL_ERROR, WHY)
                } else {
                    Stream(h.stream, ErrorCode::PROTOCOL_ERROR, WHY)
                });
            }
            Ok(Frame::WindowUpdate {
                stream: h.stream,
                increment,
            })
        }
        kind::CONTINUATION => {
            need_stream(&h, "CONTINUATION on stream 0")?;
            Ok(Frame::Continuation {
                stream: h.stream,
                block: payload,
                end_headers: h.flags & flag::END_HEADERS != 0,
            })
        }
        other => Ok(Frame::Unknown {
            kind: other,
            stream: h.stream,
        }),
    }
}

fn parse_settings(payload: &[u8]) -> Result<Settings, FrameError> {
    let mut s = Settings::default();
    for entry in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([entry[0], entry[1]]);
        let v = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
        match id {
            setting::HEADER_TABLE_SIZE => s.header_table_size = Some(v),
            setting::ENABLE_PUSH => {
                if v > 1 {
                    return Err(FrameError::Connection(
                        ErrorCode::PROTOCOL_ERROR,
                        "SETTINGS_ENABLE_PUSH not 0 or 1",
                    ));
                }
                s.enable_push = Some(v == 1);
            }
            setting::MAX_CONCURRENT_STREAMS => s.max_concurrent_streams = Some(v),
            setting::INITIAL_WINDOW_SIZE => {
                if v > MAX_WINDOW {
                    return Err(FrameError::Connection(
                        ErrorCode::FLOW_CONTROL_ERROR,
                        "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                    ));
                }
                s.initial_window_size = Some(v);
            }
            setting::MAX_FRAME_SIZE => {
                if !(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&v) {
                    return Err(FrameError::Connection(
                        ErrorCode::PROTOCOL_ERROR,
                        "SETTINGS_MAX_FRAME_SIZE out of range",
                    ));
                }
                s.max_frame_size = Some(v);
            }
            setting::MAX_HEADER_LIST_SIZE => s.max_header_list_size = Some(v),
            setting::ENABLE_CONNECT_PROTOCOL => {
                if v > 1 {
                    return Err(FrameError::Connection(
                        ErrorCode::PROTOCOL_ERROR,
                        "SETTINGS_ENABLE_CONNECT_PROTOCOL not 0 or 1",
                    ));
                }
                s.enable_connect_protocol = Some(v == 1);
            }
            // §6.5.2: unknown settings are ignored.
            _ => {}
        }
    }
    Ok(s)
}

// ---- encoding: the frames a server sends ----

/// Writes a frame header followed by `payload`.
pub fn encode_frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.reserve(HEADER_LEN + payload.len());
    FrameHeader {
        len: payload.len() as u32,
        kind,
        flags,
        stream,
    }
    .write(out);
    out.put_slice(payload);
}

/// Our SETTINGS (values in `(id, value)` pairs).
pub fn encode_settings(out: &mut BytesMut, values: &[(u16, u32)]) {
    let mut payload = [0u8; 6 * 8];
    let mut n = 0;
    for (id, v) in values.iter().take(8) {
        payload[n..n + 2].copy_from_slice(&id.to_be_bytes());
        payload[n + 2..n + 6].copy_from_slice(&v.to_be_bytes());
        n += 6;
    }
    encode_frame(out, kind::SETTINGS, 0, 0, &payload[..n]);
}

pub fn encode_settings_ack(out: &mut BytesMut) {
    encode_frame(out, kind::SETTINGS, flag::ACK, 0, &[]);
}

pub fn encode_ping(out: &mut BytesMut, ack: bool, data: [u8; 8]) {
    encode_frame(out, kind::PING, if ack { flag::ACK } else { 0 }, 0, &data);
}

pub fn encode_goaway(out: &mut BytesMut, last_stream: u32, code: ErrorCode, debug: &[u8]) {
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&(last_stream & MAX_WINDOW).to_be_bytes());
    head[4..].copy_from_slice(&code.0.to_be_bytes());
    out.reserve(HEADER_LEN + 8 + debug.len());
    FrameHeader {
        len: (8 + debug.len()) as u32,
        kind: kind::GOAWAY,
        flags: 0,
        stream: 0,
    }
    .write(out);
    out.put_slice(&head);
    out.put_slice(debug);
}

pub fn encode_rst_stream(out: &mut BytesMut, stream: u32, code: ErrorCode) {
    encode_frame(out, kind::RST_STREAM, 0, stream, &code.0.to_be_bytes());
}

pub fn encode_window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    encode_frame(
        out,
        kind::WINDOW_UPDATE,
        0,
        stream,
        &(increment & MAX_WINDOW).to_be_bytes(),
    );
}

/// A header block as HEADERS and as many CONTINUATION frames as `max_frame_size` needs.
pub fn encode_headers(
    out: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame_size: u32,
) {
    let max = (max_frame_size as usize).max(1);
    let mut chunks = block.chunks(max);
    let first = chunks.next().unwrap_or(&[]);
    let more = block.len() > max;
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if !more {
        flags |= flag::END_HEADERS;
    }
    encode_frame(out, kind::HEADERS, flags, stream, first);
    let mut rest = chunks.peekable();
    while let Some(chunk) = rest.next() {
        let flags = if rest.peek().is_none() {
            flag::END_HEADERS
        } else {
            0
        };
        encode_frame(out, kind::CONTINUATION, flags, stream, chunk);
    }
}

/// The header of a DATA frame of `len` bytes (the payload follows as its own `Bytes`).
pub fn encode_data_header(out: &mut BytesMut, stream: u32, len: u32, end_stream: bool) {
    FrameHeader {
        len,
        kind: kind::DATA,
        flags: if end_stream { flag::END_STREAM } else { 0 },
        stream,
    }
    .write(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        encode_frame(&mut b, kind, flags, stream, payload);
        b
    }

    fn decode_one(mut b: BytesMut) -> Result<Option<Frame>, FrameError> {
        FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE).decode(&mut b)
    }

    fn conn_err(r: Result<Option<Frame>, FrameError>) -> ErrorCode {
        match r {
            Err(FrameError::Connection(code, _)) => code,
            other => panic!("expected a connection error, got {other:?}"),
        }
    }

    #[test]
    fn rfc9113_4_1_partial_frames_wait_and_reserved_bit_is_ignored() {
        let mut whole = frame(kind::PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        whole[5] |= 0x80; // reserved bit on stream 0
        let dec = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(dec.decode(&mut part), Ok(None));
            assert_eq!(part.len(), cut, "nothing consumed from a partial frame");
        }
        let mut b = whole.clone();
        b.extend_from_slice(&[0, 0]);
        assert_eq!(
            dec.decode(&mut b),
            Ok(Some(Frame::Ping {
                ack: false,
                data: [1, 2, 3, 4, 5, 6, 7, 8]
            }))
        );
        assert_eq!(&b[..], &[0, 0], "the next frame's bytes stay");
    }

    #[test]
    fn rfc9113_4_1_unknown_types_are_ignored() {
        assert_eq!(
            decode_one(frame(0x42, 0xff, 3, b"whatever")),
            Ok(Some(Frame::Unknown {
                kind: 0x42,
                stream: 3
            }))
        );
    }

    #[test]
    fn rfc9113_4_2_oversize_frame_is_refused_from_its_header() {
        let mut hdr = BytesMut::new();
        FrameHeader {
            len: DEFAULT_MAX_FRAME_SIZE + 1,
            kind: kind::DATA,
            flags: 0,
            stream: 1,
        }
        .write(&mut hdr);
        // Only the header has arrived: the error comes before the payload is awaited.
        assert_eq!(conn_err(decode_one(hdr)), ErrorCode::FRAME_SIZE_ERROR);
        let big = FrameDecoder::new(MAX_MAX_FRAME_SIZE);
        let mut b = frame(kind::DATA, 0, 1, &vec![7; 20_000]);
        assert!(matches!(big.decode(&mut b), Ok(Some(Frame::Data { .. }))));
    }

    #[test]
    fn rfc9113_6_1_data_padding_and_flow_length() {
        let mut payload = vec![3u8];
        payload.extend_from_slice(b"abc");
        payload.extend_from_slice(&[0, 0, 0]);
        let f = decode_one(frame(
            kind::DATA,
            flag::PADDED | flag::END_STREAM,
            1,
            &payload,
        ));
        assert_eq!(
            f,
            Ok(Some(Frame::Data {
                stream: 1,
                data: Bytes::from_static(b"abc"),
                end_stream: true,
                flow_len: 7
            }))
        );
        assert_eq!(
            conn_err(decode_one(frame(kind::DATA, 0, 0, b"x"))),
            ErrorCode::PROTOCOL_ERROR
        );
        assert_eq!(
            conn_err(decode_one(frame(kind::DATA, flag::PADDED, 1, &[5, 1, 2]))),
            ErrorCode::PROTOCOL_ERROR
        );
        assert_eq!(
            conn_err(decode_one(frame(kind::DATA, flag::PADDED, 1, &[]))),
            ErrorCode::FRAME_SIZE_ERROR
        );
        // Padding exactly filling the payload is fine.
        assert!(matches!(
            decode_one(frame(kind::DATA, flag::PADDED, 1, &[2, 0, 0])),
            Ok(Some(Frame::Data { ref data, flow_len: 3, .. })) if data.is_empty()
        ));
    }

    #[test]
    fn rfc9113_6_2_headers_padding_and_priority() {
        let mut payload = vec![2u8];
        payload.extend_from_slice(&[0x80, 0, 0, 5, 200]);
        payload.extend_from_slice(b"\x82\x86");
        payload.extend_from_slice(&[0, 0]);
        let f = decode_one(frame(
            kind::HEADERS,
            flag::PADDED | flag::PRIORITY | flag::END_HEADERS,
            3,
            &payload,
        ));
        assert_eq!(
            f,
            Ok(Some(Frame::Headers {
                stream: 3,
                block: Bytes::from_static(b"\x82\x86"),
                end_stream: false,
                end_headers: true,
                priority: Some(Priority {
                    exclusive: true,
                    dependency: 5,
                    weight: 200
                }),
            }))
        );
        assert_eq!(
            conn_err(decode_one(frame(
                kind::HEADERS,
                flag::END_HEADERS,
                0,
                b"\x82"
            ))),
            ErrorCode::PROTOCOL_ERROR
        );
        assert_eq!(
            conn_err(decode_one(frame(kind::HEADERS, flag::PRIORITY, 1, &[0, 0]))),
            ErrorCode::FRAME_SIZE_ERROR
        );
        // Self-dependency on HEADERS is judged by the connection (after HPACK decoding).
        assert!(matches!(
            decode_one(frame(kind::HEADERS, flag::PRIORITY, 1, &[0, 0, 0, 1, 9])),
            Ok(Some(Frame::Headers {
                priority: Some(Priority { dependency: 1, .. }),
                ..
            }))
        ));
    }

    #[test]
    fn rfc9113_6_3_priority_frame_rules() {
        assert_eq!(
            decode_one(frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 3, 16])),
            Ok(Some(Frame::Priority {
                stream: 1,
                priority: Priority {
                    exclusive: false,
                    dependency: 3,
                    weight: 16
                }
            }))
        );
        assert!(matches!(
            decode_one(frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 1, 3])),
            Err(FrameError::Stream(1, ErrorCode::PROTOCOL_ERROR, _))
        ));
        assert!(matches!(
            decode_one(frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 3])),
            Err(FrameError::Stream(1, ErrorCode::FRAME_SIZE_ERROR, _))
        ));
        assert_eq!(
            conn_err(decode_one(frame(kind::PRIORITY, 0, 0, &[0, 0, 0, 3, 1]))),
            ErrorCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn rfc9113_6_4_rst_stream_rules() {
        assert_eq!(
            decode_one(frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8])),
            Ok(Some(Frame::RstStream {
                stream: 1,
                code: ErrorCode::CANCEL
            }))
        );
        assert_eq!(
            conn_err(decode_one(frame(kind::RST_STREAM, 0, 1, &[0, 0, 8]))),
            ErrorCode::FRAME_SIZE_ERROR
        );
        assert_eq!(
            conn_err(decode_one(frame(kind::RST_STREAM, 0, 0, &[0, 0, 0, 8]))),
            ErrorCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn rfc9113_6_5_settings_rules() {
        let mut b = BytesMut::new();
        encode_settings(
            &mut b,
            &[
                (setting::INITIAL_WINDOW_SIZE, 100),
                (setting::MAX_FRAME_SIZE, 20_000),
                (0x99, 1),
                (setting::INITIAL_WINDOW_SIZE, 200),
            ],
        );
        assert_eq!(
            decode_one(b),
            Ok(Some(Frame::Settings {
                ack: false,
                settings: Settings {
                    initial_window_size: Some(200),
                    max_frame_size: Some(20_000),
                    ..Settings::default()
                }
            }))
        );
        let mut ack = BytesMut::new();
        encode_settings_ack(&mut ack);
        assert!(matches!(
            decode_one(ack),
            Ok(Some(Frame::Settings { ack: true, .. }))
        ));
        let cases: [(u8, u32, &[u8], ErrorCode); 6] = [
            (
                flag::ACK,
                0,
                &[0, 1, 0, 0, 0, 0],
                ErrorCode::FRAME_SIZE_ERROR,
            ),
            (0, 0, &[0, 1, 0, 0, 0], ErrorCode::FRAME_SIZE_ERROR),
            (0, 1, &[], ErrorCode::PROTOCOL_ERROR),
            (0, 0, &[0, 2, 0, 0, 0, 2], ErrorCode::PROTOCOL_ERROR),
            (0, 0, &[0, 4, 0x80, 0, 0, 0], ErrorCode::FLOW_CONTROL_ERROR),
            (0, 0, &[0, 5, 0, 0, 0x3f, 0xff], ErrorCode::PROTOCOL_ERROR),
        ];
        for (flags, stream, payload, code) in cases {
            assert_eq!(
                conn_err(decode_one(frame(kind::SETTINGS, flags, stream, payload))),
                code,
                "{payload:?}"
            );
        }
        assert_eq!(
            conn_err(decode_one(frame(
                kind::SETTINGS,
                0,
                0,
                &[0, 5, 0x01, 0, 0, 0]
            ))),
            ErrorCode::PROTOCOL_ERROR,
            "max frame size above 2^24-1"
        );
    }

    #[test]
    fn rfc9113_6_7_ping_rules() {
        let mut b = BytesMut::new();
        encode_ping(&mut b, true, *b"12345678");
        assert_eq!(
            decode_one(b),
            Ok(Some(Frame::Ping {
                ack: true,
                data: *b"12345678"
            }))
        );
        assert_eq!(
            conn_err(decode_one(frame(kind::PING, 0, 0, b"1234567"))),
            ErrorCode::FRAME_SIZE_ERROR
        );
        assert_eq!(
            conn_err(decode_one(frame(kind::PING, 0, 0, b"123456789"))),
            ErrorCode::FRAME_SIZE_ERROR
        );
        assert_eq!(
            conn_err(decode_one(frame(kind::PING, 0, 1, b"12345678"))),
            ErrorCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn rfc9113_6_8_goaway_round_trip_and_rules() {
        let mut b = BytesMut::new();
        encode_goaway(&mut b, 7, ErrorCode::ENHANCE_YOUR_CALM, b"calm");
        assert_eq!(
            decode_one(b),
            Ok(Some(Frame::GoAway {
                last_stream: 7,
                code: ErrorCode::ENHANCE_YOUR_CALM,
                debug: Bytes::from_static(b"calm")
            }))
        );
        assert_eq!(
            conn_err(decode_one(frame(kind::GOAWAY, 0, 0, &[0; 7]))),
            ErrorCode::FRAME_SIZE_ERROR
        );
        assert_eq!(
            conn_err(decode_one(frame(kind::GOAWAY, 0, 1, &[0; 8]))),
            ErrorCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn rfc9113_6_9_window_update_rules() {
        let mut b = BytesMut::new();
        encode_window_update(&mut b, 5, 1000);
        assert_eq!(
            decode_one(b),
            Ok(Some(Frame::WindowUpdate {
                stream: 5,
                increment: 1000
            }))
        );
        assert!(matches!(
            decode_one(frame(kind::WINDOW_UPDATE, 0, 5, &[0, 0, 0, 0])),
            Err(FrameError::Stream(5, ErrorCode::PROTOCOL_ERROR, _))
        ));
        assert_eq!(
            conn_err(decode_one(frame(
                kind::WINDOW_UPDATE,
                0,
                0,
                &[0x80, 0, 0, 0]
            ))),
            ErrorCode::PROTOCOL_ERROR,
            "the reserved bit does not count in the increment"
        );
        assert_eq!(
            conn_err(decode_one(frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1]))),
            ErrorCode::FRAME_SIZE_ERROR
        );
    }

    #[test]
    fn rfc9113_6_10_headers_split_into_continuations() {
        let block: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut b = BytesMut::new();
        encode_headers(&mut b, 9, &block, true, DEFAULT_MAX_FRAME_SIZE);
        let dec = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        let mut got = Vec::new();
        let mut ends = Vec::new();
        while let Ok(Some(f)) = dec.decode(&mut b) {
            match f {
                Frame::Headers {
                    block,
                    end_headers,
                    end_stream: true,
                    stream: 9,
                    ..
                } => {
                    got.extend_from_slice(&block);
                    ends.push(end_headers);
                }
                Frame::Continuation {
                    block,
                    end_headers,
                    stream: 9,
                } => {
                    got.extend_from_slice(&block);
                    ends.push(end_headers);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, block);
        assert_eq!(ends, [false, false, true]);
        assert_eq!(
            conn_err(decode_one(frame(kind::CONTINUATION, 0, 0, b""))),
            ErrorCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn data_header_and_payload_decode_as_one_frame() {
        let mut b = BytesMut::new();
        encode_data_header(&mut b, 11, 5, true);
        b.extend_from_slice(b"hello");
        assert_eq!(
            decode_one(b),
            Ok(Some(Frame::Data {
                stream: 11,
                data: Bytes::from_static(b"hello"),
                end_stream: true,
                flow_len: 5
            }))
        );
    }

    #[test]
    fn error_codes_name_themselves() {
        assert_eq!(
            format!("{:?}", ErrorCode::ENHANCE_YOUR_CALM),
            "ENHANCE_YOUR_CALM"
        );
        assert_eq!(format!("{:?}", ErrorCode(0x77)), "ErrorCode(0x77)");
    }
}
