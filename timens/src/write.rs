//! The kernel's decision for a write to `/proc/PID/timens_offsets`, as a pure function.
//!
//! This is `timens_offsets_write` (fs/proc/base.c) followed by `proc_timens_set_offset`
//! (kernel/time/namespace.c), with the same order of checks (E8) so the same bad input gets the same
//! errno. Rule numbers refer to `../shared/spec/timens-semantics.md`.

use procview::{parse_offsets_write, Clock, Offsets, Timespec};

/// `PAGE_SIZE` on x86_64: a write of this many bytes or more is refused (E1).
pub const PAGE_SIZE: usize = 4096;

/// `KTIME_SEC_MAX = KTIME_MAX / NSEC_PER_SEC` (E9).
pub const KTIME_SEC_MAX: i64 = 9_223_372_036;

/// Why a write to `timens_offsets` failed, one variant per errno the kernel can return (E8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// Bad file position or size (E1), or a record that does not parse (E3–E5).
    Inval,
    /// The target task is gone or has no nsproxy.
    Srch,
    /// The opener lacks `CAP_SYS_TIME` in the owning user namespace (F2).
    Perm,
    /// An offset out of range against the host clock (E9).
    Range,
    /// The target namespace is frozen (C1, C2).
    Acces,
}

impl WriteError {
    /// The errno `write(2)` fails with.
    pub fn errno(self) -> i32 {
        match self {
            WriteError::Inval => libc::EINVAL,
            WriteError::Srch => libc::ESRCH,
            WriteError::Perm => libc::EPERM,
            WriteError::Range => libc::ERANGE,
            WriteError::Acces => libc::EACCES,
        }
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self {
            WriteError::Inval => "invalid timens_offsets write",
            WriteError::Srch => "target task has no time namespace for children",
            WriteError::Perm => "opener lacks CAP_SYS_TIME in the owning user namespace",
            WriteError::Range => "offset out of range for the host clock",
            WriteError::Acces => "time namespace offsets are frozen",
        };
        f.write_str(what)
    }
}

impl std::error::Error for WriteError {}

/// The namespace a write is aimed at: the target task's `time_ns_for_children` (D1, E11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteTarget {
    pub offsets: Offsets,
    pub frozen: bool,
}

