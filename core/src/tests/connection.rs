//! Behaviour of one connection, rule by rule, through the in-memory harness.

use std::time::Duration;

use super::harness::*;
use crate::http1::reject::Reject;
use crate::UpstreamFault;

#[test]
fn forwards_a_matrix_request_with_forwarding_headers() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: matrix.example.org\r\nX-Forwarded-For: 6.6.6.6\r\nAuthorization: Bearer syt_abc\r\n\r\n");
    assert_eq!(h.connects, vec![(0, false)]);
    h.connected(false);
    let up = h.upstream_text();
    assert!(
        up.starts_with("GET /_matrix/client/versions HTTP/1.1\r\n"),
        "{up}"
    );
    assert_eq!(
        header(&up, "x-forwarded-for"),
        Some("203.0.113.5"),
        "replaced, not appended"
    );
    assert_eq!(
        up.matches("X-Forwarded-For").count() + up.matches("x-forwarded-for").count(),
        1
    );
    assert_eq!(header(&up, "x-forwarded-proto"), Some("https"));
    assert_eq!(header(&up, "host"), Some("matrix.example.org"));
    assert_eq!(header(&up, "authorization"), Some("Bearer syt_abc"));
    let id = header(&up, "x-request-id")
        .expect("request id sent")
        .to_string();
    h.upstream(OK_RESPONSE);
    let resp = h.take_client();
    assert_eq!(status(&resp), 200);
    assert_eq!(
        header(&resp, "x-request-id"),
        Some(id.as_str()),
        "echoed to the client"
    );
    assert_eq!(body(&resp), "{}");
    assert_eq!(h.upstreams[0].released, Some(true), "upstream kept alive");
    assert!(!h.client_closed);
    assert_eq!(h.logs.len(), 1);
    assert_eq!(h.logs[0].status, 200);
    assert_eq!(&h.logs[0].target[..], b"/_matrix/client/versions");
}

#[test]
fn plain_listener_says_http() {
    let mut h = Harness::new(CLIENT_HTTP, "127.0.0.1");
    h.client(get("/_matrix/client/versions").as_bytes())
        .connected(false);
    assert_eq!(
        header(&h.upstream_text(), "x-forwarded-proto"),
        Some("http")
    );
}

#[test]
fn trusted_proxy_keeps_chain_from_rightmost_untrusted() {
    let mut h = Harness::new(CLIENT_HTTPS, "10.0.0.2");
    h.client(b"GET /_matrix/x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6, 198.51.100.9, 10.0.0.1\r\nX-Request-ID: lb-123\r\n\r\n")
        .connected(false);
    let up = h.upstream_text();
    assert_eq!(
        header(&up, "x-forwarded-for"),
        Some("198.51.100.9, 10.0.0.1, 10.0.0.2")
    );
    assert_eq!(
        header(&up, "x-request-id"),
        Some("lb-123"),
        "kept from a trusted peer"
    );
}

#[test]
fn untrusted_request_id_is_replaced() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"GET /_matrix/x HTTP/1.1\r\nHost: a\r\nX-Request-ID: spoofed\r\n\r\n")
        .connected(false);
    let up = h.upstream_text();
    assert_ne!(header(&up, "x-request-id"), Some("spoofed"));
    assert_eq!(up.matches("spoofed").count(), 0);
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"GET /_matrix/x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: close\r\nUpgrade: h2c\r\nX-Kept: yes\r\n\r\n")
        .connected(false);
    let up = h.upstream_text().to_ascii_lowercase();
    for gone in [
        "connection:",
        "x-secret",
        "keep-alive:",
        "\r\nte:",
        "proxy-connection",
        "upgrade:",
    ] {
        assert!(!up.contains(gone), "{gone} leaked: {up}");
    }
    assert!(up.contains("x-kept: yes"));
}

