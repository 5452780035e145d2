//! Embeds `mxgate::Server` against a tiny in-test origin: keep-alive reuse of upstream
//! connections, recovery from idle connections the origin closed, TLS, and a graceful
//! shutdown that lets an in-flight request finish.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mxgate_core::config::parse_config;

/// An HTTP/1.1 origin: answers every request with its own request head as the body
/// (`/slow` after 600 ms), keeps connections alive, and closes a connection that stays idle
/// for `idle_close`.
struct Origin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

fn origin(idle_close: Duration) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || serve_origin_conn(stream, idle_close));
        }
    });
    Origin { addr, accepted }
}

fn serve_origin_conn(stream: TcpStream, idle_close: Duration) {
    stream.set_read_timeout(Some(idle_close)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        if head.starts_with("GET /_matrix/slow") {
            thread::sleep(Duration::from_millis(600));
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{head}",
            head.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads one response with a Content-Length body; returns (status line, body).
fn read_response(reader: &mut impl BufRead) -> (String, String) {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    (
        status.trim_end().to_string(),
        String::from_utf8(body).unwrap(),
    )
}

const GET: &str = "GET /_matrix/client/versions HTTP/1.1\r\nHost: matrix.example.com\r\n\r\n";

struct Running {
    addrs: Vec<(String, SocketAddr)>,
    stop: smol::channel::Sender<()>,
    thread: thread::JoinHandle<anyhow::Result<()>>,
}

fn start(toml: &str) -> Running {
    let config = parse_config(toml, Path::new("test.toml")).unwrap();
    let server = mxgate::Server::bind(Arc::new(config)).unwrap();
    let addrs = server.local_addrs();
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let thread = thread::spawn(move || {
        server.run(async move {
            let _ = stopped.recv().await;
        })
    });
    Running {
        addrs,
        stop,
        thread,
    }
}

impl Running {
    fn addr(&self) -> SocketAddr {
        self.addrs[0].1
    }
    fn stop(self) {
        drop(self.stop);
        self.thread.join().unwrap().unwrap();
    }
}

fn config(origin: SocketAddr, extra: &str) -> String {
    format!(
        r#"server_name = "example.com"
public_url = "https://matrix.example.com"
homeserver = "http://{origin}"
{extra}
[[listeners]]
role = "client"
bind = ["127.0.0.1:0"]
tls = false

[timeouts]
drain = "5s"

[runtime]
threads = 2
access_log = "off"
"#
    )
}

#[test]
fn upstream_connections_are_reused_across_requests_and_clients() {
    let origin = origin(Duration::from_secs(30));
    let proxy = start(&config(origin.addr, ""));
    let mut client = TcpStream::connect(proxy.addr()).unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    for _ in 0..5 {
        client.write_all(GET.as_bytes()).unwrap();
        let (status, body) = read_response(&mut reader);
        assert_eq!(status, "HTTP/1.1 200 OK");
        let lower = body.to_ascii_lowercase();
        assert!(lower.contains("x-forwarded-for: 127.0.0.1"), "{body}");
        assert!(lower.contains("host: matrix.example.com"), "{body}");
    }
    for _ in 0..5 {
        let mut client = TcpStream::connect(proxy.addr()).unwrap();
        client.write_all(GET.as_bytes()).unwrap();
        let (status, _) = read_response(&mut BufReader::new(client));
        assert_eq!(status, "HTTP/1.1 200 OK");
    }
    assert_eq!(origin.accepted.load(Ordering::SeqCst), 1);
    proxy.stop();
}

#[test]
fn idle_connections_closed_by_the_origin_are_not_a_failure() {
    let origin = origin(Duration::from_millis(50));
    let proxy = start(&config(origin.addr, ""));
    for _ in 0..3 {
        let mut client = TcpStream::connect(proxy.addr()).unwrap();
        client.write_all(GET.as_bytes()).unwrap();
        let (status, _) = read_response(&mut BufReader::new(client));
        assert_eq!(status, "HTTP/1.1 200 OK");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(origin.accepted.load(Ordering::SeqCst), 3);
    proxy.stop();
}

#[test]
fn shutdown_lets_the_request_in_flight_finish_and_refuses_new_ones() {
    let origin = origin(Duration::from_secs(30));
    let proxy = start(&config(origin.addr, ""));
    let addr = proxy.addr();
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .write_all(b"GET /_matrix/slow HTTP/1.1\r\nHost: matrix.example.com\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(150));
    let started = Instant::now();
    let stopping = thread::spawn(move || proxy.stop());
    thread::sleep(Duration::from_millis(100));
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after shutdown began"
    );
    let mut reader = BufReader::new(client);
    let (status, _) = read_response(&mut reader);
    assert_eq!(status, "HTTP/1.1 200 OK");
    // The connection closes after the exchange instead of staying alive.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    stopping.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let origin = origin(Duration::from_secs(30));
    let proxy = start(&config(origin.addr, ""));
    // Idle after an exchange, and idle before its first request.
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(proxy.addr()).unwrap())
        .collect();
    for client in &mut idle[..2] {
        client.write_all(GET.as_bytes()).unwrap();
        let (status, _) = read_response(&mut BufReader::new(client.try_clone().unwrap()));
        assert_eq!(status, "HTTP/1.1 200 OK");
    }
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    proxy.stop();
    // Far below `drain = "5s"`: nothing waited for the idle connections.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for client in idle {
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut rest = Vec::new();
        let read = (&client).read_to_end(&mut rest);
        assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    }
}

#[test]
fn tls_listener_serves_http11_with_the_configured_certificate() {
    let dir = std::env::temp_dir().join(format!("mxgate-smol-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let generated =
        rcgen::generate_simple_self_signed(vec!["matrix.example.com".to_string()]).unwrap();
    std::fs::write(dir.join("c.pem"), generated.cert.pem()).unwrap();
    std::fs::write(dir.join("k.pem"), generated.key_pair.serialize_pem()).unwrap();
    let origin = origin(Duration::from_secs(30));
    let toml = config(
        origin.addr,
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.join("c.pem").display(),
            dir.join("k.pem").display()
        ),
    )
    .replace("tls = false", "tls = true");
    let proxy = start(&toml);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(generated.cert.der().clone()).unwrap();
    let mut client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    // A client that speaks only HTTP/1.1 gets it (one offering h2 too gets h2, below).
    client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let h2_config = {
        let mut c = client_config.clone();
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(c)
    };
    let conn = rustls::ClientConnection::new(
        Arc::new(client_config),
        "matrix.example.com".try_into().unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(proxy.addr()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    for _ in 0..2 {
        tls.write_all(GET.as_bytes()).unwrap();
        let (status, body) = read_response(&mut BufReader::new(&mut tls));
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            body.to_ascii_lowercase()
                .contains("x-forwarded-proto: https"),
            "{body}"
        );
    }
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(tls);
    let conn =
        rustls::ClientConnection::new(h2_config, "matrix.example.com".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(proxy.addr()).unwrap());
    tls.write_all(mxgate_core::http2::PREFACE).unwrap();
    tls.flush().unwrap();
    assert_eq!(
        tls.conn.alpn_protocol(),
        Some(&b"h2"[..]),
        "TLS listeners offer h2 by default"
    );
    drop(tls);
    proxy.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn closing_sends_the_fin_at_once_while_the_client_still_listens() {
    let origin = origin(Duration::from_secs(30));
    let proxy = start(&config(origin.addr, ""));
    let mut client = TcpStream::connect(proxy.addr()).unwrap();
    client
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: matrix.example.com\r\nConnection: close\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(client);
    let (status, _) = read_response(&mut reader);
    assert_eq!(status, "HTTP/1.1 200 OK");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "EOF took {:?}",
        started.elapsed()
    );
    proxy.stop();
}
