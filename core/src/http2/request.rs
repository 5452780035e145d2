//! A decoded HTTP/2 request header list checked against RFC 9113 §8 and turned into the
//! request head the exchange needs: method, scheme, authority, the `:path` bytes exactly
//! as decoded, and the regular fields.

use bytes::{BufMut, Bytes, BytesMut};

use crate::http1::request::trim_ows;
use crate::http1::tokens::parse_content_length;

/// A request's head as the client sent it over HTTP/2, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Bytes,
    pub scheme: Bytes,
    /// `:authority`, or the `Host` field when there is no `:authority` (§8.3.1): what
    /// becomes `Host` upstream. `None` if the client sent neither.
    pub authority: Option<Bytes>,
    /// `:path`, byte for byte as HPACK decoded it (never normalised). Only checked to be
    /// non-empty: what is not origin-form (`*`, `foo`) is the exchange's to refuse, as it
    /// does for HTTP/1.1.
    pub path: Bytes,
    /// The regular fields in order, names lower-case; no pseudo-fields, no `Host`, and
    /// `cookie` fields joined into one with "; " (§8.2.3). `te: trailers` is dropped (it
    /// means nothing to an HTTP/1.1 upstream).
    pub headers: Vec<(Bytes, Bytes)>,
    pub content_length: Option<u64>,
    /// HEADERS carried END_STREAM: there is no body.
    pub end_stream: bool,
}

impl Request {
    /// The first value of a regular field, by lower-case name.
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// Why a request is malformed (RFC 9113 §8.1.1): a stream error PROTOCOL_ERROR, except
/// [`Malformed::Connect`] which we answer (501) instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    UpperCaseName,
    BadName,
    BadValue,
    PseudoAfterRegular,
    UnknownPseudo,
    DuplicatePseudo,
    MissingMethod,
    MissingScheme,
    MissingPath,
    EmptyPath,
    ConnectionSpecific,
    BadTe,
    BadContentLength,
    /// END_STREAM on HEADERS with a non-zero content-length.
    ContentLengthWithoutBody,
    HostDiffersFromAuthority,
    /// `:authority` with userinfo (`user@host`), deprecated for http(s) (§8.3.1).
    UserinfoInAuthority,
    DuplicateHost,
    /// CONNECT (and RFC 8441's extended CONNECT, which we do not advertise): not a
    /// proxy's business here.
    Connect,
}

/// Field-name characters (RFC 9110 §5.6.2 tchar), minus upper case (RFC 9113 §8.2.1).
fn name_ok(name: &[u8]) -> Result<(), Malformed> {
    if name.is_empty() {
        return Err(Malformed::BadName);
    }
    for &b in name {
        match b {
            b'A'..=b'Z' => return Err(Malformed::UpperCaseName),
            b'a'..=b'z' | b'0'..=b'9' => {}
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
            | b'`' | b'|' | b'~' => {}
            _ => return Err(Malformed::BadName),
        }
    }
    Ok(())
}

/// §8.2.1: no NUL, CR or LF, and no leading or trailing whitespace. Other control
/// characters are refused too (RFC 9110 §5.5 allows none but HTAB): the request goes on
/// to an HTTP/1.1 upstream, whose parser must not be the one to judge them.
fn value_ok(value: &[u8]) -> Result<(), Malformed> {
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Malformed::BadValue);
    }
    if matches!(value.first(), Some(b' ' | b'\t')) || matches!(value.last(), Some(b' ' | b'\t')) {
        return Err(Malformed::BadValue);
    }
    Ok(())
}

