//! The harness checked on its own, without a proxy: certificates, the recording origin,
//! the raw client and the rustls client. If these fail, no scenario result means anything.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mxgate_e2e::client::Transport;
use mxgate_e2e::origin::{big_body, chunked_body};
use mxgate_e2e::runtime::parse_runtime_list;
use mxgate_e2e::*;

#[test]
fn origin_records_exact_request_and_answers_json() {
    let origin = Origin::start();
    let mut c = Client::plain(origin.addr());
    let req = b"GET /_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/t1?a=b+c%20d HTTP/1.1\r\nHost: LocalHost:1\r\nX-Thing:  spaced  \r\n\r\n";
    let res = c.request(req).expect("response");
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["origin"], "ok");
    let r = origin.single_request();
    assert_eq!(r.head.raw, req.to_vec());
    assert_eq!(
        r.head.request_line(),
        b"GET /_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/t1?a=b+c%20d HTTP/1.1"
    );
    assert_eq!(r.head.header("host").as_deref(), Some("LocalHost:1"));
    assert_eq!(r.head.header("x-thing").as_deref(), Some("spaced"));
    assert_eq!(origin.raw(1), req.to_vec());
}

#[test]
fn origin_keep_alive_counts_connections() {
    let origin = Origin::start();
    let mut c = Client::plain(origin.addr());
    for i in 1..=3 {
        let res = c
            .request(&get("/_matrix/client/versions", "h"))
            .expect("response");
        assert_eq!(
            res.header("x-origin-seq").as_deref(),
            Some(i.to_string().as_str())
        );
    }
    assert_eq!(origin.accepted(), 1);
    let mut c2 = Client::plain(origin.addr());
    c2.request(&get("/x", "h")).expect("response");
    assert_eq!(origin.accepted(), 2);
    assert_eq!(origin.requests().len(), 4);
}

#[test]
fn origin_echoes_cl_and_chunked_bodies() {
    let origin = Origin::start();
    let mut c = Client::plain(origin.addr());
    let body = big_body(100_000);
    let mut req = format!(
        "POST /_matrix/test/echo-body HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let res = c.request(&req).expect("response");
    assert_eq!(res.json()["len"], 100_000);
    assert_eq!(res.json()["sha256"], sha256_hex(&body));

    let mut req =
        b"POST /_matrix/test/echo-body HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for piece in body.chunks(7000) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let res = c.request(&req).expect("response");
    assert_eq!(res.json()["len"], 100_000);
    assert_eq!(res.json()["sha256"], sha256_hex(&body));
    let reqs = origin.requests();
    assert!(reqs.iter().all(|r| r.body_complete && r.body == body));
}

#[test]
fn origin_special_paths() {
    let origin = Origin::start();
    let mut c = Client::plain(origin.addr());
    let res = c
        .request(&get("/_matrix/test/chunked", "h"))
        .expect("chunked");
    assert!(res.chunked);
    assert_eq!(res.body, chunked_body());

    let res = c
        .request(&get("/_matrix/test/big?bytes=3000000", "h"))
        .expect("big");
    assert_eq!(res.body.len(), 3_000_000);
    assert!(res.body == big_body(3_000_000));

    let t = Instant::now();
    let res = c
        .request(&get("/_matrix/test/slow?ms=300", "h"))
        .expect("slow");
    assert_eq!(res.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    let mut cut = Client::plain(origin.addr());
    let err = cut
        .request(&get("/_matrix/test/cut", "h"))
        .expect_err("cut must not complete");
    assert_eq!(err.end, End::Eof);
    assert!(err.partial.starts_with(b"HTTP/1.1 200 OK\r\n"));

    let mut silent = Client::plain(origin.addr());
    silent.timeout = Duration::from_millis(300);
    let t = Instant::now();
    let err = silent
        .request(&get("/_matrix/test/silent", "h"))
        .expect_err("silent");
    assert_eq!(err.end, End::Timeout);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "client timeout is bounded"
    );
}

#[test]
fn origin_assert_untouched_sees_a_single_byte() {
    let origin = Origin::start();
    origin.assert_untouched("fresh origin");
    let mut s = std::net::TcpStream::connect(origin.addr()).unwrap();
    s.write_all(b"G").unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        origin.assert_untouched("after one byte")
    }));
    assert!(r.is_err(), "one byte must count as touched");
}

