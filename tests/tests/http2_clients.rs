//! HTTP/2 through mxgate with real clients, against both runtimes: curl (ALPN over TLS and
//! prior knowledge on a plain listener with `http2 = true`; neither where `http2` is off),
//! nghttp (many streams on one connection, uploads, downloads with small windows), h2load
//! (2000 requests, 40 in flight, over TLS and h2c) and headless Chromium (60 parallel
//! `fetch()`es that must share one HTTP/2 connection, read from its NetLog).
//!
//! The clients come from `tests/src/tools.rs`: curl and nghttp2's tools from Debian
//! (unpacked into `target/` when missing), Chromium from `PATH` (it must be installed:
//! `apt-get install -y chromium`). Every client runs with a time limit and is stopped by its
//! process group ([`mxgate_e2e::external::run`]).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mxgate_e2e::external::{self, Ran};
use mxgate_e2e::netlog::NetLog;
use mxgate_e2e::origin::big_body;
use mxgate_e2e::proxy::free_ports;
use mxgate_e2e::*;

/// Any one client run; generous for a busy 2-core machine.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
const MIB: usize = 1024 * 1024;

/// The default four listeners; the plain client listener (index 1) also takes HTTP/2 with
/// prior knowledge. TLS listeners offer `h2` by ALPN by default.
fn h2_scene(rt: &Runtime) -> Scene {
    Scene::with(rt, |c| c.listener_line(1, "http2 = true"))
}

/// A temporary directory for one client's files.
fn workdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mxgate-e2e-h2-")
        .tempdir()
        .expect("temp dir")
}

/// One transfer's `curl -w` numbers.
#[derive(Debug)]
struct Transfer {
    http_version: String,
    code: u16,
    connects: u32,
    size: u64,
}

const CURL_W: &str = "MXGATE-CURL http_version=%{http_version} code=%{http_code} \
                      connects=%{num_connects} size=%{size_download}\\n";

/// Runs curl (`-sS`, a time limit, the test CA, `localhost` pinned to 127.0.0.1 on `port`)
/// with `args`; returns the run and one [`Transfer`] per URL.
fn curl(dir: &Path, port: u16, pki: &Pki, args: &[&str]) -> (Ran, Vec<Transfer>) {
    let mut cmd = tools::curl_http2().command();
    cmd.args(["-sS", "--max-time", "90", "--cacert"])
        .arg(&pki.ca_pem_path)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .args(["-w", CURL_W])
        .args(args);
    let ran = external::run("curl", cmd, dir, CLIENT_TIMEOUT);
    let transfers = ran
        .stdout_text()
        .lines()
        .filter_map(|l| l.strip_prefix("MXGATE-CURL "))
        .map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .unwrap_or("")
                    .to_owned()
            };
            Transfer {
                http_version: field("http_version"),
                code: field("code").parse().unwrap_or(0),
                connects: field("connects").parse().unwrap_or(0),
                size: field("size").parse().unwrap_or(0),
            }
        })
        .collect();
    (ran, transfers)
}

/// The one transfer of a successful single-URL curl run.
fn single(ran: &Ran, transfers: Vec<Transfer>, context: &str) -> Transfer {
    ran.expect_success(context);
    assert_eq!(transfers.len(), 1, "{context}: {}", ran.describe(2000));
    transfers.into_iter().next().unwrap()
}

fn header_values(req: &RecordedRequest, name: &str) -> Vec<String> {
    req.head.headers_named(name)
}

