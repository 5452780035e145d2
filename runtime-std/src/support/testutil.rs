//! A hand-built configuration for unit tests (no TOML parsing involved).

use std::time::Duration;

use mxgate_core::config::{
    Backend, Listener, Role, Route, RouteAction, RuntimeSettings, Scheme, UpstreamPool,
};
use mxgate_core::Config;

pub fn config() -> Config {
    Config {
        server_name: "example.com".into(),
        listeners: vec![
            Listener {
                name: "client".into(),
                role: Role::Client,
                scheme: Scheme::Https,
                bind: vec!["127.0.0.1:0".parse().unwrap()],
                routes: vec![Route {
                    prefix: "/_matrix".into(),
                    action: RouteAction::Upstream(0),
                }],
                proxy_protocol: false,
                http2: true,
            },
            Listener {
                name: "federation".into(),
                role: Role::Federation,
                scheme: Scheme::Http,
                bind: vec!["127.0.0.1:0".parse().unwrap()],
                routes: vec![],
                proxy_protocol: false,
                http2: false,
            },
        ],
        pools: vec![{
            let mut pool = UpstreamPool::new(
                "homeserver",
                vec![Backend {
                    host: "localhost".into(),
                    port: 8008,
                }],
            );
            pool.max_idle_per_backend = 8;
            pool.idle_timeout = Duration::from_secs(30);
            pool
        }],
        virtual_hosts: Default::default(),
        well_known: Default::default(),
        limits: Default::default(),
        timeouts: Default::default(),
        forwarding: Default::default(),
        admin: Default::default(),
        tls: Default::default(),
        runtime: RuntimeSettings::default(),
        workers: None,
        acme: None,
        http2: Default::default(),
    }
}
