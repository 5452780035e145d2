//! The effective configuration as TOML in the explicit form (what `mxgate check` prints):
//! nothing is left to derivation, and it parses back to the same configuration.

use std::fmt::{self, Write};

use super::role_name;
use super::values::{render_duration, render_size};
use crate::config::{AccessLogFormat, Config, PoolId, RouteAction, Scheme, TlsFiles, UpstreamPool};

pub(super) fn render(config: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_config(&mut out, config);
    out
}

fn write_config(out: &mut String, c: &Config) -> fmt::Result {
    writeln!(
        out,
        "# Effective mxgate configuration: every derived and default value written out."
    )?;
    writeln!(out, "server_name = {}", quote(&c.server_name))?;
    let tls_listener = c.listeners.iter().any(|l| l.scheme == Scheme::Https);
    if tls_listener && c.tls.default.is_none() && c.acme.is_none() {
        writeln!(
            out,
            "# No certificate: the runtime generates a self-signed development one."
        )?;
        writeln!(out, "dev_self_signed = true")?;
    }

    for l in &c.listeners {
        writeln!(out, "\n[[listeners]]")?;
        writeln!(out, "name = {}", quote(&l.name))?;
        writeln!(out, "role = {}", quote(role_name(l.role)))?;
        let bind: Vec<String> = l.bind.iter().map(|a| quote(&a.to_string())).collect();
        writeln!(out, "bind = [{}]", bind.join(", "))?;
        writeln!(out, "tls = {}", l.scheme == Scheme::Https)?;
        writeln!(out, "http2 = {}", l.http2)?;
        if l.proxy_protocol {
            writeln!(out, "proxy_protocol = true")?;
        }
        if l.routes.is_empty() {
            writeln!(out, "routes = []")?;
        } else {
            writeln!(out, "routes = [")?;
            for r in &l.routes {
                let action = match r.action {
                    RouteAction::Upstream(id) => format!("pool = {}", quote(pool_name(c, id))),
                    RouteAction::Deny => "deny = true".into(),
                };
                writeln!(out, "  {{ prefix = {}, {action} }},", quote(&r.prefix))?;
            }
            writeln!(out, "]")?;
        }
    }

    for p in c.pools.iter().filter(|p| p.role.is_none()) {
        write_pool(out, p)?;
    }
    for p in c.pools.iter().filter(|p| p.role.is_some()) {
        write_worker_pool(out, p)?;
    }
    if c.workers.is_some() {
        write_worker_routes(out, c)?;
    }

    if !c.virtual_hosts.names.is_empty() || c.virtual_hosts.fallback.is_some() {
        writeln!(out, "\n[virtual_hosts]")?;
        writeln!(out, "names = {}", string_list(&c.virtual_hosts.names))?;
        if let Some(id) = c.virtual_hosts.fallback {
            writeln!(out, "fallback = {}", quote(pool_name(c, id)))?;
        }
    }

    writeln!(out, "\n[well_known]")?;
    let bodies = [
        ("server", &c.well_known.server),
        ("client", &c.well_known.client),
        ("support", &c.well_known.support),
    ];
    for (key, body) in bodies {
        match body {
            Some(body) => {
                let text = String::from_utf8_lossy(body);
                writeln!(out, "{key} = {}", literal(&text))?;
            }
            // An absent support body is the default; the others are derived unless disabled.
            None if key == "support" => {}
            None => writeln!(out, "{key} = false")?,
        }
    }

    if c.tls.default.is_some() || !c.tls.sni.is_empty() {
        writeln!(out, "\n[tls]")?;
        if let Some(files) = &c.tls.default {
            write_files(out, files)?;
        }
        for s in &c.tls.sni {
            writeln!(out, "\n[[tls.sni]]")?;
            writeln!(out, "names = {}", string_list(&s.names))?;
            write_files(out, &s.files)?;
        }
    }

    if let Some(acme) = &c.acme {
        writeln!(
            out,
            "\n# Certificates by ACME; plain listeners answer http-01 challenges and redirect"
        )?;
        writeln!(
            out,
            "# everything else to https (port {}) with 308.",
            acme.https_port
        )?;
        writeln!(out, "[acme]")?;
        writeln!(out, "names = {}", string_list(&acme.names))?;
        if let Some(email) = &acme.email {
            writeln!(out, "email = {}", quote(email))?;
        }
        writeln!(out, "directory = {}", quote(&acme.directory))?;
        if let Some(ca_root) = &acme.ca_root {
            writeln!(out, "ca_root = {}", quote(&ca_root.display().to_string()))?;
        }
        writeln!(
            out,
            "state_dir = {}",
            quote(&acme.state_dir.display().to_string())
        )?;
        let kinds: Vec<String> = acme
            .challenges
            .iter()
            .map(|k| k.as_str().to_string())
            .collect();
        writeln!(out, "challenges = {}", string_list(&kinds))?;
    }

    let l = &c.limits;
    writeln!(out, "\n[limits]")?;
    writeln!(out, "max_body = {}", render_size(l.max_body_bytes))?;
    writeln!(out, "max_linger = {}", render_size(l.max_linger_bytes))?;
    let sizes = [
        ("max_request_line", l.max_request_line_bytes),
        ("max_head", l.max_head_bytes),
        ("max_response_head", l.max_response_head_bytes),
        ("max_pipelined", l.max_pipelined_bytes),
    ];
    for (key, bytes) in sizes {
        writeln!(out, "{key} = {}", render_size(bytes as u64))?;
    }
    writeln!(out, "max_headers = {}", l.max_headers)?;

    let t = &c.timeouts;
    writeln!(out, "\n[timeouts]")?;
    let durations = [
        ("client_header", t.client_header),
        ("client_idle", t.client_idle),
        ("client_body", t.client_body),
        ("upstream_connect", t.upstream_connect),
        ("upstream_response", t.upstream_response),
        ("tls_handshake", t.tls_handshake),
        ("drain", t.drain),
        ("send", t.send),
        ("linger", t.linger),
        ("linger_read", t.linger_read),
    ];
    for (key, d) in durations {
        writeln!(out, "{key} = {}", render_duration(d))?;
    }

    let h = &c.http2;
    writeln!(out, "\n[http2]")?;
    writeln!(out, "max_concurrent_streams = {}", h.max_concurrent_streams)?;
    let sizes = [
        ("max_header_list_size", h.max_header_list_size),
        ("initial_stream_window", h.initial_stream_window),
        ("connection_window", h.connection_window),
    ];
    for (key, bytes) in sizes {
        writeln!(out, "{key} = {}", render_size(u64::from(bytes)))?;
    }
    writeln!(out, "max_frame_size = {}", h.max_frame_size)?;
    let durations = [
        ("idle_timeout", h.idle_timeout),
        ("settings_timeout", h.settings_timeout),
        ("send_stall_timeout", h.send_stall_timeout),
    ];
    for (key, d) in durations {
        writeln!(out, "{key} = {}", render_duration(d))?;
    }
    writeln!(out, "max_resets = {}", h.max_resets)?;

    writeln!(out, "\n[forwarding]")?;
    let trusted: Vec<String> = c
        .forwarding
        .trusted_proxies
        .iter()
        .map(|c| c.to_string())
        .collect();
    writeln!(out, "trusted_proxies = {}", string_list(&trusted))?;
    writeln!(
        out,
        "request_id_header = {}",
        quote(c.forwarding.request_id_header.as_str())
    )?;

    writeln!(out, "\n[admin]")?;
    let allow: Vec<String> = c.admin.allow.iter().map(|c| c.to_string()).collect();
    writeln!(out, "allow = {}", string_list(&allow))?;
    if let Some(id) = c.admin.pool {
        writeln!(out, "pool = {}", quote(pool_name(c, id)))?;
    }

    let r = &c.runtime;
    writeln!(out, "\n[runtime]")?;
    if let Some(threads) = r.threads {
        writeln!(out, "threads = {threads}")?;
    }
    writeln!(out, "max_connections = {}", r.max_connections)?;
    if let Some(addr) = r.metrics_bind {
        writeln!(out, "metrics = {}", quote(&addr.to_string()))?;
    }
    let access_log = match r.access_log {
        AccessLogFormat::Combined => "combined",
        AccessLogFormat::Json => "json",
        AccessLogFormat::Off => "off",
    };
    writeln!(out, "access_log = {}", quote(access_log))?;
    Ok(())
}

