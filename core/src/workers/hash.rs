//! Routing keys and rendezvous hashing: which backend of a pool a request sticks to.
//!
//! Synapse needs some requests of one user (`/sync`), one room (`/messages`) or one remote
//! server (`/send/`) to reach the same worker. The key is taken from the request, hashed,
//! and the backend with the highest `score(key, backend)` wins (rendezvous or
//! highest-random-weight hashing): adding a backend moves only the keys it now wins (≈1/n),
//! removing one moves only its own keys, and an unhealthy backend's keys go to their
//! second choice while every other key stays put.
//!
//! Everything is deterministic from the configuration alone: FNV-1a 64 with the murmur3
//! finaliser, written here, rather than a seeded or std hasher whose algorithm may change
//! between Rust versions. Two proxies (or one after a restart or upgrade) with the same
//! backend list route every key the same way.

use core::net::IpAddr;
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::http1::request::RequestHead;

/// What a sticky request is keyed on. Each falls back to the client address when the
/// request does not carry it (`Room` tries the user first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// The user, from the access token (`Authorization: Bearer` or `?access_token=`).
    User,
    /// The room id in the path (`/rooms/<id>/…`, `/join/<id>`, `/knock/<id>`).
    Room,
    /// The sending server, from `Authorization: X-Matrix origin=…`.
    Origin,
    /// The client address (after `X-Forwarded-For` resolution).
    Client,
    /// The whole request target, path and query (HAProxy's `balance uri whole`).
    Uri,
}

impl KeyKind {
    pub const ALL: [KeyKind; 5] = [
        KeyKind::User,
        KeyKind::Room,
        KeyKind::Origin,
        KeyKind::Client,
        KeyKind::Uri,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::User => "user",
            KeyKind::Room => "room",
            KeyKind::Origin => "origin",
            KeyKind::Client => "client",
            KeyKind::Uri => "uri",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hash key {0:?} (expected user, room, origin, client or uri)")]
pub struct UnknownKeyKind(pub String);

impl FromStr for KeyKind {
    type Err = UnknownKeyKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKeyKind(s.to_owned()))
    }
}

/// The parts of a request that routing and keys are derived from.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a [u8],
    /// The raw request-target (origin-form: path and query).
    pub target: &'a [u8],
    /// The first `Authorization` header value, if any.
    pub authorization: Option<&'a [u8]>,
    /// The client address, after `X-Forwarded-For` resolution.
    pub client: IpAddr,
}

impl<'a> RequestParts<'a> {
    pub fn from_head(head: &'a RequestHead, client: IpAddr) -> Self {
        RequestParts {
            method: head.method(),
            target: head.target(),
            authorization: head.header(b"authorization"),
            client,
        }
    }

    /// The path: the target before `?` or `#` (as [`RequestHead::path`]).
    pub fn path(&self) -> &'a [u8] {
        split_target(self.target).0
    }

    /// The query, without its `?`.
    pub fn query(&self) -> Option<&'a [u8]> {
        split_target(self.target).1
    }
}

/// Splits a request-target into path and query (a `#fragment` is dropped).
pub fn split_target(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let path = &target[..end];
    if target.get(end) == Some(&b'?') {
        let rest = &target[end + 1..];
        let q_end = rest.iter().position(|&b| b == b'#').unwrap_or(rest.len());
        (path, Some(&rest[..q_end]))
    } else {
        (path, None)
    }
}

/// What a routing key was finally derived from, after fallbacks (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The localpart inside a Synapse `syt_` access token.
    User,
    /// A whole access token that is not a `syt_` token (e.g. from MAS): per device.
    Token,
    Room,
    Origin,
    Uri,
    Client,
}

/// A hashed routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingKey {
    pub hash: u64,
    pub source: KeySource,
}

