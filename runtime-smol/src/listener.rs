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
                let task = connection(shared.clone(), bound.listener, stream, peer, permit);
                executor.spawn(task).detach();
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

/// One client connection: TLS handshake if the listener wants it, then the driver.
async fn connection(
    shared: Arc<Shared>,
    listener: ListenerId,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    permit: Permit,
) {
    let _permit = permit;
    let metrics = shared.metrics.listener(listener);
    let _open = metrics.open();
    if let Err(err) = net::tune(stream.get_ref()) {
        tracing::debug!(%peer, error = %err, "cannot set client socket options");
    }
    // PROXY protocol listeners: the client address from the header, before TLS.
    // Boxed: the header reader's state would otherwise be part of every connection's task
    // for its whole life (it is only needed before the first byte).
    let Some(peer) = Box::pin(crate::proxied::client_address(
        &shared, listener, &stream, peer,
    ))
    .await
    else {
        return;
    };
    let scheme = shared.config.listeners.get(listener).map(|l| l.scheme);
    let client = match (scheme, &shared.tls) {
        // Boxed: the handshake's state (a rustls session) would otherwise be part of
        // every connection's task for its whole life.
        (Some(Scheme::Https), Some(acceptor)) => {
            match Box::pin(handshake(acceptor, stream, &shared)).await {
                Some(tls) => ClientStream::Tls(Box::new(tls)),
                None => {
                    metrics.tls_failures.inc();
                    return;
                }
            }
        }
        _ => ClientStream::Plain(stream),
    };
    tracing::trace!(%peer, listener, "connection open");
    driver::drive(
        shared.clone(),
        listener,
        peer.ip(),
        client,
        metrics,
        shared.shutdown.clone(),
    )
    .await;
    tracing::trace!(%peer, listener, "connection closed");
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
