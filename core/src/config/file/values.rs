//! The value syntaxes of the file: sizes, durations, URLs, host names; and their rendering.

use core::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// `50MiB`, `8KiB`, `64K`, `1G`, `100B`, `100` → bytes. K/M/G are powers of 1024, like nginx.
pub(super) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return None;
    }
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "m" | "MiB" => 1 << 20,
        "G" | "g" | "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// The shortest exact rendering: `"50MiB"`, `"8KiB"`, or a plain byte count.
pub(super) fn render_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("\"{}{unit}\"", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub(super) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return None;
    }
    let number: u64 = number.parse().ok()?;
    let millis_per: u64 = match unit.trim_start() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number.checked_mul(millis_per).map(Duration::from_millis)
}

/// Whole hours as `"1h"`, else seconds (`"180s"`), else milliseconds (`"1500ms"`);
/// sub-millisecond parts are dropped.
pub(super) fn render_duration(d: Duration) -> String {
    let millis = d.as_millis();
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (secs, rest_ms) = (millis / 1_000, millis % 1_000);
    if millis != 0 && rest == 0 {
        format!("\"{hours}h\"")
    } else if rest_ms == 0 {
        format!("\"{secs}s\"")
    } else {
        format!("\"{millis}ms\"")
    }
}

/// A host and optional port, as in a URL authority or a Matrix server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Authority {
    /// Without brackets for IPv6 (`::1`), lower-cased names as written otherwise.
    pub host: String,
    pub port: Option<u16>,
}

impl Authority {
    /// The host as it appears in a URL: IPv6 literals in brackets.
    pub fn url_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// Parses `host`, `host:port`, `[v6]`, `[v6]:port`.
pub(super) fn parse_authority(s: &str) -> Result<Authority, String> {
    if s.is_empty() {
        return Err("the host is empty".into());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address in brackets is missing its `]`")?;
        let v6: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("`{inside}` is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected `{p}` after `]`"))?,
            ),
        };
        (v6.to_string(), port)
    } else {
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if host.contains(':') {
            return Err("IPv6 addresses must be written in brackets, like `[::1]`".into());
        }
        check_host_name(host)?;
        (host.to_string(), port)
    };
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{p}` is not a port number (1-65535)"))?,
        ),
    };
    Ok(Authority { host, port })
}

/// A DNS name or IPv4 literal: dot-separated labels of letters, digits, `-` and `_`.
pub(super) fn check_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let ok = host.split('.').all(|label| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    if ok {
        Ok(())
    } else {
        Err(format!("`{host}` is not a valid host name"))
    }
}

/// An absolute `http(s)://authority[/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Url {
    pub https: bool,
    pub authority: Authority,
    /// Empty, or starting with `/`.
    pub path: String,
}

impl Url {
    pub fn port_or_default(&self) -> u16 {
        self.authority
            .port
            .unwrap_or(if self.https { 443 } else { 80 })
    }
}

pub(super) fn parse_url(s: &str) -> Result<Url, String> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or("expected a URL starting with http:// or https://")?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        other => return Err(format!("the scheme `{other}` is not http or https")),
    };
    if rest.contains(['?', '#']) {
        return Err("a query or fragment is not allowed here".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("user information (`user@`) is not allowed here".into());
    }
    let authority = parse_authority(authority)?;
    Ok(Url {
        https,
        authority,
        path: path.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_powers_of_1024() {
        assert_eq!(parse_size("50MiB"), Some(50 << 20));
        assert_eq!(parse_size("50M"), Some(50 << 20));
        assert_eq!(parse_size("8 KiB"), Some(8192));
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("100B"), Some(100));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("5MB"), None);
        assert_eq!(parse_size("-5"), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
        assert_eq!(parse_size("9999999999999G"), None);
    }

    #[test]
    fn sizes_render_exactly() {
        for n in [1, 100, 1024, 8192, 50 << 20, 3 << 30, (1 << 20) + 1] {
            let r = render_size(n);
            assert_eq!(parse_size(r.trim_matches('"')), Some(n), "{r}");
        }
        assert_eq!(render_size(50 << 20), "\"50MiB\"");
        assert_eq!(render_size(1000), "1000");
    }

    #[test]
    fn durations_parse_and_render() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("thirty"), None);
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("3d"), None);
        assert_eq!(render_duration(Duration::from_secs(180)), "\"180s\"");
        assert_eq!(render_duration(Duration::from_secs(7200)), "\"2h\"");
        assert_eq!(render_duration(Duration::from_secs(75)), "\"75s\"");
        assert_eq!(render_duration(Duration::from_millis(1500)), "\"1500ms\"");
        assert_eq!(render_duration(Duration::ZERO), "\"0s\"");
        assert_eq!(parse_duration("0ms"), Some(Duration::ZERO));
    }

    #[test]
    fn authorities_and_urls() {
        let a = parse_authority("[::1]:8009").unwrap();
        assert_eq!(a.host, "::1");
        assert_eq!(a.port, Some(8009));
        assert_eq!(a.url_host(), "[::1]");
        assert!(parse_authority("::1:8009").is_err());
        assert!(parse_authority("host:0").is_err());
        assert!(parse_authority("host:99999").is_err());
        assert!(parse_authority("bad host").is_err());
        assert!(parse_authority("a..b").is_err());
        let u = parse_url("https://matrix.example.com").unwrap();
        assert!(u.https);
        assert_eq!(u.port_or_default(), 443);
        let u = parse_url("http://localhost:8008/").unwrap();
        assert_eq!(u.authority.host, "localhost");
        assert_eq!(u.path, "/");
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://x/?a").is_err());
        assert!(parse_url("http://u@x").is_err());
        assert!(parse_url("localhost:8008").is_err());
    }
}
