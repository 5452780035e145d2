use core::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::*;

const SHORT: &str = r#"server_name = "example.com"
public_url  = "https://matrix.example.com"
homeserver  = "http://127.0.0.1:8008"
[tls]
cert = "/etc/mxgate/fullchain.pem"
key  = "/etc/mxgate/privkey.pem"
"#;

/// Every documented key, with values that differ from the defaults.
const FULL: &str = r#"server_name = "example.com"
public_url = "https://matrix.example.com:8443/"
homeserver = "http://localhost:8008"
identity_server = "https://vector.im"

[[listeners]]
name = "client-tls"
role = "client"
bind = ["127.0.0.1:19443", "[::1]:19443"]
tls = true
routes = [ { prefix = "/_matrix", pool = "homeserver" }, { prefix = "/_synapse/mas", pool = "mas" }, { prefix = "/_matrix/foo", deny = true } ]

[[listeners]]
role = "federation"
bind = "0.0.0.0:8448"
tls = true
http2 = false

[[listeners]]
role = "client"
bind = ["127.0.0.1:8080"]
routes = []
http2 = true

[[upstreams]]
name = "homeserver"
backends = ["http://127.0.0.1:8008", "http://[::1]:8009"]
max_idle_per_backend = 8
idle_timeout = "90s"

[[upstreams]]
name = "mas"
backends = ["http://mas.internal"]

[[upstreams]]
name = "webserver"
backends = ["http://127.0.0.1:8081"]
max_idle_per_backend = 0
idle_timeout = 5

[virtual_hosts]
names = ["Matrix.Example.com", "example.com"]
fallback = "webserver"

[well_known.client_extra]
"org.matrix.msc3575.proxy" = { url = "https://sync.example.com" }

[well_known.support]
support_page = "https://example.com/help"
contacts = [ { matrix_id = "@admin:example.com", role = "m.role.admin" }, { email_address = "security@example.com", role = "m.role.security" } ]

[tls]
cert = "/etc/mxgate/fullchain.pem"
key = "/etc/mxgate/privkey.pem"

[[tls.sni]]
names = ["Other.example.org", "*.example.net"]
cert = "/etc/mxgate/other.pem"
key = "/etc/mxgate/other.key"

[limits]
max_body = "100MiB"
max_request_line = "16KiB"
max_head = 65536
max_headers = 50
max_response_head = "1M"
max_pipelined = "128K"
max_linger = "1GiB"

[timeouts]
client_header = "10s"
client_idle = "2m"
client_body = 120
upstream_connect = "1500ms"
upstream_response = "1h"
tls_handshake = "7s"
drain = 0
send = "20s"
linger = "10s"
linger_read = "2s"

[forwarding]
trusted_proxies = ["10.0.0.0/8", "::1"]
request_id_header = "X-Correlation-ID"

[admin]
allow = ["127.0.0.1/32", "fd00::/8"]
pool = "homeserver"

[runtime]
threads = 2
max_connections = 500
metrics = "127.0.0.1:9100"
access_log = "json"

[http2]
max_concurrent_streams = 250
max_header_list_size = "256KiB"
max_frame_size = 32768
initial_stream_window = "1MiB"
connection_window = "8MiB"
idle_timeout = "5m"
settings_timeout = "3s"
send_stall_timeout = "90s"
max_resets = 50
"#;

fn parse(text: &str) -> Config {
    match parse_config(text, Path::new("/etc/mxgate/mxgate.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}\n--- text ---\n{text}"),
    }
}

fn fail(text: &str) -> ConfigError {
    match parse_config(text, Path::new("mxgate.toml")) {
        Ok(c) => panic!("expected an error, got {c:#?}"),
        Err(e) => e,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn body(b: &Option<bytes::Bytes>) -> &str {
    std::str::from_utf8(b.as_deref().expect("a body")).unwrap()
}

fn route(prefix: &str, pool: PoolId) -> Route {
    Route {
        prefix: prefix.into(),
        action: RouteAction::Upstream(pool),
    }
}

/// The short form plus `extra` lines appended.
fn short_with(extra: &str) -> String {
    format!("{SHORT}{extra}")
}

#[test]
fn short_form_derives_the_whole_setup() {
    let c = parse(SHORT);
    assert_eq!(c.server_name, "example.com");

    assert_eq!(c.pools.len(), 1);
    let hs = &c.pools[0];
    assert_eq!(hs.name, "homeserver");
    assert_eq!(
        hs.backends,
        vec![Backend {
            host: "127.0.0.1".into(),
            port: 8008
        }]
    );
    assert_eq!(hs.max_idle_per_backend, 32);
    assert_eq!(hs.idle_timeout, Duration::from_secs(60));

    assert_eq!(c.listeners.len(), 2);
    let client = &c.listeners[0];
    assert_eq!(client.name, "client");
    assert_eq!(client.role, Role::Client);
    assert_eq!(client.scheme, Scheme::Https);
    assert_eq!(client.bind, vec![addr("[::]:443")]);
    assert_eq!(
        client.routes,
        vec![route("/_matrix", 0), route("/_synapse/client", 0)]
    );
    let federation = &c.listeners[1];
    assert_eq!(federation.name, "federation");
    assert_eq!(federation.role, Role::Federation);
    assert_eq!(federation.scheme, Scheme::Https);
    assert_eq!(federation.bind, vec![addr("[::]:8448")]);
    assert_eq!(federation.routes, vec![route("/_matrix", 0)]);

    assert_eq!(
        body(&c.well_known.server),
        r#"{"m.server":"matrix.example.com:443"}"#
    );
    assert_eq!(
        body(&c.well_known.client),
        r#"{"m.homeserver":{"base_url":"https://matrix.example.com"}}"#
    );
    assert!(c.well_known.support.is_none());

    assert_eq!(
        c.tls.default,
        Some(TlsFiles {
            cert: "/etc/mxgate/fullchain.pem".into(),
            key: "/etc/mxgate/privkey.pem".into(),
        })
    );
    assert!(c.tls.sni.is_empty());
    assert_eq!(c.admin.pool, Some(0));
    assert!(c.admin.allow.is_empty());
    assert!(c.virtual_hosts.names.is_empty());
    assert_eq!(c.virtual_hosts.fallback, None);
    assert_eq!(c.limits.max_body_bytes, 50 * 1024 * 1024);
    assert_eq!(c.timeouts.upstream_response, Duration::from_secs(180));
    assert_eq!(c.forwarding.request_id_header.as_str(), "x-request-id");
    assert!(c.forwarding.trusted_proxies.is_empty());
    assert_eq!(c.runtime.threads, None);
    assert_eq!(c.runtime.max_connections, 10_000);
    assert_eq!(c.runtime.access_log, AccessLogFormat::Combined);
}

#[test]
fn embedded_default_is_a_development_setup() {
    let c = parse(EMBEDDED_DEFAULT);
    assert_eq!(c.server_name, "localhost");
    assert_eq!(c.pools[0].name, "homeserver");
    assert_eq!(
        c.pools[0].backends,
        vec![Backend {
            host: "127.0.0.1".into(),
            port: 8008
        }]
    );
    let summary: Vec<_> = c
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.role, l.scheme, l.bind.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "client",
                Role::Client,
                Scheme::Https,
                vec![addr("127.0.0.1:8443")]
            ),
            (
                "client-2",
                Role::Client,
                Scheme::Http,
                vec![addr("127.0.0.1:8080")]
            ),
        ]
    );
    for l in &c.listeners {
        assert_eq!(
            l.routes,
            vec![route("/_matrix", 0), route("/_synapse/client", 0)]
        );
    }
    // No certificate: the runtime generates a development one.
    assert_eq!(c.tls.default, None);
    assert_eq!(
        body(&c.well_known.server),
        r#"{"m.server":"localhost:8443"}"#
    );
}

