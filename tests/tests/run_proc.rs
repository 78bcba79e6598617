//! What a sandbox's /proc shows: boottime-derived values (spec J1, J3, J4), the `ns/time` links
//! (G1–G3), a `--for-children` namespace written from a shell (C1, C3, E7), everyday tools, and
//! an unprivileged user getting exactly the kernel's answers (F1, G4, DESIGN "The overlay").
//!
//! Each test has a state directory (and so a daemon) of its own; see `timensfs_tests::sandbox`.
//! Skips with a named reason unless root, /dev/fuse, the built binaries and the tools used are
//! available.

use std::process::Command;
use timensfs_tests::sandbox::{
    self, host_bash_ok, offsets_text, parse_btime, parse_ns_link, parse_uptime, stat_field, Env,
    Needs, INIT_TIME_INUM,
};

const BASH: Needs = Needs {
    kernel_oracle: false,
    tools: &["bash", "cat", "grep", "readlink", "stat"],
};

/// Splits the output of a script that prints `@@name` before each section.
fn sections(out: &str) -> std::collections::BTreeMap<String, String> {
    let mut map = std::collections::BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("@@") {
            cur = Some(name.to_string());
            map.insert(name.to_string(), String::new());
        } else if let Some(c) = &cur {
            let s = map.get_mut(c).expect("section exists");
            s.push_str(line);
            s.push('\n');
        }
    }
    map
}

fn section<'a>(map: &'a std::collections::BTreeMap<String, String>, name: &str) -> &'a str {
    map.get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no section {name} in {map:?}"))
}

/// J1, J3, J4 inside `--boottime 86400`: uptime shifted, idle not, btime earlier by exactly the
/// offset, and the starttime of a process outside the sandbox (pid 1) later by exactly the
/// offset in clock ticks (USER_HZ 100).
#[test]
fn boottime_offset_shows_in_uptime_btime_and_starttime() {
    let Some(env) = Env::new("boottime_offset_shows_in_proc", BASH) else {
        return;
    };
    const SCRIPT: &str =
        "echo @@uptime; cat /proc/uptime; echo @@stat; cat /proc/stat; echo @@pid1; cat /proc/1/stat";
    let read_host = || {
        (
            std::fs::read_to_string("/proc/uptime").expect("host /proc/uptime"),
            std::fs::read_to_string("/proc/stat").expect("host /proc/stat"),
            std::fs::read_to_string("/proc/1/stat").expect("host /proc/1/stat"),
        )
    };
    for mode in [&[][..], &["--pid"][..]] {
        let mut opts = vec!["--boottime", "86400"];
        opts.extend_from_slice(mode);
        let before = read_host();
        let out = env.bash_ok(&opts, SCRIPT);
        let after = read_host();
        let s = sections(&out);

        let (up, idle) = parse_uptime(section(&s, "uptime"));
        let (hup0, hidle0) = parse_uptime(&before.0);
        let (hup1, hidle1) = parse_uptime(&after.0);
        assert!(
            up - 86400.0 >= hup0 - 1.0 && up - 86400.0 <= hup1 + 1.0,
            "{mode:?}: uptime {up} inside, host {hup0}..{hup1} + 86400 (±1 s)"
        );
        assert!(
            idle >= hidle0 - 1.0 && idle <= hidle1 + 1.0,
            "{mode:?}: idle {idle} inside, host {hidle0}..{hidle1} (±1 s): J1 leaves it unshifted"
        );

        let btime = parse_btime(section(&s, "stat"));
        let (hb0, hb1) = (parse_btime(&before.1), parse_btime(&after.1));
        assert!(
            btime == hb0 - 86400 || btime == hb1 - 86400,
            "{mode:?}: btime {btime} inside, host {hb0} (then {hb1}) - 86400 exactly (J3)"
        );

        if mode.is_empty() {
            // Same pid namespace: /proc/1 is the host's pid 1.
            let start: u64 = stat_field(section(&s, "pid1"), 22)
                .parse()
                .expect("starttime");
            let host: u64 = stat_field(&before.2, 22).parse().expect("host starttime");
            assert_eq!(
                start,
                host + 8_640_000,
                "{mode:?}: /proc/1/stat field 22 (J4)"
            );
        }
    }
}

