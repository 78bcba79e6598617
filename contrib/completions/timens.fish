# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_timens_global_optspecs
    string join \n h/help V/version
end

function __fish_timens_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_timens_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_timens_using_subcommand
    set -l cmd (__fish_timens_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c timens -n "__fish_timens_needs_command" -s h -l help -d 'Print help'
complete -c timens -n "__fish_timens_needs_command" -s V -l version -d 'Print version'
complete -c timens -n "__fish_timens_needs_command" -f -a "run" -d 'Run CMD as the first member of a new time namespace, with a /proc that shows it'
complete -c timens -n "__fish_timens_needs_command" -f -a "mount" -d 'Attach the overlay to a running process\'s mount namespace (idempotent; after a daemon restart it restores a working /proc for the same namespace)'
complete -c timens -n "__fish_timens_needs_command" -f -a "oci-hook" -d 'OCI runtime hook (createContainer and poststop): reads the container state on stdin'
complete -c timens -n "__fish_timens_needs_command" -f -a "status" -d 'List every namespace the daemon knows'
complete -c timens -n "__fish_timens_using_subcommand run" -l monotonic -d 'CLOCK_MONOTONIC offset in seconds (integer or SECS.NANOS, may be negative)' -r
complete -c timens -n "__fish_timens_using_subcommand run" -l boottime -d 'CLOCK_BOOTTIME offset in seconds (integer or SECS.NANOS, may be negative)' -r
complete -c timens -n "__fish_timens_using_subcommand run" -l state-dir -d 'The daemon\'s state directory' -r -F
complete -c timens -n "__fish_timens_using_subcommand run" -l pid -d 'Also give the sandbox its own pid namespace (CMD runs as pid 1)'
complete -c timens -n "__fish_timens_using_subcommand run" -l for-children -d 'Leave CMD in its current time namespace and give it a new, writable time_for_children (write /proc/$$/timens_offsets, then start children)'
complete -c timens -n "__fish_timens_using_subcommand run" -l no-preload -d 'Do not load the clock library into the sandbox\'s processes (only /proc is virtualised)'
complete -c timens -n "__fish_timens_using_subcommand run" -s h -l help -d 'Print help'
complete -c timens -n "__fish_timens_using_subcommand mount" -l pid -d 'The process whose mount namespace (and pid namespace) gets the overlay' -r
complete -c timens -n "__fish_timens_using_subcommand mount" -l monotonic -d 'CLOCK_MONOTONIC offset in seconds, for a new namespace' -r
complete -c timens -n "__fish_timens_using_subcommand mount" -l boottime -d 'CLOCK_BOOTTIME offset in seconds, for a new namespace' -r
complete -c timens -n "__fish_timens_using_subcommand mount" -l label -d 'Label shown by `timens status` (default `mount:PID`)' -r
complete -c timens -n "__fish_timens_using_subcommand mount" -l state-dir -d 'The daemon\'s state directory' -r -F
complete -c timens -n "__fish_timens_using_subcommand mount" -l no-preload -d 'Do not load the clock library into the namespace\'s new processes'
complete -c timens -n "__fish_timens_using_subcommand mount" -s h -l help -d 'Print help'
complete -c timens -n "__fish_timens_using_subcommand oci-hook" -l state-dir -d 'The daemon\'s state directory' -r -F
complete -c timens -n "__fish_timens_using_subcommand oci-hook" -s h -l help -d 'Print help'
complete -c timens -n "__fish_timens_using_subcommand status" -l state-dir -d 'The daemon\'s state directory' -r -F
complete -c timens -n "__fish_timens_using_subcommand status" -l json -d 'Print JSON instead of a table'
complete -c timens -n "__fish_timens_using_subcommand status" -s h -l help -d 'Print help'
