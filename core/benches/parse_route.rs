//! ns per request for parse + route + rewrite of typical Matrix requests, beside a bare
//! `httparse` parse of the same bytes (the floor).

use std::sync::Arc;
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use mxgate_core::config::Config;
use mxgate_core::{Connection, Output};

#[path = "../tests/common/mod.rs"]
mod common;
use common::{bench_config, send_request, RESPONSE, SYNC};

/// One exchange on a kept-alive connection: the request is parsed, routed and rewritten,
/// goes upstream, and a small response comes back. Returns bytes sent upstream.
fn proxy_once(conn: &mut Connection, request: &[u8], now: Instant) -> usize {
    conn.handle_client_data(request, now);
    let mut sent = 0;
    while let Some(out) = conn.poll_output() {
        match out {
            Output::ConnectUpstream { .. } => conn.handle_upstream_connected(true, now),
            Output::ToUpstream(b) => sent += b.len(),
            _ => {}
        }
    }
    conn.handle_upstream_data(RESPONSE, now);
    while conn.poll_output().is_some() {}
    sent
}

/// The request path alone: a new connection (made outside the timing) parses, routes and
/// rewrites its first request until the head is ready to go upstream.
fn request_path(conn: &mut Connection, request: &[u8], now: Instant) -> usize {
    conn.handle_client_data(request, now);
    let mut sent = 0;
    while let Some(out) = conn.poll_output() {
        match out {
            Output::ConnectUpstream { .. } => conn.handle_upstream_connected(true, now),
            Output::ToUpstream(b) => sent += b.len(),
            _ => {}
        }
    }
    sent
}

fn bare_parse_response(response: &[u8]) -> usize {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(response) {
        Ok(httparse::Status::Complete(n)) => n + resp.headers.len(),
        _ => 0,
    }
}

fn bare_parse(request: &[u8]) -> usize {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(request) {
        Ok(httparse::Status::Complete(n)) => n + req.headers.len(),
        _ => 0,
    }
}

fn benches(c: &mut Criterion) {
    let config = bench_config("off");
    let logging_config = bench_config("json");
    let now = Instant::now();
    let put = send_request();
    let connection = |config: &Arc<Config>| {
        Connection::new(
            Arc::clone(config),
            0,
            "203.0.113.5".parse().unwrap(),
            7,
            now,
        )
    };
    let fresh = || connection(&config);
    // A new connection as runtime-smol starts one: with buffers lent from the thread's
    // stock (filled by connections gone idle), so its first request allocates nothing. The
    // donor exchange and both connections are made and dropped outside the timing.
    let lent = |request: &[u8]| {
        let mut donor = fresh();
        proxy_once(&mut donor, request, now);
        let mut conn = fresh();
        if let Some(buffers) = donor.take_buffers() {
            assert!(
                conn.lend_buffers(buffers).is_none(),
                "a new connection borrows"
            );
        }
        conn
    };

    // parse + route + rewrite of one request, beside parsing it with httparse alone.
    let mut g = c.benchmark_group("request_path");
    for (name, request) in [("sync_get", SYNC), ("send_put_1k", &put[..])] {
        g.bench_function(format!("{name}/httparse_floor"), |b| {
            b.iter(|| bare_parse(black_box(request)))
        });
        g.bench_function(format!("{name}/mxgate"), |b| {
            b.iter_batched_ref(
                || lent(request),
                |conn| request_path(conn, black_box(request), now),
                BatchSize::SmallInput,
            )
        });
        // Without the stock (runtime-std, or the first connection of a thread): the
        // connection allocates its buffers on first use.
        g.bench_function(format!("{name}/mxgate_own_buffers"), |b| {
            b.iter_batched_ref(
                fresh,
                |conn| request_path(conn, black_box(request), now),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    // A whole keep-alive exchange (request out, response back, exchange stats or access
    // record), beside httparse parsing the request and the response.
    let mut g = c.benchmark_group("exchange");
    let mut conn = fresh();
    for (name, request) in [("sync_get", SYNC), ("send_put_1k", &put[..])] {
        g.bench_function(format!("{name}/httparse_floor"), |b| {
            b.iter(|| bare_parse(black_box(request)) + bare_parse_response(black_box(RESPONSE)))
        });
        g.bench_function(format!("{name}/mxgate"), |b| {
            b.iter(|| proxy_once(&mut conn, black_box(request), now))
        });
    }
    let mut logging = connection(&logging_config);
    g.bench_function("sync_get/mxgate_access_log", |b| {
        b.iter(|| proxy_once(&mut logging, black_box(SYNC), now))
    });
    g.finish();
}

criterion_group!(core_benches, benches);
criterion_main!(core_benches);
