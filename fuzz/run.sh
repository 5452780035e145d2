#!/usr/bin/env bash
# Builds the AFL++ targets and fuzzes each for SECONDS (default 60), one after another.
# Fails if any target found a crash or a hang. Non-interactive; fine as root in CI.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Output: fuzz/out/<target>/ (gitignored); afl-fuzz's log in fuzz/out/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"

CARGO_AFL_VERSION=0.18.2 # keep in step with the afl dependency in Cargo.toml
SECONDS_PER_TARGET=${1:-60}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(request_stream uri_preservation framing_agreement response_stream h2_frames h2_proxy)
fi

if ! cargo afl --version 2>/dev/null | grep -q "$CARGO_AFL_VERSION"; then
    echo "== installing cargo-afl $CARGO_AFL_VERSION"
    cargo install cargo-afl --version "$CARGO_AFL_VERSION" --locked --force
fi
# Builds AFL++ itself for this toolchain when the install did not (it is a no-op error
# when already built).
cargo afl config --build >/dev/null 2>&1 || true

echo "== building targets"
mkdir -p out
if ! cargo afl build --release --locked >out/build.log 2>&1; then
    tail -n 40 out/build.log >&2
    echo "building the fuzz targets failed (full log: fuzz/out/build.log)" >&2
    exit 1
fi
tail -n 1 out/build.log

echo "== self-tests (the reader, the heap probe, every seed)"
if ! cargo test --release --lib --locked >out/selftest.log 2>&1; then
    tail -n 40 out/selftest.log >&2
    echo "the fuzz crate's self-tests failed (full log: fuzz/out/selftest.log)" >&2
    exit 1
fi
grep 'test result' out/selftest.log

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
# A slow first start on a loaded machine is not a failure.
export AFL_FORKSRV_INIT_TMOUT=20000

stat_of() { # FILE KEY
    sed -n "s/^$2 *: *//p" "$1" 2>/dev/null | head -n 1
}

failed=0
for t in "${TARGETS[@]}"; do
    if [ ! -d "seeds/$t" ]; then
        echo "unknown target: $t" >&2
        exit 2
    fi
    echo "== fuzzing $t for ${SECONDS_PER_TARGET}s"
    rm -rf "out/$t"
    # -V: stop after SECONDS; -t: per-input timeout in ms (an input that takes longer is a hang).
    cargo afl fuzz -i "seeds/$t" -o "out/$t" -x dict/http.dict -t 1000 \
        -V "$SECONDS_PER_TARGET" "target/release/$t" >"out/$t.log" 2>&1 || {
        echo "afl-fuzz failed for $t; its log:" >&2
        tail -n 30 "out/$t.log" >&2
        failed=1
        continue
    }
done

echo
printf '%-20s %12s %10s %8s %6s %6s\n' target execs_done execs/s coverage crashes hangs
for t in "${TARGETS[@]}"; do
    s="out/$t/default/fuzzer_stats"
    printf '%-20s %12s %10s %8s %6s %6s\n' "$t" "$(stat_of "$s" execs_done)" \
        "$(stat_of "$s" execs_per_sec)" "$(stat_of "$s" bitmap_cvg)" \
        "$(stat_of "$s" saved_crashes)" "$(stat_of "$s" saved_hangs)"
done

for t in "${TARGETS[@]}"; do
    for kind in crashes hangs; do
        found=$(find "out/$t/default/$kind" -name 'id:*' 2>/dev/null | sort)
        if [ -n "$found" ]; then
            failed=1
            echo
            echo "!! $t: $kind found (replay: target/release/$t < FILE):"
            for f in $found; do
                echo "   $f"
                why=$("target/release/$t" <"$f" 2>&1 || true)
                echo "$why" | grep -A 1 -m 1 'panicked' | sed 's/^/      /' || true
            done
        fi
    done
done

if [ "$failed" -ne 0 ]; then
    echo
    echo "fuzzing FAILED: copy each input to fuzz/regressions/<target>/<what-it-is> and fix it."
    exit 1
fi
echo "fuzzing passed"
