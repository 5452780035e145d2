//! The heads mxgate writes: the request as the upstream gets it, and the response as the
//! client gets it. Targets and header values are copied byte for byte; only hop-by-hop
//! headers, framing and the forwarding headers change.

use bytes::{BufMut, Bytes, BytesMut};

use crate::forwarded::ClientIdentity;
use crate::http1::request::{RequestBody, RequestHead, Version};
use crate::http1::response::ResponseHead;
use crate::http1::tokens::eq_ignore_case;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&[u8]; 7] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];

/// Headers a `Connection` list must not remove: the message would lose its framing
/// or its authority (a sender listing them is broken or hostile; the list is ignored).
const NEVER_LISTED: [&[u8]; 2] = [b"content-length", b"host"];

fn is_hop_by_hop(name: &[u8], listed: &[Bytes]) -> bool {
    HOP_BY_HOP.iter().any(|h| eq_ignore_case(name, h))
        || (listed.iter().any(|t| eq_ignore_case(name, t))
            && !NEVER_LISTED.iter().any(|n| eq_ignore_case(name, n)))
}

fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
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

/// The request head sent upstream: always HTTP/1.1 keep-alive, target untouched.
pub fn upstream_request(
    head: &RequestHead,
    identity: &ClientIdentity,
    request_id_header: &str,
    default_host: &str,
) -> Bytes {
    let capacity = head.raw.len() + 160;
    let mut out = BytesMut::with_capacity(capacity);
    out.put_slice(head.method());
    out.put_u8(b' ');
    out.put_slice(head.target());
    out.put_slice(b" HTTP/1.1\r\n");
    let replaced: [&[u8]; 5] = [
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"content-length",
        b"expect",
        request_id_header.as_bytes(),
    ];
    for (name, value) in head.headers() {
        let upgrade_kept = head.upgrade && eq_ignore_case(name, b"upgrade");
        if !upgrade_kept && is_hop_by_hop(name, &head.connection_tokens) {
            continue;
        }
        if replaced.iter().any(|r| eq_ignore_case(name, r)) {
            continue;
        }
        put_header(&mut out, name, value);
    }
    if head.host().is_none() {
        // HTTP/1.0 without Host: HTTP/1.1 upstream requests need one.
        put_header(&mut out, b"Host", default_host.as_bytes());
    }
    put_header(&mut out, b"X-Forwarded-For", &identity.forwarded_for);
    put_header(&mut out, b"X-Forwarded-Proto", &identity.proto);
    put_header(&mut out, request_id_header.as_bytes(), &identity.request_id);
    match head.body {
        RequestBody::None => {}
        RequestBody::Length(n) => {
            out.put_slice(b"Content-Length: ");
            put_decimal(&mut out, n);
            out.put_slice(b"\r\n");
        }
        RequestBody::Chunked => out.put_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    if head.upgrade {
        out.put_slice(b"Connection: upgrade\r\n");
    }
    out.put_slice(b"\r\n");
    out.freeze()
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

/// The response head sent to the client.
pub fn client_response(
    resp: &ResponseHead,
    framing: ClientFraming,
    client_version: Version,
    close: bool,
    request_id: Option<(&str, &[u8])>,
    switching_protocols: bool,
) -> Bytes {
    let mut out = BytesMut::with_capacity(resp.raw.len() + 96);
    out.put_slice(b"HTTP/1.1 ");
    put_decimal(&mut out, u64::from(resp.status));
    out.put_u8(b' ');
    out.put_slice(resp.reason());
    out.put_slice(b"\r\n");
    for (name, value) in resp.headers() {
        let upgrade_kept = switching_protocols && eq_ignore_case(name, b"upgrade");
        if !upgrade_kept && is_hop_by_hop(name, &resp.connection_tokens) {
            continue;
        }
        let reframed = framing == ClientFraming::Chunked || framing == ClientFraming::Close;
        if reframed && eq_ignore_case(name, b"content-length") {
            continue;
        }
        if let Some((id_name, _)) = request_id {
            if eq_ignore_case(name, id_name.as_bytes()) {
                continue;
            }
        }
        put_header(&mut out, name, value);
    }
    if let Some((name, value)) = request_id {
        put_header(&mut out, name.as_bytes(), value);
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
    out.freeze()
}
