//! mxgate on the smol runtime: the I/O shell around `mxgate-core`'s sans-IO engine.
//!
//! [`serve`] binds every configured listener, then runs a shared `smol::Executor` on
//! `runtime.threads` threads (default: one per core) until its `shutdown` future resolves;
//! then it stops accepting, asks every connection to finish (`begin_shutdown`) and waits up
//! to `timeouts.drain` for them. [`run`] is `serve` with SIGTERM/SIGINT as the shutdown and
//! SIGHUP reloading the configuration file (`reload.rs`: each reload is a new
//! generation that connections move to between requests). Sockets passed by systemd
//! are used before binding any, and systemd is told what happens (`support::systemd`).
//! Everything that is not async lives in `mxgate-std` (shared with the std runtime).

mod acme;
mod driver;
mod h2driver;
mod listener;
mod metrics;
mod proxied;
mod reload;
mod shutdown;
mod signals;
mod stream;
mod upstream;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use anyhow::Context;
use futures_rustls::TlsAcceptor;
use mxgate_core::config::Scheme;
use mxgate_core::{Config, ListenerId};
use mxgate_std::support::health::HealthChecker;
use mxgate_std::support::limit::ConnectionLimit;
use mxgate_std::support::metrics::{ListenerMetrics, Metrics};
use mxgate_std::support::tls::Certificates;
use mxgate_std::support::{net, systemd};
use smol::channel::{Receiver, Sender};
use smol::{future, Async, Executor, LocalExecutor, Timer};

pub use signals::terminate;

use crate::listener::Bound;
use crate::shutdown::ShutdownWakers;
use crate::upstream::Upstreams;

/// One configuration and what is built for it: a reload makes a new generation, and
/// every connection moves to it at its next request (exchanges in flight finish on theirs).
pub(crate) struct Generation {
    /// Counts from 0 at start; each reload that changes something adds one.
    pub id: u64,
    pub config: Arc<Config>,
    pub metrics: Metrics,
    /// Per listener (by id): handles connections update without holding a copy each.
    pub listener_metrics: Vec<ListenerMetrics>,
    pub upstreams: Upstreams,
    /// For https listeners.
    pub tls: Option<Acceptors>,
}

/// The TLS acceptors of a generation: one offering `h2` and `http/1.1` by ALPN, for
/// listeners with `http2` (the default), one offering `http/1.1` alone. Both resolve
/// certificates through the same [`Certificates`], so a reload of those reaches both.
#[derive(Clone)]
pub(crate) struct Acceptors {
    http1: TlsAcceptor,
    h2: TlsAcceptor,
}

impl Acceptors {
    pub fn new(certs: &Arc<Certificates>) -> Result<Acceptors, mxgate_std::support::tls::TlsError> {
        Ok(Acceptors {
            http1: TlsAcceptor::from(certs.server_config(false)?),
            h2: TlsAcceptor::from(certs.server_config(true)?),
        })
    }

