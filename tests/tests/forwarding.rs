//! What the proxy tells the origin about the client: X-Forwarded-For, X-Forwarded-Proto,
//! Host, the request id, and headers it must leave alone.

use std::time::Duration;

use mxgate_e2e::*;

/// Sends `request` through `(role, tls)` and returns what the origin received.
fn through(s: &Scene, role: Role, tls: bool, request: &[u8]) -> (Response, RecordedRequest) {
    let before = s.origin.requests().len();
    let res = s.exchange(role, tls, request);
    assert_eq!(res.status, 200, "{res:?}");
    let reqs = s.origin.wait_requests(before + 1, Duration::from_secs(2));
    assert!(reqs.len() > before, "the origin got no request");
    (res, reqs[before].clone())
}

fn first_value(list: &str) -> String {
    list.split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A client's own `X-Forwarded-For` is replaced by its address: Synapse takes the first
/// value of the first header line, so nothing the client sent may come first.
#[test]
fn x_forwarded_for_replaced_for_untrusted_peer() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (role, tls) in ALL_LISTENERS {
            let req = request(
                "GET",
                "/_matrix/client/versions",
                "localhost",
                &[
                    "X-Forwarded-For: 6.6.6.6",
                    "X-Forwarded-For: 7.7.7.7, 8.8.8.8",
                ],
            );
            let (_, got) = through(&s, role, tls, &req);
            let xff = got.head.headers_named("x-forwarded-for");
            assert!(
                !xff.is_empty(),
                "no X-Forwarded-For reached the origin: {:?}",
                got.head
            );
            assert_eq!(
                first_value(&xff[0]),
                "127.0.0.1",
                "first X-Forwarded-For value at the origin ({role:?} tls={tls}); all lines: {xff:?}"
            );
            assert!(
                xff.iter()
                    .all(|v| !v.contains("6.6.6.6") && !v.contains("7.7.7.7")),
                "client-sent addresses must not be passed on from an untrusted peer: {xff:?}"
            );
        }
    });
}

/// From a trusted proxy the chain is believed: the right-most untrusted address comes first.
#[test]
fn x_forwarded_for_chain_from_trusted_peer() {
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.trusted_proxies(&["127.0.0.1/32", "10.0.0.0/8"]));
        for (role, tls) in CLIENT_LISTENERS {
            // 1.1.1.1 was written by 6.6.6.6 (untrusted), so 6.6.6.6 is the client.
            let req = request(
                "GET",
                "/_matrix/client/versions",
                "localhost",
                &["X-Forwarded-For: 1.1.1.1, 6.6.6.6, 10.1.2.3"],
            );
            let (_, got) = through(&s, role, tls, &req);
            let xff = got.head.headers_named("x-forwarded-for");
            assert!(!xff.is_empty(), "no X-Forwarded-For at the origin");
            assert_eq!(
                first_value(&xff[0]),
                "6.6.6.6",
                "right-most untrusted address must come first (tls={tls}); lines: {xff:?}"
            );
            // A trusted peer without a chain is itself the client.
            let (_, got) = through(&s, role, tls, &get("/_matrix/client/versions", "localhost"));
            let xff = got.head.headers_named("x-forwarded-for");
            assert_eq!(
                xff.first().map(|v| first_value(v)).as_deref(),
                Some("127.0.0.1")
            );
        }
    });
}

/// `X-Forwarded-Proto` is `https` on TLS listeners and `http` on plain ones, whatever the
/// client claims.
#[test]
fn x_forwarded_proto_matches_the_listener() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (role, tls) in ALL_LISTENERS {
            let want = if tls { "https" } else { "http" };
            let claim = if tls { "http" } else { "https" };
            let req = request(
                "GET",
                "/_matrix/client/versions",
                "localhost",
                &[&format!("X-Forwarded-Proto: {claim}")],
            );
            let (_, got) = through(&s, role, tls, &req);
            assert_eq!(
                got.head.headers_named("x-forwarded-proto"),
                vec![want.to_string()],
                "X-Forwarded-Proto at the origin via {role:?} tls={tls}"
            );
        }
    });
}

