//! Parsing and validating a request head (RFC 9112), strictly enough that no request the
//! engine forwards can be framed differently by the upstream (request smuggling).

use bytes::Bytes;

use super::names::HeaderRole;
use super::reject::Reject;
use super::target::{absolute_to_origin_form, check_host, check_origin_form, MAX_METHOD};
use super::tokens::{eq_ignore_case, for_each_token, parse_content_length};

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
}

/// HTTP/1.0 or HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// A range of a head's bytes. Offsets instead of `Bytes` handles: no reference count
/// traffic per header on the hot path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The span of `part`, which must be a sub-slice of `whole`.
    pub fn of(whole: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
        let start = start.min(whole.len());
        let end = (start + part.len()).min(whole.len());
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    pub fn get<'a>(&self, whole: &'a [u8]) -> &'a [u8] {
        &whole[self.start as usize..self.end as usize]
    }

    pub fn slice(&self, whole: &Bytes) -> Bytes {
        whole.slice(self.start as usize..self.end as usize)
    }

    pub fn start(&self) -> usize {
        self.start as usize
    }

    pub fn end(&self) -> usize {
        self.end as usize
    }
}

/// A header as it arrived: name and value as spans of the head, and what the name means
/// to the proxy.
#[derive(Debug, Clone, Copy)]
pub struct RawHeader {
    pub name: Span,
    pub value: Span,
    pub role: HeaderRole,
}

