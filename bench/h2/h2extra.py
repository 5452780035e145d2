#!/usr/bin/env python3
"""HTTP/2 scenarios that /work/shared/bench/h2bench.py does not run, side by side through nginx,
HAProxy and the proxy under test (same peers, same contract for --cmd as h2bench.py: the command
runs in the foreground and gets H2_PORT, ORIGIN, CERT, KEY, WORKDIR):

  download: one 100 MiB GET of /_matrix/media/big over h2 (h2load -n 1 -c 1), MiB/s and proxy CPU
            ms/GiB, per repetition (interleaved, a fresh proxy process per repetition);
  idle:     RSS (VmRSS summed over the proxy's processes) before and after opening N TLS
            connections that negotiate h2, send the preface and SETTINGS, acknowledge the
            server's SETTINGS and then stay idle: bytes per idle h2 connection.

  h2extra.py --cmd 'COMMAND' [--name NAME] [--reps 3] [--idle 1000] [--only nginx,haproxy,NAME]
Everything listens on 127.0.0.1; only processes started here are stopped (by process group)."""
import argparse, asyncio, json, os, re, signal, socket, ssl, statistics, subprocess, sys, tempfile, time

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port, secs=20):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.3).close(); return True
        except OSError:
            time.sleep(0.1)
    return False

def tree(pid):
    out = [pid]
    try:
        for c in open("/proc/%d/task/%d/children" % (pid, pid)).read().split():
            out += tree(int(c))
    except OSError:
        pass
    return out

def cpu_ticks(pid):
    t = 0
    for task in tree(pid):
        try:
            f = open("/proc/%d/stat" % task).read().rsplit(")", 1)[1].split()
            t += int(f[11]) + int(f[12])
        except (OSError, IndexError):
            pass
    return t

def rss_kib(pid):
    t = 0
    for task in tree(pid):
        try:
            for line in open("/proc/%d/status" % task):
                if line.startswith("VmRSS:"):
                    t += int(line.split()[1])
        except OSError:
            pass
    return t

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"       # empty SETTINGS
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"

