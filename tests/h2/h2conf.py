#!/usr/bin/env python3
"""HTTP/2 conformance, proxy-behaviour and attack cases against mxgate, run by
tests/tests/http2_conformance.rs with the pinned python-hyper `h2` (tests/tools/h2.txt).

    python h2conf.py --port P [--tls --ca CA.pem --sni localhost] [--pid PID]
                     (--group conformance|tls|proxy|attack | --case NAME ...) [--list]

Conformance cases follow h2spec's section list (RFC 7540/9113 §3-§8, RFC 7541) and are
named after their section. They write frames byte for byte (so invalid ones can be sent)
and encode header blocks with `hpack` (or by hand, for invalid blocks); server frames are
parsed here. Proxy cases use `h2.connection.H2Connection`, a real client's state machine
(flow control, multiplexing). Attack cases also watch the proxy's resident set
(/proc/PID/status VmRSS) from a sampling thread.

Output, one line each: `CASE <name> PASS`, `CASE <name> FAIL <expected ... got ...>`,
`INFO <name> key=value` (facts the Rust side checks against the origin), then
`SUMMARY passed=N failed=M`. Every read has a deadline; only 127.0.0.1/::1 is dialled.
"""

import argparse
import hashlib
import os
import socket
import ssl
import struct
import sys
import threading
import time
import traceback

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
from hpack.hpack import encode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

# ---- protocol constants ------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 5, 6, 7, 8, 9
FRAME_NAMES = [
    "DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS",
    "PUSH_PROMISE", "PING", "GOAWAY", "WINDOW_UPDATE", "CONTINUATION",
]

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIO = 0x20

S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS = 1, 2, 3
S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = 4, 5, 6

CODES = [
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
    "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
]
(NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT,
 STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR,
 CONNECT_ERROR, ENHANCE_YOUR_CALM) = range(12)

READ_TIMEOUT = 5.0
OK_PATH = "/_matrix/client/versions"
# The origin answers after this many ms: a stream stays half-closed (remote) meanwhile.
SLOW_PATH = "/_matrix/test/slow?ms=3000"
ECHO_PATH = "/_matrix/test/echo-body"


def code_name(code):
    return CODES[code] if 0 <= code < len(CODES) else "0x%x" % code


def frame(kind, flags, stream, payload=b"", length=None):
    """One frame, byte for byte; `length` lies about the payload length when given."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def settings_frame(pairs=(), flags=0, stream=0):
    return frame(SETTINGS, flags, stream, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping_frame(payload=b"h2conf!!", flags=0, stream=0):
    return frame(PING, flags, stream, payload)


def window_update(stream, inc):
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", inc))


def rst_frame(stream, code):
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def priority_payload(dep, weight=15, exclusive=False):
    return struct.pack(">I", dep | (0x80000000 if exclusive else 0)) + bytes([weight])


def huffman(data):
    return HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(data)


def hstr(data, huff=False):
    """An HPACK string literal (RFC 7541 §5.2)."""
    raw = huffman(data) if huff else data
    n = encode_integer(len(raw), 7)
    if huff:
        n[0] |= 0x80
    return bytes(n) + raw


def hint(value, prefix, first_bits):
    b = encode_integer(value, prefix)
    b[0] |= first_bits
    return bytes(b)


class CaseFailed(Exception):
    pass


def fail(msg):
    raise CaseFailed(msg)


class Closed(Exception):
    pass


class Timeout(Exception):
    pass


# ---- a received frame ---------------------------------------------------------------------


class Frame:
    def __init__(self, kind, flags, stream, payload):
        self.kind, self.flags, self.stream, self.payload = kind, flags, stream, payload
        self.headers = None  # decoded header list, for HEADERS (after CONTINUATIONs)

    def code(self):
        if self.kind == RST_STREAM:
            return struct.unpack(">I", self.payload[:4])[0]
        if self.kind == GOAWAY:
            return struct.unpack(">I", self.payload[4:8])[0]
        return None

    def __str__(self):
        name = FRAME_NAMES[self.kind] if self.kind < len(FRAME_NAMES) else "type 0x%x" % self.kind
        if self.kind == GOAWAY:
            last = struct.unpack(">I", self.payload[:4])[0] & 0x7FFFFFFF
            debug = self.payload[8:].decode("utf-8", "replace")
            return "GOAWAY(last_stream=%d, %s, %r)" % (last, code_name(self.code()), debug)
        if self.kind == RST_STREAM:
            return "RST_STREAM(stream %d, %s)" % (self.stream, code_name(self.code()))
        if self.kind == HEADERS:
            return "HEADERS(stream %d, %s%s)" % (
                self.stream, dict(self.headers or []).get(b":status", b"?").decode(),
                ", END_STREAM" if self.flags & END_STREAM else "")
        if self.kind == DATA:
            return "DATA(stream %d, %d bytes%s)" % (
                self.stream, len(self.payload), ", END_STREAM" if self.flags & END_STREAM else "")
        return "%s(stream %d, flags 0x%x, %d bytes)" % (
            name, self.stream, self.flags, len(self.payload))


# ---- a raw connection ---------------------------------------------------------------------


class Target:
    def __init__(self, args):
        self.host, self.port = args.host, args.port
        self.tls, self.ca, self.sni = args.tls, args.ca, args.sni
        self.authority = args.authority or "localhost"
        self.scheme = "https" if args.tls else "http"
        self.pid = args.pid

    def connect(self):
        sock = socket.create_connection((self.host, self.port), timeout=READ_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.tls:
            return sock
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        tls = ctx.wrap_socket(sock, server_hostname=self.sni)
        if tls.selected_alpn_protocol() != "h2":
            fail("expected ALPN h2, got %r" % tls.selected_alpn_protocol())
        return tls


class Conn:
    """A client connection driven frame by frame."""

    def __init__(self, target, settings=(), handshake=True, preface=True):
        self.t = target
        self.sock = target.connect()
        self.buf = b""
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.dec.max_header_list_size = 1 << 24
        self.server_settings = {}
        self.assembling = None  # a HEADERS frame waiting for CONTINUATIONs
        self.closed = False
        self.next_stream = 1
        self.answer_pings = True
        self.stash = []  # frames for other streams, kept while one response is read
        if preface:
            self.send(PREFACE + settings_frame(settings))
        if handshake:
            self.handshake()

    def send(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError) as e:
            raise Closed("send failed: %s" % e)

    def send_quiet(self, data):
        """Sends, ignoring a connection the server already closed (it may close while a
        flood is still being written)."""
        try:
            self.send(data)
            return True
        except Closed:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def stream_id(self):
        sid = self.next_stream
        self.next_stream += 2
        return sid

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout()
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise Timeout()
        except ssl.SSLError as e:
            # A TLS peer that closes without close_notify, or a reset.
            self.closed = True
            raise Closed("TLS: %s" % e)
        except (ConnectionResetError, OSError) as e:
            self.closed = True
            raise Closed("reset: %s" % e)
        if not data:
            self.closed = True
            raise Closed("EOF")
        self.buf += data

    def read_frame(self, timeout=READ_TIMEOUT):
        """The next frame (HEADERS with their CONTINUATIONs joined and decoded); frames
        set aside by `expect_response` for other streams come first."""
        if self.stash:
            return self.stash.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            while len(self.buf) < 9:
                self._fill(deadline)
            length = struct.unpack(">I", b"\0" + self.buf[:3])[0]
            while len(self.buf) < 9 + length:
                self._fill(deadline)
            kind, flags = self.buf[3], self.buf[4]
            stream = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
            payload = self.buf[9:9 + length]
            self.buf = self.buf[9 + length:]
            f = Frame(kind, flags, stream, payload)
            if kind == PING and not flags & ACK and self.answer_pings:
                # The server's PING (a graceful shutdown sends one) is answered, as any
                # client does.
                self.send_quiet(ping_frame(payload, flags=ACK))
            if kind == SETTINGS and not flags & ACK:
                for i in range(0, len(payload) - 5, 6):
                    k, v = struct.unpack(">HI", payload[i:i + 6])
                    self.server_settings[k] = v
            if kind == HEADERS:
                block = payload
                if flags & PADDED:
                    block = block[1:len(block) - block[0]]
                if flags & PRIO:
                    block = block[5:]
                f.block = block
                if not flags & END_HEADERS:
                    self.assembling = f
                    continue
                f.headers = self.dec.decode(block, raw=True)
            elif kind == CONTINUATION and self.assembling is not None:
                h = self.assembling
                h.block += payload
                if not flags & END_HEADERS:
                    continue
                self.assembling = None
                h.headers = self.dec.decode(h.block, raw=True)
                f = h
            return f

    def handshake(self):
        """Reads the server's SETTINGS, acknowledges it, and waits for the ACK of ours."""
        got_settings = got_ack = False
        while not (got_settings and got_ack):
            try:
                f = self.read_frame()
            except Timeout:
                fail("handshake: no %s within %ss" % (
                    "SETTINGS" if not got_settings else "SETTINGS ACK", READ_TIMEOUT))
            except Closed as e:
                fail("handshake: connection closed (%s)" % e)
            if f.kind == SETTINGS and f.flags & ACK:
                got_ack = True
            elif f.kind == SETTINGS:
                got_settings = True
                self.send(settings_frame(flags=ACK))
            elif f.kind == GOAWAY:
                fail("handshake: got %s" % f)

    # -- requests --

    def request_fields(self, path=OK_PATH, method="GET", extra=()):
        return [
            (":method", method),
            (":scheme", self.t.scheme),
            (":authority", self.t.authority),
            (":path", path),
        ] + list(extra)

    def block(self, fields):
        return self.enc.encode(fields)

    def headers(self, stream, fields=None, end_stream=True, end_headers=True, **kw):
        if fields is None:
            fields = self.request_fields(**kw)
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        self.send(frame(HEADERS, flags, stream, self.block(fields)))

    def get(self, path=OK_PATH, extra=()):
        sid = self.stream_id()
        self.headers(sid, self.request_fields(path, "GET", extra))
        return sid


# ---- verifiers ----------------------------------------------------------------------------


def expect_goaway(c, code, timeout=READ_TIMEOUT, allow_close=False, ignore_rst=False):
    """A connection error: GOAWAY with `code`, then the connection closes. With
    `allow_close`, a close without GOAWAY is accepted too (where RFC 9113 allows it)."""
    want = "GOAWAY %s" % code_name(code)
    seen = []
    while True:
        try:
            f = c.read_frame(timeout)
        except Timeout:
            fail("expected %s, got nothing within %ss (saw: %s)" % (want, timeout, seen_str(seen)))
        except Closed as e:
            if allow_close:
                return
            fail("expected %s, got the connection closed without GOAWAY (%s; saw: %s)"
                 % (want, e, seen_str(seen)))
        if f.kind == GOAWAY:
            if f.code() != code:
                fail("expected %s, got %s" % (want, f))
            break
        if f.kind == RST_STREAM and not ignore_rst:
            fail("expected %s (a connection error), got %s" % (want, f))
        seen.append(str(f))
    # A connection error closes the connection (RFC 9113 §5.4.1).
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            c.read_frame(deadline - time.monotonic())
        except Closed:
            return
        except Timeout:
            break
    fail("got %s, but the connection stayed open after it" % want)


def expect_rst(c, stream, code, timeout=READ_TIMEOUT, alive=True):
    """A stream error: RST_STREAM on `stream` with `code` (and no response for it), then
    the connection still answers a PING."""
    want = "RST_STREAM(stream %d, %s)" % (stream, code_name(code))
    seen = []
    while True:
        try:
            f = c.read_frame(timeout)
        except Timeout:
            fail("expected %s, got nothing within %ss (saw: %s)" % (want, timeout, seen_str(seen)))
        except Closed as e:
            fail("expected %s, got the connection closed (%s; saw: %s)" % (want, e, seen_str(seen)))
        if f.kind == RST_STREAM and f.stream == stream:
            if f.code() != code:
                fail("expected %s, got %s" % (want, f))
            break
        if f.kind == GOAWAY:
            fail("expected %s (a stream error), got %s" % (want, f))
        if f.kind == HEADERS and f.stream == stream:
            fail("expected %s, got a response %s" % (want, f))
        seen.append(str(f))
    if alive:
        expect_alive(c)


