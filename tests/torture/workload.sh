#!/bin/bash
# workload.sh SECONDS BINDIR SEED: the torture workload of one sandbox, or of one kernel time
# namespace for comparison (tests/tests/torture.rs). Several workers at once, each in a loop
# until SECONDS have passed:
#   - util-linux `unshare -T` with offsets, twice at once (the issue's deadlock workload);
#   - ns-churn: unshare/setns/clone3 system calls, offsets writes, vfork/posix_spawn, reads of
#     every virtual file (through the clock library in a sandbox);
#   - ps -ef, ls -l /proc/self/fd, cat of the virtual files, readlink of ns/time*, nsenter
#     --time, fork/exec/exit.
# Prints `ERR <op> <status> <first stderr line, digits as N>` for every failed command and
# `OPS <worker> <count>` per worker.
secs=$1 bin=$2 seed=${3:-1}
end=$((SECONDS + secs))

run() { # run OP CMD...: runs CMD, reports a failure
    local op=$1 err rc
    shift
    err=$("$@" 2>&1 >/dev/null)
    rc=$?
    if [ "$rc" != 0 ]; then
        err=${err%%$'\n'*}
        echo "ERR $op $rc ${err//[0-9]/N}"
    fi
}

loop() { # loop NAME CMD...: CMD until the end, then the count
    local name=$1 n=0
    shift
    while [ "$SECONDS" -lt "$end" ]; do
        "$@"
        n=$((n + 1))
    done
    echo "OPS $name $n"
}

w_unshare() { run unshare-T unshare -T --monotonic 1000 --boottime 5000 sh -c 'cat /proc/uptime'; }
w_tools() {
    run ps ps -ef
    run ls-fd ls -l /proc/self/fd
    run cat cat /proc/uptime /proc/stat /proc/self/stat /proc/self/timens_offsets
    run readlink readlink /proc/self/ns/time /proc/self/ns/time_for_children
    run nsenter nsenter --time=/proc/self/ns/time cat /proc/self/timens_offsets
    run sh sh -c 'exit 0'
}

loop unshare-1 w_unshare &
loop unshare-2 w_unshare &
loop tools w_tools &
out=$("$bin/ns-churn" "$secs" "$seed")
echo "$out"
wait
