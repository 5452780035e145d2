//! The TOML configuration file: parsing, deriving the full setup from the short form,
//! validation with errors that name file, line, column and key, and rendering the
//! effective configuration back (`mxgate check`).
//!
//! The short form is three lines (with `[tls] cert` and `key` for certificate files;
//! without them the runtime gets certificates by ACME, see [`super::AcmeSettings`]):
//!
//! ```toml
//! server_name = "example.com"
//! public_url  = "https://matrix.example.com"
//! homeserver  = "http://127.0.0.1:8008"
//! ```
//!
//! From it come a `homeserver` pool, a client listener on `[::]:443` (`/_matrix`,
//! `/_synapse/client`), a federation listener on `[::]:8448` (`/_matrix`), and the
//! `.well-known/matrix/{server,client}` bodies. Explicit tables (`[[listeners]]`,
//! `[[upstreams]]`, `[well_known]`, `[limits]`, …) override what is derived;
//! [`render_effective`] prints the result in that explicit form.
//!
//! The document is walked by hand (over `toml_edit`'s spans) rather than with serde so
//! that every error carries the dotted key path and a precise location.

mod render;
#[cfg(test)]
mod tests;
mod values;
mod walk;
mod well_known;

use core::net::{Ipv6Addr, SocketAddr};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;

use self::values::{
    check_host_name, parse_authority, parse_duration, parse_size, parse_url, render_size,
};
use self::walk::{Fields, Node, Scalar, Source};
use crate::http2::Limits as Http2Limits;
use crate::workers::health::HealthConfig;
use crate::workers::router::Router;
use crate::workers::table::{RoleSet, WorkerRole};
use std::sync::Arc;

use super::{
    AccessLogFormat, AcmeChallenge, AcmeSettings, AdminPolicy, Backend, Cidr, Config, Forwarding,
    Limits, Listener, PoolId, Role, Route, RouteAction, RuntimeSettings, Scheme, SniCertificate,
    Timeouts, TlsFiles, TlsSettings, UpstreamPool, VirtualHosts, WorkerRouting,
    LETS_ENCRYPT_DIRECTORY,
};

/// The configuration `mxgate` runs with when given none: a development setup.
pub const EMBEDDED_DEFAULT: &str = r#"# mxgate's embedded development default.
server_name = "localhost"
public_url = "https://localhost:8443"
homeserver = "http://127.0.0.1:8008"
# No [tls]: the runtime generates a self-signed development certificate.
dev_self_signed = true

[[listeners]]
role = "client"
bind = ["127.0.0.1:8443"]
tls = true

[[listeners]]
role = "client"
bind = ["127.0.0.1:8080"]
tls = false
"#;

/// A configuration error, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path (`listeners[1].bind`), or `-` when the file itself is malformed.
    pub key: String,
    pub message: String,
}

/// Parses and validates a configuration file's text; `origin` names the file in errors.
pub fn parse_config(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let src = Source {
        text,
        file: origin.display().to_string(),
    };
    let doc = toml_edit::ImDocument::parse(text)
        .map_err(|e| src.error(&e.span(), "-", syntax_message(e.message())))?;
    let root = Node::root(doc.as_item());
    let top = root.table(&src, TOP_KEYS)?;
    Parser { src: &src, top }.config()
}

/// Renders the effective, fully derived configuration as TOML that parses back to the same.
pub fn render_effective(config: &Config) -> String {
    render::render(config)
}

fn syntax_message(message: &str) -> String {
    let message = message.trim();
    if message.is_empty() {
        "invalid TOML".into()
    } else {
        format!("invalid TOML: {}", message.replace('\n', "; "))
    }
}

const TOP_KEYS: &[&str] = &[
    "server_name",
    "public_url",
    "homeserver",
    "identity_server",
    "dev_self_signed",
    "listeners",
    "upstreams",
    "virtual_hosts",
    "well_known",
    "tls",
    "acme",
    "limits",
    "timeouts",
    "forwarding",
    "admin",
    "runtime",
    "workers",
    "http2",
];
const LISTENER_KEYS: &[&str] = &[
    "role",
    "bind",
    "tls",
    "http2",
    "name",
    "routes",
    "proxy_protocol",
];
const WORKER_KEYS: &[&str] = &[
    "backends",
    "policy",
    "response_timeout",
    "max_idle_per_backend",
    "idle_timeout",
    "health_interval",
    "health_rise",
    "health_fall",
    "eject_after",
    "eject_for",
];
const ROUTE_KEYS: &[&str] = &["prefix", "pool", "deny"];
const UPSTREAM_KEYS: &[&str] = &["name", "backends", "max_idle_per_backend", "idle_timeout"];
const VHOST_KEYS: &[&str] = &["names", "fallback"];
const TLS_KEYS: &[&str] = &["cert", "key", "sni"];
const SNI_KEYS: &[&str] = &["names", "cert", "key"];
const ACME_KEYS: &[&str] = &[
    "names",
    "email",
    "directory",
    "ca_root",
    "state_dir",
    "challenges",
];
/// Where ACME state lives unless `[acme] state_dir` says otherwise.
pub const DEFAULT_ACME_STATE_DIR: &str = "/var/lib/mxgate";
const LIMIT_KEYS: &[&str] = &[
    "max_body",
    "max_request_line",
    "max_head",
    "max_headers",
    "max_response_head",
    "max_pipelined",
    "max_linger",
];
const TIMEOUT_KEYS: &[&str] = &[
    "client_header",
    "client_idle",
    "client_body",
    "upstream_connect",
    "upstream_response",
    "tls_handshake",
    "drain",
    "send",
    "linger",
    "linger_read",
];
const FORWARDING_KEYS: &[&str] = &["trusted_proxies", "request_id_header"];
const ADMIN_KEYS: &[&str] = &["allow", "pool"];
const RUNTIME_KEYS: &[&str] = &["threads", "max_connections", "metrics", "access_log"];
const HTTP2_KEYS: &[&str] = &[
    "max_concurrent_streams",
    "max_header_list_size",
    "max_frame_size",
    "initial_stream_window",
    "connection_window",
    "idle_timeout",
    "settings_timeout",
    "send_stall_timeout",
    "max_resets",
];