/// curl negotiates h2 by ALPN on the TLS listener; a GET and a POST (a body larger than the
/// stream and connection windows) reach the origin as HTTP/1.1 with the target byte for
/// byte and `Host` = the `:authority`.
#[test]
fn curl_over_tls_negotiates_h2_and_the_origin_sees_the_request() {
    each_runtime(|rt| {
        let s = h2_scene(rt);
        let dir = workdir();
        let port = s.proxy.client_tls().port();
        let target =
            "/_matrix/client/v3/rooms/%21abc%3Alocalhost/state/m.room.name/?x=%2F%20y&z=%C3%A9";
        let body_file = dir.path().join("get.body");
        let (ran, t) = curl(
            dir.path(),
            port,
            &s.pki,
            &[
                "--http2",
                "-o",
                body_file.to_str().unwrap(),
                &format!("https://localhost:{port}{target}"),
            ],
        );
        let t = single(&ran, t, "curl --http2 GET");
        assert_eq!(t.http_version, "2", "ALPN must pick h2: {t:?}");
        assert_eq!(t.code, 200, "{t:?}");
        let body = fs::read(&body_file).expect("body");
        assert!(
            String::from_utf8_lossy(&body).contains("\"origin\":\"ok\""),
            "{}",
            show(&body, 300)
        );
        let req = s.origin.single_request();
        assert_eq!(req.head.method, "GET");
        assert_eq!(req.head.target, target.as_bytes(), "target byte for byte");
        assert_eq!(req.head.version, "HTTP/1.1");
        assert_eq!(
            header_values(&req, "host"),
            [format!("localhost:{port}")],
            "Host = :authority; {}",
            show(&req.head.raw, 600)
        );
        assert_eq!(header_values(&req, "x-forwarded-proto"), ["https"]);

        // A POST whose body passes the stream (256 KiB) and connection (1 MiB) windows.
        let size = MIB + 7;
        let payload = big_body(size);
        let file = dir.path().join("upload.bin");
        fs::write(&file, &payload).expect("write upload");
        let out = dir.path().join("post.body");
        let (ran, t) = curl(
            dir.path(),
            port,
            &s.pki,
            &[
                "--http2",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &format!("@{}", file.display()),
                "-o",
                out.to_str().unwrap(),
                &format!("https://localhost:{port}/_matrix/test/echo-body?k=1"),
            ],
        );
        let t = single(&ran, t, "curl --http2 POST");
        assert_eq!((t.http_version.as_str(), t.code), ("2", 200), "{t:?}");
        let answer: serde_json::Value =
            serde_json::from_slice(&fs::read(&out).expect("post body")).expect("echo JSON");
        assert_eq!(answer["len"], size as u64);
        assert_eq!(answer["sha256"], sha256_hex(&payload));
        let reqs = s.origin.wait_requests(2, Duration::from_secs(5));
        let post = &reqs[1];
        assert_eq!(post.head.method, "POST");
        assert_eq!(post.head.target_str(), "/_matrix/test/echo-body?k=1");
        assert!(post.body_complete && post.body == payload, "origin body");
        assert_eq!(header_values(post, "host"), [format!("localhost:{port}")]);
    });
}

/// A plain listener with `http2 = true` takes HTTP/2 with prior knowledge, and HTTP/1.1
/// still; the TLS listener still speaks HTTP/1.1 to a client that offers only that.
#[test]
fn curl_prior_knowledge_on_a_plain_listener_with_http2() {
    each_runtime(|rt| {
        let s = h2_scene(rt);
        let dir = workdir();
        let plain = s.proxy.client_plain().port();
        let tls = s.proxy.client_tls().port();
        let cases: [(&str, String, &str); 3] = [
            (
                "--http2-prior-knowledge",
                format!("http://127.0.0.1:{plain}/_matrix/client/versions?pk=1"),
                "2",
            ),
            (
                "--http1.1",
                format!("http://127.0.0.1:{plain}/_matrix/client/versions?h1=1"),
                "1.1",
            ),
            (
                "--http1.1",
                format!("https://localhost:{tls}/_matrix/client/versions?h1tls=1"),
                "1.1",
            ),
        ];
        for (i, (flag, url, want)) in cases.iter().enumerate() {
            let (ran, t) = curl(dir.path(), tls, &s.pki, &[flag, "-o", "/dev/null", url]);
            let t = single(&ran, t, &format!("curl {flag} {url}"));
            assert_eq!(
                (t.http_version.as_str(), t.code),
                (*want, 200),
                "curl {flag} {url}: {t:?}"
            );
            let reqs = s.origin.wait_requests(i + 1, Duration::from_secs(5));
            assert_eq!(reqs.len(), i + 1);
            let want_target = &url[url.find("/_matrix").unwrap()..];
            assert_eq!(reqs[i].head.target_str(), want_target);
        }
        let reqs = s.origin.requests();
        assert_eq!(
            header_values(&reqs[0], "host"),
            [format!("127.0.0.1:{plain}")]
        );
        assert_eq!(header_values(&reqs[0], "x-forwarded-proto"), ["http"]);
    });
}

