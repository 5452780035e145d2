#!/usr/bin/env bash
# Starts mxgate (the smol runtime's release binary) for /work/shared/bench/h2bench.py's --cmd,
# in the foreground: one TLS listener on 127.0.0.1:$H2_PORT with $CERT/$KEY (ALPN h2, then
# http/1.1), the client role's routes (/_matrix, /_synapse/client) to $ORIGIN, one worker
# thread, no access log. The config is rendered into $WORKDIR/mxgate-h2.toml.
#
#   python3 /work/shared/bench/h2bench.py --reps 3 --name mxgate --cmd "$PWD/bench/h2/mxgate-h2.sh"
#
# Environment (set by h2bench.py): H2_PORT ORIGIN CERT KEY WORKDIR.
# MXGATE_BENCH_BIN: the binary (default: target/release/mxgate of this checkout; build it
# first with `cargo build --release -p mxgate`).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${MXGATE_BENCH_BIN:-$REPO/target/release/mxgate}
: "${H2_PORT:?} ${ORIGIN:?} ${CERT:?} ${KEY:?} ${WORKDIR:?}"
[ -x "$BIN" ] || { echo "mxgate-h2.sh: no binary at $BIN (cargo build --release -p mxgate)" >&2; exit 1; }
CONFIG=$WORKDIR/mxgate-h2.toml
cat >"$CONFIG" <<CONF
# mxgate under h2bench.py: rendered by bench/h2/mxgate-h2.sh.
server_name = "localhost"
public_url = "https://localhost:$H2_PORT"
homeserver = "http://$ORIGIN"

[tls]
cert = "$CERT"
key = "$KEY"

[[listeners]]
name = "h2"
role = "client"
bind = ["127.0.0.1:$H2_PORT"]
tls = true

# As many idle upstream connections as the peers keep (nginx: keepalive 1024): 10 client
# connections x 100 streams each hold one upstream connection per stream.
[[upstreams]]
name = "homeserver"
backends = ["http://$ORIGIN"]
max_idle_per_backend = 1024

[runtime]
threads = 1
access_log = "off"
CONF
exec "$BIN" run --config "$CONFIG"
