//! Absolute deadlines, translated from namespace time to host time before the real call (I0):
//! the caller computed them from its shifted clock, the kernel (and glibc's futex waits) compare
//! them with the host's. The current namespace's offset is subtracted for MONOTONIC, BOOTTIME
//! and BOOTTIME_ALARM; a deadline before the offset fires at once; everything else, and every
//! relative timeout (I8), passes unchanged.
//!
//! Translation happens once, when the wait starts or the timer is armed (K1, K2); intervals
//! stay relative (K4); `rem` of an absolute `clock_nanosleep` is never written (I10).
//!
//! The waits that are cancellation points are `"C-unwind"`, so that glibc's forced unwind on
//! `pthread_cancel` passes through; the translation itself runs in `extern "C"` helpers, where
//! a panic (there is none to expect) would abort instead of unwinding into C.

use std::ffi::{c_int, c_long};
use std::sync::atomic::{AtomicU32, Ordering};

use libc::{clockid_t, itimerspec, timespec};

use crate::state;
use crate::sys;
use crate::tables;
use crate::time::{self, deadline_shift};

/// glibc 2.36 x86_64 `pthread_cond_t`: `__data.__wrefs` is the u32 at byte 36; its bit 1
/// (`__PTHREAD_COND_CLOCK_MONOTONIC_MASK`) says the condvar waits on CLOCK_MONOTONIC
/// (nptl/pthread_cond_wait.c, `___pthread_cond_timedwait64`). Pinned by the `cond_layout` test.
pub const COND_WREFS_OFFSET: usize = 36;
pub const COND_CLOCK_MONOTONIC_MASK: u32 = 2;

/// The deadline to hand on: `abs` itself, or `buf` filled with its host-time translation.
/// `timer` selects the armed-timer rule (never translate to the "disarm" value 0).
///
/// # Safety
/// `abs` is NULL or readable; `buf` is writable.
pub unsafe extern "C" fn host_deadline(
    clock: clockid_t,
    abs: *const timespec,
    buf: *mut timespec,
    timer: bool,
) -> *const timespec {
    if abs.is_null() || !state::ready() {
        return abs;
    }
    let Some(shift) = deadline_shift(clock) else {
        return abs;
    };
    let Some(offsets) = state::current_offsets() else {
        return abs;
    };
    // SAFETY: the caller guarantees `abs` is readable.
    let t = unsafe { abs.read() };
    let off = shift.of(&offsets);
    let (sec, nsec) = if timer {
        time::timer_to_host(t.tv_sec, t.tv_nsec, off)
    } else {
        time::to_host(t.tv_sec, t.tv_nsec, off)
    };
    // SAFETY: the caller guarantees `buf` is writable.
    unsafe {
        buf.write(timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        })
    };
    buf
}

/// An `itimerspec` whose absolute `it_value` is translated; `buf` receives the copy.
///
/// # Safety
/// `new` is NULL or readable; `buf` is writable.
pub unsafe fn host_itimerspec(
    clock: Option<clockid_t>,
    new: *const itimerspec,
    buf: *mut itimerspec,
) -> *const itimerspec {
    let Some(clock) = clock else { return new };
    if new.is_null() {
        return new;
    }
    // SAFETY: the caller guarantees `new` is readable and `buf` writable.
    unsafe {
        let mut copy = new.read();
        let mut value = copy.it_value;
        let p = host_deadline(clock, &copy.it_value, &mut value, true);
        if p == std::ptr::from_ref(&copy.it_value) {
            return new;
        }
        copy.it_value = value;
        buf.write(copy);
    }
    buf
}

/// The clock a condvar waits on, read from glibc's layout (see [`COND_WREFS_OFFSET`]).
///
/// # Safety
/// `cond` points to an initialised `pthread_cond_t`.
pub unsafe extern "C" fn cond_clock(cond: *const libc::pthread_cond_t) -> clockid_t {
    // SAFETY: pthread_cond_t is 48 bytes, 8-aligned; bytes 36..40 are the u32 `__wrefs` that
    // glibc updates atomically, so it is read atomically (relaxed, as glibc does: the clock bit
    // is written only by pthread_cond_init).
    let wrefs =
        unsafe { AtomicU32::from_ptr(cond.cast::<u8>().add(COND_WREFS_OFFSET).cast_mut().cast()) }
            .load(Ordering::Relaxed);
    if wrefs & COND_CLOCK_MONOTONIC_MASK != 0 {
        libc::CLOCK_MONOTONIC
    } else {
        libc::CLOCK_REALTIME
    }
}

