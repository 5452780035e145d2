//! Listening sockets: `[::]` binds dual-stack (IPV6_V6ONLY off) unless the same port is also
//! bound on `0.0.0.0`, in which case each family gets its own socket; addresses are reusable
//! across quick restarts. Also the socket options every accepted or outgoing TCP connection gets.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use mxgate_core::Config;
use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog for client listeners.
pub const BACKLOG: i32 = 1024;

/// One socket to bind: which listener it serves and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindPlan {
    pub listener: usize,
    pub addr: SocketAddr,
    /// For IPv6 sockets: accept IPv6 only (`false` on `[::]` means dual-stack).
    pub v6_only: bool,
}

/// Every socket the configuration asks for, in listener order.
pub fn plan(config: &Config) -> Vec<BindPlan> {
    let all: Vec<SocketAddr> = config
        .listeners
        .iter()
        .flat_map(|l| l.bind.iter().copied())
        .collect();
    let mut plans = Vec::new();
    for (listener, l) in config.listeners.iter().enumerate() {
        for &addr in &l.bind {
            plans.push(BindPlan {
                listener,
                addr,
                v6_only: v6_only_for(addr, &all),
            });
        }
    }
    plans
}

/// `[::]:p` is dual-stack unless `0.0.0.0:p` is bound too (which would then collide).
pub fn v6_only_for(addr: SocketAddr, all: &[SocketAddr]) -> bool {
    match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => all
            .iter()
            .any(|a| matches!(a, SocketAddr::V4(v4) if v4.ip().is_unspecified() && v4.port() == v6.port())),
        _ => true,
    }
}

/// A listening, non-blocking socket for `addr`.
pub fn bind(addr: SocketAddr, v6_only: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(v6_only)?;
    }
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Options for every proxied TCP connection, client or upstream: no Nagle delay (responses
/// are written in pieces) and TCP keepalive so dead peers of idle connections are noticed.
pub fn tune(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new().with_time(std::time::Duration::from_secs(60));
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// Whether an idle keep-alive connection, in non-blocking mode, may be reused: reading it would
/// block, i.e. the backend neither closed it (read returns 0) nor sent anything unasked (a stray
/// byte would corrupt the next response).
pub fn idle_usable(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// At shutdown, how long a connection accepted a moment before, that has not sent a
/// request yet, gets to send one (closing it at once would lose a request in flight).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether bytes from the peer wait unread in `stream`'s receive buffer (never blocks).
/// At shutdown a connection with a request already sent is served, not closed.
pub fn pending_input(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: recv(2) into a 1-byte buffer we own; MSG_PEEK leaves the byte in the socket.
    let n = unsafe {
        libc::recv(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n > 0
}

/// Waits up to `timeout` for a connection to accept on `socket` (`false`: none came).
/// Lets an accept loop notice that it is to stop, and lets several processes accept on a
/// shared socket (an upgrade) without one blocking after the other took the connection.
pub fn wait_acceptable(socket: &TcpListener, timeout: std::time::Duration) -> io::Result<bool> {
    let mut fds = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(socket),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll(2) on one pollfd we own.
    match unsafe { libc::poll(&mut fds, 1, ms) } {
        n if n < 0 => {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => Ok(false),
                _ => Err(err),
            }
        }
        n => Ok(n > 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn wildcard_v6_is_dual_stack_unless_v4_wildcard_shares_the_port() {
        let alone = [sa("[::]:8448")];
        assert!(!v6_only_for(sa("[::]:8448"), &alone));
        let both = [sa("0.0.0.0:8448"), sa("[::]:8448")];
        assert!(v6_only_for(sa("[::]:8448"), &both));
        let other_port = [sa("0.0.0.0:443"), sa("[::]:8448")];
        assert!(!v6_only_for(sa("[::]:8448"), &other_port));
        assert!(v6_only_for(sa("[::1]:8448"), &alone));
    }

    #[test]
    fn dual_stack_socket_accepts_ipv4() {
        let Ok(listener) = bind(sa("[::]:0"), false) else {
            return; // no IPv6 on this machine
        };
        let port = listener.local_addr().unwrap().port();
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        tune(&accepted).unwrap();
        assert_eq!(
            mxgate_core::config::canonical_ip(peer.ip()),
            sa("127.0.0.1:1").ip()
        );
    }

    #[test]
    fn pending_input_and_acceptable_connections_are_seen_without_blocking() {
        let listener = bind(sa("127.0.0.1:0"), true).unwrap();
        let addr = listener.local_addr().unwrap();
        let short = std::time::Duration::from_millis(10);
        assert!(!wait_acceptable(&listener, short).unwrap());
        let mut client = TcpStream::connect(addr).unwrap();
        assert!(wait_acceptable(&listener, std::time::Duration::from_secs(5)).unwrap());
        let (accepted, _) = listener.accept().unwrap();
        assert!(!pending_input(&accepted));
        std::io::Write::write_all(&mut client, b"GET").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !pending_input(&accepted) {
            assert!(std::time::Instant::now() < deadline, "bytes not seen");
            std::thread::sleep(short);
        }
    }
}
