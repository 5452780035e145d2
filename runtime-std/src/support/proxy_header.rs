//! Reading the PROXY protocol header (v1 or v2) on listeners with `proxy_protocol = true`,
//! before TLS and before HTTP, without losing a byte of what follows it.
//!
//! The trick: the socket is *peeked* (`MSG_PEEK`), and only bytes known to belong to the
//! header are consumed. While [`mxgate_core::proxy_protocol::parse`] needs more, everything
//! peeked is header (so it is consumed and the next peek blocks until new bytes arrive: no
//! spinning); once it has the header, exactly its remaining bytes are consumed. What follows
//! (a TLS ClientHello, an HTTP request) stays in the kernel's buffer for the usual reader,
//! so no stream wrapper is needed and TLS and the engine are untouched.
//!
//! [`HeaderReader`] is that logic, I/O-free; [`read_blocking`] drives it on a std
//! `TcpStream` (the smol runtime drives it with async peeks). Only peers in
//! `forwarding.trusted_proxies` may send a header ([`admit`]); other connections are closed.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use mxgate_core::proxy_protocol::{self, ProxyError, ProxyHeader, MAX_HEADER_LEN};
use mxgate_core::{Config, ListenerId};

/// Why a connection on a PROXY protocol listener was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("peer {0} is not in forwarding.trusted_proxies: PROXY protocol listeners only accept trusted proxies")]
    Untrusted(SocketAddr),
    #[error(transparent)]
    Malformed(#[from] ProxyError),
    #[error("connection closed before the end of the PROXY header")]
    Eof,
    #[error("no complete PROXY header within timeouts.client_header")]
    Timeout,
    #[error("reading the PROXY header: {0}")]
    Io(io::Error),
}

impl From<io::Error> for ProxyHeaderError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ProxyHeaderError::Timeout,
            io::ErrorKind::UnexpectedEof => ProxyHeaderError::Eof,
            _ => ProxyHeaderError::Io(e),
        }
    }
}

/// What to do with a connection just accepted on `listener` from `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not a PROXY protocol listener: carry on with the socket's peer address.
    Direct,
    /// Read the header first ([`HeaderReader`], [`read_blocking`]).
    ReadHeader,
}

/// Whether a connection needs its PROXY header read; refuses untrusted peers on PROXY
/// protocol listeners.
pub fn admit(
    config: &Config,
    listener: ListenerId,
    peer: SocketAddr,
) -> Result<Admission, ProxyHeaderError> {
    let proxied = config
        .listeners
        .get(listener)
        .is_some_and(|l| l.proxy_protocol);
    if !proxied {
        return Ok(Admission::Direct);
    }
    if Config::contains(&config.forwarding.trusted_proxies, peer.ip()) {
        Ok(Admission::ReadHeader)
    } else {
        Err(ProxyHeaderError::Untrusted(peer))
    }
}

/// The next thing to do while reading a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Consume (read and drop) exactly this many bytes, then wait for more and peek again.
    Consume(usize),
    /// The header is complete: consume exactly `consume` more bytes and stop.
    Done { header: ProxyHeader, consume: usize },
}

/// The I/O-free header reader: feed it what a peek returned.
#[derive(Debug, Default)]
pub struct HeaderReader {
    /// Header bytes already consumed from the socket.
    consumed: Vec<u8>,
}

impl HeaderReader {
    pub fn new() -> HeaderReader {
        HeaderReader::default()
    }

    /// `peeked`: what the socket holds now (non-empty; an empty peek is end of stream).
    pub fn step(&mut self, peeked: &[u8]) -> Result<Step, ProxyHeaderError> {
        if peeked.is_empty() {
            return Err(ProxyHeaderError::Eof);
        }
        let room = MAX_HEADER_LEN.saturating_sub(self.consumed.len());
        let peeked = &peeked[..peeked.len().min(room)];
        let before = self.consumed.len();
        self.consumed.extend_from_slice(peeked);
        match proxy_protocol::parse(&self.consumed)? {
            Some((header, total)) => {
                self.consumed.truncate(before);
                Ok(Step::Done {
                    header,
                    consume: total - before,
                })
            }
            // The parser decides within MAX_HEADER_LEN bytes; this is only a guard.
            None if self.consumed.len() >= MAX_HEADER_LEN => {
                Err(ProxyHeaderError::Malformed(ProxyError::NotProxyProtocol))
            }
            None => Ok(Step::Consume(peeked.len())),
        }
    }
}

