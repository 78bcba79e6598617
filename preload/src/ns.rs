//! The time-namespace system calls, emulated inside a sandbox (spec A, B): `unshare`, `setns`
//! and `clone3` with CLONE_NEWTIME ask the daemon over the control socket, which decides (from
//! the caller's real credentials, in the kernel's order of checks) and keeps the truth; the
//! library then updates its own two slots. Process creation moves the child into
//! `time_for_children` (B1) in the child itself, without asking anyone: the daemon learns of
//! forks and execs from the kernel's process events.
//!
//! What is covered, and what is not:
//! - `fork()`: a `pthread_atfork` child handler (registered at init); `_Fork()`, glibc's
//!   `clone()` without CLONE_VM, and `syscall(SYS_fork | SYS_clone | SYS_clone3)` without
//!   CLONE_VM are handled by their interposers, since they run no atfork handlers.
//! - `vfork`, `posix_spawn` and threads share the parent's memory and stay in its namespace
//!   until exec (B3); exec re-initialises the library in the new image from
//!   `/proc/self/ns/time`, which the daemon has already moved (B4).
//! - Not covered: a raw `clone` system call made without libc, a `syscall(SYS_clone*)` with a
//!   child stack (the child cannot return through the interposer; it cannot with glibc's
//!   `syscall()` either), `clone3(CLONE_NEWTIME | CLONE_VM)` (A12: the flag is dropped; the child
//!   stays in the parent's namespace and gets no new time_for_children), `setns` on a pidfd (B8:
//!   passed to the kernel), and per-thread namespaces (B9: the library keeps one pair per
//!   process; `unshare` in one thread changes the pair every thread sees).

use std::ffi::{c_int, c_long, c_void};

use timens_proto::{NsSlot, Request};

use crate::state;
use crate::sys::{self, debug, Part::*};
use crate::tables;
use crate::wire;

pub const CLONE_NEWTIME: c_long = 0x80;
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
/// `CLONE_ARGS_SIZE_VER0`: the smallest `struct clone_args` the kernel accepts.
const CLONE_ARGS_SIZE_VER0: usize = 64;
/// The largest `struct clone_args` copied; larger ones must be zero beyond this (E2BIG).
const CLONE_ARGS_MAX: usize = 512;

/// Before a fork (atfork prepare): make sure time_for_children is known, so the child need
/// not ask.
pub extern "C" fn before_fork() {
    state::tfc_slot();
}

/// B1: in the child of a fork, the namespace to run in is the parent's time_for_children. POSIX
/// timers are not inherited. Only atomics: safe in a forked child of a threaded process.
pub extern "C" fn after_fork_in_child() {
    state::set_time(state::tfc_slot());
    tables::forget_timers();
}

/// Asks the daemon which namespaces this process is in. It handles the process events queued
/// before it answers, so this process's entry into its namespace (a fork into a pending
/// time_for_children) is registered, and the namespace frozen (B2), once this returns.
pub fn confirm_membership() {
    let _ = ask(&Request::WhoAmI, None);
}

/// One request to the daemon, with `pass` attached if given. `Err(errno)` is what the emulated
/// system call fails with.
fn ask(req: &Request, pass: Option<c_int>) -> Result<(NsSlot, NsSlot), i32> {
    match wire::call(state::CONTROL_PATH, req, pass) {
        Ok(wire::Answer::Ns { time, tfc }) => Ok((time, tfc)),
        Ok(wire::Answer::Error(errno)) => Err(errno),
        Err(e) => {
            debug(&[
                S(b"talking to the daemon at "),
                S(state::CONTROL_PATH.to_bytes()),
                S(b" failed: errno "),
                I(i64::from(e)),
            ]);
            // As a kernel without time namespaces answers (A9).
            Err(libc::EINVAL)
        }
    }
}

fn adopt(time: NsSlot, tfc: NsSlot) {
    state::set_tfc(state::from_proto(tfc));
    state::set_time(state::from_proto(time));
}

/// `unshare(flags)` (A1): the other namespaces first, by the kernel (on failure nothing else
/// changes), then a new pending time namespace from the daemon as time_for_children. Returns
/// the raw convention (0 or -errno).
pub fn unshare(flags: c_long) -> c_long {
    if flags & CLONE_NEWTIME == 0 || !state::in_sandbox() {
        // SAFETY: unshare takes no pointers.
        return unsafe { sys::raw(libc::SYS_unshare, [flags, 0, 0, 0, 0, 0]) };
    }
    let others = flags & !CLONE_NEWTIME;
    if others != 0 {
        // SAFETY: as above.
        let r = unsafe { sys::raw(libc::SYS_unshare, [others, 0, 0, 0, 0, 0]) };
        if sys::is_err(r) {
            return r;
        }
    }
    match ask(&Request::Unshare, None) {
        Ok((time, tfc)) => {
            adopt(time, tfc);
            0
        }
        Err(e) => -c_long::from(e),
    }
}

