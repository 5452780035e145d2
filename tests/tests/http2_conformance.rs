//! HTTP/2 to clients, end to end against both runtimes: h2spec's section list (RFC 9113
//! §3–§8, RFC 7541), the proxy's behaviour over h2, and the known HTTP/2 attacks with the
//! proxy's memory watched. The cases are Python (`tests/h2/h2conf.py`, python-hyper's `h2`,
//! `hpack` and `hyperframe` pinned with their hashes in `tests/tools/h2.txt`, in the venv
//! `target/h2-venv` built on first use); this file starts mxgate and the origin, runs a
//! group of cases, and checks what the origin saw. Each case names its section and prints
//! what it expected and what came (frame type, error code) when it fails.
//!
//! Transports: every conformance case over plain TCP with prior knowledge (`http2 = true`
//! on the plain client listener); the cases of group `tls` and `proxy_tls` over TLS with
//! ALPN `h2` as well.
//!
//! # h2spec coverage (h2spec's numbering, which follows RFC 7540; RFC 9113 keeps it)
//!
//! | h2spec section | cases | covered |
//! |---|---|---|
//! | 3.5 connection preface | valid preface; invalid preface; preface not followed by SETTINGS | all |
//! | 4.1 frame format | unknown type; undefined flags; reserved bit | all |
//! | 4.2 frame size | DATA of 2^14; DATA > max; HEADERS > max | all |
//! | 4.3 header compression | invalid block; PRIORITY / other stream inside a block | all |
//! | 5.1 stream states | idle DATA/RST/WINDOW_UPDATE/CONTINUATION; half-closed (remote) DATA/HEADERS/CONTINUATION; closed after RST and after END_STREAM: DATA/HEADERS/CONTINUATION | all 13 |
//! | 5.1.1 stream identifiers | even id; id going backwards | all |
//! | 5.1.2 stream concurrency | one stream above MAX_CONCURRENT_STREAMS (REFUSED_STREAM) | all |
//! | 5.3.1 dependencies | HEADERS and PRIORITY depending on themselves | all |
//! | 5.4.1 connection errors | invalid PING: GOAWAY then close; GOAWAY's last stream id | all |
//! | 5.5 extending | unknown frame; unknown frame inside a header block | all |
//! | 6.1 DATA | stream 0; not open; bad pad length | all |
//! | 6.2 HEADERS | PRIORITY / other stream while a block is open; stream 0; bad pad length | all |
//! | 6.3 PRIORITY | stream 0; length ≠ 5 | all |
//! | 6.4 RST_STREAM | stream 0; idle; length ≠ 4 | all |
//! | 6.5 SETTINGS | ACK with payload; on a stream; length not ×6 | all |
//! | 6.5.2 defined parameters | ENABLE_PUSH 2; INITIAL_WINDOW_SIZE 2^31; MAX_FRAME_SIZE below/above; unknown id | all |
//! | 6.5.3 synchronization | several INITIAL_WINDOW_SIZE values (last wins); ACK sent | all |
//! | 6.7 PING | answered; ACK not answered; on a stream; length ≠ 8 | all |
//! | 6.8 GOAWAY | on a stream | all |
//! | 6.9 WINDOW_UPDATE | increment 0 (connection, stream); length ≠ 4 | all |
//! | 6.9.1 flow-control window | window of 1; overflow above 2^31-1 (connection, stream) | all |
//! | 6.9.2 initial window size | change applies to open streams; negative window; above max | all |
//! | 6.10 CONTINUATION | several; followed by another frame; stream 0; after END_HEADERS (twice); after DATA | all |
//! | 7 error codes | unknown code in GOAWAY and RST_STREAM | all |
//! | 8.1 exchanges | second HEADERS without END_STREAM | all |
//! | 8.1.2 field names | upper case | all |
//! | 8.1.2.1 pseudo-fields | unknown; response pseudo in a request; in trailers; after regular | all |
//! | 8.1.2.2 connection-specific | connection, keep-alive, proxy-connection, transfer-encoding, upgrade; `te` ≠ trailers (and `te: trailers` accepted) | all |
//! | 8.1.2.3 request pseudo-fields | empty `:path`; missing / duplicate `:method` `:scheme` `:path` | all |
//! | 8.1.2.6 malformed | content-length ≠ DATA (one, several, short at END_STREAM) | all |
//! | 8.2 server push | PUSH_PROMISE from a client | all |
//! | hpack 2.3.3 index space | indexed / literal name past the tables | all |
//! | hpack 4.2 table size | size update at the end of a block | all |
//! | hpack 5.2 string literals | Huffman padding > 7 bits; padded with zeros; EOS | all |
//! | hpack 6.1 indexed | index 0 | all |
//! | hpack 6.3 size update | above SETTINGS_HEADER_TABLE_SIZE | all |
//! | generic 1–5 | GET, HEAD, POST, POST with trailers, padding, priority, PRIORITY variants, frames on half-closed/closed streams, WINDOW_UPDATE, GOAWAY, every HPACK representation and table size updates | all but server push |
//! | 3.2 / 3.3 (h2c upgrade, h2spec `http2/3.2`) | not in h2spec's default run; mxgate never upgrades: `an_h2c_upgrade_on_an_http2_listener_is_not_honoured_or_forwarded` | as a proxy test |
//! | 6.6 PUSH_PROMISE sent by the server, 8.2 push | mxgate never pushes (clients' ENABLE_PUSH is moot) | not applicable |
//! | 8.3 CONNECT | h2spec has no case; mxgate answers 501: `r8_5_1_connect_is_answered_501` | beyond h2spec |
//! | 3.3 TLS (h2spec `tls`: TLS 1.2+, cipher blocklist) | rustls only offers RFC 9113 §9.2-conforming suites; covered by `tls.rs` | not here |
//! | 6.9.2 "changes INITIAL_WINDOW_SIZE after HEADERS" with a response of size > window | as `s6_9_2_1` / `s6_9_2_2` | all |
//!
//! Beyond h2spec (RFC 9113 text h2spec has no case for): field values with NUL/CR/LF or
//! edge whitespace, invalid name characters (§8.2.1), `:authority` with userinfo, `host`
//! differing from `:authority`, `:protocol` without SETTINGS_ENABLE_CONNECT_PROTOCOL
//! (§8.3.1, RFC 8441), CONNECT (§8.5), a header list over SETTINGS_MAX_HEADER_LIST_SIZE
//! (431, the HPACK state kept), `te: trailers` accepted.
//!
//! Attacks (`attacks_are_answered_and_memory_stays_bounded`, RSS sampled every 10 ms, bound
//! 64 MiB over the idle figure): Rapid Reset (CVE-2023-44487), CONTINUATION flood (small
//! frames: count bound; 16 KiB frames: size bound; CVE-2024-27316), MadeYouReset
//! (CVE-2025-8671: WINDOW_UPDATE overflow and DATA on half-closed streams), HPACK bomb (431
//! each, then ENHANCE_YOUR_CALM), HPACK table churn, SETTINGS / PING / empty DATA /
//! WINDOW_UPDATE / PRIORITY floods, a zero-window reader (reset after
//! `send_stall_timeout`), a client that never reads the socket, stream ids going
//! backwards, 8 connections flooding at once, a client that never acknowledges SETTINGS
//! (SETTINGS_TIMEOUT), an idle connection (GOAWAY after `idle_timeout`), a client stalled
//! inside the preface, a 40 MiB upload to an upstream that never reads (the client ends up
//! blocked on a closed window).
//!
//! Where RFC 9113 lets a server pick a stream or a connection error, the cases expect the
//! one the engine (`core/src/http2`) documents, e.g. DATA on a half-closed (remote)
//! stream: RST_STREAM STREAM_CLOSED; DATA larger than SETTINGS_MAX_FRAME_SIZE: GOAWAY
//! FRAME_SIZE_ERROR.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use mxgate_e2e::synapse::run_bounded;
use mxgate_e2e::*;