#[test]
fn routes_by_listener_role() {
    let mut h = Harness::new(FEDERATION, "203.0.113.5");
    h.client(get("/_synapse/client/oidc/callback").as_bytes());
    assert!(
        h.connects.is_empty(),
        "federation port does not serve /_synapse/client"
    );
    assert_eq!(status(&h.take_client()), 404);
    h.client(get("/_matrix/federation/v1/version").as_bytes());
    assert_eq!(h.connects.len(), 1);

    let mut c = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    c.client(get("/_synapse/client/oidc/callback").as_bytes());
    assert_eq!(c.connects.len(), 1);
}

#[test]
fn prefixes_match_at_segment_boundaries() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrixfoo").as_bytes());
    assert!(h.connects.is_empty());
    assert_eq!(status(&h.take_client()), 404);
    h.client(get("/index.html").as_bytes());
    let resp = h.take_client();
    assert_eq!(status(&resp), 404);
    assert!(
        header(&resp, "content-type")
            .unwrap()
            .starts_with("text/plain"),
        "non-Matrix path: plain error"
    );
}

#[test]
fn ambiguous_targets_are_refused_before_anything_goes_upstream() {
    for target in [
        "/_matrix/../_synapse/admin/v1/users",
        "/_synapse%2Fadmin/v1/users",
        "/_synapse/%61dmin/v1/users",
        "/_matrix/%2e%2e/_synapse/admin",
        "/_matrix/client/../../_synapse/admin",
    ] {
        let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
        h.client(get(target).as_bytes());
        assert!(h.connects.is_empty(), "{target} went upstream");
        assert_eq!(status(&h.client_text()), 400, "{target}");
        assert!(h.client_closed);
    }
}

#[test]
fn targets_reach_upstream_byte_for_byte() {
    for target in [
        "/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/t1",
        "/_matrix/federation/v1/event/$abc%2Fdef",
        "/_matrix/media/v3/download/example.org/%25%2F..%2F",
        "/_matrix//client///v3",
        "/_matrix/client/./v3/../v3/sync?since=s1_2&timeout=30000&filter=%7B%22a%22%3A1%7D",
        "/_matrix/client/v3/directory/room/%23Room%3AExample.org?x=a+b%20c",
    ] {
        let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
        h.client(get(target).as_bytes()).connected(false);
        let expected = format!("GET {target} HTTP/1.1\r\n");
        assert!(
            h.upstream_text().starts_with(&expected),
            "{target}: {}",
            h.upstream_text()
        );
    }
}

#[test]
fn admin_api_needs_the_allowlist() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_synapse/admin/v1/server_version").as_bytes());
    let resp = h.take_client();
    assert_eq!(status(&resp), 404);
    assert!(body(&resp).contains("M_UNRECOGNIZED"));
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
    assert!(h.connects.is_empty());

    let mut ok = Harness::new(CLIENT_HTTPS, "192.0.2.7");
    ok.client(get("/_synapse/admin/v1/server_version").as_bytes());
    assert_eq!(ok.connects, vec![(0, false)]);
}

#[test]
fn health_is_answered_locally_and_not_logged() {
    let mut h = Harness::new(FEDERATION, "203.0.113.5");
    h.client(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let resp = h.take_client();
    assert_eq!(status(&resp), 200);
    assert_eq!(body(&resp), "OK");
    assert!(h.logs.is_empty());
    assert!(h.connects.is_empty());
    assert!(!h.client_closed);
}

#[test]
fn well_known_documents_carry_cors() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/.well-known/matrix/server").as_bytes());
    let resp = h.take_client();
    assert_eq!(status(&resp), 200);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
    assert_eq!(
        header(&resp, "access-control-allow-methods"),
        Some("GET, POST, PUT, DELETE, OPTIONS")
    );
    assert_eq!(
        header(&resp, "access-control-allow-headers"),
        Some("Origin, X-Requested-With, Content-Type, Accept, Authorization")
    );
    assert_eq!(body(&resp), r#"{"m.server":"matrix.example.org:443"}"#);

    h.client(b"OPTIONS /.well-known/matrix/client HTTP/1.1\r\nHost: a\r\nOrigin: https://app.element.io\r\n\r\n");
    let resp = h.take_client();
    assert_eq!(status(&resp), 204);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));

    h.client(get("/.well-known/matrix/support").as_bytes());
    let resp = h.take_client();
    assert_eq!(status(&resp), 404, "not configured");
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
    assert!(h.connects.is_empty());
}

