//! Accepting client connections: one accept loop per bound socket, holding a connection-limit
//! permit per connection (and not accepting while none is free), the TLS handshake under its
//! timeout on https listeners, then one driver task per connection.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_rustls::TlsAcceptor;
use mxgate_core::config::Scheme;
use mxgate_core::http2::{sniff_preface, Preface};
use mxgate_core::ListenerId;
use mxgate_std::support::limit::Permit;
use mxgate_std::support::net;
use mxgate_std::support::tls::ACME_TLS_ALPN;
use smol::{future, Async, Executor, Timer};

use crate::driver;
use crate::stream::ClientStream;
use crate::{Generation, Shared};

/// A bound client socket. It serves the listener whose `bind` holds its configured
/// address, in whichever configuration generation is current when a connection arrives.
pub(crate) struct Bound {
    /// The address as configured (`127.0.0.1:0`, `[::]:443`).
    pub configured: SocketAddr,
    pub socket: Async<TcpListener>,
    /// The address as bound.
    pub addr: SocketAddr,
}

impl Bound {
    pub fn new(configured: SocketAddr, socket: TcpListener) -> std::io::Result<Bound> {
        Ok(Bound {
            configured,
            addr: socket.local_addr()?,
            socket: Async::new(socket)?,
        })
    }
}

/// Accepts until shutdown begins or `stop` closes (a reload removed the address), then
/// drops the socket (new connections are refused; those accepted go on).
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    executor: Arc<Executor<'static>>,
    bound: Bound,
    stop: smol::channel::Receiver<()>,
) {
    let shutdown = shared.shutdown.clone();
    loop {
        // Stop accepting while the connection limit is reached.
        while !shared.limit.has_room() {
            let released = shared.limit.listen();
            if shared.limit.has_room() {
                break;
            }
            shared.limit.report_full();
            let go_on = future::or(
                async {
                    released.await;
                    Some(())
                },
                halted(&shutdown, &stop),
            )
            .await;
            if go_on.is_none() {
                return;
            }
        }
        let accepted = future::or(
            async { Some(bound.socket.accept().await) },
            halted(&shutdown, &stop),
        )
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, peer))) => {
                // Another listener may have taken the last slot meanwhile: wait for one.
                let permit = loop {
                    match shared.limit.acquire_or_listen() {
                        Ok(permit) => break Some(permit),
                        Err(released) => {
                            let go_on = future::or(
                                async {
                                    released.await;
                                    Some(())
                                },
                                halted(&shutdown, &stop),
                            )
                            .await;
                            if go_on.is_none() {
                                break None;
                            }
                        }
                    }
                };
                let Some(permit) = permit else {
                    return;
                };
                let generation = shared.current();
                let Some(listener) = generation.listener_at(bound.configured) else {
                    // A reload removed the address a moment ago: as if it had been closed.
                    continue;
                };
                let accepted = Box::new(Accepted {
                    shared: shared.clone(),
                    generation,
                    listener,
                    stream,
                    peer,
                    permit,
                });
                executor.spawn(connection(accepted)).detach();
            }
            Some(Err(err)) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(addr = %bound.addr, error = %err, "accept failed");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Resolves (to `None`) once shutdown began or `stop` closed.
async fn halted<T>(
    shutdown: &smol::channel::Receiver<()>,
    stop: &smol::channel::Receiver<()>,
) -> Option<T> {
    future::or(stopped(shutdown), stopped(stop)).await
}

/// Resolves (to `None`) once shutdown began.
async fn stopped<T>(shutdown: &smol::channel::Receiver<()>) -> Option<T> {
    let _ = shutdown.recv().await;
    None
}

/// A connection as accepted: what its task starts from.
struct Accepted {
    shared: Arc<Shared>,
    generation: Arc<Generation>,
    listener: ListenerId,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    permit: Permit,
}

/// One client connection: TLS handshake if the listener wants it, then the driver.
///
/// The task keeps only the driver for the connection's life: what it starts from is one
/// pointer, and the opening (PROXY header, TLS handshake) is boxed and gone before the first
/// request (an async fn keeps its arguments, and every opening state, in the task).
async fn connection(accepted: Box<Accepted>) {
    let Some((opened, h2)) = Box::pin(open(accepted)).await else {
        return;
    };
    if h2 {
        // Boxed: an HTTP/2 connection's state stays out of every HTTP/1.1 task.
        let mut driver = Box::new(crate::h2driver::H2Driver::new(opened));
        Box::pin(driver.run()).await;
        return;
    }
    let mut driver = driver::Driver::new(opened);
    driver.run().await;
}

