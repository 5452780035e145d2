//! Running real Synapse processes (and what they need) for the `synapse_*` tests: bounded
//! child processes in their own process groups, provisioning the pinned venv, health waits,
//! and the client flow (`tests/synapse/client_flow.py`) run through a proxy.
//!
//! Every process leads its own process group and is stopped by PID on every path
//! ([`ProcessGuard`]: SIGTERM, SIGKILL after [`STOP_GRACE`]); every wait is bounded.

use std::env;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::pki::Pki;
use crate::proxy::{ListenerSpec, Proxy, ProxyConfig, Role};

/// Cold provisioning (venv + pip install from PyPI) takes ~20 s here; leave room for a slow
/// network.
pub const PROVISION_TIMEOUT: Duration = Duration::from_secs(900);
/// Writing configs, `initdb`.
pub const GENERATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Until a started server answers (Synapse `/health`, Redis `PING`, PostgreSQL's log line).
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The flow itself takes ~35 s (one idle 30 s long-poll runs alongside the other steps).
pub const FLOW_TIMEOUT: Duration = Duration::from_secs(300);
/// Between SIGTERM and SIGKILL when stopping a process.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `tests/synapse/`: the Python side (provisioning, config generation, the client flow).
pub fn synapse_dir() -> PathBuf {
    repo_root().join("tests").join("synapse")
}

/// `MXGATE_SKIP_SYNAPSE=1` opts out on a developer machine (e.g. without access to PyPI);
/// with `CI=true` the opt-out is ignored: CI always runs the Synapse tests. A skip is said
/// on the terminal (written to the process's stderr, which `cargo test` does not capture),
/// since the test still reports `ok`.
pub fn opted_out(test: &str) -> bool {
    let skip = env::var("MXGATE_SKIP_SYNAPSE").is_ok_and(|v| v == "1");
    let ci = env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if skip && ci {
        println!("MXGATE_SKIP_SYNAPSE=1 is ignored because CI=true: running the Synapse test");
        return false;
    }
    if skip {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: MXGATE_SKIP_SYNAPSE=1 is set, so this test did NOT run \
             (its `ok` only means it was skipped; unset the variable to run it)"
        );
    }
    skip
}

/// The last `n` lines of a log file (or why it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// `--- last n lines of <dir>/<name>:` sections for the files that exist.
pub fn log_tails(dir: &Path, files: &[(&str, usize)]) -> String {
    let mut s = String::new();
    for &(name, n) in files {
        let p = dir.join(name);
        if p.exists() {
            s.push_str(&format!(
                "--- last {n} lines of {}:\n{}\n",
                p.display(),
                tail(&p, n)
            ));
        }
    }
    s
}