#[test]
fn every_documented_key_overrides_the_defaults() {
    let c = parse(FULL);
    let names: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["homeserver", "mas", "webserver"]);
    // The explicit [[upstreams]] "homeserver" wins over the short `homeserver` key.
    assert_eq!(
        c.pools[0].backends,
        vec![
            Backend {
                host: "127.0.0.1".into(),
                port: 8008
            },
            Backend {
                host: "::1".into(),
                port: 8009
            },
        ]
    );
    assert_eq!(c.pools[0].backends[1].authority(), "[::1]:8009");
    assert_eq!(c.pools[0].max_idle_per_backend, 8);
    assert_eq!(c.pools[0].idle_timeout, Duration::from_secs(90));
    assert_eq!(
        c.pools[1].backends,
        vec![Backend {
            host: "mas.internal".into(),
            port: 80
        }]
    );
    assert_eq!(c.pools[1].max_idle_per_backend, 32);
    assert_eq!(c.pools[2].max_idle_per_backend, 0);
    assert_eq!(c.pools[2].idle_timeout, Duration::from_secs(5));

    assert_eq!(c.listeners.len(), 3);
    let l = &c.listeners[0];
    assert_eq!(l.name, "client-tls");
    assert_eq!(l.scheme, Scheme::Https);
    assert_eq!(l.bind, vec![addr("127.0.0.1:19443"), addr("[::1]:19443")]);
    assert_eq!(
        l.routes,
        vec![
            route("/_matrix", 0),
            route("/_synapse/mas", 1),
            Route {
                prefix: "/_matrix/foo".into(),
                action: RouteAction::Deny
            },
        ]
    );
    let l = &c.listeners[1];
    assert_eq!((l.name.as_str(), l.role), ("federation", Role::Federation));
    assert_eq!(l.bind, vec![addr("0.0.0.0:8448")]);
    assert_eq!(l.routes, vec![route("/_matrix", 0)]);
    let l = &c.listeners[2];
    assert_eq!((l.name.as_str(), l.scheme), ("client", Scheme::Http));
    assert!(l.routes.is_empty());

    assert_eq!(c.virtual_hosts.names, ["matrix.example.com", "example.com"]);
    assert_eq!(c.virtual_hosts.fallback, Some(2));

    assert_eq!(
        body(&c.well_known.server),
        r#"{"m.server":"matrix.example.com:8443"}"#
    );
    let client: serde_json::Value = serde_json::from_str(body(&c.well_known.client)).unwrap();
    assert_eq!(
        client,
        serde_json::json!({
            "m.homeserver": {"base_url": "https://matrix.example.com:8443"},
            "m.identity_server": {"base_url": "https://vector.im"},
            "org.matrix.msc3575.proxy": {"url": "https://sync.example.com"},
        })
    );
    let support: serde_json::Value = serde_json::from_str(body(&c.well_known.support)).unwrap();
    assert_eq!(
        support,
        serde_json::json!({
            "support_page": "https://example.com/help",
            "contacts": [
                {"matrix_id": "@admin:example.com", "role": "m.role.admin"},
                {"email_address": "security@example.com", "role": "m.role.security"},
            ],
        })
    );

    assert_eq!(
        c.tls.sni,
        vec![SniCertificate {
            names: vec!["other.example.org".into(), "*.example.net".into()],
            files: TlsFiles {
                cert: "/etc/mxgate/other.pem".into(),
                key: "/etc/mxgate/other.key".into()
            },
        }]
    );

    let l = &c.limits;
    assert_eq!(l.max_body_bytes, 100 << 20);
    assert_eq!(l.max_request_line_bytes, 16 << 10);
    assert_eq!(l.max_head_bytes, 65536);
    assert_eq!(l.max_headers, 50);
    assert_eq!(l.max_response_head_bytes, 1 << 20);
    assert_eq!(l.max_pipelined_bytes, 128 << 10);
    assert_eq!(l.max_linger_bytes, 1 << 30);

    let t = &c.timeouts;
    assert_eq!(t.client_header, Duration::from_secs(10));
    assert_eq!(t.client_idle, Duration::from_secs(120));
    assert_eq!(t.client_body, Duration::from_secs(120));
    assert_eq!(t.upstream_connect, Duration::from_millis(1500));
    assert_eq!(t.upstream_response, Duration::from_secs(3600));
    assert_eq!(t.tls_handshake, Duration::from_secs(7));
    assert_eq!(t.drain, Duration::ZERO);
    assert_eq!(t.send, Duration::from_secs(20));
    assert_eq!(t.linger, Duration::from_secs(10));
    assert_eq!(t.linger_read, Duration::from_secs(2));

    let ip = |s: &str| s.parse::<core::net::IpAddr>().unwrap();
    assert_eq!(c.forwarding.trusted_proxies.len(), 2);
    assert!(Config::contains(
        &c.forwarding.trusted_proxies,
        ip("10.9.8.7")
    ));
    assert!(Config::contains(&c.forwarding.trusted_proxies, ip("::1")));
    assert!(!Config::contains(
        &c.forwarding.trusted_proxies,
        ip("192.168.0.1")
    ));
    assert_eq!(c.forwarding.request_id_header.as_str(), "x-correlation-id");

    assert!(Config::contains(&c.admin.allow, ip("127.0.0.1")));
    assert!(Config::contains(&c.admin.allow, ip("fd12::1")));
    assert!(!Config::contains(&c.admin.allow, ip("127.0.0.2")));
    assert_eq!(c.admin.pool, Some(0));

    assert_eq!(c.runtime.threads, Some(2));
    assert_eq!(c.runtime.max_connections, 500);
    assert_eq!(c.runtime.metrics_bind, Some(addr("127.0.0.1:9100")));
    assert_eq!(c.runtime.access_log, AccessLogFormat::Json);

    let http2: Vec<bool> = c.listeners.iter().map(|l| l.http2).collect();
    assert_eq!(http2, [true, false, true]);
    let h = &c.http2;
    assert_eq!(h.max_concurrent_streams, 250);
    assert_eq!(h.max_header_list_size, 256 * 1024);
    assert_eq!(h.max_header_block, 512 * 1024);
    assert_eq!(h.max_frame_size, 32768);
    assert_eq!(h.initial_stream_window, 1024 * 1024);
    assert_eq!(h.connection_window, 8 * 1024 * 1024);
    assert_eq!(h.idle_timeout, Duration::from_secs(300));
    assert_eq!(h.settings_timeout, Duration::from_secs(3));
    assert_eq!(h.send_stall_timeout, Duration::from_secs(90));
    assert_eq!(h.max_resets, 50);
    // Keys not in [http2] keep the engine's defaults.
    let d = crate::http2::Limits::default();
    assert_eq!(h.max_pings, d.max_pings);
    assert_eq!(h.header_table_size, d.header_table_size);
}

