//! Lingering close (RFC 9112 §9.6): after answering early, the connection shuts its write
//! side and reads and discards what the client still sends, within a time and byte budget,
//! so that a client that writes its whole request before reading gets the answer.

use std::time::Duration;

use super::harness::*;
use crate::config::Config;

const BIG_UPLOAD: &[u8] =
    b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 62914560\r\n\r\n";

/// Sends `total` body bytes in 1 MiB pieces, `gap` apart.
fn send_body(h: &mut Harness, total: usize, gap: Duration) {
    let piece = vec![b'x'; 1 << 20];
    let mut sent = 0;
    while sent < total {
        let n = piece.len().min(total - sent);
        h.client(&piece[..n]);
        sent += n;
        if !gap.is_zero() {
            h.advance(gap);
        }
    }
}

#[test]
fn a_413_is_followed_by_reading_and_discarding_the_rest_of_the_upload() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(BIG_UPLOAD);
    assert_eq!(status(&h.take_client()), 413);
    assert!(h.client_closed, "the write side is shut after the answer");
    assert!(!h.conn.is_closed(), "but the connection still reads");
    assert!(h.conn.wants_client_read());
    // 60 MiB arrive over 59 s, a piece a second: within the read gap and the byte budget.
    send_body(&mut h, 60 << 20, Duration::from_millis(450));
    assert!(h.to_client.is_empty(), "nothing more is answered");
    assert!(h.connects.is_empty(), "nothing goes upstream");
    assert!(!h.conn.is_closed());
    assert_eq!(
        h.conn.held_buffer_bytes(),
        0,
        "discarded bytes are not kept"
    );
    h.client_eof();
    assert!(h.conn.is_closed(), "the client's close ends the linger");
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn lingering_ends_when_the_client_goes_quiet() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(BIG_UPLOAD).client(&[b'x'; 1000]);
    let (at, kind) = h.conn.poll_timeout().expect("a linger deadline");
    assert_eq!(kind, crate::TimerKind::ClientLinger);
    assert_eq!(at, h.now + Duration::from_secs(5));
    h.advance(Duration::from_millis(4900));
    assert!(!h.conn.is_closed());
    h.advance(Duration::from_millis(100));
    assert!(h.conn.is_closed(), "5 s without a byte");
}

#[test]
fn lingering_is_bounded_in_time_even_for_a_steady_sender() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(BIG_UPLOAD);
    for _ in 0..29 {
        h.advance(Duration::from_secs(1));
        h.client(&[b'x'; 100]);
        assert!(!h.conn.is_closed());
    }
    h.advance(Duration::from_secs(1));
    assert!(h.conn.is_closed(), "30 s in all");
}

#[test]
fn lingering_is_bounded_in_bytes() {
    let mut config = config();
    config.limits.max_linger_bytes = 3 << 20;
    let mut h = Harness::with_config(config, CLIENT_HTTPS, "203.0.113.5");
    h.client(BIG_UPLOAD);
    send_body(&mut h, 3 << 20, Duration::ZERO);
    assert!(!h.conn.is_closed(), "3 MiB is the budget");
    h.client(b"x");
    assert!(h.conn.is_closed(), "one byte more is not read");
}

#[test]
fn lingering_is_configurable_and_can_be_turned_off() {
    let mut config: Config = config();
    config.timeouts.linger = Duration::ZERO;
    let mut h = Harness::with_config(config, CLIENT_HTTPS, "203.0.113.5");
    h.client(BIG_UPLOAD);
    assert_eq!(status(&h.take_client()), 413);
    assert!(h.conn.is_closed());
}

#[test]
fn a_refused_head_lingers_too() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello");
    assert_eq!(status(&h.take_client()), 400);
    assert!(h.client_closed);
    assert!(!h.conn.is_closed());
    h.client(b"more body").client_eof();
    assert!(h.conn.is_closed());
}

#[test]
fn an_upstream_answering_before_the_body_ended_lingers() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n12345")
        .connected(false)
        .upstream(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status(&h.take_client()), 401);
    assert!(h.client_closed);
    assert!(
        !h.conn.is_closed(),
        "the other 95 bytes may be on their way"
    );
    h.client(&[b'x'; 95]);
    assert!(h.to_client.is_empty());
    assert!(
        h.upstreams[0].received.ends_with(b"12345"),
        "nothing more goes upstream"
    );
    h.advance(Duration::from_secs(5));
    assert!(h.conn.is_closed());
}

#[test]
fn a_complete_exchange_that_closes_does_not_linger() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"GET /_matrix/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .connected(false)
        .upstream(OK_RESPONSE);
    assert_eq!(status(&h.take_client()), 200);
    assert!(h.conn.is_closed(), "nothing unread: closed at once");
}

#[test]
fn shutdown_ends_lingering_at_once() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(BIG_UPLOAD);
    assert!(!h.conn.is_closed());
    let now = h.now;
    h.conn.begin_shutdown(now);
    h.drain();
    assert!(h.conn.is_closed());
}

#[test]
fn a_client_that_already_closed_is_not_lingered_on() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n12345")
        .connected(false)
        .client_eof();
    assert!(h.conn.is_closed());
}

#[test]
fn a_small_body_of_a_request_answered_locally_is_dropped_and_the_connection_kept() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    // The admin API is closed to this client: answered 404 by mxgate, body never forwarded.
    h.client(b"POST /_synapse/admin/v1/register HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n0123456789");
    let resp = h.take_client();
    assert_eq!(status(&resp), 404);
    assert_eq!(header(&resp, "connection"), None, "kept alive: {resp}");
    assert!(!h.client_closed);
    // The rest of the body, then the next request, in one read.
    h.client(b"abcdefghijGET /_matrix/a HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        h.connects.len(),
        1,
        "the next request was read after the body"
    );
    h.connected(false).upstream(OK_RESPONSE);
    assert_eq!(status(&h.take_client()), 200);
    assert!(
        h.upstream_text().starts_with("GET /_matrix/a "),
        "nothing of the body went upstream: {}",
        h.upstream_text()
    );
}

#[test]
fn a_dropped_body_that_stalls_closes_the_connection() {
    let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
    h.client(b"POST /_synapse/admin/v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n0123");
    assert_eq!(status(&h.take_client()), 404);
    h.advance(Duration::from_secs(59));
    assert!(!h.conn.is_closed());
    h.advance(Duration::from_secs(1));
    assert!(h.conn.is_closed(), "the body timeout applies");
}

#[test]
fn large_chunked_or_expect_continue_bodies_of_local_answers_close_lingering() {
    for raw in [
        &b"POST /_synapse/admin/v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n"[..],
        b"POST /_synapse/admin/v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /_synapse/admin/v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    ] {
        let mut h = Harness::new(CLIENT_HTTPS, "203.0.113.5");
        h.client(raw);
        let resp = h.take_client();
        assert_eq!(status(&resp), 404);
        assert_eq!(header(&resp, "connection"), Some("close"), "{resp}");
        assert!(h.client_closed);
        assert!(!h.conn.is_closed(), "lingering");
    }
}
