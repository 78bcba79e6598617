//! The library's process-wide state, all in static atomics: whether init has run, the mapped
//! offset store, and the caller's two namespaces (`time` and `time_for_children`) as store slots.
//!
//! Init happens once, in the library constructor (or lazily in whichever interposer runs first):
//! the vDSO's clock function is found, the wrapped functions a signal handler may call are
//! looked up and the fork handlers are registered; the other wrapped libc functions are looked
//! up when first needed (`sys::Real`). While init runs, any interposed call (another thread, or
//! a signal handler interrupting init) sees "not ready" and falls back to the raw system call:
//! never recursion, never a lock. The offset store and the caller's namespace are looked up
//! later, on the first call that needs them (`lazy_store`):
//! most processes never need them, and every exec would pay for it.

use std::ffi::{c_long, CStr};
use std::path::Path;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use timens::store::{AtomicOffsets, SlotRef, StoreReader};
use timens::{Offsets, Timespec, INIT_TIME_INUM};

use crate::parse;
use crate::sys::{self, debug, Part::*};

/// Where `timens run` puts the store and the control socket inside a sandbox (read-only bind
/// mounts under the /proc overlay). Outside a sandbox the store does not exist and the library
/// passes everything through.
pub const STORE_PATH: &str = "/proc/.timens/store";
pub const CONTROL_PATH: &std::ffi::CStr = c"/proc/.timens/control.sock";

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;

static PHASE: AtomicU8 = AtomicU8::new(UNINIT);

/// The mapped store, or NULL outside a sandbox; points into `STORE_CELL`, which lives as long as
/// the process image.
static STORE: AtomicPtr<StoreReader> = AtomicPtr::new(std::ptr::null_mut());
/// Static rather than boxed: init allocates nothing (malloc's own setup would be a cost for
/// every program that never allocates).
static STORE_CELL: std::sync::OnceLock<StoreReader> = std::sync::OnceLock::new();

/// A namespace as the clock path needs it: [`NO_SLOT`] for "zero offsets" (the initial
/// namespace, or not in a sandbox), else `index << 32 | generation`.
pub const NO_SLOT: u64 = u64::MAX;
static TIME: AtomicU64 = AtomicU64::new(NO_SLOT);
static TIME_FOR_CHILDREN: AtomicU64 = AtomicU64::new(NO_SLOT);
/// `TIME_FOR_CHILDREN` not read yet (see [`tfc_slot`]).
const UNKNOWN: u64 = u64::MAX - 1;

pub fn pack(slot: SlotRef) -> u64 {
    (u64::from(slot.index) << 32) | u64::from(slot.generation)
}

fn unpack(v: u64) -> SlotRef {
    SlotRef {
        index: (v >> 32) as u32,
        generation: v as u32,
    }
}

/// Whether init has completed; runs it if nobody has started it. `false` means "fall back to
/// the raw system call".
#[inline(always)]
pub fn ready() -> bool {
    PHASE.load(Ordering::Acquire) == READY || init_slow()
}

/// A real libc function, initialising first if needed; `None` means "fall back".
#[inline(always)]
pub fn real<F: Copy>(f: &crate::sys::Real<F>) -> Option<F> {
    if ready() {
        f.get()
    } else {
        None
    }
}

/// `extern "C"`: a panic during init (there is none to expect) aborts, even when init runs
/// lazily inside a `"C-unwind"` interposer.
#[cold]
extern "C" fn init_slow() -> bool {
    match PHASE.compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {
            init();
            PHASE.store(READY, Ordering::Release);
            true
        }
        Err(phase) => phase == READY,
    }
}

fn init() {
    sys::init_debug();
    crate::real::resolve_async_signal_safe();
    crate::vdso::resolve();
    if another_copy_first() {
        // Two different files of this library loaded (say ld.so.preload and LD_PRELOAD): the
        // first one shifts, and calls this one as its "real" functions, so this one must pass
        // everything through or clocks would be shifted twice.
        debug(&[S(
            b"another copy of the library is loaded first: passing through",
        )]);
        STORE_PHASE.store(READY, Ordering::Release);
        return;
    }
    // B1: a forked child enters its parent's time_for_children, read before the fork. Outside a
    // sandbox both handlers find no store and do nothing.
    // SAFETY: registers handlers that make one readlink (prepare) and store atomics (child).
    let rc = unsafe {
        libc::pthread_atfork(
            Some(crate::ns::before_fork),
            None,
            Some(crate::ns::after_fork_in_child),
        )
    };
    if rc != 0 {
        debug(&[S(b"pthread_atfork failed: "), I(i64::from(rc))]);
    }
}

