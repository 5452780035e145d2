//! The hardening round (issue 13), end to end on both runtimes: early answers a client that
//! writes first can read (lingering close), the remaining RFC 9112 rules, slow readers, and
//! upstreams that answer garbage leaving the rotation.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mxgate_e2e::origin::big_body;
use mxgate_e2e::workers::NamedOrigin;
use mxgate_e2e::*;

const MIB: usize = 1024 * 1024;

fn upload_head(len: usize) -> Vec<u8> {
    request(
        "POST",
        "/_matrix/media/v3/upload?filename=video.mp4",
        "localhost",
        &[
            "Content-Type: application/octet-stream",
            &format!("Content-Length: {len}"),
        ],
    )
}

fn assert_too_large(res: &Response, context: &str) {
    assert_eq!(res.status, 413, "{context}: {res:?}");
    assert_eq!(res.json()["errcode"], "M_TOO_LARGE", "{context}: {res:?}");
}

/// A Matrix client that writes its whole 60 MiB upload before reading (matrix-nio on
/// aiohttp does) gets the 413 `M_TOO_LARGE` mxgate sent as soon as it saw the
/// Content-Length, not a broken pipe or a reset: mxgate keeps reading and discarding the
/// body after answering (lingering close), plain and TLS, with the default limits.
#[test]
fn a_client_writing_a_60_mib_upload_before_reading_gets_the_413() {
    let body = big_body(60 * MIB);
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (role, tls) in CLIENT_LISTENERS {
            let mark = s.origin.mark();
            let mut c = s.connect(role, tls);
            c.timeout = Duration::from_secs(60);
            let started = Instant::now();
            c.send(&upload_head(body.len()))
                .and_then(|()| c.send(&body))
                .unwrap_or_else(|e| {
                    panic!(
                        "tls={tls}: writing the upload failed after {:?} (the proxy closed \
                         without lingering): {e}",
                        started.elapsed()
                    )
                });
            let res = c
                .read_response()
                .unwrap_or_else(|e| panic!("tls={tls}: no answer after the upload: {e:?}"));
            assert_too_large(&res, &format!("60 MiB written first, tls={tls}"));
            assert!(res.closes(), "tls={tls}: the connection closes after it");
            s.origin.assert_untouched_since(mark, "over-limit upload");
            // The proxy ends the linger once the client closes.
            c.close_write();
            assert!(
                c.closed_within(Duration::from_secs(10)),
                "tls={tls}: the proxy closes after the client did"
            );
        }
    });
}

/// The same with a chunked upload whose one chunk announces more than the limit: the 413
/// comes when the chunk size is read, nothing of the chunk goes upstream, and the client
/// that writes all of it first still reads the answer.
#[test]
fn a_chunk_announcing_more_than_the_limit_gets_413_before_going_upstream() {
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.max_body("1MiB"));
        for (role, tls) in CLIENT_LISTENERS {
            let mut c = s.connect(role, tls);
            c.timeout = Duration::from_secs(30);
            let mut req = request(
                "POST",
                "/_matrix/test/echo-body",
                "localhost",
                &["Transfer-Encoding: chunked"],
            );
            let size = 2 * MIB;
            req.extend_from_slice(format!("{size:x}\r\n").as_bytes());
            req.extend_from_slice(&big_body(size));
            req.extend_from_slice(b"\r\n0\r\n\r\n");
            c.send(&req)
                .unwrap_or_else(|e| panic!("tls={tls}: writing the upload failed: {e}"));
            let res = c
                .read_response()
                .unwrap_or_else(|e| panic!("tls={tls}: {e:?}"));
            assert_too_large(&res, &format!("2 MiB chunk, tls={tls}"));
            let got = s.origin.total_bytes();
            assert!(
                got < 64 * 1024,
                "tls={tls}: the origin got {got} bytes: the chunk went upstream"
            );
        }
    });
}

