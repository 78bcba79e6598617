#!/usr/bin/env bats
# Refused command lines: exactly one line on stderr naming the problem, exit 2, nothing on
# stdout, and nothing started (no daemon: no pid file or socket in the fresh state directory).

load helpers

# refused WORD... -- ARGS...: `timens ARGS` (with --state-dir $STATE appended to the
# subcommand) is refused as above, and its one stderr line contains each WORD.
refused() {
	local -a words=()
	while [ "$1" != -- ]; do
		words+=("$1")
		shift
	done
	shift
	local sub=$1
	shift
	run --separate-stderr timeout "$HANG" "$TIMENS" "$sub" --state-dir "$STATE" "$@"
	assert_eq "$status" 2 "exit status of timens $sub $*; stderr: $stderr"
	assert_eq "$output" "" "stdout"
	assert_eq "$(grep -c '' <<<"$stderr")" 1 "stderr must be one line: $stderr"
	local w
	for w in "${words[@]}"; do
		assert_contains "$stderr" "$w" "stderr does not name it"
	done
	[ ! -e "$STATE/timensfs.pid" ] && [ ! -e "$STATE/control.sock" ] ||
		fail "timens $sub $* started a daemon in $STATE"
	assert_eq "$(ls -A "$STATE")" "" "files created in the state directory"
}

@test "run --monotonic abc: one line, exit 2, no daemon" {
	requires built
	refused --monotonic abc -- run --monotonic abc -- true
}

@test "run --monotonic SECS.NANOS with 10 digits of nanoseconds: one line, exit 2, no daemon" {
	requires built
	refused --monotonic 1.0000000001 -- run --monotonic 1.0000000001 -- true
}

@test "run --boottime out of range (beyond KTIME_SEC_MAX): one line, exit 2, no daemon" {
	requires built
	refused --boottime -99999999999 range -- run --boottime -99999999999 -- true
}

@test "run --monotonic past the host clock limit (E9 step 3): one line, exit 2, no daemon" {
	requires built
	refused --monotonic "$HALF_KTIME_SEC_MAX" range -- run --monotonic "$HALF_KTIME_SEC_MAX" -- true
}

@test "run --boottime below minus the host's boottime: one line, exit 2, no daemon" {
	requires built
	local b
	b=$(host_clock_sec boottime)
	refused --boottime range -- run --boottime "-$((b + 100))" -- true
}

@test "run without CMD: one line, exit 2, no daemon (with and without --)" {
	requires built
	refused CMD -- run --monotonic 3600
	refused CMD -- run --monotonic 3600 --
}

@test "run with an unknown option: one line, exit 2, no daemon" {
	requires built
	refused --bogus -- run --bogus -- true
}

@test "status without a daemon: exit 1, one line, starts nothing" {
	requires built
	run --separate-stderr tstatus
	assert_eq "$status" 1 "exit status; stderr: $stderr"
	assert_eq "$(grep -c '' <<<"$stderr")" 1 "stderr: $stderr"
	assert_contains "$stderr" "$STATE"
	assert_eq "$(ls -A "$STATE")" "" "files created in the state directory"
}

@test "mount --pid of a process in this mount namespace: exit 2, one line, no daemon" {
	requires root built
	refused "--pid $$" "mount namespace" -- mount --pid $$ --boottime 5
}

@test "mount --pid of a process that does not exist: exit 2, one line, no daemon" {
	requires root built
	refused "--pid 4294967295" -- mount --pid 4294967295
}