/// Whether the offset store has been looked for (READY), is being looked for (BUSY), or not yet
/// (UNINIT). Separate from `PHASE`: the store is opened on first use, not at load, because most
/// processes (a shell script's `cat`, `grep`, `true`) never read a shifted clock, and opening it
/// costs every exec in a sandbox about 40 us (open, mmap, a readlink, page faults).
static STORE_PHASE: AtomicU8 = AtomicU8::new(UNINIT);

thread_local! {
    /// This thread is inside `init_store` (a signal handler that interrupts it must not wait
    /// for it). A forked child's thread inherits the flag with the state it copies.
    static OPENING_STORE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The store, opened on first use; None outside a sandbox, before `init`, or in a signal
/// handler that interrupted this thread's own opening of it (it then passes through, as every
/// call made during `init` does). Another thread's opening is waited for (tens of
/// microseconds), so no thread ever sees unshifted clocks once the process has shifted ones.
/// Only async-signal-safe system calls; no allocation, no lock.
#[cold]
#[inline(never)]
fn lazy_store() -> Option<&'static StoreReader> {
    if !ready() {
        return None;
    }
    loop {
        // A plain load first: outside a sandbox every clock read comes here (STORE stays NULL).
        match STORE_PHASE.load(Ordering::Acquire) {
            READY => break,
            UNINIT => {
                if STORE_PHASE
                    .compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Acquire)
                    .is_ok()
                {
                    OPENING_STORE.with(|f| f.set(true));
                    init_store();
                    OPENING_STORE.with(|f| f.set(false));
                    STORE_PHASE.store(READY, Ordering::Release);
                    break;
                }
            }
            _ if OPENING_STORE.with(|f| f.get()) => return None,
            _ => std::thread::yield_now(),
        }
    }
    // SAFETY: a non-NULL STORE points into STORE_CELL, set once and never dropped.
    unsafe { STORE.load(Ordering::Acquire).as_ref() }
}

/// The store if it is open, else opens it (see `lazy_store`).
#[inline(always)]
fn store() -> Option<&'static StoreReader> {
    // SAFETY: a non-NULL STORE points into STORE_CELL, set once and never dropped.
    match unsafe { STORE.load(Ordering::Acquire).as_ref() } {
        Some(s) => Some(s),
        None => lazy_store(),
    }
}

/// Opens and maps the store and finds the caller's namespace in it; leaves STORE NULL outside
/// a sandbox. TIME is written before STORE is published.
fn init_store() {
    let store = match StoreReader::open_if_present(Path::new(STORE_PATH)) {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            debug(&[
                S(b"offset store unusable, passing clocks through: errno "),
                I(i64::from(e.raw_os_error().unwrap_or(0))),
            ]);
            return;
        }
    };
    if STORE_CELL.set(store).is_err() {
        return; // opened once (STORE_PHASE), so never
    }
    let Some(store) = STORE_CELL.get() else {
        return;
    };
    let time = own_ns_slot(store, c"/proc/.timens/time", c"/proc/self/ns/time");
    TIME.store(time, Ordering::Relaxed);
    // time_for_children is needed only when a child is made: read it then (each readlink is a
    // FUSE round trip, and most processes never fork).
    TIME_FOR_CHILDREN.store(UNKNOWN, Ordering::Relaxed);
    STORE.store(std::ptr::from_ref(store).cast_mut(), Ordering::Release);
    debug(&[S(b"in a sandbox: time slot "), I(slot_index(time))]);
}

/// This copy's identity: a static that is not exported, so code here reaches it directly and
/// no other object can interpose it.
static THIS_COPY: u8 = 0;

/// Exported so that a second copy of the library can tell that it is not the first: its value
/// is the address of the copy's own [`THIS_COPY`].
#[cfg(not(test))]
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static timens_preload_marker: &u8 = &THIS_COPY;

