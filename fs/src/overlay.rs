//! The /proc overlay of one sandbox (DESIGN: "virtualise time, let the kernel serve everything
//! else").
//!
//! Virtual (rendered here): `uptime`, `stat`, `PID/stat`, `PID/task/TID/stat`,
//! `PID/timens_offsets`, `PID/ns/time`, `PID/ns/time_for_children`, and the per-caller links
//! `self` and `thread-self`. Everything else is a symlink into the sandbox's own procfs, mounted
//! (by the sandbox) at `/proc/.timens/proc`, so the kernel serves it to the caller with the
//! caller's credentials. Links whose text the kernel computes (`exe`, `cwd`, `root`, `ns/*`,
//! `fd/*`) are read here *as the caller* so procfs itself decides what the caller may see.

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::pio;
use crate::procpos;
use crate::rootfile::RootFile;
use crate::state::{Daemon, NsRef, Sandbox, TaskNs};
use crate::statpage::REFRESH_AT;
use procview::Timespec;
use timens_sys::creds;

/// The hidden mount point of the sandbox's own procfs, relative to the overlay root.
pub const HIDDEN_DIR: &str = ".timens";
pub const HIDDEN_PROC: &str = "proc";

const TTL_STATIC: Duration = Duration::from_secs(86400);
/// `/proc/PID` entries: dropped at the process's exit through the process-events connector.
const TTL_PID: Duration = Duration::from_secs(10);
const TTL_STABLE: Duration = Duration::from_secs(60);
const TTL_NONE: Duration = Duration::ZERO;

const CAP_SYS_TIME: u32 = 25;
/// i_size given to open virtual files so splice reads them (see `allow_splice`).
const SPLICE_SIZE: u64 = 1 << 20;

/// A process or thread directory: `/proc/PID` or `/proc/PID/task/TID`, keyed with its start
/// time so a reused pid is never mistaken for the old process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Proc {
    pub pid: u32,
    pub tid: Option<u32>,
    pub start: u64,
}

impl Proc {
    /// Path of this directory inside the sandbox's procfs.
    fn base(&self) -> String {
        match self.tid {
            None => self.pid.to_string(),
            Some(t) => format!("{}/task/{}", self.pid, t),
        }
    }

    /// From this directory up to the overlay root.
    fn up(&self) -> &'static str {
        match self.tid {
            None => "..",
            Some(_) => "../../..",
        }
    }

    /// The task whose namespaces `ns/time*` show.
    fn task(&self) -> u32 {
        self.tid.unwrap_or(self.pid)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Root,
    HiddenDir,
    HiddenStub,
    /// Mount-point stubs for files the sandbox binds in: the offset store and the control
    /// socket, so the clock library finds both at fixed paths in any mount namespace.
    HiddenStore,
    HiddenSocket,
    /// `/proc/.timens/time` and `time_for_children`: the caller's own namespaces in one round
    /// trip, for the clock library's start-up (the `ns/time` path costs six).
    CallerNs(bool, u32),
    /// `/proc/uptime` as a reader in this namespace sees it: one inode per namespace, so each
    /// has its own page cache (see `open_uptime`).
    Uptime(NsRef),
    Stat,
    /// A directory of the real procfs root bind-mounted over this stub by the sandbox.
    StaticDir(OsString),
    /// A root entry served by the kernel: link into the hidden procfs.
    RootLink(OsString),
    /// A symlink of the real procfs root other than self/thread-self (e.g. `net` -> `self/net`).
    RootRealLink(OsString, Vec<u8>),
    SelfLink(u32),
    ThreadSelf(u32, u32),
    /// `self` / `thread-self` when the sandbox procfs's own links are bound over them: fixed
    /// mount points. Their text is never asked for once the bind is in place.
    SelfStub(bool),
    Pid(Proc),
    Task(u32, u64),
    PidLink(Proc, OsString),
    PidStat(Proc),
    Offsets(u32, u64),
    NsDir(Proc),
    NsTime(Proc, bool, u32),
    NsFile(u32),
    /// A link whose text the kernel computes, read as the caller at lookup (exe, cwd, root, ns/*).
    Exact(Proc, OsString, Vec<u8>),
    /// The same link when the caller may not read it: readlink answers the errno.
    Denied(Proc, OsString, i32),
    /// `ns/<type>:[N]` looked up through a relative link text: link to the real ns file.
    NsTarget(Proc, OsString),
    FdDir(Proc),
    /// fd N with its link text and the kernel's mode (lr-x, l-wx or lrwx by open mode).
    FdLink(Proc, u32, Vec<u8>, u16),
    FdTarget(Proc, u32),
}

const ROOT_INO: u64 = 1;
pub(crate) const HIDDEN_DIR_INO: u64 = 2;
const HIDDEN_STUB_INO: u64 = 3;
const STAT_INO: u64 = 5;
const HIDDEN_STORE_INO: u64 = 6;
const HIDDEN_SOCKET_INO: u64 = 7;
const SELF_STUB_INO: u64 = 8;
const THREAD_SELF_STUB_INO: u64 = 9;

pub const HIDDEN_STORE: &str = "store";
pub const HIDDEN_SOCKET: &str = "control.sock";
/// Dynamic inode numbers start above every namespace inode number (which are used as the
/// inode numbers of `time:[N]` files, G3).
const FIRST_DYNAMIC: u64 = 1 << 33;

struct Inodes {
    inner: Mutex<InodeMaps>,
    next: AtomicU64,
}

#[derive(Default)]
struct InodeMaps {
    by_key: HashMap<Key, u64>,
    by_ino: HashMap<u64, (Key, u64)>,
}

impl Inodes {
    fn new() -> Self {
        Inodes {
            inner: Mutex::new(InodeMaps::default()),
            next: AtomicU64::new(FIRST_DYNAMIC),
        }
    }

    fn fixed(key: &Key) -> Option<u64> {
        Some(match key {
            Key::Root => ROOT_INO,
            Key::HiddenDir => HIDDEN_DIR_INO,
            Key::HiddenStub => HIDDEN_STUB_INO,
            Key::HiddenStore => HIDDEN_STORE_INO,
            Key::HiddenSocket => HIDDEN_SOCKET_INO,
            Key::Stat => STAT_INO,
            Key::SelfStub(false) => SELF_STUB_INO,
            Key::SelfStub(true) => THREAD_SELF_STUB_INO,
            Key::NsFile(inum) => *inum as u64,
            _ => return None,
        })
    }

    /// The inode of `key`, counting one kernel lookup reference.
    fn lookup(&self, key: Key) -> u64 {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&ino) = m.by_key.get(&key) {
            if let Some(e) = m.by_ino.get_mut(&ino) {
                e.1 += 1;
            }
            return ino;
        }
        let ino = match Self::fixed(&key) {
            Some(i) => i,
            None => self.next.fetch_add(1, Ordering::Relaxed),
        };
        m.by_key.insert(key.clone(), ino);
        m.by_ino.insert(ino, (key, 1));
        ino
    }

    fn get(&self, ino: u64) -> Option<Key> {
        match ino {
            ROOT_INO => return Some(Key::Root),
            HIDDEN_DIR_INO => return Some(Key::HiddenDir),
            HIDDEN_STUB_INO => return Some(Key::HiddenStub),
            HIDDEN_STORE_INO => return Some(Key::HiddenStore),
            HIDDEN_SOCKET_INO => return Some(Key::HiddenSocket),
            STAT_INO => return Some(Key::Stat),
            SELF_STUB_INO => return Some(Key::SelfStub(false)),
            THREAD_SELF_STUB_INO => return Some(Key::SelfStub(true)),
            _ => {}
        }
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.by_ino.get(&ino).map(|(k, _)| k.clone())
    }

    /// Drops `n` kernel references; returns the key when that was the last one.
    fn forget(&self, ino: u64, n: u64) -> Option<Key> {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let remove = match m.by_ino.get_mut(&ino) {
            Some(e) => {
                e.1 = e.1.saturating_sub(n);
                e.1 == 0
            }
            None => false,
        };
        if !remove {
            return None;
        }
        let (key, _) = m.by_ino.remove(&ino)?;
        m.by_key.remove(&key);
        Some(key)
    }
}