/// A client that asks for 100 MiB and never reads does not hold the upstream connection
/// (and mxgate's buffers) forever: after `timeouts.send` without write progress the
/// exchange ends, the client connection is closed and mxgate's memory stays small.
#[test]
fn a_client_that_stops_reading_is_cut_after_the_send_timeout() {
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.section("timeouts", "send = \"2s\""));
        for (role, tls) in CLIENT_LISTENERS {
            let addr = s.proxy.listener(role, tls);
            let mut c = Client::slow_reader(addr, tls.then_some((&s.pki, "localhost")));
            let total = 100 * MIB;
            c.send(&get(
                &format!("/_matrix/test/big?bytes={total}"),
                "localhost",
            ))
            .expect("send the request");
            // Not reading: the sockets' buffers fill, writes stop making progress, and after
            // the send timeout the proxy gives the exchange up: the origin's answer is cut.
            let cut_before = s.origin.cut_responses();
            let stalled = Instant::now();
            assert!(
                wait_until(Duration::from_secs(60), || s.origin.cut_responses()
                    > cut_before),
                "tls={tls}: the upstream connection is still held {:?} after the client \
                 stopped reading",
                stalled.elapsed()
            );
            let rss = rss_kib(s.proxy.pid());
            assert!(
                rss < 64 * 1024,
                "tls={tls}: mxgate holds {rss} KiB while the client does not read"
            );
            let (got, end) = c.read_to_end(Duration::from_secs(60));
            assert_ne!(
                end,
                End::Timeout,
                "tls={tls}: the client connection is still open after the send timeout"
            );
            assert!(
                got.len() < total,
                "tls={tls}: all {} bytes arrived: the exchange was not cut",
                got.len()
            );
            // The proxy still serves (a new exchange, on a new upstream connection).
            let res = s.exchange(role, tls, &get("/_matrix/client/versions", "localhost"));
            assert_eq!(res.status, 200, "tls={tls}: {res:?}");
        }
    });
}

/// The other side: an upstream that stops reading the request body does not hold the
/// exchange forever either. After `timeouts.send` without progress the exchange fails with
/// 502, and a client that writes its whole body first still reads it (lingering close).
#[test]
fn an_upstream_that_stops_reading_the_body_fails_the_exchange_after_the_send_timeout() {
    // More than the origin's and mxgate's kernel buffers can take (32 + 4 MiB at most here).
    let body = big_body(48 * MIB);
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.section("timeouts", "send = \"2s\""));
        for (role, tls) in CLIENT_LISTENERS {
            let mut c = s.connect(role, tls);
            c.timeout = Duration::from_secs(60);
            let mut req = request(
                "POST",
                "/_matrix/test/deaf",
                "localhost",
                &[&format!("Content-Length: {}", body.len())],
            );
            req.extend_from_slice(&body);
            // The origin holds the connection for minutes: without the send timeout no
            // answer would come within the client's minute.
            let res = c
                .request(&req)
                .unwrap_or_else(|e| panic!("tls={tls}: no answer: {e:?}"));
            assert_eq!(res.status, 502, "tls={tls}: {res:?}");
        }
    });
}

/// The resident set of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// An absolute-form target (RFC 9112 §3.2.2) is accepted: routed on its path, forwarded as
/// origin form byte for byte, with the target's authority as `Host`.
#[test]
fn absolute_form_targets_are_accepted_and_forwarded_as_origin_form() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        let target = "/_matrix/client/v3/rooms/!r%2Fx:example.org/messages?from=s1_2&dir=b";
        let res = s.exchange(
            Role::Client,
            true,
            &request(
                "GET",
                &format!("https://matrix.example.org:8448{target}"),
                "somewhere.else",
                &[],
            ),
        );
        assert_eq!(res.status, 200, "{res:?}");
        let got = s.origin.single_request();
        assert_eq!(got.head.target_str(), target, "byte for byte");
        assert_eq!(
            got.head.headers_named("host"),
            ["matrix.example.org:8448"],
            "the target's authority is the one Host"
        );
    });
}

/// Requests RFC 9112 / RFC 3986 refuse get their status at once, and nothing of them goes
/// upstream.
#[test]
fn malformed_requests_are_refused_at_once_without_going_upstream() {
    let long_method = "A".repeat(33);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "HTTP/0.9 request line (no version)",
            b"GET /_matrix/client/versions\r\n".to_vec(),
            400,
        ),
        (
            "method longer than any registered one",
            request(&long_method, "/_matrix/client/versions", "localhost", &[]),
            501,
        ),
        (
            "unencoded { } in the query",
            get("/_matrix/client/v3/sync?filter={\"a\":1}", "localhost"),
            400,
        ),
        (
            "a byte >= 0x80 in the path",
            b"GET /_matrix/media/v3/download/x/caf\xc3\xa9 HTTP/1.1\r\nHost: localhost\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "a broken percent escape",
            get("/_matrix/client/v3/rooms/%G1/state", "localhost"),
            400,
        ),
        (
            "userinfo in Host",
            get("/_matrix/client/versions", "user@localhost"),
            400,
        ),
        (
            "a non-numeric port in Host",
            get("/_matrix/client/versions", "localhost:https"),
            400,
        ),
        (
            "an empty port in Host",
            get("/_matrix/client/versions", "localhost:"),
            400,
        ),
        (
            "userinfo in an absolute-form target",
            get("http://user@localhost/_matrix/client/versions", "localhost"),
            400,
        ),
    ];
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (what, raw, status) in &cases {
            for (role, tls) in CLIENT_LISTENERS {
                let mark = s.origin.mark();
                let mut c = s.connect(role, tls);
                // Well under the 30 s header timeout: the refusal must not wait for it.
                c.timeout = Duration::from_secs(5);
                let res = c
                    .request(raw)
                    .unwrap_or_else(|e| panic!("{what} (tls={tls}): no answer: {e:?}"));
                assert_eq!(res.status, *status, "{what} (tls={tls}): {res:?}");
                s.origin.assert_untouched_since(mark, what);
            }
        }
    });
}

