//! The clock library inside `timens run` sandboxes: shifted clocks through libc and
//! `syscall()`, sysinfo, absolute deadlines translated to host time (a missed translation
//! hangs until the programs' 10 s watchdog), Python's timed waits, and the namespace calls
//! (unshare, fork, clone3, setns, exec) against the daemon.
//!
//! Each test has its own state directory and daemon (ended by pid on drop). Skips with a named
//! reason without root, /dev/fuse or the built binaries.

mod common;

use common::*;
use std::path::Path;

const HOUR: i128 = 3600 * 1_000_000_000;
const DAY: i128 = 24 * HOUR;

#[test]
fn clocks_are_shifted() {
    let Some((lib, progs, env)) = sandbox_setup("clocks_are_shifted", &["clocks"]) else {
        return;
    };
    let before = host_clocks();
    let f = run_sandboxed(
        &env,
        &lib,
        &["--monotonic", "3600", "--boottime", "86400"],
        &[&progs[0]],
    );
    let after = host_clocks();
    assert_success("clocks in a sandbox", &f);
    assert_eq!(f.stderr, "", "the library must be silent by default");
    let out = parse_clocks(&f.stdout);
    // H1: MONOTONIC, RAW, COARSE + 3600 s; BOOTTIME + 86400 s; REALTIME, TAI unchanged.
    check_clocks(&out, &before, &after, |class| match class {
        "monotonic" => HOUR,
        "boottime" => DAY,
        _ => 0,
    });
    // J2: uptime = host boottime + offset, rounded up.
    let ceil = |ns: i128| (ns + 999_999_999) / 1_000_000_000;
    let (lo, hi) = (
        ceil(before[&libc::CLOCK_BOOTTIME] + DAY),
        ceil(after[&libc::CLOCK_BOOTTIME] + DAY),
    );
    for key in ["uptime", "sys_uptime"] {
        let up: i128 = out.values[key].parse().unwrap();
        assert!((lo..=hi).contains(&up), "{key} {up} outside [{lo}, {hi}]");
    }
    assert_eq!(out.values["getpid"], "ok", "syscall(SYS_getpid)");
}

/// The library looks up the offset store on first use, not at load: the first reads of a
/// process must be shifted all the same, also when many threads make them at once (one opens
/// the store, the others wait for it) and in a child forked before any read.
#[test]
fn first_reads_are_shifted() {
    let Some((lib, progs, env)) = sandbox_setup("first_reads_are_shifted", &["first_use"]) else {
        return;
    };
    for args in [&["threads", "32"][..], &["fork"][..]] {
        let before = now_ns(libc::CLOCK_MONOTONIC);
        let mut cmd: Vec<&std::ffi::OsStr> = vec![progs[0].as_os_str()];
        cmd.extend(args.iter().map(std::ffi::OsStr::new));
        let f = run_sandboxed(&env, &lib, &["--monotonic", "3600"], &cmd);
        let after = now_ns(libc::CLOCK_MONOTONIC);
        assert_success("first_use", &f);
        let readings: Vec<(String, i128)> = f
            .stdout
            .lines()
            .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                ["mono", label, sec, nsec] => Some((
                    label.to_string(),
                    sec.parse::<i128>().unwrap() * 1_000_000_000 + nsec.parse::<i128>().unwrap(),
                )),
                _ => None,
            })
            .collect();
        let expected = if args[0] == "threads" { 32 } else { 2 };
        assert_eq!(readings.len(), expected, "{args:?}: {}", f.stdout);
        for (label, got) in readings {
            let host = got - HOUR;
            assert!(
                before <= host && host <= after,
                "{args:?} {label}: {got} - 3600 s = {host}, host window [{before}, {after}]"
            );
        }
    }
}

#[test]
fn debug_channel_only_when_asked() {
    let Some((lib, progs, env)) = sandbox_setup("debug_channel_only_when_asked", &["clocks"])
    else {
        return;
    };
    let f = run_sandboxed(
        &env,
        &lib,
        &["--monotonic", "10"],
        &[
            Path::new("env"),
            Path::new("TIMENS_PRELOAD_DEBUG=1"),
            &progs[0],
        ],
    );
    assert_success("clocks with TIMENS_PRELOAD_DEBUG=1", &f);
    assert!(
        f.stderr.starts_with("timens-preload: in a sandbox"),
        "stderr: {:?}",
        f.stderr
    );
}

