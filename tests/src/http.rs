//! Small, strict-enough HTTP/1.1 parsers for the harness: response heads and bodies for the
//! clients, request heads for the origin, and an incremental chunked decoder for both.
//! They are test tools, not the thing under test: simple, and loud about what they dislike.

use std::fmt;

/// A header field as received: the name as sent (case kept) and the raw value.
pub type Header = (String, Vec<u8>);

/// The first `\r\n\r\n` (end of a head) in `buf`: the index just past it.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Splits a head (without the final empty line) into its start line and header fields.
/// Continuation lines and lines without a colon are an error: the proxy must not send them.
fn split_head(head: &[u8]) -> Result<(Vec<u8>, Vec<Header>), String> {
    let text = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    let mut lines = text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = lines.next().unwrap_or_default().to_vec();
    let mut headers = Vec::new();
    for line in lines {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(format!("obs-fold line {:?}", String::from_utf8_lossy(line)));
        }
        let colon = line.iter().position(|&b| b == b':').ok_or_else(|| {
            format!(
                "header line without colon: {:?}",
                String::from_utf8_lossy(line)
            )
        })?;
        let name = String::from_utf8_lossy(&line[..colon]).into_owned();
        let value = trim(&line[colon + 1..]).to_vec();
        headers.push((name, value));
    }
    Ok((start, headers))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b" \t".contains(b))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b" \t".contains(b))
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// All values of header `name` (case-insensitive), in order, as lossy strings.
pub fn header_values(headers: &[Header], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The single value of header `name`; `None` when absent. Panics when it appears more than once.
pub fn header_one(headers: &[Header], name: &str) -> Option<String> {
    let mut v = header_values(headers, name);
    assert!(
        v.len() <= 1,
        "header {name} appears {} times: {v:?}",
        v.len()
    );
    v.pop()
}

/// A parsed request head, as the origin received it.
#[derive(Clone)]
pub struct RequestHead {
    pub method: String,
    /// The request-target exactly as received.
    pub target: Vec<u8>,
    pub version: String,
    pub headers: Vec<Header>,
    /// The head's bytes exactly as received, including the final empty line.
    pub raw: Vec<u8>,
}

impl RequestHead {
    /// The request line exactly as received (without CRLF).
    pub fn request_line(&self) -> &[u8] {
        let end = self
            .raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(self.raw.len());
        &self.raw[..end]
    }
    pub fn target_str(&self) -> String {
        String::from_utf8_lossy(&self.target).into_owned()
    }
    /// The path part of the target (before `?`).
    pub fn path(&self) -> String {
        let t = self.target_str();
        t.split('?').next().unwrap_or_default().to_string()
    }
    /// A query parameter's raw value.
    pub fn query_param(&self, key: &str) -> Option<String> {
        let t = self.target_str();
        let q = t.split_once('?')?.1.to_string();
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then(|| v.to_string())
        })
    }
    pub fn header(&self, name: &str) -> Option<String> {
        header_one(&self.headers, name)
    }
    pub fn headers_named(&self, name: &str) -> Vec<String> {
        header_values(&self.headers, name)
    }
    pub fn framing(&self) -> Result<BodyFraming, String> {
        request_framing(&self.headers)
    }
}

impl fmt::Debug for RequestHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestHead({})", crate::show(&self.raw, 2000))
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

fn request_framing(headers: &[Header]) -> Result<BodyFraming, String> {
    let te = header_values(headers, "transfer-encoding");
    let cl = header_values(headers, "content-length");
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err("both Transfer-Encoding and Content-Length".into());
        }
        let last = te.join(",");
        let last = last
            .rsplit(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        return if last == "chunked" {
            Ok(BodyFraming::Chunked)
        } else {
            Err(format!("Transfer-Encoding {te:?}"))
        };
    }
    match cl.as_slice() {
        [] => Ok(BodyFraming::None),
        [one] => one
            .trim()
            .parse()
            .map(BodyFraming::Length)
            .map_err(|_| format!("bad Content-Length {one:?}")),
        more => Err(format!("several Content-Length {more:?}")),
    }
}

