//! The per-connection driver: one task per client connection owns the client stream, at
//! most one upstream connection and the engine's `Connection`, and runs the engine contract:
//! drain outputs (performing each in order), then wait for the first of client readable,
//! upstream readable, the engine's deadline or shutdown, and feed that back.
//!
//! Buffers: reads go into one 64 KiB buffer per task, allocated on the first read and
//! released whenever the connection is idle between requests, so idle keep-alive
//! connections hold none. Waiting is done on readiness, never on a read holding the buffer.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mxgate_core::{AccessRecord, Connection, ListenerId, Output, PoolId, TimerKind};
use mxgate_std::support::metrics::ListenerMetrics;
use mxgate_std::support::{access_log, logging};
use smol::channel::Receiver;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{future, Timer};

use crate::stream::{bounded, write_queue, ClientStream};
use crate::upstream::UpstreamConn;
use crate::Shared;

/// Size of the per-task read buffer.
pub(crate) const READ_BUF: usize = 64 * 1024;
/// After closing, how long client bytes are still read and discarded so that unread
/// request bytes do not turn the close into a reset that destroys the response in flight.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 1024 * 1024;
/// Bound on sending TLS close_notify and the TCP FIN.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one client connection to its end.
pub(crate) async fn drive(
    shared: Arc<Shared>,
    listener: ListenerId,
    peer: IpAddr,
    client: ClientStream,
    metrics: ListenerMetrics,
    shutdown: Receiver<()>,
) {
    let conn = Connection::new(
        shared.config.clone(),
        listener,
        mxgate_core::config::canonical_ip(peer),
        fastrand::u64(..),
        Instant::now(),
    );
    let driver = Driver {
        client_stall: shared.config.timeouts.client_body,
        upstream_stall: shared.config.timeouts.upstream_response,
        shared,
        conn,
        client,
        client_eof: false,
        client_broken: false,
        client_closed: false,
        client_more: false,
        tls_socket_only: false,
        client_queue: VecDeque::new(),
        up: None,
        buf: None,
        shutdown: Some(shutdown),
        metrics,
        fired: None,
        warned: false,
    };
    driver.run().await;
}

/// The upstream connection currently held for the engine.
struct Upstream {
    conn: UpstreamConn,
    queue: VecDeque<Bytes>,
    /// EOF or a failure was reported to the engine: no more reads.
    eof: bool,
    /// A write failed: further writes are dropped and EOF is reported.
    broken: bool,
    /// The last read filled the buffer: read again without waiting.
    more: bool,
}

enum Wake {
    Client,
    Upstream,
    Timer,
    Shutdown,
}

struct Driver {
    shared: Arc<Shared>,
    conn: Connection,
    client: ClientStream,
    /// EOF (or a read/write failure) was reported to the engine.
    client_eof: bool,
    /// A write failed: further writes are dropped.
    client_broken: bool,
    /// `CloseClient` was performed.
    client_closed: bool,
    client_more: bool,
    /// A TLS read found nothing although rustls looked ready: wait for the socket next time.
    tls_socket_only: bool,
    client_queue: VecDeque<Bytes>,
    up: Option<Upstream>,
    buf: Option<Box<[u8]>>,
    /// `None` once `begin_shutdown` was called.
    shutdown: Option<Receiver<()>>,
    metrics: ListenerMetrics,
    client_stall: Duration,
    upstream_stall: Duration,
    /// The last deadline `handle_timeout` was called for.
    fired: Option<Instant>,
    warned: bool,
}

impl Driver {
    async fn run(mut self) {
        loop {
            self.drain().await;
            if self.conn.is_closed() {
                break;
            }
            let want_client =
                !self.client_eof && !self.client_closed && self.conn.wants_client_read();
            let want_up =
                self.up.as_ref().is_some_and(|u| !u.eof) && self.conn.wants_upstream_read();
            let deadline = self.deadline();
            if !want_client && !want_up && deadline.is_none() {
                tracing::warn!(
                    "engine waits for nothing (no read wanted, no deadline) and is not closed: \
                     closing the connection (engine bug)"
                );
                break;
            }
            if self.conn.is_idle() && self.up.is_none() && !self.client_more {
                self.buf = None;
            }
            match self.wait(want_client, want_up, deadline).await {
                Wake::Client => self.read_client().await,
                Wake::Upstream => self.read_upstream().await,
                Wake::Timer => {
                    self.fired = deadline;
                    self.conn.handle_timeout(Instant::now());
                }
                Wake::Shutdown => {
                    self.shutdown = None;
                    self.conn.begin_shutdown(Instant::now());
                }
            }
        }
        self.finish().await;
    }

    /// The engine's next deadline, ignoring one it keeps after it was handled (no busy loop).
    fn deadline(&mut self) -> Option<Instant> {
        let (at, kind) = self.conn.poll_timeout()?;
        if self.fired == Some(at) && at <= Instant::now() {
            if !self.warned {
                self.warned = true;
                tracing::warn!(
                    ?kind,
                    "engine kept an expired deadline after handle_timeout (engine bug)"
                );
            }
            return None;
        }
        Some(at)
    }

