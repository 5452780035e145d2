//! An in-memory client ↔ Connection ↔ upstream harness with hand-advanced time, so a
//! 180-second timeout test runs in microseconds.

use core::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::*;
use crate::{AccessRecord, Connection, ExchangeStats, Output, UpstreamFault};

pub const CLIENT_HTTP: ListenerId = 0;
pub const CLIENT_HTTPS: ListenerId = 1;
pub const FEDERATION: ListenerId = 2;

/// A configuration like the seed's: client and federation listeners in front of one
/// homeserver, well-known documents, an admin allowlist.
pub fn config() -> Config {
    let routes = |prefixes: &[&str]| {
        prefixes
            .iter()
            .map(|p| Route {
                prefix: p.to_string(),
                action: RouteAction::Upstream(0),
            })
            .collect::<Vec<_>>()
    };
    let listener = |name: &str, role, scheme, r: Vec<Route>| Listener {
        name: name.into(),
        role,
        scheme,
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        routes: r,
        proxy_protocol: false,
        http2: scheme == Scheme::Https,
    };
    Config {
        server_name: "example.org".into(),
        listeners: vec![
            listener(
                "plain",
                Role::Client,
                Scheme::Http,
                routes(&["/_matrix", "/_synapse/client"]),
            ),
            listener(
                "client",
                Role::Client,
                Scheme::Https,
                routes(&["/_matrix", "/_synapse/client"]),
            ),
            listener(
                "federation",
                Role::Federation,
                Scheme::Https,
                routes(&["/_matrix"]),
            ),
        ],
        pools: vec![{
            let mut pool = UpstreamPool::new(
                "homeserver",
                vec![Backend {
                    host: "127.0.0.1".into(),
                    port: 8008,
                }],
            );
            pool.max_idle_per_backend = 8;
            pool.idle_timeout = Duration::from_secs(60);
            pool
        }],
        virtual_hosts: VirtualHosts::default(),
        well_known: WellKnown {
            server: Some(Bytes::from_static(
                br#"{"m.server":"matrix.example.org:443"}"#,
            )),
            client: Some(Bytes::from_static(
                br#"{"m.homeserver":{"base_url":"https://matrix.example.org"}}"#,
            )),
            support: None,
        },
        limits: Limits::default(),
        timeouts: Timeouts::default(),
        forwarding: Forwarding {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..Forwarding::default()
        },
        admin: AdminPolicy {
            allow: vec!["192.0.2.7".parse().unwrap()],
            pool: Some(0),
        },
        tls: TlsSettings::default(),
        runtime: RuntimeSettings::default(),
        workers: None,
        acme: None,
        http2: Default::default(),
    }
}

/// What happened on one upstream connection.
#[derive(Debug, Default, Clone)]
pub struct UpstreamConn {
    pub received: Vec<u8>,
    pub released: Option<bool>,
}

pub struct Harness {
    pub conn: Connection,
    pub now: Instant,
    pub to_client: Vec<u8>,
    pub client_closed: bool,
    pub connects: Vec<(PoolId, bool)>,
    pub upstreams: Vec<UpstreamConn>,
    pub logs: Vec<AccessRecord>,
    /// What exchanges report with access logging off.
    pub stats: Vec<ExchangeStats>,
    /// Upstream answers the engine would not pass on, as it reported them.
    pub faults: Vec<(PoolId, UpstreamFault)>,
    /// An upstream connection is wanted but not yet answered.
    pub pending_connect: bool,
}

impl Harness {
    pub fn new(listener: ListenerId, peer: &str) -> Self {
        Self::with_config(config(), listener, peer)
    }

