//! A recording origin server standing in for Synapse: std threads on 127.0.0.1:0.
//!
//! It records every byte each connection sends and every request it parses (head exactly as
//! received, body), and answers by path:
//!
//! | path | answer |
//! | --- | --- |
//! | anything else | 200, small JSON, `Content-Length` |
//! | `/_matrix/test/chunked` | 200 chunked, [`CHUNKS`] sent one by one 30 ms apart |
//! | `/_matrix/test/slow?ms=N` | the default answer after N ms |
//! | `/_matrix/test/silent` | nothing, ever (the connection stays open) |
//! | `/_matrix/test/deaf` | nothing, and the body is never read (the connection stays open) |
//! | `/_matrix/test/big?bytes=N` | 200 with N bytes of [`big_body`], `Content-Length` |
//! | `/_matrix/test/cut` | `Content-Length: 100000`, 1000 bytes, then close |
//! | `/_matrix/test/echo-body` | `{"len":N,"sha256":"…"}` of the body it read (CL or chunked) |
//! | `/_matrix/test/page?n=N` | 200 HTML: [`fetch_page`], a script firing N parallel `fetch()`es |
//!
//! Every response carries `X-Origin-Conn` (1-based connection number) and `X-Origin-Seq`
//! (request number on that connection).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::http::{parse_request_head, BodyFraming, ChunkedDecoder, RequestHead};

/// The pieces `/_matrix/test/chunked` sends, one chunk each.
pub const CHUNKS: &[&str] = &["{\"chunks\":[", "\"one\",", "\"two\",", "\"three\"", "]}"];

/// The body `/_matrix/test/chunked` streams.
pub fn chunked_body() -> Vec<u8> {
    CHUNKS.concat().into_bytes()
}

/// The body `/_matrix/test/big?bytes=n` sends: a pattern that detects lost or moved bytes.
pub fn big_body(n: usize) -> Vec<u8> {
    big_body_range(0, n)
}

/// Bytes `start..end` of [`big_body`] (the origin streams large bodies piece by piece).
pub fn big_body_range(start: usize, end: usize) -> Vec<u8> {
    (start..end)
        .map(|i| (i % 251) as u8 ^ (i / 251 % 256) as u8)
        .collect()
}

/// The HTML page `/_matrix/test/page?n=N` serves: its script fires `n` `fetch()`es of
/// `/_matrix/test/item?i=<i>` at once (the default JSON answer), writes one line per result
/// into `<pre id="out">` (`ok <i> <protocol>` or `fail …`/`error …`, the protocol being the
/// fetch's Resource Timing `nextHopProtocol`, `h2` over HTTP/2), sets the title to
/// `done <ok>/<n>`, then requests `/_matrix/test/page-done?ok=<ok>&n=<n>` so the test sees
/// the page finish from the origin's side too.
pub fn fetch_page(n: usize) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>pending</title></head>
<body><pre id="out"></pre>
<script>
const n = {n};
function protocol(url) {{
  const e = performance.getEntriesByName(new URL(url, location.href).href);
  return e.length ? (e[e.length - 1].nextHopProtocol || "none") : "unseen";
}}
const one = (i) => {{
  const url = "/_matrix/test/item?i=" + i;
  return fetch(url, {{cache: "no-store"}}).then(
    (r) => r.json().then((j) => (r.ok && j.origin === "ok" ? "ok " : "fail ") + i + " " + r.status),
    (e) => "error " + i + " " + e);
}};
Promise.all(Array.from({{length: n}}, (_, i) => one(i))).then((results) => {{
  const lines = results.map((r, i) => r + " " + protocol("/_matrix/test/item?i=" + i));
  const ok = results.filter((r) => r.startsWith("ok ")).length;
  document.getElementById("out").textContent = lines.join("\n");
  document.title = "done " + ok + "/" + n;
  return fetch("/_matrix/test/page-done?ok=" + ok + "&n=" + n, {{cache: "no-store"}});
}});
</script></body></html>
"#
    )
}

/// One request the origin received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// 1-based number of the connection it came on.
    pub conn: usize,
    pub head: RequestHead,
    /// The body bytes decoded so far.
    pub body: Vec<u8>,
    /// Whether the whole body arrived.
    pub body_complete: bool,
}

#[derive(Default)]
struct State {
    /// Raw bytes received, per connection (index = conn - 1).
    raw: Vec<Vec<u8>>,
    requests: Vec<RecordedRequest>,
}

struct Shared {
    stop: AtomicBool,
    accepted: AtomicUsize,
    /// `/_matrix/test/big` answers whose connection closed before they were written whole.
    cut_responses: AtomicUsize,
    state: Mutex<State>,
    changed: Condvar,
}

