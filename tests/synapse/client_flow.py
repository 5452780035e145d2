#!/usr/bin/env python3
"""Drive the Matrix client flow against a real Synapse through a reverse proxy (mxgate).

Standard library only (http.client + ssl), so any python3 >= 3.8 runs it; the Rust test uses
the Synapse venv's python.

  client_flow.py --proxy https://127.0.0.1:PPORT --direct http://127.0.0.1:SPORT \
                 --shared-secret S --synapse-log DIR/homeserver.log (--ca CA.pem | --insecure)

`--direct` is Synapse's own listener: used only for what a proxy must NOT let through
(shared-secret registration, admin API) and to check what Synapse saw. Every client request
goes to `--proxy`. With `--no-proxy-checks` (`--proxy` may then be Synapse's own URL) the
assertions that only a proxy can satisfy are skipped and reported as such: /_synapse/admin
refused, X-Forwarded-For replaced, X-Request-ID echoed, .well-known answered, 413 by
Content-Length.

Each step prints `STEP <name>` then `  ok ...`; on the first failure it prints
`FAILED at step <name>: <why>` and exits 1 (2 for bad arguments).
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import select
import socket
import ssl
import sys
import threading
import time
import urllib.parse

MIB = 1024 * 1024
MAX_UPLOAD = 50 * MIB  # Synapse's max_upload_size "50M" and mxgate's default limit


class StepFailed(Exception):
    pass


class Skip(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise StepFailed(msg)


def eventually(fetch, ok, seconds=15.0):
    """Calls fetch() until ok(result) or `seconds` pass; returns the last result. Behind
    Synapse workers a read can reach a worker before replication brought it the write just
    made on another process; clients retry such reads, and so does the flow."""
    deadline = time.monotonic() + seconds
    while True:
        result = fetch()
        if ok(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def q(s):
    """Percent-encode one path segment completely: `!` -> %21, `:` -> %3A, `#` -> %23."""
    return urllib.parse.quote(s, safe="")


class Resp:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers  # list of (name, value)
        self.body = body
        self.elapsed = elapsed

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise StepFailed(f"HTTP {self.status}: body is not JSON: {self.body[:300]!r}")

    def __repr__(self):
        return f"HTTP {self.status} {self.body[:300]!r}"


class Server:
    """One base URL (scheme://host:port). A fresh connection per request, read to the end."""

    def __init__(self, base, ssl_ctx=None):
        u = urllib.parse.urlsplit(base)
        if u.scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/"):
            raise SystemExit(f"bad base URL {base!r}: want http(s)://host:port")
        self.base = base.rstrip("/")
        self.scheme, self.host = u.scheme, u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.ssl_ctx = ssl_ctx

    def connect(self, timeout):
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl_ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, token=None, timeout=60.0):
        """`path` is sent byte for byte (it must already be percent-encoded)."""
        h = {"User-Agent": "mxgate-e2e/client_flow"}
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if token:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        conn = self.connect(timeout)
        t0 = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            return Resp(r.status, r.getheaders(), data, time.monotonic() - t0)
        except (OSError, http.client.HTTPException) as e:
            raise StepFailed(f"{method} {self.base}{path}: {type(e).__name__}: {e}")
        finally:
            conn.close()

    def json(self, method, path, body=None, token=None, expect=200, timeout=60.0, headers=None):
        r = self.request(method, path, body=body, token=token, timeout=timeout, headers=headers)
        # expect=None: any status (a caller polling until a read shows a write)
        check(expect is None or r.status == expect, f"{method} {path}: expected HTTP {expect}, got {r!r}")
        return r.json()

    def stream_upload(self, path, size, chunk_source, token, content_type="application/octet-stream", timeout=120.0):
        """POST `size` bytes produced chunk by chunk (never the whole body in memory).

        The socket is non-blocking while the body goes out: if the server answers early (a
        proxy may send 413 from Content-Length alone and stop reading), we stop sending and
        read that answer instead of blocking in send() until a timeout. Returns
        (Resp, bytes_sent, sha256 of the bytes sent).
        """
        t0 = time.monotonic()
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            if self.scheme == "https":
                sock = self.ssl_ctx.wrap_socket(sock, server_hostname=self.host)
            head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    f"User-Agent: mxgate-e2e/client_flow\r\nAuthorization: Bearer {token}\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n")
            sock.sendall(head.encode())
            sock.setblocking(False)
            digest, sent, early, got = hashlib.sha256(), 0, False, b""
            for chunk in chunk_source(size):
                view, off = memoryview(chunk), 0
                while off < len(view) and not early:
                    readable, writable, _ = select.select([sock], [sock], [], 30)
                    if readable:
                        try:
                            data = sock.recv(65536)
                            got += data
                            early = True  # the server answered (or closed: b"") mid-body
                            break
                        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                            pass  # TLS-only records (e.g. session tickets): no HTTP data yet
                        except (ConnectionResetError, ssl.SSLError) as e:
                            raise StepFailed(f"POST {path}: {type(e).__name__} {e} after {sent} of {size} bytes")
                    if not writable:
                        if readable:
                            continue
                        raise StepFailed(f"POST {path}: server neither read the body nor answered for 30 s ({sent} of {size} bytes sent)")
                    try:
                        n = sock.send(view[off:off + 65536])
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        continue
                    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                        early = True
                        break
                    off += n
                    sent += n
                if early:
                    break
                digest.update(chunk)
            sock.setblocking(True)
            sock.settimeout(timeout)
            try:
                status, headers, body = read_http_response(sock, got)
            except (OSError, ValueError) as e:
                where = "before the body was complete" if early else "after the whole body"
                raise StepFailed(f"POST {path}: no HTTP response ({type(e).__name__}: {e}) {where}, {sent} of {size} bytes sent")
            return Resp(status, headers, body, time.monotonic() - t0), sent, digest.hexdigest()
        finally:
            sock.close()


