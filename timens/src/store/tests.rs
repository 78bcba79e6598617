use super::*;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "timens-store-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    /// The store path, one directory level down so `open_or_create` has a parent to create.
    fn store(&self) -> PathBuf {
        self.0.join("state").join("store")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn ts(sec: i64, nsec: i64) -> Timespec {
    Timespec { sec, nsec }
}

fn offs(m: i64, b: i64) -> Offsets {
    Offsets {
        monotonic: ts(m, m.rem_euclid(1_000_000_000)),
        boottime: ts(b, 7),
    }
}

fn meta(label: &str) -> SlotMeta {
    SlotMeta {
        anchor_pid: 4242,
        anchor_starttime: 123_456_789,
        mntns_inum: 4_026_532_000,
        created_unix: 1_700_000_000,
        label: label.to_string(),
    }
}

#[test]
fn layout_constants() {
    assert_eq!(size_of::<Header>(), 4096);
    assert_eq!(size_of::<Slot>(), 64);
    assert_eq!(align_of::<Slot>(), 64);
    assert_eq!(size_of::<MetaRecord>(), 128);
    assert_eq!(file_len(3), 4096 + 3 * 192);
    assert_eq!(&STORE_MAGIC.to_ne_bytes(), b"TIMENSFS");
}

#[test]
fn created_file_has_header_mode_and_size() {
    let dir = TempDir::new("create");
    let path = dir.store();
    let store = Store::open_or_create(&path, 8).unwrap();
    assert_eq!(store.path(), path);
    assert_eq!(store.slot_count(), 8);
    let md = fs::metadata(&path).unwrap();
    assert_eq!(md.len(), file_len(8) as u64);
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let dmd = fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(dmd.permissions().mode() & 0o777, 0o755);
    let bytes = fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"TIMENSFS");
    let h = Header::from_bytes(&bytes[..HEADER_SIZE]);
    assert_eq!(
        (
            h.version,
            h.slot_count,
            h.slot_size,
            h.meta_size,
            h.header_size
        ),
        (STORE_VERSION, 8, 64, 128, 4096)
    );
    // No temporary file left behind.
    let names: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("store")]);
    assert!(store.live().is_empty());
}

