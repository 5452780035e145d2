//! The fuzz targets' bodies: each takes the raw fuzz input, drives a connection and
//! panics when an invariant breaks. The binaries in `src/bin/` call these under
//! `afl::fuzz!`; the core's regression test calls them on every file in
//! `fuzz/regressions/<target>/`.

use super::driver::{self, Driver, Reply, CLIENT_HTTPS, PEERS};
use super::mx::{route, Limits};
use super::wire::{self, Framing, Read};

/// Inputs longer than this are ignored: they only slow the fuzzer down.
const MAX_INPUT: usize = 16 * 1024;

/// Runs the target named `name` (a directory name under `fuzz/regressions/`).
pub fn by_name(name: &str) -> Option<fn(&[u8])> {
    Some(match name {
        "request_stream" => request_stream,
        "uri_preservation" => uri_preservation,
        "framing_agreement" => framing_agreement,
        "response_stream" => response_stream,
        "h2_frames" => super::h2::h2_frames,
        "h2_proxy" => super::h2proxy::h2_proxy,
        _ => return None,
    })
}

/// Whether `data` holds a `Connection` field naming a header mxgate manages (Host or
/// Content-Length): an input for the known core bug `connection-strips`, skipped while it
/// is tolerated (see [`driver::tolerated`]).
fn known_connection_strips(data: &[u8]) -> bool {
    if !driver::tolerated("connection-strips") {
        return false;
    }
    let lower = data.to_ascii_lowercase();
    lower.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_prefix(b"\r").unwrap_or(line);
        line.starts_with(b"connection")
            && [&b"host"[..], b"content-length", b"transfer-encoding"]
                .iter()
                .any(|h| line.windows(h.len()).any(|w| w == *h))
    })
}

/// Whether `upstream` holds a status line with a code below 100 (`HTTP/1.1 011`): an
/// input for the known core bug `status-digits`, skipped while it is tolerated.
fn known_status_digits(upstream: &[u8]) -> bool {
    driver::tolerated("status-digits")
        && upstream
            .windows(10)
            .any(|w| w.starts_with(b"HTTP/1.") && w[8] == b' ' && w[9] == b'0')
}

fn reply_for(bits: u8) -> Reply {
    match bits & 3 {
        0 => Reply::Ok,
        1 => Reply::Eof,
        2 => Reply::Early,
        _ => Reply::Refuse,
    }
}

/// Arbitrary client bytes, in fuzzer-chosen pieces, to a client-side connection whose
/// upstream answers with a fixed response (or closes, answers early, refuses).
///
/// Input: `script`, `flags`, `n`, `n` piece sizes, then the client's bytes.
/// flags: bits 0-1 listener (plain, client, federation, plain), bits 2-3 peer (see
/// [`PEERS`]), bit 4 client EOF at the end, bit 5 reuse pooled connections, bit 6 use
/// `script`: 2 bits per exchange (cycled over 4): ok, close, early, refuse (else all ok).
pub fn request_stream(data: &[u8]) {
    if known_connection_strips(data) {
        return;
    }
    if data.len() > MAX_INPUT {
        return;
    }
    let Some((&script, data)) = data.split_first() else {
        return;
    };
    let Some((flags, pieces, input)) = driver::header(data) else {
        return;
    };
    let listener = usize::from(flags & 3) % 3;
    let peer = PEERS[usize::from((flags >> 2) & 3) % PEERS.len()];
    let replies = if flags & 0x40 != 0 {
        (0..4).map(|i| reply_for(script >> (2 * i))).collect()
    } else {
        vec![Reply::Ok]
    };
    let mut d = Driver::new(
        driver::config(driver::small_limits()),
        listener,
        peer,
        replies,
    );
    d.reuse = flags & 0x20 != 0;
    d.run(input, &pieces, flags & 0x10 != 0);
    let outcome = d.check();
    // Every exchange ended in a response or a close: nothing is left half-sent.
    if !outcome.responses.switched {
        assert!(
            outcome.responses.rest.is_empty() || partial_is_interim(&outcome.responses.rest),
            "the client got a cut response from a well-behaved upstream: {:?}",
            String::from_utf8_lossy(&outcome.responses.rest)
        );
    }
    for l in &d.logs {
        if l.status == 0 {
            assert!(
                d.client_closed,
                "an exchange ended with no response and no close"
            );
        }
    }
}

