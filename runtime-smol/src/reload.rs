//! Live reload on SIGHUP: the configuration file is read and validated exactly as `mxgate
//! check` does; an invalid one is logged (file:line:key) and changes nothing. A valid one
//! becomes a new [`Generation`]: certificates reloaded, sockets of added addresses bound
//! (all before anything changes, so a failure leaves the old configuration whole), pools
//! that did not change kept with their health state and idle connections, then installed:
//! new connections and the next request of every keep-alive connection use it, exchanges
//! in flight finish on theirs, sockets of removed addresses are closed and their
//! listeners' connections drained. Also the owner of the accept loops.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use async_signal::Signals;
use mxgate_core::config::Scheme;
use mxgate_core::Config;
use mxgate_std::support::reload::{self, Carried};
use mxgate_std::support::tls::Certificates;
use mxgate_std::support::{net, systemd};
use smol::channel::Sender;
use smol::stream::StreamExt;
use smol::{future, Executor};

use crate::listener::{self, Bound};
use crate::{Generation, Shared};

/// Applies reloads; owns the accept loops (one per bound address).
pub(crate) struct Reloader {
    shared: Arc<Shared>,
    executor: Arc<Executor<'static>>,
    certs: Option<Arc<Certificates>>,
    path: Option<PathBuf>,
    /// Per configured address, its accept loop's stop (dropping it closes the socket).
    accepting: HashMap<SocketAddr, Sender<()>>,
}

/// What a reload did, for the log line.
struct Applied {
    added: Vec<SocketAddr>,
    removed: Vec<SocketAddr>,
    pools_kept: usize,
    pools: usize,
}

impl Reloader {
    pub fn new(
        shared: Arc<Shared>,
        executor: Arc<Executor<'static>>,
        certs: Option<Arc<Certificates>>,
        path: Option<PathBuf>,
    ) -> Reloader {
        Reloader {
            shared,
            executor,
            certs,
            path,
            accepting: HashMap::new(),
        }
    }

    /// Starts the accept loop of a bound socket.
    pub fn start_accepting(&mut self, bound: Bound) {
        let current = self.shared.current();
        if let Some(l) = current.listener_at(bound.configured) {
            let l = &current.config.listeners[l];
            tracing::info!(listener = %l.name, addr = %bound.addr, scheme = l.scheme.as_str(), "listening");
        }
        let (stop, stopped) = smol::channel::bounded(1);
        self.accepting.insert(bound.configured, stop);
        let task =
            listener::accept_loop(self.shared.clone(), self.executor.clone(), bound, stopped);
        self.executor.spawn(task).detach();
    }

    /// Reloads on each SIGHUP until shutdown begins. Runs even without a configuration
    /// file so that SIGHUP never kills the process.
    pub async fn run(mut self, signals: Option<Signals>) {
        let Some(mut signals) = signals else {
            return;
        };
        let shutdown = self.shared.shutdown.clone();
        loop {
            let next = future::or(async { Some(signals.next().await) }, async {
                let _ = shutdown.recv().await;
                None
            })
            .await;
            match next {
                None | Some(None) => return,
                Some(Some(Err(err))) => {
                    tracing::warn!(error = %err, "waiting for SIGHUP failed");
                    return;
                }
                Some(Some(Ok(_))) => self.reload().await,
            }
        }
    }

    /// One reload, logged, announced to the service manager (`RELOADING=1`, then
    /// `READY=1`: the process serves either way).
    pub async fn reload(&mut self) {
        systemd::reloading();
        self.reload_logged().await;
        systemd::ready(&crate::status(&self.shared));
    }

