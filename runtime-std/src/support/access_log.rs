//! Access-log lines from the engine's [`AccessRecord`]s: Apache/nginx "combined" format
//! (with a few `key=value` extras after it) or one JSON object per line.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use mxgate_core::config::AccessLogFormat;
use mxgate_core::{AccessRecord, Config};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Renders `record` in the configured format; `None` when access logging is off.
///
/// `now` and `wall_now` are the same moment on the monotonic and the wall clock: the line's
/// timestamp is when the exchange began (`record.started`), as wall-clock time.
pub fn format(
    config: &Config,
    record: &AccessRecord,
    now: Instant,
    wall_now: SystemTime,
) -> Option<String> {
    let started = wall_now
        .checked_sub(now.saturating_duration_since(record.started))
        .unwrap_or(wall_now);
    let started = OffsetDateTime::from(started);
    let listener = config
        .listeners
        .get(record.listener)
        .map_or("-", |l| l.name.as_str());
    let pool = record
        .pool
        .and_then(|p| config.pools.get(p))
        .map(|p| p.name.as_str());
    match config.runtime.access_log {
        AccessLogFormat::Off => None,
        AccessLogFormat::Combined => Some(combined(record, started, listener, pool)),
        AccessLogFormat::Json => Some(json(record, started, listener, pool)),
    }
}

/// `client - - [time] "request" status bytes "referer" "user-agent" rt=… urt=… rid=… listener=… pool=…`
fn combined(
    r: &AccessRecord,
    started: OffsetDateTime,
    listener: &str,
    pool: Option<&str>,
) -> String {
    let mut line = String::with_capacity(256);
    let _ = write!(line, "{} - - [{}] \"", r.client, clf_time(started));
    if r.method.is_empty() {
        line.push('-');
    } else {
        escape_into(&mut line, &r.method);
        line.push(' ');
        escape_into(&mut line, &r.target);
        line.push(' ');
        line.push_str(r.version);
    }
    let _ = write!(line, "\" {} {} \"", r.status, r.bytes_out);
    quoted_field(&mut line, &r.referer);
    line.push_str("\" \"");
    quoted_field(&mut line, &r.user_agent);
    let _ = write!(line, "\" rt={}", seconds(r.duration));
    match r.upstream_duration {
        Some(d) => {
            let _ = write!(line, " urt={}", seconds(d));
        }
        None => line.push_str(" urt=-"),
    }
    line.push_str(" rid=");
    if r.request_id.is_empty() {
        line.push('-');
    } else {
        escape_into(&mut line, &r.request_id);
    }
    let _ = write!(line, " listener={listener} pool={}", pool.unwrap_or("-"));
    line
}

fn json(r: &AccessRecord, started: OffsetDateTime, listener: &str, pool: Option<&str>) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    serde_json::json!({
        "time": started.format(&Rfc3339).unwrap_or_default(),
        "listener": listener,
        "client": r.client.to_string(),
        "method": text(&r.method),
        "target": text(&r.target),
        "version": r.version,
        "status": r.status,
        "body_bytes_in": r.body_bytes_in,
        "bytes_out": r.bytes_out,
        "duration_ms": millis(r.duration),
        "upstream_ms": r.upstream_duration.map(millis),
        "pool": pool,
        "request_id": text(&r.request_id),
        "user_agent": text(&r.user_agent),
        "referer": text(&r.referer),
    })
    .to_string()
}