/// Whether the first `timens_preload_marker` in the global scope belongs to another copy of
/// the library: its value is not our own `THIS_COPY`. (Our own reference to the exported
/// symbol could itself be resolved to the other copy's; the hidden static cannot.) One dlsym,
/// no dladdr: this runs at every exec in a sandbox.
fn another_copy_first() -> bool {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name.
    let first = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"timens_preload_marker".as_ptr()) };
    if first.is_null() {
        return false;
    }
    // SAFETY: `first` is the address of a `timens_preload_marker`, a pointer-sized static in
    // this version. (An older copy's one-byte marker reads as some other value: also "not
    // this copy", which is the right answer.)
    let theirs = unsafe { first.cast::<usize>().read_unaligned() };
    theirs != std::ptr::addr_of!(THIS_COPY) as usize
}

fn slot_index(v: u64) -> i64 {
    if v == NO_SLOT {
        -1
    } else {
        i64::from(unpack(v).index)
    }
}

/// The caller's namespace slot: through the overlay's one-round-trip `/proc/.timens/time*`
/// links, else the kernel-interface `/proc/self/ns/time*` (six round trips on a fresh process).
fn own_ns_slot(store: &StoreReader, hidden: &CStr, public: &CStr) -> u64 {
    try_ns_slot(store, hidden).unwrap_or_else(|| try_ns_slot(store, public).unwrap_or(NO_SLOT))
}

/// The slot of the namespace a `time:[N]` link names; None when the link cannot be read.
fn try_ns_slot(store: &StoreReader, link: &CStr) -> Option<u64> {
    let mut buf = [0u8; 64];
    // SAFETY: readlink into a buffer we own, its length passed.
    let n = unsafe {
        sys::raw(
            libc::SYS_readlinkat,
            [
                libc::AT_FDCWD as c_long,
                link.as_ptr() as c_long,
                buf.as_mut_ptr() as c_long,
                buf.len() as c_long,
                0,
                0,
            ],
        )
    };
    if sys::is_err(n) {
        debug(&[
            S(b"readlink "),
            S(link.to_bytes()),
            S(b" failed: errno "),
            I(-n),
        ]);
        return None;
    }
    let Some(inum) = parse::ns_link_inum(&buf[..n as usize]) else {
        debug(&[S(b"not a time namespace link: "), S(&buf[..n as usize])]);
        return Some(NO_SLOT);
    };
    if inum == INIT_TIME_INUM {
        return Some(NO_SLOT);
    }
    Some(match store.slot_for_inum(inum) {
        Some(slot) => pack(slot),
        None => {
            debug(&[
                S(b"no live store slot for time:["),
                I(i64::from(inum)),
                S(b"]"),
            ]);
            NO_SLOT
        }
    })
}

/// Whether this process runs inside a timensfs sandbox (the store was found).
pub fn in_sandbox() -> bool {
    store().is_some()
}

/// The offsets of the caller's current time namespace; `None` means zero offsets. Lock-free,
/// allocation-free, async-signal-safe: once the namespace's offsets are copied into
/// [`COPIES`], two plain loads.
#[inline(always)]
pub fn current_offsets() -> Option<Offsets> {
    match current_copy() {
        Some(copy) => Some(copy.load()),
        None => offsets_slow(),
    }
}

/// One offset (`boottime`: the boottime one, else the monotonic one) from this process's copy,
/// if it is made: the clock path's first try (else [`current_offsets`]).
#[inline(always)]
pub fn current_offset_copy(boottime: bool) -> Option<Timespec> {
    current_copy().map(|copy| copy.load_one(boottime))
}

/// This process's copy of its current namespace's offsets, if it is made.
#[inline(always)]
fn current_copy() -> Option<&'static AtomicOffsets> {
    // SAFETY: a non-NULL CURRENT points into COPIES (a static).
    unsafe { CURRENT.load(Ordering::Acquire).as_ref() }
}

/// Outside a sandbox, in the initial namespace, or before the copy is made: from the store
/// (opened here on first use; TIME is valid once it is published).
#[cold]
#[inline(never)]
fn offsets_slow() -> Option<Offsets> {
    let store = store()?;
    let v = TIME.load(Ordering::Relaxed);
    if v == NO_SLOT {
        return None;
    }
    let (mut offsets, mut frozen) = store.offsets(unpack(v))?;
    if !frozen && ASKED.swap(v, Ordering::Relaxed) != v {
        // This process is in a namespace not frozen yet: its entry (a fork into
        // time_for_children, B1) may still be queued for the daemon, and a `timens_offsets`
        // write could then be accepted after this read, as the kernel never would (B2). The
        // daemon handles every queued process event before it answers, which freezes the
        // namespace; only then is what this process reads final. Asked once per namespace.
        crate::ns::confirm_membership();
        (offsets, frozen) = store.offsets(unpack(v))?;
    }
    // Only frozen offsets are copied: they never change again.
    if frozen {
        publish_copy(v, offsets);
    }
    Some(offsets)
}

