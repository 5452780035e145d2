//! mxgate on plain std threads: the `mxgate-core` engine driven by blocking `std::net`
//! sockets, rustls's blocking API and `std::sync::mpsc`. Same configuration, same behaviour
//! as the smol runtime; read this to see what embedding the core takes.
//!
//! # Design
//!
//! - **Accepting.** One thread per bound socket accepts. Each connection takes a slot
//!   (`runtime.threads`, default [`DEFAULT_THREADS`], at most `runtime.max_connections`) and
//!   gets its own thread. Without a free slot a single "busy" thread answers `503` and closes
//!   (short timeouts; past a small queue, sockets are simply closed).
//! - **A connection thread owns all mutable state**: the engine's `Connection`, the client
//!   socket with its rustls `ServerConnection`, the upstream socket (pooled via `support`).
//!   It follows the engine contract literally: perform every output (blocking writes, each
//!   bounded by a socket write timeout), then wait on one `mpsc` channel with
//!   `recv_timeout(engine deadline - now)` and feed back what arrives.
//! - **Reads block, so two reader threads per connection do them** (client, upstream). A
//!   reader reads only when handed a job, "read this socket into this buffer", and sends the
//!   result back with the buffer. The connection thread hands out a job only while the engine
//!   `wants_*_read()` and none is under way: each side reads at most one buffer ahead
//!   (backpressure), and nothing is allocated per read. The client reader reads raw TCP;
//!   TLS is decrypted on the connection thread, so the rustls session is never shared.
//!   Shutting a socket down ends a read under way on it.
//! - **HTTP/2** (`h2.rs`): a TLS connection that negotiated `h2` by ALPN, or a plain one
//!   on a listener with `http2 = true` whose first bytes are the connection preface (told
//!   by `peek`, nothing consumed), runs `mxgate_core::Http2Session` instead. Each stream
//!   that asks for an upstream gets its own connection, obtained on a short-lived helper
//!   thread and read by its own reader thread (numbered, so a late read of a released one
//!   is ignored): a long-poll on one stream never holds up another. Writes stay blocking
//!   on the connection thread, each bounded by `timeouts.send`.
//! - **Lingering close.** After `CloseClient`: close_notify, `shutdown(Write)`, then client
//!   bytes are discarded for up to 2 s or until EOF, so that a client still sending a body
//!   reads the error response instead of a reset.
//! - **Shutdown.** Every connection registers its channel. On shutdown, accepting stops, each
//!   connection gets `begin_shutdown` (after a request already waiting, or a short grace
//!   for a connection that has sent nothing yet), exchanges in flight get `timeouts.drain`
//!   to finish, and then the rest are closed. [`run`] installs the signal handlers before
//!   binding: SIGTERM/SIGINT shut down, SIGHUP reloads the configuration (`reload.rs`).
//! - **systemd.** Listening sockets passed by the service manager are used before binding
//!   any; `READY=1`, `RELOADING=1`, `STOPPING=1` and `STATUS=` are sent
//!   (`support::systemd`).

mod client;
mod connection;
mod h2;
mod reader;
mod reload;
mod upstream;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use event_listener::Listener as _;
use mxgate_core::config::Scheme;
use mxgate_core::{Config, ListenerId};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use self::reader::Event;
use self::reload::{Generation, Listeners, Tls};
use self::upstream::Upstreams;
use crate::support::health::HealthChecker;
use crate::support::limit::ConnectionLimit;
use crate::support::metrics::{self, Metrics};
use crate::support::tls::Certificates;
use crate::support::{net, pool, systemd};

/// Connection threads when `runtime.threads` is not set: room for a few hundred long-polls.
pub const DEFAULT_THREADS: usize = 512;
/// Over-limit connections waiting for their `503`; beyond that they are closed at once.
const BUSY_QUEUE: usize = 64;
/// Bound on each read and write while answering `503`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// What a running [`serve`] can be asked, from any thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Shut down gracefully (dropping every sender does too).
    Shutdown,
    /// Re-read the certificate files.
    ReloadCertificates,
    /// Reload the configuration file (and the certificates) live: what SIGHUP does.
    Reload,
}