#[test]
fn bad_slot_count_rejected() {
    let dir = TempDir::new("count");
    for n in [0, MAX_SLOT_COUNT + 1] {
        let e = Store::open_or_create(&dir.store(), n).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
    assert!(!dir.store().exists());
}

#[test]
fn alloc_get_set_freeze_release() {
    let dir = TempDir::new("lifecycle");
    let store = Store::open_or_create(&dir.store(), 4).unwrap();
    let a = store.alloc(offs(10, 20), false, meta("run:1234")).unwrap();
    assert_eq!(a.index, 0);
    assert_eq!(a.generation % 2, 1);
    assert_eq!(a.inum(), INUM_BASE);

    let snap = store.get(a).unwrap();
    assert_eq!(snap.slot, a);
    assert_eq!(snap.inum, INUM_BASE);
    assert_eq!(snap.offsets, offs(10, 20));
    assert!(!snap.frozen);
    assert_eq!(snap.meta, meta("run:1234"));

    let b = store.alloc(Offsets::ZERO, true, meta("b")).unwrap();
    assert_eq!(b.index, 1);
    assert_eq!(b.inum(), INUM_BASE + 1);
    assert!(store.get(b).unwrap().frozen);

    // Offsets are stored exactly as given, negative and all.
    let odd = Offsets {
        monotonic: ts(-711, 999_999_999),
        boottime: ts(4_611_685_306, 0),
    };
    assert!(store.set_offsets(a, odd));
    assert_eq!(store.get(a).unwrap().offsets, odd);
    assert_eq!(store.get(b).unwrap().offsets, Offsets::ZERO);

    assert!(store.freeze(a));
    let snap = store.get(a).unwrap();
    assert!(snap.frozen);
    assert_eq!(snap.offsets, odd);
    // Freezing twice is harmless.
    assert!(store.freeze(a));

    let live: Vec<SlotRef> = store.live().iter().map(|s| s.slot).collect();
    assert_eq!(live, vec![a, b]);

    assert!(store.release(a));
    assert_eq!(store.get(a), None);
    assert!(!store.release(a));
    assert!(!store.set_offsets(a, offs(1, 1)));
    assert!(!store.freeze(a));
    let live: Vec<SlotRef> = store.live().iter().map(|s| s.slot).collect();
    assert_eq!(live, vec![b]);

    // Refs with an index out of range or a wrong generation are stale, not a panic.
    let bogus = SlotRef {
        index: 99,
        generation: 1,
    };
    assert_eq!(store.get(bogus), None);
    assert!(!store.set_offsets(bogus, Offsets::ZERO));
    assert!(!store.freeze(bogus));
    assert!(!store.release(bogus));
    assert_eq!(
        store.get(SlotRef {
            index: b.index,
            generation: b.generation + 2
        }),
        None
    );
}

#[test]
fn generation_changes_on_reuse() {
    let dir = TempDir::new("reuse");
    let store = Store::open_or_create(&dir.store(), 1).unwrap();
    let first = store.alloc(offs(1, 1), false, meta("first")).unwrap();
    assert!(store.release(first));
    let second = store.alloc(offs(2, 2), false, meta("second")).unwrap();
    assert_eq!(second.index, first.index);
    assert_eq!(second.inum(), first.inum());
    assert_ne!(second.generation, first.generation);
    assert_eq!(second.generation, first.generation + 2);
    assert_eq!(store.get(first), None);
    assert!(!store.set_offsets(first, offs(9, 9)));
    assert!(!store.release(first));
    let snap = store.get(second).unwrap();
    assert_eq!(snap.offsets, offs(2, 2));
    assert_eq!(snap.meta.label, "second");

    let reader = StoreReader::open(&dir.store()).unwrap();
    assert_eq!(reader.offsets(first), None);
    assert_eq!(reader.offsets(second), Some((offs(2, 2), false)));
}

#[test]
fn released_slots_are_reused_late() {
    let dir = TempDir::new("nextfit");
    let store = Store::open_or_create(&dir.store(), 3).unwrap();
    let a = store.alloc(Offsets::ZERO, false, meta("a")).unwrap();
    assert!(store.release(a));
    let b = store.alloc(Offsets::ZERO, false, meta("b")).unwrap();
    assert_eq!(
        b.index, 1,
        "the just-released slot 0 is not the first choice"
    );
}

#[test]
fn full_store_is_enospc() {
    let dir = TempDir::new("full");
    let store = Store::open_or_create(&dir.store(), 2).unwrap();
    let a = store.alloc(Offsets::ZERO, false, meta("a")).unwrap();
    store.alloc(Offsets::ZERO, false, meta("b")).unwrap();
    let e = store.alloc(Offsets::ZERO, false, meta("c")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    assert!(store.release(a));
    assert_eq!(
        store.alloc(Offsets::ZERO, false, meta("c")).unwrap().index,
        a.index
    );
}

#[test]
fn label_is_kept_up_to_64_bytes() {
    let dir = TempDir::new("label");
    let store = Store::open_or_create(&dir.store(), 4).unwrap();
    let id = "0123456789abcdef".repeat(4);
    let s = store.alloc(Offsets::ZERO, false, meta(&id)).unwrap();
    assert_eq!(store.get(s).unwrap().meta.label, id);
    // Too long: cut at 64 bytes, on a character boundary ("é" is two bytes).
    let long = format!("{}é", "x".repeat(63));
    let s = store.alloc(Offsets::ZERO, false, meta(&long)).unwrap();
    assert_eq!(store.get(s).unwrap().meta.label, "x".repeat(63));
    let s = store.alloc(Offsets::ZERO, false, meta("")).unwrap();
    assert_eq!(store.get(s).unwrap().meta.label, "");
}

#[test]
fn reopen_intact() {
    let dir = TempDir::new("reopen");
    let path = dir.store();
    let (a, b, c) = {
        let store = Store::open_or_create(&path, 4).unwrap();
        let a = store.alloc(offs(10, 20), false, meta("a")).unwrap();
        let b = store.alloc(offs(30, 40), false, meta("b")).unwrap();
        let c = store.alloc(offs(50, 60), false, meta("c")).unwrap();
        assert!(store.set_offsets(a, offs(-5, 86_400)));
        assert!(store.freeze(b));
        assert!(store.release(c));
        (a, b, c)
    };
    // A different requested slot count does not resize or wipe: the file's header wins.
    let store = Store::open_or_create(&path, 16).unwrap();
    assert_eq!(store.slot_count(), 4);
    let sa = store.get(a).unwrap();
    assert_eq!(
        (sa.offsets, sa.frozen, sa.meta),
        (offs(-5, 86_400), false, meta("a"))
    );
    let sb = store.get(b).unwrap();
    assert_eq!(
        (sb.offsets, sb.frozen, sb.meta),
        (offs(30, 40), true, meta("b"))
    );
    assert_eq!(store.get(c), None);
    assert_eq!(store.live().len(), 2);
    // Still usable: the freed slot is reused with a new generation.
    let d = store.alloc(offs(1, 2), false, meta("d")).unwrap();
    assert_eq!(d.index, c.index);
    assert_ne!(d.generation, c.generation);
}

#[test]
fn second_daemon_refused_while_first_alive() {
    let dir = TempDir::new("lock");
    let path = dir.store();
    let first = Store::open_or_create(&path, 2).unwrap();
    let s = first.alloc(offs(1, 2), false, meta("kept")).unwrap();
    let e = Store::open_or_create(&path, 2)
        .err()
        .expect("second open must fail");
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("another timensfs daemon"), "{msg}");
    // Readers are not locked out.
    assert_eq!(
        StoreReader::open(&path).unwrap().offsets(s),
        Some((offs(1, 2), false))
    );
    drop(first);
    let again = Store::open_or_create(&path, 2).unwrap();
    assert_eq!(again.get(s).unwrap().meta.label, "kept");
}

/// Write a file of the right size with the header bytes patched by `patch`.
fn write_damaged(path: &Path, slot_count: u32, len: usize, patch: impl FnOnce(&mut Vec<u8>)) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bytes = Header::new(slot_count).to_bytes();
    bytes.resize(len, 0xAB);
    patch(&mut bytes);
    fs::write(path, &bytes).unwrap();
}

