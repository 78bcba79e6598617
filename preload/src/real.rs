//! The libc functions this library wraps, each found with `dlsym(RTLD_NEXT)` the first time it
//! is needed.
//!
//! Functions that are cancellation points (or may block long enough for a signal handler to call
//! `pthread_exit`) have `"C-unwind"` types: glibc cancels a thread by a forced unwind, which
//! must be able to pass through the interposer's frame (they hold nothing that needs dropping).

use std::ffi::{c_int, c_void};

use libc::{
    clockid_t, itimerspec, pid_t, pthread_cond_t, pthread_mutex_t, pthread_rwlock_t, pthread_t,
    sem_t, sigevent, timer_t, timespec,
};

use crate::sys::Real;

pub type ClockGettime = unsafe extern "C" fn(clockid_t, *mut timespec) -> c_int;
pub type ClockNanosleep =
    unsafe extern "C-unwind" fn(clockid_t, c_int, *const timespec, *mut timespec) -> c_int;
pub type Sysinfo = unsafe extern "C" fn(*mut libc::sysinfo) -> c_int;
pub type TimerCreate = unsafe extern "C" fn(clockid_t, *mut sigevent, *mut timer_t) -> c_int;
pub type TimerDelete = unsafe extern "C" fn(timer_t) -> c_int;
pub type TimerSettime =
    unsafe extern "C" fn(timer_t, c_int, *const itimerspec, *mut itimerspec) -> c_int;
pub type TimerfdCreate = unsafe extern "C" fn(clockid_t, c_int) -> c_int;
pub type TimerfdSettime =
    unsafe extern "C" fn(c_int, c_int, *const itimerspec, *mut itimerspec) -> c_int;
pub type CondTimedwait = unsafe extern "C-unwind" fn(
    *mut pthread_cond_t,
    *mut pthread_mutex_t,
    *const timespec,
) -> c_int;
pub type CondClockwait = unsafe extern "C-unwind" fn(
    *mut pthread_cond_t,
    *mut pthread_mutex_t,
    clockid_t,
    *const timespec,
) -> c_int;
pub type SemClockwait =
    unsafe extern "C-unwind" fn(*mut sem_t, clockid_t, *const timespec) -> c_int;
pub type MutexClocklock =
    unsafe extern "C-unwind" fn(*mut pthread_mutex_t, clockid_t, *const timespec) -> c_int;
pub type RwlockClocklock =
    unsafe extern "C-unwind" fn(*mut pthread_rwlock_t, clockid_t, *const timespec) -> c_int;
pub type Clockjoin =
    unsafe extern "C-unwind" fn(pthread_t, *mut *mut c_void, clockid_t, *const timespec) -> c_int;
pub type Fork = unsafe extern "C" fn() -> pid_t;
pub type CloneFn = extern "C" fn(*mut c_void) -> c_int;
/// glibc's `clone(fn, stack, flags, arg, ...)`; the variadic part is `ptid, tls, ctid`.
pub type Clone = unsafe extern "C" fn(CloneFn, *mut c_void, c_int, *mut c_void, ...) -> c_int;

pub static CLOCK_GETTIME: Real<ClockGettime> = Real::new(c"clock_gettime");
pub static CLOCK_NANOSLEEP: Real<ClockNanosleep> = Real::new(c"clock_nanosleep");
pub static SYSINFO: Real<Sysinfo> = Real::new(c"sysinfo");
pub static TIMER_CREATE: Real<TimerCreate> = Real::versioned(c"timer_create", c"GLIBC_2.3.3");
pub static TIMER_DELETE: Real<TimerDelete> = Real::versioned(c"timer_delete", c"GLIBC_2.3.3");
pub static TIMER_SETTIME: Real<TimerSettime> = Real::versioned(c"timer_settime", c"GLIBC_2.3.3");
pub static TIMERFD_CREATE: Real<TimerfdCreate> = Real::new(c"timerfd_create");
pub static TIMERFD_SETTIME: Real<TimerfdSettime> = Real::new(c"timerfd_settime");
pub static COND_TIMEDWAIT: Real<CondTimedwait> =
    Real::versioned(c"pthread_cond_timedwait", c"GLIBC_2.3.2");
pub static COND_CLOCKWAIT: Real<CondClockwait> = Real::new(c"pthread_cond_clockwait");
pub static SEM_CLOCKWAIT: Real<SemClockwait> = Real::new(c"sem_clockwait");
pub static MUTEX_CLOCKLOCK: Real<MutexClocklock> = Real::new(c"pthread_mutex_clocklock");
pub static RWLOCK_CLOCKRDLOCK: Real<RwlockClocklock> = Real::new(c"pthread_rwlock_clockrdlock");
pub static RWLOCK_CLOCKWRLOCK: Real<RwlockClocklock> = Real::new(c"pthread_rwlock_clockwrlock");
pub static CLOCKJOIN: Real<Clockjoin> = Real::new(c"pthread_clockjoin_np");
pub static FORK: Real<Fork> = Real::new(c"_Fork");
pub static CLONE: Real<Clone> = Real::new(c"clone");

/// Looks up, at init, the wrapped functions that POSIX lets a signal handler call (the rest
/// wait for their first use): a handler must never be the first to call dlsym, which locks the
/// loader's state that the code it interrupted may be changing.
pub fn resolve_async_signal_safe() {
    let _ = CLOCK_GETTIME.get();
    let _ = CLOCK_NANOSLEEP.get();
    let _ = TIMER_SETTIME.get();
    let _ = FORK.get();
}
