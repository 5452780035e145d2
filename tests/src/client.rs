//! Clients that send exact bytes and read raw responses, over plain TCP or rustls, with a
//! deadline on every read so a broken proxy fails a test instead of hanging it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::http::{parse_response, Response, ResponseParse};
use crate::pki::Pki;

/// How long a read waits by default before the test is told "timeout".
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A byte stream with a TCP socket under it (for timeouts and half-close).
pub trait Transport: Read + Write + Send {
    fn tcp(&self) -> &TcpStream;
    /// Stops sending (TLS: close_notify, then TCP FIN).
    fn close_write(&mut self);
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
    fn close_write(&mut self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Transport for StreamOwned<ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
    fn close_write(&mut self) {
        self.conn.send_close_notify();
        let _ = self.conn.complete_io(&mut self.sock);
        let _ = self.sock.shutdown(Shutdown::Write);
    }
}

/// How reading stopped without a complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The peer closed the connection (FIN, or TLS EOF).
    Eof,
    /// The peer reset the connection.
    Reset,
    /// Nothing more arrived before the deadline.
    Timeout,
    /// Another I/O or TLS error.
    Error(String),
}

/// A response that did not arrive: why, and the bytes that did.
pub struct ClientError {
    pub end: End,
    /// Set when the bytes that arrived are not a valid response.
    pub invalid: Option<String>,
    pub partial: Vec<u8>,
    pub waited: Duration,
}

impl fmt::Debug for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no complete response: {:?}{} after {:?}; received {} bytes: {}",
            self.end,
            self.invalid
                .as_ref()
                .map(|m| format!(" (invalid: {m})"))
                .unwrap_or_default(),
            self.waited,
            self.partial.len(),
            crate::show(&self.partial, 1500)
        )
    }
}

/// One client connection.
pub struct Client {
    io: Box<dyn Transport>,
    buf: Vec<u8>,
    eof: Option<End>,
    /// Deadline for each [`Client::read_response`] call.
    pub timeout: Duration,
    /// The server's end-entity certificate (DER), on TLS connections.
    pub peer_cert: Option<Vec<u8>>,
    /// The ALPN protocol agreed, on TLS connections.
    pub alpn: Option<Vec<u8>>,
}

fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    connect_tcp_with(addr, None)
}

/// A TCP connection; with `receive_buffer`, the kernel's receive buffer is fixed at that
/// size before connecting (no autotuning), so a client that does not read stalls the
/// sender after a few dozen KiB instead of tens of MiB.
fn connect_tcp_with(addr: SocketAddr, receive_buffer: Option<usize>) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
    let s: TcpStream = socket.into();
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
    s.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
    Ok(s)
}