def expect_alive(c, timeout=READ_TIMEOUT):
    """The connection is usable: a PING is acknowledged with its payload."""
    payload = os.urandom(8)
    try:
        c.send(ping_frame(payload))
    except Closed as e:
        fail("expected the connection to stay open, but a write failed (%s)" % e)
    seen = []
    while True:
        try:
            f = c.read_frame(timeout)
        except Timeout:
            fail("expected a PING ACK (connection alive), got nothing within %ss (saw: %s)"
                 % (timeout, seen_str(seen)))
        except Closed as e:
            fail("expected the connection to stay open (PING ACK), got it closed (%s; saw: %s)"
                 % (e, seen_str(seen)))
        if f.kind == PING and f.flags & ACK and f.payload == payload:
            return
        if f.kind == GOAWAY:
            fail("expected the connection to stay open (PING ACK), got %s" % f)
        seen.append(str(f))


def expect_response(c, stream, status=200, timeout=READ_TIMEOUT, ack_data=True):
    """A complete response on `stream`: returns (status, headers dict, body). Received
    DATA is acknowledged with WINDOW_UPDATEs so large bodies keep coming."""
    want = "a %s response on stream %d" % (status, stream)
    seen = []
    aside = []
    try:
        return _expect_response(c, stream, status, timeout, ack_data, want, seen, aside)
    finally:
        # Frames of other streams stay readable for the next verifier, in order.
        c.stash = aside + c.stash


def _expect_response(c, stream, status, timeout, ack_data, want, seen, aside):
    got_status = None
    hdrs = {}
    body = b""
    while True:
        try:
            f = c.read_frame(timeout)
        except Timeout:
            fail("expected %s, got nothing within %ss (saw: %s)" % (want, timeout, seen_str(seen)))
        except Closed as e:
            fail("expected %s, got the connection closed (%s; saw: %s)" % (want, e, seen_str(seen)))
        if f.kind == GOAWAY:
            fail("expected %s, got %s" % (want, f))
        if f.stream != stream:
            seen.append(str(f))
            if f.stream != 0:
                aside.append(f)
            continue
        if f.kind == RST_STREAM:
            fail("expected %s, got %s" % (want, f))
        if f.kind == HEADERS:
            d = {k.decode(): v.decode("latin-1") for k, v in f.headers}
            if got_status is None:
                got_status = int(d.get(":status", "0"))
                if 100 <= got_status < 200:
                    got_status = None
                    continue
                hdrs = d
                if status is not None and got_status != status:
                    fail("expected %s, got status %d (%s)" % (want, got_status, d))
        elif f.kind == DATA:
            data = f.payload
            if f.flags & PADDED:
                data = data[1:len(data) - data[0]]
            body += data
            if ack_data and f.payload:
                c.send(window_update(0, len(f.payload)))
                if not f.flags & END_STREAM:
                    c.send(window_update(stream, len(f.payload)))
        if f.flags & END_STREAM and f.kind in (HEADERS, DATA):
            if got_status is None:
                fail("expected %s, got END_STREAM without a status" % want)
            return got_status, hdrs, body


def expect_first_data_len(c, stream, n, timeout=READ_TIMEOUT):
    """The first DATA frame on `stream` carries exactly `n` bytes (flow control)."""
    seen = []
    while True:
        try:
            f = c.read_frame(timeout)
        except (Timeout, Closed) as e:
            fail("expected a DATA frame of %d bytes on stream %d, got %s (saw: %s)"
                 % (n, stream, type(e).__name__, seen_str(seen)))
        if f.kind in (GOAWAY, RST_STREAM) and f.stream in (0, stream):
            fail("expected a DATA frame of %d bytes, got %s" % (n, f))
        if f.kind == DATA and f.stream == stream:
            if len(f.payload) != n:
                fail("expected a DATA frame of %d bytes (window), got %d bytes" % (n, len(f.payload)))
            return f
        seen.append(str(f))


def expect_no_data(c, stream, wait):
    """No DATA on `stream` for `wait` seconds (a closed window holds it back)."""
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            f = c.read_frame(left)
        except Timeout:
            return
        except Closed as e:
            fail("expected the stream to wait for window, got the connection closed (%s)" % e)
        if f.kind == DATA and f.stream == stream and f.payload:
            fail("expected no DATA while the window is 0, got %s" % f)
        if f.kind in (GOAWAY, RST_STREAM):
            fail("expected the stream to wait for window, got %s" % f)


def seen_str(seen):
    if not seen:
        return "nothing"
    if len(seen) > 8:
        return ", ".join(seen[:8]) + ", ... (%d frames)" % len(seen)
    return ", ".join(seen)


# ---- the registry -------------------------------------------------------------------------

CASES = []


def case(*groups):
    def reg(fn):
        CASES.append((fn.__name__, groups, fn))
        return fn
    return reg


def info(name, key, value):
    print("INFO %s %s=%s" % (name, key, value), flush=True)


# ==== conformance: RFC 9113 §3.4 (h2spec 3.5) ==============================================


@case("conformance", "tls")
def s3_5_1_client_preface_is_answered_with_settings(t):
    c = Conn(t)
    expect_alive(c)


@case("conformance", "tls")
def s3_5_2_invalid_preface_is_a_connection_error(t):
    c = Conn(t, preface=False, handshake=False)
    c.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
    # Over TLS with ALPN h2 the HTTP/2 engine answers GOAWAY PROTOCOL_ERROR. On a plain
    # listener with prior knowledge, bytes that are not the preface are HTTP/1.1 (a 400
    # answer is then what comes, and the connection closes): both end the connection.
    if t.tls:
        expect_goaway(c, PROTOCOL_ERROR)
    else:
        expect_closed_or_goaway(c, PROTOCOL_ERROR)


def expect_closed_or_goaway(c, code, timeout=READ_TIMEOUT):
    deadline = time.monotonic() + timeout
    data = b""
    c.sock.settimeout(1)
    while time.monotonic() < deadline:
        try:
            chunk = c.sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return
        if not chunk:
            if not data or goaway_in(data, code):
                return
            fail("expected GOAWAY %s or an HTTP/1.1 4xx, got %r" % (code_name(code), data[:200]))
        data += chunk
        # An HTTP/1.1 refusal, complete: the server may linger before it closes.
        if data.startswith(b"HTTP/1.1 4") and b"\r\n\r\n" in data:
            return
    fail("expected the connection to close, it stayed open (got %r)" % data[:200])


def goaway_in(data, code):
    """Whether raw server bytes hold a GOAWAY frame with `code`."""
    while len(data) >= 9:
        n = struct.unpack(">I", b"\0" + data[:3])[0]
        if data[3] == GOAWAY and len(data) >= 17 and struct.unpack(">I", data[13:17])[0] == code:
            return True
        data = data[9 + n:]
    return False


@case("conformance")
def s3_5_3_preface_not_followed_by_settings_is_a_protocol_error(t):
    c = Conn(t, preface=False, handshake=False)
    c.send(PREFACE + ping_frame())
    expect_goaway(c, PROTOCOL_ERROR)


# ==== §4.1 frame format ====================================================================


@case("conformance", "tls")
def s4_1_1_unknown_frame_type_is_ignored(t):
    c = Conn(t)
    c.send(frame(0x16, 0, 0, b"0123456789"))
    expect_alive(c)


@case("conformance")
def s4_1_2_undefined_flags_are_ignored(t):
    c = Conn(t)
    c.send(ping_frame(b"flags!!!", flags=0x16 & ~ACK))
    expect_alive(c)


@case("conformance")
def s4_1_3_reserved_stream_bit_is_ignored(t):
    c = Conn(t)
    c.send(frame(HEADERS, END_STREAM | END_HEADERS, 0x80000001, c.block(c.request_fields())))
    expect_response(c, 1)


# ==== §4.2 frame size =====================================================================


@case("conformance")
def s4_2_1_data_of_max_frame_size_is_accepted(t):
    c = Conn(t)
    c.headers(1, c.request_fields(ECHO_PATH, "POST", [("content-length", "16384")]),
              end_stream=False)
    c.send(frame(DATA, END_STREAM, 1, b"x" * 16384))
    _, _, body = expect_response(c, 1)
    if b'"len":16384' not in body:
        fail("expected the origin to get 16384 body bytes, it answered %r" % body)


@case("conformance")
def s4_2_2_data_above_max_frame_size_is_frame_size_error(t):
    c = Conn(t)
    c.headers(1, c.request_fields(ECHO_PATH, "POST"), end_stream=False)
    c.send(frame(DATA, END_STREAM, 1, b"x" * 16385))
    expect_goaway(c, FRAME_SIZE_ERROR, ignore_rst=True)


@case("conformance")
def s4_2_3_headers_above_max_frame_size_is_frame_size_error(t):
    c = Conn(t)
    pad = b"\x00" + hstr(b"x-pad") + hstr(b"p" * 17000)  # literal, not indexed
    c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, c.block(c.request_fields()) + pad))
    expect_goaway(c, FRAME_SIZE_ERROR)


# ==== §4.3 header compression ==============================================================


@case("conformance")
def s4_3_1_invalid_header_block_is_compression_error(t):
    c = Conn(t)
    # An indexed field whose integer never ends.
    c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\xff\xff\xff\xff\xff\xff\xff\xff"))
    expect_goaway(c, COMPRESSION_ERROR)


@case("conformance")
def s4_3_2_priority_inside_a_header_block_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, end_headers=False)
    c.send(frame(PRIORITY, 0, 1, priority_payload(0)))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s4_3_3_headers_for_another_stream_inside_a_header_block_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, end_headers=False)
    c.headers(3)
    expect_goaway(c, PROTOCOL_ERROR)


# ==== §5.1 stream states ===================================================================


@case("conformance")
def s5_1_1_idle_data_is_protocol_error(t):
    c = Conn(t)
    c.send(frame(DATA, END_STREAM, 1, b"test"))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s5_1_2_idle_rst_stream_is_protocol_error(t):
    c = Conn(t)
    c.send(rst_frame(1, CANCEL))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s5_1_3_idle_window_update_is_protocol_error(t):
    c = Conn(t)
    c.send(window_update(1, 100))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s5_1_4_idle_continuation_is_protocol_error(t):
    c = Conn(t)
    c.send(frame(CONTINUATION, END_HEADERS, 1, c.block(c.request_fields())))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s5_1_5_half_closed_remote_data_is_stream_closed(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH)
    c.send(frame(DATA, END_STREAM, 1, b"test"))
    expect_rst(c, 1, STREAM_CLOSED)


@case("conformance")
def s5_1_6_half_closed_remote_headers_is_stream_closed(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH)
    c.headers(1, [("x-trailer", "1")])
    expect_rst(c, 1, STREAM_CLOSED)


@case("conformance")
def s5_1_7_half_closed_remote_continuation_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH)
    c.send(frame(CONTINUATION, END_HEADERS, 1, c.block([("x-a", "b")])))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s5_1_8_closed_by_client_rst_then_data_is_stream_closed(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH, end_stream=False)
    c.send(rst_frame(1, CANCEL))
    c.send(frame(DATA, END_STREAM, 1, b"test"))
    expect_rst(c, 1, STREAM_CLOSED)


@case("conformance")
def s5_1_9_closed_by_client_rst_then_headers_is_stream_closed(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH, end_stream=False)
    c.send(rst_frame(1, CANCEL))
    c.headers(1)
    expect_goaway(c, STREAM_CLOSED)


@case("conformance")
def s5_1_10_closed_by_client_rst_then_continuation_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH, end_stream=False)
    c.send(rst_frame(1, CANCEL))
    c.send(frame(CONTINUATION, END_HEADERS, 1, c.block([("x-a", "b")])))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s5_1_11_closed_data_is_stream_closed(t):
    c = Conn(t)
    sid = c.get()
    expect_response(c, sid)
    c.send(frame(DATA, END_STREAM, sid, b"test"))
    expect_rst(c, sid, STREAM_CLOSED)


@case("conformance")
def s5_1_12_closed_headers_is_stream_closed(t):
    c = Conn(t)
    sid = c.get()
    expect_response(c, sid)
    c.headers(sid)
    expect_goaway(c, STREAM_CLOSED)


@case("conformance")
def s5_1_13_closed_continuation_is_protocol_error(t):
    c = Conn(t)
    sid = c.get()
    expect_response(c, sid)
    c.send(frame(CONTINUATION, END_HEADERS, sid, c.block([("x-a", "b")])))
    expect_goaway(c, PROTOCOL_ERROR)


# ==== §5.1.1 stream identifiers / §5.1.2 concurrency ======================================