#[test]
fn unknown_key_names_line_column_and_key() {
    let text = r#"server_name = "example.com"
homeserver = "http://127.0.0.1:8008"
dev_self_signed = true

[[listeners]]
role = "client"
bind = ["127.0.0.1:8443"]

[[listeners]]
role = "federation"
  bnd = ["127.0.0.1:8448"]
"#;
    let e = fail(text);
    assert_eq!(e.file, "mxgate.toml");
    assert_eq!((e.line, e.column), (11, 3));
    assert_eq!(e.key, "listeners[1].bnd");
    assert_eq!(
        e.message,
        "unknown key `bnd`, expected one of role, bind, tls, http2, name, routes, proxy_protocol (did you mean `bind`?)"
    );
    assert_eq!(
        e.to_string(),
        format!("mxgate.toml:11:3: listeners[1].bnd: {}", e.message)
    );
}

#[test]
fn unknown_keys_are_refused_everywhere() {
    let e = fail(&short_with("servername = \"x\"\n"));
    // Appended after `[tls]`, so it is a key of that table.
    assert_eq!((e.line, e.key.as_str()), (7, "tls.servername"));
    assert!(e
        .message
        .starts_with("unknown key `servername`, expected one of cert, key, sni"));

    let e = fail(&format!("colour = \"blue\"\n{SHORT}"));
    assert_eq!((e.line, e.column, e.key.as_str()), (1, 1, "colour"));

    let text = r#"server_name = "example.com"
homeserver = "http://127.0.0.1:8008"
dev_self_signed = true
[[listeners]]
role = "client"
bind = ["127.0.0.1:8443"]
routes = [ { prefix = "/_matrix", pool = "homeserver", weight = 2 } ]
"#;
    let e = fail(text);
    assert_eq!((e.line, e.column), (7, 56));
    assert_eq!(e.key, "listeners[0].routes[0].weight");
    assert!(e.message.contains("expected one of prefix, pool, deny"));

    let e = fail(&short_with("[limits]\nmax_bodies = 5\n"));
    assert_eq!((e.line, e.key.as_str()), (8, "limits.max_bodies"));
    assert!(
        e.message.contains("(did you mean `max_body`?)"),
        "{}",
        e.message
    );

    let e = fail(&short_with(
        "[well_known.support]\ncontacts = [{ role = \"m.role.admin\", mxid = \"@a:b\" }]\n",
    ));
    assert_eq!(
        (e.line, e.key.as_str()),
        (8, "well_known.support.contacts[0].mxid")
    );
}

#[test]
fn bad_durations_name_the_key_and_line() {
    let e = fail(&short_with(
        "[timeouts]\nclient_header = \"10s\"\nclient_idle = \"thirty seconds\"\n",
    ));
    assert_eq!((e.line, e.column), (9, 15));
    assert_eq!(e.key, "timeouts.client_idle");
    assert_eq!(
        e.message,
        "expected a duration like \"30s\" (seconds, or a number with ms, s, m, h), found \"thirty seconds\""
    );
    let e = fail(&short_with("[timeouts]\nupstream_connect = true\n"));
    assert_eq!((e.line, e.key.as_str()), (8, "timeouts.upstream_connect"));
    assert!(e.message.ends_with("found a boolean"), "{}", e.message);
    let e = fail(&short_with("[timeouts]\nclient_body = \"0s\"\n"));
    assert_eq!(e.key, "timeouts.client_body");
    assert!(e.message.starts_with("must be more than zero"));
    let e = fail(&short_with(
        "[[upstreams]]\nname = \"x\"\nbackends = [\"http://a\"]\nidle_timeout = -1\n",
    ));
    assert_eq!((e.line, e.key.as_str()), (10, "upstreams[0].idle_timeout"));
}

#[test]
fn bad_sizes_name_the_key_and_line() {
    let e = fail(&short_with("[limits]\nmax_body = \"50MB\"\n"));
    assert_eq!((e.line, e.column), (8, 12));
    assert_eq!(e.key, "limits.max_body");
    assert!(
        e.message.starts_with("expected a size like \"50MiB\""),
        "{}",
        e.message
    );
    let e = fail(&short_with("[limits]\nmax_head = 1.5\n"));
    assert_eq!((e.line, e.key.as_str()), (8, "limits.max_head"));
    assert!(e.message.ends_with("found a float"));
    // Head offsets are 32-bit: a bound far above any real head, far below 4 GiB.
    let e = fail(&short_with("[limits]\nmax_head = \"5GiB\"\n"));
    assert_eq!((e.line, e.key.as_str()), (8, "limits.max_head"));
    assert_eq!(e.message, "must be at most 16MiB");
    let e = fail(&short_with("[limits]\nmax_response_head = \"17MiB\"\n"));
    assert_eq!(e.key, "limits.max_response_head");
    let e = fail(&short_with("[limits]\nmax_headers = 0\n"));
    assert_eq!(e.key, "limits.max_headers");
    assert_eq!(e.message, "expected a whole number of at least 1, found 0");
}

