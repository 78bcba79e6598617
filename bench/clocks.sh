#!/usr/bin/env bash
# Clock-read and exec cost inside a timensfs sandbox (with the clock library), side by side with
# the host, the kernel's own time namespace and libfaketime, in one run.
# Usage: sudo bench/clocks.sh      (see bench/README.md)
# Knobs (environment): CALLS REPS EXECS RAW_DIR.
# shellcheck disable=SC2059  # the table format is a variable (one place for the layout)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BIN=$ROOT/target/release
CALLS=${CALLS:-10000000}       # clock_gettime calls per clock per repetition
REPS=${REPS:-5}                # repetitions; the figure is the median of the repetitions
EXECS=${EXECS:-400}            # timed fork+exec+wait of /bin/true per repetition
RAW_DIR=${RAW_DIR:-$ROOT/target/bench}   # where the raw numbers are kept (not removed)
MONO=3600                      # the sandboxes' offsets (kernel timens and timensfs)
BOOT=86400
FAKETIME_SPEC=+1d              # libfaketime's offset (it has no per-clock offsets)
FAKETIME_LIB=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
for a in "$@"; do
    case $a in
        -h | --help) sed -n '2,5p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done

need_root clocks.sh "timens run creates mount namespaces; unshare -T needs CAP_SYS_ADMIN"
NCPU=$(nproc)
ALLCPUS="0-$((NCPU - 1))"

WORK=$(mktemp -d /tmp/timensfs-clocks.XXXXXX)
SD=$WORK/state           # the daemon's own state dir: never the system's /run/timensfs
DAEMON_PID=""
NOTES=()


# Stops the daemon this script started, by pid, and removes the temp dir.
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    stop_daemon "$rc"
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- build
log "building release binaries..."
(cd "$ROOT" && cargo build --release --quiet --workspace)
for b in timens timensfs libtimens_preload.so; do
    [ -e "$BIN/$b" ] || { log "missing $BIN/$b"; exit 1; }
done
command -v cc >/dev/null || { log "clocks.sh needs a C compiler (cc)"; exit 1; }
command -v taskset >/dev/null || { log "clocks.sh needs taskset (util-linux)"; exit 1; }

# ---------------------------------------------------------------- the measuring programs (C)
# clockbench CALLS: ns per clock_gettime() call (through libc's exported symbol, so LD_PRELOAD
# and ld.so.preload libraries see it), for MONOTONIC, REALTIME and BOOTTIME, after CALLS/10
# untimed calls of each. The loop is timed as a whole with CLOCK_MONOTONIC_RAW (two reads;
# a constant offset added by a library cancels out).
# clockbench --probe: the current value of each clock, for the offset check.
cat >"$WORK/clockbench.c" <<'EOF'
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_RAW, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static volatile long sink;

static double per_call(clockid_t c, long n) {
    struct timespec ts;
    long acc = 0;
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        clock_gettime(c, &ts);
        acc += ts.tv_nsec;
    }
    double t1 = now_ns();
    sink = acc;
    return (t1 - t0) / n;
}

int main(int argc, char **argv) {
    static const clockid_t ids[] = {CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME};
    static const char *names[] = {"MONOTONIC", "REALTIME", "BOOTTIME"};
    if (argc == 2 && strcmp(argv[1], "--probe") == 0) {
        for (int i = 0; i < 3; i++) {
            struct timespec ts;
            if (clock_gettime(ids[i], &ts) != 0) { perror("clock_gettime"); return 1; }
            printf("%s%s=%lld.%09ld", i ? " " : "", names[i], (long long)ts.tv_sec, ts.tv_nsec);
        }
        printf("\n");
        return 0;
    }
    if (argc != 2 || atol(argv[1]) <= 0) {
        fprintf(stderr, "usage: clockbench CALLS | clockbench --probe\n");
        return 2;
    }
    long n = atol(argv[1]);
    for (int i = 0; i < 3; i++) per_call(ids[i], n / 10);
    for (int i = 0; i < 3; i++) printf("%s%s=%.2f", i ? " " : "", names[i], per_call(ids[i], n));
    printf("\n");
    return 0;
}
EOF
# execbench N [IN OUT]: N fork + execv("/bin/true") + waitpid, each timed on its own (after
# N/10 untimed ones); prints the median and the 10th/90th percentiles in microseconds. With IN
# and OUT (FIFOs) it takes turns: before each exec it waits for a byte on IN, after it writes
# one to OUT. The columns' execbenches form a ring and run one exec each in turn, so this VM's
# swings between fast and slow exec phases (~600 vs ~800 us, lasting seconds) hit every column
# alike instead of whichever column ran at the time.
cat >"$WORK/execbench.c" <<'EOF'
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int in_fd = -1, out_fd = -1;

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_RAW, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int take_turn(void) {
    if (in_fd < 0) return 0;
    struct pollfd p = {in_fd, POLLIN, 0};
    char c;
    if (poll(&p, 1, 60000) != 1 || read(in_fd, &c, 1) != 1) {
        fprintf(stderr, "execbench: no turn within 60 s (another column failed?)\n");
        return -1;
    }
    return 0;
}

