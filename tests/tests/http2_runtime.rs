//! HTTP/2 to clients through each runtime, driven by curl (nghttp2): prior knowledge on a
//! plain listener with `http2 = true` and ALPN `h2` over TLS (on by default there); many
//! streams on one connection, a long-poll not holding up the others, large bodies both
//! ways, and a client going away freeing its upstream connection.

use std::fs;
use std::process::{Child, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use mxgate_e2e::origin::big_body;
use mxgate_e2e::tools::{debian_tool, Tool};
use mxgate_e2e::*;

/// The longest any curl run here may take.
const CURL_LIMIT: Duration = Duration::from_secs(60);

fn curl() -> Tool {
    debian_tool("curl", "curl", &["--version"]).unwrap_or_else(|e| {
        panic!("curl is needed: apt-get install -y curl ({e})");
    })
}

/// The default scene with prior knowledge allowed on the plain client listener.
fn scene(rt: &Runtime) -> Scene {
    Scene::with(rt, |c| c.listener_line(1, "http2 = true"))
}

fn plain_url(s: &Scene, path: &str) -> String {
    format!("http://{}{path}", s.proxy.client_plain())
}

/// `https://localhost:<port><path>` on the TLS client listener.
fn tls_url(s: &Scene, path: &str) -> String {
    format!("https://localhost:{}{path}", s.proxy.client_tls().port())
}

/// curl arguments for HTTP/2 over TLS (ALPN) to the TLS client listener, trusting the
/// test CA.
fn tls_args(s: &Scene) -> Vec<String> {
    let port = s.proxy.client_tls().port();
    vec![
        "--http2".into(),
        "--cacert".into(),
        s.pki.dir().join("ca.pem").display().to_string(),
        "--resolve".into(),
        format!("localhost:{port}:127.0.0.1"),
    ]
}

/// Many transfers in parallel on one connection, each printing a [`PER_TRANSFER`] line.
/// Over TLS: curl 7.88 (Debian 12) fails every transfer but the first that reuses a
/// prior-knowledge connection ("Error in the HTTP2 framing layer", curl/curl#10634, fixed
/// in 8.0), so multiplexing is exercised over ALPN.
fn parallel_args(s: &Scene) -> Vec<String> {
    let mut args = tls_args(s);
    args.extend(
        ["--parallel", "--parallel-max", "20", "-w", PER_TRANSFER]
            .iter()
            .map(|a| a.to_string()),
    );
    args
}

/// Runs curl with `args`, killing it past [`CURL_LIMIT`]; its output.
fn run_curl(args: &[String]) -> Output {
    let child = start_curl(args);
    wait_curl(child, CURL_LIMIT)
}

fn start_curl(args: &[String]) -> Child {
    let mut cmd = curl().command();
    cmd.arg("--silent")
        .arg("--show-error")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("start curl")
}

fn wait_curl(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait for curl").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("curl output");
            panic!(
                "curl did not finish within {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("curl output")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "curl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One line per transfer: `<url> <status> <http version> <new connections> <seconds>`.
const PER_TRANSFER: &str = "%{url} %{http_code} %{http_version} %{num_connects} %{time_total}\\n";

struct Transfer {
    url: String,
    status: u16,
    version: String,
    connects: u32,
    seconds: f64,
}

fn transfers(text: &str) -> Vec<Transfer> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "curl -w line: {l:?}");
            Transfer {
                url: f[0].to_string(),
                status: f[1].parse().expect("status"),
                version: f[2].to_string(),
                connects: f[3].parse().expect("num_connects"),
                seconds: f[4].parse().expect("time_total"),
            }
        })
        .collect()
}

