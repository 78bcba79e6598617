//! The same namespace program under the kernel's own time namespaces and under timensfs + the
//! clock library: unshare (A1), writing the pending offsets (C3), fork (B1), clone3 (A11), the
//! setns errors (B6) and setns (B5), with the clocks read at each step. Namespace ids differ
//! between the two worlds, so each `time:[N]` is replaced by a label in order of appearance;
//! everything else must be identical.
//!
//! Skips with a named reason without root, /dev/fuse, the built binaries, or kernel time
//! namespaces (the oracle).

mod common;

use common::*;
use std::collections::HashMap;
use std::process::Command;

/// `time:[N]` → `ns#k`, k in order of first appearance.
fn normalise(stdout: &str) -> Vec<String> {
    let mut labels: HashMap<String, usize> = HashMap::new();
    stdout
        .lines()
        .map(|line| {
            line.split(' ')
                .map(|w| {
                    if w.starts_with("time:[") {
                        let n = labels.len();
                        format!("ns#{}", labels.entry(w.to_string()).or_insert(n))
                    } else {
                        w.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn kernel_has_time_namespaces() -> bool {
    Command::new("unshare")
        .args(["-T", "true"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn namespace_program_matches_the_kernel() {
    let Some((lib, progs, env)) = sandbox_setup("namespace_program_matches_the_kernel", &["ns"])
    else {
        return;
    };
    if !kernel_has_time_namespaces() {
        eprintln!(
            "SKIP namespace_program_matches_the_kernel: no-kernel-timens: `unshare -T true` fails"
        );
        return;
    }
    // The kernel: the program starts inside a time namespace with these offsets (util-linux
    // unshare -T execs it, which enters the namespace on Linux >= 6.2).
    let mut k = Command::new("unshare");
    k.args(["-T", "--monotonic", "3600", "--boottime", "86400"])
        .arg(&progs[0])
        .arg("steps");
    let kernel =
        timensfs_tests::harness::run_with_timeout(&mut k, std::time::Duration::from_secs(30))
            .unwrap();
    assert_success("ns steps under unshare -T", &kernel);
    let emulated = run_sandboxed(
        &env,
        &lib,
        &["--monotonic", "3600", "--boottime", "86400"],
        &[&progs[0], std::path::Path::new("steps")],
    );
    assert_success("ns steps under timensfs", &emulated);
    let (mut kl, mut el) = (normalise(&kernel.stdout), normalise(&emulated.stdout));
    // The clone3 child prints from its own process: order relative to the parent may differ.
    kl.sort();
    el.sort();
    assert_eq!(
        el, kl,
        "kernel:\n{}\nemulation:\n{}",
        kernel.stdout, emulated.stdout
    );
}