fn write_pool(out: &mut String, p: &UpstreamPool) -> fmt::Result {
    writeln!(out, "\n[[upstreams]]")?;
    writeln!(out, "name = {}", quote(&p.name))?;
    let backends: Vec<String> = p
        .backends
        .iter()
        .map(|b| format!("http://{}", b.authority()))
        .collect();
    writeln!(out, "backends = {}", string_list(&backends))?;
    writeln!(out, "max_idle_per_backend = {}", p.max_idle_per_backend)?;
    writeln!(out, "idle_timeout = {}", render_duration(p.idle_timeout))
}

fn write_worker_pool(out: &mut String, p: &UpstreamPool) -> fmt::Result {
    writeln!(out, "\n[workers.{}]", p.name)?;
    let backends: Vec<String> = p
        .backends
        .iter()
        .map(|b| format!("http://{}", b.authority()))
        .collect();
    writeln!(out, "backends = {}", string_list(&backends))?;
    writeln!(out, "policy = {}", quote(&p.balancer.policy().to_string()))?;
    if let Some(t) = p.response_timeout {
        writeln!(out, "response_timeout = {}", render_duration(t))?;
    }
    writeln!(out, "max_idle_per_backend = {}", p.max_idle_per_backend)?;
    writeln!(out, "idle_timeout = {}", render_duration(p.idle_timeout))?;
    let h = &p.health;
    match h.probe_interval {
        Some(i) => writeln!(out, "health_interval = {}", render_duration(i))?,
        None => writeln!(out, "health_interval = \"off\"")?,
    }
    writeln!(out, "health_rise = {}", h.rise)?;
    writeln!(out, "health_fall = {}", h.fall)?;
    writeln!(out, "eject_after = {}", h.eject_after)?;
    writeln!(out, "eject_for = {}", render_duration(h.eject_for))
}