/// Derives the key of `kind` from a request, falling back as [`KeyKind`] says.
pub fn routing_key(kind: KeyKind, req: &RequestParts<'_>) -> RoutingKey {
    match kind {
        KeyKind::User => user_key(req).unwrap_or_else(|| client_key(req.client)),
        KeyKind::Room => room_id(req.path())
            .map(|room| RoutingKey {
                hash: hash_tagged_decoded(b'r', room),
                source: KeySource::Room,
            })
            .or_else(|| user_key(req))
            .unwrap_or_else(|| client_key(req.client)),
        KeyKind::Origin => req
            .authorization
            .and_then(x_matrix_origin)
            .map(|origin| {
                let mut h = Fnv64::with_tag(b'o');
                origin
                    .iter()
                    .for_each(|b| h.write_u8(b.to_ascii_lowercase()));
                RoutingKey {
                    hash: h.finish(),
                    source: KeySource::Origin,
                }
            })
            .unwrap_or_else(|| client_key(req.client)),
        KeyKind::Client => client_key(req.client),
        KeyKind::Uri => RoutingKey {
            hash: Fnv64::with_tag(b't').write(req.target).finish(),
            source: KeySource::Uri,
        },
    }
}

fn user_key(req: &RequestParts<'_>) -> Option<RoutingKey> {
    let token = access_token(req.authorization, req.query())?;
    let (bytes, source) = match syt_localpart(&token) {
        Some(localpart) => (localpart, KeySource::User),
        None => (&token[..], KeySource::Token),
    };
    let tag = if source == KeySource::User {
        b'u'
    } else {
        b'k'
    };
    Some(RoutingKey {
        hash: Fnv64::with_tag(tag).write(bytes).finish(),
        source,
    })
}

fn client_key(ip: IpAddr) -> RoutingKey {
    let mut h = Fnv64::with_tag(b'c');
    match ip.to_canonical() {
        IpAddr::V4(v4) => h.write(&v4.octets()),
        IpAddr::V6(v6) => h.write(&v6.octets()),
    };
    RoutingKey {
        hash: h.finish(),
        source: KeySource::Client,
    }
}

/// The access token: `Authorization: Bearer <token>` first (as Synapse checks it), else
/// the `access_token` query parameter, percent-decoded.
pub fn access_token<'a>(
    authorization: Option<&'a [u8]>,
    query: Option<&'a [u8]>,
) -> Option<Cow<'a, [u8]>> {
    if let Some(value) = authorization {
        let value = trim(value);
        if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
            let token = trim(&value[7..]);
            if !token.is_empty() {
                return Some(Cow::Borrowed(token));
            }
        }
    }
    let value = query_param(query?, b"access_token")?;
    if value.is_empty() {
        return None;
    }
    Some(percent_decode(value))
}

/// The base64 localpart inside a Synapse access token
/// (`syt_<base64(localpart)>_<random>_<crc>`), used raw as the user key.
pub fn syt_localpart(token: &[u8]) -> Option<&[u8]> {
    let rest = token.strip_prefix(b"syt_")?;
    // Split from the right: the random part and the checksum hold no `_`.
    let crc = rest.iter().rposition(|&b| b == b'_')?;
    let random = rest[..crc].iter().rposition(|&b| b == b'_')?;
    let localpart = &rest[..random];
    (!localpart.is_empty()).then_some(localpart)
}

/// The room id (or alias) of a room-scoped client path: the segment after the first
/// `rooms`, `join` or `knock` segment. Raw; [`routing_key`] hashes it percent-decoded,
/// so `!a:b` and `!a%3Ab` stick together.
pub fn room_id(path: &[u8]) -> Option<&[u8]> {
    let mut segments = path.split(|&b| b == b'/');
    while let Some(seg) = segments.next() {
        if matches!(seg, b"rooms" | b"join" | b"knock") {
            return segments.next().filter(|s| !s.is_empty());
        }
    }
    None
}

