//! Raw requests and what must come of them: the status the client gets, and whether
//! anything went upstream. One row per framing rule.

use super::harness::*;

/// (raw request, expected status, forwarded?)
const CASES: &[(&str, u16, bool)] = &[
    ("GET /_matrix/a HTTP/1.1\r\nHost: a\r\n\r\n", 200, true),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400, false),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400, false),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400, false),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", 400, false),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400, false),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n", 400, false),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3 \r\n\r\nabc", 200, true),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 200, true),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400, false),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, false),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501, false),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400, false),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400, false),
    ("POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400, true),
    ("POST /_matrix/a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.1\nHost: a\r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.1\r\nHost : a\r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.1\r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.0\r\n\r\n", 200, true),
    ("GET /_matrix/a HTTP/2.0\r\nHost: a\r\n\r\n", 505, false),
    // Absolute form is accepted (RFC 9112 §3.2.2); its authority replaces Host.
    ("GET http://evil/_matrix/a HTTP/1.1\r\nHost: a\r\n\r\n", 200, true),
    ("GET http://user@evil/_matrix/a HTTP/1.1\r\nHost: a\r\n\r\n", 400, false),
    // Host stays required in HTTP/1.1 (RFC 9112 §3.2); HTTP/1.0 may omit it.
    ("GET http://evil/_matrix/a HTTP/1.1\r\nX: a\r\n\r\n", 400, false),
    ("GET http://evil/_matrix/a HTTP/1.0\r\n\r\n", 200, true),
    ("GET http:///_matrix/a HTTP/1.1\r\nHost: a\r\n\r\n", 400, false),
    ("CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n", 400, false),
    ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 400, false),
    // HTTP/0.9: refused as soon as the line is in, not after the header timeout.
    ("GET /_matrix/a\r\n", 400, false),
    ("GET /_matrix/a\r\n\r\n", 400, false),
    // Methods longer than any registered one.
    ("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG /_matrix/a HTTP/1.1\r\nHost: a\r\n\r\n", 501, false),
    ("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEF /_matrix/a HTTP/1.1\r\nHost: a\r\n\r\n", 200, true),
    // Characters RFC 3986 does not allow in a target.
    ("GET /_matrix/a{b} HTTP/1.1\r\nHost: a\r\n\r\n", 400, false),
    ("GET /_matrix/a|b HTTP/1.1\r\nHost: a\r\n\r\n", 400, false),
    ("GET /_matrix/caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n", 400, false),
    ("GET /_matrix/a?x=\"y\" HTTP/1.1\r\nHost: a\r\n\r\n", 400, false),
    ("GET /_matrix/a%2 HTTP/1.1\r\nHost: a\r\n\r\n", 400, false),
    ("GET /_matrix/a%7Bb%7D HTTP/1.1\r\nHost: a\r\n\r\n", 200, true),
    // Host is uri-host [":" port].
    ("GET /_matrix/a HTTP/1.1\r\nHost: user@a\r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.1\r\nHost: a b\r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.1\r\nHost: a:\r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.1\r\nHost: a:https\r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.1\r\nHost: \r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.1\r\nHost: [::1]:8448\r\n\r\n", 200, true),
    // An h2c upgrade is not honoured, and the request passes as a plain one.
    ("GET /_matrix/a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n", 200, true),
    ("GET /_matrix/a  HTTP/1.1\r\nHost: a\r\n\r\n", 400, false),
    ("GET /_matrix/a HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417, false),
    ("\r\nGET /_matrix/a HTTP/1.1\r\nHost: a\r\n\r\n", 200, true),
];

#[test]
fn raw_requests_table() {
    for (raw, want, forwarded) in CASES {
        let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
        h.client(raw.as_bytes());
        if h.pending_connect {
            h.connected(false);
            if h.client_text().is_empty() {
                h.upstream(OK_RESPONSE);
            }
        }
        assert_eq!(
            status(&h.client_text()),
            *want,
            "{raw:?} -> {}",
            h.client_text()
        );
        let went_up = !h.connects.is_empty();
        assert_eq!(went_up, *forwarded, "{raw:?}");
        if *want >= 400 {
            assert!(h.client_closed, "{raw:?}: connection closes after an error");
        }
    }
}

#[test]
fn request_line_and_header_limits() {
    let long_target = format!(
        "GET /_matrix/{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "a".repeat(9000)
    );
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(long_target.as_bytes());
    assert_eq!(status(&h.client_text()), 414);

    let many = format!(
        "GET /_matrix/a HTTP/1.1\r\nHost: a\r\n{}\r\n",
        "X-A: b\r\n".repeat(101)
    );
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(many.as_bytes());
    assert_eq!(status(&h.client_text()), 431);

    let big = format!(
        "GET /_matrix/a HTTP/1.1\r\nHost: a\r\nX-A: {}\r\n\r\n",
        "b".repeat(40_000)
    );
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(big.as_bytes());
    assert_eq!(status(&h.client_text()), 431);
    assert!(h.connects.is_empty());
}
