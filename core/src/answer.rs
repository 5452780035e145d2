//! Responses mxgate writes itself: health, `.well-known/matrix/*`, preflights and errors.
//!
//! Errors on Matrix paths are Matrix JSON with CORS headers, so web clients can read them.

use bytes::{BufMut, Bytes, BytesMut};

/// CORS headers the Matrix spec asks for on client-facing answers.
pub const CORS: &str = "Access-Control-Allow-Origin: *\r\n\
Access-Control-Allow-Methods: GET, POST, PUT, DELETE, OPTIONS\r\n\
Access-Control-Allow-Headers: Origin, X-Requested-With, Content-Type, Accept, Authorization\r\n";

pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Everything a local answer needs to know about its exchange.
#[derive(Debug, Clone, Copy)]
pub struct AnswerCtx<'a> {
    /// Close the connection after this answer.
    pub close: bool,
    /// HEAD: headers only.
    pub head_only: bool,
    /// Header name and value to echo the request id, if known.
    pub request_id: Option<(&'a str, &'a [u8])>,
}

/// A complete response: status line, headers, body.
pub fn render(
    status: u16,
    content_type: Option<&str>,
    cors: bool,
    body: &[u8],
    ctx: AnswerCtx<'_>,
) -> Bytes {
    let mut out = BytesMut::with_capacity(256 + body.len());
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(itoa(status as u64).as_bytes());
    out.put_u8(b' ');
    out.put_slice(reason(status).as_bytes());
    out.put_slice(b"\r\n");
    if let Some(ct) = content_type {
        out.put_slice(b"Content-Type: ");
        out.put_slice(ct.as_bytes());
        out.put_slice(b"\r\n");
    }
    if cors {
        out.put_slice(CORS.as_bytes());
    }
    if let Some((name, value)) = ctx.request_id {
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }
    if status != 204 {
        out.put_slice(b"Content-Length: ");
        out.put_slice(itoa(body.len() as u64).as_bytes());
        out.put_slice(b"\r\n");
    }
    if ctx.close {
        out.put_slice(b"Connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    if !ctx.head_only && status != 204 {
        out.put_slice(body);
    }
    out.freeze()
}

fn itoa(n: u64) -> String {
    n.to_string()
}

/// The answer when a runtime has no room for another connection: 503, Matrix JSON with
/// CORS, `Retry-After`, and a close.
pub fn overloaded() -> Bytes {
    let body = br#"{"errcode":"M_UNKNOWN","error":"Too many connections"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n{CORS}Retry-After: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut out = BytesMut::with_capacity(head.len() + body.len());
    out.put_slice(head.as_bytes());
    out.put_slice(body);
    out.freeze()
}

/// A redirect to `location` (already checked to hold no CR, LF or other controls).
pub fn redirect(status: u16, location: &str, ctx: AnswerCtx<'_>) -> Bytes {
    let rendered = render(status, Some("text/plain; charset=utf-8"), false, b"", ctx);
    // The Location header goes right after the status line.
    let line_end = rendered
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(rendered.len(), |i| i + 2);
    let mut out = BytesMut::with_capacity(rendered.len() + location.len() + 12);
    out.put_slice(&rendered[..line_end]);
    out.put_slice(b"Location: ");
    out.put_slice(location.as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(&rendered[line_end..]);
    out.freeze()
}

pub fn health(ctx: AnswerCtx<'_>) -> Bytes {
    render(200, Some("text/plain; charset=utf-8"), false, b"OK", ctx)
}

/// A configured `.well-known` document, or 404 when it is not configured; CORS either way.
pub fn well_known(doc: Option<&Bytes>, ctx: AnswerCtx<'_>) -> Bytes {
    match doc {
        Some(body) => render(200, Some("application/json"), true, body, ctx),
        None => matrix_error(404, "M_NOT_FOUND", "No such well-known document", ctx),
    }
}

/// The answer to a CORS preflight (`OPTIONS`) on a local path.
pub fn preflight(ctx: AnswerCtx<'_>) -> Bytes {
    render(204, None, true, b"", ctx)
}

/// `{"errcode":…,"error":…}` with CORS headers.
pub fn matrix_error(status: u16, errcode: &str, message: &str, ctx: AnswerCtx<'_>) -> Bytes {
    let body = format!(
        r#"{{"errcode":"{errcode}","error":"{}"}}"#,
        json_escape(message)
    );
    render(status, Some("application/json"), true, body.as_bytes(), ctx)
}

/// A plain-text error, for paths that are not Matrix's.
pub fn text_error(status: u16, message: &str, ctx: AnswerCtx<'_>) -> Bytes {
    let body = format!("{message}\n");
    render(
        status,
        Some("text/plain; charset=utf-8"),
        false,
        body.as_bytes(),
        ctx,
    )
}

/// An error in the style the path calls for: Matrix JSON under `/_matrix`, `/_synapse`
/// and `/.well-known/matrix`, plain text elsewhere.
pub fn error_for_path(
    path: &[u8],
    status: u16,
    errcode: &str,
    message: &str,
    ctx: AnswerCtx<'_>,
) -> Bytes {
    if is_matrix_path(path) {
        matrix_error(status, errcode, message, ctx)
    } else {
        text_error(status, message, ctx)
    }
}

pub fn is_matrix_path(path: &[u8]) -> bool {
    use crate::route::under;
    under(path, b"/_matrix") || under(path, b"/_synapse") || under(path, b"/.well-known/matrix")
}

/// The Matrix error code for an HTTP status mxgate generates.
pub fn errcode_for(status: u16) -> &'static str {
    match status {
        404 => "M_NOT_FOUND",
        413 => "M_TOO_LARGE",
        400 | 414 | 431 | 417 | 501 | 505 => "M_UNRECOGNIZED",
        _ => "M_UNKNOWN",
    }
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overloaded_is_a_complete_503_with_a_json_body() {
        let bytes = overloaded();
        let text = std::str::from_utf8(&bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(head.contains("Connection: close"));
        assert!(head.contains("Access-Control-Allow-Origin: *"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["errcode"], "M_UNKNOWN");
    }
}
