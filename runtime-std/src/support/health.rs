//! The health checker both runtimes run: one background thread owning the
//! [`PoolHealth`] state machine of every pool (see `mxgate_core::workers::health`).
//!
//! - **Active probes**: for pools with `health_interval` set, `GET /health` to each backend
//!   (plain `std::net`, one short-lived thread per probe so a backend that drops packets
//!   never delays the others), bounded by [`PROBE_TIMEOUT`]; `200` is healthy.
//! - **Passive ejection**: the runtimes report connect outcomes through a cloneable
//!   [`HealthReporter`] (an mpsc channel to the thread); repeated failures eject a backend.
//! - **Publishing**: transitions land in the pool's `HealthFlags` (the atomics the engine's
//!   balancer reads), in `tracing` (`backend down` / `backend up`) and in the
//!   `mxgate_backend_up{pool,backend}` gauge.
//!
//! The thread never blocks shutdown: it sleeps on its channel until the next deadline, and
//! ends when [`HealthChecker::stop`] is called (or the checker is dropped); probe threads
//! are detached and bounded by their own timeout.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use mxgate_core::config::Backend;
use mxgate_core::workers::health::{
    Availability, HealthEvent, HealthFlags, PoolHealth, ProbeFailure,
};
use mxgate_core::{Config, PoolId};
use prometheus_client::metrics::gauge::Gauge;

use super::backend;
use super::metrics::Metrics;

/// The longest a health probe may take, connect included.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most bytes of a probe's response read to find its status line.
const MAX_STATUS_LINE: usize = 1024;
/// The longest the thread sleeps without a deadline (it also wakes on every report).
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// A pool as the health thread knows it: by a number that stays the same across
/// configuration reloads for as long as the pool is unchanged (pool ids may not).
type PoolUid = u64;

enum Message {
    Connect {
        pool: PoolUid,
        backend: usize,
        ok: bool,
    },
    Answer {
        pool: PoolUid,
        backend: usize,
    },
    Probe {
        pool: PoolUid,
        backend: usize,
        result: Result<(), ProbeFailure>,
    },
    /// A reloaded configuration: the pools to watch from now on.
    Reconfigure(Vec<Watched>),
    Stop,
}

/// Reports connection outcomes to the health thread. Cheap to clone; a report after the
/// thread ended is dropped silently. `connect_ok` only sends when it can change something
/// (after a failure, or while the backend is not up), so the hot path is two atomic loads.
#[derive(Clone, Debug)]
pub struct HealthReporter {
    tx: Option<Sender<Message>>,
    pools: Arc<[ReporterPool]>,
}

#[derive(Debug)]
struct ReporterPool {
    uid: PoolUid,
    flags: Arc<HealthFlags>,
    /// Per backend: a failure was reported since the last success.
    failed: Box<[AtomicBool]>,
}

impl HealthReporter {
    fn new(config: &Config, uids: &[PoolUid], tx: Option<Sender<Message>>) -> HealthReporter {
        let pools = config
            .pools
            .iter()
            .zip(uids)
            .map(|(p, &uid)| ReporterPool {
                uid,
                flags: p.balancer.health_flags(),
                failed: (0..p.backends.len())
                    .map(|_| AtomicBool::new(false))
                    .collect(),
            })
            .collect();
        HealthReporter { tx, pools }
    }

    /// A reporter that reports nowhere (tests, embedders without health checks).
    pub fn disabled(config: &Config) -> HealthReporter {
        let uids: Vec<PoolUid> = (0..config.pools.len() as PoolUid).collect();
        HealthReporter::new(config, &uids, None)
    }

    /// A new connection to `backend` of `pool` was established.
    pub fn connect_ok(&self, pool: PoolId, backend: usize) {
        let Some(p) = self.pools.get(pool) else {
            return;
        };
        let had_failed = p
            .failed
            .get(backend)
            .is_some_and(|f| f.swap(false, Ordering::Relaxed));
        if had_failed || p.flags.state(backend) != Availability::Up {
            self.send(Message::Connect {
                pool: p.uid,
                backend,
                ok: true,
            });
        }
    }

    /// Connecting to `backend` of `pool` failed (every address of it: refused, unreachable,
    /// timed out, or its name did not resolve).
    pub fn connect_failed(&self, pool: PoolId, backend: usize) {
        let Some(p) = self.pools.get(pool) else {
            return;
        };
        if let Some(f) = p.failed.get(backend) {
            f.store(true, Ordering::Relaxed);
        }
        self.send(Message::Connect {
            pool: p.uid,
            backend,
            ok: false,
        });
    }

