//! What the engine asks its runtime to do, and the records it hands out.

use core::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::{ListenerId, PoolId};
use crate::http1::reject::Reject;

/// One thing for the runtime to do, in order. Bytes must be written completely, in the
/// order given, before the runtime feeds the engine more input from that side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes to the client.
    ToClient(Bytes),
    /// Get a connection to `backend` of `pool` (chosen by the pool's balancing policy and
    /// health; a runtime may fail over to another backend of the pool if that one refuses),
    /// then call [`crate::Connection::handle_upstream_connected`] or
    /// [`crate::Connection::handle_upstream_failed`]. With `fresh`, a pooled idle connection
    /// must not be reused (this is the retry after a reused connection failed).
    ConnectUpstream {
        pool: PoolId,
        backend: usize,
        fresh: bool,
    },
    /// Write these bytes to the current upstream connection.
    ToUpstream(Bytes),
    /// The engine is done with the upstream connection: put it back in the idle pool when
    /// `reusable`, otherwise close it.
    ReleaseUpstream { reusable: bool },
    /// After writing everything before this, shut the client connection's write side (TLS
    /// `close_notify`, then the FIN). Keep reading while [`crate::Connection::wants_client_read`]
    /// says so: after an early answer the engine lingers, reading and discarding what the
    /// client still sends so that it can read the answer (RFC 9112 §9.6). The connection is
    /// over at [`crate::Connection::is_closed`].
    CloseClient,
    /// An exchange finished: one access-log record (only when the configuration has an
    /// access log; else [`Output::ExchangeDone`]). Boxed: it is ten times the size of the
    /// other variants, and every output is moved through a queue.
    AccessLog(Box<AccessRecord>),
    /// An exchange finished, with access logging off: what metrics need, without the
    /// allocation and the work of a whole record.
    ExchangeDone(ExchangeStats),
    /// The upstream `backend` of `pool` answered in a way that could not be passed on (the
    /// client gets a 502, or a cut connection once its response had started). For the
    /// runtime's log: an admin sees why, not only that.
    UpstreamFault {
        pool: PoolId,
        backend: usize,
        fault: UpstreamFault,
    },
}

/// What was wrong with an upstream's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFault {
    /// The response head or body broke this rule.
    Refused(Reject),
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    UnaskedUpgrade,
    /// The connection closed before the response was complete.
    ClosedEarly,
}

impl core::fmt::Display for UpstreamFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            // The rules' texts are written for requests; these few name the request.
            UpstreamFault::Refused(Reject::HeadTooLarge) => f.write_str("response head too large"),
            UpstreamFault::Refused(Reject::TooManyHeaders) => {
                f.write_str("too many response headers")
            }
            UpstreamFault::Refused(rule) => write!(f, "response refused: {}", rule.reason()),
            UpstreamFault::UnaskedUpgrade => {
                f.write_str("101 Switching Protocols to a request that asked for no upgrade")
            }
            UpstreamFault::ClosedEarly => {
                f.write_str("connection closed before the response was complete")
            }
        }
    }
}

/// The numbers of one finished exchange, for metrics. Stored compactly (it travels in
/// every [`Output`]); read it with the accessors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeStats {
    listener: u32,
    /// The pool plus one; 0 for none.
    pool: u32,
    status: u16,
    upstream_duration: Option<Duration>,
}

impl ExchangeStats {
    pub fn new(
        listener: ListenerId,
        pool: Option<PoolId>,
        status: u16,
        upstream_duration: Option<Duration>,
    ) -> Self {
        // Listener and pool counts are tiny (configuration items); saturating keeps a
        // bogus id from aliasing a real one.
        let compact = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        ExchangeStats {
            listener: compact(listener),
            pool: pool.map_or(0, |p| compact(p.saturating_add(1))),
            status,
            upstream_duration,
        }
    }

    pub fn listener(&self) -> ListenerId {
        self.listener as ListenerId
    }

    /// The pool the request went to, if any.
    pub fn pool(&self) -> Option<PoolId> {
        self.pool.checked_sub(1).map(|p| p as PoolId)
    }

    /// Status sent to the client (0 when the client got no response).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// From sending the request upstream to the upstream's response head, if it got that far.
    pub fn upstream_duration(&self) -> Option<Duration> {
        self.upstream_duration
    }
}

/// Why the engine wants to be woken at a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// The request head is taking too long (slowloris).
    ClientHeader,
    /// Idle keep-alive connection between requests.
    ClientIdle,
    /// A request body stalled.
    ClientBody,
    /// Connecting to the upstream.
    UpstreamConnect,
    /// Waiting for the upstream's response (head, or the next body bytes).
    UpstreamResponse,
    /// Lingering after an early answer: the time is up, or the client sent nothing more
    /// for a while; the connection closes.
    ClientLinger,
}

impl AccessRecord {
    /// What metrics need of this record.
    pub fn stats(&self) -> ExchangeStats {
        ExchangeStats::new(
            self.listener,
            self.pool,
            self.status,
            self.upstream_duration,
        )
    }
}

/// One finished exchange, for the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    pub listener: ListenerId,
    /// The client address after `X-Forwarded-For` resolution.
    pub client: IpAddr,
    /// The method as sent (`GET`); empty when the request line was unreadable.
    pub method: Bytes,
    /// The request-target exactly as sent.
    pub target: Bytes,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: &'static str,
    /// Status sent to the client (0 when the client got no response, e.g. a cut upstream).
    pub status: u16,
    /// Request body bytes received from the client.
    pub body_bytes_in: u64,
    /// Response bytes (head and body) sent to the client.
    pub bytes_out: u64,
    /// From the first byte of the request to the end of the exchange.
    pub duration: Duration,
    /// From sending the request upstream to the upstream's response head, if it got that far.
    pub upstream_duration: Option<Duration>,
    /// The pool the request went to, if any.
    pub pool: Option<PoolId>,
    pub request_id: Bytes,
    /// `User-Agent` and `Referer`, for the combined log format.
    pub user_agent: Bytes,
    pub referer: Bytes,
    /// When the exchange began.
    pub started: Instant,
}
