#!/usr/bin/env bats
# Clocks inside a sandbox (the clock library, loaded through the sandbox's own
# /etc/ld.so.preload) and util-linux `unshare -T` inside a sandbox (spec A, B, G, H, I).

load helpers

# Python's clocks: `py_clock monotonic|boottime|realtime` prints seconds with nanoseconds.
PY_CLOCK='import sys, time; print("%.9f" % time.clock_gettime(getattr(time, "CLOCK_" + sys.argv[1].upper())))'

# Prints CLOCK_MONOTONIC, then how long time.sleep(0.2) took by that clock.
SLEEP='import time; a = time.monotonic(); print("%.9f" % a); time.sleep(0.2); print("%.3f" % (time.monotonic() - a))'

py_clock() {
	python3 -c "$PY_CLOCK" "$1"
}

# clock_inside CLOCK OFFSET_OPTS...: checks the sandbox's CLOCK against the host's + EXPECTED
# (±1 s around the run); EXPECTED is set by the caller.
clock_inside() {
	local clock=$1 before after got
	shift
	before=$(py_clock "$clock")
	got=$(trun "$@" -- python3 -c "$PY_CLOCK" "$clock")
	after=$(py_clock "$clock")
	between "$(add "$before" "$((EXPECTED - 1))")" "$got" "$(add "$after" "$((EXPECTED + 1))")"
}

@test "clocks: CLOCK_MONOTONIC inside is the host's + --monotonic (python time.monotonic)" {
	requires sandbox preload tool:python3
	EXPECTED=3600 clock_inside monotonic --monotonic 3600 --boottime 86400
	EXPECTED=-100 clock_inside monotonic --monotonic -100
}

@test "clocks: CLOCK_BOOTTIME inside is the host's + --boottime" {
	requires sandbox preload tool:python3
	EXPECTED=86400 clock_inside boottime --monotonic 3600 --boottime 86400
}

@test "clocks: CLOCK_REALTIME is not shifted (date +%s, time.time)" {
	requires sandbox preload tool:python3
	EXPECTED=0 clock_inside realtime --monotonic 3600 --boottime 86400
	EXPECTED=3600 clock_inside monotonic --monotonic 3600 --boottime 86400 # the library is in effect
	local before after got
	before=$(date +%s)
	got=$(trun --monotonic 3600 --boottime 86400 -- date +%s)
	after=$(date +%s)
	between "$before" "$got" "$after"
}

@test "clocks: time.sleep(0.2) with a +10 day monotonic offset returns (absolute deadline translated)" {
	requires sandbox preload tool:python3
	# timeout: hang protection only (an untranslated deadline would sleep 10 days).
	local before after
	before=$(py_clock monotonic)
	run --separate-stderr timeout 10 "$TIMENS" run --state-dir "$STATE" --monotonic 864000 -- \
		python3 -c "$SLEEP"
	after=$(py_clock monotonic)
	[ "$status" -eq 0 ] || fail "status $status (124: the sleep hung); stderr: $stderr"
	# The library is in effect (the clock is shifted), and the sleep lasted 0.2 s.
	between "$(add "$before" 863999)" "${lines[0]}" "$(add "$after" 864001)"
	between 0.199 "${lines[1]}" 100
}

@test "clocks: time.sleep(0.2) with a negative monotonic offset lasts 0.2 s" {
	requires sandbox preload tool:python3
	# An untranslated absolute deadline would already be in the past: the sleep would return
	# at once.
	local before after
	before=$(py_clock monotonic)
	run --separate-stderr timeout 10 "$TIMENS" run --state-dir "$STATE" --monotonic -100 -- \
		python3 -c "$SLEEP"
	after=$(py_clock monotonic)
	[ "$status" -eq 0 ] || fail "status $status; stderr: $stderr"
	between "$(add "$before" -101)" "${lines[0]}" "$(add "$after" -99)"
	between 0.199 "${lines[1]}" 100
}