/// J4 for a process inside a `--pid` sandbox: its starttime read inside is its host starttime
/// plus the offset (the reader's offset applies).
#[test]
fn starttime_of_a_sandboxed_process_is_shifted_for_readers_inside() {
    let Some(env) = Env::new("starttime_of_a_sandboxed_process", BASH) else {
        return;
    };
    let mut bg = env.spawn(
        &["--pid", "--boottime", "86400"],
        &["bash", "-c", "read -r _; cat /proc/1/stat"],
    );
    let init = sandbox::pid_sandbox_init(bg.pid());
    let host = std::fs::read_to_string(format!("/proc/{init}/stat")).expect("host view");
    let f = bg.finish();
    assert!(f.status.success(), "{} {}", f.status, f.stderr);
    let inside: u64 = stat_field(&f.stdout, 22).parse().expect("starttime");
    let host: u64 = stat_field(&host, 22).parse().expect("starttime");
    assert_eq!(
        inside,
        host + 8_640_000,
        "sandbox init's field 22 inside vs host"
    );
}

/// G1–G3: `ns/time` and `ns/time_for_children` read `time:[N]` with the same N, not the initial
/// namespace's; `stat -L` gives inode N; two sandboxes alive at once have different N; status
/// lists both.
#[test]
fn ns_time_links_name_a_namespace_of_their_own() {
    let Some(env) = Env::new("ns_time_links", BASH) else {
        return;
    };
    const SCRIPT: &str = "readlink /proc/self/ns/time; readlink /proc/self/ns/time_for_children; \
                          stat -L -c %i /proc/self/ns/time; read -r _ || true";
    let mut first = env.spawn(&["--boottime", "5"], &["bash", "-c", SCRIPT]);
    let mut second = env.spawn(&["--pid", "--boottime", "6"], &["bash", "-c", SCRIPT]);
    let mut inums = Vec::new();
    for (name, bg) in [("first", &mut first), ("second (--pid)", &mut second)] {
        let time = bg.line();
        let tfc = bg.line();
        let ino: u64 = bg.line().trim().parse().expect("stat -L -c %i");
        let n = parse_ns_link(&time);
        assert_ne!(
            n, INIT_TIME_INUM,
            "{name}: ns/time must not be the initial namespace"
        );
        assert_eq!(tfc, time, "{name}: time_for_children (G1)");
        assert_eq!(ino, n, "{name}: stat -L inode of ns/time (G3)");
        inums.push(n);
    }
    // Both are alive (blocked on stdin) while these are compared.
    assert_ne!(
        inums[0], inums[1],
        "two live sandboxes share a namespace inum (G2)"
    );
    let status = env.status();
    for (n, boot) in [(inums[0], 5), (inums[1], 6)] {
        let e = sandbox::status_entry(&status, n)
            .unwrap_or_else(|| panic!("status does not list {n}: {status:?}"));
        assert_eq!(e["boottime"]["sec"], boot, "status entry of {n}");
    }
    for bg in [&mut first, &mut second] {
        let f = bg.finish();
        assert!(f.status.success(), "{} {}", f.status, f.stderr);
    }
}

/// `--for-children` gives the shell a writable pending namespace (C3: separate writes each set
/// their clock), which its first child enters (B1); then it is frozen (C1: EACCES, "Permission
/// denied") and the refused write changes nothing (E7).
#[test]
fn for_children_namespace_is_writable_until_a_child_enters() {
    let Some(env) = Env::new("for_children_writable_until_entered", BASH) else {
        return;
    };
    let host_before = parse_uptime(&std::fs::read_to_string("/proc/uptime").unwrap()).0;
    let f = env.run(
        &["--for-children"],
        &[
            "bash",
            "-c",
            "echo \"monotonic 172800 0\" > /proc/$$/timens_offsets; \
             echo \"boottime 604800 0\" > /proc/$$/timens_offsets; \
             cat /proc/uptime; \
             echo \"boottime 1 0\" > /proc/$$/timens_offsets; \
             echo \"rc=$?\"; cat /proc/$$/timens_offsets",
        ],
    );
    let host_after = parse_uptime(&std::fs::read_to_string("/proc/uptime").unwrap()).0;
    assert!(f.status.success(), "{} {}", f.status, f.stderr);
    let lines: Vec<&str> = f.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "stdout: {:?}", f.stdout);
    let up = parse_uptime(lines[0]).0 - 604800.0;
    assert!(
        up >= host_before - 1.0 && up <= host_after + 1.0,
        "uptime {} inside: host {host_before}..{host_after} + 604800",
        lines[0]
    );
    assert_eq!(
        lines[1], "rc=1",
        "the write after a child entered must fail"
    );
    assert_eq!(
        f.stderr.trim_end(),
        "bash: line 1: echo: write error: Permission denied",
        "EACCES once frozen (C1)"
    );
    assert_eq!(
        lines[2..].join("\n") + "\n",
        offsets_text((172800, 0), (604800, 0)),
        "offsets after the refused write (E7)"
    );
}