/// Parses a request head from the start of `buf`: `Ok(None)` while incomplete.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, String> {
    let Some(end) = head_end(buf) else {
        return Ok(None);
    };
    let raw = buf[..end].to_vec();
    let (start, headers) = split_head(&raw)?;
    let mut parts = start.split(|&b| b == b' ');
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let target = parts.next().unwrap_or_default().to_vec();
    let version = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    if parts.next().is_some() || method.is_empty() || target.is_empty() {
        return Err(format!(
            "bad request line {:?}",
            String::from_utf8_lossy(&start)
        ));
    }
    Ok(Some((
        RequestHead {
            method,
            target,
            version,
            headers,
            raw,
        },
        end,
    )))
}

/// An incremental `Transfer-Encoding: chunked` decoder.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line: Vec<u8>,
    /// Chunk sizes seen, in order (to check that a body really arrived in pieces).
    pub chunk_sizes: Vec<u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
    /// Feeds `input`, appending decoded data to `out`; returns how many bytes were consumed
    /// (less than `input.len()` only once done: the rest belongs to the next message).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Data(left) => {
                    let n = (left as usize).min(input.len() - i);
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    self.state = if left as usize == n {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailer => {
                    let b = input[i];
                    i += 1;
                    self.line.push(b);
                    if b != b'\n' {
                        if self.line.len() > 4096 {
                            return Err("chunk line too long".into());
                        }
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let Some(line) = line.strip_suffix(b"\r\n") else {
                        return Err(format!(
                            "chunk line without CR: {:?}",
                            String::from_utf8_lossy(&line)
                        ));
                    };
                    match self.state {
                        ChunkState::DataEnd => {
                            if !line.is_empty() {
                                return Err("chunk data longer than its size".into());
                            }
                            self.state = ChunkState::Size;
                        }
                        ChunkState::Size => {
                            let text = String::from_utf8_lossy(line);
                            let size_text = text.split(';').next().unwrap_or_default().trim();
                            let size = u64::from_str_radix(size_text, 16)
                                .map_err(|_| format!("bad chunk size {text:?}"))?;
                            self.chunk_sizes.push(size);
                            self.state = if size == 0 {
                                ChunkState::Trailer
                            } else {
                                ChunkState::Data(size)
                            };
                        }
                        ChunkState::Trailer => {
                            if line.is_empty() {
                                self.state = ChunkState::Done;
                            }
                        }
                        _ => unreachable!(),
                    }
                }
            }
        }
        Ok(i)
    }
}

/// A response as a client received it.
#[derive(Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// The head's bytes as received.
    pub raw_head: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        header_one(&self.headers, name)
    }
    pub fn headers_named(&self, name: &str) -> Vec<String> {
        header_values(&self.headers, name)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON; panics (showing the response) when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self:?}"))
    }
    /// Whether the response says the connection will close.
    pub fn closes(&self) -> bool {
        self.headers_named("connection").iter().any(|v| {
            v.to_ascii_lowercase()
                .split(',')
                .any(|t| t.trim() == "close")
        })
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Response({}{})",
            crate::show(&self.raw_head, 2000),
            crate::show(&self.body, 300)
        )
    }
}

/// The outcome of trying to parse a response from a buffer.
#[derive(Debug)]
pub enum ResponseParse {
    /// More bytes are needed.
    Incomplete,
    /// A whole response, and how many bytes of the buffer it took.
    Done(Box<Response>, usize),
}

