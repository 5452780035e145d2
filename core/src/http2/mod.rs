//! HTTP/2 to clients (RFC 9113, RFC 7541), server side, sans-IO.
//!
//! # Contract
//! Create a [`Connection`] when a client connection has negotiated `h2` (ALPN, or prior
//! knowledge on a plain listener that allows it) with the [`Limits`] and `now`. Then:
//!
//! 1. **One mutation.** Feed one thing that happened: client bytes
//!    ([`Connection::handle_data`]), the client's EOF ([`Connection::handle_eof`]), a
//!    deadline ([`Connection::handle_timeout`]), or an application command:
//!    [`Connection::send_response_head`], [`Connection::send_data`],
//!    [`Connection::release_capacity`], [`Connection::reset`],
//!    [`Connection::begin_shutdown`].
//! 2. **Drain.** Take every [`Event`] from [`Connection::poll_event`] and act on it
//!    (`Request` starts an exchange, `Data` feeds its body, `Reset` ends it, `WindowOpen`
//!    lets a stalled response go on, `Closed` ends the connection); take every buffer
//!    from [`Connection::poll_transmit`] and write it to the client completely, in order,
//!    before feeding more client bytes (that is the only backpressure on control frames).
//! 3. **Wait** for client bytes (while [`Connection::wants_read`]), an application
//!    command, or the deadline of [`Connection::poll_timeout`]. Stop when
//!    [`Connection::is_closed`].
//!
//! Flow control is the application's to drive in one direction and the engine's in the
//! other. Request bodies: the client may send at most our windows; each `Data` event's
//! bytes are held against them until the application calls `release_capacity` (when the
//! upstream actually took them), so a slow upstream makes the client wait instead of
//! making us buffer. Response bodies: `send_data` takes what the client's windows allow
//! and says how much; the rest stays with the caller until `WindowOpen`. A response
//! stalled on a zero window past `send_stall_timeout` is reset.
//!
//! The request a `Request` event carries has `:path` exactly as HPACK decoded it,
//! `:authority` (or `Host`) to become `Host`, the method and scheme, and the regular
//! fields, validated per RFC 9113 §8 (malformed requests are reset before the
//! application sees them). Time is only ever passed in.
//!
//! | module | job |
//! |---|---|
//! | `frame` | frame header and payload codec: every type's size, flag and stream-id rules |
//! | `huffman` | the HPACK Huffman code (RFC 7541 §5.2, Appendix B) |
//! | `hpack` | header block decoding under a list-size limit, response header encoding |
//! | `request` | RFC 9113 §8 request validation into [`Request`] |
//! | `stream` | one stream's state machine (§5.1) and windows |
//! | `abuse` | per-window counters of costly frames |
//! | `limits` | every bound, with defaults and reasons |
//! | `connection` | the connection: frames in, events and frames out |
//! | `session` | the proxy's HTTP/2 client connection: this engine plus one exchange per stream |

mod abuse;
mod connection;
pub mod frame;
pub mod hpack;
mod huffman;
mod limits;
mod request;
mod session;
mod stream;

pub use abuse::Abuse;
pub use connection::{Connection, ConnectionError, Event, SendError, Timer, PREFACE};
pub use frame::ErrorCode;
pub use limits::Limits;
pub use request::{Malformed, Request};
pub use session::{Session, SessionOutput};

/// What the first bytes of a plain connection say, looked at without consuming them (on a
/// listener that accepts HTTP/2 with prior knowledge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preface {
    /// The whole 24-byte connection preface: HTTP/2.
    Http2,
    /// A byte differs from it (or the client sent nothing and closed): HTTP/1.1.
    Http1,
    /// A part of it so far: look again once more has arrived.
    Partial,
}

/// Tells HTTP/2 prior knowledge from HTTP/1.1 by the bytes peeked so far.
pub fn sniff_preface(peeked: &[u8]) -> Preface {
    let n = peeked.len().min(PREFACE.len());
    if peeked.is_empty() || peeked[..n] != PREFACE[..n] {
        Preface::Http1
    } else if n == PREFACE.len() {
        Preface::Http2
    } else {
        Preface::Partial
    }
}

#[cfg(test)]
mod tests;