#[test]
fn body_over_the_limit_is_refused_before_going_upstream() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(
        b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 52428801\r\n\r\n",
    );
    let resp = h.take_client();
    assert_eq!(status(&resp), 413);
    assert!(body(&resp).contains(r#""errcode":"M_TOO_LARGE""#));
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
    assert!(h.connects.is_empty());
    assert!(h.client_closed);
}

#[test]
fn body_at_the_limit_streams_through() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    let len = 50 * 1024 * 1024;
    h.client(
        format!(
            "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n"
        )
        .as_bytes(),
    );
    h.connected(false);
    let piece = vec![b'x'; 64 * 1024];
    for _ in 0..(len / piece.len()) {
        assert!(h.conn.wants_client_read());
        h.client(&piece);
    }
    let head_len = h
        .upstream_received()
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    assert_eq!(h.upstream_received().len() - head_len, len);
    h.upstream(OK_RESPONSE);
    assert_eq!(status(&h.client_text()), 200);
    assert_eq!(h.logs[0].body_bytes_in, len as u64);
}

#[test]
fn chunked_upload_is_reframed_and_counted_against_the_limit() {
    let mut cfg = config();
    cfg.limits.max_body_bytes = 10;
    let mut h = Harness::with_config(cfg, CLIENT_HTTPS, "203.0.113.5");
    h.client(b"PUT /_matrix/client/v3/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .connected(false);
    h.client(b"5;ext=\"q\"\r\nhello\r\n");
    assert!(
        h.upstream_text().ends_with("\r\n5\r\nhello\r\n"),
        "{}",
        h.upstream_text()
    );
    assert!(
        !h.upstream_text().contains("ext"),
        "extensions are not forwarded"
    );
    h.client(b"6\r\n world\r\n");
    let resp = h.take_client();
    assert_eq!(status(&resp), 413, "11 bytes > 10");
    assert!(h.client_closed);
    assert_eq!(h.upstreams[0].released, Some(false));
}

#[test]
fn chunked_upload_completes_with_last_chunk() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"POST /_matrix/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nTrailer: x\r\n\r\n")
        .connected(false);
    let up = h.upstream_text();
    assert!(up.contains("Transfer-Encoding: chunked\r\n"));
    assert!(up.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "{up}");
    h.upstream(OK_RESPONSE);
    assert_eq!(h.upstreams[0].released, Some(true));
    assert!(!h.client_closed);
}

#[test]
fn expect_continue_is_answered_once_upstream_is_ready() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(
        b"PUT /_matrix/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    );
    assert!(h.to_client.is_empty());
    assert!(
        !h.conn.wants_client_read(),
        "no body read before the upstream is there"
    );
    h.connected(false);
    assert_eq!(h.take_client(), "HTTP/1.1 100 Continue\r\n\r\n");
    assert!(!h.upstream_text().to_ascii_lowercase().contains("expect"));
    h.client(b"abc").upstream(OK_RESPONSE);
    assert_eq!(status(&h.client_text()), 200);
}

#[test]
fn chunked_response_is_reframed_for_http11_and_unchunked_for_http10() {
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2;x=y\r\nef\r\n0\r\n\r\n";
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/x").as_bytes())
        .connected(false)
        .upstream(resp);
    let text = h.take_client();
    assert_eq!(header(&text, "transfer-encoding"), Some("chunked"));
    assert_eq!(body(&text), "4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n");
    assert!(!h.client_closed);

    let mut h10 = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h10.client(b"GET /_matrix/x HTTP/1.0\r\n\r\n")
        .connected(false);
    assert_eq!(
        header(&h10.upstream_text(), "host"),
        Some("example.org"),
        "Host added for HTTP/1.0"
    );
    h10.upstream(resp);
    let text = h10.client_text();
    assert_eq!(body(&text), "abcdef");
    assert_eq!(header(&text, "transfer-encoding"), None);
    assert!(h10.client_closed, "close-delimited for HTTP/1.0");
}

