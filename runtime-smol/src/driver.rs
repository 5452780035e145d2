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
//! `epoll_wait` return). Shutdown is noticed through `Shared::shutdown_wakers` (a flag and
//! the task's waker, registered once), not an event listener per connection.
//!
//! Size: a task lives as long as its connection, idle keep-alive ones included, so what it
//! holds is kept small: waiting polls the driver's own fields (no stored futures), an
//! upstream connection is a pointer to the pooled box, and write queues are lent from a
//! per-thread stock while something is queued (none held when idle, none allocated per
//! request once warm).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mxgate_core::{Connection, ExchangeBuffers, ListenerId, Output, PoolId, TimerKind};
use mxgate_std::support::limit::Permit;
use mxgate_std::support::metrics::OpenConnection;
use mxgate_std::support::{net, report};
use smol::io::{AsyncRead, AsyncWriteExt};
use smol::{future, Timer};

use crate::stream::{bounded, write_now, write_queue, ClientStream};
use crate::upstream::UpstreamConn;
use crate::{Generation, Shared};

/// Size of the per-thread read buffer.
pub(crate) const READ_BUF: usize = 64 * 1024;

thread_local! {
    /// The executor thread's read buffer, lent for one synchronous read (never across an await).
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_BUF].into_boxed_slice());
}

/// Runs `f` with the thread's read buffer (a fresh one if it is already lent out).
pub(crate) fn with_read_buf<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    READ_BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf[..]),
        Err(_) => f(&mut vec![0u8; READ_BUF]),
    })
}

/// Most emptied write queues a thread keeps for reuse.
const SPARE_QUEUES: usize = 256;
/// Larger emptied queues are freed rather than kept.
const SPARE_QUEUE_CAPACITY: usize = 64;

thread_local! {
    /// Emptied write queues (with their capacity) for the next connection on this thread
    /// that has something to write. Boxed: a client's queue is lent as it is.
    #[allow(clippy::vec_box)]
    static SPARE_QUEUES_STOCK: RefCell<Vec<Box<VecDeque<Bytes>>>> = const { RefCell::new(Vec::new()) };
}

/// A spare queue from the thread's stock.
#[allow(clippy::box_collection)]
fn spare_queue() -> Option<Box<VecDeque<Bytes>>> {
    SPARE_QUEUES_STOCK.with(|stock| stock.try_borrow_mut().ok()?.pop())
}

/// Appends to an upstream write queue, lending it a spare one's capacity first if it has
/// none (kept with the pooled connection from then on).
fn enqueue(queue: &mut VecDeque<Bytes>, bytes: Bytes) {
    if queue.capacity() == 0 {
        if let Some(spare) = spare_queue() {
            *queue = *spare;
        }
    }
    queue.push_back(bytes);
}

/// The write queue to the client: lent from the thread's stock while something is queued,
/// so an idle connection holds a pointer's worth (not a `VecDeque`) and none is allocated
/// per request once warm.
#[derive(Default)]
#[allow(clippy::box_collection)] // Boxed on purpose: 8 bytes in every task, not 32.
struct ClientQueue(Option<Box<VecDeque<Bytes>>>);

impl ClientQueue {
    fn clear(&mut self) {
        if let Some(queue) = self.0.as_mut() {
            queue.clear();
        }
    }

    fn push(&mut self, bytes: Bytes) {
        self.0
            .get_or_insert_with(|| spare_queue().unwrap_or_default())
            .push_back(bytes);
    }

    /// The queue, when something is queued.
    fn pending(&mut self) -> Option<&mut VecDeque<Bytes>> {
        self.0.as_deref_mut().filter(|queue| !queue.is_empty())
    }

