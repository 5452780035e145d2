//! The RFC 9112 rules added in the hardening round, beyond the raw-request table: what the
//! upstream gets for an absolute-form target or an `h2c` upgrade, and limits enforced as
//! soon as the bytes that break them are read.

use super::harness::*;

#[test]
fn absolute_form_is_forwarded_as_origin_form_with_the_authority_as_host() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(
        b"GET http://matrix.example.org:8448/_matrix/client/v3/rooms/!a%2Fb:example.org/state?x=%7B%7D HTTP/1.1\r\n\
          Host: somewhere.else\r\nUser-Agent: t\r\n\r\n",
    )
    .connected(false);
    let up = h.upstream_text();
    assert!(
        up.starts_with(
            "GET /_matrix/client/v3/rooms/!a%2Fb:example.org/state?x=%7B%7D HTTP/1.1\r\n"
        ),
        "path and query byte for byte: {up}"
    );
    assert_eq!(header(&up, "host"), Some("matrix.example.org:8448"), "{up}");
    assert_eq!(
        up.matches("\r\nHost:").count() + up.matches("\r\nhost:").count(),
        1
    );
    assert_eq!(header(&up, "user-agent"), Some("t"));
    h.upstream(OK_RESPONSE);
    assert_eq!(status(&h.client_text()), 200);
}

#[test]
fn absolute_form_routes_on_its_path() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"GET https://matrix.example.org/_synapse/admin/v1/users HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status(&h.client_text()), 404, "the admin API stays closed");
    assert!(h.connects.is_empty());
}

#[test]
fn an_h2c_upgrade_is_neither_honoured_nor_forwarded() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(
        b"GET /_matrix/client/versions HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
    )
    .connected(false);
    let up = h.upstream_text().to_ascii_lowercase();
    assert!(!up.contains("upgrade"), "{up}");
    assert!(!up.contains("http2-settings"), "{up}");
    h.upstream(OK_RESPONSE);
    let resp = h.client_text();
    assert_eq!(status(&resp), 200, "answered as a plain request: {resp}");
    assert!(!h.client_closed, "and the connection stays open");
}

#[test]
fn a_websocket_offered_beside_another_protocol_is_not_an_upgrade() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(
        b"GET /_matrix/a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n\r\n",
    )
    .connected(false);
    let up = h.upstream_text().to_ascii_lowercase();
    assert!(!up.contains("upgrade"), "{up}");
}

#[test]
fn a_chunk_announcing_more_than_the_limit_is_refused_before_it_goes_upstream() {
    let mut config = config();
    config.limits.max_body_bytes = 1000;
    let mut h = Harness::with_config(config, CLIENT_HTTPS, "203.0.113.5");
    h.client(b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .connected(false);
    let head_len = h.upstream_received().len();
    h.client(b"10\r\n0123456789abcdef\r\n");
    let sent = h.upstream_received().len();
    assert!(sent > head_len, "a chunk within the limit goes on");
    // 0x3e9 = 1001 bytes, announced: refused before any of its data is read.
    h.client(b"3e9\r\n");
    let resp = h.take_client();
    assert_eq!(status(&resp), 413, "{resp}");
    assert!(body(&resp).contains("M_TOO_LARGE"));
    assert_eq!(
        h.upstream_received().len(),
        sent,
        "nothing of that chunk went upstream"
    );
    assert_eq!(
        h.upstreams[0].released,
        Some(false),
        "the upstream saw a head: not reused"
    );
}

#[test]
fn chunks_adding_up_past_the_limit_are_refused_at_the_size_line() {
    let mut config = config();
    config.limits.max_body_bytes = 20;
    let mut h = Harness::with_config(config, CLIENT_HTTPS, "203.0.113.5");
    h.client(b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .connected(false);
    h.client(b"10\r\n0123456789abcdef\r\n");
    let sent = h.upstream_received().len();
    h.client(b"5\r\n");
    assert_eq!(status(&h.take_client()), 413);
    assert_eq!(h.upstream_received().len(), sent);
}

#[test]
fn an_http09_request_line_is_refused_without_waiting() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"GET /_matrix/client/versions\r\n");
    let resp = h.take_client();
    assert_eq!(status(&resp), 400, "at once, no timer: {resp}");
    assert!(body(&resp).contains("HTTP version"), "{resp}");
    assert!(h.connects.is_empty());
}

#[test]
fn a_request_line_arriving_in_pieces_is_not_mistaken_for_http09() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    for piece in [
        &b"GET /_matrix/a"[..],
        b" HTT",
        b"P/1.1\r",
        b"\nHost: a\r\n",
        b"\r\n",
    ] {
        h.client(piece);
    }
    assert_eq!(h.connects.len(), 1);
}
