//! The validated, immutable configuration the proxy engine runs on.
//!
//! Everything here is already derived and checked: the engine never re-validates.
//! It is built from a TOML file by [`super::file`] (or by hand, in tests) and shared by `Arc`.

use core::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderName;

use super::Cidr;
use crate::workers::balance::{Policy, PoolRuntime};
use crate::workers::health::{HealthConfig, HealthFlags};
use crate::workers::router::Router;
use crate::workers::table::WorkerRole;

/// Index of a listener in [`Config::listeners`].
pub type ListenerId = usize;
/// Index of an upstream pool in [`Config::pools`].
pub type PoolId = usize;

/// Which traffic a listener carries: it decides the default routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Matrix clients (port 443): `/_matrix` and `/_synapse/client`.
    Client,
    /// Other homeservers (port 8448): `/_matrix` only.
    Federation,
}

/// The scheme clients used to reach a listener; sets `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A certificate chain and key, as PEM file paths (the runtimes load them; the core never does TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

#[derive(Debug, Clone)]
pub struct Listener {
    /// A name for logs and metrics, unique among listeners.
    pub name: String,
    pub role: Role,
    /// `Https` means the runtime terminates TLS on this listener.
    pub scheme: Scheme,
    /// Addresses to bind; a runtime binds each (`[::]` asks for dual-stack).
    pub bind: Vec<SocketAddr>,
    /// Routes in match order: the longest matching prefix wins (see [`crate::route`]).
    pub routes: Vec<Route>,
    /// Connections start with a PROXY protocol header (v1 or v2), accepted only from
    /// `forwarding.trusted_proxies`; the runtime reads it before TLS.
    pub proxy_protocol: bool,
    /// HTTP/2 is served here. On a TLS listener (default `true`) ALPN offers `h2` before
    /// `http/1.1`; on a plain one (default `false`) HTTP/2 with prior knowledge is accepted
    /// besides HTTP/1.1, told apart by the client connection preface.
    pub http2: bool,
}

/// What a matched route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Forward to an upstream pool.
    Upstream(PoolId),
    /// Refuse with 404 `M_UNRECOGNIZED` (e.g. to carve a hole out of a wider prefix).
    Deny,
}

/// A path-prefix route. Matching is on the raw path, at segment boundaries:
/// `/_matrix` matches `/_matrix` and `/_matrix/…`, never `/_matrixfoo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Starts with `/`, has no trailing `/` (except the root route `/`).
    pub prefix: String,
    pub action: RouteAction,
}

/// One backend of a pool: a host name or address literal, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// As written in the config (`localhost`, `127.0.0.1`, `::1`); runtimes resolve it
    /// and try every address (so `localhost` works whether Synapse is on ::1 or 127.0.0.1).
    pub host: String,
    pub port: u16,
}

impl Backend {
    /// `host:port`, bracketing IPv6 literals: what a runtime hands to its resolver.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamPool {
    /// `homeserver` for the main process; unique among pools.
    pub name: String,
    pub backends: Vec<Backend>,
    /// Idle keep-alive connections a runtime keeps per backend.
    pub max_idle_per_backend: usize,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
    /// The Synapse worker role this pool serves (`[workers.<role>]`), if any.
    pub role: Option<WorkerRole>,
    /// Overrides `timeouts.upstream_response` for this pool (initial syncs want longer).
    pub response_timeout: Option<Duration>,
    /// Health checks the runtime runs against the backends (`GET /health`).
    pub health: HealthConfig,
    /// Backend choice: policy, the health view and in-flight counters, shared by every
    /// connection (atomics, no lock).
    pub balancer: Arc<PoolRuntime>,
}

impl UpstreamPool {
    /// A round-robin pool with default limits and no active health checks.
    pub fn new(name: impl Into<String>, backends: Vec<Backend>) -> UpstreamPool {
        UpstreamPool::with_policy(name, backends, Policy::RoundRobin, HealthConfig::passive())
    }

    pub fn with_policy(
        name: impl Into<String>,
        backends: Vec<Backend>,
        policy: Policy,
        health: HealthConfig,
    ) -> UpstreamPool {
        let identities = backends.iter().map(Backend::authority).collect::<Vec<_>>();
        let flags = Arc::new(HealthFlags::new(backends.len()));
        UpstreamPool {
            name: name.into(),
            max_idle_per_backend: 32,
            idle_timeout: Duration::from_secs(60),
            role: None,
            response_timeout: None,
            health,
            balancer: Arc::new(PoolRuntime::new(identities, policy, flags)),
            backends,
        }
    }
}

/// Synapse worker routing, present when `[workers.*]` pools are configured.
#[derive(Clone)]
pub struct WorkerRouting {
    /// The endpoint table compiled for the configured roles.
    pub router: Arc<Router>,
    /// The main process's pool: unclaimed requests, and the fallback when a worker pool
    /// has no healthy backend.
    pub main: PoolId,
}

