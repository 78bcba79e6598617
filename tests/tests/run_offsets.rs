//! `timens run` offsets against the kernel oracle (spec D2, E9), the namespace a sandbox is in as
//! the host sees it, and refused command lines.
//!
//! Each test has a state directory (and so a daemon) of its own; see `timensfs_tests::sandbox`.
//! Skips with a named reason unless root, /dev/fuse, the built binaries and (for the oracle
//! comparisons) the kernel's time namespaces are available.

use std::path::Path;
use timensfs_tests::sandbox::{
    self, clock_now, kernel_unshare, kernel_with_offsets, offsets_text, Env, Needs,
    HALF_KTIME_SEC_MAX, INIT_TIME_INUM,
};

const ORACLE: Needs = Needs {
    kernel_oracle: true,
    tools: &["unshare", "cat"],
};

/// `timens run OFFSET_OPTS -- cat /proc/self/timens_offsets` and `unshare -T OFFSET_OPTS cat
/// /proc/self/timens_offsets` print the same bytes, and those are the expected rendering.
fn same_as_unshare(env: &Env, opts: &[&str], expected: &str) {
    let emul = env.run(opts, &["cat", "/proc/self/timens_offsets"]);
    let mut kargs: Vec<&str> = opts.to_vec();
    kargs.extend(["cat", "/proc/self/timens_offsets"]);
    let kernel = kernel_unshare(&kargs);
    assert!(
        kernel.status.success(),
        "unshare -T {kargs:?}: {} {}",
        kernel.status,
        kernel.stderr
    );
    assert!(
        emul.status.success(),
        "timens run {opts:?}: {} {}",
        emul.status,
        emul.stderr
    );
    assert_eq!(
        emul.stdout, kernel.stdout,
        "timens run {opts:?} vs unshare -T"
    );
    assert_eq!(kernel.stdout, expected, "unshare -T {kargs:?}");
    assert_eq!(emul.stderr, "", "timens run {opts:?} stderr");
}

#[test]
fn positive_offsets_match_unshare() {
    let Some(env) = Env::new("positive_offsets_match_unshare", ORACLE) else {
        return;
    };
    same_as_unshare(
        &env,
        &["--monotonic", "3600", "--boottime", "86400"],
        &offsets_text((3600, 0), (86400, 0)),
    );
}

#[test]
fn negative_offsets_match_unshare() {
    let Some(env) = Env::new("negative_offsets_match_unshare", ORACLE) else {
        return;
    };
    // -100/-200 need the host clocks above 200 s (E9: clock + offset >= 0); else half of them.
    let m = -(clock_now(libc::CLOCK_MONOTONIC).0 / 2).min(100);
    let b = -(clock_now(libc::CLOCK_BOOTTIME).0 / 2).min(200);
    let (ms, bs) = (m.to_string(), b.to_string());
    same_as_unshare(
        &env,
        &["--monotonic", &ms, "--boottime", &bs],
        &offsets_text((m, 0), (b, 0)),
    );
}

#[test]
fn largest_offsets_match_unshare() {
    let Some(env) = Env::new("largest_offsets_match_unshare", ORACLE) else {
        return;
    };
    // E9: host clock + offset may reach KTIME_SEC_MAX/2; 100 s of margin for the time between
    // computing the offset and each write. The rendering is wider than 10 columns.
    let m = HALF_KTIME_SEC_MAX - clock_now(libc::CLOCK_MONOTONIC).0 - 100;
    let b = HALF_KTIME_SEC_MAX - clock_now(libc::CLOCK_BOOTTIME).0 - 100;
    let (ms, bs) = (m.to_string(), b.to_string());
    same_as_unshare(
        &env,
        &["--monotonic", &ms, "--boottime", &bs],
        &offsets_text((m, 0), (b, 0)),
    );
}

#[test]
fn fractional_offsets_match_kernel() {
    let Some(env) = Env::new("fractional_offsets_match_kernel", ORACLE) else {
        return;
    };
    // util-linux takes whole seconds only: the oracle writes the records itself. SECS.NANOS
    // of a negative value is normalised like a timespec: -1.5 s is -2 s + 500000000 ns.
    for (opts, mono, boot) in [
        (
            ["--monotonic", "1.5", "--boottime", "2.000000001"],
            (1, 500_000_000),
            (2, 1),
        ),
        (
            ["--monotonic", "-1.5", "--boottime", "-0.25"],
            (-2, 500_000_000),
            (-1, 750_000_000),
        ),
    ] {
        let emul = env.run(&opts, &["cat", "/proc/self/timens_offsets"]);
        let kernel = kernel_with_offsets(mono, boot, &["cat", "/proc/self/timens_offsets"]);
        assert!(
            kernel.status.success(),
            "kernel {mono:?} {boot:?}: {}",
            kernel.stderr
        );
        assert!(
            emul.status.success(),
            "timens run {opts:?}: {}",
            emul.stderr
        );
        assert_eq!(emul.stdout, kernel.stdout, "timens run {opts:?} vs kernel");
        assert_eq!(kernel.stdout, offsets_text(mono, boot));
    }
}

