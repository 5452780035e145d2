//! Request and response bodies: the upload limit, streaming both ways, large downloads and
//! keep-alive.

use std::time::Duration;

use mxgate_e2e::origin::{big_body, chunked_body};
use mxgate_e2e::*;

fn assert_too_large(res: &Response, context: &str) {
    assert_eq!(res.status, 413, "{context}: {res:?}");
    assert_eq!(res.json()["errcode"], "M_TOO_LARGE", "{context}: {res:?}");
    assert_eq!(
        res.header("access-control-allow-origin").as_deref(),
        Some("*"),
        "{context}: browsers must be able to read the 413: {res:?}"
    );
}

fn upload_head(len: u64) -> Vec<u8> {
    request(
        "POST",
        "/_matrix/media/v3/upload?filename=x.bin",
        "localhost",
        &[
            "Content-Type: application/octet-stream",
            &format!("Content-Length: {len}"),
        ],
    )
}

/// `Content-Length` over `max_body` gets 413 `M_TOO_LARGE` (with CORS) at once, without
/// the client sending the body, and the origin is never asked.
#[test]
fn content_length_over_limit_gets_413() {
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.max_body("1MiB"));
        for (role, tls) in CLIENT_LISTENERS {
            let mark = s.origin.mark();
            let mut c = s.connect(role, tls);
            let res = c
                .request(&upload_head(1024 * 1024 + 1))
                .unwrap_or_else(|e| panic!("tls={tls}: {e:?}"));
            assert_too_large(&res, &format!("CL 1MiB+1, tls={tls}"));
            s.origin.assert_untouched_since(mark, "over-limit upload");
        }
    });
}

/// The default limit is Synapse's 50 MiB: a Content-Length one byte over gets 413
/// (only the head is sent).
#[test]
fn default_limit_is_50_mib() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        let mark = s.origin.mark();
        let res = s.exchange(Role::Client, true, &upload_head(50 * 1024 * 1024 + 1));
        assert_too_large(&res, "CL 50MiB+1 with the default limit");
        s.origin.assert_untouched_since(mark, "over-limit upload");
    });
}

/// Uploads under the limit pass whole: 2 MiB with the default limit (nginx's 1 MB default
/// broke media for years), 1 MiB exactly with a 1 MiB limit.
#[test]
fn uploads_within_the_limit_pass_whole() {
    each_runtime(|rt| {
        for (limit, size) in [(None, 2 * 1024 * 1024), (Some("1MiB"), 1024 * 1024)] {
            let s = Scene::with(rt, |c| match limit {
                Some(l) => c.max_body(l),
                None => c,
            });
            let body = big_body(size);
            let mut req = request(
                "POST",
                "/_matrix/test/echo-body",
                "localhost",
                &[&format!("Content-Length: {size}")],
            );
            req.extend_from_slice(&body);
            let res = s.exchange(Role::Client, true, &req);
            assert_eq!(res.status, 200, "{size} bytes, limit {limit:?}: {res:?}");
            assert_eq!(res.json()["len"], size as u64);
            assert_eq!(res.json()["sha256"], sha256_hex(&body));
        }
    });
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut v = format!("{:x}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

/// A chunked upload is streamed: the origin gets the first part before the client has sent
/// the rest, and the whole body arrives intact.
#[test]
fn chunked_upload_streamed_to_origin() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (role, tls) in CLIENT_LISTENERS {
            let before = s.origin.requests().len();
            let body = big_body(3 * 1024 * 1024 + 12345);
            let mut c = s.connect(role, tls);
            c.send(&request(
                "POST",
                "/_matrix/test/echo-body",
                "localhost",
                &[
                    "Transfer-Encoding: chunked",
                    "Content-Type: application/octet-stream",
                ],
            ))
            .unwrap();
            let (first, rest) = body.split_at(256 * 1024);
            for piece in first.chunks(10_000) {
                c.send(&chunk(piece)).unwrap();
            }
            let streamed = wait_until(Duration::from_secs(3), || {
                s.origin
                    .requests()
                    .get(before)
                    .is_some_and(|r| !r.body.is_empty())
            });
            assert!(
                streamed,
                "tls={tls}: the origin got no body byte within 3 s although 256 KiB were sent: the proxy buffers uploads"
            );
            for (i, piece) in rest.chunks(40_000 + 17).enumerate() {
                c.send(&chunk(piece))
                    .unwrap_or_else(|e| panic!("chunk {i}: {e}"));
            }
            c.send(b"0\r\n\r\n").unwrap();
            let res = c
                .read_response()
                .unwrap_or_else(|e| panic!("tls={tls}: {e:?}"));
            assert_eq!(res.status, 200, "{res:?}");
            assert_eq!(res.json()["len"], body.len() as u64, "tls={tls}");
            assert_eq!(res.json()["sha256"], sha256_hex(&body), "tls={tls}");
        }
    });
}

