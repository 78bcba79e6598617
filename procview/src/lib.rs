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

/// `set_normalized_timespec64`.
pub fn normalize(mut sec: i64, mut nsec: i64) -> Timespec {
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
