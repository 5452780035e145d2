#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/seeds/<target>/ (re-run after changing an input format
in src/targets.rs). Each file is one input in that target's format."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# Raw requests, as in core/src/tests/table.rs, plus a few everyday ones.
REQUESTS = {
    "get": b"GET /_matrix/a HTTP/1.1\r\nHost: a\r\n\r\n",
    "cl_and_te": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te_and_cl": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    "two_cl": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    "cl_list": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n",
    "cl_plus": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
    "cl_hex": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n",
    "cl_space": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3 \r\n\r\nabc",
    "cl_twice_same": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "te_chunked_gzip": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    "te_gzip_chunked": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "te_xchunked": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
    "te_twice": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te_quoted": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
    "chunk_negative": b"POST /_matrix/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
    "te_http10": b"POST /_matrix/a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    "folded": b"GET /_matrix/a HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n",
    "bare_lf": b"GET /_matrix/a HTTP/1.1\nHost: a\r\n\r\n",
    "bare_cr": b"GET /_matrix/a HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
    "nul": b"GET /_matrix/a HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
    "space_before_colon": b"GET /_matrix/a HTTP/1.1\r\nHost : a\r\n\r\n",
    "no_host": b"GET /_matrix/a HTTP/1.1\r\n\r\n",
    "two_hosts": b"GET /_matrix/a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "http10": b"GET /_matrix/a HTTP/1.0\r\n\r\n",
    "http20": b"GET /_matrix/a HTTP/2.0\r\nHost: a\r\n\r\n",
    "absolute_form": b"GET http://evil/_matrix/a HTTP/1.1\r\nHost: a\r\n\r\n",
    "double_space": b"GET /_matrix/a  HTTP/1.1\r\nHost: a\r\n\r\n",
    "expect_other": b"GET /_matrix/a HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n",
    "leading_crlf": b"\r\nGET /_matrix/a HTTP/1.1\r\nHost: a\r\n\r\n",
    "chunked_upload": b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: y\r\n\r\n",
    "expect_continue": b"PUT /_matrix/client/v3/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
    "pipelined": b"GET /_matrix/a HTTP/1.1\r\nHost: a\r\n\r\nHEAD /_matrix/b HTTP/1.1\r\nHost: a\r\n\r\nPOST /_matrix/c HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
    "local": b"GET /.well-known/matrix/client HTTP/1.1\r\nHost: a\r\n\r\nOPTIONS /.well-known/matrix/server HTTP/1.1\r\nHost: a\r\n\r\nGET /_synapse/admin/v1/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "hop_by_hop": b"GET /_matrix/x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nX-Request-ID: r\r\n\r\n",
    "upgrade": b"GET /_matrix/client/ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    "close": b"DELETE /_matrix/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "keepalive10": b"GET /_matrix/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /_matrix/b HTTP/1.0\r\n\r\n",
}

# Upstream responses.
RESPONSES = {
    "cl": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
    "close_delimited": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
    "http10": b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    "http10_keepalive": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc",
    "early_hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    "switching": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello",
    "no_content": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    "not_modified": b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te_and_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    "te_gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzzz",
    "connection_close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbody",
    "hop_by_hop": b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
    "cut_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    "cut_chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    "cut_head": b"HTTP/1.1 200 OK\r\nContent-Le",
    "two_responses": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ny",
    "error": b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
}


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def header(flags, pieces):
    return bytes([flags, len(pieces)]) + bytes(pieces)


# request_stream: script, flags, n, pieces, client bytes.
# flags: listener 1 (client, https), EOF at the end.
for name, req in REQUESTS.items():
    write("request_stream", name, bytes([0]) + header(0x11, []) + req)
write("request_stream", "pipelined_pieces", bytes([0]) + header(0x31, [1, 7, 0]) + REQUESTS["pipelined"])
write("request_stream", "chunked_pieces", bytes([0]) + header(0x11, [3, 1]) + REQUESTS["chunked_upload"])
write("request_stream", "scripted_upstream", bytes([0b11100100]) + header(0x71, [0]) + REQUESTS["pipelined"])
write("request_stream", "federation", bytes([0]) + header(0x12, []) + b"GET /_synapse/client/x HTTP/1.1\r\nHost: a\r\n\r\nGET /_matrix/federation/v1/version HTTP/1.1\r\nHost: a\r\n\r\n")
write("request_stream", "trusted_proxy", bytes([0]) + header(0x15, []) + b"GET /_matrix/x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6, 10.0.0.1\r\nX-Request-ID: lb-1\r\n\r\n")
write("request_stream", "admin_allowed", bytes([0]) + header(0x19, []) + b"GET /_synapse/admin/v1/server_version HTTP/1.1\r\nHost: a\r\n\r\n")