/// The worker route table as comments: which pattern goes to which pool, in the order
/// they are tried (Synapse's table, as built in).
fn write_worker_routes(out: &mut String, c: &Config) -> fmt::Result {
    use crate::workers::table::{RoleSet, ENDPOINTS, SOURCE};
    let roles: RoleSet = c.pools.iter().filter_map(|p| p.role).collect();
    writeln!(
        out,
        "\n# Worker routes, in the order tried (built in from {SOURCE}):"
    )?;
    for e in ENDPOINTS {
        let Some(role) = roles.resolve(e.role) else {
            continue;
        };
        let only = if e.get_only { " (GET only)" } else { "" };
        let sticky = e
            .sticky
            .map(|k| format!(", sticky by {k}"))
            .unwrap_or_default();
        writeln!(out, "#   {} -> {role}{only}{sticky}", e.pattern)?;
    }
    writeln!(out, "#   everything else -> homeserver")
}

fn write_files(out: &mut String, files: &TlsFiles) -> fmt::Result {
    writeln!(out, "cert = {}", quote(&files.cert.to_string_lossy()))?;
    writeln!(out, "key = {}", quote(&files.key.to_string_lossy()))
}

fn pool_name(c: &Config, id: PoolId) -> &str {
    c.pools
        .get(id)
        .map_or("<no such pool>", |p| p.name.as_str())
}

fn string_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A TOML basic string.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML literal string (`'…'`, no escapes: readable JSON) when possible, else a basic string.
fn literal(s: &str) -> String {
    if s.contains('\'') || s.chars().any(char::is_control) {
        quote(s)
    } else {
        format!("'{s}'")
    }
}