/// A chunked upload that grows past `max_body` is cut: the client never gets a 200, gets a
/// 413 if anything, and the origin never receives a complete body.
#[test]
fn chunked_upload_over_limit_is_cut() {
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.max_body("1MiB"));
        for (role, tls) in CLIENT_LISTENERS {
            let before = s.origin.requests().len();
            let mut c = s.connect(role, tls);
            let mut wire = request(
                "POST",
                "/_matrix/test/echo-body",
                "localhost",
                &["Transfer-Encoding: chunked"],
            );
            for piece in big_body(2 * 1024 * 1024).chunks(32 * 1024) {
                wire.extend_from_slice(&chunk(piece));
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            // The proxy may stop reading and close: a failed write is fine.
            let _ = c.send(&wire);
            match c.read_response() {
                Ok(res) => assert_eq!(
                    res.status, 413,
                    "tls={tls}: over-limit chunked upload: {res:?}"
                ),
                Err(e) => assert_ne!(
                    e.end,
                    End::Timeout,
                    "tls={tls}: neither a response nor a close: {e:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(200));
            if let Some(r) = s.origin.requests().get(before) {
                assert!(
                    !r.body_complete && r.body.len() <= 1024 * 1024,
                    "tls={tls}: the origin received {} body bytes (complete: {})",
                    r.body.len(),
                    r.body_complete
                );
            }
        }
    });
}

/// A chunked response (Synapse streams them) reaches the client intact and still chunked.
#[test]
fn chunked_download_streamed_intact() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (role, tls) in ALL_LISTENERS {
            let res = s.exchange(role, tls, &get("/_matrix/test/chunked", "localhost"));
            assert_eq!(res.status, 200, "{role:?} tls={tls}: {res:?}");
            assert_eq!(
                show(&res.body, 500),
                show(&chunked_body(), 500),
                "{role:?} tls={tls}"
            );
            assert!(
                res.chunked,
                "{role:?} tls={tls}: the response should stay chunked: {res:?}"
            );
        }
    });
}

/// An 8 MiB download arrives byte-exact over TLS and plain.
#[test]
fn large_download_intact() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        let n = 8 * 1024 * 1024;
        let want = big_body(n);
        for (role, tls) in CLIENT_LISTENERS {
            let mut c = s.connect(role, tls);
            c.timeout = Duration::from_secs(10);
            let res = c
                .request(&get(&format!("/_matrix/test/big?bytes={n}"), "localhost"))
                .unwrap_or_else(|e| panic!("tls={tls}: {e:?}"));
            assert_eq!(res.status, 200);
            assert_eq!(res.body.len(), n, "tls={tls}");
            assert!(res.body == want, "tls={tls}: body bytes differ");
        }
    });
}

/// Several requests on one client connection are answered in turn, over one upstream
/// connection.
#[test]
fn keep_alive_reused_on_both_sides() {
    each_runtime(|rt| {
        for (role, tls) in CLIENT_LISTENERS {
            let s = Scene::start(rt);
            let mut c = s.connect(role, tls);
            for i in 0..5 {
                let target = if i % 2 == 0 {
                    "/_matrix/client/versions".to_string()
                } else {
                    format!("/_matrix/test/big?bytes={}", 1000 * i)
                };
                let res = c.request(&get(&target, "localhost")).unwrap_or_else(|e| {
                    panic!("tls={tls}, request {i} on the same connection: {e:?}")
                });
                assert_eq!(res.status, 200, "request {i}: {res:?}");
                assert!(
                    !res.closes(),
                    "request {i}: the proxy closes a keep-alive connection"
                );
            }
            assert_eq!(
                s.origin.accepted(),
                1,
                "tls={tls}: five sequential requests must share one upstream connection"
            );
            assert!(s.origin.requests().iter().all(|r| r.conn == 1));
        }
    });
}