fn assert_rejected(path: &Path, what: &str) {
    let before = fs::read(path).unwrap();
    let e = Store::open_or_create(path, 4)
        .err()
        .expect("damaged store must be rejected");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(what), "{msg}");
    let e = StoreReader::open(path)
        .err()
        .expect("reader must reject it too");
    assert!(e.to_string().contains(what), "{e}");
    // Never silently wiped.
    assert_eq!(fs::read(path).unwrap(), before);
}

#[test]
fn wrong_magic_rejected() {
    let dir = TempDir::new("magic");
    let path = dir.store();
    write_damaged(&path, 4, file_len(4), |b| {
        b[..8].copy_from_slice(b"NOTASTOR")
    });
    assert_rejected(&path, "bad magic");
}

#[test]
fn wrong_version_rejected() {
    let dir = TempDir::new("version");
    let path = dir.store();
    write_damaged(&path, 4, file_len(4), |b| {
        b[offset_of!(Header, version)..][..4].copy_from_slice(&2u32.to_ne_bytes())
    });
    assert_rejected(&path, "layout version 2");
}

#[test]
fn wrong_slot_size_rejected() {
    let dir = TempDir::new("slotsize");
    let path = dir.store();
    write_damaged(&path, 4, file_len(4), |b| {
        b[offset_of!(Header, slot_size)..][..4].copy_from_slice(&32u32.to_ne_bytes())
    });
    assert_rejected(&path, "slot size 32");
}

#[test]
fn wrong_size_rejected() {
    let dir = TempDir::new("size");
    let path = dir.store();
    write_damaged(&path, 4, file_len(4) - 64, |_| {});
    assert_rejected(&path, "header says 4 slots");
    write_damaged(&path, 4, 100, |_| {});
    assert_rejected(&path, "too short");
}

#[test]
fn reader_missing_file_names_path() {
    let dir = TempDir::new("missing");
    let e = StoreReader::open(&dir.store()).err().unwrap();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains(&dir.store().display().to_string()));
}

