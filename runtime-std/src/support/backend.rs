//! Backend addresses: which socket addresses to try, in which order, for a configured
//! backend host. `localhost` always means both loopbacks (127.0.0.1 first, then ::1) so
//! that a Synapse listening on either one is found (synapse#2157); a name resolves to every
//! address it has; the address that last worked is tried first.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mxgate_core::config::Backend;

/// How long a DNS answer for a backend name is used before resolving again.
pub const RESOLVE_TTL: Duration = Duration::from_secs(30);

/// Addresses for `host` that need no resolver: IP literals (bracketed or not) and
/// `localhost` (RFC 6761: always loopback). `None` means "ask the resolver".
pub fn static_addrs(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(vec![SocketAddr::new(ip, port)]);
    }
    let lower = bare.trim_end_matches('.').to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Some(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]);
    }
    None
}

/// Removes repeated addresses, keeping the first occurrence's position.
pub fn dedup(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// Resolves `backend` with the system resolver (blocking: call it off the event loop).
pub fn resolve_blocking(backend: &Backend) -> io::Result<Vec<SocketAddr>> {
    if let Some(addrs) = static_addrs(&backend.host, backend.port) {
        return Ok(addrs);
    }
    let addrs = dedup((backend.host.as_str(), backend.port).to_socket_addrs()?);
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} resolved to no address", backend.host),
        ));
    }
    Ok(addrs)
}

/// A backend's addresses with their resolution time, and which one last accepted a connection.
#[derive(Debug)]
pub struct BackendAddrs {
    /// The configured backend (what to resolve).
    pub backend: Backend,
    is_static: bool,
    state: Mutex<AddrState>,
}

#[derive(Debug, Default)]
struct AddrState {
    addrs: Vec<SocketAddr>,
    resolved_at: Option<Instant>,
    last_good: Option<SocketAddr>,
}

impl BackendAddrs {
    pub fn new(backend: &Backend) -> BackendAddrs {
        let fixed = static_addrs(&backend.host, backend.port);
        BackendAddrs {
            backend: backend.clone(),
            is_static: fixed.is_some(),
            state: Mutex::new(AddrState {
                addrs: fixed.unwrap_or_default(),
                ..AddrState::default()
            }),
        }
    }

    /// The addresses to try, last good first; `None` when the name must be (re)resolved.
    pub fn cached(&self, now: Instant) -> Option<Vec<SocketAddr>> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = self.is_static
            || state
                .resolved_at
                .is_some_and(|at| now.saturating_duration_since(at) < RESOLVE_TTL);
        if !fresh || state.addrs.is_empty() {
            return None;
        }
        let mut addrs = state.addrs.clone();
        if let Some(pos) = state
            .last_good
            .and_then(|good| addrs.iter().position(|a| *a == good))
        {
            addrs[..=pos].rotate_right(1);
        }
        Some(addrs)
    }

    /// Records a resolver answer.
    pub fn store(&self, addrs: Vec<SocketAddr>, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.addrs = dedup(addrs);
        state.resolved_at = Some(now);
    }

    /// Records that `addr` accepted a connection: it is tried first next time.
    pub fn mark_good(&self, addr: SocketAddr) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_good = Some(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn localhost_means_both_loopbacks_ipv4_first() {
        for host in ["localhost", "LocalHost", "localhost.", "synapse.localhost"] {
            assert_eq!(
                static_addrs(host, 8008).unwrap(),
                [sa("127.0.0.1:8008"), sa("[::1]:8008")],
                "{host}"
            );
        }
        let b = Backend {
            host: "localhost".into(),
            port: 8008,
        };
        assert_eq!(resolve_blocking(&b).unwrap().len(), 2);
    }

    #[test]
    fn literals_need_no_resolver() {
        assert_eq!(static_addrs("127.0.0.1", 80).unwrap(), [sa("127.0.0.1:80")]);
        assert_eq!(static_addrs("::1", 80).unwrap(), [sa("[::1]:80")]);
        assert_eq!(static_addrs("[fd00::5]", 80).unwrap(), [sa("[fd00::5]:80")]);
        assert!(static_addrs("synapse.internal", 80).is_none());
    }

    #[test]
    fn last_good_address_is_tried_first() {
        let addrs = BackendAddrs::new(&Backend {
            host: "localhost".into(),
            port: 8008,
        });
        let now = Instant::now();
        assert_eq!(addrs.cached(now).unwrap()[0], sa("127.0.0.1:8008"));
        addrs.mark_good(sa("[::1]:8008"));
        assert_eq!(
            addrs.cached(now).unwrap(),
            [sa("[::1]:8008"), sa("127.0.0.1:8008")]
        );
        // Static addresses never expire.
        assert!(addrs.cached(now + Duration::from_secs(3600)).is_some());
    }

    #[test]
    fn resolved_names_expire_and_keep_order_without_repeats() {
        let addrs = BackendAddrs::new(&Backend {
            host: "synapse.internal".into(),
            port: 8008,
        });
        let now = Instant::now();
        assert!(addrs.cached(now).is_none());
        addrs.store(
            vec![
                sa("10.0.0.2:8008"),
                sa("10.0.0.1:8008"),
                sa("10.0.0.2:8008"),
            ],
            now,
        );
        assert_eq!(
            addrs.cached(now).unwrap(),
            [sa("10.0.0.2:8008"), sa("10.0.0.1:8008")]
        );
        addrs.mark_good(sa("10.0.0.1:8008"));
        assert_eq!(addrs.cached(now).unwrap()[0], sa("10.0.0.1:8008"));
        assert!(addrs.cached(now + RESOLVE_TTL).is_none());
    }
}
