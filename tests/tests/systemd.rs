//! The service manager's side, played by the test: it binds the listening sockets and
//! passes them as systemd does (descriptors from 3, `LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`), and a Unix datagram socket stands in for `NOTIFY_SOCKET`.
//!
//! - Socket activation: a connection made before mxgate even runs waits in the kernel's
//!   queue and is answered; sockets are matched to listeners by name and by address;
//!   `READY=1` (with `STATUS=`), `RELOADING=1` with `MONOTONIC_USEC` then `READY=1` around
//!   a reload, `STOPPING=1` on SIGTERM.
//! - An upgrade: a second mxgate takes over the same sockets while the first drains, with
//!   a bounded client load running across it; every connection attempt is counted, and
//!   none may be refused, reset or left unanswered.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mxgate_e2e::*;

/// A Unix datagram socket standing in for systemd's notification socket.
struct NotifySocket {
    path: PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl NotifySocket {
    fn bind(path: PathBuf) -> NotifySocket {
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, halt) = (messages.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !halt.load(Ordering::SeqCst) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    seen.lock().unwrap().push(text);
                }
            }
        });
        NotifySocket {
            path,
            messages,
            stop,
        }
    }

    /// Waits (bounded) for the `n`-th message containing `needle`; returns it.
    fn wait(&self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<String> = self
                .messages
                .lock()
                .unwrap()
                .iter()
                .filter(|m| m.lines().any(|l| l == needle || l.starts_with(needle)))
                .cloned()
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (x{n}) from mxgate; got {:?}",
                self.messages.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// mxgate started as systemd starts a socket-activated service.
struct Activated {
    child: Child,
    log: PathBuf,
    name: String,
}

impl Activated {
    /// Runs `rt` on `config` with `sockets` passed as descriptors 3, 4, … under `names`.
    fn start(
        rt: &Runtime,
        config: &Path,
        sockets: &[(&str, &TcpListener)],
        notify: &Path,
        log: PathBuf,
    ) -> Activated {
        // Copies above the range they are moved into, so that moving one cannot clobber
        // another; closed in the parent once the child has its own.
        let copies: Vec<i32> = sockets
            .iter()
            // SAFETY: duplicating a descriptor we own; the copy is closed below.
            .map(|(_, s)| unsafe { libc::fcntl(s.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) })
            .collect();
        assert!(
            copies.iter().all(|&fd| fd >= 100),
            "cannot copy the sockets"
        );
        let names: Vec<&str> = sockets.iter().map(|(n, _)| *n).collect();
        let out = File::create(&log).unwrap();
        let mut cmd = Command::new("sh");
        // LISTEN_PID must be the service's own pid: `exec` keeps the shell's.
        cmd.arg("-c")
            .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
            .arg(&rt.bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("LISTEN_FDS", sockets.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env("NOTIFY_SOCKET", notify)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        let moves = copies.clone();
        // SAFETY: only dup2(2) between fork and exec (async-signal-safe); dup2 clears
        // close-on-exec on the target.
        unsafe {
            cmd.pre_exec(move || {
                for (i, &fd) in moves.iter().enumerate() {
                    if libc::dup2(fd, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start mxgate");
        for fd in copies {
            // SAFETY: our own copy, not used after this.
            unsafe { libc::close(fd) };
        }
        Activated {
            child,
            log,
            name: rt.name.clone(),
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
            if !self.wait_exit(Duration::from_secs(5)) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if thread::panicking() {
            eprintln!("--- [{}] log:\n{}\n---", self.name, self.log());
        }
    }
}

fn listen() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind")
}

const VERSIONS: &[u8] =
    b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/// Sends one request on a new connection and reads the whole response.
fn one_request(addr: SocketAddr) -> Result<String, std::io::Error> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(VERSIONS)?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

#[test]
fn socket_activation_and_notifications() {
    each_runtime(|rt| {
        let origin = Origin::start();
        let dir = tempfile::tempdir().unwrap();
        let (web, fed) = (listen(), listen());
        let (web_addr, fed_addr) = (web.local_addr().unwrap(), fed.local_addr().unwrap());
        // `web` is configured on another port: it gets its socket by name. `fed` gets its
        // socket by address, passed under the socket unit's name.
        let elsewhere = proxy::dead_port();
        let config = dir.path().join("mxgate.toml");
        let text = format!(
            "server_name = \"localhost\"\nhomeserver = \"{}\"\n\
             [[listeners]]\nname = \"web\"\nrole = \"client\"\nbind = [\"127.0.0.1:{elsewhere}\"]\ntls = false\n\
             [[listeners]]\nname = \"fed\"\nrole = \"federation\"\nbind = [\"{fed_addr}\"]\ntls = false\n",
            origin.url()
        );
        fs::write(&config, &text).unwrap();
        let notify = NotifySocket::bind(dir.path().join("notify"));

        // A client before mxgate runs: it waits in the kernel's queue.
        let early = thread::spawn(move || one_request(web_addr));
        thread::sleep(Duration::from_millis(200));
        let sockets = [("web", &web), ("mxgate.socket", &fed)];
        let mut mxgate =
            Activated::start(rt, &config, &sockets, &notify.path, dir.path().join("log"));
        let ready = notify.wait("READY=1", 1);
        assert!(ready.contains("STATUS="), "{ready:?}");
        assert!(ready.contains("client connections open"), "{ready:?}");
        let response = early
            .join()
            .unwrap()
            .expect("the queued connection is answered");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let response = one_request(fed_addr).expect("the federation socket, by address");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], elsewhere)),
                Duration::from_secs(1)
            )
            .is_err(),
            "nothing is bound on the configured address: the passed socket is used instead"
        );

        // A reload: RELOADING=1 with the monotonic time, then READY=1 again.
        mxgate.signal(libc::SIGHUP);
        let reloading = notify.wait("RELOADING=1", 1);
        let usec = reloading
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"));
        assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{reloading:?}");
        notify.wait("READY=1", 2);

        mxgate.signal(libc::SIGTERM);
        let stopping = notify.wait("STOPPING=1", 1);
        assert!(stopping.contains("STATUS=draining"), "{stopping:?}");
        assert!(
            mxgate.wait_exit(Duration::from_secs(10)),
            "mxgate did not exit"
        );
    });
}

/// Outcomes of the client load, counted per connection attempt.
#[derive(Default)]
struct Load {
    ok: AtomicUsize,
    refused: AtomicUsize,
    reset: AtomicUsize,
    /// Closed without a whole `200` response, or any other failure.
    failed: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Load {
    fn run(&self, addr: SocketAddr) {
        match one_request(addr) {
            Ok(r) if r.starts_with("HTTP/1.1 200") && r.ends_with('}') => {
                self.ok.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                self.errors.lock().unwrap().push(format!("response: {r:?}"));
            }
            Err(e) => {
                let counter = match e.kind() {
                    ErrorKind::ConnectionRefused => &self.refused,
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => &self.reset,
                    _ => &self.failed,
                };
                counter.fetch_add(1, Ordering::SeqCst);
                self.errors.lock().unwrap().push(e.to_string());
            }
        }
    }
}

#[test]
fn an_upgrade_takes_over_the_sockets_without_refusing_or_resetting_a_connection() {
    each_runtime(|rt| {
        let origin = Origin::start();
        let dir = tempfile::tempdir().unwrap();
        let web = listen();
        let addr = web.local_addr().unwrap();
        let config = dir.path().join("mxgate.toml");
        fs::write(
            &config,
            format!(
                "server_name = \"localhost\"\nhomeserver = \"{}\"\n\
                 [[listeners]]\nname = \"web\"\nrole = \"client\"\nbind = [\"{addr}\"]\ntls = false\n",
                origin.url()
            ),
        )
        .unwrap();
        let notify_old = NotifySocket::bind(dir.path().join("notify-old"));
        let notify_new = NotifySocket::bind(dir.path().join("notify-new"));
        let sockets = [("web", &web)];
        let mut old = Activated::start(
            rt,
            &config,
            &sockets,
            &notify_old.path,
            dir.path().join("old.log"),
        );
        notify_old.wait("READY=1", 1);

        // The load: 4 clients, one request per connection, until told to stop (bounded).
        let load = Arc::new(Load::default());
        let running = Arc::new(AtomicBool::new(true));
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (load, running) = (load.clone(), running.clone());
                thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while running.load(Ordering::SeqCst) && Instant::now() < deadline {
                        load.run(addr);
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(500));

        // The new binary takes the same sockets; once it is ready, the old one drains.
        let mut new = Activated::start(
            rt,
            &config,
            &sockets,
            &notify_new.path,
            dir.path().join("new.log"),
        );
        notify_new.wait("READY=1", 1);
        let before_stop = load.ok.load(Ordering::SeqCst);
        old.signal(libc::SIGTERM);
        notify_old.wait("STOPPING=1", 1);
        assert!(
            old.wait_exit(Duration::from_secs(15)),
            "the old mxgate did not finish draining"
        );
        let at_exit = load.ok.load(Ordering::SeqCst);
        thread::sleep(Duration::from_millis(700));
        running.store(false, Ordering::SeqCst);
        for c in clients {
            c.join().unwrap();
        }

        let count = |c: &AtomicUsize| c.load(Ordering::SeqCst);
        let (ok, refused, reset, failed) = (
            count(&load.ok),
            count(&load.refused),
            count(&load.reset),
            count(&load.failed),
        );
        eprintln!(
            "[{}] upgrade under load: {ok} requests answered ({before_stop} before the old process was told to stop, {} while it drained, {} after it exited); refused {refused}, reset {reset}, other failures {failed}",
            rt.name,
            at_exit - before_stop,
            ok - at_exit
        );
        let errors = load.errors.lock().unwrap().clone();
        assert_eq!(
            (refused, reset, failed),
            (0, 0, 0),
            "connection attempts lost across the upgrade: {errors:?}"
        );
        assert!(
            ok > at_exit && at_exit > before_stop && before_stop > 0,
            "the load ran throughout"
        );
        let served = |log: &str| log.matches("GET /_matrix/client/versions").count();
        let (by_old, by_new) = (served(&old.log()), served(&new.log()));
        assert!(
            by_old > 0 && by_new > 0,
            "both processes served (old {by_old}, new {by_new})"
        );
        assert_eq!(
            by_old + by_new,
            ok,
            "every answered request was served by one of them"
        );
        new.signal(libc::SIGTERM);
        assert!(new.wait_exit(Duration::from_secs(10)));
    });
}
