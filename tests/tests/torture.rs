//! The daemon under concurrent namespace churn, against the kernel's own time namespaces.
//!
//! - `race_write_fork_keeps_the_kernels_order`: a `timens_offsets` writer and a forker racing on
//!   one pending namespace (`race-write-fork`), on the kernel and under the emulation.
//! - `four_unshare_loops_in_two_sandboxes_finish`: four util-linux `unshare -T` loops in each of
//!   two sandboxes at once (one `--pid`), 1,200 runs: every run succeeds, nothing hangs.
//!
//! All of them run under a [`Watchdog`]: a task stuck in D state on the test's own FUSE
//! connections (or any thread of its daemon) for over 2 s fails the test, and those connections
//! are aborted so the machine recovers. One test at a time (the watchdog's "own connections"
//! are those that appeared after it started). Each test has a daemon of its own, ended at the
//! end, also on failure. Skips with a named reason unless root, /dev/fuse, the kernel's time
//! namespaces and the tools the workload runs are there.

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