/// Everyday /proc users behave inside a sandbox (plain and `--pid`, under a boottime offset) as
/// on the host: deterministic output compared with the host's, the rest checked for structure.
#[test]
fn everyday_tools_work_inside() {
    let needs = Needs {
        kernel_oracle: false,
        tools: &[
            "bash", "ps", "top", "free", "uptime", "pgrep", "sysctl", "nsenter", "readlink", "ls",
            "cat", "sleep", "awk", "realpath",
        ],
    };
    let Some(env) = Env::new("everyday_tools_work_inside", needs) else {
        return;
    };
    // Deterministic: the same bytes inside and on the host.
    let same = [
        "sysctl kernel.ostype",
        "readlink /proc/self/exe",
        "cat <(echo hi)",
        "echo x | cat /dev/stdin",
        "exec 7</etc/hostname; readlink /proc/self/fd/7",
        "nsenter --net=/proc/self/ns/net true && echo nsenter-ok",
        "realpath /proc/sys/kernel",
        "free -b | awk '/^Mem:/ {print $2}'",
        "ls /proc/self/ns | grep -c .",
    ];
    let host: Vec<String> = same.iter().map(|s| host_bash_ok(s)).collect();
    let host_up = parse_uptime(&std::fs::read_to_string("/proc/uptime").unwrap()).0;
    let days = ((host_up + 86400.0) / 86400.0).floor() as u64;
    for mode in [&[][..], &["--pid"][..]] {
        let mut opts = vec!["--boottime", "86400"];
        opts.extend_from_slice(mode);
        for (script, want) in same.iter().zip(&host) {
            let got = env.bash_ok(&opts, script);
            assert_eq!(&got, want, "{mode:?}: {script}: inside vs host");
        }

        let ps = env.bash_ok(&opts, "ps -ef");
        let mut rows = ps.lines();
        let header: Vec<&str> = rows.next().unwrap_or("").split_whitespace().collect();
        assert_eq!(
            header,
            ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
            "{mode:?}: ps -ef header: {ps}"
        );
        assert!(
            ps.lines().any(|l| l.ends_with(" ps -ef")),
            "{mode:?}: ps -ef lists itself: {ps}"
        );
        if !mode.is_empty() {
            assert!(
                ps.lines()
                    .skip(1)
                    .any(|l| l.split_whitespace().nth(1) == Some("1")),
                "{mode:?}: ps -ef shows pid 1: {ps}"
            );
        }

        let top = env.bash_ok(&opts, "top -bn1");
        let first = top.lines().next().unwrap_or("");
        assert!(
            first.starts_with("top - ") && first.contains(&format!("up {days} day")),
            "{mode:?}: top -bn1 first line: {first:?} (expected up {days} day...)"
        );
        assert!(
            top.lines().any(|l| l.starts_with("Tasks:")),
            "{mode:?}: top: {top}"
        );

        let up = env.bash_ok(&opts, "uptime");
        assert!(
            up.contains(&format!("up {days} day")) && up.contains("load average:"),
            "{mode:?}: uptime: {up:?} (expected up {days} day...)"
        );

        let pg = env.bash_ok(
            &opts,
            "sleep 1000 & s=$!; pgrep -x sleep | grep -qx \"$s\" && echo pgrep-ok; kill \"$s\"",
        );
        assert_eq!(
            pg, "pgrep-ok\n",
            "{mode:?}: pgrep finds a sleep started inside"
        );

        let fds = env.bash_ok(&opts, "exec 7</etc/hostname; ls -l /proc/self/fd");
        let targets: Vec<(String, String)> = fds
            .lines()
            .filter_map(|l| l.split_once(" -> "))
            .map(|(a, b)| {
                (
                    a.split_whitespace().last().unwrap_or("").to_string(),
                    b.to_string(),
                )
            })
            .collect();
        assert!(
            targets
                .iter()
                .any(|(fd, t)| fd == "7" && t == "/etc/hostname"),
            "{mode:?}: ls -l /proc/self/fd: {fds}"
        );
        for fd in ["0", "1", "2"] {
            assert!(
                targets.iter().any(|(f, _)| f == fd),
                "{mode:?}: fd {fd} in {fds}"
            );
        }
        assert!(
            !fds.contains(".timens"),
            "{mode:?}: the hidden procfs leaks into fd link texts: {fds}"
        );

        let mi = env.bash_ok(&opts, "cat /proc/self/mountinfo");
        let proc_line = mi
            .lines()
            .rev()
            .find(|l| l.split_whitespace().nth(4) == Some("/proc"))
            .unwrap_or_else(|| panic!("{mode:?}: no /proc in mountinfo: {mi}"));
        assert!(
            proc_line.contains(" - fuse"),
            "{mode:?}: the top mount on /proc is the overlay: {proc_line}"
        );
        assert!(
            mi.lines().any(|l| l.split_whitespace().nth(4) == Some("/")),
            "{mode:?}: mountinfo lists /: {mi}"
        );
    }
}

