//! The heads mxgate writes: the request as the upstream gets it, and the response as the
//! client gets it. Targets and header values are copied byte for byte; only hop-by-hop
//! headers, framing and the forwarding headers change.

use bytes::{BufMut, Bytes, BytesMut};

use crate::forwarded::ClientIdentity;
use crate::http1::names::HeaderRole;
use crate::http1::request::{RawHeader, RequestBody, RequestHead, Version};
use crate::http1::response::ResponseHead;
use crate::http1::tokens::eq_ignore_case;

/// Whether `name` (of role `role`) is listed in the message's `Connection` header (`listed`,
/// lower case), which makes it hop-by-hop. Framing and authority cannot be listed away.
#[inline]
fn listed_in_connection(name: &[u8], role: HeaderRole, listed: &[Bytes]) -> bool {
    !listed.is_empty() && !role.never_listed() && listed.iter().any(|t| eq_ignore_case(name, t))
}

fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Copies kept header lines to `out`. A line already in the form mxgate would write
/// (`name: value` CRLF) is copied from the received head as is, and consecutive such
/// lines as one slice: the output is byte for byte what `put_header` would write.
struct LineCopier<'a> {
    raw: &'a [u8],
    /// A run of kept canonical lines not yet copied.
    run: Option<(usize, usize)>,
}

impl<'a> LineCopier<'a> {
    fn new(raw: &'a [u8]) -> Self {
        LineCopier { raw, run: None }
    }

    // Called per header: inlined, its call overhead was most of its cost.
    #[inline(always)]
    fn keep(&mut self, out: &mut BytesMut, header: &RawHeader) {
        let (name, value) = (header.name, header.value);
        let raw = self.raw;
        let line_end = value.end() + 2;
        // Byte by byte: cheaper than slice comparisons of two bytes.
        let canonical = value.start() == name.end() + 2
            && raw.get(name.end()) == Some(&b':')
            && raw.get(name.end() + 1) == Some(&b' ')
            && raw.get(value.end()) == Some(&b'\r')
            && raw.get(value.end() + 1) == Some(&b'\n');
        if !canonical {
            self.flush(out);
            put_header(out, name.get(raw), value.get(raw));
            return;
        }
        match &mut self.run {
            Some((_, end)) if *end == name.start() => *end = line_end,
            _ => {
                self.flush(out);
                self.run = Some((name.start(), line_end));
            }
        }
    }

    fn flush(&mut self, out: &mut BytesMut) {
        if let Some((start, end)) = self.run.take() {
            out.put_slice(&self.raw[start..end]);
        }
    }
}