@case("conformance", "tls")
def s5_1_1_1_even_stream_id_is_protocol_error(t):
    c = Conn(t)
    c.headers(2)
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s5_1_1_2_stream_id_going_backwards_is_protocol_error(t):
    c = Conn(t)
    c.headers(5)
    expect_response(c, 5)
    c.headers(3)
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s5_1_2_1_streams_above_max_concurrent_are_refused(t):
    c = Conn(t)
    limit = c.server_settings.get(S_MAX_CONCURRENT_STREAMS)
    if limit is None or limit > 64:
        fail("expected SETTINGS_MAX_CONCURRENT_STREAMS <= 64 (set in the test config), got %r"
             % limit)
    for i in range(limit):
        c.headers(1 + 2 * i, path=SLOW_PATH)
    extra = 1 + 2 * limit
    c.headers(extra, path=SLOW_PATH)
    # RFC 9113 §5.1.2: PROTOCOL_ERROR or REFUSED_STREAM; REFUSED_STREAM tells the client
    # the request was not processed and may be retried.
    expect_rst(c, extra, REFUSED_STREAM, timeout=8)


# ==== §5.3.1 dependencies, §5.4.1 connection errors, §5.5 extensions =======================


@case("conformance")
def s5_3_1_1_headers_depending_on_itself_is_protocol_error(t):
    c = Conn(t)
    c.send(frame(HEADERS, END_STREAM | END_HEADERS | PRIO, 1,
                 priority_payload(1) + c.block(c.request_fields())))
    expect_rst(c, 1, PROTOCOL_ERROR)


@case("conformance")
def s5_3_1_2_priority_depending_on_itself_is_protocol_error(t):
    c = Conn(t)
    c.send(frame(PRIORITY, 0, 1, priority_payload(1)))
    expect_rst(c, 1, PROTOCOL_ERROR)


@case("conformance")
def s5_4_1_1_invalid_ping_closes_the_connection_after_goaway(t):
    c = Conn(t)
    c.send(ping_frame(stream=3))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s5_4_1_2_goaway_names_the_last_processed_stream(t):
    c = Conn(t)
    sid = c.get()
    expect_response(c, sid)
    c.send(ping_frame(b"short", stream=0))
    while True:
        try:
            f = c.read_frame()
        except (Timeout, Closed) as e:
            fail("expected GOAWAY FRAME_SIZE_ERROR, got %s" % type(e).__name__)
        if f.kind == GOAWAY:
            last = struct.unpack(">I", f.payload[:4])[0] & 0x7FFFFFFF
            if f.code() != FRAME_SIZE_ERROR or last != sid:
                fail("expected GOAWAY(last_stream=%d, FRAME_SIZE_ERROR), got %s" % (sid, f))
            return


@case("conformance")
def s5_5_1_unknown_extension_frame_is_ignored(t):
    c = Conn(t)
    c.send(frame(0xFF, 0, 1, b"extension"))
    expect_alive(c)


@case("conformance")
def s5_5_2_unknown_frame_inside_a_header_block_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, end_headers=False)
    c.send(frame(0xFF, 0, 1, b"extension"))
    expect_goaway(c, PROTOCOL_ERROR)


# ==== §6.1 DATA ===========================================================================


@case("conformance")
def s6_1_1_data_on_stream_0_is_protocol_error(t):
    c = Conn(t)
    c.send(frame(DATA, END_STREAM, 0, b"test"))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_1_2_data_on_half_closed_stream_is_stream_closed(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH)
    c.send(frame(DATA, 0, 1, b"test"))
    expect_rst(c, 1, STREAM_CLOSED)


@case("conformance")
def s6_1_3_data_with_invalid_pad_length_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, path=ECHO_PATH, method="POST", end_stream=False)
    c.send(frame(DATA, END_STREAM | PADDED, 1, b"\x06test"))
    expect_goaway(c, PROTOCOL_ERROR, ignore_rst=True)


# ==== §6.2 HEADERS ========================================================================


@case("conformance")
def s6_2_1_priority_after_headers_without_end_headers_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, end_headers=False)
    c.send(frame(PRIORITY, 0, 1, priority_payload(0)))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_2_2_headers_on_another_stream_during_a_header_block_is_protocol_error(t):
    c = Conn(t)
    c.headers(3, end_headers=False)
    c.headers(1)
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_2_3_headers_on_stream_0_is_protocol_error(t):
    c = Conn(t)
    c.headers(0)
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_2_4_headers_with_invalid_pad_length_is_protocol_error(t):
    c = Conn(t)
    blk = c.block(c.request_fields())
    c.send(frame(HEADERS, END_STREAM | END_HEADERS | PADDED, 1,
                 bytes([len(blk) + 1]) + blk))
    expect_goaway(c, PROTOCOL_ERROR)


# ==== §6.3 PRIORITY =======================================================================


@case("conformance")
def s6_3_1_priority_on_stream_0_is_protocol_error(t):
    c = Conn(t)
    c.send(frame(PRIORITY, 0, 0, priority_payload(1)))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_3_2_priority_of_wrong_length_is_frame_size_error(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH)
    c.send(frame(PRIORITY, 0, 1, b"\x80\x00\x00"))
    expect_rst(c, 1, FRAME_SIZE_ERROR)


# ==== §6.4 RST_STREAM =====================================================================


@case("conformance")
def s6_4_1_rst_stream_on_stream_0_is_protocol_error(t):
    c = Conn(t)
    c.send(rst_frame(0, CANCEL))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_4_2_rst_stream_on_idle_stream_is_protocol_error(t):
    c = Conn(t)
    c.send(rst_frame(1, CANCEL))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_4_3_rst_stream_of_wrong_length_is_frame_size_error(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH)
    c.send(frame(RST_STREAM, 0, 1, b"\x00\x00\x00\x08\x00"))
    expect_goaway(c, FRAME_SIZE_ERROR)


# ==== §6.5 SETTINGS =======================================================================


@case("conformance", "tls")
def s6_5_1_settings_ack_with_payload_is_frame_size_error(t):
    c = Conn(t)
    c.send(frame(SETTINGS, ACK, 0, b"\x00\x01\x00\x00\x10\x00"))
    expect_goaway(c, FRAME_SIZE_ERROR)


@case("conformance")
def s6_5_2_settings_on_a_stream_is_protocol_error(t):
    c = Conn(t)
    c.send(settings_frame([(S_INITIAL_WINDOW_SIZE, 100)], stream=1))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_5_3_settings_of_length_not_multiple_of_6_is_frame_size_error(t):
    c = Conn(t)
    c.send(frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00"))
    expect_goaway(c, FRAME_SIZE_ERROR)


@case("conformance")
def s6_5_2_1_enable_push_other_than_0_or_1_is_protocol_error(t):
    c = Conn(t)
    c.send(settings_frame([(S_ENABLE_PUSH, 2)]))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_5_2_2_initial_window_above_max_is_flow_control_error(t):
    c = Conn(t)
    c.send(settings_frame([(S_INITIAL_WINDOW_SIZE, 2 ** 31)]))
    expect_goaway(c, FLOW_CONTROL_ERROR)


@case("conformance")
def s6_5_2_3_max_frame_size_below_initial_is_protocol_error(t):
    c = Conn(t)
    c.send(settings_frame([(S_MAX_FRAME_SIZE, 16383)]))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_5_2_4_max_frame_size_above_max_is_protocol_error(t):
    c = Conn(t)
    c.send(settings_frame([(S_MAX_FRAME_SIZE, 2 ** 24)]))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_5_2_5_unknown_setting_is_ignored(t):
    c = Conn(t)
    c.send(settings_frame([(0xFF, 1)]))
    expect_settings_ack(c)
    expect_alive(c)


def expect_settings_ack(c):
    seen = []
    while True:
        try:
            f = c.read_frame()
        except (Timeout, Closed) as e:
            fail("expected SETTINGS ACK, got %s (saw: %s)" % (type(e).__name__, seen_str(seen)))
        if f.kind == SETTINGS and f.flags & ACK:
            if f.payload:
                fail("expected an empty SETTINGS ACK, got %d bytes" % len(f.payload))
            return
        if f.kind == GOAWAY:
            fail("expected SETTINGS ACK, got %s" % f)
        seen.append(str(f))


@case("conformance")
def s6_5_3_1_last_of_several_initial_window_values_applies(t):
    c = Conn(t)
    c.send(settings_frame([(S_INITIAL_WINDOW_SIZE, 100), (S_INITIAL_WINDOW_SIZE, 1)]))
    expect_settings_ack(c)
    sid = c.get()
    expect_first_data_len(c, sid, 1)


@case("conformance", "tls")
def s6_5_3_2_settings_is_acknowledged(t):
    c = Conn(t)
    c.send(settings_frame([(S_MAX_CONCURRENT_STREAMS, 100)]))
    expect_settings_ack(c)


# ==== §6.7 PING ===========================================================================


@case("conformance", "tls")
def s6_7_1_ping_is_answered_with_the_same_payload(t):
    c = Conn(t)
    expect_alive(c)


@case("conformance")
def s6_7_2_ping_ack_is_not_answered(t):
    c = Conn(t)
    c.send(ping_frame(b"ackack!!", flags=ACK))
    # Only the next PING's ACK may come back, never one for the ACK we sent.
    payload = b"realping"
    c.send(ping_frame(payload))
    while True:
        try:
            f = c.read_frame()
        except (Timeout, Closed) as e:
            fail("expected a PING ACK, got %s" % type(e).__name__)
        if f.kind == PING:
            if f.payload != payload or not f.flags & ACK:
                fail("expected only the ACK of our PING, got %s with %r" % (f, f.payload))
            return
        if f.kind == GOAWAY:
            fail("expected a PING ACK, got %s" % f)


@case("conformance")
def s6_7_3_ping_on_a_stream_is_protocol_error(t):
    c = Conn(t)
    c.send(ping_frame(stream=1))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_7_4_ping_of_wrong_length_is_frame_size_error(t):
    c = Conn(t)
    c.send(frame(PING, 0, 0, b"123456"))
    expect_goaway(c, FRAME_SIZE_ERROR)


# ==== §6.8 GOAWAY =========================================================================


@case("conformance")
def s6_8_1_goaway_on_a_stream_is_protocol_error(t):
    c = Conn(t)
    c.send(frame(GOAWAY, 0, 1, struct.pack(">II", 0, NO_ERROR)))
    expect_goaway(c, PROTOCOL_ERROR)


# ==== §6.9 WINDOW_UPDATE ==================================================================


@case("conformance")
def s6_9_1_window_update_of_0_on_the_connection_is_protocol_error(t):
    c = Conn(t)
    c.send(window_update(0, 0))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_9_2_window_update_of_0_on_a_stream_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH)
    c.send(window_update(1, 0))
    expect_rst(c, 1, PROTOCOL_ERROR)


