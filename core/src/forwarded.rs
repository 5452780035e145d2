//! Who the client is, as Synapse must be told: `X-Forwarded-For`, `X-Forwarded-Proto` and
//! the request id.
//!
//! Synapse believes the first value of the first `X-Forwarded-For` line, without a trust
//! check. So the header is replaced by the client's address; a chain is kept only when the
//! peer is a trusted proxy, and then it starts at the right-most untrusted address.

use core::net::IpAddr;

use bytes::Bytes;

use crate::config::{canonical_ip, Config, Scheme};
use crate::http1::request::{trim_ows, RequestHead};
use crate::http1::tokens::eq_ignore_case;

/// What the upstream is told about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The client address (the peer, or from a trusted proxy's chain).
    pub client: IpAddr,
    /// The `X-Forwarded-For` value to send; `None`: the peer's address (the usual case,
    /// without a reference count per request).
    pub forwarded_for: Option<Bytes>,
    /// The `X-Forwarded-Proto` value to send.
    pub proto: Bytes,
    pub request_id: RequestId,
}

/// A request id: generated here (held inline: nothing allocated or reference-counted per
/// request), or kept from a trusted proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestId {
    Generated([u8; 16]),
    Received(Bytes),
}

impl RequestId {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Generated(id) => id,
            RequestId::Received(id) => id,
        }
    }

    /// The id as `Bytes` (for an access record).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            RequestId::Generated(id) => Bytes::copy_from_slice(id),
            RequestId::Received(id) => id.clone(),
        }
    }
}

impl core::ops::Deref for RequestId {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Makes unique request ids without a clock or a random source: a per-connection seed
/// from the runtime and a counter, mixed.
#[derive(Debug, Clone)]
pub struct RequestIds {
    seed: u64,
    counter: u64,
}

impl RequestIds {
    pub fn new(seed: u64) -> Self {
        RequestIds { seed, counter: 0 }
    }

    pub fn next_id(&mut self) -> RequestId {
        self.counter += 1;
        // splitmix64: a bijection, so distinct (seed, counter) never collide within a seed.
        let mut z = self
            .seed
            .wrapping_add(self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [0u8; 16];
        for (i, digit) in id.iter_mut().enumerate() {
            *digit = HEX[((z >> (60 - 4 * i)) & 0xf) as usize];
        }
        RequestId::Generated(id)
    }
}

/// A request id from a trusted peer is kept if it is short and plain (it lands verbatim in
/// Synapse's logs).
fn acceptable_request_id(v: &[u8]) -> bool {
    (1..=128).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// The peer as the connection knows it: its canonical address (as text, [`IpText`] renders
/// it where a request needs it).
pub fn peer(ip: IpAddr) -> IpAddr {
    canonical_ip(ip)
}

/// Room for the longest text of an IP address (45 characters: IPv6 with an embedded IPv4).
const IP_TEXT_ROOM: usize = 48;

/// An IP address as text, rendered on the stack when needed (a connection keeps no copy of
/// its peer's address as text: it would be held by every idle connection).
pub struct IpText {
    text: [u8; IP_TEXT_ROOM],
    len: usize,
}

impl IpText {
    pub fn new(ip: IpAddr) -> Self {
        let mut text = [0u8; IP_TEXT_ROOM];
        let len = match ip {
            // Rendered on every forwarded request: digits by hand, not `fmt` (which cost
            // more than the rest of the request rewrite).
            IpAddr::V4(v4) => {
                let mut len = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text[len] = b'.';
                        len += 1;
                    }
                    len += put_octet(&mut text[len..], octet);
                }
                len
            }
            IpAddr::V6(v6) => {
                use std::io::Write;
                let mut rest = &mut text[..];
                // Cannot fail: every address fits (a failure would leave what fitted).
                let _ = write!(rest, "{v6}");
                IP_TEXT_ROOM - rest.len()
            }
        };
        IpText { text, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

/// Writes `octet` in decimal at the start of `out` (room for three digits); returns the
/// digit count.
fn put_octet(out: &mut [u8], octet: u8) -> usize {
    let digits = [octet / 100, octet / 10 % 10, octet % 10];
    let skip = match octet {
        0..=9 => 2,
        10..=99 => 1,
        _ => 0,
    };
    let used = &digits[skip..];
    for (slot, digit) in out.iter_mut().zip(used) {
        *slot = b'0' + digit;
    }
    used.len()
}

/// `peer` is the canonical address (from [`peer`]).
pub fn identify(
    config: &Config,
    scheme: Scheme,
    peer: IpAddr,
    head: &RequestHead,
    ids: &mut RequestIds,
) -> ClientIdentity {
    let trusted = &config.forwarding.trusted_proxies;
    let peer_trusted = Config::contains(trusted, peer);
    let id_header = config.forwarding.request_id_header.as_str().as_bytes();

    let mut client = peer;
    let mut forwarded_for = None;
    let mut proto = Bytes::from_static(scheme.as_str().as_bytes());
    let mut request_id = None;

    if peer_trusted {
        // The chain as the trusted peer built it, then the peer itself.
        let mut chain: Vec<&[u8]> = Vec::new();
        for (_, value) in head
            .headers()
            .filter(|(name, _)| eq_ignore_case(name, b"x-forwarded-for"))
        {
            chain.extend(value.split(|&b| b == b',').map(trim_ows));
        }
        // Right-most address that is not a trusted proxy is the client.
        let mut start = chain.len();
        for (i, entry) in chain.iter().enumerate().rev() {
            match parse_ip(entry) {
                Some(ip) if Config::contains(trusted, ip) => start = i,
                Some(ip) => {
                    client = ip;
                    start = i;
                    break;
                }
                None => break, // garbage: believe nothing further left
            }
        }
        let mut kept: Vec<String> = chain[start..]
            .iter()
            .filter_map(|e| parse_ip(e))
            .map(|ip| ip.to_string())
            .collect();
        if !kept.is_empty() && client == peer {
            // Every entry was a trusted proxy: the left-most is the best we know.
            if let Some(first) = kept.first().and_then(|s| s.parse().ok()) {
                client = first;
            }
        }
        kept.push(peer.to_string());
        forwarded_for = Some(Bytes::from(kept.join(", ")));
        if let Some(p) = head.header(b"x-forwarded-proto") {
            let p = trim_ows(p);
            if eq_ignore_case(p, b"https") || eq_ignore_case(p, b"http") {
                proto = Bytes::copy_from_slice(p);
            }
        }
        request_id = head
            .header(id_header)
            .filter(|v| acceptable_request_id(v))
            .map(|v| RequestId::Received(Bytes::copy_from_slice(v)));
    }
    ClientIdentity {
        client,
        forwarded_for,
        proto,
        request_id: request_id.unwrap_or_else(|| ids.next_id()),
    }
}

fn parse_ip(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?;
    // Accept `[v6]` and `[v6]:port` / `v4:port` forms some proxies write.
    let s = s
        .strip_prefix('[')
        .map_or(s, |rest| rest.split(']').next().unwrap_or(rest));
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    let (host, _port) = s.rsplit_once(':')?;
    host.parse::<core::net::Ipv4Addr>().ok().map(IpAddr::V4)
}