#[test]
fn bad_cidrs_and_addresses_name_the_key_and_line() {
    let e = fail(&short_with(
        "[forwarding]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
    ));
    assert_eq!((e.line, e.column), (8, 34));
    assert_eq!(e.key, "forwarding.trusted_proxies[1]");
    assert!(e.message.contains("prefix length `33`"), "{}", e.message);

    let e = fail(&short_with("[admin]\nallow = [\"localhost\"]\n"));
    assert_eq!((e.line, e.key.as_str()), (8, "admin.allow[0]"));
    assert!(e.message.contains("`localhost` is not an IP address"));

    let text = r#"server_name = "example.com"
homeserver = "http://127.0.0.1:8008"
[[listeners]]
role = "client"
bind = ["127.0.0.1:8080", "localhost:8080"]
"#;
    let e = fail(text);
    assert_eq!((e.line, e.column), (5, 27));
    assert_eq!(e.key, "listeners[0].bind[1]");
    assert!(e.message.contains("is not a socket address like"));

    let text = r#"server_name = "example.com"
[[upstreams]]
name = "homeserver"
backends = ["http://127.0.0.1:8008",
            "127.0.0.1:8009"]
"#;
    let e = fail(text);
    assert_eq!((e.line, e.column), (5, 13));
    assert_eq!(e.key, "upstreams[0].backends[1]");
    assert!(
        e.message.contains("expected an http:// URL"),
        "{}",
        e.message
    );

    let e = fail("server_name = \"example.com\"\nhomeserver = \"https://127.0.0.1:8008\"\n");
    assert_eq!((e.line, e.key.as_str()), (2, "homeserver"));
    assert!(e.message.contains("plain HTTP"));
    let e = fail("server_name = \"example.com\"\nhomeserver = \"http://127.0.0.1:8008/_matrix\"\n");
    assert!(e.message.contains("has no path"));
    let e = fail("server_name = \"example.com\"\nhomeserver = \"http://::1:8008\"\n");
    assert!(e.message.contains("brackets"), "{}", e.message);

    let e = fail(&short_with("[runtime]\nmetrics = \"9100\"\n"));
    assert_eq!((e.line, e.key.as_str()), (8, "runtime.metrics"));
}

#[test]
fn route_to_an_unknown_pool_names_the_route() {
    let text = r#"server_name = "example.com"
homeserver = "http://127.0.0.1:8008"
dev_self_signed = true
[[listeners]]
role = "client"
bind = ["127.0.0.1:8443"]
tls = true
routes = [
  { prefix = "/_matrix", pool = "homeserver" },
  { prefix = "/_synapse/mas", pool = "mas" },
]
"#;
    let e = fail(text);
    assert_eq!((e.line, e.column), (10, 38));
    assert_eq!(e.key, "listeners[0].routes[1].pool");
    assert!(
        e.message
            .starts_with("unknown pool `mas`; defined pools: homeserver"),
        "{}",
        e.message
    );

    let e = fail(&short_with("[virtual_hosts]\nfallback = \"web\"\n"));
    assert_eq!(e.key, "virtual_hosts.fallback");
    let e = fail(&short_with("[admin]\npool = \"web\"\n"));
    assert_eq!(e.key, "admin.pool");
}