#[test]
fn keep_alive_reuses_both_sides_and_pipelined_requests_are_answered_in_order() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    let two = format!("{}{}", get("/_matrix/a"), get("/_matrix/b"));
    h.client(two.as_bytes()).connected(false);
    assert!(h.upstream_text().starts_with("GET /_matrix/a "));
    assert_eq!(h.connects.len(), 1, "second request waits for the first");
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA");
    assert_eq!(h.upstreams[0].released, Some(true));
    assert_eq!(h.connects.len(), 2);
    h.connected(true);
    assert!(h.upstream_text().starts_with("GET /_matrix/b "));
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB");
    let text = h.client_text();
    let a = text.find("\r\n\r\nA").unwrap();
    let b = text.find("\r\n\r\nB").unwrap();
    assert!(a < b);
    assert_eq!(h.logs.len(), 2);
}

#[test]
fn connection_close_is_honoured() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"GET /_matrix/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .connected(false)
        .upstream(OK_RESPONSE);
    assert_eq!(header(&h.client_text(), "connection"), Some("close"));
    assert!(h.client_closed);
    assert_eq!(
        h.upstreams[0].released,
        Some(true),
        "the upstream side stays reusable"
    );
}

#[test]
fn upstream_refusing_gives_502() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/a").as_bytes()).connect_failed();
    let resp = h.take_client();
    assert_eq!(status(&resp), 502);
    assert!(body(&resp).contains("M_UNKNOWN"));
    assert!(!h.client_closed, "the client connection survives a 502");
    assert_eq!(h.logs[0].status, 502);
}

#[test]
fn silent_upstream_gives_504_after_the_response_timeout_and_not_before() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/client/v3/sync?timeout=30000").as_bytes())
        .connected(false);
    h.advance(Duration::from_secs(179));
    assert!(h.to_client.is_empty(), "a long-poll is not cut early");
    h.advance(Duration::from_secs(2));
    assert_eq!(status(&h.client_text()), 504);
    assert_eq!(h.upstreams[0].released, Some(false));
}

#[test]
fn long_poll_of_30s_passes() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/client/v3/sync?timeout=30000").as_bytes())
        .connected(false);
    h.advance(Duration::from_secs(31));
    h.upstream(OK_RESPONSE);
    assert_eq!(status(&h.client_text()), 200);
}

#[test]
fn connect_timeout_gives_504() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/a").as_bytes());
    h.advance(Duration::from_secs(6));
    assert_eq!(status(&h.client_text()), 504);
}

#[test]
fn response_cut_mid_body_closes_the_client() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/a").as_bytes())
        .connected(false)
        .upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        .upstream_eof();
    assert!(h.client_closed, "a cut response must not look complete");
    assert!(h.client_text().ends_with("12345"));
    assert_eq!(h.upstreams[0].released, Some(false));
}

#[test]
fn reused_connection_closed_by_upstream_is_retried_once_for_idempotent_requests() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/a").as_bytes())
        .connected(true)
        .upstream_eof();
    assert_eq!(
        h.connects,
        vec![(0, false), (0, true)],
        "retried on a fresh connection"
    );
    h.connected(false).upstream(OK_RESPONSE);
    assert_eq!(status(&h.client_text()), 200);
    assert_eq!(h.upstreams.len(), 2);
    assert!(h.upstreams[0]
        .received
        .starts_with(b"GET /_matrix/a HTTP/1.1\r\n"));
    assert_eq!(
        h.upstreams[0].received, h.upstreams[1].received,
        "the retry sends the same head"
    );

    let mut post = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    post.client(b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}")
        .connected(true)
        .upstream_eof();
    assert_eq!(post.connects.len(), 1, "POST is not retried");
    assert_eq!(status(&post.client_text()), 502);
}

#[test]
fn slowloris_gets_408_and_idle_connections_close() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"GET /_matrix/a HTTP/1.1\r\nHost: a\r\n");
    h.advance(Duration::from_secs(31));
    assert_eq!(status(&h.client_text()), 408);
    assert!(h.client_closed);

    let mut idle = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    idle.client(get("/health").as_bytes());
    idle.take_client();
    idle.advance(Duration::from_secs(74));
    assert!(!idle.client_closed);
    idle.advance(Duration::from_secs(2));
    assert!(idle.client_closed);
    assert!(idle.to_client.is_empty(), "idle close is silent");
}

