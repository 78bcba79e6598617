#!/usr/bin/env bash
# Differential fuzz of /proc/PID/timens_offsets writes, long form: CASES generated writes run
# against the kernel's time namespaces and under the emulation (tests/tests/offsets_fuzz.rs, which
# CI runs with 10,000), then the counts: cases, matches, known differences by name, others.
# Usage: sudo bench/fuzz-offsets.sh      (see bench/README.md)
# Knobs (environment): CASES [100000], SEED [the test's default, printed], PROFILE [dev|release].
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
CASES=${CASES:-100000}
SEED=${SEED:-}
PROFILE=${PROFILE:-dev}
for a in "$@"; do
    case $a in
        -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done
case $PROFILE in
    dev) PROFILE_FLAGS=() ;;
    release) PROFILE_FLAGS=(--release) ;;
    *) echo "PROFILE must be dev or release, not $PROFILE" >&2; exit 2 ;;
esac

need_root fuzz-offsets.sh "the emulation mounts FUSE; the kernel side creates time namespaces"

# The test's state directory (and so its daemon's --state-dir) lands under WORK (TMPDIR), so
# that an interrupted run's daemon can be found and ended here by pid.
WORK=$(mktemp -d /tmp/tfz.XXXXXX)   # short: the control socket path must fit in sun_path
LOG=$WORK/test.log

# Ends every timensfs whose --state-dir is under WORK (by pid, checked against its command
# line: the test ends its own daemon unless it was interrupted), then removes WORK.
cleanup() {
    local rc=$? d pid i args
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        mapfile -d '' args <"$d/cmdline" 2>/dev/null || continue
        [ "${#args[@]}" -gt 2 ] && [ "${args[0]##*/}" = timensfs ] || continue
        for ((i = 1; i < ${#args[@]} - 1; i++)); do
            if [ "${args[i]}" = --state-dir ] && [[ ${args[i + 1]} == "$WORK"/* ]]; then
                kill "$pid" 2>/dev/null || true
                for _ in $(seq 40); do [ -d "$d" ] || break; sleep 0.05; done
                kill -9 "$pid" 2>/dev/null || true
            fi
        done
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$ROOT"
log "building (profile $PROFILE)..."
cargo build -q "${PROFILE_FLAGS[@]}" -p timens-cli -p timensfs -p timens-preload -p timensfs-tests
cargo test -q "${PROFILE_FLAGS[@]}" -p timensfs-tests --test offsets_fuzz --no-run 2>/dev/null

log "running $CASES cases..."
start=$(date +%s%N)
rc=0
env TMPDIR="$WORK" TIMENS_FUZZ_CASES="$CASES" ${SEED:+TIMENS_FUZZ_SEED="$SEED"} \
    cargo test -q "${PROFILE_FLAGS[@]}" -p timensfs-tests --test offsets_fuzz -- --nocapture \
    >"$LOG" 2>&1 || rc=$?
end=$(date +%s%N)

grep -E '^(offsets_fuzz:|SKIP )' "$LOG" || true
awk -v ns=$((end - start)) -v p="$PROFILE" \
    'BEGIN { printf "offsets_fuzz: wall time with cargo test: %.1f s (profile %s)\n", ns / 1e9, p }'
if [ "$rc" != 0 ]; then
    # The failure report: each difference shrunk, both records, how to run it again.
    sed -n '/panicked at/,/^stack backtrace/p' "$LOG" | grep -v '^stack backtrace' | head -120
fi
exit "$rc"
