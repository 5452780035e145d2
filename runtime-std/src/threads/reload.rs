//! Live reload for the std runtime (what SIGHUP does): the file is read and validated
//! exactly as `mxgate check` does; an invalid one is logged (file:line:key) and changes
//! nothing. A valid one becomes a new [`Generation`]: certificates reloaded, sockets of
//! added addresses bound (before anything changes, so a failure leaves the old
//! configuration whole), unchanged pools kept with their health state and idle
//! connections; then installed: new connections and the next request of every keep-alive
//! connection use it, exchanges in flight finish on theirs, sockets of removed addresses
//! are closed and their listeners' connections drained. Also the owner of the accept
//! threads (one per bound address).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use mxgate_core::config::Scheme;
use mxgate_core::{Config, ListenerId};
use rustls::ServerConfig;

use super::upstream::Upstreams;
use super::{accept, accept_loop, bind, spawn, Shared};
use crate::support::metrics::Metrics;
use crate::support::reload::{self, Carried};
use crate::support::tls::{Certificates, TlsError};

/// One configuration and what is built for it (see the module doc).
pub(crate) struct Generation {
    /// 0 at start; each reload that changes something adds one.
    pub id: u64,
    pub config: Arc<Config>,
    pub metrics: Metrics,
    pub upstreams: Upstreams,
    /// For https listeners.
    pub tls: Option<Tls>,
}

/// The rustls configurations of https listeners, both resolving the same certificates.
#[derive(Clone)]
pub(crate) struct Tls {
    /// ALPN `http/1.1` alone.
    pub http1: Arc<ServerConfig>,
    /// ALPN `h2`, then `http/1.1`: for listeners with `http2`.
    pub h2: Arc<ServerConfig>,
}

impl Tls {
    pub fn new(certs: &Arc<Certificates>) -> Result<Tls, TlsError> {
        Ok(Tls {
            http1: certs.server_config(false)?,
            h2: certs.server_config(true)?,
        })
    }

    /// What a listener with (`http2`) or without HTTP/2 offers.
    pub fn for_listener(&self, http2: bool) -> &Arc<ServerConfig> {
        if http2 {
            &self.h2
        } else {
            &self.http1
        }
    }
}

impl Generation {
    /// The listener a socket bound for the configured address `addr` serves.
    pub fn listener_at(&self, addr: SocketAddr) -> Option<ListenerId> {
        self.config
            .listeners
            .iter()
            .position(|l| l.bind.contains(&addr))
    }
}

/// An accept thread and how to stop it.
struct Accepting {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The accept threads by configured address, and what reloads need.
pub(crate) struct Listeners {
    accepting: HashMap<SocketAddr, Accepting>,
    certs: Option<Arc<Certificates>>,
    busy: SyncSender<(ListenerId, TcpStream)>,
}

impl Listeners {
    pub fn new(
        certs: Option<Arc<Certificates>>,
        busy: SyncSender<(ListenerId, TcpStream)>,
    ) -> Listeners {
        Listeners {
            accepting: HashMap::new(),
            certs,
            busy,
        }
    }

    /// Starts accepting on `socket`, bound for the configured address `configured`.
    pub fn start(
        &mut self,
        shared: &Arc<Shared>,
        configured: SocketAddr,
        socket: TcpListener,
    ) -> anyhow::Result<()> {
        let local = socket.local_addr()?;
        let current = shared.current();
        if let Some(l) = current.listener_at(configured) {
            let l = &current.config.listeners[l];
            tracing::info!(listener = %l.name, addr = %local, scheme = l.scheme.as_str(), "listening");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, busy, halt) = (shared.clone(), self.busy.clone(), stop.clone());
        let thread = spawn("mxgate-accept", move || {
            accept_loop(&shared, &socket, &halt, |tcp, peer| {
                let generation = shared.current();
                match generation.listener_at(configured) {
                    Some(listener) => accept(&shared, generation, listener, tcp, peer, &busy),
                    None => drop(tcp), // removed by a reload a moment ago
                }
            })
        })?;
        self.accepting
            .insert(configured, Accepting { stop, thread });
        Ok(())
    }