    /// An answer from `backend` of `pool` could not be passed on (the engine's
    /// `UpstreamFault`): it counts toward passive ejection like a failed connect.
    pub fn answer_failed(&self, pool: PoolId, backend: usize) {
        let Some(p) = self.pools.get(pool) else {
            return;
        };
        self.send(Message::Answer {
            pool: p.uid,
            backend,
        });
    }

    fn send(&self, message: Message) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(message);
        }
    }
}

/// The running health thread. Dropping it stops the thread (without waiting for it).
#[derive(Debug)]
pub struct HealthChecker {
    reporter: HealthReporter,
    stop: Arc<AtomicBool>,
    /// The current configuration's pools' uids, and the next fresh uid.
    uids: Mutex<(Vec<PoolUid>, PoolUid)>,
}

impl HealthChecker {
    /// Starts the health thread for every pool of `config` with backends (probing the
    /// pools whose `health.probe_interval` is set), publishing into the pools' balancers
    /// and `metrics`' `mxgate_backend_up` gauges.
    pub fn spawn(config: &Arc<Config>, metrics: &Metrics) -> io::Result<HealthChecker> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let uids: Vec<PoolUid> = (0..config.pools.len() as PoolUid).collect();
        let pools = Watched::every(config, metrics, &uids, |_| None);
        let probe_timeout = PROBE_TIMEOUT.min(
            config
                .timeouts
                .upstream_connect
                .max(Duration::from_millis(500)),
        );
        let reporter = HealthReporter::new(config, &uids, Some(tx.clone()));
        let next_uid = uids.len() as PoolUid;
        let thread = HealthThread {
            pools,
            rx,
            tx,
            stop: stop.clone(),
            probe_timeout,
        };
        thread::Builder::new()
            .name("mxgate-health".into())
            .spawn(move || thread.run())?;
        Ok(HealthChecker {
            reporter,
            stop,
            uids: Mutex::new((uids, next_uid)),
        })
    }

    /// Watches a reloaded `config` from now on and returns its reporter. `kept[p]` is the
    /// pool of the previous configuration that pool `p` continues unchanged (same backends,
    /// same health settings): it keeps its health state (up, down, ejected, counts, probes
    /// in flight); the others start as new pools do. Reports from connections still on the
    /// previous configuration count for the pools it shares with this one.
    pub fn reconfigure(
        &self,
        config: &Arc<Config>,
        metrics: &Metrics,
        kept: &[Option<PoolId>],
    ) -> HealthReporter {
        let mut guard = self.uids.lock().unwrap_or_else(PoisonError::into_inner);
        let (old, next) = &mut *guard;
        let uids: Vec<PoolUid> = (0..config.pools.len())
            .map(
                |p| match kept.get(p).copied().flatten().and_then(|o| old.get(o)) {
                    Some(&uid) => uid,
                    None => {
                        *next += 1;
                        *next - 1
                    }
                },
            )
            .collect();
        let kept_uids: Vec<PoolUid> = (0..config.pools.len())
            .filter(|&p| kept.get(p).copied().flatten().is_some())
            .map(|p| uids[p])
            .collect();
        let pools = Watched::every(config, metrics, &uids, |uid| {
            kept_uids.contains(&uid).then_some(())
        });
        *old = uids.clone();
        self.reporter.send(Message::Reconfigure(pools));
        HealthReporter::new(config, &uids, self.reporter.tx.clone())
    }

    /// A handle for the runtime's upstream connector.
    pub fn reporter(&self) -> HealthReporter {
        self.reporter.clone()
    }

    /// Ends the health thread (probes in flight finish on their own, bounded).
    pub fn stop(&self) {
        if !self.stop.swap(true, Ordering::SeqCst) {
            self.reporter.send(Message::Stop);
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One pool's health, owned by the health thread.
struct Watched {
    uid: PoolUid,
    name: String,
    backends: Vec<Backend>,
    gauges: Vec<Gauge>,
    health: PoolHealth,
    /// Sent with a reload: take the health state of the watched pool with this uid.
    carried: bool,
}

impl Watched {
    /// Every pool of `config` with backends, fresh; `carried(uid)` is `Some` for a pool whose
    /// state the health thread carries over from the pool of the same uid.
    fn every(
        config: &Config,
        metrics: &Metrics,
        uids: &[PoolUid],
        carried: impl Fn(PoolUid) -> Option<()>,
    ) -> Vec<Watched> {
        let now = Instant::now();
        config
            .pools
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.backends.is_empty())
            .map(|(id, p)| Watched {
                uid: uids[id],
                name: p.name.clone(),
                backends: p.backends.clone(),
                gauges: (0..p.backends.len())
                    .map(|b| metrics.backend_up(id, b))
                    .collect(),
                health: PoolHealth::with_flags(p.balancer.health_flags(), p.health.clone(), now),
                carried: carried(uids[id]).is_some(),
            })
            .collect()
    }

    fn position(pools: &[Watched], uid: PoolUid) -> Option<usize> {
        pools.iter().position(|w| w.uid == uid)
    }

    /// Logs and publishes every queued transition.
    fn drain_events(&mut self) {
        while let Some(event) = self.health.poll_event() {
            let authority = |b: usize| {
                self.backends
                    .get(b)
                    .map(Backend::authority)
                    .unwrap_or_default()
            };
            match event {
                HealthEvent::BackendDown { backend, reason } => {
                    tracing::warn!(pool = %self.name, backend = %authority(backend), %reason, "backend down");
                    self.set_gauge(backend, 0);
                }
                HealthEvent::BackendHalfOpen { backend } => {
                    tracing::info!(pool = %self.name, backend = %authority(backend), "backend ejection over: one trial request allowed");
                    self.set_gauge(backend, 0);
                }
                HealthEvent::BackendUp { backend } => {
                    tracing::info!(pool = %self.name, backend = %authority(backend), "backend up");
                    self.set_gauge(backend, 1);
                }
            }
        }
    }

    fn set_gauge(&self, backend: usize, value: i64) {
        if let Some(g) = self.gauges.get(backend) {
            g.set(value);
        }
    }
}

struct HealthThread {
    pools: Vec<Watched>,
    rx: Receiver<Message>,
    /// For probe threads' results.
    tx: Sender<Message>,
    stop: Arc<AtomicBool>,
    probe_timeout: Duration,
}

impl HealthThread {
    fn run(mut self) {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            let prober = Prober {
                tx: &self.tx,
                timeout: self.probe_timeout,
                stop: &self.stop,
            };
            for w in &mut self.pools {
                w.health.handle_timeout(now);
                while let Some(backend) = w.health.poll_probe(now) {
                    prober.start(w.uid, backend, w.backends[backend].clone());
                }
                w.drain_events();
            }
            // Only deadlines still ahead: a half-open backend nobody has tried yet keeps a
            // deadline in the past that needs no action (re-checked every MAX_SLEEP).
            let next = self
                .pools
                .iter()
                .filter_map(|w| w.health.poll_timeout())
                .filter(|&t| t > now)
                .min();
            let sleep = next.map_or(MAX_SLEEP, |t| (t - now).min(MAX_SLEEP));
            let message = match self.rx.recv_timeout(sleep) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let now = Instant::now();
            match message {
                Message::Stop => return,
                Message::Reconfigure(mut pools) => {
                    for w in &mut pools {
                        if !w.carried {
                            continue;
                        }
                        if let Some(i) = Watched::position(&self.pools, w.uid) {
                            // Same backends and settings: the state machine goes on as is.
                            std::mem::swap(&mut w.health, &mut self.pools[i].health);
                        }
                    }
                    self.pools = pools;
                }
                Message::Connect { pool, backend, ok } => {
                    if let Some(i) = Watched::position(&self.pools, pool) {
                        let w = &mut self.pools[i];
                        if ok {
                            w.health.connect_ok(backend, now);
                        } else {
                            w.health.connect_failed(backend, now);
                        }
                        w.drain_events();
                    }
                }
                Message::Answer { pool, backend } => {
                    if let Some(i) = Watched::position(&self.pools, pool) {
                        let w = &mut self.pools[i];
                        w.health.answer_failed(backend, now);
                        w.drain_events();
                    }
                }
                Message::Probe {
                    pool,
                    backend,
                    result,
                } => {
                    if let Some(i) = Watched::position(&self.pools, pool) {
                        let w = &mut self.pools[i];
                        match result {
                            Ok(()) => w.health.probe_ok(backend, now),
                            Err(failure) => {
                                tracing::debug!(pool = %w.name, backend = %w.backends[backend].authority(), %failure, "health probe failed");
                                w.health.probe_failed(backend, failure, now);
                            }
                        }
                        w.drain_events();
                    }
                }
            }
        }
    }
}

