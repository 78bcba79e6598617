//! Rendering of the time-namespace-dependent /proc content: `timens_offsets` (D2), the `ns/time*` link
//! text (G1), and the boottime-derived values of `/proc/uptime`, `/proc/stat` and `/proc/PID/stat` (J).
//!
//! The J functions take the host's bytes and change only the one value the kernel shifts by the reader's
//! boottime offset; every other byte is passed through.

use std::fmt;

use crate::{normalize, Offsets, Timespec, NSEC_PER_SEC};

/// Host content that does not have the shape the kernel gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatError {
    /// What was expected and not found.
    Malformed(&'static str),
}

impl fmt::Display for StatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatError::Malformed(what) => write!(f, "malformed /proc content: {what}"),
        }
    }
}

impl std::error::Error for StatError {}

/// `/proc/PID/timens_offsets` (D2): `show_offset` prints `"%-10s %10lld %9ld\n"` for monotonic, then
/// boottime, with the values as stored (a negative or oversized nanosecond value widens the field).
pub fn render_timens_offsets(o: &Offsets) -> String {
    let mut out = String::with_capacity(64);
    for (name, ts) in [("monotonic", o.monotonic), ("boottime", o.boottime)] {
        out.push_str(&format!("{name:<10} {:>10} {:>9}\n", ts.sec, ts.nsec));
    }
    out
}

/// The `readlink` text of `/proc/PID/ns/<kind>` (G1): `ns_get_name` prints `"%s:[%u]"`. Both
/// `time` and `time_for_children` use the kind `"time"`.
pub fn ns_link_text(kind: &str, inum: u32) -> String {
    format!("{kind}:[{inum}]")
}

/// Nanoseconds per `USER_HZ` tick (USER_HZ = 100) and per centisecond.
const NSEC_PER_TICK: u64 = 10_000_000;

/// `/proc/uptime` (J1): `uptime_proc_show` prints `"%lu.%02lu %lu.%02lu\n"`; the first field is the
/// reader's boottime, the second (idle time) is not adjusted and is copied from the host verbatim.
///
/// `host_uptime` is the host's /proc/uptime; `boottime_in_ns` is the reader's CLOCK_BOOTTIME (host
/// boottime + offset, normalised). Output `"%lu.%02lu %s\n"` with centiseconds = nsec / 10_000_000
/// (truncated).
pub fn render_uptime(host_uptime: &[u8], boottime_in_ns: Timespec) -> Result<Vec<u8>, StatError> {
    let line = host_uptime
        .strip_suffix(b"\n")
        .ok_or(StatError::Malformed("uptime: no trailing newline"))?;
    let space = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or(StatError::Malformed("uptime: no second field"))?;
    let (uptime, idle) = (&line[..space], &line[space + 1..]);
    if !is_centiseconds(uptime) {
        return Err(StatError::Malformed("uptime: first field is not N.NN"));
    }
    if !is_centiseconds(idle) {
        return Err(StatError::Malformed("uptime: idle field is not N.NN"));
    }
    // Already normalised by contract; normalising again is a no-op then and keeps `nsec` in 0..1e9.
    let t = normalize(boottime_in_ns.sec, boottime_in_ns.nsec);
    // `(unsigned long) uptime.tv_sec`: a negative value would print as its u64 bit pattern.
    let mut out = format!("{}.{:02} ", t.sec as u64, t.nsec as u64 / NSEC_PER_TICK).into_bytes();
    out.extend_from_slice(idle);
    out.push(b'\n');
    Ok(out)
}

/// `digits '.' digit digit`, the shape of `"%lu.%02lu"`.
fn is_centiseconds(field: &[u8]) -> bool {
    match field.iter().position(|&b| b == b'.') {
        Some(dot) => {
            let (int, frac) = (&field[..dot], &field[dot + 1..]);
            !int.is_empty()
                && int.iter().all(u8::is_ascii_digit)
                && frac.len() == 2
                && frac.iter().all(u8::is_ascii_digit)
        }
        None => false,
    }
}