/// Reads the PROXY header from a blocking socket by `deadline`; returns the client address
/// to use (the header's source, or `peer` for `LOCAL`/`UNKNOWN`). Leaves the socket's read
/// timeout unset.
pub fn read_blocking(
    tcp: &TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Result<SocketAddr, ProxyHeaderError> {
    let result = read_blocking_inner(tcp, peer, deadline);
    let _ = tcp.set_read_timeout(None);
    result
}

fn read_blocking_inner(
    tcp: &TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Result<SocketAddr, ProxyHeaderError> {
    let mut reader = HeaderReader::new();
    let mut buf = vec![0u8; MAX_HEADER_LEN];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProxyHeaderError::Timeout);
        }
        tcp.set_read_timeout(Some(left))?;
        let n = match tcp.peek(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let consume = match reader.step(&buf[..n])? {
            Step::Consume(k) => k,
            Step::Done { header, consume } => {
                (&*tcp).read_exact(&mut buf[..consume])?;
                return Ok(header.source_or(peer));
            }
        };
        (&*tcp).read_exact(&mut buf[..consume])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    use mxgate_core::config::Cidr;

    const V1: &[u8] = b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 443\r\n";

    fn v2_tcp4() -> Vec<u8> {
        let mut b = proxy_protocol::V2_SIGNATURE.to_vec();
        b.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
        b.extend_from_slice(&[198, 51, 100, 7, 127, 0, 0, 1]);
        b.extend_from_slice(&5555u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    /// Feeds `stream` in `cuts` pieces through the reader, as a socket would deliver them.
    fn run(stream: &[u8], cuts: &[usize]) -> (Result<ProxyHeader, String>, usize) {
        let mut reader = HeaderReader::new();
        let mut pos = 0; // consumed
        let mut avail = 0; // delivered
        let mut cuts = cuts.iter().copied().chain(std::iter::once(stream.len()));
        loop {
            if avail == pos {
                match cuts.next() {
                    Some(c) => avail = c.max(avail).min(stream.len()),
                    None => return (Err("eof".into()), pos),
                }
                if avail == pos {
                    continue;
                }
            }
            match reader.step(&stream[pos..avail]) {
                Ok(Step::Consume(k)) => {
                    assert_eq!(k, avail - pos, "consumes all it peeked while incomplete");
                    pos += k;
                }
                Ok(Step::Done { header, consume }) => return (Ok(header), pos + consume),
                Err(e) => return (Err(e.to_string()), pos),
            }
        }
    }

    #[test]
    fn every_split_keeps_the_bytes_after_the_header() {
        for header in [V1.to_vec(), v2_tcp4()] {
            let mut stream = header.clone();
            stream.extend_from_slice(b"\x16\x03\x01 client hello");
            for a in 0..stream.len() {
                for b in [a, a + 1, a + 7, stream.len()] {
                    let (got, consumed) = run(&stream, &[a, b]);
                    let got = got.unwrap_or_else(|e| panic!("cut at {a},{b}: {e}"));
                    assert_eq!(
                        got.source_or("10.0.0.1:1".parse().unwrap()),
                        "198.51.100.7:5555".parse().unwrap()
                    );
                    assert_eq!(consumed, header.len(), "cut at {a},{b}");
                }
            }
        }
    }

    #[test]
    fn garbage_and_eof_are_refused() {
        let (got, _) = run(b"GET / HTTP/1.1\r\n\r\n", &[]);
        assert!(got.is_err());
        let mut r = HeaderReader::new();
        assert!(matches!(r.step(b""), Err(ProxyHeaderError::Eof)));
    }

    fn config(proxy_protocol: bool, trusted: &[&str]) -> Config {
        let mut c = crate::support::testutil::config();
        c.listeners[1].proxy_protocol = proxy_protocol;
        c.forwarding.trusted_proxies = trusted.iter().map(|t| t.parse::<Cidr>().unwrap()).collect();
        c
    }

    #[test]
    fn only_trusted_peers_on_proxy_listeners() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        assert_eq!(
            admit(&config(false, &[]), 1, peer).unwrap(),
            Admission::Direct
        );
        assert!(matches!(
            admit(&config(true, &[]), 1, peer),
            Err(ProxyHeaderError::Untrusted(_))
        ));
        let c = config(true, &["127.0.0.1"]);
        assert_eq!(admit(&c, 1, peer).unwrap(), Admission::ReadHeader);
        assert_eq!(admit(&c, 1, mapped).unwrap(), Admission::ReadHeader);
        assert_eq!(admit(&c, 0, peer).unwrap(), Admission::Direct);
    }

    #[test]
    fn blocking_read_over_a_socket_in_pieces() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sender = thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_nodelay(true).unwrap();
            for piece in [&V1[..3], &V1[3..20], &V1[20..]] {
                s.write_all(piece).unwrap();
                thread::sleep(Duration::from_millis(20));
            }
            s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            thread::sleep(Duration::from_millis(200));
        });
        let (tcp, peer) = listener.accept().unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let source = read_blocking(&tcp, peer, deadline).unwrap();
        assert_eq!(source, "198.51.100.7:5555".parse().unwrap());
        let mut rest = [0u8; 18];
        (&tcp).read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n\r\n");
        sender.join().unwrap();
    }

    #[test]
    fn blocking_read_times_out_on_a_silent_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).unwrap();
        let (tcp, peer) = listener.accept().unwrap();
        let started = Instant::now();
        let got = read_blocking(&tcp, peer, started + Duration::from_millis(100));
        assert!(matches!(got, Err(ProxyHeaderError::Timeout)), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
