//! Clock arithmetic, pure: which clocks a namespace shifts, reading a shifted clock (H1, H4) and
//! translating an absolute deadline from namespace time to host time (I0).
//!
//! Everything here is total (wrapping or saturating, never a panic), since it runs inside
//! interposed libc functions.

use timens::{Offsets, Timespec};

pub const NSEC_PER_SEC: i64 = 1_000_000_000;
/// The kernel's `KTIME_MAX` (nanoseconds) and `KTIME_SEC_MAX`.
pub const KTIME_MAX: i64 = i64::MAX;
pub const KTIME_SEC_MAX: i64 = KTIME_MAX / NSEC_PER_SEC;

pub const CLOCK_MONOTONIC: i32 = 1;
pub const CLOCK_MONOTONIC_RAW: i32 = 4;
pub const CLOCK_MONOTONIC_COARSE: i32 = 6;
pub const CLOCK_BOOTTIME: i32 = 7;
pub const CLOCK_BOOTTIME_ALARM: i32 = 9;

/// Which of a namespace's two offsets applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shift {
    Monotonic,
    Boottime,
}

impl Shift {
    pub fn of(self, offsets: &Offsets) -> Timespec {
        match self {
            Shift::Monotonic => offsets.monotonic,
            Shift::Boottime => offsets.boottime,
        }
    }
}

/// The offset a clock *reading* gets (H1): MONOTONIC, MONOTONIC_RAW and MONOTONIC_COARSE the
/// monotonic one, BOOTTIME and BOOTTIME_ALARM the boottime one; REALTIME, TAI, CPU clocks and
/// dynamic (negative) clock ids none.
pub fn reading_shift(clock: i32) -> Option<Shift> {
    match clock {
        CLOCK_MONOTONIC | CLOCK_MONOTONIC_RAW | CLOCK_MONOTONIC_COARSE => Some(Shift::Monotonic),
        CLOCK_BOOTTIME | CLOCK_BOOTTIME_ALARM => Some(Shift::Boottime),
        _ => None,
    }
}

/// The offset an absolute *deadline* loses (I0, `timens_ktime_to_host`): only MONOTONIC,
/// BOOTTIME and BOOTTIME_ALARM; the raw and coarse clocks cannot carry timers.
pub fn deadline_shift(clock: i32) -> Option<Shift> {
    match clock {
        CLOCK_MONOTONIC => Some(Shift::Monotonic),
        CLOCK_BOOTTIME | CLOCK_BOOTTIME_ALARM => Some(Shift::Boottime),
        _ => None,
    }
}

/// A host reading plus an offset, nanoseconds carried (H4): the namespace's clock value.
pub fn add_offset(sec: i64, nsec: i64, off: Timespec) -> (i64, i64) {
    let mut s = sec.wrapping_add(off.sec);
    let mut n = nsec.wrapping_add(off.nsec);
    if n >= NSEC_PER_SEC {
        n -= NSEC_PER_SEC;
        s = s.wrapping_add(1);
    } else if n < 0 {
        n += NSEC_PER_SEC;
        s = s.wrapping_sub(1);
    }
    (s, n)
}

/// Whether the kernel accepts a timespec as a timeout (`timespec64_valid`).
pub fn valid(sec: i64, nsec: i64) -> bool {
    sec >= 0 && (0..NSEC_PER_SEC).contains(&nsec)
}

/// An absolute deadline in namespace time translated to host time, as `do_timens_ktime_to_host`
/// does (I0): in ktime (saturated at KTIME_MAX), minus the offset; a deadline before the offset
/// becomes 0 (already passed: fires at once); the result clamped to KTIME_MAX.
///
/// Invalid timespecs are returned unchanged, so the call fails exactly as it would have
/// (the kernel and glibc validate before translating).
pub fn to_host(sec: i64, nsec: i64, off: Timespec) -> (i64, i64) {
    if !valid(sec, nsec) {
        return (sec, nsec);
    }
    let t: i128 = if sec >= KTIME_SEC_MAX {
        KTIME_MAX as i128
    } else {
        sec as i128 * NSEC_PER_SEC as i128 + nsec as i128
    };
    let o: i128 = off.sec as i128 * NSEC_PER_SEC as i128 + off.nsec as i128;
    let host = if t < o {
        0
    } else {
        (t - o).min(KTIME_MAX as i128)
    };
    let host = host as i64;
    (host / NSEC_PER_SEC, host % NSEC_PER_SEC)
}

