//! Typical Matrix client traffic and the configuration of the issue-7 benchmark, shared by
//! the core's benchmark (`benches/parse_route.rs`) and its allocation test
//! (`tests/allocations.rs`), so both measure the same exchanges.

use std::sync::Arc;

use mxgate_core::config::{parse_config, Config};

/// An Element `/sync` long-poll, as a browser sends it.
pub const SYNC: &[u8] = b"GET /_matrix/client/v3/sync?since=s72594_4483_1934_3_11_1_1_1_1&timeout=30000&filter=0 HTTP/1.1\r\n\
Host: matrix.example.org\r\n\
User-Agent: Element/1.11.85 (Linux; Android 14)\r\n\
Accept: application/json\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-GB,en;q=0.9\r\n\
Authorization: Bearer syt_YWxpY2U_lVbzcTQIjnnJMKkcGlwT_0WDVPk\r\n\
Origin: https://app.element.io\r\n\
Referer: https://app.element.io/\r\n\
Sec-Fetch-Mode: cors\r\n\
Connection: keep-alive\r\n\r\n";

/// A small JSON answer from the homeserver.
pub const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

/// A message send (`PUT …/send/m.room.message/<txn>`) with a 1 KiB body, room id
/// percent-encoded.
pub fn send_request() -> Vec<u8> {
    let body = vec![b'a'; 1024];
    let mut req = format!(
        "PUT /_matrix/client/v3/rooms/%21OGEhHVWSdvArJzumhm%3Aexample.org/send/m.room.message/m1700000000000.42 HTTP/1.1\r\n\
Host: matrix.example.org\r\n\
User-Agent: Element/1.11.85\r\n\
Accept: application/json\r\n\
Content-Type: application/json\r\n\
Authorization: Bearer syt_YWxpY2U_lVbzcTQIjnnJMKkcGlwT_0WDVPk\r\n\
Origin: https://app.element.io\r\n\
Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req
}

/// The benchmark's configuration (`bench/run.sh`: access logging off), or with an access
/// log in the given format (`"json"`, `"combined"`): the engine then builds a record per
/// exchange.
pub fn bench_config(access_log: &str) -> Arc<Config> {
    let text = format!(
        r#"
server_name = "example.org"
public_url = "https://matrix.example.org"
homeserver = "http://127.0.0.1:8008"
[tls]
cert = "/dev/null"
key = "/dev/null"
[runtime]
access_log = "{access_log}"
"#
    );
    Arc::new(parse_config(&text, "bench.toml".as_ref()).expect("bench config parses"))
}