static void pass_turn(void) {
    if (out_fd >= 0 && write(out_fd, "x", 1) != 1) perror("execbench: write");
}

static int one(double *us) {
    char *args[] = {"/bin/true", NULL};
    if (take_turn()) return -1;
    double t0 = now_us();
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return -1; }
    if (pid == 0) { execv(args[0], args); _exit(127); }
    int st;
    if (waitpid(pid, &st, 0) != pid) { perror("waitpid"); return -1; }
    *us = now_us() - t0;
    pass_turn();
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "execbench: /bin/true ended with wait status %d\n", st);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    long n = argc >= 2 ? atol(argv[1]) : 0;
    if (n <= 0 || (argc != 2 && argc != 4)) {
        fprintf(stderr, "usage: execbench N [IN OUT]\n");
        return 2;
    }
    if (argc == 4) {
        /* O_RDWR: opening a FIFO so never blocks, whatever the other ends do. */
        in_fd = open(argv[2], O_RDWR | O_CLOEXEC);
        out_fd = open(argv[3], O_RDWR | O_CLOEXEC);
        if (in_fd < 0 || out_fd < 0) { perror("execbench: open"); return 1; }
    }
    double *v = calloc(n, sizeof *v), d;
    if (!v) return 1;
    for (long i = 0; i < n / 10 + 1; i++) if (one(&d)) return 1;
    for (long i = 0; i < n; i++) if (one(&v[i])) return 1;
    qsort(v, n, sizeof *v, cmp);
    double med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    printf("median_us=%.1f p10_us=%.1f p90_us=%.1f n=%ld\n", med, v[n / 10], v[n * 9 / 10], n);
    return 0;
}
EOF
cc -O2 -Wall -o "$WORK/clockbench" "$WORK/clockbench.c"
cc -O2 -Wall -o "$WORK/execbench" "$WORK/execbench.c"

# ---------------------------------------------------------------- daemon
start_daemon

PIN=()                    # prefix for the reader: () unpinned, (taskset -c 0) pinned

# ---------------------------------------------------------------- the columns
# Each column runs PROG ARGS... its own way (under the reader's pinning).
COLS=(native)
run_native() { "${PIN[@]}" "$@"; }
run_kernel() { "${PIN[@]}" unshare -T --monotonic "$MONO" --boottime "$BOOT" "$@"; }
run_faketime() { "${PIN[@]}" env LD_PRELOAD="$FAKETIME_LIB" FAKETIME="$FAKETIME_SPEC" "$@"; }
run_timensfs() {
    "${PIN[@]}" "$BIN/timens" run --state-dir "$SD" --monotonic "$MONO" --boottime "$BOOT" -- "$@"
}

if err=$(unshare -T --monotonic "$MONO" --boottime "$BOOT" true 2>&1); then
    COLS+=(kernel)
else
    NOTES+=("kernel timens column skipped: unshare -T failed (needs root and CONFIG_TIME_NS): ${err:-no message}")
fi

if [ ! -f "$FAKETIME_LIB" ]; then
    log "installing faketime libfaketime..."
    apt-get install -y -qq faketime libfaketime >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq faketime libfaketime >/dev/null 2>&1; } || true
fi
FAKETIME_VERSION=$(dpkg-query -W -f='${Version}' libfaketime 2>/dev/null || true)
if [ -f "$FAKETIME_LIB" ] && run_faketime true; then
    COLS+=(faketime)