#[test]
fn bad_routes_are_refused() {
    let with_route = |r: &str| {
        format!(
            "server_name = \"e.org\"\nhomeserver = \"http://127.0.0.1:8008\"\n[[listeners]]\nrole = \"client\"\nbind = \"127.0.0.1:80\"\nroutes = [ {r} ]\n"
        )
    };
    let cases = [
        (
            r#"{ prefix = "_matrix", pool = "homeserver" }"#,
            "prefix",
            "must start with `/`",
        ),
        (
            r#"{ prefix = "/_matrix/", pool = "homeserver" }"#,
            "prefix",
            "must not end with `/`",
        ),
        (
            r#"{ prefix = "/_matrix%2F", pool = "homeserver" }"#,
            "prefix",
            "must not contain `%`",
        ),
        (
            r#"{ prefix = "/a?b", pool = "homeserver" }"#,
            "prefix",
            "must not contain `?`",
        ),
        (
            r#"{ prefix = "/a" }"#,
            "pool",
            "missing; expected a pool name (or deny = true)",
        ),
        (
            r#"{ prefix = "/a", deny = false }"#,
            "deny",
            "`deny = false` means nothing",
        ),
        (
            r#"{ prefix = "/a", pool = "homeserver", deny = true }"#,
            "deny",
            "not both",
        ),
        (
            r#"{ prefix = "/a", pool = "homeserver" }, { prefix = "/a", deny = true }"#,
            "prefix",
            "routed twice",
        ),
    ];
    for (route, key, message) in cases {
        let e = fail(&with_route(route));
        assert_eq!(e.line, 6, "{route}");
        assert!(e.key.starts_with("listeners[0].routes["), "{}", e.key);
        assert!(e.key.ends_with(key), "{route}: {}", e.key);
        assert!(e.message.contains(message), "{route}: {}", e.message);
    }
    // The root route is fine.
    let c = parse(&with_route(r#"{ prefix = "/", pool = "homeserver" }"#));
    assert_eq!(c.listeners[0].routes, vec![route("/", 0)]);
}

#[test]
fn missing_server_name_and_homeserver_are_errors() {
    let e = fail("homeserver = \"http://127.0.0.1:8008\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n");
    assert_eq!((e.line, e.column), (1, 1));
    assert_eq!(e.key, "server_name");
    assert!(e
        .message
        .starts_with("missing; expected the Matrix server name"));

    let e = fail("server_name = \"example.com\"\n");
    assert_eq!(e.key, "homeserver");
    assert!(e.message.contains("\"homeserver\""));

    // An [[upstreams]] entry named "homeserver" replaces the key.
    let c = parse("server_name = \"example.com\"\ndev_self_signed = true\n[[upstreams]]\nname = \"homeserver\"\nbackends = \"http://synapse:8008\"\n");
    assert_eq!(c.pools[0].backends[0].authority(), "synapse:8008");

    let e = fail("server_name = \"not a name\"\nhomeserver = \"http://a\"\n");
    assert_eq!((e.line, e.key.as_str()), (1, "server_name"));
}

#[test]
fn tls_listeners_without_a_certificate_get_one_by_acme() {
    let no_tls = "server_name = \"example.com\"\npublic_url = \"https://Matrix.example.com\"\nhomeserver = \"http://127.0.0.1:8008\"\n";
    let c = parse(no_tls);
    assert_eq!(c.tls.default, None);
    let acme = c.acme.expect("ACME is the zero-config path");
    assert_eq!(acme.names, ["matrix.example.com", "example.com"]);
    assert_eq!(acme.directory, LETS_ENCRYPT_DIRECTORY);
    assert_eq!(acme.state_dir, Path::new("/var/lib/mxgate"));
    assert_eq!(acme.email, None);
    // No plain listener in the short form: TLS-ALPN-01 only.
    assert_eq!(acme.challenges, [AcmeChallenge::TlsAlpn01]);
    assert_eq!(acme.https_port, 443);

    // The development configuration keeps its self-signed certificate.
    let c = parse(&format!("{no_tls}dev_self_signed = true\n"));
    assert!(c.acme.is_none());
    assert!(parse(EMBEDDED_DEFAULT).acme.is_none());
    // Configured files keep working as they did.
    assert!(parse(SHORT).acme.is_none());

    // With a plain listener: both challenges, redirects to the TLS listener's port.
    let listeners = "[[listeners]]\nrole = \"client\"\nbind = \"127.0.0.1:8080\"\n[[listeners]]\nrole = \"client\"\nbind = \"127.0.0.1:8443\"\ntls = true\n";
    let c = parse(&format!("{no_tls}{listeners}"));
    let acme = c.acme.unwrap();
    assert_eq!(
        acme.challenges,
        [AcmeChallenge::TlsAlpn01, AcmeChallenge::Http01]
    );
    assert_eq!(acme.https_port, 8443);

    let c = parse(&format!(
        "{no_tls}{listeners}[acme]\nnames = [\"m.example.net\"]\nemail = \"admin@example.com\"\ndirectory = \"https://127.0.0.1:14000/dir\"\nca_root = \"/etc/mxgate/acme-ca.pem\"\nstate_dir = \"/tmp/acme\"\nchallenges = [\"http-01\"]\n"
    ));
    let acme = c.acme.unwrap();
    assert_eq!(acme.names, ["m.example.net"]);
    assert_eq!(acme.email.as_deref(), Some("admin@example.com"));
    assert_eq!(acme.directory, "https://127.0.0.1:14000/dir");
    assert_eq!(
        acme.ca_root.as_deref(),
        Some(Path::new("/etc/mxgate/acme-ca.pem"))
    );
    assert_eq!(acme.state_dir, Path::new("/tmp/acme"));
    assert_eq!(acme.challenges, [AcmeChallenge::Http01]);

    // Nothing to certify: the old error, which now names the ACME way too.
    let ip_only = "server_name = \"127.0.0.1\"\nhomeserver = \"http://127.0.0.1:8008\"\n";
    let e = fail(ip_only);
    assert_eq!(e.key, "tls");
    assert!(e.message.contains("dev_self_signed = true"), "{e}");
    assert!(e.message.contains("ACME"), "{e}");
    let explicit = format!(
        "{ip_only}[[listeners]]\nrole = \"federation\"\nbind = \"[::]:8448\"\ntls = true\n"
    );
    let e = fail(&explicit);
    assert_eq!((e.line, e.key.as_str()), (6, "listeners[0].tls"));

    // Plain-HTTP listeners need nothing.
    let c = parse(&format!(
        "{no_tls}[[listeners]]\nrole = \"client\"\nbind = \"127.0.0.1:8080\"\n"
    ));
    assert_eq!(c.listeners[0].scheme, Scheme::Http);
    assert!(c.acme.is_none());

    let e = fail(&format!("{no_tls}[tls]\ncert = \"/c.pem\"\n"));
    assert_eq!((e.line, e.key.as_str()), (4, "tls.key"));
}

#[test]
fn acme_errors_name_the_key() {
    let base = "server_name = \"example.com\"\nhomeserver = \"http://127.0.0.1:8008\"\n";
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "[acme]\nemai = \"a@b.c\"\n",
            4,
            "acme.emai",
            "did you mean `email`?",
        ),
        (
            "[acme]\nemail = \"nobody\"\n",
            4,
            "acme.email",
            "is not an email address",
        ),
        (
            "[acme]\nemail = \"mailto:a@b.c\"\n",
            4,
            "acme.email",
            "is not an email address",
        ),
        (
            "[acme]\ndirectory = \"http://ca.test/dir\"\n",
            4,
            "acme.directory",
            "over HTTPS",
        ),
        (
            "[acme]\ndirectory = \"ca.test\"\n",
            4,
            "acme.directory",
            "expected an ACME directory URL",
        ),
        (
            "[acme]\nchallenges = [\"dns-01\"]\n",
            4,
            "acme.challenges[0]",
            "unknown challenge `dns-01`",
        ),
        (
            "[acme]\nchallenges = [\"http-01\"]\n",
            4,
            "acme.challenges[0]",
            "none is configured",
        ),
        (
            "[acme]\nchallenges = []\n",
            4,
            "acme.challenges",
            "at least one",
        ),
        (
            "[acme]\nchallenges = [\"tls-alpn-01\", \"tls-alpn-01\"]\n",
            4,
            "acme.challenges[1]",
            "listed twice",
        ),
        ("[acme]\nstate_dir = \"\"\n", 4, "acme.state_dir", "empty"),
        (
            "[acme]\nnames = [\"10.0.0.1\"]\n",
            4,
            "acme.names",
            "is an address",
        ),
        (
            "[acme]\nnames = [\"a b\"]\n",
            4,
            "acme.names[0]",
            "not a valid host name",
        ),
        (
            "dev_self_signed = true\n[acme]\n",
            4,
            "acme",
            "dev_self_signed",
        ),
        (
            "[tls]\ncert = \"/c\"\nkey = \"/k\"\n[acme]\n",
            6,
            "acme",
            "remove them",
        ),
    ];
    for (extra, line, key, message) in cases {
        let e = fail(&format!("{base}{extra}"));
        assert_eq!((e.line, e.key.as_str()), (*line, *key), "{e}");
        assert!(e.message.contains(message), "{e}");
    }
    let plain_only =
        format!("{base}[[listeners]]\nrole = \"client\"\nbind = \"127.0.0.1:80\"\n[acme]\n");
    let e = fail(&plain_only);
    assert_eq!(e.key, "acme");
    assert!(
        e.message.contains("nothing to get a certificate for"),
        "{e}"
    );
}

#[test]
fn syntax_errors_have_a_location() {
    let e = fail("server_name = \"example.com\"\nhomeserver = \n");
    assert_eq!(e.key, "-");
    assert_eq!(e.line, 2);
    assert!(e.message.starts_with("invalid TOML"), "{}", e.message);
    let e = fail("server_name = \"example.com\"\nserver_name = \"again\"\n");
    assert_eq!((e.line, e.key.as_str()), (2, "-"));
}

#[test]
fn wrong_types_say_what_was_expected() {
    let e = fail("server_name = 5\n");
    assert_eq!(e.key, "server_name");
    assert_eq!(
        e.message,
        "expected the Matrix server name, like \"example.com\", found an integer"
    );
    let e = fail(&short_with(
        "[[listeners]]\nrole = \"admin\"\nbind = \"127.0.0.1:1\"\n",
    ));
    assert_eq!((e.line, e.key.as_str()), (8, "listeners[0].role"));
    assert!(e.message.contains("\"client\" or \"federation\""));
    let e = fail(&short_with("[[listeners]]\nrole = \"client\"\n"));
    assert_eq!((e.line, e.key.as_str()), (7, "listeners[0].bind"));
    let e = fail(&short_with("[[listeners]]\nrole = \"client\"\nbind = []\n"));
    assert_eq!(e.key, "listeners[0].bind");
    let e = fail(&short_with("[runtime]\naccess_log = \"verbose\"\n"));
    assert_eq!(e.key, "runtime.access_log");
    let e = fail(&short_with("[forwarding]\nrequest_id_header = \"Host\"\n"));
    assert_eq!(e.key, "forwarding.request_id_header");
    let e = fail(&short_with(
        "[forwarding]\nrequest_id_header = \"bad header\"\n",
    ));
    assert_eq!(e.key, "forwarding.request_id_header");
}