def read_http_response(sock, buf=b""):
    """Minimal HTTP/1.1 response reader (Content-Length, chunked, or read to EOF)."""

    def more():
        data = sock.recv(65536)
        if not data:
            raise ValueError("connection closed mid-response")
        return data

    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ValueError(f"connection closed before a full response head ({len(buf)} bytes: {buf[:200]!r})")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [(k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:] if line)]
    h = {k.lower(): v for k, v in headers}
    if "chunked" in h.get("transfer-encoding", "").lower():
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += more()
            size_line, rest = rest.split(b"\r\n", 1)
            n = int(size_line.split(b";")[0], 16)
            while len(rest) < n + 2:
                rest += more()
            body, rest = body + rest[:n], rest[n + 2:]
            if n == 0:
                return status, headers, body
    if "content-length" in h:
        n = int(h["content-length"])
        while len(rest) < n:
            rest += more()
        return status, headers, rest[:n]
    while True:
        data = sock.recv(65536)
        if not data:
            return status, headers, rest
        rest += data


def random_chunks(seed_block):
    """Chunk source repeating one random 1 MiB block (cheap to produce, incompressible)."""

    def gen(size):
        left = size
        while left > 0:
            c = seed_block[: min(left, len(seed_block))]
            left -= len(c)
            yield c

    return gen