/// The glibc waits that take a clock argument translate only CLOCK_MONOTONIC (they accept
/// nothing but REALTIME and MONOTONIC).
fn monotonic_only(clock: clockid_t) -> clockid_t {
    if clock == libc::CLOCK_MONOTONIC {
        clock
    } else {
        libc::CLOCK_REALTIME
    }
}

pub const EMPTY_TS: timespec = timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

const EMPTY_ITS: itimerspec = itimerspec {
    it_interval: EMPTY_TS,
    it_value: EMPTY_TS,
};

/// `syscall(SYS_timer_settime, kernel_id, flags, new, old)`, translated.
///
/// # Safety
/// As for the system call.
pub unsafe fn sys_timer_settime(a: [c_long; 6]) -> c_long {
    let mut buf = EMPTY_ITS;
    let clock = if a[1] as c_int & libc::TIMER_ABSTIME != 0 && state::current_offsets().is_some() {
        tables::timer_clock(a[0] as i32 as usize, true)
    } else {
        None
    };
    // SAFETY: pointers from the caller, as the kernel would take them.
    let new = unsafe { host_itimerspec(clock, a[2] as *const itimerspec, &mut buf) };
    // SAFETY: forwarded system call with the (possibly) translated value.
    unsafe {
        sys::raw(
            libc::SYS_timer_settime,
            [a[0], a[1], new as c_long, a[3], 0, 0],
        )
    }
}

/// `syscall(SYS_timerfd_settime, fd, flags, new, old)`, translated.
///
/// # Safety
/// As for the system call.
pub unsafe fn sys_timerfd_settime(a: [c_long; 6]) -> c_long {
    let mut buf = EMPTY_ITS;
    let clock =
        if a[1] as c_int & libc::TFD_TIMER_ABSTIME != 0 && state::current_offsets().is_some() {
            tables::timerfd_clock(a[0] as c_int)
        } else {
            None
        };
    // SAFETY: pointers from the caller, as the kernel would take them.
    let new = unsafe { host_itimerspec(clock, a[2] as *const itimerspec, &mut buf) };
    // SAFETY: forwarded system call with the (possibly) translated value.
    unsafe {
        sys::raw(
            libc::SYS_timerfd_settime,
            [a[0], a[1], new as c_long, a[3], 0, 0],
        )
    }
}

/// `syscall(SYS_clock_nanosleep, clock, flags, req, rem)`, translated.
///
/// # Safety
/// As for the system call.
pub unsafe fn sys_clock_nanosleep(a: [c_long; 6]) -> c_long {
    let mut buf = EMPTY_TS;
    let req = if a[1] as c_int & libc::TIMER_ABSTIME != 0 {
        // SAFETY: pointer from the caller.
        unsafe { host_deadline(a[0] as clockid_t, a[2] as *const timespec, &mut buf, false) }
    } else {
        a[2] as *const timespec
    };
    // SAFETY: forwarded system call.
    unsafe {
        sys::raw(
            libc::SYS_clock_nanosleep,
            [a[0], a[1], req as c_long, a[3], 0, 0],
        )
    }
}

const FUTEX_WAIT_BITSET: c_int = 9;
const FUTEX_WAIT_REQUEUE_PI: c_int = 11;
const FUTEX_LOCK_PI2: c_int = 13;
const FUTEX_PRIVATE_FLAG: c_int = 128;
const FUTEX_CLOCK_REALTIME: c_int = 256;

