//! The shared offset store: one file, mapped `MAP_SHARED` read-write by the daemon ([`Store`]) and
//! read-only by the clock library ([`StoreReader`]).
//!
//! Layout (all native-endian, `#[repr(C)]`, pinned by the compile-time assertions below):
//!
//! | offset | size | what |
//! |---|---|---|
//! | 0 | 4096 | `Header`: magic `"TIMENSFS"`, version, slot count, slot/meta/header sizes |
//! | 4096 | 64 × slot_count | hot `Slot`s, one cache line each, read by the clock library under a seqlock |
//! | 4096 + 64 × slot_count | 128 × slot_count | cold `MetaRecord`s, used by the daemon only |
//!
//! Slot `i` is the namespace with inode number `INUM_BASE + i`. A slot's `generation` is bumped on
//! every alloc and every release (odd while in use), so a [`SlotRef`] held across a reuse is
//! recognised as stale.
//!
//! The file is created complete under a temporary name and hard-linked into place, so a reader never
//! sees a half-written header; an existing file is always reopened intact, never reinitialised: a
//! restarted daemon finds every namespace and offset where it left them (DESIGN "The offset store").

mod sys;

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::mem::{align_of, offset_of, size_of};
use std::os::unix::fs::{DirBuilderExt, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::{Offsets, Timespec, INUM_BASE};
use sys::Mapping;

/// Where the daemon keeps the store unless told otherwise.
pub const DEFAULT_STORE_PATH: &str = "/run/timensfs/store";

/// The first eight bytes of the file read `TIMENSFS`.
pub const STORE_MAGIC: u64 = u64::from_ne_bytes(*b"TIMENSFS");
/// Bumped on any change of the layout below.
pub const STORE_VERSION: u32 = 1;
pub const HEADER_SIZE: usize = 4096;
pub const SLOT_SIZE: usize = 64;
pub const META_SIZE: usize = 128;
/// Bytes of a slot's label; a 64-hex-digit container id fits exactly.
pub const LABEL_LEN: usize = 64;
/// Upper bound on `slot_count` (a 192 MiB file), well inside the inode range above `INUM_BASE`.
pub const MAX_SLOT_COUNT: u32 = 1 << 20;

/// `Slot::flags`: the slot holds a namespace.
pub const FLAG_IN_USE: u32 = 1 << 0;
/// `Slot::flags`: the namespace's offsets are frozen (C1).
pub const FLAG_FROZEN: u32 = 1 << 1;

/// The file's first page. Written once, before the file becomes visible under its name.
#[repr(C)]
struct Header {
    magic: u64,
    version: u32,
    slot_count: u32,
    slot_size: u32,
    meta_size: u32,
    header_size: u32,
    _reserved: [u8; HEADER_SIZE - 28],
}

/// One namespace's hot data: what the clock library reads on every `clock_gettime`.
///
/// Every field is an atomic because another process may be reading (or, for the daemon, writing)
/// it at any time. Readers use only `Relaxed` loads and fences, which are valid on a `PROT_READ`
/// mapping (std `atomic` docs, "Atomic accesses to read-only memory").
#[repr(C, align(64))]
struct Slot {
    /// Seqlock: odd while the daemon is writing the slot (as the kernel's vDSO data page does).
    seq: AtomicU32,
    /// Bumped on every alloc and release; odd while the slot is in use.
    generation: AtomicU32,
    inum: AtomicU32,
    /// `FLAG_IN_USE | FLAG_FROZEN`.
    flags: AtomicU32,
    offsets: AtomicOffsets,
    /// Room for future clocks.
    _reserved: [AtomicU64; 2],
}

/// A namespace's two offsets as four atomics, in the order the file format gives them
/// (monotonic seconds and nanoseconds, then boottime): the store's slots hold one, and so does
/// the clock library's per-process copy of its current namespace's offsets. Single loads and
/// stores are `Relaxed`; whoever needs a consistent pair brings its own ordering (the slot's
/// seqlock, the library's publishing pointer).
#[repr(C)]
pub struct AtomicOffsets {
    mono_sec: AtomicI64,
    mono_nsec: AtomicI64,
    boot_sec: AtomicI64,
    boot_nsec: AtomicI64,
}

impl AtomicOffsets {
    pub const fn new() -> AtomicOffsets {
        AtomicOffsets {
            mono_sec: AtomicI64::new(0),
            mono_nsec: AtomicI64::new(0),
            boot_sec: AtomicI64::new(0),
            boot_nsec: AtomicI64::new(0),
        }
    }

    #[inline(always)]
    pub fn load(&self) -> Offsets {
        Offsets {
            monotonic: self.load_one(false),
            boottime: self.load_one(true),
        }
    }

    /// One clock's offset: the boottime one if `boottime`, else the monotonic one.
    #[inline(always)]
    pub fn load_one(&self, boottime: bool) -> Timespec {
        let (sec, nsec) = if boottime {
            (&self.boot_sec, &self.boot_nsec)
        } else {
            (&self.mono_sec, &self.mono_nsec)
        };
        Timespec {
            sec: sec.load(Ordering::Relaxed),
            nsec: nsec.load(Ordering::Relaxed),
        }
    }

    pub fn store(&self, offsets: Offsets) {
        self.mono_sec
            .store(offsets.monotonic.sec, Ordering::Relaxed);
        self.mono_nsec
            .store(offsets.monotonic.nsec, Ordering::Relaxed);
        self.boot_sec.store(offsets.boottime.sec, Ordering::Relaxed);
        self.boot_nsec
            .store(offsets.boottime.nsec, Ordering::Relaxed);
    }
}

impl Default for AtomicOffsets {
    fn default() -> AtomicOffsets {
        AtomicOffsets::new()
    }
}

/// One namespace's cold data, read and written by the daemon only, under its writer mutex.
#[derive(Clone, Copy)]
#[repr(C)]
struct MetaRecord {
    anchor_pid: u32,
    _pad: u32,
    anchor_starttime: u64,
    mntns_inum: u64,
    created_unix: u64,
    label: [u8; LABEL_LEN],
    _reserved: [u8; 32],
}

const _: () = {
    assert!(size_of::<Header>() == HEADER_SIZE);
    assert!(align_of::<Header>() == 8);
    assert!(offset_of!(Header, magic) == 0);
    assert!(offset_of!(Header, version) == 8);
    assert!(offset_of!(Header, slot_count) == 12);
    assert!(offset_of!(Header, slot_size) == 16);
    assert!(offset_of!(Header, meta_size) == 20);
    assert!(offset_of!(Header, header_size) == 24);
    assert!(offset_of!(Header, _reserved) == 28);

    assert!(size_of::<Slot>() == SLOT_SIZE);
    assert!(align_of::<Slot>() == 64);
    assert!(offset_of!(Slot, seq) == 0);
    assert!(offset_of!(Slot, generation) == 4);
    assert!(offset_of!(Slot, inum) == 8);
    assert!(offset_of!(Slot, flags) == 12);
    assert!(offset_of!(Slot, offsets) + offset_of!(AtomicOffsets, mono_sec) == 16);
    assert!(offset_of!(Slot, offsets) + offset_of!(AtomicOffsets, mono_nsec) == 24);
    assert!(offset_of!(Slot, offsets) + offset_of!(AtomicOffsets, boot_sec) == 32);
    assert!(offset_of!(Slot, offsets) + offset_of!(AtomicOffsets, boot_nsec) == 40);
    assert!(offset_of!(Slot, _reserved) == 48);
    // Same layout as the plain integers the file format describes.
    assert!(size_of::<AtomicU32>() == 4 && align_of::<AtomicU32>() == 4);
    assert!(size_of::<AtomicI64>() == 8 && align_of::<AtomicI64>() == 8);

    assert!(size_of::<MetaRecord>() == META_SIZE);
    assert!(align_of::<MetaRecord>() == 8);
    assert!(offset_of!(MetaRecord, anchor_pid) == 0);
    assert!(offset_of!(MetaRecord, anchor_starttime) == 8);
    assert!(offset_of!(MetaRecord, mntns_inum) == 16);
    assert!(offset_of!(MetaRecord, created_unix) == 24);
    assert!(offset_of!(MetaRecord, label) == 32);
    assert!(offset_of!(MetaRecord, _reserved) == 96);

    // The slot array starts on a page boundary and the meta array right after it, so both are
    // aligned for their records whatever the slot count.
    assert!(HEADER_SIZE & (align_of::<Slot>() - 1) == 0);
    assert!(SLOT_SIZE & (align_of::<MetaRecord>() - 1) == 0);
    // Every slot's inum stays inside u32.
    assert!(INUM_BASE as u64 + MAX_SLOT_COUNT as u64 <= u32::MAX as u64 + 1);
};

/// The file size for `slot_count` slots.
fn file_len(slot_count: u32) -> usize {
    HEADER_SIZE + slot_count as usize * (SLOT_SIZE + META_SIZE)
}

impl Header {
    fn new(slot_count: u32) -> Header {
        Header {
            magic: STORE_MAGIC,
            version: STORE_VERSION,
            slot_count,
            slot_size: SLOT_SIZE as u32,
            meta_size: META_SIZE as u32,
            header_size: HEADER_SIZE as u32,
            _reserved: [0; HEADER_SIZE - 28],
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(offset_of!(Header, magic), &self.magic.to_ne_bytes());
        put(offset_of!(Header, version), &self.version.to_ne_bytes());
        put(
            offset_of!(Header, slot_count),
            &self.slot_count.to_ne_bytes(),
        );
        put(offset_of!(Header, slot_size), &self.slot_size.to_ne_bytes());
        put(offset_of!(Header, meta_size), &self.meta_size.to_ne_bytes());
        put(
            offset_of!(Header, header_size),
            &self.header_size.to_ne_bytes(),
        );
        put(offset_of!(Header, _reserved), &self._reserved);
        b
    }

    #[cfg(test)]
    fn from_bytes(b: &[u8]) -> Header {
        let f = HeaderFields::from_bytes(b[..HEADER_FIELDS].try_into().unwrap());
        let mut reserved = [0u8; HEADER_SIZE - HEADER_FIELDS];
        reserved.copy_from_slice(&b[HEADER_FIELDS..HEADER_SIZE]);
        Header {
            magic: f.magic,
            version: f.version,
            slot_count: f.slot_count,
            slot_size: f.slot_size,
            meta_size: f.meta_size,
            header_size: f.header_size,
            _reserved: reserved,
        }
    }
}

/// Bytes of the header before its reserved part.
const HEADER_FIELDS: usize = offset_of!(Header, _reserved);

/// The header's fixed fields (what `read_layout` checks), without the reserved part.
struct HeaderFields {
    magic: u64,
    version: u32,
    slot_count: u32,
    slot_size: u32,
    meta_size: u32,
    header_size: u32,
}

impl HeaderFields {
    fn from_bytes(b: &[u8; HEADER_FIELDS]) -> HeaderFields {
        let u32_at = |off: usize| u32::from_ne_bytes(b[off..off + 4].try_into().unwrap());
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&b[0..8]);
        HeaderFields {
            magic: u64::from_ne_bytes(magic),
            version: u32_at(offset_of!(Header, version)),
            slot_count: u32_at(offset_of!(Header, slot_count)),
            slot_size: u32_at(offset_of!(Header, slot_size)),
            meta_size: u32_at(offset_of!(Header, meta_size)),
            header_size: u32_at(offset_of!(Header, header_size)),
        }
    }
}

/// Read and check the header of an open store file; returns the slot count.
fn read_layout(file: &File, path: &Path) -> io::Result<u32> {
    let bad = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("offset store {}: {what}", path.display()),
        )
    };
    let len = file
        .metadata()
        .map_err(|e| with_path(e, "reading the size of offset store", path))?
        .len();
    if len < HEADER_SIZE as u64 {
        return Err(bad(format!(
            "file is {len} bytes, too short for the {HEADER_SIZE}-byte header"
        )));
    }
    // Only the fixed fields (the rest is reserved), in a small buffer: the clock library opens
    // the store in every process, where a heap allocation would be the process's first (malloc's
    // setup costs syscalls and page faults) and a 4 KiB buffer a fresh stack page.
    let mut bytes = [0u8; HEADER_FIELDS];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| with_path(e, "reading the header of offset store", path))?;
    let h = HeaderFields::from_bytes(&bytes);
    if h.magic != STORE_MAGIC {
        return Err(bad(format!(
            "bad magic {:?} (expected {:?}): not a timensfs offset store",
            String::from_utf8_lossy(&h.magic.to_ne_bytes()),
            String::from_utf8_lossy(&STORE_MAGIC.to_ne_bytes())
        )));
    }
    if h.version != STORE_VERSION {
        return Err(bad(format!(
            "layout version {} (this build understands version {STORE_VERSION})",
            h.version
        )));
    }
    for (name, found, expected) in [
        ("slot size", h.slot_size, SLOT_SIZE),
        ("meta size", h.meta_size, META_SIZE),
        ("header size", h.header_size, HEADER_SIZE),
    ] {
        if found as usize != expected {
            return Err(bad(format!("{name} {found} (expected {expected})")));
        }
    }
    if h.slot_count == 0 || h.slot_count > MAX_SLOT_COUNT {
        return Err(bad(format!(
            "slot count {} out of range 1..={MAX_SLOT_COUNT}",
            h.slot_count
        )));
    }
    let expected = file_len(h.slot_count) as u64;
    if len != expected {
        return Err(bad(format!(
            "file is {len} bytes but its header says {} slots ({expected} bytes)",
            h.slot_count
        )));
    }
    Ok(h.slot_count)
}

