//! A strict decoder for chunked transfer coding (RFC 9112 §7.1).
//!
//! The engine never forwards chunk framing as received: it decodes, then writes its own
//! canonical framing around the data. So chunk extensions, odd size spellings and
//! trailers cannot mean one thing to mxgate and another to the upstream.

use super::reject::Reject;

/// Longest chunk-size line accepted (size digits plus extensions).
const MAX_SIZE_LINE: usize = 1024;
/// Largest trailer section accepted (it is read and dropped).
const MAX_TRAILERS: usize = 8 * 1024;
/// 15 hex digits keep the size below 2^60: no overflow when adding up.
const MAX_SIZE_DIGITS: u8 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        digits: u8,
        value: u64,
    },
    /// After `;`: skipping a chunk extension up to CR.
    Extension {
        size: u64,
        len: usize,
    },
    /// Expecting LF after the size line's CR.
    SizeLf {
        size: u64,
    },
    /// Inside chunk data.
    Data {
        remaining: u64,
    },
    /// Expecting CR then LF after chunk data.
    DataCr,
    DataLf,
    /// Inside the trailer section: `line_len` bytes into the current line.
    Trailer {
        line_len: usize,
        total: usize,
    },
    TrailerLf {
        line_len: usize,
        total: usize,
    },
    Done,
}

/// One step of decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the input used by this step.
    pub consumed: usize,
    /// Chunk data found in this step, as `start..end` of the input.
    pub data: Option<(usize, usize)>,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size {
                digits: 0,
                value: 0,
            },
        }
    }

    /// The last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes the current chunk announced that have not been returned yet: while its
    /// size is still being read, the size as far as read (more digits only make it larger).
    /// A body limit is enforced on this before any of the chunk is passed on.
    pub fn announced_unread(&self) -> u64 {
        match self.state {
            State::Size { value, .. } => value,
            State::Extension { size, .. } | State::SizeLf { size } => size,
            State::Data { remaining } => remaining,
            _ => 0,
        }
    }

    /// Decodes from `input` until it has found one run of data, reached the end of the
    /// body, or used all of `input`. Call again with the rest.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, Reject> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Data { remaining } => {
                    let take = remaining.min((input.len() - i) as u64) as usize;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining: left }
                    };
                    return Ok(Step {
                        consumed: i + take,
                        data: Some((i, i + take)),
                    });
                }
                _ => {
                    self.byte(input[i])?;
                    i += 1;
                }
            }
        }
        Ok(Step {
            consumed: i,
            data: None,
        })
    }

    fn byte(&mut self, b: u8) -> Result<(), Reject> {
        self.state = match self.state {
            State::Size { digits, value } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits == MAX_SIZE_DIGITS {
                        return Err(Reject::BadChunk);
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    State::Size {
                        digits: digits + 1,
                        value: value * 16 + d,
                    }
                }
                b';' if digits > 0 => State::Extension {
                    size: value,
                    len: 0,
                },
                b'\r' if digits > 0 => State::SizeLf { size: value },
                // Signs, spaces, `0x`, bare LF: all refused.
                _ => return Err(Reject::BadChunk),
            },
            State::Extension { size, len } => match b {
                b'\r' => State::SizeLf { size },
                b'\n' | 0 => return Err(Reject::BadChunk),
                _ if len >= MAX_SIZE_LINE => return Err(Reject::BadChunk),
                b if b < 0x20 && b != b'\t' => return Err(Reject::BadChunk),
                _ => State::Extension { size, len: len + 1 },
            },
            State::SizeLf { size } => match b {
                b'\n' if size == 0 => State::Trailer {
                    line_len: 0,
                    total: 0,
                },
                b'\n' => State::Data { remaining: size },
                _ => return Err(Reject::BadChunk),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(Reject::BadChunk),
            },
            State::DataLf => match b {
                b'\n' => State::Size {
                    digits: 0,
                    value: 0,
                },
                _ => return Err(Reject::BadChunk),
            },
            State::Trailer { line_len, total } => {
                if total >= MAX_TRAILERS {
                    return Err(Reject::BadChunk);
                }
                match b {
                    b'\r' => State::TrailerLf { line_len, total },
                    b'\n' | 0 => return Err(Reject::BadChunk),
                    _ => State::Trailer {
                        line_len: line_len + 1,
                        total: total + 1,
                    },
                }
            }
            State::TrailerLf { line_len, total } => match b {
                b'\n' if line_len == 0 => State::Done,
                b'\n' => State::Trailer {
                    line_len: 0,
                    total: total + 2,
                },
                _ => return Err(Reject::BadChunk),
            },
            State::Data { .. } | State::Done => self.state,
        };
        Ok(())
    }
}

/// The framing line written before `len` bytes of chunk data.
pub fn chunk_header(len: usize) -> bytes::Bytes {
    bytes::Bytes::from(format!("{len:x}\r\n"))
}

/// The end of a chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes; returns the data or the error.
    fn decode(input: &[u8], piece: usize) -> Result<(Vec<u8>, bool, usize), Reject> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut used = 0;
        for part in input.chunks(piece) {
            let mut off = 0;
            while off < part.len() && !d.is_done() {
                let s = d.step(&part[off..])?;
                if let Some((a, b)) = s.data {
                    out.extend_from_slice(&part[off + a..off + b]);
                }
                off += s.consumed;
            }
            used += off;
        }
        Ok((out, d.is_done(), used))
    }

    #[test]
    fn decodes_the_same_whatever_the_piece_size() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: y\r\n\r\nNEXT";
        for piece in 1..body.len() {
            let (data, done, used) = decode(body, piece).unwrap();
            assert_eq!(data, b"hello, world");
            assert!(done);
            assert_eq!(used, body.len() - 4, "stops before the next message");
        }
    }

    #[test]
    fn refuses_ambiguous_sizes() {
        for bad in [
            &b"+5\r\nhello\r\n0\r\n\r\n"[..],
            b"-5\r\n",
            b" 5\r\nhello\r\n",
            b"5 \r\nhello\r\n",
            b"0x5\r\nhello\r\n",
            b"5\nhello\r\n",
            b"\r\n",
            b"fffffffffffffffff\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n",
            b"0\r\nX: y\n\r\n",
        ] {
            assert_eq!(
                decode(bad, 64).map(|_| ()),
                Err(Reject::BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn large_sizes_do_not_overflow() {
        let (data, done, _) = decode(b"fffffffffffffff\r\nab", 64).unwrap();
        assert_eq!(data, b"ab");
        assert!(!done);
    }
}
