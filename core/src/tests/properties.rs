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