impl std::fmt::Debug for WorkerRouting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerRouting")
            .field("main", &self.main)
            .finish_non_exhaustive()
    }
}

/// Virtual hosts: which `Host` values this proxy serves.
#[derive(Debug, Clone, Default)]
pub struct VirtualHosts {
    /// Lower-case host names without port. Empty: every Host is served (like nginx's default server).
    pub names: Vec<String>,
    /// Where requests for other hosts go; `None` answers 421 Misdirected Request.
    pub fallback: Option<PoolId>,
}

/// Pre-rendered `/.well-known/matrix/*` bodies (JSON), `None` when not configured (404).
#[derive(Debug, Clone, Default)]
pub struct WellKnown {
    pub server: Option<Bytes>,
    pub client: Option<Bytes>,
    pub support: Option<Bytes>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes (Synapse's `max_upload_size` defaults to 50 MiB).
    pub max_body_bytes: u64,
    /// Longest request line (method, target, version), in bytes: longer gets 414.
    pub max_request_line_bytes: usize,
    /// Largest request head (request line and headers): larger gets 431.
    pub max_head_bytes: usize,
    /// Most header fields in a request: more gets 431.
    pub max_headers: usize,
    /// Largest response head from an upstream: larger is a 502.
    pub max_response_head_bytes: usize,
    /// Pipelined request bytes buffered while an exchange is in flight.
    pub max_pipelined_bytes: usize,
    /// Most request bytes read and thrown away after an early answer (lingering close),
    /// so that a client still sending its body reads the answer instead of a reset.
    pub max_linger_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 50 * 1024 * 1024,
            max_request_line_bytes: 8 * 1024,
            max_head_bytes: 32 * 1024,
            max_headers: 100,
            max_response_head_bytes: 64 * 1024,
            max_pipelined_bytes: 64 * 1024,
            max_linger_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    /// From the first byte of a request head to its end (slowloris).
    pub client_header: Duration,
    /// An idle keep-alive client connection between requests.
    pub client_idle: Duration,
    /// Between two reads of a request body that is still arriving (slow uploads pass, stalls do not).
    pub client_body: Duration,
    /// Connecting to a backend.
    pub upstream_connect: Duration,
    /// Waiting for the response head, and between reads of a response body.
    /// Long enough for `/sync?timeout=30000` and slow initial syncs.
    pub upstream_response: Duration,
    /// TLS handshake (used by runtimes).
    pub tls_handshake: Duration,
    /// How long in-flight exchanges may finish after a shutdown signal (used by runtimes).
    pub drain: Duration,
    /// A write to the client or the upstream that makes no progress for this long ends the
    /// exchange (a client that stops reading a large response frees its upstream
    /// connection). Used by runtimes, which see write progress.
    pub send: Duration,
    /// After an early answer (a 413, a refusal, an error before the body was read), the
    /// longest the connection keeps reading and discarding what the client still sends
    /// before closing (RFC 9112 §9.6; nginx's `lingering_time`).
    pub linger: Duration,
    /// While lingering, the longest wait for the client's next bytes (nginx's
    /// `lingering_timeout`).
    pub linger_read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_header: Duration::from_secs(30),
            client_idle: Duration::from_secs(75),
            client_body: Duration::from_secs(60),
            upstream_connect: Duration::from_secs(5),
            upstream_response: Duration::from_secs(180),
            tls_handshake: Duration::from_secs(10),
            drain: Duration::from_secs(40),
            send: Duration::from_secs(60),
            linger: Duration::from_secs(30),
            linger_read: Duration::from_secs(5),
        }
    }
}

/// How `X-Forwarded-*` and the request id are handled.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// Peers whose `X-Forwarded-For` chain (and request id) is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Header carrying the request id (Synapse's `request_id_header`), lower case.
    pub request_id_header: HeaderName,
}

impl Default for Forwarding {
    fn default() -> Self {
        Forwarding {
            trusted_proxies: Vec::new(),
            request_id_header: HeaderName::from_static("x-request-id"),
        }
    }
}

/// Who may reach `/_synapse/admin`.
#[derive(Debug, Clone, Default)]
pub struct AdminPolicy {
    /// Client addresses (after `X-Forwarded-For` resolution) allowed; empty refuses everyone.
    pub allow: Vec<Cidr>,
    /// Pool serving the admin API when allowed (the homeserver).
    pub pool: Option<PoolId>,
}

/// Access-log line format (rendered by runtimes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    #[default]
    Combined,
    Json,
    Off,
}

