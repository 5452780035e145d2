#!/usr/bin/env python3
"""Memory while holding many concurrent long-polls: mxgate beside nginx (issue 7, target 5).

The shared harness runs its long-poll scenario (g) without sampling memory, so this measures
it on its own: an asyncio origin that answers `GET /_matrix/client/v3/sync?timeout=MS` after
MS ms (Synapse's long-poll shape), each proxy in front of it (mxgate from --bin; nginx, if
installed, configured like Synapse's reverse-proxy doc: keepalive upstream, 310 s read
timeout), and N clients each sending one long-poll at once. The proxy's VmRSS (all its
processes) is sampled every 100 ms; reported: idle RSS, peak RSS while the polls are held,
the increase per poll, and how many polls got a 200. Repetitions are interleaved.

  bench/longpoll_memory.py --bin target/release/mxgate [--conns 2000] [--ms 3000] [--reps 3]

Ports: origin 127.0.0.1:29109, proxies 127.0.0.1:29180. Every process it starts leads its own
process group and is stopped by PID.
"""

import argparse
import asyncio
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ORIGIN_PORT = 29109
PROXY_PORT = 29180
BODY = b'{"next_batch":"s72595_4483_1934","rooms":{}}'


# --- the origin (run as a child: `longpoll_memory.py --serve`) ------------------------------
async def serve_one(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode("latin-1")
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
            await asyncio.sleep(float(query.get("timeout", ["0"])[0]) / 1000.0)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, IndexError, ValueError):
        pass
    finally:
        writer.close()


async def serve():
    server = await asyncio.start_server(serve_one, "127.0.0.1", ORIGIN_PORT, backlog=4096)
    async with server:
        await server.serve_forever()


# --- the proxies -----------------------------------------------------------------------------
MXGATE_CONFIG = f"""
server_name = "localhost"
homeserver = "http://127.0.0.1:{ORIGIN_PORT}"
[[listeners]]
name = "plain"
role = "client"
bind = ["127.0.0.1:{PROXY_PORT}"]
tls = false
[runtime]
threads = 1
access_log = "off"
"""

NGINX_CONFIG = f"""
worker_processes 1;
worker_rlimit_nofile 20000;
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log warn;
events {{{{ worker_connections 16000; }}}}
http {{{{
    access_log off;
    client_body_temp_path {{dir}}/tmp-body;
    proxy_temp_path {{dir}}/tmp-proxy;
    upstream synapse {{{{ server 127.0.0.1:{ORIGIN_PORT}; keepalive 64; }}}}
    server {{{{
        listen 127.0.0.1:{PROXY_PORT} backlog=4096;
        location /_matrix {{{{
            proxy_pass http://synapse;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_read_timeout 310s;
        }}}}
    }}}}
}}}}
"""


def spawn(argv, log):
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def group_rss_kib(pgid):
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            with open(f"/proc/{pid}/status") as f:
                total += sum(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        except (OSError, ProcessLookupError):
            pass
    return total


def start_proxy(name, args, work):
    log = open(os.path.join(work, f"{name}.log"), "ab")
    if name == "mxgate":
        cfg = os.path.join(work, "mxgate.toml")
        with open(cfg, "w") as f:
            f.write(MXGATE_CONFIG)
        proc = spawn([args.bin, "run", "--config", cfg], log)
    else:
        d = os.path.join(work, "nginx")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(NGINX_CONFIG.format(dir=d))
        proc = spawn(["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"), "-g", "daemon off;"], log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            asyncio.run(asyncio.wait_for(asyncio.open_connection("127.0.0.1", PROXY_PORT), 1))
            return proc
        except (OSError, asyncio.TimeoutError):
            time.sleep(0.1)
    stop(proc)
    sys.exit(f"{name} did not listen on 127.0.0.1:{PROXY_PORT} (see {work}/{name}.log)")


async def hold_polls(pgid, conns, ms):
    request = (f"GET /_matrix/client/v3/sync?timeout={ms}&since=s1 HTTP/1.1\r\n"
               f"Host: localhost\r\nConnection: close\r\n\r\n").encode()
    idle = group_rss_kib(pgid)
    peak, ok, errors = idle, 0, 0
    done = asyncio.Event()

    async def one():
        nonlocal ok, errors
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", PROXY_PORT)
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ms / 1000 + 30)
            await reader.read()
            writer.close()
            ok += head.startswith(b"HTTP/1.1 200")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            errors += 1

    async def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, group_rss_kib(pgid))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*[one() for _ in range(conns)])
    done.set()
    await sampler
    return {"idle": idle / 1024, "peak": peak / 1024, "per_poll_kib": (peak - idle) / conns,
            "ok": ok, "errors": errors}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bin", help="the mxgate binary")
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--ms", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    if not args.bin:
        ap.error("--bin is required")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    systems = ["mxgate"] + (["nginx"] if shutil.which("nginx") else [])
    work = tempfile.mkdtemp(prefix="mxgate-lp-")
    origin = spawn([sys.executable, os.path.abspath(__file__), "--serve"],
                   open(os.path.join(work, "origin.log"), "ab"))
    results = {s: [] for s in systems}
    try:
        time.sleep(0.5)
        for rep in range(args.reps):
            for name in systems if rep % 2 == 0 else systems[::-1]:
                proc = start_proxy(name, args, work)
                try:
                    time.sleep(0.5)
                    r = asyncio.run(hold_polls(os.getpgid(proc.pid), args.conns, args.ms))
                finally:
                    stop(proc)
                results[name].append(r)
                print(f"rep {rep + 1} {name}: idle {r['idle']:.1f} MiB, peak {r['peak']:.1f} MiB "
                      f"(+{r['per_poll_kib']:.1f} KiB/poll), {r['ok']}/{args.conns} ok, {r['errors']} errors",
                      file=sys.stderr)
    finally:
        stop(origin)
        shutil.rmtree(work, ignore_errors=True)

    med = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in results.items()}
    print(f"\n### {args.conns} concurrent {args.ms} ms long-polls (medians of {args.reps})\n")
    print("| system | idle RSS MiB | peak RSS MiB | KiB per held poll | ok | errors |")
    print("|---|---|---|---|---|---|")
    for s, m in med.items():
        ratio = f" ({m['peak'] / med['nginx']['peak']:.2f}×)" if "nginx" in med and s != "nginx" else ""
        print(f"| {s} | {m['idle']:.1f} | {m['peak']:.1f}{ratio} | {m['per_poll_kib']:.1f} | "
              f"{m['ok']:.0f}/{args.conns} | {m['errors']:.0f} |")


if __name__ == "__main__":
    main()
