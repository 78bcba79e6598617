#!/usr/bin/env bats
# `timens run`: every option, offsets read back against the kernel (`unshare -T`), exit
# statuses. Spec: /work/shared/spec/timens-semantics.md (C, D, E, G, J).

load helpers

# kernel_offsets MSEC MNSEC BSEC BNSEC: /proc/self/timens_offsets of a process in a new kernel
# time namespace with these offsets (util-linux takes whole seconds only, so the records are
# written directly, then exec enters the namespace).
kernel_offsets() {
	python3 - "$@" <<'EOF'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x80) != 0:  # CLONE_NEWTIME
    sys.exit("unshare(CLONE_NEWTIME): " + os.strerror(ctypes.get_errno()))
with open("/proc/self/timens_offsets", "w") as f:
    f.write("monotonic %s %s\nboottime %s %s\n" % tuple(sys.argv[1:5]))
os.execvp("cat", ["cat", "/proc/self/timens_offsets"])
EOF
}

# same_as_unshare MONO BOOT: `timens run` and `unshare -T` with these offsets print the same
# /proc/self/timens_offsets, and it is the kernel's rendering (D2).
same_as_unshare() {
	local emul kernel
	emul=$(trun --monotonic "$1" --boottime "$2" -- cat /proc/self/timens_offsets)
	kernel=$(unshare -T --monotonic "$1" --boottime "$2" cat /proc/self/timens_offsets)
	assert_eq "$emul" "$kernel" "timens run vs unshare -T, --monotonic $1 --boottime $2"
	assert_eq "$kernel" "$(offsets_text "$1" 0 "$2" 0)" "unshare -T rendering"
}

@test "run --monotonic: timens_offsets shows the offset, boottime stays 0" {
	requires sandbox
	run --separate-stderr trun --monotonic 3600 -- cat /proc/self/timens_offsets
	[ "$status" -eq 0 ]
	assert_eq "$output" "$(offsets_text 3600 0 0 0)"
	assert_eq "$stderr" ""
}

@test "run --boottime: /proc/uptime is the host's + offset, idle is not shifted (J1)" {
	requires sandbox
	local hb hib ha hia up idle
	read -r hb hib </proc/uptime
	run --separate-stderr trun --boottime 86400 -- cat /proc/uptime
	read -r ha hia </proc/uptime
	[ "$status" -eq 0 ]
	read -r up idle <<<"$output"
	between "$(add "$hb" 86399)" "$up" "$(add "$ha" 86401)"
	between "$(add "$hib" -1)" "$idle" "$(add "$hia" 1)"
}

@test "run --boottime: /proc/stat btime is the host's - offset exactly (J3)" {
	requires sandbox
	local hb ha inside
	hb=$(btime_of "$(cat /proc/stat)")
	run --separate-stderr trun --boottime 86400 -- cat /proc/stat
	ha=$(btime_of "$(cat /proc/stat)")
	[ "$status" -eq 0 ]
	inside=$(btime_of "$output")
	[ "$inside" -eq $((hb - 86400)) ] || [ "$inside" -eq $((ha - 86400)) ] ||
		fail "btime inside $inside, host $hb/$ha - 86400"
}

@test "run --boottime: /proc/1/stat starttime (field 22) is the host's + offset in ticks (J4)" {
	requires sandbox
	local host inside
	host=$(stat_field "$(cat /proc/1/stat)" 22)
	run --separate-stderr trun --boottime 86400 -- cat /proc/1/stat
	[ "$status" -eq 0 ]
	inside=$(stat_field "$output" 22)
	assert_eq "$inside" "$((host + 8640000))" "pid 1 starttime inside vs host + 86400 s * USER_HZ"
}

@test "run without a boottime offset: PID/stat is the kernel's file until a member unshares, then each reader's view" {
	requires sandbox preload timens_kernel
	# Linked to the kernel's own file while every member shares a zero boottime offset (no
	# round trip); once `unshare -T` (the clock library's) makes a member's children differ,
	# the entry the kernel cached must be dropped, or the child would read the unshifted value.
	local host
	host=$(stat_field "$(cat /proc/1/stat)" 22)
	run --separate-stderr trun -- bash -c '
		stat -c %F /proc/1/stat
		cat /proc/1/stat
		unshare -T --boottime 5000 cat /proc/1/stat
		cat /proc/1/stat
		stat -c %F /proc/1/stat'
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	assert_eq "${lines[0]}" "symbolic link" "stat before any unshare"
	assert_eq "$(stat_field "${lines[1]}" 22)" "$host" "starttime, sandbox without offset"
	assert_eq "$(stat_field "${lines[2]}" 22)" "$((host + 500000))" "starttime in the child namespace (+5000 s)"
	assert_eq "$(stat_field "${lines[3]}" 22)" "$host" "starttime back in the sandbox's namespace"
	# A regular file now (procfs says size 0; a page-cached virtual PID/stat says its length).
	[[ ${lines[4]} == "regular file" || ${lines[4]} == "regular empty file" ]] ||
		fail "stat once members differ: '${lines[4]}', want a regular file, not the link"
}