/// The opening of a connection, and whether it speaks HTTP/2 (ALPN `h2`, or the preface
/// on a plain listener that accepts prior knowledge); `None` when the connection was
/// refused or its handshake failed.
async fn open(accepted: Box<Accepted>) -> Option<(driver::Opened, bool)> {
    let Accepted {
        shared,
        generation,
        listener,
        stream,
        peer,
        permit,
    } = *accepted;
    let metrics = generation.metrics.listener(listener);
    let open = metrics.open();
    if let Err(err) = net::tune(stream.get_ref()) {
        tracing::debug!(%peer, error = %err, "cannot set client socket options");
    }
    // PROXY protocol listeners: the client address from the header, before TLS.
    let peer =
        crate::proxied::client_address(&shared, &generation, listener, &stream, peer).await?;
    let scheme = generation.config.listeners.get(listener).map(|l| l.scheme);
    let offers_h2 = generation
        .config
        .listeners
        .get(listener)
        .is_some_and(|l| l.http2);
    let mut h2 = false;
    let client = match (scheme, &generation.tls) {
        (Some(Scheme::Https), Some(acceptors)) => {
            let acceptor = acceptors.for_listener(offers_h2);
            match handshake(acceptor, stream, &shared, &generation).await {
                // A TLS-ALPN-01 validation: the handshake was the whole answer (RFC 8737).
                Some(tls) if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) => {
                    tracing::debug!(%peer, "TLS-ALPN-01 challenge handshake answered");
                    return None;
                }
                Some(tls) => {
                    h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    ClientStream::Tls(Box::new(tls))
                }
                None => {
                    metrics.tls_failures.inc();
                    return None;
                }
            }
        }
        _ => {
            if offers_h2 {
                let limit = generation.config.timeouts.client_header;
                h2 = starts_with_preface(&stream, limit).await;
            }
            ClientStream::Plain(stream)
        }
    };
    tracing::trace!(%peer, listener, "connection open");
    let opened = driver::Opened {
        shared,
        generation,
        listener,
        peer: peer.ip(),
        client,
        guards: driver::Guards {
            _permit: permit,
            _open: open,
        },
    };
    Some((opened, h2))
}

/// Whether a plain connection begins with the HTTP/2 preface (prior knowledge), looking
/// without consuming: anything else is left whole for the HTTP/1.1 engine. Bounded by
/// `limit`; a client that sends a part of the preface and stops is left to HTTP/1.1 too
/// (which refuses it).
async fn starts_with_preface(stream: &Async<TcpStream>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 24];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || crate::stream::bounded(stream.readable(), left)
                .await
                .is_err()
        {
            return false;
        }
        let Ok(n) = stream.get_ref().peek(&mut buf) else {
            return false;
        };
        match sniff_preface(&buf[..n]) {
            Preface::Http2 => return true,
            Preface::Http1 => return false,
            Preface::Partial => {}
        }
        // A part of the preface: the rest is on its way (readiness would report the bytes
        // already there again, so wait a moment instead).
        Timer::after(Duration::from_millis(2)).await;
    }
}

/// The TLS handshake, bounded by `timeouts.tls_handshake` and abandoned on shutdown.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: Async<TcpStream>,
    shared: &Shared,
    generation: &Generation,
) -> Option<futures_rustls::server::TlsStream<Async<TcpStream>>> {
    let peer = stream.get_ref().peer_addr().ok();
    let limit = generation.config.timeouts.tls_handshake;
    let result = future::or(
        async { Some(acceptor.accept(stream).await) },
        future::or(
            async {
                Timer::after(limit).await;
                None
            },
            async {
                let _ = shared.shutdown.recv().await;
                None
            },
        ),
    )
    .await;
    match result {
        Some(Ok(tls)) => Some(tls),
        Some(Err(err)) => {
            tracing::debug!(?peer, error = %err, "TLS handshake failed");
            None
        }
        None => {
            tracing::debug!(?peer, "TLS handshake timed out or shutdown began");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of_return<A, F>(_: fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A task lives as long as its connection, idle keep-alive ones included: besides the
    /// engine's `Connection` it should hold little (392 bytes with a 184-byte `Connection`
    /// when this was written, 208 besides it; 432 with 224 before, 656 with 280, 1,232
    /// with 288 before that). The bound leaves 32 bytes for compiler layout changes: an idle connection
    /// costs ≈ 1,000 bytes in all, and the target is 1 KiB (bench/RESULTS.md).
    #[test]
    fn a_connection_task_holds_little_besides_the_engine() {
        let task = size_of_return(connection as fn(_) -> _);
        let engine = std::mem::size_of::<mxgate_core::Connection>();
        assert!(
            task <= engine + 240,
            "connection task future: {task} bytes, of which the engine's Connection {engine}"
        );
    }
}
