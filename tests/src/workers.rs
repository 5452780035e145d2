//! Helpers for worker-routing and PROXY protocol scenarios:
//!
//! - [`NamedOrigin`]: a small recording origin standing in for one Synapse process (main or
//!   a worker). It answers every request `200` with `X-Origin-Name: <name>` and
//!   `{"origin":"<name>"}`, keeps connections alive, records each request head, and can be
//!   stopped (closing every connection) and started again on the same port.
//! - PROXY protocol clients: [`proxy_v1`], [`proxy_v2`] headers, and [`send_raw`] /
//!   [`send_tls_after`] that write a header and then a request (plain or TLS).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::http::{parse_request_head, parse_response, BodyFraming, RequestHead};
use crate::{Pki, Response, ResponseParse};

#[derive(Default)]
struct NamedShared {
    stop: AtomicBool,
    requests: Mutex<Vec<RequestHead>>,
    conns: Mutex<Vec<TcpStream>>,
}

/// A recording origin with a name (see the module doc). Stops on drop.
pub struct NamedOrigin {
    pub name: String,
    addr: SocketAddr,
    shared: Arc<NamedShared>,
    acceptor: Option<JoinHandle<()>>,
}

impl NamedOrigin {
    /// On a free port of 127.0.0.1.
    pub fn start(name: &str) -> NamedOrigin {
        Self::try_start_on(name, 0).expect("bind origin")
    }

    /// On `port` (e.g. the port of a stopped origin); retried for a few seconds while the
    /// port is still taken.
    pub fn start_on(name: &str, port: u16) -> NamedOrigin {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Self::try_start_on(name, port) {
                Ok(o) => return o,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot bind origin {name} on port {port}: {e}"),
            }
        }
    }

    fn try_start_on(name: &str, port: u16) -> io::Result<NamedOrigin> {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(NamedShared::default());
        let (s, n) = (shared.clone(), name.to_string());
        let acceptor = thread::Builder::new()
            .name(format!("origin-{name}"))
            .spawn(move || {
                while !s.stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            if let Ok(clone) = stream.try_clone() {
                                s.conns.lock().unwrap().push(clone);
                            }
                            let (s2, n2) = (s.clone(), n.clone());
                            let _ = thread::Builder::new()
                                .name(format!("origin-{n}-conn"))
                                .spawn(move || serve(stream, &n2, &s2));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })?;
        Ok(NamedOrigin {
            name: name.to_string(),
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request head received so far (health probes included).
    pub fn requests(&self) -> Vec<RequestHead> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Requests received so far, without `GET /health` probes.
    pub fn traffic(&self) -> Vec<RequestHead> {
        self.requests()
            .into_iter()
            .filter(|r| r.path() != "/health")
            .collect()
    }

    /// How many `/health` probes arrived.
    pub fn probes(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path() == "/health")
            .count()
    }

    /// Stops listening and closes every connection; the port is free afterwards.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for NamedOrigin {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(mut stream: TcpStream, name: &str, shared: &NamedShared) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let (head, used) = loop {
            match parse_request_head(&buf) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(_) => return,
            }
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return,
            }
        };
        buf.drain(..used);
        // Content-Length bodies only (what these scenarios send).
        if let Ok(BodyFraming::Length(n)) = head.framing() {
            let n = n as usize;
            while buf.len() < n {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                match stream.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => return,
                }
            }
            buf.drain(..n);
        }
        let close = head
            .headers_named("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"));
        shared.requests.lock().unwrap().push(head);
        let body = format!("{{\"origin\":\"{name}\"}}");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Origin-Name: {name}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).is_err() || close {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// A `/sync` long-poll-style request for `user` (access token `syt_<base64 localpart>_…`).
pub fn sync_request(user: &str, host: &str) -> Vec<u8> {
    format!(
        "GET /_matrix/client/v3/sync?since=s1&timeout=0 HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\r\n",
        token(user)
    )
    .into_bytes()
}

/// An access token for `user` shaped like Synapse's: `syt_<base64(localpart)>_<random>_<crc>`.
pub fn token(user: &str) -> String {
    format!(
        "syt_{}_{}_0a1b2c",
        base64_unpadded(user.as_bytes()),
        user.len()
    )
}

fn base64_unpadded(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A PROXY v1 header for a TCP4 connection `src` → `dst`.
pub fn proxy_v1(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A PROXY v2 `PROXY` header for a TCP4 connection `src` → `dst` (with one NOOP TLV).
pub fn proxy_v2(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let mut block = Vec::new();
    block.extend_from_slice(&src.ip().octets());
    block.extend_from_slice(&dst.ip().octets());
    block.extend_from_slice(&src.port().to_be_bytes());
    block.extend_from_slice(&dst.port().to_be_bytes());
    block.extend_from_slice(&[0x04, 0x00, 0x00]);
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x11]);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(&block);
    out
}

/// How a raw exchange ended.
#[derive(Debug)]
pub enum RawOutcome {
    Response(Response),
    /// Closed (or reset) without a complete response; the bytes that arrived.
    Closed(Vec<u8>),
    /// Nothing conclusive before the deadline.
    Timeout(Vec<u8>),
}

/// Reads one response from `io` (bounded by `timeout`).
fn read_one(io: &mut dyn Read, tcp: &TcpStream, timeout: Duration) -> RawOutcome {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Ok(ResponseParse::Done(res, _)) = parse_response(&buf, false, false) {
            return RawOutcome::Response(*res);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return RawOutcome::Timeout(buf);
        }
        let _ = tcp.set_read_timeout(Some(left));
        match io.read(&mut chunk) {
            Ok(0) => return RawOutcome::Closed(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return RawOutcome::Closed(buf),
        }
    }
}

/// Connects to `addr`, writes `prefix` then `request` (separately), reads one response.
pub fn send_raw(addr: SocketAddr, prefix: &[u8], request: &[u8]) -> RawOutcome {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect");
    let _ = tcp.set_nodelay(true);
    let _ = tcp.write_all(prefix);
    // Apart, so the proxy sees the header alone first at least sometimes.
    thread::sleep(Duration::from_millis(5));
    let _ = tcp.write_all(request);
    let probe = tcp.try_clone().expect("clone");
    read_one(&mut tcp, &probe, Duration::from_secs(5))
}

/// Connects to `addr`, writes `prefix`, then does a TLS handshake (SNI `sni`, trusting the
/// test CA) and sends `request` over it. `Err` when the handshake fails.
pub fn send_tls_after(
    addr: SocketAddr,
    prefix: &[u8],
    pki: &Pki,
    sni: &str,
    request: &[u8],
) -> io::Result<RawOutcome> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.write_all(prefix)?;
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut conn = ClientConnection::new(pki.client_config(), name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    let probe = tcp.try_clone()?;
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(request)?;
    tls.flush()?;
    Ok(read_one(&mut tls, &probe, Duration::from_secs(5)))
}