/// The TIME value [`offsets_slow`] last asked the daemon about.
static ASKED: AtomicU64 = AtomicU64::new(NO_SLOT);

/// The clock path's copies of the current namespace's offsets. A namespace's offsets are
/// frozen from its first member's entry on (C1), and this process is a member of the one TIME
/// names, so a copy made after TIME was set never goes stale: the clock path reads it without
/// the store's seqlock, its bounds and liveness checks, or the loads that lead to the slot.
/// CURRENT is NULL until the first read after TIME changes makes a copy. A change writes the
/// next of four copies and then publishes it, so a reader never sees one half written (only
/// four changes inside one read, by signal handlers, could reach the copy it is reading).
static COPIES: [AtomicOffsets; 4] = [
    AtomicOffsets::new(),
    AtomicOffsets::new(),
    AtomicOffsets::new(),
    AtomicOffsets::new(),
];
static CURRENT: AtomicPtr<AtomicOffsets> = AtomicPtr::new(std::ptr::null_mut());
static NEXT_COPY: AtomicUsize = AtomicUsize::new(0);

/// Publishes `offsets` as the copy for TIME value `v`, unless TIME moved on meanwhile.
fn publish_copy(v: u64, offsets: Offsets) {
    let i = NEXT_COPY.fetch_add(1, Ordering::Relaxed) % COPIES.len();
    let copy = &COPIES[i];
    copy.store(offsets);
    CURRENT.store(std::ptr::from_ref(copy).cast_mut(), Ordering::SeqCst);
    if TIME.load(Ordering::SeqCst) != v {
        // `set_time` ran in between (a signal handler's setns): drop the copy; the next read
        // makes the right one. (If it ran wholly before this load, its second drop came after
        // the store above.)
        CURRENT.store(std::ptr::null_mut(), Ordering::SeqCst);
    }
}

pub fn time_slot() -> u64 {
    if store().is_none() {
        return NO_SLOT;
    }
    TIME.load(Ordering::Relaxed)
}

/// The time_for_children slot, read from `/proc/self/ns/time_for_children` on first use (a
/// readlink: async-signal-safe, but not for the clock path).
pub fn tfc_slot() -> u64 {
    let Some(store) = store() else {
        return NO_SLOT;
    };
    let v = TIME_FOR_CHILDREN.load(Ordering::Relaxed);
    if v != UNKNOWN {
        return v;
    }
    let read = own_ns_slot(
        store,
        c"/proc/.timens/time_for_children",
        c"/proc/self/ns/time_for_children",
    );
    // Keep a value set meanwhile by unshare or setns.
    match TIME_FOR_CHILDREN.compare_exchange(UNKNOWN, read, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => read,
        Err(current) => current,
    }
}

/// Written only when it changes: after a fork the page stays shared with the parent (a write
/// would copy it in every forked child).
pub fn set_time(v: u64) {
    if TIME.load(Ordering::Relaxed) != v {
        // The copy belongs to the old namespace: dropped before TIME changes, and again after,
        // in case a `publish_copy` that read the old TIME slipped in between.
        CURRENT.store(std::ptr::null_mut(), Ordering::SeqCst);
        TIME.store(v, Ordering::SeqCst);
        CURRENT.store(std::ptr::null_mut(), Ordering::SeqCst);
    }
}

pub fn set_tfc(v: u64) {
    TIME_FOR_CHILDREN.store(v, Ordering::Relaxed);
}

/// A slot named by the daemon (`index == INIT_SLOT_INDEX` is the initial namespace).
pub fn from_proto(slot: timens_proto::NsSlot) -> u64 {
    if slot.index == timens_proto::INIT_SLOT_INDEX {
        NO_SLOT
    } else {
        pack(SlotRef {
            index: slot.index,
            generation: slot.generation,
        })
    }
}