/// Whether `fd` looks like an emulated time-namespace file (what the overlay's
/// `/proc/PID/ns/time{,_for_children}` opens to): a regular FUSE file whose inode number is a
/// time namespace's. Only decides who answers; the daemon checks the fd itself.
fn is_emulated_ns_file(fd: c_int) -> Result<bool, c_long> {
    // SAFETY: an all-zero `struct stat` is a valid value to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat into a struct we own.
    let r = unsafe {
        sys::raw(
            libc::SYS_fstat,
            [
                fd as c_long,
                std::ptr::from_mut(&mut st) as c_long,
                0,
                0,
                0,
                0,
            ],
        )
    };
    if sys::is_err(r) {
        return Err(r);
    }
    let ino = st.st_ino;
    let is_time_inum = ino == u64::from(timens::INIT_TIME_INUM)
        || (u64::from(timens::INUM_BASE)..=u64::from(u32::MAX)).contains(&ino);
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || !is_time_inum {
        return Ok(false);
    }
    // SAFETY: an all-zero `struct statfs` is a valid value to overwrite.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs into a struct we own.
    let r = unsafe {
        sys::raw(
            libc::SYS_fstatfs,
            [
                fd as c_long,
                std::ptr::from_mut(&mut sfs) as c_long,
                0,
                0,
                0,
                0,
            ],
        )
    };
    Ok(!sys::is_err(r) && sfs.f_type == FUSE_SUPER_MAGIC)
}

/// `setns(fd, nstype)` (B5, B6): on an emulated time-namespace file, the daemon decides from
/// the fd itself, sent along (which namespace, EINVAL for a file not its own, then EUSERS,
/// EPERM) and both slots switch at once; anything else is the kernel's (a real nsfs fd still
/// works, a FUSE or regular file gets the kernel's EINVAL, a closed fd EBADF).
pub fn setns(fd: c_long, nstype: c_long) -> c_long {
    let real = || {
        // SAFETY: setns takes no pointers.
        unsafe { sys::raw(libc::SYS_setns, [fd, nstype, 0, 0, 0, 0]) }
    };
    if !state::in_sandbox() {
        return real();
    }
    match is_emulated_ns_file(fd as c_int) {
        Ok(true) => {}
        // Not ours, or EBADF: the kernel answers.
        Ok(false) | Err(_) => return real(),
    }
    // B6: nstype must be 0 or the namespace's own type.
    if nstype as c_int != 0 && nstype != CLONE_NEWTIME {
        return -c_long::from(libc::EINVAL);
    }
    match ask(&Request::Setns, Some(fd as c_int)) {
        Ok((time, tfc)) => {
            adopt(time, tfc);
            0
        }
        Err(e) => -c_long::from(e),
    }
}

/// `syscall(SYS_clone3, args, size)`. With CLONE_NEWTIME and without CLONE_VM (A11): the
/// daemon makes the child's namespace first (refusing as the kernel would, with nothing
/// changed), the kernel clones without the flag, the child switches to the new namespace
/// itself, and the parent tells the daemon where the child is. Without CLONE_NEWTIME, a
/// fork-like child enters time_for_children (B1).
///
/// # Safety
/// As for the system call: `a[0]` points to `a[1]` readable bytes of `struct clone_args`.
pub unsafe fn clone3(a: [c_long; 6]) -> c_long {
    let (args, size) = (a[0] as *const u8, a[1] as usize);
    if args.is_null() || size < CLONE_ARGS_SIZE_VER0 || !state::in_sandbox() {
        // SAFETY: forwarded; the kernel validates.
        return unsafe { sys::raw(libc::SYS_clone3, a) };
    }
    // SAFETY: the caller's struct clone_args holds at least VER0 bytes: flags at 0, stack at 40.
    let (flags, stack) = unsafe {
        (
            args.cast::<u64>().read_unaligned(),
            args.add(40).cast::<u64>().read_unaligned(),
        )
    };
    let fork_like = flags & libc::CLONE_VM as u64 == 0 && stack == 0;
    if flags & CLONE_NEWTIME as u64 == 0 || stack != 0 {
        if fork_like {
            state::tfc_slot();
        }
        // SAFETY: forwarded unchanged.
        let r = unsafe { sys::raw(libc::SYS_clone3, a) };
        if r == 0 && fork_like {
            after_fork_in_child();
        }
        return r;
    }
    // A copy without CLONE_NEWTIME (the kernel's size rules: bytes beyond what we copy must be
    // zero, else E2BIG).
    let mut copy = [0u64; CLONE_ARGS_MAX / 8];
    let take = size.min(CLONE_ARGS_MAX);
    if size > CLONE_ARGS_MAX {
        if size > 4096 {
            return -c_long::from(libc::E2BIG);
        }
        // SAFETY: the caller's struct holds `size` bytes.
        let tail = unsafe { std::slice::from_raw_parts(args.add(CLONE_ARGS_MAX), size - take) };
        if tail.iter().any(|&b| b != 0) {
            return -c_long::from(libc::E2BIG);
        }
    }
    // SAFETY: `take` bytes of the caller's struct into our buffer of CLONE_ARGS_MAX bytes.
    unsafe { std::ptr::copy_nonoverlapping(args, copy.as_mut_ptr().cast::<u8>(), take) };
    copy[0] = flags & !(CLONE_NEWTIME as u64);
    if flags & libc::CLONE_VM as u64 != 0 {
        // A12: the child would stay in our namespace with the new one as time_for_children;
        // not emulated (see the module docs): clone without the flag.
        debug(&[S(b"clone3(CLONE_NEWTIME|CLONE_VM): namespace not created")]);
        // SAFETY: our copy, `take` bytes.
        return unsafe {
            sys::raw(
                libc::SYS_clone3,
                [copy.as_ptr() as c_long, take as c_long, 0, 0, 0, 0],
            )
        };
    }
    let (new, _) = match ask(&Request::NewChildNs, None) {
        Ok(slots) => slots,
        Err(e) => return -c_long::from(e),
    };
    // SAFETY: our copy, `take` bytes; no child stack, so the child returns here on a copy of
    // this frame.
    let r = unsafe {
        sys::raw(
            libc::SYS_clone3,
            [copy.as_ptr() as c_long, take as c_long, 0, 0, 0, 0],
        )
    };
    if r == 0 {
        // The child: enters the new namespace at once (A11). Only atomics here.
        let slot = state::from_proto(new);
        state::set_tfc(slot);
        state::set_time(slot);
        tables::forget_timers();
        return 0;
    }
    if r > 0 {
        let placed = ask(
            &Request::PlaceChild {
                pid: r as u32,
                inum: new.inum,
            },
            None,
        );
        if let Err(e) = placed {
            debug(&[
                S(b"PlaceChild for pid "),
                I(r as i64),
                S(b" failed: errno "),
                I(i64::from(e)),
            ]);
        }
    }
    r
}