/// A GET over prior knowledge (plain listener) and over ALPN `h2` (TLS listener) is
/// answered 200 over HTTP/2, through the origin.
#[test]
fn get_over_prior_knowledge_and_alpn() {
    each_runtime(|rt| {
        let s = scene(rt);
        let out = run_curl(&[
            "--http2-prior-knowledge".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            PER_TRANSFER.into(),
            plain_url(&s, "/_matrix/client/versions?via=h2c"),
        ]);
        let t = transfers(&stdout(&out));
        assert_eq!(
            (t[0].status, t[0].version.as_str()),
            (200, "2"),
            "prior knowledge"
        );

        let tls = s.proxy.client_tls();
        let ca = s.pki.dir().join("ca.pem");
        let out = run_curl(&[
            "--http2".into(),
            "--cacert".into(),
            ca.display().to_string(),
            "--resolve".into(),
            format!("localhost:{}:127.0.0.1", tls.port()),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            PER_TRANSFER.into(),
            format!(
                "https://localhost:{}/_matrix/client/versions?via=alpn",
                tls.port()
            ),
        ]);
        let t = transfers(&stdout(&out));
        assert_eq!((t[0].status, t[0].version.as_str()), (200, "2"), "ALPN h2");

        let seen = s.origin.wait_requests(2, Duration::from_secs(5));
        let targets: Vec<String> = seen
            .iter()
            .map(|r| String::from_utf8_lossy(&r.head.target).into_owned())
            .collect();
        for via in ["via=h2c", "via=alpn"] {
            assert!(
                targets.iter().any(|t| t.ends_with(via)),
                "origin saw {targets:?}, not the {via} request"
            );
        }
    });
}

/// A plain listener without `http2` keeps speaking HTTP/1.1 only: prior knowledge fails
/// there, and HTTP/1.1 still works on the one with it.
#[test]
fn http1_unchanged_beside_prior_knowledge() {
    each_runtime(|rt| {
        let s = scene(rt);
        let res = s.exchange(
            Role::Client,
            false,
            &get("/_matrix/client/versions", "localhost"),
        );
        assert_eq!(
            res.status, 200,
            "HTTP/1.1 on the listener with http2 = true: {res:?}"
        );
        let federation_plain = s.proxy.federation_plain();
        let out = run_curl(&[
            "--http2-prior-knowledge".into(),
            "-o".into(),
            "/dev/null".into(),
            format!("http://{federation_plain}/_matrix/federation/v1/version"),
        ]);
        assert!(
            !out.status.success(),
            "prior knowledge on a plain listener without http2 must not be answered"
        );
    });
}

/// 20 requests sent at once go as 20 streams on one connection, and the origin sees them
/// all.
#[test]
fn twenty_streams_on_one_connection() {
    each_runtime(|rt| {
        let s = scene(rt);
        let mut args = parallel_args(&s);
        for i in 0..20 {
            args.push(tls_url(&s, &format!("/_matrix/test/slow?ms=300&n={i}")));
            args.push("-o".into());
            args.push("/dev/null".into());
        }
        let text = stdout(&run_curl(&args));
        let t = transfers(&text);
        assert_eq!(t.len(), 20, "{text}");
        assert!(
            t.iter().all(|t| t.status == 200 && t.version == "2"),
            "{text}"
        );
        let connects: u32 = t.iter().map(|t| t.connects).sum();
        assert_eq!(connects, 1, "all 20 on one connection");
        let seen = s.origin.wait_requests(20, Duration::from_secs(5));
        for i in 0..20 {
            let n = format!("n={i}");
            assert!(
                seen.iter().any(|r| r.head.target.ends_with(n.as_bytes())),
                "origin never saw request {i}"
            );
        }
    });
}

/// A long-poll on one stream does not hold up the others on the same connection: 10
/// quick requests sent after it all finish while it still waits.
#[test]
fn long_poll_does_not_hold_up_other_streams() {
    each_runtime(|rt| {
        let s = scene(rt);
        let mut args = parallel_args(&s);
        args.push(tls_url(&s, "/_matrix/test/slow?ms=4000&poll=1"));
        args.extend(["-o".into(), "/dev/null".into()]);
        for i in 0..10 {
            args.push(tls_url(&s, &format!("/_matrix/client/versions?quick={i}")));
            args.extend(["-o".into(), "/dev/null".into()]);
        }
        let text = stdout(&run_curl(&args));
        let t = transfers(&text);
        assert_eq!(t.len(), 11, "{text}");
        assert!(
            t.iter().all(|t| t.status == 200 && t.version == "2"),
            "{text}"
        );
        assert_eq!(t.iter().map(|t| t.connects).sum::<u32>(), 1);
        let poll = t.iter().find(|t| t.url.contains("poll=1")).expect("poll");
        assert!(poll.seconds >= 3.9, "the long-poll took {} s", poll.seconds);
        for quick in t.iter().filter(|t| t.url.contains("quick=")) {
            assert!(
                quick.seconds < poll.seconds - 2.0,
                "{} took {} s, the long-poll {} s: held up by it",
                quick.url,
                quick.seconds,
                poll.seconds
            );
        }
    });
}