@test "clocks: Rust Condvar::wait_timeout(0.2 s) with a +10 day monotonic offset lasts 0.2 s" {
	requires sandbox preload
	# std waits with FUTEX_WAIT_BITSET until an absolute CLOCK_MONOTONIC deadline, through
	# libc's syscall(): the library must translate it (an untranslated one waits 10 days).
	local prog=$TARGET_DIR/debug/condvar-wait before after
	[ -x "$prog" ] || skip "condvar-wait not built: $prog (cargo build --workspace)"
	before=$(py_clock monotonic)
	run --separate-stderr timeout 10 "$TIMENS" run --state-dir "$STATE" --monotonic 864000 -- \
		"$prog" 200
	after=$(py_clock monotonic)
	[ "$status" -eq 0 ] || fail "status $status (124: the wait hung); stderr: $stderr"
	# The library is in effect, the wait timed out, and it lasted 0.2 s of real time.
	between "$(add "$before" 863999)" "${lines[0]}" "$(add "$after" 864001)"
	assert_eq "${lines[1]}" "timed_out=true"
	between 0.199 "${lines[2]}" 100
}

@test "clocks: the library reaches a program started with an empty environment (env -i)" {
	requires sandbox preload tool:python3
	local py before after got
	py=$(python3 -c 'import sys; print(sys.executable)')
	before=$(py_clock monotonic)
	got=$(trun --monotonic 7200 -- env -i "$py" -c "$PY_CLOCK" monotonic)
	after=$(py_clock monotonic)
	between "$(add "$before" 7199)" "$got" "$(add "$after" 7201)"
}

@test "clocks: --no-preload leaves clocks at the host's, /proc is still shifted" {
	requires sandbox tool:python3
	local before after hb ha out
	before=$(py_clock monotonic)
	hb=$(host_uptime)
	out=$(trun --no-preload --monotonic 3600 --boottime 86400 -- bash -c \
		"python3 -c '$PY_CLOCK' monotonic; cat /proc/uptime; cat /etc/ld.so.preload 2>/dev/null | grep -c timens_preload || true")
	ha=$(host_uptime)
	after=$(py_clock monotonic)
	local -a l
	mapfile -t l <<<"$out"
	between "$(add "$before" -1)" "${l[0]}" "$(add "$after" 1)"
	between "$(add "$hb" 86399)" "$(uptime_of "${l[1]}")" "$(add "$ha" 86401)"
	assert_eq "${l[2]}" 0 "/etc/ld.so.preload inside names the library despite --no-preload"
}

@test "unshare -T inside a sandbox: offsets are absolute (uptime = host + 5000, not + the sandbox's)" {
	requires sandbox preload timens_kernel
	# `cat` reads no clock, so only the daemon's view of it counts: its exec into the pending
	# namespace (B4), or with --fork its birth as a child of the unsharing process (B1), must be
	# known when it opens /proc/uptime, even though the process event may still be queued.
	local hb ha
	hb=$(host_uptime)
	run --separate-stderr trun --monotonic 100 --boottime 200 -- sh -c '
		unshare -T --monotonic 1000 --boottime 5000 cat /proc/uptime
		unshare -T --fork --monotonic 1000 --boottime 5000 cat /proc/uptime'
	ha=$(host_uptime)
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	[ "${#lines[@]}" -eq 2 ] || fail "expected two lines: $output"
	between "$(add "$hb" 4999)" "$(uptime_of "${lines[0]}")" "$(add "$ha" 5001)"
	between "$(add "$hb" 4999)" "$(uptime_of "${lines[1]}")" "$(add "$ha" 5001)"
}

@test "unshare -T inside a sandbox: the child's timens_offsets read like the kernel's" {
	requires sandbox preload timens_kernel
	local kernel forked
	kernel=$(unshare -T --monotonic 1000 --boottime 5000 cat /proc/self/timens_offsets)
	forked=$(unshare -T --fork --monotonic 1000 --boottime 5000 cat /proc/self/timens_offsets)
	run --separate-stderr trun --monotonic 100 --boottime 200 -- \
		unshare -T --monotonic 1000 --boottime 5000 cat /proc/self/timens_offsets
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	assert_eq "$output" "$kernel"
	# The child of the unsharing process, which may read before its fork event is handled.
	run --separate-stderr trun --monotonic 100 --boottime 200 -- \
		unshare -T --fork --monotonic 1000 --boottime 5000 cat /proc/self/timens_offsets
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	assert_eq "$output" "$forked"
}