#[test]
fn head_responses_have_no_body() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"HEAD /_matrix/a HTTP/1.1\r\nHost: a\r\n\r\n")
        .connected(false)
        .upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    assert_eq!(header(&h.client_text(), "content-length"), Some("100"));
    assert_eq!(h.upstreams[0].released, Some(true));
    assert_eq!(h.logs.len(), 1);
}

#[test]
fn upgrade_switches_to_a_tunnel() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(
        b"GET /_matrix/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .connected(false);
    let up = h.upstream_text();
    assert_eq!(header(&up, "upgrade"), Some("websocket"));
    h.upstream(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nserver-bytes");
    assert!(h.client_text().ends_with("server-bytes"));
    h.client(b"client-bytes");
    assert!(h.upstream_text().ends_with("client-bytes"));
    assert!(h.conn.wants_upstream_read() && h.conn.wants_client_read());
    h.upstream_eof();
    assert!(h.client_closed);
}

#[test]
fn shutdown_finishes_the_exchange_in_flight() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/client/v3/sync?timeout=30000").as_bytes())
        .connected(false);
    h.conn.begin_shutdown(h.now);
    h.drain();
    assert!(!h.client_closed);
    h.upstream(OK_RESPONSE);
    assert_eq!(status(&h.client_text()), 200);
    assert_eq!(header(&h.client_text(), "connection"), Some("close"));
    assert!(h.client_closed);

    let mut idle = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    idle.conn.begin_shutdown(idle.now);
    idle.drain();
    assert!(idle.client_closed);
}

#[test]
fn virtual_hosts_misdirect_or_fall_back() {
    let mut cfg = config();
    cfg.virtual_hosts.names = vec!["matrix.example.org".into()];
    let mut h = Harness::with_config(cfg.clone(), CLIENT_HTTPS, "203.0.113.5");
    h.client(b"GET /_matrix/a HTTP/1.1\r\nHost: evil.example\r\n\r\n");
    assert_eq!(status(&h.take_client()), 421);
    h.client(b"GET /_matrix/a HTTP/1.1\r\nHost: Matrix.Example.org:443\r\n\r\n");
    assert_eq!(h.connects.len(), 1);

    cfg.virtual_hosts.fallback = Some(0);
    let mut f = Harness::with_config(cfg, CLIENT_HTTPS, "203.0.113.5");
    f.client(b"GET /_matrix/a HTTP/1.1\r\nHost: evil.example\r\n\r\n");
    assert_eq!(f.connects.len(), 1);
}

#[test]
fn upstream_answering_early_closes_the_client_after_the_response() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n12345")
        .connected(false)
        .upstream(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
    let text = h.client_text();
    assert_eq!(status(&text), 401);
    assert_eq!(header(&text, "connection"), Some("close"));
    assert!(h.client_closed);
    assert_eq!(h.upstreams[0].released, Some(false));
}

#[test]
fn client_going_away_mid_body_releases_the_upstream() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n12345")
        .connected(false)
        .client_eof();
    assert_eq!(h.upstreams[0].released, Some(false));
    assert!(h.client_closed);
}

#[test]
fn stalled_upload_times_out() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n12345")
        .connected(false);
    h.advance(Duration::from_secs(59));
    h.client(b"678");
    h.advance(Duration::from_secs(59));
    assert!(h.to_client.is_empty(), "reads reset the body timer");
    h.advance(Duration::from_secs(2));
    assert_eq!(status(&h.client_text()), 408);
    assert!(h.client_closed);
}

#[test]
fn upstream_garbage_gives_502() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/a").as_bytes())
        .connected(false)
        .upstream(b"SSH-2.0-OpenSSH\r\n\r\n");
    assert_eq!(status(&h.client_text()), 502);
    assert_eq!(
        h.faults,
        vec![(0, UpstreamFault::Refused(Reject::BadStatusLine))],
        "the runtime is told why, for its log"
    );
}

