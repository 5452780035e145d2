//! Finding the end of a message head, line by line, and refusing ambiguous line endings.
//!
//! httparse accepts a bare LF as a line ending; some upstreams do not. A head where
//! parsers could disagree on where lines end is refused rather than forwarded.

use super::reject::Reject;
use super::request::RawHeader;

#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Longest first line (request line or status line), without its CRLF.
    pub max_first_line: usize,
    /// Largest head, including the final empty line.
    pub max_head: usize,
    /// Most lines (first line plus header fields).
    pub max_lines: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadScan {
    Partial,
    /// The head spans `start..end` of the buffer (`start` skips leading empty lines,
    /// `end` is just past the blank line).
    Complete {
        start: usize,
        end: usize,
    },
}

/// How far an earlier call got, so a head trickling in is not rescanned from the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanState {
    /// Where the first unfinished line starts (0: nothing scanned yet). 32 bits: every
    /// connection waiting for a head holds one.
    next_line: u32,
    /// Complete lines before it.
    lines: u32,
}

impl ScanState {
    /// Whether the first line of the head was complete when the scan stopped.
    pub fn first_line_done(&self) -> bool {
        self.lines > 0
    }

    fn resume_at(next_line: usize, lines: usize) -> ScanState {
        match (u32::try_from(next_line), u32::try_from(lines)) {
            (Ok(next_line), Ok(lines)) => ScanState { next_line, lines },
            // Beyond any configurable head: scanning again from the start gives the same
            // answer.
            _ => ScanState::default(),
        }
    }
}

/// Scans `buf` for a complete head, resuming from `state` (use `ScanState::default()`
/// for a new head, then pass back what this function stored).
///
/// Only line structure is checked here: every LF preceded by CR, no folded lines, the
/// limits. Bytes inside lines (NUL, bare CR, controls) are httparse's to refuse.
pub fn scan_head(
    buf: &[u8],
    state: &mut ScanState,
    limits: ScanLimits,
) -> Result<HeadScan, Reject> {
    // Leading empty lines (RFC 9112 §2.2: a server SHOULD ignore at least one) are skipped;
    // a bounded number, so a stream of CRLFs cannot keep the connection busy forever.
    let mut start = 0;
    while buf.len() >= start + 2 && &buf[start..start + 2] == b"\r\n" {
        start += 2;
        if start > 8 {
            return Err(Reject::BadRequestLine);
        }
    }
    let mut line_start = (state.next_line as usize).max(start);
    let mut lines = state.lines as usize;
    loop {
        let Some(offset) = find_newline(&buf[line_start..]) else {
            let pending = buf.len() - line_start;
            if lines == 0 && pending > limits.max_first_line + 1 {
                return Err(Reject::RequestLineTooLong);
            }
            if buf.len() - start > limits.max_head {
                return Err(Reject::HeadTooLarge);
            }
            *state = ScanState::resume_at(line_start, lines);
            return Ok(HeadScan::Partial);
        };
        let newline = line_start + offset;
        if newline == line_start || buf[newline - 1] != b'\r' {
            return Err(Reject::BareLineFeed);
        }
        let line_len = newline - 1 - line_start;
        if lines == 0 && line_len > limits.max_first_line {
            return Err(Reject::RequestLineTooLong);
        }
        if newline + 1 - start > limits.max_head {
            return Err(Reject::HeadTooLarge);
        }
        if line_len == 0 {
            if lines == 0 {
                return Err(Reject::BadRequestLine);
            }
            return Ok(HeadScan::Complete {
                start,
                end: newline + 1,
            });
        }
        if lines > 0 && (buf[line_start] == b' ' || buf[line_start] == b'\t') {
            return Err(Reject::ObsoleteLineFolding);
        }
        lines += 1;
        if lines > limits.max_lines {
            return Err(Reject::TooManyHeaders);
        }
        line_start = newline + 1;
    }
}

/// Whether the complete first line of a request head still arriving has no HTTP version
/// (`GET /path` CRLF: an HTTP/0.9 request, which no further line can mend). Asked once, when
/// the scan first reports the line complete.
pub fn request_line_lacks_version(buf: &[u8]) -> bool {
    let start = head_start(buf).unwrap_or(0);
    let Some(end) = find_newline(&buf[start..]) else {
        return false;
    };
    // method SP request-target SP HTTP-version: two spaces at least.
    buf[start..start + end]
        .iter()
        .filter(|&&b| b == b' ')
        .count()
        < 2
}