@test "unshare -T inside a sandbox: the child's ns/time differs from the sandbox's" {
	requires sandbox preload timens_kernel
	run --separate-stderr trun --boottime 200 -- bash -c \
		'readlink /proc/self/ns/time; unshare -T readlink /proc/self/ns/time; readlink /proc/self/ns/time'
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	[ "${#lines[@]}" -eq 3 ] || fail "output: $output"
	[[ ${lines[0]} =~ ^time:\[[0-9]+\]$ ]] || fail "sandbox link: ${lines[0]}"
	[[ ${lines[1]} =~ ^time:\[[0-9]+\]$ ]] || fail "child link: ${lines[1]}"
	[ "${lines[1]}" != "${lines[0]}" ] || fail "unshare -T child is still in ${lines[0]}"
	[ "${lines[1]}" != "time:[$INIT_TIME_INUM]" ]
	assert_eq "${lines[2]}" "${lines[0]}" "the sandbox's own link after the child"
}

@test "unshare -T inside a sandbox: uptime -p of a child 300000000 s ahead prints what it prints on the kernel" {
	requires sandbox preload timens_kernel tool:uptime
	# "up 9 years, …": minute resolution, so the two readings may straddle a minute; a second
	# pair taken at once must then agree.
	local cmd='unshare --time --fork --boottime 300000000 uptime -p' kernel got i
	for i in 1 2; do
		kernel=$(sh -c "$cmd")
		run --separate-stderr trun --boottime 86400 -- sh -c "$cmd"
		[ "$status" -eq 0 ] || fail "status $status: $stderr"
		[ "$output" = "$kernel" ] && break
	done
	[[ $kernel == "up 9 years, "* ]] || fail "the kernel printed: $kernel"
	assert_eq "$output" "$kernel"
}

@test "unshare -T inside a sandbox: the child's CLOCK_MONOTONIC is host + 1000 (absolute)" {
	requires sandbox preload timens_kernel tool:python3
	local before after got
	before=$(py_clock monotonic)
	got=$(trun --monotonic 100 -- unshare -T --monotonic 1000 python3 -c "$PY_CLOCK" monotonic)
	after=$(py_clock monotonic)
	between "$(add "$before" 999)" "$got" "$(add "$after" 1001)"
}

# /proc/uptime is read through the page cache (one round trip per open+read+close): a kept-open
# fd must still move on, sendfile (busybox cat) must give the whole line, and readers in two
# namespaces of one sandbox, taking turns, must each see their own uptime.
@test "uptime: page-cached /proc/uptime stays exact (kept-open fd, sendfile, two namespaces taking turns)" {
	requires sandbox preload timens_kernel tool:python3 tool:busybox
	local hb ha out i
	hb=$(host_uptime)
	run --separate-stderr trun --boottime 86400 -- sh -c '
		python3 -c "
import time
f = open(\"/proc/uptime\")
a = f.read(); time.sleep(0.3); f.seek(0); b = f.read()
print(a.split()[0], b.split()[0])"
		for i in 1 2 3; do
			cat /proc/uptime; busybox cat /proc/uptime
			unshare -T --boottime 5000 sh -c "cat /proc/uptime; busybox cat /proc/uptime"
		done
		cat /proc/uptime'
	ha=$(host_uptime)
	[ "$status" -eq 0 ] || fail "status $status: $stderr"
	local -a l
	mapfile -t l <<<"$output"
	[ "${#l[@]}" -eq 14 ] || fail "expected 14 lines, got ${#l[@]}: $output"
	local -a kept
	read -r -a kept <<<"${l[0]}"
	between "$(add "${kept[0]}" 0.25)" "${kept[1]}" "$(add "${kept[0]}" 1)" ||
		fail "a kept-open /proc/uptime read 0.3 s later: ${kept[*]}"
	for i in 1 2 5 6 9 10 13; do
		[[ ${l[$i]} =~ ^[0-9]+\.[0-9]{2}\ [0-9]+\.[0-9]{2}$ ]] || fail "line $i: '${l[$i]}'"
		between "$(add "$hb" 86399)" "$(uptime_of "${l[$i]}")" "$(add "$ha" 86401)" ||
			fail "line $i (sandbox's namespace): ${l[$i]}"
	done
	for i in 3 4 7 8 11 12; do
		[[ ${l[$i]} =~ ^[0-9]+\.[0-9]{2}\ [0-9]+\.[0-9]{2}$ ]] || fail "line $i: '${l[$i]}'"
		between "$(add "$hb" 4999)" "$(uptime_of "${l[$i]}")" "$(add "$ha" 5001)" ||
			fail "line $i (unshare -T namespace): ${l[$i]}"
	done
}
