//! The exported `syscall()`: glibc's generic system-call entry, which programs (and language
//! runtimes: Rust's std for futex waits, for one) use to reach calls libc has no wrapper for.
//!
//! The clock, timer, futex and namespace calls get the same treatment as their libc wrappers;
//! every other number goes straight to the kernel through the same `syscall` instruction
//! glibc's version executes, with its return convention (-1 and errno on failure).

use std::ffi::c_long;

use libc::{clockid_t, timespec};

use crate::clocks;
use crate::deadlines;
use crate::ns;
use crate::state;
use crate::sys;
use crate::tables;

/// Dispatches one system call; returns the raw result (negative errno on failure).
///
/// # Safety
/// As for the system call `n` with arguments `a`.
pub unsafe fn dispatch(n: c_long, a: [c_long; 6]) -> c_long {
    // SAFETY (every arm): the caller's system call and arguments, forwarded or handed to the
    // matching emulation, which has the same contract.
    unsafe {
        match n {
            libc::SYS_clock_gettime => {
                let r = sys::raw(n, a);
                if r == 0 && a[1] != 0 && state::ready() {
                    clocks::shift_reading(a[0] as clockid_t, a[1] as *mut timespec);
                }
                r
            }
            libc::SYS_clock_nanosleep => deadlines::sys_clock_nanosleep(a),
            libc::SYS_futex => deadlines::sys_futex(a),
            libc::SYS_futex_waitv => deadlines::sys_futex_waitv(a),
            libc::SYS_timer_settime => deadlines::sys_timer_settime(a),
            libc::SYS_timerfd_settime => deadlines::sys_timerfd_settime(a),
            libc::SYS_timer_create => {
                let r = sys::raw(n, a);
                if r == 0 && a[2] != 0 {
                    let id = (a[2] as *const i32).read();
                    tables::timer_created(id as usize, a[0] as i32);
                }
                r
            }
            libc::SYS_timer_delete => {
                let r = sys::raw(n, a);
                if r == 0 {
                    tables::timer_deleted(a[0] as i32 as usize);
                }
                r
            }
            libc::SYS_timerfd_create => {
                let r = sys::raw(n, a);
                if r >= 0 {
                    tables::timerfd_created(r as i32, a[0] as i32);
                }
                r
            }
            libc::SYS_sysinfo => {
                let r = sys::raw(n, a);
                if r == 0 && a[0] != 0 && state::ready() {
                    clocks::fix_uptime(a[0] as *mut libc::sysinfo);
                }
                r
            }
            libc::SYS_unshare => ns::unshare(a[0]),
            libc::SYS_setns => ns::setns(a[0], a[1]),
            libc::SYS_clone3 => ns::clone3(a),
            libc::SYS_fork => {
                state::tfc_slot();
                let r = sys::raw(n, a);
                if r == 0 {
                    ns::after_fork_in_child();
                }
                r
            }
            libc::SYS_clone => {
                // Fork-like only: no shared memory, no child stack (B1).
                let fork_like = a[0] & c_long::from(libc::CLONE_VM) == 0 && a[1] == 0;
                if fork_like {
                    state::tfc_slot();
                }
                let r = sys::raw(n, a);
                if r == 0 && fork_like {
                    ns::after_fork_in_child();
                }
                r
            }
            _ => sys::raw(n, a),
        }
    }
}

/// `long syscall(long number, ...)`.
///
/// glibc's is variadic. On x86_64 (SysV ABI) variadic integer arguments are passed exactly like
/// fixed ones (rdi, rsi, rdx, rcx, r8, r9, then the stack), so a fixed seven-argument definition
/// receives them; arguments the caller did not pass are whatever is in those registers and
/// stack slot, and are read but ignored by the kernel, as with glibc's own `syscall()`.
#[cfg(all(not(test), target_arch = "x86_64"))]
#[no_mangle]
pub unsafe extern "C" fn syscall(
    n: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    // SAFETY: the caller's system call, with glibc's `syscall()` contract.
    sys::to_libc(unsafe { dispatch(n, [a1, a2, a3, a4, a5, a6]) })
}