/// Only interim responses (e.g. our own `100 Continue`) and nothing after them.
fn partial_is_interim(rest: &[u8]) -> bool {
    let mut at = 0;
    while at < rest.len() {
        match wire::response_head(&rest[at..]) {
            Read::Done(h) if (100..200).contains(&h.status) && h.status != 101 => at += h.len,
            _ => return false,
        }
    }
    true
}

/// Characters a fuzzed target is made of; anything else maps onto them.
const TARGET_ALPHABET: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789%./?=&+!:$@~_-#;,*'()";

/// The origin-form target for a fuzz input: a prefix picked by the first byte, then the
/// rest mapped onto [`TARGET_ALPHABET`] (its own characters map to themselves).
pub fn fuzz_target(data: &[u8]) -> Vec<u8> {
    let Some((&pick, rest)) = data.split_first() else {
        return b"/".to_vec();
    };
    let prefix: &[u8] = match pick % 4 {
        0 => b"/",
        1 => b"/_matrix/",
        2 => b"/_synapse/",
        _ => b"/_matrix/client/v3/",
    };
    let mut t = prefix.to_vec();
    t.extend(rest.iter().map(|&b| {
        if TARGET_ALPHABET.contains(&b) {
            b
        } else {
            TARGET_ALPHABET[usize::from(b) % TARGET_ALPHABET.len()]
        }
    }));
    t
}

/// Where a path goes on the client listener, for a client not on the admin allowlist,
/// by this file's own reading of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    /// Answered by mxgate itself: which document (`unknown` for any other well-known).
    Local(Vec<u8>),
    Upstream,
    /// The admin API, refused to this client (404).
    Admin,
    /// No route (404).
    NotFound,
}