/// The name of the pool the short form's `homeserver` defines, and default routes use.
pub const HOMESERVER_POOL: &str = "homeserver";

const SIZE: &str = "a size like \"50MiB\" (bytes, or a number with B, KiB, MiB, GiB, K, M, G)";
const DURATION: &str = "a duration like \"30s\" (seconds, or a number with ms, s, m, h)";
const SOCKET: &str = "a socket address like \"127.0.0.1:8443\" or \"[::]:443\"";
const BACKEND: &str = "an http:// URL like \"http://127.0.0.1:8008\"";
const CIDR: &str = "an address or range like \"10.0.0.0/8\" or \"::1\"";
const NAME: &str = "a name of letters, digits, `-`, `_` and `.`";

/// Headers the proxy itself manages; a request id header must not be one of them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
];

/// The pools, in id order.
struct Pools {
    pools: Vec<UpstreamPool>,
}

impl Pools {
    fn id(&self, name: &str) -> Option<PoolId> {
        self.pools.iter().position(|p| p.name == name)
    }

    /// A pool reference in the file.
    fn reference(&self, src: &Source<'_>, node: &Node<'_>) -> Result<PoolId, ConfigError> {
        let name = node.string(src, "a pool name")?;
        self.id(name).ok_or_else(|| {
            let known: Vec<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
            node.error(
                src,
                format!(
                    "unknown pool `{name}`; defined pools: {} (add an [[upstreams]] entry named `{name}`)",
                    known.join(", ")
                ),
            )
        })
    }
}

/// A listener before its default name is chosen.
struct ListenerDraft<'a> {
    name: Option<String>,
    role: Role,
    scheme: Scheme,
    bind: Vec<SocketAddr>,
    routes: Vec<Route>,
    /// Where `tls = true` is written (for "no certificate" errors), if explicit.
    tls_node: Option<Node<'a>>,
    http2: bool,
    proxy_protocol: bool,
}

struct Parser<'s, 'a> {
    src: &'s Source<'a>,
    top: Fields<'a>,
}

