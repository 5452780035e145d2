//! TLS termination: certificate choice by SNI, and reload on SIGHUP.

use std::time::{Duration, Instant};

use mxgate_e2e::pki::SERVER_NAMES;
use mxgate_e2e::*;

/// SNI `other.example.org` gets the SNI certificate; the default names, an IP (no SNI) and
/// unknown names get the default certificate; requests work on both.
#[test]
fn sni_selects_the_certificate() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for addr in [s.proxy.client_tls(), s.proxy.federation_tls()] {
            for (sni, want) in [
                ("localhost", "server"),
                ("matrix.example.org", "server"),
                ("127.0.0.1", "server"),
                ("other.example.org", "other"),
            ] {
                let mut c = Client::tls(addr, &s.pki, sni);
                assert_eq!(
                    s.pki.which(c.peer_cert.as_deref()),
                    want,
                    "{addr} with SNI {sni}"
                );
                let res = c
                    .request(&get("/health", sni))
                    .unwrap_or_else(|e| panic!("SNI {sni}: {e:?}"));
                assert_eq!(res.status, 200, "SNI {sni}: {res:?}");
            }
        }
    });
}

/// After the certificate files are replaced and SIGHUP is sent, new handshakes see the new
/// certificate; the process keeps running and serving.
#[test]
fn sighup_reloads_certificates() {
    each_runtime(|rt| {
        let mut s = Scene::start(rt);
        let addr = s.proxy.client_tls();
        let old = Client::tls(addr, &s.pki, "localhost");
        // Let start-up finish (signal handlers installed); the race right after start is
        // `sighup_right_after_start_does_not_kill` below.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(s.pki.which(old.peer_cert.as_deref()), "server");

        let renewed = s.pki.issue(SERVER_NAMES, "server");
        let renewed_other = s.pki.issue(&["other.example.org"], "other");
        s.proxy.signal(libc::SIGHUP);

        let started = Instant::now();
        let mut last = String::new();
        let reloaded = wait_until(Duration::from_secs(5), || {
            match Client::try_tls(addr, s.pki.client_config(), "localhost") {
                Ok(c) => {
                    let got = c.peer_cert.clone().unwrap_or_default();
                    last = if got == renewed.der {
                        "renewed".into()
                    } else {
                        s.pki.which(Some(&got))
                    };
                    got == renewed.der
                }
                Err(e) => {
                    last = format!("handshake failed: {e}");
                    false
                }
            }
        });
        if let Some(status) = s.proxy.try_exit() {
            panic!("the proxy exited on SIGHUP ({status}) instead of reloading");
        }
        assert!(
            reloaded,
            "5 s after SIGHUP new handshakes still get: {last}"
        );
        eprintln!("reload seen after {:?}", started.elapsed());

        let c = Client::tls(addr, &s.pki, "other.example.org");
        assert_eq!(
            c.peer_cert.as_deref(),
            Some(renewed_other.der.as_slice()),
            "SNI certificates are reloaded too"
        );
        let res = s.exchange(
            Role::Client,
            true,
            &get("/_matrix/client/versions", "localhost"),
        );
        assert_eq!(res.status, 200, "serving after reload: {res:?}");
    });
}

/// SIGHUP as soon as the listeners accept (a `systemctl reload` or logrotate right after a
/// start) must not kill the process: the handler has to be in place before binding.
#[test]
fn sighup_right_after_start_does_not_kill() {
    each_runtime(|rt| {
        // One listener: readiness is seen the moment it accepts, narrowing the gap to the
        // signal as much as a test can.
        let mut s = Scene::with(rt, |mut c| {
            c.listeners = vec![ListenerSpec {
                role: Role::Client,
                tls: true,
            }];
            c
        });
        s.proxy.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = s.proxy.try_exit() {
            panic!(
                "the proxy died of a SIGHUP sent right after its ports accepted ({status}): \
                 install the SIGHUP handler before binding the listeners"
            );
        }
        let res = s.exchange(Role::Client, true, &get("/health", "localhost"));
        assert_eq!(res.status, 200, "{res:?}");
    });
}
