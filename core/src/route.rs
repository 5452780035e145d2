//! Where a request goes, decided on the raw path, and the check that its decoded form
//! would not go anywhere else.
//!
//! Routing never rewrites the target. But an upstream decodes `%2F` or resolves `..`
//! before it routes, so a raw path that mxgate sends to one place could land in another
//! (`/_matrix/../_synapse/admin`). Such a target is refused, not forwarded.

use core::net::IpAddr;

use crate::config::{Config, Listener, PoolId, RouteAction, Scheme};

/// The local answers under `/.well-known/matrix/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WellKnownDoc {
    Server,
    Client,
    Support,
    /// Any other name there: 404 (with CORS headers, so browsers can read it).
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// `GET /health`: answered locally, not logged.
    Health,
    WellKnown(WellKnownDoc),
    Forward(PoolId),
    /// `/_synapse/admin` from a client not in the allowlist.
    AdminRefused,
    /// No route (or a deny route) matches.
    NotFound,
    /// Virtual hosts are configured, the Host is not one of them, and there is no fallback.
    Misdirected,
    /// Under ACME, on a plain listener: `/.well-known/acme-challenge/<token>` (HTTP-01).
    AcmeChallenge,
    /// Under ACME, on a plain listener: anything else goes to HTTPS (308).
    RedirectHttps,
}

pub const ADMIN_PREFIX: &[u8] = b"/_synapse/admin";
const WELL_KNOWN_PREFIX: &[u8] = b"/.well-known/matrix";
/// Where HTTP-01 challenges are fetched (RFC 8555 §8.3).
pub const ACME_CHALLENGE_PREFIX: &[u8] = b"/.well-known/acme-challenge";

