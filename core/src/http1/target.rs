//! What a request-target and a host may contain (RFC 3986, RFC 9110 §7.2, RFC 9112 §3.2),
//! and absolute-form targets turned into the origin-form head an upstream expects.
//!
//! Matrix clients percent-encode everything else, so a byte outside these sets is a broken
//! or hostile client: refused with 400 rather than forwarded for the upstream to guess.

use bytes::{BufMut, Bytes, BytesMut};

use super::reject::Reject;
use super::tokens::eq_ignore_case;

/// The longest method accepted: longer than every registered one (the longest,
/// `UPDATEREDIRECTREF`, has 17 bytes). Longer gets 501 without going upstream.
pub const MAX_METHOD: usize = 32;

/// Whether `b` may stand as it is in an origin-form target: RFC 3986's `pchar`, `/` and
/// `?` (unreserved, sub-delims, `:`, `@`), plus `%` (whose two hex digits are checked
/// apart). That is every visible ASCII byte but `"`, `#`, `<`, `>`, `[`, `\`, `]`, `^`,
/// `` ` ``, `{`, `|` and `}`. Comparisons rather than a table: over a whole target they
/// compile to vector instructions (a table lookup per byte showed as ~850 instructions
/// per Matrix request).
#[inline(always)]
fn target_byte(b: u8) -> bool {
    // Only non-short-circuit operations and single-compare ranges: no branch per byte.
    let visible = b.wrapping_sub(b'!') < 0x7f - b'!';
    let forbidden = (b == b'"')
        | (b == b'#')
        | (b == b'<')
        | (b == b'>')
        | (b.wrapping_sub(b'[') < 4) // [ \ ] ^
        | (b == b'`')
        | (b.wrapping_sub(b'{') < 3); // { | }
    visible & !forbidden
}

/// Whether `b` may stand in a `reg-name` or IPv4 host: unreserved, sub-delims and `%`
/// (RFC 3986 §3.2.2): a target byte but `:`, `@`, `/` and `?`.
#[inline(always)]
fn host_byte(b: u8) -> bool {
    target_byte(b) & (b != b':') & (b != b'@') & (b != b'/') & (b != b'?')
}

/// Every byte of `s` passes `byte`, and every `%` is followed by two hex digits.
#[inline(always)]
fn allowed(s: &[u8], byte: impl Fn(u8) -> bool) -> Result<(), Reject> {
    if !all_bytes(s, byte) {
        return Err(Reject::BadTargetCharacter);
    }
    percent_encoding(s)
}

/// Whether every byte of `s` passes `byte`: 32 bytes at a time into a byte accumulator,
/// without an early exit, which the compiler turns into vector compares. The last partial
/// block is checked padded with an allowed byte, so short values (a host) take the vector
/// path too.
#[inline(always)]
fn all_bytes(s: &[u8], byte: impl Fn(u8) -> bool) -> bool {
    #[inline(always)]
    fn block(block: &[u8; 32], byte: &impl Fn(u8) -> bool) -> u8 {
        block.iter().fold(0u8, |m, &b| m | u8::from(!byte(b)))
    }
    let mut chunks = s.chunks_exact(32);
    let mut bad = 0u8;
    for chunk in &mut chunks {
        let mut whole = [0u8; 32];
        whole.copy_from_slice(chunk);
        bad |= block(&whole, &byte);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut padded = [b'a'; 32];
        padded[..rest.len()].copy_from_slice(rest);
        bad |= block(&padded, &byte);
    }
    bad == 0
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_digit() | (b'a'..=b'f').contains(&(b | 0x20))
}

/// Every `%` in `s` starts a `%HH` escape. Targets without one (most) cost a `memchr`;
/// the others one pass over byte triples, without branches.
fn percent_encoding(s: &[u8]) -> Result<(), Reject> {
    if !s.contains(&b'%') {
        return Ok(());
    }
    let tail = &s[s.len().saturating_sub(2)..];
    let broken = tail.contains(&b'%')
        || s.windows(3).fold(0u8, |acc, w| {
            acc | u8::from((w[0] == b'%') & !(is_hex(w[1]) & is_hex(w[2])))
        }) != 0;
    if broken {
        return Err(Reject::BadPercentEncoding);
    }
    Ok(())
}

/// Checks an origin-form target's bytes (its leading `/` is checked by the caller). A
/// fragment is refused with its own reason: it is never sent (RFC 9110 §4.2.4), and parsers
/// disagree on what follows it, so it could hide dot segments from the routing check.
pub fn check_origin_form(target: &[u8]) -> Result<(), Reject> {
    allowed(target, target_byte).map_err(|reject| {
        if reject == Reject::BadTargetCharacter && memchr_hash(target) {
            Reject::FragmentInTarget
        } else {
            reject
        }
    })
}

