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
