//! The client side of a connection thread: the socket with its rustls session, its reader,
//! decrypting what was read, blocking writes, and the close (close_notify, then FIN).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection};

use super::reader::{Reader, Side};

pub(crate) struct Client {
    pub stream: Arc<TcpStream>,
    pub tls: Option<ServerConnection>,
    pub reader: Reader,
    /// Bytes read (and decrypted) that the engine did not take yet: one read at most.
    pub pending: Vec<u8>,
    /// The client's side ended (EOF, read or TLS error); reported after `pending`.
    pub pending_eof: bool,
    /// EOF was reported to the engine.
    pub eof: bool,
    /// A write failed: nothing more is written.
    pub broken: bool,
    /// The connection was closed (`CloseClient`).
    pub closed: bool,
}

impl Client {
    pub fn new(
        stream: TcpStream,
        tls: Option<ServerConnection>,
        early: Vec<u8>,
        reader: Reader,
    ) -> Client {
        Client {
            stream: Arc::new(stream),
            tls,
            reader,
            pending: early,
            pending_eof: false,
            eof: false,
            broken: false,
            closed: false,
        }
    }

    /// The client's stream ended (reported or not yet).
    pub fn ended(&self) -> bool {
        self.eof || self.pending_eof
    }

    /// Permits a read if the engine `wants` one and nothing read is waiting or under way.
    pub fn start_read(&mut self, wants: bool) {
        if wants && !self.ended() && self.pending.is_empty() && !self.reader.busy() {
            self.reader.start(&self.stream, Side::Client);
        }
    }

    /// A permitted read came back: its bytes (none: the stream ended) decrypted into
    /// `pending`, and the buffer returned to the reader.
    pub fn read_done(&mut self, buf: Box<[u8]>, result: io::Result<usize>) {
        let n = result.unwrap_or_else(|err| {
            tracing::debug!(error = %err, "client read failed");
            0
        });
        self.input(&buf[..n]);
        self.reader.done(buf);
    }

    /// Raw bytes from the client socket (none: it ended), decrypted on TLS, into `pending`.
    fn input(&mut self, raw: &[u8]) {
        let Some(tls) = self.tls.as_mut() else {
            self.pending.extend_from_slice(raw);
            self.pending_eof |= raw.is_empty();
            return;
        };
        let mut rest = raw;
        while !self.pending_eof {
            let before = rest.len();
            // Reading an empty slice records the end of the stream.
            let read = tls.read_tls(&mut rest);
            let processed = read.and_then(|_| tls.process_new_packets().map_err(io::Error::other));
            match processed.and_then(|_| tls.reader().read_to_end(&mut self.pending)) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Ok(_) => self.pending_eof = true, // close_notify
                Err(err) => {
                    tracing::debug!(error = %err, "TLS stream from the client ended");
                    self.pending_eof = true;
                }
            }
            if rest.is_empty() || rest.len() == before {
                break;
            }
        }
        // Alerts and key updates.
        if self.flush_tls().is_err() {
            self.broken = true;
        }
    }

    /// Writes `bytes` completely (encrypted on TLS); `false` if nothing is written any more
    /// (an earlier failure, a close, or this write failing).
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        if self.broken || self.closed {
            return false;
        }
        let written = match self.tls.as_mut() {
            None => (&*self.stream).write_all(bytes),
            Some(tls) => tls.writer().write_all(bytes), // buffered (no limit), then flushed
        };
        if let Err(err) = written.and_then(|()| self.flush_tls()) {
            tracing::debug!(error = %err, "client write failed");
            self.broken = true;
            return false;
        }
        true
    }

    /// Writes out the TLS records rustls has queued.
    fn flush_tls(&mut self) -> io::Result<()> {
        while let Some(tls) = self.tls.as_mut().filter(|tls| tls.wants_write()) {
            tls.write_tls(&mut &*self.stream)?;
        }
        Ok(())
    }

    /// Sends TLS close_notify and the FIN after everything written so far.
    pub fn close(&mut self) {
        if std::mem::replace(&mut self.closed, true) || self.broken {
            return;
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
        }
        let closed = self.flush_tls();
        if let Err(err) = closed.and_then(|()| self.stream.shutdown(Shutdown::Write)) {
            tracing::debug!(error = %err, "closing the client connection failed");
        }
    }

    /// Closes (if not yet) and ends a read under way on the socket.
    pub fn finish(&mut self) {
        self.close();
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The TLS handshake in blocking mode, bounded by `limit` overall. Also returns the
/// application data that arrived with its end.
pub(crate) fn handshake(
    config: &Arc<ServerConfig>,
    tcp: &TcpStream,
    limit: Duration,
) -> io::Result<(ServerConnection, Vec<u8>)> {
    let mut tls = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
    let deadline = Instant::now() + limit;
    while tls.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        tcp.set_read_timeout(Some(left))?;
        tcp.set_write_timeout(Some(left))?;
        if tls.complete_io(&mut &*tcp)? == (0, 0) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    // From now on reads block until data arrives or the socket is shut down.
    tcp.set_read_timeout(None)?;
    // Outgoing records are bounded by what the engine hands over in one output.
    tls.set_buffer_limit(None);
    let mut early = Vec::new();
    // Normally WouldBlock (nothing more yet); an early close shows up on the next read.
    let _ = tls.reader().read_to_end(&mut early);
    Ok((tls, early))
}