# uri_preservation: a prefix pick, then target characters.
TARGETS = [
    (1, b"client/versions"),
    (3, b"rooms/%21abc%3Aexample.org/send/m.room.message/t1"),
    (1, b"federation/v1/event/$abc%2Fdef"),
    (1, b"media/v3/download/example.org/%25%2F..%2F"),
    (1, b"/client///v3"),
    (1, b"client/./v3/../v3/sync?since=s1_2&timeout=30000&filter=%7B%22a%22%3A1%7D"),
    (3, b"directory/room/%23Room%3AExample.org?x=a+b%20c"),
    (1, b"../_synapse/admin/v1/users"),
    (0, b"_synapse%2Fadmin/v1/users"),
    (2, b"%61dmin/v1/users"),
    (1, b"%2e%2e/_synapse/admin"),
    (1, b"client/../../_synapse/admin"),
    (2, b"client/oidc/callback"),
    (2, b"admin/v1/server_version"),
    (0, b".well-known/matrix/server"),
    (0, b"health"),
    (0, b"index.html"),
    (0, b"_matrixfoo"),
    (3, b"user/@alice:example.org/filter/1?a=b&c=d;e,f*g'h(i)~"),
]
for i, (pick, t) in enumerate(TARGETS):
    write("uri_preservation", "target_%02d" % i, bytes([pick]) + t)

# framing_agreement: flags, upstream piece, client length (LE u16), n, pieces, client, upstream.
def fa(flags, upiece, client, upstream, pieces=()):
    return bytes([flags, upiece]) + struct.pack("<H", len(client)) + bytes([len(pieces)]) + bytes(pieces) + client + upstream

PAIRS = [
    ("get_cl", REQUESTS["get"] + REQUESTS["get"], RESPONSES["cl"], 0x11),
    ("get_chunked", REQUESTS["get"] + REQUESTS["get"], RESPONSES["chunked"], 0x31),
    ("get_close", REQUESTS["get"], RESPONSES["close_delimited"], 0x51),
    ("http10_chunked", REQUESTS["http10"], RESPONSES["chunked"], 0x11),
    ("head_cl", b"HEAD /_matrix/a HTTP/1.1\r\nHost: a\r\n\r\n" + REQUESTS["get"], RESPONSES["cl"][:-2], 0x31),
    ("upgrade_101", REQUESTS["upgrade"], RESPONSES["switching"], 0x11),
    ("early_hints", REQUESTS["get"], RESPONSES["early_hints"], 0x11),
    ("no_content", REQUESTS["get"] + REQUESTS["get"], RESPONSES["no_content"], 0x31),
    ("not_modified", REQUESTS["get"], RESPONSES["not_modified"], 0x11),
    ("te_and_cl", REQUESTS["get"], RESPONSES["te_and_cl"], 0x11),
    ("hop_by_hop", REQUESTS["hop_by_hop"], RESPONSES["hop_by_hop"], 0x31),
    ("chunked_upload", REQUESTS["chunked_upload"], RESPONSES["cl"], 0x11),
    ("expect_continue", REQUESTS["expect_continue"], RESPONSES["cl"], 0x11),
    ("two_responses", REQUESTS["get"] + REQUESTS["get"], RESPONSES["two_responses"], 0x31),
    ("cut", REQUESTS["get"], RESPONSES["cut_cl"], 0x51),
    ("pipelined", REQUESTS["pipelined"], RESPONSES["chunked"], 0x31),
]
for name, client, upstream, flags in PAIRS:
    write("framing_agreement", name, fa(flags, 0, client, upstream))
write("framing_agreement", "pieces", fa(0x31, 7, REQUESTS["pipelined"], RESPONSES["chunked"], (5, 1, 0)))

# response_stream: flags, n, pieces, upstream bytes (then a close).
for name, resp in RESPONSES.items():
    flags = 4 if name == "switching" else 0
    write("response_stream", name, header(flags, []) + resp)
write("response_stream", "head_cl", header(1, []) + RESPONSES["cl"][:-2])
write("response_stream", "http10_client_chunked", header(2, []) + RESPONSES["chunked"])
write("response_stream", "chunked_pieces", header(0, [1, 4, 0]) + RESPONSES["chunked"])
write("response_stream", "retry_after_close", header(8, []) + b"")
write("response_stream", "body_request", header(16, []) + RESPONSES["cl"])


# h2_frames: a flags byte, then client frames after the preface and SETTINGS (the target
# sends those). HPACK blocks here are literal fields without indexing (no Huffman), so the
# fuzzer sees names and values as plain bytes.
def h2_frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_literal(name, value):
    return bytes([0, len(name)]) + name + bytes([len(value)]) + value


