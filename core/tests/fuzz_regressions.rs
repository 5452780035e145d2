//! Replays every file under `fuzz/regressions/<target>/` through that fuzz target's own
//! invariants: the fuzz crate's shared files (`fuzz/src/{wire,driver,targets,h2,h2proxy}.rs`) are
//! compiled into this test, with `mx` naming the core's API as the fuzz crate's does. (An
//! integration test: it reads files, which the engine itself never does.)

use std::path::{Path, PathBuf};

/// The core's API, under the name the shared fuzz files use.
mod mx {
    pub use mxgate_core::config::*;
    pub use mxgate_core::{route, Connection, Output};
}

#[allow(dead_code)]
#[path = "../../fuzz/src/driver.rs"]
mod driver;
#[allow(dead_code)]
#[path = "../../fuzz/src/h2.rs"]
mod h2;
#[allow(dead_code)]
#[path = "../../fuzz/src/h2proxy.rs"]
mod h2proxy;
#[allow(dead_code)]
#[path = "../../fuzz/src/targets.rs"]
mod targets;
#[allow(dead_code)]
#[path = "../../fuzz/src/wire.rs"]
mod wire;

/// No heap probe here (tests run on several threads); the fuzz binaries have one.
fn live_heap_bytes() -> Option<usize> {
    None
}

/// Every check is strict here, whatever the environment says.
fn tolerated_core_bugs() -> &'static [String] {
    &[]
}

/// Core bugs found by fuzzing and not fixed yet: `<target>/<file>`, each replayed by its own
/// ignored test below. Fixing one: remove it here and the `#[ignore]` on its test.
const OPEN_CORE_BUGS: &[&str] = &[];

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions")
}

/// Every `(target, file name, path)` under `fuzz/regressions/`.
fn all_files() -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    let dirs = std::fs::read_dir(regressions_dir()).expect("fuzz/regressions exists");
    for dir in dirs {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                out.push((target.clone(), name, path));
            }
        }
    }
    out.sort();
    out
}

fn replay(target: &str, path: &Path) {
    let run = targets::by_name(target).unwrap_or_else(|| panic!("no fuzz target {target}"));
    run(&std::fs::read(path).unwrap());
}

#[test]
fn fuzz_regressions_replay() {
    let files = all_files();
    assert!(!files.is_empty(), "no regression files found");
    let mut failed = Vec::new();
    for (target, name, path) in &files {
        let id = format!("{target}/{name}");
        if OPEN_CORE_BUGS.contains(&id.as_str()) {
            continue;
        }
        if std::panic::catch_unwind(|| replay(target, path)).is_err() {
            failed.push(id);
        }
    }
    assert!(failed.is_empty(), "regressions failing again: {failed:?}");
    for open in OPEN_CORE_BUGS {
        assert!(
            files.iter().any(|(t, n, _)| format!("{t}/{n}") == *open),
            "{open} is listed as open but has no file"
        );
    }
}

fn replay_open(id: &str) {
    let (target, name) = id.split_once('/').unwrap();
    replay(target, &regressions_dir().join(target).join(name));
}

#[test]
fn core_fragment_hides_dot_segments_to_admin() {
    replay_open("uri_preservation/core-fragment-hides-dot-segments-to-admin");
}

#[test]
fn core_connection_header_strips_response_content_length() {
    replay_open("framing_agreement/core-connection-header-strips-response-content-length");
}

#[test]
fn core_connection_header_strips_host() {
    replay_open("request_stream/core-connection-header-strips-host");
}

#[test]
fn core_head_error_response_has_body() {
    replay_open("request_stream/core-head-error-response-has-body");
}

#[test]
fn core_status_below_100_rendered_as_two_digits() {
    replay_open("response_stream/core-status-below-100-rendered-as-two-digits");
}
