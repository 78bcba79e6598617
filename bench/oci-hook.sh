#!/usr/bin/env bash
# What the OCI hook (timens oci-hook, createContainer + poststop) adds to a runc container's
# start: `runc run` of /bin/true in a busybox bundle, with and without the hook, in one run.
# Usage: sudo bench/oci-hook.sh      (see bench/README.md)
# Knobs (environment): RUNS WARMUP RAW_DIR.
# shellcheck disable=SC2059  # the table format is a variable (one place for the layout)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BIN=$ROOT/target/release
RUNS=${RUNS:-20}               # timed `runc run` per variant and mode
WARMUP=${WARMUP:-2}            # untimed runs per variant and mode, first
RAW_DIR=${RAW_DIR:-$ROOT/target/bench}   # where the raw numbers are kept (not removed)
TARGET_MS=50                   # the hook may add at most this much to a container's start
for a in "$@"; do
    case $a in
        -h | --help) sed -n '2,5p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done

need_root oci-hook.sh "runc, FUSE mounts"
NCPU=$(nproc)
ALLCPUS="0-$((NCPU - 1))"

WORK=$(mktemp -d /tmp/timensfs-oci.XXXXXX)
SD=$WORK/state           # the daemon's own state dir: never the system's /run/timensfs
DAEMON_PID=""
IDS=()                   # every container id this script used (runc delete -f in cleanup)
PREFIX=timensfs-bench-$$
NOTES=()


mounts_under() { awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo; }

# Deletes the containers, stops the daemon this script started (by pid), removes the temp dir.
cleanup() {
    local rc=$? id m
    trap - EXIT INT TERM
    set +e
    for id in "${IDS[@]}"; do
        if runc state "$id" >/dev/null 2>&1; then runc delete -f "$id" >/dev/null 2>&1; fi
    done
    stop_daemon "$rc"
    # Nothing should be mounted under WORK on the host (the hook mounts inside the container's
    # mount namespace); never remove a directory that still has a mount.
    for m in $(mounts_under "$WORK" | sort -r); do umount -l "$m"; done
    [ -z "$(mounts_under "$WORK")" ] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools and build
if ! command -v runc >/dev/null || ! command -v busybox >/dev/null; then
    log "installing runc busybox-static..."
    apt-get install -y -qq runc busybox-static >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq runc busybox-static >/dev/null 2>&1; } || true
fi
for t in runc busybox jq taskset; do
    command -v "$t" >/dev/null || { log "oci-hook.sh needs $t"; exit 1; }
done
BUSYBOX=$(command -v busybox)
if command -v file >/dev/null && ! LC_ALL=C file -L "$BUSYBOX" | grep -q 'statically linked'; then
    log "$BUSYBOX is not statically linked (the rootfs has no libc): apt-get install busybox-static"
    exit 1
fi
log "building release binaries..."
(cd "$ROOT" && cargo build --release --quiet --workspace)
for b in timens timensfs; do
    [ -x "$BIN/$b" ] || { log "missing $BIN/$b"; exit 1; }
done

# ---------------------------------------------------------------- bundles
# As tests/tests/oci_runc.rs builds them: a busybox rootfs, `runc spec`, terminal off, the
# command, the annotations and the hooks (createContainer + poststop, both `timens oci-hook`).
# bundle NAME HOOKS(yes|no) ANNOTATIONS-JSON ARGS-JSON
bundle() {
    local dir=$WORK/$1 hooks=$2 ann=$3 args=$4 a
    mkdir -p "$dir/rootfs"/{bin,proc,etc,dev,sys,tmp}
    cp "$BUSYBOX" "$dir/rootfs/bin/busybox"
    for a in sh cat true readlink; do ln -s busybox "$dir/rootfs/bin/$a"; done
    (cd "$dir" && runc spec)
    jq --arg timens "$BIN/timens" --arg sd "$SD" --argjson hooks "$([ "$hooks" = yes ] && echo true || echo false)" \
        --argjson ann "$ann" --argjson args "$args" '
        .process.terminal = false
        | .process.args = $args
        | .annotations = $ann
        | if $hooks then
            .hooks = { createContainer: [ { path: $timens, args: ["timens", "oci-hook", "--state-dir", $sd], timeout: 10 } ],
                       poststop:        [ { path: $timens, args: ["timens", "oci-hook", "--state-dir", $sd], timeout: 10 } ] }
          else del(.hooks) end' "$dir/config.json" >"$dir/config.json.new"
    mv "$dir/config.json.new" "$dir/config.json"
}
ANN='{"io.timensfs.boottime": "86400"}'
bundle hook yes "$ANN" '["/bin/true"]'            # the hook, annotated: a namespace is made
bundle plain no "$ANN" '["/bin/true"]'            # the same container, no hooks
bundle noann yes '{}' '["/bin/true"]'             # the hook configured, no annotation (a no-op)
bundle check yes "$ANN" '["sh", "-c", "cat /proc/self/timens_offsets; cat /proc/uptime"]'

# ---------------------------------------------------------------- daemon
start_daemon

fuse_mounts() { grep -c 'fuse\.timensfs' /proc/self/mountinfo || true; }
FUSE_BEFORE=$(fuse_mounts)

# ---------------------------------------------------------------- helpers
PIN=()                    # prefix for runc: () unpinned, (taskset -c 0) pinned
N=0                       # container counter (unique ids)
RAW=()
declare -A VALS=()        # "mode:variant" -> space-separated ms values

