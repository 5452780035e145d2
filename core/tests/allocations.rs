//! Heap allocations per proxied keep-alive exchange, counted by a wrapping global
//! allocator (integration tests are their own binary, so this counts only this test).
//!
//! Steady state (after warm-up exchanges on the same `Connection`) must allocate nothing
//! with access logging off: the per-connection buffers are reused, not rebuilt per request.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mxgate_core::{Connection, Output};

struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

thread_local! {
    /// Counting is on only inside `count_allocations`, and only on its thread (the test
    /// harness and the other tests allocate on other threads).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to `System`; counting has no other effect.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations made by `f` on this thread's watch.
fn count_allocations(f: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::SeqCst)
}

mod common;
use common::{bench_config as config, send_request, RESPONSE, SYNC};

/// One keep-alive exchange through the public API, as a runtime drives it. Outputs are
/// dropped as soon as they are handled, as a runtime does once it has written them.
/// Returns (bytes sent upstream, bytes sent to the client).
fn exchange(conn: &mut Connection, request: &[u8], now: Instant) -> (usize, usize) {
    let (mut upstream, mut client) = (0, 0);
    conn.handle_client_data(request, now);
    while let Some(out) = conn.poll_output() {
        match out {
            Output::ConnectUpstream { .. } => conn.handle_upstream_connected(true, now),
            Output::ToUpstream(b) => upstream += b.len(),
            Output::ToClient(b) => client += b.len(),
            Output::CloseClient => panic!("the connection must stay open"),
            _ => {}
        }
    }
    assert!(conn.wants_upstream_read());
    conn.handle_upstream_data(RESPONSE, now);
    while let Some(out) = conn.poll_output() {
        match out {
            Output::ToUpstream(b) => upstream += b.len(),
            Output::ToClient(b) => client += b.len(),
            Output::CloseClient => panic!("the connection must stay open"),
            _ => {}
        }
    }
    assert!(conn.is_idle(), "the exchange must be complete");
    (upstream, client)
}

/// Allocations for `rounds` GET + 1 KiB PUT exchange pairs after warm-up.
fn steady_state_allocations(access_log: &str, rounds: usize) -> usize {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = config(access_log);
    let put = send_request();
    let start = Instant::now();
    let mut conn = Connection::new(config, 0, "203.0.113.5".parse().unwrap(), 7, start);
    for i in 0..3 {
        let now = start + Duration::from_millis(i);
        exchange(&mut conn, SYNC, now);
        exchange(&mut conn, &put, now);
    }
    let mut sent = (0, 0);
    let count = count_allocations(|| {
        for i in 0..rounds {
            let now = start + Duration::from_millis(10 + i as u64);
            let a = exchange(&mut conn, SYNC, now);
            let b = exchange(&mut conn, &put, now);
            sent = (sent.0 + a.0 + b.0, sent.1 + a.1 + b.1);
        }
    });
    // The exchanges really went through: heads and the PUT body upstream, responses back.
    assert!(sent.0 > rounds * (SYNC.len() + put.len()));
    assert!(sent.1 > rounds * 2 * RESPONSE.len());
    count
}

/// Before the connection reused its buffers this counted 16 allocations per exchange
/// (boxed exchange and access record, header vectors, rewritten heads, request id, read
/// buffers, decoded paths).
#[test]
fn a_warm_keep_alive_exchange_allocates_nothing_with_logging_off() {
    let rounds = 100;
    let count = steady_state_allocations("off", rounds);
    assert_eq!(
        count,
        0,
        "{count} allocations in {rounds} GET+PUT exchange pairs ({:.2} per exchange)",
        count as f64 / (2 * rounds) as f64
    );
}

/// With an access log, each exchange allocates its boxed record and the record's request
/// id: 2 per exchange, no more.
#[test]
fn a_warm_exchange_with_an_access_log_allocates_only_its_record() {
    let rounds = 100;
    let count = steady_state_allocations("json", rounds);
    println!(
        "access_log = json: {count} allocations in {rounds} GET+PUT exchange pairs ({:.2} per exchange)",
        count as f64 / (2 * rounds) as f64
    );
    assert!(count <= 2 * 2 * rounds, "{count} allocations");
}

/// A runtime that takes the buffers of every connection that goes idle and lends them to
/// the next one with a request (so idle connections hold none) allocates nothing either.
#[test]
fn buffers_passed_between_connections_allocate_nothing() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = config("off");
    let put = send_request();
    let start = Instant::now();
    let mut conns: Vec<Connection> = (0..4)
        .map(|i| Connection::new(config.clone(), 0, "203.0.113.5".parse().unwrap(), i, start))
        .collect();
    let mut stock = Vec::with_capacity(conns.len());
    let round = |conns: &mut Vec<Connection>, stock: &mut Vec<_>, i: usize| {
        let now = start + Duration::from_millis(i as u64);
        for conn in conns.iter_mut() {
            if let Some(buffers) = stock.pop() {
                if let Some(back) = conn.lend_buffers(buffers) {
                    stock.push(back);
                }
            }
            exchange(conn, if i.is_multiple_of(2) { SYNC } else { &put }, now);
            if let Some(buffers) = conn.take_buffers() {
                stock.push(buffers);
            }
        }
    };
    for i in 0..4 {
        round(&mut conns, &mut stock, i);
    }
    let rounds = 100;
    let count = count_allocations(|| {
        for i in 0..rounds {
            round(&mut conns, &mut stock, 4 + i);
        }
    });
    assert_eq!(
        count, 0,
        "{count} allocations in {rounds} rounds of 4 exchanges"
    );
    assert!(!stock.is_empty() && stock.len() <= conns.len());
}