/// Context for glibc's `clone()` trampoline; lives in the parent's frame, which a child without
/// CLONE_VM sees in its copy of the parent's memory.
#[repr(C)]
pub struct CloneCtx {
    pub f: crate::real::CloneFn,
    pub arg: *mut c_void,
}

/// Runs first in the child of glibc's `clone()` without CLONE_VM (B1), then the caller's fn.
pub extern "C" fn clone_child(ctx: *mut c_void) -> c_int {
    // SAFETY: `ctx` is the address of the parent's `CloneCtx`, present in the child's copy of
    // the parent's memory (no CLONE_VM).
    let ctx = unsafe { &*ctx.cast::<CloneCtx>() };
    after_fork_in_child();
    (ctx.f)(ctx.arg)
}

#[cfg(not(test))]
mod exports {
    use super::*;
    use crate::real;

    #[no_mangle]
    pub extern "C" fn unshare(flags: c_int) -> c_int {
        sys::to_libc_int(super::unshare(c_long::from(flags)))
    }

    #[no_mangle]
    pub extern "C" fn setns(fd: c_int, nstype: c_int) -> c_int {
        sys::to_libc_int(super::setns(c_long::from(fd), c_long::from(nstype)))
    }

    /// glibc's fork without atfork handlers.
    #[no_mangle]
    pub unsafe extern "C" fn _Fork() -> libc::pid_t {
        let Some(f) = state::real(&real::FORK) else {
            sys::set_errno(libc::ENOSYS);
            return -1;
        };
        state::tfc_slot();
        // SAFETY: the real _Fork.
        let pid = unsafe { f() };
        if pid == 0 {
            after_fork_in_child();
        }
        pid
    }

    /// glibc's `clone(fn, stack, flags, arg, ptid, tls, ctid)`. On x86_64 the variadic
    /// `ptid, tls, ctid` arrive exactly like fixed arguments (SysV: integer arguments in
    /// registers, the seventh on the stack), so they are declared as such and passed on.
    #[cfg(target_arch = "x86_64")]
    #[no_mangle]
    pub unsafe extern "C" fn clone(
        f: real::CloneFn,
        stack: *mut c_void,
        flags: c_int,
        arg: *mut c_void,
        ptid: *mut c_void,
        tls: *mut c_void,
        ctid: *mut c_void,
    ) -> c_int {
        let Some(real_clone) = state::real(&real::CLONE) else {
            sys::set_errno(libc::ENOSYS);
            return -1;
        };
        if flags & libc::CLONE_VM != 0 || state::time_slot() == state::tfc_slot() {
            // SAFETY: the real clone with the caller's arguments.
            return unsafe { real_clone(f, stack, flags, arg, ptid, tls, ctid) };
        }
        let ctx = CloneCtx { f, arg };
        // SAFETY: the real clone; the child gets a copy of `ctx` (no CLONE_VM) and the parent
        // keeps it alive until clone returns.
        unsafe {
            real_clone(
                clone_child,
                stack,
                flags,
                std::ptr::from_ref(&ctx).cast_mut().cast(),
                ptid,
                tls,
                ctid,
            )
        }
    }
}