/// A 5 MiB upload and a 5 MiB download pass whole over HTTP/2 (flow control both ways).
#[test]
fn five_mib_each_way() {
    const SIZE: usize = 5 * 1024 * 1024;
    each_runtime(|rt| {
        let s = scene(rt);
        let dir = tempfile::tempdir().expect("temp dir");
        let upload = dir.path().join("upload.bin");
        let body = big_body(SIZE);
        fs::write(&upload, &body).expect("write upload");
        let out = run_curl(&[
            "--http2-prior-knowledge".into(),
            "--data-binary".into(),
            format!("@{}", upload.display()),
            "-H".into(),
            "Content-Type: application/octet-stream".into(),
            plain_url(&s, "/_matrix/test/echo-body"),
        ]);
        let answer: serde_json::Value =
            serde_json::from_str(&stdout(&out)).expect("echo-body answers JSON");
        assert_eq!(answer["len"], SIZE as u64, "upload length: {answer}");
        assert_eq!(answer["sha256"], sha256_hex(&body), "upload hash");

        let download = dir.path().join("download.bin");
        let out = run_curl(&[
            "--http2-prior-knowledge".into(),
            "-o".into(),
            download.display().to_string(),
            "-w".into(),
            PER_TRANSFER.into(),
            plain_url(&s, &format!("/_matrix/test/big?bytes={SIZE}")),
        ]);
        let t = transfers(&stdout(&out));
        assert_eq!((t[0].status, t[0].version.as_str()), (200, "2"));
        let got = fs::read(&download).expect("read download");
        assert_eq!(got.len(), SIZE, "download length");
        assert_eq!(sha256_hex(&got), sha256_hex(&body), "download hash");
    });
}

/// A client that goes away in the middle of a large response frees the upstream
/// connection: the origin's write fails instead of waiting forever.
#[test]
fn client_gone_mid_response_frees_the_upstream() {
    each_runtime(|rt| {
        let s = scene(rt);
        let child = start_curl(&[
            "--http2-prior-knowledge".into(),
            "--limit-rate".into(),
            "64K".into(),
            "-o".into(),
            "/dev/null".into(),
            plain_url(&s, "/_matrix/test/big?bytes=104857600"),
        ]);
        let started = s.origin.wait_requests(1, Duration::from_secs(10));
        assert_eq!(started.len(), 1, "the download never reached the origin");
        thread::sleep(Duration::from_millis(500));
        let mut child = child;
        child.kill().expect("kill curl");
        let _ = child.wait();
        let freed = wait_until(Duration::from_secs(10), || s.origin.cut_responses() == 1);
        assert!(
            freed,
            "the upstream connection stayed open after the client went away"
        );
        // The proxy still serves.
        let out = run_curl(&[
            "--http2-prior-knowledge".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            PER_TRANSFER.into(),
            plain_url(&s, "/_matrix/client/versions"),
        ]);
        assert_eq!(transfers(&stdout(&out))[0].status, 200);
    });
}

/// SIGTERM while streams are in flight on an HTTP/2 connection: the session's GOAWAY lets
/// them finish (both answers arrive whole), then the process exits 0.
#[test]
fn graceful_shutdown_finishes_the_streams_in_flight() {
    each_runtime(|rt| {
        let mut s = scene(rt);
        let mut args = parallel_args(&s);
        for i in 0..2 {
            args.push(tls_url(&s, &format!("/_matrix/test/slow?ms=1500&n={i}")));
            args.extend(["-o".into(), "/dev/null".into()]);
        }
        let child = start_curl(&args);
        let seen = s.origin.wait_requests(2, Duration::from_secs(10));
        assert_eq!(seen.len(), 2, "the slow requests did not reach the origin");
        s.proxy.signal(libc::SIGTERM);
        let text = stdout(&wait_curl(child, CURL_LIMIT));
        let t = transfers(&text);
        assert_eq!(t.len(), 2, "{text}");
        assert!(
            t.iter().all(|t| t.status == 200 && t.version == "2"),
            "{text}"
        );
        let status = s.proxy.wait_exit(Duration::from_secs(10));
        assert!(
            status.is_some(),
            "the proxy did not exit within 10 s of finishing its last stream"
        );
        assert_eq!(status.unwrap().code(), Some(0), "exit status {status:?}");
    });
}
