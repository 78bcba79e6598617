#!/usr/bin/env bats
# `timens status`, `timens mount --pid PID`, and recovery after `kill -9` of the daemon.

load helpers

# status_field INUM FIELD: FIELD of the namespace INUM in `timens status --json` (python
# expression on the entry `e`, e.g. "e['boottime']['sec']"); "absent" if INUM is not listed.
status_field() {
	tstatus --json | python3 -c '
import json, sys
inum, expr = int(sys.argv[1]), sys.argv[2]
for e in json.load(sys.stdin):
    if e["inum"] == inum:
        v = eval(expr)
        print(json.dumps(v) if not isinstance(v, str) else v)
        break
else:
    print("absent")' "$1" "$2"
}

# The number of namespaces `timens status --json` lists.
status_count() {
	tstatus --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))'
}

# inum_of "time:[N]" -> N
inum_of() {
	[[ $1 =~ ^time:\[([0-9]+)\]$ ]] || {
		echo "not a time namespace link: $1" >&2
		return 1
	}
	echo "${BASH_REMATCH[1]}"
}

# A process in a mount namespace of its own (`unshare -m --propagation slave sleep 300`), the
# target of `timens mount`; sets UNSHARED.
start_unshared() {
	bg_start "$STATE/unshared.out" unshare -m --propagation slave sleep 300
	UNSHARED=$BG_PID
	wait_for "$HANG" unshared_ready "$UNSHARED"
}

unshared_ready() {
	[ "$(cat "/proc/$1/comm" 2>/dev/null)" = sleep ] &&
		[ "$(readlink "/proc/$1/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ]
}

# uptime_in PID [NSENTER_OPTS]: /proc/uptime's first field as a process in PID's mount
# namespace (nsenter -m, plus NSENTER_OPTS) reads it.
uptime_in() {
	local up _ text
	text=$(nsenter -t "$1" -m "${@:2}" cat /proc/uptime 2>/dev/null) || return 1
	read -r up _ <<<"$text"
	echo "$up"
}

# kill -9 of this test's daemon (verified by pid file and cmdline), waiting until it is gone
# and its lock on the offset store is released (the kernel may close a killed process's files
# a little after it became a zombie; a daemon started before then refuses to run).
kill_daemon() {
	local pid
	pid=$(daemon_pid)
	is_our_daemon "$pid" || fail "pid file names $pid, not this test's daemon"
	kill -KILL "$pid"
	wait_for "$HANG" eval "! is_alive $pid"
	wait_for "$HANG" flock -n "$STATE/store" true
}

# shifted_uptime PID OFFSET [NSENTER_OPTS]: /proc/uptime read in PID's namespaces is the host's
# + OFFSET (±1 s).
shifted_uptime() {
	local hb ha up
	hb=$(host_uptime)
	up=$(uptime_in "$1" "${@:3}") || return 1
	ha=$(host_uptime)
	between "$(add "$hb" "$(($2 - 1))")" "$up" "$(add "$ha" "$(($2 + 1))")" 2>/dev/null
}

# A daemon started by hand on $STATE (tracked for teardown); sets NEW_DAEMON.
restart_daemon() {
	local keep=${BG_PID:-}
	bg_start "$STATE/restart.log" "$TIMENSFS" --state-dir "$STATE"
	NEW_DAEMON=$BG_PID
	BG_PID=$keep
}

@test "status: the table lists a running sandbox's namespace, offsets, frozen flag and label" {
	requires sandbox
	bg_sandbox "$STATE/bg.out" --monotonic 3600 --boottime 42 -- bash -c 'readlink /proc/self/ns/time; exec sleep 300'
	wait_line "$STATE/bg.out" '^time:'
	local link row
	link=$(head -1 "$STATE/bg.out")
	run --separate-stderr tstatus
	[ "$status" -eq 0 ]
	[[ ${lines[0]} == NS* && ${lines[0]} == *MONOTONIC*BOOTTIME*FROZEN*MEMBERS*SERVED*SANDBOX ]] ||
		fail "header: ${lines[0]}"
	row=$(grep -F "$link " <<<"$output") || fail "no row for $link in: $output"
	read -r -a f <<<"$row"
	assert_eq "${f[1]}" 3600.000000000 MONOTONIC
	assert_eq "${f[2]}" 42.000000000 BOOTTIME
	assert_eq "${f[3]}" yes FROZEN
	assert_eq "${f[5]}" yes SERVED
	assert_contains "$row" "run:bash (pid $BG_PID)"
}