@case("conformance")
def s6_9_3_window_update_of_wrong_length_is_frame_size_error(t):
    c = Conn(t)
    c.send(frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x01\x00"))
    expect_goaway(c, FRAME_SIZE_ERROR)


@case("conformance")
def s6_9_1_1_initial_window_of_1_sends_one_byte(t):
    c = Conn(t, settings=[(S_INITIAL_WINDOW_SIZE, 1)])
    sid = c.get()
    expect_first_data_len(c, sid, 1)


@case("conformance")
def s6_9_1_2_connection_window_above_max_is_flow_control_error(t):
    c = Conn(t)
    c.send(window_update(0, 2 ** 31 - 1) + window_update(0, 2 ** 31 - 1))
    expect_goaway(c, FLOW_CONTROL_ERROR)


@case("conformance")
def s6_9_1_3_stream_window_above_max_is_flow_control_error(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH)
    c.send(window_update(1, 2 ** 31 - 1) + window_update(1, 2 ** 31 - 1))
    expect_rst(c, 1, FLOW_CONTROL_ERROR)


@case("conformance")
def s6_9_2_1_changed_initial_window_applies_to_open_streams(t):
    c = Conn(t, settings=[(S_INITIAL_WINDOW_SIZE, 0)])
    sid = c.get()
    expect_no_data(c, sid, 0.5)
    c.send(settings_frame([(S_INITIAL_WINDOW_SIZE, 1)]))
    expect_first_data_len(c, sid, 1)


@case("conformance")
def s6_9_2_2_a_window_may_go_negative(t):
    c = Conn(t, settings=[(S_INITIAL_WINDOW_SIZE, 5)])
    sid = c.get("/_matrix/test/big?bytes=1000")
    expect_first_data_len(c, sid, 5)
    # The window is now 0; 5 -> 3 makes it -2, and an increment of 3 makes it 1.
    c.send(settings_frame([(S_INITIAL_WINDOW_SIZE, 3)]))
    expect_settings_ack(c)
    c.send(window_update(sid, 3))
    expect_first_data_len(c, sid, 1)


@case("conformance")
def s6_9_2_3_initial_window_above_max_is_flow_control_error(t):
    c = Conn(t)
    c.send(settings_frame([(S_INITIAL_WINDOW_SIZE, 2 ** 31)]))
    expect_goaway(c, FLOW_CONTROL_ERROR)


# ==== §6.10 CONTINUATION ==================================================================


@case("conformance", "tls")
def s6_10_1_several_continuations_carry_one_header_block(t):
    c = Conn(t)
    blk = c.block(c.request_fields(extra=[("x-a", "1" * 100), ("x-b", "2" * 100)]))
    parts = [blk[i:i + 50] for i in range(0, len(blk), 50)]
    c.send(frame(HEADERS, END_STREAM, 1, parts[0]))
    for i, p in enumerate(parts[1:]):
        c.send(frame(CONTINUATION, END_HEADERS if i == len(parts) - 2 else 0, 1, p))
    expect_response(c, 1)


@case("conformance")
def s6_10_2_continuation_followed_by_another_frame_is_protocol_error(t):
    c = Conn(t)
    blk = c.block(c.request_fields())
    c.send(frame(HEADERS, END_STREAM, 1, blk[:5]))
    c.send(frame(CONTINUATION, 0, 1, blk[5:]))
    c.send(frame(DATA, 0, 1, b"test"))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_10_3_continuation_on_stream_0_is_protocol_error(t):
    c = Conn(t)
    blk = c.block(c.request_fields())
    c.send(frame(HEADERS, END_STREAM, 1, blk[:5]))
    c.send(frame(CONTINUATION, END_HEADERS, 0, blk[5:]))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_10_4_continuation_after_end_headers_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH)
    c.send(frame(CONTINUATION, END_HEADERS, 1, c.block([("x-a", "b")])))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_10_5_continuation_after_a_final_continuation_is_protocol_error(t):
    c = Conn(t)
    blk = c.block(c.request_fields(SLOW_PATH))
    c.send(frame(HEADERS, END_STREAM, 1, blk[:5]))
    c.send(frame(CONTINUATION, END_HEADERS, 1, blk[5:]))
    c.send(frame(CONTINUATION, END_HEADERS, 1, c.block([("x-a", "b")])))
    expect_goaway(c, PROTOCOL_ERROR)


@case("conformance")
def s6_10_6_continuation_after_data_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, path=ECHO_PATH, method="POST", end_stream=False)
    c.send(frame(DATA, 0, 1, b"test"))
    c.send(frame(CONTINUATION, END_HEADERS, 1, c.block([("x-a", "b")])))
    expect_goaway(c, PROTOCOL_ERROR)


# ==== §7 error codes ======================================================================


@case("conformance")
def s7_1_goaway_with_unknown_code_is_accepted(t):
    c = Conn(t)
    # A stream in flight keeps the connection open after the client's GOAWAY.
    c.headers(1, path=SLOW_PATH)
    c.send(frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0xFF)))
    expect_alive(c)
    expect_response(c, 1)


@case("conformance")
def s7_2_rst_stream_with_unknown_code_is_accepted(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH)
    c.send(rst_frame(1, 0xFF))
    expect_alive(c)


# ==== §8.1 HTTP message exchanges =========================================================


def malformed(t, fields, end_stream=True):
    c = Conn(t)
    c.headers(1, fields, end_stream=end_stream)
    expect_rst(c, 1, PROTOCOL_ERROR)
    return c


@case("conformance")
def s8_1_1_second_headers_without_end_stream_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, path=ECHO_PATH, method="POST", end_stream=False)
    c.headers(1, [("x-trailer", "1")], end_stream=False)
    expect_rst(c, 1, PROTOCOL_ERROR)


@case("conformance", "tls")
def s8_1_2_1_upper_case_field_name_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":scheme", t.scheme), (":authority", t.authority),
                  (":path", OK_PATH), ("X-Upper", "1")])


@case("conformance")
def s8_1_2_1_1_unknown_pseudo_field_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":scheme", t.scheme), (":authority", t.authority),
                  (":path", OK_PATH), (":foo", "bar")])


@case("conformance")
def s8_1_2_1_2_response_pseudo_field_in_a_request_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":scheme", t.scheme), (":authority", t.authority),
                  (":path", OK_PATH), (":status", "200")])


@case("conformance")
def s8_1_2_1_3_pseudo_field_in_trailers_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, path=ECHO_PATH, method="POST", end_stream=False)
    c.send(frame(DATA, 0, 1, b"test"))
    c.headers(1, [(":method", "POST")], end_stream=True)
    expect_rst(c, 1, PROTOCOL_ERROR)


@case("conformance")
def s8_1_2_1_4_pseudo_field_after_a_regular_field_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":scheme", t.scheme), ("x-a", "b"),
                  (":authority", t.authority), (":path", OK_PATH)])


@case("conformance")
def s8_1_2_2_1_connection_specific_field_is_protocol_error(t):
    for name, value in [("connection", "keep-alive"), ("keep-alive", "timeout=5"),
                        ("proxy-connection", "keep-alive"), ("transfer-encoding", "chunked"),
                        ("upgrade", "h2c")]:
        try:
            malformed(t, [(":method", "GET"), (":scheme", t.scheme),
                          (":authority", t.authority), (":path", OK_PATH), (name, value)])
        except CaseFailed as e:
            fail("with `%s: %s`: %s" % (name, value, e))


@case("conformance")
def s8_1_2_2_2_te_other_than_trailers_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":scheme", t.scheme), (":authority", t.authority),
                  (":path", OK_PATH), ("te", "trailers, deflate")])


@case("conformance")
def s8_1_2_2_3_te_trailers_is_accepted(t):
    c = Conn(t)
    c.headers(1, c.request_fields(extra=[("te", "trailers")]))
    expect_response(c, 1)


@case("conformance")
def s8_1_2_3_1_empty_path_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":scheme", t.scheme), (":authority", t.authority),
                  (":path", "")])


@case("conformance")
def s8_1_2_3_2_missing_method_is_protocol_error(t):
    malformed(t, [(":scheme", t.scheme), (":authority", t.authority), (":path", OK_PATH)])


@case("conformance")
def s8_1_2_3_3_missing_scheme_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":authority", t.authority), (":path", OK_PATH)])


@case("conformance")
def s8_1_2_3_4_missing_path_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":scheme", t.scheme), (":authority", t.authority)])


@case("conformance")
def s8_1_2_3_5_duplicate_method_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":method", "GET"), (":scheme", t.scheme),
                  (":authority", t.authority), (":path", OK_PATH)])


@case("conformance")
def s8_1_2_3_6_duplicate_scheme_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":scheme", t.scheme), (":scheme", t.scheme),
                  (":authority", t.authority), (":path", OK_PATH)])


@case("conformance")
def s8_1_2_3_7_duplicate_path_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":scheme", t.scheme), (":authority", t.authority),
                  (":path", OK_PATH), (":path", OK_PATH)])


@case("conformance")
def s8_1_2_6_1_content_length_above_data_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, c.request_fields(ECHO_PATH, "POST", [("content-length", "1")]),
              end_stream=False)
    c.send(frame(DATA, END_STREAM, 1, b"test"))
    expect_rst(c, 1, PROTOCOL_ERROR)


@case("conformance")
def s8_1_2_6_2_content_length_not_the_sum_of_data_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, c.request_fields(ECHO_PATH, "POST", [("content-length", "8")]),
              end_stream=False)
    c.send(frame(DATA, 0, 1, b"test"))
    c.send(frame(DATA, 0, 1, b"test"))
    c.send(frame(DATA, END_STREAM, 1, b"test"))
    expect_rst(c, 1, PROTOCOL_ERROR)


@case("conformance")
def s8_1_2_6_3_content_length_above_the_data_at_end_stream_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, c.request_fields(ECHO_PATH, "POST", [("content-length", "100")]),
              end_stream=False)
    c.send(frame(DATA, END_STREAM, 1, b"test"))
    expect_rst(c, 1, PROTOCOL_ERROR)


@case("conformance")
def s8_1_2_6_4_content_length_with_end_stream_on_headers_is_protocol_error(t):
    malformed(t, [(":method", "POST"), (":scheme", t.scheme), (":authority", t.authority),
                  (":path", ECHO_PATH), ("content-length", "10")])


@case("conformance")
def s8_2_1_push_promise_from_a_client_is_protocol_error(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH)
    c.send(frame(PUSH_PROMISE, END_HEADERS, 1,
                 struct.pack(">I", 2) + c.block(c.request_fields())))
    expect_goaway(c, PROTOCOL_ERROR)


# ==== RFC 9113 additions beyond h2spec: §8.2.1 values, §8.3.1 authority, §8.5 CONNECT ====


@case("conformance")
def r8_2_1_1_field_value_with_nul_cr_or_lf_is_protocol_error(t):
    for value in ["a\x00b", "a\rb", "a\nb"]:
        try:
            malformed(t, [(":method", "GET"), (":scheme", t.scheme),
                          (":authority", t.authority), (":path", OK_PATH), ("x-v", value)])
        except CaseFailed as e:
            fail("with value %r: %s" % (value, e))


@case("conformance")
def r8_2_1_2_field_value_with_leading_or_trailing_space_is_protocol_error(t):
    for value in [" a", "a\t"]:
        try:
            malformed(t, [(":method", "GET"), (":scheme", t.scheme),
                          (":authority", t.authority), (":path", OK_PATH), ("x-v", value)])
        except CaseFailed as e:
            fail("with value %r: %s" % (value, e))


@case("conformance")
def r8_2_1_3_field_name_with_invalid_characters_is_protocol_error(t):
    for name in ["x y", "x:y", "x\x01"]:
        try:
            malformed(t, [(":method", "GET"), (":scheme", t.scheme),
                          (":authority", t.authority), (":path", OK_PATH), (name, "v")])
        except CaseFailed as e:
            fail("with name %r: %s" % (name, e))


@case("conformance")
def r8_3_1_1_authority_with_userinfo_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":scheme", t.scheme),
                  (":authority", "user@" + t.authority), (":path", OK_PATH)])


@case("conformance")
def r8_3_1_2_host_differing_from_authority_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":scheme", t.scheme), (":authority", t.authority),
                  (":path", OK_PATH), ("host", "other.example.org")])


@case("conformance")
def r8_3_1_3_extended_connect_without_the_setting_is_protocol_error(t):
    malformed(t, [(":method", "GET"), (":protocol", "websocket"), (":scheme", t.scheme),
                  (":authority", t.authority), (":path", OK_PATH)])


@case("conformance", "tls")
def r8_5_1_connect_is_answered_501(t):
    c = Conn(t)
    c.headers(1, [(":method", "CONNECT"), (":authority", "example.org:443")])
    expect_response(c, 1, status=501)
    expect_alive(c)


