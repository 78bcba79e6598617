# Shared helpers of the bats suite (see README.md in this directory).
#
# Every test gets a state directory of its own ($STATE, made by mktemp -d), so every test has
# its own timensfs daemon. teardown (which bats runs also when a test fails) ends, by pid only:
# the background processes the test started (recorded with `bg_start`/`track_pid`), then every
# daemon that served $STATE (pid file, verified against /proc/PID/cmdline), SIGTERM first and
# SIGKILL after 2 s; then it removes $STATE.

if declare -F bats_require_minimum_version >/dev/null; then
	bats_require_minimum_version 1.5.0 # run --separate-stderr, run -N
fi

REPO_ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
TIMENS=${TIMENS_BIN:-$TARGET_DIR/debug/timens}
TIMENSFS=${TIMENSFS_BIN:-$TARGET_DIR/debug/timensfs}
# Where `timens run` looks for the clock library (mount-helper/src/preload.rs).
PRELOAD_LIB=${TIMENS_PRELOAD_LIB:-$(dirname "$TIMENS")/libtimens_preload.so}

# KTIME_SEC_MAX / 2: the largest host clock + offset the kernel accepts (spec E9).
HALF_KTIME_SEC_MAX=4611686018
# PROC_TIME_INIT_INO (spec G2).
INIT_TIME_INUM=4026531834

# Hang protection for one command (never a speed assertion).
HANG=20

setup() {
	STATE=$(mktemp -d "${BATS_TMPDIR:-/tmp}/timens-bats.XXXXXX")
	BG_PIDS=()
	BG_KILL_PIDS=()
	# State directories whose daemons teardown ends (a test may add one inside $STATE).
	STATE_DIRS=("$STATE")
}

teardown() {
	local pid dir
	# A pid namespace's init ignores SIGTERM without a handler, even from the host: SIGKILL.
	for pid in "${BG_KILL_PIDS[@]}"; do
		is_alive "$pid" && kill -KILL "$pid" 2>/dev/null
	done
	for pid in "${BG_PIDS[@]}"; do
		stop_pid "$pid"
		wait "$pid" 2>/dev/null || true
	done
	# Every live daemon of each directory, whether or not it wrote the pid file (one that lost
	# a start race did not; a killed daemon's successor overwrote it).
	for dir in "${STATE_DIRS[@]}"; do
		for pid in $(our_daemons "$dir"); do
			stop_pid "$pid"
		done
	done
	[ -n "${STATE:-}" ] && rm -rf -- "$STATE"
}

# requires WHAT...: skips the test, naming the reason, unless every precondition holds.
#   root           euid 0
#   fuse           /dev/fuse exists
#   timens_kernel  the kernel's own time namespaces (`unshare -T true`), the oracle
#   built          target/debug/timens and timensfs exist (cargo build --workspace)
#   preload        the clock library target/debug/libtimens_preload.so exists
#   tool:NAME      NAME is on PATH
#   sandbox        root fuse built (what every `timens run` needs)
requires() {
	local what
	for what in "$@"; do
		case $what in
		root)
			[ "$(id -u)" -eq 0 ] ||
				skip "requires root: timens run creates mount namespaces and serves FUSE"
			;;
		fuse)
			[ -c /dev/fuse ] || skip "requires fuse: /dev/fuse does not exist"
			;;
		timens_kernel)
			[ -e /proc/self/ns/time ] && unshare -T true 2>/dev/null ||
				skip "requires timens_kernel: 'unshare -T true' fails (no CONFIG_TIME_NS or no privilege)"
			;;
		built)
			[ -x "$TIMENS" ] || skip "timens not built: $TIMENS (cargo build --workspace)"
			[ -x "$TIMENSFS" ] || skip "timensfs not built: $TIMENSFS (cargo build --workspace)"
			;;
		preload)
			[ -f "$PRELOAD_LIB" ] || skip "clock library not built: $PRELOAD_LIB"
			;;
		tool:*)
			command -v "${what#tool:}" >/dev/null ||
				skip "requires ${what#tool:}: not on PATH"
			;;
		sandbox)
			requires root fuse built
			;;
		*)
			fail "requires: unknown precondition '$what'"
			;;
		esac
	done
}