/// State of one open virtual file.
struct OpenFile {
    key: Key,
    /// Content generated at the last read at position 0 (seq_file semantics).
    snapshot: Option<Vec<u8>>,
    /// How far the FUSE file position ran ahead of the kernel's: procfs never advances f_pos on
    /// a timens_offsets write (E1), FUSE does, so successful writes are subtracted back.
    phantom: u64,
    /// CAP_SYS_TIME of the opener (F2: checked with the opener's credentials).
    cap_sys_time: bool,
    /// Read through the page cache, which holds the inode's published content (`Published`)
    /// or, for `PID/stat`, this handle's `snapshot` (see `statpage`).
    cached: bool,
    /// When `snapshot` was rendered (page-cached `PID/stat`).
    rendered_at: Option<std::time::Instant>,
}

/// The content of a page-cached `/proc/uptime` inode that the kernel was last told about:
/// attribute replies give its length, and an mtime that changes with `generation`; page reads
/// return its bytes.
struct Published {
    bytes: Vec<u8>,
    generation: u64,
}

enum DirList {
    Entries(Vec<(u64, FileType, OsString)>),
}

pub struct Overlay {
    daemon: Arc<Daemon>,
    sb: Arc<Sandbox>,
    inodes: Inodes,
    files: Mutex<HashMap<u64, OpenFile>>,
    dirs: Mutex<HashMap<u64, DirList>>,
    next_fh: AtomicU64,
    /// Virtual files whose kernel-side size is known to be SPLICE_SIZE (see `allow_splice`).
    sized: Mutex<std::collections::HashSet<u64>>,
    /// `PID/stat` of the sandbox's procfs, kept open per inode (within the daemon's budget,
    /// `Daemon::take_fd_budget`) and read with pread: an open and a close less per read.
    stat_fds: Mutex<HashMap<u64, Arc<OwnedFd>>>,
    /// The `ns/user` link of the latest caller that asked twice in a row, kept open (within the
    /// fd budget): the credential check then reads it without a path walk.
    user_ns_link: creds::UserNsLink,
    /// Whether the sandbox's procfs hides processes (then no fd is kept: see `stat_fd`).
    procfs_hides_pids: std::sync::OnceLock<bool>,
    /// Published `/proc/uptime` content per namespace.
    uptime: Mutex<HashMap<NsRef, Published>>,
    /// Set once a reader outside the sandbox's own namespace looked for `/proc/uptime`: from
    /// then on its lookups are per caller (TTL 0); before, one entry cached for good serves all.
    uptime_per_caller: AtomicBool,
    /// Whether `PID/stat` may be read through the page cache (`statpage`); TIMENSFS_STAT_CACHE=0
    /// turns it off (every read then goes to the daemon, as before).
    stat_cache: bool,
    /// Time stamps of every inode (procfs shows its inodes' creation time).
    born: SystemTime,
    uid: u32,
    gid: u32,
}

type Res<T> = Result<T, Errno>;