set_mode() { # pinned|unpinned: runc (and so the container and the hook) and the daemon's threads
    local cpus
    if [ "$1" = pinned ]; then PIN=(taskset -c 0); cpus=0; else PIN=(); cpus=$ALLCPUS; fi
    pin_all "$cpus" "$DAEMON_PID"
}

# run_one VARIANT: one `runc run` with a fresh id; its wall time (ms) in $R, output in $OUT
run_one() {
    local id t0 t1 rc=0
    N=$((N + 1))
    id=$PREFIX-$1-$N
    IDS+=("$id")
    t0=$EPOCHREALTIME
    OUT=$(cd "$WORK/$1" && "${PIN[@]}" runc run "$id" </dev/null 2>&1) || rc=$?
    t1=$EPOCHREALTIME
    if [ "$rc" != 0 ]; then
        log "runc run $id ($1) failed with status $rc: $OUT"
        exit 1
    fi
    R=$(awk -v a="${t0/,/.}" -v b="${t1/,/.}" 'BEGIN { printf "%.2f", (b - a) * 1000 }')
}

# ---------------------------------------------------------------- the hook works
run_one check
if ! grep -q '^boottime *86400 *0$' <<<"$OUT"; then
    log "the hooked container does not see its namespace: $OUT"
    exit 1
fi
host_up=$(cut -d' ' -f1 /proc/uptime)
NOTES+=("check container (hook, io.timensfs.boottime=86400): $(tr '\n' ' ' <<<"$OUT")(host uptime $host_up)")

# ---------------------------------------------------------------- the runs
# Variants alternate (hook, plain, noann, hook, ...) so a drift of the machine affects all alike.
VARIANTS=(hook plain noann)
for MODE in pinned unpinned; do
    set_mode "$MODE"
    log "[$MODE] $WARMUP untimed + $RUNS timed runc run per variant"
    for _ in $(seq "$WARMUP"); do
        for v in "${VARIANTS[@]}"; do run_one "$v"; done
    done
    for i in $(seq "$RUNS"); do
        for v in "${VARIANTS[@]}"; do
            run_one "$v"
            RAW+=("$MODE $v run$i: $R ms")
            VALS[$MODE:$v]="${VALS[$MODE:$v]:-}${VALS[$MODE:$v]:+ }$R"
        done
    done
done

# Nothing left behind by the hook: no FUSE mount on the host, no namespace registered.
FUSE_AFTER=$(fuse_mounts)
LEFT=$("$BIN/timens" status --json --state-dir "$SD" | jq --arg p "oci:$PREFIX" '[.[] | select((.sandbox // "") | startswith($p))] | length' 2>/dev/null || echo "?")
NOTES+=("after $N containers: timensfs FUSE mounts on the host $FUSE_BEFORE before, $FUSE_AFTER after; namespaces still registered for them: $LEFT")

# ---------------------------------------------------------------- report
mkdir -p "$RAW_DIR"
RAW_FILE=$RAW_DIR/oci-hook-$(date -u +%Y%m%dT%H%M%SZ).txt
{
    echo "# bench/oci-hook.sh raw numbers, $(date -u +%FT%TZ), $(uname -r), $NCPU CPUs"
    echo "# wall time of one 'runc run ID' of /bin/true (create, start, exit, delete), ms"
    for r in "${RAW[@]}"; do echo "$r"; done
} >"$RAW_FILE"

verdict() { # DIFF-MS -> PASS|MISS
    awk -v d="$1" -v t="$TARGET_MS" 'BEGIN { if (d <= t) print "PASS"; else printf "MISS (%.0f ms over)\n", d - t }'
}
echo
echo "timensfs OCI hook benchmark  $(date -u +%FT%TZ)  $(uname -r)  $NCPU CPUs  $(runc --version | head -n 1)"
echo "median wall time of 'runc run' of /bin/true in a busybox bundle over $RUNS runs per cell (after $WARMUP untimed)"
echo "no hooks = the same bundle without hooks; hook = createContainer + poststop 'timens oci-hook';"
echo "annotated = io.timensfs.boottime=86400 (a namespace and the /proc overlay), not annotated = the hook exits at once"
echo "pinned: runc (so the hooks and the container) and timensfs (all threads) on CPU 0; unpinned: CPUs $ALLCPUS"
echo
fmt='%-9s %-14s %12s %12s %10s  %-10s %s\n'
printf "$fmt" mode "hook variant" "no hooks ms" "hook ms" "added ms" target verdict
printf "$fmt" --------- -------------- ------------ ------------ ---------- ---------- -------
for MODE in pinned unpinned; do
    # shellcheck disable=SC2086
    p=$(median ${VALS[$MODE:plain]})
    for v in hook noann; do
        # shellcheck disable=SC2086
        h=$(median ${VALS[$MODE:$v]})
        d=$(awk -v a="$h" -v b="$p" 'BEGIN { printf "%.2f", a - b }')
        if [ "$v" = hook ]; then what=annotated; else what="not annotated"; fi
        printf "$fmt" "$MODE" "$what" "$p" "$h" "$d" "<= $TARGET_MS ms" "$(verdict "$d")"
    done
done
echo
for n in "${NOTES[@]}"; do echo "note: $n"; done
echo
echo "raw numbers (every run): $RAW_FILE"