# known_bug TEXT: a case that shows a product bug skips with "BUG: TEXT" (its body asserts the
# correct behaviour). TIMENS_BATS_RUN_BUGS=1 runs it anyway, to check a fix.
known_bug() {
	[ "${TIMENS_BATS_RUN_BUGS:-}" = 1 ] || skip "BUG: $*"
}

fail() {
	echo "FAIL: $*" >&2
	return 1
}

# ---------------------------------------------------------------------------------------------
# Processes.

# Whether PID exists and is not a zombie.
is_alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat:0:1}" != Z ] && [ "${stat:0:1}" != X ]
}

# SIGTERM, up to 2 s to exit, then SIGKILL and up to 2 s more. PID must be one this test
# started (or verified with is_our_daemon).
stop_pid() {
	local pid=$1 sig i
	for sig in TERM KILL; do
		is_alive "$pid" || return 0
		kill "-$sig" "$pid" 2>/dev/null || return 0
		for ((i = 0; i < 200; i++)); do
			is_alive "$pid" || return 0
			sleep 0.01
		done
	done
}

# Remembers a background process for teardown (SIGTERM, then SIGKILL).
track_pid() {
	BG_PIDS+=("$1")
}

# Remembers a process teardown ends with SIGKILL at once (a sandbox's pid 1 under --pid).
track_pid_kill() {
	BG_KILL_PIDS+=("$1")
}

# bg_start OUTFILE CMD...: starts CMD in the background (stdin /dev/null, stdout and stderr to
# OUTFILE, bats' fd 3 closed so bats never waits for it), tracks it and sets BG_PID.
bg_start() {
	local out=$1
	shift
	"$@" </dev/null >"$out" 2>&1 3>&- &
	BG_PID=$!
	track_pid "$BG_PID"
}

# wait_exit PID: sets EXIT_STATUS to the exit status of a background child of this test,
# waiting at most $HANG s (hang protection); fails if it is still running then. Not in $(...):
# only this shell can wait for its children.
wait_exit() {
	local i
	for ((i = 0; i < HANG * 20; i++)); do
		is_alive "$1" || break
		sleep 0.05
	done
	if is_alive "$1"; then
		echo "pid $1 still running after $HANG s" >&2
		return 1
	fi
	EXIT_STATUS=0
	wait "$1" || EXIT_STATUS=$?
}