/// Runs the proxy until SIGTERM or SIGINT, then shuts down gracefully; SIGHUP reloads
/// `path` (the file `config` was read from; without one, the certificates only).
pub fn run(config: Arc<Config>, path: Option<PathBuf>) -> anyhow::Result<()> {
    // Before anything is bound: from now on these signals are handled, never fatal.
    let signals = Signals::new([SIGTERM, SIGINT, SIGHUP]);
    let mut signals = signals.context("cannot install signal handlers")?;
    let (control, requests) = mpsc::channel();
    spawn("mxgate-signals", move || {
        for signal in signals.forever() {
            let request = match signal {
                SIGHUP => Control::Reload,
                _ => Control::Shutdown,
            };
            if request == Control::Shutdown {
                let signal = signal_hook::low_level::signal_name(signal).unwrap_or("?");
                tracing::info!(signal, "signal received: shutting down");
            }
            if control.send(request).is_err() {
                return;
            }
        }
    })?;
    serve_from(config, path, requests)
}

/// Binds every listener, serves until [`Control::Shutdown`], then shuts down gracefully.
/// Fails when a listener cannot be bound or the TLS material is unusable.
pub fn serve(config: Arc<Config>, control: Receiver<Control>) -> anyhow::Result<()> {
    serve_from(config, None, control)
}

/// [`serve`], with [`Control::Reload`] reloading the configuration from `path`.
pub fn serve_from(
    config: Arc<Config>,
    path: Option<PathBuf>,
    control: Receiver<Control>,
) -> anyhow::Result<()> {
    if config.acme.is_some() {
        anyhow::bail!(
            "no [tls] cert and key are configured, so certificates are to come by ACME, and \
             only the `mxgate` binary (the smol runtime) runs ACME; mxgate-std serves \
             configured certificates: set [tls] cert and key, or run `mxgate`"
        );
    }
    let https = config.listeners.iter().any(|l| l.scheme == Scheme::Https);
    let certs = match https {
        true => Some(Certificates::load(&config).context("cannot load the TLS certificates")?),
        false => None,
    };
    let tls = certs.as_ref().map(Tls::new);
    let tls = tls.transpose().context("cannot set up TLS")?;
    // Sockets the service manager passed (socket activation) first, the rest bound now.
    let inherited = systemd::Inherited::from_env();
    let mut inherited = inherited.context("cannot take the sockets passed by systemd")?;
    let mut sockets = Vec::new();
    for plan in net::plan(&config) {
        let name = &config.listeners[plan.listener].name;
        let socket = systemd::socket_for(&mut inherited, &config, &plan);
        let socket =
            socket.with_context(|| format!("cannot listen on {} (listener {name})", plan.addr))?;
        sockets.push((plan.addr, socket));
    }
    inherited.finish();
    let metrics_socket = match config.runtime.metrics_bind {
        Some(addr) => {
            Some(bind(addr, true).with_context(|| format!("cannot listen on {addr} (metrics)"))?)
        }
        None => None,
    };
    let metrics = Metrics::new(&config);
    // Active probes and passive ejection; stops when dropped (as `serve` returns).
    let health =
        HealthChecker::spawn(&config, &metrics).context("cannot start the health checker")?;
    let slots = config.runtime.threads.unwrap_or(DEFAULT_THREADS);
    let limit = ConnectionLimit::new(slots.min(config.runtime.max_connections));
    let generation = Generation {
        id: 0,
        metrics,
        upstreams: Upstreams::new(&config, health.reporter()),
        tls,
        config,
    };
    let shared = Arc::new(Shared {
        current: RwLock::new(Arc::new(generation)),
        generation: AtomicU64::new(0),
        health,
        limit,
        stopping: AtomicBool::new(false),
        connections: Mutex::default(),
        next_id: AtomicU64::new(0),
    });
    let version = env!("CARGO_PKG_VERSION");
    tracing::info!(
        version,
        connection_threads = shared.limit.max(),
        "mxgate-std starting"
    );

    let (busy_tx, busy_rx) = mpsc::sync_channel(BUSY_QUEUE);
    let busy_shared = shared.clone();
    spawn("mxgate-busy", move || busy_loop(&busy_shared, busy_rx))?;
    let mut listeners = Listeners::new(certs.clone(), busy_tx);
    for (configured, socket) in sockets {
        listeners.start(&shared, configured, socket)?;
    }
    if let Some(socket) = metrics_socket {
        let addr = socket.local_addr()?;
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
        let shared = shared.clone();
        spawn("mxgate-metrics", move || {
            accept_loop(&shared, &socket, &AtomicBool::new(false), |tcp, _| {
                if let Err(err) = scrape(&shared.current().metrics, tcp) {
                    tracing::debug!(error = %err, "metrics request failed");
                }
            })
        })?;
        // Not joined: a scrape must not hold up the shutdown.
    }

    // Until shutdown: reloads, and sweeping idle upstream connections.
    systemd::ready(&shared.status());
    loop {
        let sweep_every = pool::sweep_interval(&shared.current().config);
        match control.recv_timeout(sweep_every) {
            Ok(Control::ReloadCertificates) => reload_certificates(certs.as_deref()),
            Ok(Control::Reload) => {
                systemd::reloading();
                listeners.reload(&shared, path.as_deref());
                systemd::ready(&shared.status());
            }
            Ok(Control::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                systemd::status(&shared.status());
                shared.current().upstreams.sweep()
            }
        }
    }
    systemd::stopping(&format!("draining: {}", shared.status()));
    shared.stopping.store(true, Ordering::SeqCst);
    listeners.stop_all();
    shutdown(&shared);
    shared.health.stop();
    Ok(())
}

