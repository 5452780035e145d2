//! The Prometheus scrape listener (`runtime.metrics_bind`): answers `GET /metrics` with the
//! exposition from `mxgate-std` and closes. Separate from client listeners, so it is neither
//! proxied nor counted against the connection limit.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use mxgate_std::support::metrics::{head_complete, MAX_REQUEST_HEAD, REQUEST_TIMEOUT};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{future, Async, Executor};

use crate::stream::bounded;
use crate::Shared;

/// Serves scrapes until shutdown begins.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    executor: Arc<Executor<'static>>,
    socket: Async<TcpListener>,
) {
    loop {
        let accepted = future::or(async { Some(socket.accept().await) }, async {
            let _ = shared.shutdown.recv().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, _))) => {
                executor.spawn(scrape(shared.clone(), stream)).detach();
            }
            Some(Err(err)) => {
                tracing::warn!(error = %err, "metrics accept failed");
                smol::Timer::after(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn scrape(shared: Arc<Shared>, mut stream: Async<TcpStream>) {
    let result = bounded(
        async {
            let mut head = Vec::with_capacity(512);
            let mut chunk = [0u8; 1024];
            while !head_complete(&head) && head.len() < MAX_REQUEST_HEAD {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&chunk[..n]);
            }
            let response = shared.current().metrics.respond(&head);
            stream.write_all(&response).await?;
            stream.close().await
        },
        REQUEST_TIMEOUT,
    )
    .await;
    if let Err(err) = result {
        tracing::debug!(error = %err, "metrics request failed");
    }
}
