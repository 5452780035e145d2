//! Properties that must hold for every input, not just the examples.

use proptest::prelude::*;

use super::harness::*;

/// Pieces that make up nasty but valid origin-form paths.
fn path_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.~!$&'()*+,;=:@-]{1,8}",
        Just("%2F".to_string()),
        Just("%2f".to_string()),
        Just("%25".to_string()),
        Just("%21".to_string()),
        Just("%3A".to_string()),
        Just("%E2%9C%93".to_string()),
        Just("%C3%A9".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e%2e".to_string()),
        Just("".to_string()),
        Just("_synapse".to_string()),
        Just("admin".to_string()),
    ]
}

fn target() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("/_matrix"),
            Just("/_synapse/client"),
            Just(""),
            Just("/_synapse")
        ],
        prop::collection::vec(path_piece(), 0..8),
        prop::option::of("[a-zA-Z0-9=&%+._~-]{0,20}"),
    )
        .prop_map(|(prefix, pieces, query)| {
            let mut t = prefix.to_string();
            for p in pieces {
                t.push('/');
                t.push_str(&p);
            }
            if t.is_empty() {
                t.push('/');
            }
            if let Some(q) = query {
                t.push('?');
                t.push_str(&q);
            }
            t
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The headline invariant: a forwarded target reaches the upstream byte for byte;
    /// anything else is answered locally and nothing goes upstream.
    #[test]
    fn targets_are_forwarded_verbatim_or_refused(target in target()) {
        let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
        h.client(get(&target).as_bytes());
        if h.pending_connect {
            h.connected(false);
            let expected = format!("GET {target} HTTP/1.1\r\n");
            prop_assert!(h.upstream_text().starts_with(&expected), "{} vs {}", target, h.upstream_text());
        } else {
            let s = status(&h.client_text());
            prop_assert!(s == 400 || s == 404, "{} -> {}", target, s);
            prop_assert!(h.upstreams.is_empty());
        }
    }

    /// Results do not depend on how the input is split into reads.
    #[test]
    fn chunking_does_not_change_the_outcome(
        cuts in prop::collection::vec(1usize..40, 1..40),
        upstream_cuts in prop::collection::vec(1usize..40, 1..20),
        which in 0usize..4,
    ) {
        let inputs: [&[u8]; 4] = [
            b"GET /_matrix/a HTTP/1.1\r\nHost: a\r\n\r\nPOST /_matrix/b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /health HTTP/1.1\r\nHost: a\r\n\r\n",
            b"PUT /_matrix/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\nGET /_matrix/d HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /.well-known/matrix/client HTTP/1.1\r\nHost: a\r\n\r\nGET /_matrix/%2e%2e/_synapse/admin HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        let response: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let run = |split: bool| {
            let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
            let input = inputs[which];
            if split {
                let mut rest = input;
                let mut i = 0;
                while !rest.is_empty() {
                    let n = cuts[i % cuts.len()].min(rest.len());
                    h.client(&rest[..n]);
                    rest = &rest[n..];
                    i += 1;
                }
            } else {
                h.client(input);
            }
            for _ in 0..10 {
                answer(&mut h, response, if split { Some(&upstream_cuts) } else { None });
            }
            let uploads: Vec<Vec<u8>> = h.upstreams.iter().map(|u| u.received.clone()).collect();
            let logs: Vec<u16> = h.logs.iter().map(|l| l.status).collect();
            let uploads: Vec<String> = uploads.iter().map(|u| unchunk(&mask_ids(&String::from_utf8_lossy(u)))).collect();
            (unchunk(&mask_ids(&h.client_text())), uploads, logs, h.client_closed)
        };
        prop_assert_eq!(run(true), run(false));
    }

    /// Arbitrary bytes never panic, and with the client gone every connection ends closed.
    #[test]
    fn arbitrary_bytes_end_in_a_response_or_a_close(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        prefix in prop_oneof![Just(&b""[..]), Just(&b"GET /_matrix/a HTTP/1.1\r\n"[..]), Just(&b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"[..])],
    ) {
        let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
        let mut input = prefix.to_vec();
        input.extend_from_slice(&bytes);
        h.client(&input);
        for _ in 0..5 {
            answer(&mut h, OK_RESPONSE, None);
        }
        h.client_eof();
        for _ in 0..5 {
            answer(&mut h, OK_RESPONSE, None);
        }
        h.advance(std::time::Duration::from_secs(600));
        prop_assert!(h.conn.is_closed(), "not closed: {}", h.client_text());
    }
}

/// If a connect is pending, connect and answer with `response` (split per `cuts`).
fn answer(h: &mut Harness, response: &[u8], cuts: Option<&[usize]>) {
    if !h.pending_connect {
        return;
    }
    h.connected(false);
    if !h.conn.wants_upstream_read() {
        return;
    }
    match cuts {
        None => {
            h.upstream(response);
        }
        Some(cuts) => {
            let mut rest = response;
            let mut i = 0;
            while !rest.is_empty() && h.conn.wants_upstream_read() {
                let n = cuts[i % cuts.len()].min(rest.len());
                h.upstream(&rest[..n]);
                rest = &rest[n..];
                i += 1;
            }
        }
    }
}

/// Chunk framing follows the reads it was decoded from; the data must not. Replaces
/// every chunked body in `text` (lines already joined by `\n`) by its data.
fn unchunk(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find("Transfer-Encoding: chunked\n\n") {
        let body_start = pos + "Transfer-Encoding: chunked\n\n".len();
        out.push_str(&rest[..body_start]);
        let mut body = &rest[body_start..];
        while let Some((size, after)) = body.split_once('\n') {
            let Ok(n) = usize::from_str_radix(size, 16) else {
                break;
            };
            if n == 0 {
                body = after.strip_prefix('\n').unwrap_or(after);
                out.push_str("<end>");
                break;
            }
            out.push_str(&after[..n.min(after.len())]);
            body = after.get(n + 1..).unwrap_or("");
        }
        rest = body;
    }
    out.push_str(rest);
    out
}

/// Request ids differ per run only by counter position; mask them for comparison.
fn mask_ids(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("x-request-id:") {
                "x-request-id: *"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Heads from lines that are well formed, or subtly not (bare LF or CR, folds, spaces).
fn head_text(request: bool) -> impl Strategy<Value = Vec<u8>> {
    let first: &[&str] = if request {
        &[
            "GET /a HTTP/1.1",
            "GET /a HTTP/1.0",
            "GET  /a HTTP/1.1",
            "GET /a HTTP/1.1 ",
            "GET /a",
        ]
    } else {
        &[
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200",
            "HTTP/1.0 204 No Content",
            "HTTP/1.1 200 OK ",
        ]
    };
    let lines = [
        "Host: a",
        "Host:a",
        "X: y ",
        " folded",
        "\tX: y",
        "X : y",
        "Content-Length: 5",
        "X:",
        "X: a\rb",
        "Transfer-Encoding: chunked",
        "",
        "Host: b",
        "Connection: close, x",
    ];
    let ends = ["\r\n", "\r\n", "\r\n", "\n", "\r", "\r\r\n"];
    (
        0usize..6,
        prop::sample::select(first.to_vec()),
        prop::sample::select(ends.to_vec()),
        prop::collection::vec(
            (
                prop::sample::select(lines.to_vec()),
                prop::sample::select(ends.to_vec()),
            ),
            0..6,
        ),
        prop::sample::select(ends.to_vec()),
        0usize..3,
    )
        .prop_map(|(leading, first, first_end, lines, last_end, tail)| {
            let mut text = "\r\n".repeat(leading);
            text.push_str(first);
            text.push_str(first_end);
            for (line, end) in lines {
                text.push_str(line);
                text.push_str(end);
            }
            text.push_str(last_end);
            text.push_str(&"x".repeat(tail));
            text.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// The one-parse path (`head_start`, `parse_prefix`, `strict_lines`) only accepts what
    /// `scan_head` + `parse_head` accept, with the same bounds and the same result.
    #[test]
    fn one_parse_heads_agree_with_scanning_first(
        request in any::<bool>(),
        head in prop::bool::ANY.prop_flat_map(head_text),
    ) {
        use crate::http1::lines::{head_start, scan_head, strict_lines, HeadScan, ScanLimits, ScanState};
        use crate::http1::{request as req, response as resp};
        let limits = ScanLimits { max_first_line: 64, max_head: 200, max_lines: 5 };
        let Some(start) = head_start(&head) else { return Ok(()) };
        let buf = &head[start..];
        let mut storage = Vec::new();
        let fast = if request {
            req::parse_prefix(buf, 4, &mut storage).ok().flatten()
                .filter(|(h, len)| strict_lines(buf, *len, h.raw_headers(), limits))
                .map(|(h, len)| {
                    let (m, t) = h.line_spans();
                    (len, format!("{:?}", (m.get(buf), t.get(buf), h.version, h.raw_headers().len(), h.body, h.close)))
                })
        } else {
            resp::parse_prefix(buf, false, &mut storage).ok().flatten()
                .filter(|(h, len)| strict_lines(buf, *len, h.raw_headers(), limits))
                .map(|(h, len)| (len, format!("{:?}", (h.status, h.raw_headers().len(), h.body, h.close))))
        };
        let Some((len, fast)) = fast else { return Ok(()) };
        let scan = scan_head(&head, &mut ScanState::default(), limits);
        prop_assert_eq!(scan, Ok(HeadScan::Complete { start, end: start + len }));
        let raw = bytes::Bytes::copy_from_slice(&head[start..start + len]);
        let slow = if request {
            let h = req::parse_head(raw, 4).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            format!("{:?}", (h.method(), h.target(), h.version, h.raw_headers().len(), h.body, h.close))
        } else {
            let h = resp::parse_head(raw, false).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            format!("{:?}", (h.status, h.raw_headers().len(), h.body, h.close))
        };
        prop_assert_eq!(fast, slow);
    }
}

/// Paths built from routing prefixes, escapes (of `/`, `.`, letters and others), dots and
/// slashes: where the shortcut past decoding could go wrong if it were wrong.
fn routing_path() -> impl Strategy<Value = Vec<u8>> {
    let starts = [
        "/_matrix/client/v3/rooms/",
        "/_matrix/a/",
        "/_matrix",
        "/_synapse/admin/",
        "/_synapse/client/",
        "/.well-known/matrix/",
        "/health",
        "/",
        "/_synapse%2Fadmin/",
        "/_matrix/federation/v1/send/",
        "/_matrix/client/v3/%41",
        "/_synapse/%61dmin",
        "/_m%61trix/client/",
        "/.well-known/matrix/serve%72",
        "/%68ealth",
    ];
    let pieces = [
        "%21",
        "%3A",
        "%2F",
        "%2f",
        "%2E",
        "%2e",
        "%61",
        "%73",
        "%",
        "%%2e",
        "%zz",
        "%4",
        "a",
        "server",
        "client",
        "admin",
        "/",
        ".",
        "..",
        "/..",
        "//",
        "x%3Ay",
        "_synapse",
        "%41dmin",
        "?",
        "room",
        "%2e%2e/",
        "../",
        "%2E%2E%2F",
        "_synapse/admin",
        "_synapse%2Fadmin",
        "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f",
        "%2F_synapse%2Fadmin",
        "_matrix",
        "serve%72",
        "%73erver",
    ];
    (
        prop::sample::select(starts.to_vec()),
        prop::collection::vec(prop::sample::select(pieces.to_vec()), 0..12),
    )
        .prop_map(|(start, pieces)| {
            let mut path = start.to_string();
            for piece in pieces {
                path.push_str(piece);
            }
            path.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// Skipping the decoded path when escapes cannot reroute gives the decision (or the
    /// refusal) that decoding always gives.
    #[test]
    fn routing_without_decoding_agrees_with_decoding(
        path in routing_path(),
        listener in 0usize..3,
        admin_client in any::<bool>(),
    ) {
        let config = config();
        let listener = &config.listeners[listener.min(config.listeners.len() - 1)];
        let client: core::net::IpAddr =
            if admin_client { "127.0.0.1" } else { "203.0.113.5" }.parse().unwrap();
        prop_assert_eq!(
            crate::route::decide(&config, listener, &path, client),
            crate::route::decide_decoding_always(&config, listener, &path, client),
            "{}", String::from_utf8_lossy(&path)
        );
    }

    /// The hand-written IPv4 text (on every forwarded request) is what `Display` writes.
    #[test]
    fn peer_text_is_the_standard_text(bits in any::<u32>(), v6 in any::<u128>()) {
        use crate::forwarded::IpText;
        for ip in [
            core::net::IpAddr::V4(bits.into()),
            core::net::IpAddr::V6(v6.into()),
        ] {
            let (rendered, expected) = (IpText::new(ip), ip.to_string());
            prop_assert_eq!(rendered.as_bytes(), expected.as_bytes());
        }
    }
}
