//! An independent HTTP/1.1 message reader: httparse for heads, and its own line, framing
//! and chunked-body rules, written from RFC 9112 without looking at the core's code.
//!
//! The fuzz targets re-read with it what mxgate sent on each side and check that both
//! readers agree where every message ends. It is strict where parsers are known to
//! disagree (bare CR or LF, conflicting lengths, Content-Length with Transfer-Encoding in a
//! request) and follows the RFC's recovery rules elsewhere (a response's
//! Transfer-Encoding overrides its Content-Length).
//!
//! This file is shared: the fuzz crate compiles it, and so do the core's regression tests
//! (`core/tests/fuzz_regressions.rs`), so it uses nothing but std and httparse.

/// Most header fields read in one head.
const MAX_HEADERS: usize = 512;

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A result that may need more bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<T> {
    Done(T),
    /// More bytes are needed (the input is a prefix of a possibly valid message).
    Partial,
    /// No continuation can make this valid: the reason.
    Bad(String),
}

/// A message head, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Request method (empty for responses).
    pub method: Vec<u8>,
    /// Request target (empty for responses).
    pub target: Vec<u8>,
    /// Minor version: 0 or 1.
    pub version: u8,
    /// Response status (0 for requests).
    pub status: u16,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes used, from the start of the input to just past the blank line.
    pub len: usize,
}

impl Head {
    /// Values of a header, by case-insensitive name.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &v[..])
    }

    pub fn has(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }

    /// Lower-cased tokens of every `Connection` header.
    pub fn connection_tokens(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for v in self.values("connection") {
            for t in v.split(|&b| b == b',') {
                let t = trim(t);
                if !t.is_empty() {
                    out.push(t.to_ascii_lowercase());
                }
            }
        }
        out
    }
}

/// A whole message: head, framing, decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub head: Head,
    pub framing: Framing,
    /// The body as decoded (chunk framing removed).
    pub body: Vec<u8>,
    /// Bytes used, head and body.
    pub len: usize,
}

/// A response with the interim (1xx) responses before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub interim: Vec<Head>,
    pub last: Message,
    /// Bytes used, interim responses included.
    pub len: usize,
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(s, |p| p + 1);
    &v[s..e]
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Finds the end of a head: every line must end in CRLF. Leading empty lines are skipped
/// (RFC 9112 §2.2). Returns `(start, end)`.
fn find_head(buf: &[u8]) -> Read<(usize, usize)> {
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let mut line_start = start;
    let mut i = start;
    while i < buf.len() {
        match buf[i] {
            b'\r' => {
                if i + 1 == buf.len() {
                    return Read::Partial;
                }
                if buf[i + 1] != b'\n' {
                    return Read::Bad("bare CR in head".into());
                }
                if i == line_start {
                    if i == start {
                        return Read::Bad("empty first line".into());
                    }
                    return Read::Done((start, i + 2));
                }
                i += 2;
                line_start = i;
            }
            b'\n' => return Read::Bad("bare LF in head".into()),
            0 => return Read::Bad("NUL in head".into()),
            _ => i += 1,
        }
    }
    Read::Partial
}

fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
        .collect()
}

/// The origin form a proxy forwards for `target`: an absolute-form target
/// (`http://authority/path?q`, RFC 9112 §3.2.2) loses its scheme and authority, an empty
/// path becoming `/`; any other target is itself.
pub fn origin_form(target: &[u8]) -> Vec<u8> {
    let lower = target.to_ascii_lowercase();
    let scheme = [&b"http://"[..], b"https://"]
        .into_iter()
        .find(|s| lower.starts_with(s));
    let Some(scheme) = scheme else {
        return target.to_vec();
    };
    let rest = &target[scheme.len()..];
    let path = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .map_or(&b""[..], |i| &rest[i..]);
    let mut out = Vec::with_capacity(path.len() + 1);
    if !path.starts_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    out
}

/// Reads a request head.
pub fn request_head(buf: &[u8]) -> Read<Head> {
    let (start, end) = match find_head(buf) {
        Read::Done(x) => x,
        Read::Partial => return Read::Partial,
        Read::Bad(e) => return Read::Bad(e),
    };
    let mut storage = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    match req.parse(&buf[start..end]) {
        Ok(httparse::Status::Complete(n)) if n == end - start => {}
        Ok(s) => return Read::Bad(format!("httparse disagrees on the head end: {s:?}")),
        Err(e) => return Read::Bad(format!("httparse: {e}")),
    }
    let target = req.path.unwrap_or("").as_bytes();
    Read::Done(Head {
        method: req.method.unwrap_or("").as_bytes().to_vec(),
        target: target.to_vec(),
        version: req.version.unwrap_or(9),
        status: 0,
        headers: owned_headers(req.headers),
        len: end,
    })
}