    /// Stops every accept thread (shutdown) and waits for them.
    pub fn stop_all(&mut self) {
        for (_, accepting) in self.accepting.drain() {
            stop(accepting);
        }
    }

    /// Reloads on SIGHUP: the configuration file at `path` (certificates only without one).
    pub fn reload(&mut self, shared: &Arc<Shared>, path: Option<&Path>) {
        let Some(path) = path else {
            match self.certs.as_deref().map(Certificates::reload) {
                None => tracing::info!(
                    "SIGHUP: no configuration file and no TLS listener: nothing to reload"
                ),
                Some(Ok(())) => tracing::info!("SIGHUP: certificates reloaded"),
                Some(Err(err)) => tracing::error!(
                    error = %err,
                    "SIGHUP: certificate reload failed; still serving the previous certificates"
                ),
            }
            return;
        };
        let shown = path.display().to_string();
        let result = reload::load(path).and_then(|config| self.apply(shared, config));
        match result {
            Ok(false) => tracing::info!(
                config = %shown,
                "SIGHUP: configuration unchanged; certificates reloaded"
            ),
            Ok(true) => tracing::info!(
                config = %shown,
                generation = shared.current().id,
                "SIGHUP: configuration reloaded; new connections and requests use it"
            ),
            Err(err) => tracing::error!(
                "SIGHUP: {err:#}; still serving the previous configuration, unchanged"
            ),
        }
    }

    /// Installs `config`; `false` when it equals the current one (certificates reloaded).
    fn apply(&mut self, shared: &Arc<Shared>, config: Config) -> anyhow::Result<bool> {
        let current = shared.current();
        let (config, Carried { pools, unchanged }) = reload::prepare(&current.config, config)?;

        // Certificates, in the same step: a failure leaves everything as it was.
        let needs_tls = config.listeners.iter().any(|l| l.scheme == Scheme::Https);
        let certs = match (&self.certs, needs_tls) {
            (Some(certs), _) => {
                certs
                    .reload_with(&config.tls)
                    .context("cannot load the TLS certificates")?;
                Some(certs.clone())
            }
            (None, true) => {
                Some(Certificates::load(&config).context("cannot load the TLS certificates")?)
            }
            (None, false) => None,
        };
        if unchanged {
            return Ok(false);
        }
        let tls = match (&certs, &current.tls) {
            (Some(_), Some(tls)) => Some(tls.clone()),
            (Some(certs), None) => Some(Tls::new(certs).context("cannot set up TLS")?),
            (None, _) => None,
        };

        // Sockets for added addresses, bound before anything changes.
        let bound: Vec<SocketAddr> = self.accepting.keys().copied().collect();
        let (to_bind, removed) = reload::socket_changes(&config, &bound);
        let mut opened = Vec::new();
        for plan in to_bind {
            let name = &config.listeners[plan.listener].name;
            let socket = bind(plan.addr, plan.v6_only)
                .with_context(|| format!("cannot listen on {} (listener {name})", plan.addr))?;
            opened.push((plan.addr, socket));
        }

        let metrics = current.metrics.reconfigured(&config, &pools);
        let reporter = shared.health().reconfigure(&config, &metrics, &pools);
        let generation = Generation {
            id: current.id + 1,
            upstreams: current.upstreams.reconfigured(&config, &pools, reporter),
            metrics,
            tls,
            config,
        };
        self.certs = certs;
        shared.install(generation);
        for (configured, socket) in opened {
            self.start(shared, configured, socket)?;
        }
        for addr in removed {
            if let Some(accepting) = self.accepting.remove(&addr) {
                stop(accepting);
                tracing::info!(%addr, "listener address removed by the reload: closed");
            }
        }
        Ok(true)
    }
}

/// Stops an accept thread (its socket closes as it returns, within its poll interval).
fn stop(accepting: Accepting) {
    accepting.stop.store(true, Ordering::SeqCst);
    let _ = accepting.thread.join();
}
