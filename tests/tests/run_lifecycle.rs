//! The daemon over time: sandboxes that come and go leave nothing behind, and a killed daemon's
//! successor finds every namespace again with its offsets (DESIGN "The offset store": it survives
//! a daemon crash or restart and loses no namespace and no offset).
//!
//! Each test has a state directory (and so a daemon) of its own; see `timensfs_tests::sandbox`.

use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use timensfs_tests::sandbox::{self, fuse_mounts, is_alive, wait_until, Env, Needs};

/// Resources of the daemon that a sandbox takes while it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Usage {
    fds: usize,
    threads: usize,
    host_fuse_mounts: usize,
    daemon_fuse_mounts: usize,
    slots: usize,
    /// Store views: files in the state directory's `views/`, and the daemon's mappings of them.
    view_files: usize,
    view_maps: usize,
}

fn usage(env: &Env, pid: u32) -> Usage {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("daemon {pid} fds: {e}"))
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: line");
    Usage {
        fds,
        threads,
        host_fuse_mounts: fuse_mounts("/proc/self/mountinfo"),
        daemon_fuse_mounts: fuse_mounts(&format!("/proc/{pid}/mountinfo")),
        slots: env.status().len(),
        view_files: std::fs::read_dir(env.state.path().join("views"))
            .map(|d| d.count())
            .unwrap_or(0),
        view_maps: std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .expect("daemon maps")
            .lines()
            .filter(|l| l.contains("/views/"))
            .count(),
    }
}

/// The daemon's usage once no sandbox holds a slot or a store view (waits up to 3 s for that).
fn idle_usage(env: &Env, pid: u32) -> Usage {
    let mut u = usage(env, pid);
    wait_until(Duration::from_secs(3), || {
        u = usage(env, pid);
        u.slots == 0 && u.view_files == 0 && u.view_maps == 0
    });
    u
}

/// Ends a sandbox left waiting on its input; it must exit with success.
fn finish_ok(live: &mut sandbox::Background) {
    let f = live.finish();
    assert!(
        f.status.success(),
        "live sandbox: {} {}",
        f.status,
        f.stderr
    );
}

/// Waits up to 3 s for the daemon's usage to equal `baseline`; returns the last value seen.
fn settle(env: &Env, pid: u32, baseline: Usage) -> Usage {
    let mut last = usage(env, pid);
    wait_until(Duration::from_secs(3), || {
        last = usage(env, pid);
        last == baseline
    });
    last
}

/// After 100 sandboxes have run and exited one after the other, the daemon's open files,
/// threads, FUSE mounts (host's and its own mount namespace) and store slots are back where they
/// were after the first.
#[test]
fn a_hundred_sandboxes_leave_nothing_behind() {
    let needs = Needs {
        kernel_oracle: false,
        tools: &["true", "bash"],
    };
    let Some(env) = Env::new("a_hundred_sandboxes_leave_nothing", needs) else {
        return;
    };
    // The first run starts the daemon; its resources once that sandbox is gone are the baseline.
    let f = env.run(&[], &["true"]);
    assert!(f.status.success(), "first run: {} {}", f.status, f.stderr);
    let pid = env.daemon_pid();
    let baseline = idle_usage(&env, pid);
    assert_eq!(
        (baseline.slots, baseline.view_files, baseline.view_maps),
        (0, 0, 0),
        "the first sandbox's slot or store view was not released: {baseline:?}"
    );
    assert_eq!(
        baseline.host_fuse_mounts,
        fuse_mounts("/proc/self/mountinfo"),
        "sandboxes must not mount anything in the host's mount namespace"
    );
    // The measurement sees a live sandbox (its /dev/fuse and procfs fds, its slot).
    let mut live = env.spawn(&[], &["bash", "-c", "echo up; read -r _ || true"]);
    assert_eq!(live.line(), "up");
    let during = usage(&env, pid);
    assert!(
        during.fds > baseline.fds
            && during.slots == baseline.slots + 1
            && (during.view_files, during.view_maps) == (1, 1),
        "a live sandbox is not visible in the daemon's usage: {during:?} vs {baseline:?}"
    );
    finish_ok(&mut live);
    eprintln!("baseline {baseline:?}, with one sandbox {during:?}");
    for i in 0..100 {
        let f = env.run(&[], &["true"]);
        assert!(f.status.success(), "run {i}: {} {}", f.status, f.stderr);
    }
    assert_eq!(
        env.daemon_pid(),
        pid,
        "the daemon was replaced during the runs"
    );
    let after = settle(&env, pid, baseline);
    assert_eq!(
        after, baseline,
        "daemon resources after 100 sandboxes vs after the first"
    );
}

