//! Helpers for the clock library's tests: the built library, small C programs compiled at test
//! time, runs with `LD_PRELOAD` on the host and inside `timens run` sandboxes, and parsers of
//! the programs' output.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use timensfs_tests::harness::run_with_timeout;
pub use timensfs_tests::harness::Finished;
pub use timensfs_tests::sandbox::{Env, Needs};

/// Hang protection for one program run (the programs have their own 10-15 s alarms).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// `libtimens_preload.so`: `$TIMENS_PRELOAD_LIB`, else the one in this test's target
/// directory, rebuilt first: `cargo test` builds the tests but not the cdylib, and a stale
/// library would test old code.
pub fn library() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if std::env::var_os("TIMENS_PRELOAD_LIB").is_none() {
        BUILT.get_or_init(build_library).clone()?;
    }
    timensfs_tests::sandbox::find_bin("libtimens_preload.so", "TIMENS_PRELOAD_LIB", &[])
}

/// `cargo build -p timens-preload` in the profile of this test binary
/// (`target/<profile>/deps/<test>`), when run by cargo (`$CARGO` set).
fn build_library() -> Result<(), String> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let profile = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let dir = exe.parent()?.parent()?;
            Some(dir.file_name()?.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "debug".into());
    let mut c = Command::new(cargo);
    c.args([
        "build",
        "--quiet",
        "-p",
        "timens-preload",
        "--manifest-path",
    ])
    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    match profile.as_str() {
        "debug" => {}
        "release" => {
            c.arg("--release");
        }
        other => {
            c.args(["--profile", other]);
        }
    }
    let out = c.output().map_err(|e| format!("cargo-failed: {e}"))?;
    assert!(
        out.status.success(),
        "building the library: {c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

static COMPILE: Mutex<()> = Mutex::new(());

/// `tests/c/NAME.c` compiled (once per test binary) into the target's temporary directory.
/// The error is a named skip reason.
pub fn program(name: &str) -> Result<PathBuf, String> {
    let _guard = COMPILE.lock().unwrap_or_else(|e| e.into_inner());
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(format!("{name}.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("timens-preload-c");
    std::fs::create_dir_all(&dir).map_err(|e| format!("tmpdir: {}: {e}", dir.display()))?;
    let exe = dir.join(name);
    let fresh = std::fs::metadata(&exe)
        .and_then(|m| m.modified())
        .ok()
        .zip(std::fs::metadata(&src).and_then(|m| m.modified()).ok())
        .is_some_and(|(built, source)| built >= source);
    if fresh {
        return Ok(exe);
    }
    // Several test binaries may compile at once: build under a private name, then rename.
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let out = Command::new("cc")
        .args(["-O2", "-Wall", "-pthread", "-o"])
        .arg(&tmp)
        .arg(&src)
        .output()
        .map_err(|e| format!("no-cc: cannot run cc: {e}"))?;
    if !out.status.success() {
        panic!(
            "cc {} failed:\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::rename(&tmp, &exe).map_err(|e| format!("rename {}: {e}", tmp.display()))?;
    Ok(exe)
}

/// Library and programs, or a printed `SKIP test: reason`.
pub fn host_setup(test: &str, programs: &[&str]) -> Option<(PathBuf, Vec<PathBuf>)> {
    let r = library().and_then(|lib| {
        let progs = programs
            .iter()
            .map(|p| program(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((lib, progs))
    });
    match r {
        Ok(v) => Some(v),
        Err(reason) => {
            eprintln!("SKIP {test}: {reason}");
            None
        }
    }
}

/// Library, programs and a sandbox environment (root, /dev/fuse, timens, timensfs), or a
/// printed `SKIP test: reason`.
pub fn sandbox_setup(test: &str, programs: &[&str]) -> Option<(PathBuf, Vec<PathBuf>, Env)> {
    let (lib, progs) = host_setup(test, programs)?;
    let env = Env::new(test, Needs::default())?;
    Some((lib, progs, env))
}

/// Runs `cmd` with the library preloaded, on the host.
pub fn run_preloaded<S: AsRef<OsStr>>(lib: &Path, cmd: &[S]) -> Finished {
    let mut c = Command::new(cmd[0].as_ref());
    c.args(&cmd[1..]).env("LD_PRELOAD", lib);
    run_with_timeout(&mut c, TIMEOUT).unwrap_or_else(|e| panic!("{c:?}: {e}"))
}

/// `timens run OPTS -- env LD_PRELOAD=LIB CMD...` (the sandbox's own injection is off, so the
/// library is loaded exactly as this test says).
pub fn run_sandboxed<S: AsRef<OsStr>>(env: &Env, lib: &Path, opts: &[&str], cmd: &[S]) -> Finished {
    let mut all_opts = vec!["--no-preload"];
    all_opts.extend_from_slice(opts);
    let mut full: Vec<&OsStr> = vec![OsStr::new("env")];
    let preload = format!("LD_PRELOAD={}", lib.display());
    full.push(OsStr::new(&preload));
    full.extend(cmd.iter().map(|s| s.as_ref()));
    let mut c = env.run_cmd(&all_opts, &full);
    let f = run_with_timeout(&mut c, TIMEOUT).unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let _ = env.state.daemon_pid();
    f
}

pub fn assert_success(what: &str, f: &Finished) {
    assert!(
        f.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        f.status,
        f.stdout,
        f.stderr
    );
}

/// A clock reading in nanoseconds.
pub fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock})");
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// The clocks compared with the host, with their reading offset class.
pub const CLOCKS: [(libc::clockid_t, &str); 7] = [
    (libc::CLOCK_REALTIME, "realtime"),
    (libc::CLOCK_MONOTONIC, "monotonic"),
    (libc::CLOCK_MONOTONIC_RAW, "monotonic"),
    (libc::CLOCK_REALTIME_COARSE, "realtime"),
    (libc::CLOCK_MONOTONIC_COARSE, "monotonic"),
    (libc::CLOCK_BOOTTIME, "boottime"),
    (libc::CLOCK_TAI, "realtime"),
];

/// Host readings of every clock in [`CLOCKS`] (ns).
pub fn host_clocks() -> HashMap<libc::clockid_t, i128> {
    CLOCKS.iter().map(|&(c, _)| (c, now_ns(c))).collect()
}

/// `clocks` output: (via, clock) -> ns or Err(errno); plus the other `key value` lines.
pub struct ClockOutput {
    pub readings: HashMap<(String, i32), Result<i128, i32>>,
    pub values: HashMap<String, String>,
}

pub fn parse_clocks(stdout: &str) -> ClockOutput {
    let mut readings = HashMap::new();
    let mut values = HashMap::new();
    for line in stdout.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [via @ ("libc" | "sys"), clock, "err", e] => {
                readings.insert(
                    (via.to_string(), clock.parse().unwrap()),
                    Err(e.parse().unwrap()),
                );
            }
            [via @ ("libc" | "sys"), clock, sec, nsec] => {
                let ns =
                    sec.parse::<i128>().unwrap() * 1_000_000_000 + nsec.parse::<i128>().unwrap();
                readings.insert((via.to_string(), clock.parse().unwrap()), Ok(ns));
            }
            [key, rest @ ..] => {
                values.insert(key.to_string(), rest.join(" "));
            }
            [] => {}
        }
    }
    ClockOutput { readings, values }
}

/// Checks every clock of a `clocks` run against host readings taken just before and after it:
/// reading - offset(class) must lie in [before, after] for both `libc` and `sys`.
pub fn check_clocks(
    out: &ClockOutput,
    before: &HashMap<libc::clockid_t, i128>,
    after: &HashMap<libc::clockid_t, i128>,
    offset_ns: impl Fn(&str) -> i128,
) {
    for &(clock, class) in &CLOCKS {
        for via in ["libc", "sys"] {
            let got = out
                .readings
                .get(&(via.to_string(), clock))
                .unwrap_or_else(|| panic!("no {via} reading of clock {clock}"))
                .unwrap_or_else(|e| panic!("{via} clock {clock} failed: errno {e}"));
            let host = got - offset_ns(class);
            let (lo, hi) = (before[&clock], after[&clock]);
            assert!(
                lo <= host && host <= hi,
                "{via} clock {clock} ({class}): {got} - offset = {host}, host window [{lo}, {hi}] \
                 (off by {} ms)",
                if host < lo {
                    (host - lo) / 1_000_000
                } else {
                    (host - hi) / 1_000_000
                }
            );
        }
    }
}

/// The `key value` lines of a program's output.
pub fn key_values(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Every wait of `tests/c/waits.c`: absolute MONOTONIC/BOOTTIME deadlines (translated in a
/// sandbox) and the controls that must not be translated (REALTIME, relative).
pub const WAIT_MODES: [&str; 24] = [
    "clock_nanosleep",
    "clock_nanosleep_boottime",
    "clock_nanosleep_realtime",
    "clock_nanosleep_relative",
    "sys_clock_nanosleep",
    "timer_settime",
    "timer_settime_boottime",
    "sys_timer_settime",
    "timer_settime_untracked",
    "timerfd_settime",
    "timerfd_settime_dup",
    "timerfd_settime_boottime",
    "sys_timerfd_settime",
    "pthread_cond_timedwait",
    "pthread_cond_timedwait_realtime",
    "pthread_cond_clockwait",
    "sem_clockwait",
    "pthread_mutex_clocklock",
    "pthread_rwlock_clockrdlock",
    "pthread_rwlock_clockwrlock",
    "pthread_clockjoin_np",
    "futex_wait_bitset",
    "futex_wait_relative",
    "futex_waitv",
];
