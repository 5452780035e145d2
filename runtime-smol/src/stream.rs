//! The client side of a connection, plain TCP or TLS, behind one type; plus the two I/O
//! helpers the driver needs: waiting for readability without holding a buffer, and writing
//! a queue of byte chunks (vectored) with a stall bound.
//!
//! Cancellation safety, which the driver relies on: a read is only attempted once readiness
//! was reported, by polling it once (`poll_once`), so no read future holding a buffer is ever
//! dropped half-way. Even if one were: `Async<TcpStream>` reads only take bytes when they
//! complete, and futures-rustls reads only copy plaintext out of rustls when they complete
//! (TLS records read from the socket stay buffered in the rustls session). Writes are likewise
//! only counted when a `poll_write` completes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_rustls::server::TlsStream;
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use smol::{future, Async, Timer};

/// A client connection after the (optional) TLS handshake.
pub(crate) enum ClientStream {
    Plain(Async<TcpStream>),
    Tls(Box<TlsStream<Async<TcpStream>>>),
}

impl ClientStream {
    /// Whether a read would make progress. For TLS that is at once when rustls already
    /// holds decrypted bytes (or a close), else when the socket is readable; `socket_only`
    /// skips the first check after an attempt that turned out to have nothing to read.
    /// It uses the socket's single waker slot
    /// (`poll_readable`), which stays registered when the caller stops waiting: waiting
    /// again from the same task then costs no `epoll_ctl` (a `readable()` future re-arms the
    /// socket in epoll every time it is created).
    pub(crate) fn poll_ready(
        &self,
        socket_only: bool,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        match self {
            ClientStream::Plain(s) => s.poll_readable(cx),
            ClientStream::Tls(s) => {
                let (io, session) = s.get_ref();
                if !socket_only && !session.wants_read() {
                    return Poll::Ready(Ok(()));
                }
                io.poll_readable(cx)
            }
        }
    }
}

impl ClientStream {
    /// Sends the TCP FIN. (`AsyncWrite::close` only flushes an `Async<TcpStream>`; for TLS it
    /// sends close_notify first, so call it before this.)
    /// Whether the client's bytes wait unread in the socket (never blocks).
    pub(crate) fn pending_input(&self) -> bool {
        let tcp = match self {
            ClientStream::Plain(s) => s.get_ref(),
            ClientStream::Tls(s) => s.get_ref().0.get_ref(),
        };
        mxgate_std::support::net::pending_input(tcp)
    }

    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        let tcp = match self {
            ClientStream::Plain(s) => s.get_ref(),
            ClientStream::Tls(s) => s.get_ref().0.get_ref(),
        };
        match tcp.shutdown(std::net::Shutdown::Write) {
            Err(err) if err.kind() != io::ErrorKind::NotConnected => Err(err),
            _ => Ok(()),
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    /// TLS: sends close_notify. Plain: only flushes (see [`ClientStream::shutdown_write`]).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_close(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// Most slices handed to one vectored write.
const MAX_SLICES: usize = 32;

/// Writes and flushes what the writer takes now: `Some` when done (or failed), `None` when
/// it would block (the task is then registered for writability).
pub(crate) fn write_now<W: AsyncWrite + Unpin>(
    w: &mut W,
    queue: &mut VecDeque<Bytes>,
    written: &mut u64,
    cx: &mut Context<'_>,
) -> Option<io::Result<()>> {
    while !queue.is_empty() {
        match poll_write_queue(w, queue, cx) {
            Poll::Ready(Ok(0)) => return Some(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                *written += n as u64;
                advance(queue, n);
            }
            Poll::Ready(Err(err)) => return Some(Err(err)),
            Poll::Pending => return None,
        }
    }
    match Pin::new(w).poll_flush(cx) {
        Poll::Ready(result) => Some(result),
        Poll::Pending => None,
    }
}

/// One vectored write of the front of the queue.
fn poll_write_queue<W: AsyncWrite + Unpin>(
    w: &mut W,
    queue: &VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let mut count = 0;
    for (slot, chunk) in slices.iter_mut().zip(queue.iter()) {
        *slot = IoSlice::new(chunk);
        count += 1;
    }
    Pin::new(w).poll_write_vectored(cx, &slices[..count])
}

/// Writes every queued chunk (vectored), then flushes. Each write must make progress within
/// `stall`, else the write fails with `TimedOut`. Returns the bytes written; on error the
/// queue holds what was not written.
///
/// The usual case, a socket that takes everything at once, is [`write_now`], done in place
/// without a timer; this is for what is left when that would block (callers box it, so the
/// bound's state is not part of every connection's task).
pub(crate) async fn write_queue<W: AsyncWrite + Unpin>(
    w: &mut W,
    queue: &mut VecDeque<Bytes>,
    stall: Duration,
) -> io::Result<u64> {
    let mut written = 0u64;
    while !queue.is_empty() {
        let write = future::poll_fn(|cx| poll_write_queue(&mut *w, queue, cx));
        let n = bounded(write, stall).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written += n as u64;
        advance(queue, n);
    }
    bounded(w.flush(), stall).await?;
    Ok(written)
}

/// Drops `n` written bytes from the front of the queue.
fn advance(queue: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = queue.front_mut() else {
            return;
        };
        if front.len() <= n {
            n -= front.len();
            queue.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

/// Runs `f`, failing with `TimedOut` when it takes longer than `limit`.
pub(crate) async fn bounded<T>(
    f: impl std::future::Future<Output = io::Result<T>>,
    limit: Duration,
) -> io::Result<T> {
    future::or(f, async {
        Timer::after(limit).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "no progress"))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_consumes_whole_and_partial_chunks() {
        let mut q: VecDeque<Bytes> = ["abc", "de", "fgh"]
            .iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect();
        advance(&mut q, 4);
        assert_eq!(q, [Bytes::from_static(b"e"), Bytes::from_static(b"fgh")]);
        advance(&mut q, 4);
        assert!(q.is_empty());
    }

    #[test]
    fn write_queue_writes_everything_in_order() {
        smol::block_on(async {
            let mut out = Vec::new();
            let mut q: VecDeque<Bytes> = (0..100).map(|i| Bytes::from(format!("{i},"))).collect();
            let n = write_queue(&mut out, &mut q, Duration::from_secs(1))
                .await
                .unwrap();
            let expected: String = (0..100).map(|i| format!("{i},")).collect();
            assert_eq!(out, expected.as_bytes());
            assert_eq!(n, expected.len() as u64);
        });
    }
}
