#!/usr/bin/env bats
# Everyday tools inside a sandbox behave as on the host; an unprivileged user gets the kernel's
# answers; nothing is left behind on the host.

load helpers

# days_up OFFSET: the day count `uptime`/`top` show with a boottime offset of OFFSET seconds.
days_up() {
	awk -v up="$(host_uptime)" -v off="$1" 'BEGIN { printf "%d\n", (up + off) / 86400 }'
}

@test "tools: ps -ef inside lists itself under the usual header" {
	requires sandbox tool:ps
	run --separate-stderr trun --boottime 86400 -- ps -ef
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	[[ ${lines[0]} =~ ^UID\ +PID\ +PPID\ +C\ +STIME\ +TTY\ +TIME\ +CMD$ ]] || fail "header: ${lines[0]}"
	[[ $output == *" ps -ef"* ]] || fail "ps -ef does not list itself: $output"
	assert_eq "$stderr" ""
}

@test "tools: top -bn1 inside shows the shifted uptime and the task summary" {
	requires sandbox tool:top
	local days
	days=$(days_up 86400)
	run --separate-stderr trun --boottime 86400 -- top -bn1
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	[[ ${lines[0]} == "top - "*"up $days day"* ]] || fail "first line: ${lines[0]} (expected up $days day)"
	[[ $output == *$'\n'Tasks:* ]] || fail "no Tasks: line: $output"
}

@test "tools: free inside reports the host's memory total" {
	requires sandbox tool:free
	local host
	host=$(free -b | awk '/^Mem:/ { print $2 }')
	run --separate-stderr trun --boottime 86400 -- bash -c "free -b | awk '/^Mem:/ { print \$2 }'"
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	assert_eq "$output" "$host" "free -b total"
}

@test "tools: uptime inside shows the shifted uptime; uptime -s is a day earlier" {
	requires sandbox tool:uptime
	local days host_since inside_since
	days=$(days_up 86400)
	host_since=$(date -d "$(uptime -s)" +%s)
	run --separate-stderr trun --boottime 86400 -- bash -c 'uptime; uptime -s'
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	[[ ${lines[0]} == *"up $days day"*"load average:"* ]] || fail "uptime: ${lines[0]} (expected up $days day)"
	inside_since=$(date -d "${lines[1]}" +%s)
	between $((host_since - 86401)) "$inside_since" $((host_since - 86399))
}

@test "tools: pgrep inside finds a process started inside" {
	requires sandbox tool:pgrep
	run --separate-stderr trun --boottime 86400 -- bash -c \
		'sleep 1000 & s=$!; pgrep -x sleep | grep -qx "$s" && echo pgrep-ok; kill "$s"'
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	assert_eq "$output" pgrep-ok
}

@test "tools: sysctl inside reads the kernel's values" {
	requires sandbox tool:sysctl
	local host
	host=$(sysctl -n kernel.ostype kernel.hostname kernel.pid_max)
	run --separate-stderr trun --boottime 86400 -- sysctl -n kernel.ostype kernel.hostname kernel.pid_max
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	assert_eq "$output" "$host"
}

@test "tools: process substitution cat <(echo hi) and /dev/stdin work inside" {
	requires sandbox
	run --separate-stderr trun --boottime 86400 -- bash -c 'cat <(echo hi); echo there | cat /dev/stdin'
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	assert_eq "$output" "hi"$'\n'"there"
}

@test "tools: ls -l /proc/self/fd inside shows the real link targets" {
	requires sandbox
	run --separate-stderr trun --boottime 86400 -- bash -c 'exec 7</etc/hostname; ls -l /proc/self/fd'
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	[[ $output == *" 7 -> /etc/hostname"* ]] || fail "fd 7: $output"
	local fd
	for fd in 0 1 2; do
		[[ $output == *" $fd -> "* ]] || fail "fd $fd: $output"
	done
	[[ $output != *.timens* ]] || fail "the hidden procfs leaks into link texts: $output"
}

@test "tools: nsenter --net=/proc/self/ns/net true works inside" {
	requires sandbox tool:nsenter
	run --separate-stderr trun --boottime 86400 -- bash -c 'nsenter --net=/proc/self/ns/net true && echo nsenter-ok'
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	assert_eq "$output" nsenter-ok
}

@test "tools: readlink /proc/self/exe and /proc/self/ns/time inside" {
	requires sandbox
	run --separate-stderr trun --boottime 86400 -- bash -c \
		'readlink /proc/self/exe; readlink /proc/self/ns/time; readlink /proc/self/ns/time_for_children'
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	assert_eq "${lines[0]}" "$(bash -c 'readlink /proc/self/exe')" "exe, inside vs host"
	[[ ${lines[1]} =~ ^time:\[[0-9]+\]$ ]] && [ "${lines[1]}" != "time:[$INIT_TIME_INUM]" ] ||
		fail "ns/time: ${lines[1]}"
	assert_eq "${lines[2]}" "${lines[1]}" "time_for_children (G1)"
}