/// The `origin` parameter of an `Authorization: X-Matrix …` value, quoted or not.
pub fn x_matrix_origin(authorization: &[u8]) -> Option<&[u8]> {
    let value = trim(authorization);
    let scheme_end = value.iter().position(|&b| b == b' ' || b == b'\t')?;
    if !value[..scheme_end].eq_ignore_ascii_case(b"x-matrix") {
        return None;
    }
    value[scheme_end..].split(|&b| b == b',').find_map(|param| {
        let param = trim(param);
        let eq = param.iter().position(|&b| b == b'=')?;
        if !trim(&param[..eq]).eq_ignore_ascii_case(b"origin") {
            return None;
        }
        let v = trim(&param[eq + 1..]);
        let v = match v {
            [b'"', inner @ .., b'"'] => inner,
            _ => v,
        };
        (!v.is_empty() && !v.contains(&b'"')).then_some(v)
    })
}

/// Whether a `/sync` is an initial sync: no (or an empty) `since`, or `full_state=true`.
pub fn is_initial_sync(query: Option<&[u8]>) -> bool {
    let Some(query) = query else {
        return true;
    };
    if query_param(query, b"full_state") == Some(b"true") {
        return true;
    }
    query_param(query, b"since").is_none_or(|s| s.is_empty())
}

/// The raw value of the first `name=value` query parameter called `name`.
fn query_param<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=').unwrap_or(pair.len());
        (&pair[..eq] == name).then(|| pair.get(eq + 1..).unwrap_or(b""))
    })
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Calls `f` with each byte of `s`, `%XX` decoded (malformed escapes pass through).
fn for_each_decoded(s: &[u8], mut f: impl FnMut(u8)) {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                f(h * 16 + l);
                i += 3;
                continue;
            }
        }
        f(s[i]);
        i += 1;
    }
}

fn percent_decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    for_each_decoded(s, |b| out.push(b));
    Cow::Owned(out)
}

fn hash_tagged_decoded(tag: u8, s: &[u8]) -> u64 {
    let mut h = Fnv64::with_tag(tag);
    for_each_decoded(s, |b| h.write_u8(b));
    h.finish()
}

fn trim(v: &[u8]) -> &[u8] {
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

/// FNV-1a, 64 bit, finished with the murmur3 `fmix64` finaliser (FNV alone mixes its last
/// bytes poorly into the high bits, which rendezvous scores compare).
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Fnv64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> Self {
        Fnv64(Self::OFFSET)
    }

    /// Starts with a domain tag, so keys of different kinds never collide by construction.
    pub fn with_tag(tag: u8) -> Self {
        let mut h = Self::new();
        h.write_u8(tag);
        h
    }

    pub fn write_u8(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Self::PRIME);
    }

    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        bytes.iter().for_each(|&b| self.write_u8(b));
        self
    }

    pub fn finish(&self) -> u64 {
        fmix64(self.0)
    }
}

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

/// murmur3's 64-bit finaliser: a bijection with full avalanche.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// A backend's identity for rendezvous hashing: the hash of its `host:port` as configured
/// ([`crate::config::Backend::authority`]), so adding or reordering backends does not
/// change the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendId(u64);

impl BackendId {
    pub fn new(identity: &str) -> Self {
        BackendId(Fnv64::with_tag(b'b').write(identity.as_bytes()).finish())
    }
}

/// The rendezvous weight of `backend` for `key`.
pub fn score(key: u64, backend: BackendId) -> u64 {
    fmix64(key ^ backend.0)
}

/// Visits backends in decreasing order of score for `key` until `accept` takes one, and
/// returns it. `accept` is where health is checked (and a half-open trial claimed). Without
/// allocating: each round scans for the best below the last refused one, so a key whose
/// first choice is healthy costs one scan.
pub fn rendezvous(
    key: u64,
    backends: &[BackendId],
    mut accept: impl FnMut(usize) -> bool,
) -> Option<usize> {
    // (score, index) is a total order: no two backends tie.
    let mut below: Option<(u64, usize)> = None;
    for _ in 0..backends.len() {
        let best = backends
            .iter()
            .enumerate()
            .map(|(i, &b)| (score(key, b), i))
            .filter(|&c| below.is_none_or(|limit| c < limit))
            .max()?;
        if accept(best.1) {
            return Some(best.1);
        }
        below = Some(best);
    }
    None
}