impl Client {
    /// A plain TCP connection; panics when it cannot connect.
    pub fn plain(addr: SocketAddr) -> Client {
        Self::try_plain(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn try_plain(addr: SocketAddr) -> io::Result<Client> {
        Ok(Self::over(Box::new(connect_tcp(addr)?)))
    }

    fn over(io: Box<dyn Transport>) -> Client {
        Client {
            io,
            buf: Vec::new(),
            eof: None,
            timeout: DEFAULT_TIMEOUT,
            peer_cert: None,
            alpn: None,
        }
    }

    /// A TLS connection trusting the test CA, with `sni` as the server name (a host name is
    /// sent as SNI; an IP address sends none). Panics when the handshake fails.
    pub fn tls(addr: SocketAddr, pki: &Pki, sni: &str) -> Client {
        Self::try_tls(addr, pki.client_config(), sni)
            .unwrap_or_else(|e| panic!("TLS connect to {addr} (SNI {sni}): {e}"))
    }

    /// A connection (TLS trusting the test CA, or plain) whose kernel receive buffer is
    /// fixed at 64 KiB: for scenarios where the client stops reading.
    pub fn slow_reader(addr: SocketAddr, tls: Option<(&Pki, &str)>) -> Client {
        let sock = connect_tcp_with(addr, Some(64 * 1024))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        match tls {
            None => Self::over(Box::new(sock)),
            Some((pki, sni)) => Self::tls_over(sock, pki.client_config(), sni)
                .unwrap_or_else(|e| panic!("TLS connect to {addr} (SNI {sni}): {e}")),
        }
    }

    /// Like [`Client::tls`] with any client config; the error says why the handshake failed.
    pub fn try_tls(addr: SocketAddr, config: Arc<ClientConfig>, sni: &str) -> io::Result<Client> {
        Self::tls_over(connect_tcp(addr)?, config, sni)
    }

    fn tls_over(mut sock: TcpStream, config: Arc<ClientConfig>, sni: &str) -> io::Result<Client> {
        let name = ServerName::try_from(sni.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        while conn.is_handshaking() {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
            let (_, _) = conn.complete_io(&mut sock)?;
        }
        let peer_cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let mut client = Self::over(Box::new(StreamOwned::new(conn, sock)));
        client.peer_cert = peer_cert;
        client.alpn = alpn;
        Ok(client)
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes)?;
        self.io.flush()
    }

    /// Half-closes: no more bytes from this side.
    pub fn close_write(&mut self) {
        self.io.close_write();
    }

    /// Sends `bytes` and reads one response. A failed write (the proxy answered early and
    /// closed) still reads whatever response arrived.
    pub fn request(&mut self, bytes: &[u8]) -> Result<Response, ClientError> {
        let head = bytes.starts_with(b"HEAD ");
        let written = self.send(bytes);
        match (written, self.read_response_for(head)) {
            (_, Ok(res)) => Ok(res),
            (Ok(()), Err(e)) => Err(e),
            (Err(w), Err(mut e)) => {
                e.end = End::Error(format!("write failed ({w}), then read: {:?}", e.end));
                Err(e)
            }
        }
    }

    /// Reads one response (skipping `100 Continue`), within [`Client::timeout`].
    pub fn read_response(&mut self) -> Result<Response, ClientError> {
        self.read_response_for(false)
    }

    /// Reads one response to a HEAD request (no body) or another request.
    pub fn read_response_for(&mut self, head_request: bool) -> Result<Response, ClientError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        loop {
            let parsed = parse_response(&self.buf, self.eof.is_some(), head_request);
            match parsed {
                Ok(ResponseParse::Done(res, used)) => {
                    self.buf.drain(..used);
                    if res.status == 100 {
                        continue;
                    }
                    return Ok(*res);
                }
                Ok(ResponseParse::Incomplete) => {}
                Err(msg) => {
                    return Err(ClientError {
                        end: self.eof.clone().unwrap_or(End::Error("invalid".into())),
                        invalid: Some(msg),
                        partial: std::mem::take(&mut self.buf),
                        waited: started.elapsed(),
                    })
                }
            }
            if let Some(end) = self.eof.clone() {
                if end == End::Timeout {
                    self.eof = None;
                }
                return Err(ClientError {
                    end,
                    invalid: None,
                    partial: std::mem::take(&mut self.buf),
                    waited: started.elapsed(),
                });
            }
            self.fill(deadline);
        }
    }

    /// Reads once (up to the deadline) into the buffer; records EOF/errors in `self.eof`.
    fn fill(&mut self, deadline: Instant) {
        let now = Instant::now();
        if now >= deadline {
            self.eof = Some(End::Timeout);
            return;
        }
        let left = (deadline - now).max(Duration::from_millis(1));
        let _ = self.io.tcp().set_read_timeout(Some(left));
        let mut chunk = [0u8; 64 * 1024];
        match self.io.read(&mut chunk) {
            Ok(0) => self.eof = Some(End::Eof),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                self.eof = Some(match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => End::Timeout,
                    io::ErrorKind::UnexpectedEof => End::Eof,
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => End::Reset,
                    io::ErrorKind::Interrupted => return,
                    _ => End::Error(e.to_string()),
                })
            }
        }
        // A timeout is not the end of the connection: a later call may read on.
        if self.eof == Some(End::Timeout) {
            self.eof = None;
            if Instant::now() >= deadline {
                self.eof = Some(End::Timeout);
            }
        }
    }

    /// Reads until the peer closes or `timeout` passes: everything received, and how it ended.
    pub fn read_to_end(&mut self, timeout: Duration) -> (Vec<u8>, End) {
        let deadline = Instant::now() + timeout;
        while self.eof.is_none() {
            self.fill(deadline);
        }
        let end = self.eof.clone().unwrap_or(End::Timeout);
        if end == End::Timeout {
            self.eof = None;
        }
        (std::mem::take(&mut self.buf), end)
    }

    /// Whether the peer closes the connection within `timeout` (any bytes before are dropped).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let (_, end) = self.read_to_end(timeout);
        end != End::Timeout
    }

    /// Bytes received but not yet consumed by a response.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}