/// `10/Oct/2000:13:55:36 +0000` (always UTC).
fn clf_time(t: OffsetDateTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn quoted_field(line: &mut String, value: &[u8]) {
    if value.is_empty() {
        line.push('-');
    } else {
        escape_into(line, value);
    }
}

/// Printable ASCII as is; `"`, `\`, control and non-ASCII bytes as `\xHH` (like nginx), so a
/// client cannot forge log lines or break the quoting.
fn escape_into(line: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            line.push(char::from(b));
        } else {
            let _ = write!(line, "\\x{b:02X}");
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::net::IpAddr;

    fn record(started: Instant) -> AccessRecord {
        AccessRecord {
            listener: 0,
            client: "2001:db8::7".parse::<IpAddr>().unwrap(),
            method: Bytes::from_static(b"GET"),
            target: Bytes::from_static(b"/_matrix/client/v3/sync?timeout=30000&since=s1%2F2"),
            version: "HTTP/1.1",
            status: 200,
            body_bytes_in: 0,
            bytes_out: 1234,
            duration: Duration::from_millis(30_012),
            upstream_duration: Some(Duration::from_millis(30_001)),
            pool: Some(0),
            request_id: Bytes::from_static(b"abc123"),
            user_agent: Bytes::from_static(b"Element/1.11 \"quoted\"\n"),
            referer: Bytes::new(),
            started,
        }
    }

    // 2000-10-10T13:55:36Z
    fn wall() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(971_186_136)
    }

    #[test]
    fn combined_line_is_quoted_escaped_and_timestamped_at_start() {
        let now = Instant::now();
        let started = now - Duration::from_secs(30);
        let line = combined(
            &record(started),
            OffsetDateTime::from(wall() - Duration::from_secs(30)),
            "client",
            Some("homeserver"),
        );
        assert_eq!(
            line,
            "2001:db8::7 - - [10/Oct/2000:13:55:06 +0000] \
             \"GET /_matrix/client/v3/sync?timeout=30000&since=s1%2F2 HTTP/1.1\" 200 1234 \
             \"-\" \"Element/1.11 \\x22quoted\\x22\\x0A\" rt=30.012 urt=30.001 rid=abc123 \
             listener=client pool=homeserver"
        );
    }

    #[test]
    fn combined_line_without_request_line_or_upstream() {
        let mut r = record(Instant::now());
        r.method = Bytes::new();
        r.target = Bytes::new();
        r.status = 400;
        r.upstream_duration = None;
        r.pool = None;
        r.request_id = Bytes::new();
        r.user_agent = Bytes::new();
        let line = combined(&r, OffsetDateTime::from(wall()), "federation", None);
        assert_eq!(
            line,
            "2001:db8::7 - - [10/Oct/2000:13:55:36 +0000] \"-\" 400 1234 \"-\" \"-\" \
             rt=30.012 urt=- rid=- listener=federation pool=-"
        );
    }

    #[test]
    fn json_line_has_every_field() {
        let r = record(Instant::now());
        let line = json(
            &r,
            OffsetDateTime::from(wall()),
            "client",
            Some("homeserver"),
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2000-10-10T13:55:36Z");
        assert_eq!(v["client"], "2001:db8::7");
        assert_eq!(
            v["target"],
            "/_matrix/client/v3/sync?timeout=30000&since=s1%2F2"
        );
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 30012.0);
        assert_eq!(v["upstream_ms"], 30001.0);
        assert_eq!(v["pool"], "homeserver");
        assert_eq!(v["user_agent"], "Element/1.11 \"quoted\"\n");
        assert!(!line.contains('\n'));
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn format_follows_the_configured_style_and_names() {
        let mut config = crate::support::testutil::config();
        let now = Instant::now();
        let record = AccessRecord {
            listener: 1,
            client: "192.0.2.1".parse().unwrap(),
            method: Bytes::from_static(b"PUT"),
            target: Bytes::from_static(b"/_matrix/federation/v1/send/1"),
            version: "HTTP/1.1",
            status: 200,
            body_bytes_in: 5,
            bytes_out: 7,
            duration: Duration::from_millis(1),
            upstream_duration: None,
            pool: Some(0),
            request_id: Bytes::new(),
            user_agent: Bytes::new(),
            referer: Bytes::new(),
            started: now,
        };
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(971_186_136);
        let line = format(&config, &record, now, wall).unwrap();
        assert!(
            line.starts_with("192.0.2.1 - - [10/Oct/2000:13:55:36 +0000] \"PUT "),
            "{line}"
        );
        assert!(
            line.ends_with("listener=federation pool=homeserver"),
            "{line}"
        );
        config.runtime.access_log = AccessLogFormat::Json;
        let line = format(&config, &record, now, wall).unwrap();
        assert!(line.contains("\"listener\":\"federation\""), "{line}");
        config.runtime.access_log = AccessLogFormat::Off;
        assert!(format(&config, &record, now, wall).is_none());
    }
}