/// The runtime knobs that are not HTTP decisions.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Worker threads, as the runtime uses them: `mxgate` (smol) runs its executor on this
    /// many (`None`: one per core); runtime-std serves one client connection per thread, so
    /// there it bounds concurrent connections (`None`: its default).
    pub threads: Option<usize>,
    /// Most client connections at once.
    pub max_connections: usize,
    /// Prometheus `/metrics` listener, if any.
    pub metrics_bind: Option<SocketAddr>,
    pub access_log: AccessLogFormat,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            threads: None,
            max_connections: 10_000,
            metrics_bind: None,
            access_log: AccessLogFormat::Combined,
        }
    }
}

/// A certificate for some SNI names (virtual hosts with their own certificates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCertificate {
    pub names: Vec<String>,
    pub files: TlsFiles,
}

/// TLS material for all TLS listeners.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// Default certificate; `None` with a TLS listener means "generate a self-signed
    /// development certificate at start" (only the embedded default does this).
    pub default: Option<TlsFiles>,
    pub sni: Vec<SniCertificate>,
}

/// An ACME challenge kind mxgate can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// TLS-ALPN-01 (RFC 8737), answered on the TLS listeners.
    TlsAlpn01,
    /// HTTP-01 (RFC 8555 §8.3), answered on the plain listeners (port 80).
    Http01,
}

impl AcmeChallenge {
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        }
    }
}

/// The runtime's view of pending HTTP-01 challenges: the key authorization to answer for
/// a token, while an order waits for it.
pub trait KeyAuthorizations: Send + Sync {
    fn key_authorization(&self, token: &str) -> Option<String>;
}

/// Where the engine looks up HTTP-01 answers; the runtime that runs ACME installs its
/// source (and replaces it when it starts over with another client). Before that, and in
/// runtimes without ACME, every token is unknown: 404.
#[derive(Default)]
pub struct Http01Answers {
    source: std::sync::RwLock<Option<Arc<dyn KeyAuthorizations>>>,
}

impl Http01Answers {
    /// Installs (or replaces) the source.
    pub fn install(&self, source: Arc<dyn KeyAuthorizations>) {
        *self.source.write().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    pub fn key_authorization(&self, token: &str) -> Option<String> {
        let source = self
            .source
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        source.key_authorization(token)
    }
}

impl std::fmt::Debug for Http01Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let installed = self.source.read().map(|s| s.is_some()).unwrap_or(false);
        f.debug_struct("Http01Answers")
            .field("installed", &installed)
            .finish()
    }
}

/// Let's Encrypt's production directory: the default ACME server.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Automatic certificates by ACME (RFC 8555): in effect when TLS listeners have no
/// configured certificate and the configuration is not the development one. The runtime
/// obtains and renews one certificate for `names`; plain listeners answer HTTP-01
/// challenges and redirect everything else to HTTPS (308).
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// Lower-case DNS names the certificate covers: by default the host of `public_url`,
    /// then `server_name`'s host (deduplicated).
    pub names: Vec<String>,
    /// Account contact (`mailto:` is added by the runtime).
    pub email: Option<String>,
    /// The ACME directory URL.
    pub directory: String,
    /// A PEM file of CA certificates to trust for the ACME server's own HTTPS.
    pub ca_root: Option<std::path::PathBuf>,
    /// Where the account key and certificates are kept.
    pub state_dir: std::path::PathBuf,
    /// Challenge kinds in order of preference (the runtime moves to the next after
    /// repeated failures).
    pub challenges: Vec<AcmeChallenge>,
    /// The HTTPS port redirects from plain listeners point at (the first TLS listener's).
    pub https_port: u16,
    /// HTTP-01 answers, filled by the runtime.
    pub http01: Arc<Http01Answers>,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Matrix server name (`example.com`).
    pub server_name: String,
    pub listeners: Vec<Listener>,
    pub pools: Vec<UpstreamPool>,
    pub virtual_hosts: VirtualHosts,
    pub well_known: WellKnown,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub forwarding: Forwarding,
    pub admin: AdminPolicy,
    pub tls: TlsSettings,
    /// Automatic certificates, when in effect (see [`AcmeSettings`]).
    pub acme: Option<AcmeSettings>,
    pub runtime: RuntimeSettings,
    /// Routing to Synapse workers; `None` sends everything to the routes' pools.
    pub workers: Option<WorkerRouting>,
    /// The HTTP/2 engine's bounds (`[http2]`), for every listener that serves HTTP/2.
    pub http2: crate::http2::Limits,
}

impl Config {
    /// The pool serving `role`, if one is configured.
    pub fn pool_for_role(&self, role: WorkerRole) -> Option<PoolId> {
        self.pools.iter().position(|p| p.role == Some(role))
    }

    /// Whether `ip` is in any of `set`.
    pub fn contains(set: &[Cidr], ip: IpAddr) -> bool {
        set.iter().any(|c| c.contains(ip))
    }
}
