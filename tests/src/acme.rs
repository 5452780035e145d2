//! A real ACME server for the certificate tests: Debian's `pebble`, with
//! `pebble-challtestsrv` as its DNS server (every name resolves to 127.0.0.1), both on free
//! 127.0.0.1 ports, started by the test and stopped by PID. Pebble's own HTTPS uses a
//! certificate from the test [`Pki`] (mxgate trusts it through `[acme] ca_root`); the
//! certificates it issues chain to the root its management port serves at `/roots/0`.
//! Pebble validates challenges for real (`PEBBLE_VA_ALWAYS_VALID=0`) against mxgate's
//! ports, and rejects 5 % of nonces as it does by default.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;

use crate::client::Client;
use crate::pki::Pki;
use crate::proxy::free_ports;
use crate::synapse::ProcessGuard;

/// Where the `pebble` and `pebble-challtestsrv` binaries are (Debian's `pebble`, found on
/// `PATH` or provisioned into `target/` by [`crate::tools::debian_tool`]), or what fixes it.
/// The one place the tests look for them.
pub fn pebble_binaries() -> Result<(PathBuf, PathBuf), String> {
    let fix = "Fix: apt-get install -y pebble (Debian's ACME test server)";
    let pebble = crate::tools::debian_tool("pebble", "pebble", &["-h"])
        .map_err(|e| format!("pebble could not be provisioned: {e}\n{fix}"))?;
    // Static Go programs: no libraries to point at.
    let dns = pebble.program.with_file_name("pebble-challtestsrv");
    if !dns.is_file() {
        return Err(format!(
            "no pebble-challtestsrv beside {}\n{fix}",
            pebble.program.display()
        ));
    }
    Ok((pebble.program, dns))
}

/// What Pebble is started with.
#[derive(Debug, Clone, Copy)]
pub struct PebbleOptions {
    /// mxgate's TLS listener port (TLS-ALPN-01 validation connects there).
    pub tls_port: u16,
    /// mxgate's plain listener port (HTTP-01 validation connects there).
    pub http_port: u16,
    /// Lifetime of issued certificates, seconds (`None`: Pebble's five years).
    pub validity_seconds: Option<u64>,
}

/// A running Pebble and its DNS server; both stopped (by PID) on drop.
pub struct Pebble {
    pub addr: SocketAddr,
    pub management: SocketAddr,
    dir: PathBuf,
    pebble: ProcessGuard,
    _dns: ProcessGuard,
}

impl Pebble {
    /// Starts both on free ports, with its HTTPS certificate issued by `pki` under `dir`.
    /// Panics (naming the install command) when Pebble is not installed.
    pub fn start(pki: &Pki, dir: &Path, options: PebbleOptions) -> Pebble {
        let (pebble_bin, dns_bin) = pebble_binaries().unwrap_or_else(|e| panic!("{e}"));
        fs::create_dir_all(dir).expect("pebble dir");
        let ports = free_ports(4);
        let (listen, management, dns, dns_management) = (ports[0], ports[1], ports[2], ports[3]);
        let tls = pki.issue(&["localhost", "127.0.0.1"], "pebble");
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": tls.cert,
            "privateKey": tls.key,
            "httpPort": options.http_port,
            "tlsPort": options.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(seconds) = options.validity_seconds {
            config["pebble"]["certificateValidityPeriod"] = seconds.into();
        }
        let config_path = dir.join("pebble.json");
        fs::write(&config_path, config.to_string()).expect("write pebble config");

        let mut cmd = Command::new(dns_bin);
        cmd.args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            // mxgate listens on 127.0.0.1 only: no AAAA answers.
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
        let mut dns_guard =
            ProcessGuard::spawn_logged("pebble-challtestsrv", cmd, dir, "dns.log").expect("dns");
        let dns_addr = SocketAddr::from(([127, 0, 0, 1], dns_management));
        dns_guard
            .wait_ready(
                || TcpStream::connect(dns_addr).is_ok(),
                || tail(dir, "dns.log"),
            )
            .unwrap_or_else(|e| panic!("{e}"));

        let mut cmd = Command::new(pebble_bin);
        cmd.arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_ALWAYS_VALID", "0")
            // No random 0-15 s pause before each validation.
            .env("PEBBLE_VA_NOSLEEP", "1");
        let mut pebble =
            ProcessGuard::spawn_logged("pebble", cmd, dir, "pebble.log").expect("pebble");
        let addr = SocketAddr::from(([127, 0, 0, 1], listen));
        let management = SocketAddr::from(([127, 0, 0, 1], management));
        pebble
            .wait_ready(
                || TcpStream::connect(addr).is_ok() && TcpStream::connect(management).is_ok(),
                || tail(dir, "pebble.log"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        Pebble {
            addr,
            management,
            dir: dir.to_path_buf(),
            pebble,
            _dns: dns_guard,
        }
    }

    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.addr)
    }

    /// Orders Pebble received so far (`POST /order-plz` in its log).
    pub fn orders(&self) -> usize {
        self.log().matches("POST /order-plz").count()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// The root its certificates chain to, from the management port.
    pub fn root(&self, pki: &Pki) -> CertificateDer<'static> {
        let mut client = Client::try_tls(self.management, pki.client_config(), "localhost")
            .expect("connect to pebble's management port");
        let response = client
            .request(&crate::get("/roots/0", "localhost"))
            .expect("GET /roots/0");
        assert_eq!(response.status, 200, "pebble /roots/0");
        CertificateDer::from_pem_slice(&response.body).expect("pebble root PEM")
    }

    /// A client configuration trusting only Pebble's root (ALPN `http/1.1`).
    pub fn client_config(&self, pki: &Pki) -> Arc<ClientConfig> {
        crate::pki::client_config_trusting(self.root(pki))
    }

    /// Stops Pebble (by PID); its DNS server stays until drop.
    pub fn stop(&mut self) {
        self.pebble.stop();
    }
}

fn tail(dir: &Path, file: &str) -> String {
    crate::synapse::tail(&dir.join(file), 30)
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}
