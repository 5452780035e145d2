//! Certificates by ACME (issue 15), end to end against a real ACME server (Debian's
//! Pebble, see `mxgate_e2e::acme`): first issuance by TLS-ALPN-01 and by HTTP-01, the
//! served chain verified against Pebble's root by a real TLS client, a restart that reuses
//! the stored certificate (Pebble sees no new order), a restart with Pebble stopped,
//! renewal of a short-lived certificate under an open connection, and the time before the
//! first certificate; a configuration reload keeps the obtained certificate served. Only
//! the `mxgate` binary runs ACME (mxgate-std refuses it: tested
//! too). Pebble rejects 5 % of nonces, as by default, so orders are retried.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mxgate_e2e::acme::{wait_for, Pebble, PebbleOptions};
use mxgate_e2e::proxy::free_ports;
use mxgate_e2e::runtime::binary;
use mxgate_e2e::*;

/// Longest wait for a certificate to be obtained or renewed (one order takes 3-10 s,
/// and a rejected nonce costs a retry after 1-3 s).
const ISSUANCE: Duration = Duration::from_secs(60);
const NAMES: [&str; 2] = ["matrix.example.test", "example.test"];

fn mxgate() -> Runtime {
    Runtime {
        name: "mxgate".into(),
        bin: binary("mxgate").unwrap_or_else(|e| panic!("{e}")),
    }
}

/// mxgate with no certificate configured, its ACME state in `state`, trusting `pki`'s CA
/// for the ACME server at `directory`; with a plain listener when `plain`.
fn acme_config(
    origin: &Origin,
    pki: &Pki,
    state: &Path,
    directory: &str,
    challenges: &str,
    plain: bool,
) -> ProxyConfig {
    let mut config = ProxyConfig::new(origin, pki);
    config.server_name = "example.test".into();
    config.public_url = Some("https://matrix.example.test".into());
    config.tls = None;
    config.sni.clear();
    config.listeners = vec![ListenerSpec {
        role: Role::Client,
        tls: true,
    }];
    if plain {
        config.listeners.push(ListenerSpec {
            role: Role::Client,
            tls: false,
        });
    }
    config.section(
        "acme",
        &format!(
            "directory = \"{directory}\"\nca_root = \"{}\"\nstate_dir = \"{}\"\nchallenges = {challenges}\nemail = \"admin@example.test\"",
            pki.ca_pem_path.display(),
            state.display()
        ),
    )
}

/// The certificate a verifying client sees for `name`, once it gets one.
fn served(
    proxy: &Proxy,
    config: &std::sync::Arc<rustls::ClientConfig>,
    name: &str,
) -> Option<Vec<u8>> {
    Client::try_tls(proxy.client_tls(), config.clone(), name)
        .ok()
        .and_then(|c| c.peer_cert)
}

/// The certificate served for the first name, once issued; panics with Pebble's log when
/// none comes within [`ISSUANCE`].
fn first_certificate(
    proxy: &Proxy,
    trusting_pebble: &std::sync::Arc<rustls::ClientConfig>,
    pebble: &Pebble,
) -> Vec<u8> {
    wait_for(ISSUANCE, || served(proxy, trusting_pebble, NAMES[0])).unwrap_or_else(|| {
        panic!(
            "no certificate within {ISSUANCE:?}\npebble:\n{}",
            pebble.log()
        )
    })
}

fn stored_files(state: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(state).expect("state dir").flatten() {
        for file in std::fs::read_dir(dir.path()).expect("server dir").flatten() {
            files.push(file.path());
        }
    }
    files.sort();
    files
}

