//! The clock library, `libtimens_preload.so`: loaded into every dynamically linked process of a
//! timensfs sandbox (ld.so.preload or LD_PRELOAD), it makes the libc clock, timer and
//! namespace calls behave as in the process's emulated time namespace.
//!
//! - Clocks (spec H): `clock_gettime` reads the real vDSO clock and adds the offsets of the
//!   caller's namespace, read lock-free from the daemon's offset store (`/proc/.timens/store`).
//! - Deadlines (I): absolute MONOTONIC/BOOTTIME deadlines are translated to host time.
//! - Namespaces (A, B): `unshare`, `setns`, `clone3` with CLONE_NEWTIME ask the daemon
//!   (`/proc/.timens/control.sock`); fork moves the child into time_for_children.
//!
//! Outside a sandbox (no store) it does nothing but call the real functions. It never
//! allocates, locks, prints or panics on the clock path; it is silent unless
//! `TIMENS_PRELOAD_DEBUG=1`. Rule numbers refer to `shared/spec/timens-semantics.md`.
//!
//! Known limits (see also `ns`): calls that bypass the exported libc symbols are not seen:
//! glibc's internal calls (`time()`, `gettimeofday()` are REALTIME anyway; `timespec_get`,
//! `clock()` and glibc-internal waits), statically linked programs, Go programs and direct vDSO
//! calls (spec §4.7).
#![cfg_attr(test, allow(dead_code))]

mod clocks;
mod deadlines;
mod ns;
mod parse;
mod real;
mod state;
mod sys;
mod syscall;
mod tables;
mod time;
mod vdso;
mod wire;

/// Initialises the library as soon as it is loaded (before `main`), so that the first clock
/// read is already shifted and the atfork handler is in place; every interposer can also
/// initialise lazily.
#[cfg(not(test))]
extern "C" fn constructor() {
    state::ready();
}

#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;
