//! Request-smuggling vectors, sent as raw bytes: each gets 400 (or 501 for an unknown
//! transfer coding), nothing reaches the origin, and the connection is closed.

use std::time::Duration;

use mxgate_e2e::*;

const SMUGGLED: &str = "GET /_synapse/admin/v1/users HTTP/1.1\r\nHost: localhost\r\n\r\n";

fn vector(rt: &Runtime, name: &str, wire: &str, allowed: &[u16]) {
    let s = Scene::start(rt);
    for (role, tls) in [(Role::Client, false), (Role::Client, true)] {
        let mark = s.origin.mark();
        let mut c = s.connect(role, tls);
        let res = c
            .request(wire.as_bytes())
            .unwrap_or_else(|e| panic!("{name} (tls={tls}): no response: {e:?}"));
        assert!(
            allowed.contains(&res.status),
            "{name} (tls={tls}): expected {allowed:?}, got {res:?}"
        );
        let t = std::time::Instant::now();
        let (extra, end) = c.read_to_end(Duration::from_secs(1));
        if end == End::Timeout {
            let (later, end2) = c.read_to_end(Duration::from_secs(4));
            panic!(
                "{name} (tls={tls}): after the {} the connection must close, but it was still open after 1 s \
                 (then: {end2:?} after {:?}); bytes after the response: {}",
                res.status,
                t.elapsed(),
                show(&[extra, later].concat(), 500)
            );
        }
        assert!(
            extra.is_empty(),
            "{name} (tls={tls}): bytes after the {}: {}",
            res.status,
            show(&extra, 500)
        );
        s.origin.assert_untouched_since(mark, name);
    }
}

#[test]
fn content_length_with_transfer_encoding() {
    each_runtime(|rt| {
        let wire = format!(
            "POST /_matrix/client/v3/rooms/%21r%3Ax/send/m.room.message/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
        );
        vector(rt, "CL+TE", &wire, &[400]);
    });
}

#[test]
fn two_differing_content_lengths() {
    each_runtime(|rt| {
        let wire = format!(
            "POST /_matrix/client/v3/rooms/%21r%3Ax/send/m.room.message/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: {}\r\n\r\nhello{SMUGGLED}",
            5 + SMUGGLED.len()
        );
        vector(rt, "CL,CL", &wire, &[400]);
    });
}

#[test]
fn unknown_transfer_coding() {
    each_runtime(|rt| {
        let wire = format!(
            "POST /_matrix/client/v3/rooms/%21r%3Ax/send/m.room.message/1 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
        );
        vector(rt, "TE xchunked", &wire, &[400, 501]);
    });
}

#[test]
fn obs_fold_header() {
    each_runtime(|rt| {
        let wire = format!(
            "POST /_matrix/client/v3/rooms/%21r%3Ax/send/m.room.message/1 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\nhello{SMUGGLED}"
        );
        vector(rt, "obs-fold", &wire, &[400]);
    });
}

#[test]
fn bare_lf_line_endings() {
    each_runtime(|rt| {
        vector(
            rt,
            "bare LF",
            "GET /_matrix/client/versions HTTP/1.1\nHost: localhost\n\n",
            &[400],
        );
    });
}
