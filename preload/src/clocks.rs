//! Reading clocks: `clock_gettime` (and glibc's private alias `__clock_gettime`) and
//! `sysinfo` (H1, H4, J2).
//!
//! The fast path: call the real, vDSO-backed function, then add the offset of the caller's
//! namespace read from its store slot under the seqlock. No allocation, lock, syscall or panic;
//! REALTIME, TAI and CPU clocks return straight after the real call.

use std::ffi::{c_int, c_long};

use libc::{clockid_t, timespec};

use crate::real;
use crate::state;
use crate::sys;
use crate::time::{self, reading_shift};

/// The host's reading of `clock`: the vDSO's function (see `vdso`), else libc's once resolved,
/// else the raw system call.
///
/// # Safety
/// `tp` must be valid for writing a timespec (or the call fails with EFAULT as libc's would).
#[inline(always)]
pub unsafe fn host_clock_gettime(clock: clockid_t, tp: *mut timespec) -> c_int {
    if let Some(vdso) = crate::vdso::clock_gettime() {
        // SAFETY: the vDSO function with the caller's arguments, as libc would call it.
        let r = unsafe { vdso(clock, tp) };
        if r != 0 {
            return vdso_failed(r);
        }
        return 0;
    }
    if state::ready() {
        if let Some(f) = real::CLOCK_GETTIME.get() {
            // SAFETY: the real clock_gettime with the caller's arguments.
            return unsafe { f(clock, tp) };
        }
    }
    // SAFETY: the clock_gettime system call with the caller's arguments.
    let r = unsafe {
        sys::raw(
            libc::SYS_clock_gettime,
            [clock as c_long, tp as c_long, 0, 0, 0, 0],
        )
    };
    sys::to_libc_int(r)
}

/// The vDSO's failure (a negative errno from its system-call fallback), as libc reports it.
#[cold]
#[inline(never)]
fn vdso_failed(r: c_int) -> c_int {
    if r < 0 {
        sys::set_errno(-r);
        return -1;
    }
    r
}

/// Adds the caller's namespace offset to a successful reading of `clock` in `tp`.
///
/// # Safety
/// `tp` points to a timespec the caller may write.
#[inline(always)]
pub unsafe fn shift_reading(clock: clockid_t, tp: *mut timespec) {
    if let Some(shift) = reading_shift(clock) {
        // SAFETY: forwarded contract.
        unsafe { add_current_offset(matches!(shift, time::Shift::Boottime), tp) };
    }
}

/// Adds the caller's namespace offset (the boottime one if `boottime`, else the monotonic one)
/// to the reading in `tp`.
///
/// # Safety
/// `tp` points to a timespec the caller may write.
#[inline(always)]
unsafe fn add_current_offset(boottime: bool, tp: *mut timespec) {
    let Some(off) = state::current_offset_copy(boottime) else {
        // SAFETY: forwarded contract.
        return unsafe { add_offset_slow(boottime, tp) };
    };
    // SAFETY: forwarded contract.
    unsafe { add_to_reading(off, tp) };
}

/// [`add_current_offset`] before this process's copy of its offsets is made (or outside a
/// sandbox, where there is none): from the store.
///
/// # Safety
/// `tp` points to a timespec the caller may write.
#[cold]
#[inline(never)]
unsafe fn add_offset_slow(boottime: bool, tp: *mut timespec) {
    if let Some(o) = state::current_offsets() {
        let off = if boottime { o.boottime } else { o.monotonic };
        // SAFETY: forwarded contract.
        unsafe { add_to_reading(off, tp) };
    }
}

/// # Safety
/// `tp` points to a timespec the caller may write.
#[inline(always)]
unsafe fn add_to_reading(off: timens::Timespec, tp: *mut timespec) {
    // Scalar loads, on purpose: the vDSO just wrote `*tp` with two 8-byte stores, and the
    // 16-byte vector load the compiler would merge these into cannot be store-forwarded: that
    // stall alone cost ~10 ns per call. (The offsets are atomics: scalar loads already.)
    // SAFETY: the caller guarantees `tp` is a valid timespec (the real call just filled it).
    let (sec, nsec) = unsafe {
        (
            std::ptr::read_volatile(&(*tp).tv_sec),
            std::ptr::read_volatile(&(*tp).tv_nsec),
        )
    };
    let (sec, nsec) = time::add_offset(sec, nsec, off);
    // SAFETY: as above.
    unsafe {
        (*tp).tv_sec = sec;
        (*tp).tv_nsec = nsec;
    }
}

/// `clock_gettime` as seen inside the caller's namespace.
///
/// # Safety
/// As for libc's `clock_gettime`.
#[inline(always)]
pub unsafe fn ns_clock_gettime(clock: clockid_t, tp: *mut timespec) -> c_int {
    // SAFETY: forwarded contract.
    let rc = unsafe { host_clock_gettime(clock, tp) };
    if rc == 0 && !tp.is_null() {
        // SAFETY: the call succeeded, so `tp` is a valid timespec.
        unsafe { shift_reading(clock, tp) };
    }
    rc
}