impl<'a> Parser<'_, 'a> {
    fn config(&self) -> Result<Config, ConfigError> {
        let src = self.src;
        let server_name = self.server_name()?;
        let dev_self_signed = match self.top.get("dev_self_signed") {
            Some(node) => node.boolean(src)?,
            None => false,
        };
        let mut pools = self.pools()?;
        let homeserver = pools.id(HOMESERVER_POOL).ok_or_else(|| {
            self.top.missing(
                src,
                "homeserver",
                "missing; expected Synapse's listener URL like \"http://127.0.0.1:8008\" \
                 (or an [[upstreams]] entry named \"homeserver\")",
            )
        })?;
        let workers = self.workers(&mut pools, homeserver)?;
        let drafts = self.listeners(&pools, homeserver)?;
        let tls = self.tls()?;
        let acme = self.acme(&drafts, &tls, dev_self_signed, &server_name)?;
        if acme.is_none() {
            check_certificate(src, &self.top, &drafts, &tls, dev_self_signed)?;
        }
        let listeners = name_listeners(drafts);
        let virtual_hosts = self.virtual_hosts(&pools)?;
        let well_known = well_known::build(src, &self.top)?;
        let limits = self.limits()?;
        let timeouts = self.timeouts()?;
        let forwarding = self.forwarding()?;
        let admin = self.admin(&pools, homeserver)?;
        let runtime = self.runtime(&listeners)?;
        let http2 = self.http2()?;
        Ok(Config {
            server_name,
            listeners,
            pools: pools.pools,
            virtual_hosts,
            well_known,
            limits,
            timeouts,
            forwarding,
            admin,
            tls,
            acme,
            runtime,
            workers,
            http2,
        })
    }

    /// Automatic certificates: in effect when a TLS listener has no configured default
    /// certificate, the configuration is not the development one, and there is a DNS name
    /// to certify; `[acme]` overrides the defaults.
    fn acme(
        &self,
        drafts: &[ListenerDraft<'_>],
        tls: &TlsSettings,
        dev_self_signed: bool,
        server_name: &str,
    ) -> Result<Option<AcmeSettings>, ConfigError> {
        let src = self.src;
        let node = self.top.get("acme");
        let has_tls = drafts.iter().any(|d| d.scheme == Scheme::Https);
        if tls.default.is_some() || dev_self_signed || !has_tls {
            return match node {
                None => Ok(None),
                Some(node) => Err(node.error(
                    src,
                    if !has_tls {
                        "no listener terminates TLS: there is nothing to get a certificate for"
                    } else if dev_self_signed {
                        "dev_self_signed = true asks for a development certificate; remove it to get certificates by ACME"
                    } else {
                        "[tls] names a certificate and key; remove them to get certificates by ACME"
                    },
                )),
            };
        }
        let names_node = node
            .map(|n| n.table(src, ACME_KEYS))
            .transpose()?
            .and_then(|f| f.get("names").cloned());
        let names = match &names_node {
            Some(n) => {
                let names = host_names(src, n, false)?;
                if let Some(ip) = names
                    .iter()
                    .find(|h| h.parse::<core::net::IpAddr>().is_ok() || h.starts_with('['))
                {
                    return Err(n.error(
                        src,
                        format!("`{ip}` is an address; ACME certifies DNS names"),
                    ));
                }
                if names.is_empty() {
                    return Err(n.error(src, "expected at least one DNS name"));
                }
                names
            }
            None => derived_acme_names(&self.top, server_name),
        };
        if names.is_empty() {
            return match node {
                None => Ok(None),
                Some(node) => Err(node.error(
                    src,
                    "no DNS name to certify: public_url and server_name are addresses (list them in `names`)",
                )),
            };
        }
        // Redirects go to the first TLS listener's port (client listeners first).
        let https_port = drafts
            .iter()
            .filter(|d| d.scheme == Scheme::Https)
            .min_by_key(|d| d.role != Role::Client)
            .and_then(|d| d.bind.first())
            .map_or(443, |a| a.port());
        let mut acme = AcmeSettings {
            names,
            email: None,
            directory: LETS_ENCRYPT_DIRECTORY.to_string(),
            ca_root: None,
            state_dir: PathBuf::from(DEFAULT_ACME_STATE_DIR),
            challenges: vec![AcmeChallenge::TlsAlpn01, AcmeChallenge::Http01],
            https_port,
            http01: Arc::default(),
        };
        let plain = drafts.iter().any(|d| d.scheme == Scheme::Http);
        let Some(node) = node else {
            if !plain {
                acme.challenges.retain(|c| *c != AcmeChallenge::Http01);
            }
            return Ok(Some(acme));
        };
        let f = node.table(src, ACME_KEYS)?;
        if let Some(n) = f.get("email") {
            let what = "an email address like \"admin@example.com\"";
            let email = n.string(src, what)?;
            let ok = email
                .split_once('@')
                .is_some_and(|(user, host)| !user.is_empty() && check_host_name(host).is_ok())
                && !email.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok || email.starts_with("mailto:") {
                return Err(n.error(src, format!("`{email}` is not {what}")));
            }
            acme.email = Some(email.to_string());
        }
        if let Some(n) = f.get("directory") {
            let what = "an ACME directory URL like \"https://acme-staging-v02.api.letsencrypt.org/directory\"";
            let s = n.string(src, what)?;
            let url = parse_url(s).map_err(|m| n.error(src, format!("{m}; expected {what}")))?;
            if !url.https {
                return Err(n.error(
                    src,
                    format!("ACME servers are reached over HTTPS; expected {what}"),
                ));
            }
            acme.directory = s.to_string();
        }
        if let Some(n) = f.get("ca_root") {
            acme.ca_root = Some(path(src, n)?);
        }
        if let Some(n) = f.get("state_dir") {
            acme.state_dir = path(src, n)?;
        }
        if let Some(n) = f.get("challenges") {
            let what = "\"tls-alpn-01\" or \"http-01\"";
            let mut challenges = Vec::new();
            for entry in n.array(src, &format!("a list of {what}"))? {
                let kind = match entry.string(src, what)? {
                    "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
                    "http-01" => {
                        if !plain {
                            return Err(entry.error(
                                src,
                                "http-01 is answered on a plain-HTTP listener (port 80), and none is configured",
                            ));
                        }
                        AcmeChallenge::Http01
                    }
                    other => {
                        return Err(entry.error(
                            src,
                            format!("unknown challenge `{other}`, expected {what} (dns-01 is not supported)"),
                        ))
                    }
                };
                if challenges.contains(&kind) {
                    return Err(entry.error(src, format!("`{}` is listed twice", kind.as_str())));
                }
                challenges.push(kind);
            }
            if challenges.is_empty() {
                return Err(n.error(src, format!("expected at least one of {what}")));
            }
            acme.challenges = challenges;
        } else if !plain {
            acme.challenges.retain(|c| *c != AcmeChallenge::Http01);
        }
        Ok(Some(acme))
    }

    /// `[workers.<role>]`: one pool per Synapse worker role, and the compiled route table.
    fn workers(
        &self,
        pools: &mut Pools,
        homeserver: PoolId,
    ) -> Result<Option<WorkerRouting>, ConfigError> {
        let src = self.src;
        let Some(node) = self.top.get("workers") else {
            return Ok(None);
        };
        let entries = node
            .entries()
            .ok_or_else(|| node.expected(src, "a table of [workers.<role>] tables"))?;
        let mut roles = RoleSet::empty();
        for (role_name, _, worker) in entries {
            let role: WorkerRole = role_name.parse().map_err(|_| {
                let known: Vec<&str> = WorkerRole::WORKERS.iter().map(|r| r.as_str()).collect();
                worker.error(
                    src,
                    format!(
                        "unknown worker role `{role_name}`, expected one of {}",
                        known.join(", ")
                    ),
                )
            })?;
            if pools.id(role.as_str()).is_some() {
                return Err(worker.error(
                    src,
                    format!("a pool named `{role_name}` already exists in [[upstreams]]"),
                ));
            }
            let fields = worker.table(src, WORKER_KEYS)?;
            let backends_node = fields.require(src, "backends", BACKEND)?;
            let mut backends = Vec::new();
            for b in backends_node.one_or_many() {
                backends.push(backend(src, &b)?);
            }
            if backends.is_empty() {
                return Err(backends_node.error(src, "a worker pool needs at least one backend"));
            }
            let policy = match fields.get("policy") {
                Some(n) => n.string(src, "a balancing policy")?.parse().map_err(
                    |e: crate::workers::balance::PolicyError| n.error(src, e.to_string()),
                )?,
                None => role.default_policy(),
            };
            let mut health = HealthConfig::default();
            if let Some(n) = fields.get("health_interval") {
                health.probe_interval = match n.as_str() {
                    Some("off") => None,
                    _ => Some(duration(src, n, true)?),
                };
            }
            if let Some(n) = fields.get("health_rise") {
                health.rise = count(src, n, 1)? as u32;
            }
            if let Some(n) = fields.get("health_fall") {
                health.fall = count(src, n, 1)? as u32;
            }
            if let Some(n) = fields.get("eject_after") {
                health.eject_after = count(src, n, 0)? as u32;
            }
            if let Some(n) = fields.get("eject_for") {
                health.eject_for = duration(src, n, true)?;
            }
            let mut pool = UpstreamPool::with_policy(role.as_str(), backends, policy, health);
            pool.role = Some(role);
            if let Some(n) = fields.get("response_timeout") {
                pool.response_timeout = Some(duration(src, n, true)?);
            }
            if let Some(n) = fields.get("max_idle_per_backend") {
                pool.max_idle_per_backend = count(src, n, 0)?;
            }
            if let Some(n) = fields.get("idle_timeout") {
                pool.idle_timeout = duration(src, n, true)?;
            }
            roles.insert(role);
            pools.pools.push(pool);
        }
        Ok(Some(WorkerRouting {
            router: Arc::new(Router::new(roles)),
            main: homeserver,
        }))
    }

    fn server_name(&self) -> Result<String, ConfigError> {
        let what = "the Matrix server name, like \"example.com\"";
        let node = self.top.require(self.src, "server_name", what)?;
        let name = node.string(self.src, what)?;
        parse_authority(name).map_err(|m| node.error(self.src, m))?;
        Ok(name.to_string())
    }

    /// `[[upstreams]]` in file order; the short form's `homeserver` first unless overridden.
    fn pools(&self) -> Result<Pools, ConfigError> {
        let src = self.src;
        let mut pools: Vec<UpstreamPool> = Vec::new();
        if let Some(list) = self.top.get("upstreams") {
            for node in list.array(src, "an array of [[upstreams]] tables")? {
                let fields = node.table(src, UPSTREAM_KEYS)?;
                let name_node = fields.require(src, "name", "a pool name like \"homeserver\"")?;
                let name = name(src, name_node)?;
                if pools.iter().any(|p| p.name == name) {
                    return Err(name_node.error(src, format!("pool `{name}` is defined twice")));
                }
                let backends_node = fields.require(src, "backends", BACKEND)?;
                let mut backends = Vec::new();
                for b in backends_node.one_or_many() {
                    backends.push(backend(src, &b)?);
                }
                if backends.is_empty() {
                    return Err(backends_node.error(src, "a pool needs at least one backend"));
                }
                let max_idle_per_backend = match fields.get("max_idle_per_backend") {
                    Some(n) => count(src, n, 0)?,
                    None => 32,
                };
                let idle_timeout = match fields.get("idle_timeout") {
                    Some(n) => duration(src, n, true)?,
                    None => Duration::from_secs(60),
                };
                let mut pool = UpstreamPool::new(name, backends);
                pool.max_idle_per_backend = max_idle_per_backend;
                pool.idle_timeout = idle_timeout;
                pools.push(pool);
            }
        }
        if let Some(node) = self.top.get("homeserver") {
            let backend = backend(src, node)?;
            if !pools.iter().any(|p| p.name == HOMESERVER_POOL) {
                pools.insert(0, UpstreamPool::new(HOMESERVER_POOL, vec![backend]));
            }
        }
        Ok(Pools { pools })
    }

    fn listeners(
        &self,
        pools: &Pools,
        homeserver: PoolId,
    ) -> Result<Vec<ListenerDraft<'a>>, ConfigError> {
        let src = self.src;
        let Some(list) = self.top.get("listeners") else {
            let on = |port: u16| vec![SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)];
            return Ok(vec![
                ListenerDraft {
                    name: None,
                    role: Role::Client,
                    scheme: Scheme::Https,
                    bind: on(443),
                    routes: default_routes(Role::Client, homeserver),
                    tls_node: None,
                    http2: true,
                    proxy_protocol: false,
                },
                ListenerDraft {
                    name: None,
                    role: Role::Federation,
                    scheme: Scheme::Https,
                    bind: on(8448),
                    routes: default_routes(Role::Federation, homeserver),
                    tls_node: None,
                    http2: true,
                    proxy_protocol: false,
                },
            ]);
        };
        let nodes = list.array(src, "an array of [[listeners]] tables")?;
        if nodes.is_empty() {
            return Err(list.error(src, "at least one listener is needed"));
        }
        let mut drafts = Vec::new();
        let mut bound: HashMap<SocketAddr, String> = HashMap::new();
        for node in nodes {
            let fields = node.table(src, LISTENER_KEYS)?;
            let role_what = "\"client\" or \"federation\"";
            let role_node = fields.require(src, "role", role_what)?;
            let role = match role_node.string(src, role_what)? {
                "client" => Role::Client,
                "federation" => Role::Federation,
                other => {
                    return Err(role_node
                        .error(src, format!("unknown role `{other}`, expected {role_what}")))
                }
            };
            let name = match fields.get("name") {
                Some(n) => {
                    let name = name(src, n)?;
                    if let Some(other) = drafts
                        .iter()
                        .position(|d: &ListenerDraft<'_>| d.name.as_deref() == Some(&name))
                    {
                        return Err(n.error(
                            src,
                            format!("listener name `{name}` is already used by listeners[{other}]"),
                        ));
                    }
                    Some(name)
                }
                None => None,
            };
            let bind_node = fields.require(src, "bind", SOCKET)?;
            let mut bind = Vec::new();
            for b in bind_node.one_or_many() {
                let addr = socket_addr(src, &b)?;
                if let Some(previous) = bound.insert(addr, node.path.clone()) {
                    return Err(b.error(src, format!("{addr} is already bound by {previous}")));
                }
                bind.push(addr);
            }
            if bind.is_empty() {
                return Err(
                    bind_node.error(src, format!("expected at least one address: {SOCKET}"))
                );
            }
            let (scheme, tls_node) = match fields.get("tls") {
                Some(n) if n.boolean(src)? => (Scheme::Https, Some(n.clone())),
                _ => (Scheme::Http, None),
            };
            // TLS listeners offer h2 by ALPN unless told not to; a plain one accepts
            // HTTP/2 with prior knowledge only when asked (behind a TLS-terminating balancer).
            let http2 = match fields.get("http2") {
                Some(n) => n.boolean(src)?,
                None => scheme == Scheme::Https,
            };
            let routes = match fields.get("routes") {
                Some(n) => routes(src, n, pools)?,
                None => default_routes(role, homeserver),
            };
            let proxy_protocol = match fields.get("proxy_protocol") {
                Some(n) => n.boolean(src)?,
                None => false,
            };
            drafts.push(ListenerDraft {
                name,
                role,
                scheme,
                bind,
                routes,
                tls_node,
                http2,
                proxy_protocol,
            });
        }
        Ok(drafts)
    }

    fn tls(&self) -> Result<TlsSettings, ConfigError> {
        let src = self.src;
        let Some(node) = self.top.get("tls") else {
            return Ok(TlsSettings::default());
        };
        let fields = node.table(src, TLS_KEYS)?;
        let default = match (fields.get("cert"), fields.get("key")) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: path(src, cert)?,
                key: path(src, key)?,
            }),
            (Some(_), None) => {
                return Err(fields.missing(
                    src,
                    "key",
                    "missing; `cert` needs its private key file",
                ))
            }
            (None, Some(_)) => {
                return Err(fields.missing(
                    src,
                    "cert",
                    "missing; `key` needs its certificate chain file",
                ))
            }
        };
        let mut sni = Vec::new();
        if let Some(list) = fields.get("sni") {
            for entry in list.array(src, "an array of [[tls.sni]] tables")? {
                let f = entry.table(src, SNI_KEYS)?;
                let names_node = f.require(src, "names", "a list of host names")?;
                let names = host_names(src, names_node, true)?;
                let cert = path(src, f.require(src, "cert", "a certificate chain file")?)?;
                let key = path(src, f.require(src, "key", "a private key file")?)?;
                sni.push(SniCertificate {
                    names,
                    files: TlsFiles { cert, key },
                });
            }
        }
        Ok(TlsSettings { default, sni })
    }

    fn virtual_hosts(&self, pools: &Pools) -> Result<VirtualHosts, ConfigError> {
        let src = self.src;
        let Some(node) = self.top.get("virtual_hosts") else {
            return Ok(VirtualHosts::default());
        };
        let fields = node.table(src, VHOST_KEYS)?;
        let names = match fields.get("names") {
            Some(n) => host_names(src, n, false)?,
            None => Vec::new(),
        };
        let fallback = fields
            .get("fallback")
            .map(|n| pools.reference(src, n))
            .transpose()?;
        Ok(VirtualHosts { names, fallback })
    }

    fn limits(&self) -> Result<Limits, ConfigError> {
        let src = self.src;
        let mut limits = Limits::default();
        let Some(node) = self.top.get("limits") else {
            return Ok(limits);
        };
        let f = node.table(src, LIMIT_KEYS)?;
        if let Some(n) = f.get("max_body") {
            limits.max_body_bytes = size(src, n)?;
        }
        if let Some(n) = f.get("max_linger") {
            limits.max_linger_bytes = size(src, n)?;
        }
        // Heads are parsed into 32-bit offsets; no real head comes near this bound.
        const HEAD_BOUND: u64 = 16 << 20;
        let slots: [(&str, &mut usize, bool); 4] = [
            ("max_request_line", &mut limits.max_request_line_bytes, true),
            ("max_head", &mut limits.max_head_bytes, true),
            (
                "max_response_head",
                &mut limits.max_response_head_bytes,
                true,
            ),
            ("max_pipelined", &mut limits.max_pipelined_bytes, false),
        ];
        for (key, slot, head_part) in slots {
            if let Some(n) = f.get(key) {
                let bytes = size(src, n)?;
                if head_part && bytes > HEAD_BOUND {
                    return Err(n.error(src, "must be at most 16MiB"));
                }
                *slot = usize::try_from(bytes)
                    .map_err(|_| n.error(src, "too large for this machine"))?;
            }
        }
        if let Some(n) = f.get("max_headers") {
            limits.max_headers = count(src, n, 1)?;
        }
        Ok(limits)
    }

    fn timeouts(&self) -> Result<Timeouts, ConfigError> {
        let src = self.src;
        let mut t = Timeouts::default();
        let Some(node) = self.top.get("timeouts") else {
            return Ok(t);
        };
        let f = node.table(src, TIMEOUT_KEYS)?;
        let slots: [(&str, &mut Duration, bool); 10] = [
            ("client_header", &mut t.client_header, true),
            ("client_idle", &mut t.client_idle, true),
            ("client_body", &mut t.client_body, true),
            ("upstream_connect", &mut t.upstream_connect, true),
            ("upstream_response", &mut t.upstream_response, true),
            ("tls_handshake", &mut t.tls_handshake, true),
            // Zero: stop at once.
            ("drain", &mut t.drain, false),
            ("send", &mut t.send, true),
            // Zero: close at once after an early answer (the client may see a reset).
            ("linger", &mut t.linger, false),
            ("linger_read", &mut t.linger_read, true),
        ];
        for (key, slot, positive) in slots {
            if let Some(n) = f.get(key) {
                *slot = duration(src, n, positive)?;
            }
        }
        Ok(t)
    }

    fn forwarding(&self) -> Result<Forwarding, ConfigError> {
        let src = self.src;
        let mut forwarding = Forwarding::default();
        let Some(node) = self.top.get("forwarding") else {
            return Ok(forwarding);
        };
        let f = node.table(src, FORWARDING_KEYS)?;
        if let Some(n) = f.get("trusted_proxies") {
            forwarding.trusted_proxies = cidrs(src, n)?;
        }
        if let Some(n) = f.get("request_id_header") {
            let what = "an HTTP header name like \"X-Request-ID\"";
            let s = n.string(src, what)?;
            let header = HeaderName::from_bytes(s.as_bytes())
                .map_err(|_| n.error(src, format!("`{s}` is not {what}")))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(n.error(
                    src,
                    format!("`{header}` is managed by the proxy; choose another header like \"X-Request-ID\""),
                ));
            }
            forwarding.request_id_header = header;
        }
        Ok(forwarding)
    }

    fn admin(&self, pools: &Pools, homeserver: PoolId) -> Result<AdminPolicy, ConfigError> {
        let src = self.src;
        let mut admin = AdminPolicy {
            allow: Vec::new(),
            pool: Some(homeserver),
        };
        let Some(node) = self.top.get("admin") else {
            return Ok(admin);
        };
        let f = node.table(src, ADMIN_KEYS)?;
        if let Some(n) = f.get("allow") {
            admin.allow = cidrs(src, n)?;
        }
        if let Some(n) = f.get("pool") {
            admin.pool = Some(pools.reference(src, n)?);
        }
        Ok(admin)
    }

    fn runtime(&self, listeners: &[Listener]) -> Result<RuntimeSettings, ConfigError> {
        let src = self.src;
        let mut rt = RuntimeSettings::default();
        let Some(node) = self.top.get("runtime") else {
            return Ok(rt);
        };
        let f = node.table(src, RUNTIME_KEYS)?;
        if let Some(n) = f.get("threads") {
            rt.threads = Some(count(src, n, 1)?);
        }
        if let Some(n) = f.get("max_connections") {
            rt.max_connections = count(src, n, 1)?;
        }
        if let Some(n) = f.get("metrics") {
            let addr = socket_addr(src, n)?;
            if let Some(l) = listeners.iter().find(|l| l.bind.contains(&addr)) {
                return Err(n.error(
                    src,
                    format!("{addr} is already bound by listener `{}`", l.name),
                ));
            }
            rt.metrics_bind = Some(addr);
        }
        if let Some(n) = f.get("access_log") {
            let what = "\"combined\", \"json\" or \"off\"";
            rt.access_log = match n.string(src, what)? {
                "combined" => AccessLogFormat::Combined,
                "json" => AccessLogFormat::Json,
                "off" => AccessLogFormat::Off,
                other => {
                    return Err(n.error(src, format!("unknown format `{other}`, expected {what}")))
                }
            };
        }
        Ok(rt)
    }

    /// `[http2]`: the HTTP/2 engine's bounds. Each key is range-checked here, so the engine
    /// gets values it uses as written.
    fn http2(&self) -> Result<Http2Limits, ConfigError> {
        let src = self.src;
        let mut l = Http2Limits::default();
        let Some(node) = self.top.get("http2") else {
            return Ok(l);
        };
        let f = node.table(src, HTTP2_KEYS)?;
        // RFC 9113 §6.5.2 / §6.9.1: frame sizes and windows are 24- and 31-bit.
        const MAX_WINDOW: u32 = (1 << 31) - 1;
        if let Some(n) = f.get("max_concurrent_streams") {
            l.max_concurrent_streams = whole(src, n, 1, 1000)?;
        }
        if let Some(n) = f.get("max_header_list_size") {
            l.max_header_list_size = size_in(src, n, 1 << 10, 1 << 20)?;
            // The encoded block may be a little longer than the list (Huffman); see Limits.
            l.max_header_block = 2 * l.max_header_list_size;
            // A client splits the block into frames of at least 16 KiB; keep the default's
            // slack of four times the frames the largest block needs.
            let frames = l.max_header_block.div_ceil(MIN_FRAME_SIZE);
            l.max_continuations = l.max_continuations.max(4 * frames);
        }
        if let Some(n) = f.get("max_frame_size") {
            l.max_frame_size = whole(src, n, MIN_FRAME_SIZE, (1 << 24) - 1)?;
        }
        // The engine never shrinks a window below the protocol's 65535: a client may fill
        // that much before it has our SETTINGS (RFC 9113 §6.9.2), so less is refused here.
        if let Some(n) = f.get("initial_stream_window") {
            l.initial_stream_window = size_in(src, n, 65_535, MAX_WINDOW)?;
        }
        if let Some(n) = f.get("connection_window") {
            l.connection_window = size_in(src, n, 65_535, MAX_WINDOW)?;
        }
        let durations = [
            ("idle_timeout", &mut l.idle_timeout),
            ("settings_timeout", &mut l.settings_timeout),
            ("send_stall_timeout", &mut l.send_stall_timeout),
        ];
        for (key, slot) in durations {
            if let Some(n) = f.get(key) {
                *slot = duration(src, n, true)?;
            }
        }
        if let Some(n) = f.get("max_resets") {
            l.max_resets = whole(src, n, 1, u32::MAX)?;
        }
        Ok(l)
    }
}