fn under(path: &[u8], prefix: &[u8]) -> bool {
    path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

fn dest(path: &[u8]) -> Dest {
    if path == b"/health" {
        Dest::Local(path.to_vec())
    } else if under(path, b"/.well-known/matrix") {
        let doc = &path[b"/.well-known/matrix".len()..];
        Dest::Local(match doc {
            b"/server" | b"/client" | b"/support" => doc.to_vec(),
            _ => b"unknown".to_vec(),
        })
    } else if under(path, b"/_synapse/admin") {
        Dest::Admin
    } else if under(path, b"/_matrix") || under(path, b"/_synapse/client") {
        Dest::Upstream
    } else {
        Dest::NotFound
    }
}

/// The path as an upstream that decodes `%XX` and resolves dot segments would route it:
/// everything before `?` (a `#` is not special in a request-target), decoded once,
/// empty and `.` segments dropped, `..` popping.
fn upstream_view(target: &[u8]) -> Vec<u8> {
    let end = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    let raw = &target[..end];
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                decoded.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        decoded.push(raw[i]);
        i += 1;
    }
    let mut segs: Vec<&[u8]> = Vec::new();
    for s in decoded.split(|&b| b == b'/').skip(1) {
        match s {
            b"" | b"." => {}
            b".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = Vec::new();
    for s in segs {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() || decoded.ends_with(b"/") {
        out.push(b'/');
    }
    out
}

/// A fuzzed origin-form target in an otherwise valid GET: it reaches the upstream byte for
/// byte, or is refused (400 when its decoded form routes elsewhere, 404 when nothing
/// serves it) with nothing sent upstream.
pub fn uri_preservation(data: &[u8]) {
    if data.len() > 4096 {
        return;
    }
    let target = fuzz_target(data);
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(&target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: matrix.example.org\r\n\r\n");
    let config = driver::config(Limits::default());
    let listener = config.listeners[CLIENT_HTTPS].clone();
    let mut d = Driver::new(config.clone(), CLIENT_HTTPS, PEERS[0], vec![Reply::Ok]);
    d.run(&request, &[], true);
    let outcome = d.check();
    let status = outcome.responses.finals.first().map(|e| e.last.head.status);
    let forwarded = !d.forwarded.is_empty();
    let shown = String::from_utf8_lossy(&target).into_owned();

    // Core's own routing, as its public module reports it.
    let core_path_end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let core = route::decide(
        &config,
        &listener,
        &target[..core_path_end],
        PEERS[0].parse().unwrap(),
    );

    // This file's reading: the raw path and its decoded form must go to the same place.
    let raw_end = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    let raw = dest(&target[..raw_end]);
    let normal = dest(&upstream_view(&target));
    // A request-target never carries a fragment: refusing one is always right.
    let has_hash = target.contains(&b'#');

    if forwarded && has_hash && driver::tolerated("fragment") {
        return;
    }
    // A byte RFC 3986 does not allow in a target, or a broken `%` escape: always 400, never
    // forwarded (clients percent-encode; an upstream would have to guess).
    if !has_hash && mxgate_core::http1::target::check_origin_form(&target).is_err() {
        assert!(
            !forwarded,
            "{shown}: forwarded with characters RFC 3986 refuses"
        );
        assert_eq!(status, Some(400), "{shown}");
        return;
    }
    if forwarded {
        assert_eq!(d.forwarded.len(), 1, "{shown}: forwarded twice");
        let up = &d.upstreams[d.forwarded[0].conn].received;
        let mut line = b"GET ".to_vec();
        line.extend_from_slice(&target);
        line.extend_from_slice(b" HTTP/1.1\r\n");
        assert!(
            up.starts_with(&line),
            "{shown}: the upstream got {:?}",
            String::from_utf8_lossy(&up[..up.len().min(line.len() + 20)])
        );
        assert_eq!(
            (raw, normal),
            (Dest::Upstream, Dest::Upstream),
            "{shown}: forwarded, but an upstream that decodes and resolves it routes {:?}",
            String::from_utf8_lossy(&upstream_view(&target))
        );
        assert_eq!(status, Some(200), "{shown}");
        assert!(
            matches!(core, Ok(route::Decision::Forward(0))),
            "{shown}: {core:?}"
        );
        return;
    }
    assert!(d
        .logs
        .iter()
        .all(|l| l.connects == 0 && l.upstream_bytes == 0));
    if has_hash {
        // Not forwarded: any refusal of a target with a fragment is right.
        return;
    }
    match status {
        Some(400) => {
            assert!(
                raw != normal || has_hash,
                "{shown}: refused as ambiguous, but it routes the same decoded ({:?})",
                String::from_utf8_lossy(&upstream_view(&target))
            );
            assert!(
                core.is_err() || has_hash,
                "{shown}: 400 but route::decide says {core:?}"
            );
        }
        Some(404) => {
            assert!(
                raw == normal && matches!(raw, Dest::Admin | Dest::NotFound | Dest::Local(_)),
                "{shown}: 404 for a path that routes ({raw:?}, decoded {normal:?})"
            );
        }
        Some(200) => assert!(
            raw == normal && matches!(raw, Dest::Local(_)),
            "{shown}: 200 without forwarding"
        ),
        other => panic!("{shown}: unexpected status {other:?}"),
    }
    if raw == Dest::Upstream && normal == Dest::Upstream && !has_hash {
        panic!("{shown}: not forwarded (status {status:?}) but it routes upstream either way");
    }
}

/// The client's bytes and an upstream's bytes: every forwarded request and every
/// response passed back is re-read by the independent reader, which must agree on
/// where each ends.
///
/// Input: `flags`, `upstream piece size`, `client length` (2 bytes LE), `n`, `n` client
/// piece sizes, the client's bytes, then the first exchange's upstream bytes. (The
/// length's high byte doubles as the ignored first byte of [`driver::header`].)
/// flags: bits 0-1 listener, bits 2-3 peer, bit 4 client EOF at the end, bit 5 reuse
/// pooled connections, bit 6 the upstream closes after its bytes (later exchanges get
/// a fixed response).
pub fn framing_agreement(data: &[u8]) {
    if known_connection_strips(data) {
        return;
    }
    if data.len() > MAX_INPUT || data.len() < 4 {
        return;
    }
    let (flags, upiece) = (data[0], usize::from(data[1]));
    let clen = usize::from(u16::from_le_bytes([data[2], data[3]]));
    let Some((_, pieces, rest)) = driver::header(&data[3..]) else {
        return;
    };
    let clen = clen.min(rest.len());
    let (client, upstream) = rest.split_at(clen);
    if known_status_digits(upstream) {
        return;
    }
    let listener = usize::from(flags & 3) % 3;
    let peer = PEERS[usize::from((flags >> 2) & 3) % PEERS.len()];
    let replies = vec![
        Reply::Bytes {
            data: upstream.to_vec(),
            pieces: vec![upiece],
            eof: flags & 0x40 != 0,
        },
        Reply::Ok,
        Reply::Ok,
        Reply::Ok,
    ];
    let mut d = Driver::new(
        driver::config(driver::small_limits()),
        listener,
        peer,
        replies,
    );
    d.reuse = flags & 0x20 != 0;
    d.run(client, &pieces, flags & 0x10 != 0);
    let outcome = d.check();
    // The last attempt of the first exchange (an earlier one may have been retried).
    let Some(first) = d.forwarded.iter().rev().find(|f| f.exchange == 0) else {
        return;
    };
    // The response the client got for it agrees with what the upstream sent, as the
    // independent reader splits it.
    let head = match &first.request {
        Ok(m) => &m.head,
        Err(p) => &p.head,
    };
    let Some(index) = outcome
        .requests
        .heads
        .iter()
        .position(|r| r.head.method == head.method && r.head.target == head.target)
    else {
        return;
    };
    check_response_agreement(
        &first.response_bytes,
        head.method == b"HEAD",
        head.has("upgrade"),
        first.upstream_eof,
        &outcome,
        index,
        d.client_closed,
    );
}

/// What the client got as the `index`-th response, against the upstream's bytes `sent`
/// (`upstream_closed`: they end with a close).
fn check_response_agreement(
    sent: &[u8],
    head_request: bool,
    upgrade: bool,
    upstream_closed: bool,
    outcome: &driver::Outcome,
    index: usize,
    client_closed: bool,
) {
    let upstream = wire::response(sent, head_request, upstream_closed);
    let got = outcome.responses.finals.get(index);
    let shown = || {
        format!(
            "upstream sent {:?}; client got {:?}",
            String::from_utf8_lossy(sent),
            got.map(|e| e.last.head.status)
        )
    };
    // mxgate's own error (a 502/504 for the upstream, or a 400/408/413 for the request
    // body): always allowed when nothing of the upstream's response went out before it.
    let own_error = |e: &wire::Exchange| {
        matches!(e.last.head.status, 400 | 408 | 413 | 502 | 504)
            && (e.last.body.starts_with(b"{\"errcode\":\"M_")
                || head_request && e.last.head.has("access-control-allow-origin"))
    };
    match upstream {
        Read::Done(e) if e.last.head.status == 101 => {
            if let Some(g) = got {
                assert!(
                    g.last.head.status == 101 && upgrade || own_error(g),
                    "101 handling: {}",
                    shown()
                );
            }
        }
        Read::Done(e) => {
            let Some(g) = got else {
                // Cut before anything reached the client: the client must see a close.
                assert!(client_closed, "no response and no close: {}", shown());
                return;
            };
            // mxgate refused a response this reader accepts (it is stricter about, say, a
            // malformed Connection list): its own error is a fine answer.
            if own_error(g) {
                return;
            }
            assert_eq!(
                g.last.head.status,
                e.last.head.status,
                "status changed: {}",
                shown()
            );
            if index + 1 == outcome.responses.finals.len() && !outcome.responses.rest.is_empty() {
                panic!(
                    "the client got bytes after a complete response: {}: {:?}",
                    shown(),
                    String::from_utf8_lossy(&outcome.responses.rest)
                );
            }
            // A body delimited by the close cannot tell the client it was cut (mxgate may
            // give up on an upstream body it finds malformed): a prefix is all it can get.
            let cut_unseen = g.last.framing == Framing::UntilClose
                && client_closed
                && e.last.body.starts_with(&g.last.body);
            assert!(
                g.last.body == e.last.body || cut_unseen,
                "body changed: {}: client body {:?}",
                shown(),
                String::from_utf8_lossy(&g.last.body)
            );
        }
        Read::Partial | Read::Bad(_) => {
            // The upstream's response was cut or unreadable. The client either got
            // mxgate's error before any of it, or a close and nothing that looks complete.
            if let Some(g) = got {
                let complete_looking = matches!(
                    g.last.framing,
                    Framing::Length(_) | Framing::Chunked | Framing::Empty
                );
                assert!(
                    own_error(g) || !complete_looking || (g.last.head.status == 101 && upgrade),
                    "a cut upstream response looks complete to the client: {}",
                    shown()
                );
                if !own_error(g) {
                    assert!(
                        client_closed,
                        "cut response, client not closed: {}",
                        shown()
                    );
                }
            } else {
                assert!(
                    client_closed,
                    "cut response, client neither answered nor closed: {}",
                    shown()
                );
            }
        }
    }
}

/// Arbitrary upstream response bytes, in pieces, then a close, to a forwarded GET: no
/// cut response may look complete to the client.
///
/// Input: `flags`, `n`, `n` piece sizes, then the upstream's bytes.
/// flags: bit 0 HEAD, bit 1 HTTP/1.0, bit 2 an upgrade request, bit 3 reuse (retry path),
/// bit 4 the request has a 3-byte body.
pub fn response_stream(data: &[u8]) {
    if known_connection_strips(data) {
        return;
    }
    if data.len() > MAX_INPUT {
        return;
    }
    let Some((flags, pieces, upstream)) = driver::header(data) else {
        return;
    };
    if known_status_digits(upstream) {
        return;
    }
    let head_request = flags & 1 != 0;
    let http10 = flags & 2 != 0;
    let upgrade = flags & 4 != 0 && !http10;
    let with_body = flags & 16 != 0;
    let mut request = Vec::new();
    request.extend_from_slice(if head_request { &b"HEAD"[..] } else { b"GET" });
    request.extend_from_slice(b" /_matrix/client/v3/sync?timeout=30000 ");
    request.extend_from_slice(if http10 { b"HTTP/1.0" } else { b"HTTP/1.1" });
    request.extend_from_slice(b"\r\nHost: matrix.example.org\r\n");
    if upgrade {
        request.extend_from_slice(b"Connection: upgrade\r\nUpgrade: websocket\r\n");
    }
    if with_body {
        request.extend_from_slice(b"Content-Length: 3\r\n\r\nabc");
    } else {
        request.extend_from_slice(b"\r\n");
    }
    let replies = vec![Reply::Bytes {
        data: upstream.to_vec(),
        pieces,
        eof: true,
    }];
    let mut d = Driver::new(
        driver::config(driver::small_limits()),
        CLIENT_HTTPS,
        PEERS[0],
        replies,
    );
    if flags & 8 != 0 {
        // The request goes out on a pooled connection: a close before any response
        // byte takes the retry path.
        d.reuse = true;
        d.add_idle();
    }
    d.run(&request, &[], false);
    let outcome = d.check();
    let Some(first) = d.forwarded.last() else {
        panic!(
            "the request was not forwarded: {:?}",
            String::from_utf8_lossy(&d.to_client)
        );
    };
    let sent = first.response_bytes.clone();
    check_response_agreement(
        &sent,
        head_request,
        upgrade,
        first.upstream_eof,
        &outcome,
        0,
        d.client_closed,
    );
    // After a 101, the rest of both streams is the tunnel: byte for byte.
    if outcome.responses.switched {
        let Read::Done(e) = wire::response(&sent, head_request, true) else {
            panic!("101 to the client, but the upstream's head was not complete");
        };
        assert_eq!(
            outcome.responses.rest,
            sent[e.len..],
            "tunnelled bytes changed"
        );
    }
}
