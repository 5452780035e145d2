//! The process: graceful shutdown, and `mxgate check`.

use std::fs;
use std::time::Duration;

use mxgate_e2e::proxy::run_command;
use mxgate_e2e::*;

/// SIGTERM while a request is in flight: the response still arrives whole, then the process
/// exits 0.
#[test]
fn graceful_shutdown_finishes_the_request_in_flight() {
    each_runtime(|rt| {
        let mut s = Scene::start(rt);
        let mut c = s.connect(Role::Client, false);
        c.timeout = Duration::from_secs(6);
        c.send(&get("/_matrix/test/slow?ms=1500", "localhost"))
            .unwrap();
        let reqs = s.origin.wait_requests(1, Duration::from_secs(3));
        assert_eq!(reqs.len(), 1, "the slow request did not reach the origin");
        s.proxy.signal(libc::SIGTERM);
        let res = c.read_response().unwrap_or_else(|e| {
            panic!("the in-flight response did not arrive after SIGTERM: {e:?}")
        });
        assert_eq!(res.status, 200, "{res:?}");
        assert_eq!(res.json()["origin"], "ok");
        let status = s.proxy.wait_exit(Duration::from_secs(5));
        assert!(
            status.is_some(),
            "the proxy did not exit within 5 s of finishing its last request"
        );
        assert_eq!(status.unwrap().code(), Some(0), "exit status {status:?}");
    });
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

/// `check` on a broken file exits 1 and names `file:line:col` and the key.
#[test]
fn check_reports_file_line_column_and_key() {
    each_runtime(|rt| {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "limits.max_body",
                "server_name = \"example.com\"\nhomeserver = \"http://127.0.0.1:8008\"\n\n[[listeners]]\nrole = \"client\"\nbind = [\"127.0.0.1:8080\"]\ntls = false\n\n[limits]\nmax_body = \"lots\"\n",
                "max_body",
            ),
            (
                "timeouts.upstream_response",
                "server_name = \"example.com\"\nhomeserver = \"http://127.0.0.1:8008\"\n\n[[listeners]]\nrole = \"client\"\nbind = [\"127.0.0.1:8080\"]\ntls = false\n\n[timeouts]\nupstream_response = -3\n",
                "upstream_response",
            ),
        ];
        for (key, text, needle) in cases {
            let path = dir.path().join("bad.toml");
            fs::write(&path, text).unwrap();
            let out = run_command(
                rt,
                &["check", "--config", path.to_str().unwrap()],
                Duration::from_secs(10),
            );
            let all = format!("{}{}", out.stdout, out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "exit code for a bad {key}; output:\n{all}"
            );
            let line = line_of(text, needle);
            let want = format!("{}:{line}:", path.display());
            let at = all.find(&want).unwrap_or_else(|| {
                panic!("the error must name {want}<col> for a bad {key}; output:\n{all}")
            });
            let col: String = all[at + want.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            assert!(!col.is_empty(), "no column after {want}; output:\n{all}");
            assert!(
                all.contains(key),
                "the error must name the key {key}; output:\n{all}"
            );
        }
    });
}

/// `check` on the five-line short form prints the derived explicit configuration (both
/// listeners, the routes, the homeserver pool), which `check` accepts in turn.
#[test]
fn check_prints_the_derived_config_of_the_short_form() {
    each_runtime(|rt| {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.toml");
        fs::write(
            &short,
            format!(
                "server_name = \"example.com\"\npublic_url  = \"https://matrix.example.com\"\nhomeserver  = \"http://127.0.0.1:8008\"\n[tls]\ncert = \"{}\"\nkey  = \"{}\"\n",
                pki.server.cert.display(),
                pki.server.key.display()
            ),
        )
        .unwrap();
        let out = run_command(
            rt,
            &["check", "--config", short.to_str().unwrap()],
            Duration::from_secs(10),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "check on the short form:\n{}{}",
            out.stdout,
            out.stderr
        );
        let rendered = out.stdout;
        for needle in [
            "[[listeners]]",
            "client",
            "federation",
            ":443",
            ":8448",
            "/_matrix",
            "/_synapse/client",
            "127.0.0.1",
            "8008",
            "matrix.example.com",
        ] {
            assert!(
                rendered.contains(needle),
                "derived config lacks {needle:?}:\n{rendered}"
            );
        }
        let explicit = dir.path().join("explicit.toml");
        fs::write(&explicit, &rendered).unwrap();
        let again = run_command(
            rt,
            &["check", "--config", explicit.to_str().unwrap()],
            Duration::from_secs(10),
        );
        assert_eq!(
            again.status.code(),
            Some(0),
            "the printed config must be accepted by check:\n{}{}\n--- printed:\n{rendered}",
            again.stdout,
            again.stderr
        );
        assert_eq!(
            again.stdout, rendered,
            "rendering the rendered config changes it"
        );
    });
}