#[cfg(test)]
mod tests {
    use core::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn req<'a>(target: &'a str, auth: Option<&'a str>) -> RequestParts<'a> {
        RequestParts {
            method: b"GET",
            target: target.as_bytes(),
            authorization: auth.map(str::as_bytes),
            client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        }
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors (before the finaliser).
        assert_eq!(Fnv64::new().0, 0xcbf29ce484222325);
        assert_eq!(Fnv64::new().write(b"a").0, 0xaf63dc4c8601ec8c);
        assert_eq!(Fnv64::new().write(b"foobar").0, 0x85944171f73967e8);
        // Pinned end-to-end values: a change here reshuffles every deployment's keys.
        assert_eq!(
            BackendId::new("10.0.0.1:8008").0,
            BackendId::new("10.0.0.1:8008").0
        );
        assert_eq!(fmix64(0), 0);
        assert_eq!(fmix64(1), 0xb456bcfc34c2cb2c);
    }

    #[test]
    fn user_from_syt_token_header_or_query() {
        let a = "Bearer syt_YWxpY2U_GhJkLmNoPqRsTuVwXyZa_1a2B3c";
        let b = "Bearer syt_YWxpY2U_ZZZZZZZZZZZZZZZZZZZZ_0x0x0x";
        let k1 = routing_key(KeyKind::User, &req("/_matrix/client/v3/sync", Some(a)));
        let k2 = routing_key(KeyKind::User, &req("/_matrix/client/v3/sync", Some(b)));
        assert_eq!(k1.source, KeySource::User);
        assert_eq!(k1, k2, "two devices of one user stick together");
        let k3 = routing_key(
            KeyKind::User,
            &req(
                "/_matrix/client/v3/sync?since=s1&access_token=syt_YWxpY2U_other_abc",
                None,
            ),
        );
        assert_eq!(k1, k3, "query token, same user");
        let bob = routing_key(
            KeyKind::User,
            &req(
                "/_matrix/client/v3/sync",
                Some("Bearer syt_Ym9i_GhJkLmNoPqRsTuVwXyZa_1a2B3c"),
            ),
        );
        assert_ne!(k1.hash, bob.hash);
        assert_eq!(syt_localpart(b"syt_YWxpY2U_r_c"), Some(&b"YWxpY2U"[..]));
        // base64url localparts may hold `_`: split from the right.
        assert_eq!(syt_localpart(b"syt_a_b_r_c"), Some(&b"a_b"[..]));
        assert_eq!(syt_localpart(b"syt_abc"), None);
        assert_eq!(syt_localpart(b"syt__r_c"), None);
        assert_eq!(syt_localpart(b"mat_abc_def_ghi"), None);
    }

    #[test]
    fn other_tokens_and_fallbacks() {
        let k = routing_key(KeyKind::User, &req("/sync", Some("Bearer mat_0123456789")));
        assert_eq!(k.source, KeySource::Token);
        let k2 = routing_key(
            KeyKind::User,
            &req("/sync?access_token=mat_0123456789", None),
        );
        assert_eq!(k, k2);
        // Percent-encoded query token equals the header form.
        let h = routing_key(KeyKind::User, &req("/sync", Some("bearer  a+b/c ")));
        let q = routing_key(
            KeyKind::User,
            &req("/sync?x=1&access_token=a%2Bb%2Fc", None),
        );
        assert_eq!(h, q);
        // No token: client address.
        let c = routing_key(KeyKind::User, &req("/sync", None));
        assert_eq!(c.source, KeySource::Client);
        assert_eq!(c, routing_key(KeyKind::Client, &req("/other", None)));
        let basic = routing_key(KeyKind::User, &req("/sync", Some("Basic abc")));
        assert_eq!(basic.source, KeySource::Client);
        let empty = routing_key(KeyKind::User, &req("/sync?access_token=", None));
        assert_eq!(empty.source, KeySource::Client);
        // IPv4-mapped IPv6 is the same client as IPv4.
        let mut v6 = req("/x", None);
        v6.client = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(routing_key(KeyKind::Client, &v6), c);
        v6.client = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_ne!(routing_key(KeyKind::Client, &v6), c);
    }

