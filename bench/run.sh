#!/usr/bin/env bash
# Side-by-side bench of mxgate against nginx, HAProxy and Caddy (issue 7), using the shared
# harness (peers.sh/bench.py, maintained outside this repo) with mxgate plugged in via --cmd.
#
#   bench/run.sh                                      # full run: direct, nginx, haproxy, caddy, mxgate; 3 reps (~6-8 min)
#   bench/run.sh --duration 3 --reps 1 --only nginx,haproxy   # quick look (mxgate is always added)
#   MXGATE_PEERS_BENCH=/path/to/peers.sh bench/run.sh ...      # another harness checkout
#
# Every argument is passed to peers.sh (see its README: --only --duration --reps --conns
# --idle-conns --lp-conns --no-longpoll --out). Defaults added here unless given:
# --lp-conns 2000 (issue 7 target 5). Output: the markdown table on stdout and in
# /tmp/bench-results.md; raw results in /tmp/bench-run/raw.jsonl. Then, unless
# --no-lp-memory, bench/longpoll_memory.py: peak RSS of mxgate and nginx while each holds
# 2,000 concurrent long-polls (the harness runs long-polls but does not sample memory).
#
# Environment:
#   MXGATE_PEERS_BENCH  harness entry point (default: ../shared/bench/peers.sh next to the repo)
#   MXGATE_BENCH_DIR    where the generated mxgate config goes (default /tmp/mxgate-bench)
#   MXGATE_BENCH_BIN    use this binary instead of building target/release/mxgate
#   MXGATE_NO_APT=1     never call apt-get (fail if a tool is missing)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${MXGATE_PEERS_BENCH:-$REPO/../shared/bench/peers.sh}
OUT_DIR=${MXGATE_BENCH_DIR:-/tmp/mxgate-bench}
NAME=mxgate

[ -x "$PEERS" ] || { echo "bench/run.sh: harness not found at $PEERS (set MXGATE_PEERS_BENCH)" >&2; exit 1; }

# 1. Tools (Debian packages), installed only when missing.
need=()
for t in nginx:nginx haproxy:haproxy caddy:caddy wrk:wrk pidstat:sysstat curl:curl openssl:openssl; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "${MXGATE_NO_APT:-}" = 1 ] || ! command -v apt-get >/dev/null; then
    echo "bench/run.sh: missing packages: ${need[*]}" >&2; exit 1
  fi
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "bench/run.sh: installing ${need[*]}" >&2
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y nginx haproxy caddy wrk sysstat curl openssl
fi

# 2. The release binary.
if [ -n "${MXGATE_BENCH_BIN:-}" ]; then
  BIN=$MXGATE_BENCH_BIN
else
  (cd "$REPO" && cargo build --release -p mxgate) >&2
  BIN=$REPO/target/release/mxgate
fi
[ -x "$BIN" ] || { echo "bench/run.sh: no binary at $BIN" >&2; exit 1; }

# 3. The mxgate config for the harness's ports. The cert/key paths come from the harness
#    (BENCH_CERT/BENCH_KEY in the command's environment), so the file is rendered from this
#    template when the harness starts the proxy.
mkdir -p "$OUT_DIR"
TEMPLATE=$OUT_DIR/mxgate.toml.in
CONFIG=$OUT_DIR/mxgate.toml
cat >"$TEMPLATE" <<'EOF'
# mxgate under the shared reverse-proxy bench: one worker thread, no access log (no peer logs),
# same ports, backend and certificate as the peers. Rendered by bench/run.sh.
server_name = "localhost"
public_url = "https://localhost:19443"
homeserver = "http://@BACKEND@"

[tls]
cert = "@CERT@"
key = "@KEY@"

[[listeners]]
name = "plain"
role = "client"
bind = ["@PLAIN@"]
tls = false

[[listeners]]
name = "tls"
role = "client"
bind = ["@TLS@"]
tls = true

# The homeserver pool, with as many idle keep-alive connections as nginx's `keepalive 64`
# (the default 32 is below wrk's 50 connections: it would churn upstream connections).
[[upstreams]]
name = "homeserver"
backends = ["http://@BACKEND@"]
max_idle_per_backend = 64

[runtime]
threads = 1
access_log = "off"
EOF

# Render with the harness's values at start-up, then replace the shell with mxgate.
CMD="sed -e \"s#@CERT@#\${BENCH_CERT:-/tmp/bench-certs/cert.pem}#\" \
 -e \"s#@KEY@#\${BENCH_KEY:-/tmp/bench-certs/key.pem}#\" \
 -e \"s#@BACKEND@#\${BENCH_BACKEND:-127.0.0.1:19008}#\" \
 -e \"s#@PLAIN@#\${BENCH_PLAIN:-127.0.0.1:19080}#\" \
 -e \"s#@TLS@#\${BENCH_TLS:-127.0.0.1:19443}#\" '$TEMPLATE' > '$CONFIG' \
 && exec '$BIN' run --config '$CONFIG'"

# 4. Run the harness; mxgate is always part of --only.
args=()
have_lp=0
lp_memory=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-lp-memory) lp_memory=0; shift ;;
    --only) args+=(--only "$2,$NAME"); shift 2 ;;
    --only=*) args+=("--only=${1#--only=},$NAME"); shift ;;
    --lp-conns|--lp-conns=*) have_lp=1; args+=("$1"); shift ;;
    --cmd|--name) echo "bench/run.sh: --cmd/--name are set by this script" >&2; exit 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ $have_lp = 1 ] || args+=(--lp-conns 2000)

echo "bench/run.sh: $PEERS ${args[*]} --cmd <render config; exec $BIN run --config $CONFIG> --name $NAME" >&2
"$PEERS" "${args[@]}" --cmd "$CMD" --name "$NAME"

# 5. Memory while holding 2,000 long-polls (target 5), which the harness does not sample.
if [ "$lp_memory" = 1 ]; then
  echo "bench/run.sh: bench/longpoll_memory.py --bin $BIN --conns 2000" >&2
  python3 "$REPO/bench/longpoll_memory.py" --bin "$BIN" --conns 2000
fi