/// HTTP/2's smallest SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.5.2), which every peer may use.
const MIN_FRAME_SIZE: u32 = 16_384;

/// The routes a listener of `role` gets when none are written.
fn default_routes(role: Role, homeserver: PoolId) -> Vec<Route> {
    let prefixes: &[&str] = match role {
        Role::Client => &["/_matrix", "/_synapse/client"],
        Role::Federation => &["/_matrix"],
    };
    prefixes
        .iter()
        .map(|p| Route {
            prefix: (*p).to_string(),
            action: RouteAction::Upstream(homeserver),
        })
        .collect()
}

/// The names a certificate is asked for by default: the host of `public_url`, then
/// `server_name`'s host, lower-cased, without address literals.
fn derived_acme_names(top: &Fields<'_>, server_name: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    // public_url is validated (with its error) by the well-known builder.
    if let Some(url) = top
        .get("public_url")
        .and_then(|n| n.as_str())
        .and_then(|s| parse_url(s).ok())
    {
        names.push(url.authority.host.to_ascii_lowercase());
    }
    if let Ok(authority) = parse_authority(server_name) {
        let host = authority.host.to_ascii_lowercase();
        if !names.contains(&host) {
            names.push(host);
        }
    }
    names.retain(|n| n.parse::<core::net::IpAddr>().is_err());
    names
}