/// Listeners without HTTP/2 do not speak it: on a plain listener the preface is an
/// HTTP/1.1 request line it refuses (`PRI * HTTP/2.0`: 505), curl with prior knowledge fails
/// and nothing reaches the origin; a TLS listener with `http2 = false` offers only
/// `http/1.1` by ALPN, so `curl --http2` gets HTTP/1.1.
#[test]
fn listeners_without_http2_do_not_speak_h2() {
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.listener_line(0, "http2 = false"));
        let dir = workdir();
        let plain = s.proxy.client_plain().port();
        let (ran, t) = curl(
            dir.path(),
            plain,
            &s.pki,
            &[
                "--http2-prior-knowledge",
                "-o",
                "/dev/null",
                &format!("http://127.0.0.1:{plain}/_matrix/client/versions"),
            ],
        );
        assert!(
            !ran.success() && t.iter().all(|t| t.http_version != "2" && t.code == 0),
            "curl with prior knowledge must fail on an HTTP/1.1-only listener: {t:?}\n{}",
            ran.describe(2000)
        );
        // What the listener actually answers to the preface.
        let mut c = s.connect(Role::Client, false);
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
        let res = c
            .request(preface)
            .unwrap_or_else(|e| panic!("no HTTP/1.1 answer to the h2 preface: {e:?}"));
        assert_eq!(res.status, 505, "{res:?}");
        s.origin
            .assert_untouched("h2 preface on an HTTP/1.1-only listener");

        let tls = s.proxy.client_tls().port();
        let (ran, t) = curl(
            dir.path(),
            tls,
            &s.pki,
            &[
                "--http2",
                "-o",
                "/dev/null",
                &format!("https://localhost:{tls}/_matrix/client/versions"),
            ],
        );
        let t = single(&ran, t, "curl --http2 to a TLS listener with http2 = false");
        assert_eq!((t.http_version.as_str(), t.code), ("1.1", 200), "{t:?}");
    });
}

/// Lines `recv (stream_id=N) :status: S` of `nghttp -v` output: (stream id, status).
fn nghttp_statuses(out: &str) -> Vec<(u32, u16)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.split("recv (stream_id=").nth(1)?;
            let (id, rest) = rest.split_once(')')?;
            let status = rest.trim().strip_prefix(":status: ")?;
            Some((id.parse().ok()?, status.trim().parse().ok()?))
        })
        .collect()
}

fn nghttp(dir: &Path, args: &[&str]) -> Ran {
    let mut cmd = tools::nghttp().command();
    cmd.args(["--timeout=60"]).args(args);
    external::run("nghttp", cmd, dir, CLIENT_TIMEOUT)
}

/// nghttp sends 40 requests on one connection (TLS with ALPN, and plain with prior
/// knowledge): all 200, one connection, 40 streams, 40 requests at the origin.
#[test]
fn nghttp_multiplexes_many_requests_on_one_connection() {
    const N: usize = 40;
    each_runtime(|rt| {
        let s = h2_scene(rt);
        let dir = workdir();
        for (scheme, addr) in [
            ("https", s.proxy.client_tls()),
            ("http", s.proxy.client_plain()),
        ] {
            let before = s.origin.requests().len();
            let uris: Vec<String> = (0..N)
                .map(|i| format!("{scheme}://{addr}/_matrix/client/v3/test/{i}?q=%20{i}"))
                .collect();
            let mut args = vec!["-nv"];
            args.extend(uris.iter().map(String::as_str));
            let ran = nghttp(dir.path(), &args);
            ran.expect_success(&format!("nghttp {scheme}"));
            let out = ran.stdout_text();
            let connected = out.lines().filter(|l| l.ends_with("] Connected")).count();
            assert_eq!(connected, 1, "one connection ({scheme})");
            if scheme == "https" {
                assert!(
                    out.lines()
                        .any(|l| l.trim() == "The negotiated protocol: h2"),
                    "{}",
                    ran.describe(3000)
                );
            }
            let statuses = nghttp_statuses(&out);
            assert_eq!(statuses.len(), N, "{scheme}: {statuses:?}");
            assert!(statuses.iter().all(|(_, st)| *st == 200), "{statuses:?}");
            let mut ids: Vec<u32> = statuses.iter().map(|(id, _)| *id).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), N, "{N} distinct streams: {ids:?}");
            let reqs = s.origin.wait_requests(before + N, Duration::from_secs(10));
            let mut targets: Vec<String> =
                reqs[before..].iter().map(|r| r.head.target_str()).collect();
            targets.sort();
            let mut want: Vec<String> = (0..N)
                .map(|i| format!("/_matrix/client/v3/test/{i}?q=%20{i}"))
                .collect();
            want.sort();
            assert_eq!(targets, want, "{scheme}: the origin got each request once");
            for r in &reqs[before..] {
                assert_eq!(
                    header_values(r, "host"),
                    [addr.to_string()],
                    "Host = :authority"
                );
            }
        }
    });
}