fn errno_of(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

/// The part of `bytes` a read of `size` bytes at `offset` returns.
fn window(bytes: &[u8], offset: u64, size: u32) -> &[u8] {
    let start = usize::try_from(offset).map_or(bytes.len(), |o| o.min(bytes.len()));
    let end = start.saturating_add(size as usize).min(bytes.len());
    &bytes[start..end]
}

fn parse_num(name: &OsStr) -> Option<u32> {
    let b = name.as_bytes();
    if b.is_empty()
        || b.len() > 10
        || !b.iter().all(u8::is_ascii_digit)
        || (b[0] == b'0' && b.len() > 1)
    {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn name_str(name: &OsStr) -> Res<&str> {
    let s = name.to_str().ok_or(Errno::ENOENT)?;
    if s.contains('/') || s == "." || s == ".." {
        return Err(Errno::ENOENT);
    }
    Ok(s)
}

/// A link text that re-resolved as a path reaches the same object the kernel's magic link does:
/// relative names (`pipe:[1]`) resolve through this overlay, plain absolute paths through the
/// caller's own mount namespace. Deleted files and memfds cannot be reached by name: those get a
/// link into the hidden procfs instead (writing by name would create a new file).
fn reachable_by_text(text: &[u8]) -> bool {
    !text.ends_with(b" (deleted)") && !text.is_empty()
}

impl Overlay {
    pub fn new(daemon: Arc<Daemon>, sb: Arc<Sandbox>) -> Self {
        Overlay {
            daemon,
            sb,
            inodes: Inodes::new(),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            sized: Default::default(),
            uptime: Default::default(),
            stat_fds: Default::default(),
            user_ns_link: creds::UserNsLink::new(),
            procfs_hides_pids: Default::default(),
            uptime_per_caller: AtomicBool::new(false),
            stat_cache: std::env::var_os("TIMENSFS_STAT_CACHE").is_none_or(|v| v != "0"),
            born: SystemTime::now(),
            // SAFETY: getuid/getgid cannot fail.
            uid: unsafe { libc::getuid() },
            // SAFETY: as above.
            gid: unsafe { libc::getgid() },
        }
    }

    /// sendfile()/splice() of a FUSE file read through the page cache up to i_size, even with
    /// direct I/O, and procfs files have size 0: `busybox cat /proc/uptime` would print nothing.
    /// A one-byte notify-store far out sets i_size high at every open (the page it fills is dropped
    /// by the open itself, which invalidates the file's pages); the first short page read
    /// brings it down to the real length (fuse_short_read), so splice returns exactly the content.
    /// Only when needed: after an attribute reply (which says size 0) or a page-cache read
    /// (which brought the size down to the content's), not on every open.
    fn allow_splice(&self, ino: INodeNo) {
        if !self
            .sized
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ino.0)
        {
            return;
        }
        if let Some(page) = self.sb.stat_pages.lock().get_mut(&ino.0) {
            page.max_size = SPLICE_SIZE;
        }
        // The store locks its page: a page read of it in progress needs another reader.
        let rescue = self.sb.readers.rescue();
        self.sb
            .outbox
            .store_now(&rescue, ino.0, SPLICE_SIZE - 1, &[0]);
    }

    /// Renders `/proc/uptime` for namespace `ns` and makes it the published content if it
    /// differs. Returns whether it changed, and the published length and generation.
    fn publish_uptime(&self, ns: NsRef) -> Res<(bool, u64, u64)> {
        let bytes = crate::rootfile::render_in(&self.daemon, &self.sb, RootFile::Uptime, ns)?;
        let mut m = self.uptime.lock().unwrap_or_else(|e| e.into_inner());
        let p = m.entry(ns).or_insert_with(|| Published {
            bytes: Vec::new(),
            generation: 0,
        });
        let changed = p.bytes != bytes;
        if changed {
            p.bytes = bytes;
            p.generation += 1;
        }
        Ok((changed, p.bytes.len() as u64, p.generation))
    }

    /// How long the kernel may keep `key`'s attributes, at most `ttl`. For uptime (and so for
    /// its pages): until its first field changes. The kernel rounds this up to whole jiffies, so
    /// a file kept open and read again can show the previous centisecond for up to a jiffy or
    /// two; every fresh open checks the content (`open_uptime`).
    fn attr_ttl(&self, key: &Key, ttl: Duration) -> Duration {
        match key {
            Key::Uptime(ns) => ttl.min(crate::rootfile::uptime_unchanged_for(&self.daemon, *ns)),
            _ => ttl,
        }
    }

    /// Opens `/proc/uptime` of namespace `ns` for reading through the page cache: one round
    /// trip (this OPEN) per open+read+close while the content is unchanged, instead of three.
    ///
    /// The content is rendered now; if it differs from what the kernel holds, the inode's
    /// attributes are invalidated (only the attributes: dropping pages from inside a request
    /// can wait on a page read that this daemon has yet to answer). The reader's read then asks
    /// for attributes, sees a new mtime and size, drops the old pages itself
    /// (FUSE_AUTO_INVAL_DATA) and reads the published content.
    ///
    /// A reader in another namespace can only arrive here through the entry cached for the
    /// sandbox's own namespace, before lookups became per caller: ESTALE makes the kernel
    /// repeat the open with a fresh lookup, which now gives it its own inode.
    fn open_uptime(&self, req: &Request, ino: INodeNo, ns: NsRef) -> Res<Option<FopenFlags>> {
        let caller = self.caller_ns(req).time;
        if caller != ns {
            if !self.uptime_per_caller.swap(true, Ordering::Relaxed) {
                return Err(Errno::ESTALE);
            }
            // Per caller already: the caller changed namespace between lookup and open. Serve
            // it directly (and leave the pages, which belong to `ns`, alone).
            return Ok(Some(
                FopenFlags::FOPEN_DIRECT_IO
                    | FopenFlags::FOPEN_KEEP_CACHE
                    | FopenFlags::FOPEN_NOFLUSH,
            ));
        }
        let (changed, ..) = self.publish_uptime(ns)?;
        if changed {
            self.sb.outbox.attrs_now(ino.0);
        }
        Ok(None)
    }

    /// The open `stat` file of `p` for inode `ino`. Unless it hides processes (hidepid), the
    /// sandbox's procfs lets anyone open it (mode 0444) and decides what a read shows by the
    /// reader's credentials at read time (do_task_stat's ptrace check), so an fd opened by the
    /// daemon and read as the caller gives exactly what the caller's own open and read would.
    /// None when the procfs hides processes: the caller must then open the file itself.
    fn kept_stat_fd(&self, req: &Request, ino: u64, p: &Proc) -> io::Result<Option<Arc<OwnedFd>>> {
        let hides = *self.procfs_hides_pids.get_or_init(|| {
            let info = pio::read_at(self.procfs(), &format!("{}/mountinfo", req.pid()));
            info.map(|i| pio::procfs_hides_pids(self.procfs(), &String::from_utf8_lossy(&i)))
                .unwrap_or(true)
        });
        if hides {
            return Ok(None);
        }
        if let Some(fd) = self
            .stat_fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
        {
            return Ok(Some(fd.clone()));
        }
        let path = format!("{}/stat", p.base());
        let fd = Arc::new(pio::open_at(self.procfs(), &path, libc::O_RDONLY)?);
        let mut m = self.stat_fds.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(&ino) && self.daemon.take_fd_budget() {
            m.insert(ino, fd.clone());
        }
        Ok(Some(fd))
    }

    /// Opens `PID/stat` for reading through the page cache if no other handle has the inode
    /// open (see `statpage`): renders the caller's content now and makes it what the kernel
    /// holds. Returns that content, or None for a direct-I/O open (every read asks the daemon).
    /// Counts every handle of a `PID/stat` inode (the RELEASE uncounts it).
    ///
    /// ESTALE when the process is gone: the kernel reached this inode through a `/proc/PID`
    /// entry it still caches for an exited process (its invalidation is on its way), maybe one
    /// whose pid a new process has now. The kernel then walks the path again, asking for every
    /// entry afresh, and finds the new process, or none, as procfs would.
    fn open_pid_stat(
        &self,
        req: &Request,
        ino: INodeNo,
        key: &Key,
        fh: u64,
    ) -> Res<Option<Vec<u8>>> {
        if !matches!(key, Key::PidStat(_)) {
            return Ok(None);
        }
        if !self.sb.stat_pages.register(ino.0) || !self.stat_cache {
            return Ok(None);
        }
        // Rendered without the lock (a pread as the caller): another open meanwhile sees this
        // handle counted and reads directly, and this one then does too.
        let content = self.render(req, ino.0, key);
        if matches!(content, Err(e) if e == Errno::ESRCH || e == Errno::ENOENT) {
            self.sb.stat_pages.release(ino.0, fh);
            return Err(Errno::ESTALE);
        }
        let (store, opened) = {
            let mut pages = self.sb.stat_pages.lock();
            let Some(page) = pages.get_mut(&ino.0) else {
                return Ok(None);
            };
            let Ok(content) = &content else {
                // The read reports the error (as procfs does: the open succeeds).
                page.held = None;
                return Ok(None);
            };
            if page.open != 1 {
                return Ok(None);
            }
            let len = content.len() as u64;
            let store = match &page.held {
                Some(h) if h == content => false,
                // The kernel's i_size is at most the largest size it was ever given for this
                // inode: a store at least that long leaves exactly this content and its length
                // (a store only extends i_size), and needs no attribute reply.
                _ if len >= page.max_size => true,
                // Shorter than what the kernel may hold. Only an attribute reply could bring
                // i_size down, and the kernel drops a reply that an attribute invalidation
                // overtook (the refresher's, for another handle): this handle reads directly.
                _ => {
                    page.held = None;
                    return Ok(None);
                }
            };
            if store {
                // Unknown until the store is through (sent without the lock); attribute
                // replies meanwhile give the new content's length.
                page.held = None;
                page.sending = Some(len);
                page.max_size = page.max_size.max(len);
            }
            (store, page.opened)
        };
        let Ok(content) = content else {
            return Ok(None);
        };
        // No other handle was open, so no page read of this inode should be waiting for this
        // daemon; the rescue answers one anyway (a handle opened meanwhile).
        let sent = !store || {
            let rescue = self.sb.readers.rescue();
            self.sb.outbox.store_now(&rescue, ino.0, 0, &content)
        };
        let mut pages = self.sb.stat_pages.lock();
        let Some(page) = pages.get_mut(&ino.0) else {
            return Ok(None);
        };
        page.sending = None;
        if !sent || page.open != 1 || page.opened != opened {
            // Another open came while the lock was free: what the kernel holds is unknown.
            page.held = None;
            return Ok(None);
        }
        page.held = Some(content.clone());
        page.cached_fh = Some(fh);
        page.cached_len = content.len() as u64;
        drop(pages);
        self.daemon.refresh.later(&self.sb, ino.0, fh);
        Ok(Some(content))
    }

    /// A GETATTR with the handle of a page-cached `PID/stat`: it comes from a read or fstat
    /// after the attributes were invalidated (the handle stayed open about `FRESH_FOR`), so
    /// render the line again, as procfs would at this read. If it changed, the reply's size and
    /// mtime make the kernel drop the pages and read them again from this handle. (Nothing is
    /// stored from here: another thread of the reader may be waiting in a page read of this
    /// inode, and a store would wait for that page.)
    fn refresh_pid_stat(&self, req: &Request, ino: INodeNo, key: &Key, fh: u64) {
        let old = {
            let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            match files.get(&fh) {
                Some(f) if f.cached && f.rendered_at.is_some_and(|t| t.elapsed() >= REFRESH_AT) => {
                    f.snapshot.clone().unwrap_or_default()
                }
                _ => return,
            }
        };
        let Ok(content) = self.render(req, ino.0, key) else {
            return;
        };
        let len = content.len() as u64;
        let changed = content != old;
        if let Some(f) = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&fh)
        {
            f.snapshot = Some(content);
            f.rendered_at = Some(std::time::Instant::now());
        }
        {
            let mut pages = self.sb.stat_pages.lock();
            let Some(page) = pages.get_mut(&ino.0).filter(|p| p.cached_fh == Some(fh)) else {
                return;
            };
            if changed {
                page.held = None;
                page.generation += 1;
                page.cached_len = len;
            }
        }
        self.daemon.refresh.later(&self.sb, ino.0, fh);
    }

    fn procfs(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sb.procfs()
    }

    fn attr(
        &self,
        ino: u64,
        kind: FileType,
        perm: u16,
        uid: u32,
        gid: u32,
        nlink: u32,
    ) -> FileAttr {
        let now = self.born;
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm,
            nlink,
            uid,
            gid,
            rdev: 0,
            blksize: 1024,
            flags: 0,
        }
    }

    /// Handles the process events queued now (see `Daemon::sync_events`). Their handler holds
    /// the events lock while it makes the kernel forget an exited process's entry, which waits
    /// for lookups in progress: another thread must be free to answer them.
    fn sync_events(&self) {
        let _rescue = self.sb.readers.rescue();
        self.daemon.sync_events();
    }

    /// The caller's namespaces (per request: setns changes them within one pid).
    fn caller_ns(&self, req: &Request) -> TaskNs {
        self.daemon.caller_ns(&self.sb, req.pid())
    }

    /// Runs `f` with the calling thread's filesystem credentials set to the caller's, so procfs
    /// applies its own permission checks (ptrace access, modes) to the caller, not to the daemon.
    fn as_caller<T>(&self, req: &Request, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let c = self.caller_creds(req)?;
        if self.daemon.acts_as(&c) {
            // Switching to identical filesystem credentials would change nothing.
            return f();
        }
        let _guard = creds::assume(&c)?;
        f()
    }

    /// The credentials procfs judges the caller by. Where the caller's pid is also ours (no pid
    /// namespace): the request's fsuid/fsgid and capget(2), without generating its status file.
    fn caller_creds(&self, req: &Request) -> io::Result<creds::Creds> {
        if req.pid() == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        if self.sb.pidns_level == 0 {
            creds::fs_creds(
                self.procfs(),
                req.pid(),
                req.uid(),
                req.gid(),
                self.daemon.own_user_ns,
                &self.user_ns_link,
                || self.daemon.take_fd_budget(),
            )
        } else {
            creds::read_creds(self.procfs(), req.pid(), self.daemon.own_user_ns)
        }
    }

    fn caller_tgid(&self, tid: u32) -> Res<u32> {
        if tid == 0 {
            return Err(Errno::ENOENT);
        }
        if let Some(t) = self.sb.tgid_cache.get(&tid) {
            return Ok(*t);
        }
        let tgid = self.find_tgid(tid)?;
        self.sb.tgid_cache.insert(tid, tgid);
        Ok(tgid)
    }

    fn find_tgid(&self, tid: u32) -> Res<u32> {
        // A single-threaded process's task/ has exactly one entry (nlink 3): tid == tgid.
        if let Ok(st) = pio::stat_at(self.procfs(), &format!("{tid}/task"), false) {
            if st.st_nlink == 3 {
                return Ok(tid);
            }
        }
        let text =
            pio::read_at(self.procfs(), &format!("{tid}/status")).map_err(|e| errno_of(&e))?;
        for line in String::from_utf8_lossy(&text).lines() {
            if let Some(v) = line.strip_prefix("Tgid:") {
                return v.trim().parse().map_err(|_| Errno::EIO);
            }
        }
        Err(Errno::EIO)
    }

    /// Looks up a live process or thread directory.
    fn proc_of(&self, pid: u32, tid: Option<u32>) -> Res<(Proc, libc::stat)> {
        let base = match tid {
            None => pid.to_string(),
            Some(t) => format!("{pid}/task/{t}"),
        };
        let st = pio::stat_at(self.procfs(), &base, false).map_err(|e| errno_of(&e))?;
        let (start, _) =
            pio::stat_start_and_state(self.procfs(), &base).map_err(|_| Errno::ENOENT)?;
        Ok((Proc { pid, tid, start }, st))
    }

    fn owner(&self, p: &Proc) -> (u32, u32) {
        match pio::stat_at(self.procfs(), &p.base(), false) {
            Ok(st) => (st.st_uid, st.st_gid),
            Err(_) => (0, 0),
        }
    }

    /// Attributes of a node, computed afresh.
    fn attr_of(&self, ino: u64, key: &Key) -> Res<FileAttr> {
        let (u, g) = (self.uid, self.gid);
        Ok(match key {
            Key::Root => self.attr(ino, FileType::Directory, 0o555, u, g, 2),
            Key::HiddenDir | Key::HiddenStub | Key::StaticDir(_) => {
                self.attr(ino, FileType::Directory, 0o555, u, g, 2)
            }
            Key::Uptime(ns) => {
                let (_, len, generation) = self.publish_uptime(*ns)?;
                let mut a = self.attr(ino, FileType::RegularFile, 0o444, u, g, 1);
                a.size = len;
                a.mtime = self.born + Duration::from_nanos(generation);
                a
            }
            Key::Stat => self.attr(ino, FileType::RegularFile, 0o444, u, g, 1),
            Key::HiddenStore | Key::HiddenSocket => {
                self.attr(ino, FileType::RegularFile, 0o444, u, g, 1)
            }
            Key::RootLink(_)
            | Key::RootRealLink(..)
            | Key::SelfLink(_)
            | Key::ThreadSelf(..)
            | Key::SelfStub(_)
            | Key::CallerNs(..) => self.attr(ino, FileType::Symlink, 0o777, u, g, 1),
            Key::Pid(p) => {
                let st = pio::stat_at(self.procfs(), &p.base(), false).map_err(|e| errno_of(&e))?;
                self.attr(
                    ino,
                    FileType::Directory,
                    0o555,
                    st.st_uid,
                    st.st_gid,
                    st.st_nlink as u32,
                )
            }
            Key::Task(pid, start) => {
                let p = Proc {
                    pid: *pid,
                    tid: None,
                    start: *start,
                };
                let (uo, go) = self.owner(&p);
                self.attr(ino, FileType::Directory, 0o555, uo, go, 3)
            }
            Key::PidStat(p) => {
                let (uo, go) = self.owner(p);
                let mut a = self.attr(ino, FileType::RegularFile, 0o444, uo, go, 1);
                // While page-cached, the kernel's i_size must be the content's length.
                if let Some(page) = self.sb.stat_pages.lock().get_mut(&ino) {
                    a.size = page.size();
                    a.mtime = self.born + Duration::from_nanos(page.generation);
                    page.max_size = page.max_size.max(a.size);
                }
                a
            }
            Key::Offsets(pid, start) => {
                let (uo, go) = self.owner(&Proc {
                    pid: *pid,
                    tid: None,
                    start: *start,
                });
                self.attr(ino, FileType::RegularFile, 0o644, uo, go, 1)
            }
            Key::NsDir(p) => {
                let (uo, go) = self.owner(p);
                self.attr(ino, FileType::Directory, 0o511, uo, go, 2)
            }
            Key::FdDir(p) => {
                let (uo, go) = self.owner(p);
                self.attr(ino, FileType::Directory, 0o500, uo, go, 2)
            }
            Key::NsFile(_) => self.attr(ino, FileType::RegularFile, 0o444, 0, 0, 1),
            Key::PidLink(p, _)
            | Key::NsTime(p, ..)
            | Key::Exact(p, ..)
            | Key::Denied(p, ..)
            | Key::NsTarget(p, _)
            | Key::FdLink(p, ..)
            | Key::FdTarget(p, _) => {
                let (uo, go) = self.owner(p);
                let perm = match key {
                    Key::FdLink(.., mode) => *mode,
                    Key::FdTarget(..) => 0o700,
                    _ => 0o777,
                };
                self.attr(ino, FileType::Symlink, perm, uo, go, 1)
            }
        })
    }

    fn reply_entry(&self, key: Key, ttl: Duration, reply: ReplyEntry) {
        let ino = self.inodes.lookup(key.clone());
        // The attributes below say size 0: a later splice needs the size raised again.
        self.sized
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ino);
        match self.attr_of(ino, &key) {
            Ok(attr) => {
                reply.entry_with_ttls(&self.attr_ttl(&key, ttl), &ttl, &attr, Generation(0))
            }
            Err(e) => {
                self.inodes.forget(ino, 1);
                reply.error(e)
            }
        }
    }

    /// Link text of a kernel-computed link, read as the caller.
    fn caller_readlink(&self, req: &Request, path: &str) -> io::Result<Vec<u8>> {
        self.as_caller(req, || pio::readlink_at(self.procfs(), path))
    }

    fn exact_or_denied(&self, req: &Request, p: Proc, name: &str, path: &str) -> Res<Key> {
        match self.caller_readlink(req, path) {
            Ok(text) => Ok(Key::Exact(p, name.into(), text)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // The entry exists but has no target (kernel thread's exe): the kernel's lookup
                // still succeeds and readlink fails with ENOENT.
                pio::stat_at(self.procfs(), path, false).map_err(|e| errno_of(&e))?;
                Ok(Key::Denied(p, name.into(), libc::ENOENT))
            }
            Err(e) => Ok(Key::Denied(
                p,
                name.into(),
                e.raw_os_error().unwrap_or(libc::EACCES),
            )),
        }
    }

    fn lookup_key(&self, req: &Request, parent: &Key, name: &OsStr) -> Res<(Key, Duration)> {
        let s = name_str(name)?;
        match parent {
            Key::Root => self.lookup_root(req, s, name),
            Key::HiddenDir if s == HIDDEN_PROC => Ok((Key::HiddenStub, TTL_STATIC)),
            Key::HiddenDir if s == HIDDEN_STORE => Ok((Key::HiddenStore, TTL_STATIC)),
            Key::HiddenDir if s == HIDDEN_SOCKET => Ok((Key::HiddenSocket, TTL_STATIC)),
            Key::HiddenDir if s == "time" || s == "time_for_children" => {
                let fc = s == "time_for_children";
                if !self.sb.mixed.load(Ordering::Acquire) {
                    // Every member is in the sandbox's namespaces: one entry for all, cached
                    // until `Sandbox::mark_mixed` invalidates it (the caller holds mixed_lock).
                    let ns = self.sb.default_ns();
                    let inum = if fc { ns.tfc.inum() } else { ns.time.inum() };
                    return Ok((Key::CallerNs(fc, inum), TTL_STATIC));
                }
                // An exec that just happened must be reflected (B4).
                self.sync_events();
                let ns = self.caller_ns(req);
                let inum = if fc { ns.tfc.inum() } else { ns.time.inum() };
                Ok((Key::CallerNs(fc, inum), TTL_NONE))
            }
            Key::Pid(p) => self.lookup_pid(req, *p, s),
            Key::Task(pid, start) => {
                let tid = parse_num(name).ok_or(Errno::ENOENT)?;
                let (p, _) = self.proc_of(*pid, Some(tid))?;
                let _ = start;
                Ok((Key::Pid(p), TTL_PID))
            }
            Key::NsDir(p) => self.lookup_ns(req, *p, s),
            Key::FdDir(p) => self.lookup_fd(req, *p, s),
            _ => Err(Errno::ENOENT),
        }
    }

    fn lookup_root(&self, req: &Request, s: &str, name: &OsStr) -> Res<(Key, Duration)> {
        match s {
            HIDDEN_DIR => return Ok((Key::HiddenDir, TTL_STATIC)),
            "uptime" => {
                let own = NsRef::Slot(self.sb.ns);
                let ns = self.caller_ns(req).time;
                if ns != own {
                    self.uptime_per_caller.store(true, Ordering::Relaxed);
                }
                if self.uptime_per_caller.load(Ordering::Relaxed) {
                    return Ok((Key::Uptime(ns), TTL_NONE));
                }
                return Ok((Key::Uptime(own), TTL_STATIC));
            }
            "stat" => return Ok((Key::Stat, TTL_STATIC)),
            "self" if self.sb.self_bound => return Ok((Key::SelfStub(false), TTL_STATIC)),
            "thread-self" if self.sb.self_bound => return Ok((Key::SelfStub(true), TTL_STATIC)),
            "self" => {
                let tgid = self.caller_tgid(req.pid())?;
                return Ok((Key::SelfLink(tgid), TTL_NONE));
            }
            "thread-self" => {
                let tgid = self.caller_tgid(req.pid())?;
                return Ok((Key::ThreadSelf(tgid, req.pid()), TTL_NONE));
            }
            _ => {}
        }
        if let Some(pid) = parse_num(name) {
            let (p, _) = self.proc_of(pid, None)?;
            return Ok((Key::Pid(p), TTL_PID));
        }
        let st = pio::stat_at(self.procfs(), s, false).map_err(|e| errno_of(&e))?;
        Ok(match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => (Key::StaticDir(name.into()), TTL_STATIC),
            libc::S_IFLNK => {
                let text = pio::readlink_at(self.procfs(), s).map_err(|e| errno_of(&e))?;
                (Key::RootRealLink(name.into(), text), TTL_STATIC)
            }
            _ => (Key::RootLink(name.into()), TTL_STATIC),
        })
    }

    /// Whether `PID/stat` as the kernel shows it is what every reader in this sandbox must see:
    /// all members are in the sandbox's namespace (not mixed), whose boottime offset is zero and
    /// can no longer change (frozen). Then `stat` is a link into the sandbox's procfs like the
    /// other per-process files: no round trip, and procfs judges the reader itself. The caller
    /// holds `mixed_lock` (shared) until its reply is sent; `Sandbox::mark_mixed` invalidates
    /// those entries when the answer changes.
    fn stat_is_kernels(&self) -> bool {
        let ns = NsRef::Slot(self.sb.ns);
        !self.sb.mixed.load(Ordering::Acquire)
            && self.daemon.is_frozen(ns)
            && self.daemon.offsets(ns).boottime == Timespec::ZERO
    }

    fn lookup_pid(&self, req: &Request, p: Proc, s: &str) -> Res<(Key, Duration)> {
        match s {
            "stat" if !self.stat_is_kernels() => return Ok((Key::PidStat(p), TTL_STABLE)),
            "timens_offsets" if p.tid.is_none() => {
                return Ok((Key::Offsets(p.pid, p.start), TTL_STABLE))
            }
            "ns" => return Ok((Key::NsDir(p), TTL_STABLE)),
            // OCI runtimes insist that /proc/self/fd is on procfs (runc closes inherited fds
            // through it and checks the file system): there fd/ is a link into the real procfs.
            "fd" if !self.sb.fd_as_link => return Ok((Key::FdDir(p), TTL_STABLE)),
            "task" if p.tid.is_none() => return Ok((Key::Task(p.pid, p.start), TTL_STABLE)),
            "exe" | "cwd" | "root" => {
                let key = self.exact_or_denied(req, p, s, &format!("{}/{s}", p.base()))?;
                return Ok((key, TTL_NONE));
            }
            _ => {}
        }
        pio::stat_at(self.procfs(), &format!("{}/{s}", p.base()), false)
            .map_err(|e| errno_of(&e))?;
        Ok((Key::PidLink(p, s.into()), TTL_STABLE))
    }

    /// The model's namespace of the task behind `p` (per thread, B9).
    fn task_ns(&self, p: &Proc) -> TaskNs {
        self.daemon.other_task_ns(&self.sb, p.task())
    }

    fn lookup_ns(&self, req: &Request, p: Proc, s: &str) -> Res<(Key, Duration)> {
        let base = p.base();
        match s {
            "time" | "time_for_children" => {
                // An exec or fork that just happened must be reflected (the clock library of a
                // freshly exec'd program asks this first).
                self.sync_events();
                // G4: reading the link needs ptrace read access; let procfs judge the caller on a
                // sibling link (the kernel's own time links exist only with CONFIG_TIME_NS).
                let probe = ["time", "net", "mnt"]
                    .iter()
                    .map(|n| self.caller_readlink(req, &format!("{base}/ns/{n}")))
                    .find(|r| !matches!(r, Err(e) if e.raw_os_error() == Some(libc::ENOENT)))
                    .unwrap_or_else(|| Err(io::Error::from_raw_os_error(libc::ENOENT)));
                match probe {
                    Ok(_) => {
                        let ns = self.task_ns(&p);
                        let fc = s == "time_for_children";
                        let inum = if fc { ns.tfc.inum() } else { ns.time.inum() };
                        Ok((Key::NsTime(p, fc, inum), TTL_NONE))
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(Errno::ENOENT),
                    Err(e) => Ok((
                        Key::Denied(p, s.into(), e.raw_os_error().unwrap_or(libc::EACCES)),
                        TTL_NONE,
                    )),
                }
            }
            _ if s.starts_with("time:[") => {
                let inum: u32 = s
                    .strip_prefix("time:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse().ok())
                    .ok_or(Errno::ENOENT)?;
                let ns = self.task_ns(&p);
                if inum == ns.time.inum() || inum == ns.tfc.inum() || inum == timens::INIT_TIME_INUM
                {
                    Ok((Key::NsFile(inum), TTL_NONE))
                } else {
                    Err(Errno::ENOENT)
                }
            }
            _ if s.contains(":[") => {
                // A relative link text like `net:[4026531840]`: find the real link with this text.
                let names = self
                    .as_caller(req, || pio::list_at(self.procfs(), &format!("{base}/ns")))
                    .map_err(|e| errno_of(&e))?;
                for (n, _) in names {
                    let n = String::from_utf8_lossy(&n).into_owned();
                    if n.starts_with("time") {
                        continue;
                    }
                    if let Ok(text) = self.caller_readlink(req, &format!("{base}/ns/{n}")) {
                        if text == s.as_bytes() {
                            return Ok((Key::NsTarget(p, n.into()), TTL_NONE));
                        }
                    }
                }
                Err(Errno::ENOENT)
            }
            _ => {
                let key = self.exact_or_denied(req, p, s, &format!("{base}/ns/{s}"))?;
                Ok((key, TTL_NONE))
            }
        }
    }

    fn lookup_fd(&self, req: &Request, p: Proc, s: &str) -> Res<(Key, Duration)> {
        let base = p.base();
        if let Some(fd) = parse_num(OsStr::new(s)) {
            let path = format!("{base}/fd/{fd}");
            let (text, st) = self
                .as_caller(req, || {
                    Ok((
                        pio::readlink_at(self.procfs(), &path)?,
                        pio::stat_at(self.procfs(), &path, false)?,
                    ))
                })
                .map_err(|e| errno_of(&e))?;
            return Ok((
                Key::FdLink(p, fd, text, (st.st_mode & 0o777) as u16),
                TTL_NONE,
            ));
        }
        // A relative link text (`pipe:[123]`, `anon_inode:[eventfd]`): the fd with that text.
        let fds = self
            .as_caller(req, || pio::list_at(self.procfs(), &format!("{base}/fd")))
            .map_err(|e| errno_of(&e))?;
        for (n, _) in fds {
            let Some(fd) = std::str::from_utf8(&n)
                .ok()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(text) = self.caller_readlink(req, &format!("{base}/fd/{fd}")) {
                if text == s.as_bytes() {
                    return Ok((Key::FdTarget(p, fd), TTL_NONE));
                }
            }
        }
        Err(Errno::ENOENT)
    }

    fn link_text(&self, req: &Request, key: &Key) -> Res<Vec<u8>> {
        Ok(match key {
            Key::RootLink(name) => {
                format!("{HIDDEN_DIR}/{HIDDEN_PROC}/{}", name.to_string_lossy()).into_bytes()
            }
            Key::RootRealLink(_, text) => text.clone(),
            Key::SelfLink(tgid) => tgid.to_string().into_bytes(),
            Key::ThreadSelf(tgid, tid) => format!("{tgid}/task/{tid}").into_bytes(),
            Key::PidLink(p, name) => format!(
                "{}/{HIDDEN_DIR}/{HIDDEN_PROC}/{}/{}",
                p.up(),
                p.base(),
                name.to_string_lossy()
            )
            .into_bytes(),
            Key::NsTime(_, _, inum) | Key::CallerNs(_, inum) => {
                procview::ns_link_text("time", *inum).into_bytes()
            }
            Key::Exact(p, name, text) => {
                if reachable_by_text(text) {
                    text.clone()
                } else {
                    format!(
                        "{}/{HIDDEN_DIR}/{HIDDEN_PROC}/{}/{}",
                        p.up(),
                        p.base(),
                        name.to_string_lossy()
                    )
                    .into_bytes()
                }
            }
            Key::Denied(_, _, errno) => return Err(Errno::from_i32(*errno)),
            // Only between mounting the overlay and binding the links (a re-attach to running
            // processes): no answer is right for every reader, and errors are not cached.
            Key::SelfStub(_) => return Err(Errno::ENOENT),
            Key::NsTarget(p, name) => format!(
                "../{}/{HIDDEN_DIR}/{HIDDEN_PROC}/{}/ns/{}",
                p.up(),
                p.base(),
                name.to_string_lossy()
            )
            .into_bytes(),
            Key::FdLink(p, fd, text, _) => {
                if reachable_by_text(text) {
                    text.clone()
                } else {
                    format!(
                        "../{}/{HIDDEN_DIR}/{HIDDEN_PROC}/{}/fd/{fd}",
                        p.up(),
                        p.base()
                    )
                    .into_bytes()
                }
            }
            Key::FdTarget(p, fd) => format!(
                "../{}/{HIDDEN_DIR}/{HIDDEN_PROC}/{}/fd/{fd}",
                p.up(),
                p.base()
            )
            .into_bytes(),
            _ => {
                let _ = req;
                return Err(Errno::EINVAL);
            }
        })
    }

    /// Directory listing, generated at offset 0 (procfs generates at getdents time).
    fn list(&self, req: &Request, key: &Key) -> Res<Vec<(u64, FileType, OsString)>> {
        let mut out: Vec<(u64, FileType, OsString)> = Vec::new();
        let ty = |t: u8| match t {
            libc::DT_DIR => FileType::Directory,
            libc::DT_LNK => FileType::Symlink,
            _ => FileType::RegularFile,
        };
        let pseudo_ino = |name: &[u8]| -> u64 {
            // Stable per name; informational only (d_ino), like procfs' own per-entry numbers.
            let mut h: u64 = 0xcbf29ce484222325;
            for b in name {
                h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
            }
            (h >> 1) | 1
        };
        match key {
            Key::Root => {
                let names = pio::list_at(self.procfs(), ".").map_err(|e| errno_of(&e))?;
                for (n, t) in names {
                    if n == HIDDEN_DIR.as_bytes() {
                        continue;
                    }
                    let kind = if n == b"uptime" || n == b"stat" {
                        FileType::RegularFile
                    } else {
                        ty(t)
                    };
                    out.push((
                        pseudo_ino(&n),
                        kind,
                        OsString::from(std::ffi::OsStr::from_bytes(&n)),
                    ));
                }
            }
            Key::HiddenDir => {
                out.push((HIDDEN_STUB_INO, FileType::Directory, HIDDEN_PROC.into()));
                out.push((HIDDEN_STORE_INO, FileType::RegularFile, HIDDEN_STORE.into()));
                out.push((
                    HIDDEN_SOCKET_INO,
                    FileType::RegularFile,
                    HIDDEN_SOCKET.into(),
                ));
            }
            Key::Pid(p) => {
                let names = self
                    .as_caller(req, || pio::list_at(self.procfs(), &p.base()))
                    .map_err(|e| errno_of(&e))?;
                for (n, t) in names {
                    let kind = match n.as_slice() {
                        b"stat" | b"timens_offsets" => FileType::RegularFile,
                        b"fd" if self.sb.fd_as_link => FileType::Symlink,
                        b"ns" | b"fd" | b"task" => FileType::Directory,
                        _ if t == libc::DT_DIR => FileType::Symlink,
                        _ => FileType::Symlink,
                    };
                    out.push((pseudo_ino(&n), kind, OsString::from(OsStr::from_bytes(&n))));
                }
                if p.tid.is_none() && !out.iter().any(|(_, _, n)| n == "timens_offsets") {
                    out.push((
                        pseudo_ino(b"timens_offsets"),
                        FileType::RegularFile,
                        "timens_offsets".into(),
                    ));
                }
            }
            Key::Task(pid, _) => {
                let names = pio::list_at(self.procfs(), &format!("{pid}/task"))
                    .map_err(|e| errno_of(&e))?;
                for (n, _) in names {
                    out.push((
                        pseudo_ino(&n),
                        FileType::Directory,
                        OsString::from(OsStr::from_bytes(&n)),
                    ));
                }
            }
            Key::NsDir(p) | Key::FdDir(p) => {
                let sub = if matches!(key, Key::NsDir(_)) {
                    "ns"
                } else {
                    "fd"
                };
                let names = self
                    .as_caller(req, || {
                        pio::list_at(self.procfs(), &format!("{}/{sub}", p.base()))
                    })
                    .map_err(|e| errno_of(&e))?;
                for (n, _) in names {
                    out.push((
                        pseudo_ino(&n),
                        FileType::Symlink,
                        OsString::from(OsStr::from_bytes(&n)),
                    ));
                }
                if sub == "ns" {
                    for t in ["time", "time_for_children"] {
                        if !out.iter().any(|(_, _, n)| n == t) {
                            out.push((pseudo_ino(t.as_bytes()), FileType::Symlink, t.into()));
                        }
                    }
                }
            }
            Key::StaticDir(_) | Key::HiddenStub => {}
            _ => return Err(Errno::ENOTDIR),
        }
        Ok(out)
    }

    /// Content of a virtual file for the reading task.
    fn render(&self, req: &Request, ino: u64, key: &Key) -> Res<Vec<u8>> {
        match key {
            Key::Uptime(_) => {
                crate::rootfile::render(&self.daemon, &self.sb, RootFile::Uptime, req.pid())
            }
            Key::Stat => crate::rootfile::render(&self.daemon, &self.sb, RootFile::Stat, req.pid()),
            Key::PidStat(p) => {
                // Read as the caller: do_task_stat hides some fields from readers it does not
                // permit, judged at read time by the reader's credentials.
                let host = match self.kept_stat_fd(req, ino, p) {
                    Ok(Some(fd)) => self.as_caller(req, || pio::pread_record(&fd)),
                    Ok(None) => self.as_caller(req, || {
                        pio::read_record_at(self.procfs(), &format!("{}/stat", p.base()))
                    }),
                    Err(e) => Err(e),
                }
                .map_err(|e| errno_of(&e))?;
                let off = self.daemon.offsets(self.caller_ns(req).time).boottime;
                procview::rewrite_pid_stat_starttime(&host, off).map_err(|_| Errno::EIO)
            }
            Key::Offsets(pid, start) => {
                match pio::stat_start_and_state(self.procfs(), &pid.to_string()) {
                    Ok((s, state)) if s == *start => {
                        if state == b'Z' || state == b'X' {
                            // D4: a zombie has no nsproxy: the read returns nothing.
                            return Ok(Vec::new());
                        }
                    }
                    _ => return Err(Errno::ESRCH),
                }
                let tfc = self.daemon.other_task_ns(&self.sb, *pid).tfc;
                Ok(procview::render_timens_offsets(&self.daemon.offsets(tfc)).into_bytes())
            }
            Key::NsFile(_) => Err(Errno::EINVAL),
            _ => Err(Errno::EINVAL),
        }
    }

    fn open_virtual(&self, req: &Request, key: Key, flags: OpenFlags) -> Res<OpenFile> {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let mut cap_sys_time = false;
        if let Key::Offsets(pid, start) = &key {
            // Reached through a `/proc/PID` entry the kernel still caches for an exited process
            // (its invalidation is on its way), maybe one whose pid is reused: ESTALE makes the
            // kernel walk the path again and find the new process, or none (see
            // `open_pid_stat`).
            match pio::stat_start_and_state(self.procfs(), &pid.to_string()) {
                Ok((s, _)) if s == *start => {}
                _ => return Err(Errno::ESTALE),
            }
        }
        match &key {
            Key::Offsets(pid, _) if write => {
                // F1: procfs judges the open itself (owner, mode 0644, non-dumpable owner).
                let c = self.caller_creds(req).map_err(|e| errno_of(&e))?;
                let real = format!("{pid}/timens_offsets");
                let r = {
                    let _g = creds::assume(&c).map_err(|e| errno_of(&e))?;
                    pio::open_at(self.procfs(), &real, libc::O_WRONLY)
                };
                match r {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        // Kernel without CONFIG_TIME_NS: apply the file's owner and mode here.
                        let st = pio::stat_at(self.procfs(), &pid.to_string(), false)
                            .map_err(|e| errno_of(&e))?;
                        if c.fsuid() != st.st_uid && !c.has_cap(1) {
                            return Err(Errno::EACCES);
                        }
                    }
                    Err(e) => return Err(errno_of(&e)),
                }
                cap_sys_time = c.has_cap(CAP_SYS_TIME);
            }
            Key::Offsets(..) | Key::Uptime(_) | Key::Stat | Key::PidStat(_) | Key::NsFile(_) => {
                if write {
                    return Err(Errno::EACCES);
                }
            }
            _ => return Err(Errno::EINVAL),
        }
        Ok(OpenFile {
            key,
            snapshot: None,
            phantom: 0,
            cap_sys_time,
            cached: false,
            rendered_at: None,
        })
    }

    fn write_offsets(
        &self,
        pid: u32,
        start: u64,
        pos: u64,
        data: &[u8],
        cap: bool,
    ) -> Result<usize, i32> {
        // Membership first: a child forked just before this write has entered the namespace.
        self.sync_events();
        let tfc = self.daemon.other_task_ns(&self.sb, pid).tfc;
        let alive = matches!(pio::stat_start_and_state(self.procfs(), &pid.to_string()),
            Ok((s, st)) if s == start && st != b'Z' && st != b'X');
        let mut now = |c: procview::Clock| match c {
            procview::Clock::Monotonic => pio::clock_now(libc::CLOCK_MONOTONIC),
            procview::Clock::Boottime => pio::clock_now(libc::CLOCK_BOOTTIME),
        };
        let mut count = 0;
        let mut decide = |offsets, frozen| {
            let target = alive.then_some(timens::write::WriteTarget { offsets, frozen });
            timens::write::decide_write(pos, data, target.as_ref(), cap, &mut now).map(
                |(offsets, n)| {
                    count = n;
                    offsets
                },
            )
        };
        let decided = match tfc {
            // The frozen check and the update in one step (see `Store::update`).
            NsRef::Slot(s) => self.daemon.store.update(s, decide),
            // The initial namespace: always frozen (C2), never written.
            NsRef::Init => Some(
                decide(procview::Offsets::ZERO, true).and(Err(timens::write::WriteError::Acces)),
            ),
        };
        match decided {
            Some(Ok(_)) => Ok(count),
            Some(Err(e)) => Err(e.errno()),
            // Released meanwhile: the namespace's last task is gone (after the parse, E8.4).
            None => Err(timens::write::decide_write(pos, data, None, cap, &mut now)
                .map_or_else(|e| e.errno(), |_| libc::ESRCH)),
        }
    }
}

