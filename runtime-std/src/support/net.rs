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
}