/// Two different files of the library in one process (ld.so.preload and LD_PRELOAD naming
/// different builds): the clocks are shifted once, not twice.
#[test]
fn two_copies_shift_once() {
    let Some((lib, progs, env)) = sandbox_setup("two_copies_shift_once", &["clocks"]) else {
        return;
    };
    /// Removes the copy, also when the test fails.
    struct Copy(std::path::PathBuf);
    impl Drop for Copy {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let copy = Copy(env.state.path().with_extension("copy.so"));
    std::fs::copy(&lib, &copy.0).unwrap();
    let copy = &copy.0;
    let both = format!("LD_PRELOAD={} {}", lib.display(), copy.display());
    let before = host_clocks();
    let f = run_sandboxed(
        &env,
        &lib,
        &["--monotonic", "3600", "--boottime", "86400"],
        &[Path::new("env"), Path::new(&both), &progs[0]],
    );
    let after = host_clocks();
    assert_success("clocks with two copies", &f);
    check_clocks(
        &parse_clocks(&f.stdout),
        &before,
        &after,
        |class| match class {
            "monotonic" => HOUR,
            "boottime" => DAY,
            _ => 0,
        },
    );
}

/// Every wait mode, with a deadline of now + 0.2 s read from the shifted clock (must last
/// 0.1-2 s, not 864000 s) and an absolute deadline of 500 s, below the offset (fires at once).
/// The REALTIME and relative controls must last 0.2 s too (translating them would make them
/// fire at once).
#[test]
fn absolute_deadlines_are_translated() {
    let Some((lib, progs, env)) = sandbox_setup("absolute_deadlines_are_translated", &["waits"])
    else {
        return;
    };
    let modes = WAIT_MODES;
    let script = format!(
        "for m in {}; do for k in near past; do out=$({} $m $k); rc=$?; echo \"$m $k $rc $out\"; \
         [ $rc = 0 ] || exit 1; done; done",
        modes.join(" "),
        progs[0].display()
    );
    let f = run_sandboxed(
        &env,
        &lib,
        &["--monotonic", "864000", "--boottime", "864000"],
        &["bash", "-c", &script],
    );
    let mut seen = 0;
    for line in f.stdout.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [mode, kind, rc, rest @ ..] = fields.as_slice() else {
            panic!("bad line {line:?}");
        };
        assert_eq!(
            *rc, "0",
            "{mode} {kind}: exit status {rc} (142 = the 10 s watchdog: the deadline was not \
             translated); output {rest:?}"
        );
        let elapsed: f64 = match rest {
            ["elapsed", ns, ..] => ns.parse().unwrap(),
            _ => panic!("{mode} {kind}: bad output {rest:?}"),
        };
        match *kind {
            "near" => assert!(
                (0.1e9..2e9).contains(&elapsed),
                "{mode}: a deadline 0.2 s ahead took {elapsed} ns"
            ),
            _ => assert!(
                elapsed < 0.1e9,
                "{mode}: a deadline before the offset took {elapsed} ns instead of firing at once"
            ),
        }
        seen += 1;
    }
    assert_success("waits in a sandbox", &f);
    assert_eq!(seen, modes.len() * 2, "stdout:\n{}", f.stdout);
}

