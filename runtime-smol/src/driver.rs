//! The per-connection driver: one task per client connection owns the client stream, at
//! most one upstream connection and the engine's `Connection`, and runs the engine contract:
//! drain outputs (performing each in order), then wait for the first of client readable,
//! upstream readable, the engine's deadline or shutdown, and feed that back.
//!
//! Buffers: a connection owns no read buffer. Waiting is done on readiness; once ready, one
//! read is attempted synchronously into the executor thread's 64 KiB buffer and its bytes are
//! handed to the engine (which copies what it keeps) before the buffer is given back. So
//! neither idle keep-alive connections nor held long-polls carry a read buffer, and no buffer
//! is allocated (or zeroed) per request.
//!
//! Wake-ups: the engine's deadline is one `Timer` per connection, re-armed only when the
//! deadline moves earlier (a timer firing before the engine's deadline just re-arms), because
//! every arming of an async-io timer notifies the reactor (an eventfd write and an extra
//! `epoll_wait` return). The shutdown signal is one listener per connection, not one per
//! loop iteration.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mxgate_core::{AccessRecord, Connection, ListenerId, Output, PoolId, TimerKind};
use mxgate_std::support::metrics::ListenerMetrics;
use mxgate_std::support::{access_log, logging};
use smol::channel::Receiver;
use smol::io::{AsyncRead, AsyncWriteExt};
use smol::{future, Timer};

use crate::stream::{bounded, write_queue, ClientStream};
use crate::upstream::UpstreamConn;
use crate::Shared;

/// Size of the per-thread read buffer.
pub(crate) const READ_BUF: usize = 64 * 1024;

thread_local! {
    /// The executor thread's read buffer, lent for one synchronous read (never across an await).
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_BUF].into_boxed_slice());
}

/// Runs `f` with the thread's read buffer (a fresh one if it is already lent out).
fn with_read_buf<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    READ_BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf[..]),
        Err(_) => f(&mut vec![0u8; READ_BUF]),
    })
}

/// One read attempt with the task's context: `Pending` when nothing was there after all.
fn try_read<R: AsyncRead + Unpin>(
    r: &mut R,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    Pin::new(r).poll_read(cx, buf)
}

/// Resolves once the shutdown channel's sender is dropped.
type ShutdownSignal = Pin<Box<dyn Future<Output = ()> + Send>>;
/// After closing, how long client bytes are still read and discarded so that unread
/// request bytes do not turn the close into a reset that destroys the response in flight.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 1024 * 1024;
/// Bound on sending TLS close_notify and the TCP FIN.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one client connection to its end.
///
/// Not an `async fn`, and `run` borrows: the `Driver` is stored once in the task (rustc keeps
/// both a moved-from local and the callee's by-value parameter in an async state machine).
pub(crate) fn drive(
    shared: Arc<Shared>,
    listener: ListenerId,
    peer: IpAddr,
    client: ClientStream,
    metrics: ListenerMetrics,
    shutdown: Receiver<()>,
) -> impl Future<Output = ()> + Send {
    let conn = Connection::new(
        shared.config.clone(),
        listener,
        mxgate_core::config::canonical_ip(peer),
        fastrand::u64(..),
        Instant::now(),
    );
    let mut driver = Driver {
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
        shutdown: Some(Box::pin(async move {
            // Resolves (with an error) when the sender is dropped: shutdown began.
            let _ = shutdown.recv().await;
        })),
        metrics,
        timer: Timer::never(),
        armed: None,
        fired: None,
        warned: false,
    };
    async move { driver.run().await }
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
    /// `None` once `begin_shutdown` was called.
    shutdown: Option<ShutdownSignal>,
    metrics: ListenerMetrics,
    client_stall: Duration,
    upstream_stall: Duration,
    /// Fires at `armed` (at or before the engine's deadline).
    timer: Timer,
    armed: Option<Instant>,
    /// The last deadline `handle_timeout` was called for.
    fired: Option<Instant>,
    warned: bool,
}

impl Driver {
    async fn run(&mut self) {
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
            if self.conn.is_idle() && self.client_queue.is_empty() && self.up.is_none() {
                // An idle keep-alive connection holds no write queue either.
                self.client_queue = VecDeque::new();
            }
            match self.wait(want_client, want_up, deadline).await {
                Wake::Client => {
                    future::poll_fn(|cx| {
                        self.read_client(cx);
                        Poll::Ready(())
                    })
                    .await
                }
                Wake::Upstream => {
                    future::poll_fn(|cx| {
                        self.read_upstream(cx);
                        Poll::Ready(())
                    })
                    .await
                }
                Wake::Timer => {
                    self.armed = None;
                    let now = Instant::now();
                    // The timer may have been armed for an earlier deadline than the engine's
                    // current one: then it only gets re-armed.
                    if deadline.is_some_and(|at| at <= now) {
                        self.fired = deadline;
                        self.conn.handle_timeout(now);
                    }
                }
                Wake::Shutdown => {
                    self.shutdown = None;
                    self.conn.begin_shutdown(Instant::now());
                }
            }
        }
        // Boxed: the lingering close is rare and its state would otherwise enlarge every
        // connection's task.
        Box::pin(self.finish()).await;
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