fn memchr_hash(s: &[u8]) -> bool {
    s.contains(&b'#')
}

/// Checks a `Host` value or a target's authority: `uri-host [":" port]` (RFC 9110 §7.2), with
/// no userinfo, no spaces, a non-empty host and, when a colon is there, a port of 1–5 digits
/// up to 65535.
pub fn check_host(value: &[u8]) -> Result<(), Reject> {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        // IP-literal: an IPv6 address (hex, colons, an IPv4 tail) or IPvFuture.
        let close = rest
            .iter()
            .position(|&b| b == b']')
            .ok_or(Reject::BadHost)?;
        let literal = &rest[..close];
        let ok = match literal.first() {
            None => false,
            Some(b'v' | b'V') => {
                literal.len() > 1
                    && literal[1..].iter().all(|&b| host_byte(b) || b == b':')
                    && !literal.contains(&b'%')
            }
            Some(_) => literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
        };
        if !ok {
            return Err(Reject::BadHost);
        }
        match &rest[close + 1..] {
            [] => (&value[..close + 2], None),
            [b':', port @ ..] => (&value[..close + 2], Some(port)),
            _ => return Err(Reject::BadHost),
        }
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    if host.is_empty() {
        return Err(Reject::BadHost);
    }
    if !host.starts_with(b"[") {
        allowed(host, host_byte).map_err(|_| Reject::BadHost)?;
    }
    if let Some(port) = port {
        let numeric = (1..=5).contains(&port.len()) && port.iter().all(u8::is_ascii_digit);
        // At most five digits: no overflow.
        let value = || port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
        if !numeric || value() > 65535 {
            return Err(Reject::BadHost);
        }
    }
    Ok(())
}

/// The scheme prefix of an absolute-form target this server accepts, if `target` has one.
fn absolute_prefix(target: &[u8]) -> Option<usize> {
    [&b"http://"[..], b"https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        eq_ignore_case(head, scheme).then_some(scheme.len())
    })
}