/// `/proc/stat` (J3): `show_stat` prints `btime` as `(getboottime64() - off_b).tv_sec` (a
/// `timespec64_sub`, normalised) with `%llu`. `btime_sec` is taken from the host's own `btime` line and
/// `host_boot_nsec` completes the host boot time; every other byte is copied.
pub fn rewrite_stat_btime(
    host_stat: &[u8],
    off_b: Timespec,
    host_boot_nsec: i64,
) -> Result<Vec<u8>, StatError> {
    const KEY: &[u8] = b"btime ";
    let start = find_line_starting_with(host_stat, KEY)
        .ok_or(StatError::Malformed("stat: no btime line"))?
        + KEY.len();
    let len = host_stat[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let end = start + len;
    if len == 0 || !matches!(host_stat.get(end), None | Some(b'\n')) {
        return Err(StatError::Malformed("stat: btime value is not a number"));
    }
    let btime_sec = parse_u64(&host_stat[start..end])
        .ok_or(StatError::Malformed("stat: btime value out of range"))?;
    let host_boot = Timespec::new(btime_sec as i64, host_boot_nsec);
    let shifted = host_boot.sub_normalized(off_b);
    // `(unsigned long long)boottime.tv_sec`: a boot time before 1970 prints as its u64 bit pattern.
    Ok(splice(
        host_stat,
        start..end,
        (shifted.sec as u64).to_string().as_bytes(),
    ))
}

/// `/proc/PID/stat`, `/proc/PID/task/TID/stat` (J4): `do_task_stat` prints field 22 (starttime) as
/// `nsec_to_clock_t(task->start_boottime + timespec64_to_ns(off_b))`, all in u64, at USER_HZ = 100, with
/// the **reader's** offset. Every other byte is copied.
///
/// The host content gives only `floor(start_boottime / 10 ms)`, not `start_boottime` itself, so:
/// - when `off_b` is a whole number of 10 ms ticks and the sum does not go below zero, the result does
///   not depend on the lost sub-tick part and is exact: `ticks + off_b / 10 ms`;
/// - otherwise `start_boottime` is taken as the middle of its tick (`ticks * 10 ms + 5 ms`), and the
///   result may be one tick off the kernel's. This includes a negative sum: the kernel's u64 wraps, and
///   since 2^64 is not a multiple of 10 ms the wrapped value depends on the sub-tick part too
///   (captured fixture: offset -443 s gives `1844674407182`, where `ticks * 10 ms` would give `...181`).
pub fn rewrite_pid_stat_starttime(host: &[u8], off_b: Timespec) -> Result<Vec<u8>, StatError> {
    // The comm field (2) is "(...)" and may itself contain spaces and ')': fields 3.. follow the last ')'.
    let close = host
        .iter()
        .rposition(|&b| b == b')')
        .ok_or(StatError::Malformed("pid stat: no comm field"))?;
    // After ')' every field is preceded by one space: field N starts after the (N-2)th space.
    const STARTTIME_FIELD: usize = 22;
    let mut spaces = 0;
    let mut start = None;
    for (i, &b) in host.iter().enumerate().skip(close + 1) {
        if b == b' ' {
            spaces += 1;
            if spaces == STARTTIME_FIELD - 2 {
                start = Some(i + 1);
                break;
            }
        }
    }
    let start = start.ok_or(StatError::Malformed("pid stat: fewer than 22 fields"))?;
    let len = host[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let end = start + len;
    if len == 0 || !matches!(host.get(end), None | Some(b' ') | Some(b'\n')) {
        return Err(StatError::Malformed("pid stat: starttime is not a number"));
    }
    let ticks = parse_u64(&host[start..end])
        .ok_or(StatError::Malformed("pid stat: starttime out of range"))?;
    let shifted = shifted_starttime(ticks, off_b);
    Ok(splice(host, start..end, shifted.to_string().as_bytes()))
}

/// See [`rewrite_pid_stat_starttime`] for the approximation.
fn shifted_starttime(ticks: u64, off_b: Timespec) -> u64 {
    let off_ns = timespec64_to_ns(off_b);
    let start_exact = ticks.wrapping_mul(NSEC_PER_TICK);
    let whole_ticks = off_ns.rem_euclid(NSEC_PER_TICK as i64) == 0;
    let no_wrap = i128::from(start_exact) + i128::from(off_ns) >= 0;
    let start_ns = if whole_ticks && no_wrap {
        start_exact
    } else {
        start_exact.wrapping_add(NSEC_PER_TICK / 2)
    };
    // `timens_add_boottime_ns`: u64 + s64 in u64; then `nsec_to_clock_t`: a u64 division.
    start_ns.wrapping_add(off_ns as u64) / NSEC_PER_TICK
}

/// The kernel's `timespec64_to_ns`, which saturates at `KTIME_MAX` / `KTIME_MIN`.
fn timespec64_to_ns(ts: Timespec) -> i64 {
    const KTIME_SEC_MAX: i64 = i64::MAX / NSEC_PER_SEC;
    const KTIME_SEC_MIN: i64 = i64::MIN / NSEC_PER_SEC;
    if ts.sec >= KTIME_SEC_MAX {
        i64::MAX
    } else if ts.sec <= KTIME_SEC_MIN {
        i64::MIN
    } else {
        // The product fits in i64 here; adding an unnormalised nsec (E4 lets -1e9 through, and worse)
        // can still overflow, and then wraps as the kernel's two's complement arithmetic does.
        (ts.sec * NSEC_PER_SEC).wrapping_add(ts.nsec)
    }
}

/// Offset of the first byte of the first line that starts with `key`.
fn find_line_starting_with(text: &[u8], key: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    while line_start <= text.len() {
        if text[line_start..].starts_with(key) {
            return Some(line_start);
        }
        line_start += text[line_start..].iter().position(|&b| b == b'\n')? + 1;
    }
    None
}

/// Decimal digits to u64, `None` on overflow.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn splice(bytes: &[u8], range: std::ops::Range<usize>, with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + with.len());
    out.extend_from_slice(&bytes[..range.start]);
    out.extend_from_slice(with);
    out.extend_from_slice(&bytes[range.end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host boot time on the machine the fixtures were captured on (CLOCK_REALTIME - CLOCK_BOOTTIME).
    const FIXTURE_HOST_BOOT_NSEC: i64 = 965_549_628;

    fn offsets(m: (i64, i64), b: (i64, i64)) -> Offsets {
        Offsets {
            monotonic: Timespec::new(m.0, m.1),
            boottime: Timespec::new(b.0, b.1),
        }
    }

    #[test]
    fn d2_initial_namespace_bytes() {
        let text = render_timens_offsets(&Offsets::ZERO);
        assert_eq!(
            text,
            "monotonic           0         0\nboottime            0         0\n"
        );
        assert_eq!(text.len(), 64);
    }

    #[test]
    fn d2_verified_renderings() {
        let line = |sec, nsec| {
            let text = render_timens_offsets(&offsets((sec, nsec), (0, 0)));
            text.lines().next().unwrap().to_owned()
        };
        assert_eq!(line(-10, 5), "monotonic         -10         5");
        assert_eq!(line(10, 999_999_999), "monotonic          10 999999999");
        assert_eq!(line(4_611_685_306, 0), "monotonic  4611685306         0");
        // Read back on 6.18 after writing wrapped values (E4): negative nsec keeps its '-', and a value
        // wider than the field widens the line.
        assert_eq!(line(1, -1), "monotonic           1        -1");
        assert_eq!(line(1, -1_000_000_000), "monotonic           1 -1000000000");
        assert_eq!(line(-1, 0), "monotonic          -1         0");
        assert_eq!(
            line(i64::MIN, i64::MIN),
            "monotonic  -9223372036854775808 -9223372036854775808"
        );
    }

    #[test]
    fn d2_monotonic_first_then_boottime() {
        assert_eq!(
            render_timens_offsets(&offsets((11, 1), (22, 2))),
            "monotonic          11         1\nboottime           22         2\n"
        );
        assert_eq!(
            render_timens_offsets(&offsets((0, 0), (864000, 0))),
            "monotonic           0         0\nboottime       864000         0\n"
        );
    }

    #[test]
    fn g1_link_text() {
        assert_eq!(ns_link_text("time", 4026531834), "time:[4026531834]");
        assert_eq!(ns_link_text("time", 0xF000_0000), "time:[4026531840]");
        assert_eq!(ns_link_text("time", u32::MAX), "time:[4294967295]");
        assert_eq!(ns_link_text("user", 4026531837), "user:[4026531837]");
    }

    #[test]
    fn j1_verified_example() {
        // Host "723.04 1015.45", namespace with off_b = 864000 s: "864723.04 1015.45".
        let boottime = Timespec::new(723, 40_000_000).add_normalized(Timespec::new(864000, 0));
        assert_eq!(
            render_uptime(b"723.04 1015.45\n", boottime).unwrap(),
            b"864723.04 1015.45\n"
        );
    }

    #[test]
    fn j1_centiseconds_truncate_and_pad() {
        let render = |sec, nsec| {
            String::from_utf8(render_uptime(b"1.00 2.00\n", Timespec::new(sec, nsec)).unwrap())
                .unwrap()
        };
        assert_eq!(render(0, 0), "0.00 2.00\n");
        assert_eq!(render(5, 79_999_999), "5.07 2.00\n");
        assert_eq!(render(5, 999_999_999), "5.99 2.00\n");
        assert_eq!(render(5, 9_999_999), "5.00 2.00\n");
        assert_eq!(render(5, 10_000_000), "5.01 2.00\n");
        // Not normalised by the caller: normalised here, as the kernel's timespec64_add would have.
        assert_eq!(render(5, 1_500_000_000), "6.50 2.00\n");
        // `(unsigned long) tv_sec`.
        assert_eq!(render(-1, 0), "18446744073709551615.00 2.00\n");
    }

    #[test]
    fn j1_idle_is_verbatim() {
        let out = render_uptime(b"396.48 123456789.07\n", Timespec::new(9, 0)).unwrap();
        assert_eq!(out, b"9.00 123456789.07\n");
    }

    #[test]
    fn j1_kernel_fixtures_round_trip() {
        // Each fixture was produced by the kernel inside a namespace; rendering its own first field
        // (anywhere inside the centisecond) with its idle field must give the same bytes.
        for fixture in [
            &include_bytes!("../testdata/uptime.host")[..],
            include_bytes!("../testdata/uptime.b864000_0"),
            include_bytes!("../testdata/uptime.b0_5000001"),
            include_bytes!("../testdata/uptime.bm300_0"),
            include_bytes!("../testdata/uptime.bm443_123456789"),
        ] {
            let text = std::str::from_utf8(fixture).unwrap();
            let (sec, cs) = text.split(' ').next().unwrap().split_once('.').unwrap();
            let (sec, cs): (i64, i64) = (sec.parse().unwrap(), cs.parse().unwrap());
            for nsec in [cs * 10_000_000, cs * 10_000_000 + 9_999_999] {
                assert_eq!(
                    render_uptime(fixture, Timespec::new(sec, nsec)).unwrap(),
                    fixture,
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn j1_malformed_host_uptime() {
        let t = Timespec::new(1, 0);
        for bad in [
            &b""[..],
            b"\n",
            b"396.48 768.23",
            b"396.48\n",
            b"396.48 \n",
            b" 768.23\n",
            b"396.48  768.23\n",
            b"396.48 768.23 1.00\n",
            b"396 768.23\n",
            b"396.48 768.2\n",
            b"396.48 x.23\n",
            b"396.48 768.23\n\n",
        ] {
            assert!(
                matches!(render_uptime(bad, t), Err(StatError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    fn btime_of(stat: &[u8]) -> &str {
        let text = std::str::from_utf8(stat).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .expect("btime line")
    }

    /// `a` and `b` are equal except for the value of the first line starting with `key`.
    fn equal_except_line(a: &[u8], b: &[u8], key: &str) -> bool {
        let strip = |t: &[u8]| {
            let t = std::str::from_utf8(t).unwrap().to_owned();
            t.split_inclusive('\n')
                .map(|l| if l.starts_with(key) { key } else { l })
                .collect::<String>()
        };
        strip(a) == strip(b)
    }

    #[test]
    fn j3_kernel_fixture() {
        // btime read inside namespaces with these boottime offsets (testdata/capture.py).
        let host = include_bytes!("../testdata/stat.host");
        assert_eq!(btime_of(host), "1795300092");
        for (off, expected) in [
            ((864000, 0), "1794436092"),
            ((0, 5_000_001), "1795300092"),
            ((0, 9_999_999), "1795300092"),
            ((1, 999_999_999), "1795300090"),
            ((-300, 0), "1795300392"),
            ((-300, 123_456_789), "1795300392"),
            ((-443, 0), "1795300535"),
            ((-443, 123_456_789), "1795300535"),
        ] {
            let out = rewrite_stat_btime(host, Timespec::new(off.0, off.1), FIXTURE_HOST_BOOT_NSEC)
                .unwrap();
            assert_eq!(btime_of(&out), expected, "offset {off:?}");
            assert!(equal_except_line(host, &out, "btime "));
            assert_eq!(out.len(), host.len());
        }
    }

    #[test]
    fn j3_nanosecond_borrow() {
        let stat = b"cpu  1 2 3\nbtime 1000\nprocesses 5\n";
        let at = |off_sec, off_nsec, boot_nsec| {
            let out =
                rewrite_stat_btime(stat, Timespec::new(off_sec, off_nsec), boot_nsec).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(0, 0, 0), "cpu  1 2 3\nbtime 1000\nprocesses 5\n");
        assert_eq!(at(0, 1, 0), "cpu  1 2 3\nbtime 999\nprocesses 5\n");
        assert_eq!(at(0, 500, 500), "cpu  1 2 3\nbtime 1000\nprocesses 5\n");
        assert_eq!(at(0, 501, 500), "cpu  1 2 3\nbtime 999\nprocesses 5\n");
        assert_eq!(at(-10, 0, 0), "cpu  1 2 3\nbtime 1010\nprocesses 5\n");
        assert_eq!(
            at(-1, 999_999_999, 0),
            "cpu  1 2 3\nbtime 1000\nprocesses 5\n"
        );
        assert_eq!(
            at(864000, 0, 0),
            "cpu  1 2 3\nbtime 18446744073708688616\nprocesses 5\n"
        );
    }

    #[test]
    fn j3_btime_line_position() {
        let off = Timespec::new(10, 0);
        // First line, last line without newline, and a look-alike that is not at a line start.
        assert_eq!(
            rewrite_stat_btime(b"btime 100\n", off, 0).unwrap(),
            b"btime 90\n"
        );
        assert_eq!(
            rewrite_stat_btime(b"x 1\nbtime 100", off, 0).unwrap(),
            b"x 1\nbtime 90"
        );
        assert_eq!(
            rewrite_stat_btime(b"xbtime 5\nbtime 100\n", off, 0).unwrap(),
            b"xbtime 5\nbtime 90\n"
        );
    }

    #[test]
    fn j3_malformed() {
        let off = Timespec::ZERO;
        for bad in [
            &b""[..],
            b"cpu 1\n",
            b"btime\n",
            b"btime \n",
            b"btime x\n",
            b"btime 12x\n",
            b"btime -5\n",
            b"btime 99999999999999999999\n",
            b"xbtime 5\n",
        ] {
            assert!(
                matches!(
                    rewrite_stat_btime(bad, off, 0),
                    Err(StatError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    /// Field 22 of a stat line, and the line with that field blanked.
    fn split_starttime(stat: &[u8]) -> (u64, Vec<u8>) {
        let close = stat.iter().rposition(|&b| b == b')').unwrap();
        let (head, tail) = stat.split_at(close + 1);
        let tail = std::str::from_utf8(tail).unwrap();
        let mut fields: Vec<&str> = tail.split(' ').collect();
        let ticks = fields[20].parse().unwrap();
        fields[20] = "";
        let mut rest = head.to_vec();
        rest.extend_from_slice(fields.join(" ").as_bytes());
        (ticks, rest)
    }

    #[test]
    fn j4_kernel_fixtures() {
        /// A boottime offset, what the kernel showed inside a namespace with it, and whether our result
        /// must be exact (otherwise within one tick, see `rewrite_pid_stat_starttime`).
        struct Case {
            off: (i64, i64),
            comm: &'static [u8],
            task: &'static [u8],
            exact: bool,
        }
        let cases = [
            Case {
                off: (864000, 0),
                comm: include_bytes!("../testdata/comm.b864000_0.stat"),
                task: include_bytes!("../testdata/task.b864000_0.stat"),
                exact: true,
            },
            Case {
                off: (-300, 0),
                comm: include_bytes!("../testdata/comm.bm300_0.stat"),
                task: include_bytes!("../testdata/task.bm300_0.stat"),
                exact: true,
            },
            Case {
                off: (0, 5_000_001),
                comm: include_bytes!("../testdata/comm.b0_5000001.stat"),
                task: include_bytes!("../testdata/task.b0_5000001.stat"),
                exact: false,
            },
            Case {
                off: (0, 9_999_999),
                comm: include_bytes!("../testdata/comm.b0_9999999.stat"),
                task: include_bytes!("../testdata/task.b0_9999999.stat"),
                exact: false,
            },
            Case {
                off: (1, 999_999_999),
                comm: include_bytes!("../testdata/comm.b1_999999999.stat"),
                task: include_bytes!("../testdata/task.b1_999999999.stat"),
                exact: false,
            },
            Case {
                off: (-300, 123_456_789),
                comm: include_bytes!("../testdata/comm.bm300_123456789.stat"),
                task: include_bytes!("../testdata/task.bm300_123456789.stat"),
                exact: false,
            },
            // The target started 441.11 s after boot: start + offset < 0 and the kernel's u64 wraps.
            Case {
                off: (-443, 0),
                comm: include_bytes!("../testdata/comm.bm443_0.stat"),
                task: include_bytes!("../testdata/task.bm443_0.stat"),
                exact: false,
            },
            Case {
                off: (-443, 123_456_789),
                comm: include_bytes!("../testdata/comm.bm443_123456789.stat"),
                task: include_bytes!("../testdata/task.bm443_123456789.stat"),
                exact: false,
            },
        ];
        let comm_host = include_bytes!("../testdata/comm.host.stat");
        let task_host = include_bytes!("../testdata/task.host.stat");
        assert!(comm_host.starts_with(b"4272 ((a) b)) S "));
        assert!(task_host.starts_with(b"4273 (t (x)) y) S "));
        for Case {
            off,
            comm,
            task,
            exact,
        } in cases
        {
            for (host, kernel) in [(&comm_host[..], comm), (&task_host[..], task)] {
                let ours = rewrite_pid_stat_starttime(host, Timespec::new(off.0, off.1)).unwrap();
                if exact {
                    assert_eq!(ours, kernel, "offset {off:?}");
                    continue;
                }
                let (our_ticks, our_rest) = split_starttime(&ours);
                let (kernel_ticks, kernel_rest) = split_starttime(kernel);
                assert_eq!(our_rest, kernel_rest, "offset {off:?}");
                assert!(
                    our_ticks.abs_diff(kernel_ticks) <= 1,
                    "offset {off:?}: ours {our_ticks}, kernel {kernel_ticks}"
                );
            }
        }
    }

    #[test]
    fn j4_wrapped_value_uses_the_middle_of_the_tick() {
        // Captured: host starttime 44111, offset -443 s, kernel 1844674407182. Taking the start at the
        // tick boundary would give ...181 (2^64 mod 10 ms = 9551616 ns is not absorbed).
        let host = include_bytes!("../testdata/comm.host.stat");
        let out = rewrite_pid_stat_starttime(host, Timespec::new(-443, 0)).unwrap();
        assert_eq!(split_starttime(&out).0, 1_844_674_407_182);
        assert_eq!(
            &out[..],
            &include_bytes!("../testdata/comm.bm443_0.stat")[..]
        );
    }

    fn starttime_after(ticks: u64, off_sec: i64, off_nsec: i64) -> u64 {
        let line = format!("1 (x) S 0 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {ticks} 0 0\n");
        let out =
            rewrite_pid_stat_starttime(line.as_bytes(), Timespec::new(off_sec, off_nsec)).unwrap();
        split_starttime(&out).0
    }

    #[test]
    fn j4_arithmetic() {
        // Whole ticks: exact.
        assert_eq!(starttime_after(24, 864000, 0), 86_400_024);
        assert_eq!(starttime_after(24, 0, 10_000_000), 25);
        assert_eq!(starttime_after(24, 0, -10_000_000), 23);
        assert_eq!(starttime_after(24, -1, 990_000_000), 23);
        assert_eq!(starttime_after(0, 0, 0), 0);
        // Sub-tick offsets: the start is taken as ticks * 10 ms + 5 ms.
        assert_eq!(starttime_after(24, 0, 4_999_999), 24);
        assert_eq!(starttime_after(24, 0, 5_000_000), 25);
        assert_eq!(starttime_after(24, 0, -5_000_000), 24);
        assert_eq!(starttime_after(24, 0, -5_000_001), 23);
        // Landing exactly on zero does not wrap.
        assert_eq!(starttime_after(100, -1, 0), 0);
        // Below zero: u64 wrap, then the division (2^64 - 5 ms) / 10 ms.
        assert_eq!(starttime_after(100, -1, -10_000_000), 1_844_674_407_370);
        assert_eq!(
            starttime_after(100, -1, -10_000_000),
            (u64::MAX - 5_000_000 + 1) / 10_000_000
        );
        // timespec64_to_ns saturates: KTIME_MAX + start wraps.
        assert_eq!(
            starttime_after(0, i64::MAX, 0),
            (i64::MAX as u64 + 5_000_000) / 10_000_000
        );
        assert_eq!(
            starttime_after(0, i64::MIN, 0),
            (i64::MIN as u64 + 5_000_000) / 10_000_000
        );
    }

    #[test]
    fn j4_comm_with_spaces_and_parentheses() {
        let host = b"42 ((a) b)) S 1 42 42 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 35046 3133440 384 18446744073709551615 0\n";
        let out = rewrite_pid_stat_starttime(host, Timespec::new(10, 0)).unwrap();
        assert_eq!(
            &out[..],
            &b"42 ((a) b)) S 1 42 42 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 36046 3133440 384 18446744073709551615 0\n"[..]
        );
        // A comm made only of digits and spaces must not shift the field count.
        let host = b"7 (1 2 3 4 5 6) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 500 1 2\n";
        let out = rewrite_pid_stat_starttime(host, Timespec::new(1, 0)).unwrap();
        assert_eq!(
            &out[..],
            &b"7 (1 2 3 4 5 6) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 600 1 2\n"[..]
        );
    }

    #[test]
    fn j4_everything_else_is_byte_identical() {
        // Field 22 last, and no trailing newline: both kept as they are.
        let host = b"7 (x) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 500";
        let out = rewrite_pid_stat_starttime(host, Timespec::new(1, 0)).unwrap();
        assert_eq!(
            &out[..],
            &b"7 (x) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 600"[..]
        );
        let host = b"7 (x) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 500\n";
        let out = rewrite_pid_stat_starttime(host, Timespec::ZERO).unwrap();
        assert_eq!(&out[..], &host[..]);
        // Zero offset leaves the real kernel content unchanged.
        let host = include_bytes!("../testdata/task.host.stat");
        assert_eq!(
            rewrite_pid_stat_starttime(host, Timespec::ZERO).unwrap(),
            host
        );
    }

    #[test]
    fn j4_malformed() {
        let off = Timespec::ZERO;
        for bad in [
            &b""[..],
            b"1 x S 1\n",
            b"1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0\n",
            b"1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 \n",
            b"1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 -5 0\n",
            b"1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5x 0\n",
            b"1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99999999999999999999 0\n",
        ] {
            assert!(
                matches!(
                    rewrite_pid_stat_starttime(bad, off),
                    Err(StatError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn stat_error_display() {
        let e = StatError::Malformed("stat: no btime line");
        assert_eq!(
            e.to_string(),
            "malformed /proc content: stat: no btime line"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(boxed.source().is_none());
    }
}