/// nghttp uploads 3 MiB (past the stream and connection windows) with `-d`: the origin gets
/// every byte, in order.
#[test]
fn nghttp_uploads_a_body_larger_than_the_windows() {
    each_runtime(|rt| {
        let s = h2_scene(rt);
        let dir = workdir();
        let size = 3 * MIB + 11;
        let payload = big_body(size);
        let file = dir.path().join("upload.bin");
        fs::write(&file, &payload).expect("write upload");
        let url = format!("https://{}/_matrix/test/echo-body", s.proxy.client_tls());
        let ran = nghttp(dir.path(), &["-d", file.to_str().unwrap(), &url]);
        ran.expect_success("nghttp -d");
        let answer: serde_json::Value = serde_json::from_slice(&ran.stdout)
            .unwrap_or_else(|e| panic!("echo JSON: {e}\n{}", ran.describe(2000)));
        assert_eq!(answer["len"], size as u64);
        assert_eq!(answer["sha256"], sha256_hex(&payload));
        let req = s.origin.single_request();
        assert_eq!(req.head.method, "POST");
        assert!(req.body_complete && req.body == payload);
    });
}

/// The numbers of h2load's `requests:` summary line, by label (`total`, `succeeded`, …).
fn h2load_counts(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .map(|l| {
            l.split(',')
                .filter_map(|part| {
                    let (n, label) = part.trim().split_once(' ')?;
                    Some((label.to_owned(), n.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// h2load: 2000 requests over 4 connections, 10 streams each in flight, all succeed, over
/// TLS (ALPN) and on the plain listener (prior knowledge). Not a performance test:
/// correctness under concurrency.
#[test]
fn h2load_2000_requests_all_succeed() {
    each_runtime(|rt| {
        let s = h2_scene(rt);
        let dir = workdir();
        let mut seen = 0;
        for (scheme, addr, protocol) in [
            ("https", s.proxy.client_tls(), "h2"),
            ("http", s.proxy.client_plain(), "h2c"),
        ] {
            let url = format!("{scheme}://{addr}/_matrix/client/versions?via={scheme}");
            let mut cmd = tools::h2load().command();
            cmd.args(["-n", "2000", "-c", "4", "-m", "10", "-T", "60", "-N", "60"])
                .arg(&url);
            let ran = external::run("h2load", cmd, dir.path(), CLIENT_TIMEOUT);
            ran.expect_success("h2load");
            let out = ran.stdout_text();
            println!("[{}] h2load {scheme}:\n{out}", rt.name);
            assert!(
                out.lines()
                    .any(|l| l.trim() == format!("Application protocol: {protocol}")),
                "{}",
                ran.describe(4000)
            );
            let counts = h2load_counts(&out);
            let get = |k: &str| counts.iter().find(|(l, _)| l == k).map(|(_, n)| *n);
            for (label, want) in [
                ("total", 2000),
                ("done", 2000),
                ("succeeded", 2000),
                ("failed", 0),
                ("errored", 0),
                ("timeout", 0),
            ] {
                assert_eq!(
                    get(label),
                    Some(want),
                    "{scheme}: requests {label}: {counts:?}\n{out}"
                );
            }
            assert!(out.contains("status codes: 2000 2xx"), "{out}");
            seen += 2000;
            let reqs = s.origin.wait_requests(seen, Duration::from_secs(10));
            assert_eq!(reqs.len(), seen, "{scheme}: the origin got every request");
            assert!(reqs[seen - 2000..]
                .iter()
                .all(|r| r.head.target_str() == format!("/_matrix/client/versions?via={scheme}")));
        }
    });
}

/// Large downloads pass the windows: 5 MiB with curl (hash-checked), 5 MiB with nghttp and
/// 64 KiB windows (many WINDOW_UPDATEs), three 2 MiB downloads at once on one connection.
#[test]
fn large_downloads_pass_flow_control() {
    each_runtime(|rt| {
        let s = h2_scene(rt);
        let dir = workdir();
        let port = s.proxy.client_tls().port();
        let size = 5 * MIB + 3;
        let url = format!("https://localhost:{port}/_matrix/test/big?bytes={size}");
        let out = dir.path().join("big.bin");
        let (ran, t) = curl(
            dir.path(),
            port,
            &s.pki,
            &["--http2", "-o", out.to_str().unwrap(), &url],
        );
        let t = single(&ran, t, "curl --http2 5 MiB");
        assert_eq!((t.http_version.as_str(), t.code), ("2", 200), "{t:?}");
        let got = fs::read(&out).expect("download");
        assert_eq!(got.len(), size);
        assert_eq!(sha256_hex(&got), sha256_hex(&big_body(size)), "5 MiB body");

        // nghttp's default windows are 64 KiB - 1 (stream and connection).
        let url = format!(
            "https://{}/_matrix/test/big?bytes={size}&n=1",
            s.proxy.client_tls()
        );
        let ran = nghttp(dir.path(), &[&url]);
        ran.expect_success("nghttp 5 MiB");
        assert_eq!(
            ran.stdout.len(),
            size,
            "nghttp got {} bytes",
            ran.stdout.len()
        );
        assert!(ran.stdout == big_body(size), "nghttp 5 MiB body differs");

        // Three at once on one connection.
        let each = 2 * MIB + 1;
        let files: Vec<_> = (0..3)
            .map(|i| dir.path().join(format!("p{i}.bin")))
            .collect();
        let mut args = vec![
            "--http2".to_owned(),
            "--parallel".to_owned(),
            "--parallel-max".to_owned(),
            "3".to_owned(),
        ];
        for (i, f) in files.iter().enumerate() {
            args.push("-o".into());
            args.push(f.display().to_string());
            args.push(format!(
                "https://localhost:{port}/_matrix/test/big?bytes={each}&p={i}"
            ));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ran, ts) = curl(dir.path(), port, &s.pki, &args);
        ran.expect_success("curl --parallel");
        assert_eq!(ts.len(), 3, "{}", ran.describe(2000));
        assert!(
            ts.iter()
                .all(|t| t.http_version == "2" && t.code == 200 && t.size == each as u64),
            "{ts:?}"
        );
        let connects: u32 = ts.iter().map(|t| t.connects).sum();
        assert_eq!(connects, 1, "three transfers on one connection: {ts:?}");
        let want = sha256_hex(&big_body(each));
        for f in &files {
            assert_eq!(sha256_hex(&fs::read(f).expect("part")), want, "{f:?}");
        }
    });
}

/// Prometheus counter values `name{listener="<listener>"…}`, summed.
fn metric_sum(text: &str, name: &str, listener: &str) -> u64 {
    let prefix = format!("{name}{{");
    let label = format!("listener=\"{listener}\"");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `GET /metrics` on the metrics listener (which may start accepting after the others).
fn metrics(port: u16) -> String {
    let addr = ([127, 0, 0, 1], port).into();
    assert!(
        wait_until(Duration::from_secs(10), || Client::try_plain(addr).is_ok()),
        "the metrics listener {addr} does not accept"
    );
    let res = Client::plain(addr)
        .request(&get("/metrics", "localhost"))
        .expect("GET /metrics");
    String::from_utf8_lossy(&res.body).into_owned()
}

/// Headless Chromium loads a page through mxgate whose script fires 60 `fetch()`es at once:
/// all succeed, and they and the page travel on ONE HTTP/2 connection, seen three ways:
/// Chromium's NetLog (one HTTP/2 session with ≥ 61 request streams, one TCP connection in
/// use: Chromium may race a second one and close it unused), the page's Resource Timing
/// (`nextHopProtocol` = `h2` for every fetch), and mxgate's metrics (as many accepted
/// connections as Chromium opened, ≥ 61 requests on the listener).
#[test]
fn chromium_fetches_60_in_parallel_on_one_h2_connection() {
    const N: usize = 60;
    let chromium = tools::chromium();
    each_runtime(|rt| {
        let metrics_port = free_ports(1)[0];
        let s = Scene::with(rt, |c| {
            c.listener_line(0, "name = \"browser\"").section(
                "runtime",
                &format!("metrics = \"127.0.0.1:{metrics_port}\""),
            )
        });
        let dir = workdir();
        let port = s.proxy.client_tls().port();
        let netlog = dir.path().join("netlog.json");
        // The harness's readiness probe connected once to each listener: wait until mxgate
        // has counted it, so that the difference below is Chromium's alone.
        let mut before = String::new();
        let probed = wait_until(Duration::from_secs(10), || {
            before = metrics(metrics_port);
            metric_sum(&before, "mxgate_connections_total", "browser") >= 1
        });
        assert!(
            probed,
            "the readiness probe's connection is never counted:\n{before}"
        );
        let mut cmd = Command::new(&chromium);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--ignore-certificate-errors",
            "--host-resolver-rules=MAP localhost 127.0.0.1",
            "--net-log-capture-mode=Default",
            "--virtual-time-budget=60000",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(format!("https://localhost:{port}/_matrix/test/page?n={N}"));
        let ran = external::run("chromium", cmd, dir.path(), CLIENT_TIMEOUT);
        let after = metrics(metrics_port);
        // Chromium's side.
        let log =
            NetLog::read(&netlog).unwrap_or_else(|e| panic!("NetLog: {e}\n{}", ran.describe(4000)));
        let connections = log.tcp_connections_to(&format!("127.0.0.1:{port}"));
        let sessions = log.h2_sessions(&format!("localhost:{port}"));
        println!(
            "[{}] Chromium NetLog: {} events; TCP connections to the proxy: {connections:?}; \
             HTTP/2 sessions: {}; streams per session: {:?}",
            rt.name,
            log.len(),
            sessions.len(),
            sessions.iter().map(|s| s.paths.len()).collect::<Vec<_>>()
        );
        let dom = ran.stdout_text();
        assert!(
            dom.contains(&format!("<title>done {N}/{N}</title>")),
            "every fetch must succeed; the page says:\n{}",
            ran.describe(6000)
        );
        let results: Vec<&str> = dom
            .split_once("<pre id=\"out\">")
            .and_then(|(_, rest)| rest.split_once("</pre>"))
            .map(|(out, _)| out.lines().collect())
            .unwrap_or_default();
        assert_eq!(results.len(), N, "{dom}");
        let not_h2: Vec<&&str> = results
            .iter()
            .filter(|l| !(l.starts_with("ok ") && l.ends_with(" 200 h2")))
            .collect();
        assert!(
            not_h2.is_empty(),
            "every fetch OK over h2 (Resource Timing nextHopProtocol); {} are not, e.g. {:?}",
            not_h2.len(),
            &not_h2[..not_h2.len().min(5)]
        );
        let done = s
            .origin
            .requests()
            .iter()
            .filter(|r| r.head.path() == "/_matrix/test/page-done")
            .map(|r| r.head.target_str())
            .collect::<Vec<_>>();
        assert_eq!(done, [format!("/_matrix/test/page-done?ok={N}&n={N}")]);

        assert_eq!(
            sessions.len(),
            1,
            "one HTTP/2 session to localhost:{port}; sessions in the log: {:?}",
            log.h2_session_hosts()
        );
        // Chromium may race a second connection while the first is set up, and close it
        // unused when the first turns out to be HTTP/2: one carries every request.
        let used: Vec<_> = connections.iter().filter(|c| c.used).collect();
        assert_eq!(used.len(), 1, "one TCP connection in use: {connections:?}");
        let session = &sessions[0];
        assert!(session.paths.len() > N, "{:?}", session.paths);
        for i in 0..N {
            let path = format!("/_matrix/test/item?i={i}");
            assert!(
                session.paths.contains(&path),
                "{path} not on the session: {:?}",
                session.paths
            );
        }
        assert!(session.paths.contains(&format!("/_matrix/test/page?n={N}")));

        // mxgate's side.
        let accepted = metric_sum(&after, "mxgate_connections_total", "browser")
            - metric_sum(&before, "mxgate_connections_total", "browser");
        let requests = metric_sum(&after, "mxgate_requests_total", "browser")
            - metric_sum(&before, "mxgate_requests_total", "browser");
        println!(
            "[{}] mxgate metrics for the browser: {accepted} connection(s), {requests} request(s)",
            rt.name
        );
        assert_eq!(
            accepted,
            connections.len() as u64,
            "mxgate accepted as many connections as Chromium opened ({connections:?}):\n{after}"
        );
        assert!(
            requests > N as u64,
            "mxgate counted {requests} requests:\n{after}"
        );
    });
}