fn with_path(e: io::Error, step: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{step} {}: {e}", path.display()))
}

/// The slot at `index` of a validated mapping holding `slot_count` slots.
fn slot_at(map: &Mapping, slot_count: u32, index: u32) -> Option<&Slot> {
    if index >= slot_count {
        return None;
    }
    let off = HEADER_SIZE + index as usize * SLOT_SIZE;
    debug_assert!(off + SLOT_SIZE <= map.len());
    // SAFETY: the mapping was checked at open to be `file_len(slot_count)` bytes, so the slot is in
    // bounds; the base is page-aligned and `off` a multiple of 64, so it is aligned for `Slot`;
    // `Slot` is all atomics, valid for any bit pattern, and modification by another process through
    // its own mapping is the interior mutability atomics allow. The reference borrows `map`, so it
    // cannot outlive the mapping.
    Some(unsafe { &*map.as_ptr().add(off).cast::<Slot>() })
}

/// A consistent copy of a slot's hot fields.
#[derive(Clone, Copy, PartialEq, Eq)]
struct RawSlot {
    generation: u32,
    inum: u32,
    flags: u32,
    offsets: Offsets,
}

impl RawSlot {
    fn is_live(&self, slot: SlotRef) -> bool {
        self.flags & FLAG_IN_USE != 0 && self.generation == slot.generation
    }
}

