//! The daemon under concurrent namespace churn, against the kernel's own time namespaces.
//!
//! - `race_write_fork_keeps_the_kernels_order`: a `timens_offsets` writer and a forker racing on
//!   one pending namespace (`race-write-fork`), on the kernel and under the emulation.
//! - `four_unshare_loops_in_two_sandboxes_finish`: four util-linux `unshare -T` loops in each of
//!   two sandboxes at once (one `--pid`), 1,200 runs: every run succeeds, nothing hangs.
//! - `torture_matches_the_kernels_errors`: sandboxes (plain and `--pid`) each running
//!   `tests/torture/workload.sh` (namespace system calls, offsets writes, fork/vfork/spawn/exec,
//!   reads of every virtual file, ps, ls, nsenter) for `TIMENS_TORTURE_SECS` (default 20),
//!   beside the same workload in kernel time namespaces: no error kind the kernel does not give.
//!
//! All of them run under a [`Watchdog`]: a task stuck in D state on the test's own FUSE
//! connections (or any thread of its daemon) for over 2 s fails the test, and those connections
//! are aborted so the machine recovers. One test at a time (the watchdog's "own connections"
//! are those that appeared after it started). Each test has a daemon of its own, ended at the
//! end, also on failure. Skips with a named reason unless root, /dev/fuse, the kernel's time
//! namespaces and the tools the workload runs are there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use timensfs_tests::harness::{run_with_timeout, Finished};
use timensfs_tests::sandbox::{Env, Needs};
use timensfs_tests::watchdog::Watchdog;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const NEEDS: Needs = Needs {
    kernel_oracle: true,
    tools: &[
        "unshare", "nsenter", "bash", "sh", "ps", "ls", "cat", "readlink",
    ],
};

const RACE: &str = env!("CARGO_BIN_EXE_race-write-fork");

fn bin_dir() -> PathBuf {
    Path::new(RACE).parent().expect("a directory").to_path_buf()
}

fn workload() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("torture/workload.sh")
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn watch(env: &Env) -> Watchdog {
    let state = env.state.path().to_path_buf();
    Watchdog::start(move || {
        std::fs::read_to_string(state.join("timensfs.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
}

fn assert_no_hang(dog: Watchdog) {
    let reports = dog.finish();
    assert!(reports.is_empty(), "tasks stuck:\n{}", reports.join("\n"));
}

fn done(what: &str, r: Result<Finished, String>) -> Finished {
    let f = r.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        f.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        f.status,
        f.stdout,
        f.stderr
    );
    f
}

#[test]
fn race_write_fork_keeps_the_kernels_order() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = Env::new("race_write_fork_keeps_the_kernels_order", NEEDS) else {
        return;
    };
    let rounds = env_num("TIMENS_RACE_ROUNDS", 10_000).to_string();
    let dog = watch(&env);
    let kernel = done(
        "race-write-fork on the kernel",
        run_with_timeout(Command::new(RACE).arg(&rounds), Duration::from_secs(300)),
    );
    let emul = done(
        "race-write-fork in a sandbox",
        run_with_timeout(
            &mut env.run_cmd(&[], &[RACE, rounds.as_str()]),
            Duration::from_secs(600),
        ),
    );
    eprintln!(
        "race-write-fork, {rounds} rounds: kernel {} | emulation {}",
        kernel.stdout.trim(),
        emul.stdout.trim()
    );
    assert_no_hang(dog);
}

#[test]
fn four_unshare_loops_in_two_sandboxes_finish() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = Env::new("four_unshare_loops_in_two_sandboxes_finish", NEEDS) else {
        return;
    };
    let runs = env_num("TIMENS_UNSHARE_RUNS", 150);
    // Four loops; each prints its failures (with the command's stderr) and its count.
    let script = format!(
        r#"loop() {{
            local n=0 i err
            for i in $(seq {runs}); do
                if ! err=$(unshare -T --monotonic 1000 --boottime 5000 sh -c "cat /proc/uptime" 2>&1 >/dev/null); then
                    echo "FAILED $err"
                fi
                n=$((n + 1))
            done
            echo "RUNS $n"
        }}
        loop & loop & loop & loop & wait"#
    );
    let dog = watch(&env);
    let t0 = Instant::now();
    let results: Vec<(String, Result<Finished, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = [
            &["--boottime", "1000"][..],
            &["--pid", "--boottime", "1000"],
        ]
        .into_iter()
        .map(|opts| {
            let mut cmd = env.run_cmd(opts, &["bash", "-c", script.as_str()]);
            s.spawn(move || {
                (
                    format!("{opts:?}"),
                    run_with_timeout(&mut cmd, Duration::from_secs(300)),
                )
            })
        })
        .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = t0.elapsed();
    let stuck = dog.finish();
    assert!(stuck.is_empty(), "tasks stuck:\n{}", stuck.join("\n"));
    let mut total = 0;
    for (opts, r) in results {
        let f = done(&format!("timens run {opts}"), r);
        let failed: Vec<&str> = f
            .stdout
            .lines()
            .filter(|l| l.starts_with("FAILED"))
            .collect();
        assert!(
            failed.is_empty(),
            "{opts}: {} failures: {failed:?}",
            failed.len()
        );
        let n: u64 = f
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("RUNS ")?.parse::<u64>().ok())
            .sum();
        assert_eq!(n, 4 * runs, "{opts}: runs counted {n}");
        total += n;
    }
    eprintln!("four unshare -T loops in two sandboxes: {total} runs, 0 failed, in {took:.1?}");
}