@test "status --json: inum, offsets (sec, nsec), frozen, served, label and anchor pid" {
	requires sandbox tool:python3
	bg_sandbox "$STATE/bg.out" --monotonic 1234.5 --boottime -7 -- bash -c 'readlink /proc/self/ns/time; exec sleep 300'
	wait_line "$STATE/bg.out" '^time:'
	local inum
	inum=$(inum_of "$(head -1 "$STATE/bg.out")")
	tstatus --json | python3 -c 'import json, sys; assert isinstance(json.load(sys.stdin), list)'
	assert_eq "$(status_field "$inum" "e['monotonic']")" '{"sec": 1234, "nsec": 500000000}'
	assert_eq "$(status_field "$inum" "e['boottime']")" '{"sec": -7, "nsec": 0}'
	assert_eq "$(status_field "$inum" "e['frozen']")" true
	assert_eq "$(status_field "$inum" "e['served']")" true
	assert_eq "$(status_field "$inum" "e['sandbox']")" run:bash
	assert_eq "$(status_field "$inum" "e['anchor_pid']")" "$BG_PID"
}

@test "status: a sandbox's namespace is listed while it runs (asked from inside) and gone after" {
	requires sandbox tool:python3
	run --separate-stderr trun --boottime 9 -- bash -c \
		'readlink /proc/self/ns/time; "$1" status --json --state-dir "$2"' _ "$TIMENS" "$STATE"
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	local inum
	inum=$(inum_of "${lines[0]}")
	printf '%s\n' "${lines[@]:1}" | python3 -c '
import json, sys
inum = int(sys.argv[1])
assert any(e["inum"] == inum and e["boottime"]["sec"] == 9 for e in json.load(sys.stdin)), "not listed"' "$inum"
	wait_for 3 eval '[ "$(status_field "$inum" "e[\"inum\"]")" = absent ]' ||
		fail "time:[$inum] is still listed after its sandbox exited: $(tstatus)"
}

@test "mount --pid: the overlay in an unshare -m process; /proc/uptime there shows the offset" {
	requires sandbox tool:unshare tool:nsenter
	start_unshared
	local hb ha up
	run --separate-stderr tns mount --pid "$UNSHARED" --boottime 5000 --state-dir "$STATE"
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	[[ $output =~ ^time:\[[0-9]+\]\ attached\ to\ process\ $UNSHARED$ ]] || fail "output: $output"
	hb=$(host_uptime)
	up=$(uptime_in "$UNSHARED")
	ha=$(host_uptime)
	between "$(add "$hb" 4999)" "$up" "$(add "$ha" 5001)"
	assert_eq "$(nsenter -t "$UNSHARED" -m cat /proc/self/timens_offsets)" "$(offsets_text 0 0 5000 0)"
	# The host's /proc is untouched.
	assert_eq "$(overlay_mounts /proc/self/mountinfo)" 0 "overlay mounts in the host's mount namespace"
}

@test "mount --pid twice: the second call says already attached, exit 0, changes nothing" {
	requires sandbox tool:unshare tool:nsenter tool:python3
	start_unshared
	run --separate-stderr tns mount --pid "$UNSHARED" --boottime 5000 --state-dir "$STATE"
	[ "$status" -eq 0 ] || fail "first: status $status: $stderr"
	local first=${output%% *} mounts
	mounts=$(nsenter -t "$UNSHARED" -m grep -c ' - fuse\.timensfs ' /proc/self/mountinfo)
	run --separate-stderr tns mount --pid "$UNSHARED" --boottime 5000 --state-dir "$STATE"
	[ "$status" -eq 0 ] || fail "second: status $status: $stderr"
	assert_eq "$output" "$first already attached"
	assert_eq "$(nsenter -t "$UNSHARED" -m grep -c ' - fuse\.timensfs ' /proc/self/mountinfo)" "$mounts" \
		"overlay mounts in the process's mount namespace"
	assert_eq "$(status_count)" 1 "namespaces listed"
}

