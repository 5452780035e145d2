//! Parsing an upstream's response head and deciding how its body is delimited.

use bytes::Bytes;

use super::names::HeaderRole;
use super::reject::Reject;
use super::request::{trim_ows, RawHeader, Span};
use super::tokens::{eq_ignore_case, for_each_token, parse_content_length};

/// Most header fields accepted in a response.
pub const MAX_RESPONSE_HEADERS: usize = 256;

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    UntilClose,
}

#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub raw: Bytes,
    pub status: u16,
    reason: Span,
    headers: Vec<RawHeader>,
    pub body: ResponseBody,
    /// The upstream will close (or is HTTP/1.0 without keep-alive).
    pub close: bool,
    /// Lower-cased header names listed in `Connection`.
    pub connection_tokens: Vec<Bytes>,
}

impl ResponseHead {
    pub fn reason(&self) -> &[u8] {
        self.reason.get(&self.raw)
    }

    /// The reason phrase as a span of [`ResponseHead::raw`].
    pub fn reason_span(&self) -> Span {
        self.reason
    }

    /// Every header as (name, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.headers
            .iter()
            .map(|h| (h.name.get(&self.raw), h.value.get(&self.raw)))
    }

    /// Every header as spans of [`ResponseHead::raw`], in order.
    pub fn raw_headers(&self) -> &[RawHeader] {
        &self.headers
    }

    /// The header storage, emptied, for the next parse (no allocation per response).
    pub fn take_header_storage(&mut self) -> Vec<RawHeader> {
        let mut headers = std::mem::take(&mut self.headers);
        headers.clear();
        headers
    }

    /// Bytes of header names and values, to size the rewritten head.
    pub fn headers_len(&self) -> usize {
        self.headers().map(|(n, v)| n.len() + v.len() + 4).sum()
    }
}

/// Parses a complete response head (as found by [`super::lines::scan_head`]).
/// `head_request` says whether it answers a HEAD request (no body then).
pub fn parse_head(raw: Bytes, head_request: bool) -> Result<ResponseHead, Reject> {
    parse_head_into(raw, head_request, Vec::new())
}

/// [`parse_head`], storing the header spans in `headers` (emptied first): a connection
/// passes the same storage back for every response.
pub fn parse_head_into(
    raw: Bytes,
    head_request: bool,
    mut headers: Vec<RawHeader>,
) -> Result<ResponseHead, Reject> {
    match parse_prefix(&raw, head_request, &mut headers)? {
        Some((mut head, _)) => {
            head.raw = raw;
            Ok(head)
        }
        None => Err(Reject::BadStatusLine),
    }
}