/// The wait channels of the daemon's FUSE session threads (`fuser-N`).
fn session_waits(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("daemon tasks") {
        let t = t.expect("task entry").path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        if comm.starts_with("fuser-") {
            out.push(std::fs::read_to_string(t.join("wchan")).unwrap_or_default());
        }
    }
    out
}

/// A daemon pinned to one CPU keeps one FUSE thread per sandbox reading and parks the other
/// (fs/src/readers.rs): after `ps -ef` in a sandbox with a boottime offset, one thread waits
/// in the FUSE device and one on a futex. `ps` sees every process all the same, and once the
/// sandboxes are gone the parked threads have ended too (back to the baseline).
#[test]
fn a_daemon_pinned_to_one_cpu_parks_a_reader_and_ends_it() {
    let needs = Needs {
        kernel_oracle: false,
        tools: &["true", "bash", "ps", "taskset"],
    };
    let Some(env) = Env::new("pinned_daemon_parks", needs) else {
        return;
    };
    let f = env.run(&[], &["true"]);
    assert!(f.status.success(), "first run: {} {}", f.status, f.stderr);
    let pid = env.daemon_pid();
    let f = sandbox::run(Command::new("taskset").args(["-a", "-p", "-c", "0", &pid.to_string()]));
    assert!(f.status.success(), "taskset: {}", f.stderr);
    let baseline = idle_usage(&env, pid);
    let script = "for i in 1 2 3; do ps -ef > /dev/null; done; ps -e --no-headers | wc -l; \
                  echo up; read -r _ || true";
    let mut live = env.spawn(&["--boottime", "86400"], &["bash", "-c", script]);
    let seen: usize = live.line().trim().parse().expect("a process count");
    assert_eq!(live.line(), "up");
    let host = sandbox::run(Command::new("ps").args(["-e", "--no-headers"]));
    let on_host = host.stdout.lines().count();
    assert!(
        seen + 20 >= on_host && seen > 3,
        "ps in the sandbox saw {seen} processes, the host {on_host}"
    );
    let waits = session_waits(pid);
    assert_eq!(
        waits.len(),
        2,
        "one sandbox, two session threads: {waits:?}"
    );
    assert!(
        waits.iter().any(|w| w.contains("fuse_dev")) && waits.iter().any(|w| w.contains("futex")),
        "expected one thread reading /dev/fuse and one parked: {waits:?}"
    );
    finish_ok(&mut live);
    for i in 0..5 {
        let f = env.run(
            &["--boottime", "86400"],
            &["bash", "-c", "ps -ef > /dev/null"],
        );
        assert!(f.status.success(), "run {i}: {} {}", f.status, f.stderr);
    }
    let after = settle(&env, pid, baseline);
    assert_eq!(
        after, baseline,
        "daemon resources after the sandboxes vs before"
    );
}

/// The fields of a status entry that must survive a daemon restart (not `members`/`served`:
/// the FUSE sessions die with the daemon).
fn durable(e: &Value) -> Value {
    serde_json::json!({
        "inum": e["inum"],
        "monotonic": e["monotonic"],
        "boottime": e["boottime"],
        "frozen": e["frozen"],
        "sandbox": e["sandbox"],
        "anchor_pid": e["anchor_pid"],
    })
}