    async fn wait(&mut self, want_client: bool, want_up: bool, deadline: Option<Instant>) -> Wake {
        // Re-arm only when the deadline moved earlier (or nothing is armed): a later deadline
        // is met by re-arming when the earlier timer fires.
        if let Some(at) = deadline {
            if self.armed.is_none_or(|armed| at < armed) {
                self.timer.set_at(at);
                self.armed = Some(at);
            }
        }
        let client_more = self.client_more;
        let tls_socket_only = self.tls_socket_only;
        let client_stream = &self.client;
        let client = async {
            if !want_client {
                return future::pending().await;
            }
            if !client_more {
                // An error shows up again on the read attempt.
                let _ = client_stream.ready(tls_socket_only).await;
            }
            Wake::Client
        };
        let up = &self.up;
        let upstream = async {
            match up {
                Some(u) if want_up => {
                    if !u.more {
                        // The socket's single waker slot: see `ClientStream::poll_ready`.
                        let _ = future::poll_fn(|cx| u.conn.stream.poll_readable(cx)).await;
                    }
                    Wake::Upstream
                }
                _ => future::pending().await,
            }
        };
        let armed = self.armed.is_some();
        let timer = &mut self.timer;
        let timer = future::poll_fn(|cx| {
            if armed && Pin::new(&mut *timer).poll(cx).is_ready() {
                Poll::Ready(Wake::Timer)
            } else {
                Poll::Pending
            }
        });
        let signal = &mut self.shutdown;
        let shutdown = future::poll_fn(|cx| match signal {
            Some(s) => s.as_mut().poll(cx).map(|()| Wake::Shutdown),
            None => Poll::Pending,
        });
        future::or(future::race(upstream, client), future::or(timer, shutdown)).await
    }

    /// One read from the client into the thread's buffer, fed to the engine.
    fn read_client(&mut self, cx: &mut Context<'_>) {
        with_read_buf(|buf| {
            let result = try_read(&mut self.client, cx, buf);
            let now = Instant::now();
            match result {
                Poll::Pending => {
                    self.client_more = false;
                    self.tls_socket_only = true;
                }
                Poll::Ready(Ok(0)) => {
                    self.client_more = false;
                    self.client_eof = true;
                    self.conn.handle_client_eof(now);
                }
                Poll::Ready(Ok(n)) => {
                    self.client_more = n == buf.len();
                    self.tls_socket_only = false;
                    self.metrics.bytes_in.inc_by(n as u64);
                    self.conn.handle_client_data(&buf[..n], now);
                }
                Poll::Ready(Err(err)) => {
                    tracing::debug!(error = %err, "client read failed");
                    self.client_more = false;
                    self.client_eof = true;
                    self.conn.handle_client_eof(now);
                }
            }
        })
    }

    /// One read from the upstream into the thread's buffer, fed to the engine.
    fn read_upstream(&mut self, cx: &mut Context<'_>) {
        let Some(up) = self.up.as_mut() else {
            return;
        };
        with_read_buf(|buf| {
            let result = try_read(&mut up.conn.stream, cx, buf);
            let now = Instant::now();
            match result {
                Poll::Pending => up.more = false,
                Poll::Ready(Ok(0)) => {
                    up.more = false;
                    up.eof = true;
                    self.conn.handle_upstream_eof(now);
                }
                Poll::Ready(Ok(n)) => {
                    up.more = n == buf.len();
                    self.conn.handle_upstream_data(&buf[..n], now);
                }
                Poll::Ready(Err(err)) => {
                    tracing::debug!(upstream = %up.conn.addr, error = %err, "upstream read failed");
                    up.more = false;
                    up.eof = true;
                    self.conn.handle_upstream_eof(now);
                }
            }
        })
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
                        // Back to the pool before the client sees the end of its response:
                        // a client that sends its next request at once (on this or another
                        // connection) then finds the connection idle, not still held.
                        self.flush_upstream().await;
                        self.release_upstream(reusable);
                    }
                    Output::CloseClient => {
                        self.flush().await;
                        // Boxed: once per connection; keeps its state out of the task.
                        Box::pin(self.close_client()).await;
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
        self.flush_client().await;
        self.flush_upstream().await;
    }

    async fn flush_client(&mut self) {
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
    }

    async fn flush_upstream(&mut self) {
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
        // Boxed: this state (connect attempts, DNS, timers) would otherwise enlarge every
        // connection's task; an allocation per obtained connection is cheap by comparison.
        let obtained = Box::pin(future::or(
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
        ))
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
    async fn finish(&mut self) {
        self.up = None;
        self.client_queue.clear();
        self.close_client().await;
        // Nothing unread to protect after EOF or a failed write; and a shutdown does not wait.
        if self.client_eof || self.client_broken || self.shutdown.is_none() {
            return;
        }
        let mut timer = Timer::at(Instant::now() + LINGER);
        let mut socket_only = self.tls_socket_only;
        let mut discarded = 0usize;
        while discarded < LINGER_MAX_BYTES {
            let client = &self.client;
            let ready = future::or(
                async {
                    let _ = client.ready(socket_only).await;
                    true
                },
                async {
                    (&mut timer).await;
                    false
                },
            )
            .await;
            if !ready {
                break;
            }
            let read = future::poll_fn(|cx| {
                Poll::Ready(with_read_buf(|buf| try_read(&mut self.client, cx, buf)))
            })
            .await;
            match read {
                Poll::Pending => socket_only = true,
                Poll::Ready(Ok(n)) if n > 0 => {
                    socket_only = false;
                    discarded += n;
                }
                Poll::Ready(_) => break,
            }
        }
    }
}
