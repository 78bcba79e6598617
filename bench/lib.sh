# Shared by the bench scripts (sourced).

# pin_all CPUS PID: every thread of PID onto CPUS. `taskset -a` fails when a thread ends while
# it walks the list (the daemon's per-sandbox threads come and go): try again.
pin_all() {
    local i
    for i in 1 2 3 4 5; do
        taskset -a -p -c "$1" "$2" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    taskset -a -p -c "$1" "$2" >/dev/null
}

log() { printf '%s\n' "$*" >&2; }

median() { # values... -> their median
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# need_root SCRIPT WHY: exit 1 with one line unless root.
need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "$1 needs root ($2)" >&2
        exit 1
    fi
}

# start_daemon: this script's own timensfs on $SD (never the system's /run/timensfs), log in
# $SD/timensfs.log; sets DAEMON_PID once its pid file names it, else exits 1.
start_daemon() {
    mkdir -p "$SD"
    "$BIN/timensfs" --state-dir "$SD" >"$SD/timensfs.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 200); do
        [ -s "$SD/timensfs.pid" ] && break
        sleep 0.05
    done
    if [ "$(cat "$SD/timensfs.pid" 2>/dev/null)" != "$DAEMON_PID" ]; then
        log "timensfs did not come up (pid file: $(cat "$SD/timensfs.pid" 2>/dev/null || echo none))"
        exit 1
    fi
}

# stop_daemon RC: stops the daemon start_daemon started (by its pid) and, when the script is
# failing (RC not 0), shows the end of its log.
stop_daemon() {
    if [ -n "$DAEMON_PID" ]; then
        kill "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    if [ "$1" != 0 ] && [ -r "$SD/timensfs.log" ]; then
        log "--- daemon log (last lines) ---"
        tail -n 20 "$SD/timensfs.log" >&2
    fi
}