/// Names unnamed listeners `<role>`, then `<role>-2`, `<role>-3`… avoiding explicit names.
fn name_listeners(drafts: Vec<ListenerDraft<'_>>) -> Vec<Listener> {
    let mut taken: Vec<String> = drafts.iter().filter_map(|d| d.name.clone()).collect();
    drafts
        .into_iter()
        .map(|d| {
            let name = d.name.unwrap_or_else(|| {
                let role = role_name(d.role);
                let name = std::iter::once(role.to_string())
                    .chain((2..).map(|n| format!("{role}-{n}")))
                    .find(|candidate| !taken.contains(candidate))
                    .unwrap_or_else(|| role.to_string());
                taken.push(name.clone());
                name
            });
            Listener {
                name,
                role: d.role,
                scheme: d.scheme,
                bind: d.bind,
                routes: d.routes,
                http2: d.http2,
                proxy_protocol: d.proxy_protocol,
            }
        })
        .collect()
}

pub(super) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Client => "client",
        Role::Federation => "federation",
    }
}

/// A TLS listener needs a default certificate, unless a development one is asked for.
fn check_certificate(
    src: &Source<'_>,
    top: &Fields<'_>,
    drafts: &[ListenerDraft<'_>],
    tls: &TlsSettings,
    dev_self_signed: bool,
) -> Result<(), ConfigError> {
    if tls.default.is_some() || dev_self_signed {
        return Ok(());
    }
    let Some(first) = drafts.iter().find(|d| d.scheme == Scheme::Https) else {
        return Ok(());
    };
    let at = first
        .bind
        .first()
        .map_or_else(String::new, |a| format!(" on {a}"));
    let message = format!(
        "the {} listener{at} terminates TLS and needs a certificate: add [tls] with cert and key, \
         or give public_url or server_name a DNS name for automatic certificates by ACME \
         (or set dev_self_signed = true for a generated development certificate)",
        role_name(first.role)
    );
    Err(match (&first.tls_node, top.get("tls")) {
        (_, Some(tls_table)) => tls_table.error(src, format!("missing cert and key; {message}")),
        (Some(node), None) => node.error(src, message),
        (None, None) => src.error(&Some(0..0), "tls", message),
    })
}

fn routes(src: &Source<'_>, node: &Node<'_>, pools: &Pools) -> Result<Vec<Route>, ConfigError> {
    let mut routes: Vec<Route> = Vec::new();
    for entry in node.array(
        src,
        "an array of routes like { prefix = \"/_matrix\", pool = \"homeserver\" }",
    )? {
        let f = entry.table(src, ROUTE_KEYS)?;
        let prefix_node = f.require(src, "prefix", "a path prefix like \"/_matrix\"")?;
        let prefix = prefix_node.string(src, "a path prefix like \"/_matrix\"")?;
        check_prefix(prefix).map_err(|m| prefix_node.error(src, m))?;
        if routes.iter().any(|r| r.prefix == prefix) {
            return Err(prefix_node.error(src, format!("prefix `{prefix}` is routed twice")));
        }
        let action = match (f.get("pool"), f.get("deny")) {
            (Some(pool), None) => RouteAction::Upstream(pools.reference(src, pool)?),
            (None, Some(deny)) => {
                if !deny.boolean(src)? {
                    return Err(
                        deny.error(src, "`deny = false` means nothing; give a pool instead")
                    );
                }
                RouteAction::Deny
            }
            (Some(_), Some(deny)) => {
                return Err(deny.error(src, "a route either goes to a pool or is denied, not both"))
            }
            (None, None) => {
                return Err(f.missing(
                    src,
                    "pool",
                    "missing; expected a pool name (or deny = true)",
                ))
            }
        };
        routes.push(Route {
            prefix: prefix.to_string(),
            action,
        });
    }
    Ok(routes)
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("prefix `{prefix}` must start with `/`"));
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        return Err(format!(
            "prefix `{prefix}` must not end with `/` (prefixes match whole segments: write `{}`)",
            prefix.trim_end_matches('/')
        ));
    }
    if let Some(c) = prefix.chars().find(|c| matches!(c, '?' | '#' | '%')) {
        return Err(format!(
            "prefix `{prefix}` must not contain `{c}` (routes match the raw path, before any decoding)"
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| c.is_ascii_control() || c.is_whitespace() || !c.is_ascii())
    {
        return Err(format!(
            "prefix `{prefix}` contains {c:?}, which cannot appear in a request path"
        ));
    }
    Ok(())
}

/// A listener or pool name.
fn name(src: &Source<'_>, node: &Node<'_>) -> Result<String, ConfigError> {
    let s = node.string(src, NAME)?;
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(node.error(src, format!("`{s}` is not {NAME}")))
    }
}