/// Decide a write of `data` at file position `pos` to `timens_offsets`.
///
/// - `target`: `None` when the task is gone or has no nsproxy.
/// - `opener_has_cap_sys_time`: `CAP_SYS_TIME` of the file's opener in the owning user namespace (F2).
/// - `host_now(clock)`: the **host** clock now (`ktime_get_ts64` / `ktime_get_boottime_ts64`), read
///   once per record, in order, as the kernel does (E9).
///
/// Returns the namespace's new offsets (all or nothing, E7) and the byte count `write()` returns,
/// which is short when more than two records were sent (E6, E10).
pub fn decide_write(
    pos: u64,
    data: &[u8],
    target: Option<&WriteTarget>,
    opener_has_cap_sys_time: bool,
    host_now: &mut dyn FnMut(Clock) -> Timespec,
) -> Result<(Offsets, usize), WriteError> {
    // E8.1. A zero-length write passes here and fails parsing (E1).
    if pos != 0 || data.len() >= PAGE_SIZE {
        return Err(WriteError::Inval);
    }
    // E8.3 (E8.2, the copy, cannot fail here).
    let parsed = parse_offsets_write(data).map_err(|_| WriteError::Inval)?;
    // E8.4: the task is looked up only after the whole buffer parsed.
    let target = target.ok_or(WriteError::Srch)?;
    // E8.5.
    if !opener_has_cap_sys_time {
        return Err(WriteError::Perm);
    }
    // E8.6, E9: every record is checked before anything is applied (E7). The kernel reads the host
    // clock before the sec bound check, so a failing record still costs one clock read.
    for record in &parsed.records {
        let now = host_now(record.clock);
        if record.val.sec > KTIME_SEC_MAX || record.val.sec < -KTIME_SEC_MAX {
            return Err(WriteError::Range);
        }
        let tp = now.add_normalized(record.val);
        if tp.sec < 0 || tp.sec > KTIME_SEC_MAX / 2 {
            return Err(WriteError::Range);
        }
    }
    // E8.7: the frozen check comes last, so a frozen namespace still reports EINVAL/ERANGE first.
    if target.frozen {
        return Err(WriteError::Acces);
    }
    // Applied in order, so a repeated clock means the later record wins (E6). Stored exactly as
    // parsed, never normalised.
    let mut offsets = target.offsets;
    for record in &parsed.records {
        match record.clock {
            Clock::Monotonic => offsets.monotonic = record.val,
            Clock::Boottime => offsets.boottime = record.val,
        }
    }
    Ok((offsets, parsed.count))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host monotonic 710.289 s, as in the spec's T4 table; boottime a little later.
    const HOST_MONO: Timespec = Timespec {
        sec: 710,
        nsec: 289_000_000,
    };
    const HOST_BOOT: Timespec = Timespec {
        sec: 800,
        nsec: 500_000_000,
    };

    fn fake_host(clock: Clock) -> Timespec {
        match clock {
            Clock::Monotonic => HOST_MONO,
            Clock::Boottime => HOST_BOOT,
        }
    }

    fn pending() -> WriteTarget {
        WriteTarget {
            offsets: Offsets::ZERO,
            frozen: false,
        }
    }

    fn frozen() -> WriteTarget {
        WriteTarget {
            offsets: Offsets::ZERO,
            frozen: true,
        }
    }

    fn ts(sec: i64, nsec: i64) -> Timespec {
        Timespec { sec, nsec }
    }

    /// A privileged write at position 0 to a pending namespace with zero offsets.
    fn write(data: &str) -> Result<(Offsets, usize), WriteError> {
        decide_write(0, data.as_bytes(), Some(&pending()), true, &mut fake_host)
    }

    fn write_to(
        data: &str,
        target: Option<&WriteTarget>,
        cap: bool,
    ) -> Result<(Offsets, usize), WriteError> {
        decide_write(0, data.as_bytes(), target, cap, &mut fake_host)
    }

    fn mono(data: &str) -> Result<Timespec, WriteError> {
        write(data).map(|(o, _)| o.monotonic)
    }

    #[test]
    fn errno_values() {
        assert_eq!(WriteError::Inval.errno(), libc::EINVAL);
        assert_eq!(WriteError::Srch.errno(), libc::ESRCH);
        assert_eq!(WriteError::Perm.errno(), libc::EPERM);
        assert_eq!(WriteError::Range.errno(), libc::ERANGE);
        assert_eq!(WriteError::Acces.errno(), libc::EACCES);
    }

    #[test]
    fn e1_position_and_size() {
        let target = pending();
        let d = b"monotonic 10 0\n";
        assert_eq!(
            decide_write(5, d, Some(&target), true, &mut fake_host),
            Err(WriteError::Inval)
        );
        assert_eq!(
            decide_write(1, d, Some(&target), true, &mut fake_host),
            Err(WriteError::Inval)
        );
        // 4095 bytes are accepted: a record padded with trailing garbage (ignored, E4).
        let mut big = b"monotonic 10 0 ".to_vec();
        big.resize(PAGE_SIZE - 1, b'x');
        let (o, n) = decide_write(0, &big, Some(&target), true, &mut fake_host).unwrap();
        assert_eq!((o.monotonic, n), (ts(10, 0), PAGE_SIZE - 1));
        big.push(b'x');
        assert_eq!(
            decide_write(0, &big, Some(&target), true, &mut fake_host),
            Err(WriteError::Inval)
        );
        // Empty write: passes the size check, fails parsing.
        assert_eq!(write(""), Err(WriteError::Inval));
    }

    #[test]
    fn e1_size_checked_before_everything() {
        // Even with no target and no capability, a bad position is EINVAL.
        assert_eq!(
            decide_write(3, b"monotonic 1 0", None, false, &mut fake_host),
            Err(WriteError::Inval)
        );
    }

    #[test]
    fn e3_lines() {
        assert_eq!(mono("monotonic 10 0\n"), Ok(ts(10, 0)));
        assert_eq!(mono("monotonic 10 0"), Ok(ts(10, 0)));
        assert_eq!(write("monotonic 10 0\n\n"), Err(WriteError::Inval));
        assert_eq!(write("\n"), Err(WriteError::Inval));
    }

    #[test]
    fn e4_record_syntax() {
        assert_eq!(mono("   monotonic\t10\t0   "), Ok(ts(10, 0)));
        assert_eq!(mono("monotonic 10 0 trailing garbage"), Ok(ts(10, 0)));
        assert_eq!(mono("monotonic 10 0\r\n"), Ok(ts(10, 0)));
        assert_eq!(mono("monotonic1 2 3"), Ok(ts(1, 2)));
        assert_eq!(write("monotonicX 1 0"), Err(WriteError::Inval));
        assert_eq!(mono("monotonic -10 0"), Ok(ts(-10, 0)));
        for bad in ["+10", "0x10", "10.5"] {
            assert_eq!(
                write(&format!("monotonic {bad} 0")),
                Err(WriteError::Inval),
                "{bad}"
            );
        }
        assert_eq!(mono("monotonic 10 999999999"), Ok(ts(10, 999_999_999)));
        assert_eq!(write("monotonic 10 1000000000"), Err(WriteError::Inval));
        assert_eq!(write("monotonic 10 -1"), Err(WriteError::Inval));
        assert_eq!(write("monotonic 10"), Err(WriteError::Inval));
        assert_eq!(write("monotonic"), Err(WriteError::Inval));
        // Overflowing seconds parse and then fail the range check.
        assert_eq!(
            write("monotonic 99999999999999999999 0"),
            Err(WriteError::Range)
        );
    }

    #[test]
    fn e5_clock_names() {
        assert_eq!(mono("1 5 0"), Ok(ts(5, 0)));
        assert_eq!(write("7 6 0").map(|(o, _)| o.boottime), Ok(ts(6, 0)));
        assert_eq!(write("boottime 6 0").map(|(o, _)| o.boottime), Ok(ts(6, 0)));
        for bad in ["0", "2", "4", "8", "realtime", "MONOTONIC", "01"] {
            assert_eq!(
                write(&format!("{bad} 1 0")),
                Err(WriteError::Inval),
                "{bad}"
            );
        }
    }

    #[test]
    fn e6_two_records_and_short_count() {
        let data = "monotonic 11 1\nboottime 22 2\nmonotonic 33 3\n";
        assert_eq!(data.len(), 44);
        let (o, n) = write(data).unwrap();
        assert_eq!(n, 29);
        assert_eq!((o.monotonic, o.boottime), (ts(11, 1), ts(22, 2)));

        let (o, n) = write("monotonic 11 1\nboottime 22 2\ngarbage\n").unwrap();
        assert_eq!(n, 29);
        assert_eq!((o.monotonic, o.boottime), (ts(11, 1), ts(22, 2)));

        // The same clock twice: the later record wins.
        let data = "monotonic 11 1\nmonotonic 33 3\n";
        let (o, n) = write(data).unwrap();
        assert_eq!(
            (o.monotonic, o.boottime, n),
            (ts(33, 3), ts(0, 0), data.len())
        );
    }

    #[test]
    fn c3_each_write_sets_only_named_clocks() {
        let target = WriteTarget {
            offsets: Offsets {
                monotonic: ts(100, 0),
                boottime: ts(1, 1),
            },
            frozen: false,
        };
        let (o, n) = write_to("boottime 200 0\n", Some(&target), true).unwrap();
        assert_eq!((o.monotonic, o.boottime, n), (ts(100, 0), ts(200, 0), 15));
    }

    #[test]
    fn e7_all_or_nothing() {
        let target = WriteTarget {
            offsets: Offsets {
                monotonic: ts(1, 0),
                boottime: ts(2, 0),
            },
            frozen: false,
        };
        assert_eq!(
            write_to(
                "monotonic 11 1\nboottime 9999999999 0\n",
                Some(&target),
                true
            ),
            Err(WriteError::Range)
        );
        // The failing record is the second; the first's clock still had to be read, the
        // result is an error and the caller keeps `target` unchanged.
        assert_eq!(
            target.offsets,
            Offsets {
                monotonic: ts(1, 0),
                boottime: ts(2, 0)
            }
        );
        // A parse error in the second record rejects the first too.
        assert_eq!(
            write_to("monotonic 11 1\nbogus 1 0\n", Some(&target), true),
            Err(WriteError::Inval)
        );
    }

    #[test]
    fn e9_range_table() {
        // Host monotonic 710.289 s (T4).
        assert_eq!(write("monotonic -712 0"), Err(WriteError::Range));
        assert_eq!(mono("monotonic -708 0"), Ok(ts(-708, 0)));
        assert_eq!(mono("monotonic -711 999999999"), Ok(ts(-711, 999_999_999)));
        assert_eq!(mono("monotonic 4611685306 0"), Ok(ts(4_611_685_306, 0)));
        assert_eq!(write("monotonic 4611685310 0"), Err(WriteError::Range));
        for sec in ["9223372036", "-9223372036", "9223372037", "-9223372037"] {
            assert_eq!(
                write(&format!("monotonic {sec} 0")),
                Err(WriteError::Range),
                "{sec}"
            );
        }
        // Exactly at the bounds: tp.sec == 0 and tp.sec == KTIME_SEC_MAX / 2 pass.
        assert_eq!(mono("monotonic -710 0"), Ok(ts(-710, 0)));
        assert_eq!(write("monotonic -711 0"), Err(WriteError::Range));
        let top = KTIME_SEC_MAX / 2 - 710;
        assert_eq!(mono(&format!("monotonic {top} 0")), Ok(ts(top, 0)));
        assert_eq!(
            write(&format!("monotonic {top} 711000000")),
            Err(WriteError::Range)
        );
        assert_eq!(
            mono(&format!("monotonic {top} 710999999")),
            Ok(ts(top, 710_999_999))
        );
    }

    #[test]
    fn e9_nsec_wrapped_to_a_huge_negative_is_erange_at_once() {
        // Found by the differential fuzz (kernel ERANGE after ~2.5 s of its normalisation loop; the
        // daemon's copy of the loop held a FUSE thread for ~8 s in a debug build): the nsec field
        // wraps to i64::MIN, passes E4's signed check, and host + offset is far below 0.
        let started = std::time::Instant::now();
        assert_eq!(
            write("monotonic 1 9223372036854775808\n"),
            Err(WriteError::Range)
        );
        // The same carry can land in range, and the offset is stored as written (observed on
        // 6.18: "boottime   9223372036 -9223372036854775807").
        assert_eq!(
            write("7 9223372036 9223372036854775809").map(|(o, _)| o.boottime),
            Ok(ts(9_223_372_036, -9_223_372_036_854_775_807))
        );
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
    }

    #[test]
    fn e9_uses_the_named_host_clock() {
        // -750 is fine against host boottime 800.5, out of range against monotonic 710.289.
        assert_eq!(
            write("boottime -750 0").map(|(o, _)| o.boottime),
            Ok(ts(-750, 0))
        );
        assert_eq!(write("monotonic -750 0"), Err(WriteError::Range));
    }

    #[test]
    fn e9_host_clock_read_once_per_record_in_order() {
        let mut reads = Vec::new();
        let mut host = |c: Clock| {
            reads.push(c);
            fake_host(c)
        };
        let r = decide_write(
            0,
            b"boottime 1 0\nmonotonic 2 0\n",
            Some(&pending()),
            true,
            &mut host,
        );
        assert!(r.is_ok());
        assert_eq!(reads, vec![Clock::Boottime, Clock::Monotonic]);

        // The first failing record stops the loop.
        reads.clear();
        let mut host = |c: Clock| {
            reads.push(c);
            fake_host(c)
        };
        let r = decide_write(
            0,
            b"boottime -9999 0\nmonotonic 2 0\n",
            Some(&pending()),
            true,
            &mut host,
        );
        assert_eq!(r, Err(WriteError::Range));
        assert_eq!(reads, vec![Clock::Boottime]);

        // No clock read when an earlier check fails.
        reads.clear();
        let mut host = |c: Clock| {
            reads.push(c);
            fake_host(c)
        };
        let r = decide_write(0, b"monotonic 2 0\n", Some(&pending()), false, &mut host);
        assert_eq!(r, Err(WriteError::Perm));
        assert!(reads.is_empty());
    }

    #[test]
    fn e8_order_of_checks_on_frozen_namespace() {
        let f = frozen();
        assert_eq!(
            write_to("realtime 1 0", Some(&f), true),
            Err(WriteError::Inval)
        );
        assert_eq!(
            write_to("monotonic -712 0", Some(&f), true),
            Err(WriteError::Range)
        );
        assert_eq!(
            write_to("monotonic 1 0", Some(&f), true),
            Err(WriteError::Acces)
        );
    }

    #[test]
    fn e8_order_of_checks_without_capability() {
        let p = pending();
        assert_eq!(
            write_to("realtime 1 0", Some(&p), false),
            Err(WriteError::Inval)
        );
        assert_eq!(
            write_to("monotonic -712 0", Some(&p), false),
            Err(WriteError::Perm)
        );
        assert_eq!(
            write_to("monotonic 1 0", Some(&frozen()), false),
            Err(WriteError::Perm)
        );
    }

    #[test]
    fn e8_task_gone_after_parse() {
        assert_eq!(write_to("realtime 1 0", None, true), Err(WriteError::Inval));
        assert_eq!(write_to("", None, true), Err(WriteError::Inval));
        assert_eq!(write_to("monotonic 1 0", None, true), Err(WriteError::Srch));
        assert_eq!(
            write_to("monotonic 1 0", None, false),
            Err(WriteError::Srch)
        );
        assert_eq!(
            write_to("monotonic -712 0", None, true),
            Err(WriteError::Srch)
        );
    }

    #[test]
    fn c2_initial_namespace_is_frozen() {
        let init = WriteTarget {
            offsets: Offsets::ZERO,
            frozen: true,
        };
        assert_eq!(
            write_to("monotonic 0 0\n", Some(&init), true),
            Err(WriteError::Acces)
        );
    }

    #[test]
    fn e10_returns_full_count() {
        let data = "monotonic 10 5\nboottime -3 7\n";
        let (o, n) = write(data).unwrap();
        assert_eq!(n, data.len());
        assert_eq!((o.monotonic, o.boottime), (ts(10, 5), ts(-3, 7)));
    }
}