@test "recovery: after kill -9 of the daemon a restarted timensfs serves a mount --pid namespace again within 2 s" {
	requires sandbox tool:unshare tool:nsenter tool:python3
	start_unshared
	run --separate-stderr tns mount --pid "$UNSHARED" --monotonic 10 --boottime 5000 --state-dir "$STATE"
	[ "$status" -eq 0 ] || fail "mount: status $status: $stderr"
	local inum
	inum=$(inum_of "${output%% *}")
	kill_daemon
	restart_daemon
	wait_for 2 shifted_uptime "$UNSHARED" 5000 ||
		fail "/proc/uptime in the namespace is not host + 5000 2 s after the restart: $(uptime_in "$UNSHARED")"
	assert_eq "$(daemon_pid)" "$NEW_DAEMON" "pid file after the restart"
	assert_eq "$(status_field "$inum" "[e['monotonic']['sec'], e['boottime']['sec'], e['served']]")" "[10, 5000, true]" \
		"time:[$inum] in the restarted daemon's status"
	assert_eq "$(status_count)" 1 "namespaces listed"
	assert_eq "$(nsenter -t "$UNSHARED" -m readlink "/proc/$UNSHARED/ns/time")" "time:[$inum]"
}

@test "recovery: after a restart, mount --pid again is a no-op for the same namespace" {
	requires sandbox tool:unshare tool:nsenter tool:python3
	start_unshared
	run --separate-stderr tns mount --pid "$UNSHARED" --boottime 5000 --state-dir "$STATE"
	[ "$status" -eq 0 ] || fail "mount: status $status: $stderr"
	local first=${output%% *}
	kill_daemon
	restart_daemon
	wait_for 2 shifted_uptime "$UNSHARED" 5000 ||
		fail "/proc/uptime in the namespace is not host + 5000 2 s after the restart"
	run --separate-stderr tns mount --pid "$UNSHARED" --boottime 5000 --state-dir "$STATE"
	[ "$status" -eq 0 ] || fail "mount after the restart: status $status: $stderr"
	assert_eq "$output" "$first already attached"
	assert_eq "$(status_count)" 1 "namespaces listed"
}

@test "recovery: mount --pid right after kill -9 of the daemon re-attaches the same namespace" {
	requires sandbox tool:unshare tool:nsenter tool:python3
	start_unshared
	run --separate-stderr tns mount --pid "$UNSHARED" --boottime 5000 --state-dir "$STATE"
	[ "$status" -eq 0 ] || fail "mount: status $status: $stderr"
	local first=${output%% *}
	kill_daemon
	# The user's recovery: the same command again (it starts a daemon on demand).
	run --separate-stderr tns mount --pid "$UNSHARED" --boottime 5000 --state-dir "$STATE"
	[ "$status" -eq 0 ] || fail "mount after the kill: status $status: $stderr"
	[[ $output == "$first "* ]] || fail "output: $output (expected $first)"
	sleep 0.5 # let a concurrent re-attach finish, if any
	shifted_uptime "$UNSHARED" 5000 || fail "/proc/uptime in the namespace: $(uptime_in "$UNSHARED")"
	assert_eq "$(status_count)" 1 "namespaces listed"
}

@test "recovery: a timens run sandbox gets its /proc back after kill -9 and a restart, same namespace" {
	requires sandbox tool:nsenter tool:python3
	bg_sandbox "$STATE/bg.out" --boottime 5000 -- bash -c 'readlink /proc/self/ns/time; exec sleep 300'
	wait_line "$STATE/bg.out" '^time:'
	local link
	link=$(head -1 "$STATE/bg.out")
	kill_daemon
	restart_daemon
	wait_for 2 shifted_uptime "$BG_PID" 5000 ||
		fail "/proc/uptime in the sandbox is not host + 5000 2 s after the restart: $(uptime_in "$BG_PID")"
	assert_eq "$(nsenter -t "$BG_PID" -m readlink "/proc/$BG_PID/ns/time")" "$link"
	assert_eq "$(status_field "$(inum_of "$link")" "e['boottime']['sec']")" 5000
}

