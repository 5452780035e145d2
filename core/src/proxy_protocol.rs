//! The PROXY protocol header (HAProxy's spec, versions 1 and 2), parsed strictly: the
//! client address a load balancer in front of mxgate (a cloud NLB, HAProxy in TCP mode)
//! saw, sent as the first bytes of the connection.
//!
//! [`parse`] takes the bytes received so far and answers `Ok(None)` (need more: read again
//! and call with everything so far), `Ok(Some((header, consumed)))` (the header is the
//! first `consumed` bytes; the rest is the client's first HTTP or TLS bytes), or an error:
//! anything malformed, so the runtime closes the connection. It never needs more than
//! [`MAX_HEADER_LEN`] bytes to decide. Only enable it on a listener whose every peer sends
//! the header — a client that can send its own header chooses its own address.
//!
//! `Local` (v2 `LOCAL`, v1 `UNKNOWN`, and v2 families other than TCP over IPv4/IPv6, which
//! the spec lets a receiver treat as unspecified) means: keep the socket's own addresses.
//! v2 TLVs are checked for framing and skipped.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

/// The longest v1 header, `\r\n` included (the spec's bound).
pub const V1_MAX_LEN: usize = 107;
/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The largest v2 address-and-TLV block accepted (the spec allows 65535; real senders
/// use a few hundred bytes at most).
pub const V2_MAX_PAYLOAD: usize = 4096;
/// The most bytes [`parse`] needs to see to decide.
pub const MAX_HEADER_LEN: usize = 16 + V2_MAX_PAYLOAD;

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The connection is relayed for `source` (the client), which connected to `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The sender's own connection (health checks) or an address family without a
    /// meaning here: keep the socket's addresses.
    Local,
}

impl ProxyHeader {
    /// The client address to use, given the socket's peer address.
    pub fn source_or(&self, socket_peer: SocketAddr) -> SocketAddr {
        match self {
            ProxyHeader::Proxied { source, .. } => *source,
            ProxyHeader::Local => socket_peer,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("the connection does not start with a PROXY protocol header")]
    NotProxyProtocol,
    #[error("PROXY v1 header longer than {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("malformed PROXY v1 header: {0}")]
    V1Malformed(&'static str),
    #[error("PROXY v2 version {0} (only 2 exists)")]
    V2Version(u8),
    #[error("unknown PROXY v2 command {0:#x}")]
    V2Command(u8),
    #[error("unknown PROXY v2 address family and protocol {0:#04x}")]
    V2Family(u8),
    #[error("PROXY v2 block of {0} bytes exceeds {V2_MAX_PAYLOAD}")]
    V2TooLong(usize),
    #[error("PROXY v2 address block too short for its family")]
    V2Truncated,
    #[error("malformed PROXY v2 TLV")]
    V2Tlv,
}

/// Parses a PROXY header at the start of `buf` (v1 or v2, told apart by the first byte).
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ProxyError::NotProxyProtocol),
    }
}

const V1_PREFIX: &[u8] = b"PROXY ";

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Err(ProxyError::NotProxyProtocol);
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    // Only printable ASCII, then `\r\n`: what never can become a header is refused early.
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\r' => match window.get(i + 1) {
                Some(b'\n') => {
                    let line = &window[..i];
                    return parse_v1_line(line).map(|h| Some((h, i + 2)));
                }
                Some(_) => return Err(ProxyError::V1Malformed("CR without LF")),
                None => return Ok(None),
            },
            b'\n' => return Err(ProxyError::V1Malformed("LF without CR")),
            // This byte, then at least `\r\n`.
            0x20..=0x7e if i + 3 > V1_MAX_LEN => return Err(ProxyError::V1TooLong),
            0x20..=0x7e => {}
            _ => return Err(ProxyError::V1Malformed("non-printable byte")),
        }
    }
    Ok(None)
}

/// `PROXY <TCP4|TCP6|UNKNOWN> <src> <dst> <sport> <dport>`, single spaces.
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let mut fields = line.split(|&b| b == b' ');
    let _proxy = fields.next();
    let proto = fields
        .next()
        .ok_or(ProxyError::V1Malformed("no protocol"))?;
    let v6 = match proto {
        // The spec: the receiver must ignore anything after UNKNOWN.
        b"UNKNOWN" => return Ok(ProxyHeader::Local),
        b"TCP4" => false,
        b"TCP6" => true,
        _ => {
            return Err(ProxyError::V1Malformed(
                "protocol not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let mut next = || {
        fields
            .next()
            .ok_or(ProxyError::V1Malformed("missing field"))
    };
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if fields.next().is_some() {
        return Err(ProxyError::V1Malformed("extra field"));
    }
    let source = SocketAddr::new(v1_ip(src, v6)?, v1_port(sport)?);
    let destination = SocketAddr::new(v1_ip(dst, v6)?, v1_port(dport)?);
    Ok(ProxyHeader::Proxied {
        source,
        destination,
    })
}

fn v1_ip(field: &[u8], v6: bool) -> Result<IpAddr, ProxyError> {
    let text = std::str::from_utf8(field).map_err(|_| ProxyError::V1Malformed("address"))?;
    let ip = if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    ip.map_err(|_| ProxyError::V1Malformed("address"))
}

/// A decimal port, 0–65535, without leading zeros.
fn v1_port(field: &[u8]) -> Result<u16, ProxyError> {
    let bad = ProxyError::V1Malformed("port");
    if field.is_empty()
        || field.len() > 5
        || (field.len() > 1 && field[0] == b'0')
        || !field.iter().all(u8::is_ascii_digit)
    {
        return Err(bad);
    }
    let value = field
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(value).map_err(|_| bad)
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(ProxyError::NotProxyProtocol);
    }
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(None);
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2Version(ver_cmd >> 4));
    }
    let local = match ver_cmd & 0x0f {
        0x0 => true,
        0x1 => false,
        cmd => return Err(ProxyError::V2Command(cmd)),
    };
    let Some(&family) = buf.get(13) else {
        return Ok(None);
    };
    // Valid combinations, with the address block length each needs.
    let address_len = match family {
        0x00 => 0,
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        // The family is ignored for LOCAL.
        _ if local => 0,
        _ => return Err(ProxyError::V2Family(family)),
    };
    let (Some(&hi), Some(&lo)) = (buf.get(14), buf.get(15)) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyError::V2TooLong(len));
    }
    let total = 16 + len;
    let Some(block) = buf.get(16..total) else {
        return Ok(None);
    };
    if local {
        // The spec: discard the block, family included, and keep the real endpoints.
        return Ok(Some((ProxyHeader::Local, total)));
    }
    if block.len() < address_len {
        return Err(ProxyError::V2Truncated);
    }
    check_tlvs(&block[address_len..])?;
    let header = match family {
        0x11 => {
            let ip =
                |at: usize| Ipv4Addr::new(block[at], block[at + 1], block[at + 2], block[at + 3]);
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::V4(ip(0)), port(8)),
                destination: SocketAddr::new(IpAddr::V4(ip(4)), port(10)),
            }
        }
        0x21 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::V6(ip(0)), port(32)),
                destination: SocketAddr::new(IpAddr::V6(ip(16)), port(34)),
            }
        }
        // UNSPEC, UDP and UNIX: the spec lets a receiver fall back to the real endpoints.
        _ => ProxyHeader::Local,
    };
    Ok(Some((header, total)))
}

/// TLVs: type (1 byte), length (2, big-endian), value; they must fill the rest exactly.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyError> {
    while !tlvs.is_empty() {
        let [_, hi, lo, rest @ ..] = tlvs else {
            return Err(ProxyError::V2Tlv);
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        tlvs = rest.get(len..).ok_or(ProxyError::V2Tlv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn proxied(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: sa(src),
            destination: sa(dst),
        }
    }

    /// Builds a v2 header.
    fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(family);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    fn tcp4_block() -> Vec<u8> {
        let mut b = vec![192, 0, 2, 1, 198, 51, 100, 2];
        b.extend_from_slice(&56324u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    fn tcp6_block() -> Vec<u8> {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut b = src.octets().to_vec();
        b.extend_from_slice(&dst.octets());
        b.extend_from_slice(&1234u16.to_be_bytes());
        b.extend_from_slice(&8448u16.to_be_bytes());
        b
    }

    /// Every valid vector: (bytes, header).
    fn valid_vectors() -> Vec<(Vec<u8>, ProxyHeader)> {
        let mut with_tlvs = tcp4_block();
        // PP2_TYPE_ALPN "h2", PP2_TYPE_AUTHORITY "example.org", PP2_TYPE_NOOP empty.
        with_tlvs.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        with_tlvs.extend_from_slice(&[0x02, 0x00, 0x0b]);
        with_tlvs.extend_from_slice(b"example.org");
        with_tlvs.extend_from_slice(&[0x04, 0x00, 0x00]);
        vec![
            (
                b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".to_vec(),
                proxied("192.168.0.1:56324", "192.168.0.11:443"),
            ),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 0 65535\r\n".to_vec(),
                proxied("[2001:db8::1]:0", "[2001:db8::2]:65535"),
            ),
            (
                b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n".to_vec(),
                proxied("[::ffff:192.0.2.1]:1", "[::1]:2"),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), ProxyHeader::Local),
            (
                // The spec's worst case: exactly 107 bytes.
                b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n".to_vec(),
                ProxyHeader::Local,
            ),
            (
                v2(0x21, 0x11, &tcp4_block()),
                proxied("192.0.2.1:56324", "198.51.100.2:443"),
            ),
            (
                v2(0x21, 0x11, &with_tlvs),
                proxied("192.0.2.1:56324", "198.51.100.2:443"),
            ),
            (
                v2(0x21, 0x21, &tcp6_block()),
                proxied("[2001:db8::1]:1234", "[2001:db8::2]:8448"),
            ),
            // LOCAL: health check from the balancer; family and block ignored.
            (v2(0x20, 0x00, &[]), ProxyHeader::Local),
            (v2(0x20, 0x11, &tcp4_block()), ProxyHeader::Local),
            (v2(0x20, 0x77, &[1, 2, 3]), ProxyHeader::Local),
            // UNSPEC, UDP, UNIX: keep the socket's addresses.
            (v2(0x21, 0x00, &[]), ProxyHeader::Local),
            (v2(0x21, 0x12, &tcp4_block()), ProxyHeader::Local),
            (v2(0x21, 0x31, &[0; 216]), ProxyHeader::Local),
        ]
    }

    #[test]
    fn a_literal_v2_vector() {
        // TCP4 127.0.0.1:12345 -> 127.0.0.2:443, as HAProxy sends it.
        let bytes = [
            0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11,
            0x00, 0x0c, 0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x02, 0x30, 0x39, 0x01, 0xbb,
        ];
        assert_eq!(
            parse(&bytes),
            Ok(Some((proxied("127.0.0.1:12345", "127.0.0.2:443"), 28)))
        );
    }

    #[test]
    fn valid_vectors_parse_whole_and_with_trailing_data() {
        for (bytes, want) in valid_vectors() {
            assert_eq!(parse(&bytes), Ok(Some((want, bytes.len()))), "{bytes:?}");
            let mut more = bytes.clone();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(parse(&more), Ok(Some((want, bytes.len()))), "{bytes:?}");
            assert!(bytes.len() <= MAX_HEADER_LEN);
        }
    }

    #[test]
    fn every_split_point_needs_more() {
        for (bytes, _) in valid_vectors() {
            for k in 0..bytes.len() {
                assert_eq!(parse(&bytes[..k]), Ok(None), "{:?} cut at {k}", bytes);
            }
        }
    }

    #[test]
    fn source_or_keeps_the_socket_peer_for_local() {
        let peer = sa("10.0.0.9:4000");
        assert_eq!(ProxyHeader::Local.source_or(peer), peer);
        let h = proxied("192.0.2.1:1", "192.0.2.2:2");
        assert_eq!(h.source_or(peer), sa("192.0.2.1:1"));
    }

    #[test]
    fn garbage_is_refused_at_once() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01\x02\x00", // a TLS ClientHello
            b"PROXX",
            b"proxy TCP4",
            b"\r\n\r\n\x00\r\nQUIX",
            b"\r\r",
        ] {
            assert_eq!(parse(bad), Err(ProxyError::NotProxyProtocol), "{bad:?}");
        }
    }

    #[test]
    fn malformed_v1_is_refused() {
        let cases: &[&[u8]] = &[
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\rX",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 1\r\n",
            b"PROXY TCP4  192.168.0.1 192.168.0.11 56324 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 \r\n",
            b"PROXY TCP4 2001:db8::1 192.168.0.11 56324 443\r\n",
            b"PROXY TCP6 192.168.0.1 2001:db8::1 56324 443\r\n",
            b"PROXY TCP4 192.168.0.01 192.168.0.11 56324 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 0443 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 +443 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 -1 443\r\n",
            b"PROXY UDP4 192.168.0.1 192.168.0.11 1 2\r\n",
            b"PROXY tcp4 192.168.0.1 192.168.0.11 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY\r\n",
            b"PROXY TCP4 192.168.0.1\t192.168.0.11 1 2\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 1 2\x00\r\n",
            b"PROXY TCP4 \xc3\xa9.0.0.1 192.168.0.11 1 2\r\n",
        ];
        for &bad in cases {
            let got = parse(bad);
            assert!(
                matches!(
                    got,
                    Err(ProxyError::V1Malformed(_)) | Err(ProxyError::NotProxyProtocol)
                ),
                "{:?} gave {got:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn v1_is_bounded() {
        let long = format!("PROXY UNKNOWN {}", "a".repeat(200));
        assert_eq!(parse(long.as_bytes()), Err(ProxyError::V1TooLong));
        // 105 bytes without CRLF: still possibly valid; 106 cannot be.
        assert_eq!(parse(&long.as_bytes()[..105]), Ok(None));
        assert_eq!(parse(&long.as_bytes()[..106]), Err(ProxyError::V1TooLong));
        // 108 bytes with the CRLF at the end: too long.
        let over = format!("PROXY UNKNOWN {}\r\n", "a".repeat(92));
        assert_eq!(over.len(), 108);
        assert_eq!(parse(over.as_bytes()), Err(ProxyError::V1TooLong));
    }

    #[test]
    fn malformed_v2_is_refused() {
        assert_eq!(
            parse(&v2(0x11, 0x11, &tcp4_block())),
            Err(ProxyError::V2Version(1))
        );
        assert_eq!(
            parse(&v2(0x31, 0x11, &tcp4_block())[..13]),
            Err(ProxyError::V2Version(3)),
            "refused before the rest arrives"
        );
        assert_eq!(
            parse(&v2(0x22, 0x11, &tcp4_block())),
            Err(ProxyError::V2Command(2))
        );
        for family in [0x01, 0x10, 0x13, 0x23, 0x41, 0xff] {
            assert_eq!(
                parse(&v2(0x21, family, &tcp4_block())[..14]),
                Err(ProxyError::V2Family(family))
            );
        }
        assert_eq!(
            parse(&v2(0x21, 0x11, &tcp4_block()[..11])),
            Err(ProxyError::V2Truncated)
        );
        assert_eq!(
            parse(&v2(0x21, 0x21, &tcp4_block())),
            Err(ProxyError::V2Truncated)
        );
        assert_eq!(
            parse(&v2(0x21, 0x31, &[0; 100])),
            Err(ProxyError::V2Truncated)
        );
        // Oversized length refused from the 16-byte header alone.
        let mut head = V2_SIGNATURE.to_vec();
        head.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&head), Err(ProxyError::V2TooLong(65535)));
        // TLVs that do not fill the block exactly.
        for tail in [
            &[0x01][..],
            &[0x01, 0x00],
            &[0x01, 0x00, 0x05, b'a'],
            &[0x04, 0x00, 0x00, 0x01],
        ] {
            let mut block = tcp4_block();
            block.extend_from_slice(tail);
            assert_eq!(
                parse(&v2(0x21, 0x11, &block)),
                Err(ProxyError::V2Tlv),
                "{tail:?}"
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded() {
        // A deterministic sweep: every prefix of every vector with each byte flipped.
        for (bytes, _) in valid_vectors() {
            for i in 0..bytes.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut b = bytes.clone();
                    b[i] ^= flip;
                    if let Ok(Some((_, consumed))) = parse(&b) {
                        assert!(consumed <= b.len() && consumed <= MAX_HEADER_LEN);
                    }
                }
            }
        }
    }
}
