//! What wakes a connection thread, and the reader threads that do its blocking reads: one
//! permitted read at a time, the result sent back as an [`Event`] with the buffer.

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread;

/// Each reader's buffer: the most either side is ever read ahead of the engine.
const READ_BUF: usize = 32 * 1024;

/// What wakes a connection thread.
pub(crate) enum Event {
    /// A permitted read finished (`Ok(0)`: end of stream), handing its buffer back.
    Read(Side, Box<[u8]>, io::Result<usize>),
    /// An upstream connection asked for on a helper thread (HTTP/2: one per stream) is
    /// ready or could not be had; `token` names the attempt.
    Connected {
        token: u64,
        result: io::Result<(TcpStream, usize, bool)>,
    },
    /// Graceful shutdown began: finish the exchange in flight, then close.
    Shutdown,
    /// The drain time is over: close now.
    Abort,
    /// A reload installed a new configuration generation.
    Reload,
}

/// Which socket a read was of. Upstream connections are numbered, so that a late read of
/// one already given up is not taken for a read of the next.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Side {
    Client,
    Upstream(u64),
}

type Job = (Arc<TcpStream>, Side, Box<[u8]>);

/// A reader thread, and its buffer while it is not reading.
pub(crate) struct Reader {
    jobs: Sender<Job>,
    buf: Option<Box<[u8]>>,
    busy: bool,
}

impl Reader {
    /// Starts a reader thread. Each job permits one read; the result comes back as an event.
    pub fn spawn(events: &Sender<Event>) -> io::Result<Reader> {
        let (jobs, permits) = mpsc::channel::<Job>();
        let events = events.clone();
        thread::Builder::new()
            .name("mxgate-read".into())
            .spawn(move || {
                for (stream, side, mut buf) in permits {
                    let result = (&*stream).read(&mut buf);
                    drop(stream); // before reporting: the socket may be pooled at once
                    if events.send(Event::Read(side, buf, result)).is_err() {
                        return;
                    }
                }
            })?;
        let (buf, busy) = (None, false);
        Ok(Reader { jobs, buf, busy })
    }

    /// Permits one read of `stream`.
    pub fn start(&mut self, stream: &Arc<TcpStream>, side: Side) {
        let buf = self.buf.take();
        let buf = buf.unwrap_or_else(|| vec![0; READ_BUF].into());
        self.busy = self.jobs.send((stream.clone(), side, buf)).is_ok();
    }

    /// The permitted read came back with `buf`.
    pub fn done(&mut self, buf: Box<[u8]>) {
        self.busy = false;
        self.buf = Some(buf);
    }

    /// A read is under way.
    pub fn busy(&self) -> bool {
        self.busy
    }
}