/// [`to_host`] for an armed timer's `it_value`: the kernel tests "zero means disarm" *before*
/// translating, so a deadline that translates to 0 must become the smallest armed value instead
/// (it then fires at once, as in the kernel).
pub fn timer_to_host(sec: i64, nsec: i64, off: Timespec) -> (i64, i64) {
    if sec == 0 && nsec == 0 {
        return (0, 0);
    }
    match to_host(sec, nsec, off) {
        (0, 0) => (0, 1),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(sec: i64, nsec: i64) -> Timespec {
        Timespec { sec, nsec }
    }

    #[test]
    fn reading_shifts_follow_h1() {
        for c in [1, 4, 6] {
            assert_eq!(reading_shift(c), Some(Shift::Monotonic), "clock {c}");
        }
        for c in [7, 9] {
            assert_eq!(reading_shift(c), Some(Shift::Boottime), "clock {c}");
        }
        for c in [0, 2, 3, 5, 8, 10, 11, 12, -1, -6, i32::MIN] {
            assert_eq!(reading_shift(c), None, "clock {c}");
        }
    }

    #[test]
    fn deadline_shifts_follow_i0() {
        assert_eq!(deadline_shift(1), Some(Shift::Monotonic));
        assert_eq!(deadline_shift(7), Some(Shift::Boottime));
        assert_eq!(deadline_shift(9), Some(Shift::Boottime));
        for c in [0, 2, 3, 4, 5, 6, 8, 11, -2] {
            assert_eq!(deadline_shift(c), None, "clock {c}");
        }
    }

    #[test]
    fn add_carries_nanoseconds() {
        assert_eq!(add_offset(10, 999_999_999, ts(5, 1)), (16, 0));
        assert_eq!(add_offset(10, 500, ts(3600, 0)), (3610, 500));
        assert_eq!(
            add_offset(10, 999_999_999, ts(0, 999_999_999)),
            (11, 999_999_998)
        );
        // A negative offset (normalised: -1 s + 5 ns = -0.999999995 s).
        assert_eq!(add_offset(10, 0, ts(-1, 5)), (9, 5));
        assert_eq!(add_offset(0, 0, ts(-10, 0)), (-10, 0));
        // Never panics.
        assert_eq!(add_offset(i64::MAX, 0, ts(1, 0)).0, i64::MIN);
    }

    #[test]
    fn deadlines_subtract_the_offset() {
        assert_eq!(to_host(3610, 200, ts(3600, 0)), (10, 200));
        assert_eq!(to_host(3610, 100, ts(3600, 200)), (9, 999_999_900));
        // Exactly the offset: host 0.
        assert_eq!(to_host(3600, 0, ts(3600, 0)), (0, 0));
        // Before the offset: fires at once (0), not negative.
        assert_eq!(to_host(500, 0, ts(864_000, 0)), (0, 0));
        // Negative offsets move the deadline later.
        assert_eq!(to_host(10, 0, ts(-100, 0)), (110, 0));
    }

    #[test]
    fn deadlines_saturate_like_ktime() {
        // Beyond KTIME_SEC_MAX the kernel saturates to KTIME_MAX first.
        let (s, n) = to_host(i64::MAX, 0, ts(0, 0));
        assert_eq!((s, n), (KTIME_MAX / NSEC_PER_SEC, KTIME_MAX % NSEC_PER_SEC));
        let (s, _) = to_host(KTIME_SEC_MAX, 0, ts(100, 0));
        assert_eq!(s, (KTIME_MAX - 100 * NSEC_PER_SEC) / NSEC_PER_SEC);
        // A negative offset cannot push past KTIME_MAX.
        let (s, n) = to_host(KTIME_SEC_MAX - 1, 0, ts(-1_000, 0));
        assert_eq!((s, n), (KTIME_MAX / NSEC_PER_SEC, KTIME_MAX % NSEC_PER_SEC));
    }

    #[test]
    fn invalid_deadlines_are_left_for_the_kernel_to_refuse() {
        assert_eq!(to_host(-1, 0, ts(3600, 0)), (-1, 0));
        assert_eq!(
            to_host(5000, NSEC_PER_SEC, ts(3600, 0)),
            (5000, NSEC_PER_SEC)
        );
        assert_eq!(to_host(5000, -1, ts(3600, 0)), (5000, -1));
    }

    #[test]
    fn timers_are_never_disarmed_by_translation() {
        assert_eq!(timer_to_host(0, 0, ts(3600, 0)), (0, 0));
        assert_eq!(timer_to_host(500, 0, ts(864_000, 0)), (0, 1));
        assert_eq!(timer_to_host(3600, 0, ts(3600, 0)), (0, 1));
        assert_eq!(timer_to_host(3601, 0, ts(3600, 0)), (1, 0));
    }
}
