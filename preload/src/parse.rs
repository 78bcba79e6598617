//! Parsers of the few /proc texts the library reads, pure and allocation-free: the `time:[N]`
//! link text (G1), `/proc/self/timers` and `/proc/self/fdinfo/N`.

/// `time:[N]` -> N.
pub fn ns_link_inum(text: &[u8]) -> Option<u32> {
    let inner = text.strip_prefix(b"time:[")?.strip_suffix(b"]")?;
    parse_dec(inner).and_then(|v| u32::try_from(v).ok())
}

/// A non-empty run of ASCII digits, no sign, no spaces.
fn parse_dec(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
    })
}

/// A decimal integer, optionally negative, surrounded by optional blanks.
fn parse_int(b: &[u8]) -> Option<i64> {
    let b = b.trim_ascii();
    match b.strip_prefix(b"-") {
        Some(rest) => parse_dec(rest).map(|v| -(v as i64)),
        None => parse_dec(b).map(|v| v as i64),
    }
}

/// Walks `/proc/self/timers` (one block per POSIX timer: `ID: n`, `signal: ...`,
/// `notify: ...`, `ClockID: c`) looking for the clock of kernel timer `id`.
pub struct TimersScan {
    id: i64,
    in_block: bool,
}

impl TimersScan {
    pub fn new(id: i64) -> TimersScan {
        TimersScan {
            id,
            in_block: false,
        }
    }

    /// Feed one line; `Some(clock)` once the timer's `ClockID` line is seen.
    pub fn line(&mut self, line: &[u8]) -> Option<i32> {
        if let Some(v) = line.strip_prefix(b"ID:") {
            self.in_block = parse_int(v) == Some(self.id);
            return None;
        }
        if self.in_block {
            if let Some(v) = line.strip_prefix(b"ClockID:") {
                return parse_int(v).and_then(|c| i32::try_from(c).ok());
            }
        }
        None
    }
}

/// The `clockid:` line of a timerfd's fdinfo.
pub fn fdinfo_clockid(line: &[u8]) -> Option<i32> {
    line.strip_prefix(b"clockid:")
        .and_then(parse_int)
        .and_then(|c| i32::try_from(c).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_links() {
        assert_eq!(ns_link_inum(b"time:[4026531834]"), Some(4_026_531_834));
        assert_eq!(ns_link_inum(b"time:[4160749568]"), Some(0xF800_0000));
        assert_eq!(ns_link_inum(b"time:[]"), None);
        assert_eq!(ns_link_inum(b"net:[4026531840]"), None);
        assert_eq!(ns_link_inum(b"time:[99999999999]"), None);
        assert_eq!(ns_link_inum(b"time:[12a]"), None);
        assert_eq!(ns_link_inum(b"time:[1] "), None);
    }

    // Captured from Linux 6.18 (newest timer first): timer 1 on CLOCK_MONOTONIC, timer 0 on
    // CLOCK_REALTIME.
    const TIMERS: &str = "ID: 1\nsignal: 10/0000000000000000\nnotify: signal/pid.7982\nClockID: 1\n\
                          ID: 0\nsignal: 14/0000000000000000\nnotify: signal/pid.7982\nClockID: 0\n";

    fn scan(text: &str, id: i64) -> Option<i32> {
        let mut s = TimersScan::new(id);
        text.lines().find_map(|l| s.line(l.as_bytes()))
    }

    #[test]
    fn timers_file() {
        assert_eq!(scan(TIMERS, 0), Some(0));
        assert_eq!(scan(TIMERS, 1), Some(1));
        assert_eq!(scan(TIMERS, 2), None);
        assert_eq!(scan("", 0), None);
    }

    // Captured from Linux 6.18: a CLOCK_BOOTTIME timerfd.
    const FDINFO: &str =
        "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\nclockid: 7\nticks: 0\n\
                          settime flags: 00\nit_value: (0, 0)\nit_interval: (0, 0)\n";

    #[test]
    fn fdinfo() {
        assert_eq!(
            FDINFO.lines().find_map(|l| fdinfo_clockid(l.as_bytes())),
            Some(7)
        );
        assert_eq!(fdinfo_clockid(b"pos:\t0"), None);
    }
}