@test "recovery: a --pid sandbox gets its /proc back after kill -9 and a restart" {
	requires sandbox tool:nsenter
	bg_sandbox "$STATE/bg.out" --pid --boottime 5000 -- bash -c 'echo up; exec sleep 300'
	wait_line "$STATE/bg.out" '^up$'
	local init
	init=$(only_child "$BG_PID")
	track_pid_kill "$init" # pid 1 inside ignores the SIGTERM the relay forwards
	kill_daemon
	restart_daemon
	wait_for 2 shifted_uptime "$init" 5000 -p ||
		fail "/proc/uptime in the sandbox is not host + 5000 2 s after the restart"
	assert_eq "$(nsenter -t "$init" -m -p cat /proc/1/timens_offsets)" "$(offsets_text 0 0 5000 0)"
}

@test "recovery: programs started while a restarted daemon re-attaches see the namespace and load the clock library" {
	requires sandbox preload tool:nsenter tool:flock
	bg_sandbox "$STATE/bg.out" --boottime 5000 -- bash -c 'echo up; exec sleep 300'
	wait_line "$STATE/bg.out" '^up$'
	local cycle i out up hb bad=""
	# The window is a few ms wide: several restarts, read as fast as nsenter allows. A read
	# that fails (ENOTCONN before the new overlay is up) is fine; one that succeeds must show
	# the namespace's uptime, and the program must have loaded the clock library.
	for cycle in 1 2 3 4 5; do
		kill_daemon
		restart_daemon
		for ((i = 0; i < 100; i++)); do
			hb=$(host_uptime)
			out=$(nsenter -t "$BG_PID" -m cat /proc/uptime 2>&1) || continue # ENOTCONN: fine
			[[ $out != *ld.so* ]] || bad+="cycle $cycle: $out"$'\n'
			up=$(uptime_of "${out##*$'\n'}")
			between "$(add "$hb" 4999)" "$up" 1e12 2>/dev/null || bad+="cycle $cycle: uptime $up (host $hb)"$'\n'
		done
	done
	[ -z "$bad" ] || fail "reads during re-attach:"$'\n'"$bad"
}

@test "daemon: a second timensfs on a served directory exits 1 at once naming the first, which keeps serving" {
	requires sandbox
	trun -- true || fail "first sandbox"
	local first
	first=$(daemon_pid) || fail "no pid file"
	run --separate-stderr timeout "$HANG" "$TIMENSFS" --state-dir "$STATE"
	assert_eq "$status" 1 "exit status; stderr: $stderr"
	assert_eq "$(grep -c '' <<<"$stderr")" 1 "stderr must be one line: $stderr"
	assert_contains "$stderr" "timensfs pid $first already serves $STATE"
	assert_eq "$(our_daemons)" "$first" "daemons serving $STATE"
	assert_eq "$(daemon_pid)" "$first" "pid file"
	trun -- true || fail "the first daemon no longer serves"
}

# Before the fix, each racing `timens run` that found no daemon started one; the losers waited
# for the store's lock and took it over once the winner stopped (after a test had removed the
# state directory), then lingered until their idle exit.
@test "daemon: four timens run racing to start the daemon leave exactly one daemon" {
	requires sandbox
	local i fd pids=() gate=$STATE/gate
	mkfifo "$gate"
	# Held open read-write here, so no open blocks; each racer waits for its line, and the four
	# lines are written at once.
	exec {fd}<>"$gate"
	for i in 1 2 3 4; do
		(
			read -r _ <"$gate"
			trun -- true
		) &
		pids+=($!)
	done
	printf 'go\n%.0s' 1 2 3 4 >&"$fd"
	for i in "${pids[@]}"; do
		wait "$i" || fail "a racing timens run failed"
	done
	exec {fd}>&-
	# A loser may still be starting; it must leave as soon as it sees the winner (the old
	# behaviour: it waited 3 s for the lock, and took the store over if the winner stopped).
	local end=$(($(date +%s%N) + 1000000000))
	while [ "$(our_daemons | wc -l)" -ne 1 ] && [ "$(date +%s%N)" -lt "$end" ]; do
		sleep 0.05
	done
	[ "$(our_daemons | wc -l)" -eq 1 ] || fail "daemons serving $STATE 1 s after: $(our_daemons | tr '\n' ' ')"
	assert_eq "$(our_daemons)" "$(daemon_pid)" "the one left is the pid file's"
}
