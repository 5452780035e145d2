#!/usr/bin/env bash
# Provision a virtualenv holding a pinned, real Synapse (PyPI `matrix-synapse`) for the
# end-to-end tests in tests/tests/synapse_flow.rs.
#
#   bash tests/synapse/provision.sh          # prints MXGATE_SYNAPSE_PYTHON=<venv python> on stdout
#
# Venv location: ${MXGATE_SYNAPSE_VENV:-<repo>/target/synapse-venv}.
# Interpreter:   ${MXGATE_PYTHON:-python3} (needs Python >= 3.10; 3.11 is what we test on).
#
# The venv is reused when its marker file names exactly the pins below (and Synapse imports);
# otherwise it is rebuilt from scratch. Everything comes from PyPI as binary wheels
# (--only-binary :all:), so no compiler, Rust toolchain or -dev package is needed. Synapse
# 1.163's wheel is manylinux_2_28 (glibc >= 2.28: Debian 10+ / Ubuntu 20.04+ are fine).
#
# Debian packages: only python3 + python3-venv (Debian splits `ensurepip` out of python3).
# If `python3 -m venv` fails for want of ensurepip and we run as root with apt-get, this script
# installs python3-venv itself (set MXGATE_NO_APT=1 to forbid that). SQLite is Python's own
# sqlite3 module, so no libpq / postgres is needed.
set -euo pipefail

# ---- pins -----------------------------------------------------------------------------
SYNAPSE_VERSION="1.163.2"
# Exact versions of every transitive dependency (from `pip freeze` of a clean install),
# so that a new release of some dependency cannot break the test suite overnight.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONSTRAINTS="$HERE/constraints.txt"

REPO="$(cd "$HERE/../.." && pwd)"
VENV="${MXGATE_SYNAPSE_VENV:-$REPO/target/synapse-venv}"
PYTHON="${MXGATE_PYTHON:-python3}"
MARKER="$VENV/.mxgate-synapse-provisioned"

log() { echo "provision: $*" >&2; }
die() { echo "provision: ERROR: $*" >&2; exit 1; }

constraints_sum() {
    if [ -f "$CONSTRAINTS" ]; then sha256sum "$CONSTRAINTS" | cut -d' ' -f1; else echo none; fi
}
WANT="matrix-synapse==$SYNAPSE_VERSION constraints=$(constraints_sum)"

start=$(date +%s)

# One provisioner at a time per venv (parallel test runs); flock is in util-linux.
mkdir -p "$(dirname "$VENV")"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$VENV.lock"
    flock -w 900 9 || die "timed out waiting for $VENV.lock"
fi

# ---- warm path ---------------------------------------------------------------------------
if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$WANT" ] \
    && "$VENV/bin/python" -c 'import synapse, synapse.app.homeserver' 2>/dev/null; then
    log "reusing $VENV ($WANT)"
    echo "MXGATE_SYNAPSE_PYTHON=$VENV/bin/python"
    exit 0
fi

# ---- cold path ---------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install python3 (>= 3.10)"
"$PYTHON" - <<'EOF' || die "Python >= 3.10 is required for matrix-synapse $SYNAPSE_VERSION"
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
EOF

log "creating venv at $VENV with $("$PYTHON" --version 2>&1)"
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
if ! "$PYTHON" -m venv "$VENV" 2>"$VENV.err"; then
    cat "$VENV.err" >&2
    rm -rf "$VENV"
    if [ "${MXGATE_NO_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "python3 -m venv failed; installing Debian package python3-venv"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y python3-venv >&2 || { apt-get update >&2 && apt-get install -y python3-venv >&2; } \
            || die "apt-get install python3-venv failed"
        "$PYTHON" -m venv "$VENV" || die "python3 -m venv still fails after installing python3-venv"
    else
        die "'$PYTHON -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv"
    fi
fi
rm -f "$VENV.err"

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)
CONSTRAINT_ARGS=()
[ -f "$CONSTRAINTS" ] && CONSTRAINT_ARGS=(-c "$CONSTRAINTS")

log "pip install matrix-synapse==$SYNAPSE_VERSION (wheels only)"
"${PIP[@]}" install --quiet --only-binary :all: "${CONSTRAINT_ARGS[@]}" \
    "matrix-synapse==$SYNAPSE_VERSION" requests >&2 \
    || die "pip install of matrix-synapse==$SYNAPSE_VERSION failed (see above)"

"$VENV/bin/python" -c 'import synapse, synapse.app.homeserver; print("synapse", synapse.__version__)' >&2 \
    || die "Synapse installed but does not import"

echo "$WANT" >"$MARKER"
log "done in $(( $(date +%s) - start )) s"
echo "MXGATE_SYNAPSE_PYTHON=$VENV/bin/python"