#[test]
fn reader_sees_daemon_writes() {
    let dir = TempDir::new("reader");
    let store = Store::open_or_create(&dir.store(), 4).unwrap();
    let reader = StoreReader::open(&dir.store()).unwrap();
    assert_eq!(reader.slot_count(), 4);
    let s = store.alloc(offs(5, 6), false, meta("r")).unwrap();
    assert_eq!(reader.offsets(s), Some((offs(5, 6), false)));
    assert!(store.set_offsets(s, offs(7, 8)));
    assert_eq!(reader.offsets(s), Some((offs(7, 8), false)));
    assert!(store.freeze(s));
    assert_eq!(reader.offsets(s), Some((offs(7, 8), true)));
    assert!(store.release(s));
    assert_eq!(reader.offsets(s), None);
    assert_eq!(
        reader.offsets(SlotRef {
            index: 4,
            generation: 1
        }),
        None
    );
    assert_eq!(
        reader.offsets(SlotRef {
            index: u32::MAX,
            generation: 1
        }),
        None
    );
    // The reader outlives the daemon's handle: the mapping stays valid.
    let t = store.alloc(offs(9, 9), false, meta("t")).unwrap();
    drop(store);
    assert_eq!(reader.offsets(t), Some((offs(9, 9), false)));
}

#[test]
fn reopen_repairs_a_write_interrupted_by_a_crash() {
    let dir = TempDir::new("repair");
    let path = dir.store();
    let (live, half_released) = {
        let store = Store::open_or_create(&path, 4).unwrap();
        let live = store.alloc(offs(1, 1), false, meta("live")).unwrap();
        let hr = store.alloc(offs(2, 2), false, meta("hr")).unwrap();
        // Simulate dying inside writes: an odd seq on `live`, and a release of `hr` that bumped
        // the generation but never cleared the flags.
        let s = store.slot(live.index);
        s.seq
            .store(s.seq.load(Ordering::Relaxed) | 1, Ordering::Relaxed);
        let h = store.slot(hr.index);
        h.seq
            .store(h.seq.load(Ordering::Relaxed) | 1, Ordering::Relaxed);
        h.generation.store(hr.generation + 1, Ordering::Relaxed);
        (live, hr)
    };
    let store = Store::open_or_create(&path, 4).unwrap();
    let reader = StoreReader::open(&path).unwrap();
    // Would spin forever on an odd count; repaired, it returns.
    assert_eq!(reader.offsets(live), Some((offs(1, 1), false)));
    assert_eq!(store.get(half_released), None);
    assert_eq!(reader.offsets(half_released), None);
    for i in 0..4 {
        let slot = store.slot(i);
        assert_eq!(slot.seq.load(Ordering::Relaxed) % 2, 0);
        let raw = slot.load_relaxed();
        assert_eq!(raw.flags & FLAG_IN_USE != 0, raw.generation % 2 == 1);
    }
    let live_refs: Vec<_> = store.live().iter().map(|s| s.slot).collect();
    assert_eq!(live_refs, vec![live]);
}

/// One writer hammers `set_offsets` with all four fields equal; readers through their own
/// read-only mapping must never see a mix of two writes.
#[test]
fn concurrent_readers_never_see_torn_offsets() {
    let dir = TempDir::new("torn");
    let path = dir.store();
    let store = Arc::new(Store::open_or_create(&path, 4).unwrap());
    let slot = store.alloc(Offsets::ZERO, false, meta("torn")).unwrap();
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..3)
        .map(|_| {
            let reader = StoreReader::open(&path).unwrap();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut reads = 0u64;
                let mut last = 0i64;
                while !done.load(Ordering::Relaxed) {
                    let (o, frozen) = reader.offsets(slot).expect("slot stays live");
                    assert!(!frozen);
                    let v = o.monotonic.sec;
                    assert_eq!(
                        (o.monotonic.nsec, o.boottime.sec, o.boottime.nsec),
                        (v, v, v),
                        "torn read"
                    );
                    // One writer counting up: a reader never goes back in time.
                    assert!(v >= last, "went backwards: {last} then {v}");
                    last = v;
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for v in 1..=200_000i64 {
                let t = Timespec { sec: v, nsec: v };
                assert!(store.set_offsets(
                    slot,
                    Offsets {
                        monotonic: t,
                        boottime: t
                    }
                ));
            }
        })
    };
    writer.join().unwrap();
    done.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let t = Timespec {
        sec: 200_000,
        nsec: 200_000,
    };
    assert_eq!(
        store.get(slot).unwrap().offsets,
        Offsets {
            monotonic: t,
            boottime: t
        }
    );
}