/// `syscall(SYS_futex, uaddr, op, val, timeout, uaddr2, val3)` (I5): the absolute-MONOTONIC
/// operations (WAIT_BITSET, LOCK_PI2, WAIT_REQUEUE_PI without FUTEX_CLOCK_REALTIME) get a
/// translated copy of the timeout; FUTEX_WAIT (relative), FUTEX_LOCK_PI (REALTIME) and the
/// others are unchanged.
///
/// # Safety
/// As for the system call.
pub unsafe fn sys_futex(a: [c_long; 6]) -> c_long {
    let op = a[1] as c_int;
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let mut buf = EMPTY_TS;
    let mut args = a;
    if matches!(
        cmd,
        FUTEX_WAIT_BITSET | FUTEX_LOCK_PI2 | FUTEX_WAIT_REQUEUE_PI
    ) && op & FUTEX_CLOCK_REALTIME == 0
    {
        // SAFETY: timeout pointer from the caller.
        args[3] = unsafe {
            host_deadline(
                libc::CLOCK_MONOTONIC,
                a[3] as *const timespec,
                &mut buf,
                false,
            )
        } as c_long;
    }
    // SAFETY: forwarded system call.
    unsafe { sys::raw(libc::SYS_futex, args) }
}

/// `syscall(SYS_futex_waitv, waiters, nr, flags, timeout, clockid)` (I6).
///
/// # Safety
/// As for the system call.
pub unsafe fn sys_futex_waitv(a: [c_long; 6]) -> c_long {
    let mut buf = EMPTY_TS;
    let mut args = a;
    if a[4] as clockid_t == libc::CLOCK_MONOTONIC {
        // SAFETY: timeout pointer from the caller.
        args[3] = unsafe {
            host_deadline(
                libc::CLOCK_MONOTONIC,
                a[3] as *const timespec,
                &mut buf,
                false,
            )
        } as c_long;
    }
    // SAFETY: forwarded system call.
    unsafe { sys::raw(libc::SYS_futex_waitv, args) }
}

#[cfg(not(test))]
mod exports {
    use super::*;
    use crate::real;
    use libc::{pthread_cond_t, pthread_mutex_t, pthread_rwlock_t, pthread_t, sem_t, sigevent};
    use std::ffi::c_void;

    #[no_mangle]
    pub unsafe extern "C-unwind" fn clock_nanosleep(
        clock: clockid_t,
        flags: c_int,
        req: *const timespec,
        rem: *mut timespec,
    ) -> c_int {
        let mut buf = EMPTY_TS;
        let req = if flags & libc::TIMER_ABSTIME != 0 {
            // SAFETY: the caller's pointer; `buf` is ours.
            unsafe { host_deadline(clock, req, &mut buf, false) }
        } else {
            req
        };
        match state::real(&real::CLOCK_NANOSLEEP) {
            // SAFETY: the real function with the caller's (or translated) arguments.
            Some(f) => unsafe { f(clock, flags, req, rem) },
            None => {
                // SAFETY: the system call with the same arguments; like glibc, return the error
                // number rather than setting errno.
                let r = unsafe {
                    sys::raw(
                        libc::SYS_clock_nanosleep,
                        [
                            clock as c_long,
                            flags as c_long,
                            req as c_long,
                            rem as c_long,
                            0,
                            0,
                        ],
                    )
                };
                if sys::is_err(r) {
                    -r as c_int
                } else {
                    0
                }
            }
        }
    }

    #[no_mangle]
    pub unsafe extern "C" fn timer_create(
        clock: clockid_t,
        sevp: *mut sigevent,
        timerid: *mut libc::timer_t,
    ) -> c_int {
        let Some(f) = state::real(&real::TIMER_CREATE) else {
            sys::set_errno(libc::EAGAIN);
            return -1;
        };
        // SAFETY: the real function with the caller's arguments.
        let rc = unsafe { f(clock, sevp, timerid) };
        if rc == 0 && !timerid.is_null() {
            // SAFETY: on success the real function wrote the id.
            tables::timer_created(unsafe { timerid.read() } as usize, clock);
        }
        rc
    }

