#!/usr/bin/env python3
"""Generate a config for, run, start and stop a throw-away Synapse homeserver for tests.

Run it with the venv's python (the one `provision.sh` prints):

  homeserver.py generate --dir D --port P   writes D/homeserver.yaml, D/log.config, the signing
                                            key; prints `key=value` lines (see `describe`)
  homeserver.py run      --dir D --port P   generate (if D has no config yet), then exec()
                                            Synapse in the foreground: the caller's child PID
                                            *is* Synapse. The Rust test uses this.
  homeserver.py start    --dir D --port P   generate, spawn Synapse in its own process group
                                            (new session), wait for GET /health == 200, write
                                            D/synapse.pid; for shells and manual runs
  homeserver.py stop     --dir D            SIGTERM the process group from D/synapse.pid,
                                            SIGKILL after --grace seconds

The homeserver: server_name `localhost`, one plain-HTTP listener on 127.0.0.1:P with
`x_forwarded: true` and `request_id_header: X-Request-ID`, resources client+federation,
SQLite, registration only via the shared-secret admin API, 50M uploads, rate limits out of
the way, presence off (so an idle /sync long-poll really idles), no outbound key servers,
no stats. Logs (INFO, unbuffered, with the request name column) go to D/homeserver.log;
the access-log lines come from the `synapse.access.http.<P>` logger and look like

  2025-... - synapse.access.http.P - 473 - INFO - GET-<request id> - 127.0.0.1 - P - {@a:localhost} Processed request: ... "GET /_matrix/... HTTP/1.1" "<user agent>" [0 dbevts]

Config is written as JSON, which is YAML, so this script needs no PyYAML; `generate` only
needs `signedjson` (a Synapse dependency) for the signing key.
"""

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

SERVER_NAME = "localhost"

# Generous enough that a test suite never waits on a limiter.
_FAST = {"per_second": 10000, "burst_count": 10000}
RATE_LIMITS = {
    "rc_message": _FAST,
    "rc_registration": _FAST,
    "rc_registration_token_validity": _FAST,
    "rc_login": {"address": _FAST, "account": _FAST, "failed_attempts": _FAST},
    "rc_joins": {"local": _FAST, "remote": _FAST},
    "rc_joins_per_room": _FAST,
    "rc_invites": {"per_room": _FAST, "per_user": _FAST, "per_issuer": _FAST},
    "rc_3pid_validation": _FAST,
    "rc_admin_redaction": _FAST,
    "rc_media_create": _FAST,
    "rc_room_creation": _FAST,
    "rc_reports": _FAST,
    "rc_profile": _FAST,
    "rc_key_requests": _FAST,
    "rc_third_party_invite": _FAST,
    "rc_delayed_event_mgmt": _FAST,
    "rc_presence": {"per_user": _FAST},
    "rc_user_directory": _FAST,
}


def paths(d):
    return {
        "config": os.path.join(d, "homeserver.yaml"),
        "log_config": os.path.join(d, "log.config"),
        "log": os.path.join(d, "homeserver.log"),
        "signing_key": os.path.join(d, SERVER_NAME + ".signing.key"),
        "db": os.path.join(d, "homeserver.db"),
        "media": os.path.join(d, "media_store"),
        "pid": os.path.join(d, "synapse.pid"),
        "stdout": os.path.join(d, "synapse.stdout.log"),
        "secret": os.path.join(d, "registration_shared_secret"),
    }


