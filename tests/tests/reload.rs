//! Live reload (SIGHUP, and `mxgate reload`): a new configuration takes over new
//! connections and the next request of keep-alive ones, while exchanges in flight — a
//! `/sync`-style long-poll the origin holds for 30 s, an 8 MiB upload sent slowly across the reload, a
//! long-poll on a listener the reload removes — finish on the old one, and a client load
//! running across the reload (two keep-alive clients, two opening a connection per
//! request) loses nothing. A broken file changes nothing and is logged with
//! file:line:key; an unchanged file moves no connection.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mxgate_e2e::proxy::run_command;
use mxgate_e2e::*;

/// Waits until the proxy's log holds `needle` `n` times.
fn wait_log(proxy: &Proxy, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = proxy.log();
        if log.matches(needle).count() >= n {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "[{}] no {needle:?} (x{n}) in the log:\n{}",
            proxy.runtime,
            proxy.log_tail(40)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Requests for the media API the worker origin got (its health probes aside).
fn media_requests(media: &Origin) -> usize {
    let requests = media.requests();
    requests
        .iter()
        .filter(|r| r.head.path().starts_with("/_matrix/media/"))
        .count()
}

/// A bounded client load on one listener: two clients on keep-alive connections and two
/// opening a connection per request, every answer checked.
struct Load {
    running: Arc<AtomicBool>,
    clients: Vec<thread::JoinHandle<(usize, Vec<String>)>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr) -> Load {
        let running = Arc::new(AtomicBool::new(true));
        let clients = (0..4)
            .map(|i| {
                let running = running.clone();
                thread::spawn(move || {
                    let (mut answered, mut lost) = (0, Vec::new());
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let mut kept: Option<Client> = None;
                    while running.load(Ordering::SeqCst) && Instant::now() < deadline {
                        let keep_alive = i < 2;
                        let client = match kept.take() {
                            Some(c) => Ok(c),
                            None => Client::try_plain(addr),
                        };
                        let result =
                            client
                                .map_err(|e| format!("connect: {e}"))
                                .and_then(|mut c| {
                                    let request = if keep_alive {
                                        get("/_matrix/client/versions", "localhost")
                                    } else {
                                        request(
                                            "GET",
                                            "/_matrix/client/versions",
                                            "localhost",
                                            &["Connection: close"],
                                        )
                                    };
                                    let res = c.request(&request).map_err(|e| format!("{e:?}"))?;
                                    if keep_alive {
                                        kept = Some(c);
                                    }
                                    Ok(res.status)
                                });
                        match result {
                            Ok(200) => answered += 1,
                            Ok(status) => lost.push(format!("status {status}")),
                            Err(e) => lost.push(e),
                        }
                    }
                    (answered, lost)
                })
            })
            .collect();
        Load { running, clients }
    }

    /// Stops the load: requests answered, and what went wrong.
    fn stop(self) -> (usize, Vec<String>) {
        self.running.store(false, Ordering::SeqCst);
        let (mut answered, mut lost) = (0, Vec::new());
        for c in self.clients {
            let (a, l) = c.join().unwrap();
            answered += a;
            lost.extend(l);
        }
        (answered, lost)
    }
}

fn put(target: &str, len: usize) -> Vec<u8> {
    format!("PUT {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}\r\n\r\n")
        .into_bytes()
}

#[test]
fn reload_applies_a_new_config_without_disturbing_exchanges_in_flight() {
    each_runtime(|rt| {
        let media = Origin::start();
        let s = Scene::start(rt);
        let config = fs::read_to_string(&s.proxy.config_path).unwrap();
        let federation_plain = s.proxy.federation_plain();

        // In flight across the reload.
        // Held 30 s by the origin, like `/sync?timeout=30000`.
        let mut long_poll = s.connect(Role::Client, false);
        long_poll.timeout = Duration::from_secs(60);
        long_poll
            .send(&get("/_matrix/test/slow?ms=30000", "localhost"))
            .unwrap();
        let mut on_removed = Client::plain(federation_plain);
        on_removed.timeout = Duration::from_secs(60);
        on_removed
            .send(&get("/_matrix/test/slow?ms=30000", "localhost"))
            .unwrap();
        const UPLOAD: usize = 8 << 20;
        let body = origin::big_body(UPLOAD);
        let mut upload = s.connect(Role::Client, false);
        upload.timeout = Duration::from_secs(20);
        upload
            .send(&put("/_matrix/test/echo-body", UPLOAD))
            .unwrap();
        upload.send(&body[..UPLOAD / 2]).unwrap();
        // An idle keep-alive connection, used before and after.
        let mut idle = s.connect(Role::Client, false);
        let before = idle
            .request(&get("/_matrix/media/v3/config", "localhost"))
            .unwrap();
        assert_eq!(before.status, 200);
        s.origin.wait_requests(4, Duration::from_secs(5));

        // The reload: a worker pool added, the plain federation listener removed, the body
        // limit lowered to 1 MiB.
        let federation_plain_block = format!(
            "\n[[listeners]]\nrole = \"federation\"\nbind = [\"{federation_plain}\"]\ntls = false\n"
        );
        assert!(config.contains(&federation_plain_block), "{config}");
        let reloaded = config.replace(&federation_plain_block, "")
            + &format!(
                "\n[workers.media_repository]\nbackends = [\"{}\"]\n\n[limits]\nmax_body = \"1MiB\"\n",
                media.url()
            );
        fs::write(&s.proxy.config_path, &reloaded).unwrap();
        let load = Load::start(s.proxy.client_plain());
        thread::sleep(Duration::from_millis(300));
        s.proxy.signal(libc::SIGHUP);
        wait_log(&s.proxy, "configuration reloaded", 1);
        thread::sleep(Duration::from_millis(300));
        let (answered, lost) = load.stop();
        eprintln!(
            "[{}] load across the reload: {answered} requests answered (2 keep-alive and 2 connection-per-request clients), {} lost: {lost:?}",
            rt.name,
            lost.len()
        );
        assert!(
            answered > 0 && lost.is_empty(),
            "lost across the reload: {lost:?}"
        );

        // The rest of the upload, then every exchange in flight completes on the old config.
        upload.send(&body[UPLOAD / 2..]).unwrap();
        let res = upload.read_response().expect("the upload's response");
        assert_eq!(
            res.status, 200,
            "8 MiB upload begun before the reload: {res:?}"
        );
        assert_eq!(res.json()["len"], UPLOAD, "{res:?}");
        assert_eq!(res.json()["sha256"], sha256_hex(&body));
        let res = long_poll.read_response().expect("the long-poll's response");
        assert_eq!(res.status, 200, "{res:?}");
        let res = on_removed
            .read_response()
            .expect("the long-poll on the removed listener");
        assert_eq!(res.status, 200, "{res:?}");
        assert!(
            on_removed.closed_within(Duration::from_secs(3)),
            "a connection of a removed listener is closed once its exchange is over"
        );
        assert!(
            std::net::TcpStream::connect_timeout(&federation_plain, Duration::from_secs(1))
                .is_err(),
            "the removed listener's socket is closed"
        );

        // New requests follow the new configuration, on the kept keep-alive connection too.
        let res = idle
            .request(&get("/_matrix/media/v3/config", "localhost"))
            .unwrap();
        assert_eq!(res.status, 200);
        assert_eq!(
            media_requests(&media),
            1,
            "the idle connection's next request"
        );
        let res = s.exchange(
            Role::Client,
            false,
            &get("/_matrix/media/v3/config", "localhost"),
        );
        assert_eq!(res.status, 200);
        assert_eq!(media_requests(&media), 2, "a new connection's request");
        let mut big = s.connect(Role::Client, false);
        let res = big.request(&put("/_matrix/client/v3/x", 2 << 20)).unwrap();
        assert_eq!(res.status, 413, "the new 1 MiB limit: {res:?}");

        // A broken file: logged with file:line and key, and nothing changes.
        let broken = reloaded.replace("max_body = \"1MiB\"", "max_bdy = \"1MiB\"");
        fs::write(&s.proxy.config_path, &broken).unwrap();
        s.proxy.signal(libc::SIGHUP);
        let log = wait_log(&s.proxy, "still serving the previous configuration", 1);
        let line = broken
            .lines()
            .position(|l| l.starts_with("max_bdy"))
            .unwrap()
            + 1;
        let at = format!("{}:{line}:", s.proxy.config_path.display());
        assert!(log.contains(&at) && log.contains("max_bdy"), "{log}");
        let res = idle
            .request(&get("/_matrix/media/v3/config", "localhost"))
            .unwrap();
        assert_eq!(res.status, 200);
        assert_eq!(media_requests(&media), 3, "still the reloaded routes");
        let mut big = s.connect(Role::Client, false);
        let res = big.request(&put("/_matrix/client/v3/x", 2 << 20)).unwrap();
        assert_eq!(res.status, 413, "still the reloaded limit");
        // `mxgate reload` refuses it too, and signals nothing.
        let path = s.proxy.config_path.display().to_string();
        let pid = s.proxy.pid().to_string();
        let out = run_command(
            rt,
            &["reload", "--config", &path, "--pid", &pid],
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        assert!(out.stderr.contains(&at), "{}", out.stderr);

        // An unchanged file (through `mxgate reload`): no connection moves.
        fs::write(&s.proxy.config_path, &reloaded).unwrap();
        let via_main = idle
            .request(&get("/_matrix/client/versions", "localhost"))
            .unwrap();
        let out = run_command(
            rt,
            &["reload", "--config", &path, "--pid", &pid],
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
        wait_log(&s.proxy, "configuration unchanged", 1);
        let after = idle
            .request(&get("/_matrix/client/versions", "localhost"))
            .unwrap();
        assert_eq!(after.status, 200);
        assert_eq!(
            after.header("x-origin-conn"),
            via_main.header("x-origin-conn"),
            "the same upstream connection serves the keep-alive client after the reload"
        );
        assert!(
            !s.proxy.log().contains("generation=2"),
            "the unchanged reload installed no new generation"
        );
    });
}