@test "run --pid: CMD is pid 1 and /proc/self says so" {
	requires sandbox
	run --separate-stderr trun --pid -- bash -c 'echo $$; readlink /proc/self; cat /proc/self/stat'
	[ "$status" -eq 0 ]
	assert_eq "${lines[0]}" 1 '$$'
	# readlink is a child of pid 1, so /proc/self is 2 or more; cat's stat names its own pid.
	[[ ${lines[1]} =~ ^[0-9]+$ ]] && [ "${lines[1]}" -gt 1 ] || fail "/proc/self of a child: ${lines[1]}"
	[[ ${lines[2]} == [0-9]*" (cat) "* ]] || fail "cat's /proc/self/stat: ${lines[2]}"
}

@test "run --pid: ps shows only the sandbox's processes" {
	requires sandbox tool:ps
	run --separate-stderr trun --pid -- bash -c 'ps -e -o pid=,comm=; true'
	[ "$status" -eq 0 ]
	local -a rows
	mapfile -t rows <<<"$output"
	[ "${#rows[@]}" -eq 2 ] || fail "ps -e inside: $output"
	[[ ${rows[0]} =~ ^\ *1\ bash$ ]] || fail "first row: ${rows[0]}"
	[[ ${rows[1]} =~ ^\ *[0-9]+\ ps$ ]] || fail "second row: ${rows[1]}"
}

@test "run --for-children: the time_namespaces(7) flow; a write after a child gets Permission denied" {
	requires sandbox
	local hb ha up
	hb=$(host_uptime)
	run --separate-stderr trun --for-children -- bash -c '
		echo "monotonic 172800 0" > /proc/$$/timens_offsets
		echo "boottime 604800 0" > /proc/$$/timens_offsets
		cat /proc/uptime
		echo "boottime 1 0" > /proc/$$/timens_offsets
		echo "rc=$?"
		cat /proc/$$/timens_offsets'
	ha=$(host_uptime)
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 4 ] || fail "stdout: $output"
	up=$(uptime_of "${lines[0]}")
	between "$(add "$hb" 604799)" "$up" "$(add "$ha" 604801)"
	assert_eq "${lines[1]}" "rc=1" "the write after a child entered must fail (C1)"
	assert_contains "$stderr" "write error: Permission denied"
	assert_eq "$(printf '%s\n' "${lines[@]:2}")" "$(offsets_text 172800 0 604800 0)" \
		"offsets after the refused write (E7)"
}

@test "run --for-children: CMD stays outside, writes are kept until the first child (C3)" {
	requires sandbox
	local hb ha
	hb=$(host_uptime)
	# Builtins only until `cat`: a child would enter and freeze the namespace.
	run --separate-stderr trun --for-children -- bash -c '
		echo "monotonic 5 0" > /proc/$$/timens_offsets
		echo "boottime 6 0" > /proc/$$/timens_offsets
		echo "boottime 7 0" > /proc/$$/timens_offsets && echo third-write-ok
		read -r up _ < /proc/uptime; echo "$up"
		while IFS= read -r l; do echo "$l"; done < /proc/$$/timens_offsets
		cat /proc/uptime'
	ha=$(host_uptime)
	[ "$status" -eq 0 ]
	assert_eq "$stderr" ""
	assert_eq "${lines[0]}" third-write-ok
	between "$(add "$hb" -1)" "${lines[1]}" "$(add "$ha" 1)"
	assert_eq "$(printf '%s\n' "${lines[@]:2:2}")" "$(offsets_text 5 0 7 0)" "the later boottime wins"
	between "$(add "$hb" 6)" "$(uptime_of "${lines[4]}")" "$(add "$ha" 8)"
}

@test "run --state-dir: the daemon starts on demand in DIR (created) and serves later runs" {
	requires sandbox
	local dir=$STATE/nested/state pid
	STATE_DIRS+=("$dir")
	[ ! -e "$dir" ]
	run --separate-stderr timeout "$HANG" "$TIMENS" run --state-dir "$dir" -- true
	[ "$status" -eq 0 ]
	[ -S "$dir/control.sock" ] && [ -f "$dir/timensfs.pid" ] && [ -f "$dir/timensfs.log" ] ||
		fail "state directory after the first run: $(ls -A "$dir")"
	pid=$(daemon_pid "$dir")
	is_our_daemon "$pid" "$dir"
	run --separate-stderr timeout "$HANG" "$TIMENS" run --state-dir "$dir" --boottime 5 -- true
	[ "$status" -eq 0 ]
	assert_eq "$(daemon_pid "$dir")" "$pid" "the second run started another daemon"
	# Status answers on that directory only.
	timeout "$HANG" "$TIMENS" status --state-dir "$dir" >/dev/null
}

