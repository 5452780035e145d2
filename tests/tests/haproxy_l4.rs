//! HAProxy in TCP mode (`balance roundrobin`, `send-proxy-v2`) in front of two mxgate
//! replicas with the same worker configuration: whichever replica serves a user's `/sync`,
//! it lands on the same synchrotron, and the origin sees the real client address.
//!
//! HAProxy comes from [`tools::haproxy`]: the installed one, or Debian's package unpacked
//! into `target/debian-tools/haproxy/` on first use (no root needed). When neither works the
//! test fails with the command that fixes it.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mxgate_e2e::http::{parse_response, ResponseParse};
use mxgate_e2e::proxy::free_ports;
use mxgate_e2e::tools::{self, Tool};
use mxgate_e2e::workers::{sync_request, NamedOrigin};
use mxgate_e2e::*;
use socket2::{Domain, Socket, Type};

/// Enough users that both synchrotrons get some (all on one: 2 in 4096).
const USERS: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj",
];
/// The client's own address: not HAProxy's (127.0.0.1), so X-Forwarded-For tells them apart.
const CLIENT_IP: [u8; 4] = [127, 0, 0, 2];

/// A running HAProxy; killed (by PID) on drop, its output printed when the test fails.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(haproxy: &Tool, backends: &[SocketAddr]) -> Haproxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_ports(1)[0];
        let mut servers = String::new();
        for (i, b) in backends.iter().enumerate() {
            servers.push_str(&format!("    server mxgate{i} {b} send-proxy-v2\n"));
        }
        let config = format!(
            "global\n    maxconn 256\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
             frontend matrix\n    bind 127.0.0.1:{port}\n    default_backend mxgate\n\
             backend mxgate\n    balance roundrobin\n{servers}"
        );
        let cfg = dir.path().join("haproxy.cfg");
        fs::write(&cfg, &config).expect("write haproxy.cfg");
        let log = dir.path().join("haproxy.log");
        let out = fs::File::create(&log).expect("log file");
        let child = haproxy
            .command()
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", haproxy.program.display()));
        let mut h = Haproxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        };
        let ready = wait_until(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&h.addr, Duration::from_millis(200)).is_ok()
        });
        if !ready || h.child.try_wait().ok().flatten().is_some() {
            panic!(
                "haproxy did not start on {}:\nconfig:\n{config}\noutput:\n{}",
                h.addr,
                h.output()
            );
        }
        h
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- haproxy output:\n{}\n--- end", self.output());
        }
    }
}

/// One request on a new connection from 127.0.0.2; the response.
fn exchange_from_client_ip(addr: SocketAddr, request: &[u8]) -> Response {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((CLIENT_IP, 0)).into())
        .expect("bind 127.0.0.2");
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(3))
        .expect("connect to haproxy");
    let mut tcp: TcpStream = socket.into();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(request).expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Ok(ResponseParse::Done(res, _)) = parse_response(&buf, false, false) {
            return *res;
        }
        assert!(
            Instant::now() < deadline,
            "no response: {}",
            show(&buf, 300)
        );
        match tcp.read(&mut chunk) {
            Ok(0) => panic!("closed without a response: {}", show(&buf, 300)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("read: {e}; got {}", show(&buf, 300)),
        }
    }
}

#[test]
fn two_replicas_behind_haproxy_tcp_mode_agree_on_placement() {
    let bin = tools::haproxy();
    each_runtime(|rt| {
        let main = NamedOrigin::start("main");
        let sync = [NamedOrigin::start("sync1"), NamedOrigin::start("sync2")];
        let pki = Pki::new();
        let config = ProxyConfig::plain_client(main.url(), &pki)
            .listener_line(0, "proxy_protocol = true")
            .trusted_proxies(&["127.0.0.1"])
            .section(
                "workers.synchrotron",
                &format!(
                    "backends = [\"{}\", \"{}\"]\nhealth_interval = \"1s\"",
                    sync[0].url(),
                    sync[1].url()
                ),
            );
        let replicas = [Proxy::start(rt, config.clone()), Proxy::start(rt, config)];
        let haproxy = Haproxy::start(
            &bin,
            &[replicas[0].client_plain(), replicas[1].client_plain()],
        );

        let mut placement: HashMap<&str, String> = HashMap::new();
        for round in 0..4 {
            for &user in USERS {
                let res = exchange_from_client_ip(haproxy.addr, &sync_request(user, "localhost"));
                assert_eq!(res.status, 200, "{user}: {res:?}");
                let by = res.header("x-origin-name").expect("X-Origin-Name");
                assert!(by.starts_with("sync"), "{user}'s sync went to {by}");
                let first = placement.entry(user).or_insert_with(|| by.clone());
                assert_eq!(*first, by, "{user}'s sync moved in round {round}");
            }
        }
        // Both replicas served (round robin over fresh connections), each a share.
        for (i, r) in replicas.iter().enumerate() {
            let served = r.log().lines().filter(|l| l.contains("/sync")).count();
            assert!(
                served > 0,
                "replica {i} served no /sync; log:\n{}",
                r.log_tail(20)
            );
        }
        // Both synchrotrons have users, and saw the real client address.
        let used: std::collections::HashSet<_> = placement.values().collect();
        assert_eq!(used.len(), 2, "{placement:?}");
        for origin in &sync {
            for req in origin.traffic() {
                assert_eq!(
                    req.headers_named("x-forwarded-for"),
                    ["127.0.0.2"],
                    "{}: {}",
                    origin.name,
                    show(&req.raw, 400)
                );
            }
        }
    });
}