/// A whole group's bound (the cases bound each read themselves).
const GROUP_TIMEOUT: Duration = Duration::from_secs(240);

/// The h2 venv's python (built once per test process); panics with the fix.
fn h2_python() -> PathBuf {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| tools::python_venv("h2"))
        .clone()
        .unwrap_or_else(|e| {
            panic!(
                "cannot provision python-hyper h2 into target/h2-venv (tests/tools/h2.txt; \
                 needs python3 with venv, and PyPI): {e}"
            )
        })
}

fn script() -> PathBuf {
    runtime::workspace_root().join("tests/h2/h2conf.py")
}

/// The outcome of one run of the script.
struct Run {
    /// Each case run: its name, and the failure text if it failed.
    cases: Vec<(String, Option<String>)>,
    /// `INFO <case> key=value` lines: (case, key) -> value.
    info: HashMap<(String, String), String>,
    output: String,
}

impl Run {
    fn info(&self, case: &str, key: &str) -> &str {
        self.info
            .get(&(case.to_owned(), key.to_owned()))
            .unwrap_or_else(|| panic!("case {case} printed no {key}=\n{}", self.output))
    }

    /// Panics listing every failed case (and the script's output when it did not finish).
    fn assert_passed(&self, context: &str) {
        let failed: Vec<String> = self
            .cases
            .iter()
            .filter_map(|(n, f)| f.as_ref().map(|f| format!("  {n}: {f}")))
            .collect();
        let passed = self.cases.len() - failed.len();
        eprintln!("{context}: {passed} cases passed, {} failed", failed.len());
        assert!(
            failed.is_empty(),
            "{context}: {} of {} cases failed:\n{}",
            failed.len(),
            self.cases.len(),
            failed.join("\n")
        );
    }
}