/// A head whose request-target is in absolute form (`GET http://host/path HTTP/1.1`),
/// rewritten into the origin form the upstream gets: the target's path and query, byte for
/// byte, on the request line, and its authority as the one `Host` header (RFC 9112 §3.2.2:
/// the target's authority wins over a `Host` the client also sent). `Ok(None)`: the target
/// is not absolute-form (authority-form and asterisk-form stay refused).
///
/// `raw` is a complete head whose lines all end in CRLF (as `scan_head` checked).
pub fn absolute_to_origin_form(raw: &[u8]) -> Result<Option<Bytes>, Reject> {
    let line_end = raw
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(Reject::BadRequestLine)?;
    let line = &raw[..line_end];
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    let Some(prefix) = absolute_prefix(target) else {
        return Ok(None);
    };
    let rest = &target[prefix..];
    let authority_end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if authority.contains(&b'@') {
        // userinfo: deprecated, and a classic way to make a URL look like another host.
        return Err(Reject::BadHost);
    }
    check_host(authority)?;
    let path_and_query = &rest[authority_end..];
    let mut out = BytesMut::with_capacity(raw.len() + 8);
    out.put_slice(method);
    out.put_u8(b' ');
    if !path_and_query.starts_with(b"/") {
        // An empty path is sent as "/" in origin form (RFC 9112 §3.2.1).
        out.put_u8(b'/');
    }
    out.put_slice(path_and_query);
    out.put_u8(b' ');
    out.put_slice(version);
    out.put_slice(b"\r\nHost: ");
    out.put_slice(authority);
    out.put_slice(b"\r\n");
    let mut hosts = 0;
    for line in raw[line_end + 2..].split_inclusive(|&b| b == b'\n') {
        let name_end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        if eq_ignore_case(&line[..name_end], b"host") {
            hosts += 1;
            continue;
        }
        out.put_slice(line);
    }
    if hosts > 1 {
        return Err(Reject::DuplicateHost);
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is refused, absolute form or not.
    if hosts == 0 && version == b"HTTP/1.1" {
        return Err(Reject::MissingHost);
    }
    Ok(Some(out.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_classes_are_rfc3986s_for_every_byte() {
        // RFC 3986: unreserved, sub-delims, and what pchar / path / query add.
        let unreserved_and_sub_delims =
            |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) || b == b'%';
        for b in 0..=255u8 {
            assert_eq!(
                target_byte(b),
                unreserved_and_sub_delims(b) || b":@/?".contains(&b),
                "target byte {b:#04x}"
            );
            assert_eq!(
                host_byte(b),
                unreserved_and_sub_delims(b),
                "host byte {b:#04x}"
            );
        }
    }

    #[test]
    fn targets_allow_rfc3986_characters_only() {
        for ok in [
            &b"/_matrix/client/v3/rooms/!abc:example.org/send/m.room.message/txn1"[..],
            b"/_matrix/media/v3/download/example.org/abc?allow_redirect=true",
            b"/a%2Fb%3a?filter=%7B%22x%22%7D&since=s1_2",
            b"/a/~user/(x)*+,;=$'&@:",
        ] {
            assert_eq!(
                check_origin_form(ok),
                Ok(()),
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
        for bad in [
            &b"/a b"[..],
            b"/caf\xc3\xa9",
            b"/a\x80",
            b"/a\"b",
            b"/a<b>",
            b"/a\\b",
            b"/a^b",
            b"/a`b",
            b"/a{b}",
            b"/a|b",
            b"/a[b]",
            b"/a\x7f",
            b"/a\x00",
        ] {
            assert_eq!(
                check_origin_form(bad),
                Err(Reject::BadTargetCharacter),
                "{bad:?}"
            );
        }
        for bad in [&b"/a%"[..], b"/a%2", b"/a%zz", b"/a%2G/b"] {
            assert_eq!(
                check_origin_form(bad),
                Err(Reject::BadPercentEncoding),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn hosts_are_uri_host_with_an_optional_port() {
        for ok in [
            &b"example.org"[..],
            b"matrix.example.org:8448",
            b"127.0.0.1:8008",
            b"[::1]",
            b"[2001:db8::1]:443",
            b"[::ffff:192.0.2.1]:80",
            b"[v1.fe80::a+en1]",
            b"xn--bcher-kva.example",
            b"a%2Db",
            b"localhost:1",
            b"h:65535",
        ] {
            assert_eq!(check_host(ok), Ok(()), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b""[..],
            b":80",
            b"user@example.org",
            b"user:pass@example.org",
            b"exa mple.org",
            b"example.org:",
            b"example.org:http",
            b"example.org:65536",
            b"example.org:123456",
            b"example.org:80:80",
            b"[::1",
            b"[]",
            b"[::1]x",
            b"[g::1]",
            b"example.org/path",
            b"example.org?x",
            b"a%zz",
            b"caf\xc3\xa9.org",
        ] {
            assert_eq!(
                check_host(bad),
                Err(Reject::BadHost),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn normalise(raw: &str) -> Result<Option<String>, Reject> {
        absolute_to_origin_form(raw.as_bytes())
            .map(|o| o.map(|b| String::from_utf8(b.to_vec()).unwrap()))
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_the_authority_as_host() {
        assert_eq!(
            normalise("GET http://matrix.example.org:8008/_matrix/a%2Fb?x=1 HTTP/1.1\r\nHost: other\r\nAccept: */*\r\n\r\n"),
            Ok(Some("GET /_matrix/a%2Fb?x=1 HTTP/1.1\r\nHost: matrix.example.org:8008\r\nAccept: */*\r\n\r\n".into()))
        );
        assert_eq!(
            normalise("GET HTTPS://Example.ORG HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Some("GET / HTTP/1.1\r\nHost: Example.ORG\r\n\r\n".into())),
            "an empty path is /; the scheme's case does not matter"
        );
        // RFC 9112 §3.2: Host stays required in HTTP/1.1, whatever the target's form (found
        // by the request_stream fuzz target).
        assert_eq!(
            normalise("GET http://e.org/_matrix/a HTTP/1.1\r\nX: a\r\n\r\n"),
            Err(Reject::MissingHost)
        );
        assert_eq!(
            normalise("GET http://e.org?q=1 HTTP/1.0\r\nhOsT: e.org\r\n\r\n"),
            Ok(Some("GET /?q=1 HTTP/1.0\r\nHost: e.org\r\n\r\n".into()))
        );
        assert_eq!(normalise("GET /a HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(None));
        assert_eq!(normalise("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(None));
        assert_eq!(
            normalise("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(None)
        );
        assert_eq!(
            normalise("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(None)
        );
        assert_eq!(
            normalise("GET http://u@evil/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(Reject::BadHost)
        );
        assert_eq!(
            normalise("GET http:/// HTTP/1.1\r\n\r\n"),
            Err(Reject::BadHost)
        );
        assert_eq!(
            normalise("GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(Reject::DuplicateHost)
        );
    }
}