    async fn wait(&self, want_client: bool, want_up: bool, deadline: Option<Instant>) -> Wake {
        let client = async {
            if !want_client {
                return future::pending().await;
            }
            if !self.client_more {
                // An error shows up again on the read attempt.
                let _ = self.client.ready(self.tls_socket_only).await;
            }
            Wake::Client
        };
        let upstream = async {
            match &self.up {
                Some(u) if want_up => {
                    if !u.more {
                        let _ = u.conn.stream.readable().await;
                    }
                    Wake::Upstream
                }
                _ => future::pending().await,
            }
        };
        let timer = async {
            match deadline {
                Some(at) => {
                    Timer::at(at).await;
                    Wake::Timer
                }
                None => future::pending().await,
            }
        };
        let shutdown = async {
            match &self.shutdown {
                Some(rx) => {
                    // Resolves (with an error) when the sender is dropped: shutdown began.
                    let _ = rx.recv().await;
                    Wake::Shutdown
                }
                None => future::pending().await,
            }
        };
        future::or(future::race(upstream, client), future::or(timer, shutdown)).await
    }

    async fn read_client(&mut self) {
        let buf = self.buf.get_or_insert_with(new_buf);
        let result = future::poll_once(self.client.read(&mut buf[..])).await;
        let now = Instant::now();
        match result {
            None => {
                self.client_more = false;
                self.tls_socket_only = true;
            }
            Some(Ok(0)) => {
                self.client_more = false;
                self.client_eof = true;
                self.conn.handle_client_eof(now);
            }
            Some(Ok(n)) => {
                self.client_more = n == buf.len();
                self.tls_socket_only = false;
                self.metrics.bytes_in.inc_by(n as u64);
                self.conn.handle_client_data(&buf[..n], now);
            }
            Some(Err(err)) => {
                tracing::debug!(error = %err, "client read failed");
                self.client_more = false;
                self.client_eof = true;
                self.conn.handle_client_eof(now);
            }
        }
    }

    async fn read_upstream(&mut self) {
        let Some(up) = self.up.as_mut() else {
            return;
        };
        let buf = self.buf.get_or_insert_with(new_buf);
        let result = future::poll_once(up.conn.stream.read(&mut buf[..])).await;
        let now = Instant::now();
        match result {
            None => up.more = false,
            Some(Ok(0)) => {
                up.more = false;
                up.eof = true;
                self.conn.handle_upstream_eof(now);
            }
            Some(Ok(n)) => {
                up.more = n == buf.len();
                self.conn.handle_upstream_data(&buf[..n], now);
            }
            Some(Err(err)) => {
                tracing::debug!(upstream = %up.conn.addr, error = %err, "upstream read failed");
                up.more = false;
                up.eof = true;
                self.conn.handle_upstream_eof(now);
            }
        }
    }

    /// Drains and performs the engine's outputs, then feeds back what performing them
    /// produced (write failures, the outcome of a connect), until the engine has nothing more.
    async fn drain(&mut self) {
        loop {
            let mut connect: Option<(PoolId, usize, bool)> = None;
            while let Some(output) = self.conn.poll_output() {
                match output {
                    Output::ToClient(bytes) => {
                        if !bytes.is_empty() {
                            self.client_queue.push_back(bytes);
                        }
                    }
                    Output::ToUpstream(bytes) => match self.up.as_mut() {
                        Some(up) if !up.broken => {
                            if !bytes.is_empty() {
                                up.queue.push_back(bytes);
                            }
                        }
                        Some(_) => {}
                        None => tracing::warn!(
                            "engine wrote to an upstream it does not hold (engine bug)"
                        ),
                    },
                    Output::AccessLog(record) => self.access_log(&record),
                    Output::ConnectUpstream {
                        pool,
                        backend,
                        fresh,
                    } => {
                        self.flush().await;
                        connect = Some((pool, backend, fresh));
                    }
                    Output::ReleaseUpstream { reusable } => {
                        self.flush().await;
                        self.release_upstream(reusable);
                    }
                    Output::CloseClient => {
                        self.flush().await;
                        self.close_client().await;
                    }
                }
            }
            self.flush().await;
            let now = Instant::now();
            if self.client_broken && !self.client_eof {
                self.client_eof = true;
                self.conn.handle_client_eof(now);
                continue;
            }
            if let Some(up) = self.up.as_mut() {
                if up.broken && !up.eof {
                    up.eof = true;
                    self.conn.handle_upstream_eof(now);
                    continue;
                }
            }
            if let Some((pool, backend, fresh)) = connect {
                self.connect(pool, backend, fresh).await;
                continue;
            }
            return;
        }
    }

