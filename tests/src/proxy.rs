//! Starting a proxy binary on a generated config, and stopping it by PID.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::origin::Origin;
use crate::pki::Pki;
use crate::runtime::Runtime;

/// How long a proxy may take to accept on all its ports.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Between SIGTERM and SIGKILL when a test drops a proxy.
const STOP_GRACE: Duration = Duration::from_secs(3);
const LOG_TAIL_LINES: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Federation,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Federation => "federation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSpec {
    pub role: Role,
    pub tls: bool,
}

/// The explicit-form configuration a scenario runs the proxy with.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub server_name: String,
    /// `None`: `https://localhost:<port of the first TLS client listener>`.
    pub public_url: Option<String>,
    /// The `homeserver` URL (`http://127.0.0.1:<origin port>`).
    pub homeserver: String,
    /// Default certificate (cert, key).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// SNI certificates: names, cert, key.
    pub sni: Vec<(Vec<String>, PathBuf, PathBuf)>,
    pub listeners: Vec<ListenerSpec>,
    /// Extra top-level `key = value` lines.
    pub top: Vec<String>,
    /// Extra tables, `(name, body)`, rendered as `[name]\nbody` in order.
    pub sections: Vec<(String, String)>,
    /// Extra `key = value` lines for one listener, `(index in listeners, line)`.
    pub listener_lines: Vec<(usize, String)>,
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn path_str(p: &Path) -> String {
    toml_str(&p.display().to_string())
}

impl ProxyConfig {
    /// Four listeners (client TLS, client plain, federation TLS, federation plain) in front
    /// of `origin`, with the PKI's default and SNI certificates; all else default.
    pub fn new(origin: &Origin, pki: &Pki) -> ProxyConfig {
        ProxyConfig {
            server_name: "localhost".into(),
            public_url: None,
            homeserver: origin.url(),
            tls: Some((pki.server.cert.clone(), pki.server.key.clone())),
            sni: vec![(
                pki.other.names.clone(),
                pki.other.cert.clone(),
                pki.other.key.clone(),
            )],
            listeners: vec![
                ListenerSpec {
                    role: Role::Client,
                    tls: true,
                },
                ListenerSpec {
                    role: Role::Client,
                    tls: false,
                },
                ListenerSpec {
                    role: Role::Federation,
                    tls: true,
                },
                ListenerSpec {
                    role: Role::Federation,
                    tls: false,
                },
            ],
            top: Vec::new(),
            sections: Vec::new(),
            listener_lines: Vec::new(),
        }
    }

    /// One plain client listener in front of `homeserver` (a URL), with the PKI's default
    /// certificate; all else default. For scenarios that add worker pools.
    pub fn plain_client(homeserver: String, pki: &Pki) -> ProxyConfig {
        ProxyConfig {
            server_name: "localhost".into(),
            public_url: None,
            homeserver,
            tls: Some((pki.server.cert.clone(), pki.server.key.clone())),
            sni: Vec::new(),
            listeners: vec![ListenerSpec {
                role: Role::Client,
                tls: false,
            }],
            top: Vec::new(),
            sections: Vec::new(),
            listener_lines: Vec::new(),
        }
    }

    /// Adds a `key = value` line to listener `index` (e.g. `proxy_protocol = true`).
    pub fn listener_line(mut self, index: usize, line: &str) -> ProxyConfig {
        self.listener_lines.push((index, line.to_string()));
        self
    }

    /// Adds lines to table `[name]` (merged with earlier lines for the same table).
    pub fn section(mut self, name: &str, body: &str) -> ProxyConfig {
        if let Some((_, b)) = self.sections.iter_mut().find(|(n, _)| n == name) {
            b.push('\n');
            b.push_str(body);
        } else {
            self.sections.push((name.to_string(), body.to_string()));
        }
        self
    }

    /// `[limits] max_body = "<size>"`.
    pub fn max_body(self, size: &str) -> ProxyConfig {
        self.section("limits", &format!("max_body = {}", toml_str(size)))
    }