/// J2: `uptime` = seconds of (host BOOTTIME + boottime offset), rounded up.
///
/// # Safety
/// `info` must be valid for writing a `struct sysinfo`.
pub unsafe fn ns_sysinfo(info: *mut libc::sysinfo) -> c_int {
    let rc = match state::real(&real::SYSINFO) {
        // SAFETY: the real sysinfo with the caller's argument.
        Some(f) => unsafe { f(info) },
        // SAFETY: the sysinfo system call with the caller's argument.
        None => sys::to_libc_int(unsafe {
            sys::raw(libc::SYS_sysinfo, [info as c_long, 0, 0, 0, 0, 0])
        }),
    };
    if rc == 0 {
        // SAFETY: sysinfo succeeded, so `info` is valid.
        unsafe { fix_uptime(info) };
    }
    rc
}

/// # Safety
/// `info` is a valid, filled `struct sysinfo`.
pub unsafe fn fix_uptime(info: *mut libc::sysinfo) {
    let Some(offsets) = state::current_offsets() else {
        return;
    };
    let mut ts = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a timespec we own.
    if unsafe { host_clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return;
    }
    let (sec, nsec) = time::add_offset(ts.tv_sec, ts.tv_nsec, offsets.boottime);
    // SAFETY: the caller guarantees `info` is valid.
    unsafe { (*info).uptime = sec.wrapping_add(i64::from(nsec != 0)) };
}

#[cfg(not(test))]
mod exports {
    use super::*;

    #[no_mangle]
    pub unsafe extern "C" fn clock_gettime(clock: clockid_t, tp: *mut timespec) -> c_int {
        // SAFETY: libc's contract, forwarded.
        unsafe { dispatch(clock, tp) }
    }

    /// glibc's GLIBC_PRIVATE alias, called by name from some of its own libraries.
    #[no_mangle]
    pub unsafe extern "C" fn __clock_gettime(clock: clockid_t, tp: *mut timespec) -> c_int {
        // SAFETY: libc's contract, forwarded.
        unsafe { dispatch(clock, tp) }
    }

    /// A clock no namespace shifts (REALTIME, TAI, CPU clocks, invalid ids) goes straight to
    /// libc's own function once init has looked it up: a test and a jump, so these reads cost
    /// what they cost natively (errno and all). The rest take the shifting path.
    ///
    /// # Safety
    /// As for libc's `clock_gettime`.
    #[inline(always)]
    unsafe fn dispatch(clock: clockid_t, tp: *mut timespec) -> c_int {
        if reading_shift(clock).is_none() {
            if let Some(f) = real::CLOCK_GETTIME.resolved() {
                // SAFETY: libc's clock_gettime with the caller's arguments.
                return unsafe { f(clock, tp) };
            }
        }
        // SAFETY: libc's contract, forwarded.
        unsafe { shifting(clock, tp) }
    }

    /// Out of line, so that `dispatch` needs no stack frame: the pass-through is then a
    /// frameless jump, and this one a direct tail jump.
    ///
    /// # Safety
    /// As for libc's `clock_gettime`.
    ///
    /// With the vDSO found (always, on Linux x86-64 and arm64), the shift's class is taken
    /// before the call and nothing but the offset's add follows it: the vDSO's ordered counter
    /// read waits for every instruction of the previous call's tail, so each one there costs.
    #[inline(never)]
    unsafe extern "C" fn shifting(clock: clockid_t, tp: *mut timespec) -> c_int {
        let Some(vdso) = crate::vdso::clock_gettime() else {
            // SAFETY: libc's contract, forwarded.
            return unsafe { without_vdso(clock, tp) };
        };
        let shift = reading_shift(clock);
        // SAFETY: the vDSO function with the caller's arguments, as libc would call it.
        let r = unsafe { vdso(clock, tp) };
        if r != 0 {
            return vdso_failed(r);
        }
        if let Some(shift) = shift {
            // SAFETY: the vDSO succeeded, so `tp` is a valid timespec it just wrote.
            unsafe { add_current_offset(matches!(shift, time::Shift::Boottime), tp) };
        }
        0
    }

    /// No vDSO: libc's function, else the system call, then the shift.
    ///
    /// # Safety
    /// As for libc's `clock_gettime`.
    #[cold]
    #[inline(never)]
    unsafe extern "C" fn without_vdso(clock: clockid_t, tp: *mut timespec) -> c_int {
        // SAFETY: libc's contract, forwarded.
        unsafe { ns_clock_gettime(clock, tp) }
    }

    #[no_mangle]
    pub unsafe extern "C" fn sysinfo(info: *mut libc::sysinfo) -> c_int {
        // SAFETY: libc's contract, forwarded.
        unsafe { ns_sysinfo(info) }
    }
}
