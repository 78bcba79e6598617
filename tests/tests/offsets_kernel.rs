//! Runs every `offsets-case` case against the kernel's own time namespaces and checks
//! the results against the spec (sections C, D, E, F). This validates the harness
//! itself against the oracle before it is used for the differential test.
//!
//! Skips (with a named reason) unless running as root on a kernel where
//! `unshare(CLONE_NEWTIME)` works.

use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Display;
use std::process::Command;
use std::time::Duration;
use timensfs_tests::harness::{self, comparable};
use timensfs_tests::offsets::{self, CASES, KNOWN_DIFFERENCES, KNOWN_DIFFERENCE_CASES};

const BIN: &str = env!("CARGO_BIN_EXE_offsets-case");
const TIMEOUT: Duration = Duration::from_secs(20);

/// The file content for the given offsets, in the kernel's `"%-10s %10lld %9ld\n"` format (D2).
fn offs(ms: impl Display, mns: impl Display, bs: impl Display, bns: impl Display) -> String {
    format!("monotonic  {ms:>10} {mns:>9}\nboottime   {bs:>10} {bns:>9}\n")
}

fn zeros() -> String {
    offs(0, 0, 0, 0)
}

/// (case, expected results as JSON, expected content after the case).
/// For the host-clock bounds cases the content is the `after_rel` form.
/// Unless noted, the expectations come from the spec; "observed" marks behaviour the
/// spec does not state, recorded from Linux 6.18.
fn expectations() -> Vec<(&'static str, &'static str, String)> {
    let z = zeros();
    vec![
        // E5: names and numeric ids.
        ("name_monotonic", "[15]", offs(10, 0, 0, 0)),
        ("name_boottime", "[14]", offs(0, 0, 20, 0)),
        ("numeric_1", "[7]", offs(10, 0, 0, 0)),
        ("numeric_7", "[7]", offs(0, 0, 20, 0)),
        ("clock_0", r#"["EINVAL"]"#, z.clone()),
        ("clock_2", r#"["EINVAL"]"#, z.clone()),
        ("clock_4", r#"["EINVAL"]"#, z.clone()),
        ("clock_8", r#"["EINVAL"]"#, z.clone()),
        ("clock_realtime", r#"["EINVAL"]"#, z.clone()),
        ("clock_uppercase", r#"["EINVAL"]"#, z.clone()),
        ("clock_01", r#"["EINVAL"]"#, z.clone()),
        ("clock_empty_name", r#"["EINVAL"]"#, z.clone()),
        // E4: whitespace, trailing text.
        ("ws_leading_tabs", "[20]", offs(10, 0, 0, 0)),
        ("ws_inner_runs", "[22]", offs(10, 5, 0, 0)),
        // observed: \v and \f separate fields (kernel isspace).
        ("ws_vt_ff_cr", "[16]", offs(10, 7, 0, 0)),
        ("trailing_text", "[31]", offs(10, 0, 0, 0)),
        ("crlf", "[16]", offs(10, 0, 0, 0)),
        // E4: %9s.
        ("pct9s_quirk", "[14]", offs(1, 2, 0, 0)),
        ("pct9s_refused", r#"["EINVAL"]"#, z.clone()),
        ("pct9s_boottime_9chars", r#"["EINVAL"]"#, z.clone()),
        ("pct9s_glued_sec", "[14]", offs(10, 0, 0, 0)),
        // E4: seconds syntax.
        ("sec_negative", "[16]", offs(-10, 5, 0, 0)),
        ("sec_plus", r#"["EINVAL"]"#, z.clone()),
        ("sec_hex", r#"["EINVAL"]"#, z.clone()),
        ("sec_decimal", r#"["EINVAL"]"#, z.clone()),
        ("sec_trailing_x", r#"["EINVAL"]"#, z.clone()),
        ("missing_nsec", r#"["EINVAL"]"#, z.clone()),
        ("missing_sec", r#"["EINVAL"]"#, z.clone()),
        // E4: nanoseconds.
        ("nsec_max", "[23]", offs(10, 999_999_999, 0, 0)),
        ("nsec_1e9", r#"["EINVAL"]"#, z.clone()),
        ("nsec_minus1", r#"["EINVAL"]"#, z.clone()),
        ("nsec_trailing_x", "[16]", offs(10, 5, 0, 0)),
        // observed: the kernel's integer parser wraps modulo 2^64.
        ("nsec_overflow_wraps", "[34]", offs(10, 1, 0, 0)),
        // E4/E9: out-of-range seconds.
        ("sec_overflow", r#"["ERANGE"]"#, z.clone()),
        // observed: 2^64 + 10 wraps to 10.
        ("sec_overflow_wraps", "[32]", offs(0, 0, 10, 0)),
        ("sec_ktime_sec_max", r#"["ERANGE"]"#, z.clone()),
        ("sec_ktime_sec_max_plus1", r#"["ERANGE"]"#, z.clone()),
        ("sec_neg_ktime_sec_max", r#"["ERANGE"]"#, z.clone()),
        // E9: bounds relative to the host clock (after_rel form).
        ("range_mono_low_err", r#"["ERANGE"]"#, z.clone()),
        ("range_mono_low_ok", "[RET]", offs("-(NOW-5)", 0, 0, 0)),
        ("range_mono_high_err", r#"["ERANGE"]"#, z.clone()),
        ("range_mono_high_ok", "[RET]", offs("MAX-NOW-5", 0, 0, 0)),
        ("range_boot_low_err", r#"["ERANGE"]"#, z.clone()),
        ("range_boot_low_ok", "[RET]", offs(0, 0, "-(NOW-5)", 0)),
        ("range_boot_high_err", r#"["ERANGE"]"#, z.clone()),
        ("range_boot_high_ok", "[RET]", offs(0, 0, "MAX-NOW-5", 0)),
        (
            "range_mono_low_nsec_carry",
            "[RET]",
            offs("-(NOW+1)", 999_999_999, 0, 0),
        ),
        // E6/E7/E10: several records.
        ("two_records", "[29]", offs(11, 1, 22, 2)),
        ("two_records_no_newline", "[28]", offs(11, 1, 22, 2)),
        ("three_records_short", "[29]", offs(11, 1, 22, 2)),
        ("garbage_after_two", "[29]", offs(11, 1, 22, 2)),
        ("same_clock_twice", "[30]", offs(33, 3, 0, 0)),
        ("all_or_nothing_erange", r#"["ERANGE"]"#, z.clone()),
        ("all_or_nothing_einval", r#"["EINVAL"]"#, z.clone()),
        // E1/E3: empty records.
        ("empty_write", r#"["EINVAL"]"#, z.clone()),
        ("newline_only", r#"["EINVAL"]"#, z.clone()),
        ("double_newline", r#"["EINVAL"]"#, z.clone()),
        ("leading_newline", r#"["EINVAL"]"#, z.clone()),
        // E2: the buffer is NUL-terminated, parsing stops at an embedded NUL, the
        // whole count is returned (observed).
        ("nul_byte", "[21]", offs(5, 0, 0, 0)),
        // E1: size limit.
        ("size_4095", "[4095]", offs(10, 0, 0, 0)),
        ("size_4096", r#"["EINVAL"]"#, z.clone()),
        // E1/D6/C3: position and fds.
        ("lseek_5_then_write", r#"[5,"EINVAL"]"#, z.clone()),
        ("two_writes_one_fd", "[15,14]", offs(10, 0, 20, 0)),
        ("two_opens", "[14,15]", offs(10, 4, 20, 3)),
        ("write_after_read_rdwr", r#"[64,"EINVAL"]"#, z.clone()),
        ("write_after_read_lseek0", "[64,0,15]", offs(10, 0, 0, 0)),
        ("write_on_rdonly_fd", r#"["EBADF"]"#, z.clone()),
        ("pwrite_at_0", r#"["ESPIPE"]"#, z.clone()),
        ("pwrite_at_5", r#"["ESPIPE"]"#, z.clone()),
        (
            "lseek_to_written_then_write",
            r#"[15,15,"EINVAL"]"#,
            offs(10, 0, 0, 0),
        ),
        // observed: procfs ignores O_APPEND, the read moves the position.
        ("append_two_writes", "[15,14]", offs(10, 0, 20, 0)),
        ("append_after_read", r#"[10,"EINVAL"]"#, z.clone()),
        // D2/D6: read format.
        ("read_pread_10", "[38,10,54]", offs(-10, 5, 10, 999_999_999)),
        (
            "read_chunks_7",
            "[23,7,7,7,7,7,7,7,7,7,1,0]",
            offs(4_000_000_000i64, 0, 0, 0),
        ),
        // C1/E8: frozen namespace (first result: the child's exit status).
        ("frozen_valid", r#"[0,"EACCES"]"#, z.clone()),
        ("frozen_bad_clock", r#"[0,"EINVAL"]"#, z.clone()),
        ("frozen_out_of_range", r#"[0,"ERANGE"]"#, z.clone()),
        (
            "frozen_after_write",
            r#"[29,0,"EACCES"]"#,
            offs(10, 1, 20, 2),
        ),
        (
            "frozen_open_before_fork",
            r#"[15,0,"EACCES"]"#,
            offs(10, 1, 0, 0),
        ),
        // F2/E8: CAP_SYS_TIME (first result: capset).
        ("nocap_valid", r#"[0,"EPERM"]"#, z.clone()),
        ("nocap_bad_clock", r#"[0,"EINVAL"]"#, z.clone()),
        ("nocap_out_of_range", r#"[0,"EPERM"]"#, z.clone()),
        ("cap_dropped_after_open", "[0,15]", offs(10, 0, 0, 0)),
        ("cap_regained_after_open", r#"[0,"EPERM"]"#, z),
    ]
}

#[test]
fn case_list_is_consistent() {
    let out = Command::new(BIN)
        .arg("--list")
        .output()
        .expect("run --list");
    assert!(out.status.success());
    let listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let names: Vec<String> = CASES.iter().map(|c| c.name.to_string()).collect();
    assert_eq!(listed, names, "--list must print CASES in order");
    assert!(names.len() >= 45, "only {} cases", names.len());
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "duplicate case names");
    for (case, difference) in KNOWN_DIFFERENCE_CASES {
        assert!(
            offsets::find_case(case).is_some(),
            "KNOWN_DIFFERENCE_CASES names unknown case {case}"
        );
        assert!(
            offsets::known_reason(difference).is_some(),
            "KNOWN_DIFFERENCE_CASES names unknown difference {difference}"
        );
    }
    for (difference, _) in KNOWN_DIFFERENCES {
        assert!(
            KNOWN_DIFFERENCE_CASES.iter().any(|(_, d)| d == difference),
            "no hand-written case pins known difference {difference}"
        );
    }
    let expected: BTreeSet<&str> = expectations().iter().map(|e| e.0).collect();
    for n in &names {
        assert!(
            expected.contains(n.as_str()),
            "no kernel expectation for case {n}"
        );
    }
    for e in &expected {
        assert!(
            names.iter().any(|n| n == e),
            "expectation for unknown case {e}"
        );
    }
}

#[test]
fn kernel_matches_spec() {
    if let Err(reason) = harness::kernel_timens_support() {
        eprintln!("SKIP offsets_kernel::kernel_matches_spec: {reason}");
        return;
    }
    let mut failures = Vec::new();
    for (case, results, after) in expectations() {
        let rec = match harness::run_case(Command::new(BIN).args(["--kernel", case]), case, TIMEOUT)
        {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{case}: run failed: {e}"));
                continue;
            }
        };
        let got = comparable(&rec);
        let got_results = &got["results"];
        // Bounds cases that succeed return the length of a text whose digits depend on
        // the host clock: check that it is a positive count.
        let results_ok = if results == "[RET]" {
            matches!(got_results.as_array().map(Vec::as_slice), Some([n]) if n.as_u64().is_some_and(|n| n > 0))
        } else {
            let want: Value = serde_json::from_str(results).expect("expectation is JSON");
            *got_results == want
        };
        if !results_ok {
            failures.push(format!(
                "{case}: results {got_results}, spec says {results}"
            ));
        }
        if got["after"].as_str() != Some(after.as_str()) {
            failures.push(format!(
                "{case}: after {}, spec says {:?}",
                got["after"], after
            ));
        }
        // Reads return exactly the content (D2, D6).
        // The write_after_read cases read the initial (zero) content before writing,
        // append_after_read its first 10 bytes.
        if let Some(read) = got["read"].as_str() {
            let want = if case.starts_with("write_after_read") {
                zeros()
            } else if case == "append_after_read" {
                zeros()[..10].to_string()
            } else {
                rec["after"].as_str().unwrap_or_default().to_string()
            };
            if read != want {
                failures.push(format!("{case}: read {read:?}, expected {want:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "kernel results differ from the spec:\n{}",
        failures.join("\n")
    );
}