    /// Writes whatever is queued for either side. A failed write marks that side broken.
    async fn flush(&mut self) {
        if !self.client_queue.is_empty() {
            if self.client_broken || self.client_closed {
                self.client_queue.clear();
            } else {
                match write_queue(&mut self.client, &mut self.client_queue, self.client_stall).await
                {
                    Ok(n) => {
                        self.metrics.bytes_out.inc_by(n);
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "client write failed");
                        self.client_broken = true;
                        self.client_queue.clear();
                    }
                }
            }
        }
        if let Some(up) = self.up.as_mut() {
            if !up.queue.is_empty() {
                if up.broken {
                    up.queue.clear();
                } else if let Err(err) =
                    write_queue(&mut up.conn.stream, &mut up.queue, self.upstream_stall).await
                {
                    tracing::debug!(upstream = %up.conn.addr, error = %err, "upstream write failed");
                    up.broken = true;
                    up.queue.clear();
                }
            }
        }
    }

    /// Obtains an upstream connection within the engine's connect deadline and reports it.
    async fn connect(&mut self, pool: PoolId, backend: usize, fresh: bool) {
        if self.up.take().is_some() {
            tracing::warn!(
                "engine asked for an upstream while holding one (engine bug): closing the old one"
            );
        }
        let now = Instant::now();
        let engine_deadline = match self.conn.poll_timeout() {
            Some((at, TimerKind::UpstreamConnect)) => Some(at),
            _ => None,
        };
        let deadline =
            engine_deadline.unwrap_or(now + self.shared.config.timeouts.upstream_connect);
        let shared = self.shared.clone();
        let obtained = future::or(
            async {
                Some(
                    shared
                        .upstreams
                        .obtain(pool, backend, fresh, &shared.metrics)
                        .await,
                )
            },
            async {
                Timer::at(deadline).await;
                None
            },
        )
        .await;
        let now = Instant::now();
        match obtained {
            Some(Ok((conn, reused))) => {
                self.up = Some(Upstream {
                    conn,
                    queue: VecDeque::new(),
                    eof: false,
                    broken: false,
                    more: false,
                });
                self.conn.handle_upstream_connected(reused, now);
            }
            Some(Err(err)) => {
                let name = self
                    .shared
                    .config
                    .pools
                    .get(pool)
                    .map_or("?", |p| p.name.as_str());
                tracing::warn!(pool = name, error = %err, "cannot connect to any backend");
                self.conn.handle_upstream_failed(now);
            }
            None => {
                let name = self
                    .shared
                    .config
                    .pools
                    .get(pool)
                    .map_or("?", |p| p.name.as_str());
                tracing::warn!(pool = name, "connecting to the backend timed out");
                if engine_deadline.is_some() {
                    // The engine's own deadline passed: it answers 504.
                    self.fired = engine_deadline;
                    self.conn.handle_timeout(now);
                } else {
                    self.conn.handle_upstream_failed(now);
                }
            }
        }
    }

    fn release_upstream(&mut self, reusable: bool) {
        match self.up.take() {
            Some(up) if reusable && !up.broken && !up.eof && up.queue.is_empty() => {
                self.shared.upstreams.release(up.conn);
            }
            Some(_) => {} // dropped: closed
            None => tracing::debug!("engine released an upstream it does not hold"),
        }
    }

    /// Sends TLS close_notify and the FIN after everything written so far.
    async fn close_client(&mut self) {
        if self.client_closed {
            return;
        }
        self.client_closed = true;
        if !self.client_broken {
            let closed = bounded(self.client.close(), CLOSE_TIMEOUT).await;
            if let Err(err) = closed.and_then(|()| self.client.shutdown_write()) {
                tracing::debug!(error = %err, "closing the client connection failed");
            }
        }
    }

    fn access_log(&self, record: &AccessRecord) {
        self.shared.metrics.record(record);
        if let Some(line) = access_log::format(
            &self.shared.config,
            record,
            Instant::now(),
            SystemTime::now(),
        ) {
            logging::access(&line);
        }
    }

    /// Closes the upstream (the engine did not release it for reuse) and the client, reading
    /// and discarding what the client still sends for a moment (lingering close).
    async fn finish(mut self) {
        self.up = None;
        self.client_queue.clear();
        self.close_client().await;
        // Nothing unread to protect after EOF or a failed write; and a shutdown does not wait.
        if self.client_eof || self.client_broken || self.shutdown.is_none() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        let mut small = Vec::new();
        let buf: &mut [u8] = match self.buf.as_mut() {
            Some(buf) => buf,
            None => {
                small.resize(4096, 0);
                &mut small
            }
        };
        let mut discarded = 0usize;
        while discarded < LINGER_MAX_BYTES {
            let read = future::or(
                async { Some(self.client.read(&mut buf[..]).await) },
                async {
                    Timer::at(deadline).await;
                    None
                },
            )
            .await;
            match read {
                Some(Ok(n)) if n > 0 => discarded += n,
                _ => break,
            }
        }
    }
}

fn new_buf() -> Box<[u8]> {
    vec![0u8; READ_BUF].into_boxed_slice()
}
