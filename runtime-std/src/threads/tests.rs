//! The library API in-process: proxying, local answers, the 503 without a free slot, and
//! `serve` returning promptly after `Control::Shutdown`.

use std::io::{Read, Write};
use std::path::Path;

use super::*;

/// A one-connection origin answering every request on it with `200 ok`.
fn origin() -> u16 {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut tcp, _) = socket.accept().unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = tcp.read(&mut buf) {
            head.extend_from_slice(&buf[..n]);
            while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                head.drain(..end + 4);
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        }
    });
    port
}

type Running = (
    SocketAddr,
    Sender<Control>,
    thread::JoinHandle<anyhow::Result<()>>,
);

fn start(extra: &str) -> Running {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = format!(
        "server_name = \"localhost\"\nhomeserver = \"http://127.0.0.1:{}\"\n\n\
         [[listeners]]\nrole = \"client\"\nbind = [\"{addr}\"]\ntls = false\n{extra}",
        origin()
    );
    let config = mxgate_core::config::parse_config(&text, Path::new("test.toml")).unwrap();
    let (control, requests) = mpsc::channel();
    let server = thread::spawn(move || serve(Arc::new(config), requests));
    for _ in 0..500 {
        if TcpStream::connect(addr).is_ok() {
            return (addr, control, server);
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("not listening on {addr}");
}

/// Sends `request` and reads until the proxy closes or `want` arrived.
fn exchange(tcp: &mut TcpStream, request: &str, want: &str) -> String {
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(want) {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn stop((_, control, server): Running) {
    let started = Instant::now();
    control.send(Control::Shutdown).unwrap();
    server.join().unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn proxies_answers_locally_and_shuts_down() {
    let running = start("");
    let mut tcp = TcpStream::connect(running.0).unwrap();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let res = exchange(&mut tcp, &get("/_matrix/client/versions"), "\r\n\r\nok");
    assert!(res.starts_with("HTTP/1.1 200 "), "{res}");
    let res = exchange(&mut tcp, &get("/health"), "OK");
    assert!(res.starts_with("HTTP/1.1 200 "), "{res}");
    // An idle keep-alive connection does not hold up the shutdown.
    stop(running);
}

#[test]
fn no_free_slot_gets_503() {
    let running = start("\n[runtime]\nthreads = 1\n");
    let request = "GET /health HTTP/1.1\r\nHost: a\r\n\r\n";
    // The readiness probe of `start` may still hold the slot for a moment.
    let (mut first, mut tries) = (TcpStream::connect(running.0).unwrap(), 0);
    while !exchange(&mut first, request, "OK").starts_with("HTTP/1.1 200 ") {
        assert!(tries < 100, "the slot never became free");
        (first, tries) = (TcpStream::connect(running.0).unwrap(), tries + 1);
        thread::sleep(Duration::from_millis(20));
    }
    let mut second = TcpStream::connect(running.0).unwrap();
    let res = exchange(&mut second, request, "}");
    assert!(res.starts_with("HTTP/1.1 503 "), "{res}");
    drop(first);
    stop(running);
}