    pub fn with_config(config: Config, listener: ListenerId, peer: &str) -> Self {
        let peer: IpAddr = peer.parse().unwrap();
        let now = crate::tests::epoch();
        let conn = Connection::new(Arc::new(config), listener, peer, 42, now);
        let mut h = Harness {
            conn,
            now,
            to_client: Vec::new(),
            client_closed: false,
            connects: Vec::new(),
            upstreams: Vec::new(),
            logs: Vec::new(),
            stats: Vec::new(),
            faults: Vec::new(),
            pending_connect: false,
        };
        h.drain();
        h
    }

    /// Performs every pending output.
    pub fn drain(&mut self) {
        while let Some(out) = self.conn.poll_output() {
            match out {
                Output::ToClient(b) => {
                    assert!(!self.client_closed, "bytes to a closed client");
                    self.to_client.extend_from_slice(&b)
                }
                Output::ConnectUpstream { pool, fresh, .. } => {
                    self.connects.push((pool, fresh));
                    self.pending_connect = true;
                }
                Output::ToUpstream(b) => {
                    let up = self
                        .upstreams
                        .last_mut()
                        .expect("bytes upstream before a connection");
                    assert!(up.released.is_none(), "bytes to a released upstream");
                    up.received.extend_from_slice(&b);
                }
                Output::ReleaseUpstream { reusable } => {
                    if self.pending_connect {
                        self.pending_connect = false;
                    } else if let Some(up) = self.upstreams.last_mut() {
                        up.released = Some(reusable);
                    }
                }
                Output::CloseClient => self.client_closed = true,
                Output::AccessLog(r) => self.logs.push(*r),
                Output::ExchangeDone(stats) => self.stats.push(stats),
                Output::UpstreamFault { pool, fault, .. } => self.faults.push((pool, fault)),
            }
        }
    }

    pub fn client(&mut self, bytes: &[u8]) -> &mut Self {
        self.conn.handle_client_data(bytes, self.now);
        self.drain();
        self
    }

    pub fn client_eof(&mut self) -> &mut Self {
        self.conn.handle_client_eof(self.now);
        self.drain();
        self
    }

    /// Answers the pending connect with a new (or reused) connection.
    pub fn connected(&mut self, reused: bool) -> &mut Self {
        assert!(self.pending_connect, "no connect was asked for");
        self.pending_connect = false;
        self.upstreams.push(UpstreamConn::default());
        self.conn.handle_upstream_connected(reused, self.now);
        self.drain();
        self
    }

    pub fn connect_failed(&mut self) -> &mut Self {
        assert!(self.pending_connect, "no connect was asked for");
        self.pending_connect = false;
        self.conn.handle_upstream_failed(self.now);
        self.drain();
        self
    }

    pub fn upstream(&mut self, bytes: &[u8]) -> &mut Self {
        self.conn.handle_upstream_data(bytes, self.now);
        self.drain();
        self
    }

    pub fn upstream_eof(&mut self) -> &mut Self {
        self.conn.handle_upstream_eof(self.now);
        self.drain();
        self
    }

    pub fn advance(&mut self, by: Duration) -> &mut Self {
        self.now += by;
        self.conn.handle_timeout(self.now);
        self.drain();
        self
    }

    /// The bytes the current upstream connection received.
    pub fn upstream_received(&self) -> &[u8] {
        self.upstreams.last().map_or(&[][..], |u| &u.received[..])
    }

    pub fn upstream_text(&self) -> String {
        String::from_utf8_lossy(self.upstream_received()).into_owned()
    }

    pub fn client_text(&self) -> String {
        String::from_utf8_lossy(&self.to_client).into_owned()
    }

    /// Takes what the client received so far.
    pub fn take_client(&mut self) -> String {
        let s = self.client_text();
        self.to_client.clear();
        s
    }
}

/// The status code of the first response in `text`.
pub fn status(text: &str) -> u16 {
    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A header's value in the first head of `text`, by case-insensitive name.
pub fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let head = text.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The body after the first head.
pub fn body(text: &str) -> &str {
    text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

pub fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: matrix.example.org\r\n\r\n")
}

pub const OK_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