#[test]
fn tls_alpn_01_issues_then_restarts_reuse_the_stored_certificate() {
    let origin = Origin::start();
    let pki = Pki::new();
    let work = tempfile::tempdir().expect("temp dir");
    let state = work.path().join("state");
    let ports = free_ports(1);
    let mut pebble = Pebble::start(
        &pki,
        &work.path().join("pebble"),
        PebbleOptions {
            tls_port: ports[0],
            http_port: 1,
            validity_seconds: None,
        },
    );
    let config = acme_config(
        &origin,
        &pki,
        &state,
        &pebble.directory(),
        "[\"tls-alpn-01\"]",
        false,
    );
    let rt = mxgate();
    let started = Instant::now();
    let proxy = Proxy::start_on(&rt, config.clone(), &ports);
    let trusting_pebble = pebble.client_config(&pki);
    let cert = first_certificate(&proxy, &trusting_pebble, &pebble);
    println!(
        "certificate served {:.1} s after the test began",
        started.elapsed().as_secs_f64()
    );
    assert!(proxy
        .log()
        .contains("waiting for the first certificate by ACME"));

    // Both names, verified against Pebble's root; requests go through.
    for name in NAMES {
        let mut c = Client::try_tls(proxy.client_tls(), trusting_pebble.clone(), name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.peer_cert.as_deref(), Some(&cert[..]));
        let r = c
            .request(&get("/_matrix/client/versions", name))
            .expect("request");
        assert_eq!(r.status, 200);
    }
    // A name it does not certify: the handshake fails (no wrong certificate).
    assert!(Client::try_tls(proxy.client_tls(), trusting_pebble.clone(), "other.test").is_err());
    // The test CA (not Pebble's root) does not verify it.
    assert!(Client::try_tls(proxy.client_tls(), pki.client_config(), NAMES[0]).is_err());

    // State: account key and certificate, private.
    let files = stored_files(&state);
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    let orders = pebble.orders();
    assert!(orders >= 1);

    // `mxgate check` shows the plan and what is stored, with the expiry.
    let out = std::process::Command::new(&rt.bin)
        .args(["check", "--config"])
        .arg(&proxy.config_path)
        .output()
        .expect("mxgate check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for part in [
        "names = [\"matrix.example.test\", \"example.test\"]",
        "challenges = [\"tls-alpn-01\"]",
        "# stored: account key ",
        "# stored: certificate ",
        "expires in 1826.0 days",
    ] {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }

    // Restart: the stored certificate at once, no new order.
    drop(proxy);
    let proxy = Proxy::start(&rt, config.clone());
    let again = served(&proxy, &trusting_pebble, NAMES[0]).expect("served at once after restart");
    assert_eq!(again, cert);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        pebble.orders(),
        orders,
        "a restart with a valid certificate orders nothing"
    );
    assert!(
        proxy.log().contains("stored certificate served"),
        "{}",
        proxy.log()
    );

    // Pebble down, restart: still served.
    pebble.stop();
    drop(proxy);
    let proxy = Proxy::start(&rt, config);
    let again =
        served(&proxy, &trusting_pebble, NAMES[1]).expect("served with the ACME server down");
    assert_eq!(again, cert);
}

#[test]
fn http_01_issues_and_plain_http_redirects() {
    let origin = Origin::start();
    let pki = Pki::new();
    let work = tempfile::tempdir().expect("temp dir");
    let state = work.path().join("state");
    let rt = mxgate();
    // mxgate first (its ports are Pebble's validation ports), pointed at a directory port
    // that Pebble then takes.
    let pebble_dir = work.path().join("pebble");
    let ports = free_ports(2);
    let (tls_port, http_port) = (ports[0], ports[1]);
    let pebble = Pebble::start(
        &pki,
        &pebble_dir,
        PebbleOptions {
            tls_port,
            http_port,
            validity_seconds: None,
        },
    );
    let config = acme_config(
        &origin,
        &pki,
        &state,
        &pebble.directory(),
        "[\"http-01\"]",
        true,
    );
    let proxy = Proxy::start_on(&rt, config.clone(), &ports);
    let trusting_pebble = pebble.client_config(&pki);
    let cert = first_certificate(&proxy, &trusting_pebble, &pebble);
    // A configuration reload (SIGHUP) keeps serving the obtained certificate.
    let reloaded = config.max_body("1MiB").render(&ports);
    std::fs::write(&proxy.config_path, reloaded).expect("rewrite config");
    proxy.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), || {
        proxy.log().contains("configuration reloaded").then_some(())
    })
    .unwrap_or_else(|| panic!("no reload in the log:\n{}", proxy.log_tail(30)));
    assert_eq!(
        served(&proxy, &trusting_pebble, NAMES[0]).as_deref(),
        Some(&cert[..]),
        "the ACME certificate after a reload:\n{}",
        proxy.log_tail(30)
    );
    // Validated by HTTP-01: Pebble's validation fetched the key authorization from mxgate.
    assert!(
        proxy
            .log()
            .lines()
            .any(|l| l.contains("GET /.well-known/acme-challenge/")
                && l.contains("\" 200 ")
                && l.contains("Pebble-VA")),
        "{}",
        proxy.log()
    );
    let mut c =
        Client::try_tls(proxy.client_tls(), trusting_pebble.clone(), NAMES[1]).expect("verified");
    assert_eq!(c.peer_cert.as_deref(), Some(&cert[..]));
    assert_eq!(
        c.request(&get("/_matrix/client/versions", NAMES[1]))
            .unwrap()
            .status,
        200
    );

    // Plain HTTP: 308 to HTTPS, except ACME challenges.
    let mut plain = Client::plain(proxy.client_plain());
    let r = plain
        .request(&get("/_matrix/client/versions?a=b", "matrix.example.test"))
        .unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!(
            "https://matrix.example.test:{tls_port}/_matrix/client/versions?a=b"
        ))
    );
    let r = plain
        .request(&get(
            "/.well-known/acme-challenge/unknown",
            "matrix.example.test",
        ))
        .unwrap();
    assert_eq!(r.status, 404);
    assert!(origin
        .requests()
        .iter()
        .all(|r| !String::from_utf8_lossy(&r.head.target).contains("acme")));
}