fn backend(src: &Source<'_>, node: &Node<'_>) -> Result<Backend, ConfigError> {
    let s = node.string(src, BACKEND)?;
    let url = parse_url(s).map_err(|m| node.error(src, format!("{m}; expected {BACKEND}")))?;
    if url.https {
        return Err(node.error(
            src,
            format!("mxgate speaks plain HTTP to Synapse's listener; expected {BACKEND}"),
        ));
    }
    if !url.path.is_empty() && url.path != "/" {
        return Err(node.error(
            src,
            "a backend URL has no path: the request path is forwarded unchanged",
        ));
    }
    let port = url.port_or_default();
    Ok(Backend {
        host: url.authority.host,
        port,
    })
}

fn socket_addr(src: &Source<'_>, node: &Node<'_>) -> Result<SocketAddr, ConfigError> {
    let s = node.string(src, SOCKET)?;
    s.parse()
        .map_err(|_| node.error(src, format!("`{s}` is not {SOCKET}")))
}

fn path(src: &Source<'_>, node: &Node<'_>) -> Result<PathBuf, ConfigError> {
    let s = node.string(src, "a file path")?;
    if s.is_empty() {
        return Err(node.error(src, "the path is empty"));
    }
    Ok(PathBuf::from(s))
}

fn cidrs(src: &Source<'_>, node: &Node<'_>) -> Result<Vec<Cidr>, ConfigError> {
    let mut out = Vec::new();
    for entry in node.array(src, &format!("a list of {CIDR}s"))? {
        let s = entry.string(src, CIDR)?;
        let cidr: Cidr = s
            .parse()
            .map_err(|e| entry.error(src, format!("{e}; expected {CIDR}")))?;
        out.push(cidr);
    }
    Ok(out)
}