/// Several daemon threads allocating and releasing at once never hand out the same slot twice.
#[test]
fn concurrent_allocs_are_serialised() {
    let dir = TempDir::new("allocs");
    let store = Arc::new(Store::open_or_create(&dir.store(), 64).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..16 {
                    let s = store
                        .alloc(offs(t, i), false, meta(&format!("{t}:{i}")))
                        .unwrap();
                    mine.push((s, offs(t, i)));
                }
                mine
            })
        })
        .collect();
    let all: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let mut indices: Vec<_> = all.iter().map(|(s, _)| s.index).collect();
    indices.sort_unstable();
    indices.dedup();
    assert_eq!(indices.len(), 64);
    for (s, o) in &all {
        assert_eq!(store.get(*s).unwrap().offsets, *o);
    }
    assert_eq!(
        store
            .alloc(Offsets::ZERO, false, meta("x"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOSPC)
    );
}

#[test]
fn reader_finds_a_slot_by_inum() {
    let dir = TempDir::new("by-inum");
    let store = Store::open_or_create(&dir.store(), 8).unwrap();
    let a = store
        .alloc(Offsets::ZERO, false, SlotMeta::default())
        .unwrap();
    let b = store
        .alloc(Offsets::ZERO, true, SlotMeta::default())
        .unwrap();
    let reader = StoreReader::open(&dir.store()).unwrap();
    assert_eq!(reader.slot_for_inum(a.inum()), Some(a));
    assert_eq!(reader.slot_for_inum(b.inum()), Some(b));
    assert_eq!(reader.slot_for_inum(crate::INIT_TIME_INUM), None);
    store.release(a);
    assert_eq!(reader.slot_for_inum(a.inum()), None);
}

use std::os::unix::fs::MetadataExt;

fn in_ns(mntns: u64) -> SlotMeta {
    SlotMeta {
        mntns_inum: mntns,
        ..meta("view")
    }
}