/// `Host` reaches the origin exactly as the client sent it (one line, same bytes).
#[test]
fn host_header_kept_exactly() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (role, tls) in ALL_LISTENERS {
            for host in ["localhost", "matrix.example.org", "matrix.example.org:8448"] {
                let (_, got) = through(&s, role, tls, &get("/_matrix/client/versions", host));
                assert_eq!(
                    got.head.headers_named("host"),
                    vec![host.to_string()],
                    "Host at the origin via {role:?} tls={tls}"
                );
            }
        }
    });
}

/// Without a client id, the proxy generates a request id, sends it to the origin and echoes
/// it on the response; two requests get different ids.
#[test]
fn request_id_generated_sent_and_echoed() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        let mut seen = Vec::new();
        for (role, tls) in [
            (Role::Client, true),
            (Role::Client, false),
            (Role::Federation, false),
        ] {
            let (res, got) = through(&s, role, tls, &get("/_matrix/client/versions", "localhost"));
            let at_origin = got.head.headers_named("x-request-id");
            assert_eq!(
                at_origin.len(),
                1,
                "one X-Request-ID at the origin: {:?}",
                got.head
            );
            assert!(!at_origin[0].is_empty());
            assert_eq!(
                res.header("x-request-id"),
                Some(at_origin[0].clone()),
                "the response must echo the id the origin saw"
            );
            seen.push(at_origin[0].clone());
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            seen.len(),
            "request ids must differ: {seen:?}"
        );
    });
}

/// A client's own request id is replaced when the peer is not a trusted proxy.
#[test]
fn request_id_from_untrusted_client_replaced() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (role, tls) in CLIENT_LISTENERS {
            let req = request(
                "GET",
                "/_matrix/client/versions",
                "localhost",
                &["X-Request-ID: client-chosen-id"],
            );
            let (res, got) = through(&s, role, tls, &req);
            let at_origin = got.head.headers_named("x-request-id");
            assert_eq!(at_origin.len(), 1, "{:?}", got.head);
            assert_ne!(at_origin[0], "client-chosen-id", "tls={tls}");
            assert_eq!(res.header("x-request-id"), Some(at_origin[0].clone()));
        }
    });
}

/// A trusted proxy's request id is kept and echoed.
#[test]
fn request_id_from_trusted_peer_kept() {
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.trusted_proxies(&["127.0.0.1/32"]));
        for (role, tls) in CLIENT_LISTENERS {
            let req = request(
                "GET",
                "/_matrix/client/versions",
                "localhost",
                &["X-Request-ID: upstream-lb-4711"],
            );
            let (res, got) = through(&s, role, tls, &req);
            assert_eq!(
                got.head.headers_named("x-request-id"),
                vec!["upstream-lb-4711".to_string()],
                "tls={tls}"
            );
            assert_eq!(
                res.header("x-request-id").as_deref(),
                Some("upstream-lb-4711")
            );
        }
    });
}

/// The federation `Authorization: X-Matrix …` header and other end-to-end headers pass
/// byte for byte.
#[test]
fn authorization_and_other_headers_pass_untouched() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        let auth = r#"X-Matrix origin="remote.example",destination="localhost",key="ed25519:a_Bc",sig="dGVzdCtzaWcvPQ+/="#;
        for (role, tls) in [(Role::Federation, true), (Role::Client, false)] {
            let req = request(
                "GET",
                "/_matrix/federation/v1/query/profile?user_id=%40a%3Alocalhost",
                "localhost",
                &[
                    &format!("Authorization: {auth}"),
                    "User-Agent: Synapse/1.120.0",
                    "Accept: application/json",
                    "X-Custom-Thing: \"quoted\"; x=1",
                ],
            );
            let (_, got) = through(&s, role, tls, &req);
            assert_eq!(
                got.head.headers_named("authorization"),
                vec![auth.to_string()]
            );
            assert_eq!(
                got.head.header("user-agent").as_deref(),
                Some("Synapse/1.120.0")
            );
            assert_eq!(
                got.head.header("x-custom-thing").as_deref(),
                Some("\"quoted\"; x=1")
            );
        }
    });
}