/// A fresh directory `<tmp>/<prefix>-<pid>-<nanos>` (tests pass `CARGO_TARGET_TMPDIR`).
pub fn run_dir(tmp: &str, prefix: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = Path::new(tmp).join(format!("{prefix}-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Sends `sig` to the process group `pgid` with the shell's `kill` builtin (std has no
/// kill(2) for signals other than SIGKILL, and procps' /bin/kill may be absent).
fn signal_group(pgid: u32, sig: &str) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -s {sig} -- -{pgid} 2>/dev/null"))
        .stdin(Stdio::null())
        .status();
}

/// A child process that leads its own process group; stopped (SIGTERM, then SIGKILL after
/// [`STOP_GRACE`]) when dropped, on success and on panic alike.
pub struct ProcessGuard {
    name: &'static str,
    child: Child,
    stopped: bool,
}

impl ProcessGuard {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(name: &'static str, mut cmd: Command) -> std::io::Result<ProcessGuard> {
        cmd.process_group(0);
        let child = cmd.spawn()?;
        Ok(ProcessGuard {
            name,
            child,
            stopped: false,
        })
    }

    /// Spawns `program args` in `dir`, stdout and stderr appended to `dir/<log>`.
    pub fn spawn_logged(
        name: &'static str,
        mut cmd: Command,
        dir: &Path,
        log: &str,
    ) -> Result<ProcessGuard, String> {
        let out = fs::File::create(dir.join(log)).map_err(|e| format!("{log}: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("{log}: {e}"))?;
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        ProcessGuard::spawn(name, cmd).map_err(|e| format!("cannot start {name}: {e}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if the process has already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits (bounded by [`READY_TIMEOUT`]) until `ready()`; fails early if the process
    /// exits, and stops it on timeout. `tails` says what to show on failure.
    pub fn wait_ready(
        &mut self,
        mut ready: impl FnMut() -> bool,
        tails: impl Fn() -> String,
    ) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                return Err(format!(
                    "{} exited ({st}) before it was ready\n{}",
                    self.name,
                    tails()
                ));
            }
            if ready() {
                println!(
                    "{} (pid {}) ready after {:.1} s",
                    self.name,
                    self.pid(),
                    t0.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if t0.elapsed() >= READY_TIMEOUT {
                self.stop();
                return Err(format!(
                    "{} not ready within {READY_TIMEOUT:?}\n{}",
                    self.name,
                    tails()
                ));
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Idempotent: signals the group only while this guard has not reaped its leader before.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pgid = self.child.id();
        if self.exited().is_none() {
            signal_group(pgid, "TERM");
            let deadline = Instant::now() + STOP_GRACE;
            while self.exited().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(100));
            }
            if self.exited().is_none() {
                println!(
                    "{} (pid {pgid}) ignored SIGTERM for {STOP_GRACE:?}: SIGKILL",
                    self.name
                );
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        // Stragglers of the group, if any (a group id stays reserved while it has members).
        signal_group(pgid, "KILL");
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd` (in its own process group) to completion within `timeout`, echoing each output
/// line with `prefix` (shown by `cargo test` on failure, live with `--nocapture`). Returns
/// the exit status (None on timeout, after killing the group) and the combined output.
pub fn run_bounded(
    prefix: &'static str,
    mut cmd: Command,
    timeout: Duration,
) -> Result<(Option<ExitStatus>, String), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard =
        ProcessGuard::spawn(prefix, cmd).map_err(|e| format!("cannot start {prefix}: {e}"))?;
    let out = Arc::new(Mutex::new(String::new()));
    let mut readers = Vec::new();
    let stdout = guard
        .child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    let stderr = guard
        .child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    for stream in [stdout, stderr].into_iter().flatten() {
        let out = Arc::clone(&out);
        readers.push(thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                println!("[{prefix}] {line}");
                let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                o.push_str(&line);
                o.push('\n');
            }
        }));
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = guard.exited() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            println!("[{prefix}] still running after {timeout:?}: stopping it");
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    // Ends the group (and so closes the pipes) before joining the readers.
    guard.stop();
    drop(guard);
    for r in readers {
        let _ = r.join();
    }
    let text = out.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok((status, text))
}

/// Runs a generator script and returns the value of each `key=value` line it must print.
pub fn run_generator<const N: usize>(
    prefix: &'static str,
    cmd: Command,
    keys: [&str; N],
) -> Result<[String; N], String> {
    let (status, out) = run_bounded(prefix, cmd, GENERATE_TIMEOUT)?;
    if !status.is_some_and(|s| s.success()) {
        return Err(format!("{prefix} failed ({status:?}):\n{out}"));
    }
    let mut values: [String; N] = std::array::from_fn(|_| String::new());
    for (value, key) in values.iter_mut().zip(keys) {
        *value = out
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
            .ok_or_else(|| format!("{prefix} printed no {key}= line:\n{out}"))?;
    }
    Ok(values)
}

/// Builds (or reuses) the pinned Synapse venv with `tests/synapse/provision.sh`; returns its
/// python. Panics with what is missing when it cannot.
pub fn provision() -> PathBuf {
    let t0 = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg(synapse_dir().join("provision.sh"));
    let (status, out) =
        run_bounded("provision", cmd, PROVISION_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    if !status.is_some_and(|s| s.success()) {
        panic!(
            "cannot provision Synapse (tests/synapse/provision.sh: {}):\n{out}\n\
             Needs python3 >= 3.10 with venv (Debian: python3-venv) and access to PyPI. \
             Outside CI, MXGATE_SKIP_SYNAPSE=1 skips this test.",
            status.map_or("timed out".to_owned(), |s| s.to_string())
        );
    }
    let python = out
        .lines()
        .find_map(|l| l.strip_prefix("MXGATE_SYNAPSE_PYTHON="))
        .map(|p| PathBuf::from(p.trim()))
        .unwrap_or_else(|| panic!("provision.sh printed no MXGATE_SYNAPSE_PYTHON= line:\n{out}"));
    assert!(
        python.is_file(),
        "provision.sh's python {python:?} is not a file\n{out}"
    );
    println!(
        "provisioned in {:.1} s: {}",
        t0.elapsed().as_secs_f64(),
        python.display()
    );
    python
}

/// `GET /health` on 127.0.0.1:port answers 200.
pub fn health_ok(port: u16) -> bool {
    let req =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let got = ask(port, req.as_bytes(), 12);
    got.starts_with(b"HTTP/1.1 200") || got.starts_with(b"HTTP/1.0 200")
}

/// Sends `request` to 127.0.0.1:port and reads until `want` bytes came (or the peer stops);
/// empty when it cannot connect. Every step has a 1–2 s bound.
pub fn ask(port: u16, request: &[u8], want: usize) -> Vec<u8> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return Vec::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(request).is_err() {
        return Vec::new();
    }
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < want {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// mxgate with one TLS client listener in front of Synapse on 127.0.0.1:`synapse_port`,
/// with the defaults a Synapse admin gets (admin API refused, 50 MiB bodies, long-poll-safe
/// timeouts).
pub fn proxy_config(pki: &Pki, synapse_port: u16) -> ProxyConfig {
    ProxyConfig {
        server_name: "localhost".into(),
        public_url: None,
        homeserver: format!("http://127.0.0.1:{synapse_port}"),
        tls: Some((pki.server.cert.clone(), pki.server.key.clone())),
        sni: Vec::new(),
        listeners: vec![ListenerSpec {
            role: Role::Client,
            tls: true,
        }],
        top: Vec::new(),
        sections: Vec::new(),
        listener_lines: Vec::new(),
    }
}

/// What `client_flow.py` needs: where the proxy is and how to reach Synapse directly.
pub struct FlowTarget<'a> {
    /// `https://127.0.0.1:<port>` of the proxy's TLS client listener.
    pub proxy_url: String,
    /// PEM file of the CA that signed the proxy's certificate.
    pub ca_file: &'a Path,
    /// The main process, for registration with the shared secret and the admin whois API.
    pub direct_url: String,
    pub shared_secret: &'a str,
    /// The Synapse log whose access lines the flow checks (client address, request id).
    pub synapse_log: &'a Path,
}

impl<'a> FlowTarget<'a> {
    /// Through `proxy`'s TLS client listener (certificate from `pki`) to the Synapse whose
    /// main process listens on `main_port`.
    pub fn through(
        proxy: &Proxy,
        pki: &'a Pki,
        main_port: u16,
        shared_secret: &'a str,
        synapse_log: &'a Path,
    ) -> FlowTarget<'a> {
        FlowTarget {
            proxy_url: format!("https://127.0.0.1:{}", proxy.client_tls().port()),
            ca_file: &pki.ca_pem_path,
            direct_url: format!("http://127.0.0.1:{main_port}"),
            shared_secret,
            synapse_log,
        }
    }
}

/// Runs the client flow through the proxy; `Ok(seconds)` or the failed step.
pub fn run_client_flow(python: &Path, target: &FlowTarget) -> Result<f64, String> {
    let t0 = Instant::now();
    let mut cmd = Command::new(python);
    cmd.arg(synapse_dir().join("client_flow.py"))
        .arg("--proxy")
        .arg(&target.proxy_url)
        .arg("--ca")
        .arg(target.ca_file)
        .arg("--direct")
        .arg(&target.direct_url)
        .arg("--shared-secret")
        .arg(target.shared_secret)
        .arg("--synapse-log")
        .arg(target.synapse_log)
        .env("PYTHONUNBUFFERED", "1");
    match run_bounded("client_flow", cmd, FLOW_TIMEOUT)? {
        (None, _) => Err(format!(
            "client_flow.py did not finish within {FLOW_TIMEOUT:?}"
        )),
        (Some(st), out) if !st.success() => Err(out
            .lines()
            .rev()
            .find(|l| l.starts_with("FAILED at step"))
            .map_or_else(|| format!("client_flow.py exited with {st}"), str::to_owned)),
        _ => Ok(t0.elapsed().as_secs_f64()),
    }
}

/// Runs the HTTP/2 client flow (`tests/synapse/h2_flow.py`, httpx with `http2=True` from the
/// pinned wheels of `tests/tools/httpx.txt`) through the proxy; `Ok(seconds)` or the failed
/// step.
pub fn run_h2_flow(python: &Path, target: &FlowTarget) -> Result<f64, String> {
    let httpx = crate::tools::httpx_path();
    let t0 = Instant::now();
    let mut cmd = Command::new(python);
    cmd.arg(synapse_dir().join("h2_flow.py"))
        .arg("--proxy")
        .arg(&target.proxy_url)
        .arg("--ca")
        .arg(target.ca_file)
        .arg("--direct")
        .arg(&target.direct_url)
        .arg("--shared-secret")
        .arg(target.shared_secret)
        .env("PYTHONPATH", &httpx)
        .env("PYTHONUNBUFFERED", "1");
    match run_bounded("h2_flow", cmd, FLOW_TIMEOUT)? {
        (None, _) => Err(format!("h2_flow.py did not finish within {FLOW_TIMEOUT:?}")),
        (Some(st), out) if !st.success() => Err(out
            .lines()
            .rev()
            .find(|l| l.starts_with("FAILED at step"))
            .map_or_else(
                || format!("h2_flow.py exited with {st}:\n{out}"),
                str::to_owned,
            )),
        _ => Ok(t0.elapsed().as_secs_f64()),
    }
}