#[test]
fn python_timed_waits() {
    let python = Path::new("/usr/bin/python3");
    if !python.is_file() {
        eprintln!("SKIP python_timed_waits: tool-missing: /usr/bin/python3");
        return;
    }
    let Some((lib, _, env)) = sandbox_setup("python_timed_waits", &[]) else {
        return;
    };
    let script = r#"
import threading, time
def measure(name, f):
    s = time.monotonic(); f(); print(name, time.monotonic() - s, flush=True)
measure("time.sleep", lambda: time.sleep(0.2))
measure("Event.wait", lambda: threading.Event().wait(0.2))
c = threading.Condition()
def cond_wait():
    with c:
        c.wait(0.2)
measure("Condition.wait", cond_wait)
l = threading.Lock(); l.acquire()
measure("Lock.acquire", lambda: l.acquire(timeout=0.2))
print("monotonic", time.monotonic())
"#;
    let before = now_ns(libc::CLOCK_MONOTONIC);
    let f = run_sandboxed(
        &env,
        &lib,
        &["--monotonic", "864000"],
        &[
            Path::new("timeout"),
            Path::new("10"),
            python,
            Path::new("-c"),
            Path::new(script),
        ],
    );
    let after = now_ns(libc::CLOCK_MONOTONIC);
    assert_success("python (exit 124 = hung: a deadline not translated)", &f);
    let kv = key_values(&f.stdout);
    for name in ["time.sleep", "Event.wait", "Condition.wait", "Lock.acquire"] {
        let s: f64 = kv
            .get(name)
            .unwrap_or_else(|| panic!("no {name} line in {:?}", f.stdout))
            .parse()
            .unwrap();
        assert!((0.1..2.0).contains(&s), "{name}(0.2) took {s} s");
    }
    let mono = (kv["monotonic"].parse::<f64>().unwrap() * 1e9) as i128 - 864_000 * 1_000_000_000;
    assert!(
        before - 1_000_000 <= mono && mono <= after + 1_000_000,
        "python's time.monotonic() is not host + 864000 s"
    );
}

/// unshare (A1), fork (B1), clone3 (A11), setns errors and setns (B5, B6) in one process.
#[test]
fn namespace_calls() {
    let Some((lib, progs, env)) = sandbox_setup("namespace_calls", &["ns"]) else {
        return;
    };
    let f = run_sandboxed(
        &env,
        &lib,
        &["--monotonic", "3600", "--boottime", "86400"],
        &[&progs[0], Path::new("steps")],
    );
    assert_success("ns steps", &f);
    let kv = key_values(&f.stdout);
    let get = |k: &str| {
        kv.get(k)
            .unwrap_or_else(|| panic!("no {k} in output:\n{}", f.stdout))
            .as_str()
    };
    let sandbox_ns = get("start_time");
    assert_eq!(get("start_tfc"), sandbox_ns);
    // A1: only time_for_children changes; the caller's clocks do not.
    assert_eq!(get("unshare"), "0");
    assert_eq!(get("unshared_time"), sandbox_ns);
    let pending = get("unshared_tfc");
    assert_ne!(pending, sandbox_ns);
    assert_eq!(get("unshare_delta"), "0");
    // C1: the pending namespace is writable.
    assert_eq!(get("write"), "0");
    // B1: a forked child runs in time_for_children (monotonic 7200 instead of 3600).
    assert_eq!(get("forked_time"), pending);
    assert_eq!(get("forked_tfc"), pending);
    assert_eq!(get("fork_delta"), "3600");
    // A11: clone3(CLONE_NEWTIME): a new namespace copied from time_for_children.
    assert_eq!(get("clone3"), "0");
    assert_eq!(get("clone3_child_delta"), "3600");
    let cloned = get("clone3_child_time");
    assert_ne!(cloned, pending);
    assert_ne!(cloned, sandbox_ns);
    assert_eq!(get("clone3_child_tfc"), cloned);
    // B6: the kernel's errors.
    assert_eq!(get("setns_newnet"), libc::EINVAL.to_string());
    assert_eq!(get("setns_regular_file"), libc::EINVAL.to_string());
    assert_eq!(get("setns_bad_fd"), libc::EBADF.to_string());
    // B5: setns switches the clocks at once, and both links.
    assert_eq!(get("setns"), "0");
    assert_eq!(get("setns_delta"), "3600");
    assert_eq!(get("entered_time"), pending);
    assert_eq!(get("entered_tfc"), pending);
}

