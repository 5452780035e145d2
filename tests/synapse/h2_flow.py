#!/usr/bin/env python3
"""Drive the Matrix client flow over HTTP/2 (httpx + h2) against a real Synapse through mxgate.

  h2_flow.py --proxy https://127.0.0.1:PPORT --ca CA.pem --direct http://127.0.0.1:SPORT \
             --shared-secret S

Needs `httpx[http2]` importable (the Rust test puts tests/tools/httpx.txt's pinned wheels on
PYTHONPATH). Every request to `--proxy` goes through ONE `httpx.AsyncClient(http2=True)` and
must come back as `HTTP/2`, all on one TCP connection (the client's local port is compared).
Async on purpose: httpcore's threaded HTTP/2 client lets a thread blocked reading for its
long-poll hold the connection's read lock, starving other threads' streams until it returns;
asyncio's lock is fair, so streams really run side by side.
`--direct` (Synapse's own listener, HTTP/1.1) is used only for shared-secret registration.

Steps: register two users directly; log in, create a room, invite, join and send three
non-ASCII messages received in order by /sync, through the proxy; then an idle
/sync?timeout=30000 long-poll on one stream while other requests (among them a 5 MiB media
download, sha256-checked) complete on the same connection meanwhile; an upload of
50 MiB + 1 byte answered 413 M_TOO_LARGE with a readable JSON body, the connection still
usable after it.

Each step prints `STEP <name>` then `  ok ...`; on the first failure it prints
`FAILED at step <name>: <why>` and exits 1.
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import re
import secrets
import ssl
import sys
import time
import urllib.parse

import httpx

MIB = 1024 * 1024
MAX_UPLOAD = 50 * MIB  # Synapse's max_upload_size "50M" and mxgate's default limit
SYNC_FILTER = json.dumps({"presence": {"types": []}, "account_data": {"types": []},
                          "room": {"timeline": {"limit": 50}}}, separators=(",", ":"))


class StepFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise StepFailed(msg)


def q(s):
    return urllib.parse.quote(s, safe="")


def short(r):
    return f"HTTP {r.status_code} {r.http_version} {r.content[:300]!r}"


class Flow:
    def __init__(self, a):
        self.a = a
        ctx = ssl.create_default_context(cafile=a.ca)
        self.proxy = httpx.AsyncClient(base_url=a.proxy, http2=True, verify=ctx,
                                       timeout=httpx.Timeout(120.0))
        self.direct = httpx.Client(base_url=a.direct, timeout=httpx.Timeout(30.0))
        self.run_id = secrets.token_hex(4)
        self.users = {}
        # (local port, stream id) of every response through the proxy
        self.seen = []

    async def call(self, method, path, token=None, body=None, content=None, headers=None, expect=200,
             timeout=None):
        """A request through the proxy; checks HTTP/2 and (unless None) the status."""
        h = {"User-Agent": "mxgate-e2e/h2_flow"}
        if token:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        kw = {}
        if timeout is not None:
            kw["timeout"] = timeout
        try:
            r = await self.proxy.request(method, path, json=body, content=content, headers=h, **kw)
        except httpx.HTTPError as e:
            raise StepFailed(f"{method} {path}: {type(e).__name__}: {e}")
        check(r.http_version == "HTTP/2", f"{method} {path}: answered over {r.http_version}, want HTTP/2")
        stream = r.extensions.get("network_stream")
        port = stream.get_extra_info("client_addr")[1] if stream else None
        self.seen.append((port, r.extensions.get("stream_id")))
        check(expect is None or r.status_code == expect, f"{method} {path}: expected {expect}, got {short(r)}")
        r.local_port = port
        return r

    async def json(self, *args, **kw):
        r = await self.call(*args, **kw)
        try:
            return r.json()
        except ValueError:
            raise StepFailed(f"{args[0]} {args[1]}: not JSON: {short(r)}")

    async def sync(self, token, since=None, timeout_ms=0):
        qs = {"timeout": str(timeout_ms), "filter": SYNC_FILTER}
        if since:
            qs["since"] = since
        t0 = time.monotonic()
        r = await self.call("GET", "/_matrix/client/v3/sync?" + urllib.parse.urlencode(qs), token=token,
                      timeout=timeout_ms / 1000 + 60)
        r.elapsed_s = time.monotonic() - t0
        return r

    # ---- the steps ------------------------------------------------------------------------
    async def step_register_direct(self):
        for name in ("a", "b"):
            localpart, password = f"h2{name}-{self.run_id}", secrets.token_urlsafe(12)
            nonce = self.direct.get("/_synapse/admin/v1/register").json()["nonce"]
            mac = hmac.new(self.a.shared_secret.encode(), digestmod=hashlib.sha1)
            mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(), b"notadmin"]))
            r = self.direct.post("/_synapse/admin/v1/register",
                                 json={"nonce": nonce, "username": localpart, "password": password,
                                       "admin": False, "mac": mac.hexdigest()})
            check(r.status_code == 200, f"shared-secret registration of {localpart}: {short(r)}")
            self.users[name] = {"localpart": localpart, "password": password, "user_id": r.json()["user_id"]}
        return ", ".join(u["user_id"] for u in self.users.values())

    async def step_login(self):
        for name, u in self.users.items():
            body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": u["localpart"]},
                    "password": u["password"], "initial_device_display_name": f"e2e-h2-{name}"}
            j = await self.json("POST", "/_matrix/client/v3/login", body=body)
            check(j.get("user_id") == u["user_id"], f"login {name}: {j!r}")
            u["token"] = j["access_token"]
        return "a, b logged in over HTTP/2"

    async def step_room(self):
        a, b = self.users["a"], self.users["b"]
        j = await self.json("POST", "/_matrix/client/v3/createRoom", token=a["token"],
                      body={"preset": "private_chat", "name": "mxgate h2 héllo", "room_version": "11"})
        self.room_id = j["room_id"]
        self.room_path = f"/_matrix/client/v3/rooms/{q(self.room_id)}"
        await self.json("POST", f"{self.room_path}/invite", token=a["token"], body={"user_id": b["user_id"]})
        j = await self.json("POST", f"/_matrix/client/v3/join/{q(self.room_id)}", token=b["token"], body={})
        check(j.get("room_id") == self.room_id, f"join: {j!r}")
        return f"{self.room_id}; B joined"

    MESSAGES = ["héllo wörld 🎉 over h2", "こんにちは、HTTP/2", "Привет, мир! h2"]

    async def step_messages(self):
        a, b = self.users["a"], self.users["b"]
        since = (await self.sync(b["token"])).json()["next_batch"]
        sent = []
        for i, text in enumerate(self.MESSAGES):
            j = await self.json("PUT", f"{self.room_path}/send/m.room.message/{q(f'h2{self.run_id}-{i}')}",
                          token=a["token"], body={"msgtype": "m.text", "body": text})
            sent.append(j["event_id"])
        got, deadline = [], time.monotonic() + 90
        while len(got) < len(sent):
            check(time.monotonic() < deadline, f"B received {len(got)}/3 messages in 90 s: {got!r}")
            j = (await self.sync(b["token"], since=since, timeout_ms=30000)).json()
            since = j["next_batch"]
            room = j.get("rooms", {}).get("join", {}).get(self.room_id, {})
            for ev in room.get("timeline", {}).get("events", []):
                if ev.get("type") == "m.room.message" and ev.get("sender") == a["user_id"]:
                    got.append((ev["event_id"], ev["content"].get("body")))
        check([e for e, _ in got] == sent, f"event order: got {got!r}, sent {sent!r}")
        check([t for _, t in got] == self.MESSAGES, f"bodies changed in transit: {got!r}")
        self.since_b = since
        return "3 non-ASCII messages received in order by B's /sync"

    async def step_media(self):
        a = self.users["a"]
        size = 5 * MIB + 12345
        data = os.urandom(size)
        self.media_sha, self.media_size = hashlib.sha256(data).hexdigest(), size
        j = await self.json("POST", "/_matrix/media/v3/upload?filename=" + q("h2-blob é.bin"), token=a["token"],
                            content=data, headers={"Content-Type": "application/octet-stream"})
        m = re.fullmatch(r"mxc://([^/]+)/([A-Za-z0-9_-]+)", j.get("content_uri", ""))
        check(m is not None, f"bad content_uri {j!r}")
        self.media_path = f"/_matrix/client/v1/media/download/{q(m.group(1))}/{q(m.group(2))}"
        await self.download_media()
        return f"{size} bytes up and down, sha256 {self.media_sha[:16]}…"

    async def download_media(self):
        r = await self.call("GET", self.media_path, token=self.users["b"]["token"])
        got = hashlib.sha256(r.content).hexdigest()
        check(len(r.content) == self.media_size and got == self.media_sha,
              f"download differs: {len(r.content)} bytes sha256 {got}, uploaded {self.media_size} "
              f"sha256 {self.media_sha}")

    async def step_longpoll_with_traffic(self):
        """B's idle /sync?timeout=30000 on one stream; A's requests (among them a small upload and
        the 5 MiB download) on other streams of the same connection complete meanwhile.

        No large upload meanwhile: httpcore's HTTP/2 client waits for send window by reading
        under the connection's read lock, and when another stream's reader took the
        WINDOW_UPDATE it blocks reading until other data comes (here: the long-poll's answer).
        Uploads larger than the windows are tested alone (step_media, step_too_large)."""
        a, b = self.users["a"], self.users["b"]
        since, deadline = self.since_b, time.monotonic() + 20
        while True:  # catch up until one poll idles for its full 2 s
            r = await self.sync(b["token"], since=since, timeout_ms=2000)
            since = r.json()["next_batch"]
            if r.elapsed_s >= 1.9:
                break
            check(time.monotonic() < deadline, f"B's /sync never went idle within 20 s: {r.content[:500]!r}")
        t_start = time.monotonic()
        longpoll = asyncio.create_task(self.sync(b["token"], since=since, timeout_ms=30000))
        await asyncio.sleep(1.0)  # let the long-poll's stream open first
        check(not longpoll.done(), "the long-poll returned at once")
        finished = []

        async def during(what, coro):
            await coro
            finished.append((what, time.monotonic() - t_start))
            check(not longpoll.done(), f"{what}: the long-poll ended before this request did")

        async def whoami():
            j = await self.json("GET", "/_matrix/client/v3/account/whoami", token=a["token"])
            check(j.get("user_id") == a["user_id"], f"whoami: {j!r}")

        for i in range(5):
            await during(f"versions {i}", self.json("GET", "/_matrix/client/versions"))
            await during(f"whoami {i}", whoami())

        async def small_upload():
            data = os.urandom(32 * 1024)
            j = await self.json("POST", "/_matrix/media/v3/upload?filename=small.bin", token=a["token"],
                                content=data, headers={"Content-Type": "application/octet-stream"})
            check(j.get("content_uri", "").startswith("mxc://"), f"small upload: {j!r}")

        await during("media upload 32 KiB", small_upload())
        await during("media download 5 MiB", self.download_media())
        last = max(s for _, s in finished)
        try:
            r = await asyncio.wait_for(longpoll, 100)
        except asyncio.TimeoutError:
            raise StepFailed("idle /sync long-poll did not come back within 100 s")
        lp_end = time.monotonic() - t_start
        check(r.status_code == 200, f"idle /sync: {short(r)}")
        check(r.elapsed_s >= 25.0, f"idle /sync?timeout=30000 returned after {r.elapsed_s:.1f} s (< 25 s)")
        check(last < lp_end - 5, f"the other requests finished at {last:.1f} s, the long-poll at {lp_end:.1f} s")
        ports = {p for p, _ in self.seen}
        check(ports == {r.local_port}, f"long-poll on local port {r.local_port}, requests on {ports}")
        return (f"{len(finished)} requests (5 MiB download, sha256 ok) done by {last:.1f} s on the "
                f"long-poll's connection (local port {r.local_port}); long-poll 200 after {r.elapsed_s:.1f} s")

    async def step_too_large(self):
        """50 MiB + 1 byte, announced by Content-Length: mxgate answers 413 at once and drops
        the rest of the body (it lingers) while httpcore, which reads no answer before its
        body is sent, keeps writing. The body goes as 64 KiB pieces: given one 50 MiB bytes
        object, httpcore re-slices the remainder for every 16 KiB frame (quadratic copying,
        ~300 KB/s), slower than any lingering bound."""
        a = self.users["a"]
        size = MAX_UPLOAD + 1
        block = os.urandom(64 * 1024)

        async def pieces():
            left = size
            while left:
                piece = block[:min(left, len(block))]
                left -= len(piece)
                yield piece

        t0 = time.monotonic()
        r = await self.call("POST", "/_matrix/media/v3/upload?filename=too-big.bin", token=a["token"],
                            content=pieces(), expect=413,
                            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        try:
            j = r.json()
        except ValueError:
            raise StepFailed(f"413 body is not JSON: {short(r)}")
        check(j.get("errcode") == "M_TOO_LARGE", f"413 without errcode M_TOO_LARGE: {short(r)}")
        after = await self.json("GET", "/_matrix/client/versions")
        check("versions" in after, f"after the 413: {after!r}")
        return (f"413 M_TOO_LARGE read ({time.monotonic() - t0:.1f} s); the connection serves the next "
                f"request")

    async def step_one_connection(self):
        ports = {p for p, _ in self.seen}
        streams = [s for _, s in self.seen]
        check(len(ports) == 1, f"requests travelled on {len(ports)} connections (local ports {ports})")
        check(len(set(streams)) == len(streams), f"a stream id was used twice: {streams}")
        return f"{len(self.seen)} requests on one connection, streams {min(streams)}..{max(streams)}"

    async def run(self):
        t_start = time.monotonic()
        plan = [
            ("register users directly on Synapse (shared secret)", self.step_register_direct),
            ("login over HTTP/2", self.step_login),
            ("room, invite, join over HTTP/2", self.step_room),
            ("3 non-ASCII messages received in order via /sync", self.step_messages),
            ("media upload 5 MiB + authenticated download, sha256", self.step_media),
            ("idle /sync long-poll (30 s) while other requests and a 5 MiB download pass on the same connection",
             self.step_longpoll_with_traffic),
            ("media upload 50 MiB + 1 byte -> 413 M_TOO_LARGE, connection reusable", self.step_too_large),
            ("every request on one HTTP/2 connection", self.step_one_connection),
        ]
        for name, fn in plan:
            print(f"STEP {name}", flush=True)
            t0 = time.monotonic()
            try:
                detail = await fn()
            except StepFailed as e:
                print(f"FAILED at step {name}: {e}", flush=True)
                return 1
            except Exception as e:  # a bug or an unexpected response shape: still name the step
                print(f"FAILED at step {name}: unexpected {type(e).__name__}: {e}", flush=True)
                return 1
            print(f"  ok ({time.monotonic() - t0:.2f} s): {detail}", flush=True)
        print(f"HTTP/2 flow done in {time.monotonic() - t_start:.1f} s: {len(plan)} steps ok", flush=True)
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proxy", required=True, help="the proxy's TLS base URL, e.g. https://127.0.0.1:8443")
    ap.add_argument("--ca", required=True, help="PEM file of the CA that signed the proxy's certificate")
    ap.add_argument("--direct", required=True, help="Synapse's own listener, e.g. http://127.0.0.1:8008")
    ap.add_argument("--shared-secret", required=True, help="Synapse's registration_shared_secret")
    sys.exit(asyncio.run(Flow(ap.parse_args()).run()))


if __name__ == "__main__":
    main()