/// `kill -9` of the daemon while two sandboxes live (one frozen with fractional offsets given on
/// the command line, one pending with offsets written by its shell), then a new daemon on the
/// same state directory: status lists both namespaces again, same inums, same offsets and
/// frozen states. (The sandboxes' /proc gives ENOTCONN after the kill; not tested here.)
#[test]
fn a_restarted_daemon_finds_every_namespace_and_offset() {
    let needs = Needs {
        kernel_oracle: false,
        tools: &["bash", "readlink"],
    };
    let Some(env) = Env::new("a_restarted_daemon_finds_every_namespace", needs) else {
        return;
    };
    let mut frozen = env.spawn(
        &["--monotonic", "1234.5", "--boottime", "-7"],
        &[
            "bash",
            "-c",
            "readlink /proc/self/ns/time; read -r _ || true",
        ],
    );
    let frozen_inum = sandbox::parse_ns_link(&frozen.line());
    // Builtins only: a child process would enter (and freeze) the pending namespace.
    let mut pending = env.spawn(
        &["--for-children"],
        &[
            "bash",
            "-c",
            "echo 'monotonic 77 5' > /proc/$$/timens_offsets && \
             echo 'boottime 88 6' > /proc/$$/timens_offsets && \
             echo written; read -r _ || true",
        ],
    );
    assert_eq!(pending.line(), "written");
    let before = env.status();
    // timens execs CMD: the shell is the namespace's creator (its anchor).
    let pending_inum = before
        .iter()
        .find(|e| e["anchor_pid"].as_u64() == Some(u64::from(pending.pid())))
        .and_then(|e| e["inum"].as_u64())
        .unwrap_or_else(|| panic!("no namespace anchored at pid {}: {before:?}", pending.pid()));
    let want: Vec<Value> = [frozen_inum, pending_inum]
        .iter()
        .map(|&n| {
            durable(
                sandbox::status_entry(&before, n)
                    .unwrap_or_else(|| panic!("status does not list {n}: {before:?}")),
            )
        })
        .collect();
    // What the sandboxes asked for, so the comparison after the restart is not vacuous.
    assert_eq!(
        want[0]["monotonic"],
        serde_json::json!({"sec": 1234, "nsec": 500_000_000})
    );
    assert_eq!(
        want[0]["boottime"],
        serde_json::json!({"sec": -7, "nsec": 0})
    );
    assert_eq!(want[0]["frozen"], true);
    assert_eq!(
        want[1]["monotonic"],
        serde_json::json!({"sec": 77, "nsec": 5})
    );
    assert_eq!(
        want[1]["boottime"],
        serde_json::json!({"sec": 88, "nsec": 6})
    );
    assert_eq!(want[1]["frozen"], false);

    let old = env.daemon_pid();
    assert!(
        env.state.is_our_daemon(old),
        "pid file names {old}, not our daemon"
    );
    // SAFETY: kill(2) of the daemon serving this test's state directory (verified above).
    unsafe { libc::kill(old as libc::pid_t, libc::SIGKILL) };
    assert!(
        wait_until(sandbox::TIMEOUT, || !is_alive(old)),
        "daemon {old} survived SIGKILL"
    );

    // A new daemon, detached (own process group), logging into the state directory; the
    // StateDir guard ends it by pid.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.state.path().join("restart.log"))
        .expect("restart log");
    let mut new = Command::new(&env.bins.timensfs)
        .arg("--state-dir")
        .arg(env.state.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start timensfs");
    let mut after = Err(String::from("not asked"));
    let up = wait_until(Duration::from_secs(10), || {
        after = env.try_status();
        after.is_ok()
    });
    let new_pid = env.state.daemon_pid();
    assert!(up, "the restarted daemon does not answer: {after:?}");
    assert_eq!(new_pid, Some(new.id()), "pid file after the restart");
    let after = after.expect("status");
    let got: Vec<Value> = [frozen_inum, pending_inum]
        .iter()
        .map(|&n| {
            durable(
                sandbox::status_entry(&after, n)
                    .unwrap_or_else(|| panic!("restarted daemon lost {n}: {after:?}")),
            )
        })
        .collect();
    assert_eq!(got, want, "namespaces before the kill vs after the restart");

    // The sandboxes' /proc is dead (ENOTCONN); end them by pid, then the new daemon.
    frozen.kill();
    pending.kill();
    env.state.stop_daemons();
    let _ = new.wait();
}