/// `ps -o etimes=` of a sandboxed process agrees inside (where both uptime and the starttime are
/// shifted) and outside, ±1 s.
#[test]
fn elapsed_time_agrees_inside_and_outside() {
    let needs = Needs {
        kernel_oracle: false,
        tools: &["bash", "ps"],
    };
    let Some(env) = Env::new("elapsed_time_agrees", needs) else {
        return;
    };
    for mode in [&[][..], &["--pid"][..]] {
        let mut opts = vec!["--boottime", "86400", "--monotonic", "-5"];
        opts.extend_from_slice(mode);
        let mut bg = env.spawn(
            &opts,
            &["bash", "-c", "echo $$; read -r _; ps -o etimes= -p $$"],
        );
        let _inside_pid = bg.line();
        let host_pid = if mode.is_empty() {
            bg.pid()
        } else {
            sandbox::pid_sandbox_init(bg.pid())
        };
        let f =
            sandbox::run(Command::new("ps").args(["-o", "etimes=", "-p", &host_pid.to_string()]));
        assert!(f.status.success(), "host ps: {}", f.stderr);
        let outside: i64 = f.stdout.trim().parse().expect("host etimes");
        let f = bg.finish();
        assert!(f.status.success(), "{mode:?}: {} {}", f.status, f.stderr);
        let inside: i64 = f
            .stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{mode:?}: etimes {:?}", f.stdout));
        assert!(
            (inside - outside).abs() <= 1,
            "{mode:?}: etimes inside {inside}, outside {outside}"
        );
    }
}

/// An unprivileged user inside a sandbox gets exactly what the kernel gives it on the host:
/// same exit status, stdout and error text, for root's process 1 (a root-owned shell in a
/// `--pid` sandbox, the host's pid 1 otherwise) and for offsets writes (F1, F2, G4).
#[test]
fn unprivileged_user_gets_the_kernels_answers() {
    let needs = Needs {
        kernel_oracle: false,
        tools: &["bash", "setpriv", "cat", "readlink", "ls", "sed", "cut"],
    };
    let Some(env) = Env::new("unprivileged_user_gets_kernel_answers", needs) else {
        return;
    };
    const NOBODY: [&str; 4] = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let probes: &[&[&str]] = &[
        &["cat", "/proc/1/environ"],
        &["cat", "/proc/1/maps"],
        &["readlink", "/proc/1/exe"],
        &["readlink", "-v", "/proc/1/exe"],
        &["readlink", "-v", "/proc/1/ns/time"],
        &["ls", "/proc/1/fd"],
        &["cat", "/proc/1/timens_offsets"],
        &["cat", "/proc/self/timens_offsets"],
        // PID/stat fields do_task_stat hides from readers without ptrace access: start/end of
        // code, start of stack, esp, eip, wchan, data/brk/arg/env bounds, exit code.
        &[
            "sh",
            "-c",
            "sed 's/.*) //' /proc/1/stat | cut -d' ' -f24-28,33,43-50",
        ],
        &[
            "bash",
            "-c",
            "echo 'monotonic 1 0' > /proc/self/timens_offsets",
        ],
        &[
            "bash",
            "-c",
            "echo 'monotonic 1 0' > /proc/1/timens_offsets",
        ],
    ];
    for probe in probes {
        let mut host_cmd = Command::new(NOBODY[0]);
        host_cmd.args(&NOBODY[1..]).arg("--").args(*probe);
        let host = sandbox::run(&mut host_cmd);
        for mode in [&[][..], &["--pid"][..]] {
            // The probe runs as a child of a root shell, so with --pid pid 1 is root's.
            let mut cmd: Vec<&str> = vec!["bash", "-c", "\"$@\"; exit $?", "bash"];
            cmd.extend(NOBODY);
            cmd.push("--");
            cmd.extend(probe.iter());
            let got = env.run(mode, &cmd);
            assert_eq!(
                (got.status.code(), &got.stdout, &got.stderr),
                (host.status.code(), &host.stdout, &host.stderr),
                "{mode:?}: {probe:?} as uid 65534: (exit, stdout, stderr) inside vs host"
            );
        }
    }
}

