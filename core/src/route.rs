//! Where a request goes, decided on the raw path, and the check that its decoded form
//! would not go anywhere else.
//!
//! Routing never rewrites the target. But an upstream decodes `%2F` or resolves `..`
//! before it routes, so a raw path that mxgate sends to one place could land in another
//! (`/_matrix/../_synapse/admin`). Such a target is refused, not forwarded.

use core::net::IpAddr;

use crate::config::{Config, Listener, PoolId, RouteAction};

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
}

pub const ADMIN_PREFIX: &[u8] = b"/_synapse/admin";
const WELL_KNOWN_PREFIX: &[u8] = b"/.well-known/matrix";

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
    let raw = decide_path(config, listener, path, client);
    if needs_normalising(path) {
        let normal = normalise(path);
        if decide_path(config, listener, &normal, client) != raw {
            return Err(crate::http1::reject::Reject::AmbiguousTarget);
        }
    }
    Ok(raw)
}

fn decide_path(config: &Config, listener: &Listener, path: &[u8], client: IpAddr) -> Decision {
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

/// Only paths with escapes, dot segments or empty segments can decode differently.
fn needs_normalising(path: &[u8]) -> bool {
    path.contains(&b'%') || path.windows(2).any(|w| w == b"/." || w == b"//")
}

/// The path as an upstream that decodes before routing would see it: every `%XX`
/// decoded, empty segments merged, then dot segments resolved (RFC 3986 §5.2.4).
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

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