class Flow:
    def __init__(self, a):
        self.a = a
        ctx = None
        if urllib.parse.urlsplit(a.proxy).scheme == "https":
            if a.insecure:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx = ssl.create_default_context(cafile=a.ca)
        self.proxy = Server(a.proxy, ctx)
        self.direct = Server(a.direct)
        self.proxy_checks = not a.no_proxy_checks
        self.run_id = secrets.token_hex(4)
        self.users = {}
        self.results = []

    # ---- helpers --------------------------------------------------------------------------
    def register(self, localpart, password, admin=False, via=None):
        via = via or self.direct
        nonce = self.direct.json("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(self.a.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(), b"admin" if admin else b"notadmin"]))
        body = {"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac.hexdigest()}
        return via.request("POST", "/_synapse/admin/v1/register", body=body)

    def sync(self, token, since=None, timeout_ms=0, http_timeout=75.0):
        qs = {"timeout": str(timeout_ms)}
        if since:
            qs["since"] = since
        # a filter that keeps the response small and free of presence/account data noise
        qs["filter"] = json.dumps({"presence": {"types": []}, "account_data": {"types": []},
                                   "room": {"timeline": {"limit": 50}}}, separators=(",", ":"))
        return self.proxy.request("GET", "/_matrix/client/v3/sync?" + urllib.parse.urlencode(qs),
                                  token=token, timeout=http_timeout)

    def wait_log_line(self, needle, deadline_s=15.0):
        """First line of Synapse's log containing `needle` (bounded wait: access lines are
        written when the response is finished)."""
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                with open(self.a.synapse_log, encoding="utf8", errors="replace") as f:
                    for line in f:
                        if needle in line and "Processed request" in line:
                            return line.rstrip("\n")
            except OSError as e:
                raise StepFailed(f"cannot read Synapse log {self.a.synapse_log}: {e}")
            if time.monotonic() > deadline:
                raise StepFailed(f"no access-log line containing {needle!r} in {self.a.synapse_log} within {deadline_s} s")
            time.sleep(0.2)

    # ---- the steps ------------------------------------------------------------------------
    def step_health(self):
        r = self.proxy.request("GET", "/health")
        check(r.status == 200 and r.body == b"OK", f"GET /health: expected 200 'OK', got {r!r}")
        return "200 OK"

    def step_register_direct(self):
        for name, admin in (("a", False), ("b", False), ("admin", True)):
            localpart = f"{name}-{self.run_id}"
            password = secrets.token_urlsafe(12)
            r = self.register(localpart, password, admin=admin)
            check(r.status == 200, f"shared-secret registration of {localpart} directly on Synapse: {r!r}")
            j = r.json()
            self.users[name] = {"localpart": localpart, "password": password, "user_id": j["user_id"],
                                "direct_token": j["access_token"]}
        return ", ".join(u["user_id"] for u in self.users.values())

    def step_admin_refused(self):
        if not self.proxy_checks:
            raise Skip("--no-proxy-checks")
        for method in ("GET", "POST"):
            if method == "GET":
                r = self.proxy.request("GET", "/_synapse/admin/v1/register")
            else:  # a valid nonce + HMAC: only the proxy stands in the way
                r = self.register(f"intruder-{self.run_id}", "pw-intruder-1", admin=True, via=self.proxy)
            check(r.status == 404, f"{method} /_synapse/admin/v1/register through the proxy: expected 404, got {r!r}")
            ctype = r.header("Content-Type") or ""
            check("json" in ctype, f"{method} admin via proxy: expected a JSON 404, Content-Type {ctype!r}")
            check(isinstance(r.json().get("errcode"), str), f"{method} admin via proxy: no errcode in {r.body!r}")
        admin = self.users["admin"]["direct_token"]
        r = self.direct.request("GET", f"/_synapse/admin/v2/users/{q('@intruder-' + self.run_id + ':localhost')}", token=admin)
        check(r.status == 404, f"intruder user exists after a proxied registration attempt: {r!r}")
        return "GET+POST /_synapse/admin/v1/register -> 404 JSON; user not created"

    def step_login(self):
        for name in ("a", "b"):
            u = self.users[name]
            body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": u["localpart"]},
                    "password": u["password"], "initial_device_display_name": f"e2e-{name}"}
            j = self.proxy.json("POST", "/_matrix/client/v3/login", body=body)
            check(j.get("user_id") == u["user_id"], f"login {name}: user_id {j.get('user_id')!r}")
            u["token"] = j["access_token"]
            u["device_id"] = j["device_id"]
        return "a, b logged in through the proxy"

    def step_room(self):
        a, b = self.users["a"], self.users["b"]
        alias_local = f"test-{self.run_id}"
        self.alias = f"#{alias_local}:localhost"
        # Room version 11 on purpose: its ids are `!opaque:localhost`, so room paths carry both
        # %21 and %3A (v12, Synapse's default since 1.136, drops the `:server` part).
        j = self.proxy.json("POST", "/_matrix/client/v3/createRoom", token=a["token"],
                            body={"room_alias_name": alias_local, "preset": "private_chat", "room_version": "11",
                                  "name": "mxgate e2e héllo"})
        self.room_id = j["room_id"]
        check(self.room_id.startswith("!") and self.room_id.endswith(":localhost"), f"unexpected room id {self.room_id!r}")
        self.room_path = f"/_matrix/client/v3/rooms/{q(self.room_id)}"
        check("%21" in self.room_path and "%3A" in self.room_path, f"room path not percent-encoded: {self.room_path}")
        # the alias resolves through the proxy (percent-encoded # and :)
        j = eventually(lambda: self.proxy.json("GET", f"/_matrix/client/v3/directory/room/{q(self.alias)}",
                                               token=b["token"], expect=None),
                       lambda j: "room_id" in j)
        check(j.get("room_id") == self.room_id, f"alias {self.alias} resolved to {j!r}")
        self.proxy.json("POST", f"{self.room_path}/invite", token=a["token"], body={"user_id": b["user_id"]})
        join_path = f"/_matrix/client/v3/join/{q(self.alias)}"
        check(join_path.endswith(f"%23{alias_local}%3Alocalhost"), join_path)
        j = self.proxy.json("POST", join_path, token=b["token"], body={})
        check(j.get("room_id") == self.room_id, f"join via alias gave {j!r}, want {self.room_id}")
        want = {a["user_id"], b["user_id"]}
        j = eventually(lambda: self.proxy.json("GET", f"{self.room_path}/joined_members", token=a["token"]),
                       lambda j: set(j.get("joined", {})) == want)
        check(set(j.get("joined", {})) == want, f"joined_members: {j!r}")
        # a room of the server's default version too, read back with /messages pagination
        j = self.proxy.json("POST", "/_matrix/client/v3/createRoom", token=a["token"], body={"preset": "private_chat"})
        rid2 = j["room_id"]
        path2 = f"/_matrix/client/v3/rooms/{q(rid2)}"
        self.proxy.json("PUT", f"{path2}/send/m.room.message/{q('t/' + self.run_id)}", token=a["token"],
                        body={"msgtype": "m.text", "body": "v12 ✓"})
        def message_bodies():
            j = self.proxy.json("GET", f"{path2}/messages?dir=b&limit=5", token=a["token"])
            return [e["content"].get("body") for e in j.get("chunk", []) if e.get("type") == "m.room.message"]
        bodies = eventually(message_bodies, bool)
        check(bodies == ["v12 ✓"], f"/messages in {rid2}: {bodies!r}")
        return f"{self.room_id} alias {self.alias}; B joined via {join_path}; default-version room {rid2} ok"

    MESSAGES = ["héllo wörld 🎉", "こんにちは、世界！日本語のテスト", "Привет, мир! Проверка кириллицы"]

    def step_messages(self):
        a, b = self.users["a"], self.users["b"]
        r = self.sync(b["token"], timeout_ms=0)
        check(r.status == 200, f"B initial /sync: {r!r}")
        since = r.json()["next_batch"]
        sent_ids = []
        for i, text in enumerate(self.MESSAGES):
            txn = f"m{self.run_id}-{i}"
            j = self.proxy.json("PUT", f"{self.room_path}/send/m.room.message/{q(txn)}", token=a["token"],
                                body={"msgtype": "m.text", "body": text})
            sent_ids.append(j["event_id"])
        # idempotent retry of the same transaction id must return the same event
        j = self.proxy.json("PUT", f"{self.room_path}/send/m.room.message/{q(f'm{self.run_id}-0')}",
                            token=a["token"], body={"msgtype": "m.text", "body": self.MESSAGES[0]})
        check(j["event_id"] == sent_ids[0], f"txn retry gave a new event {j['event_id']} != {sent_ids[0]}")
        got = []
        deadline = time.monotonic() + 90
        polls = 0
        while len(got) < len(self.MESSAGES):
            check(time.monotonic() < deadline, f"B received {len(got)}/3 messages in 90 s: {got!r}")
            r = self.sync(b["token"], since=since, timeout_ms=30000)
            polls += 1
            check(r.status == 200, f"B /sync long-poll: {r!r}")
            j = r.json()
            since = j["next_batch"]
            room = j.get("rooms", {}).get("join", {}).get(self.room_id, {})
            for ev in room.get("timeline", {}).get("events", []):
                if ev.get("type") == "m.room.message" and ev.get("sender") == a["user_id"]:
                    got.append((ev["event_id"], ev["content"].get("body")))
        check([e for e, _ in got] == sent_ids, f"event order/ids: got {got!r}, sent {sent_ids!r}")
        check([t for _, t in got] == self.MESSAGES, f"message bodies changed in transit: {[t for _, t in got]!r}")
        self.since_b = since
        return f"3 non-ASCII messages received in order by B ({polls} /sync poll(s))"

    def start_idle_longpoll(self):
        """The idle long-poll runs in a thread while the next steps proceed (saves ~30 s)."""
        # Catch up first: earlier steps (e.g. A's extra login -> device_lists.changed) may still
        # have something for B. Poll with a short timeout until one poll idles for its full 2 s.
        since = self.since_b
        deadline = time.monotonic() + 20
        while True:
            r = self.sync(self.users["b"]["token"], since=since, timeout_ms=2000)
            check(r.status == 200, f"catch-up /sync: {r!r}")
            since = r.json()["next_batch"]
            if r.elapsed >= 1.9:
                break
            check(time.monotonic() < deadline, f"B's /sync never went idle within 20 s: {r.body[:500]!r}")
        self.since_b = since
        out = {}

        def run():
            try:
                out["resp"] = self.sync(self.users["b"]["token"], since=self.since_b, timeout_ms=30000, http_timeout=90)
            except StepFailed as e:
                out["error"] = str(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, out

    def step_idle_longpoll(self, t, out):
        t.join(100)
        check(not t.is_alive(), "idle /sync long-poll did not come back within 100 s")
        if "error" in out:
            raise StepFailed(f"idle /sync long-poll: {out['error']}")
        r = out["resp"]
        check(r.status == 200, f"idle /sync?timeout=30000: {r!r} after {r.elapsed:.1f} s")
        j = r.json()
        check(r.elapsed >= 25.0, f"idle /sync?timeout=30000 returned after {r.elapsed:.1f} s (< 25 s): {r.body[:1500]!r}")
        return f"200 after {r.elapsed:.1f} s"

    def step_media(self):
        a = self.users["a"]
        size = 5 * MIB + 12345
        data = os.urandom(size)
        r, sent, sha = self.proxy.stream_upload("/_matrix/media/v3/upload?filename=" + q("e2e-blob é.bin"), size,
                                                lambda n: (data[i:i + 256 * 1024] for i in range(0, n, 256 * 1024)),
                                                a["token"])
        check(r.status == 200, f"upload {size} bytes: {r!r}")
        mxc = r.json().get("content_uri", "")
        m = re.fullmatch(r"mxc://([^/]+)/([A-Za-z0-9_-]+)", mxc)
        check(m is not None, f"bad content_uri {mxc!r}")
        server, media_id = m.groups()
        b = self.users["b"]
        r = self.proxy.request("GET", f"/_matrix/client/v1/media/download/{q(server)}/{q(media_id)}", token=b["token"], timeout=120)
        check(r.status == 200, f"authenticated download of {mxc}: HTTP {r.status} {r.body[:200]!r}")
        got = hashlib.sha256(r.body).hexdigest()
        check(len(r.body) == size and got == sha,
              f"download differs: {len(r.body)} bytes sha256 {got}, uploaded {size} bytes sha256 {sha}")
        # unauthenticated download of the same media must be refused
        r = self.proxy.request("GET", f"/_matrix/client/v1/media/download/{q(server)}/{q(media_id)}")
        check(r.status == 401, f"download without a token: expected 401, got HTTP {r.status} {r.body[:200]!r}")
        return f"{size} bytes up and down, sha256 {sha[:16]}…; 401 without token"

    def step_media_too_large(self):
        a = self.users["a"]
        size = MAX_UPLOAD + 1
        block = os.urandom(MIB)
        try:
            r, sent, _ = self.proxy.stream_upload("/_matrix/media/v3/upload?filename=too-big.bin", size,
                                                  random_chunks(block), a["token"], timeout=120)
        except StepFailed as e:
            if not self.proxy_checks:
                # Synapse alone aborts the connection once the body passes its limit.
                return f"direct Synapse aborted the connection ({e})"
            raise
        if r.status == 413:
            j = r.json()
            check(j.get("errcode") == "M_TOO_LARGE", f"413 without errcode M_TOO_LARGE: {r.body[:300]!r}")
            return f"413 M_TOO_LARGE after {sent} of {size} bytes sent"
        raise StepFailed(f"upload of {size} bytes: expected 413 M_TOO_LARGE, got {r!r}")

    def step_media_too_large_write_first(self):
        """A client that writes its whole upload before reading the answer (http.client here;
        matrix-nio on aiohttp and most SDKs do the same) must read the 413 the proxy sent as
        soon as it saw the Content-Length: the proxy keeps reading and discarding the body
        (lingering close) instead of closing into a reset that destroys the answer."""
        if not self.proxy_checks:
            raise Skip("Synapse alone aborts an over-size upload (the 413 by Content-Length is the proxy's)")
        a = self.users["a"]
        body = os.urandom(MIB) * 60
        r = self.proxy.request("POST", "/_matrix/media/v3/upload?filename=write-first.bin", body=body,
                               headers={"Content-Type": "application/octet-stream"}, token=a["token"],
                               timeout=120)
        check(r.status == 413, f"60 MiB written first: expected 413, got {r!r}")
        j = r.json()
        check(j.get("errcode") == "M_TOO_LARGE", f"413 without errcode M_TOO_LARGE: {r.body[:300]!r}")
        return f"60 MiB written in full, then 413 M_TOO_LARGE read ({r.elapsed:.1f} s)"

    def step_client_address(self):
        a, admin = self.users["a"], self.users["admin"]
        ua = f"mxgate-e2e-ip-{self.run_id}"
        # Through the proxy: a spoofed X-Forwarded-For and no X-Request-ID (the proxy makes one).
        # Direct (--no-proxy-checks): Synapse would believe X-Forwarded-For, so send none and
        # check the request_id_header plumbing with an X-Request-ID of our own instead.
        headers = {"User-Agent": ua}
        if self.proxy_checks:
            headers["X-Forwarded-For"] = "6.6.6.6"
        # A fresh access token: Synapse records (user, token, ip) once per 2 minutes, so an
        # old token would not show this request's user agent in the admin whois API.
        login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": a["localpart"]},
                 "password": a["password"], "initial_device_display_name": "e2e-ip"}
        r = self.proxy.request("POST", "/_matrix/client/v3/login", body=login, headers=headers)
        check(r.status == 200, f"login with User-Agent {ua}: {r!r}")
        token = r.json()["access_token"]
        if not self.proxy_checks:
            headers["X-Request-ID"] = f"e2e-direct-{self.run_id}"
        r = self.proxy.request("GET", "/_matrix/client/v3/account/whoami", token=token, headers=headers)
        check(r.status == 200 and r.json().get("user_id") == a["user_id"], f"whoami: {r!r}")
        line = self.wait_log_line(f'"GET /_matrix/client/v3/account/whoami HTTP/1.1" "{ua}"')
        # "<asctime> - synapse.access.http.<port> - <lineno> - INFO - <request> - <client ip> - <port> - {<user>} Processed request: ..."
        m = re.search(r" - (synapse\.access\.[^ ]+) - \d+ - INFO - (\S+) - (\S+) - ", line)
        check(m is not None, f"cannot parse access-log line: {line}")
        _, request_name, client = m.groups()
        check(client in ("127.0.0.1", "::1", "::ffff:127.0.0.1"), f"Synapse logged client {client!r}, want loopback: {line}")
        if self.proxy_checks:
            rid = r.header("X-Request-ID")
            check(rid, f"proxy did not echo an X-Request-ID response header: {r.headers!r}")
            check(request_name == f"GET-{rid}", f"Synapse request name {request_name!r} != 'GET-' + echoed X-Request-ID {rid!r}: {line}")
        else:
            check(request_name == f"GET-e2e-direct-{self.run_id}", f"request_id_header not honoured: {request_name!r}: {line}")
        # what Synapse recorded as the device's last-seen IP (admin API, directly)
        deadline = time.monotonic() + 15
        while True:
            j = self.direct.json("GET", f"/_synapse/admin/v1/whois/{q(a['user_id'])}", token=admin["direct_token"])
            conns = [c for d in j.get("devices", {}).values() for s in d.get("sessions", [])
                     for c in s.get("connections", []) if c.get("user_agent") == ua]
            if conns:
                break
            check(time.monotonic() < deadline, f"whois shows no connection with user agent {ua!r}: {j!r}")
            time.sleep(0.5)
        ips = {c.get("ip") for c in conns}
        check(ips <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, f"whois last-seen IPs {ips!r} (spoofed X-Forwarded-For believed?)")
        if self.proxy_checks:
            every = {c.get("ip") for d in j.get("devices", {}).values() for s in d.get("sessions", [])
                     for c in s.get("connections", [])}
            check("6.6.6.6" not in every, f"Synapse recorded the spoofed IP 6.6.6.6 for {a['user_id']}: {j!r}")
        how = "spoofed X-Forwarded-For 6.6.6.6 ignored" if self.proxy_checks else "no X-Forwarded-For (direct)"
        return f"{how}; access log client {client}, request {request_name}; whois ip {sorted(ips)}"

    def step_well_known(self):
        if not self.proxy_checks:
            raise Skip("--no-proxy-checks")
        for kind, key in (("client", "m.homeserver"), ("server", "m.server")):
            r = self.proxy.request("GET", f"/.well-known/matrix/{kind}")
            check(r.status == 200, f"/.well-known/matrix/{kind}: {r!r}")
            check("application/json" in (r.header("Content-Type") or ""), f"{kind}: Content-Type {r.header('Content-Type')!r}")
            check(r.header("Access-Control-Allow-Origin") == "*", f"{kind}: Access-Control-Allow-Origin {r.header('Access-Control-Allow-Origin')!r}")
            check(key in r.json(), f"/.well-known/matrix/{kind} lacks {key!r}: {r.body!r}")
        return "client + server: 200 JSON, ACAO *"

    # ---- driver ---------------------------------------------------------------------------
    def run(self):
        t_start = time.monotonic()
        longpoll = None
        plan = [
            ("health", self.step_health),
            ("register users directly on Synapse (shared secret)", self.step_register_direct),
            ("/_synapse/admin refused through the proxy", self.step_admin_refused),
            ("login through the proxy", self.step_login),
            ("room, alias, invite, join via percent-encoded alias", self.step_room),
            ("3 non-ASCII messages received in order via /sync", self.step_messages),
            # before the idle long-poll: its fresh login (a new device of A) would wake B's /sync
            ("client address and request id in Synapse's log", self.step_client_address),
            ("start idle /sync long-poll (timeout=30000) in the background", None),
            ("media upload 5 MiB + authenticated download, sha256", self.step_media),
            ("media upload 50 MiB + 1 byte -> 413 M_TOO_LARGE", self.step_media_too_large),
            ("60 MiB upload written before reading -> 413 M_TOO_LARGE", self.step_media_too_large_write_first),
            ("/.well-known/matrix/{client,server}", self.step_well_known),
            ("idle /sync long-poll waited >= 25 s and returned 200", lambda: self.step_idle_longpoll(*longpoll)),
        ]
        for name, fn in plan:
            print(f"STEP {name}", flush=True)
            t0 = time.monotonic()
            if fn is None:
                try:
                    longpoll = self.start_idle_longpoll()
                except StepFailed as e:
                    print(f"FAILED at step {name}: {e}", flush=True)
                    return 1
                print(f"  started ({time.monotonic() - t0:.2f} s of catch-up /sync)", flush=True)
                continue
            try:
                detail = fn()
                print(f"  ok ({time.monotonic() - t0:.2f} s): {detail}", flush=True)
                self.results.append((name, "ok"))
            except Skip as s:
                print(f"  skipped: {s}", flush=True)
                self.results.append((name, "skipped"))
            except StepFailed as e:
                print(f"FAILED at step {name}: {e}", flush=True)
                return 1
            except Exception as e:  # a bug or an unexpected response shape: still name the step
                print(f"FAILED at step {name}: unexpected {type(e).__name__}: {e}", flush=True)
                return 1
        ok = sum(1 for _, s in self.results if s == "ok")
        skipped = sum(1 for _, s in self.results if s == "skipped")
        print(f"client flow done in {time.monotonic() - t_start:.1f} s: {ok} steps ok, {skipped} skipped", flush=True)
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proxy", required=True, help="the proxy's base URL, e.g. https://127.0.0.1:8443")
    ap.add_argument("--direct", required=True, help="Synapse's own listener, e.g. http://127.0.0.1:8008")
    ap.add_argument("--shared-secret", required=True, help="Synapse's registration_shared_secret")
    ap.add_argument("--synapse-log", required=True, help="Synapse's log file (with synapse.access.* lines)")
    tls = ap.add_mutually_exclusive_group()
    tls.add_argument("--ca", help="PEM file of the CA that signed the proxy's certificate")
    tls.add_argument("--insecure", action="store_true", help="do not verify the proxy's certificate")
    ap.add_argument("--no-proxy-checks", action="store_true",
                    help="skip assertions only a proxy can satisfy (when --proxy is Synapse itself)")
    a = ap.parse_args()
    if urllib.parse.urlsplit(a.proxy).scheme == "https" and not (a.ca or a.insecure):
        ap.error("an https --proxy needs --ca FILE or --insecure")
    sys.exit(Flow(a).run())


if __name__ == "__main__":
    main()