#[test]
fn every_upstream_fault_is_reported_with_its_reason() {
    let faults = |response: &[u8], eof: bool| {
        let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
        h.client(get("/_matrix/a").as_bytes())
            .connected(false)
            .upstream(response);
        if eof {
            h.upstream_eof();
        }
        h.faults.iter().map(|(_, f)| *f).collect::<Vec<_>>()
    };
    assert_eq!(
        faults(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        ),
        [UpstreamFault::Refused(Reject::ConflictingContentLength)]
    );
    assert_eq!(
        faults(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            false
        ),
        [UpstreamFault::Refused(Reject::BadChunk)]
    );
    assert_eq!(
        faults(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            false
        ),
        [UpstreamFault::UnaskedUpgrade]
    );
    assert_eq!(
        faults(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345", true),
        [UpstreamFault::ClosedEarly]
    );
    assert_eq!(faults(OK_RESPONSE, false), []);
    assert_eq!(
        UpstreamFault::Refused(Reject::HeadTooLarge).to_string(),
        "response head too large"
    );
    assert_eq!(
        UpstreamFault::Refused(Reject::BadChunk).to_string(),
        "response refused: malformed chunked body"
    );
}

#[test]
fn upstream_closing_delimits_the_body_and_the_client_is_closed() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/a").as_bytes())
        .connected(false)
        .upstream(b"HTTP/1.1 200 OK\r\n\r\npart1")
        .upstream(b"part2")
        .upstream_eof();
    let text = h.client_text();
    assert_eq!(body(&text), "part1part2");
    assert_eq!(header(&text, "connection"), Some("close"));
    assert!(h.client_closed);
    assert_eq!(h.logs[0].status, 200);
}

#[test]
fn pipelined_bytes_are_bounded() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/a").as_bytes()).connected(false);
    let mut sent = 0;
    while h.conn.wants_client_read() {
        h.client(get("/_matrix/b").as_bytes());
        sent += 1;
        assert!(sent < 10_000, "reading never stopped");
    }
    assert!(sent * get("/_matrix/b").len() >= 64 * 1024);
}

#[test]
fn client_closing_during_a_long_poll_frees_the_upstream() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/client/v3/sync?timeout=30000").as_bytes())
        .connected(false)
        .client_eof();
    assert_eq!(h.upstreams[0].released, Some(false), "not held for 180 s");
    assert!(h.client_closed);
    assert_eq!(h.logs.len(), 1);
    assert_eq!(h.logs[0].status, 0, "no response reached the client");
}

#[test]
fn buffers_are_kept_for_the_next_request_and_released_when_idle() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/a").as_bytes())
        .connected(true)
        .upstream(OK_RESPONSE);
    assert!(h.conn.is_idle());
    let held = h.conn.held_buffer_bytes();
    assert!(held > 0, "kept for a next request soon");
    // The early idle deadline only releases the buffers; the connection stays open and
    // its real idle deadline is the configured one.
    let (at, kind) = h.conn.poll_timeout().expect("an idle deadline");
    assert_eq!(kind, crate::TimerKind::ClientIdle);
    assert!(at - h.now <= Duration::from_secs(1));
    h.advance(Duration::from_secs(1));
    assert!(!h.client_closed && !h.conn.is_closed());
    assert_eq!(
        h.conn.held_buffer_bytes(),
        0,
        "an idle connection holds no buffers"
    );
    let (at, kind) = h.conn.poll_timeout().expect("the idle timeout");
    assert_eq!(kind, crate::TimerKind::ClientIdle);
    assert!(at > h.now, "no expired deadline is kept");
    // The next request works as the first did, and the idle timeout still closes.
    h.client(get("/_matrix/b").as_bytes())
        .connected(true)
        .upstream(OK_RESPONSE);
    assert_eq!(h.logs.len(), 2);
    h.advance(Duration::from_secs(1))
        .advance(Duration::from_secs(600));
    assert!(h.client_closed);
}

