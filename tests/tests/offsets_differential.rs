//! Differential test of `/proc/PID/timens_offsets` writes: every `offsets-case` case
//! runs once against the kernel (`offsets-case --kernel CASE`) and once under the
//! emulation (`timens run --for-children -- offsets-case CASE`); results, the content
//! after the case and any bytes read must be identical, except for the cases in
//! `offsets::KNOWN_DIFFERENCES`.
//!
//! `timens` is taken from `$TIMENS_BIN`, else from the cargo target directory that
//! holds this test's binaries (`target/<profile>/timens`, built by
//! `cargo build -p timens-cli`). The daemon it starts serves a state directory of this
//! test's own, and is ended when the test ends. Skips with a named reason when it is missing, when not
//! root, when /dev/fuse is missing, or when the kernel oracle is unavailable.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use timensfs_tests::harness::{self, comparable};
use timensfs_tests::offsets::{known_difference, CASES};
use timensfs_tests::sandbox::{self, StateDir};

const BIN: &str = env!("CARGO_BIN_EXE_offsets-case");
const TIMEOUT: Duration = Duration::from_secs(20);

/// `timens`: `$TIMENS_BIN`, else next to `offsets-case`, else in the target directory of this
/// test executable.
fn find_timens() -> Result<PathBuf, String> {
    let hint = Path::new(BIN).parent().unwrap_or(Path::new("."));
    sandbox::find_timens(&[hint])
}

fn preconditions() -> Result<PathBuf, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not-root: the emulation mounts FUSE and the oracle needs root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("no-dev-fuse: /dev/fuse does not exist".into());
    }
    harness::kernel_timens_support()?;
    find_timens()
}

/// One-line rendering of a JSON value for the mismatch table.
fn show(v: &Value) -> String {
    v.to_string()
}

#[test]
fn emulation_matches_kernel() {
    let timens = match preconditions() {
        Ok(p) => p,
        Err(reason) => {
            eprintln!("SKIP offsets_differential::emulation_matches_kernel: {reason}");
            return;
        }
    };
    eprintln!("offsets_differential: using timens at {}", timens.display());
    // A daemon of its own, ended (and its directory removed) when the test ends.
    let state = StateDir::new("offsets_differential");

    // (case, field, kernel, emulation)
    let mut mismatches: Vec<(String, String, String, String)> = Vec::new();
    let mut known = Vec::new();
    for case in CASES.iter().map(|c| c.name) {
        let kernel = harness::run_case(Command::new(BIN).args(["--kernel", case]), case, TIMEOUT);
        let emul = harness::run_case(
            Command::new(&timens)
                .args(["run", "--state-dir"])
                .arg(state.path())
                .args(["--for-children", "--", BIN, case]),
            case,
            TIMEOUT,
        );
        let (kernel, emul) = match (kernel, emul) {
            (Ok(k), Ok(e)) => (comparable(&k), comparable(&e)),
            (k, e) => {
                let k = k
                    .map(|v| show(&comparable(&v)))
                    .unwrap_or_else(|e| format!("ERROR {e}"));
                let e = e
                    .map(|v| show(&comparable(&v)))
                    .unwrap_or_else(|e| format!("ERROR {e}"));
                mismatches.push((case.to_string(), "run".into(), k, e));
                continue;
            }
        };
        for field in ["results", "after", "read"] {
            if kernel[field] != emul[field] {
                let row = (
                    case.to_string(),
                    field.to_string(),
                    show(&kernel[field]),
                    show(&emul[field]),
                );
                match known_difference(case) {
                    Some((_, why)) => known.push((row, why)),
                    None => mismatches.push(row),
                }
            }
        }
    }
    for ((case, field, k, e), why) in &known {
        eprintln!("known difference {case}.{field}: kernel {k}, emulation {e} ({why})");
    }
    if !mismatches.is_empty() {
        let w0 = mismatches
            .iter()
            .map(|m| m.0.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let w1 = mismatches
            .iter()
            .map(|m| m.1.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let w2 = mismatches
            .iter()
            .map(|m| m.2.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let mut table = format!(
            "{:<w0$} | {:<w1$} | {:<w2$} | emulation\n",
            "case", "field", "kernel"
        );
        for (case, field, k, e) in &mismatches {
            table.push_str(&format!("{case:<w0$} | {field:<w1$} | {k:<w2$} | {e}\n"));
        }
        panic!(
            "{} of {} cases differ between the kernel and the emulation:\n{table}",
            mismatches
                .iter()
                .map(|m| &m.0)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            CASES.len()
        );
    }
}
