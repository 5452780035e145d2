//! Which proxy binaries the scenarios run against, and how they are found or built.
//!
//! Every scenario runs once per runtime through [`each_runtime`]. The runtimes are
//! `MXGATE_E2E_RUNTIMES` (comma-separated names from [`KNOWN`]) or else [`DEFAULT_RUNTIMES`].
//! Each binary is built once per test process with `cargo build -p <crate> --bin <bin>`
//! (cargo has released its build lock while tests run), or taken from `MXGATE_E2E_BIN_DIR`
//! when that is set (e.g. a release build: `MXGATE_E2E_BIN_DIR=target/release`).

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The runtimes tested when `MXGATE_E2E_RUNTIMES` is not set.
pub const DEFAULT_RUNTIMES: &[&str] = &["mxgate", "mxgate-std"];

/// Runtime name, cargo package, binary name.
pub const KNOWN: &[(&str, &str, &str)] = &[
    ("mxgate", "mxgate", "mxgate"),
    ("mxgate-std", "mxgate-std", "mxgate-std"),
];

/// A building cold workspace on a 2-core machine takes a few minutes; a wedged cargo must
/// still not hang the suite forever.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// One proxy binary under test.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// `mxgate` or `mxgate-std`.
    pub name: String,
    pub bin: PathBuf,
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Parses a `MXGATE_E2E_RUNTIMES` value into known runtime names.
pub fn parse_runtime_list(value: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    for n in &names {
        if !KNOWN.iter().any(|(k, _, _)| k == n) {
            let known: Vec<&str> = KNOWN.iter().map(|k| k.0).collect();
            return Err(format!(
                "MXGATE_E2E_RUNTIMES names unknown runtime `{n}` (known: {})",
                known.join(", ")
            ));
        }
    }
    if names.is_empty() {
        return Err("MXGATE_E2E_RUNTIMES is empty".into());
    }
    Ok(names)
}

/// The selected runtimes' names.
pub fn selected_names() -> Vec<String> {
    match std::env::var("MXGATE_E2E_RUNTIMES") {
        Ok(v) => parse_runtime_list(&v).unwrap_or_else(|e| panic!("{e}")),
        Err(_) => DEFAULT_RUNTIMES.iter().map(|s| s.to_string()).collect(),
    }
}

/// The selected runtimes, built (once per process) or found. Panics with cargo's output
/// when a binary cannot be built.
pub fn runtimes() -> Vec<Runtime> {
    static RUNTIMES: OnceLock<Result<Vec<Runtime>, String>> = OnceLock::new();
    RUNTIMES
        .get_or_init(|| {
            selected_names()
                .into_iter()
                .map(|name| {
                    let bin = binary(&name)?;
                    Ok(Runtime { name, bin })
                })
                .collect()
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The path of runtime `name`'s binary, building it if needed.
pub fn binary(name: &str) -> Result<PathBuf, String> {
    let &(_, package, bin) = KNOWN
        .iter()
        .find(|k| k.0 == name)
        .ok_or_else(|| format!("unknown runtime {name}"))?;
    if let Ok(dir) = std::env::var("MXGATE_E2E_BIN_DIR") {
        let mut path = PathBuf::from(dir);
        if path.is_relative() {
            path = workspace_root().join(path);
        }
        let path = path.join(bin);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "MXGATE_E2E_BIN_DIR: {} does not exist",
                path.display()
            ))
        };
    }
    build(package, bin)
}

fn build(package: &str, bin: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = Instant::now();
    let mut child = Command::new(&cargo)
        .args([
            "build",
            "-p",
            package,
            "--bin",
            bin,
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > BUILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "cargo build -p {package} took over {BUILD_TIMEOUT:?}; killed"
            ));
        }
        thread::sleep(Duration::from_millis(100));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "`cargo build -p {package} --bin {bin}` failed ({status}):\n{}",
            tail.join("\n")
        ));
    }
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == bin {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    Err(format!(
        "cargo build -p {package} reported no executable for {bin}"
    ))
}

/// Runs `scenario` once per selected runtime. A failure in one runtime does not stop the
/// others; at the end the test fails naming every runtime that failed.
pub fn each_runtime(scenario: impl Fn(&Runtime)) {
    let mut failed = Vec::new();
    for rt in runtimes() {
        eprintln!("=== runtime {} ({})", rt.name, rt.bin.display());
        let result = catch_unwind(AssertUnwindSafe(|| scenario(&rt)));
        if let Err(panic) = result {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            eprintln!("=== runtime {} FAILED", rt.name);
            failed.push(format!("[{}] {}", rt.name, msg));
        }
    }
    if !failed.is_empty() {
        panic!(
            "failed on {} runtime(s):\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
}