/// What every thread of a running proxy shares.
pub(crate) struct Shared {
    /// The configuration generation new connections and new requests use.
    current: RwLock<Arc<Generation>>,
    /// `current`'s id, read without the lock by connections between requests.
    generation: AtomicU64,
    health: HealthChecker,
    /// One slot per connection thread.
    limit: Arc<ConnectionLimit>,
    stopping: AtomicBool,
    /// Every open connection's channel, for shutdown.
    connections: Mutex<HashMap<u64, Sender<Event>>>,
    next_id: AtomicU64,
}

/// Keeps a connection in [`Shared::connections`] while it lives.
pub(crate) struct Registered<'a>(&'a Shared, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.connections().remove(&self.1);
    }
}

impl Shared {
    /// Registers a connection; check [`Shared::is_stopping`] afterwards, so that no shutdown
    /// is missed.
    fn register(&self, events: Sender<Event>) -> Registered<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.connections().insert(id, events);
        Registered(self, id)
    }

    /// The current configuration generation.
    fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current generation's id (one atomic load).
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn health(&self) -> &HealthChecker {
        &self.health
    }

    /// Makes `generation` current and tells every connection to move to it.
    fn install(&self, generation: Generation) {
        let id = generation.id;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(generation);
        self.generation.store(id, Ordering::Release);
        self.broadcast(|| Event::Reload);
    }

    /// What the service manager's `STATUS=` says.
    fn status(&self) -> String {
        systemd::status_line(self.limit.active(), self.generation())
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn broadcast(&self, event: impl Fn() -> Event) {
        for events in self.connections().values() {
            let _ = events.send(event());
        }
    }

    fn connections(&self) -> MutexGuard<'_, HashMap<u64, Sender<Event>>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Asks every connection to finish (accepting has stopped), and waits up to
/// `timeouts.drain`.
fn shutdown(shared: &Shared) {
    let (limit, drain) = (&shared.limit, shared.current().config.timeouts.drain);
    let drain_seconds = drain.as_secs_f64();
    tracing::info!(
        open_connections = limit.active(),
        drain_seconds,
        "shutting down: letting exchanges in flight finish"
    );
    shared.broadcast(|| Event::Shutdown);
    let deadline = Instant::now() + drain;
    while limit.active() > 0 {
        let released = limit.listen();
        if limit.active() > 0 && released.wait_deadline(deadline).is_none() {
            let open_connections = limit.active();
            tracing::warn!(
                open_connections,
                "drain time is over: closing the remaining connections"
            );
            shared.broadcast(|| Event::Abort);
            break;
        }
    }
    if limit.active() == 0 {
        tracing::info!("all connections closed");
    }
    shared.current().upstreams.clear();
}

/// A listening socket from `support::net` (non-blocking: see [`accept_loop`]).
fn bind(addr: SocketAddr, v6_only: bool) -> io::Result<TcpListener> {
    net::bind(addr, v6_only)
}

/// How often a waiting accept loop checks whether it is to stop.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> anyhow::Result<thread::JoinHandle<()>> {
    let thread = thread::Builder::new().name(name.into()).spawn(f);
    thread.with_context(|| format!("cannot start thread {name}"))
}

fn reload_certificates(certs: Option<&Certificates>) {
    match certs.map(Certificates::reload) {
        None => tracing::info!("SIGHUP: no TLS listener, nothing to reload"),
        Some(Ok(())) => tracing::info!("SIGHUP: certificates reloaded"),
        Some(Err(err)) => tracing::error!(
            error = %err,
            "SIGHUP: certificate reload failed; still serving the previous certificates"
        ),
    }
}