else
    NOTES+=("libfaketime column skipped: $FAKETIME_LIB missing and apt-get install faketime libfaketime failed")
fi

# The sandbox works and has the clock library (fail early rather than in the middle of the table).
if ! maps=$(run_timensfs grep -c libtimens_preload /proc/self/maps); then
    log "timens run failed"
    exit 1
fi
if [ "${maps:-0}" -lt 1 ]; then
    log "a sandbox process does not map libtimens_preload.so: the clock library is not loaded"
    exit 1
fi
COLS+=(timensfs)

# What each column's clocks say, minus the host's (read just before): checks that every column
# measured clocks that are really shifted.
OFFSETS=()
for c in "${COLS[@]}"; do
    [ "$c" = native ] && continue
    h0=$("$WORK/clockbench" --probe)
    p=$("run_$c" "$WORK/clockbench" --probe)
    OFFSETS+=("$c: $(awk -v h="$h0" -v p="$p" 'BEGIN {
        n = split(h, hv, " "); split(p, pv, " ")
        for (i = 1; i <= n; i++) {
            split(hv[i], a, "="); split(pv[i], b, "=")
            printf "%s%s %+.0f s", (i > 1 ? ", " : ""), a[1], b[2] - a[2]
        }
    }')")
done

# ---------------------------------------------------------------- helpers
RAW=()                        # every raw line, also written to the raw file
declare -A VALS=()            # "mode:column:metric" -> space-separated values, one per rep

set_mode() { # pinned|unpinned: the reader prefix and the daemon's affinity (all threads)
    local cpus
    if [ "$1" = pinned ]; then PIN=(taskset -c 0); cpus=0; else PIN=(); cpus=$ALLCPUS; fi
    pin_all "$cpus" "$DAEMON_PID"
}

field() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

add() { VALS[$1]="${VALS[$1]:-}${VALS[$1]:+ }$2"; }

med_of() { # KEY -> median of its values, or - when the column was not measured
    local k=$1
    if [ -z "${VALS[$k]:-}" ]; then echo -; return; fi
    # shellcheck disable=SC2086
    median ${VALS[$k]}
}

run_libhost() { "${PIN[@]}" env LD_PRELOAD="$BIN/libtimens_preload.so" "$@"; }

# exec_ring REP: one execbench per column (and the library on the host), each started its own
# way and linked in a ring of FIFOs, so that they take one exec each in turn; outputs in
# $WORK/ring/COLUMN.out. Exits 1 if any of them fails. An exec runs right after the previous
# column's (whose traces it finds in the caches): even repetitions go round the other way, so
# no column always follows the same one.
exec_ring() {
    local ring=() n i pids=() rc=0
    for c in "${COLS[@]}" libhost; do
        if (($1 % 2)); then ring+=("$c"); else ring=("$c" "${ring[@]}"); fi
    done
    n=${#ring[@]}
    rm -rf "$WORK/ring"
    mkdir -p "$WORK/ring"
    for ((i = 0; i < n; i++)); do mkfifo "$WORK/ring/turn$i"; done
    for ((i = 0; i < n; i++)); do
        "run_${ring[i]}" "$WORK/execbench" "$EXECS" "$WORK/ring/turn$i" \
            "$WORK/ring/turn$(((i + 1) % n))" >"$WORK/ring/${ring[i]}.out" &
        pids+=($!)
    done
    printf x >"$WORK/ring/turn0"
    for i in "${pids[@]}"; do wait "$i" || rc=1; done
    if [ "$rc" != 0 ]; then
        log "an execbench of the ring failed"
        exit 1
    fi
}

# ---------------------------------------------------------------- the runs
# Repetitions go round the columns (native, kernel, libfaketime, timensfs, native, ...) so a
# slow drift of the machine affects every column alike.
for MODE in pinned unpinned; do
    set_mode "$MODE"
    for rep in $(seq "$REPS"); do
        log "[$MODE] rep $rep/$REPS: clock_gettime x $CALLS per clock"
        for c in "${COLS[@]}"; do
            out=$("run_$c" "$WORK/clockbench" "$CALLS")
            RAW+=("$MODE rep$rep clocks $c: $out")
            for k in MONOTONIC REALTIME BOOTTIME; do add "$MODE:$c:$k" "$(field "$k" "$out")"; done
        done
        log "[$MODE] rep $rep/$REPS: fork+exec+wait /bin/true x $EXECS, the columns in turn"
        exec_ring "$rep"
        for c in "${COLS[@]}"; do
            out=$(cat "$WORK/ring/$c.out")
            RAW+=("$MODE rep$rep exec $c: $out")
            add "$MODE:$c:exec" "$(field median_us "$out")"
        done
        # Where the exec cost comes from: the library loaded on the host (no store, no FUSE).
        out=$(cat "$WORK/ring/libhost.out")
        RAW+=("$MODE rep$rep exec host+LD_PRELOAD=libtimens_preload.so: $out")
        add "$MODE:libhost:exec" "$(field median_us "$out")"
    done
done

# ---------------------------------------------------------------- report
verdict() { # RATIO TARGET -> PASS|MISS (+ by how much)
    if [ "$2" = - ]; then echo "(info)"; return; fi
    awk -v r="$1" -v t="${2#<= }" 'BEGIN {
        if (r <= t) print "PASS"; else printf "MISS (%.0f%% over)\n", (r / t - 1) * 100 }'
}
mkdir -p "$RAW_DIR"
RAW_FILE=$RAW_DIR/clocks-$(date -u +%Y%m%dT%H%M%SZ).txt
{
    echo "# bench/clocks.sh raw numbers, $(date -u +%FT%TZ), $(uname -r), $NCPU CPUs"
    echo "# clocks: ns per clock_gettime call (one value per clock and rep); exec: fork+exec+wait of /bin/true, us"
    for r in "${RAW[@]}"; do echo "$r"; done
} >"$RAW_FILE"