    async fn reload_logged(&mut self) {
        let Some(path) = self.path.clone() else {
            self.reload_certificates_only().await;
            return;
        };
        let shown = path.display().to_string();
        let loaded = smol::unblock(move || reload::load(&path)).await;
        let config = match loaded {
            Ok(config) => config,
            Err(err) => {
                tracing::error!(
                    "SIGHUP: {err:#}; still serving the previous configuration, unchanged"
                );
                return;
            }
        };
        match self.apply(config).await {
            Ok(None) => tracing::info!(
                config = %shown,
                "SIGHUP: configuration unchanged; certificates reloaded"
            ),
            Ok(Some(applied)) => tracing::info!(
                config = %shown,
                generation = self.shared.generation(),
                added = ?applied.added,
                removed = ?applied.removed,
                pools = applied.pools,
                pools_kept = applied.pools_kept,
                "SIGHUP: configuration reloaded; new connections and requests use it"
            ),
            Err(err) => tracing::error!(
                config = %shown,
                "SIGHUP: {err:#}; still serving the previous configuration, unchanged"
            ),
        }
    }

    async fn reload_certificates_only(&self) {
        match &self.certs {
            None => tracing::info!(
                "SIGHUP: no configuration file and no TLS listener: nothing to reload"
            ),
            Some(certs) => {
                let certs = certs.clone();
                match smol::unblock(move || certs.reload()).await {
                    Ok(()) => tracing::info!("SIGHUP: certificates reloaded"),
                    Err(err) => tracing::error!(
                        error = %err,
                        "SIGHUP: certificate reload failed; still serving the previous certificates"
                    ),
                }
            }
        }
    }

    /// Installs `config` (see the module doc); `None` when it equals the current one (only
    /// the certificates were reloaded).
    async fn apply(&mut self, config: Config) -> anyhow::Result<Option<Applied>> {
        let current = self.shared.current();
        let (config, Carried { pools, unchanged }) = reload::prepare(&current.config, config)?;

        // Certificates, in the same step: a failure leaves everything as it was.
        let needs_tls = config.listeners.iter().any(|l| l.scheme == Scheme::Https);
        let certs = match (&self.certs, needs_tls) {
            (Some(certs), _) => {
                let (certs, settings) = (certs.clone(), config.tls.clone());
                smol::unblock(move || certs.reload_with(&settings).map(|()| certs))
                    .await
                    .map(Some)
                    .context("cannot load the TLS certificates")?
            }
            (None, true) => {
                let config = config.clone();
                Some(
                    smol::unblock(move || Certificates::load(&config))
                        .await
                        .context("cannot load the TLS certificates")?,
                )
            }
            (None, false) => None,
        };
        if unchanged {
            return Ok(None);
        }
        let tls = match (&certs, &current.tls) {
            (Some(_), Some(acceptor)) => Some(acceptor.clone()),
            (Some(certs), None) => Some(crate::Acceptors::new(certs).context("cannot set up TLS")?),
            (None, _) => None,
        };

        // Sockets for added addresses, bound before anything changes.
        let bound: Vec<SocketAddr> = self.accepting.keys().copied().collect();
        let (to_bind, removed) = reload::socket_changes(&config, &bound);
        let mut opened = Vec::new();
        for plan in to_bind {
            let name = &config.listeners[plan.listener].name;
            let socket = net::bind(plan.addr, plan.v6_only)
                .with_context(|| format!("cannot listen on {} (listener {name})", plan.addr))?;
            opened.push(Bound::new(plan.addr, socket)?);
        }

        let metrics = current.metrics.reconfigured(&config, &pools);
        let reporter = self.shared.health.reconfigure(&config, &metrics, &pools);
        let generation = Generation {
            id: current.id + 1,
            listener_metrics: (0..config.listeners.len())
                .map(|id| metrics.listener(id))
                .collect(),
            upstreams: current.upstreams.reconfigured(&config, &pools, reporter),
            metrics,
            tls,
            config: config.clone(),
        };
        self.certs = certs;
        self.shared.install(generation);

        let added: Vec<SocketAddr> = opened.iter().map(|b| b.configured).collect();
        for bound in opened {
            self.start_accepting(bound);
        }
        for addr in &removed {
            // Dropping the stop closes the socket as its loop ends.
            self.accepting.remove(addr);
            tracing::info!(%addr, "listener address removed by the reload: closed");
        }
        Ok(Some(Applied {
            added,
            removed,
            pools_kept: pools.iter().flatten().count(),
            pools: pools.len(),
        }))
    }
}
