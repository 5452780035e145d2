//! Fuzz targets for mxgate-core, for AFL++ (`cargo afl build --release`; see `run.sh`).
//!
//! - [`wire`]: an independent HTTP/1.1 reader (httparse heads, its own framing rules);
//! - [`driver`]: runs a `Connection` in memory against a scripted client and upstreams,
//!   checking every output as it comes;
//! - [`targets`]: one function per fuzz target, called by `src/bin/<target>.rs` and by the
//!   core's regression test, which compiles these three files itself;
//! - [`h2`]: the HTTP/2 target `h2_frames` (on the engine's own API), compiled into the
//!   core's regression test too;
//! - [`h2proxy`]: the HTTP/2 target `h2_proxy` (frames through the whole proxy,
//!   `Http2Session`, to in-memory upstreams), compiled into the core's regression test too.

pub mod driver;
pub mod h2;
pub mod h2proxy;
pub mod targets;
pub mod wire;

/// The core's API, under the name the shared files use.
pub mod mx {
    pub use mxgate_core::config::*;
    pub use mxgate_core::{route, Connection, Output};
}

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;

/// Reported core bugs to let through (see [`driver::tolerated`]): `MXGATE_FUZZ_TOLERATE`,
/// comma-separated. Unset in CI: every check is strict.
pub fn tolerated_core_bugs() -> &'static [String] {
    static LIST: OnceLock<Vec<String>> = OnceLock::new();
    LIST.get_or_init(|| {
        std::env::var("MXGATE_FUZZ_TOLERATE")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

/// Counts live heap bytes per thread, so the driver can bound what the engine buffers
/// (each connection is driven on one thread; tests on other threads do not count).
struct Counting;

thread_local! {
    // Const-initialised, no destructor: safe to touch from inside the allocator.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|l| l.set(l.get() + delta));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        count(-(layout.size() as isize));
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes this thread allocated, net of what it freed, plus a fixed offset (it may
/// free what others allocated): only the difference of two readings means anything.
pub fn live_heap_bytes() -> Option<usize> {
    LIVE.try_with(|l| (l.get() + (1 << 40)) as usize).ok()
}

/// Checks that the checks bite: run with `cargo test --release --lib` (no cargo-afl needed).
#[cfg(test)]
mod tests {
    use super::driver::{self, Driver, Reply, CLIENT_HTTPS, PEERS};

    #[test]
    fn the_heap_probe_sees_the_engine_and_pipelining_stays_bounded() {
        // 2000 pipelined GETs to an upstream that never answers, in 64-byte pieces: the
        // engine must stop reading (each exchange then times out with a 504) instead of
        // buffering the stream; the driver's probe bounds its heap on every step.
        let one = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: a\r\n\r\n";
        let input: Vec<u8> = one.iter().copied().cycle().take(one.len() * 2000).collect();
        let silent = Reply::Bytes {
            data: Vec::new(),
            pieces: vec![0],
            eof: false,
        };
        let mut d = Driver::new(
            driver::config(driver::small_limits()),
            CLIENT_HTTPS,
            PEERS[0],
            vec![silent],
        );
        d.run(&input, &[64], false);
        let outcome = d.check();
        eprintln!("engine heap peak: {} bytes", d.max_engine_heap);
        assert!(d.max_engine_heap > 0, "the probe saw nothing");
        assert!(d.max_engine_heap < 64 * 1024, "{}", d.max_engine_heap);
        assert!(d.backpressure >= 1000, "the engine never said stop");
        assert_eq!(outcome.responses.finals.len(), 2000);
        assert!(outcome
            .responses
            .finals
            .iter()
            .all(|e| e.last.head.status == 504));
    }

    #[test]
    fn every_seed_passes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        for dir in std::fs::read_dir(root).unwrap() {
            let dir = dir.unwrap().path();
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let run = super::targets::by_name(&name).unwrap();
            for file in std::fs::read_dir(&dir).unwrap() {
                run(&std::fs::read(file.unwrap().path()).unwrap());
            }
        }
    }

    /// The `h2_proxy` seeds reach the upstream: the byte-for-byte check is not vacuous.
    #[test]
    fn h2_proxy_seeds_reach_the_upstream() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/h2_proxy");
        let read = |name: &str| std::fs::read(seeds.join(name)).unwrap();
        assert_eq!(super::h2proxy::run(&read("get")), 1);
        assert_eq!(super::h2proxy::run(&read("odd_path")), 1);
        assert_eq!(super::h2proxy::run(&read("post_chunked_chunked_early")), 1);
        // Stream 3 is reset in the same read as it opens: its upstream is let go unused.
        assert_eq!(super::h2proxy::run(&read("three_streams")), 2);
        assert_eq!(super::h2proxy::run(&read("local_answers")), 0);
    }
}
