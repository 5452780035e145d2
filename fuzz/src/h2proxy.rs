//! The `h2_proxy` target: arbitrary client frames through the whole HTTP/2 proxy
//! (`mxgate_core::Http2Session`: the engine and one HTTP/1.1 exchange per stream) to
//! in-memory upstreams that answer.
//!
//! Input: as `h2_frames` (one flags byte, then the client's bytes after the preface and an
//! empty SETTINGS). Flags: bits 0–2 the piece size, bit 3 upstreams answer chunked (else
//! with a length), bit 4 upstreams answer before the request body ends, bit 5 upstreams
//! close after a part of the answer, bit 6 one second passes between pieces, bit 7 a
//! graceful shutdown begins halfway.
//!
//! Invariants: no panic; what the client receives is a valid frame sequence whose header
//! blocks decode and start with `:status`; every upstream request is one HTTP/1.1 head
//! httparse reads completely, whose method and target are **byte for byte** the
//! `:method` and `:path` of the request the engine decoded on that stream (a second
//! engine fed the same bytes is the model), with exactly one Host equal to the
//! `:authority`; outputs only name streams that exist; at the end (client EOF and
//! timers) every upstream connection asked for is released, and the session closes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mxgate_core::http2::frame;
use mxgate_core::http2::{Connection as Engine, Event, Limits, PREFACE};
use mxgate_core::{Http2Session, Output, SessionOutput};

use super::driver::{self, CLIENT_HTTPS};
use super::h2::ClientView;

const MAX_INPUT: usize = 64 * 1024;
const PIECES: [usize; 8] = [1, 3, 7, 16, 64, 256, 1024, usize::MAX];

#[derive(Default)]
struct Upstream {
    received: Vec<u8>,
    released: bool,
    answered: bool,
    closed: bool,
}

/// What the model engine decoded: per stream, method, path, authority.
type Decoded = BTreeMap<u32, (Vec<u8>, Vec<u8>, Option<Vec<u8>>)>;

pub fn h2_proxy(data: &[u8]) {
    run(data);
}

/// The target; returns how many upstream requests were checked against the model (for the
/// self-test that the seeds reach the upstream at all).
pub fn run(data: &[u8]) -> usize {
    if data.is_empty() || data.len() > MAX_INPUT {
        return 0;
    }
    let flags = data[0];
    let piece = PIECES[(flags & 7) as usize];
    let chunked = flags & 8 != 0;
    let early = flags & 16 != 0;
    let cut = flags & 32 != 0;
    let tick = flags & 64 != 0;
    let shutdown = flags & 128 != 0;

    let mut input = BytesMut::from(&PREFACE[..]);
    frame::encode_settings(&mut input, &[]);
    input.extend_from_slice(&data[1..]);

    let config = driver::config(driver::small_limits());
    let mut now = Instant::now();
    let mut session = Http2Session::new(
        Arc::new(config),
        CLIENT_HTTPS,
        "203.0.113.5".parse().unwrap(),
        1,
        now,
    );
    // The model: the same engine, fed the same bytes, its requests recorded.
    let mut model = Engine::new(Limits::default(), now);
    let mut decoded: Decoded = BTreeMap::new();
    let mut view = ClientView::new();
    let mut ups: BTreeMap<u32, Upstream> = BTreeMap::new();

    let chunks: Vec<&[u8]> = input.chunks(piece.min(input.len()).max(1)).collect();
    let half = chunks.len() / 2;
    for (i, chunk) in chunks.iter().enumerate() {
        if tick {
            now += Duration::from_secs(1);
            session.handle_timeout(now);
            pump(&mut session, &mut ups, &mut view, &decoded, now);
        }
        if shutdown && i == half {
            session.begin_shutdown(now);
        }
        model.handle_data(chunk, now);
        while let Some(e) = model.poll_event() {
            if let Event::Request { stream, request } = &e {
                let (stream, request) = (*stream, request);
                decoded.insert(
                    stream,
                    (
                        request.method.to_vec(),
                        request.path.to_vec(),
                        request.authority.as_ref().map(|a| a.to_vec()),
                    ),
                );
            }
            // The model gives every byte back at once: its windows are never smaller than
            // the session's, so it decodes every request the session does.
            if let Event::Data { stream, data, .. } = e {
                model.release_capacity(stream, data.len());
            }
        }
        while model.poll_transmit().is_some() {}
        session.handle_client_data(chunk, now);
        pump(&mut session, &mut ups, &mut view, &decoded, now);
        // Upstreams answer (each once).
        let streams: Vec<u32> = ups.keys().copied().collect();
        for s in streams {
            let up = ups.get_mut(&s).unwrap();
            if up.released || up.answered || up.received.is_empty() {
                continue;
            }
            let complete = head_end(&up.received).is_some();
            if !complete || (!early && !request_ended(&up.received)) {
                continue;
            }
            up.answered = true;
            let answer: &[u8] = if chunked {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
            };
            if cut {
                session.handle_upstream_data(s, &answer[..answer.len() - 3], now);
                up.closed = true;
                session.handle_upstream_eof(s, now);
            } else {
                session.handle_upstream_data(s, answer, now);
            }
            pump(&mut session, &mut ups, &mut view, &decoded, now);
        }
    }
    // The end: the client goes away, timers run out; everything must be given back.
    session.handle_client_eof(now);
    pump(&mut session, &mut ups, &mut view, &decoded, now);
    for _ in 0..4 {
        now += Duration::from_secs(400);
        session.handle_timeout(now);
        pump(&mut session, &mut ups, &mut view, &decoded, now);
    }
    for (s, up) in &ups {
        assert!(up.released, "the upstream of stream {s} was never released");
    }
    assert!(
        session.is_closed(),
        "the session did not close after the client left"
    );
    ups.values()
        .filter(|u| head_end(&u.received).is_some())
        .count()
}