/// A view holds its key's slots (at the store's indices, with their offsets, frozen flag and
/// later writes) and nothing of other keys, until a slot is included with setns; released slots
/// leave it. The file is readable by everyone, in a directory only the owner may walk.
#[test]
fn a_view_holds_only_its_own_namespaces() {
    let dir = TempDir::new("view");
    // Three slots: the one freed is the one reused.
    let store = Store::open_or_create(&dir.store(), 3).unwrap();
    let views = dir.0.join("state").join("views");
    let a1 = store.alloc(offs(1, 2), false, in_ns(10)).unwrap();
    let b = store.alloc(offs(5, 6), true, in_ns(20)).unwrap();
    store.open_view(10, &views.join("10")).unwrap();
    let a2 = store.alloc(offs(3, 4), true, in_ns(10)).unwrap();
    let view = StoreReader::open(&views.join("10")).unwrap();
    assert_eq!(view.offsets(a1), Some((offs(1, 2), false)));
    assert_eq!(view.offsets(a2), Some((offs(3, 4), true)));
    assert_eq!(view.slot_for_inum(a1.inum()), Some(a1));
    assert_eq!(view.offsets(b), None, "another key's slot");
    assert_eq!(view.slot_for_inum(b.inum()), None);
    let bytes = fs::read(views.join("10")).unwrap();
    let b_meta = &bytes[HEADER_SIZE + 3 * SLOT_SIZE + b.index as usize * META_SIZE..][..META_SIZE];
    assert!(b_meta.iter().all(|&x| x == 0), "another key's record");

    assert!(store.set_offsets(a1, offs(7, 8)));
    assert!(store.freeze(a1));
    assert_eq!(view.offsets(a1), Some((offs(7, 8), true)));

    store.include_in_view(10, b);
    assert_eq!(view.offsets(b), Some((offs(5, 6), true)));
    assert!(store.release(b));
    assert_eq!(view.offsets(b), None);
    let b2 = store.alloc(offs(9, 9), true, in_ns(20)).unwrap();
    assert_eq!(b2.index, b.index, "the only free slot is reused");
    assert_eq!(view.offsets(b2), None, "an include ends with its slot");

    assert!(store.release(a2));
    assert_eq!(view.offsets(a2), None);
    assert_eq!(
        fs::metadata(views.join("10")).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(
        fs::metadata(&views).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

/// A view reopened by a new daemon is the same file, brought up to date; views no live slot
/// belongs to are closed and unlinked (also files left by a previous daemon), others are kept.
#[test]
fn views_are_reopened_in_place_and_removed_when_unused() {
    let dir = TempDir::new("view-reopen");
    let views = dir.0.join("state").join("views");
    let a = {
        let store = Store::open_or_create(&dir.store(), 8).unwrap();
        let a = store.alloc(offs(1, 2), false, in_ns(10)).unwrap();
        store.open_view(10, &views.join("10")).unwrap();
        store.alloc(offs(0, 0), false, in_ns(30)).unwrap();
        store.open_view(30, &views.join("30")).unwrap();
        a
    };
    let ino = fs::metadata(views.join("10")).unwrap().ino();
    let store = Store::open_or_create(&dir.store(), 8).unwrap();
    assert!(store.set_offsets(a, offs(3, 4)));
    store.open_view(10, &views.join("10")).unwrap();
    assert_eq!(fs::metadata(views.join("10")).unwrap().ino(), ino);
    let view = StoreReader::open(&views.join("10")).unwrap();
    assert_eq!(view.offsets(a), Some((offs(3, 4), false)));

    assert_eq!(store.close_unused_views(&views, |_| false), 0);
    assert!(views.join("10").exists() && views.join("30").exists());
    let c = store
        .live()
        .into_iter()
        .find(|s| s.meta.mntns_inum == 30)
        .unwrap();
    assert!(store.release(c.slot));
    assert_eq!(store.close_unused_views(&views, |_| false), 0);
    assert!(
        !views.join("30").exists(),
        "a previous daemon's unused view"
    );
    assert!(store.release(a));
    assert_eq!(store.close_unused_views(&views, |k| k == 10), 0, "kept");
    assert_eq!(store.close_unused_views(&views, |_| false), 1);
    assert!(!views.join("10").exists());
    assert!(store.view_keys().is_empty());
}

/// Two writers of different clocks, each adding one second 10,000 times through `update`:
/// neither loses the other's writes (a read-then-`set_offsets` would).
#[test]
fn concurrent_updates_lose_no_write() {
    let dir = TempDir::new("update-lost");
    let store = Arc::new(Store::open_or_create(&dir.store(), 4).unwrap());
    let slot = store.alloc(Offsets::ZERO, false, meta("update")).unwrap();
    let rounds = 10_000;
    let writers: Vec<_> = [false, true]
        .into_iter()
        .map(|boottime| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    let r = store.update(slot, |mut o, _| {
                        let clock = if boottime {
                            &mut o.boottime
                        } else {
                            &mut o.monotonic
                        };
                        clock.sec += 1;
                        std::thread::yield_now();
                        Ok::<_, ()>(o)
                    });
                    assert!(matches!(r, Some(Ok(_))));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let (o, _) = store.offsets(slot).unwrap();
    assert_eq!((o.monotonic.sec, o.boottime.sec), (rounds, rounds));
}

/// A writer and a first member entering (the freeze) racing on one pending namespace, 10,000
/// times: what the freezer reads right after its freeze is final, so no write is accepted after
/// the freeze; and a write the writer was told succeeded is never lost.
#[test]
fn no_write_lands_after_the_freeze() {
    let dir = TempDir::new("update-freeze");
    let store = Arc::new(Store::open_or_create(&dir.store(), 4).unwrap());
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..10_000i64 {
        let slot = store.alloc(Offsets::ZERO, false, meta("race")).unwrap();
        let go = Arc::new(std::sync::Barrier::new(2));
        let freezer = {
            let (store, go) = (store.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                store.freeze(slot);
                store.offsets(slot).unwrap()
            })
        };
        go.wait();
        let wanted = offs(round + 1, 2 * round + 1);
        let r = store
            .update(slot, |_, frozen| {
                if frozen {
                    return Err(libc::EACCES);
                }
                // Widen the window between the check and the write.
                std::thread::yield_now();
                Ok(wanted)
            })
            .unwrap();
        let (after_freeze, frozen) = freezer.join().unwrap();
        let (last, _) = store.offsets(slot).unwrap();
        assert!(frozen);
        assert_eq!(
            last, after_freeze,
            "round {round}: a write landed after the freeze"
        );
        match r {
            Ok(_) => {
                accepted += 1;
                assert_eq!(last, wanted, "round {round}: an accepted write was lost");
            }
            Err(_) => {
                refused += 1;
                assert_eq!(
                    last,
                    Offsets::ZERO,
                    "round {round}: a refused write changed it"
                );
            }
        }
        store.release(slot);
    }
    eprintln!("no_write_lands_after_the_freeze: {accepted} accepted, {refused} refused");
}