/// The recording origin server; stops on drop.
pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Origin {
    pub fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            cut_responses: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let s = shared.clone();
        let acceptor = thread::Builder::new()
            .name("origin-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let conn = s.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                    s.state.lock().unwrap().raw.push(Vec::new());
                    let s2 = s.clone();
                    let _ = thread::Builder::new()
                        .name(format!("origin-conn-{conn}"))
                        .spawn(move || serve(stream, conn, &s2));
                }
            })
            .expect("spawn origin");
        Origin {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: the `homeserver` value for a proxy config.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// How many `/_matrix/test/big` answers could not be written whole because the
    /// connection closed under them (the proxy gave the exchange up).
    pub fn cut_responses(&self) -> usize {
        self.shared.cut_responses.load(Ordering::SeqCst)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// Raw bytes received on connection `conn` (1-based).
    pub fn raw(&self, conn: usize) -> Vec<u8> {
        self.shared.state.lock().unwrap().raw[conn - 1].clone()
    }

    /// Bytes received on all connections together.
    pub fn total_bytes(&self) -> usize {
        self.shared
            .state
            .lock()
            .unwrap()
            .raw
            .iter()
            .map(Vec::len)
            .sum()
    }

    /// Waits (bounded) until at least `n` requests have arrived; returns them all.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().unwrap();
        while state.requests.len() < n {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap()
                .0;
        }
        state.requests.clone()
    }

    /// The only request received; panics (showing what arrived) unless exactly one did.
    pub fn single_request(&self) -> RecordedRequest {
        let reqs = self.wait_requests(1, Duration::from_secs(2));
        assert_eq!(
            reqs.len(),
            1,
            "origin expected exactly one request, got {}: {reqs:#?}",
            reqs.len()
        );
        reqs.into_iter().next().unwrap()
    }

    /// Panics unless no byte at all reached the origin (after a short grace period, so late
    /// bytes are seen too).
    pub fn assert_untouched(&self, context: &str) {
        thread::sleep(Duration::from_millis(100));
        let state = self.shared.state.lock().unwrap();
        let total: usize = state.raw.iter().map(Vec::len).sum();
        assert!(
            total == 0 && state.requests.is_empty(),
            "{context}: the origin must not be reached, but it got {} connections, {} bytes: {}",
            state.raw.len(),
            total,
            state
                .raw
                .iter()
                .map(|r| crate::show(r, 600))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}

/// What the origin had received at one moment (see [`Origin::mark`]).
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub connections: usize,
    pub bytes: usize,
    pub requests: usize,
}

impl Origin {
    /// What has been received so far, to assert later that nothing more arrived.
    pub fn mark(&self) -> Mark {
        let st = self.shared.state.lock().unwrap();
        Mark {
            connections: st.raw.len(),
            bytes: st.raw.iter().map(Vec::len).sum(),
            requests: st.requests.len(),
        }
    }

    /// Panics when anything (a request, or even a byte) reached the origin since `mark`
    /// (after a short grace period, so late bytes are seen too). New idle connections are
    /// allowed: a proxy may pre-connect.
    pub fn assert_untouched_since(&self, mark: Mark, context: &str) {
        thread::sleep(Duration::from_millis(100));
        let now = self.mark();
        if now.bytes != mark.bytes || now.requests != mark.requests {
            let st = self.shared.state.lock().unwrap();
            let new: Vec<String> = st.requests[mark.requests..]
                .iter()
                .map(|r| crate::show(&r.head.raw, 400))
                .collect();
            panic!(
                "{context}: the origin must not be reached, but it got {} more bytes; new requests: {new:?}",
                now.bytes - mark.bytes
            );
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

/// Serves one connection until the peer closes, an error, or the origin stops.
fn serve(mut stream: TcpStream, conn: usize, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut seq = 0;
    loop {
        // Head.
        let (head, used) = loop {
            match parse_request_head(&buf) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(_) => return, // garbage: close
            }
            if !read_some(&mut stream, &mut buf, conn, shared) {
                return;
            }
        };
        buf.drain(..used);
        seq += 1;
        let index = {
            let mut st = shared.state.lock().unwrap();
            st.requests.push(RecordedRequest {
                conn,
                head: head.clone(),
                body: Vec::new(),
                body_complete: false,
            });
            shared.changed.notify_all();
            st.requests.len() - 1
        };
        if head.path() == "/_matrix/test/deaf" {
            // Reads nothing more and answers nothing: a sender's writes stall. Held until
            // the origin stops (bounded: five minutes, longer than any client waits).
            let until = Instant::now() + Duration::from_secs(300);
            while Instant::now() < until && nap(Duration::from_millis(100), shared) {}
            return;
        }
        // Body.
        let framing = head.framing().unwrap_or(BodyFraming::None);
        let complete = read_body(&mut stream, &mut buf, framing, conn, index, shared);
        {
            let mut st = shared.state.lock().unwrap();
            st.requests[index].body_complete = complete;
            shared.changed.notify_all();
        }
        if !complete {
            return;
        }
        let body = shared.state.lock().unwrap().requests[index].body.clone();
        let close = head
            .headers_named("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"));
        match respond(&mut stream, &head, &body, conn, seq, shared) {
            Ok(true) if !close => {}
            _ => {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Reads once into `buf` (recording the bytes); false when the connection is over.
fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>, conn: usize, shared: &Shared) -> bool {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                let mut st = shared.state.lock().unwrap();
                st.raw[conn - 1].extend_from_slice(&chunk[..n]);
                shared.changed.notify_all();
                return true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    framing: BodyFraming,
    conn: usize,
    index: usize,
    shared: &Shared,
) -> bool {
    let append = |data: &[u8]| {
        if !data.is_empty() {
            shared.state.lock().unwrap().requests[index]
                .body
                .extend_from_slice(data);
        }
    };
    match framing {
        BodyFraming::None => true,
        BodyFraming::Length(mut left) => loop {
            let n = (left as usize).min(buf.len());
            append(&buf[..n]);
            buf.drain(..n);
            left -= n as u64;
            if left == 0 {
                return true;
            }
            if !read_some(stream, buf, conn, shared) {
                return false;
            }
        },
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            loop {
                let mut out = Vec::new();
                let Ok(used) = decoder.feed(buf, &mut out) else {
                    return false;
                };
                append(&out);
                buf.drain(..used);
                if decoder.is_done() {
                    return true;
                }
                if !read_some(stream, buf, conn, shared) {
                    return false;
                }
            }
        }
    }
}

/// Sleeps up to `d`, waking early when the origin stops; false when it stopped.
fn nap(d: Duration, shared: &Shared) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        thread::sleep(Duration::from_millis(10).min(end - Instant::now()));
    }
    true
}

/// Answers one request; `Ok(true)` when the connection may carry another.
fn respond(
    stream: &mut TcpStream,
    head: &RequestHead,
    body: &[u8],
    conn: usize,
    seq: usize,
    shared: &Shared,
) -> io::Result<bool> {
    let ids = format!("X-Origin-Conn: {conn}\r\nX-Origin-Seq: {seq}\r\n");
    let json = |s: &mut TcpStream, status: &str, payload: String| -> io::Result<bool> {
        let msg = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{ids}\r\n{payload}",
            payload.len()
        );
        s.write_all(msg.as_bytes())?;
        Ok(true)
    };
    let default = |s: &mut TcpStream| {
        json(
            s,
            "200 OK",
            format!("{{\"origin\":\"ok\",\"conn\":{conn},\"seq\":{seq}}}"),
        )
    };
    match head.path().as_str() {
        "/_matrix/test/chunked" => {
            stream.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n{ids}\r\n").as_bytes(),
            )?;
            for piece in CHUNKS {
                if !nap(Duration::from_millis(30), shared) {
                    return Ok(false);
                }
                stream.write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes())?;
            }
            stream.write_all(b"0\r\n\r\n")?;
            Ok(true)
        }
        "/_matrix/test/slow" => {
            let ms = head
                .query_param("ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            if !nap(Duration::from_millis(ms), shared) {
                return Ok(false);
            }
            default(stream)
        }
        "/_matrix/test/silent" => {
            // Never answer; keep the connection until the peer or the origin goes away.
            let mut sink = Vec::new();
            while read_some(stream, &mut sink, conn, shared) {
                sink.clear();
            }
            Ok(false)
        }
        "/_matrix/test/big" => {
            let n: usize = head
                .query_param("bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1 << 20);
            stream.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n{ids}\r\n").as_bytes(),
            )?;
            // Made piece by piece: the first bytes go out at once, even for 100 MiB.
            for start in (0..n).step_by(64 * 1024) {
                let piece = big_body_range(start, (start + 64 * 1024).min(n));
                if let Err(e) = stream.write_all(&piece) {
                    shared.cut_responses.fetch_add(1, Ordering::SeqCst);
                    shared.changed.notify_all();
                    return Err(e);
                }
            }
            Ok(true)
        }
        "/_matrix/test/cut" => {
            stream.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n{ids}\r\n").as_bytes(),
            )?;
            stream.write_all(&big_body(1000))?;
            stream.flush()?;
            nap(Duration::from_millis(50), shared);
            Ok(false)
        }
        "/_matrix/test/page" => {
            let n: usize = head
                .query_param("n")
                .and_then(|v| v.parse().ok())
                .unwrap_or(50);
            let page = fetch_page(n);
            stream.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: {}\r\n{ids}\r\n{page}", page.len()).as_bytes(),
            )?;
            Ok(true)
        }
        "/_matrix/test/echo-body" => json(
            stream,
            "200 OK",
            format!(
                "{{\"len\":{},\"sha256\":\"{}\"}}",
                body.len(),
                crate::sha256_hex(body)
            ),
        ),
        _ => default(stream),
    }
}