/// Parses a response head at the start of `buf`, which may go on with the body; `None`
/// when the head is incomplete. As [`super::request::parse_prefix`]: the head takes
/// `headers`' storage, its spans are offsets into `buf`, and the caller sets its `raw` to
/// `buf[..len]`. Line endings are not checked here.
pub fn parse_prefix(
    buf: &[u8],
    head_request: bool,
    headers: &mut Vec<RawHeader>,
) -> Result<Option<(ResponseHead, usize)>, Reject> {
    headers.clear();
    let head = buf;
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        head,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Reject::from_httparse(e, Reject::BadStatusLine)),
    };
    let status = resp
        .code
        .filter(|c| (100..=999).contains(c))
        .ok_or(Reject::BadStatus)?;
    let http10 = resp.version == Some(0);
    let reason = Span::of(head, resp.reason.unwrap_or("").as_bytes());
    headers.reserve(resp.headers.len());
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<bool> = None; // Some(chunked is final)
    let mut close = http10;
    let mut connection_tokens = Vec::new();
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        let role = HeaderRole::of(name);
        match role {
            HeaderRole::ContentLength => {
                let n = parse_content_length(value).ok_or(Reject::BadContentLength)?;
                if content_length.is_some_and(|p| p != n) {
                    return Err(Reject::ConflictingContentLength);
                }
                content_length = Some(n);
            }
            HeaderRole::TransferEncoding => {
                let mut last_chunked = false;
                for_each_token(value, |t| last_chunked = eq_ignore_case(t, b"chunked"))
                    .map_err(|_| Reject::BadTransferEncoding)?;
                if trim_ows(value).is_empty() {
                    return Err(Reject::BadTransferEncoding);
                }
                transfer_encoding = Some(last_chunked);
            }
            HeaderRole::Connection => {
                for_each_token(value, |t| {
                    if eq_ignore_case(t, b"close") {
                        close = true;
                    } else if eq_ignore_case(t, b"keep-alive") {
                        if http10 {
                            close = false;
                        }
                    } else {
                        connection_tokens.push(Bytes::from(t.to_ascii_lowercase()));
                    }
                })
                .map_err(|_| Reject::BadHeaderValue)?;
            }
            _ => {}
        }
        headers.push(RawHeader {
            name: Span::of(head, name),
            value: Span::of(head, value),
            role,
        });
    }
    let body = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        ResponseBody::None
    } else {
        match (transfer_encoding, content_length) {
            (Some(true), _) => ResponseBody::Chunked,
            // A coding we cannot delimit: the body runs until the upstream closes.
            (Some(false), _) => ResponseBody::UntilClose,
            (None, Some(n)) => ResponseBody::Length(n),
            (None, None) => ResponseBody::UntilClose,
        }
    };
    if transfer_encoding.is_some() && content_length.is_some() {
        // RFC 9112 §6.3: TE overrides CL, and the connection must not be reused.
        close = true;
    }
    if body == ResponseBody::UntilClose {
        close = true;
    }
    let head = ResponseHead {
        raw: Bytes::new(),
        status,
        reason,
        headers: std::mem::take(headers),
        body,
        close,
        connection_tokens,
    };
    Ok(Some((head, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http1::lines::{scan_head, HeadScan, ScanLimits, ScanState};

    fn parse(raw: &[u8], head_request: bool) -> Result<Option<(ResponseHead, usize)>, Reject> {
        let limits = ScanLimits {
            max_first_line: 4096,
            max_head: 4096,
            max_lines: 64,
        };
        match scan_head(raw, &mut ScanState::default(), limits)? {
            HeadScan::Partial => Ok(None),
            HeadScan::Complete { start, end } => {
                let head = Bytes::copy_from_slice(&raw[start..end]);
                Ok(Some((parse_head(head, head_request)?, end)))
            }
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let body = |raw: &[u8]| parse(raw, false).unwrap().unwrap().0.body;
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            ResponseBody::Length(5)
        );
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ResponseBody::Chunked
        );
        assert_eq!(body(b"HTTP/1.1 200 OK\r\n\r\n"), ResponseBody::UntilClose);
        assert_eq!(
            body(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
            ResponseBody::None
        );
        assert_eq!(
            body(b"HTTP/1.1 304 Not Modified\r\n\r\n"),
            ResponseBody::None
        );
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            ResponseBody::UntilClose
        );
        let head = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(head.body, ResponseBody::None);
    }

    #[test]
    fn keep_alive_defaults_by_version() {
        let close = |raw: &[u8]| parse(raw, false).unwrap().unwrap().0.close;
        assert!(!close(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(close(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(close(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!close(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
    }

    #[test]
    fn bad_framing_is_refused() {
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\nContent-Length: 5\r\n\r\n", false).is_err());
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Le", false)
                .unwrap()
                .map(|x| x.1),
            None
        );
    }

    #[test]
    fn refusals_name_the_part_of_the_head() {
        let refusal = |raw: &[u8]| parse(raw, false).err();
        assert_eq!(
            refusal(b"HTTP/1.1 2x0 OK\r\n\r\n"),
            Some(Reject::BadStatusLine)
        );
        assert_eq!(
            refusal(b"HTTQ/1.1 200 OK\r\n\r\n"),
            Some(Reject::BadStatusLine)
        );
        assert_eq!(
            refusal(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"),
            Some(Reject::BadHeaderName)
        );
        assert_eq!(
            refusal(b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n"),
            Some(Reject::BadHeaderValue)
        );
        assert_eq!(
            refusal(b"HTTP/1.1 099 Early\r\n\r\n"),
            Some(Reject::BadStatus)
        );
    }
}
