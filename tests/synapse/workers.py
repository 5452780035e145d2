#!/usr/bin/env python3
"""A throw-away Synapse (PostgreSQL) with one generic worker and Redis, for tests/tests/synapse_workers.rs.

Run it with the venv's python (the one `provision.sh` prints):

  workers.py deps --target T     make sure T holds Synapse's `redis` and `postgres` extras (txredisapi,
                                 hiredis, psycopg2-binary;
                                 pinned, wheels only, `pip install --target`, reused while its
                                 marker matches); prints `pythonpath=T`. The provisioned venv is
                                 not touched: run Synapse with PYTHONPATH=T.
  workers.py generate --dir D --port P --replication-port R --worker-port W --redis-port X
                      --postgres-port Q [--postgres-user U]
                                 homeserver.py's config for the main process (listener on P),
                                 plus a replication listener on R, `instance_map.main`, Redis on X;
                                 D/worker1.yaml for `synapse.app.generic_worker` `worker1` with a
                                 client+federation listener on W; database: PostgreSQL on
                                 127.0.0.1:Q, user U (default synapse), database `postgres`
                                 (a cluster the caller made with initdb --locale=C -A trust).
                                 Prints `key=value` lines.

Logs: main writes D/homeserver.log (as homeserver.py's config does); worker1 writes
D/worker1.log *and* appends to D/homeserver.log, so client_flow.py, which reads one log for
its access-log checks, sees the lines of whichever process served the request. The access
logger names the listener port (`synapse.access.http.<port>`), so the two stay apart.

Start them with
  PYTHONPATH=T python -m synapse.app.homeserver      --config-path D/homeserver.yaml
  PYTHONPATH=T python -m synapse.app.generic_worker  --config-path D/homeserver.yaml \
                                                     --config-path D/worker1.yaml
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import homeserver  # noqa: E402  (tests/synapse/homeserver.py)

# The `redis` extra of matrix-synapse 1.163.2 (txredisapi>=1.4.12,<1.6.0; hiredis>=0.3) and
# the `postgres` one (psycopg2>=2.8; the binary wheel bundles libpq: no compiler, no -dev).
REDIS_PINS = ["txredisapi==1.5.0", "hiredis==3.5.0", "psycopg2-binary==2.9.13"]
WORKER_NAME = "worker1"


def deps(target):
    target = os.path.abspath(target)
    marker = os.path.join(target, ".mxgate-redis-deps")
    want = " ".join(REDIS_PINS) + f" python={sys.version_info[0]}.{sys.version_info[1]}"
    try:
        with open(marker) as f:
            if f.read().strip() == want:
                return target
    except OSError:
        pass
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".redis-deps-", dir=parent)
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "install",
           "--quiet", "--only-binary", ":all:", "--no-deps", "--target", tmp] + REDIS_PINS
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr, timeout=600)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        sys.exit(f"workers.py deps: pip install {' '.join(REDIS_PINS)} failed ({r.returncode})")
    with open(os.path.join(tmp, ".mxgate-redis-deps"), "w") as f:
        f.write(want + "\n")
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=".redis-deps-old-", dir=parent)
        os.rename(target, os.path.join(old, "d"))
    try:
        os.rename(tmp, target)
    except OSError:  # a concurrent run won the race; its copy is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    if old:
        shutil.rmtree(old, ignore_errors=True)
    return target


def worker_paths(d):
    return {
        "config": os.path.join(d, WORKER_NAME + ".yaml"),
        "log_config": os.path.join(d, WORKER_NAME + ".log.config"),
        "log": os.path.join(d, WORKER_NAME + ".log"),
        "pid": os.path.join(d, WORKER_NAME + ".pid"),
    }


def generate(d, port, replication_port, worker_port, redis_port, postgres_port, postgres_user):
    d = homeserver.generate(d, port)
    p = homeserver.paths(d)
    with open(p["config"]) as f:
        cfg = json.load(f)
    # Workers need PostgreSQL: with SQLite each process hands out ids (state groups, access
    # tokens, ...) from its own in-memory counter, and main and worker collide.
    cfg["database"] = {
        "name": "psycopg2",
        "args": {
            "user": postgres_user,
            "database": "postgres",
            "host": "127.0.0.1",
            "port": postgres_port,
            "cp_min": 1,
            "cp_max": 5,
        },
    }
    cfg["listeners"] = [l for l in cfg["listeners"] if l.get("port") != replication_port]
    cfg["listeners"].append(
        {
            "port": replication_port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": False,
            "resources": [{"names": ["replication"], "compress": False}],
        }
    )
    cfg["instance_map"] = {"main": {"host": "127.0.0.1", "port": replication_port}}
    cfg["redis"] = {"enabled": True, "host": "127.0.0.1", "port": redis_port}
    with open(p["config"], "w") as f:
        json.dump(cfg, f, indent=1)

    w = worker_paths(d)
    log_cfg = homeserver.log_config(w["log"])
    log_cfg["handlers"]["shared"] = dict(log_cfg["handlers"]["file"], filename=p["log"])
    log_cfg["root"]["handlers"] = ["file", "shared"]
    with open(w["log_config"], "w") as f:
        json.dump(log_cfg, f, indent=1)
    worker = {
        "worker_app": "synapse.app.generic_worker",
        "worker_name": WORKER_NAME,
        "worker_pid_file": w["pid"],
        "worker_log_config": w["log_config"],
        "worker_listeners": [
            {
                "type": "http",
                "port": worker_port,
                "bind_addresses": ["127.0.0.1"],
                "tls": False,
                "x_forwarded": True,
                "request_id_header": "X-Request-ID",
                "resources": [{"names": ["client", "federation"], "compress": False}],
            }
        ],
    }
    with open(w["config"], "w") as f:
        json.dump(worker, f, indent=1)
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["deps", "generate"])
    ap.add_argument("--target", help="deps: directory for the redis extra")
    ap.add_argument("--dir")
    ap.add_argument("--port", type=int)
    ap.add_argument("--replication-port", type=int)
    ap.add_argument("--worker-port", type=int)
    ap.add_argument("--redis-port", type=int)
    ap.add_argument("--postgres-port", type=int)
    ap.add_argument("--postgres-user", default="synapse")
    a = ap.parse_args()
    if a.command == "deps":
        if not a.target:
            ap.error("--target is required")
        print(f"pythonpath={deps(a.target)}")
        return
    for k in ("dir", "port", "replication_port", "worker_port", "redis_port", "postgres_port"):
        if getattr(a, k) is None:
            ap.error(f"--{k.replace('_', '-')} is required")
    d = generate(a.dir, a.port, a.replication_port, a.worker_port, a.redis_port, a.postgres_port, a.postgres_user)
    w = worker_paths(d)
    print(homeserver.describe(d, a.port))
    print(f"worker_config={w['config']}")
    print(f"worker_log={w['log']}")
    print(f"worker_port={a.worker_port}")
    print(f"replication_port={a.replication_port}")


if __name__ == "__main__":
    main()
