"""Writes client_h2.bin: what python-hyper's h2 (PyPI `h2` 4.x) sends as a client for the
interop test in ../tests.rs (`python_h2_client_bytes_decode_as_sent`). Re-run with
`python3 -m venv /tmp/v && /tmp/v/bin/pip install 'h2==4.*' && /tmp/v/bin/python make_interop.py`
after changing it; the test states what it expects."""
import h2.config
import h2.connection
import h2.settings

conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
# The server's SETTINGS as the test's Connection sends them, acknowledged.
conn.receive_data(
    b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS is enough to ACK
)
conn.send_headers(1, [
    (":method", "GET"), (":scheme", "https"), (":authority", "matrix.example.org"),
    (":path", "/_matrix/client/v3/rooms/%21abc%3Aexample.org/messages?dir=b&limit=10"),
    ("user-agent", "python-h2"), ("accept", "application/json"),
    ("cookie", "a=1"), ("cookie", "b=2"),
], end_stream=True)
conn.send_headers(3, [
    (":method", "PUT"), (":scheme", "https"), (":authority", "matrix.example.org"),
    (":path", "/_matrix/media/v3/upload?filename=%E2%9C%93.png"),
    ("content-type", "image/png"), ("content-length", "70000"),
    ("x-big", "v" * 20000),  # the block exceeds 16 KiB: HEADERS + CONTINUATION
])
body = bytes(range(256)) * 273 + bytes(112)  # 70 000 bytes
conn.send_data(3, body[:10000], pad_length=100)
conn.send_data(3, body[10000:26000])
conn.send_data(3, body[26000:42000])
conn.send_data(3, body[42000:58000])
conn.send_data(3, body[58000:65000])
conn.ping(b"12345678")
conn.increment_flow_control_window(1000)
conn.send_headers(5, [
    (":method", "GET"), (":scheme", "https"), (":authority", "matrix.example.org"),
    (":path", "/_matrix/client/v3/sync?timeout=30000"),
])
conn.reset_stream(5)
open("client_h2.bin", "wb").write(conn.data_to_send())