/// Builds the request from a decoded list (in order), per RFC 9113 §8.2 and §8.3.1.
pub fn validate(fields: Vec<(Bytes, Bytes)>, end_stream: bool) -> Result<Request, Malformed> {
    let mut method = None;
    let mut scheme = None;
    let mut authority: Option<Bytes> = None;
    let mut path = None;
    let mut protocol = false;
    let mut host: Option<Bytes> = None;
    let mut content_length: Option<u64> = None;
    let mut cookies: Option<BytesMut> = None;
    let mut headers = Vec::with_capacity(fields.len());
    let mut regular_seen = false;

    for (name, value) in fields {
        if let Some(pseudo) = name.strip_prefix(b":") {
            if regular_seen {
                return Err(Malformed::PseudoAfterRegular);
            }
            let slot = match pseudo {
                b"method" => &mut method,
                b"scheme" => &mut scheme,
                b"authority" => &mut authority,
                b"path" => &mut path,
                b"protocol" => {
                    protocol = true;
                    continue;
                }
                _ => return Err(Malformed::UnknownPseudo),
            };
            if slot.is_some() {
                return Err(Malformed::DuplicatePseudo);
            }
            value_ok(&value)?;
            *slot = Some(value);
            continue;
        }
        regular_seen = true;
        name_ok(&name)?;
        value_ok(&value)?;
        match name.as_ref() {
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding"
            | b"upgrade" => return Err(Malformed::ConnectionSpecific),
            b"te" => {
                if !trim_ows(&value).eq_ignore_ascii_case(b"trailers") {
                    return Err(Malformed::BadTe);
                }
                continue;
            }
            b"host" => {
                if host.is_some() {
                    return Err(Malformed::DuplicateHost);
                }
                host = Some(value);
                continue;
            }
            b"content-length" => {
                let n = parse_content_length(&value).ok_or(Malformed::BadContentLength)?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(Malformed::BadContentLength);
                }
                content_length = Some(n);
            }
            b"cookie" => {
                match &mut cookies {
                    Some(c) => {
                        c.put_slice(b"; ");
                        c.put_slice(&value);
                    }
                    None => cookies = Some(BytesMut::from(&value[..])),
                }
                continue;
            }
            _ => {}
        }
        headers.push((name, value));
    }

    let method = method.ok_or(Malformed::MissingMethod)?;
    if method.as_ref() == b"CONNECT" || protocol {
        // Extended CONNECT's `:protocol` is only allowed once SETTINGS_ENABLE_CONNECT_PROTOCOL
        // was advertised (RFC 8441 §4); we never do, so it is refused like CONNECT.
        return Err(if method.as_ref() == b"CONNECT" {
            Malformed::Connect
        } else {
            Malformed::UnknownPseudo
        });
    }
    let scheme = scheme.ok_or(Malformed::MissingScheme)?;
    let path = path.ok_or(Malformed::MissingPath)?;
    if path.is_empty() {
        return Err(Malformed::EmptyPath);
    }
    if authority.as_ref().is_some_and(|a| a.contains(&b'@')) {
        return Err(Malformed::UserinfoInAuthority);
    }
    let authority = match (authority, host) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(&h) => {
            return Err(Malformed::HostDiffersFromAuthority)
        }
        (Some(a), _) => Some(a),
        (None, h) => h,
    };
    if end_stream && content_length.is_some_and(|n| n > 0) {
        return Err(Malformed::ContentLengthWithoutBody);
    }
    if let Some(c) = cookies {
        headers.push((Bytes::from_static(b"cookie"), c.freeze()));
    }
    Ok(Request {
        method,
        scheme,
        authority,
        path,
        headers,
        content_length,
        end_stream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(fields: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
        fields
            .iter()
            .map(|(n, v)| {
                (
                    Bytes::copy_from_slice(n.as_bytes()),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
            .collect()
    }

    const BASE: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "example.org"),
        (":path", "/_matrix/client/v3/sync?since=x%2F..%2f"),
    ];

    fn with(extra: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
        let mut v = BASE.to_vec();
        v.extend_from_slice(extra);
        list(&v)
    }

    #[test]
    fn a_valid_request_keeps_its_path_byte_for_byte() {
        let r = validate(with(&[("accept", "*/*"), ("te", "trailers")]), true).expect("valid");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/_matrix/client/v3/sync?since=x%2F..%2f");
        assert_eq!(r.authority.as_deref(), Some(&b"example.org"[..]));
        assert_eq!(r.headers, list(&[("accept", "*/*")]));
    }

    #[test]
    fn rfc9113_8_2_1_field_names_and_values() {
        for (extra, why) in [
            (("Accept", "x"), Malformed::UpperCaseName),
            (("acc ept", "x"), Malformed::BadName),
            (("x", "a\r\nb"), Malformed::BadValue),
            (("x", " lead"), Malformed::BadValue),
            (("x", "trail\t"), Malformed::BadValue),
            (("x", "nul\0"), Malformed::BadValue),
            (("x", "ctl\x01"), Malformed::BadValue),
            (("x", "del\x7f"), Malformed::BadValue),
        ] {
            assert_eq!(validate(with(&[extra]), true), Err(why), "{extra:?}");
        }
    }

    #[test]
    fn rfc9113_8_2_2_connection_specific_fields() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ] {
            assert_eq!(
                validate(with(&[(name, "x")]), true),
                Err(Malformed::ConnectionSpecific)
            );
        }
        assert_eq!(
            validate(with(&[("te", "gzip")]), true),
            Err(Malformed::BadTe)
        );
    }

    #[test]
    fn rfc9113_8_2_3_cookies_are_joined() {
        let r = validate(
            with(&[("cookie", "a=1"), ("x", "y"), ("cookie", "b=2")]),
            true,
        )
        .expect("valid");
        assert_eq!(r.headers, list(&[("x", "y"), ("cookie", "a=1; b=2")]));
    }

    #[test]
    fn rfc9113_8_3_1_pseudo_header_rules() {
        let cases: [(Vec<(&str, &str)>, Malformed); 8] = [
            (
                vec![(":method", "GET"), (":scheme", "https")],
                Malformed::MissingPath,
            ),
            (
                vec![(":method", "GET"), (":path", "/")],
                Malformed::MissingScheme,
            ),
            (
                vec![(":scheme", "https"), (":path", "/")],
                Malformed::MissingMethod,
            ),
            (
                vec![(":method", "GET"), (":scheme", "https"), (":path", "")],
                Malformed::EmptyPath,
            ),
            (
                vec![
                    (":method", "GET"),
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":path", "/"),
                ],
                Malformed::DuplicatePseudo,
            ),
            (
                vec![
                    (":method", "GET"),
                    ("x", "y"),
                    (":scheme", "https"),
                    (":path", "/"),
                ],
                Malformed::PseudoAfterRegular,
            ),
            (
                vec![
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":path", "/"),
                    (":status", "200"),
                ],
                Malformed::UnknownPseudo,
            ),
            (
                vec![(":method", "CONNECT"), (":authority", "example.org:443")],
                Malformed::Connect,
            ),
        ];
        for (fields, why) in cases {
            assert_eq!(validate(list(&fields), true), Err(why), "{fields:?}");
        }
        assert_eq!(
            validate(
                with(&[])
                    .into_iter()
                    .chain(list(&[(":protocol", "websocket")]))
                    .collect(),
                true
            ),
            Err(Malformed::UnknownPseudo),
            "extended CONNECT is not advertised"
        );
    }

    #[test]
    fn rfc9113_8_3_1_host_and_authority() {
        let mut fields = list(&[(":method", "GET"), (":scheme", "https"), (":path", "/")]);
        fields.push((
            Bytes::from_static(b"host"),
            Bytes::from_static(b"h.example"),
        ));
        let r = validate(fields, true).expect("valid");
        assert_eq!(r.authority.as_deref(), Some(&b"h.example"[..]));
        assert!(r.header(b"host").is_none());
        assert_eq!(
            validate(with(&[("host", "other.example")]), true),
            Err(Malformed::HostDiffersFromAuthority)
        );
        assert!(validate(with(&[("host", "EXAMPLE.org")]), true).is_ok());
        let mut fields = with(&[]);
        fields[2].1 = Bytes::from_static(b"user@example.org");
        assert_eq!(validate(fields, true), Err(Malformed::UserinfoInAuthority));
    }

    #[test]
    fn rfc9113_8_1_1_content_length() {
        assert_eq!(
            validate(with(&[("content-length", "5")]), true),
            Err(Malformed::ContentLengthWithoutBody)
        );
        assert_eq!(
            validate(
                with(&[("content-length", "5"), ("content-length", "6")]),
                false
            ),
            Err(Malformed::BadContentLength)
        );
        assert_eq!(
            validate(with(&[("content-length", "x")]), false),
            Err(Malformed::BadContentLength)
        );
        let r = validate(with(&[("content-length", "5")]), false).expect("valid");
        assert_eq!(r.content_length, Some(5));
        assert!(validate(with(&[("content-length", "0")]), true).is_ok());
    }
}
