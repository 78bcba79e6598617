//! The clock library outside a sandbox: a pure pass-through. Every clock equals the host's,
//! `syscall()` forwards everything, deadlines are untouched, nothing is printed; plus the glibc
//! facts the library relies on (condvar clock bit, cancellation through the interposers).

mod common;

use common::*;

#[test]
fn clocks_pass_through() {
    let Some((lib, progs)) = host_setup("clocks_pass_through", &["clocks"]) else {
        return;
    };
    let before = host_clocks();
    let boot_before = now_ns(libc::CLOCK_BOOTTIME);
    let f = run_preloaded(&lib, &[&progs[0]]);
    let boot_after = now_ns(libc::CLOCK_BOOTTIME);
    let after = host_clocks();
    assert_success("clocks", &f);
    assert_eq!(f.stderr, "", "the library must be silent");
    let out = parse_clocks(&f.stdout);
    check_clocks(&out, &before, &after, |_| 0);
    let ceil = |ns: i128| (ns + 999_999_999) / 1_000_000_000;
    for key in ["uptime", "sys_uptime"] {
        let up: i128 = out.values[key].parse().unwrap();
        assert!(
            (ceil(boot_before)..=ceil(boot_after)).contains(&up),
            "{key} {up} outside [{}, {}]",
            ceil(boot_before),
            ceil(boot_after)
        );
    }
    assert_eq!(out.values["getpid"], "ok", "syscall(SYS_getpid)");
    assert_eq!(
        out.values["bad_clock"],
        format!("-1 {}", libc::EINVAL),
        "syscall() returns -1 with errno"
    );
}

#[test]
fn deadlines_pass_through() {
    let Some((lib, progs)) = host_setup("deadlines_pass_through", &["waits"]) else {
        return;
    };
    std::thread::scope(|s| {
        for mode in WAIT_MODES {
            let (lib, prog) = (&lib, &progs[0]);
            s.spawn(move || {
                let f = run_preloaded(lib, &[prog.as_os_str(), mode.as_ref(), "near".as_ref()]);
                assert_success(mode, &f);
                let elapsed: f64 = f
                    .stdout
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{mode}: bad output {:?}", f.stdout));
                assert!(
                    (0.1e9..2e9).contains(&elapsed),
                    "{mode}: a 0.2 s deadline took {elapsed} ns"
                );
            });
        }
    });
}

/// glibc 2.36 x86_64 keeps a condvar's clock in bit 1 of the u32 at byte 36 (`__wrefs`); the
/// library's `pthread_cond_timedwait` reads it there.
#[test]
fn condvar_clock_bit_layout() {
    let Some((_, progs)) = host_setup("condvar_clock_bit_layout", &["condvar_layout"]) else {
        return;
    };
    let f = timensfs_tests::sandbox::run(&mut std::process::Command::new(&progs[0]));
    assert_success("condvar_layout", &f);
    assert_eq!(f.stdout.trim(), "size 48 plain 0 realtime 0 monotonic 1");
}

/// pthread_cancel of threads blocked in the interposed cancellation points: glibc's forced
/// unwind must pass through the interposers' frames (they are "C-unwind").
#[test]
fn cancellation_passes_through_interposers() {
    let Some((lib, progs)) = host_setup("cancellation_passes_through_interposers", &["cancel"])
    else {
        return;
    };
    let f = run_preloaded(&lib, &[&progs[0]]);
    assert_success("cancel", &f);
    assert_eq!(f.stdout.trim(), "cancelled 5");
}

/// The library loads nothing but libc (and ld.so): every exec in a sandbox pays for what it
/// loads, and libgcc_s's constructor alone costs about 200 µs of CPUID exits in a VM
/// (build.rs links the unwinder statically).
#[test]
fn loads_no_library_but_libc() {
    let Some((lib, _)) = host_setup("loads_no_library_but_libc", &[]) else {
        return;
    };
    let ld_so = std::path::Path::new("/lib64/ld-linux-x86-64.so.2");
    if !cfg!(target_arch = "x86_64") || !ld_so.exists() {
        eprintln!("SKIP loads_no_library_but_libc: no x86_64 glibc ld.so to list dependencies");
        return;
    }
    let out = std::process::Command::new(ld_so)
        .arg("--list")
        .arg(&lib)
        .output()
        .expect("run ld.so --list");
    assert!(out.status.success(), "ld.so --list {}", lib.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let loaded: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !name.starts_with("linux-vdso") && !name.starts_with('/'))
        .collect();
    assert_eq!(
        loaded,
        ["libc.so.6"],
        "dependencies of {}:\n{text}",
        lib.display()
    );
}

/// Processes that never touch a clock still run normally (init cost, fork, exec).
#[test]
fn everyday_programs_run() {
    let Some((lib, _)) = host_setup("everyday_programs_run", &[]) else {
        return;
    };
    let f = run_preloaded(
        &lib,
        &[
            "bash",
            "-c",
            "x=$(echo hi | tr a-z A-Z); sleep 0.01; date +%s >/dev/null; echo $x",
        ],
    );
    assert_success("bash", &f);
    assert_eq!(f.stdout.trim(), "HI");
    assert_eq!(f.stderr, "");
}