/// Parses one response from the start of `buf`. `eof`: no more bytes will come (ends a
/// close-delimited body). `head_request`: the request was HEAD (no body).
pub fn parse_response(buf: &[u8], eof: bool, head_request: bool) -> Result<ResponseParse, String> {
    let Some(end) = head_end(buf) else {
        return Ok(ResponseParse::Incomplete);
    };
    let raw_head = buf[..end].to_vec();
    let (start, headers) = split_head(&raw_head)?;
    let start_text = String::from_utf8_lossy(&start).into_owned();
    let mut parts = start_text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_string();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {start_text:?}"))?;
    let reason = parts.next().unwrap_or_default().to_string();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {start_text:?}"));
    }
    let mut response = Response {
        version,
        status,
        reason,
        headers,
        body: Vec::new(),
        chunked: false,
        raw_head,
    };
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    if no_body {
        return Ok(ResponseParse::Done(Box::new(response), end));
    }
    let te = response.headers_named("transfer-encoding");
    if te
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        response.chunked = true;
        let mut decoder = ChunkedDecoder::new();
        let used = decoder.feed(&buf[end..], &mut response.body)?;
        return Ok(if decoder.is_done() {
            ResponseParse::Done(Box::new(response), end + used)
        } else {
            ResponseParse::Incomplete
        });
    }
    let cl = response.headers_named("content-length");
    if let Some(first) = cl.first() {
        if cl.iter().any(|v| v != first) {
            return Err(format!("differing Content-Length values {cl:?}"));
        }
        let len: usize = first
            .trim()
            .parse()
            .map_err(|_| format!("bad Content-Length {first:?}"))?;
        return Ok(if buf.len() - end >= len {
            response.body = buf[end..end + len].to_vec();
            ResponseParse::Done(Box::new(response), end + len)
        } else {
            ResponseParse::Incomplete
        });
    }
    if eof {
        response.body = buf[end..].to_vec();
        Ok(ResponseParse::Done(Box::new(response), buf.len()))
    } else {
        Ok(ResponseParse::Incomplete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_decoder_is_chunking_independent() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let mut d = ChunkedDecoder::new();
            let mut out = Vec::new();
            let mut used = 0;
            for piece in wire.chunks(step) {
                used += d.feed(piece, &mut out).unwrap();
                if d.is_done() {
                    break;
                }
            }
            assert!(d.is_done());
            assert_eq!(out, b"hello world!");
            assert_eq!(&wire[used..used + 4], b"NEXT");
        }
    }

    #[test]
    fn response_framings() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1";
        match parse_response(r, false, false).unwrap() {
            ResponseParse::Done(res, used) => {
                assert_eq!(res.body, b"abc");
                assert_eq!(used, r.len() - 8);
            }
            other => panic!("{other:?}"),
        }
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert!(
            matches!(parse_response(r, false, false).unwrap(), ResponseParse::Done(res, _) if res.chunked && res.body == b"abc")
        );
        let r = b"HTTP/1.1 200 OK\r\n\r\nuntil close";
        assert!(matches!(
            parse_response(r, false, false).unwrap(),
            ResponseParse::Incomplete
        ));
        assert!(
            matches!(parse_response(r, true, false).unwrap(), ResponseParse::Done(res, _) if res.body == b"until close")
        );
        let r = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n";
        assert!(
            matches!(parse_response(r, false, false).unwrap(), ResponseParse::Done(res, _) if res.body.is_empty())
        );
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert!(matches!(
            parse_response(r, true, false).unwrap(),
            ResponseParse::Incomplete
        ));
    }

    #[test]
    fn request_heads() {
        let r = b"POST /a%2Fb?x=1+2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nrest";
        let (head, used) = parse_request_head(r).unwrap().unwrap();
        assert_eq!(head.request_line(), b"POST /a%2Fb?x=1+2 HTTP/1.1");
        assert_eq!(head.path(), "/a%2Fb");
        assert_eq!(head.query_param("x").as_deref(), Some("1+2"));
        assert_eq!(head.framing().unwrap(), BodyFraming::Chunked);
        assert_eq!(&r[used..], b"rest");
    }
}