    #[test]
    fn room_from_path() {
        assert_eq!(
            room_id(b"/_matrix/client/v3/rooms/!abc:x.org/send/m.room.message/1"),
            Some(&b"!abc:x.org"[..])
        );
        assert_eq!(
            room_id(b"/_matrix/client/v3/join/%23a:x"),
            Some(&b"%23a:x"[..])
        );
        assert_eq!(
            room_id(b"/_matrix/client/v3/knock/!r:x"),
            Some(&b"!r:x"[..])
        );
        assert_eq!(room_id(b"/_matrix/client/v3/rooms//send"), None);
        assert_eq!(room_id(b"/_matrix/client/v3/profile/@u:x"), None);
        let a = routing_key(
            KeyKind::Room,
            &req("/_matrix/client/v3/rooms/!abc:x.org/messages?dir=b", None),
        );
        let b = routing_key(
            KeyKind::Room,
            &req(
                "/_matrix/client/r0/rooms/!abc%3Ax.org/send/m.room.message/1",
                Some("Bearer syt_Ym9i_r_c"),
            ),
        );
        assert_eq!(a.source, KeySource::Room);
        assert_eq!(a, b, "same room, decoded");
        // No room: the user, then the client.
        let p = routing_key(
            KeyKind::Room,
            &req(
                "/_matrix/client/v3/profile/@bob:x/displayname",
                Some("Bearer syt_Ym9i_r_c"),
            ),
        );
        assert_eq!(p.source, KeySource::User);
        let p = routing_key(
            KeyKind::Room,
            &req("/_matrix/client/v3/profile/@bob:x", None),
        );
        assert_eq!(p.source, KeySource::Client);
    }

    #[test]
    fn origin_from_x_matrix() {
        let quoted =
            br#"X-Matrix origin="Example.org",destination="me.org",key="ed25519:a",sig="ABC""#;
        assert_eq!(x_matrix_origin(quoted), Some(&b"Example.org"[..]));
        let unquoted = b"x-matrix key=\"ed25519:a\", origin=example.org ,sig=\"x\"";
        assert_eq!(x_matrix_origin(unquoted), Some(&b"example.org"[..]));
        assert_eq!(x_matrix_origin(b"Bearer origin=x"), None);
        assert_eq!(x_matrix_origin(b"X-Matrix key=\"a\""), None);
        assert_eq!(x_matrix_origin(b"X-Matrix origin=\"\""), None);
        let t = "/_matrix/federation/v1/send/123";
        let a = routing_key(
            KeyKind::Origin,
            &req(t, Some(std::str::from_utf8(quoted).unwrap())),
        );
        let b = routing_key(
            KeyKind::Origin,
            &req(t, Some(std::str::from_utf8(unquoted).unwrap())),
        );
        assert_eq!(a.source, KeySource::Origin);
        assert_eq!(a, b, "server names compare case-insensitively");
        let none = routing_key(KeyKind::Origin, &req(t, None));
        assert_eq!(none.source, KeySource::Client);
    }

    #[test]
    fn uri_key_is_the_whole_target() {
        let a = routing_key(
            KeyKind::Uri,
            &req("/_matrix/federation/v1/query/profile?user_id=a", None),
        );
        let b = routing_key(
            KeyKind::Uri,
            &req("/_matrix/federation/v1/query/profile?user_id=b", None),
        );
        assert_eq!(a.source, KeySource::Uri);
        assert_ne!(a, b);
    }

