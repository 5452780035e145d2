//! What the client sees when the origin is down, silent, or breaks off.

use std::time::{Duration, Instant};

use mxgate_e2e::proxy::dead_port;
use mxgate_e2e::*;

/// Nothing listening upstream: 502 quickly (well under 2 s), on TLS and plain.
#[test]
fn upstream_down_gives_502_quickly() {
    each_runtime(|rt| {
        let origin = Origin::start();
        let pki = Pki::new();
        let mut cfg = ProxyConfig::new(&origin, &pki);
        cfg.homeserver = format!("http://127.0.0.1:{}", dead_port());
        let proxy = Proxy::start(rt, cfg);
        for (addr, tls) in [(proxy.client_tls(), true), (proxy.client_plain(), false)] {
            let mut c = if tls {
                Client::tls(addr, &pki, "localhost")
            } else {
                Client::plain(addr)
            };
            let t = Instant::now();
            let res = c
                .request(&get("/_matrix/client/versions", "localhost"))
                .unwrap_or_else(|e| panic!("tls={tls}: {e:?}"));
            let took = t.elapsed();
            assert_eq!(res.status, 502, "tls={tls}: {res:?}");
            assert!(
                took < Duration::from_secs(2),
                "tls={tls}: 502 took {took:?}"
            );
        }
    });
}

/// An origin that never answers: 504 after `[timeouts] upstream_response` (2 s here).
#[test]
fn upstream_silent_gives_504_after_timeout() {
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.upstream_response("2s"));
        for (role, tls) in CLIENT_LISTENERS {
            let mut c = s.connect(role, tls);
            c.timeout = Duration::from_secs(8);
            let t = Instant::now();
            let res = c
                .request(&get("/_matrix/test/silent", "localhost"))
                .unwrap_or_else(|e| panic!("tls={tls}: {e:?}"));
            let took = t.elapsed();
            assert_eq!(res.status, 504, "tls={tls}: {res:?}");
            assert!(
                took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
                "tls={tls}: 504 after {took:?}, expected about 2 s"
            );
        }
    });
}

/// An origin that closes mid-body: the client connection is closed without a complete
/// response (never a truncated body passed off as whole).
#[test]
fn upstream_cut_mid_body_closes_client() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (role, tls) in CLIENT_LISTENERS {
            let mut c = s.connect(role, tls);
            match c.request(&get("/_matrix/test/cut", "localhost")) {
                Ok(res) => {
                    assert_ne!(
                        res.status, 200,
                        "tls={tls}: a cut body arrived as complete: {res:?}"
                    );
                    assert!(
                        c.closed_within(Duration::from_secs(3)),
                        "tls={tls}: after {} the connection must close",
                        res.status
                    );
                }
                Err(e) => assert_ne!(
                    e.end,
                    End::Timeout,
                    "tls={tls}: the proxy neither finished nor closed the connection: {e:?}"
                ),
            }
        }
        // The admin is told why (the line is written as the engine reports the fault).
        let said = |log: String| log.contains("closed before the response was complete");
        let deadline = Instant::now() + Duration::from_secs(3);
        while !said(s.proxy.log()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            said(s.proxy.log()),
            "the proxy's log does not say why: {}",
            s.proxy.log_tail(20)
        );
    });
}