/// `Upgrade: h2c` is never honoured (no 101) and, with `HTTP2-Settings`, never reaches the
/// upstream: the request is answered as the plain HTTP/1.1 request it also is.
#[test]
fn an_h2c_upgrade_is_not_honoured_or_forwarded() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (role, tls) in CLIENT_LISTENERS {
            let mark = s.origin.mark();
            let res = s.exchange(
                role,
                tls,
                &request(
                    "GET",
                    "/_matrix/client/versions",
                    "localhost",
                    &[
                        "Connection: Upgrade, HTTP2-Settings",
                        "Upgrade: h2c",
                        "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA",
                    ],
                ),
            );
            assert_eq!(res.status, 200, "tls={tls}: {res:?}");
            let got = s
                .origin
                .wait_requests(mark.requests + 1, Duration::from_secs(5));
            let head = &got.last().expect("the request reached the origin").head;
            assert!(head.headers_named("upgrade").is_empty(), "{head:?}");
            assert!(head.headers_named("http2-settings").is_empty(), "{head:?}");
        }
    });
}

/// A backend that accepts connections and answers garbage (here: a head with two lengths)
/// leaves the rotation after `eject_after` such answers (3 by default), before any health
/// probe would notice: the other backend serves every request after that.
#[test]
fn a_backend_answering_garbage_is_ejected_by_its_answers() {
    each_runtime(|rt| {
        let main = NamedOrigin::start("main");
        let good = NamedOrigin::start("good");
        let bad = GarbageOrigin::start();
        let pki = Pki::new();
        let config = ProxyConfig::plain_client(main.url(), &pki).section(
            "workers.client_reader",
            &format!(
                "backends = [\"{}\", \"http://{}\"]\neject_for = \"60s\"",
                good.url(),
                bad.addr
            ),
        );
        let proxy = Proxy::start(rt, config);
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let mut c = Client::plain(proxy.client_plain());
            let res = c
                .request(&get("/_matrix/client/v3/publicRooms", "localhost"))
                .unwrap_or_else(|e| panic!("no answer: {e:?}"));
            statuses.push(res.status);
            if res.status == 502 && statuses.iter().filter(|&&s| s == 502).count() == 3 {
                // Faults reach the health thread over a channel: on a loaded machine the
                // next request could be routed before the ejection is applied. Wait for
                // the ejection's log line (its reason is checked below).
                wait_until(Duration::from_secs(10), || {
                    proxy.log().contains("answers that could not be passed on")
                });
            }
        }
        let bad_served = bad.requests.load(Ordering::SeqCst);
        assert_eq!(
            bad_served, 3,
            "the broken backend got {bad_served} requests (statuses {statuses:?})"
        );
        assert_eq!(
            statuses.iter().filter(|&&s| s == 502).count(),
            3,
            "{statuses:?}"
        );
        assert!(
            statuses[statuses.len() - 10..].iter().all(|&s| s == 200),
            "{statuses:?}"
        );
        assert!(
            wait_until(Duration::from_secs(5), || proxy
                .log()
                .contains("answers that could not be passed on")),
            "the ejection is logged with its reason: {}",
            proxy.log_tail(30)
        );
    });
}

/// Accepts connections and answers every request with a head no proxy may pass on (two
/// differing Content-Lengths), then closes; counts the requests other than health probes.
struct GarbageOrigin {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl GarbageOrigin {
    fn start() -> GarbageOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (requests.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                    // Health probes (on by default for worker pools) are not traffic.
                    if !head.starts_with(b"GET /health ") {
                        r.fetch_add(1, Ordering::SeqCst);
                    }
                    // Two lengths: no proxy may guess which one frames the body.
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
                    );
                }
            }
        });
        GarbageOrigin {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for GarbageOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