    /// Gives an emptied queue back into the thread's stock.
    fn give_back(&mut self) {
        let Some(queue) = self.0.take_if(|queue| queue.is_empty()) else {
            return;
        };
        if queue.capacity() <= SPARE_QUEUE_CAPACITY {
            SPARE_QUEUES_STOCK.with(|stock| {
                if let Ok(mut stock) = stock.try_borrow_mut() {
                    if stock.len() < SPARE_QUEUES {
                        stock.push(queue);
                    }
                }
            });
        }
    }
}

/// Most spare exchange buffers a thread keeps (as many as exchanges it runs at once, in
/// practice; the rest are freed).
const SPARE_EXCHANGE_BUFFERS: usize = 256;

thread_local! {
    /// The engine's reusable exchange buffers, taken from connections that went idle and
    /// lent to the next one with a request: idle keep-alive connections hold none, busy
    /// ones allocate none.
    static SPARE_EXCHANGE_BUFFERS_STOCK: RefCell<Vec<ExchangeBuffers>> = const { RefCell::new(Vec::new()) };
}

/// Lends an idle connection spare exchange buffers before it gets a request.
fn lend_exchange_buffers(conn: &mut Connection) {
    SPARE_EXCHANGE_BUFFERS_STOCK.with(|stock| {
        if let Ok(mut stock) = stock.try_borrow_mut() {
            if let Some(buffers) = stock.pop() {
                if let Some(back) = conn.lend_buffers(buffers) {
                    stock.push(back);
                }
            }
        }
    });
}

/// Takes an idle connection's exchange buffers into the thread's stock.
fn take_exchange_buffers(conn: &mut Connection) {
    if let Some(buffers) = conn.take_buffers() {
        SPARE_EXCHANGE_BUFFERS_STOCK.with(|stock| {
            if let Ok(mut stock) = stock.try_borrow_mut() {
                if stock.len() < SPARE_EXCHANGE_BUFFERS {
                    stock.push(buffers);
                }
            }
        });
    }
}

/// One read attempt with the task's context: `Pending` when nothing was there after all.
fn try_read<R: AsyncRead + Unpin>(
    r: &mut R,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    Pin::new(r).poll_read(cx, buf)
}

/// Bound on sending TLS close_notify and the TCP FIN.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Driver {
    /// The driver for a client connection, to be run ([`Driver::run`]) in the connection's
    /// task. The task holds it as a local that `run` borrows, so it is stored once (rustc
    /// keeps both a moved-from local and the callee's by-value parameter in an async state
    /// machine), with no wrapping future around it.
    pub(crate) fn new(opened: Opened) -> Driver {
        let Opened {
            shared,
            generation,
            listener,
            peer,
            client,
            guards,
        } = opened;
        let conn = Connection::new(
            generation.config.clone(),
            listener,
            mxgate_core::config::canonical_ip(peer),
            fastrand::u64(..),
            Instant::now(),
        );
        Driver {
            reload_seen: generation.id,
            generation,
            shared,
            conn,
            client,
            client_eof: false,
            client_broken: false,
            client_closed: false,
            client_more: false,
            tls_socket_only: false,
            client_queue: ClientQueue::default(),
            up: None,
            shutdown_key: NOT_REGISTERED,
            shutdown_seen: false,
            shutdown_deferred: false,
            had_input: false,
            upstream_first: false,
            _guards: guards,
            timer: Timer::never(),
            timer_state: TimerState::Unarmed,
            warned: false,
        }
    }
}

/// A client connection ready for the engine (after the PROXY header and TLS handshake).
pub(crate) struct Opened {
    pub shared: Arc<Shared>,
    pub generation: Arc<Generation>,
    pub listener: ListenerId,
    pub peer: IpAddr,
    pub client: ClientStream,
    pub guards: Guards,
}

/// What a connection holds while it is open: its connection-limit slot and its place in
/// `mxgate_active_connections`.
pub(crate) struct Guards {
    pub _permit: Permit,
    pub _open: OpenConnection,
}

