//! A real Synapse homeserver behind mxgate, driven through the Matrix client flow.
//!
//! 1. `tests/synapse/provision.sh` builds (or reuses) a virtualenv with a pinned
//!    `matrix-synapse` from PyPI (`${MXGATE_SYNAPSE_VENV:-target/synapse-venv}`).
//! 2. `tests/synapse/homeserver.py` writes a throw-away config (SQLite, 127.0.0.1, free port,
//!    `x_forwarded`, `request_id_header: X-Request-ID`) and Synapse runs in its own process
//!    group; we wait for `GET /health` = 200.
//! 3. mxgate (each runtime in turn) starts over TLS in front of it
//!    ([`mxgate_e2e::synapse::proxy_config`]).
//! 4. `tests/synapse/client_flow.py` registers users, logs in, creates a room, sends non-ASCII
//!    messages, long-polls `/sync`, uploads and downloads media, checks the client address
//!    and request id Synapse saw, `.well-known`, `/health` — through the proxy.
//! 5. `tests/synapse/h2_flow.py` does it again over HTTP/2 (httpx with `http2=True`, h2 by
//!    ALPN on the same listener): every answer `HTTP/2`, all on one connection, an idle 30 s
//!    `/sync` long-poll on one stream while other requests and a 5 MiB download pass on others,
//!    and an over-size upload answered 413 `M_TOO_LARGE` that the client reads.
//!
//! Opt-out: `MXGATE_SKIP_SYNAPSE=1` skips this test on a developer machine (e.g. without
//! network access to PyPI). With `CI=true` the opt-out is ignored: CI always runs it, and a
//! Synapse that cannot be provisioned or started fails the test.
//!
//! Synapse (and the proxy) are stopped by process group on every path
//! ([`mxgate_e2e::synapse::ProcessGuard`]). Every wait is bounded. On failure the run directory
//! (config, SQLite db, logs) is kept under `target/tmp/` and the tail of Synapse's log is
//! printed; on success it is removed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use mxgate_e2e::pki::Pki;
use mxgate_e2e::proxy::{free_ports, Proxy};
use mxgate_e2e::runtime::runtimes;
use mxgate_e2e::synapse::{
    health_ok, log_tails, opted_out, provision, proxy_config, run_client_flow, run_dir,
    run_generator, run_h2_flow, synapse_dir, FlowTarget, ProcessGuard,
};

const LOG_TAIL_LINES: usize = 80;

/// A client flow run through the proxy: `Ok(seconds)` or the failed step.
type Flow = fn(&Path, &FlowTarget) -> Result<f64, String>;

/// A running Synapse: the guard, its port and what client_flow.py needs.
struct Synapse {
    /// Held only to stop the process when dropped.
    _guard: ProcessGuard,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    shared_secret: String,
}

fn tails(dir: &Path) -> String {
    log_tails(
        dir,
        &[
            ("homeserver.log", LOG_TAIL_LINES),
            ("synapse.stdout.log", 30),
        ],
    )
}

fn start_synapse(python: &Path, dir: &Path) -> Result<Synapse, String> {
    let port = free_ports(1)[0];
    let script = synapse_dir().join("homeserver.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .arg("generate")
        .arg("--dir")
        .arg(dir)
        .arg("--port")
        .arg(port.to_string());
    let [shared_secret, log] =
        run_generator("homeserver.py generate", cmd, ["shared_secret", "log"])?;

    let mut cmd = Command::new(python);
    // `run` exec()s Synapse: the guarded PID is Synapse itself.
    cmd.arg(&script)
        .arg("run")
        .arg("--dir")
        .arg(dir)
        .arg("--port")
        .arg(port.to_string());
    let mut guard = ProcessGuard::spawn_logged("synapse", cmd, dir, "synapse.stdout.log")?;
    guard.wait_ready(|| health_ok(port), || tails(dir))?;
    println!("Synapse on 127.0.0.1:{port} (dir {})", dir.display());
    Ok(Synapse {
        _guard: guard,
        port,
        dir: dir.to_path_buf(),
        log: PathBuf::from(log),
        shared_secret,
    })
}

#[test]
fn synapse_client_flow_through_proxy() {
    if opted_out("synapse_client_flow_through_proxy") {
        return;
    }
    let python = provision();

    for rt in runtimes() {
        // Synapse, fresh for each runtime (the flow registers fixed user names)
        let dir = run_dir(env!("CARGO_TARGET_TMPDIR"), "synapse-flow");
        let synapse = start_synapse(&python, &dir)
            .unwrap_or_else(|e| panic!("cannot start Synapse: {e}\n(kept {})", dir.display()));
        let pki = Pki::new();
        let proxy = Proxy::start(&rt, proxy_config(&pki, synapse.port));
        let target = FlowTarget::through(
            &proxy,
            &pki,
            synapse.port,
            &synapse.shared_secret,
            &synapse.log,
        );
        let flows: [(&str, Flow); 2] = [
            ("client flow", run_client_flow),
            ("HTTP/2 client flow", run_h2_flow),
        ];
        for (what, run) in flows {
            println!("[{}] {what} through {}", rt.name, target.proxy_url);
            match run(&python, &target) {
                Ok(secs) => println!("[{}] Synapse {what} passed in {secs:.1} s", rt.name),
                Err(why) => panic!(
                    "[{}] Synapse {what}: {why}\n{}\n--- proxy log:\n{}\n(run directory kept: {})",
                    rt.name,
                    tails(&synapse.dir),
                    proxy.log_tail(40),
                    dir.display()
                ),
            }
        }
        drop(proxy);
        drop(synapse);
        let _ = fs::remove_dir_all(&dir);
    }
}