impl Slot {
    /// Read the fields without the seqlock; only for the daemon under its writer mutex, where no
    /// write can be in progress.
    fn load_relaxed(&self) -> RawSlot {
        RawSlot {
            generation: self.generation.load(Ordering::Relaxed),
            inum: self.inum.load(Ordering::Relaxed),
            flags: self.flags.load(Ordering::Relaxed),
            offsets: self.offsets.load(),
        }
    }

    /// Seqlock read: retry until a copy is taken with no write in progress and none in between.
    /// Only `Relaxed` loads and fences, so it works on a read-only mapping; no allocation, no lock,
    /// no syscall: async-signal-safe.
    fn load_consistent(&self) -> RawSlot {
        loop {
            let start = self.seq.load(Ordering::Relaxed);
            // Pairs with the writer's final `Release` store of `seq`.
            fence(Ordering::Acquire);
            if start & 1 == 0 {
                let raw = self.load_relaxed();
                // Pairs with the writer's `Release` fence after making `seq` odd: if any field read
                // above came from a write in progress, the reload below sees the odd (or a later)
                // value.
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == start {
                    return raw;
                }
            }
            std::hint::spin_loop();
        }
    }

    /// Seqlock write. Callers hold the store's writer mutex, so there is a single writer.
    fn write(&self, update: impl FnOnce(&Slot)) {
        // `| 1` also copes with a count left odd by a crash, although open repairs those.
        let odd = self.seq.load(Ordering::Relaxed) | 1;
        self.seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        update(self);
        self.seq.store(odd.wrapping_add(1), Ordering::Release);
    }