/// Reads a response head.
pub fn response_head(buf: &[u8]) -> Read<Head> {
    let (start, end) = match find_head(buf) {
        Read::Done(x) => x,
        Read::Partial => return Read::Partial,
        Read::Bad(e) => return Read::Bad(e),
    };
    let mut storage = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    match resp.parse(&buf[start..end]) {
        Ok(httparse::Status::Complete(n)) if n == end - start => {}
        Ok(s) => return Read::Bad(format!("httparse disagrees on the head end: {s:?}")),
        Err(e) => return Read::Bad(format!("httparse: {e}")),
    }
    Read::Done(Head {
        method: Vec::new(),
        target: Vec::new(),
        version: resp.version.unwrap_or(9),
        status: resp.code.unwrap_or(0),
        headers: owned_headers(resp.headers),
        len: end,
    })
}

/// `Content-Length`: every field, every list element, one and the same run of digits.
fn content_length(head: &Head) -> Result<Option<u64>, String> {
    let mut found: Option<u64> = None;
    for v in head.values("content-length") {
        for element in v.split(|&b| b == b',') {
            let d = trim(element);
            if d.is_empty() || d.len() > 18 || !d.iter().all(u8::is_ascii_digit) {
                return Err(format!(
                    "bad Content-Length {:?}",
                    String::from_utf8_lossy(v)
                ));
            }
            let n: u64 = std::str::from_utf8(d)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("Content-Length overflow")?;
            if found.is_some_and(|f| f != n) {
                return Err("conflicting Content-Length".into());
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// The transfer codings, in order, or an error for a malformed list. `None` when absent.
fn transfer_codings(head: &Head) -> Result<Option<Vec<Vec<u8>>>, String> {
    let mut any_field = false;
    let mut codings = Vec::new();
    for v in head.values("transfer-encoding") {
        any_field = true;
        for element in v.split(|&b| b == b',') {
            let t = trim(element);
            if t.is_empty() {
                continue;
            }
            // A coding may carry parameters (`;q=…` is for TE, but be lenient): the name
            // is what matters and must be a token.
            let name = trim(t.split(|&b| b == b';').next().unwrap_or(b""));
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                return Err(format!(
                    "bad Transfer-Encoding {:?}",
                    String::from_utf8_lossy(v)
                ));
            }
            codings.push(name.to_ascii_lowercase());
        }
    }
    if !any_field {
        return Ok(None);
    }
    if codings.is_empty() {
        return Err("empty Transfer-Encoding".into());
    }
    Ok(Some(codings))
}

/// How a request body is delimited (RFC 9112 §6.3), refusing every ambiguous case.
pub fn request_framing(head: &Head) -> Result<Framing, String> {
    if head.version > 1 {
        return Err("not HTTP/1.x".into());
    }
    let hosts = head.values("host").count();
    if hosts > 1 || (head.version == 1 && hosts == 0) {
        return Err(format!("{hosts} Host fields"));
    }
    let cl = content_length(head)?;
    match transfer_codings(head)? {
        Some(codings) => {
            if cl.is_some() {
                return Err("Content-Length with Transfer-Encoding".into());
            }
            if head.version == 0 {
                return Err("Transfer-Encoding in HTTP/1.0".into());
            }
            let chunked = codings.iter().filter(|c| *c == b"chunked").count();
            if chunked != 1 || codings.last().map(|c| &c[..]) != Some(b"chunked") {
                return Err("chunked is not the final coding, once".into());
            }
            Ok(Framing::Chunked)
        }
        None => Ok(match cl {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        }),
    }
}

/// How a response body is delimited (RFC 9112 §6.3).
pub fn response_framing(head: &Head, head_request: bool) -> Result<Framing, String> {
    let s = head.status;
    if head_request || (100..200).contains(&s) || s == 204 || s == 304 {
        return Ok(Framing::Empty);
    }
    if let Some(codings) = transfer_codings(head)? {
        // Transfer-Encoding overrides Content-Length (§6.3 point 3).
        return Ok(if codings.last().map(|c| &c[..]) == Some(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    Ok(match content_length(head)? {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// Decodes a chunked body. Returns the data and the bytes used.
pub fn chunked_body(buf: &[u8]) -> Read<(Vec<u8>, usize)> {
    let mut data = Vec::new();
    let mut i = 0;
    loop {
        // chunk-size: 1*HEXDIG
        let digits = buf[i..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if i + digits == buf.len() {
            return Read::Partial;
        }
        if digits == 0 {
            return Read::Bad("chunk size is not hex".into());
        }
        if digits > 16 {
            return Read::Bad("chunk size overflows".into());
        }
        let size = match u64::from_str_radix(
            std::str::from_utf8(&buf[i..i + digits]).unwrap_or("x"),
            16,
        ) {
            Ok(n) if n < (1 << 62) => n,
            _ => return Read::Bad("chunk size overflows".into()),
        };
        i += digits;
        // [ chunk-ext ] CRLF. Extensions are skipped up to CR: they must not contain
        // control characters (a bare LF would end the line for some parsers).
        // BWS is allowed only before a `;`.
        let ws = buf[i..]
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        if ws > 0 {
            match buf.get(i + ws) {
                None => return Read::Partial,
                Some(b';') => i += ws,
                Some(_) => return Read::Bad("whitespace after the chunk size".into()),
            }
        }
        if buf[i] == b';' {
            while i < buf.len() && buf[i] != b'\r' {
                let b = buf[i];
                if b < 0x20 && b != b'\t' {
                    return Read::Bad("control character in chunk extension".into());
                }
                i += 1;
            }
        }
        match buf.get(i..i + 2) {
            None if buf.len() == i || buf[i..] == b"\r"[..] => return Read::Partial,
            Some(b"\r\n") => i += 2,
            _ => return Read::Bad("chunk size line does not end in CRLF".into()),
        }
        if size == 0 {
            break;
        }
        let have = (buf.len() - i) as u64;
        if have < size {
            return Read::Partial;
        }
        data.extend_from_slice(&buf[i..i + size as usize]);
        i += size as usize;
        match buf.get(i..i + 2) {
            Some(b"\r\n") => i += 2,
            None if buf[i..] == b""[..] || buf[i..] == b"\r"[..] => return Read::Partial,
            _ => return Read::Bad("chunk data not followed by CRLF".into()),
        }
    }
    // trailer-section CRLF: lines up to an empty one.
    loop {
        let rest = &buf[i..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            if rest.contains(&b'\r') && !rest.ends_with(b"\r") {
                return Read::Bad("bare CR in trailers".into());
            }
            return Read::Partial;
        };
        if lf == 0 || rest[lf - 1] != b'\r' {
            return Read::Bad("bare LF in trailers".into());
        }
        let line = &rest[..lf - 1];
        if line.contains(&b'\r') || line.contains(&0) {
            return Read::Bad("bad byte in trailers".into());
        }
        i += lf + 1;
        // Trailer fields are dropped by mxgate: only where the section ends matters.
        if line.is_empty() {
            return Read::Done((data, i));
        }
    }
}

/// Reads a body of `framing` from `buf`. `eof`: the input ends here.
pub fn body(buf: &[u8], framing: Framing, eof: bool) -> Read<(Vec<u8>, usize)> {
    match framing {
        Framing::Empty => Read::Done((Vec::new(), 0)),
        Framing::Length(n) => {
            if (buf.len() as u64) < n {
                Read::Partial
            } else {
                Read::Done((buf[..n as usize].to_vec(), n as usize))
            }
        }
        Framing::Chunked => chunked_body(buf),
        Framing::UntilClose => {
            if eof {
                Read::Done((buf.to_vec(), buf.len()))
            } else {
                Read::Partial
            }
        }
    }
}

/// Reads one whole request.
pub fn request(buf: &[u8]) -> Read<Message> {
    let head = match request_head(buf) {
        Read::Done(h) => h,
        Read::Partial => return Read::Partial,
        Read::Bad(e) => return Read::Bad(e),
    };
    let framing = match request_framing(&head) {
        Ok(f) => f,
        Err(e) => return Read::Bad(e),
    };
    match body(&buf[head.len..], framing, false) {
        Read::Done((body, used)) => Read::Done(Message {
            len: head.len + used,
            head,
            framing,
            body,
        }),
        Read::Partial => Read::Partial,
        Read::Bad(e) => Read::Bad(e),
    }
}

/// What is known of a request whose head is complete but whose body may not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialRequest {
    pub head: Head,
    pub framing: Framing,
    /// Body bytes decoded so far (a prefix of the body).
    pub body_prefix: Vec<u8>,
}

/// Like [`request`], but when only the body is unfinished, tells what arrived of it.
#[allow(clippy::result_large_err)]
pub fn request_so_far(buf: &[u8]) -> Result<Read<Message>, PartialRequest> {
    let r = request(buf);
    if r != Read::Partial {
        return Ok(r);
    }
    let Read::Done(head) = request_head(buf) else {
        return Ok(Read::Partial);
    };
    let framing = request_framing(&head).unwrap_or(Framing::Empty);
    let rest = &buf[head.len..];
    let body_prefix = match framing {
        Framing::Length(n) => rest[..rest.len().min(n as usize)].to_vec(),
        Framing::Chunked => chunked_prefix(rest),
        _ => Vec::new(),
    };
    Err(PartialRequest {
        head,
        framing,
        body_prefix,
    })
}

/// The data of the complete chunks at the start of an unfinished chunked body, plus the
/// part of the chunk being read.
fn chunked_prefix(buf: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut i = 0;
    loop {
        let digits = buf[i..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let Ok(size) =
            u64::from_str_radix(std::str::from_utf8(&buf[i..i + digits]).unwrap_or("x"), 16)
        else {
            return data;
        };
        let Some(lf) = buf[i..].iter().position(|&b| b == b'\n') else {
            return data;
        };
        i += lf + 1;
        if size == 0 {
            return data;
        }
        let take = (size as usize).min(buf.len() - i);
        data.extend_from_slice(&buf[i..i + take]);
        i += take;
        if buf.len() < i + 2 {
            return data;
        }
        i += 2;
    }
}

/// Reads interim responses and then one final response. `head_request`: it answers a
/// HEAD. `eof`: the input ends here (completes a body delimited by the close).
/// A `101` ends the reading: what follows is another protocol.
pub fn response(buf: &[u8], head_request: bool, eof: bool) -> Read<Exchange> {
    let mut interim = Vec::new();
    let mut at = 0;
    loop {
        let head = match response_head(&buf[at..]) {
            Read::Done(h) => h,
            Read::Partial => return Read::Partial,
            Read::Bad(e) => return Read::Bad(e),
        };
        if (100..200).contains(&head.status) && head.status != 101 {
            at += head.len;
            interim.push(head);
            continue;
        }
        let framing = match response_framing(&head, head_request) {
            Ok(f) => f,
            Err(e) => return Read::Bad(e),
        };
        let start = at + head.len;
        return match body(&buf[start..], framing, eof) {
            Read::Done((body, used)) => Read::Done(Exchange {
                interim,
                len: start + used,
                last: Message {
                    len: head.len + used,
                    head,
                    framing,
                    body,
                },
            }),
            Read::Partial => Read::Partial,
            Read::Bad(e) => Read::Bad(e),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies() {
        let b = b"5\r\nhello\r\n3;x=y\r\n, w\r\n0\r\nT: 1\r\n\r\nNEXT";
        assert_eq!(
            chunked_body(b),
            Read::Done((b"hello, w".to_vec(), b.len() - 4))
        );
        for n in 0..b.len() - 4 {
            assert_eq!(chunked_body(&b[..n]), Read::Partial, "{n}");
        }
        assert!(matches!(chunked_body(b"5\nhello"), Read::Bad(_)));
        assert!(matches!(chunked_body(b"x\r\n"), Read::Bad(_)));
    }

    #[test]
    fn requests() {
        let r = b"\r\nPOST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET";
        let Read::Done(m) = request(r) else { panic!() };
        assert_eq!(m.len, r.len() - 3);
        assert_eq!(m.body, b"abc");
        assert!(matches!(
            request(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Read::Bad(_)
        ));
        assert!(matches!(
            request(b"GET / HTTP/1.1\nHost: a\r\n\r\n"),
            Read::Bad(_)
        ));
    }

    #[test]
    fn responses() {
        let r = b"HTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        let Read::Done(e) = response(r, false, false) else {
            panic!()
        };
        assert_eq!(e.interim.len(), 1);
        assert_eq!(e.last.body, b"hi");
        assert_eq!(e.len, r.len());
        assert_eq!(
            response(b"HTTP/1.1 200 OK\r\n\r\nabc", false, false),
            Read::Partial
        );
    }
}
