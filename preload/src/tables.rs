//! Which clock a POSIX timer or a timerfd runs on, so that `timer_settime` and
//! `timerfd_settime` with an absolute deadline know which offset to subtract (I3, I4).
//!
//! Both are small lock-free tables filled by the interposed `timer_create` / `timerfd_create`
//! (and their raw `syscall()` forms). A miss (a table full, a timer created before this library
//! was loaded, an fd inherited across exec or passed from another process) falls back to the
//! kernel's own record: `/proc/self/timers` or `/proc/self/fdinfo/N`, read with raw syscalls.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use crate::parse;
use crate::sys;

const TIMER_SLOTS: usize = 256;
/// The sentinels are zero and one, so the table is all zeroes until used: it lives in .bss,
/// whose pages cost nothing until touched, not in .data, whose pages every exec would map
/// and, next to relocated data, copy.
const EMPTY: u64 = 0;
const CLAIMED: u64 = 1;

/// `timer_t` value -> clock id. A slot is claimed (EMPTY -> CLAIMED), its clock written, then
/// its key published with Release, so a reader that sees the key sees the clock.
struct TimerTable {
    keys: [AtomicU64; TIMER_SLOTS],
    clocks: [AtomicI32; TIMER_SLOTS],
}

static TIMERS: TimerTable = TimerTable {
    keys: [const { AtomicU64::new(EMPTY) }; TIMER_SLOTS],
    clocks: [const { AtomicI32::new(0) }; TIMER_SLOTS],
};

/// A timer's key: its value plus two, past the sentinels. The two values that would wrap onto
/// them (`u64::MAX - 1`, `u64::MAX`) cannot be real timer_t values (glibc's are small kernel ids
/// or pointers shifted right by one); they are mapped onto two others anyway.
fn timer_key(timer: usize) -> u64 {
    let k = (timer as u64).wrapping_add(2);
    if k <= CLAIMED {
        k + 2
    } else {
        k
    }
}

/// Records the clock of a timer just created.
pub fn timer_created(timer: usize, clock: i32) {
    let key = timer_key(timer);
    // A reused id (the old timer was deleted without us seeing it): overwrite.
    for i in 0..TIMER_SLOTS {
        if TIMERS.keys[i].load(Ordering::Acquire) == key {
            TIMERS.clocks[i].store(clock, Ordering::Release);
            return;
        }
    }
    for i in 0..TIMER_SLOTS {
        if TIMERS.keys[i]
            .compare_exchange(EMPTY, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            TIMERS.clocks[i].store(clock, Ordering::Relaxed);
            TIMERS.keys[i].store(key, Ordering::Release);
            return;
        }
    }
    // Full: lookups fall back to /proc/self/timers.
}

pub fn timer_deleted(timer: usize) {
    let key = timer_key(timer);
    for slot in &TIMERS.keys {
        if slot
            .compare_exchange(key, EMPTY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// POSIX timers are not inherited by fork: a child starts with none. Only slots in use are
/// written: the table's pages stay shared with the parent (a write would copy a page, in every
/// forked child, also of processes that never made a timer).
pub fn forget_timers() {
    for slot in &TIMERS.keys {
        if slot.load(Ordering::Relaxed) != EMPTY {
            slot.store(EMPTY, Ordering::Relaxed);
        }
    }
}

/// The clock of a glibc `timer_t`, or of a kernel timer id (`from_syscall`), if known.
pub fn timer_clock(timer: usize, from_syscall: bool) -> Option<i32> {
    let key = timer_key(timer);
    for i in 0..TIMER_SLOTS {
        if TIMERS.keys[i].load(Ordering::Acquire) == key {
            return Some(TIMERS.clocks[i].load(Ordering::Acquire));
        }
    }
    // glibc 2.34+: a negative timer_t is a SIGEV_THREAD timer (a pointer shifted right by one),
    // otherwise it is the kernel's id itself.
    let kernel_id = if from_syscall {
        timer as i32 as i64
    } else if (timer as isize) < 0 {
        return None;
    } else {
        timer as i64
    };
    let mut scan = parse::TimersScan::new(kernel_id);
    sys::scan_lines(c"/proc/self/timers", |l| scan.line(l))
}

const FD_SLOTS: usize = 4096;

/// fd -> clock id + 1 (0: unknown).
static TIMERFDS: [AtomicI32; FD_SLOTS] = [const { AtomicI32::new(0) }; FD_SLOTS];

pub fn timerfd_created(fd: i32, clock: i32) {
    if let Some(slot) = usize::try_from(fd).ok().and_then(|i| TIMERFDS.get(i)) {
        slot.store(clock.wrapping_add(1), Ordering::Relaxed);
    }
}

/// The clock of timerfd `fd`: the table, else its fdinfo.
pub fn timerfd_clock(fd: i32) -> Option<i32> {
    let known = usize::try_from(fd)
        .ok()
        .and_then(|i| TIMERFDS.get(i))
        .map(|s| s.load(Ordering::Relaxed))
        .unwrap_or(0);
    if known != 0 {
        return Some(known.wrapping_sub(1));
    }
    let fd = u64::try_from(fd).ok()?;
    let mut buf = [0u8; 64];
    let path = sys::path_with_number(&mut buf, b"/proc/self/fdinfo/", fd)?;
    sys::scan_lines(path, parse::fdinfo_clockid)
}