/// setns through the clock library names its target by the fd it was given (issue 19), as the
/// kernel's does: in a `--pid` sandbox, an fd of the caller's own `ns/time` succeeds and leaves
/// it where it is (B7); the `ns/time` file of another timensfs daemon's overlay (FUSE, a regular
/// file with the same inode number as the caller's namespace) and the overlay's `/proc/uptime`
/// get EINVAL (B6: a FUSE file is not nsfs). `nsenter --time` works as on the kernel.
#[test]
fn setns_takes_the_namespace_from_the_fd() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let Some((lib, progs, env)) = sandbox_setup("setns_takes_the_namespace", &["setns_fd"]) else {
        return;
    };
    // Another daemon's sandbox; its ns/time file opened from the host goes to the program as
    // fd FOREIGN (this sandbox's daemon, started by it, closes inherited fds).
    let other = Env {
        bins: env.bins.clone(),
        state: timensfs_tests::sandbox::StateDir::new("setns_takes_the_namespace-other"),
    };
    let mut s2 = other.spawn(&[], &["bash", "-c", "echo $$; read -r _"]);
    let p2 = s2.line();
    let p2 = p2.trim();
    let foreign = std::fs::File::open(format!("/proc/{p2}/root/proc/{p2}/ns/time"))
        .expect("the other overlay's ns/time, from the host");
    let foreign_ino = foreign.metadata().expect("its stat").ino();
    const FOREIGN: i32 = 100;
    let preload = format!("LD_PRELOAD={}", lib.display());
    let fd_arg = format!("fd:{FOREIGN}");
    let mut cmd = env.run_cmd(
        &["--no-preload", "--pid", "--boottime", "3"],
        &[
            std::ffi::OsStr::new("env"),
            preload.as_ref(),
            progs[0].as_os_str(),
            "/proc/self/ns/time".as_ref(),
            fd_arg.as_ref(),
            "/proc/uptime".as_ref(),
        ],
    );
    timensfs_tests::sandbox::inherit_fd_as(&mut cmd, foreign.as_raw_fd(), FOREIGN);
    let f = timensfs_tests::sandbox::run(&mut cmd);
    drop(foreign);
    s2.finish();
    assert_success("setns_fd", &f);
    let kv = key_values(&f.stdout);
    let get = |k: &str| {
        kv.get(k)
            .unwrap_or_else(|| panic!("no {k} in output:\n{}", f.stdout))
            .as_str()
    };
    let own = get("time");
    assert_eq!(
        own,
        format!("time:[{foreign_ino}]"),
        "the other daemon's first namespace has the same number as ours"
    );
    assert_eq!(get("setns:/proc/self/ns/time"), "0", "B7: into its own");
    assert_eq!(
        get(&format!("setns:{fd_arg}")),
        libc::EINVAL.to_string(),
        "another daemon's ns/time file"
    );
    assert_eq!(
        get("setns:/proc/uptime"),
        libc::EINVAL.to_string(),
        "a FUSE file that is not a namespace's"
    );
    assert_eq!(get("tfc"), own, "B5: time_for_children is the target");

    if !timensfs_tests::sandbox::on_path("nsenter") {
        eprintln!(
            "SKIP setns_takes_the_namespace_from_the_fd (nsenter part): tool-missing: nsenter"
        );
        return;
    }
    let f = run_sandboxed(
        &env,
        &lib,
        &["--pid", "--boottime", "3"],
        &[
            "nsenter",
            "--time=/proc/self/ns/time",
            "cat",
            "/proc/self/timens_offsets",
        ],
    );
    assert_success("nsenter --time=/proc/self/ns/time", &f);
    assert_eq!(
        f.stdout,
        timensfs_tests::sandbox::offsets_text((0, 0), (3, 0)),
        "nsenter into its own namespace"
    );
}

/// B4: `unshare` + offsets + exec (util-linux `unshare -T` style): the new image's clocks are
/// those of the pending namespace.
#[test]
fn exec_enters_time_for_children() {
    let Some((lib, progs, env)) = sandbox_setup("exec_enters_time_for_children", &["ns", "clocks"])
    else {
        return;
    };
    let before = host_clocks();
    let f = run_sandboxed(
        &env,
        &lib,
        &["--monotonic", "3600", "--boottime", "86400"],
        &[&progs[0], Path::new("exec"), &progs[1]],
    );
    let after = host_clocks();
    assert_success("ns exec clocks", &f);
    check_clocks(
        &parse_clocks(&f.stdout),
        &before,
        &after,
        |class| match class {
            "monotonic" => 2 * HOUR,
            "boottime" => 2 * DAY,
            _ => 0,
        },
    );
}