impl Filesystem for Overlay {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Link texts are immutable per inode (per-caller and per-text inodes), so the kernel may
        // cache them: `/proc/meminfo` then costs no round trip at all.
        // AUTO_INVAL_DATA: a new mtime in an attribute reply drops the inode's pages (uptime).
        let wanted = InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_AUTO_INVAL_DATA;
        let _ = config.add_capabilities(wanted & config.capabilities());
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _busy = self.sb.readers.enter();
        let Some(pkey) = self.inodes.get(parent.0) else {
            return reply.error(Errno::ENOENT);
        };
        // From the "not mixed" check to the reply (see `Sandbox::mark_mixed`).
        let _mixed = (matches!(pkey, Key::HiddenDir)
            || (matches!(pkey, Key::Pid(_)) && name.as_bytes() == b"stat"))
            .then(|| self.sb.mixed_lock.read().unwrap_or_else(|e| e.into_inner()));
        match self.lookup_key(req, &pkey, name) {
            Ok((key, ttl)) => {
                if matches!(&key, Key::PidLink(_, n) if n.as_bytes() == b"stat") {
                    self.sb
                        .kernel_stat_dirs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(parent.0);
                }
                self.reply_entry(key, ttl, reply)
            }
            Err(Errno::ENOENT) if matches!(pkey, Key::Pid(_)) => {
                // A process directory's names are fixed by the kernel, so a missing one stays
                // missing: the kernel may remember that (`ps` asks every process for `ctty`).
                let none = self.attr(0, FileType::RegularFile, 0, 0, 0, 0);
                reply.entry_with_ttls(&TTL_NONE, &TTL_STABLE, &none, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _busy = self.sb.readers.enter();
        match self.inodes.forget(ino.0, nlookup) {
            Some(Key::PidStat(_)) => {
                self.sb.stat_pages.forget(ino.0);
                if self
                    .stat_fds
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&ino.0)
                    .is_some()
                {
                    self.daemon.give_fd_budget(1);
                }
            }
            Some(Key::Uptime(ns)) => {
                self.uptime
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&ns);
            }
            Some(Key::Pid(_)) => {
                self.sb
                    .kernel_stat_dirs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&ino.0);
            }
            _ => {}
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let _busy = self.sb.readers.enter();
        let Some(key) = self.inodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let (Key::PidStat(_), Some(fh)) = (&key, fh) {
            self.refresh_pid_stat(req, ino, &key, fh.0);
        }
        let ttl = match key {
            Key::Root
            | Key::HiddenDir
            | Key::HiddenStub
            | Key::HiddenStore
            | Key::HiddenSocket
            | Key::StaticDir(_)
            | Key::Stat
            | Key::Uptime(_) => TTL_STATIC,
            _ => TTL_PID,
        };
        self.sized
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ino.0);
        match self.attr_of(ino.0, &key) {
            // For uptime, counted from the content just published.
            Ok(attr) => reply.attr(&self.attr_ttl(&key, ttl), &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _busy = self.sb.readers.enter();
        let Some(key) = self.inodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        // procfs ignores truncation of its files (`echo x > timens_offsets` opens with O_TRUNC)
        // and refuses mode and owner changes.
        if mode.is_some() || uid.is_some() || gid.is_some() {
            return reply.error(Errno::EPERM);
        }
        self.sized
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ino.0);
        match self.attr_of(ino.0, &key) {
            Ok(attr) => reply.attr(&TTL_NONE, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _busy = self.sb.readers.enter();
        let Some(key) = self.inodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        match self.link_text(req, &key) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _busy = self.sb.readers.enter();
        let Some(key) = self.inodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let uptime = match key {
            Key::Uptime(ns) if flags.acc_mode() == OpenAccMode::O_RDONLY => {
                match self.open_uptime(req, ino, ns) {
                    Ok(direct) => Some(direct),
                    Err(e) => return reply.error(e),
                }
            }
            _ => None,
        };
        match self.open_virtual(req, key, flags) {
            Ok(mut f) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                let open_flags = match uptime {
                    Some(Some(direct)) => direct,
                    Some(None) => {
                        f.cached = true;
                        FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH
                    }
                    None => match self.open_pid_stat(req, ino, &f.key, fh) {
                        Err(e) => return reply.error(e),
                        Ok(Some(content)) => {
                            f.cached = true;
                            f.snapshot = Some(content);
                            f.rendered_at = Some(std::time::Instant::now());
                            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH
                        }
                        Ok(None) => {
                            self.allow_splice(ino);
                            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH
                        }
                    },
                };
                self.files
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(fh, f);
                reply.opened(FileHandle(fh), open_flags);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _busy = self.sb.readers.enter();
        if lock_owner.is_none() {
            // Direct I/O reads carry the reader's lock owner; a read without one comes from the
            // page cache (splice/sendfile), whose short read shrinks the kernel's size.
            self.sized
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ino.0);
        }
        let (key, phantom, snapshot, cached) = {
            let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            let Some(f) = files.get(&fh.0) else {
                return reply.error(Errno::EBADF);
            };
            (f.key.clone(), f.phantom, f.snapshot.clone(), f.cached)
        };
        if let (true, Key::PidStat(_)) = (cached, &key) {
            // A page read of a page-cached `PID/stat`: its content, whose length i_size is.
            return reply.data(window(&snapshot.unwrap_or_default(), offset, size));
        }
        if let (true, Key::Uptime(ns)) = (cached, &key) {
            // A page read: the published content, which the size the kernel has matches.
            let m = self.uptime.lock().unwrap_or_else(|e| e.into_inner());
            let bytes = m.get(ns).map(|p| p.bytes.as_slice()).unwrap_or_default();
            return reply.data(window(bytes, offset, size));
        }
        let pos = if offset >= phantom {
            offset - phantom
        } else {
            offset
        };
        let content = if pos == 0 || snapshot.is_none() {
            match self.render(req, ino.0, &key) {
                Ok(c) => {
                    if let Some(f) = self
                        .files
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_mut(&fh.0)
                    {
                        f.snapshot = Some(c.clone());
                    }
                    c
                }
                Err(e) => return reply.error(e),
            }
        } else {
            snapshot.unwrap_or_default()
        };
        reply.data(window(&content, pos, size));
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _busy = self.sb.readers.enter();
        let (key, phantom, cap) = {
            let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            let Some(f) = files.get(&fh.0) else {
                return reply.error(Errno::EBADF);
            };
            (f.key.clone(), f.phantom, f.cap_sys_time)
        };
        let Key::Offsets(pid, start) = key else {
            return reply.error(Errno::EINVAL);
        };
        let append = flags.0 & libc::O_APPEND != 0;
        let pos = procpos::write_position(offset, phantom, append);
        match self.write_offsets(pid, start, pos, data, cap) {
            Ok(n) => {
                if let Some(f) = self
                    .files
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&fh.0)
                {
                    f.phantom = procpos::phantom_after_write(offset, pos, n as u64);
                }
                reply.written(n as u32)
            }
            Err(errno) => reply.error(Errno::from_i32(errno)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _busy = self.sb.readers.enter();
        let f = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        if let Some(OpenFile {
            key: Key::PidStat(_),
            ..
        }) = f
        {
            self.sb.stat_pages.release(ino.0, fh.0);
        }
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _busy = self.sb.readers.enter();
        let Some(key) = self.inodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        // Permission to list is checked here like procfs does at open (fd/ is 0500, ns/ 0511).
        if let Key::FdDir(p) | Key::NsDir(p) = &key {
            let sub = if matches!(key, Key::FdDir(_)) {
                "fd"
            } else {
                "ns"
            };
            if let Err(e) = self.as_caller(req, || {
                pio::open_at(
                    self.procfs(),
                    &format!("{}/{sub}", p.base()),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                )
            }) {
                return reply.error(errno_of(&e));
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _busy = self.sb.readers.enter();
        let Some(key) = self.inodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let entries = if offset == 0 {
            match self.list(req, &key) {
                Ok(l) => {
                    self.dirs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(fh.0, DirList::Entries(l.clone()));
                    l
                }
                Err(e) => return reply.error(e),
            }
        } else {
            match self
                .dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&fh.0)
            {
                Some(DirList::Entries(l)) => l.clone(),
                None => Vec::new(),
            }
        };
        let mut idx = offset as usize;
        if offset == 0 {
            if reply.add(INodeNo(ino.0), 1, FileType::Directory, ".") {
                return reply.ok();
            }
            idx = 1;
        }
        if idx == 1 {
            if reply.add(INodeNo(ROOT_INO), 2, FileType::Directory, "..") {
                return reply.ok();
            }
            idx = 2;
        }
        for (i, (eino, kind, name)) in entries.iter().enumerate().skip(idx - 2) {
            if reply.add(INodeNo(*eino), (i + 3) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        let _busy = self.sb.readers.enter();
        // procfs files carry no extended attributes.
        reply.error(Errno::ENODATA);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        let _busy = self.sb.readers.enter();
        // procfs files answer terminal and other ioctls with ENOTTY.
        reply.error(Errno::ENOTTY);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        let _busy = self.sb.readers.enter();
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _busy = self.sb.readers.enter();
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        reply.ok();
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let kept = self
            .stat_fds
            .get_mut()
            .map(|m| m.len())
            .unwrap_or_else(|e| e.get_ref().len());
        self.daemon
            .give_fd_budget(kept + usize::from(self.user_ns_link.holds()));
    }
}
