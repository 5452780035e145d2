//! Synapse worker routing through real processes: recording origins stand in for the main
//! process and its workers; health probes and failover; and the PROXY protocol header on
//! `proxy_protocol = true` listeners.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use mxgate_e2e::workers::{
    proxy_v1, proxy_v2, send_raw, send_tls_after, sync_request, token, NamedOrigin, RawOutcome,
};
use mxgate_e2e::*;

const USERS: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj",
];

/// Main, two synchrotrons, one event creator.
struct Workers {
    main: NamedOrigin,
    sync: [NamedOrigin; 2],
    events: NamedOrigin,
}

impl Workers {
    fn start() -> Workers {
        Workers {
            main: NamedOrigin::start("main"),
            sync: [NamedOrigin::start("sync1"), NamedOrigin::start("sync2")],
            events: NamedOrigin::start("events"),
        }
    }

    /// One plain client listener in front of them; probes every 200 ms, rise 1.
    fn config(&self, pki: &Pki) -> ProxyConfig {
        ProxyConfig {
            server_name: "localhost".into(),
            public_url: None,
            homeserver: self.main.url(),
            tls: Some((pki.server.cert.clone(), pki.server.key.clone())),
            sni: Vec::new(),
            listeners: vec![
                ListenerSpec {
                    role: Role::Client,
                    tls: false,
                },
                ListenerSpec {
                    role: Role::Client,
                    tls: true,
                },
            ],
            top: Vec::new(),
            sections: Vec::new(),
            listener_lines: Vec::new(),
        }
        .section(
            "workers.synchrotron",
            &format!(
                "backends = [\"{}\", \"{}\"]\nhealth_interval = \"200ms\"\nhealth_rise = 1\nhealth_fall = 2\neject_for = \"1s\"",
                self.sync[0].url(),
                self.sync[1].url()
            ),
        )
        .section(
            "workers.event_creator",
            &format!(
                "backends = [\"{}\"]\nhealth_interval = \"200ms\"",
                self.events.url()
            ),
        )
    }
}

/// Which origin answered (its `X-Origin-Name`), on a new connection; panics on no answer.
fn served_by(proxy: &Proxy, request: &[u8]) -> String {
    let mut c = Client::plain(proxy.client_plain());
    let res = c
        .request(request)
        .unwrap_or_else(|e| panic!("no answer to {}: {e:?}", show(request, 200)));
    assert_eq!(res.status, 200, "{}: {res:?}", show(request, 200));
    res.header("x-origin-name")
        .unwrap_or_else(|| panic!("answer without X-Origin-Name: {res:?}"))
}

/// Each user's synchrotron, asserting it is the same over `rounds` requests.
fn placement(proxy: &Proxy, rounds: usize) -> HashMap<&'static str, String> {
    let mut seen = HashMap::new();
    for round in 0..rounds {
        for &user in USERS {
            let got = served_by(proxy, &sync_request(user, "localhost"));
            let first = seen.entry(user).or_insert_with(|| got.clone());
            assert_eq!(*first, got, "{user}'s sync moved in round {round}");
        }
    }
    seen
}