/// The sandbox never uses the kernel's own time namespaces: seen from the host, every process of
/// the sandbox (plain and `--pid`: CMD, a child, and one that `unshare -T` put in a nested
/// namespace) is in the initial time namespace, with no pending one.
#[test]
fn sandbox_processes_stay_in_the_kernels_initial_time_namespace() {
    let needs = Needs {
        kernel_oracle: false,
        tools: &["bash", "sleep", "unshare"],
    };
    let Some(env) = Env::new("sandbox_processes_stay_in_init_timens", needs) else {
        return;
    };
    if !Path::new("/proc/self/ns/time").exists() {
        eprintln!("SKIP sandbox_processes_stay_in_init_timens: no-time-namespaces: /proc/self/ns/time does not exist");
        return;
    }
    let init = format!("time:[{INIT_TIME_INUM}]");
    for mode in [&[][..], &["--pid"][..]] {
        let mut opts = vec!["--monotonic", "3600", "--boottime", "86400"];
        opts.extend_from_slice(mode);
        let mut bg = env.spawn(
            &opts,
            &[
                "bash",
                "-c",
                "readlink /proc/self/ns/time; sleep 30 & \
                 unshare -T --boottime 5 bash -c 'readlink /proc/self/ns/time; exec sleep 30' & \
                 read -r _ || true; kill $(jobs -p); wait",
            ],
        );
        let inside = bg.line();
        assert_ne!(
            inside, init,
            "{mode:?}: the emulated namespace must have its own inum"
        );
        let nested = bg.line();
        assert!(
            nested != init && nested != inside,
            "{mode:?}: unshare -T inside: {nested} (sandbox {inside})"
        );
        let pids = descendants(bg.pid());
        assert!(
            pids.len() >= 3,
            "{mode:?}: the sandbox's processes seen from the host: {pids:?}"
        );
        for pid in pids {
            for link in ["time", "time_for_children"] {
                let Ok(text) = std::fs::read_link(format!("/proc/{pid}/ns/{link}")) else {
                    continue; // `timens` itself may have exited meanwhile
                };
                assert_eq!(
                    text.to_string_lossy(),
                    init,
                    "{mode:?}: host view of sandboxed pid {pid} ns/{link}"
                );
            }
        }
        let f = bg.finish();
        assert!(f.status.success(), "{mode:?}: {} {}", f.status, f.stderr);
    }
}

/// A refused command line: exactly one line on stderr that contains each of `names`, exit 2,
/// and nothing started (no daemon, no pid file or socket in the fresh state directory).
fn refused(test: &str, args: &[&str], names: &[&str]) {
    let needs = Needs::default();
    let Some(env) = Env::new(test, needs) else {
        return;
    };
    let mut cmd = std::process::Command::new(&env.bins.timens);
    cmd.arg("run")
        .arg("--state-dir")
        .arg(env.state.path())
        .args(args);
    let f = sandbox::run(&mut cmd);
    let lines: Vec<&str> = f.stderr.lines().collect();
    assert_eq!(
        f.status.code(),
        Some(2),
        "timens run {args:?}: exit status; stderr: {}",
        f.stderr
    );
    assert_eq!(
        lines.len(),
        1,
        "timens run {args:?}: stderr must be one line: {:?}",
        f.stderr
    );
    for name in names {
        assert!(
            lines[0].contains(name),
            "timens run {args:?}: stderr {:?} does not name {name:?}",
            lines[0]
        );
    }
    assert_eq!(f.stdout, "", "timens run {args:?}: stdout");
    assert!(
        !env.state.pidfile().exists() && !env.state.socket().exists(),
        "timens run {args:?} started a daemon in {}",
        env.state.path().display()
    );
    assert!(
        !env.state.path().exists(),
        "timens run {args:?} created {}",
        env.state.path().display()
    );
}

#[test]
fn refuses_a_non_numeric_offset() {
    refused(
        "refuses_a_non_numeric_offset",
        &["--monotonic", "abc", "--", "true"],
        &["--monotonic", "abc"],
    );
}

#[test]
fn refuses_an_out_of_range_offset() {
    refused(
        "refuses_an_out_of_range_offset",
        &["--boottime", "-99999999999", "--", "true"],
        &["--boottime", "-99999999999", "range"],
    );
}

#[test]
fn refuses_an_offset_beyond_the_host_clock_limit() {
    // E9 step 3: within ±KTIME_SEC_MAX, but the clock would pass KTIME_SEC_MAX/2.
    refused(
        "refuses_an_offset_beyond_the_host_clock_limit",
        &["--monotonic", "4611686018", "--", "true"],
        &["--monotonic", "4611686018", "range"],
    );
}

#[test]
fn refuses_a_missing_command() {
    refused(
        "refuses_a_missing_command",
        &["--monotonic", "3600"],
        &["CMD"],
    );
    refused(
        "refuses_a_missing_command",
        &["--monotonic", "3600", "--"],
        &["CMD"],
    );
}

/// Every live process below `pid` (found through each process's parent in /proc).
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 2..];
            Some((p, after.split(' ').nth(1)?.parse().ok()?))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found
}