@case("conformance")
def r6_5_2_1_header_list_above_max_header_list_size_is_answered_431(t):
    c = Conn(t)
    limit = c.server_settings.get(S_MAX_HEADER_LIST_SIZE)
    if not limit:
        fail("expected SETTINGS_MAX_HEADER_LIST_SIZE from the server, got none")
    big = [("x-big-%d" % i, "v" * 1000) for i in range(limit // 1000 + 2)]
    fields = c.request_fields(extra=big)
    blk = c.block(fields)
    # Split at the frame size: HEADERS then CONTINUATIONs.
    parts = [blk[i:i + 16384] for i in range(0, len(blk), 16384)]
    sid = c.stream_id()
    c.send(frame(HEADERS, END_STREAM | (END_HEADERS if len(parts) == 1 else 0), sid, parts[0]))
    for i, part in enumerate(parts[1:]):
        c.send(frame(CONTINUATION, END_HEADERS if i == len(parts) - 2 else 0, sid, part))
    expect_response(c, sid, status=431)
    # The HPACK state survived: the next request on the connection is answered.
    expect_response(c, c.get())


# ==== RFC 7541 (h2spec hpack) =============================================================


def bad_block(t, block):
    c = Conn(t)
    c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
    expect_goaway(c, COMPRESSION_ERROR)


@case("conformance")
def h2_3_3_1_indexed_field_past_the_tables_is_compression_error(t):
    bad_block(t, b"\x82\x84\x86" + hint(70, 7, 0x80))


@case("conformance")
def h2_3_3_2_literal_with_name_index_past_the_tables_is_compression_error(t):
    bad_block(t, b"\x82\x84\x86" + hint(70, 6, 0x40) + hstr(b"x"))


@case("conformance")
def h4_2_1_table_size_update_at_the_end_of_a_block_is_compression_error(t):
    bad_block(t, b"\x82\x84\x86" + hint(4096, 5, 0x20))


@case("conformance")
def h5_2_1_huffman_padding_longer_than_7_bits_is_compression_error(t):
    # 'a' is 00011 (5 bits) + 11 + a whole byte of 1s: 11 bits of padding.
    bad_block(t, b"\x82\x84\x86" + b"\x40\x82\x1f\xff" + hstr(b"x"))


@case("conformance")
def h5_2_2_huffman_padded_by_zeros_is_compression_error(t):
    # 'a' (00011) padded with 000: padding must be the EOS prefix (all 1s).
    bad_block(t, b"\x82\x84\x86" + b"\x40\x81\x18" + hstr(b"x"))


@case("conformance")
def h5_2_3_huffman_string_with_eos_is_compression_error(t):
    # EOS is 30 bits of 1s, then two padding 1s: four 0xff bytes.
    bad_block(t, b"\x82\x84\x86" + b"\x40\x84\xff\xff\xff\xff" + hstr(b"x"))


@case("conformance")
def h6_1_1_indexed_field_of_index_0_is_compression_error(t):
    bad_block(t, b"\x82\x84\x86\x80")


@case("conformance")
def h6_3_1_table_size_update_above_the_setting_is_compression_error(t):
    c = Conn(t)
    size = c.server_settings.get(S_HEADER_TABLE_SIZE, 4096)
    c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1,
                 hint(size + 1, 5, 0x20) + c.block(c.request_fields())))
    expect_goaway(c, COMPRESSION_ERROR)


# ==== generic (h2spec generic): what a working server answers ==============================


@case("conformance", "tls")
def g3_1_get_is_answered(t):
    c = Conn(t)
    _, hdrs, body = expect_response(c, c.get())
    if not body:
        fail("expected a body, got none (%s)" % hdrs)


@case("conformance")
def g3_2_head_is_answered_without_body(t):
    c = Conn(t)
    c.headers(1, c.request_fields(OK_PATH, "HEAD"))
    _, hdrs, body = expect_response(c, 1)
    if body:
        fail("expected no body for HEAD, got %d bytes" % len(body))


@case("conformance")
def g3_3_post_with_data_frames_is_answered(t):
    c = Conn(t)
    c.headers(1, c.request_fields(ECHO_PATH, "POST", [("content-length", "12")]),
              end_stream=False)
    c.send(frame(DATA, 0, 1, b"0123"))
    c.send(frame(DATA, 0, 1, b"4567"))
    c.send(frame(DATA, END_STREAM, 1, b"89ab"))
    _, _, body = expect_response(c, 1)
    want = hashlib.sha256(b"0123456789ab").hexdigest()
    if want.encode() not in body:
        fail("expected the origin to get 12 bytes with sha256 %s, got %r" % (want, body))


@case("conformance")
def g3_4_post_with_trailers_is_answered(t):
    c = Conn(t)
    c.headers(1, c.request_fields(ECHO_PATH, "POST"), end_stream=False)
    c.send(frame(DATA, 0, 1, b"test"))
    c.headers(1, [("x-trailer", "done")], end_stream=True)
    _, _, body = expect_response(c, 1)
    if b'"len":4' not in body:
        fail("expected the origin to get 4 bytes, got %r" % body)


@case("conformance")
def g3_5_padded_data_and_headers_are_accepted(t):
    c = Conn(t)
    blk = c.block(c.request_fields(ECHO_PATH, "POST"))
    c.send(frame(HEADERS, END_HEADERS | PADDED, 1, b"\x08" + blk + b"\0" * 8))
    c.send(frame(DATA, END_STREAM | PADDED, 1, b"\x03test\0\0\0"))
    _, _, body = expect_response(c, 1)
    if b'"len":4' not in body:
        fail("expected the origin to get the 4 unpadded bytes, got %r" % body)


@case("conformance")
def g3_6_headers_with_priority_are_accepted(t):
    c = Conn(t)
    c.send(frame(HEADERS, END_STREAM | END_HEADERS | PRIO, 1,
                 priority_payload(0, 255, True) + c.block(c.request_fields())))
    expect_response(c, 1)


@case("conformance")
def g3_7_priority_frames_are_accepted(t):
    c = Conn(t)
    c.send(frame(PRIORITY, 0, 1, priority_payload(0, 1)))
    c.send(frame(PRIORITY, 0, 3, priority_payload(0, 255)))
    c.send(frame(PRIORITY, 0, 5, priority_payload(3, 15)))
    c.send(frame(PRIORITY, 0, 7, priority_payload(3, 15, True)))
    expect_alive(c)


@case("conformance")
def g3_8_priority_for_an_idle_stream_then_headers_on_a_lower_id(t):
    c = Conn(t)
    c.send(frame(PRIORITY, 0, 9, priority_payload(0)))
    c.headers(1)
    expect_response(c, 1)


@case("conformance")
def g2_1_frames_on_half_closed_remote_stream_are_accepted(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH)
    c.send(window_update(1, 100))
    c.send(frame(PRIORITY, 0, 1, priority_payload(0)))
    expect_alive(c)
    expect_response(c, 1)


@case("conformance")
def g2_2_rst_stream_on_half_closed_remote_stream_is_accepted(t):
    c = Conn(t)
    c.headers(1, path=SLOW_PATH)
    c.send(rst_frame(1, CANCEL))
    expect_alive(c)
    c.headers(3)
    expect_response(c, 3)


@case("conformance")
def g2_3_priority_on_a_closed_stream_is_accepted(t):
    c = Conn(t)
    expect_response(c, c.get())
    c.send(frame(PRIORITY, 0, 1, priority_payload(0)))
    expect_alive(c)


@case("conformance")
def g2_4_window_update_and_rst_stream_on_a_closed_stream_are_accepted(t):
    c = Conn(t)
    sid = c.get()
    expect_response(c, sid)
    c.send(window_update(sid, 100))
    c.send(rst_frame(sid, CANCEL))
    expect_alive(c)
    expect_response(c, c.get())


@case("conformance", "tls")
def g4_1_a_header_table_size_of_0_is_honoured_by_the_server(t):
    c = Conn(t, settings=[(S_HEADER_TABLE_SIZE, 0)])
    # A decoder with no dynamic table: a response encoded against one fails to decode.
    c.dec.header_table_size = 0
    c.dec.max_allowed_table_size = 0
    for _ in range(3):
        try:
            expect_response(c, c.get())
        except hpack.HPACKError as e:
            fail("with SETTINGS_HEADER_TABLE_SIZE 0, a response used the dynamic table: %r" % e)


@case("conformance")
def g3_9_window_updates_and_goaway_are_accepted(t):
    c = Conn(t)
    c.send(window_update(0, 1000))
    c.headers(1, path=SLOW_PATH)
    c.send(window_update(1, 1000))
    expect_alive(c)
    c.send(frame(GOAWAY, 0, 0, struct.pack(">II", 1, NO_ERROR)))
    expect_response(c, 1)


@case("conformance")
def g5_1_every_hpack_representation_is_decoded(t):
    c = Conn(t)
    base = b"\x82\x86" if t.scheme == "http" else b"\x82\x87"  # :method GET, :scheme
    auth = hint(1, 4, 0x00) + hstr(t.authority.encode())  # :authority, not indexed
    path = hint(4, 4, 0x00) + hstr(OK_PATH.encode(), huff=True)
    reps = [
        ("indexed", b"\x90"),  # accept-encoding: gzip, deflate
        ("incremental, indexed name", hint(58, 6, 0x40) + hstr(b"mxgate-test")),
        ("incremental, indexed name, huffman", hint(58, 6, 0x40) + hstr(b"mxgate", True)),
        ("incremental, new name", b"\x40" + hstr(b"x-a") + hstr(b"1")),
        ("incremental, new name, huffman", b"\x40" + hstr(b"x-b", True) + hstr(b"2", True)),
        ("without indexing, indexed name", hint(58, 4, 0x00) + hstr(b"t")),
        ("without indexing, indexed name, huffman", hint(58, 4, 0x00) + hstr(b"t", True)),
        ("without indexing, new name", b"\x00" + hstr(b"x-c") + hstr(b"3")),
        ("without indexing, new name, huffman", b"\x00" + hstr(b"x-d", True) + hstr(b"4", True)),
        ("never indexed, indexed name", hint(58, 4, 0x10) + hstr(b"t")),
        ("never indexed, indexed name, huffman", hint(58, 4, 0x10) + hstr(b"t", True)),
        ("never indexed, new name", b"\x10" + hstr(b"x-e") + hstr(b"5")),
        ("never indexed, new name, huffman", b"\x10" + hstr(b"x-f", True) + hstr(b"6", True)),
        ("dynamic table size update", hint(0, 5, 0x20)),
        ("two dynamic table size updates", hint(0, 5, 0x20) + hint(4096, 5, 0x20)),
    ]
    for i, (what, rep) in enumerate(reps):
        sid = 1 + 2 * i
        if what.startswith("dynamic") or what.startswith("two"):
            blk = rep + base + auth + path
        else:
            blk = base + auth + path + rep
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, sid, blk))
        try:
            expect_response(c, sid)
        except CaseFailed as e:
            fail("%s: %s" % (what, e))


@case("conformance", "tls")
def g6_1_a_connection_written_one_byte_at_a_time_is_served(t):
    c = Conn(t, preface=False, handshake=False)
    blk = c.block(c.request_fields(ECHO_PATH, "POST", [("content-length", "4")]))
    data = (PREFACE + settings_frame() + settings_frame(flags=ACK)
            + frame(HEADERS, END_HEADERS, 1, blk) + frame(DATA, END_STREAM, 1, b"abcd"))
    for i in range(len(data)):
        c.send(data[i:i + 1])
        if i % 16 == 0:
            time.sleep(0.001)
    _, _, body = expect_response(c, 1)
    if b'"len":4' not in body:
        fail("expected the origin to get the 4 body bytes, it answered %r" % body)


@case("conformance", "tls")
def g6_2_frames_coalesced_in_one_write_are_all_processed(t):
    c = Conn(t, preface=False, handshake=False)
    data = PREFACE + settings_frame() + settings_frame(flags=ACK)
    for i in range(5):
        data += frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i,
                      c.block(c.request_fields(OK_PATH + "?n=%d" % i)))
    data += ping_frame(b"coalesce")
    c.send(data)
    for i in range(5):
        expect_response(c, 1 + 2 * i)


# ==== proxy behaviour (h2.connection.H2Connection) =========================================