#[test]
fn buffers_taken_from_an_idle_connection_serve_another_one() {
    let mut a = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    let mut b = Harness::new(CLIENT_HTTPS, "203.0.113.6");
    assert!(
        a.conn.take_buffers().is_none(),
        "a new connection holds none"
    );
    a.client(get("/_matrix/a").as_bytes())
        .connected(true)
        .upstream(OK_RESPONSE);
    let buffers = a
        .conn
        .take_buffers()
        .expect("an idle connection after an exchange");
    assert_eq!(a.conn.held_buffer_bytes(), 0, "nothing left behind");
    let (at, kind) = a.conn.poll_timeout().expect("the idle timeout");
    assert_eq!(kind, crate::TimerKind::ClientIdle);
    assert!(
        at - a.now > Duration::from_secs(1),
        "no early release is due any more: the plain keep-alive timeout"
    );
    // Lent to a connection that is about to get a request: used, not handed back.
    assert!(b.conn.lend_buffers(buffers).is_none());
    b.client(get("/_matrix/b").as_bytes())
        .connected(true)
        .upstream(OK_RESPONSE);
    assert_eq!(b.logs.len(), 1);
    assert_eq!(b.logs[0].status, 200);
    assert!(b.to_client.starts_with(b"HTTP/1.1 200"));
    // A connection that has its own gives lent ones back; both still work.
    let buffers = b.conn.take_buffers().expect("b is idle again");
    a.client(get("/_matrix/c").as_bytes())
        .connected(true)
        .upstream(OK_RESPONSE);
    assert!(a.conn.lend_buffers(buffers).is_some(), "a has its own");
    assert_eq!(a.logs.len(), 2);
}

#[test]
fn buffers_are_not_taken_while_an_exchange_is_in_flight() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/a").as_bytes()).connected(true);
    assert!(h.conn.take_buffers().is_none());
    h.upstream(OK_RESPONSE);
    assert!(h.conn.take_buffers().is_some());
}

#[test]
fn connection_stays_small() {
    // Every idle connection holds one: 184 bytes when this was written (16 left for
    // compiler layout changes); 224 before the exchange took its own timers, 280 before
    // the peer's address stopped being kept as text, 288 before the buffers were reused.
    assert!(std::mem::size_of::<crate::Connection>() <= 200);
}

#[test]
fn with_access_logging_off_exchanges_report_only_stats() {
    let mut config = config();
    config.runtime.access_log = crate::config::AccessLogFormat::Off;
    let mut h = Harness::with_config(config, CLIENT_HTTPS, "203.0.113.5");
    h.client(get("/_matrix/a").as_bytes())
        .connected(true)
        .upstream(OK_RESPONSE);
    h.client(get("/_synapse/admin/v1/users").as_bytes());
    assert!(h.logs.is_empty(), "no records to build");
    let seen: Vec<_> = h.stats.iter().map(|s| (s.status(), s.pool())).collect();
    assert_eq!(seen, vec![(200, Some(0)), (404, None)]);
    assert!(h.stats[0].upstream_duration().is_some());
    assert_eq!(h.stats[0].listener(), CLIENT_HTTPS);
}

#[test]
fn peer_addresses_render_whole_as_text() {
    use crate::forwarded::IpText;
    for text in [
        "203.0.113.5",
        "255.255.255.255",
        "0.0.0.0",
        "10.0.9.100",
        "1.22.103.0",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "::ffff:255.255.255.255",
        "2001:db8::1",
    ] {
        let ip: core::net::IpAddr = text.parse().expect("a test address");
        assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
    }
}