/// Accepts until shutdown begins or `halt` is set, handing each connection to `on_accept`.
/// The socket is non-blocking and waited on with a bounded poll: stopping needs no wake-up
/// connection, and another process accepting on the same socket (an upgrade) never leaves
/// this one blocked in `accept`.
fn accept_loop(
    shared: &Shared,
    socket: &TcpListener,
    halt: &AtomicBool,
    mut on_accept: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        if shared.is_stopping() || halt.load(Ordering::SeqCst) {
            return;
        }
        match net::wait_acceptable(socket, ACCEPT_POLL) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(err) => {
                tracing::warn!(error = %err, "waiting for connections failed");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let accepted = socket.accept();
        if matches!(&accepted, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            continue; // another process (or thread) took it
        }
        match accepted.and_then(|(tcp, peer)| tcp.set_nonblocking(false).map(|()| (tcp, peer))) {
            Ok((tcp, peer)) => on_accept(tcp, peer),
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A connection thread for a client connection if a slot is free, else the busy thread's `503`.
fn accept(
    shared: &Arc<Shared>,
    generation: Arc<Generation>,
    listener: ListenerId,
    tcp: TcpStream,
    peer: SocketAddr,
    busy: &SyncSender<(ListenerId, TcpStream)>,
) {
    let Some(permit) = shared.limit.try_acquire() else {
        let _ = busy.try_send((listener, tcp)); // when even that queue is full: closed
        return;
    };
    let shared = shared.clone();
    let thread = thread::Builder::new().name("mxgate-conn".into());
    if let Err(err) =
        thread.spawn(move || connection::serve(shared, generation, listener, tcp, peer, permit))
    {
        tracing::warn!(%peer, error = %err, "cannot start a connection thread");
    }
}

/// Answers connections over the limit, one after the other.
fn busy_loop(shared: &Shared, queue: Receiver<(ListenerId, TcpStream)>) {
    for (listener, tcp) in queue {
        let current = shared.current();
        let https = current
            .config
            .listeners
            .get(listener)
            .is_some_and(|l| l.scheme == Scheme::Https);
        if let Err(err) = answer_busy(
            current.tls.as_ref().map(|t| &t.http1).filter(|_| https),
            tcp,
        ) {
            tracing::debug!(error = %err, "answering 503 failed");
        }
    }
}

/// Writes the engine's 503 answer (after the TLS handshake on https listeners), then closes,
/// lingering briefly.
fn answer_busy(tls: Option<&Arc<ServerConfig>>, tcp: TcpStream) -> io::Result<()> {
    tcp.set_read_timeout(Some(BUSY_TIMEOUT))?;
    tcp.set_write_timeout(Some(BUSY_TIMEOUT))?;
    let tcp = match tls {
        None => {
            (&tcp).write_all(&mxgate_core::overloaded_response())?;
            tcp
        }
        Some(config) => {
            let session = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
            let mut stream = StreamOwned::new(session, tcp);
            stream.write_all(&mxgate_core::overloaded_response())?; // completes the handshake first
            stream.conn.send_close_notify();
            stream.flush()?;
            stream.sock
        }
    };
    tcp.shutdown(Shutdown::Write)?;
    let (deadline, mut buf) = (Instant::now() + BUSY_TIMEOUT, [0u8; 4096]);
    while Instant::now() < deadline && (&tcp).read(&mut buf)? > 0 {}
    Ok(())
}

/// One `GET /metrics` (the metrics listener answers one request per connection, in turn).
fn scrape(metrics: &Metrics, mut tcp: TcpStream) -> io::Result<()> {
    tcp.set_read_timeout(Some(metrics::REQUEST_TIMEOUT))?;
    tcp.set_write_timeout(Some(metrics::REQUEST_TIMEOUT))?;
    let (mut head, mut chunk) = (Vec::new(), [0u8; 1024]);
    while !metrics::head_complete(&head) && head.len() < metrics::MAX_REQUEST_HEAD {
        match tcp.read(&mut chunk)? {
            0 => break,
            n => head.extend_from_slice(&chunk[..n]),
        }
    }
    tcp.write_all(&metrics.respond(&head))?;
    tcp.shutdown(Shutdown::Write)
}

#[cfg(test)]
mod tests;