    /// `[timeouts] upstream_response = "<duration>"`.
    pub fn upstream_response(self, d: &str) -> ProxyConfig {
        self.section("timeouts", &format!("upstream_response = {}", toml_str(d)))
    }

    /// `[forwarding] trusted_proxies = [...]`.
    pub fn trusted_proxies(self, cidrs: &[&str]) -> ProxyConfig {
        let list: Vec<String> = cidrs.iter().map(|c| toml_str(c)).collect();
        self.section(
            "forwarding",
            &format!("trusted_proxies = [{}]", list.join(", ")),
        )
    }

    /// `[admin] allow = [...]`.
    pub fn admin_allow(self, cidrs: &[&str]) -> ProxyConfig {
        let list: Vec<String> = cidrs.iter().map(|c| toml_str(c)).collect();
        self.section("admin", &format!("allow = [{}]", list.join(", ")))
    }

    /// The TOML text for listener ports `ports` (one per listener, in order).
    pub fn render(&self, ports: &[u16]) -> String {
        assert_eq!(ports.len(), self.listeners.len());
        let mut t = String::new();
        let public_url = self.public_url.clone().unwrap_or_else(|| {
            let port = self
                .listeners
                .iter()
                .zip(ports)
                .find(|(l, _)| l.tls && l.role == Role::Client)
                .or_else(|| self.listeners.iter().zip(ports).next())
                .map_or(443, |(_, p)| *p);
            format!("https://localhost:{port}")
        });
        let _ = writeln!(t, "server_name = {}", toml_str(&self.server_name));
        let _ = writeln!(t, "public_url = {}", toml_str(&public_url));
        let _ = writeln!(t, "homeserver = {}", toml_str(&self.homeserver));
        for line in &self.top {
            let _ = writeln!(t, "{line}");
        }
        if let Some((cert, key)) = &self.tls {
            let _ = writeln!(
                t,
                "\n[tls]\ncert = {}\nkey = {}",
                path_str(cert),
                path_str(key)
            );
            for (names, cert, key) in &self.sni {
                let names: Vec<String> = names.iter().map(|n| toml_str(n)).collect();
                let _ = writeln!(
                    t,
                    "\n[[tls.sni]]\nnames = [{}]\ncert = {}\nkey = {}",
                    names.join(", "),
                    path_str(cert),
                    path_str(key)
                );
            }
        }
        for (i, (l, port)) in self.listeners.iter().zip(ports).enumerate() {
            let _ = writeln!(
                t,
                "\n[[listeners]]\nrole = \"{}\"\nbind = [\"127.0.0.1:{port}\"]\ntls = {}",
                l.role.as_str(),
                l.tls
            );
            for (_, line) in self.listener_lines.iter().filter(|(n, _)| *n == i) {
                let _ = writeln!(t, "{line}");
            }
        }
        for (name, body) in &self.sections {
            let _ = writeln!(t, "\n[{name}]\n{body}");
        }
        t
    }
}

/// `n` distinct free ports on 127.0.0.1 (bound to :0, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind :0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// A port on 127.0.0.1 where nothing listens (for "upstream down").
pub fn dead_port() -> u16 {
    free_ports(1)[0]
}

/// A running proxy; SIGTERM then SIGKILL (by PID) on drop, with its log tail printed when
/// the test is failing.
pub struct Proxy {
    pub runtime: String,
    child: Child,
    exited: Option<ExitStatus>,
    dir: TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    listeners: Vec<(ListenerSpec, SocketAddr)>,
}

impl Proxy {
    /// Writes the config, starts `<bin> run --config FILE`, and waits until every listener
    /// accepts. Retries with other ports when one was taken meanwhile.
    pub fn start(rt: &Runtime, config: ProxyConfig) -> Proxy {
        Self::start_with(rt, config, None)
    }

    /// [`Proxy::start`] on the given listener ports (one per listener, in order), for a
    /// scenario where another process must know them first. No retry.
    pub fn start_on(rt: &Runtime, config: ProxyConfig, ports: &[u16]) -> Proxy {
        Self::start_with(rt, config, Some(ports))
    }