class H2Client:
    """python-hyper's client state machine over one socket."""

    def __init__(self, t, window=None):
        self.t = t
        self.sock = t.connect()
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                        validate_outbound_headers=False,
                                        normalize_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.streams = {}
        self.terminated = None
        self.order = []  # stream ids in the order they ended

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", headers=(), body=None, end=True, authority=True):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", self.t.scheme)]
        if authority:
            hdrs.append((":authority", self.t.authority))
        hdrs = hdrs + [(":path", path)] + list(headers)
        self.conn.send_headers(sid, [(k.encode(), v.encode() if isinstance(v, str) else v)
                                     for k, v in hdrs],
                               end_stream=body is None and end)
        self.streams[sid] = {"status": None, "headers": {}, "body": bytearray(),
                             "ended": False, "reset": None}
        self.flush()
        if body is not None:
            self.send_body(sid, body, end)
        return sid

    def send_body(self, sid, body, end=True):
        """Sends `body` as the windows allow, reading WINDOW_UPDATEs (and anything else)
        while blocked. Stops early if the stream ends or is reset (an early answer)."""
        view = memoryview(body)
        off = 0
        deadline = time.monotonic() + 60
        while off < len(body):
            st = self.streams[sid]
            if st["ended"] or st["reset"] is not None or self.terminated:
                return off
            window = min(self.conn.local_flow_control_window(sid),
                         self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump(deadline - time.monotonic())
                continue
            n = min(window, len(body) - off)
            self.conn.send_data(sid, view[off:off + n].tobytes(),
                                end_stream=end and off + n == len(body))
            off += n
            self.flush()
        return off

    def pump(self, timeout):
        if timeout <= 0:
            fail("timed out (h2 client)")
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            fail("h2 client: nothing arrived within %.1fs" % timeout)
        except OSError as e:
            raise Closed(str(e))
        if not data:
            raise Closed("EOF")
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                st = self.streams[ev.stream_id]
                st["headers"] = {k.decode(): v.decode("latin-1") for k, v in ev.headers}
                st["status"] = int(st["headers"][":status"])
            elif isinstance(ev, h2.events.DataReceived):
                self.streams[ev.stream_id]["body"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.streams[ev.stream_id]["ended"] = True
                self.order.append(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                if ev.stream_id in self.streams:
                    self.streams[ev.stream_id]["reset"] = ev.error_code
                    self.order.append(ev.stream_id)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.terminated = ev
        self.flush()

    def wait(self, sids, timeout=15):
        deadline = time.monotonic() + timeout
        while not all(self.streams[s]["ended"] or self.streams[s]["reset"] is not None
                      for s in sids):
            if self.terminated:
                fail("connection terminated: %s" % self.terminated)
            self.pump(deadline - time.monotonic())
        return [self.streams[s] for s in sids]

    def response(self, sid, timeout=15):
        st = self.wait([sid], timeout)[0]
        if st["reset"] is not None:
            fail("stream %d was reset (%s) instead of answered" % (sid, code_name(st["reset"])))
        return st


ODD_PATH = "/_matrix/client/v3/rooms/%21abc%3Aexample.org/state?x=%2F&y=a%20b+c"


@case("proxy", "proxy_tls")
def p1_odd_path_reaches_the_origin_byte_for_byte(t):
    c = H2Client(t)
    st = c.response(c.request(ODD_PATH, headers=[("x-h2-test", "odd-path")]))
    info("p1_odd_path_reaches_the_origin_byte_for_byte", "status", st["status"])
    info("p1_odd_path_reaches_the_origin_byte_for_byte", "path", ODD_PATH)
    if st["status"] != 200:
        fail("expected 200 from the origin, got %s" % st["status"])


@case("proxy", "proxy_tls")
def p2_health_and_well_known_are_answered_by_mxgate(t):
    c = H2Client(t)
    h = c.response(c.request("/health"))
    w = c.response(c.request("/.well-known/matrix/client"))
    if h["status"] != 200:
        fail("expected /health 200, got %s" % h["status"])
    if w["status"] != 200 or b"m.homeserver" not in w["body"]:
        fail("expected /.well-known/matrix/client 200 with m.homeserver, got %s %r"
             % (w["status"], bytes(w["body"][:200])))
    if w["headers"].get("access-control-allow-origin") != "*":
        fail("expected CORS `access-control-allow-origin: *` on .well-known, got %s"
             % w["headers"])


@case("proxy", "proxy_tls")
def p3_admin_path_is_refused(t):
    c = H2Client(t)
    st = c.response(c.request("/_synapse/admin/v1/users/@a:localhost"))
    info("p3_admin_path_is_refused", "status", st["status"])
    info("p3_admin_path_is_refused", "body", bytes(st["body"][:200]).decode("latin-1")
         .replace("\n", " "))


@case("proxy", "proxy_tls")
def p4_upload_over_max_body_gets_413(t):
    # The test config sets max_body = "9M". Announced length: answered at once.
    c = H2Client(t)
    body = b"u" * (10 << 20)
    sid = c.request("/_matrix/media/v3/upload", "POST",
                    [("content-length", str(len(body))), ("content-type", "image/png")],
                    body=body)
    st = c.response(sid)
    if st["status"] != 413 or b"M_TOO_LARGE" not in st["body"]:
        fail("expected 413 M_TOO_LARGE (announced length), got %s %r"
             % (st["status"], bytes(st["body"][:200])))
    # No length: the limit is found while streaming.
    c2 = H2Client(t)
    sid = c2.request("/_matrix/media/v3/upload", "POST", [("content-type", "image/png")],
                     body=body)
    st = c2.response(sid)
    if st["status"] != 413 or b"M_TOO_LARGE" not in st["body"]:
        fail("expected 413 M_TOO_LARGE (streamed body), got %s %r"
             % (st["status"], bytes(st["body"][:200])))


@case("proxy", "proxy_tls")
def p5_a_long_poll_does_not_hold_up_other_streams(t):
    c = H2Client(t)
    slow = c.request("/_matrix/test/slow?ms=3000")
    fast = [c.request(OK_PATH) for _ in range(3)]
    c.wait([slow] + fast, timeout=20)
    for s in fast:
        st = c.streams[s]
        if st["status"] != 200:
            fail("stream %d: expected 200, got %s" % (s, st))
    if c.order[-1] != slow:
        fail("expected the long-poll (stream %d) to end last, order was %s" % (slow, c.order))
    if c.streams[slow]["status"] != 200:
        fail("expected the long-poll to be answered 200, got %s" % c.streams[slow])


def big_body(n):
    """tests/src/origin.rs big_body: byte i is (i % 251) ^ (i / 251 % 256), which repeats
    every 251 * 256 bytes."""
    period = 251 * 256
    one = bytes((i % 251) ^ ((i // 251) % 256) for i in range(period))
    return (one * (n // period + 1))[:n]


@case("proxy", "proxy_tls")
def p6_a_response_larger_than_the_windows_arrives_whole(t):
    n = 3 << 20
    c = H2Client(t)  # default windows: 65535 per stream and connection
    sid = c.request("/_matrix/test/big?bytes=%d" % n)
    st = c.response(sid, timeout=60)
    if st["status"] != 200 or len(st["body"]) != n:
        fail("expected 200 with %d bytes, got %s with %d" % (n, st["status"], len(st["body"])))
    if hashlib.sha256(st["body"]).hexdigest() != hashlib.sha256(big_body(n)).hexdigest():
        fail("the body arrived with the right length but wrong bytes")


@case("proxy", "proxy_tls")
def p7_a_request_body_larger_than_the_windows_arrives_whole(t):
    n = 8 << 20
    body = os.urandom(n)
    c = H2Client(t)
    sid = c.request(ECHO_PATH, "POST", [("content-length", str(n))], body=body)
    st = c.response(sid, timeout=120)
    want = '"len":%d,"sha256":"%s"' % (n, hashlib.sha256(body).hexdigest())
    if st["status"] != 200 or want.encode() not in st["body"]:
        fail("expected the origin to echo %s, got %s %r" % (want, st["status"],
                                                             bytes(st["body"][:300])))


@case("proxy", "proxy_tls")
def p8_many_streams_on_one_connection_are_all_answered(t):
    c = H2Client(t)
    sids = [c.request(OK_PATH + "?n=%d" % i) for i in range(30)]
    for s, st in zip(sids, c.wait(sids)):
        if st["status"] != 200:
            fail("stream %d: expected 200, got %s" % (s, st))


@case("proxy", "proxy_tls")
def p9_cookies_are_joined_and_host_stands_in_for_authority(t):
    c = H2Client(t)
    st = c.response(c.request(OK_PATH, authority=False, headers=[
        ("host", t.authority), ("cookie", "a=1"), ("x-h2-test", "cookies"), ("cookie", "b=2")]))
    if st["status"] != 200:
        fail("expected 200, got %s" % st["status"])


@case("proxy", "proxy_tls")
def p11_a_cut_upstream_response_is_a_reset_not_an_end(t):
    # The origin announces 100000 bytes, sends 1000, and closes: the client must see the
    # stream reset, never END_STREAM on a short body.
    c = Conn(t)
    sid = c.get("/_matrix/test/cut")
    got = 0
    while True:
        try:
            f = c.read_frame(timeout=10)
        except (Timeout, Closed) as e:
            fail("expected RST_STREAM after %d of 100000 bytes, got %s" % (got, type(e).__name__))
        if f.stream != sid:
            continue
        if f.kind == DATA:
            got += len(f.payload)
            if f.flags & END_STREAM:
                fail("a cut upstream response ended the stream normally after %d of 100000 "
                     "bytes (a truncated body looks complete)" % got)
        elif f.kind == HEADERS and f.flags & END_STREAM:
            fail("a cut upstream response ended with %s" % f)
        elif f.kind == RST_STREAM:
            if f.code() == NO_ERROR:
                fail("expected RST_STREAM with an error code, got %s" % f)
            break
        elif f.kind == GOAWAY:
            fail("expected RST_STREAM on stream %d only, got %s" % (sid, f))
    expect_alive(c)
    expect_response(c, c.get())


@case("proxy", "proxy_tls")
def p12_a_chunked_upstream_response_arrives_as_data_without_hop_by_hop_fields(t):
    # python-hyper rejects connection-specific fields in a response (RFC 9113 §8.2.2).
    c = H2Client(t)
    st = c.response(c.request("/_matrix/test/chunked"))
    want = b'{"chunks":["one","two","three"]}'
    if st["status"] != 200 or bytes(st["body"]) != want:
        fail("expected 200 %r, got %s %r" % (want, st["status"], bytes(st["body"])))
    bad = [k for k in st["headers"] if k in ("transfer-encoding", "connection", "keep-alive")]
    if bad:
        fail("connection-specific fields in an h2 response: %s" % bad)


@case("proxy", "proxy_tls")
def p15_interleaved_uploads_on_one_connection_all_arrive_whole(t):
    # Ten uploads at once, 600 KiB each: 6 MiB through a 1 MiB connection window and
    # 256 KiB stream windows, DATA frames of all streams interleaved.
    c = H2Client(t)
    bodies = {}
    for i in range(10):
        body = os.urandom(600 * 1024)
        sid = c.request(ECHO_PATH, "POST", [("content-length", str(len(body)))], end=False)
        bodies[sid] = [body, 0]
    deadline = time.monotonic() + 60
    while any(off < len(b) for b, off in bodies.values()):
        progressed = False
        for sid, entry in bodies.items():
            body, off = entry
            if off >= len(body):
                continue
            n = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size,
                    len(body) - off, 16384)
            if n > 0:
                c.conn.send_data(sid, body[off:off + n], end_stream=off + n == len(body))
                entry[1] = off + n
                progressed = True
        c.flush()
        if not progressed:
            c.pump(deadline - time.monotonic())
    for sid, st in zip(bodies, c.wait(list(bodies), timeout=60)):
        want = '"len":%d,"sha256":"%s"' % (len(bodies[sid][0]),
                                           hashlib.sha256(bodies[sid][0]).hexdigest())
        if st["status"] != 200 or want.encode() not in st["body"]:
            fail("stream %d: expected the origin to echo %s, got %s %r"
                 % (sid, want, st["status"], bytes(st["body"][:200])))


@case("proxy", "proxy_tls")
def p16_a_reset_upload_does_not_spill_into_the_next_request(t):
    c = Conn(t)
    sid = c.stream_id()
    c.headers(sid, c.request_fields(ECHO_PATH, "POST", [("content-length", "100000")]),
              end_stream=False)
    c.send(frame(DATA, 0, sid, b"y" * 16384) + frame(DATA, 0, sid, b"y" * 16384))
    time.sleep(0.2)
    c.send(rst_frame(sid, CANCEL))
    for i in range(3):
        nxt = c.stream_id()
        c.headers(nxt, c.request_fields(ECHO_PATH, "POST", [("content-length", "3"),
                                                            ("x-h2-test", "after-reset")]),
                  end_stream=False)
        c.send(frame(DATA, END_STREAM, nxt, b"abc"))
        _, _, body = expect_response(c, nxt)
        want = '"len":3,"sha256":"%s"' % hashlib.sha256(b"abc").hexdigest()
        if want.encode() not in body:
            fail("after a reset upload, request %d: expected the origin to echo %s, got %r"
                 % (i, want, body))


@case("proxy", "proxy_tls")
def p17_a_large_download_does_not_starve_small_requests(t):
    # While 48 MiB stream down on stream 1, small requests on the same connection are
    # answered before it ends.
    c = H2Client(t)
    big = c.request("/_matrix/test/big?bytes=%d" % (48 << 20))
    deadline = time.monotonic() + 30
    while not c.streams[big]["body"]:
        c.pump(deadline - time.monotonic())
    small = [c.request(OK_PATH + "?small=%d" % i) for i in range(3)]
    c.wait([big] + small, timeout=120)
    if c.streams[big]["reset"] is not None or len(c.streams[big]["body"]) != 48 << 20:
        fail("the large download did not complete: %d bytes, reset %s"
             % (len(c.streams[big]["body"]), c.streams[big]["reset"]))
    late = [s for s in small if c.order.index(s) > c.order.index(big)]
    if late:
        fail("small requests %s were answered only after the 48 MiB download ended (order %s)"
             % (late, c.order))


@case("deadup")
def p13_an_unreachable_upstream_is_a_502_on_its_stream_only(t):
    c = H2Client(t)
    a = c.request(OK_PATH)
    b = c.request("/.well-known/matrix/client")
    sa, sb = c.wait([a, b])
    if sa["status"] != 502 or b"errcode" not in sa["body"]:
        fail("expected 502 with a Matrix error from an unreachable upstream, got %s %r"
             % (sa["status"], bytes(sa["body"][:200])))
    if sb["status"] != 200:
        fail("expected mxgate's own .well-known 200 beside the 502, got %s" % sb["status"])
    st = c.response(c.request(OK_PATH))
    if st["status"] != 502:
        fail("expected the connection to serve the next stream (502 again), got %s" % st)


@case("proxy", "proxy_tls")
def p14_expect_100_continue_gets_an_interim_100_or_a_413(t):
    c = Conn(t)
    sid = c.stream_id()
    c.headers(sid, c.request_fields(ECHO_PATH, "POST", [("content-length", "4"),
                                                        ("expect", "100-continue")]),
              end_stream=False)
    f = next_for(c, sid)
    if f.kind != HEADERS or dict(f.headers).get(b":status") != b"100":
        fail("expected an interim 100 before the body is sent, got %s" % f)
    c.send(frame(DATA, END_STREAM, sid, b"abcd"))
    _, _, body = expect_response(c, sid)
    if b'"len":4' not in body:
        fail("expected the origin to get the 4 bytes after the 100, got %r" % body)
    # Over the limit (max_body is 9M in the test config): the final 413 instead of 100.
    sid = c.stream_id()
    c.headers(sid, c.request_fields(ECHO_PATH, "POST", [("content-length", str(40 << 20)),
                                                        ("expect", "100-continue")]),
              end_stream=False)
    status, _, body = expect_response(c, sid, status=None)
    if status != 413 or b"M_TOO_LARGE" not in body:
        fail("expected 413 M_TOO_LARGE without a 100, got %s %r" % (status, body[:200]))


# Requests whose pseudo-fields could not be written as a faithful HTTP/1.1 request line or
# Host, or whose path resolves elsewhere: each must be refused (4xx or a reset), never
# forwarded. (label, method, authority, path)
SMUGGLE = [
    ("space-in-path", "GET", None, "/_matrix/client/versions HTTP/1.0"),
    ("space-in-method", "GET /_synapse/admin/v1/users", None, "/_matrix/client/versions"),
    ("slash-in-authority", "GET", "localhost/_synapse", "/_matrix/client/versions"),
    ("space-in-authority", "GET", "localhost evil", "/_matrix/client/versions"),
    ("dot-segments", "GET", None, "/_matrix/../_synapse/admin/v1/users"),
    ("encoded-dot-segments", "GET", None, "/_matrix/%2e%2e/_synapse/admin/v1/users"),
    ("asterisk", "GET", None, "*"),
    ("no-leading-slash", "GET", None, "_matrix/client/versions"),
    ("fragment", "GET", None, "/_matrix/client/versions#frag"),
]


@case("proxy", "proxy_tls")
def p10_unwritable_or_ambiguous_requests_are_refused_not_forwarded(t):
    problems = []
    for label, method, authority, path in SMUGGLE:
        c = Conn(t)
        fields = [(":method", method), (":scheme", t.scheme),
                  (":authority", authority or t.authority), (":path", path),
                  ("x-h2-test", "smuggle-" + label)]
        sid = c.stream_id()
        c.headers(sid, fields)
        outcome = None
        while outcome is None:
            try:
                f = c.read_frame()
            except (Timeout, Closed) as e:
                outcome = "no answer (%s)" % type(e).__name__
                break
            if f.stream == sid and f.kind == RST_STREAM:
                outcome = "reset %s" % code_name(f.code())
            elif f.stream == sid and f.kind == HEADERS:
                outcome = "status %s" % dict(f.headers).get(b":status", b"?").decode()
            elif f.kind == GOAWAY:
                outcome = "goaway %s" % code_name(f.code())
        info("p10_unwritable_or_ambiguous_requests_are_refused_not_forwarded", label,
             outcome.replace(" ", "_"))
        if not (outcome.startswith("reset") or outcome.startswith("status 4")):
            problems.append("%s (%s %r %r): expected a 4xx or RST_STREAM, got %s"
                            % (label, method, authority, path, outcome))
        c.close()
    if problems:
        fail("; ".join(problems))


# ==== attacks ==============================================================================


class Rss:
    """Samples the proxy's VmRSS every 10 ms while an attack runs."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self.stop = False
        self.thread = None

    def now(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def __enter__(self):
        self.peak = self.now()

        def run():
            while not self.stop:
                try:
                    self.peak = max(self.peak, self.now())
                except (OSError, RuntimeError):
                    return
                time.sleep(0.01)
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        try:
            self.peak = max(self.peak, self.now())
        except (OSError, RuntimeError):
            pass


BASELINE = {}
RSS_LIMIT_KIB = 64 * 1024


def attack(name, t, run):
    """Runs one attack under RSS sampling and checks the growth over the idle figure."""
    if t.pid is None:
        fail("attack cases need --pid")
    with Rss(t.pid) as rss:
        run()
    base = BASELINE["kib"]
    info(name, "rss_idle_kib", base)
    info(name, "rss_peak_kib", rss.peak)
    if rss.peak - base > RSS_LIMIT_KIB:
        fail("the proxy's RSS grew by %d KiB (idle %d KiB, peak %d KiB), over the %d KiB bound"
             % (rss.peak - base, base, rss.peak, RSS_LIMIT_KIB))


def calm(c, what, timeout=10):
    try:
        expect_goaway(c, ENHANCE_YOUR_CALM, timeout=timeout, ignore_rst=True)
    except CaseFailed as e:
        fail("%s: %s" % (what, e))


@case("attack")
def a01_rapid_reset_gets_enhance_your_calm(t):
    def run():
        c = Conn(t)
        burst = b""
        for i in range(1000):
            sid = 1 + 2 * i
            burst += frame(HEADERS, END_STREAM | END_HEADERS, sid, c.block(c.request_fields(SLOW_PATH)))
            burst += rst_frame(sid, CANCEL)
            if len(burst) > 32768:
                if not c.send_quiet(burst):
                    break
                burst = b""
        c.send_quiet(burst)
        calm(c, "rapid reset (HEADERS + RST_STREAM x1000)")
    attack("a01_rapid_reset_gets_enhance_your_calm", t, run)


@case("attack")
def a02_continuation_flood_gets_enhance_your_calm(t):
    def run():
        c = Conn(t)
        blk = c.block(c.request_fields())
        c.send(frame(HEADERS, END_STREAM, 1, blk))
        sent = 0
        chunk = frame(CONTINUATION, 0, 1, b"\x40\x03x-a\x01b") * 64
        for _ in range(2000):  # at most 128000 CONTINUATIONs, never END_HEADERS
            if not c.send_quiet(chunk):
                break
            sent += 64
        calm(c, "CONTINUATION flood (small frames)")
        # Large CONTINUATIONs: the block's size bound, not the frame count, bites.
        c = Conn(t)
        c.send(frame(HEADERS, END_STREAM, 1, blk))
        big = frame(CONTINUATION, 0, 1, b"\x00" + hstr(b"x-a") + hstr(b"b" * 16000))
        for _ in range(200):
            if not c.send_quiet(big):
                break
        calm(c, "CONTINUATION flood (16 KiB frames)")
    attack("a02_continuation_flood_gets_enhance_your_calm", t, run)


@case("attack")
def a03_made_you_reset_window_overflow_gets_enhance_your_calm(t):
    def run():
        c = Conn(t)
        burst = b""
        for i in range(1000):
            sid = 1 + 2 * i
            burst += frame(HEADERS, END_STREAM | END_HEADERS, sid,
                           c.block(c.request_fields(SLOW_PATH)))
            burst += window_update(sid, 2 ** 31 - 1)  # overflows: the server resets it
            if len(burst) > 32768:
                if not c.send_quiet(burst):
                    break
                burst = b""
        c.send_quiet(burst)
        calm(c, "MadeYouReset (WINDOW_UPDATE overflow on open streams)")
    attack("a03_made_you_reset_window_overflow_gets_enhance_your_calm", t, run)


@case("attack")
def a04_made_you_reset_data_on_half_closed_gets_enhance_your_calm(t):
    def run():
        c = Conn(t)
        burst = b""
        for i in range(1000):
            sid = 1 + 2 * i
            burst += frame(HEADERS, END_STREAM | END_HEADERS, sid,
                           c.block(c.request_fields(SLOW_PATH)))
            burst += frame(DATA, 0, sid, b"x")  # half-closed (remote): STREAM_CLOSED
            if len(burst) > 32768:
                if not c.send_quiet(burst):
                    break
                burst = b""
        c.send_quiet(burst)
        calm(c, "MadeYouReset (DATA on half-closed streams)")
    attack("a04_made_you_reset_data_on_half_closed_gets_enhance_your_calm", t, run)


@case("attack")
def a05_hpack_bomb_is_answered_431_then_enhance_your_calm(t):
    def run():
        c = Conn(t)
        # One ~4 KiB entry in the dynamic table, then blocks of one-byte references to
        # it: each block decodes to ~60 MiB of fields from ~15 KiB on the wire.
        value = b"v" * 4000
        insert = b"\x40" + hstr(b"x-bomb") + bytes(encode_integer(len(value), 7)) + value
        base = b"\x82" + (b"\x86" if t.scheme == "http" else b"\x87") + \
            hint(1, 4, 0) + hstr(t.authority.encode()) + hint(4, 4, 0) + hstr(OK_PATH.encode())
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, base + insert))
        expect_response(c, 1)
        ref = hint(62, 7, 0x80)  # the newest dynamic entry
        answered = 0
        for i in range(1, 40):
            sid = 1 + 2 * i
            if not c.send_quiet(frame(HEADERS, END_STREAM | END_HEADERS, sid,
                                      base + ref * 15000)):
                break
            try:
                f = next_for(c, sid)
            except CaseFailed:
                raise
            if f.kind == GOAWAY:
                if f.code() != ENHANCE_YOUR_CALM:
                    fail("HPACK bomb: expected 431 answers then GOAWAY ENHANCE_YOUR_CALM, got %s"
                         % f)
                info("a05_hpack_bomb_is_answered_431_then_enhance_your_calm", "answered_431",
                     answered)
                if answered == 0:
                    fail("HPACK bomb: expected the first bombs answered 431, got GOAWAY at once")
                return
            status = dict(f.headers).get(b":status")
            if status != b"431":
                fail("HPACK bomb: expected 431, got %s" % f)
            answered += 1
        fail("HPACK bomb: expected GOAWAY ENHANCE_YOUR_CALM after repeated bombs, "
             "got %d answers 431 and no GOAWAY" % answered)
    attack("a05_hpack_bomb_is_answered_431_then_enhance_your_calm", t, run)


def next_for(c, sid):
    """The next HEADERS for `sid`, or a GOAWAY."""
    seen = []
    while True:
        try:
            f = c.read_frame()
        except (Timeout, Closed) as e:
            fail("expected an answer on stream %d or GOAWAY, got %s (saw: %s)"
                 % (sid, type(e).__name__, seen_str(seen)))
        if f.kind == GOAWAY or (f.kind == HEADERS and f.stream == sid):
            return f
        seen.append(str(f))


@case("attack")
def a06_hpack_table_churn_stays_bounded_and_answered(t):
    def run():
        c = Conn(t)
        for i in range(300):
            sid = c.stream_id()
            fields = c.request_fields(extra=[("x-churn-%d-%d" % (i, j), "%d" % i * 1000)
                                             for j in range(3)])
            c.headers(sid, fields)
            expect_response(c, sid)
    attack("a06_hpack_table_churn_stays_bounded_and_answered", t, run)


@case("attack")
def a07_settings_flood_gets_enhance_your_calm(t):
    def run():
        c = Conn(t)
        c.send_quiet(settings_frame([(S_MAX_CONCURRENT_STREAMS, 100)]) * 2000)
        calm(c, "SETTINGS flood")
    attack("a07_settings_flood_gets_enhance_your_calm", t, run)


@case("attack")
def a08_ping_flood_gets_enhance_your_calm(t):
    def run():
        c = Conn(t)
        c.send_quiet(ping_frame() * 5000)
        calm(c, "PING flood")
    attack("a08_ping_flood_gets_enhance_your_calm", t, run)


@case("attack")
def a09_empty_data_flood_gets_enhance_your_calm(t):
    def run():
        c = Conn(t)
        c.headers(1, path=ECHO_PATH, method="POST", end_stream=False)
        c.send_quiet(frame(DATA, 0, 1, b"") * 5000)
        calm(c, "empty DATA flood")
    attack("a09_empty_data_flood_gets_enhance_your_calm", t, run)


@case("attack")
def a10_window_update_flood_gets_enhance_your_calm(t):
    def run():
        c = Conn(t)
        c.send_quiet(window_update(0, 1) * 5000)
        calm(c, "WINDOW_UPDATE flood")
    attack("a10_window_update_flood_gets_enhance_your_calm", t, run)


@case("attack")
def a11_priority_flood_gets_enhance_your_calm(t):
    def run():
        c = Conn(t)
        c.send_quiet(frame(PRIORITY, 0, 1, priority_payload(0)) * 5000)
        calm(c, "PRIORITY flood")
    attack("a11_priority_flood_gets_enhance_your_calm", t, run)


@case("attack")
def a12_zero_window_reader_is_reset_after_the_stall_timeout(t):
    def run():
        c = Conn(t, settings=[(S_INITIAL_WINDOW_SIZE, 0)])
        sid = c.get("/_matrix/test/big?bytes=%d" % (64 << 20))
        t0 = time.monotonic()
        seen = []
        while True:
            try:
                f = c.read_frame(timeout=20)
            except (Timeout, Closed) as e:
                fail("zero window: expected RST_STREAM CANCEL after send_stall_timeout, got %s "
                     "(saw: %s)" % (type(e).__name__, seen_str(seen)))
            if f.kind == RST_STREAM and f.stream == sid:
                if f.code() != CANCEL:
                    fail("zero window: expected RST_STREAM CANCEL, got %s" % f)
                break
            if f.kind == GOAWAY:
                fail("zero window: expected RST_STREAM CANCEL, got %s" % f)
            if f.kind == DATA and f.payload:
                fail("zero window: DATA sent beyond a zero window: %s" % f)
            seen.append(str(f))
        info("a12_zero_window_reader_is_reset_after_the_stall_timeout", "reset_after_s",
             "%.1f" % (time.monotonic() - t0))
        expect_alive(c)
    attack("a12_zero_window_reader_is_reset_after_the_stall_timeout", t, run)


@case("attack")
def a13_a_client_that_never_reads_the_socket_holds_bounded_memory(t):
    def run():
        c = Conn(t)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Open windows, then never read: TCP backpressure is all that stops the server.
        c.send(window_update(0, 2 ** 31 - 1 - 65535))
        sids = [c.get("/_matrix/test/big?bytes=%d" % (64 << 20)) for _ in range(4)]
        for sid in sids:
            c.send(window_update(sid, 2 ** 31 - 1 - 65535))
        time.sleep(4)
        c.close()
    attack("a13_a_client_that_never_reads_the_socket_holds_bounded_memory", t, run)


@case("attack")
def a14_stream_ids_going_backwards_is_protocol_error(t):
    def run():
        c = Conn(t)
        for sid in (1, 3, 101):
            c.headers(sid)
            expect_response(c, sid)
        c.headers(51)
        expect_goaway(c, PROTOCOL_ERROR)
    attack("a14_stream_ids_going_backwards_is_protocol_error", t, run)


@case("attack")
def a15_many_connections_flooding_at_once_stay_bounded(t):
    def run():
        errors = []

        def one(i):
            try:
                c = Conn(t)
                burst = b""
                for j in range(250):
                    sid = 1 + 2 * j
                    burst += frame(HEADERS, END_STREAM | END_HEADERS, sid,
                                   c.block(c.request_fields(SLOW_PATH)))
                    burst += rst_frame(sid, CANCEL)
                c.send_quiet(burst)
                expect_goaway(c, ENHANCE_YOUR_CALM, timeout=15, ignore_rst=True)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("connection %d: %s" % (i, e))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        if errors:
            fail("; ".join(errors[:4]))
    attack("a15_many_connections_flooding_at_once_stay_bounded", t, run)


@case("attack")
def a16_a_client_that_never_acknowledges_settings_gets_settings_timeout(t):
    def run():
        c = Conn(t, handshake=False)
        c.answer_pings = False
        # Reads the server's SETTINGS but never sends the ACK (the test config sets
        # settings_timeout = "2s").
        expect_goaway(c, SETTINGS_TIMEOUT, timeout=15)
    attack("a16_a_client_that_never_acknowledges_settings_gets_settings_timeout", t, run)


@case("attack")
def a17_an_idle_connection_is_closed_with_goaway(t):
    def run():
        c = Conn(t)
        expect_response(c, c.get())
        # Nothing open for idle_timeout (the test config sets "3s"): GOAWAY NO_ERROR.
        t0 = time.monotonic()
        expect_goaway(c, NO_ERROR, timeout=15)
        info("a17_an_idle_connection_is_closed_with_goaway", "closed_after_s",
             "%.1f" % (time.monotonic() - t0))
    attack("a17_an_idle_connection_is_closed_with_goaway", t, run)


@case("attack")
def a18_a_silent_client_after_the_preface_is_closed(t):
    def run():
        c = Conn(t, preface=False, handshake=False)
        c.send(PREFACE[:10])  # and then nothing
        try:
            while True:
                c.read_frame(timeout=20)
        except Closed:
            return
        except Timeout:
            fail("a client that stalls inside the preface must be closed (idle_timeout), "
                 "the connection stayed open 20 s")
    attack("a18_a_silent_client_after_the_preface_is_closed", t, run)


@case("attack")
def a19_an_upload_to_an_upstream_that_never_reads_is_held_by_flow_control(t):
    def run():
        # The origin's /_matrix/test/deaf never reads the body: the client must end up
        # blocked on a closed window, with mxgate holding at most its windows. 40 MiB: under
        # the default max_body, far over what socket buffers absorb.
        n = 40 << 20
        c = H2Client(t)
        result = {}

        def upload():
            try:
                c.request("/_matrix/test/deaf", "POST", [("content-length", str(n))],
                          body=b"x" * n)
                result["done"] = True
            except (CaseFailed, Closed) as e:
                result["error"] = str(e)
        th = threading.Thread(target=upload, daemon=True)
        th.start()
        th.join(4)
        if not th.is_alive():
            fail("expected the upload to stay blocked on flow control, it ended: %s" % result)
        window = c.conn.local_flow_control_window(1)
        if window != 0 and c.conn.outbound_flow_control_window != 0:
            fail("expected a closed window while the upstream reads nothing, the client may "
                 "still send %d bytes" % window)
        c.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked reader
        th.join(5)
    attack("a19_an_upload_to_an_upstream_that_never_reads_is_held_by_flow_control", t, run)


@case("attack")
def a20_a_long_poll_longer_than_the_idle_timeout_is_not_cut(t):
    def run():
        # idle_timeout ("3s" in the test config) counts only while no stream is open: a
        # /sync-like long-poll of 5 s on an otherwise quiet connection is answered.
        c = Conn(t)
        sid = c.get("/_matrix/test/slow?ms=5000")
        expect_response(c, sid, timeout=12)
    attack("a20_a_long_poll_longer_than_the_idle_timeout_is_not_cut", t, run)


@case("drain")
def d1_sigterm_drains_open_streams_with_goaway(t):
    import signal
    c = Conn(t)
    sid = c.get("/_matrix/test/slow?ms=2000")
    time.sleep(0.3)  # the request reached the origin
    os.kill(t.pid, signal.SIGTERM)
    goaways = []
    status = None
    while True:
        try:
            f = c.read_frame(timeout=15)
        except Timeout:
            fail("after SIGTERM: nothing more within 15 s (GOAWAYs: %s, status %s)"
                 % (goaways, status))
        except Closed:
            break
        if f.kind == GOAWAY:
            goaways.append(str(f))
            if f.code() != NO_ERROR:
                fail("after SIGTERM: expected GOAWAY NO_ERROR, got %s" % f)
        elif f.kind == RST_STREAM:
            fail("after SIGTERM: the stream in flight was reset: %s" % f)
        elif f.kind == HEADERS and f.stream == sid:
            status = dict(f.headers).get(b":status")
    if not goaways:
        fail("after SIGTERM: the connection closed without GOAWAY")
    if status != b"200":
        fail("after SIGTERM: expected the stream in flight answered 200, got %r (GOAWAYs: %s)"
             % (status, goaways))
    # RFC 9113 §6.8: first GOAWAY with 2^31-1 (streams in flight may still arrive), then,
    # after a round trip (the PING), the final one naming the last stream processed.
    want = ["GOAWAY(last_stream=2147483647, NO_ERROR", "GOAWAY(last_stream=%d, NO_ERROR" % sid]
    if len(goaways) != 2 or not all(g.startswith(w) for g, w in zip(goaways, want)):
        fail("after SIGTERM: expected %s..., then %s..., got %s" % (want[0], want[1], goaways))
    info("d1_sigterm_drains_open_streams_with_goaway", "goaways", len(goaways))


@case("reload")
def d2_sighup_keeps_h2_connections_and_applies_to_their_next_streams(t):
    # The test rewrote the config file (max_body "9M" -> "1M") before this runs; the
    # proxy reads it at SIGHUP.
    import signal
    c = H2Client(t)
    body = b"r" * (2 << 20)
    hdrs = [("content-length", str(len(body)))]
    st = c.response(c.request(ECHO_PATH, "POST", hdrs, body=body))
    if st["status"] != 200:
        fail("before the reload (max_body 9M): expected 200 for 2 MiB, got %s" % st["status"])
    slow = c.request("/_matrix/test/slow?ms=2000")
    time.sleep(0.3)  # the request reached the origin
    os.kill(t.pid, signal.SIGHUP)
    st = c.response(slow)
    if st["status"] != 200:
        fail("the stream in flight across the reload: expected 200, got %s" % st["status"])
    time.sleep(0.5)
    # The same connection, idle again, follows the new configuration.
    st = c.response(c.request(ECHO_PATH, "POST", hdrs, body=body))
    if st["status"] != 413:
        fail("after the reload (max_body 1M), same connection: expected 413 for 2 MiB, got %s"
             % st["status"])
    st = c.response(c.request(OK_PATH))
    if st["status"] != 200:
        fail("after the reload, same connection: expected 200, got %s" % st["status"])
    c2 = H2Client(t)
    st = c2.response(c2.request(ECHO_PATH, "POST", hdrs, body=body))
    if st["status"] != 413:
        fail("after the reload (max_body 1M), new connection: expected 413, got %s"
             % st["status"])


# ---- main ---------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca")
    p.add_argument("--sni", default="localhost")
    p.add_argument("--authority")
    p.add_argument("--pid", type=int)
    p.add_argument("--group")
    p.add_argument("--case", action="append", default=[])
    p.add_argument("--list", action="store_true")
    args = p.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("h2conf: only loopback targets")
    selected = [(n, g, f) for n, g, f in CASES
                if (args.group and args.group in g) or n in args.case]
    if args.list:
        for n, _, _ in selected:
            print(n)
        return
    if not selected:
        sys.exit("h2conf: no case selected")
    t = Target(args)
    if t.pid is not None:
        with Rss(t.pid) as r:
            pass
        BASELINE["kib"] = r.peak
    print("TOTAL %d" % len(selected), flush=True)
    passed = failed = 0
    for name, _, fn in selected:
        started = time.monotonic()
        try:
            fn(t)
            print("CASE %s PASS (%.2fs)" % (name, time.monotonic() - started), flush=True)
            passed += 1
        except CaseFailed as e:
            print("CASE %s FAIL %s" % (name, str(e).replace("\n", " ")), flush=True)
            failed += 1
        except Exception as e:  # noqa: BLE001 - any other error is this case's failure
            tb = traceback.format_exc().strip().splitlines()
            print("CASE %s FAIL unexpected %s: %s [%s]" % (
                name, type(e).__name__, str(e).replace("\n", " "), " | ".join(tb[-3:])),
                flush=True)
            failed += 1
    print("SUMMARY passed=%d failed=%d" % (passed, failed), flush=True)


if __name__ == "__main__":
    main()