/// Starts probes for the health thread.
struct Prober<'a> {
    tx: &'a Sender<Message>,
    timeout: Duration,
    stop: &'a Arc<AtomicBool>,
}

impl Prober<'_> {
    /// Probes on a short-lived thread; exactly one result comes back.
    fn start(&self, pool: PoolUid, backend: usize, target: Backend) {
        let (tx, timeout, stop) = (self.tx.clone(), self.timeout, self.stop.clone());
        let spawned = thread::Builder::new()
            .name("mxgate-probe".into())
            .spawn(move || {
                let result = probe(&target, timeout);
                if !stop.load(Ordering::Relaxed) {
                    let _ = tx.send(Message::Probe {
                        pool,
                        backend,
                        result,
                    });
                }
            });
        if spawned.is_err() {
            let _ = self.tx.send(Message::Probe {
                pool,
                backend,
                result: Err(ProbeFailure::Connect),
            });
        }
    }
}

/// `GET /health` to `backend` (each of its addresses in turn), within `timeout` overall:
/// `Ok` on a `200`.
pub fn probe(backend: &Backend, timeout: Duration) -> Result<(), ProbeFailure> {
    let deadline = Instant::now() + timeout;
    let addrs = backend::resolve_blocking(backend).map_err(|_| ProbeFailure::Connect)?;
    let mut failure = ProbeFailure::Connect;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProbeFailure::Timeout);
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return exchange(stream, &backend.authority(), deadline),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => failure = ProbeFailure::Timeout,
            Err(_) => {}
        }
    }
    Err(failure)
}