/// Runs the cases `select` (`--group NAME` or `--case NAME`…) against the client listener
/// of `scene` (TLS or plain), with the proxy's pid for the attack cases.
fn run_cases(scene: &Scene, tls: bool, select: &[&str]) -> Run {
    let addr = scene.proxy.listener(Role::Client, tls);
    let mut cmd = Command::new(h2_python());
    cmd.arg(script())
        .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--pid", &scene.proxy.pid().to_string()])
        .args(select);
    if tls {
        cmd.arg("--tls")
            .arg("--ca")
            .arg(&scene.pki.ca_pem_path)
            .args(["--sni", "localhost"]);
    }
    let (status, output) =
        run_bounded("h2conf", cmd, GROUP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let mut total = None;
    let mut cases = Vec::new();
    let mut info = HashMap::new();
    for line in output.lines() {
        let line = line.trim_start_matches("[h2conf] ");
        if let Some(n) = line.strip_prefix("TOTAL ") {
            total = n.trim().parse::<usize>().ok();
        } else if let Some(rest) = line.strip_prefix("CASE ") {
            let (name, verdict) = rest.split_once(' ').unwrap_or((rest, ""));
            let failure = verdict
                .strip_prefix("FAIL ")
                .map(str::to_owned)
                .or_else(|| (!verdict.starts_with("PASS")).then(|| verdict.to_owned()));
            cases.push((name.to_owned(), failure));
        } else if let Some(rest) = line.strip_prefix("INFO ") {
            if let Some((case, kv)) = rest.split_once(' ') {
                if let Some((k, v)) = kv.split_once('=') {
                    info.insert((case.to_owned(), k.to_owned()), v.to_owned());
                }
            }
        }
    }
    let total = total
        .unwrap_or_else(|| panic!("h2conf.py did not start its cases ({status:?}):\n{output}"));
    assert!(
        status.is_some_and(|s| s.success()) && cases.len() == total,
        "h2conf.py ended ({status:?}) after {} of {total} cases:\n{output}",
        cases.len()
    );
    Run {
        cases,
        info,
        output,
    }
}

/// The default four listeners, HTTP/2 by prior knowledge on the plain client listener
/// (index 1; TLS listeners offer `h2` by ALPN by default), and `[http2]` as given.
fn h2_scene(rt: &Runtime, http2: &str, f: impl FnOnce(ProxyConfig) -> ProxyConfig) -> Scene {
    Scene::with(rt, |c| {
        f(c.listener_line(1, "http2 = true").section("http2", http2))
    })
}

/// Every h2spec section (and the generic ones) over plain TCP with prior knowledge.
#[test]
fn h2spec_sections_over_plain_tcp_with_prior_knowledge() {
    each_runtime(|rt| {
        let s = h2_scene(rt, "max_concurrent_streams = 8", |c| c);
        run_cases(&s, false, &["--group", "conformance"]).assert_passed("plain, prior knowledge");
    });
}

/// A selection of the same cases over TLS, HTTP/2 chosen by ALPN.
#[test]
fn h2spec_sections_over_tls_with_alpn_h2() {
    each_runtime(|rt| {
        let s = h2_scene(rt, "max_concurrent_streams = 8", |c| c);
        run_cases(&s, true, &["--group", "tls"]).assert_passed("TLS, ALPN h2");
    });
}

/// The proxy's job over h2: targets byte for byte, `:authority` as `Host`, forwarding
/// headers, its own answers, refusals, body limits, multiplexing and flow control.
#[test]
fn proxy_behaviour_over_h2() {
    each_runtime(|rt| {
        let s = h2_scene(rt, "send_stall_timeout = \"2s\"", |c| c.max_body("9M"));
        for tls in [false, true] {
            let group = if tls { "proxy_tls" } else { "proxy" };
            let mark = s.origin.mark();
            let run = run_cases(&s, tls, &["--group", group]);
            run.assert_passed(&format!("proxy over h2, tls={tls}"));
            let reqs = s.origin.requests()[mark.requests..].to_vec();

            // The odd path, exactly; Host from :authority; X-Forwarded-*.
            let odd_case = "p1_odd_path_reaches_the_origin_byte_for_byte";
            let path = run.info(odd_case, "path");
            let odd = reqs
                .iter()
                .find(|r| r.head.header("x-h2-test").as_deref() == Some("odd-path"))
                .unwrap_or_else(|| {
                    panic!("tls={tls}: the odd-path request never reached the origin: {reqs:#?}")
                });
            assert_eq!(
                show(&odd.head.target, 300),
                show(path.as_bytes(), 300),
                "tls={tls}: the target must reach the origin byte for byte"
            );
            assert_eq!(odd.head.method, "GET");
            assert_eq!(
                odd.head.headers_named("host"),
                vec!["localhost".to_owned()],
                "tls={tls}: :authority must become the one Host: {odd:#?}"
            );
            assert_eq!(
                odd.head.header("x-forwarded-for").as_deref(),
                Some("127.0.0.1"),
                "tls={tls}: {odd:#?}"
            );
            assert_eq!(
                odd.head.header("x-forwarded-proto").as_deref(),
                Some(if tls { "https" } else { "http" }),
                "tls={tls}: {odd:#?}"
            );
            assert!(
                odd.head.headers_named("x-h2-test").len() == 1 && odd.head.header("te").is_none(),
                "tls={tls}: {odd:#?}"
            );

            // mxgate's own answers never reach the origin.
            for own in ["/health", "/.well-known/matrix/client"] {
                assert!(
                    !reqs.iter().any(|r| r.head.path() == own),
                    "tls={tls}: {own} must be answered by mxgate, the origin got it"
                );
            }

            // The admin path: refused as over HTTP/1.1, never forwarded.
            let admin = "/_synapse/admin/v1/users/@a:localhost";
            assert!(
                !reqs
                    .iter()
                    .any(|r| r.head.path().starts_with("/_synapse/admin")),
                "tls={tls}: the admin path reached the origin"
            );
            let h1 = s.exchange(Role::Client, tls, &get(admin, "localhost"));
            let h2_status: u16 = run
                .info("p3_admin_path_is_refused", "status")
                .parse()
                .expect("a status");
            assert_eq!(
                h2_status,
                h1.status,
                "tls={tls}: the admin path must get the HTTP/1.1 answer's status over h2 \
                 (h2 body: {})",
                run.info("p3_admin_path_is_refused", "body")
            );
            assert!(h1.status >= 400, "tls={tls}: {h1:?}");

            // Several `cookie` fields reach the origin as one Cookie (RFC 9113 §8.2.3), and
            // `host` stands in for a missing `:authority`.
            let cookies = reqs
                .iter()
                .find(|r| r.head.header("x-h2-test").as_deref() == Some("cookies"))
                .unwrap_or_else(|| {
                    panic!("tls={tls}: the cookie request never reached the origin")
                });
            assert_eq!(
                cookies.head.headers_named("cookie"),
                vec!["a=1; b=2".to_owned()],
                "tls={tls}: {cookies:#?}"
            );
            assert_eq!(
                cookies.head.headers_named("host"),
                vec!["localhost".to_owned()],
                "tls={tls}: {cookies:#?}"
            );

            // Pseudo-fields no HTTP/1.1 request line or Host can carry faithfully, and
            // paths that resolve elsewhere: refused, never forwarded.
            let smuggled: Vec<String> = reqs
                .iter()
                .filter(|r| {
                    r.head
                        .header("x-h2-test")
                        .is_some_and(|v| v.starts_with("smuggle-"))
                })
                .map(|r| show(&r.head.raw, 300))
                .collect();
            assert!(
                smuggled.is_empty(),
                "tls={tls}: refused requests reached the origin: {smuggled:#?}"
            );

            // The 413s: the over-limit uploads never reached the origin whole.
            assert!(
                !reqs
                    .iter()
                    .any(|r| r.head.path() == "/_matrix/media/v3/upload" && r.body_complete),
                "tls={tls}: an upload over max_body reached the origin whole"
            );

            // The same listener still speaks HTTP/1.1.
            let h1 = s.exchange(
                Role::Client,
                tls,
                &get("/_matrix/client/versions", "localhost"),
            );
            assert_eq!(h1.status, 200, "tls={tls}: HTTP/1.1 beside h2: {h1:?}");
        }
    });
}

/// Each attack is answered (GOAWAY ENHANCE_YOUR_CALM, or the RFC's error, or a reset after
/// `send_stall_timeout`), and the proxy's RSS stays within 64 MiB of its idle figure; the
/// proxy still serves HTTP/1.1 and h2 afterwards.
#[test]
fn attacks_are_answered_and_memory_stays_bounded() {
    each_runtime(|rt| {
        let s = h2_scene(
            rt,
            "send_stall_timeout = \"2s\"\nidle_timeout = \"3s\"\nsettings_timeout = \"2s\"",
            // A client stalled inside the preface on the plain listener is still reading
            // an HTTP/1.1 head as far as the listener knows.
            |c| c.section("timeouts", "client_header = \"3s\""),
        );
        // Warm: one exchange each way, so the idle figure includes the first buffers.
        assert_eq!(
            s.exchange(
                Role::Client,
                false,
                &get("/_matrix/client/versions", "localhost")
            )
            .status,
            200
        );
        let run = run_cases(&s, false, &["--group", "attack"]);
        for (case, _) in &run.cases {
            if let (Some(idle), Some(peak)) = (
                run.info.get(&(case.clone(), "rss_idle_kib".to_owned())),
                run.info.get(&(case.clone(), "rss_peak_kib".to_owned())),
            ) {
                eprintln!("[{}] {case}: RSS idle {idle} KiB, peak {peak} KiB", rt.name);
            }
        }
        run.assert_passed("attacks over h2");
        let after = run_cases(&s, false, &["--case", "g3_1_get_is_answered"]);
        after.assert_passed("h2 after the attacks");
        assert_eq!(
            s.exchange(
                Role::Client,
                false,
                &get("/_matrix/client/versions", "localhost")
            )
            .status,
            200,
            "HTTP/1.1 after the attacks"
        );
    });
}

/// An upstream that refuses connections: 502 (a Matrix JSON error) on that stream, the
/// connection and its other streams unaffected.
#[test]
fn an_unreachable_upstream_is_a_502_on_its_stream_only() {
    each_runtime(|rt| {
        let s = h2_scene(rt, "", |mut c| {
            c.homeserver = format!("http://127.0.0.1:{}", proxy::dead_port());
            c
        });
        for tls in [false, true] {
            run_cases(&s, tls, &["--group", "deadup"])
                .assert_passed(&format!("dead upstream, tls={tls}"));
        }
    });
}

/// SIGTERM during an h2 exchange: GOAWAY NO_ERROR (the graceful two-step one, the client
/// answering the server's PING), the stream in flight still answered, then the close.
#[test]
fn sigterm_drains_h2_streams_with_goaway() {
    each_runtime(|rt| {
        for tls in [false, true] {
            let mut s = h2_scene(rt, "", |c| c);
            run_cases(&s, tls, &["--group", "drain"]).assert_passed(&format!("drain, tls={tls}"));
            assert!(
                s.proxy.wait_exit(Duration::from_secs(10)).is_some(),
                "tls={tls}: the proxy did not exit after draining"
            );
        }
    });
}

/// SIGHUP (a reload) while an h2 stream is in flight: the stream is answered, and the
/// connection's next streams, like new connections, follow the new configuration (here
/// `max_body` from 9M to 1M).
#[test]
fn sighup_keeps_h2_connections_and_applies_to_their_next_streams() {
    each_runtime(|rt| {
        for tls in [false, true] {
            let s = h2_scene(rt, "", |c| c.max_body("9M"));
            let config = std::fs::read_to_string(&s.proxy.config_path).expect("config");
            let changed = config.replace("max_body = \"9M\"", "max_body = \"1M\"");
            assert_ne!(config, changed, "the test config has no max_body line");
            std::fs::write(&s.proxy.config_path, changed).expect("rewrite config");
            run_cases(&s, tls, &["--group", "reload"]).assert_passed(&format!("reload, tls={tls}"));
            assert!(
                s.proxy.log().contains("SIGHUP: configuration reloaded"),
                "tls={tls}: the proxy did not log the reload:\n{}",
                s.proxy.log_tail(20)
            );
        }
    });
}

/// `Upgrade: h2c` over HTTP/1.1 on a listener that speaks HTTP/2 by prior knowledge is
/// neither honoured (no 101) nor forwarded (the origin sees no `Upgrade`/`HTTP2-Settings`).
#[test]
fn an_h2c_upgrade_on_an_http2_listener_is_not_honoured_or_forwarded() {
    each_runtime(|rt| {
        let s = h2_scene(rt, "", |c| c);
        for tls in [false, true] {
            let mark = s.origin.mark();
            let res = s.exchange(
                Role::Client,
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

/// On a plain listener with `http2 = true`, HTTP/1.1 is told apart from the preface by its
/// first bytes: a request shorter than the 24-byte preface is answered, not held waiting
/// for more, and one starting like the preface (`PRI `) but not it is HTTP/1.1's to refuse.
#[test]
fn short_http1_requests_on_a_prior_knowledge_listener_are_answered() {
    each_runtime(|rt| {
        let s = h2_scene(rt, "", |c| c);
        for req in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
            b"PRI / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let mut c = s.connect(Role::Client, false);
            let res = c
                .request(req)
                .unwrap_or_else(|e| panic!("{}: no HTTP/1.1 answer: {e:?}", show(req, 100)));
            assert!(
                res.status == 200 || (400..500).contains(&res.status),
                "{}: {res:?}",
                show(req, 100)
            );
        }
    });
}

/// Without `http2 = true` a plain listener speaks only HTTP/1.1: the preface gets an
/// HTTP/1.1 answer, never a SETTINGS frame; `http2 = false` on a TLS listener takes `h2`
/// out of ALPN.
#[test]
fn http2_is_off_where_the_listener_says_so() {
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.listener_line(0, "http2 = false"));
        let mut c = s.connect(Role::Client, false);
        let res = c.request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        match res {
            Ok(r) => assert!(r.status >= 400, "the preface got {r:?}"),
            Err(e) => assert!(
                e.partial.is_empty() || e.partial.starts_with(b"HTTP/1.1 "),
                "the preface on a plain HTTP/1.1 listener must not be answered in HTTP/2: {e:?}"
            ),
        }
        let mut run = run_cases(&s, true, &["--case", "g3_1_get_is_answered"]);
        let (_, failure) = run.cases.pop().expect("one case");
        let failure = failure.expect("h2 over TLS must fail where http2 = false");
        assert!(
            failure.contains("expected ALPN h2"),
            "expected ALPN without h2, got: {failure}"
        );
    });
}