/// Whether `path` is `prefix` or lies below it: `/_matrix` matches `/_matrix` and
/// `/_matrix/x`, not `/_matrixfoo`.
pub fn under(path: &[u8], prefix: &[u8]) -> bool {
    if prefix == b"/" {
        return path.starts_with(b"/");
    }
    path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

/// Routes a raw path. Fails when the decoded form of the path would route differently.
pub fn decide(
    config: &Config,
    listener: &Listener,
    path: &[u8],
    client: IpAddr,
) -> Result<Decision, crate::http1::reject::Reject> {
    decide_reusing(config, listener, path, client, &mut PathBuffers::default())
}

/// A buffer for the decoded form of long paths, kept by a connection from one request to
/// the next (Matrix paths often carry escapes: `%21room%3Aserver`; short ones are decoded
/// on the stack).
#[derive(Debug, Default)]
pub struct PathBuffers {
    long: Vec<u8>,
}

/// Paths up to this long are normalised in a stack buffer.
const STACK_PATH: usize = 256;

/// [`decide`], with the decoded path built in `buffers` (no allocation once they are grown).
pub fn decide_reusing(
    config: &Config,
    listener: &Listener,
    path: &[u8],
    client: IpAddr,
    buffers: &mut PathBuffers,
) -> Result<Decision, crate::http1::reject::Reject> {
    let raw = decide_path(config, listener, path, client);
    let must_decode = has_dot_or_empty_segment(path)
        || path
            .iter()
            .position(|&b| b == b'%')
            .is_some_and(|first| !escapes_cannot_reroute(listener, path, raw, first));
    if must_decode {
        let mut stack = [0u8; STACK_PATH + 1];
        let buf = if path.len() <= STACK_PATH {
            &mut stack[..]
        } else {
            buffers.long.clear();
            buffers.long.resize(path.len() + 1, 0);
            &mut buffers.long[..]
        };
        let len = normalise_into(path, buf);
        if decide_path(config, listener, &buf[..len], client) != raw {
            return Err(crate::http1::reject::Reject::AmbiguousTarget);
        }
    }
    Ok(raw)
}

fn decide_path(config: &Config, listener: &Listener, path: &[u8], client: IpAddr) -> Decision {
    // With certificates by ACME, plain HTTP exists for HTTP-01 and to send clients to HTTPS.
    if config.acme.is_some() && listener.scheme == Scheme::Http {
        return if under(path, ACME_CHALLENGE_PREFIX) {
            Decision::AcmeChallenge
        } else {
            Decision::RedirectHttps
        };
    }
    if path == b"/health" {
        return Decision::Health;
    }
    if under(path, WELL_KNOWN_PREFIX) {
        return Decision::WellKnown(match &path[WELL_KNOWN_PREFIX.len()..] {
            b"/server" => WellKnownDoc::Server,
            b"/client" => WellKnownDoc::Client,
            b"/support" => WellKnownDoc::Support,
            _ => WellKnownDoc::Unknown,
        });
    }
    if under(path, ADMIN_PREFIX) {
        return match config.admin.pool {
            Some(pool) if Config::contains(&config.admin.allow, client) => Decision::Forward(pool),
            _ => Decision::AdminRefused,
        };
    }
    let best = listener
        .routes
        .iter()
        .filter(|r| under(path, r.prefix.as_bytes()))
        .max_by_key(|r| r.prefix.len());
    match best.map(|r| &r.action) {
        Some(RouteAction::Upstream(pool)) => Decision::Forward(*pool),
        Some(RouteAction::Deny) | None => Decision::NotFound,
    }
}

/// Whether decoding `path`, which has no dot or empty segments and its first `%` at
/// `first`, provably leaves its decision `raw` as it is, without building the
/// decoded path (Matrix paths carry escaped ids: `/rooms/%21id%3Aserver/send/…`): no
/// escape decodes to `/` or `.`, so decoding changes no segment boundary and no byte
/// before the first `%`; and that `%` comes after every prefix routing compares (the
/// decisions that look further, well-known documents and `/health`, are not taken this
/// way).
fn escapes_cannot_reroute(listener: &Listener, path: &[u8], raw: Decision, first: usize) -> bool {
    if matches!(
        raw,
        Decision::WellKnown(_)
            | Decision::Health
            | Decision::AcmeChallenge
            | Decision::RedirectHttps
    ) {
        return false;
    }
    let longest_prefix = listener
        .routes
        .iter()
        .map(|r| r.prefix.len())
        .chain([
            ADMIN_PREFIX.len(),
            WELL_KNOWN_PREFIX.len(),
            b"/health".len(),
        ])
        .max()
        .unwrap_or(0);
    if first <= longest_prefix {
        return false;
    }
    // Escapes as `normalise` reads them: `%` and two hex digits, else a plain `%`.
    let mut i = first;
    while let Some(offset) = path[i..].iter().position(|&b| b == b'%') {
        let at = i + offset;
        match path[at..] {
            [_, h, l, ..] if hex(h).is_some() && hex(l).is_some() => {
                let decoded = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                if decoded == b'/' || decoded == b'.' {
                    return false;
                }
                i = at + 3;
            }
            _ => i = at + 1,
        }
    }
    true
}

/// [`decide`] always building the decoded path: what `escapes_cannot_reroute` must agree with.
#[cfg(test)]
pub(crate) fn decide_decoding_always(
    config: &Config,
    listener: &Listener,
    path: &[u8],
    client: IpAddr,
) -> Result<Decision, crate::http1::reject::Reject> {
    let raw = decide_path(config, listener, path, client);
    if needs_normalising(path) && decide_path(config, listener, &normalise(path), client) != raw {
        return Err(crate::http1::reject::Reject::AmbiguousTarget);
    }
    Ok(raw)
}

/// Only paths with escapes, dot segments or empty segments can decode differently.
#[cfg(test)]
fn needs_normalising(path: &[u8]) -> bool {
    path.contains(&b'%') || has_dot_or_empty_segment(path)
}

/// Whether some `/` is followed by `.` or `/` (a dot segment or an empty one may follow).
/// Every request's path is checked, and almost none has one: the whole path is scanned
/// without an early exit, which the compiler turns into vector compares.
fn has_dot_or_empty_segment(path: &[u8]) -> bool {
    let next = path.get(1..).unwrap_or_default();
    path.iter().zip(next).fold(false, |found, (&b, &after)| {
        found | ((b == b'/') & ((after == b'.') | (after == b'/')))
    })
}

/// The path as an upstream that decodes before routing would see it: every `%XX`
/// decoded, empty segments merged, then dot segments resolved (RFC 3986 §5.2.4). The
/// plain form of [`normalise_into`], which the tests hold it to.
#[cfg(test)]
fn normalise(path: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%' && i + 2 < path.len() {
            if let (Some(h), Some(l)) = (hex(path[i + 1]), hex(path[i + 2])) {
                decoded.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        decoded.push(path[i]);
        i += 1;
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|&b| b == b'/').skip(1) {
        match seg {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = Vec::with_capacity(decoded.len());
    for seg in &out {
        result.push(b'/');
        result.extend_from_slice(seg);
    }
    if result.is_empty() || decoded.ends_with(b"/") {
        result.push(b'/');
    }
    result
}

/// [`normalise`] in one pass into `out`, which must hold `path.len() + 1` bytes; returns
/// the length of the result. Escapes are decoded as they come, and each segment is judged
/// (`.`, `..`, empty) when the `/` after it is decoded.
fn normalise_into(path: &[u8], out: &mut [u8]) -> usize {
    // `out[..len]` is the result so far: `/seg` for each kept segment, then the segment
    // being decoded (after its `/`, at `segment`).
    let mut len = 0;
    let mut segment = None;
    let mut last = 0u8;
    let mut i = 0;
    while i < path.len() {
        // A run of plain bytes is copied whole.
        let run = path[i..]
            .iter()
            .position(|&b| b == b'%' || b == b'/')
            .unwrap_or(path.len() - i);
        if run > 0 {
            if segment.is_some() {
                out[len..len + run].copy_from_slice(&path[i..i + run]);
                len += run;
            }
            // Bytes before the first `/` are not part of any segment (as `split().skip(1)`).
            i += run;
            last = path[i - 1];
            continue;
        }
        let mut byte = path[i];
        i += 1;
        if byte == b'%' && i + 1 < path.len() {
            if let (Some(h), Some(l)) = (hex(path[i]), hex(path[i + 1])) {
                byte = h * 16 + l;
                i += 2;
            }
        }
        last = byte;
        if byte == b'/' {
            if let Some(start) = segment {
                len = end_segment(out, start, len);
            }
            out[len] = b'/';
            len += 1;
            segment = Some(len);
        } else if segment.is_some() {
            out[len] = byte;
            len += 1;
        }
    }
    if let Some(start) = segment {
        len = end_segment(out, start, len);
    }
    if len == 0 || last == b'/' {
        out[len] = b'/';
        len += 1;
    }
    len
}

/// Judges the segment `out[start..len]` (its `/` at `start - 1`): kept, dropped (empty or
/// `.`), or dropped with the one before it (`..`). Returns the new length.
fn end_segment(out: &[u8], start: usize, len: usize) -> usize {
    match &out[start..len] {
        b"" | b"." => start - 1,
        b".." => out[..start - 1]
            .iter()
            .rposition(|&b| b == b'/')
            .unwrap_or(0),
        _ => len,
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_empty_segments_are_found_anywhere() {
        let by_pairs = |p: &[u8]| p.windows(2).any(|w| w == b"/." || w == b"//");
        for path in [
            &b""[..],
            b"/",
            b"//",
            b"/.",
            b"/a/",
            b"/a/b",
            b"/a/.b",
            b"a./",
            b"/_matrix/client/v3/rooms/%21a%3Ab/send",
            b"/_matrix/client/v3/rooms/%21a%3Ab/send/m.room.message//x",
        ] {
            assert_eq!(has_dot_or_empty_segment(path), by_pairs(path), "{path:?}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(under(b"/_matrix", b"/_matrix"));
        assert!(under(b"/_matrix/client", b"/_matrix"));
        assert!(!under(b"/_matrixfoo", b"/_matrix"));
        assert!(!under(b"/_matri", b"/_matrix"));
        assert!(under(b"/anything", b"/"));
    }

    #[test]
    fn normalising_decodes_merges_and_resolves() {
        assert_eq!(normalise(b"/_matrix/../_synapse/admin"), b"/_synapse/admin");
        assert_eq!(normalise(b"/_synapse%2Fadmin"), b"/_synapse/admin");
        assert_eq!(normalise(b"/_synapse/%61dmin/x"), b"/_synapse/admin/x");
        assert_eq!(
            normalise(b"/_matrix/%2e%2e/_synapse/admin"),
            b"/_synapse/admin"
        );
        assert_eq!(normalise(b"//_synapse//admin"), b"/_synapse/admin");
        assert_eq!(normalise(b"/a/b/"), b"/a/b/");
        assert_eq!(normalise(b"/%zz/%4"), b"/%zz/%4");
        assert_eq!(normalise(b"/.."), b"/");
    }

    #[test]
    fn normalising_into_buffers_gives_the_same_path() {
        let check = |path: &[u8]| {
            let mut out = vec![0u8; path.len() + 1];
            let len = normalise_into(path, &mut out);
            assert_eq!(&out[..len], &normalise(path)[..], "{path:?}");
        };
        let paths: [&[u8]; 14] = [
            b"/_matrix/../_synapse/admin",
            b"/_synapse%2Fadmin",
            b"/_synapse/%61dmin/x",
            b"/_matrix/%2e%2e/_synapse/admin",
            b"//_synapse//admin",
            b"/a/b/",
            b"/%zz/%4",
            b"/..",
            b"/a/./b/../../..//c/%2E%2e/d/",
            b"/%",
            b"/%2",
            b"/a%2f..%2fb",
            b"/_matrix/client/v3/rooms/%21OGEhHVWSdvArJzumhm%3Aexample.org/send/m/1",
            b"/a/b/c/../..",
        ];
        for path in paths {
            check(path);
        }
        // Every short combination of the interesting bytes.
        let alphabet = b"/.%2eFfa";
        let mut path = vec![b'/'];
        for code in 0..8usize.pow(6) {
            path.truncate(1);
            let mut c = code;
            for _ in 0..6 {
                path.push(alphabet[c % 8]);
                c /= 8;
            }
            check(&path);
        }
    }
}