def h2_get(path, method=b"GET", extra=()):
    block = h2_literal(b":method", method) + h2_literal(b":scheme", b"https")
    block += h2_literal(b":authority", b"example.org") + h2_literal(b":path", path)
    for n, v in extra:
        block += h2_literal(n, v)
    return block


H2_ACK = h2_frame(4, 1, 0, b"")
H2_SEEDS = {
    "get": H2_ACK + h2_frame(1, 5, 1, h2_get(b"/_matrix/client/versions")),
    "post_body": H2_ACK + h2_frame(1, 4, 1, h2_get(b"/_matrix/client/v3/login", b"POST", [(b"content-length", b"2")]))
    + h2_frame(0, 0, 1, b"{") + h2_frame(0, 1, 1, b"}"),
    "continuation": H2_ACK + h2_frame(1, 1, 1, h2_get(b"/a")[:10]) + h2_frame(9, 4, 1, h2_get(b"/a")[10:]),
    "rapid_reset": H2_ACK + b"".join(h2_frame(1, 4, i, h2_get(b"/x")) + h2_frame(3, 0, i, b"\0\0\0\x08") for i in range(1, 40, 2)),
    "control": H2_ACK + h2_frame(6, 0, 0, b"12345678") + h2_frame(8, 0, 0, b"\0\0\x10\0")
    + h2_frame(2, 0, 1, b"\0\0\0\0\x10") + h2_frame(4, 0, 0, b"\0\x04\0\0\0\0") + h2_frame(7, 0, 0, b"\0\0\0\0\0\0\0\0"),
    "padded_trailers": H2_ACK + h2_frame(1, 0x2c, 3, b"\x02\0\0\0\0\x10" + h2_get(b"/p", b"PUT") + b"\0\0")
    + h2_frame(0, 8, 3, b"\x03abc\0\0\0") + h2_frame(1, 5, 3, h2_literal(b"x-t", b"1")),
    "zero_window": h2_frame(4, 0, 0, b"\0\x04\0\0\0\0") + H2_ACK + h2_frame(1, 5, 1, h2_get(b"/big")),
}
for name, frames in H2_SEEDS.items():
    write("h2_frames", name, bytes([0b00011111]) + frames)
    write("h2_frames", name + "_bytewise", bytes([0b01111000]) + frames)
# What python-hyper's h2 sends (core's interop fixture), after its preface.
with open(os.path.join(HERE, "..", "core", "src", "http2", "testdata", "client_h2.bin"), "rb") as f:
    write("h2_frames", "python_h2", bytes([0b10011110]) + f.read()[24:])

# h2_proxy: the same format, through the whole proxy to in-memory upstreams (flags: piece
# size, chunked answers, answers before the body ends, cut answers, time, shutdown).
H2_PROXY_SEEDS = {
    "get": H2_ACK + h2_frame(1, 5, 1, h2_get(b"/_matrix/client/versions")),
    "odd_path": H2_ACK + h2_frame(1, 5, 1, h2_get(b"/_matrix/client/v3/rooms/%21a%3Ab/state/x/%2F?q=%2e%2E&r=a+b")),
    "post_chunked": H2_ACK + h2_frame(1, 4, 1, h2_get(b"/_matrix/client/v3/login", b"POST"))
    + h2_frame(0, 0, 1, b"{\"a\":") + h2_frame(0, 1, 1, b"1}"),
    "post_length": H2_ACK + h2_frame(1, 4, 1, h2_get(b"/_matrix/media/v3/upload", b"PUT", [(b"content-length", b"3")]))
    + h2_frame(0, 1, 1, b"abc"),
    "too_large": H2_ACK + h2_frame(1, 4, 1, h2_get(b"/_matrix/media/v3/upload", b"POST", [(b"content-length", b"5000")]))
    + h2_frame(0, 0, 1, b"x" * 700),
    "three_streams": H2_ACK + b"".join(h2_frame(1, 5, i, h2_get(b"/_matrix/client/v3/sync?since=" + bytes([48 + i]))) for i in (1, 3, 5))
    + h2_frame(3, 0, 3, b"\0\0\0\x08"),
    "local_answers": H2_ACK + h2_frame(1, 5, 1, h2_get(b"/health")) + h2_frame(1, 5, 3, h2_get(b"/.well-known/matrix/client"))
    + h2_frame(1, 5, 5, h2_get(b"/_synapse/admin/v1/users")),
}
for name, frames in H2_PROXY_SEEDS.items():
    write("h2_proxy", name, bytes([0b00000111]) + frames)
    write("h2_proxy", name + "_chunked_early", bytes([0b00011011]) + frames)
    write("h2_proxy", name + "_cut_bytewise", bytes([0b01100000]) + frames)
