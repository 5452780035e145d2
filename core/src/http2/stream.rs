//! One stream's state (RFC 9113 §5.1) and its two flow-control windows (§5.2, §6.9).
//!
//! A server stream begins when the client's HEADERS open it (idle → open, or straight to
//! half-closed (remote) with END_STREAM); streams in the table are never idle, and a
//! closed stream leaves the table. We never push, so the reserved states do not occur.

use std::time::Instant;

use super::frame::{ErrorCode, MAX_WINDOW};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Open,
    /// The client sent END_STREAM; we may still send.
    HalfClosedRemote,
    /// We sent END_STREAM; the client may still send.
    HalfClosedLocal,
    Closed,
}

/// What a stream-level rule broken by the client calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamError(pub ErrorCode, pub &'static str);

/// Our receive side of a window: what the peer may still send, what it sent that the
/// consumer has not released yet, and what was released but not yet granted back.
/// Always `available + held + pending == target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvWindow {
    pub available: u32,
    pub held: u32,
    pub pending: u32,
    pub target: u32,
}

impl RecvWindow {
    pub fn new(target: u32) -> Self {
        RecvWindow {
            available: target,
            held: 0,
            pending: 0,
            target,
        }
    }

    /// The peer sent `n` flow-controlled bytes: `false` if that exceeds the window.
    pub fn receive(&mut self, n: u32) -> bool {
        if n > self.available {
            return false;
        }
        self.available -= n;
        self.held += n;
        true
    }

    /// The consumer took `n` bytes (clamped to what is held). Returns the increment to
    /// send in a WINDOW_UPDATE, once enough was released to be worth a frame (half the
    /// window: one update per half window, not one per DATA frame).
    pub fn release(&mut self, n: u32) -> Option<u32> {
        let n = n.min(self.held);
        self.held -= n;
        self.pending += n;
        if self.pending > 0 && self.pending >= self.target / 2 {
            let inc = self.pending;
            self.pending = 0;
            self.available += inc;
            Some(inc)
        } else {
            None
        }
    }
}

/// One stream in the connection's table.
#[derive(Debug, Clone)]
pub struct Stream {
    pub id: u32,
    pub state: State,
    pub recv: RecvWindow,
    /// What we may still send (§6.9.2: may go negative after a SETTINGS change).
    pub send_window: i64,
    /// The request's content-length, and the DATA bytes received so far (§8.1.1).
    pub content_length: Option<u64>,
    pub received: u64,
    /// The response's HEADERS went out.
    pub responded: bool,
    /// `send_data` accepted less than offered: the caller waits for a window event.
    pub send_blocked: bool,
    /// Since when the stream has had data to send and no window (the stall deadline).
    pub stalled_since: Option<Instant>,
}

impl Stream {
    /// A stream the client opened with HEADERS.
    pub fn open(id: u32, end_stream: bool, recv_target: u32, send_window: u32) -> Self {
        Stream {
            id,
            state: if end_stream {
                State::HalfClosedRemote
            } else {
                State::Open
            },
            recv: RecvWindow::new(recv_target),
            send_window: i64::from(send_window),
            content_length: None,
            received: 0,
            responded: false,
            send_blocked: false,
            stalled_since: None,
        }
    }

    /// Whether the client may still send DATA.
    pub fn recv_open(&self) -> bool {
        matches!(self.state, State::Open | State::HalfClosedLocal)
    }

    /// Whether we may still send.
    pub fn send_open(&self) -> bool {
        matches!(self.state, State::Open | State::HalfClosedRemote)
    }

    /// The client ended its side (END_STREAM on DATA or trailers).
    pub fn recv_end(&mut self) {
        self.state = match self.state {
            State::Open => State::HalfClosedRemote,
            State::HalfClosedLocal => State::Closed,
            s => s,
        };
    }

    /// We ended our side.
    pub fn send_end(&mut self) {
        self.state = match self.state {
            State::Open => State::HalfClosedLocal,
            State::HalfClosedRemote => State::Closed,
            s => s,
        };
    }

    /// DATA of `flow_len` flow-controlled bytes carrying `data_len` bytes of body, checked
    /// against the stream's state, window and content-length.
    pub fn recv_data(
        &mut self,
        flow_len: u32,
        data_len: usize,
        end_stream: bool,
    ) -> Result<(), StreamError> {
        if !self.recv_open() {
            // §5.1 half-closed (remote) / closed.
            return Err(StreamError(
                ErrorCode::STREAM_CLOSED,
                "DATA after END_STREAM",
            ));
        }
        if !self.recv.receive(flow_len) {
            return Err(StreamError(
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the stream window",
            ));
        }
        self.received = self.received.saturating_add(data_len as u64);
        if let Some(cl) = self.content_length {
            if self.received > cl || (end_stream && self.received != cl) {
                // §8.1.1: a malformed request.
                return Err(StreamError(
                    ErrorCode::PROTOCOL_ERROR,
                    "DATA disagrees with content-length",
                ));
            }
        }
        if end_stream {
            self.recv_end();
        }
        Ok(())
    }

    /// WINDOW_UPDATE for this stream (§6.9.1: past 2^31-1 is a stream error).
    pub fn grow_send_window(&mut self, increment: u32) -> Result<(), StreamError> {
        let w = self.send_window + i64::from(increment);
        if w > i64::from(MAX_WINDOW) {
            return Err(StreamError(
                ErrorCode::FLOW_CONTROL_ERROR,
                "stream window above 2^31-1",
            ));
        }
        self.send_window = w;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9113_5_1_transitions() {
        let mut s = Stream::open(1, false, 100, 100);
        assert_eq!(s.state, State::Open);
        s.send_end();
        assert_eq!(s.state, State::HalfClosedLocal);
        assert!(s.recv_open() && !s.send_open());
        s.recv_end();
        assert_eq!(s.state, State::Closed);

        let mut s = Stream::open(3, true, 100, 100);
        assert_eq!(s.state, State::HalfClosedRemote);
        assert_eq!(
            s.recv_data(1, 1, false),
            Err(StreamError(
                ErrorCode::STREAM_CLOSED,
                "DATA after END_STREAM"
            ))
        );
        s.send_end();
        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn rfc9113_6_9_receive_window_is_enforced_and_granted_back_on_release() {
        let mut s = Stream::open(1, false, 100, 100);
        assert_eq!(s.recv_data(60, 60, false), Ok(()));
        assert_eq!(
            s.recv_data(41, 41, false),
            Err(StreamError(
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the stream window"
            ))
        );
        assert_eq!(s.recv.release(30), None, "below half the window");
        assert_eq!(s.recv.release(1000), Some(60), "clamped to what was held");
        assert_eq!(s.recv.available, 100);
        assert_eq!(s.recv.held, 0);
    }

    #[test]
    fn rfc9113_8_1_1_content_length_mismatch() {
        let mut s = Stream::open(1, false, 100, 100);
        s.content_length = Some(5);
        assert_eq!(s.recv_data(3, 3, false), Ok(()));
        assert!(s.recv_data(3, 3, false).is_err(), "more than declared");
        let mut s = Stream::open(1, false, 100, 100);
        s.content_length = Some(5);
        assert!(s.recv_data(3, 3, true).is_err(), "ended short");
    }

    #[test]
    fn rfc9113_6_9_1_send_window_overflow() {
        let mut s = Stream::open(1, false, 100, MAX_WINDOW - 1);
        assert_eq!(s.grow_send_window(1), Ok(()));
        assert!(s.grow_send_window(1).is_err());
    }
}