    #[no_mangle]
    pub unsafe extern "C" fn timer_delete(timer: libc::timer_t) -> c_int {
        let Some(f) = state::real(&real::TIMER_DELETE) else {
            sys::set_errno(libc::EINVAL);
            return -1;
        };
        // SAFETY: the real function with the caller's argument.
        let rc = unsafe { f(timer) };
        if rc == 0 {
            tables::timer_deleted(timer as usize);
        }
        rc
    }

    #[no_mangle]
    pub unsafe extern "C" fn timer_settime(
        timer: libc::timer_t,
        flags: c_int,
        new: *const itimerspec,
        old: *mut itimerspec,
    ) -> c_int {
        let Some(f) = state::real(&real::TIMER_SETTIME) else {
            sys::set_errno(libc::EINVAL);
            return -1;
        };
        let clock = if flags & libc::TIMER_ABSTIME != 0 && state::current_offsets().is_some() {
            tables::timer_clock(timer as usize, false)
        } else {
            None
        };
        let mut buf = EMPTY_ITS;
        // SAFETY: the caller's pointer; `buf` is ours.
        let new = unsafe { host_itimerspec(clock, new, &mut buf) };
        // SAFETY: the real function with the caller's (or translated) arguments.
        unsafe { f(timer, flags, new, old) }
    }

    #[no_mangle]
    pub unsafe extern "C" fn timerfd_create(clock: clockid_t, flags: c_int) -> c_int {
        let fd = match state::real(&real::TIMERFD_CREATE) {
            // SAFETY: the real function with the caller's arguments.
            Some(f) => unsafe { f(clock, flags) },
            // SAFETY: the system call with the caller's arguments.
            None => sys::to_libc_int(unsafe {
                sys::raw(
                    libc::SYS_timerfd_create,
                    [clock as c_long, flags as c_long, 0, 0, 0, 0],
                )
            }),
        };
        if fd >= 0 {
            tables::timerfd_created(fd, clock);
        }
        fd
    }

    #[no_mangle]
    pub unsafe extern "C" fn timerfd_settime(
        fd: c_int,
        flags: c_int,
        new: *const itimerspec,
        old: *mut itimerspec,
    ) -> c_int {
        let clock = if flags & libc::TFD_TIMER_ABSTIME != 0
            && state::ready()
            && state::current_offsets().is_some()
        {
            tables::timerfd_clock(fd)
        } else {
            None
        };
        let mut buf = EMPTY_ITS;
        // SAFETY: the caller's pointer; `buf` is ours.
        let new = unsafe { host_itimerspec(clock, new, &mut buf) };
        match state::real(&real::TIMERFD_SETTIME) {
            // SAFETY: the real function with the caller's (or translated) arguments.
            Some(f) => unsafe { f(fd, flags, new, old) },
            // SAFETY: the system call with the same arguments.
            None => sys::to_libc_int(unsafe {
                sys::raw(
                    libc::SYS_timerfd_settime,
                    [
                        fd as c_long,
                        flags as c_long,
                        new as c_long,
                        old as c_long,
                        0,
                        0,
                    ],
                )
            }),
        }
    }

    /// With a CLOCK_MONOTONIC condattr (I7); the default REALTIME condvar is unchanged.
    #[no_mangle]
    pub unsafe extern "C-unwind" fn pthread_cond_timedwait(
        cond: *mut pthread_cond_t,
        mutex: *mut pthread_mutex_t,
        abstime: *const timespec,
    ) -> c_int {
        let Some(f) = state::real(&real::COND_TIMEDWAIT) else {
            return libc::EINVAL;
        };
        let mut buf = EMPTY_TS;
        let abstime = if cond.is_null() {
            abstime
        } else {
            // SAFETY: the caller's initialised condvar and deadline; `buf` is ours.
            unsafe { host_deadline(cond_clock(cond), abstime, &mut buf, false) }
        };
        // SAFETY: the real function with the caller's (or translated) arguments.
        unsafe { f(cond, mutex, abstime) }
    }