@test "tools: uid 65534 gets Permission denied on /proc/1/environ, as on the host" {
	requires sandbox tool:setpriv
	local nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	run --separate-stderr "${nobody[@]}" cat /proc/1/environ
	local host_status=$status host_stderr=$stderr
	assert_contains "$host_stderr" "Permission denied" "on the host"
	local mode
	for mode in "" --pid; do
		run --separate-stderr trun $mode -- bash -c '"$@"; exit $?' _ "${nobody[@]}" cat /proc/1/environ
		assert_eq "$status" "$host_status" "exit status ${mode:-plain}"
		assert_eq "$stderr" "$host_stderr" "stderr ${mode:-plain}"
		assert_eq "$output" "" "stdout ${mode:-plain}"
	done
}

@test "leftovers: no overlay mount on the host during or after a sandbox; /etc/ld.so.preload only inside" {
	requires sandbox
	local before_mounts before_preload inside
	before_mounts=$(overlay_mounts /proc/self/mountinfo)
	before_preload=$(host_preload_state)
	bg_sandbox "$STATE/bg.out" --boottime 5 -- bash -c 'cat /etc/ld.so.preload 2>/dev/null; echo up; exec sleep 300'
	wait_line "$STATE/bg.out" '^up$'
	inside=$(cat "$STATE/bg.out")
	if [ -f "$PRELOAD_LIB" ]; then
		assert_contains "$inside" "libtimens_preload.so" "the sandbox's /etc/ld.so.preload"
	fi
	# While it runs: the host sees neither its overlay nor its ld.so.preload.
	assert_eq "$(overlay_mounts /proc/self/mountinfo)" "$before_mounts" "overlay mounts on the host (sandbox running)"
	assert_eq "$(host_preload_state)" "$before_preload" "host /etc/ld.so.preload (sandbox running)"
	! grep -F -e "$STATE" -e /proc/.timens /proc/self/mountinfo || fail "the host's mountinfo mentions the sandbox"
	stop_pid "$BG_PID"
	wait "$BG_PID" || true
	assert_eq "$(overlay_mounts /proc/self/mountinfo)" "$before_mounts" "overlay mounts on the host (after)"
	assert_eq "$(host_preload_state)" "$before_preload" "host /etc/ld.so.preload (after)"
	! grep -F -e "$STATE" -e /proc/.timens /proc/self/mountinfo || fail "the host's mountinfo mentions the sandbox"
	# The daemon (in the host's mount namespace) holds no overlay mount either.
	local d
	d=$(daemon_pid)
	assert_eq "$(overlay_mounts "/proc/$d/mountinfo")" 0 "overlay mounts in the daemon's mount namespace"
}

@test "leftovers: /etc/ld.so.preload does not exist on the host after sandboxes ran" {
	requires sandbox
	[ ! -e /etc/ld.so.preload ] || skip "the host has its own /etc/ld.so.preload"
	run trun --boottime 5 -- true
	[ "$status" -eq 0 ]
	run trun --pid --for-children -- true
	[ "$status" -eq 0 ]
	[ ! -e /etc/ld.so.preload ]
}

@test "leftovers: a daemon started on demand holds none of the caller's file descriptors" {
	requires sandbox tool:flock
	# A script holding a lock while it runs a sandbox: once the script ends, the lock is free.
	run bash -c 'exec 9>"$1/lock"; flock 9; "$2" run --state-dir "$1" -- true' _ "$STATE" "$TIMENS"
	[ "$status" -eq 0 ]
	local d
	d=$(daemon_pid)
	flock -n "$STATE/lock" true || fail "the lock is still held; daemon $d fds: $(ls -l "/proc/$d/fd")"
	! ls -l "/proc/$d/fd" | grep -F "$STATE/lock" || fail "daemon $d holds $STATE/lock"
}

# /proc/self and /proc/thread-self are the sandbox procfs's own links bound over the overlay's:
# each reader gets its own pid, and what they name is the overlay's (starttime shifted).
@test "tools: /proc/self and /proc/thread-self name each reader's own overlay directory" {
	requires sandbox
	run --separate-stderr trun --boottime 86400 -- sh -c '
		echo $$ $(readlink /proc/self)
		sh -c "echo \$\$ \$(readlink /proc/thread-self)"
		cut -d" " -f22 /proc/self/stat /proc/thread-self/stat'
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	local -a l a b
	mapfile -t l <<<"$output"
	read -r -a a <<<"${l[0]}"
	read -r -a b <<<"${l[1]}"
	# readlink runs as a child of the shell: it must name itself, not the shell.
	[ "${a[0]}" != "${a[1]}" ] || fail "readlink /proc/self in a child named the shell: ${l[0]}"
	[[ ${b[1]} =~ ^([0-9]+)/task/([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] &&
		[ "${BASH_REMATCH[1]}" != "${b[0]}" ] || fail "readlink /proc/thread-self: ${l[1]}"
	between 8640000 "${l[2]}" 1e15 || fail "/proc/self/stat starttime not shifted: ${l[2]}"
	between 8640000 "${l[3]}" 1e15 || fail "/proc/thread-self/stat starttime not shifted: ${l[3]}"
}