#[test]
fn requests_reach_the_worker_that_claims_them_and_users_stick() {
    each_runtime(|rt| {
        let w = Workers::start();
        let pki = Pki::new();
        let proxy = Proxy::start(rt, w.config(&pki));
        let seen = placement(&proxy, 3);
        for (user, origin) in &seen {
            assert!(origin.starts_with("sync"), "{user}'s sync went to {origin}");
        }
        let used: std::collections::HashSet<_> = seen.values().collect();
        assert_eq!(used.len(), 2, "both synchrotrons serve someone: {seen:?}");
        // Keep-alive: several syncs on one connection stay put too.
        let mut c = Client::plain(proxy.client_plain());
        for _ in 0..3 {
            let res = c.request(&sync_request("alice", "localhost")).unwrap();
            assert_eq!(res.header("x-origin-name").as_ref(), seen.get("alice"));
        }
        // Event sending: the event creator.
        let send = format!(
            "PUT /_matrix/client/v3/rooms/%21room%3Alocalhost/send/m.room.message/txn1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
            token("alice")
        );
        assert_eq!(served_by(&proxy, send.as_bytes()), "events");
        // Unclaimed by a configured role: the main process.
        for path in [
            "/_matrix/client/v3/account/whoami",
            "/_matrix/client/v3/pushrules/",
            "/_matrix/client/versions",
        ] {
            assert_eq!(served_by(&proxy, &get(path, "localhost")), "main", "{path}");
        }
        // The workers saw the real requests (the Authorization header untouched).
        let got = w.events.traffic();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            got[0].header("authorization"),
            Some(format!("Bearer {}", token("alice")))
        );
        assert!(w
            .main
            .traffic()
            .iter()
            .all(|r| !r.path().ends_with("/sync")));
        // Probes reach the workers, never the main process (passive health only).
        assert!(
            wait_until(Duration::from_secs(3), || w.sync[0].probes() > 0
                && w.sync[1].probes() > 0
                && w.events.probes() > 0),
            "health probes reach every worker"
        );
        assert_eq!(w.main.probes(), 0);
    });
}

#[test]
fn a_stopped_synchrotron_fails_over_and_probes_bring_it_back() {
    each_runtime(|rt| {
        let mut w = Workers::start();
        let pki = Pki::new();
        let proxy = Proxy::start(rt, w.config(&pki));
        let seen = placement(&proxy, 2);
        let victim = seen["alice"].clone();
        let index = if victim == "sync1" { 0 } else { 1 };
        let port = w.sync[index].port();
        let theirs: Vec<&str> = USERS
            .iter()
            .copied()
            .filter(|u| seen[u] == victim)
            .collect();
        let others: Vec<&str> = USERS
            .iter()
            .copied()
            .filter(|u| seen[u] != victim)
            .collect();

        w.sync[index].stop();
        // Each of its users gets an answer from elsewhere after at most two failures, and
        // never waits long.
        for &user in &theirs {
            let mut failures = 0;
            loop {
                let started = Instant::now();
                let mut c = Client::plain(proxy.client_plain());
                let res = c.request(&sync_request(user, "localhost"));
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{user} waited {:?}",
                    started.elapsed()
                );
                match res {
                    Ok(r) if r.status == 200 => {
                        let by = r.header("x-origin-name").unwrap_or_default();
                        assert_ne!(by, victim, "{user} answered by the stopped origin?");
                        break;
                    }
                    other => {
                        failures += 1;
                        assert!(failures <= 2, "{user}: still failing: {other:?}");
                    }
                }
            }
        }
        // The other users did not move.
        for &user in &others {
            assert_eq!(
                served_by(&proxy, &sync_request(user, "localhost")),
                seen[user]
            );
        }
        assert!(
            wait_until(Duration::from_secs(5), || proxy
                .log()
                .contains("backend down")),
            "the proxy logs the backend going down"
        );

        // Back on the same port: the probes bring it back, and its users return.
        w.sync[index] = NamedOrigin::start_on(&victim, port);
        let back = wait_until(Duration::from_secs(10), || {
            theirs
                .iter()
                .all(|u| served_by(&proxy, &sync_request(u, "localhost")) == victim)
        });
        assert!(
            back,
            "{victim}'s users return to it once it is healthy again"
        );
        assert!(w.sync[index].probes() > 0, "probed after the restart");
        assert!(
            proxy.log().contains("backend up"),
            "the proxy logs the return"
        );
    });
}

fn client_src() -> SocketAddrV4 {
    "198.51.100.7:5555".parse().unwrap()
}

fn proxy_dst() -> SocketAddrV4 {
    "127.0.0.1:443".parse().unwrap()
}

/// The standard scene with `proxy_protocol = true` on both client listeners.
fn proxied_scene(rt: &Runtime, trusted: &[&str]) -> Scene {
    Scene::with(rt, |c| {
        c.listener_line(0, "proxy_protocol = true")
            .listener_line(1, "proxy_protocol = true")
            .trusted_proxies(trusted)
    })
}