#[test]
fn renewal_swaps_the_certificate_under_an_open_connection() {
    let origin = Origin::start();
    let pki = Pki::new();
    let work = tempfile::tempdir().expect("temp dir");
    let state = work.path().join("state");
    let rt = mxgate();
    let ports = free_ports(2);
    let (tls_port, metrics_port) = (ports[0], ports[1]);
    // 30 s certificates: renewed 20 s after issuance.
    let pebble = Pebble::start(
        &pki,
        &work.path().join("pebble"),
        PebbleOptions {
            tls_port,
            http_port: 1,
            validity_seconds: Some(30),
        },
    );
    let config = acme_config(
        &origin,
        &pki,
        &state,
        &pebble.directory(),
        "[\"tls-alpn-01\"]",
        false,
    )
    .section(
        "runtime",
        &format!("metrics = \"127.0.0.1:{metrics_port}\""),
    );
    let proxy = Proxy::start_on(&rt, config, &[tls_port]);
    let trusting_pebble = pebble.client_config(&pki);
    let first = first_certificate(&proxy, &trusting_pebble, &pebble);
    let mut open = Client::try_tls(proxy.client_tls(), trusting_pebble.clone(), NAMES[0]).unwrap();
    assert_eq!(open.peer_cert.as_deref(), Some(&first[..]));
    assert_eq!(
        open.request(&get("/_matrix/client/versions", NAMES[0]))
            .unwrap()
            .status,
        200
    );
    let orders = pebble.orders();

    let renewed = wait_for(Duration::from_secs(20) + ISSUANCE, || {
        served(&proxy, &trusting_pebble, NAMES[0]).filter(|c| *c != first)
    })
    .unwrap_or_else(|| {
        panic!(
            "not renewed\npebble:\n{}\nmxgate:\n{}",
            pebble.log(),
            proxy.log()
        )
    });
    assert!(pebble.orders() > orders);
    // The connection opened before the renewal still works, on its certificate.
    assert_eq!(
        open.request(&get("/_matrix/client/versions", NAMES[0]))
            .unwrap()
            .status,
        200
    );
    assert_ne!(renewed, first);
    // The expiry is exported per name.
    let metrics = String::from_utf8_lossy(
        &Client::plain(([127, 0, 0, 1], metrics_port).into())
            .request(&get("/metrics", "localhost"))
            .expect("GET /metrics")
            .body,
    )
    .into_owned();
    for name in NAMES {
        assert!(
            metrics.contains(&format!(
                "mxgate_certificate_expiry_seconds{{name=\"{name}\"}}"
            )),
            "{metrics}"
        );
    }
}

#[test]
fn before_the_first_certificate_handshakes_fail_cleanly_and_std_refuses_acme() {
    let origin = Origin::start();
    let pki = Pki::new();
    let work = tempfile::tempdir().expect("temp dir");
    let state = work.path().join("state");
    // Nothing listens at the directory: the ACME server is down.
    let directory = format!("https://127.0.0.1:{}/dir", free_ports(1)[0]);
    let config = acme_config(&origin, &pki, &state, &directory, "[\"tls-alpn-01\"]", true);
    let proxy = Proxy::start(&mxgate(), config.clone());
    for name in NAMES.iter().chain(&["other.test"]) {
        assert!(Client::try_tls(proxy.client_tls(), pki.client_config(), name).is_err());
    }
    let logged = wait_for(Duration::from_secs(10), || {
        let log = proxy.log();
        (log.contains("waiting for the first certificate by ACME")
            && log.contains("ACME order failed"))
        .then_some(())
    });
    assert!(logged.is_some(), "{}", proxy.log());
    // Still serving plain HTTP (the redirect) and still alive.
    let r = Client::plain(proxy.client_plain())
        .request(&get("/", "matrix.example.test"))
        .unwrap();
    assert_eq!(r.status, 308);

    // The std runtime says ACME needs the mxgate binary.
    let std_bin = binary("mxgate-std").unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(std_bin)
        .args(["run", "--config"])
        .arg(&proxy.config_path)
        .output()
        .expect("run mxgate-std");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only the `mxgate` binary"), "{err}");
}

#[test]
fn after_failed_orders_the_next_challenge_kind_is_tried() {
    let origin = Origin::start();
    let pki = Pki::new();
    let work = tempfile::tempdir().expect("temp dir");
    let state = work.path().join("state");
    let ports = free_ports(3);
    // Pebble validates HTTP-01 on a port where nothing listens: http-01 cannot succeed.
    let pebble = Pebble::start(
        &pki,
        &work.path().join("pebble"),
        PebbleOptions {
            tls_port: ports[0],
            http_port: ports[2],
            validity_seconds: None,
        },
    );
    let config = acme_config(
        &origin,
        &pki,
        &state,
        &pebble.directory(),
        "[\"http-01\", \"tls-alpn-01\"]",
        true,
    );
    let proxy = Proxy::start_on(&mxgate(), config, &ports[..2]);
    let trusting_pebble = pebble.client_config(&pki);
    let cert = first_certificate(&proxy, &trusting_pebble, &pebble);
    assert!(!cert.is_empty());
    let log = proxy.log();
    assert!(
        log.contains("failed ACME orders with http-01: trying tls-alpn-01"),
        "{log}"
    );
}
