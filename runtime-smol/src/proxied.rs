//! The PROXY protocol header on `proxy_protocol = true` listeners: read (by async peeks, so
//! the bytes after it stay in the socket for TLS or HTTP) before anything else, within
//! `timeouts.client_header`, only from `forwarding.trusted_proxies`. The logic is
//! `mxgate_std::support::proxy_header`'s; only the waiting is here.

use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use mxgate_core::proxy_protocol::MAX_HEADER_LEN;
use mxgate_core::ListenerId;
use mxgate_std::support::proxy_header::{self, Admission, HeaderReader, ProxyHeaderError, Step};
use smol::io::AsyncReadExt;
use smol::{future, Async, Timer};

use crate::{Generation, Shared};

/// The client address for a connection accepted from `peer` on `listener`: `peer` itself,
/// or the source from its PROXY header. `None`: close the connection (untrusted peer,
/// malformed or late header, or shutdown began).
pub(crate) async fn client_address(
    shared: &Shared,
    generation: &Generation,
    listener: ListenerId,
    stream: &Async<TcpStream>,
    peer: SocketAddr,
) -> Option<SocketAddr> {
    let result = match proxy_header::admit(&generation.config, listener, peer) {
        Ok(Admission::Direct) => return Some(peer),
        Ok(Admission::ReadHeader) => {
            let deadline = Instant::now() + generation.config.timeouts.client_header;
            future::or(
                read_header(stream, peer),
                future::or(
                    async {
                        Timer::at(deadline).await;
                        Err(ProxyHeaderError::Timeout)
                    },
                    async {
                        let _ = shared.shutdown.recv().await;
                        Err(ProxyHeaderError::Io(std::io::Error::other(
                            "shutdown began before the PROXY header arrived",
                        )))
                    },
                ),
            )
            .await
        }
        Err(err) => Err(err),
    };
    match result {
        Ok(source) => {
            tracing::trace!(%peer, %source, "PROXY header read");
            Some(source)
        }
        Err(err) => {
            tracing::debug!(%peer, error = %err, "connection refused on a PROXY protocol listener");
            None
        }
    }
}

async fn read_header(
    stream: &Async<TcpStream>,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyHeaderError> {
    let mut reader = HeaderReader::new();
    let mut buf = vec![0u8; MAX_HEADER_LEN];
    loop {
        let n = stream.peek(&mut buf).await?;
        let (consume, done) = match reader.step(&buf[..n])? {
            Step::Consume(k) => (k, None),
            Step::Done { header, consume } => (consume, Some(header)),
        };
        // Peeked already: completes at once.
        let mut reading = stream;
        reading.read_exact(&mut buf[..consume]).await?;
        if let Some(header) = done {
            return Ok(header.source_or(peer));
        }
    }
}