/// The harness's configuration with certificates by ACME: its plain listener answers
/// HTTP-01 from the runtime's source and sends everything else to HTTPS.
fn acme_config(
    https_port: u16,
) -> (
    crate::config::Config,
    std::sync::Arc<crate::config::Http01Answers>,
) {
    use crate::config::{AcmeChallenge, AcmeSettings, Http01Answers, KeyAuthorizations};
    struct OneToken;
    impl KeyAuthorizations for OneToken {
        fn key_authorization(&self, token: &str) -> Option<String> {
            (token == "tok_en-1").then(|| "tok_en-1.thumbprint".to_string())
        }
    }
    let answers = std::sync::Arc::new(Http01Answers::default());
    let mut config = config();
    config.acme = Some(AcmeSettings {
        names: vec!["matrix.example.org".into(), "example.org".into()],
        email: None,
        directory: crate::config::LETS_ENCRYPT_DIRECTORY.into(),
        ca_root: None,
        state_dir: "/var/lib/mxgate".into(),
        challenges: vec![AcmeChallenge::TlsAlpn01, AcmeChallenge::Http01],
        https_port,
        http01: answers.clone(),
    });
    answers.install(std::sync::Arc::new(OneToken));
    (config, answers)
}

#[test]
fn acme_plain_listener_redirects_to_https_with_308() {
    let (config, _) = acme_config(443);
    let mut h = Harness::with_config(config, CLIENT_HTTP, "203.0.113.5");
    h.client(b"GET /_matrix/client/versions?x=1 HTTP/1.1\r\nHost: matrix.example.org:80\r\n\r\n");
    let text = h.take_client();
    assert_eq!(status(&text), 308, "{text}");
    assert_eq!(
        header(&text, "location"),
        Some("https://matrix.example.org/_matrix/client/versions?x=1")
    );
    assert!(h.connects.is_empty(), "nothing goes upstream");
    // Keep-alive goes on; /health and well-known are redirected too.
    h.client(b"GET /.well-known/matrix/server HTTP/1.1\r\nHost: example.org\r\n\r\n");
    let text = h.take_client();
    assert_eq!(status(&text), 308);
    assert_eq!(
        header(&text, "location"),
        Some("https://example.org/.well-known/matrix/server")
    );

    // A TLS listener on another port: the redirect names it. No Host: the first name.
    let (config, _) = acme_config(8443);
    let mut h = Harness::with_config(config, CLIENT_HTTP, "203.0.113.5");
    h.client(b"GET /x HTTP/1.0\r\n\r\n");
    let text = h.take_client();
    assert_eq!(status(&text), 308);
    assert_eq!(
        header(&text, "location"),
        Some("https://matrix.example.org:8443/x")
    );
    // TLS listeners are not redirected.
    let (config, _) = acme_config(443);
    let mut h = Harness::with_config(config, CLIENT_HTTPS, "203.0.113.5");
    h.client(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: matrix.example.org\r\n\r\n");
    assert_eq!(h.connects, vec![(0, false)]);
}

#[test]
fn acme_plain_listener_answers_http01_challenges() {
    let (acme, _) = acme_config(443);
    let mut h = Harness::with_config(acme, CLIENT_HTTP, "203.0.113.5");
    h.client(
        b"GET /.well-known/acme-challenge/tok_en-1 HTTP/1.1\r\nHost: matrix.example.org\r\n\r\n",
    );
    let text = h.take_client();
    assert_eq!(status(&text), 200, "{text}");
    assert_eq!(body(&text), "tok_en-1.thumbprint");
    for unknown in [
        "/.well-known/acme-challenge/other",
        "/.well-known/acme-challenge/",
        "/.well-known/acme-challenge",
    ] {
        h.client(format!("GET {unknown} HTTP/1.1\r\nHost: matrix.example.org\r\n\r\n").as_bytes());
        let text = h.take_client();
        assert_eq!(status(&text), 404, "{unknown}: {text}");
    }
    // A path that only reaches the challenge directory once decoded is refused.
    h.client(b"GET /.well-known/acme-challenge/%2e%2e/x HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_eq!(status(&h.take_client()), 400);
    // No source installed yet (the runtime has not started ACME): 404, no panic.
    let mut bare = config();
    let (with_acme, _) = acme_config(443);
    bare.acme = with_acme.acme.map(|mut a| {
        a.http01 = Default::default();
        a
    });
    let mut h = Harness::with_config(bare, CLIENT_HTTP, "203.0.113.5");
    h.client(b"GET /.well-known/acme-challenge/tok_en-1 HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_eq!(status(&h.take_client()), 404);
}
