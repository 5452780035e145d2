//! Finding the end of a message head, line by line, and refusing ambiguous line endings.
//!
//! httparse accepts a bare LF as a line ending; some upstreams do not. A head where
//! parsers could disagree on where lines end is refused rather than forwarded.

use super::reject::Reject;

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

/// Scans `buf` for a complete head. `scanned` is resume state: 0 for a new head, then
/// whatever this function stored (a multiple-call contract, like h11's). Resuming means a
/// head trickling in byte by byte costs O(n), not O(n²).
pub fn scan_head(buf: &[u8], scanned: &mut usize, limits: ScanLimits) -> Result<HeadScan, Reject> {
    // Leading empty lines (RFC 9112 §2.2: a server SHOULD ignore at least one) are skipped;
    // a bounded number, so a stream of CRLFs cannot keep the connection busy forever.
    let mut start = 0;
    while buf.len() >= start + 2 && &buf[start..start + 2] == b"\r\n" {
        start += 2;
        if start > 8 {
            return Err(Reject::BadRequestLine);
        }
    }
    if buf.len() > start && buf[start] == b'\n' {
        return Err(Reject::BareLineFeed);
    }
    let mut line_start = start;
    let mut lines = 0usize;
    let mut pos = start;
    // Fast resume: re-derive line_start/lines from the already scanned part cheaply
    // by rescanning only for '\n' (memchr-speed), never re-validating.
    let resume = (*scanned).max(start).min(buf.len());
    while pos < resume {
        match buf[pos..resume].iter().position(|&b| b == b'\n') {
            Some(off) => {
                pos += off + 1;
                line_start = pos;
                lines += 1;
            }
            None => pos = resume,
        }
    }
    pos = line_start;
    while pos < buf.len() {
        let b = buf[pos];
        match b {
            b'\n' => {
                if pos == 0 || buf[pos - 1] != b'\r' {
                    return Err(Reject::BareLineFeed);
                }
                let line_len = pos - 1 - line_start;
                if lines == 0 && line_len > limits.max_first_line {
                    return Err(Reject::RequestLineTooLong);
                }
                if line_len == 0 {
                    if lines == 0 {
                        return Err(Reject::BadRequestLine);
                    }
                    return Ok(HeadScan::Complete {
                        start,
                        end: pos + 1,
                    });
                }
                if lines > 0 && (buf[line_start] == b' ' || buf[line_start] == b'\t') {
                    return Err(Reject::ObsoleteLineFolding);
                }
                lines += 1;
                if lines > limits.max_lines {
                    return Err(Reject::TooManyHeaders);
                }
                line_start = pos + 1;
            }
            b'\r' if pos + 1 < buf.len() && buf[pos + 1] != b'\n' => {
                return Err(Reject::BareCarriageReturn);
            }
            0 => return Err(Reject::NulInHead),
            _ => {}
        }
        pos += 1;
        if pos - start > limits.max_head {
            return Err(if lines == 0 && pos - start > limits.max_first_line {
                Reject::RequestLineTooLong
            } else {
                Reject::HeadTooLarge
            });
        }
    }
    if lines == 0 && pos - line_start > limits.max_first_line + 1 {
        return Err(Reject::RequestLineTooLong);
    }
    // Resume at the start of the unfinished line, so its checks run again with its end.
    *scanned = line_start;
    Ok(HeadScan::Partial)
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
        scan_head(buf, &mut 0, LIMITS)
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
            scan(b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n"),
            Err(Reject::BareCarriageReturn)
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"),
            Err(Reject::ObsoleteLineFolding)
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nHost: a\0\r\n\r\n"),
            Err(Reject::NulInHead)
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
    fn resuming_gives_the_same_answer_as_scanning_whole() {
        let h = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
        let mut scanned = 0;
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