/// Performs the session's outputs; checks each upstream request as its head completes.
fn pump(
    session: &mut Http2Session,
    ups: &mut BTreeMap<u32, Upstream>,
    view: &mut ClientView,
    decoded: &Decoded,
    now: Instant,
) {
    loop {
        let mut written = Vec::new();
        let mut connect = Vec::new();
        while let Some(out) = session.poll_output() {
            match out {
                SessionOutput::ToClient(b) => view.read(&b),
                SessionOutput::CloseClient => {}
                SessionOutput::Exchange { stream, output } => match output {
                    Output::ConnectUpstream { .. } => {
                        let fresh = ups.insert(stream, Upstream::default());
                        assert!(
                            fresh.is_none_or(|u| u.released),
                            "a second upstream for stream {stream} while one is held"
                        );
                        connect.push(stream);
                    }
                    Output::ToUpstream(b) => {
                        let up = ups.get_mut(&stream).expect("bytes for an unknown upstream");
                        assert!(!up.released, "bytes for a released upstream");
                        let before = head_end(&up.received).is_some();
                        up.received.extend_from_slice(&b);
                        if !before && head_end(&up.received).is_some() {
                            check_head(stream, &up.received, decoded);
                        }
                        written.push(stream);
                    }
                    Output::ReleaseUpstream { .. } => {
                        let up = ups
                            .get_mut(&stream)
                            .expect("release of an unknown upstream");
                        assert!(!up.released, "released twice");
                        up.released = true;
                    }
                    Output::AccessLog(_)
                    | Output::ExchangeDone(_)
                    | Output::UpstreamFault { .. } => {}
                    Output::ToClient(_) | Output::CloseClient => {
                        panic!("a client output named an exchange")
                    }
                },
            }
        }
        if written.is_empty() && connect.is_empty() {
            return;
        }
        for s in connect {
            session.handle_upstream_connected(s, false, now);
        }
        written.dedup();
        for s in written {
            session.handle_upstream_written(s, now);
        }
    }
}

fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Whether the upstream has the whole request (its head, and its body by its framing).
fn request_ended(b: &[u8]) -> bool {
    let Some(end) = head_end(b) else {
        return false;
    };
    let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return b.ends_with(b"0\r\n\r\n") && b.len() > end;
    }
    match head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(n) => b.len() - end >= n,
        None => true,
    }
}

/// The upstream head is one complete HTTP/1.1 request whose method and target are the
/// stream's `:method` and `:path` byte for byte, with the `:authority` as its one Host.
fn check_head(stream: u32, received: &[u8], decoded: &Decoded) {
    let (method, path, authority) = decoded.get(&stream).unwrap_or_else(|| {
        panic!("an upstream request for stream {stream}, which the model never saw")
    });
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let status = req.parse(received).expect("the upstream head parses");
    assert!(status.is_complete(), "the upstream head is complete");
    assert_eq!(
        req.method.map(str::as_bytes),
        Some(&method[..]),
        "method changed"
    );
    assert_eq!(
        req.path.map(str::as_bytes),
        Some(&path[..]),
        ":path not forwarded byte for byte"
    );
    assert_eq!(req.version, Some(1));
    let hosts: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value)
        .collect();
    assert_eq!(hosts.len(), 1, "exactly one Host upstream");
    if let Some(a) = authority {
        assert!(
            hosts[0].eq_ignore_ascii_case(a),
            "Host is not the :authority"
        );
    }
}