@test "run SECS.NANOS offsets read back like the kernel's (positive and negative)" {
	requires sandbox timens_kernel tool:python3
	local emul kernel
	emul=$(trun --monotonic 1.5 --boottime 2.000000001 -- cat /proc/self/timens_offsets)
	kernel=$(kernel_offsets 1 500000000 2 1)
	assert_eq "$emul" "$kernel" "--monotonic 1.5 --boottime 2.000000001"
	assert_eq "$kernel" "$(offsets_text 1 500000000 2 1)"
	# A negative SECS.NANOS is normalised like a timespec: -1.5 s = -2 s + 500000000 ns.
	emul=$(trun --monotonic -1.5 --boottime -0.25 -- cat /proc/self/timens_offsets)
	kernel=$(kernel_offsets -2 500000000 -1 750000000)
	assert_eq "$emul" "$kernel" "--monotonic -1.5 --boottime -0.25"
}

@test "run negative offsets read back like unshare -T" {
	requires sandbox timens_kernel
	local m b
	m=$(host_clock_sec monotonic)
	b=$(host_clock_sec boottime)
	# E9: clock + offset >= 0; -100/-200 unless the host booted less than 400 s ago.
	m=$((m / 2 < 100 ? -(m / 2) : -100))
	b=$((b / 2 < 200 ? -(b / 2) : -200))
	same_as_unshare "$m" "$b"
}

@test "run offsets read back like unshare -T for several values" {
	requires sandbox timens_kernel
	local pair
	for pair in "0 0" "1 7" "3600 86400" "-1 -1" "864000 -2" "123456789 987654321"; do
		same_as_unshare $pair
	done
}

@test "run the largest offsets the host clock allows read back like unshare -T (E9)" {
	requires sandbox timens_kernel
	local m b
	# 100 s of margin for the time between computing the offset and the writes.
	m=$((HALF_KTIME_SEC_MAX - $(host_clock_sec monotonic) - 100))
	b=$((HALF_KTIME_SEC_MAX - $(host_clock_sec boottime) - 100))
	same_as_unshare "$m" "$b"
}

@test "run exit status is CMD's (exit 7), plain and with --pid" {
	requires sandbox
	run trun -- sh -c 'exit 7'
	[ "$status" -eq 7 ]
	run trun --pid -- sh -c 'exit 7'
	[ "$status" -eq 7 ]
	run trun -- true
	[ "$status" -eq 0 ]
}

@test "run CMD killed by signal N gives 128+N" {
	requires sandbox
	run trun -- sh -c 'kill -TERM $$'
	[ "$status" -eq 143 ]
	run trun -- sh -c 'kill -SEGV $$'
	[ "$status" -eq 139 ]
}

@test "run --pid: sandbox init killed from the host by SIGKILL gives 137" {
	requires sandbox
	local init
	bg_sandbox "$STATE/bg.out" --pid -- bash -c 'echo up; exec sleep 300'
	wait_line "$STATE/bg.out" '^up$'
	init=$(only_child "$BG_PID")
	assert_eq "$(cat "/proc/$init/comm")" sleep "the relay's child"
	kill -KILL "$init"
	wait_exit "$BG_PID"
	assert_eq "$EXIT_STATUS" 137 "exit status of timens run --pid"
}

@test "run a missing command: exit 127, one line on stderr" {
	requires sandbox
	run -127 --separate-stderr trun -- timens-no-such-command-xyz
	assert_eq "$(grep -c '' <<<"$stderr")" 1 "stderr lines: $stderr"
	assert_contains "$stderr" "timens-no-such-command-xyz"
	run -127 --separate-stderr trun --pid -- timens-no-such-command-xyz
}

@test "run a command that is not executable: exit 126" {
	requires sandbox
	printf '#!/bin/sh\necho ran\n' >"$STATE/script"
	chmod 644 "$STATE/script"
	run --separate-stderr trun -- "$STATE/script"
	[ "$status" -eq 126 ]
	assert_eq "$output" ""
	assert_contains "$stderr" "Permission denied"
}

@test "run passes stdin, stdout and the caller's fds through to CMD" {
	requires sandbox
	run --separate-stderr bash -c 'echo hello | "$1" run --state-dir "$2" -- bash -c "cat; cat <&5" 5< /etc/hostname' \
		_ "$TIMENS" "$STATE"
	[ "$status" -eq 0 ]
	assert_eq "$output" "hello"$'\n'"$(cat /etc/hostname)"
}