    #[test]
    fn initial_sync_detection() {
        assert!(is_initial_sync(None));
        assert!(is_initial_sync(Some(b"timeout=0")));
        assert!(is_initial_sync(Some(b"since=")));
        assert!(is_initial_sync(Some(b"since=s72_1&full_state=true")));
        assert!(!is_initial_sync(Some(b"since=s72_1&timeout=30000")));
        assert!(!is_initial_sync(Some(b"full_state=false&since=s1")));
        assert!(!is_initial_sync(Some(b"filter=1&since=s1")));
        assert!(is_initial_sync(Some(b"sincex=s1")));
        let (p, q) = split_target(b"/_matrix/client/v3/sync?since=1#frag");
        assert_eq!(
            (p, q),
            (&b"/_matrix/client/v3/sync"[..], Some(&b"since=1"[..]))
        );
        assert_eq!(split_target(b"/a#b?c"), (&b"/a"[..], None));
    }

    fn backends(n: usize) -> Vec<BackendId> {
        (0..n)
            .map(|i| BackendId::new(&format!("10.0.0.{}:8083", i + 1)))
            .collect()
    }

    fn user_keys() -> Vec<u64> {
        (0..1000)
            .map(|i| {
                let localpart = b64(format!("user{i}").as_bytes());
                let auth = format!("Bearer syt_{localpart}_AbCdEfGhIjKlMnOpQrSt_0a1B2c");
                routing_key(KeyKind::User, &req("/_matrix/client/v3/sync", Some(&auth))).hash
            })
            .collect()
    }

    /// Unpadded standard base64, as Synapse encodes the localpart in its tokens.
    fn b64(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn base64_helper_matches_synapse_tokens() {
        assert_eq!(b64(b"alice"), "YWxpY2U");
        assert_eq!(b64(b"bob"), "Ym9i");
    }

    fn owner(key: u64, backends: &[BackendId]) -> usize {
        rendezvous(key, backends, |_| true).unwrap()
    }

    #[test]
    fn spread_is_even() {
        let four = backends(4);
        let mut counts = [0; 4];
        for k in user_keys() {
            counts[owner(k, &four)] += 1;
        }
        for c in counts {
            assert!((200..=300).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn adding_a_backend_moves_about_one_in_n() {
        let four = backends(4);
        let five = backends(5);
        let keys = user_keys();
        let mut moved = 0;
        for &k in &keys {
            let before = owner(k, &four);
            let after = owner(k, &five);
            if before != after {
                moved += 1;
                assert_eq!(after, 4, "a key only ever moves to the new backend");
            }
        }
        let share = moved as f64 / keys.len() as f64;
        assert!(share <= 0.2 + 0.03, "{moved} of 1000 moved");
        assert!(
            share >= 0.2 - 0.05,
            "{moved} of 1000 moved: new backend starved"
        );
    }

    #[test]
    fn removing_a_backend_moves_only_its_keys() {
        let five = backends(5);
        let keys = user_keys();
        for removed in 0..5 {
            let rest: Vec<BackendId> = five
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != removed)
                .map(|(_, &b)| b)
                .collect();
            for &k in &keys {
                let before = five[owner(k, &five)];
                let after = rest[owner(k, &rest)];
                if before != five[removed] {
                    assert_eq!(before, after, "a key moved between two surviving backends");
                }
            }
        }
    }

    #[test]
    fn unhealthy_backends_send_their_keys_to_the_second_choice() {
        let five = backends(5);
        let keys = user_keys();
        let down = 2;
        for &k in &keys {
            let healthy = rendezvous(k, &five, |i| i != down).unwrap();
            let first = owner(k, &five);
            if first != down {
                assert_eq!(healthy, first);
            } else {
                // Equals the owner among the other four.
                let rest: Vec<BackendId> = five
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != down)
                    .map(|(_, &b)| b)
                    .collect();
                assert_eq!(five[healthy], rest[owner(k, &rest)]);
            }
        }
        assert_eq!(rendezvous(1, &five, |_| false), None);
        assert_eq!(rendezvous(1, &[], |_| true), None);
        // Order of the configured list does not matter.
        let mut reversed = five.clone();
        reversed.reverse();
        for &k in &keys {
            assert_eq!(five[owner(k, &five)], reversed[owner(k, &reversed)]);
        }
    }
}