/// A validated request head: the raw bytes, and spans into them.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub raw: Bytes,
    method: Span,
    /// The request-target exactly as sent.
    target: Span,
    /// The target's path: before `?` (a `#` is refused).
    path: Span,
    pub version: Version,
    headers: Vec<RawHeader>,
    pub body: RequestBody,
    host: Option<Span>,
    /// The client asked to close after this exchange (or is HTTP/1.0 without keep-alive).
    pub close: bool,
    pub expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` header.
    pub upgrade: bool,
    /// Lower-cased header names listed in `Connection` (hop-by-hop, not forwarded).
    pub connection_tokens: Vec<Bytes>,
}

impl RequestHead {
    pub fn method(&self) -> &[u8] {
        self.method.get(&self.raw)
    }

    pub fn target(&self) -> &[u8] {
        self.target.get(&self.raw)
    }

    /// The method as a handle on the head's bytes (for logs).
    pub fn method_bytes(&self) -> Bytes {
        self.method.slice(&self.raw)
    }

    /// The target as a handle on the head's bytes (for logs).
    pub fn target_bytes(&self) -> Bytes {
        self.target.slice(&self.raw)
    }

    pub fn host(&self) -> Option<&[u8]> {
        self.host.map(|s| s.get(&self.raw))
    }

    /// Every header as (name, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.headers
            .iter()
            .map(|h| (h.name.get(&self.raw), h.value.get(&self.raw)))
    }

    /// Every header as spans of [`RequestHead::raw`], in order.
    pub fn raw_headers(&self) -> &[RawHeader] {
        &self.headers
    }

    /// The header storage, emptied, for the next parse (no allocation per request).
    pub fn take_header_storage(&mut self) -> Vec<RawHeader> {
        let mut headers = std::mem::take(&mut self.headers);
        headers.clear();
        headers
    }

    /// The method and target spans in [`RequestHead::raw`].
    pub fn line_spans(&self) -> (Span, Span) {
        (self.method, self.target)
    }

    pub fn is_head_method(&self) -> bool {
        self.method() == b"HEAD"
    }

    /// The path part of the target (before `?`).
    pub fn path(&self) -> &[u8] {
        self.path.get(&self.raw)
    }

    /// Whether repeating this request is harmless (RFC 9110 §9.2.2).
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method(),
            b"GET" | b"HEAD" | b"OPTIONS" | b"PUT" | b"DELETE" | b"TRACE"
        )
    }

    fn find(&self, lower_name: &[u8]) -> Option<Span> {
        self.headers
            .iter()
            .find(|h| eq_ignore_case(h.name.get(&self.raw), lower_name))
            .map(|h| h.value)
    }

    /// The first value of a header, by lower-case name.
    pub fn header(&self, lower_name: &[u8]) -> Option<&[u8]> {
        self.find(lower_name).map(|s| s.get(&self.raw))
    }

    /// The first value of a header as a handle on the head's bytes.
    pub fn header_bytes(&self, lower_name: &[u8]) -> Option<Bytes> {
        self.find(lower_name).map(|s| s.slice(&self.raw))
    }
}

/// The most header fields any configuration may allow.
pub const MAX_HEADERS: usize = 256;

/// Parses a complete request head (as found by [`super::lines::scan_head`]). Every field
/// of the result is a slice of `raw`. `max_headers` bounds the header count (the scanner
/// already bounded the line count).
pub fn parse_head(raw: Bytes, max_headers: usize) -> Result<RequestHead, Reject> {
    parse_head_into(raw, max_headers, Vec::new())
}

/// [`parse_head`], storing the header spans in `headers` (emptied first): a connection
/// passes the same storage back for every request.
pub fn parse_head_into(
    raw: Bytes,
    max_headers: usize,
    mut headers: Vec<RawHeader>,
) -> Result<RequestHead, Reject> {
    match parse_prefix(&raw, max_headers, &mut headers) {
        Ok(Some((mut head, _))) => {
            head.raw = raw;
            Ok(head)
        }
        // scan_head found the blank line, so httparse must see a complete head.
        Ok(None) => Err(Reject::BadRequestLine),
        // An absolute-form target (RFC 9112 §3.2.2): parsed again as the origin-form head
        // the upstream gets. Rare: the one copy is not on the common path.
        Err(Reject::NotOriginForm) => match absolute_to_origin_form(&raw)? {
            // Its target starts with `/`: parsed once more at most.
            Some(origin_form) => parse_head_into(origin_form, max_headers, headers),
            None => Err(Reject::NotOriginForm),
        },
        Err(reject) => Err(reject),
    }
}

/// Parses a request head at the start of `buf`, which may go on with a body or the next
/// request; `None` when the head is incomplete. On success the head takes `headers`'
/// storage, its spans are offsets into `buf`, and its `raw` is empty: the caller sets it
/// to the head's bytes, `buf[..len]` (returned with it).
///
/// Line endings are not checked here (httparse accepts a bare LF): see
/// [`super::lines::scan_head`] and [`super::lines::strict_lines`].
pub fn parse_prefix(
    buf: &[u8],
    max_headers: usize,
    headers: &mut Vec<RawHeader>,
) -> Result<Option<(RequestHead, usize)>, Reject> {
    headers.clear();
    let head = buf;
    // On the stack: no allocation per request. The scanner already bounded the count.
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let status = req
        .parse_with_uninit_headers(head, &mut storage[..max_headers.min(MAX_HEADERS)])
        .map_err(|e| match e {
            httparse::Error::Version if names_other_http_version(head) => Reject::BadVersion,
            e => Reject::from_httparse(e, Reject::BadRequestLine),
        })?;
    let httparse::Status::Complete(len) = status else {
        return Ok(None);
    };
    let method = req.method.ok_or(Reject::BadRequestLine)?;
    if method.len() > MAX_METHOD {
        return Err(Reject::MethodTooLong);
    }
    let target = req.path.ok_or(Reject::BadRequestLine)?;
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(Reject::BadVersion),
    };
    if !target.starts_with('/') {
        // Only origin-form: absolute-form and authority-form are for forward proxies,
        // and asterisk-form (`OPTIONS *`) has nothing to route.
        return Err(Reject::NotOriginForm);
    }
    // Every byte RFC 3986 allows, a fragment refused, `%HH` escapes whole: one vectorised
    // pass.
    check_origin_form(target.as_bytes())?;
    let slice = |s: &[u8]| Span::of(head, s);
    let method = slice(method.as_bytes());
    // `str::find` of an ASCII char is a memchr, not a byte loop.
    let path = slice(&target.as_bytes()[..target.find('?').unwrap_or(target.len())]);
    let target = slice(target.as_bytes());

    headers.reserve(req.headers.len());
    let mut host: Option<Span> = None;
    let mut content_length: Option<u64> = None;
    let mut saw_transfer_encoding = false;
    let mut chunked_final = false;
    let mut close = version == Version::Http10;
    let mut expect_continue = false;
    let mut has_upgrade_header = false;
    let mut only_websocket = true;
    let mut connection_upgrade = false;
    let mut connection_tokens = Vec::new();

    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        let role = HeaderRole::of(name);
        match role {
            HeaderRole::Other | HeaderRole::OtherHopByHop | HeaderRole::Forwarding => {}
            HeaderRole::Host => {
                if host.is_some() {
                    return Err(Reject::DuplicateHost);
                }
                check_host(trim_ows(value))?;
                host = Some(slice(value));
            }
            HeaderRole::ContentLength => {
                let n = parse_content_length(value).ok_or(Reject::BadContentLength)?;
                match content_length {
                    Some(prev) if prev != n => return Err(Reject::ConflictingContentLength),
                    _ => content_length = Some(n),
                }
            }
            HeaderRole::TransferEncoding => {
                saw_transfer_encoding = true;
                let mut bad = None;
                let mut any = false;
                for_each_token(value, |tok| {
                    any = true;
                    if chunked_final {
                        // Anything after `chunked` means chunked is not the final coding.
                        bad.get_or_insert(Reject::ChunkedNotFinal);
                    }
                    if eq_ignore_case(tok, b"chunked") {
                        chunked_final = true;
                    } else if is_known_coding(tok) {
                        bad.get_or_insert(Reject::UnsupportedTransferCoding);
                    } else {
                        bad.get_or_insert(Reject::UnknownTransferCoding);
                    }
                })
                .map_err(|_| Reject::BadTransferEncoding)?;
                if !any {
                    return Err(Reject::BadTransferEncoding);
                }
                if let Some(r) = bad {
                    return Err(r);
                }
            }
            HeaderRole::Connection => {
                for_each_token(value, |tok| {
                    if eq_ignore_case(tok, b"close") {
                        close = true;
                    } else if eq_ignore_case(tok, b"keep-alive") {
                        if version == Version::Http10 {
                            close = false;
                        }
                    } else if eq_ignore_case(tok, b"upgrade") {
                        connection_upgrade = true;
                    } else {
                        connection_tokens.push(Bytes::from(tok.to_ascii_lowercase()));
                    }
                })
                .map_err(|_| Reject::BadHeaderValue)?;
            }
            HeaderRole::Expect => {
                if eq_ignore_case(trim_ows(value), b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(Reject::UnsupportedExpectation);
                }
            }
            // Only WebSocket upgrades pass; any other (`h2c` above all: mxgate, not the
            // upstream, decides which HTTP version a client speaks) is dropped and the request
            // forwarded as a plain one, which RFC 9110 §7.8 allows a server to do.
            HeaderRole::Upgrade => {
                has_upgrade_header = true;
                only_websocket &= is_websocket_upgrade(value);
            }
        }
        headers.push(RawHeader {
            name: slice(name),
            value: slice(value),
            role,
        });
    }

    if version == Version::Http11 && host.is_none() {
        return Err(Reject::MissingHost);
    }
    let body = if saw_transfer_encoding {
        if content_length.is_some() {
            return Err(Reject::ContentLengthWithTransferEncoding);
        }
        if version == Version::Http10 {
            // RFC 9112 §6.1: chunked is not defined for HTTP/1.0; treat as faulty framing.
            return Err(Reject::TransferEncodingInHttp10);
        }
        RequestBody::Chunked
    } else {
        // `Content-Length: 0` stays explicit: some upstreams want it on an empty POST.
        content_length.map_or(RequestBody::None, RequestBody::Length)
    };
    let head = RequestHead {
        raw: Bytes::new(),
        method,
        target,
        path,
        version,
        headers: std::mem::take(headers),
        body,
        host,
        close,
        expect_continue,
        upgrade: connection_upgrade && has_upgrade_header && only_websocket,
        connection_tokens,
    };
    Ok(Some((head, len)))
}

/// Whether the request line is well formed but for a version other than 1.0/1.1
/// (`HTTP/2.0`: 505), as opposed to plain garbage (400).
fn names_other_http_version(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\r').next().unwrap_or(b"");
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    matches!(parts.as_slice(), [m, t, v] if !m.is_empty() && !t.is_empty()
        && v.len() == 8 && v.starts_with(b"HTTP/") && v[5].is_ascii_digit() && v[6] == b'.' && v[7].is_ascii_digit())
}

/// `Upgrade: websocket` (any case), nothing else offered.
fn is_websocket_upgrade(value: &[u8]) -> bool {
    eq_ignore_case(trim_ows(value), b"websocket")
}

/// Codings RFC 9112 registers: recognised, but not something this proxy decodes in requests.
fn is_known_coding(tok: &[u8]) -> bool {
    [
        &b"gzip"[..],
        b"x-gzip",
        b"deflate",
        b"compress",
        b"x-compress",
    ]
    .iter()
    .any(|c| eq_ignore_case(tok, c))
}

pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |p| p + 1);
    &v[start..end]
}