/// Lower-cased host names without port; `wildcards` allows `*.example.com` (SNI).
fn host_names(
    src: &Source<'_>,
    node: &Node<'_>,
    wildcards: bool,
) -> Result<Vec<String>, ConfigError> {
    let what = "host names like \"matrix.example.com\" (no port)";
    let mut out: Vec<String> = Vec::new();
    for entry in node.array(src, &format!("a list of {what}"))? {
        let s = entry.string(src, what)?.to_ascii_lowercase();
        let check = |h: &str| -> Result<(), String> {
            if let Some(v6) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                return v6
                    .parse::<core::net::Ipv6Addr>()
                    .map(|_| ())
                    .map_err(|_| format!("`{v6}` is not an IPv6 address"));
            }
            if h.contains(':') {
                return Err(format!("`{h}` has a port; expected {what}"));
            }
            let bare = if wildcards {
                h.strip_prefix("*.").unwrap_or(h)
            } else {
                h
            };
            check_host_name(bare)
        };
        check(&s).map_err(|m| entry.error(src, m))?;
        if out.contains(&s) {
            return Err(entry.error(src, format!("`{s}` is listed twice")));
        }
        out.push(s);
    }
    if out.is_empty() && wildcards {
        return Err(node.error(src, format!("expected at least one of {what}")));
    }
    Ok(out)
}