def log_config(log_file):
    fmt = "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"
    return {
        "version": 1,
        "formatters": {"precise": {"format": fmt}},
        "handlers": {
            # Plain FileHandler, not Synapse's default PeriodicallyFlushingMemoryHandler: the
            # client flow reads the access log right after a request.
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": log_file,
                "encoding": "utf8",
            }
        },
        "loggers": {
            # DEBUG would log access tokens.
            "synapse.storage.SQL": {"level": "INFO"},
            "synapse.access": {"level": "INFO"},
        },
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def homeserver_config(d, port, public_baseurl=None):
    p = paths(d)
    with open(p["secret"]) as f:
        shared_secret = f.read().strip()
    cfg = {
        "server_name": SERVER_NAME,
        "public_baseurl": public_baseurl or f"http://127.0.0.1:{port}/",
        "pid_file": p["pid"],
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": True,
                "request_id_header": "X-Request-ID",
                "resources": [{"names": ["client", "federation"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": p["db"]}},
        "log_config": p["log_config"],
        "media_store_path": p["media"],
        "max_upload_size": "50M",
        "enable_registration": False,
        "registration_shared_secret": shared_secret,
        "report_stats": False,
        "enable_metrics": False,
        "macaroon_secret_key": secrets.token_hex(32),
        "form_secret": secrets.token_hex(32),
        "signing_key_path": p["signing_key"],
        # No outbound traffic: no notary servers, no URL previews, no presence.
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "url_preview_enabled": False,
        "presence": {"enabled": False},
        "enable_authenticated_media": True,
    }
    cfg.update(RATE_LIMITS)
    return cfg


def generate(d, port, public_baseurl=None):
    d = os.path.abspath(d)
    os.makedirs(d, exist_ok=True)
    p = paths(d)
    os.makedirs(p["media"], exist_ok=True)
    if not os.path.exists(p["secret"]):
        with open(p["secret"], "w") as f:
            f.write(secrets.token_hex(24) + "\n")
    if not os.path.exists(p["signing_key"]):
        from signedjson.key import generate_signing_key, write_signing_keys

        key = generate_signing_key("a_" + secrets.token_hex(2))
        with open(p["signing_key"], "w") as f:
            write_signing_keys(f, [key])
    with open(p["log_config"], "w") as f:
        json.dump(log_config(p["log"]), f, indent=1)
    cfg = homeserver_config(d, port, public_baseurl)
    try:  # keep the secrets of an earlier run (access tokens stay valid across restarts)
        with open(p["config"]) as f:
            old = json.load(f)
        for k in ("macaroon_secret_key", "form_secret"):
            cfg[k] = old.get(k, cfg[k])
    except (OSError, ValueError):
        pass
    with open(p["config"], "w") as f:
        json.dump(cfg, f, indent=1)
    return d


def describe(d, port):
    """The `key=value` lines `generate` and `start` print (parsed by the Rust test)."""
    p = paths(d)
    with open(p["secret"]) as f:
        secret = f.read().strip()
    return "\n".join(
        [
            f"dir={d}",
            f"port={port}",
            f"direct_url=http://127.0.0.1:{port}",
            f"config={p['config']}",
            f"log={p['log']}",
            f"shared_secret={secret}",
            f"server_name={SERVER_NAME}",
        ]
    )


def synapse_argv(d):
    return [sys.executable, "-m", "synapse.app.homeserver", "--config-path", paths(d)["config"]]


def wait_health(port, deadline_s, proc=None):
    url = f"http://127.0.0.1:{port}/health"
    deadline = time.monotonic() + deadline_s
    last = "no attempt"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False, f"Synapse exited with status {proc.returncode} before becoming healthy"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True, "ok"
                last = f"HTTP {r.status}"
        except (urllib.error.URLError, OSError) as e:
            last = repr(e)
        time.sleep(0.25)
    return False, f"GET {url} not 200 within {deadline_s} s (last: {last})"


def stop_pid(pid, grace):
    """SIGTERM the process group led by pid, then SIGKILL after `grace` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "already gone"
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return "stopped by SIGTERM"
        # reap if it is our child
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped by SIGTERM"
    return "killed by SIGKILL"


def tail(path, n=60):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["generate", "run", "start", "stop"])
    ap.add_argument("--dir", required=True, help="directory for config, keys, db, media, logs")
    ap.add_argument("--port", type=int, help="listener port on 127.0.0.1")
    ap.add_argument("--public-baseurl", help="public_baseurl (default http://127.0.0.1:PORT/)")
    ap.add_argument("--health-timeout", type=float, default=90.0)
    ap.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    a = ap.parse_args()
    d = os.path.abspath(a.dir)
    p = paths(d)

    if a.command == "stop":
        try:
            with open(p["pid"]) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError) as e:
            sys.exit(f"homeserver.py stop: no pid file {p['pid']}: {e}")
        print(f"synapse pid {pid}: {stop_pid(pid, a.grace)}")
        return

    if a.port is None:
        ap.error("--port is required")

    if a.command == "generate":
        generate(d, a.port, a.public_baseurl)
        print(describe(d, a.port))
        return

    if a.command == "run":
        if not os.path.exists(p["config"]):
            generate(d, a.port, a.public_baseurl)
        sys.stdout.flush()
        os.execv(sys.executable, synapse_argv(d))

    # start
    generate(d, a.port, a.public_baseurl)
    out = open(p["stdout"], "ab")
    proc = subprocess.Popen(
        synapse_argv(d), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    with open(p["pid"], "w") as f:  # Synapse rewrites it with the same PID
        f.write(f"{proc.pid}\n")
    ok, why = wait_health(a.port, a.health_timeout, proc)
    if not ok:
        print(stop_pid(proc.pid, a.grace), file=sys.stderr)
        sys.stderr.write(f"--- tail of {p['stdout']}\n{tail(p['stdout'])}--- tail of {p['log']}\n{tail(p['log'])}")
        sys.exit(f"homeserver.py start: {why} (logs kept in {d})")
    print(describe(d, a.port))
    print(f"pid={proc.pid}")


if __name__ == "__main__":
    main()