#[test]
fn listener_names_default_by_role_and_must_be_unique() {
    let base = "server_name = \"e.org\"\nhomeserver = \"http://127.0.0.1:8008\"\n";
    let l = |name: &str, port: u16| {
        let name = if name.is_empty() {
            String::new()
        } else {
            format!("name = \"{name}\"\n")
        };
        format!("[[listeners]]\n{name}role = \"client\"\nbind = \"127.0.0.1:{port}\"\n")
    };
    let c = parse(&format!("{base}{}{}{}", l("", 1), l("client", 2), l("", 3)));
    let names: Vec<&str> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["client-2", "client", "client-3"]);

    let e = fail(&format!("{base}{}{}", l("a", 1), l("a", 2)));
    assert_eq!((e.line, e.key.as_str()), (8, "listeners[1].name"));
    assert!(e.message.contains("already used by listeners[0]"));

    let e = fail(&format!("{base}{}{}", l("", 1), l("", 1)));
    assert_eq!(e.key, "listeners[1].bind");
    assert!(e.message.contains("already bound by listeners[0]"));
    let e = fail(&format!("{base}{}", l("bad name", 1)));
    assert_eq!(e.key, "listeners[0].name");
    let e = fail(&format!("{base}listeners = []\n"));
    assert_eq!(e.key, "listeners");
}

#[test]
fn upstream_errors() {
    let up = "[[upstreams]]\nname = \"mas\"\nbackends = [\"http://127.0.0.1:8080\"]\n";
    let e = fail(&short_with(&format!("{up}{up}")));
    assert_eq!((e.line, e.key.as_str()), (11, "upstreams[1].name"));
    assert!(e.message.contains("defined twice"));
    let e = fail(&short_with(
        "[[upstreams]]\nname = \"mas\"\nbackends = []\n",
    ));
    assert_eq!(e.key, "upstreams[0].backends");
    let e = fail(&short_with("[[upstreams]]\nbackends = [\"http://a\"]\n"));
    assert_eq!((e.line, e.key.as_str()), (7, "upstreams[0].name"));
}

#[test]
fn well_known_overrides() {
    // Raw JSON (the explicit form), disabling, and support as raw JSON.
    let c = parse(&short_with(concat!(
        "[well_known]\n",
        "server = '{\"m.server\": \"fed.example.com:8448\"}'\n",
        "client = false\n",
        "support = '{\"support_page\": \"https://example.com/help\"}'\n",
    )));
    assert_eq!(
        body(&c.well_known.server),
        r#"{"m.server":"fed.example.com:8448"}"#
    );
    assert!(c.well_known.client.is_none());
    assert_eq!(
        body(&c.well_known.support),
        r#"{"support_page":"https://example.com/help"}"#
    );

    // Table form of the server body.
    let c = parse(&short_with(
        "[well_known.server]\n\"m.server\" = \"fed.example.com:443\"\n",
    ));
    assert_eq!(
        body(&c.well_known.server),
        r#"{"m.server":"fed.example.com:443"}"#
    );

    // Without public_url nothing is derived.
    let c = parse(
        "server_name = \"e.org\"\nhomeserver = \"http://127.0.0.1:8008\"\ndev_self_signed = true\n",
    );
    assert!(c.well_known.server.is_none() && c.well_known.client.is_none());

    let e = fail(&short_with("[well_known]\nserver = '{\"m.server\": '\n"));
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (8, 10, "well_known.server")
    );
    assert!(e.message.starts_with("invalid JSON"));
    let e = fail(&short_with("[well_known]\nclient = '[1]'\n"));
    assert_eq!(e.key, "well_known.client");
    let e = fail(&short_with("[well_known]\nclient = '{\"x\": 1}'\n"));
    assert!(e.message.contains("m.homeserver"), "{}", e.message);
    let e = fail(&short_with(
        "[well_known]\nserver = '{\"m.server\": \"a b\"}'\n",
    ));
    assert_eq!(e.key, "well_known.server");
    let e = fail(&short_with("[well_known.server]\nm_server = \"x\"\n"));
    assert_eq!(e.key, "well_known.server.m_server");
    let e = fail(&short_with("[well_known]\nsupport = '{}'\n"));
    assert!(e.message.contains("MSC1929"));
    let e = fail(&short_with(
        "[well_known.support]\ncontacts = [{ role = \"m.role.admin\" }]\n",
    ));
    assert_eq!(
        (e.line, e.key.as_str()),
        (8, "well_known.support.contacts[0]")
    );
    let e = fail(&short_with(
        "[well_known.support]\ncontacts = [{ role = \"m.role.admin\", matrix_id = \"admin\" }]\n",
    ));
    assert_eq!(e.key, "well_known.support.contacts[0].matrix_id");

    // identity_server and extras need a client body.
    let e = fail("server_name = \"e.org\"\nhomeserver = \"http://a\"\ndev_self_signed = true\nidentity_server = \"https://vector.im\"\n");
    assert_eq!((e.line, e.key.as_str()), (4, "identity_server"));
    let e = fail(&format!("identity_server = \"vector.im\"\n{SHORT}"));
    assert_eq!((e.line, e.key.as_str()), (1, "identity_server"));
    let e = fail(&short_with(
        "[well_known]\nclient = false\n[well_known.client_extra]\na = 1\n",
    ));
    assert_eq!(e.key, "well_known.client_extra");
    let e = fail(&short_with(
        "[well_known.client_extra]\nwhen = 1979-05-27\n",
    ));
    assert_eq!(e.key, "well_known.client_extra.when");
}

#[test]
fn host_names_are_lower_cased_without_port() {
    let e = fail(&short_with(
        "[virtual_hosts]\nnames = [\"matrix.example.com:443\"]\n",
    ));
    assert_eq!(e.key, "virtual_hosts.names[0]");
    assert!(e.message.contains("has a port"));
    let e = fail(&short_with(
        "[virtual_hosts]\nnames = [\"a.org\", \"A.org\"]\n",
    ));
    assert_eq!(e.key, "virtual_hosts.names[1]");
    let c = parse(&short_with(
        "[virtual_hosts]\nnames = [\"MATRIX.Example.COM\", \"[::1]\"]\n",
    ));
    assert_eq!(c.virtual_hosts.names, ["matrix.example.com", "[::1]"]);
    let e = fail(&short_with(
        "[[tls.sni]]\nnames = []\ncert = \"c\"\nkey = \"k\"\n",
    ));
    assert_eq!(e.key, "tls.sni[0].names");
}

/// `render_effective` output parses back to the same configuration, and is stable.
fn assert_round_trip(text: &str) {
    let first = parse(text);
    let rendered = render_effective(&first);
    let second = parse(&rendered);
    assert_eq!(
        format!("{first:#?}"),
        format!("{second:#?}"),
        "rendered:\n{rendered}"
    );
    assert_eq!(rendered, render_effective(&second));
}

