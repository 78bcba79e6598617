//! Pure rendering and parsing of the time-dependent parts of /proc, byte for byte as Linux does it.
//!
//! No I/O here: every function takes bytes or values and returns bytes or values. Rule numbers
//! (D2, E3…) refer to `../shared/spec/timens-semantics.md`.
#![forbid(unsafe_code)]

pub mod offsets;
pub mod render;

pub use offsets::{parse_offsets_write, Clock, OffsetRecord, ParsedWrite, WriteParseError};
pub use render::{
    ns_link_text, render_timens_offsets, render_uptime, rewrite_pid_stat_starttime,
    rewrite_stat_btime, StatError,
};

/// A kernel `struct timespec64` as stored in a time namespace's offsets. Offsets written through
/// `timens_offsets` are stored exactly as parsed (the kernel does not normalise them, see E4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

pub const NSEC_PER_SEC: i64 = 1_000_000_000;

impl Timespec {
    pub const ZERO: Timespec = Timespec { sec: 0, nsec: 0 };

    pub const fn new(sec: i64, nsec: i64) -> Self {
        Timespec { sec, nsec }
    }

    /// Total nanoseconds, exact (an i128 cannot overflow). Unlike the kernel's `timespec64_to_ns` this
    /// does not saturate at `KTIME_MAX`.
    pub fn to_ns(self) -> i128 {
        self.sec as i128 * NSEC_PER_SEC as i128 + self.nsec as i128
    }

    /// `timespec64_add`: add with the nanoseconds normalised into `0..NSEC_PER_SEC`.
    pub fn add_normalized(self, other: Timespec) -> Timespec {
        normalize(
            self.sec.wrapping_add(other.sec),
            self.nsec.wrapping_add(other.nsec),
        )
    }

    /// `timespec64_sub`: subtract with the nanoseconds normalised into `0..NSEC_PER_SEC`.
    pub fn sub_normalized(self, other: Timespec) -> Timespec {
        normalize(
            self.sec.wrapping_sub(other.sec),
            self.nsec.wrapping_sub(other.nsec),
        )
    }
}

/// `set_normalized_timespec64`: `nsec` brought into `0..NSEC_PER_SEC`, `sec` moved by the carry
/// (wrapping, as the kernel's `s64` arithmetic does).
///
/// The kernel does it with one loop iteration per second of carry. A `timens_offsets` write can make
/// that carry about 9.2e9 (an nsec field that wraps to a large negative `long` passes E4's signed
/// check, and E9 adds it to the host clock): seconds of CPU in the kernel, and minutes for a loop in
/// the daemon, where it would hold a FUSE thread. Euclidean division gives the same result at once.
pub fn normalize(sec: i64, nsec: i64) -> Timespec {
    Timespec {
        sec: sec.wrapping_add(nsec.div_euclid(NSEC_PER_SEC)),
        nsec: nsec.rem_euclid(NSEC_PER_SEC),
    }
}

/// The two offsets of a time namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Offsets {
    pub monotonic: Timespec,
    pub boottime: Timespec,
}

impl Offsets {
    pub const ZERO: Offsets = Offsets {
        monotonic: Timespec::ZERO,
        boottime: Timespec::ZERO,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's loop, for comparison.
    fn normalize_by_loop(mut sec: i64, mut nsec: i64) -> Timespec {
        while nsec >= NSEC_PER_SEC {
            nsec -= NSEC_PER_SEC;
            sec = sec.wrapping_add(1);
        }
        while nsec < 0 {
            nsec += NSEC_PER_SEC;
            sec = sec.wrapping_sub(1);
        }
        Timespec { sec, nsec }
    }

    #[test]
    fn normalize_matches_the_kernel_loop() {
        let nsecs = [
            0,
            1,
            999_999_999,
            1_000_000_000,
            1_999_999_999,
            2_000_000_000,
            -1,
            -999_999_999,
            -1_000_000_000,
            -1_000_000_001,
            -5_500_000_000,
            123_456_789_012,
        ];
        for sec in [0, 1, -1, 710, i64::MAX, i64::MIN, 9_223_372_036] {
            for nsec in nsecs {
                assert_eq!(
                    normalize(sec, nsec),
                    normalize_by_loop(sec, nsec),
                    "{sec} {nsec}"
                );
            }
        }
        assert_eq!(
            normalize(i64::MAX, NSEC_PER_SEC),
            Timespec::new(i64::MIN, 0)
        );
        assert_eq!(
            normalize(i64::MIN, -1),
            Timespec::new(i64::MAX, 999_999_999)
        );
    }

    #[test]
    fn normalize_huge_negative_nsec_at_once() {
        // Found by the differential fuzz: "monotonic 1 9223372036854775808" passes E4 (nsec wraps to
        // i64::MIN) and E9 adds it to the host clock. The loop takes ~9.2e9 iterations (seconds in the
        // kernel, minutes in a debug daemon).
        let started = std::time::Instant::now();
        assert_eq!(
            normalize(1, i64::MIN),
            Timespec::new(1 - 9_223_372_037, 145_224_192)
        );
        assert_eq!(
            Timespec::new(710, 289_000_000).add_normalized(Timespec::new(1, i64::MIN)),
            Timespec::new(711 - 9_223_372_037, 434_224_192)
        );
        assert_eq!(
            normalize(0, i64::MAX),
            Timespec::new(9_223_372_036, 854_775_807)
        );
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
    }
}