/// Errors by kind (`op status message`) and operations per worker, from workload outputs.
#[derive(Default)]
struct Tally {
    errors: BTreeMap<String, u64>,
    ops: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, out: &str) {
        for l in out.lines() {
            if let Some(kind) = l.strip_prefix("ERR ") {
                *self.errors.entry(kind.to_string()).or_default() += 1;
            } else if let Some(rest) = l.strip_prefix("OPS ") {
                let mut w = rest.split_whitespace();
                let (name, n) = match (w.next(), w.next()) {
                    (Some(name), Some(n)) => (name, n),
                    (Some(n), None) => ("ns-churn", n),
                    _ => continue,
                };
                *self.ops.entry(name.to_string()).or_default() += n.parse::<u64>().unwrap_or(0);
            }
        }
    }
}

#[test]
fn torture_matches_the_kernels_errors() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = Env::new("torture_matches_the_kernels_errors", NEEDS) else {
        return;
    };
    let secs = env_num("TIMENS_TORTURE_SECS", 20);
    let sandboxes = env_num("TIMENS_TORTURE_SANDBOXES", 4).max(2);
    let script = workload();
    let bins = bin_dir();
    let limit = Duration::from_secs(secs + 120);
    let dog = watch(&env);
    let (emul, kernel) = std::thread::scope(|s| {
        let emul: Vec<_> = (0..sandboxes)
            .map(|i| {
                let pid = i % 2 == 1;
                let mut opts = vec!["--boottime", "1000"];
                if pid {
                    opts.push("--pid");
                }
                let seed = (i + 1).to_string();
                let args = [
                    "bash".as_ref(),
                    script.as_os_str(),
                    secs.to_string().as_ref(),
                    bins.as_os_str(),
                    seed.as_ref(),
                ]
                .map(|a: &std::ffi::OsStr| a.to_os_string());
                let mut cmd = env.run_cmd(&opts, &args);
                s.spawn(move || {
                    (
                        format!("sandbox {i} {opts:?}"),
                        run_with_timeout(&mut cmd, limit),
                    )
                })
            })
            .collect();
        // The same workload in the kernel's own time namespaces, mount-only and with a pid
        // namespace, at the same time.
        let kernel: Vec<_> = [false, true]
            .into_iter()
            .enumerate()
            .map(|(i, pid)| {
                let mut cmd = Command::new("unshare");
                cmd.args(["-m", "-T", "--boottime", "1000", "--fork"]);
                if pid {
                    cmd.args(["-p", "--mount-proc"]);
                }
                cmd.arg("bash")
                    .arg(&script)
                    .arg(secs.to_string())
                    .arg(&bins)
                    .arg((i + 1).to_string());
                s.spawn(move || {
                    (
                        format!("kernel pid={pid}"),
                        run_with_timeout(&mut cmd, limit),
                    )
                })
            })
            .collect();
        let join = |v: Vec<
            std::thread::ScopedJoinHandle<'_, (String, Result<Finished, String>)>,
        >| { v.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>() };
        (join(emul), join(kernel))
    });
    let stuck = dog.finish();
    let (mut e, mut k) = (Tally::default(), Tally::default());
    for (what, r) in emul {
        e.add(&done(&what, r).stdout);
    }
    for (what, r) in kernel {
        k.add(&done(&what, r).stdout);
    }
    eprintln!("torture, {secs} s, {sandboxes} sandboxes beside 2 kernel namespaces:");
    eprintln!("  operations  emulation {:?}", e.ops);
    eprintln!("  operations  kernel    {:?}", k.ops);
    eprintln!("  errors      emulation {:?}", e.errors);
    eprintln!("  errors      kernel    {:?}", k.errors);
    assert!(stuck.is_empty(), "tasks stuck:\n{}", stuck.join("\n"));
    let kernel_kinds: BTreeSet<&String> = k.errors.keys().collect();
    let extra: Vec<_> = e
        .errors
        .iter()
        .filter(|(kind, _)| !kernel_kinds.contains(kind))
        .collect();
    assert!(
        extra.is_empty(),
        "errors the kernel does not give: {extra:?}"
    );
    for worker in ["unshare-1", "unshare-2", "tools", "ns-churn"] {
        assert!(
            e.ops.get(worker).copied().unwrap_or(0) > 0,
            "worker {worker} did nothing: {:?}",
            e.ops
        );
    }
}