/// A host `sleep 60` to read the `stat` of (a root-owned process with an address space), ended
/// (by its pid, through the Child) and reaped when dropped, also when the test fails.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Root inside a sandbox reads another process's `stat` in full, as on the host: the daemon
/// reads it with the caller's credentials, and root is permitted (the fields a non-permitted
/// reader sees as 1 or 0 are real addresses).
#[test]
fn root_reads_pid_stat_in_full() {
    let needs = Needs {
        kernel_oracle: false,
        tools: &["sh", "sed", "cut", "sleep"],
    };
    let Some(env) = Env::new("root_reads_pid_stat_in_full", needs) else {
        return;
    };
    let target = Sleeper::start();
    // start_code, end_code, start_stack; start_data .. env_end (proc(5) fields 26-28, 45-51).
    let fields = format!(
        "sed 's/.*) //' /proc/{}/stat | cut -d' ' -f24-26,43-49",
        target.pid()
    );
    let host = sandbox::run(Command::new("sh").args(["-c", &fields]));
    let unmasked = |out: &str| out.split_whitespace().any(|f| f != "0" && f != "1");
    assert!(
        host.status.success() && unmasked(&host.stdout),
        "host: {host:?}"
    );
    let inside = env.run(&[], &["sh", "-c", &fields]);
    assert_eq!(
        (inside.status.code(), &inside.stdout),
        (host.status.code(), &host.stdout),
        "root reading a process's stat address fields: inside vs host"
    );
}

/// A virtual `PID/stat` is read through the page cache when its handle is the inode's only one
/// (fs/src/statpage.rs). Readers that see different lines of the same process must each still get
/// their own, whichever read the inode before: root (the address fields in full) and uid 65534
/// (masked to 1 and 0 by do_task_stat) take turns on one sandbox's inode, through read(2) and
/// through sendfile(2) (busybox cat, which reads the page cache up to i_size), and each line
/// equals the host's for that reader, with the starttime shifted by the offset.
#[test]
fn pid_stat_readers_taking_turns_each_get_their_own_view() {
    let needs = Needs {
        kernel_oracle: false,
        tools: &["bash", "sed", "cut", "sleep", "setpriv", "busybox"],
    };
    let Some(env) = Env::new("pid_stat_readers_taking_turns", needs) else {
        return;
    };
    let target = Sleeper::start();
    let pid = target.pid();
    // After "pid (comm) ": starttime is field 20; the address fields 24-26 and 43-49 are the
    // ones a reader without ptrace access sees as 1 or 0.
    let addrs =
        |cat: &str| format!("{cat} /proc/{pid}/stat | sed 's/.*) //' | cut -d' ' -f24-26,43-49");
    let start = |cat: &str| format!("{cat} /proc/{pid}/stat | sed 's/.*) //' | cut -d' ' -f20");
    let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups --";
    let host_root = host_bash_ok(&addrs("cat"));
    let host_nobody = host_bash_ok(&format!("{nobody} {}", addrs("cat")));
    assert_ne!(
        host_root, host_nobody,
        "premise: root and uid 65534 see different address fields on the host"
    );
    let host_start: u64 = host_bash_ok(&start("cat"))
        .trim()
        .parse()
        .expect("starttime");
    let mut script = String::new();
    for cat in ["cat", "busybox cat", "cat", "busybox cat"] {
        for who in ["", nobody] {
            script.push_str(&format!("{who} {}; {who} {}\n", addrs(cat), start(cat)));
        }
    }
    let out = env.bash_ok(&["--boottime", "86400"], &script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 16, "two lines per read: {out}");
    let want_start = (host_start + 8_640_000).to_string();
    for (i, pair) in lines.chunks(2).enumerate() {
        let (cat, who) = (
            ["cat", "busybox cat"][i / 2 % 2],
            ["root", "uid 65534"][i % 2],
        );
        let want = if i % 2 == 0 { &host_root } else { &host_nobody };
        assert_eq!(
            pair[0],
            want.trim_end(),
            "read {i} ({who}, {cat}): address fields inside vs host"
        );
        assert_eq!(
            pair[1], want_start,
            "read {i} ({who}, {cat}): starttime + 86400 s"
        );
    }
}