fn expect_response(outcome: RawOutcome, what: &str) -> Response {
    match outcome {
        RawOutcome::Response(r) => r,
        other => panic!("{what}: no response: {other:?}"),
    }
}

fn last_xff(origin: &Origin) -> Vec<String> {
    let reqs = origin.wait_requests(1, Duration::from_secs(2));
    reqs.last()
        .expect("the origin got a request")
        .head
        .headers_named("x-forwarded-for")
}

#[test]
fn proxy_protocol_gives_the_client_address_plain_and_tls() {
    each_runtime(|rt| {
        let s = proxied_scene(rt, &["127.0.0.1"]);
        let req = request(
            "GET",
            "/_matrix/client/versions",
            "localhost",
            &["X-Forwarded-For: 6.6.6.6"],
        );
        let headers = [
            ("v1", proxy_v1(client_src(), proxy_dst())),
            ("v2", proxy_v2(client_src(), proxy_dst())),
        ];
        for (version, header) in &headers {
            let what = format!("plain, PROXY {version}");
            let res = expect_response(send_raw(s.proxy.client_plain(), header, &req), &what);
            assert_eq!(res.status, 200, "{what}: {res:?}");
            assert_eq!(last_xff(&s.origin), ["198.51.100.7"], "{what}");

            let what = format!("TLS, PROXY {version}");
            let outcome = send_tls_after(s.proxy.client_tls(), header, &s.pki, "localhost", &req)
                .unwrap_or_else(|e| panic!("{what}: handshake failed: {e}"));
            let res = expect_response(outcome, &what);
            assert_eq!(res.status, 200, "{what}: {res:?}");
            assert_eq!(last_xff(&s.origin), ["198.51.100.7"], "{what}");
        }
        // The header and the request in one write, and keep-alive after it.
        let mut both = proxy_v1(client_src(), proxy_dst());
        both.extend_from_slice(&req);
        let res = expect_response(send_raw(s.proxy.client_plain(), &both, b""), "one write");
        assert_eq!(res.status, 200);
        // LOCAL (the balancer's own health check): the socket's address (a trusted proxy,
        // so a chain it sends would be kept; this request has none).
        let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
        let plain = get("/_matrix/client/versions", "localhost");
        let res = expect_response(send_raw(s.proxy.client_plain(), local, &plain), "LOCAL");
        assert_eq!(res.status, 200);
        assert_eq!(last_xff(&s.origin), ["127.0.0.1"], "LOCAL keeps the peer");
        // No header on a PROXY protocol listener: closed, nothing forwarded.
        let mark = s.origin.mark();
        match send_raw(s.proxy.client_plain(), b"", &req) {
            RawOutcome::Closed(bytes) => assert!(bytes.is_empty(), "{}", show(&bytes, 200)),
            other => panic!("a request without PROXY header must be closed: {other:?}"),
        }
        s.origin.assert_untouched_since(mark, "no PROXY header");
        // Listeners without proxy_protocol are unchanged.
        let res = s.exchange(
            Role::Federation,
            false,
            &get("/_matrix/key/v2/server", "localhost"),
        );
        assert_eq!(res.status, 200);
    });
}

#[test]
fn proxy_protocol_from_an_untrusted_peer_is_closed() {
    each_runtime(|rt| {
        let s = proxied_scene(rt, &[]);
        let req = get("/_matrix/client/versions", "localhost");
        let mark = s.origin.mark();
        match send_raw(
            s.proxy.client_plain(),
            &proxy_v1(client_src(), proxy_dst()),
            &req,
        ) {
            RawOutcome::Closed(bytes) => assert!(bytes.is_empty(), "{}", show(&bytes, 200)),
            other => panic!("an untrusted peer's connection must be closed: {other:?}"),
        }
        let tls = send_tls_after(
            s.proxy.client_tls(),
            &proxy_v2(client_src(), proxy_dst()),
            &s.pki,
            "localhost",
            &req,
        );
        assert!(
            !matches!(tls, Ok(RawOutcome::Response(_))),
            "an untrusted peer gets no answer over TLS either: {tls:?}"
        );
        s.origin
            .assert_untouched_since(mark, "untrusted PROXY peer");
    });
}