fn put_decimal(out: &mut BytesMut, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// The request head sent upstream: always HTTP/1.1 keep-alive, target untouched. Written
/// at the end of `out` (a connection's reusable buffer) and split off it.
pub fn upstream_request(
    out: &mut BytesMut,
    head: &RequestHead,
    identity: &ClientIdentity,
    peer_text: &[u8],
    request_id_header: &str,
    default_host: &str,
) -> Bytes {
    out.reserve(head.raw.len() + 160);
    let raw = &head.raw[..];
    let (method, target) = head.line_spans();
    let line_end = target.end() + b" HTTP/1.1\r\n".len();
    if method.start() == 0
        && target.start() == method.end() + 1
        && raw.get(method.end()) == Some(&b' ')
        && raw.get(target.end()..line_end) == Some(&b" HTTP/1.1\r\n"[..])
    {
        out.put_slice(&raw[..line_end]);
    } else {
        out.put_slice(head.method());
        out.put_u8(b' ');
        out.put_slice(head.target());
        out.put_slice(b" HTTP/1.1\r\n");
    }
    let mut lines = LineCopier::new(raw);
    for header in head.raw_headers() {
        let (name, role) = (header.name.get(raw), header.role);
        let upgrade_kept = head.upgrade && role == HeaderRole::Upgrade;
        let hop_by_hop = !upgrade_kept
            && (role.is_hop_by_hop() || listed_in_connection(name, role, &head.connection_tokens));
        // Headers mxgate writes itself.
        let replaced = matches!(
            role,
            HeaderRole::Expect | HeaderRole::ContentLength | HeaderRole::Forwarding
        ) || eq_ignore_case(name, request_id_header.as_bytes());
        if hop_by_hop || replaced {
            lines.flush(out);
        } else {
            lines.keep(out, header);
        }
    }
    lines.flush(out);
    if head.host().is_none() {
        // HTTP/1.0 without Host: HTTP/1.1 upstream requests need one.
        put_header(out, b"Host", default_host.as_bytes());
    }
    let forwarded_for = identity.forwarded_for.as_deref().unwrap_or(peer_text);
    put_header(out, b"X-Forwarded-For", forwarded_for);
    put_header(out, b"X-Forwarded-Proto", &identity.proto);
    put_header(out, request_id_header.as_bytes(), &identity.request_id);
    match head.body {
        RequestBody::None => {}
        RequestBody::Length(n) => {
            out.put_slice(b"Content-Length: ");
            put_decimal(out, n);
            out.put_slice(b"\r\n");
        }
        RequestBody::Chunked => out.put_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    if head.upgrade {
        out.put_slice(b"Connection: upgrade\r\n");
    }
    out.put_slice(b"\r\n");
    out.split().freeze()
}

/// How the response body is framed towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    /// No body, or one with the upstream's Content-Length.
    AsIs,
    /// Chunked, re-framed by mxgate.
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0 client of a chunked response,
    /// or an upstream that delimits by closing).
    Close,
}

/// The response head sent to the client. Written at the end of `out` (a connection's
/// reusable buffer) and split off it.
pub fn client_response(
    out: &mut BytesMut,
    resp: &ResponseHead,
    framing: ClientFraming,
    client_version: Version,
    close: bool,
    request_id: Option<(&str, &[u8])>,
    switching_protocols: bool,
) -> Bytes {
    out.reserve(resp.raw.len() + 96);
    let raw = &resp.raw[..];
    let reason = resp.reason_span();
    let line_end = reason.end() + 2;
    if raw.starts_with(b"HTTP/1.1 ")
        && raw.get(12) == Some(&b' ')
        && reason.start() == 13
        && raw.get(reason.end()..line_end) == Some(&b"\r\n"[..])
    {
        // Already `HTTP/1.1 <status> <reason>` CRLF, as it would be written.
        out.put_slice(&raw[..line_end]);
    } else {
        out.put_slice(b"HTTP/1.1 ");
        put_decimal(out, u64::from(resp.status));
        out.put_u8(b' ');
        out.put_slice(resp.reason());
        out.put_slice(b"\r\n");
    }
    let reframed = framing == ClientFraming::Chunked || framing == ClientFraming::Close;
    let mut lines = LineCopier::new(raw);
    for header in resp.raw_headers() {
        let (name, role) = (header.name.get(raw), header.role);
        let upgrade_kept = switching_protocols && role == HeaderRole::Upgrade;
        let hop_by_hop = !upgrade_kept
            && (role.is_hop_by_hop() || listed_in_connection(name, role, &resp.connection_tokens));
        let dropped = hop_by_hop
            || (reframed && role == HeaderRole::ContentLength)
            || request_id.is_some_and(|(id_name, _)| eq_ignore_case(name, id_name.as_bytes()));
        if dropped {
            lines.flush(out);
        } else {
            lines.keep(out, header);
        }
    }
    lines.flush(out);
    if let Some((name, value)) = request_id {
        put_header(out, name.as_bytes(), value);
    }
    if framing == ClientFraming::Chunked {
        out.put_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if switching_protocols {
        out.put_slice(b"Connection: upgrade\r\n");
    } else if close {
        out.put_slice(b"Connection: close\r\n");
    } else if client_version == Version::Http10 {
        out.put_slice(b"Connection: keep-alive\r\n");
    }
    out.put_slice(b"\r\n");
    out.split().freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_lists_remove_headers_but_not_framing_or_authority() {
        let listed = [Bytes::from_static(b"x-a"), Bytes::from_static(b"host")];
        let listed_as = |name: &[u8]| listed_in_connection(name, HeaderRole::of(name), &listed);
        assert!(listed_as(b"X-A"));
        assert!(!listed_as(b"Host"));
        assert!(!listed_as(b"x-b"));
        assert!(!listed_in_connection(b"x-a", HeaderRole::Other, &[]));
    }
}
