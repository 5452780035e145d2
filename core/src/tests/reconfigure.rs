//! `Connection::reconfigure`: a reloaded configuration takes over an idle keep-alive
//! connection from its next request on, never an exchange in flight.

use std::sync::Arc;
use std::time::Duration;

use super::harness::*;
use crate::config::*;

/// The harness configuration with a second pool, `media`, taking `/_matrix/media`, and a
/// different body limit: what a reload might bring.
fn reloaded() -> Arc<Config> {
    let mut config = config();
    config.pools.push(UpstreamPool::new(
        "media",
        vec![Backend {
            host: "127.0.0.1".into(),
            port: 8088,
        }],
    ));
    for listener in &mut config.listeners {
        listener.routes.push(Route {
            prefix: "/_matrix/media".into(),
            action: RouteAction::Upstream(1),
        });
    }
    config.limits.max_body_bytes = 10;
    // The listener list reordered: the connection's listener has another id now.
    config.listeners.swap(0, 1);
    Arc::new(config)
}

#[test]
fn the_next_request_on_an_idle_connection_follows_the_new_config() {
    let mut h = Harness::new(CLIENT_HTTP, "203.0.113.5");
    h.client(b"GET /_matrix/media/v3/config HTTP/1.1\r\nHost: matrix.example.org\r\n\r\n");
    assert_eq!(h.connects, vec![(0, false)]);
    h.connected(false).upstream(OK_RESPONSE);
    assert_eq!(status(&h.take_client()), 200);
    assert!(h.conn.is_idle());

    // "plain" (0 before) is listener 1 of the reloaded configuration.
    assert!(h.conn.reconfigure(reloaded(), 1));
    assert_eq!(h.conn.listener(), 1);
    h.client(b"GET /_matrix/media/v3/config HTTP/1.1\r\nHost: matrix.example.org\r\n\r\n");
    assert_eq!(h.connects[1], (1, false), "the new route, to the new pool");
    h.connected(false);
    let up = h.upstream_text();
    assert_eq!(
        header(&up, "x-forwarded-proto"),
        Some("http"),
        "still the plain listener"
    );
    h.upstream(OK_RESPONSE);
    assert_eq!(status(&h.take_client()), 200);
    // The new limit applies too.
    h.client(b"PUT /_matrix/client/v3/x HTTP/1.1\r\nHost: matrix.example.org\r\nContent-Length: 11\r\n\r\n");
    assert_eq!(status(&h.take_client()), 413);
}

#[test]
fn an_exchange_in_flight_keeps_its_config() {
    let mut h = Harness::new(CLIENT_HTTP, "203.0.113.5");
    h.client(b"GET /_matrix/client/v3/sync HTTP/1.1\r\nHost: matrix.example.org\r\n\r\n");
    h.connected(false);
    // Mid-exchange: refused, nothing changes.
    assert!(!h.conn.reconfigure(reloaded(), 1));
    assert_eq!(h.conn.listener(), CLIENT_HTTP);
    h.advance(Duration::from_secs(30)).upstream(OK_RESPONSE);
    assert_eq!(status(&h.take_client()), 200);
    // A listener id the new configuration does not have: refused.
    assert!(!h.conn.reconfigure(reloaded(), 7));
    // Idle again: taken, and the request after it routes by the new table.
    assert!(h.conn.reconfigure(reloaded(), 1));
    h.client(b"GET /_matrix/media/v3/config HTTP/1.1\r\nHost: matrix.example.org\r\n\r\n");
    assert_eq!(h.connects, vec![(0, false), (1, false)]);
}

#[test]
fn the_idle_timeout_follows_the_new_config() {
    let mut h = Harness::new(CLIENT_HTTP, "203.0.113.5");
    let mut config = (*reloaded()).clone();
    config.timeouts.client_idle = Duration::from_secs(5);
    config.timeouts.client_header = Duration::from_secs(5);
    assert!(h.conn.reconfigure(Arc::new(config), 1));
    h.advance(Duration::from_secs(6));
    assert!(h.client_closed, "closed after the new, shorter timeout");
}