#[test]
fn render_effective_round_trips() {
    assert_round_trip(SHORT);
    assert_round_trip(EMBEDDED_DEFAULT);
    assert_round_trip(FULL);
    // Certificates by ACME, derived and explicit.
    assert_round_trip("server_name = \"example.com\"\npublic_url = \"https://matrix.example.com\"\nhomeserver = \"http://127.0.0.1:8008\"\n");
    assert_round_trip("server_name = \"example.com\"\nhomeserver = \"http://127.0.0.1:8008\"\n[[listeners]]\nrole = \"client\"\nbind = \"127.0.0.1:80\"\n[[listeners]]\nrole = \"client\"\nbind = \"127.0.0.1:443\"\ntls = true\n[acme]\nemail = \"a@example.com\"\nca_root = \"/ca.pem\"\nstate_dir = \"/s\"\nchallenges = [\"http-01\"]\ndirectory = \"https://ca.test/dir\"\n");
    assert_round_trip(&short_with(concat!(
        "[well_known]\n",
        "server = false\n",
        "support = '{\"support_page\": \"https://example.com/help\"}'\n",
    )));
    assert_round_trip(&short_with(
        "[well_known]\nsupport = \"{\\\"support_page\\\": \\\"https://e.org/it's\\\"}\"\n",
    ));
}

#[test]
fn render_effective_is_the_explicit_form() {
    let rendered = render_effective(&parse(SHORT));
    for line in [
        "server_name = \"example.com\"",
        "name = \"client\"",
        "bind = [\"[::]:443\"]",
        "  { prefix = \"/_synapse/client\", pool = \"homeserver\" },",
        "bind = [\"[::]:8448\"]",
        "backends = [\"http://127.0.0.1:8008\"]",
        "server = '{\"m.server\":\"matrix.example.com:443\"}'",
        "client = '{\"m.homeserver\":{\"base_url\":\"https://matrix.example.com\"}}'",
        "cert = \"/etc/mxgate/fullchain.pem\"",
        "max_body = \"50MiB\"",
        "upstream_response = \"180s\"",
        "idle_timeout = \"60s\"",
        "request_id_header = \"x-request-id\"",
        "pool = \"homeserver\"",
        "access_log = \"combined\"",
    ] {
        assert!(
            rendered.lines().any(|l| l == line),
            "missing {line:?} in:\n{rendered}"
        );
    }
    assert!(!rendered.contains("public_url"));
    assert!(!rendered.contains("dev_self_signed"));
    assert!(render_effective(&parse(EMBEDDED_DEFAULT)).contains("\ndev_self_signed = true\n"));
}

#[test]
fn other_toml_spellings_are_equivalent() {
    let dotted = r#"server_name = "example.com"
homeserver = "http://127.0.0.1:8008"
dev_self_signed = true
limits.max_body = "1MiB"
listeners = [ { role = "federation", bind = ["127.0.0.1:8448"], tls = true } ]
upstreams = [ { name = "mas", backends = ["http://127.0.0.1:8080"] } ]
"#;
    let c = parse(dotted);
    assert_eq!(c.limits.max_body_bytes, 1 << 20);
    assert_eq!(c.listeners[0].name, "federation");
    assert_eq!(c.listeners[0].bind, vec![addr("127.0.0.1:8448")]);
    // `homeserver` is inserted first; [[upstreams]] follow in file order.
    let names: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["homeserver", "mas"]);

    let e = fail(&dotted.replace("limits.max_body", "limits.max_bdy"));
    assert_eq!((e.line, e.column, e.key.as_str()), (4, 8, "limits.max_bdy"));
    let e = fail(&dotted.replace("tls = true", "tls = \"yes\""));
    assert_eq!((e.line, e.key.as_str()), (5, "listeners[0].tls"));
    assert_eq!(e.message, "expected `true` or `false`, found a string");
}

#[test]
fn truncated_files_give_errors_inside_the_text_and_never_panic() {
    let mut ends: Vec<usize> = FULL.char_indices().map(|(i, _)| i).collect();
    ends.push(FULL.len());
    let lines = FULL.lines().count() + 1;
    for end in ends {
        let text = &FULL[..end];
        if let Err(e) = parse_config(text, Path::new("t.toml")) {
            assert!(e.line >= 1 && e.line <= lines, "{e}");
            assert!(e.column >= 1, "{e}");
            assert!(!e.key.is_empty() && !e.message.is_empty(), "{e}");
        }
    }
}

#[test]
fn http2_is_on_for_tls_listeners_and_off_for_plain_ones_by_default() {
    // Derived from public_url: both TLS, both offer h2.
    let c = parse(SHORT);
    assert!(c
        .listeners
        .iter()
        .all(|l| l.scheme == Scheme::Https && l.http2));
    // The embedded default: one TLS listener (h2) and one plain one (HTTP/1.1 only).
    let c = parse(EMBEDDED_DEFAULT);
    let got: Vec<(Scheme, bool)> = c.listeners.iter().map(|l| (l.scheme, l.http2)).collect();
    assert_eq!(got, [(Scheme::Https, true), (Scheme::Http, false)]);
    // Explicit both ways: h2 off on TLS, prior knowledge on plain.
    let text = r#"server_name = "example.com"
homeserver = "http://127.0.0.1:8008"
dev_self_signed = true
[[listeners]]
role = "client"
bind = "127.0.0.1:8443"
tls = true
http2 = false
[[listeners]]
role = "client"
bind = "127.0.0.1:8080"
http2 = true
[[listeners]]
role = "client"
bind = "127.0.0.1:8081"
tls = false
http2 = false
[[listeners]]
role = "client"
bind = "127.0.0.1:8444"
tls = true
http2 = true
"#;
    let c = parse(text);
    let got: Vec<bool> = c.listeners.iter().map(|l| l.http2).collect();
    assert_eq!(got, [false, true, false, true]);
    assert_round_trip(text);
    let rendered = render_effective(&c);
    let lines: Vec<&str> = rendered
        .lines()
        .filter(|l| l.starts_with("http2 = "))
        .collect();
    assert_eq!(
        lines,
        [
            "http2 = false",
            "http2 = true",
            "http2 = false",
            "http2 = true"
        ]
    );

    let e = fail(&text.replace(
        "http2 = true\n[[listeners]]\nrole = \"client\"\nbind = \"127.0.0.1:8081\"",
        "http2 = \"yes\"\n[[listeners]]\nrole = \"client\"\nbind = \"127.0.0.1:8081\"",
    ));
    assert_eq!((e.line, e.key.as_str()), (12, "listeners[1].http2"));
    assert_eq!(e.message, "expected `true` or `false`, found a string");
    let e = fail(&text.replace(
        "http2 = false\n[[listeners]]\nrole = \"client\"\nbind = \"127.0.0.1:8080\"",
        "htp2 = false\n[[listeners]]\nrole = \"client\"\nbind = \"127.0.0.1:8080\"",
    ));
    assert_eq!((e.line, e.key.as_str()), (8, "listeners[0].htp2"));
    assert!(
        e.message.ends_with("(did you mean `http2`?)"),
        "{}",
        e.message
    );
}