    /// The acceptor for a listener that does (or does not) offer HTTP/2.
    pub fn for_listener(&self, offers_h2: bool) -> &TlsAcceptor {
        if offers_h2 {
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

/// What every task of a running proxy shares.
pub(crate) struct Shared {
    /// The configuration generation new connections and new requests use.
    current: RwLock<Arc<Generation>>,
    /// `current`'s id, read without the lock by connections between requests.
    generation: AtomicU64,
    /// The health thread (probes, passive ejection); stopped at shutdown.
    pub health: HealthChecker,
    pub limit: Arc<ConnectionLimit>,
    /// Closed (its sender dropped) when shutdown begins.
    pub shutdown: Receiver<()>,
    /// Connection tasks, woken when shutdown begins (and when a reload installs a new
    /// generation).
    pub shutdown_wakers: ShutdownWakers,
}

impl Shared {
    /// The current configuration generation.
    pub fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current generation's id (cheap: one atomic load).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Makes `generation` current and wakes every connection task to move to it.
    pub fn install(&self, generation: Generation) {
        let id = generation.id;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(generation);
        self.generation.store(id, Ordering::Release);
        self.shutdown_wakers.wake_all();
    }
}

/// Runs the proxy until SIGTERM or SIGINT, then shuts down gracefully. SIGHUP reloads
/// `path` (the file `config` was read from; without one, only the certificates).
pub fn run(config: Arc<Config>, path: Option<PathBuf>) -> anyhow::Result<()> {
    let shutdown = signals::terminate().context("cannot install signal handlers")?;
    let mut server = Server::bind(config)?;
    if let Some(path) = path {
        server = server.reload_from(path);
    }
    server.run(shutdown)
}

/// Runs the proxy until `shutdown` resolves, then shuts down gracefully. Returns an error
/// when a listener cannot be bound or the TLS material is unusable.
pub fn serve(config: Arc<Config>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    Server::bind(config)?.run(shutdown)
}

/// A proxy whose sockets are bound but which does not run yet (lets an embedder learn the
/// addresses of `:0` binds before running).
pub struct Server {
    shared: Arc<Shared>,
    shutdown_tx: Sender<()>,
    certs: Option<Arc<Certificates>>,
    listeners: Vec<Bound>,
    metrics_socket: Option<(SocketAddr, Async<TcpListener>)>,
    hangups: Option<async_signal::Signals>,
    config_path: Option<PathBuf>,
    acme: Option<acme::Acme>,
}

impl Server {
    /// Loads the TLS material and binds every listener (and the metrics listener).
    pub fn bind(config: Arc<Config>) -> anyhow::Result<Server> {
        let hangups = signals::hangups();
        let needs_tls = config.listeners.iter().any(|l| l.scheme == Scheme::Https);
        let certs = if needs_tls {
            Some(Certificates::load(&config).context("cannot load the TLS certificates")?)
        } else {
            None
        };
        let acme = match (&config.acme, &certs) {
            (Some(settings), Some(certs)) => Some(acme::prepare(settings, certs)?),
            _ => None,
        };
        let tls = match &certs {
            Some(certs) => Some(Acceptors::new(certs).context("cannot set up TLS")?),
            None => None,
        };
        // Sockets the service manager passed (socket activation) first, the rest bound now.
        let mut inherited =
            systemd::Inherited::from_env().context("cannot take the sockets passed by systemd")?;
        let mut listeners = Vec::new();
        for plan in net::plan(&config) {
            let name = &config.listeners[plan.listener].name;
            let socket = systemd::socket_for(&mut inherited, &config, &plan)
                .with_context(|| format!("cannot listen on {} (listener {name})", plan.addr))?;
            listeners.push(Bound::new(plan.addr, socket)?);
        }
        inherited.finish();
        if listeners.is_empty() {
            tracing::warn!("no listener configured: nothing to serve");
        }
        let metrics_socket = match config.runtime.metrics_bind {
            Some(addr) => {
                let socket = net::bind(addr, true)
                    .with_context(|| format!("cannot listen on {addr} (metrics)"))?;
                Some((socket.local_addr()?, Async::new(socket)?))
            }
            None => None,
        };
        let (shutdown_tx, shutdown) = smol::channel::bounded(1);
        let metrics = Metrics::new(&config);
        let health = HealthChecker::spawn(&config, &metrics)
            .context("cannot start the health checker thread")?;
        let listener_metrics = (0..config.listeners.len())
            .map(|id| metrics.listener(id))
            .collect();
        let max_connections = config.runtime.max_connections;
        let generation = Generation {
            id: 0,
            metrics,
            listener_metrics,
            upstreams: Upstreams::new(&config, health.reporter()),
            tls,
            config,
        };
        let shared = Arc::new(Shared {
            current: RwLock::new(Arc::new(generation)),
            generation: AtomicU64::new(0),
            health,
            limit: ConnectionLimit::new(max_connections),
            shutdown,
            shutdown_wakers: ShutdownWakers::default(),
        });
        Ok(Server {
            shared,
            shutdown_tx,
            certs,
            listeners,
            metrics_socket,
            hangups,
            config_path: None,
            acme,
        })
    }

    /// Makes SIGHUP reload the configuration from `path` (read and validated as `mxgate
    /// check` does; see the crate doc). Without it, SIGHUP reloads the certificates only.
    pub fn reload_from(mut self, path: PathBuf) -> Server {
        self.config_path = Some(path);
        self
    }

    /// Every bound client socket: listener name and address.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        let current = self.shared.current();
        self.listeners
            .iter()
            .map(|b| {
                let name = current
                    .listener_at(b.configured)
                    .map(|l| current.config.listeners[l].name.clone());
                (name.unwrap_or_default(), b.addr)
            })
            .collect()
    }

    /// The metrics listener's address, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_socket.as_ref().map(|(addr, _)| *addr)
    }

    /// Serves until `shutdown` resolves, then drains (see [`serve`]).
    pub fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let config = self.shared.current().config.clone();
        let threads = config
            .runtime
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            threads,
            max_connections = config.runtime.max_connections,
            "mxgate starting"
        );
        let executor = Arc::new(Executor::new());
        let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
        let mut workers = Vec::new();
        for i in 1..threads {
            let executor = executor.clone();
            let stop = stop_rx.clone();
            let worker = std::thread::Builder::new()
                .name(format!("mxgate-worker-{i}"))
                .spawn(move || smol::block_on(executor.run(stop.recv())))
                .context("cannot start executor threads")?;
            workers.push(worker);
        }
        // `main` (which awaits the signal future) runs as a (local: it need not be `Send`)
        // task, not as the future `block_on` polls: that one is polled on every wake-up of
        // the thread, and polling the signal stream costs a syscall (a pipe read) each time.
        let local = LocalExecutor::new();
        let main = local.spawn(self.main(executor.clone(), shutdown));
        let result = smol::block_on(executor.run(local.run(main)));
        drop(stop_tx);
        for worker in workers {
            let _ = worker.join();
        }
        result
    }

    async fn main(
        self,
        executor: Arc<Executor<'static>>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Server {
            shared,
            shutdown_tx,
            certs,
            listeners,
            metrics_socket,
            hangups,
            config_path,
            acme,
        } = self;
        let mut tasks = Vec::new();
        let mut reloader =
            reload::Reloader::new(shared.clone(), executor.clone(), certs, config_path);
        for bound in listeners {
            reloader.start_accepting(bound);
        }
        if let Some((addr, socket)) = metrics_socket {
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
            tasks.push(executor.spawn(metrics::serve(shared.clone(), executor.clone(), socket)));
        }
        tasks.push(executor.spawn(reloader.run(hangups)));
        tasks.push(executor.spawn(sweep_idle_upstreams(shared.clone())));
        if let Some(acme) = acme {
            // Certificates it installs go through the same swap a reload uses; its metric
            // goes to whichever generation is current (they share the series).
            let shared = shared.clone();
            tasks.push(
                executor.spawn(async move { acme.run(&shared, shared.shutdown.clone()).await }),
            );
        }
        systemd::ready(&status(&shared));

        shutdown.await;
        systemd::stopping(&format!("draining: {}", status(&shared)));
        let drain = shared.current().config.timeouts.drain;
        drop(shutdown_tx);
        shared.shutdown_wakers.begin();
        for task in tasks {
            task.await;
        }
        tracing::info!(
            open_connections = shared.limit.active(),
            drain_seconds = drain.as_secs_f64(),
            "shutting down: not accepting any more; letting exchanges in flight finish"
        );
        let deadline = Instant::now() + drain;
        loop {
            if shared.limit.active() == 0 {
                tracing::info!("all connections closed");
                break;
            }
            let released = shared.limit.listen();
            if shared.limit.active() == 0 {
                continue;
            }
            let over = future::or(
                async {
                    released.await;
                    false
                },
                async {
                    Timer::at(deadline).await;
                    true
                },
            )
            .await;
            if over {
                tracing::warn!(
                    open_connections = shared.limit.active(),
                    "drain time is over: dropping the remaining connections"
                );
                break;
            }
        }
        shared.current().upstreams.clear();
        shared.health.stop();
        Ok(())
    }
}

/// What the service manager's `STATUS=` says.
pub(crate) fn status(shared: &Shared) -> String {
    systemd::status_line(shared.limit.active(), shared.generation())
}

/// Closes idle upstream connections that expired or were closed by the backend (and
/// refreshes the service manager's `STATUS=`).
async fn sweep_idle_upstreams(shared: Arc<Shared>) {
    let interval = mxgate_std::support::pool::sweep_interval(&shared.current().config);
    loop {
        let stop = future::or(
            async {
                Timer::after(interval).await;
                false
            },
            async {
                let _ = shared.shutdown.recv().await;
                true
            },
        )
        .await;
        if stop {
            return;
        }
        systemd::status(&status(&shared));
        let closed = shared.current().upstreams.sweep();
        if closed > 0 {
            tracing::trace!(closed, "closed idle upstream connections");
        }
    }
}
