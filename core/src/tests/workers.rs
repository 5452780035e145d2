//! Worker routing through the engine: the pool and backend a request is sent to.

use std::sync::Arc;

use crate::config::parse_config;
use crate::workers::health::PoolHealth;
use crate::{Config, Connection, Output};

const CONFIG: &str = r#"
server_name = "example.org"
homeserver = "http://127.0.0.1:8008"
[[listeners]]
role = "client"
bind = ["127.0.0.1:8080"]
[workers.synchrotron]
backends = ["http://127.0.0.1:8083", "http://127.0.0.1:8084", "http://127.0.0.1:8085"]
[workers.event_creator]
backends = ["http://127.0.0.1:8090", "http://127.0.0.1:8091"]
[workers.media_repository]
backends = ["http://127.0.0.1:8095"]
health_interval = "off"
"#;

fn config() -> Arc<Config> {
    Arc::new(parse_config(CONFIG, "workers.toml".as_ref()).expect("worker config parses"))
}

/// (pool name, backend index) a request is sent to.
fn destination(config: &Arc<Config>, request: &str) -> (String, usize) {
    let now = crate::tests::epoch();
    let mut conn = Connection::new(
        Arc::clone(config),
        0,
        "203.0.113.5".parse().unwrap(),
        1,
        now,
    );
    conn.handle_client_data(request.as_bytes(), now);
    while let Some(out) = conn.poll_output() {
        if let Output::ConnectUpstream { pool, backend, .. } = out {
            return (config.pools[pool].name.clone(), backend);
        }
    }
    panic!("not forwarded: {request}");
}

fn sync_as(token: &str) -> String {
    format!("GET /_matrix/client/v3/sync?since=s1&timeout=30000 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n")
}

#[test]
fn requests_go_to_the_worker_pool_that_claims_them() {
    let c = config();
    assert_eq!(
        destination(&c, &sync_as("syt_YWxpY2U_x_1")).0,
        "synchrotron"
    );
    let send = "PUT /_matrix/client/v3/rooms/%21r%3Aexample.org/send/m.room.message/t1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(destination(&c, send).0, "event_creator");
    let media = "GET /_matrix/client/v1/media/download/example.org/abc HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(destination(&c, media).0, "media_repository");
    let other = "GET /_matrix/client/v3/account/whoami HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(
        destination(&c, other).0,
        "homeserver",
        "no client_reader: main process"
    );
}

#[test]
fn a_users_syncs_stick_to_one_synchrotron() {
    let c = config();
    for user in ["syt_YWxpY2U_a_1", "syt_Ym9i_b_2", "syt_Y2Fyb2w_c_3"] {
        let first = destination(&c, &sync_as(user));
        for _ in 0..5 {
            assert_eq!(destination(&c, &sync_as(user)), first, "{user} moved");
        }
    }
    // The same user with a new token suffix (another device) stays put: keyed by localpart.
    assert_eq!(
        destination(&c, &sync_as("syt_YWxpY2U_zzz_9")),
        destination(&c, &sync_as("syt_YWxpY2U_a_1"))
    );
}

#[test]
fn a_pool_without_healthy_backends_falls_back_to_the_main_process() {
    let c = config();
    let media = c
        .pool_for_role(crate::workers::table::WorkerRole::MediaRepository)
        .unwrap();
    let now = crate::tests::epoch();
    let mut health = PoolHealth::with_flags(
        c.pools[media].balancer.health_flags(),
        c.pools[media].health.clone(),
        now,
    );
    for _ in 0..c.pools[media].health.eject_after {
        health.connect_failed(0, now);
    }
    let req = "GET /_matrix/media/v3/download/example.org/abc HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(destination(&c, req).0, "homeserver");
}

#[test]
fn check_prints_the_worker_route_table() {
    let text = crate::config::render_effective(&config());
    assert!(text.contains("[workers.synchrotron]"), "{text}");
    assert!(
        text.contains("^/_matrix/client/(r0|v3)/sync$ -> synchrotron"),
        "{text}"
    );
    let again = parse_config(&text, "rendered.toml".as_ref()).expect("rendered config parses");
    assert_eq!(again.pools.len(), 4);
}