# The pid in DIR/timensfs.pid (DIR: $STATE by default), or failure.
daemon_pid() {
	local pid
	pid=$(cat "${1:-$STATE}/timensfs.pid" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	echo "$pid"
}

# is_our_daemon PID [DIR]: whether PID is a live timensfs serving DIR ($STATE by default): a
# killed daemon's pid may have been reused, and such a pid must never be signalled.
is_our_daemon() {
	local pid=$1 dir=${2:-$STATE} args
	is_alive "$pid" || return 1
	mapfile -d '' -t args <"/proc/$pid/cmdline" 2>/dev/null || return 1
	[ "${args[0]##*/}" = timensfs ] || return 1
	local i
	for ((i = 1; i + 1 < ${#args[@]}; i++)); do
		[ "${args[i]}" = --state-dir ] && [ "${args[i + 1]}" = "$dir" ] && return 0
	done
	return 1
}

# our_daemons [DIR]: the pids of every live timensfs serving DIR ($STATE by default), whether
# or not it wrote the pid file.
our_daemons() {
	local d pid
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		is_our_daemon "$pid" "${1:-$STATE}" && echo "$pid"
	done
	return 0
}

# wait_for SECONDS CMD...: polls CMD every 50 ms until it succeeds; fails after SECONDS.
wait_for() {
	local secs=$1 i
	shift
	for ((i = 0; i < secs * 20; i++)); do
		"$@" && return 0
		sleep 0.05
	done
	"$@"
}

# ---------------------------------------------------------------------------------------------
# Running things.

# tns ARGS...: `timens ARGS` with $STATE as the state directory is the caller's job; this is
# the binary with hang protection.
tns() {
	timeout -k 2 "$HANG" "$TIMENS" "$@"
}

# trun [OPTS...] -- CMD...: `timens run --state-dir $STATE OPTS -- CMD`, hang-protected.
trun() {
	timeout -k 2 "$HANG" "$TIMENS" run --state-dir "$STATE" "$@"
}

# tstatus [--json]: `timens status` of this test's daemon.
tstatus() {
	tns status --state-dir "$STATE" "$@"
}

# A background sandbox: bg_sandbox OUTFILE [OPTS...] -- CMD...; sets BG_PID (the `timens`
# process: CMD itself without --pid, the relay with --pid).
bg_sandbox() {
	local out=$1
	shift
	bg_start "$out" "$TIMENS" run --state-dir "$STATE" "$@"
}

# wait_line FILE PATTERN: waits (hang protection) until a line of FILE matches PATTERN (grep -E).
wait_line() {
	wait_for "$HANG" grep -qE -- "$2" "$1" || {
		echo "no line matching '$2' in $1:" >&2
		cat "$1" >&2
		return 1
	}
}

# The only child of PID (the sandbox's pid 1 under a --pid relay), waiting for it to appear.
only_child() {
	local i kids
	for ((i = 0; i < HANG * 20; i++)); do
		read -r -a kids <"/proc/$1/task/$1/children" || true
		if [ "${#kids[@]}" -eq 1 ]; then
			echo "${kids[0]}"
			return 0
		fi
		sleep 0.05
	done
	echo "pid $1 has children '${kids[*]}', expected one" >&2
	return 1
}

# ---------------------------------------------------------------------------------------------
# Numbers and /proc content.

# The first field of /proc/uptime (or of the given text), in seconds.
uptime_of() {
	local up _
	read -r up _ <<<"$1"
	echo "$up"
}

host_uptime() {
	local up _
	read -r up _ </proc/uptime
	echo "$up"
}

# btime of /proc/stat content.
btime_of() {
	awk '$1 == "btime" { print $2 }' <<<"$1"
}

# Field N (as in proc(5)) of a /proc/PID/stat line; comm may contain spaces.
stat_field() {
	local rest=${1##*) }
	local -a f
	read -r -a f <<<"$rest"
	echo "${f[$(($2 - 3))]}"
}

# between LOW VALUE HIGH: LOW <= VALUE <= HIGH for decimal numbers; prints why not.
between() {
	awk -v lo="$1" -v v="$2" -v hi="$3" 'BEGIN { exit !(lo + 0 <= v + 0 && v + 0 <= hi + 0) }' || {
		echo "expected $1 <= $2 <= $3" >&2
		return 1
	}
}

# add A B (decimal).
add() {
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.9f\n", a + b }'
}

# The kernel's rendering of /proc/PID/timens_offsets (spec D2).
offsets_text() {
	printf '%-10s %10s %9s\n' monotonic "$1" "$2" boottime "$3" "$4"
}

# The host's clock (monotonic or boottime) in whole seconds: boottime from /proc/uptime,
# monotonic from /proc/timer_list (root), else python3.
host_clock_sec() {
	local up _ now
	case $1 in
	boottime)
		read -r up _ </proc/uptime
		echo "${up%.*}"
		;;
	monotonic)
		now=$(awk '/^now at/ { printf "%d\n", $3 / 1e9; exit }' /proc/timer_list 2>/dev/null)
		[ -n "$now" ] || now=$(python3 -c 'import time; print(int(time.monotonic()))')
		echo "$now"
		;;
	*) fail "host_clock_sec: unknown clock $1" ;;
	esac
}

# Number of FUSE mounts in a mountinfo file that are the overlay (fuse.timensfs).
overlay_mounts() {
	grep -c ' - fuse\.timensfs ' "$1" || true
}

# assert_eq GOT WANT [WHAT]
assert_eq() {
	if [ "$1" != "$2" ]; then
		{
			echo "${3:-values differ}"
			echo "  got:  $(printf '%q' "$1")"
			echo "  want: $(printf '%q' "$2")"
		} >&2
		return 1
	fi
}

# assert_contains HAYSTACK NEEDLE [WHAT]
assert_contains() {
	if [[ $1 != *"$2"* ]]; then
		{
			echo "${3:-missing text}: '$2' not in:"
			echo "$1"
		} >&2
		return 1
	fi
}

# The host's /etc/ld.so.preload before the suite ran: "absent" or its checksum.
host_preload_state() {
	if [ -e /etc/ld.so.preload ]; then
		sha256sum /etc/ld.so.preload | cut -d' ' -f1
	else
		echo absent
	fi
}
