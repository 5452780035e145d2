//! mxgate-e2e: the end-to-end harness. Real TCP, real TLS, real processes, everything on
//! 127.0.0.1, every wait bounded.
//!
//! - [`pki`]: a throw-away CA and certificates (rcgen), written to a temp dir.
//! - [`origin`]: a recording origin server standing in for Synapse (std threads).
//! - [`proxy`]: writes a config, starts a proxy binary in its own process group, stops it by PID.
//! - [`client`]: raw TCP and rustls clients that send exact bytes and read raw responses.
//! - [`http`]: the small HTTP/1.1 parsers the origin and the clients share.
//! - [`runtime`]: which proxy binaries (runtimes) every scenario runs against.
//! - [`synapse`]: real Synapse processes (and PostgreSQL, Redis) for the `synapse_*` tests.
//! - [`tools`]: external programs (HAProxy, PostgreSQL, Redis, HTTP/2 clients): found, or
//!   provisioned into `target/` without root on first use.
//! - [`external`]: running such a client program to completion within a time limit.
//! - [`netlog`]: reading Chromium's NetLog (its connections and HTTP/2 sessions).
//!
//! Running: `cargo test -p mxgate-e2e` (builds each runtime's binary once per test binary
//! with a nested `cargo build`). `MXGATE_E2E_RUNTIMES=mxgate,mxgate-std` picks runtimes
//! (default [`runtime::DEFAULT_RUNTIMES`]); `MXGATE_E2E_BIN_DIR=target/release` uses prebuilt
//! binaries instead of building. A failing scenario prints the proxy's log tail and names
//! the runtime(s) it failed on.
//!
//! A scenario looks like:
//!
//! ```no_run
//! use mxgate_e2e::*;
//! each_runtime(|rt| {
//!     let origin = Origin::start();
//!     let pki = Pki::new();
//!     let proxy = Proxy::start(rt, ProxyConfig::new(&origin, &pki));
//!     let mut c = Client::tls(proxy.client_tls(), &pki, "localhost");
//!     let res = c.request(&get("/_matrix/client/versions", "localhost")).unwrap();
//!     assert_eq!(res.status, 200);
//! });
//! ```

pub mod acme;
pub mod client;
pub mod external;
pub mod http;
pub mod netlog;
pub mod origin;
pub mod pki;
pub mod proxy;
pub mod runtime;
pub mod synapse;
pub mod tools;
pub mod workers;

use std::time::{Duration, Instant};

pub use client::{Client, ClientError, End};
pub use http::{Response, ResponseParse};
pub use origin::{Origin, RecordedRequest};
pub use pki::{CertFiles, Pki};
pub use proxy::{ListenerSpec, Proxy, ProxyConfig, Role};
pub use runtime::{each_runtime, runtimes, Runtime};

/// A proxy in front of a recording origin, with its PKI: what most scenarios start with.
/// Fields drop in order: the proxy stops before the origin.
pub struct Scene {
    pub proxy: Proxy,
    pub origin: Origin,
    pub pki: Pki,
}

impl Scene {
    /// The default four-listener config ([`ProxyConfig::new`]).
    pub fn start(rt: &Runtime) -> Scene {
        Self::with(rt, |c| c)
    }

    /// The default config changed by `f`.
    pub fn with(rt: &Runtime, f: impl FnOnce(ProxyConfig) -> ProxyConfig) -> Scene {
        let origin = Origin::start();
        let pki = Pki::new();
        let proxy = Proxy::start(rt, f(ProxyConfig::new(&origin, &pki)));
        Scene { proxy, origin, pki }
    }

    /// A connection to the listener with this role and TLS setting (TLS with SNI `localhost`).
    pub fn connect(&self, role: Role, tls: bool) -> Client {
        let addr = self.proxy.listener(role, tls);
        if tls {
            Client::tls(addr, &self.pki, "localhost")
        } else {
            Client::plain(addr)
        }
    }

    /// Sends one request on a new connection to that listener and reads the response;
    /// panics (naming the listener) when no complete response arrives.
    pub fn exchange(&self, role: Role, tls: bool, request: &[u8]) -> Response {
        let mut c = self.connect(role, tls);
        c.request(request).unwrap_or_else(|e| {
            panic!(
                "{} listener (tls={tls}), request {}: {e:?}",
                role.as_str(),
                show(request, 300)
            )
        })
    }
}

/// Both client listeners, as `(role, tls)`.
pub const CLIENT_LISTENERS: [(Role, bool); 2] = [(Role::Client, true), (Role::Client, false)];
/// All four listeners of the default config.
pub const ALL_LISTENERS: [(Role, bool); 4] = [
    (Role::Client, true),
    (Role::Client, false),
    (Role::Federation, true),
    (Role::Federation, false),
];

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `GET` with only a Host header.
pub fn get(target: &str, host: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// A request with the given extra header lines (each without CRLF) and no body.
pub fn request(method: &str, target: &str, host: &str, headers: &[&str]) -> Vec<u8> {
    let mut s = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Bytes shown for humans: printable ASCII as is, the rest escaped; cut at `max` bytes.
pub fn show(bytes: &[u8], max: usize) -> String {
    let mut s: String = bytes
        .iter()
        .take(max)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > max {
        s.push_str(&format!("… ({} bytes in all)", bytes.len()));
    }
    s
}