#[test]
fn client_reports_eof_reset_and_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = thread::spawn(move || {
        // 1: answer partially then close.
        let (mut s, _) = l.accept().unwrap();
        let mut b = [0u8; 1024];
        let _ = s.read(&mut b);
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        drop(s);
        // 2: stay silent until the client gives up.
        let (s, _) = l.accept().unwrap();
        thread::sleep(Duration::from_millis(600));
        drop(s);
    });
    let mut c = Client::plain(addr);
    let e = c.request(&get("/", "h")).expect_err("incomplete");
    assert_eq!(e.end, End::Eof);
    assert!(e.partial.ends_with(b"abc"));
    let mut c = Client::plain(addr);
    c.timeout = Duration::from_millis(200);
    let e = c.request(&get("/", "h")).expect_err("timeout");
    assert_eq!(e.end, End::Timeout);
    server.join().unwrap();
}

/// A tiny rustls server answering one request per connection with the cert it was given.
fn tls_server(
    pki: &Pki,
    files: &CertFiles,
    connections: usize,
) -> (std::net::SocketAddr, thread::JoinHandle<()>) {
    let config = pki.server_config(files);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        for _ in 0..connections {
            let (sock, _) = l.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            if !buf.is_empty() {
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK");
                let _ = tls.flush();
            }
        }
    });
    (addr, h)
}

#[test]
fn tls_client_trusts_the_test_ca_and_sees_the_peer_certificate() {
    let pki = Pki::new();
    let (addr, server) = tls_server(&pki, &pki.server, 3);
    for sni in ["localhost", "127.0.0.1", "matrix.example.org"] {
        let mut c = Client::tls(addr, &pki, sni);
        assert_eq!(pki.which(c.peer_cert.as_deref()), "server", "SNI {sni}");
        let res = c.request(&get("/health", sni)).expect("response over TLS");
        assert_eq!(res.text(), "OK");
        assert_eq!(c.alpn, None);
        let _ = c.read_to_end(Duration::from_millis(100));
    }
    server.join().unwrap();
}

#[test]
fn tls_client_rejects_a_certificate_for_another_name() {
    let pki = Pki::new();
    let (addr, server) = tls_server(&pki, &pki.other, 2);
    let ok = Client::tls(addr, &pki, "other.example.org");
    assert_eq!(pki.which(ok.peer_cert.as_deref()), "other");
    drop(ok);
    let err = Client::try_tls(addr, pki.client_config(), "localhost")
        .err()
        .expect("name mismatch");
    assert!(
        err.to_string().contains("NotValidForName")
            || err.to_string().to_lowercase().contains("name"),
        "{err}"
    );
    server.join().unwrap();
}

#[test]
fn reissued_certificate_differs_and_replaces_the_file() {
    let pki = Pki::new();
    let before = std::fs::read(&pki.server.cert).unwrap();
    let new = pki.issue(&["localhost", "127.0.0.1"], "server");
    assert_eq!(new.cert, pki.server.cert);
    assert_ne!(std::fs::read(&new.cert).unwrap(), before);
    assert_ne!(new.der, pki.server.der);
}

#[test]
fn config_render_is_the_explicit_form() {
    let origin = Origin::start();
    let pki = Pki::new();
    let cfg = ProxyConfig::new(&origin, &pki)
        .max_body("1MiB")
        .upstream_response("2s")
        .section("limits", "max_headers = 50")
        .trusted_proxies(&["10.0.0.0/8"])
        .admin_allow(&["10.9.9.9/32"]);
    let text = cfg.render(&[1, 2, 3, 4]);
    assert!(
        text.starts_with("server_name = \"localhost\"\npublic_url = \"https://localhost:1\"\n"),
        "{text}"
    );
    assert!(text.contains(&format!("homeserver = \"{}\"", origin.url())));
    assert!(text
        .contains("[[listeners]]\nrole = \"federation\"\nbind = [\"127.0.0.1:4\"]\ntls = false"));
    assert!(text.contains("[limits]\nmax_body = \"1MiB\"\nmax_headers = 50\n"));
    assert!(text.contains("[[tls.sni]]\nnames = [\"other.example.org\"]"));
    assert_eq!(text.matches("[limits]").count(), 1);
}

#[test]
fn runtime_list_parsing() {
    assert_eq!(
        parse_runtime_list("mxgate, mxgate-std").unwrap(),
        ["mxgate", "mxgate-std"]
    );
    assert!(parse_runtime_list("nginx").is_err());
    assert!(parse_runtime_list(" , ").is_err());
}

#[test]
fn transport_half_close_reaches_the_peer() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        s.write_all(&all).unwrap();
    });
    let mut c = Client::plain(addr);
    c.send(b"ping").unwrap();
    c.close_write();
    let (bytes, end) = c.read_to_end(Duration::from_secs(3));
    assert_eq!(bytes, b"ping");
    assert_eq!(end, End::Eof);
    h.join().unwrap();
    let _ = <std::net::TcpStream as Transport>::tcp;
}