/// The upstream connection currently held for the engine.
struct Upstream {
    /// With its write queue, kept with the pooled connection (no allocation per request).
    conn: Box<UpstreamConn>,
    /// EOF or a failure was reported to the engine: no more reads.
    eof: bool,
    /// A write failed: further writes are dropped and EOF is reported.
    broken: bool,
    /// The last read filled the buffer: read again without waiting.
    more: bool,
}

/// `Driver::shutdown_key` before the task registered (slab keys are indices: never this).
const NOT_REGISTERED: usize = usize::MAX;

/// What performing an output leaves to do (see `Driver::perform`).
enum Step {
    Done,
    Connect(PoolId, usize, bool),
    Release(bool),
    Close,
}

/// An upstream connection the engine asked for: pool, backend, fresh.
type Connect = (PoolId, usize, bool);

/// What [`Driver::drain_now`] stopped at because it has to be waited for.
enum Blocked {
    /// A write would block (the outputs before it are queued).
    Flush,
    /// The upstream's writes would block before it can be released.
    Release(bool),
    /// The client is to be closed (after its writes).
    Close,
    /// No idle upstream connection: a new one is to be connected.
    Connect(PoolId, usize),
}

/// The connection's timer. One field, not an armed and a fired instant: a connection holds
/// it even while idle.
enum TimerState {
    Unarmed,
    /// Set to fire at this instant (at or before the engine's deadline).
    Armed(Instant),
    /// Fired, and `handle_timeout` was called for this deadline: should the engine keep
    /// reporting it (a bug), it is ignored rather than handled in a busy loop.
    Fired(Instant),
}

/// Which reads a wait is for.
struct Wants {
    client: bool,
    upstream: bool,
}

enum Wake {
    Client,
    Upstream,
    Timer,
    Shutdown,
    /// A reload installed a configuration generation this connection has not looked at,
    /// or one it is to move to now that it is idle.
    Reload,
}

/// Runs one client connection to its end (see the module's documentation).
pub(crate) struct Driver {
    shared: Arc<Shared>,
    /// The configuration generation the connection's engine runs on.
    generation: Arc<Generation>,
    /// The newest generation this connection has looked at (see [`Driver::follow_reload`]).
    reload_seen: u64,
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
    client_queue: ClientQueue,
    up: Option<Upstream>,
    /// This task's registration in `Shared::shutdown_wakers`, made on the first wait
    /// (`NOT_REGISTERED` before).
    shutdown_key: usize,
    /// `begin_shutdown` was called (or deferred: see `shutdown_deferred`).
    shutdown_seen: bool,
    /// Shutdown began while a request waited unread, or before the first: `begin_shutdown`
    /// once it is read, or when the grace timer fires.
    shutdown_deferred: bool,
    /// The client sent something (a connection that has not gets a grace at shutdown).
    had_input: bool,
    /// Which side the next wait checks first (alternates, so neither starves the other).
    upstream_first: bool,
    _guards: Guards,
    /// Fires at the armed instant (at or before the engine's deadline).
    timer: Timer,
    timer_state: TimerState,
    warned: bool,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.shutdown_key != NOT_REGISTERED {
            self.shared.shutdown_wakers.deregister(self.shutdown_key);
        }
        self.client_queue.clear();
        self.client_queue.give_back();
    }
}

