//! The service manager, for both runtimes: listening sockets it passes (socket activation:
//! `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), matched to listeners by name or address,
//! so that restarts and upgrades refuse no connection; and what mxgate tells it
//! (`sd_notify`: `READY=1` once listening, `RELOADING=1` with `MONOTONIC_USEC` and `READY=1`
//! around a reload, `STOPPING=1` when draining, `STATUS=` with the open connections).
//! Both go through the `sd-notify` crate and are no-ops without a service manager.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use mxgate_core::Config;
use sd_notify::NotifyState;
use socket2::{Socket, Type};

use super::net::{self, BindPlan};

/// Sockets passed by the service manager, until listeners take them.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Vec<Passed>,
}

#[derive(Debug)]
struct Passed {
    /// `FileDescriptorName=` (systemd's default is the socket unit's name).
    name: String,
    local: SocketAddr,
    socket: TcpListener,
}

/// The descriptors were taken already (wrapping them twice would close them twice).
static TAKEN: AtomicBool = AtomicBool::new(false);

impl Inherited {
    /// The listening TCP sockets passed to this process (none without socket activation,
    /// and none on a second call). A passed descriptor that is not a listening TCP socket
    /// is an error: the unit is wrong.
    pub fn from_env() -> io::Result<Inherited> {
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Ok(Inherited::default());
        }
        let mut sockets = Vec::new();
        for (fd, name) in sd_notify::listen_fds_with_names()? {
            sockets.push(Passed::adopt(fd, name)?);
        }
        if !sockets.is_empty() {
            let names: Vec<String> = sockets
                .iter()
                .map(|s| format!("{}={}", s.name, s.local))
                .collect();
            tracing::info!(sockets = %names.join(", "), "listening sockets passed by the service manager");
        }
        Ok(Inherited { sockets })
    }

    /// Sockets as if passed (tests).
    pub fn from_sockets(sockets: Vec<(String, TcpListener)>) -> io::Result<Inherited> {
        let sockets = sockets
            .into_iter()
            .map(|(name, socket)| {
                Ok(Passed {
                    name,
                    local: socket.local_addr()?,
                    socket,
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Inherited { sockets })
    }

    /// The passed socket for `plan` of `config`, if any: one named after the plan's
    /// listener with the plan's address (or the only one of that name when the listener
    /// binds one address), else one whose name is no listener's with the plan's address.
    pub fn take(&mut self, config: &Config, plan: &BindPlan) -> Option<TcpListener> {
        let listener = config.listeners.get(plan.listener)?;
        let named = |p: &Passed| p.name == listener.name;
        let unnamed = |p: &Passed| !config.listeners.iter().any(|l| l.name == p.name);
        let position = self
            .sockets
            .iter()
            .position(|p| named(p) && p.local == plan.addr)
            .or_else(|| {
                let of_name: Vec<usize> = (0..self.sockets.len())
                    .filter(|&i| named(&self.sockets[i]))
                    .collect();
                (listener.bind.len() == 1 && of_name.len() == 1).then(|| of_name[0])
            })
            .or_else(|| {
                self.sockets
                    .iter()
                    .position(|p| unnamed(p) && p.local == plan.addr)
            })?;
        let passed = self.sockets.remove(position);
        if passed.local != plan.addr {
            tracing::info!(listener = %listener.name, configured = %plan.addr, passed = %passed.local, "listener takes the socket passed under its name");
        }
        Some(passed.socket)
    }

    /// Closes the passed sockets no listener took, saying so.
    pub fn finish(self) {
        for passed in self.sockets {
            tracing::warn!(name = %passed.name, addr = %passed.local, "a socket passed by the service manager matches no listener (by name or address): closed");
        }
    }
}

impl Passed {
    fn adopt(fd: RawFd, name: String) -> io::Result<Passed> {
        // SAFETY: the service manager passed this descriptor to this process for it to own
        // (LISTEN_PID is ours), and `TAKEN` makes sure it is wrapped once.
        let socket = unsafe { Socket::from_raw_fd(fd) };
        let listening = socket.r#type()? == Type::STREAM && socket.is_listener()?;
        let local = socket.local_addr()?.as_socket();
        match (listening, local) {
            (true, Some(local)) => {
                socket.set_nonblocking(true)?;
                Ok(Passed {
                    name,
                    local,
                    socket: socket.into(),
                })
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {fd} ({name}) passed by the service manager is not a listening TCP socket"),
            )),
        }
    }
}

/// The socket for `plan`: passed by the service manager, else bound now (non-blocking).
pub fn socket_for(
    inherited: &mut Inherited,
    config: &Config,
    plan: &BindPlan,
) -> io::Result<TcpListener> {
    match inherited.take(config, plan) {
        Some(socket) => Ok(socket),
        None => net::bind(plan.addr, plan.v6_only),
    }
}

/// What `STATUS=` says.
pub fn status_line(open_connections: usize, generation: u64) -> String {
    format!("{open_connections} client connections open; configuration generation {generation}")
}

/// `READY=1`: the listeners are up (at start, and after a reload).
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` with `MONOTONIC_USEC` (as systemd wants for reloads), before a reload.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(err) => tracing::debug!(error = %err, "cannot read the monotonic clock for sd_notify"),
    }
}

/// `STOPPING=1`: draining.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// `STATUS=` alone.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!(error = %err, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxgate_core::config::parse_config;
    use std::path::Path;

    #[test]
    fn passed_sockets_match_listeners_by_name_then_address() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpListener::bind("127.0.0.1:0").unwrap();
        let (pa, pb, pc) = (
            a.local_addr().unwrap(),
            b.local_addr().unwrap(),
            c.local_addr().unwrap(),
        );
        // `client` binds an address the passed socket does not have: taken by name.
        // `federation` is found by address under the socket unit's name.
        let text = format!(
            "server_name = \"example.com\"\nhomeserver = \"http://127.0.0.1:8008\"\n\
             [[listeners]]\nname = \"client\"\nrole = \"client\"\nbind = [\"127.0.0.1:1\"]\n\
             [[listeners]]\nname = \"federation\"\nrole = \"federation\"\nbind = [\"{pb}\"]\n"
        );
        let config = parse_config(&text, Path::new("t.toml")).unwrap();
        let mut inherited = Inherited::from_sockets(vec![
            ("client".into(), a),
            ("mxgate.socket".into(), b),
            ("mxgate.socket".into(), c),
        ])
        .unwrap();
        let plans = net::plan(&config);
        let client = inherited.take(&config, &plans[0]).expect("by name");
        assert_eq!(client.local_addr().unwrap(), pa);
        let federation = inherited.take(&config, &plans[1]).expect("by address");
        assert_eq!(federation.local_addr().unwrap(), pb);
        // Nothing left for a second take; the unmatched one stays for `finish`.
        assert!(inherited.take(&config, &plans[1]).is_none());
        assert_eq!(inherited.sockets.len(), 1);
        assert_eq!(inherited.sockets[0].local, pc);
    }

    #[test]
    fn a_descriptor_that_is_no_listening_socket_is_refused() {
        let stream_owner = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(stream_owner.local_addr().unwrap()).unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(stream);
        let err = Passed::adopt(fd, "x".into()).unwrap_err();
        assert!(
            err.to_string().contains("not a listening TCP socket"),
            "{err}"
        );
    }
}
