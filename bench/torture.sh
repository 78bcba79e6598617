#!/usr/bin/env bash
# The daemon under concurrent namespace churn, long form: tests/tests/torture.rs (which CI runs
# for 20 s) for SECS seconds, then its figures: operations per worker and errors by kind, in the
# emulation and in the kernel's own time namespaces side by side, and any task the D-state
# watchdog caught. Also the writer/forker race (race-write-fork) and the issue's four
# `unshare -T` loops in two sandboxes, with their own larger counts.
# Usage: sudo bench/torture.sh      (see bench/README.md)
# Knobs (environment): SECS [600], SANDBOXES [4], RACE_ROUNDS [100000], UNSHARE_RUNS [1500],
# PROFILE [release|dev].
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
SECS=${SECS:-600}
SANDBOXES=${SANDBOXES:-4}
RACE_ROUNDS=${RACE_ROUNDS:-100000}
UNSHARE_RUNS=${UNSHARE_RUNS:-1500}
PROFILE=${PROFILE:-release}
for a in "$@"; do
    case $a in
        -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done
case $PROFILE in
    dev) PROFILE_FLAGS=() ;;
    release) PROFILE_FLAGS=(--release) ;;
    *) echo "PROFILE must be dev or release, not $PROFILE" >&2; exit 2 ;;
esac

need_root torture.sh "sandboxes mount FUSE; the kernel side creates time namespaces"

cd "$ROOT"
cargo build "${PROFILE_FLAGS[@]}" --workspace >&2
# Each test starts its own daemon in a state directory of its own and ends it (also on failure);
# the watchdog aborts the test's own FUSE connections if anything gets stuck.
TIMENS_TORTURE_SECS=$SECS TIMENS_TORTURE_SANDBOXES=$SANDBOXES TIMENS_RACE_ROUNDS=$RACE_ROUNDS \
    TIMENS_UNSHARE_RUNS=$UNSHARE_RUNS \
    cargo test "${PROFILE_FLAGS[@]}" -p timensfs-tests --test torture -- --nocapture \
    --test-threads 1 2>&1 | grep -E 'race-write-fork,|four unshare|torture,|^  |test result|tasks stuck|errors the'