async def open_idle(port, n, hold):
    """Opens n h2 connections (ALPN h2, preface, SETTINGS, ACK of the server's SETTINGS);
    returns (opened, writers) once all are idle."""
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    conns, failed = [], 0
    sem = asyncio.Semaphore(50)
    async def one():
        nonlocal failed
        async with sem:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 10)
                if w.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
                    failed += 1; w.close(); return
                w.write(PREFACE + SETTINGS); await w.drain()
                # Read frames until the server's SETTINGS (non-ACK), then acknowledge it.
                while True:
                    head = await asyncio.wait_for(r.readexactly(9), 10)
                    ln = int.from_bytes(head[:3], "big")
                    await r.readexactly(ln)
                    if head[3] == 4 and not head[4] & 1:
                        break
                w.write(SETTINGS_ACK); await w.drain()
                conns.append((r, w))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
                failed += 1
    await asyncio.gather(*[one() for _ in range(n)])
    return conns, failed

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cmd", default=""); ap.add_argument("--name", default="custom")
    ap.add_argument("--reps", type=int, default=3); ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--only", default=""); ap.add_argument("--no-download", action="store_true")
    ap.add_argument("--no-idle", action="store_true")
    a = ap.parse_args()
    w = tempfile.mkdtemp(prefix="h2extra."); os.chmod(w, 0o755)
    cert, key = os.path.join(w, "cert.pem"), os.path.join(w, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    os.makedirs(os.path.join(w, "www"), exist_ok=True)
    big = os.path.join(w, "www", "big.bin")
    with open(big, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    procs = []
    def start(name, argv, env=None, shell=False):
        log = open(os.path.join(w, name + ".log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, shell=shell, start_new_session=True)
        procs.append(p); return p
    origin = free_port()
    user = "user root;" if os.getuid() == 0 else ""
    for d in ("o", "n"):
        os.makedirs(os.path.join(w, d), exist_ok=True)
    open(os.path.join(w, "o", "nginx.conf"), "w").write(f"""{user}
worker_processes 1; pid {w}/o/pid; error_log {w}/o/err.log warn; daemon off;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; sendfile on;
  server {{ listen 127.0.0.1:{origin} backlog=4096;
    location = /_matrix/media/big {{ default_type application/octet-stream; alias {big}; }}
    location / {{ default_type text/plain; return 200 "ok: small Matrix-sized answer\\n"; }} }} }}
""")
    start("origin", ["nginx", "-p", w + "/o", "-c", w + "/o/nginx.conf"])
    ports, systems = {}, {}
    # The peers exactly as h2bench.py configures them.
    ports["nginx"] = free_port()
    open(os.path.join(w, "n", "nginx.conf"), "w").write(f"""{user}
worker_processes 1; pid {w}/n/pid; error_log {w}/n/err.log warn; daemon off;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; http2_max_requests 1000000;
  upstream o {{ server 127.0.0.1:{origin}; keepalive 1024; }}
  server {{ listen 127.0.0.1:{ports['nginx']} ssl http2 backlog=4096;
    ssl_certificate {cert}; ssl_certificate_key {key};
    location /_matrix {{ proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme; client_max_body_size 50m; }} }} }}
""")
    systems["nginx"] = ["nginx", "-p", w + "/n", "-c", w + "/n/nginx.conf"]
    ports["haproxy"] = free_port()
    pem = os.path.join(w, "both.pem"); open(pem, "w").write(open(cert).read() + open(key).read())
    open(os.path.join(w, "haproxy.cfg"), "w").write(f"""global
  nbthread 1
  maxconn 8192
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 180s
  http-reuse always
frontend f
  bind 127.0.0.1:{ports['haproxy']} ssl crt {pem} alpn h2,http/1.1
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Forwarded-For %[src]
  default_backend o
backend o
  server o 127.0.0.1:{origin}
""")
    systems["haproxy"] = ["haproxy", "-db", "-f", os.path.join(w, "haproxy.cfg")]
    if a.cmd:
        ports[a.name] = free_port()
        env = dict(os.environ, H2_PORT=str(ports[a.name]), ORIGIN="127.0.0.1:%d" % origin, CERT=cert, KEY=key, WORKDIR=w)
        systems[a.name] = (a.cmd, env)
    only = [s for s in a.only.split(",") if s] or list(systems)
    rows = []
    hz = os.sysconf("SC_CLK_TCK")
    try:
        if not wait_port(origin):
            sys.exit("origin did not start")
        for rep in range(a.reps):
            order = only[rep % len(only):] + only[:rep % len(only)]
            for name in order:
                spec = systems[name]
                p = start("%s.%d" % (name, rep), spec[0], env=spec[1], shell=True) if isinstance(spec, tuple) else start("%s.%d" % (name, rep), spec)
                if not wait_port(ports[name]):
                    rows.append({"system": name, "rep": rep, "error": "did not listen"}); os.killpg(p.pid, signal.SIGTERM); p.wait(); continue
                time.sleep(0.5)
                url = "https://localhost:%d/_matrix/media/big" % ports[name]
                if not a.no_download:
                    subprocess.run(["h2load", "-n", "1", "-c", "1", url], capture_output=True, timeout=120)  # warm-up
                    t0 = cpu_ticks(p.pid)
                    r = subprocess.run(["h2load", "-n", "1", "-c", "1", url], capture_output=True, text=True, timeout=120)
                    ticks = cpu_ticks(p.pid) - t0
                    fin = re.search(r"finished in ([\d.]+)(m?s)", r.stdout)
                    ok = re.search(r"(\d+) succeeded", r.stdout)
                    got = re.search(r"traffic: .*?\((\d+)\) total", r.stdout)
                    secs = float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1) if fin else None
                    row = {"system": name, "rep": rep, "scenario": "download", "secs": secs,
                           "ok": bool(ok and int(ok.group(1)) == 1 and got and int(got.group(1)) > 100 << 20),
                           "mib_s": (100 / secs) if secs else None, "cpu_ms_per_gib": ticks / hz * 1000 * 10.24}
                    rows.append(row); print(json.dumps(row), flush=True)
                if not a.no_idle:
                    time.sleep(0.5)
                    before = rss_kib(p.pid)
                    async def hold():
                        conns, failed = await open_idle(ports[name], a.idle, True)
                        await asyncio.sleep(1.0)
                        after = rss_kib(p.pid)
                        for _, wr in conns:
                            wr.close()
                        return len(conns), failed, after
                    opened, failed, after = asyncio.run(hold())
                    row = {"system": name, "rep": rep, "scenario": "idle", "opened": opened, "failed": failed,
                           "rss_before_kib": before, "rss_after_kib": after,
                           "bytes_per_conn": (after - before) * 1024 / opened if opened else None}
                    rows.append(row); print(json.dumps(row), flush=True)
                os.killpg(p.pid, signal.SIGTERM); p.wait(timeout=10)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    med = lambda xs: statistics.median(xs) if xs else None
    def per_rep_ratio(name, scen, key):
        out = []
        for rep in range(a.reps):
            x = [r[key] for r in rows if r["system"] == name and r.get("scenario") == scen and r["rep"] == rep and r.get(key)]
            b = [r[key] for r in rows if r["system"] == "nginx" and r.get("scenario") == scen and r["rep"] == rep and r.get(key)]
            if x and b:
                out.append(x[0] / b[0])
        return med(out)
    if not a.no_download:
        print("\n| system | 100 MiB h2 download MiB/s (× nginx) | proxy CPU ms/GiB (× nginx) |")
        print("|---|---|---|")
        for name in only:
            rr = [r for r in rows if r["system"] == name and r.get("scenario") == "download" and r["ok"]]
            if not rr:
                print("| %s | failed | – |" % name); continue
            rs, rc = per_rep_ratio(name, "download", "mib_s"), per_rep_ratio(name, "download", "cpu_ms_per_gib")
            print("| %s | %.0f (%s) | %.0f (%s) |" % (name, med([r["mib_s"] for r in rr]), "%.2f×" % rs if rs else "–",
                  med([r["cpu_ms_per_gib"] for r in rr]), "%.2f×" % rc if rc else "–"))
    if not a.no_idle:
        print("\n| system | RSS idle KiB | RSS + %d idle h2 conns KiB | bytes per idle h2 conn (× nginx) | failed |" % a.idle)
        print("|---|---|---|---|---|")
        for name in only:
            rr = [r for r in rows if r["system"] == name and r.get("scenario") == "idle" and r.get("bytes_per_conn")]
            if not rr:
                print("| %s | failed | – | – | – |" % name); continue
            rb = per_rep_ratio(name, "idle", "bytes_per_conn")
            print("| %s | %d | %d | %.0f (%s) | %d |" % (name, med([r["rss_before_kib"] for r in rr]), med([r["rss_after_kib"] for r in rr]),
                  med([r["bytes_per_conn"] for r in rr]), "%.2f×" % rb if rb else "–", sum(r["failed"] for r in rr)))
    json.dump(rows, open(os.path.join(w, "rows.json"), "w"))
    print("\nworkdir: %s" % w)

if __name__ == "__main__":
    main()