/// procfs generates `PID/stat` at each read from position 0, so a file kept open and read again
/// shows the process's CPU time growing. Page-cached handles are refreshed after at most about
/// a tick (fs/src/statpage.rs): a busy child's utime read through one fd every 150 ms grows
/// inside as on the host (also when an earlier open left the line in the page cache).
#[test]
fn pid_stat_kept_open_shows_fresh_values() {
    let needs = Needs {
        kernel_oracle: false,
        tools: &["python3"],
    };
    let Some(env) = Env::new("pid_stat_kept_open_fresh", needs) else {
        return;
    };
    const SCRIPT: &str = r#"
import os, time
pid = os.fork()
if pid == 0:
    t = time.monotonic()
    while time.monotonic() - t < 1.5:
        pass
    os._exit(0)
# A first open+read+close leaves the line in the inode's pages: the kept fd below then starts
# from content the kernel already holds (no attribute request at its first read).
time.sleep(0.05)
with open(f"/proc/{pid}/stat", "rb") as f:
    f.read()
fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
vals = []
for _ in range(5):
    time.sleep(0.15)
    line = os.pread(fd, 4096, 0)
    vals.append(int(line.rsplit(b") ", 1)[1].split()[11]))
os.waitpid(pid, 0)
print(*vals)
"#;
    let check = |where_: &str, out: &str| {
        let vals: Vec<u64> = out
            .split_whitespace()
            .map(|v| v.parse().expect("utime"))
            .collect();
        assert_eq!(vals.len(), 5, "{where_}: {out}");
        assert!(
            vals.windows(2).all(|w| w[0] <= w[1]) && vals[4] > vals[0],
            "{where_}: utime of a busy child read again through one kept fd: {vals:?}"
        );
    };
    check(
        "host",
        &sandbox::run(Command::new("python3").args(["-c", SCRIPT])).stdout,
    );
    let inside = env.run(&["--boottime", "86400"], &["python3", "-c", SCRIPT]);
    assert!(inside.status.success(), "inside: {inside:?}");
    check("inside --boottime 86400", &inside.stdout);
}

/// The first read of a page-cached `PID/stat` gets the whole line, however late it comes after
/// the open. `ps` reads `/proc/self/stat` right after opening it, and got nothing now and then
/// under load ("Error, do this: mount -t proc proc /proc"): the open of an inode no handle had
/// read before left the kernel's size at the lookup's 0 and counted on the read's GETATTR to set
/// it, but the refresher's attribute invalidation, sent while that GETATTR was on its way, made
/// the kernel ignore the reply (attr_version moved on), and the read stopped at size 0. Opening
/// each of many fresh processes' `stat` for the first time and reading it after a delay swept
/// across the refresher's deadline hits that window in a few percent of the reads.
#[test]
fn pid_stat_first_read_after_any_delay_gets_the_line() {
    let needs = Needs {
        kernel_oracle: false,
        tools: &["python3"],
    };
    let Some(env) = Env::new("pid_stat_first_read_after_any_delay", needs) else {
        return;
    };
    const SCRIPT: &str = r#"
import os, time
N, LO_MS, HI_MS = 300, 4.0, 12.0
r, w = os.pipe()
kids = []
for _ in range(N):
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    kids.append(pid)
os.close(r)
bad = []
for i, pid in enumerate(kids):
    delay = LO_MS + (HI_MS - LO_MS) * i / (N - 1)
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    time.sleep(delay / 1000)
    line = os.read(fd, 1024)
    os.close(fd)
    if not (line.startswith(f"{pid} (".encode()) and line.endswith(b"\n")) or b"\0" in line:
        bad.append(f"{delay:.2f} ms: {line!r}")
os.close(w)
for pid in kids:
    os.waitpid(pid, 0)
print(f"{len(bad)} of {N} bad")
for b in bad[:10]:
    print(b)
"#;
    let out = env.run(&["--boottime", "1000"], &["python3", "-c", SCRIPT]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.starts_with("0 of "),
        "first reads of fresh PID/stat handles after 4-12 ms:\n{}",
        out.stdout
    );
}