/// Where a head at the start of `buf` begins after the leading empty lines `scan_head`
/// skips; `None` when `scan_head` has to decide (too many of them, or a bare CR or LF).
pub fn head_start(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while buf.len() >= start + 2 && &buf[start..start + 2] == b"\r\n" {
        start += 2;
        if start > 8 {
            return None;
        }
    }
    match buf.get(start) {
        Some(b'\r' | b'\n') => None,
        _ => Some(start),
    }
}

/// Whether a head that httparse found complete at the start of `buf` (its first `len`
/// bytes, header lines `headers`) passes `scan_head` as is: every line ends with CRLF and
/// the limits hold. This replaces the scan on the common path (httparse already found
/// every line end: each is the LF just before a header name or the end). `false`: let
/// `scan_head` give the exact refusal, if any.
///
/// Folded lines need no check: httparse refuses a header line that starts with
/// whitespace (the caller's parser configuration does not allow obs-fold).
pub fn strict_lines(buf: &[u8], len: usize, headers: &[RawHeader], limits: ScanLimits) -> bool {
    if len < 4 || len > buf.len() || len > limits.max_head || headers.len() + 1 > limits.max_lines {
        return false;
    }
    // The line before `next_line` ends with CRLF.
    let crlf_before = |next_line: usize| {
        next_line >= 2 && buf[next_line - 2] == b'\r' && buf[next_line - 1] == b'\n'
    };
    let blank_line = len - 2;
    let first_end = headers.first().map_or(blank_line, |h| h.name.start());
    first_end >= 2
        && first_end - 2 <= limits.max_first_line
        && first_end - 2 > 0
        && headers.iter().all(|h| crlf_before(h.name.start()))
        && crlf_before(blank_line)
        && crlf_before(len)
}

/// The position of the first `\n`, eight bytes at a time (heads are scanned on every
/// request, so this is hot).
fn find_newline(hay: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const NEWLINES: u64 = ONES * b'\n' as u64;
    let mut chunks = hay.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ NEWLINES;
        // Sets the high bit of the lowest zero byte of x (classic "has zero byte").
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| offset + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ScanLimits = ScanLimits {
        max_first_line: 64,
        max_head: 256,
        max_lines: 8,
    };

    fn scan(buf: &[u8]) -> Result<HeadScan, Reject> {
        scan_head(buf, &mut ScanState::default(), LIMITS)
    }

    #[test]
    fn finds_the_blank_line() {
        let h = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        assert_eq!(scan(h), Ok(HeadScan::Complete { start: 0, end: 27 }));
    }

    #[test]
    fn skips_leading_empty_lines() {
        let h = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan(h), Ok(HeadScan::Complete { start: 4, end: 31 }));
    }

    #[test]
    fn refuses_ambiguous_line_endings() {
        assert_eq!(
            scan(b"GET / HTTP/1.1\nHost: a\r\n\r\n"),
            Err(Reject::BareLineFeed)
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"),
            Err(Reject::ObsoleteLineFolding)
        );
    }

    #[test]
    fn limits_give_their_own_errors() {
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        assert_eq!(scan(long.as_bytes()), Err(Reject::RequestLineTooLong));
        // Without the line end yet: still refused as soon as it is too long.
        assert_eq!(
            scan(&long.as_bytes()[..80]),
            Err(Reject::RequestLineTooLong)
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(9));
        assert_eq!(scan(many.as_bytes()), Err(Reject::TooManyHeaders));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(300));
        assert_eq!(scan(big.as_bytes()), Err(Reject::HeadTooLarge));
    }

    #[test]
    fn newlines_are_found_anywhere_in_a_word() {
        for len in 0..40 {
            for at in 0..len {
                let mut hay = vec![b'a'; len];
                hay[at] = b'\n';
                assert_eq!(find_newline(&hay), Some(at));
                if at + 1 < len {
                    hay[at + 1] = b'\n';
                    assert_eq!(find_newline(&hay), Some(at));
                }
            }
            assert_eq!(find_newline(&vec![0x8a; len]), None);
        }
    }

    #[test]
    fn resuming_gives_the_same_answer_as_scanning_whole() {
        let h = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
        let mut scanned = ScanState::default();
        for n in 1..h.len() {
            assert_eq!(
                scan_head(&h[..n], &mut scanned, LIMITS),
                Ok(HeadScan::Partial),
                "at {n}"
            );
        }
        assert_eq!(
            scan_head(h, &mut scanned, LIMITS),
            Ok(HeadScan::Complete {
                start: 0,
                end: h.len()
            })
        );
    }
}