    fn store_offsets(&self, offsets: Offsets) {
        self.offsets.store(offsets);
    }
}

/// What the daemon remembers about a namespace besides its offsets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotMeta {
    /// Host pid of the sandbox's first process.
    pub anchor_pid: u32,
    /// That process's start time (`/proc/PID/stat` field 22, clock ticks), so a reused pid is not
    /// mistaken for it.
    pub anchor_starttime: u64,
    pub mntns_inum: u64,
    pub created_unix: u64,
    /// e.g. `run:1234` or a container id. At most [`LABEL_LEN`] bytes are kept (cut at a character
    /// boundary); stored NUL-padded.
    pub label: String,
}

impl SlotMeta {
    fn to_record(&self) -> MetaRecord {
        let mut label = [0u8; LABEL_LEN];
        let mut end = self.label.len().min(LABEL_LEN);
        while !self.label.is_char_boundary(end) {
            end -= 1;
        }
        label[..end].copy_from_slice(&self.label.as_bytes()[..end]);
        MetaRecord {
            anchor_pid: self.anchor_pid,
            _pad: 0,
            anchor_starttime: self.anchor_starttime,
            mntns_inum: self.mntns_inum,
            created_unix: self.created_unix,
            label,
            _reserved: [0; 32],
        }
    }

    fn from_record(r: &MetaRecord) -> SlotMeta {
        let end = r.label.iter().position(|&b| b == 0).unwrap_or(LABEL_LEN);
        SlotMeta {
            anchor_pid: r.anchor_pid,
            anchor_starttime: r.anchor_starttime,
            mntns_inum: r.mntns_inum,
            created_unix: r.created_unix,
            label: String::from_utf8_lossy(&r.label[..end]).into_owned(),
        }
    }
}

/// A namespace's slot: its index and the generation it was allocated with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotRef {
    pub index: u32,
    pub generation: u32,
}

impl SlotRef {
    /// The namespace's inode number, `INUM_BASE + index` (shown as `time:[N]`).
    pub fn inum(&self) -> u32 {
        INUM_BASE.wrapping_add(self.index)
    }
}

/// A copy of a live slot, hot and cold parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotSnapshot {
    pub slot: SlotRef,
    pub inum: u32,
    pub offsets: Offsets,
    pub frozen: bool,
    pub meta: SlotMeta,
}

/// The daemon's read-write handle on the store. Holds an exclusive `flock` on the file for its
/// lifetime, so only one daemon writes; unmaps on drop.
pub struct Store {
    path: PathBuf,
    map: Mapping,
    slot_count: u32,
    writer: Mutex<WriterState>,
    /// Holds the `flock`; closed (unlocking) after `map` is unmapped.
    _file: File,
}

struct WriterState {
    /// Where the next allocation starts looking, so a released slot is reused as late as possible.
    next: u32,
    /// Views, by key (a sandbox's mount namespace): see [`Store::open_view`].
    views: std::collections::HashMap<u64, View>,
}