    #[no_mangle]
    pub unsafe extern "C-unwind" fn pthread_cond_clockwait(
        cond: *mut pthread_cond_t,
        mutex: *mut pthread_mutex_t,
        clock: clockid_t,
        abstime: *const timespec,
    ) -> c_int {
        let Some(f) = state::real(&real::COND_CLOCKWAIT) else {
            return libc::EINVAL;
        };
        let mut buf = EMPTY_TS;
        // SAFETY: the caller's deadline; `buf` is ours.
        let abstime = unsafe { host_deadline(monotonic_only(clock), abstime, &mut buf, false) };
        // SAFETY: the real function with the caller's (or translated) arguments.
        unsafe { f(cond, mutex, clock, abstime) }
    }

    #[no_mangle]
    pub unsafe extern "C-unwind" fn sem_clockwait(
        sem: *mut sem_t,
        clock: clockid_t,
        abstime: *const timespec,
    ) -> c_int {
        let Some(f) = state::real(&real::SEM_CLOCKWAIT) else {
            sys::set_errno(libc::EINVAL);
            return -1;
        };
        let mut buf = EMPTY_TS;
        // SAFETY: the caller's deadline; `buf` is ours.
        let abstime = unsafe { host_deadline(monotonic_only(clock), abstime, &mut buf, false) };
        // SAFETY: the real function with the caller's (or translated) arguments.
        unsafe { f(sem, clock, abstime) }
    }

    #[no_mangle]
    pub unsafe extern "C-unwind" fn pthread_mutex_clocklock(
        mutex: *mut pthread_mutex_t,
        clock: clockid_t,
        abstime: *const timespec,
    ) -> c_int {
        let Some(f) = state::real(&real::MUTEX_CLOCKLOCK) else {
            return libc::EINVAL;
        };
        let mut buf = EMPTY_TS;
        // SAFETY: the caller's deadline; `buf` is ours.
        let abstime = unsafe { host_deadline(monotonic_only(clock), abstime, &mut buf, false) };
        // SAFETY: the real function with the caller's (or translated) arguments.
        unsafe { f(mutex, clock, abstime) }
    }

    #[no_mangle]
    pub unsafe extern "C-unwind" fn pthread_rwlock_clockrdlock(
        rwlock: *mut pthread_rwlock_t,
        clock: clockid_t,
        abstime: *const timespec,
    ) -> c_int {
        let Some(f) = state::real(&real::RWLOCK_CLOCKRDLOCK) else {
            return libc::EINVAL;
        };
        let mut buf = EMPTY_TS;
        // SAFETY: the caller's deadline; `buf` is ours.
        let abstime = unsafe { host_deadline(monotonic_only(clock), abstime, &mut buf, false) };
        // SAFETY: the real function with the caller's (or translated) arguments.
        unsafe { f(rwlock, clock, abstime) }
    }

    #[no_mangle]
    pub unsafe extern "C-unwind" fn pthread_rwlock_clockwrlock(
        rwlock: *mut pthread_rwlock_t,
        clock: clockid_t,
        abstime: *const timespec,
    ) -> c_int {
        let Some(f) = state::real(&real::RWLOCK_CLOCKWRLOCK) else {
            return libc::EINVAL;
        };
        let mut buf = EMPTY_TS;
        // SAFETY: the caller's deadline; `buf` is ours.
        let abstime = unsafe { host_deadline(monotonic_only(clock), abstime, &mut buf, false) };
        // SAFETY: the real function with the caller's (or translated) arguments.
        unsafe { f(rwlock, clock, abstime) }
    }

    #[no_mangle]
    pub unsafe extern "C-unwind" fn pthread_clockjoin_np(
        thread: pthread_t,
        retval: *mut *mut c_void,
        clock: clockid_t,
        abstime: *const timespec,
    ) -> c_int {
        let Some(f) = state::real(&real::CLOCKJOIN) else {
            return libc::EINVAL;
        };
        let mut buf = EMPTY_TS;
        // SAFETY: the caller's deadline; `buf` is ours.
        let abstime = unsafe { host_deadline(monotonic_only(clock), abstime, &mut buf, false) };
        // SAFETY: the real function with the caller's (or translated) arguments.
        unsafe { f(thread, retval, clock, abstime) }
    }
}