fn exchange(mut stream: TcpStream, authority: &str, deadline: Instant) -> Result<(), ProbeFailure> {
    let timed_out = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )
    };
    let fail = |e: io::Error| {
        if timed_out(&e) {
            ProbeFailure::Timeout
        } else {
            ProbeFailure::Connect
        }
    };
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(ProbeFailure::Timeout)
        } else {
            Ok(d)
        }
    };
    let _ = stream.set_nodelay(true);
    stream.set_write_timeout(Some(left()?)).map_err(fail)?;
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: mxgate-health\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return status(&buf[..end]);
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err(ProbeFailure::Invalid);
        }
        stream.set_read_timeout(Some(left()?)).map_err(fail)?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err(ProbeFailure::Invalid),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(e)),
        }
    }
}

/// `HTTP/1.x 200 …`: ok; another status: `Status`; anything else: `Invalid`.
fn status(line: &[u8]) -> Result<(), ProbeFailure> {
    let mut parts = line.split(|&b| b == b' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with(b"HTTP/1.") || code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(ProbeFailure::Invalid);
    }
    let code = std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(ProbeFailure::Invalid)?;
    if code == 200 {
        Ok(())
    } else {
        Err(ProbeFailure::Status(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    use mxgate_core::config::UpstreamPool;
    use mxgate_core::workers::health::HealthConfig;
    use mxgate_core::workers::Policy;

    /// A one-shot HTTP server answering every connection with `answer`.
    fn server(answer: &'static [u8]) -> (Backend, thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 512];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = s.write_all(answer);
            got
        });
        let b = Backend {
            host: "127.0.0.1".into(),
            port,
        };
        (b, handle)
    }

    #[test]
    fn probe_reads_the_status_line() {
        let (b, h) = server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK");
        assert_eq!(probe(&b, Duration::from_secs(2)), Ok(()));
        let request = String::from_utf8(h.join().unwrap()).unwrap();
        assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
        assert!(
            request.contains(&format!("\r\nHost: 127.0.0.1:{}\r\n", b.port)),
            "{request}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");

        let (b, _h) = server(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert_eq!(
            probe(&b, Duration::from_secs(2)),
            Err(ProbeFailure::Status(503))
        );
        let (b, _h) = server(b"SSH-2.0-OpenSSH\r\n");
        assert_eq!(
            probe(&b, Duration::from_secs(2)),
            Err(ProbeFailure::Invalid)
        );
    }

    #[test]
    fn probe_of_a_dead_or_silent_backend_fails_in_bounded_time() {
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let b = Backend {
            host: "127.0.0.1".into(),
            port: dead,
        };
        assert_eq!(
            probe(&b, Duration::from_secs(1)),
            Err(ProbeFailure::Connect)
        );
        // Accepts (backlog) but never answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = Backend {
            host: "127.0.0.1".into(),
            port: silent.local_addr().unwrap().port(),
        };
        let started = Instant::now();
        assert_eq!(
            probe(&b, Duration::from_millis(300)),
            Err(ProbeFailure::Timeout)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn status_lines() {
        assert_eq!(status(b"HTTP/1.1 200 OK"), Ok(()));
        assert_eq!(status(b"HTTP/1.0 200"), Ok(()));
        assert_eq!(
            status(b"HTTP/1.1 404 Not Found"),
            Err(ProbeFailure::Status(404))
        );
        assert_eq!(status(b"HTTP/2 200"), Err(ProbeFailure::Invalid));
        assert_eq!(status(b"HTTP/1.1 2000"), Err(ProbeFailure::Invalid));
    }

    fn worker_config(backends: Vec<Backend>, health: HealthConfig) -> Arc<Config> {
        let mut config = crate::support::testutil::config();
        let n = backends.len();
        let mut pool =
            UpstreamPool::with_policy("synchrotron", backends, Policy::RoundRobin, health);
        pool.max_idle_per_backend = 0;
        config.pools.push(pool);
        assert_eq!(config.pools[1].backends.len(), n);
        Arc::new(config)
    }

    fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn connect_failures_eject_and_successes_restore() {
        let backends = vec![
            Backend {
                host: "127.0.0.1".into(),
                port: 1,
            },
            Backend {
                host: "127.0.0.1".into(),
                port: 2,
            },
        ];
        let health = HealthConfig {
            probe_interval: None,
            eject_after: 2,
            eject_for: Duration::from_millis(100),
            ..HealthConfig::default()
        };
        let config = worker_config(backends, health);
        let metrics = Metrics::new(&config);
        let checker = HealthChecker::spawn(&config, &metrics).unwrap();
        let reporter = checker.reporter();
        let flags = config.pools[1].balancer.health_flags();
        reporter.connect_failed(1, 0);
        reporter.connect_ok(1, 1);
        reporter.connect_failed(1, 0);
        assert!(wait_for(|| flags.state(0) == Availability::Down));
        assert_eq!(flags.state(1), Availability::Up);
        assert!(metrics
            .encode()
            .contains("mxgate_backend_up{pool=\"synchrotron\",backend=\"127.0.0.1:1\"} 0"));
        // The ejection ends: half-open; the trial's success brings it back.
        assert!(wait_for(|| flags.state(0) == Availability::HalfOpen));
        assert!(flags.try_use(0));
        reporter.connect_ok(1, 0);
        assert!(wait_for(|| flags.state(0) == Availability::Up));
        assert!(wait_for(|| metrics.encode().contains(
            "mxgate_backend_up{pool=\"synchrotron\",backend=\"127.0.0.1:1\"} 1"
        )));
        checker.stop();
        // Reports after the stop are dropped silently.
        reporter.connect_failed(1, 1);
    }

    #[test]
    fn probes_take_a_dead_backend_down_and_bring_it_back() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let health = HealthConfig {
            probe_interval: Some(Duration::from_millis(50)),
            rise: 1,
            fall: 2,
            ..HealthConfig::default()
        };
        let backend = Backend {
            host: "127.0.0.1".into(),
            port,
        };
        let config = worker_config(vec![backend], health);
        let metrics = Metrics::new(&config);
        let checker = HealthChecker::spawn(&config, &metrics).unwrap();
        let flags = config.pools[1].balancer.health_flags();
        assert!(
            wait_for(|| flags.state(0) == Availability::Down),
            "probes of a dead port"
        );
        // The backend comes up on the same port: a good probe brings it back.
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let serving = {
            let stop = stop.clone();
            listener.set_nonblocking(true).unwrap();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            let mut chunk = [0u8; 512];
                            let _ = s.read(&mut chunk);
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        assert!(
            wait_for(|| flags.state(0) == Availability::Up),
            "probes of a live backend"
        );
        drop(checker);
        stop.store(true, Ordering::Relaxed);
        serving.join().unwrap();
    }
}