echo
echo "timensfs clock benchmark  $(date -u +%FT%TZ)  $(uname -r)  $NCPU CPUs  ${FAKETIME_VERSION:+libfaketime $FAKETIME_VERSION}"
echo "medians of $REPS reps (exec: the columns take one exec each in turn); native = host; kernel = unshare -T --monotonic $MONO --boottime $BOOT;"
echo "libfaketime = LD_PRELOAD=libfaketime.so.1 FAKETIME=$FAKETIME_SPEC; timensfs = timens run --monotonic $MONO --boottime $BOOT (clock library via ld.so.preload)"
echo "pinned: program and timensfs (all threads) on CPU 0; unpinned: all on CPUs $ALLCPUS"
echo
fmt='%-9s %-28s %-7s %9s %9s %11s %9s  %-11s %6s  %-7s %s\n'
printf "$fmt" mode what unit native kernel libfaketime timensfs ratio value target verdict
printf "$fmt" --------- ---------------------------- ------- --------- --------- ----------- --------- ----------- ------ ------- -------
for MODE in pinned unpinned; do
    for m in MONOTONIC:"<= 1.15" REALTIME:"<= 1.05" BOOTTIME:- exec:"<= 1.20"; do
        k=${m%%:*}
        target=${m#*:}
        if [ "$k" = exec ]; then what="fork+exec+wait /bin/true"; unit=us; else what="clock_gettime($k)"; unit=ns/call; fi
        n=$(med_of "$MODE:native:$k")
        kn=$(med_of "$MODE:kernel:$k")
        f=$(med_of "$MODE:faketime:$k")
        t=$(med_of "$MODE:timensfs:$k")
        ratio=$(awk -v a="$t" -v b="$n" 'BEGIN { printf "%.2f", a / b }')
        printf "$fmt" "$MODE" "$what" "$unit" "$n" "$kn" "$f" "$t" "tfs/native" "$ratio" "$target" "$(verdict "$ratio" "$target")"
    done
    t=$(med_of "$MODE:libhost:exec")
    ratio=$(awk -v a="$t" -v b="$n" 'BEGIN { printf "%.2f", a / b }')
    printf "$fmt" "$MODE" "  same, library on host (*)" us "$n" - - "$t" "lib/native" "$ratio" - "(info)"
done
echo
echo "(*) LD_PRELOAD=libtimens_preload.so outside any sandbox: the library's load and init without"
echo "    the offset store and without the FUSE readlink of /proc/self/ns/time"
echo "note: clocks seen in each column minus the host's (read just before):"
for o in "${OFFSETS[@]}"; do echo "  $o"; done
for n in "${NOTES[@]}"; do echo "note: $n"; done
echo
echo "raw numbers (every rep of every column): $RAW_FILE"