fn size(src: &Source<'_>, node: &Node<'_>) -> Result<u64, ConfigError> {
    let bytes = match node.scalar() {
        Some(Scalar::Int(i)) => u64::try_from(i).ok(),
        Some(Scalar::Str(s)) => parse_size(s),
        _ => return Err(node.expected(src, SIZE)),
    };
    match bytes {
        Some(0) => Err(node.error(src, format!("must be more than zero; expected {SIZE}"))),
        Some(b) => Ok(b),
        None => Err(node.error(src, format!("expected {SIZE}, found {}", show(node)))),
    }
}

fn duration(src: &Source<'_>, node: &Node<'_>, positive: bool) -> Result<Duration, ConfigError> {
    let d = match node.scalar() {
        Some(Scalar::Int(i)) => u64::try_from(i).ok().map(Duration::from_secs),
        Some(Scalar::Str(s)) => parse_duration(s),
        _ => return Err(node.expected(src, DURATION)),
    };
    match d {
        Some(d) if positive && d.is_zero() => {
            Err(node.error(src, format!("must be more than zero; expected {DURATION}")))
        }
        Some(d) => Ok(d),
        None => Err(node.error(src, format!("expected {DURATION}, found {}", show(node)))),
    }
}

/// A non-negative integer at least `min`.
fn count(src: &Source<'_>, node: &Node<'_>, min: usize) -> Result<usize, ConfigError> {
    let what = if min == 0 {
        "a whole number".to_string()
    } else {
        format!("a whole number of at least {min}")
    };
    let i = node.as_int().ok_or_else(|| node.expected(src, &what))?;
    usize::try_from(i)
        .ok()
        .filter(|n| *n >= min)
        .ok_or_else(|| node.error(src, format!("expected {what}, found {i}")))
}

/// A whole number in `min..=max` (the upper bound is not mentioned when it is `u32::MAX`).
fn whole(src: &Source<'_>, node: &Node<'_>, min: u32, max: u32) -> Result<u32, ConfigError> {
    let what = if max == u32::MAX {
        format!("a whole number of at least {min}")
    } else {
        format!("a whole number from {min} to {max}")
    };
    let i = node.as_int().ok_or_else(|| node.expected(src, &what))?;
    u32::try_from(i)
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| node.error(src, format!("expected {what}, found {i}")))
}

/// A size (see [`size`]) in `min..=max` bytes.
fn size_in(src: &Source<'_>, node: &Node<'_>, min: u32, max: u32) -> Result<u32, ConfigError> {
    let bytes = size(src, node)?;
    u32::try_from(bytes)
        .ok()
        .filter(|b| (min..=max).contains(b))
        .ok_or_else(|| {
            node.error(
                src,
                format!(
                    "must be from {} to {}, found {}",
                    show_size(min),
                    show_size(max),
                    show(node)
                ),
            )
        })
}

/// A byte count as a reader would write it: `64KiB`, or `65535 bytes`.
fn show_size(bytes: u32) -> String {
    let rendered = render_size(u64::from(bytes));
    if rendered.starts_with('"') {
        rendered.trim_matches('"').to_string()
    } else {
        format!("{bytes} bytes")
    }
}

/// A scalar as it was written, for "found …".
fn show(node: &Node<'_>) -> String {
    match node.scalar() {
        Some(Scalar::Str(s)) => format!("{s:?}"),
        Some(Scalar::Int(i)) => i.to_string(),
        _ => node.type_name().to_string(),
    }
}