#[test]
fn http2_table_defaults_to_the_engine_limits() {
    assert_eq!(parse(SHORT).http2, crate::http2::Limits::default());
    assert_eq!(
        parse(&short_with("[http2]\n")).http2,
        crate::http2::Limits::default()
    );
    let rendered = render_effective(&parse(SHORT));
    let section: Vec<&str> = rendered
        .split("\n[http2]\n")
        .nth(1)
        .expect("an [http2] table")
        .lines()
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(
        section,
        [
            "max_concurrent_streams = 100",
            "max_header_list_size = \"64KiB\"",
            "initial_stream_window = \"256KiB\"",
            "connection_window = \"1MiB\"",
            "max_frame_size = 16384",
            "idle_timeout = \"60s\"",
            "settings_timeout = \"10s\"",
            "send_stall_timeout = \"60s\"",
            "max_resets = 200",
        ]
    );
}

#[test]
fn http2_keys_accept_their_whole_range() {
    let h = |body: &str| parse(&short_with(&format!("[http2]\n{body}\n"))).http2;
    assert_eq!(h("max_concurrent_streams = 1").max_concurrent_streams, 1);
    assert_eq!(
        h("max_concurrent_streams = 1000").max_concurrent_streams,
        1000
    );
    let l = h("max_header_list_size = \"1KiB\"");
    assert_eq!((l.max_header_list_size, l.max_header_block), (1024, 2048));
    assert_eq!(l.max_continuations, 32);
    let l = h("max_header_list_size = \"1MiB\"");
    assert_eq!(
        (l.max_header_list_size, l.max_header_block),
        (1 << 20, 2 << 20)
    );
    // A 2 MiB block in 16 KiB frames is 128 frames: the CONTINUATION bound keeps up.
    assert_eq!(l.max_continuations, 512);
    assert_eq!(h("max_frame_size = 16384").max_frame_size, 16384);
    assert_eq!(h("max_frame_size = 16777215").max_frame_size, 16_777_215);
    assert_eq!(
        h("initial_stream_window = 65535").initial_stream_window,
        65535
    );
    assert_eq!(
        h("initial_stream_window = 2147483647").initial_stream_window,
        (1 << 31) - 1
    );
    assert_eq!(h("connection_window = \"64KiB\"").connection_window, 65536);
    assert_eq!(
        h("connection_window = 2147483647").connection_window,
        (1 << 31) - 1
    );
    assert_eq!(h("idle_timeout = 1").idle_timeout, Duration::from_secs(1));
    assert_eq!(
        h("settings_timeout = \"500ms\"").settings_timeout,
        Duration::from_millis(500)
    );
    assert_eq!(
        h("send_stall_timeout = \"2m\"").send_stall_timeout,
        Duration::from_secs(120)
    );
    assert_eq!(h("max_resets = 1").max_resets, 1);
    assert_eq!(h("max_resets = 4294967295").max_resets, u32::MAX);
    // Every accepted value renders and parses back to itself.
    assert_round_trip(&short_with(
        "[http2]\nmax_header_list_size = 1025\ninitial_stream_window = 70000\nconnection_window = 2147483647\nsettings_timeout = \"1500ms\"\n",
    ));
}

#[test]
fn http2_values_out_of_range_name_file_line_and_key() {
    // SHORT is 6 lines; `[http2]` is line 7, the key line 8.
    let cases: &[(&str, &str, &str)] = &[
        ("max_concurrent_streams = 0", "max_concurrent_streams", "expected a whole number from 1 to 1000, found 0"),
        ("max_concurrent_streams = 1001", "max_concurrent_streams", "expected a whole number from 1 to 1000, found 1001"),
        ("max_concurrent_streams = \"10\"", "max_concurrent_streams", "expected a whole number from 1 to 1000, found a string"),
        ("max_header_list_size = 1023", "max_header_list_size", "must be from 1KiB to 1MiB, found 1023"),
        ("max_header_list_size = \"2MiB\"", "max_header_list_size", "must be from 1KiB to 1MiB, found \"2MiB\""),
        ("max_header_list_size = 0", "max_header_list_size", "must be more than zero; expected a size like \"50MiB\" (bytes, or a number with B, KiB, MiB, GiB, K, M, G)"),
        ("max_frame_size = 16383", "max_frame_size", "expected a whole number from 16384 to 16777215, found 16383"),
        ("max_frame_size = 16777216", "max_frame_size", "expected a whole number from 16384 to 16777215, found 16777216"),
        ("initial_stream_window = \"1KiB\"", "initial_stream_window", "must be from 65535 bytes to 2147483647 bytes, found \"1KiB\""),
        ("initial_stream_window = \"2GiB\"", "initial_stream_window", "must be from 65535 bytes to 2147483647 bytes, found \"2GiB\""),
        ("connection_window = 65534", "connection_window", "must be from 65535 bytes to 2147483647 bytes, found 65534"),
        ("connection_window = \"5GiB\"", "connection_window", "must be from 65535 bytes to 2147483647 bytes, found \"5GiB\""),
        ("idle_timeout = 0", "idle_timeout", "must be more than zero; expected a duration like \"30s\" (seconds, or a number with ms, s, m, h)"),
        ("settings_timeout = \"0s\"", "settings_timeout", "must be more than zero; expected a duration like \"30s\" (seconds, or a number with ms, s, m, h)"),
        ("send_stall_timeout = \"soon\"", "send_stall_timeout", "expected a duration like \"30s\" (seconds, or a number with ms, s, m, h), found \"soon\""),
        ("max_resets = 0", "max_resets", "expected a whole number of at least 1, found 0"),
        ("max_resets = 4294967296", "max_resets", "expected a whole number of at least 1, found 4294967296"),
    ];
    for (line, key, message) in cases {
        let e = fail(&short_with(&format!("[http2]\n{line}\n")));
        assert_eq!(e.file, "mxgate.toml");
        assert_eq!(e.line, 8, "{line}");
        assert_eq!(e.key, format!("http2.{key}"), "{line}");
        assert_eq!(e.message, *message, "{line}");
        assert!(
            e.to_string()
                .starts_with(&format!("mxgate.toml:8:{}:", e.column)),
            "{e}"
        );
    }
    let e = fail(&short_with("[http2]\nmax_concurent_streams = 10\n"));
    assert_eq!((e.line, e.key.as_str()), (8, "http2.max_concurent_streams"));
    assert!(
        e.message
            .ends_with("(did you mean `max_concurrent_streams`?)"),
        "{}",
        e.message
    );
    let e = fail(&short_with("http2 = true\n"));
    // Appended after `[tls]`: a key of that table, not the listener key.
    assert_eq!(e.key, "tls.http2");
}