/// A copy of the store that holds only some namespaces' slots, at the same indices: the slots
/// whose [`SlotMeta::mntns_inum`] is the view's key, and those [`Store::include_in_view`] added.
/// A sandbox maps its view instead of the store, so it cannot read other sandboxes' offsets.
struct View {
    path: PathBuf,
    map: Mapping,
    extra: std::collections::HashSet<u32>,
}

impl Store {
    /// Open the store at `path`, creating it (and its parent directory, mode 0755) with
    /// `slot_count` slots if it does not exist; the file is mode 0600 (sandboxes read their
    /// views, see [`Store::open_view`]).
    ///
    /// An existing store is reopened intact with the slot count recorded in its header (see
    /// [`Store::slot_count`]); one with a wrong magic, version or size is an error naming the path
    /// and the problem, never reinitialised. A store locked by another daemon is an error of kind
    /// `WouldBlock`.
    pub fn open_or_create(path: &Path, slot_count: u32) -> io::Result<Store> {
        if slot_count == 0 || slot_count > MAX_SLOT_COUNT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("slot count {slot_count} out of range 1..={MAX_SLOT_COUNT}"),
            ));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .map_err(|e| with_path(e, "creating state directory", dir))?;
                // Readers inside sandboxes must be able to reach the file whatever our umask is.
                fs::set_permissions(dir, Permissions::from_mode(0o755))
                    .map_err(|e| with_path(e, "setting the mode of state directory", dir))?;
            }
        }
        let file = open_creating(path, slot_count, 0o600, "opening offset store")?;
        sys::flock_exclusive_nonblocking(&file).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "offset store {} is locked by another timensfs daemon",
                        path.display()
                    ),
                )
            } else {
                with_path(e, "locking offset store", path)
            }
        })?;
        let slot_count = read_layout(&file, path)?;
        // A store made by an older daemon was readable by everyone.
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(|e| with_path(e, "setting the mode of offset store", path))?;
        let map = Mapping::map(&file, file_len(slot_count), true)
            .map_err(|e| with_path(e, "mapping offset store", path))?;
        let store = Store {
            path: path.to_path_buf(),
            map,
            slot_count,
            writer: Mutex::new(WriterState {
                next: 0,
                views: Default::default(),
            }),
            _file: file,
        };
        store.repair();
        Ok(store)
    }

    /// Undo the traces of a daemon that died inside a slot write: an odd sequence count (readers
    /// would spin on it forever) and a half-done alloc or release. A slot is in use exactly when
    /// its generation is odd; a slot where the two disagree is made free.
    fn repair(&self) {
        let _guard = self.lock();
        for index in 0..self.slot_count {
            let slot = self.slot(index);
            let raw = slot.load_relaxed();
            let in_use = raw.flags & FLAG_IN_USE != 0;
            let odd_seq = slot.seq.load(Ordering::Relaxed) & 1 == 1;
            if odd_seq || in_use != (raw.generation & 1 == 1) {
                slot.write(|s| {
                    if in_use != (raw.generation & 1 == 1) {
                        if raw.generation & 1 == 1 {
                            s.generation
                                .store(raw.generation.wrapping_add(1), Ordering::Relaxed);
                        }
                        s.flags.store(0, Ordering::Relaxed);
                    }
                });
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of slots, as recorded in the file's header.
    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// Allocate a slot for a new namespace. `ENOSPC` when every slot is in use.
    pub fn alloc(&self, offsets: Offsets, frozen: bool, meta: SlotMeta) -> io::Result<SlotRef> {
        let mut state = self.lock();
        let count = self.slot_count;
        let index = (0..count)
            .map(|i| (state.next + i) % count)
            .find(|&i| self.slot(i).flags.load(Ordering::Relaxed) & FLAG_IN_USE == 0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOSPC))?;
        state.next = (index + 1) % count;
        self.write_meta(index, &meta.to_record());
        let slot = self.slot(index);
        // Odd: in use. Written last, so a crash mid-write leaves an inconsistency `repair` undoes.
        let generation = slot.generation.load(Ordering::Relaxed).wrapping_add(1) | 1;
        let slot_ref = SlotRef { index, generation };
        let flags = FLAG_IN_USE | if frozen { FLAG_FROZEN } else { 0 };
        slot.write(|s| {
            s.store_offsets(offsets);
            s.inum.store(slot_ref.inum(), Ordering::Relaxed);
            s.flags.store(flags, Ordering::Relaxed);
            s.generation.store(generation, Ordering::Relaxed);
        });
        self.mirror(&mut state, index);
        Ok(slot_ref)
    }

    /// A copy of the slot, or `None` if it was released (or released and reused).
    pub fn get(&self, slot: SlotRef) -> Option<SlotSnapshot> {
        let _guard = self.lock();
        self.snapshot(slot)
    }

    /// The offsets and frozen flag of a live slot, lock-free (the daemon's hot path: every read
    /// of a virtual file asks this).
    pub fn offsets(&self, slot: SlotRef) -> Option<(Offsets, bool)> {
        let raw = slot_at(&self.map, self.slot_count, slot.index)?.load_consistent();
        if !raw.is_live(slot) {
            return None;
        }
        Some((raw.offsets, raw.flags & FLAG_FROZEN != 0))
    }

    /// Replace the slot's offsets (a seqlocked write); `false` if the slot is stale. Whether the
    /// write is allowed (frozen, range, capability) is [`crate::write::decide_write`]'s job: a
    /// write that depends on the current offsets or the frozen flag goes through [`Self::update`].
    pub fn set_offsets(&self, slot: SlotRef, offsets: Offsets) -> bool {
        self.update_live(slot, |s| s.store_offsets(offsets))
    }

    /// Read, decide and write in one step under the writer mutex, as the kernel holds its
    /// offset lock across a `timens_offsets` write's frozen check and its update (E8.7): no
    /// freeze (a first member entering) and no other write can come between what `decide` saw
    /// and what it wrote. `decide` gets the offsets and the frozen flag and returns the new
    /// offsets to store, or an error that changes nothing. `None` if the slot is stale.
    pub fn update<E>(
        &self,
        slot: SlotRef,
        decide: impl FnOnce(Offsets, bool) -> Result<Offsets, E>,
    ) -> Option<Result<Offsets, E>> {
        let mut guard = self.lock();
        let hot = slot_at(&self.map, self.slot_count, slot.index)?;
        let raw = hot.load_relaxed();
        if !raw.is_live(slot) {
            return None;
        }
        let decided = decide(raw.offsets, raw.flags & FLAG_FROZEN != 0);
        if let Ok(offsets) = decided {
            hot.write(|s| s.store_offsets(offsets));
            self.mirror(&mut guard, slot.index);
        }
        Some(decided)
    }

    /// Mark the namespace's offsets frozen (C1); `false` if the slot is stale.
    pub fn freeze(&self, slot: SlotRef) -> bool {
        self.update_live(slot, |s| {
            let flags = s.flags.load(Ordering::Relaxed);
            s.flags.store(flags | FLAG_FROZEN, Ordering::Relaxed);
        })
    }

    /// Free the slot; every `SlotRef` to it becomes stale. `false` if it already was.
    pub fn release(&self, slot: SlotRef) -> bool {
        let mut guard = self.lock();
        let Some(hot) = slot_at(&self.map, self.slot_count, slot.index) else {
            return false;
        };
        if !hot.load_relaxed().is_live(slot) {
            return false;
        }
        hot.write(|s| {
            // Generation first (even: free), see `repair`.
            s.generation
                .store(slot.generation.wrapping_add(1), Ordering::Relaxed);
            s.flags.store(0, Ordering::Relaxed);
            s.inum.store(0, Ordering::Relaxed);
            s.store_offsets(Offsets::ZERO);
        });
        self.write_meta(slot.index, &SlotMeta::default().to_record());
        self.mirror(&mut guard, slot.index);
        true
    }

    /// Every slot in use, in index order.
    pub fn live(&self) -> Vec<SlotSnapshot> {
        let _guard = self.lock();
        (0..self.slot_count)
            .filter_map(|index| {
                let generation = self.slot(index).generation.load(Ordering::Relaxed);
                self.snapshot(SlotRef { index, generation })
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, WriterState> {
        // A panic while holding the lock cannot leave a slot half-written (the seqlock writes do
        // not panic), so a poisoned lock is still usable.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(&self, index: u32) -> &Slot {
        slot_at(&self.map, self.slot_count, index).expect("slot index checked by caller")
    }

    /// Apply `update` to a live slot under the seqlock. Takes the writer mutex.
    fn update_live(&self, slot: SlotRef, update: impl FnOnce(&Slot)) -> bool {
        let mut guard = self.lock();
        let Some(hot) = slot_at(&self.map, self.slot_count, slot.index) else {
            return false;
        };
        if !hot.load_relaxed().is_live(slot) {
            return false;
        }
        hot.write(update);
        self.mirror(&mut guard, slot.index);
        true
    }

    /// Opens (or creates) the view with `key` at `path`, a file of the same layout, and brings
    /// every slot in it up to date. A view that is already open is left as it is. Reopening the
    /// same file after a restart keeps it the file the sandbox's processes have mapped.
    pub fn open_view(&self, key: u64, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.views.contains_key(&key) {
            return Ok(());
        }
        if let Some(dir) = path.parent().filter(|d| !d.exists()) {
            // Only root may walk to the views: each sandbox reaches its own through its bind
            // mount.
            DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .or_else(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .map_err(|e| with_path(e, "creating the views directory", dir))?;
        }
        let file = open_creating(path, self.slot_count, 0o644, "opening offset store view")?;
        if read_layout(&file, path)? != self.slot_count {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "offset store view {} does not have the store's {} slots",
                    path.display(),
                    self.slot_count
                ),
            ));
        }
        let map = Mapping::map(&file, file_len(self.slot_count), true)
            .map_err(|e| with_path(e, "mapping offset store view", path))?;
        state.views.insert(
            key,
            View {
                path: path.to_path_buf(),
                map,
                extra: Default::default(),
            },
        );
        for index in 0..self.slot_count {
            self.mirror(&mut state, index);
        }
        Ok(())
    }

    /// Adds a live slot of another key to the view with `key` (a member entered it with setns),
    /// until the slot is released.
    pub fn include_in_view(&self, key: u64, slot: SlotRef) {
        let mut state = self.lock();
        if !self.slot(slot.index).load_relaxed().is_live(slot) {
            return;
        }
        if let Some(view) = state.views.get_mut(&key) {
            view.extra.insert(slot.index);
            self.mirror(&mut state, slot.index);
        }
    }

    /// The keys of the open views.
    pub fn view_keys(&self) -> Vec<u64> {
        self.lock().views.keys().copied().collect()
    }

    /// Closes and unlinks every view that no live slot belongs to and that `keep` does not
    /// want, and unlinks the files in `dir` (views a previous daemon left) that are not open and
    /// that no live slot belongs to. A sandbox that still has the file bind-mounted keeps it.
    /// Returns how many views were closed.
    pub fn close_unused_views(&self, dir: &Path, keep: impl Fn(u64) -> bool) -> usize {
        let mut state = self.lock();
        let mut used = std::collections::HashSet::new();
        for index in 0..self.slot_count {
            if self.slot(index).flags.load(Ordering::Relaxed) & FLAG_IN_USE != 0 {
                used.insert(self.read_meta(index).mntns_inum);
            }
        }
        let gone: Vec<u64> = state
            .views
            .keys()
            .copied()
            .filter(|k| !used.contains(k) && !keep(*k))
            .collect();
        for key in &gone {
            if let Some(view) = state.views.remove(key) {
                let _ = fs::remove_file(&view.path);
            }
        }
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let key = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u64>().ok());
                if let Some(key) = key {
                    if !state.views.contains_key(&key) && !used.contains(&key) && !keep(key) {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
        }
        gone.len()
    }

    /// Brings slot `index` of every view up to date with the store. Caller holds the writer
    /// mutex (`state` is what it guards).
    fn mirror(&self, state: &mut WriterState, index: u32) {
        if state.views.is_empty() {
            return;
        }
        let raw = self.slot(index).load_relaxed();
        let live = raw.flags & FLAG_IN_USE != 0;
        let meta = self.read_meta(index);
        for (key, view) in state.views.iter_mut() {
            if !live {
                view.extra.remove(&index);
            }
            let Some(copy) = slot_at(&view.map, self.slot_count, index) else {
                continue;
            };
            let have = copy.load_relaxed();
            if live && (meta.mntns_inum == *key || view.extra.contains(&index)) {
                if have != raw {
                    copy.write(|s| {
                        s.store_offsets(raw.offsets);
                        s.inum.store(raw.inum, Ordering::Relaxed);
                        s.flags.store(raw.flags, Ordering::Relaxed);
                        s.generation.store(raw.generation, Ordering::Relaxed);
                    });
                }
                write_meta_in(&view.map, self.slot_count, index, &meta);
            } else if have.flags & FLAG_IN_USE != 0 || have.generation & 1 == 1 {
                copy.write(|s| {
                    s.generation
                        .store((have.generation | 1).wrapping_add(1), Ordering::Relaxed);
                    s.flags.store(0, Ordering::Relaxed);
                    s.inum.store(0, Ordering::Relaxed);
                    s.store_offsets(Offsets::ZERO);
                });
                write_meta_in(
                    &view.map,
                    self.slot_count,
                    index,
                    &SlotMeta::default().to_record(),
                );
            }
        }
    }

    /// Caller holds the writer mutex.
    fn snapshot(&self, slot: SlotRef) -> Option<SlotSnapshot> {
        let raw = slot_at(&self.map, self.slot_count, slot.index)?.load_relaxed();
        if !raw.is_live(slot) {
            return None;
        }
        Some(SlotSnapshot {
            slot,
            inum: raw.inum,
            offsets: raw.offsets,
            frozen: raw.flags & FLAG_FROZEN != 0,
            meta: SlotMeta::from_record(&self.read_meta(slot.index)),
        })
    }

    fn meta_ptr(&self, index: u32) -> *mut MetaRecord {
        meta_ptr_in(&self.map, self.slot_count, index)
    }

    /// Caller holds the writer mutex.
    fn read_meta(&self, index: u32) -> MetaRecord {
        let ptr = self.meta_ptr(index);
        // SAFETY: in bounds of the validated mapping and aligned (see `meta_ptr` and the layout
        // assertions); any bit pattern is a valid `MetaRecord`; the records are written only by
        // this `Store` under the writer mutex the caller holds (the flock excludes other daemons).
        unsafe { ptr.read() }
    }

    /// Caller holds the writer mutex.
    fn write_meta(&self, index: u32, record: &MetaRecord) {
        write_meta_in(&self.map, self.slot_count, index, record)
    }
}

fn meta_ptr_in(map: &Mapping, slot_count: u32, index: u32) -> *mut MetaRecord {
    assert!(index < slot_count);
    let off = HEADER_SIZE + slot_count as usize * SLOT_SIZE + index as usize * META_SIZE;
    debug_assert!(off + META_SIZE <= map.len());
    map.as_ptr().wrapping_add(off).cast()
}

/// Writes a cold record of a writable mapping of `slot_count` slots (the store's or a view's).
/// Caller holds the store's writer mutex.
fn write_meta_in(map: &Mapping, slot_count: u32, index: u32, record: &MetaRecord) {
    let ptr = meta_ptr_in(map, slot_count, index);
    // SAFETY: in bounds of the validated mapping and aligned (see `meta_ptr_in` and the layout
    // assertions); the mapping is writable (the store's, or a view the store mapped read-write),
    // and no reference to the record exists (readers never touch the cold records); the writer
    // mutex the caller holds makes this the only writer.
    unsafe { ptr.write(*record) }
}

/// Opens the store file (or a view) at `path` read-write, creating it complete with
/// `slot_count` slots and `mode` if it does not exist (see `create_file`).
fn open_creating(path: &Path, slot_count: u32, mode: u32, what: &str) -> io::Result<File> {
    loop {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => return Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_file(path, slot_count, mode)?,
            Err(e) => return Err(with_path(e, what, path)),
        }
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Create a complete, zeroed store under a temporary name and link it to `path`, so nobody ever
/// sees a file without a valid header. Losing the race to another creator is fine: the caller then
/// opens the winner's file.
fn create_file(path: &Path, slot_count: u32, mode: u32) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("offset store path {} has no file name", path.display()),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| with_path(e, "creating offset store", &tmp))?;
        // The store: the daemon's only (0600); a view: readable by everyone (the clock library
        // maps it read-only), whatever the umask.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| with_path(e, "setting the mode of offset store", &tmp))?;
        file.set_len(file_len(slot_count) as u64)
            .map_err(|e| with_path(e, "sizing offset store", &tmp))?;
        file.write_all_at(&Header::new(slot_count).to_bytes(), 0)
            .map_err(|e| with_path(e, "writing the header of offset store", &tmp))?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(with_path(e, "linking offset store into place at", path)),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// The clock library's read-only handle on the store. Never locks, never writes.
pub struct StoreReader {
    map: Mapping,
    slot_count: u32,
}

impl StoreReader {
    /// Map the store at `path` read-only, after checking its header.
    pub fn open(path: &Path) -> io::Result<StoreReader> {
        Self::open_if_present(path)?.ok_or_else(|| {
            with_path(
                io::Error::from(io::ErrorKind::NotFound),
                "opening offset store",
                path,
            )
        })
    }

    /// As [`StoreReader::open`], but a missing file is `None`. Neither that case nor a good
    /// store allocates (the clock library's init in every process, in a sandbox or not).
    pub fn open_if_present(path: &Path) -> io::Result<Option<StoreReader>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(with_path(e, "opening offset store", path)),
        };
        let slot_count = read_layout(&file, path)?;
        let map = Mapping::map(&file, file_len(slot_count), false)
            .map_err(|e| with_path(e, "mapping offset store", path))?;
        Ok(Some(StoreReader { map, slot_count }))
    }

    /// The offsets and frozen flag of the live slot `slot`, or `None` if it is out of range,
    /// released or reused.
    ///
    /// Lock-free, allocation-free and async-signal-safe: a seqlock read of one cache line. It
    /// spins while the daemon is inside a write (a few stores); a daemon that died in that window
    /// leaves the count odd until a restarted daemon repairs it.
    pub fn offsets(&self, slot: SlotRef) -> Option<(Offsets, bool)> {
        let raw = slot_at(&self.map, self.slot_count, slot.index)?.load_consistent();
        if !raw.is_live(slot) {
            return None;
        }
        Some((raw.offsets, raw.flags & FLAG_FROZEN != 0))
    }

    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// The live slot of the namespace whose inode number is `inum` (`time:[inum]`), if any.
    /// Lock-free; used by the clock library after reading `/proc/self/ns/time`.
    pub fn slot_for_inum(&self, inum: u32) -> Option<SlotRef> {
        let index = inum.checked_sub(crate::INUM_BASE)?;
        let raw = slot_at(&self.map, self.slot_count, index)?.load_consistent();
        (raw.flags & FLAG_IN_USE != 0 && raw.inum == inum).then_some(SlotRef {
            index,
            generation: raw.generation,
        })
    }
}

#[cfg(test)]
mod tests;