    fn start_with(rt: &Runtime, config: ProxyConfig, fixed: Option<&[u16]>) -> Proxy {
        let mut last_log = String::new();
        for attempt in 0..3 {
            let ports = match fixed {
                Some(ports) => ports.to_vec(),
                None => free_ports(config.listeners.len()),
            };
            let dir = tempfile::Builder::new()
                .prefix("mxgate-e2e-proxy-")
                .tempdir()
                .expect("temp dir");
            let config_path = dir.path().join("mxgate.toml");
            let log_path = dir.path().join("proxy.log");
            fs::write(&config_path, config.render(&ports)).expect("write config");
            let log = File::create(&log_path).expect("create log");
            let child = Command::new(&rt.bin)
                .arg("run")
                .arg("--config")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", rt.bin.display()));
            let listeners = config
                .listeners
                .iter()
                .zip(&ports)
                .map(|(l, p)| (*l, SocketAddr::from(([127, 0, 0, 1], *p))))
                .collect();
            let mut proxy = Proxy {
                runtime: rt.name.clone(),
                child,
                exited: None,
                dir,
                config_path,
                log_path,
                listeners,
            };
            match proxy.wait_ready() {
                Ok(()) => return proxy,
                Err(why) => {
                    last_log = proxy.log_tail(LOG_TAIL_LINES);
                    let in_use = last_log.contains("in use");
                    proxy.stop();
                    if in_use && attempt < 2 && fixed.is_none() {
                        continue;
                    }
                    panic!(
                        "[{}] proxy did not start: {why}\nconfig:\n{}\nlog tail:\n{last_log}",
                        rt.name,
                        fs::read_to_string(&proxy.config_path).unwrap_or_default()
                    );
                }
            }
        }
        panic!(
            "[{}] proxy did not start (ports kept colliding): {last_log}",
            rt.name
        );
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<SocketAddr> = self.listeners.iter().map(|l| l.1).collect();
        while !pending.is_empty() {
            if let Some(status) = self.try_exit() {
                return Err(format!("it exited with {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("{pending:?} not accepting after {READY_TIMEOUT:?}"));
            }
            pending.retain(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_err());
            if !pending.is_empty() {
                thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    }

    /// The address of the `n`-th listener with this role and TLS setting.
    pub fn listener(&self, role: Role, tls: bool) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(l, _)| l.role == role && l.tls == tls)
            .map(|l| l.1)
            .unwrap_or_else(|| panic!("no {role:?} listener with tls={tls}"))
    }
    pub fn client_tls(&self) -> SocketAddr {
        self.listener(Role::Client, true)
    }
    pub fn client_plain(&self) -> SocketAddr {
        self.listener(Role::Client, false)
    }
    pub fn federation_tls(&self) -> SocketAddr {
        self.listener(Role::Federation, true)
    }
    pub fn federation_plain(&self) -> SocketAddr {
        self.listener(Role::Federation, false)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the proxy's PID.
    pub fn signal(&self, signal: i32) {
        if self.exited.is_none() {
            // SAFETY: kill(2) on our own child's PID, which we have not reaped yet.
            unsafe {
                libc::kill(self.pid(), signal);
            }
        }
    }

    /// The exit status, if it exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        s
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after a bound; reaps the process.
    pub fn stop(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        self.signal(libc::SIGTERM);
        if self.wait_exit(STOP_GRACE).is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "--- [{}] proxy log tail ({}):\n{}\n--- end of proxy log",
                self.runtime,
                self.log_path.display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}

/// The result of running a proxy subcommand to completion.
#[derive(Debug)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `<bin> args…` to completion (bounded: killed after `timeout`).
pub fn run_command(rt: &Runtime, args: &[&str], timeout: Duration) -> CommandOutput {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(&rt.bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", rt.bin.display()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "[{}] `{} {}` did not finish within {timeout:?}",
                rt.name,
                rt.bin.display(),
                args.join(" ")
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    CommandOutput {
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}
