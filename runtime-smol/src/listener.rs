//! Accepting client connections: one accept loop per bound socket, holding a connection-limit
//! permit per connection (and not accepting while none is free), the TLS handshake under its
//! timeout on https listeners, then one driver task per connection.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::TlsAcceptor;
use mxgate_core::config::Scheme;
use mxgate_core::ListenerId;
use mxgate_std::support::limit::Permit;
use mxgate_std::support::net;
use mxgate_std::support::tls::ACME_TLS_ALPN;
use smol::{future, Async, Executor, Timer};

use crate::driver;
use crate::stream::ClientStream;
use crate::Shared;

/// A bound client socket and the listener it serves.
pub(crate) struct Bound {
    pub listener: ListenerId,
    pub socket: Async<TcpListener>,
    pub addr: SocketAddr,
}

/// Accepts until shutdown begins, then drops the socket (new connections are refused).
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    executor: Arc<Executor<'static>>,
    bound: Bound,
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
                stopped(&shutdown),
            )
            .await;
            if go_on.is_none() {
                return;
            }
        }
        let accepted = future::or(
            async { Some(bound.socket.accept().await) },
            stopped(&shutdown),
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
                                stopped(&shutdown),
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
                let accepted = Box::new(Accepted {
                    shared: shared.clone(),
                    listener: bound.listener,
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

/// Resolves (to `None`) once shutdown began.
async fn stopped<T>(shutdown: &smol::channel::Receiver<()>) -> Option<T> {
    let _ = shutdown.recv().await;
    None
}

/// A connection as accepted: what its task starts from.
struct Accepted {
    shared: Arc<Shared>,
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
    let Some(opened) = Box::pin(open(accepted)).await else {
        return;
    };
    let mut driver = driver::Driver::new(opened);
    driver.run().await;
}

/// The opening of a connection; `None` when the connection was refused or its handshake
/// failed.
async fn open(accepted: Box<Accepted>) -> Option<driver::Opened> {
    let Accepted {
        shared,
        listener,
        stream,
        peer,
        permit,
    } = *accepted;
    let metrics = shared.metrics.listener(listener);
    let open = metrics.open();
    if let Err(err) = net::tune(stream.get_ref()) {
        tracing::debug!(%peer, error = %err, "cannot set client socket options");
    }
    // PROXY protocol listeners: the client address from the header, before TLS.
    let peer = crate::proxied::client_address(&shared, listener, &stream, peer).await?;
    let scheme = shared.config.listeners.get(listener).map(|l| l.scheme);
    let client = match (scheme, &shared.tls) {
        (Some(Scheme::Https), Some(acceptor)) => match handshake(acceptor, stream, &shared).await {
            // A TLS-ALPN-01 validation: the handshake was the whole answer (RFC 8737).
            Some(tls) if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) => {
                tracing::debug!(%peer, "TLS-ALPN-01 challenge handshake answered");
                return None;
            }
            Some(tls) => ClientStream::Tls(Box::new(tls)),
            None => {
                metrics.tls_failures.inc();
                return None;
            }
        },
        _ => ClientStream::Plain(stream),
    };
    tracing::trace!(%peer, listener, "connection open");
    Some(driver::Opened {
        shared,
        listener,
        peer: peer.ip(),
        client,
        guards: driver::Guards {
            _permit: permit,
            _open: open,
        },
    })
}

/// The TLS handshake, bounded by `timeouts.tls_handshake` and abandoned on shutdown.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: Async<TcpStream>,
    shared: &Shared,
) -> Option<futures_rustls::server::TlsStream<Async<TcpStream>>> {
    let peer = stream.get_ref().peer_addr().ok();
    let limit = shared.config.timeouts.tls_handshake;
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