impl Driver {
    pub(crate) async fn run(&mut self) {
        loop {
            // Draining is done in place as far as nothing has to be waited for (the usual
            // case); the rest goes on in a boxed future, so that no draining state is part of
            // the task (nor awaited through a nested future).
            let blocked = future::poll_fn(|cx| Poll::Ready(self.drain_now(cx))).await;
            if let Some((blocked, connect)) = blocked {
                Box::pin(self.drain_blocked(blocked, connect)).await;
            }
            if self.conn.is_closed() {
                break;
            }
            if !self.prepare_wait() {
                tracing::warn!(
                    "engine waits for nothing (no read wanted, no deadline) and is not closed: \
                     closing the connection (engine bug)"
                );
                break;
            }
            // Nothing but the driver is kept across the wait: which reads are wanted and the
            // deadline are read again (nothing reaches the engine while waiting).
            let wake = future::poll_fn(|cx| self.poll_wait(cx)).await;
            match wake {
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
                    self.timer_state = TimerState::Unarmed;
                    let now = Instant::now();
                    // Nothing reached the engine while waiting: its deadline is the one the
                    // wait began with. The timer may have been armed for an earlier deadline
                    // than that: then it only gets re-armed.
                    if let Some(at) = self.deadline().filter(|&at| at <= now) {
                        self.timer_state = TimerState::Fired(at);
                        self.conn.handle_timeout(now);
                    }
                    if std::mem::take(&mut self.shutdown_deferred) {
                        self.conn.begin_shutdown(now); // the grace is over
                    }
                }
                Wake::Shutdown => {
                    self.shutdown_seen = true;
                    // A request already sent (bytes waiting unread) is served first, and a
                    // connection accepted a moment ago gets a short grace to send its
                    // first: closing now would lose it. Shutdown begins once it is read
                    // (or the grace is over).
                    if self.conn.is_idle() && (!self.had_input || self.client.pending_input()) {
                        self.shutdown_deferred = true;
                        self.arm_timer(Some(Instant::now() + net::SHUTDOWN_GRACE));
                    } else {
                        self.conn.begin_shutdown(Instant::now());
                    }
                }
                Wake::Reload => self.follow_reload(),
            }
        }
        // Boxed: closing may wait (TLS close_notify), and its state would otherwise enlarge
        // every connection's task.
        Box::pin(self.finish()).await;
        tracing::trace!(listener = self.conn.listener(), "connection closed");
    }

    /// Which reads the engine wants now.
    fn wants(&self) -> Wants {
        Wants {
            // After `CloseClient` only the write side is shut: a lingering engine still reads.
            client: !self.client_eof && self.conn.wants_client_read(),
            upstream: self.up.as_ref().is_some_and(|u| !u.eof) && self.conn.wants_upstream_read(),
        }
    }

    /// Gets ready to wait: gives an idle connection's buffers back and arms the timer for
    /// the engine's deadline; `false` when there is nothing to wait for.
    fn prepare_wait(&mut self) -> bool {
        let wants = self.wants();
        if self.conn.is_idle() && self.up.is_none() {
            // An idle keep-alive connection holds no write queue and no exchange
            // buffers (taken before the deadline is read: it moves when they go).
            self.client_queue.give_back();
            take_exchange_buffers(&mut self.conn);
        }
        let deadline = self.deadline();
        if !wants.client && !wants.upstream && deadline.is_none() {
            return false;
        }
        self.arm_timer(deadline);
        self.upstream_first = !self.upstream_first;
        true
    }

    /// The engine's next deadline, ignoring one it keeps after it was handled (no busy loop).
    fn deadline(&mut self) -> Option<Instant> {
        let (at, kind) = self.conn.poll_timeout()?;
        if matches!(self.timer_state, TimerState::Fired(fired) if fired == at)
            && at <= Instant::now()
        {
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

    /// Re-arms the timer only when the deadline moved earlier (or nothing is armed): a later
    /// deadline is met by re-arming when the earlier timer fires.
    fn arm_timer(&mut self, deadline: Option<Instant>) {
        if let Some(at) = deadline {
            if !matches!(self.timer_state, TimerState::Armed(armed) if armed <= at) {
                self.timer.set_at(at);
                self.timer_state = TimerState::Armed(at);
            }
        }
    }

    /// What to do next, polled in place: no future is stored for any of the sources. Sockets
    /// use their single waker slot, which stays registered when the task stops waiting, so
    /// waiting again costs no `epoll_ctl` (see `ClientStream::poll_ready`).
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        let wants = self.wants();
        let (want_client, want_up) = (wants.client, wants.upstream);
        if self.upstream_first {
            if self.poll_upstream_ready(want_up, cx) {
                return Poll::Ready(Wake::Upstream);
            }
            if self.poll_client_ready(want_client, cx) {
                return Poll::Ready(Wake::Client);
            }
        } else {
            if self.poll_client_ready(want_client, cx) {
                return Poll::Ready(Wake::Client);
            }
            if self.poll_upstream_ready(want_up, cx) {
                return Poll::Ready(Wake::Upstream);
            }
        }
        if matches!(self.timer_state, TimerState::Armed(_))
            && Pin::new(&mut self.timer).poll(cx).is_ready()
        {
            return Poll::Ready(Wake::Timer);
        }
        if self.poll_shutdown(cx) {
            return Poll::Ready(Wake::Shutdown);
        }
        // (Woken through the shutdown registration made just above.)
        if self.reload_due() {
            return Poll::Ready(Wake::Reload);
        }
        Poll::Pending
    }

    /// Whether [`Driver::follow_reload`] has something to do: a generation not looked at
    /// yet, or one to move to now that the connection is idle.
    fn reload_due(&self) -> bool {
        if self.shutdown_seen {
            return false; // closing anyway (shutdown, or its listener was removed)
        }
        let current = self.shared.generation();
        current != self.reload_seen
            || (self.generation.id != current && self.conn.is_idle() && self.up.is_none())
    }

    /// Follows a reload: a connection whose listener the new configuration no longer has
    /// is drained (its exchange in flight finishes, then it closes); an idle one moves to
    /// the new generation, so its next request follows the new configuration; a busy one
    /// moves when its exchange is over (this is called again then).
    fn follow_reload(&mut self) {
        let current = self.shared.current();
        self.reload_seen = current.id;
        if current.id == self.generation.id {
            return;
        }
        let listener = self.conn.listener();
        let found = mxgate_std::support::reload::listener_in(
            &self.generation.config,
            listener,
            &current.config,
        );
        let Some(listener) = found else {
            if !self.shutdown_seen {
                tracing::debug!(
                    listener,
                    "listener removed by a reload: draining the connection"
                );
                self.shutdown_seen = true;
                self.conn.begin_shutdown(Instant::now());
            }
            return; // stays on its generation until it closes
        };
        if self.up.is_none() && self.conn.reconfigure(current.config.clone(), listener) {
            self.generation = current;
        }
    }

    fn poll_client_ready(&self, want_client: bool, cx: &mut Context<'_>) -> bool {
        // An error shows up again on the read attempt.
        want_client
            && (self.client_more || self.client.poll_ready(self.tls_socket_only, cx).is_ready())
    }

    fn poll_upstream_ready(&self, want_up: bool, cx: &mut Context<'_>) -> bool {
        match &self.up {
            Some(u) if want_up => u.more || u.conn.stream.poll_readable(cx).is_ready(),
            _ => false,
        }
    }

    /// Whether shutdown began and the engine was not told yet; registers the task to be
    /// woken for it on the first call.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> bool {
        if self.shutdown_seen {
            return false;
        }
        let wakers = &self.shared.shutdown_wakers;
        if wakers.begun() {
            return true;
        }
        if self.shutdown_key == NOT_REGISTERED {
            match wakers.register(cx.waker()) {
                Some(key) => self.shutdown_key = key,
                None => return true,
            }
        }
        false
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
                    self.had_input = true;
                    if let Some(metrics) =
                        self.generation.listener_metrics.get(self.conn.listener())
                    {
                        metrics.bytes_in.inc_by(n as u64);
                    }
                    if self.conn.is_idle() {
                        lend_exchange_buffers(&mut self.conn);
                    }
                    self.conn.handle_client_data(&buf[..n], now);
                    if std::mem::take(&mut self.shutdown_deferred) {
                        self.conn.begin_shutdown(now);
                    }
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
    /// produced (write failures, the outcome of a connect), until the engine has nothing
    /// more or something has to be waited for: then returns that, and the upstream
    /// connection asked for so far (obtained once the outputs are drained), for
    /// [`Driver::drain_blocked`].
    fn drain_now(&mut self, cx: &mut Context<'_>) -> Option<(Blocked, Option<Connect>)> {
        loop {
            let mut connect: Option<Connect> = None;
            while let Some(output) = self.conn.poll_output() {
                match self.perform(output) {
                    Step::Done => {}
                    Step::Connect(pool, backend, fresh) => {
                        connect = Some((pool, backend, fresh));
                        if !self.try_flush(cx) {
                            return Some((Blocked::Flush, connect));
                        }
                    }
                    Step::Release(reusable) => {
                        if !self.try_flush_upstream(cx) {
                            return Some((Blocked::Release(reusable), connect));
                        }
                        self.release_upstream(reusable);
                    }
                    Step::Close => return Some((Blocked::Close, connect)),
                }
            }
            if !self.try_flush(cx) {
                return Some((Blocked::Flush, connect));
            }
            if self.report_broken_side() {
                continue;
            }
            if let Some((pool, backend, fresh)) = connect {
                if !self.connect_idle(pool, backend, fresh) {
                    return Some((Blocked::Connect(pool, backend), None));
                }
                continue;
            }
            return None;
        }
    }

    /// Tells the engine about a side whose write failed (as its EOF), once; `true` when it
    /// did (the engine may then have new outputs).
    fn report_broken_side(&mut self) -> bool {
        if self.client_broken && !self.client_eof {
            self.client_eof = true;
            self.conn.handle_client_eof(Instant::now());
            return true;
        }
        if let Some(up) = self.up.as_mut() {
            if up.broken && !up.eof {
                up.eof = true;
                self.conn.handle_upstream_eof(Instant::now());
                return true;
            }
        }
        false
    }

    /// Writes what the sockets take now: `false` when a write would block.
    fn try_flush(&mut self, cx: &mut Context<'_>) -> bool {
        self.try_flush_client(cx) && self.try_flush_upstream(cx)
    }

    /// Waits for what stopped [`Driver::drain_now`], then drains the rest with waiting.
    async fn drain_blocked(&mut self, blocked: Blocked, pending: Option<Connect>) {
        match blocked {
            Blocked::Flush => {
                self.flush_client().await;
                self.flush_upstream().await;
            }
            Blocked::Release(reusable) => {
                // Back to the pool before the client sees the end of its response: a client
                // that sends its next request at once (on this or another connection) then
                // finds the connection idle, not still held.
                self.flush_upstream().await;
                self.release_upstream(reusable);
            }
            Blocked::Close => {
                self.flush().await;
                self.close_client().await;
            }
            // Boxed: connecting a new one is rare and its state (attempts, DNS, timers) would
            // otherwise enlarge this future, allocated whenever a write blocks.
            Blocked::Connect(pool, backend) => Box::pin(self.connect_new(pool, backend)).await,
        }
        let mut pending = pending;
        loop {
            let mut connect = pending.take();
            loop {
                // The output is consumed before anything is awaited (its type is large).
                let step = match self.conn.poll_output() {
                    None => break,
                    Some(output) => self.perform(output),
                };
                match step {
                    Step::Done => {}
                    Step::Connect(pool, backend, fresh) => {
                        connect = Some((pool, backend, fresh));
                        self.flush().await;
                    }
                    Step::Release(reusable) => {
                        self.flush_upstream_only().await;
                        self.release_upstream(reusable);
                    }
                    Step::Close => {
                        self.flush().await;
                        self.close_client().await;
                    }
                }
            }
            self.flush().await;
            if self.report_broken_side() {
                continue;
            }
            if let Some((pool, backend, fresh)) = connect {
                if !self.connect_idle(pool, backend, fresh) {
                    Box::pin(self.connect_new(pool, backend)).await;
                }
                continue;
            }
            return;
        }
    }

    /// Performs an output that needs no waiting (queueing bytes, logging); the others are
    /// returned as the step to take.
    fn perform(&mut self, output: Output) -> Step {
        match output {
            Output::ToClient(bytes) => {
                if !bytes.is_empty() {
                    self.client_queue.push(bytes);
                }
            }
            Output::ToUpstream(bytes) => match self.up.as_mut() {
                Some(up) if !up.broken => {
                    if !bytes.is_empty() {
                        enqueue(&mut up.conn.queue, bytes);
                    }
                }
                Some(_) => {}
                None => tracing::warn!("engine wrote to an upstream it does not hold (engine bug)"),
            },
            report @ (Output::AccessLog(_)
            | Output::ExchangeDone(_)
            | Output::UpstreamFault { .. }) => {
                let generation = &self.generation;
                report::handle(
                    &generation.config,
                    &generation.metrics,
                    generation.upstreams.health(),
                    report,
                )
            }
            Output::ConnectUpstream {
                pool,
                backend,
                fresh,
            } => return Step::Connect(pool, backend, fresh),
            Output::ReleaseUpstream { reusable } => return Step::Release(reusable),
            Output::CloseClient => return Step::Close,
        }
        Step::Done
    }

    /// Writes whatever is queued for either side. A failed write marks that side broken.
    /// What the sockets take at once is written in place; only a write that would block goes
    /// on in a boxed future (its state, with the stall bound, would otherwise enlarge every
    /// connection's task).
    async fn flush(&mut self) {
        let done = future::poll_fn(|cx| {
            Poll::Ready(self.try_flush_client(cx) && self.try_flush_upstream(cx))
        })
        .await;
        if !done {
            Box::pin(async {
                self.flush_client().await;
                self.flush_upstream().await;
            })
            .await;
        }
    }

    /// [`Driver::flush`] for the upstream side only.
    async fn flush_upstream_only(&mut self) {
        if !future::poll_fn(|cx| Poll::Ready(self.try_flush_upstream(cx))).await {
            Box::pin(self.flush_upstream()).await;
        }
    }

    /// Writes what the client takes now: `false` when a write would block (the task is then
    /// registered for writability), `true` when done or failed.
    fn try_flush_client(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(queue) = self.client_queue.pending() else {
            return true;
        };
        if self.client_broken || self.client_closed {
            queue.clear();
            return true;
        }
        let mut written = 0;
        let result = write_now(&mut self.client, queue, &mut written, cx);
        self.count_bytes_out(written);
        match result {
            None => false,
            Some(Ok(())) => true,
            Some(Err(err)) => {
                tracing::debug!(error = %err, "client write failed");
                self.client_broken = true;
                self.client_queue.clear();
                true
            }
        }
    }

    fn count_bytes_out(&self, n: u64) {
        if let Some(metrics) = self.generation.listener_metrics.get(self.conn.listener()) {
            metrics.bytes_out.inc_by(n);
        }
    }

    /// [`Driver::try_flush_client`] for the upstream.
    fn try_flush_upstream(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(up) = self.up.as_mut() else {
            return true;
        };
        if up.conn.queue.is_empty() {
            return true;
        }
        if up.broken {
            up.conn.queue.clear();
            return true;
        }
        match write_now(&mut up.conn.stream, &mut up.conn.queue, &mut 0, cx) {
            None => false,
            Some(Ok(())) => true,
            Some(Err(err)) => {
                tracing::debug!(upstream = %up.conn.addr, error = %err, "upstream write failed");
                up.broken = true;
                up.conn.queue.clear();
                true
            }
        }
    }

    async fn flush_client(&mut self) {
        if let Some(queue) = self.client_queue.pending() {
            if self.client_broken || self.client_closed {
                queue.clear();
            } else {
                // A client that stops reading a large response: the exchange ends (and its
                // upstream connection is closed, not reused) once no byte went out for this long.
                let stall = self.generation.config.timeouts.send;
                match write_queue(&mut self.client, queue, stall).await {
                    Ok(n) => {
                        self.count_bytes_out(n);
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
        let stall = self.generation.config.timeouts.send;
        if let Some(up) = self.up.as_mut() {
            if !up.conn.queue.is_empty() {
                if up.broken {
                    up.conn.queue.clear();
                } else if let Err(err) =
                    write_queue(&mut up.conn.stream, &mut up.conn.queue, stall).await
                {
                    tracing::debug!(upstream = %up.conn.addr, error = %err, "upstream write failed");
                    up.broken = true;
                    up.conn.queue.clear();
                }
            }
        }
    }

    /// Hands the engine an idle pooled upstream connection, the usual case; `false` when
    /// there is none (then `connect_new`).
    fn connect_idle(&mut self, pool: PoolId, backend: usize, fresh: bool) -> bool {
        if self.up.take().is_some() {
            tracing::warn!(
                "engine asked for an upstream while holding one (engine bug): closing the old one"
            );
        }
        match self.generation.upstreams.take_idle(pool, backend, fresh) {
            Some(conn) => {
                self.upstream_obtained(conn, true);
                true
            }
            None => false,
        }
    }

    fn upstream_obtained(&mut self, conn: Box<UpstreamConn>, reused: bool) {
        self.up = Some(Upstream {
            conn,
            eof: false,
            broken: false,
            more: false,
        });
        self.conn.handle_upstream_connected(reused, Instant::now());
    }

    /// Connects a new upstream connection within the engine's connect deadline and reports
    /// the outcome.
    async fn connect_new(&mut self, pool: PoolId, backend: usize) {
        let now = Instant::now();
        let engine_deadline = match self.conn.poll_timeout() {
            Some((at, TimerKind::UpstreamConnect)) => Some(at),
            _ => None,
        };
        let deadline =
            engine_deadline.unwrap_or(now + self.generation.config.timeouts.upstream_connect);
        let generation = self.generation.clone();
        let obtained = future::or(
            async {
                Some(
                    generation
                        .upstreams
                        .connect(pool, backend, &generation.metrics)
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
            Some(Ok(conn)) => self.upstream_obtained(conn, false),
            Some(Err(err)) => {
                let name = self
                    .generation
                    .config
                    .pools
                    .get(pool)
                    .map_or("?", |p| p.name.as_str());
                tracing::warn!(pool = name, error = %err, "cannot connect to any backend");
                self.conn.handle_upstream_failed(now);
            }
            None => {
                let name = self
                    .generation
                    .config
                    .pools
                    .get(pool)
                    .map_or("?", |p| p.name.as_str());
                tracing::warn!(pool = name, "connecting to the backend timed out");
                if let Some(at) = engine_deadline {
                    // The engine's own deadline passed: it answers 504. (An armed timer stays
                    // armed: it is still polled and meets a kept deadline by firing.)
                    if !matches!(self.timer_state, TimerState::Armed(_)) {
                        self.timer_state = TimerState::Fired(at);
                    }
                    self.conn.handle_timeout(now);
                } else {
                    self.conn.handle_upstream_failed(now);
                }
            }
        }
    }

    fn release_upstream(&mut self, reusable: bool) {
        match self.up.take() {
            Some(up) if reusable && !up.broken && !up.eof && up.conn.queue.is_empty() => {
                self.generation.upstreams.release(up.conn);
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

    /// Closes the upstream (the engine did not release it for reuse) and the client. Any
    /// lingering (reading and discarding after an early answer) was the engine's, before it
    /// reported itself closed.
    async fn finish(&mut self) {
        self.up = None;
        self.client_queue.clear();
        self.close_client().await;
    }
}
