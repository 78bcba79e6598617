//! The daemon's truth: namespaces (in the shared store), sandboxes, and which task is in which
//! namespace (spec §A–C, DESIGN "Who is in which namespace").
//!
//! Only tasks whose namespaces differ from their sandbox's default are recorded ("tracked"); every
//! other task of a sandbox is in the sandbox's namespace for both `time` and `time_for_children`.
//! This keeps the table small and makes a lost process event harmless for the common case.

use dashmap::DashMap;
use procview::{Offsets, Timespec};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use timens::store::{SlotMeta, SlotRef, Store};
use timens_sys::procconn::{ProcConnector, ProcEvent};

use crate::notify::{Entry, NoWait, Ticket};
use crate::pio;

/// A time namespace: the initial one, or an emulated one living in a store slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NsRef {
    Init,
    Slot(SlotRef),
}

impl NsRef {
    pub fn inum(self) -> u32 {
        match self {
            NsRef::Init => timens::INIT_TIME_INUM,
            NsRef::Slot(s) => s.inum(),
        }
    }
}

/// Namespaces of one task: the one it reads clocks in and the one its children get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskNs {
    pub time: NsRef,
    pub tfc: NsRef,
}

#[derive(Clone, Debug)]
pub struct TaskRec {
    pub sandbox: u64,
    /// The task's id in its sandbox's pid namespace.
    pub nspid: u32,
    pub starttime: u64,
    pub ns: TaskNs,
    /// Exec events to ignore: `timens run --for-children` registers CMD's namespaces before it
    /// execs CMD, and that exec must not enter the pending namespace (the pre-6.2 man-page flow).
    pub skip_execs: u32,
}

pub struct Sandbox {
    pub id: u64,
    pub ns: SlotRef,
    pub label: String,
    /// Root of the sandbox's own procfs (its pid namespace's numbering).
    pub procfs: OwnedFd,
    /// Depth of the sandbox's pid namespace below the host's (0: same pid namespace).
    pub pidns_level: usize,
    /// The sandbox's mount namespace (its members live in it, or below it).
    pub mntns: u64,
    /// `st_dev` of the overlay this sandbox's session serves (0: not known). An fd on a device
    /// listed here is a file of one of the daemon's own overlays (see `nsops::ns_of_fd`).
    pub overlay_dev: u64,
    /// The sandbox's own /proc/uptime and /proc/stat, kept open (read with pread).
    pub host_uptime: std::sync::OnceLock<Option<OwnedFd>>,
    pub host_stat: std::sync::OnceLock<Option<OwnedFd>>,
    /// Serve `PID/fd` as a link into the real procfs (OCI containers), not as a directory.
    pub fd_as_link: bool,
    /// `self` and `thread-self` have the sandbox procfs's own links bound over them (see
    /// `Request::CreateSandbox::self_bound`).
    pub self_bound: bool,
    /// Sandbox tid -> sandbox tgid of recent callers (`/proc/self`), dropped at their exit.
    pub tgid_cache: DashMap<u32, u32>,
    /// Sandbox tid -> host tid of tracked tasks.
    pub by_nspid: DashMap<u32, u32>,
    /// The session's notification channel (see `notify`: only entry invalidations posted to
    /// the daemon's notifier thread, and the two kinds a handler may send itself).
    pub outbox: crate::notify::Outbox,
    pub alive: AtomicBool,
    /// Set for good once a member may be outside the sandbox's own namespaces (a task was
    /// tracked). Until then every member's `/proc/.timens/time` and `time_for_children` name
    /// the sandbox's namespace, and the overlay lets the kernel cache those entries: the clock
    /// library reads `/proc/.timens/time` at every exec, and this makes it free of round trips.
    pub mixed: AtomicBool,
    /// Orders [`Sandbox::mark_mixed`] after every lookup that answered "not mixed" (held shared
    /// from the check to the reply), so its invalidation reaches every such entry.
    pub mixed_lock: std::sync::RwLock<()>,
    /// Process directories (inodes) whose `stat` was answered as a link to the kernel's own file
    /// (see `Overlay::stat_is_kernels`): [`Sandbox::mark_mixed`] makes the kernel forget them.
    pub kernel_stat_dirs: Mutex<std::collections::HashSet<u64>>,
    /// Page-cached `PID/stat` inodes of the overlay (see `statpage`).
    pub stat_pages: crate::statpage::StatPages,
    /// Which of the FUSE session's threads read requests (see `readers`).
    pub readers: crate::readers::Readers,
}

impl Sandbox {
    pub fn default_ns(&self) -> TaskNs {
        TaskNs {
            time: NsRef::Slot(self.ns),
            tfc: NsRef::Slot(self.ns),
        }
    }

    pub fn procfs(&self) -> BorrowedFd<'_> {
        self.procfs.as_fd()
    }

    /// Records that a member may be outside the sandbox's namespaces, and posts the
    /// invalidations that make the kernel forget the entries it may have cached while that was
    /// not so (`/proc/.timens/time*`, and `PID/stat` links to the kernel's file); from then on
    /// they are looked up per caller. The ticket completes once the kernel has dropped them: a
    /// control request waits for it before its reply (to the unshare or setns that caused it),
    /// so a child cannot read the old entry after it. Process events only ever track children
    /// of tracked tasks, when the flag is already set, so they get a ticket with nothing to do.
    pub fn mark_mixed(&self, notes: &crate::notify::Notes) -> crate::notify::Ticket {
        if self.mixed.load(Ordering::Acquire) {
            return crate::notify::Ticket::done();
        }
        {
            let _w = self.mixed_lock.write().unwrap_or_else(|e| e.into_inner());
            self.mixed.store(true, Ordering::Release);
        }
        let stat_dirs = std::mem::take(
            &mut *self
                .kernel_stat_dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let hidden = crate::overlay::HIDDEN_DIR_INO;
        let entries = [(hidden, "time"), (hidden, "time_for_children")]
            .into_iter()
            .chain(stat_dirs.into_iter().map(|dir| (dir, "stat")))
            .map(|(parent, name)| crate::notify::Entry {
                parent,
                name: name.into(),
            })
            .collect();
        notes.post(&self.outbox, entries)
    }
}

pub struct Daemon {
    pub store: Store,
    pub sandboxes: DashMap<u64, Arc<Sandbox>>,
    /// Host tid -> record, for tracked tasks.
    pub tasks: DashMap<u32, TaskRec>,
    next_sandbox: AtomicU64,
    conn: Option<Mutex<ProcConnector>>,
    /// Serialises event handling with decisions that depend on membership.
    events_lock: Mutex<()>,
    pub own_user_ns: u64,
    /// How many more procfs files the overlays may keep open (a quarter of the fd limit).
    fd_budget: AtomicUsize,
    pub host_proc: OwnedFd,
    /// The daemon's own credentials, to skip switching to a caller's identical ones.
    own_creds: Option<timens_sys::creds::Creds>,
    /// Re-renders page-cached `PID/stat` files kept open (see `statpage`).
    pub refresh: crate::statpage::Refresher,
    /// Entry invalidations waiting for the notifier thread (see `notify`).
    pub notes: crate::notify::Notes,
    /// When this daemon started (seconds since the epoch): namespaces made since then have
    /// every member tracked here.
    pub started_unix: u64,
}

/// Seconds since the epoch, as namespaces' `created_unix` counts them.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Host pid → its ids in every pid namespace from the host's down (`NSpid:`).
pub fn nspids(host_proc: BorrowedFd<'_>, pid: u32) -> io::Result<Vec<u32>> {
    let text = pio::read_at(host_proc, &format!("{pid}/status"))?;
    let text = String::from_utf8_lossy(&text);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("NSpid:") {
            return Ok(rest
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect());
        }
    }
    Ok(vec![pid])
}

impl Daemon {
    pub fn new(
        store: Store,
        conn: Option<ProcConnector>,
        own_user_ns: u64,
        host_proc: OwnedFd,
    ) -> Self {
        Daemon {
            store,
            sandboxes: DashMap::new(),
            tasks: DashMap::new(),
            next_sandbox: AtomicU64::new(1),
            conn: conn.map(Mutex::new),
            events_lock: Mutex::new(()),
            own_user_ns,
            fd_budget: AtomicUsize::new(raise_fd_limit() / 4),
            own_creds: std::fs::read("/proc/thread-self/status")
                .ok()
                .and_then(|t| timens_sys::creds::parse_status(&t)),
            host_proc,
            refresh: Default::default(),
            notes: Default::default(),
            started_unix: unix_now(),
        }
    }

    /// Whether acting as `c` would make the kernel decide exactly as for the daemon: same user
    /// namespace, same filesystem ids and groups, and at least the daemon's capabilities.
    pub fn acts_as(&self, c: &timens_sys::creds::Creds) -> bool {
        let Some(own) = &self.own_creds else {
            return false;
        };
        let sorted = |g: &[u32]| {
            let mut v = g.to_vec();
            v.sort_unstable();
            v
        };
        c.same_user_ns
            && c.fsuid() == own.fsuid()
            && c.fsgid() == own.fsgid()
            && c.cap_eff & own.cap_eff == own.cap_eff
            && sorted(&c.groups) == sorted(&own.groups)
    }

    /// Takes one fd from the budget for files kept open; false when none is left.
    pub fn take_fd_budget(&self) -> bool {
        self.fd_budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    pub fn give_fd_budget(&self, n: usize) {
        self.fd_budget.fetch_add(n, Ordering::Relaxed);
    }

    pub fn host_proc(&self) -> BorrowedFd<'_> {
        self.host_proc.as_fd()
    }

    pub fn offsets(&self, ns: NsRef) -> Offsets {
        match ns {
            NsRef::Init => Offsets::ZERO,
            NsRef::Slot(s) => self
                .store
                .offsets(s)
                .map(|(o, _)| o)
                .unwrap_or(Offsets::ZERO),
        }
    }

    pub fn is_frozen(&self, ns: NsRef) -> bool {
        match ns {
            NsRef::Init => true,
            NsRef::Slot(s) => self.store.offsets(s).map(|(_, f)| f).unwrap_or(true),
        }
    }

    /// Whether the process a namespace's slot names as its anchor (its first process, or the one
    /// that made it) is still that process and not a zombie.
    pub fn anchor_alive(&self, meta: &SlotMeta) -> bool {
        matches!(
            pio::stat_start_and_state(self.host_proc(), &meta.anchor_pid.to_string()),
            Ok((start, state)) if start == meta.anchor_starttime && state != b'Z' && state != b'X'
        )
    }

    /// B2: the first entry into a namespace freezes its offsets forever.
    pub fn enter(&self, ns: NsRef) {
        if let NsRef::Slot(s) = ns {
            self.store.freeze(s);
        }
    }

    pub fn next_sandbox_id(&self) -> u64 {
        self.next_sandbox.fetch_add(1, Ordering::Relaxed)
    }

    /// Namespaces of the task with sandbox tid `nstid` in `sb`, known to be in the sandbox.
    pub fn task_ns(&self, sb: &Sandbox, nstid: u32) -> TaskNs {
        if let Some(host) = sb.by_nspid.get(&nstid) {
            if let Some(rec) = self.tasks.get(&*host) {
                return rec.ns;
            }
        }
        sb.default_ns()
    }

    /// Namespaces of any task visible in the sandbox's procfs. Without a pid namespace the
    /// sandbox sees the host's processes too: those are in the initial namespace, not in the
    /// sandbox's. A task is the sandbox's when it, or an ancestor (nested `unshare -m`), lives
    /// in the sandbox's mount namespace.
    ///
    /// In a mixed sandbox, queued process events are handled first (see `caller_ns`).
    pub fn other_task_ns(&self, sb: &Sandbox, nstid: u32) -> TaskNs {
        if sb.mixed.load(Ordering::Acquire) {
            self.sync_events();
        }
        if sb.by_nspid.contains_key(&nstid) || self.is_member(sb, nstid) {
            return self.task_ns(sb, nstid);
        }
        TaskNs {
            time: NsRef::Init,
            tfc: NsRef::Init,
        }
    }

    fn is_member(&self, sb: &Sandbox, nstid: u32) -> bool {
        let procfs = sb.procfs();
        let mut pid = nstid;
        for _ in 0..64 {
            if pid == 0 {
                return false;
            }
            match pio::stat_at(procfs, &format!("{pid}/ns/mnt"), true) {
                Ok(st) if st.st_ino == sb.mntns => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
            match pio::read_at(procfs, &format!("{pid}/stat"))
                .ok()
                .and_then(|t| pio::parse_ppid(&t))
            {
                Some(ppid) => pid = ppid,
                None => return false,
            }
        }
        false
    }

    /// Namespaces of a requesting task. A request from an untracked task proves that the
    /// sandbox's namespace has a member, so it is entered (and frozen) if it was still pending.
    ///
    /// In a mixed sandbox a fork or exec that already happened may still be queued and change
    /// the answer (B1: the child of a task with another time_for_children; B4: the exec of a task
    /// that unshared, as `unshare -T CMD` does): the queued events are handled first. Elsewhere
    /// no event can change anyone's namespace, so the answer needs no event.
    pub fn caller_ns(&self, sb: &Sandbox, nstid: u32) -> TaskNs {
        let ns = self.task_ns(sb, nstid);
        let pending_default = ns == sb.default_ns() && !self.is_frozen(ns.time);
        if !pending_default && !sb.mixed.load(Ordering::Acquire) {
            return ns;
        }
        self.sync_events();
        let ns = self.task_ns(sb, nstid);
        if ns == sb.default_ns() && !self.is_frozen(ns.time) {
            self.enter(ns.time);
        }
        ns
    }

    /// Record a task whose namespaces differ from its sandbox's default. The ticket is the first
    /// such task's invalidations (see [`Sandbox::mark_mixed`]): a control request waits for it
    /// before it answers; the events path drops it.
    pub fn track(&self, sb: &Sandbox, host_tid: u32, nspid: u32, ns: TaskNs) -> Ticket {
        self.track_with(sb, host_tid, nspid, ns, 0)
    }

    pub fn track_with(
        &self,
        sb: &Sandbox,
        host_tid: u32,
        nspid: u32,
        ns: TaskNs,
        skip_execs: u32,
    ) -> Ticket {
        let starttime = pio::stat_start_and_state(self.host_proc(), &host_tid.to_string())
            .map(|(s, _)| s)
            .unwrap_or(0);
        if ns == sb.default_ns() {
            self.untrack(host_tid);
            return Ticket::done();
        }
        let ticket = sb.mark_mixed(&self.notes);
        self.tasks.insert(
            host_tid,
            TaskRec {
                sandbox: sb.id,
                nspid,
                starttime,
                ns,
                skip_execs,
            },
        );
        sb.by_nspid.insert(nspid, host_tid);
        ticket
    }

    pub fn untrack(&self, host_tid: u32) {
        if let Some((_, rec)) = self.tasks.remove(&host_tid) {
            if let Some(sb) = self.sandboxes.get(&rec.sandbox) {
                sb.by_nspid.remove_if(&rec.nspid, |_, h| *h == host_tid);
            }
        }
    }

    /// Handles every process event queued now. Called before any decision that depends on
    /// membership (writes to timens_offsets), so a fork that already happened is never missed.
    pub fn sync_events(&self) {
        let Some(conn) = &self.conn else { return };
        let _g = self.events_lock.lock().unwrap_or_else(|e| e.into_inner());
        // FUSE handlers wait for this lock: its holder never waits for a notification.
        let _no_wait = NoWait::enter();
        let mut events = Vec::new();
        {
            let c = conn.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = c.drain(&mut events) {
                tracing::warn!(error = %e, "process events: drain failed");
            }
        }
        for ev in events {
            self.handle_event(ev);
        }
    }

    /// The connector thread: waits for events without holding the lock, then handles them.
    pub fn event_loop(self: &Arc<Self>) {
        let Some(conn) = &self.conn else { return };
        let fd = {
            let c = conn.lock().unwrap_or_else(|e| e.into_inner());
            std::os::fd::AsRawFd::as_raw_fd(&*c)
        };
        loop {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is a valid pollfd array of length 1.
            let r = unsafe { libc::poll(&mut pfd, 1, 1000) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    tracing::error!(error = %e, "process events: poll failed");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                continue;
            }
            self.sync_events();
        }
    }

    fn sandbox_of(&self, rec_sandbox: u64) -> Option<Arc<Sandbox>> {
        self.sandboxes.get(&rec_sandbox).map(|s| s.clone())
    }

    fn handle_event(&self, ev: ProcEvent) {
        match ev {
            ProcEvent::Fork {
                parent_pid,
                child_pid,
                child_tgid,
                ..
            } => {
                let Some(parent) = self.tasks.get(&parent_pid).map(|r| r.clone()) else {
                    return;
                };
                let Some(sb) = self.sandbox_of(parent.sandbox) else {
                    return;
                };
                let child_ns = if child_pid != child_tgid {
                    // B3: a thread keeps its creator's namespaces.
                    parent.ns
                } else {
                    // B1: a child process enters its parent's time_for_children.
                    if parent.ns.time != parent.ns.tfc {
                        self.enter(parent.ns.tfc);
                    }
                    TaskNs {
                        time: parent.ns.tfc,
                        tfc: parent.ns.tfc,
                    }
                };
                if child_ns == sb.default_ns() {
                    return;
                }
                let nspid = match nspids(self.host_proc(), child_pid) {
                    Ok(ids) => ids.get(sb.pidns_level).copied().unwrap_or(child_pid),
                    Err(_) => return, // already gone
                };
                // Not waited for: FUSE handlers wait for this thread (see `notify`).
                let _ = self.track(&sb, child_pid, nspid, child_ns);
            }
            ProcEvent::Exec { pid, tgid } => {
                let key = if self.tasks.contains_key(&pid) {
                    pid
                } else {
                    tgid
                };
                let Some(mut rec) = self.tasks.get(&key).map(|r| r.clone()) else {
                    return;
                };
                if rec.skip_execs > 0 {
                    rec.skip_execs -= 1;
                    self.tasks.insert(key, rec);
                    return;
                }
                // B4: exec moves a task into its time_for_children.
                if rec.ns.time != rec.ns.tfc {
                    self.enter(rec.ns.tfc);
                    rec.ns.time = rec.ns.tfc;
                }
                let Some(sb) = self.sandbox_of(rec.sandbox) else {
                    return;
                };
                if rec.ns == sb.default_ns() {
                    self.untrack(key);
                } else {
                    self.tasks.insert(key, rec);
                }
            }
            ProcEvent::Exit { pid, tgid } => {
                self.untrack(pid);
                self.forget_task(pid, pid == tgid);
            }
            ProcEvent::Overrun => {
                tracing::warn!("process events were lost; resynchronising tracked tasks");
                for sb in self.sandboxes.iter() {
                    sb.tgid_cache.clear();
                }
                self.resync();
            }
        }
    }

    /// Forgets an exited task in every sandbox that could know it: its cached tgid, and for a
    /// process its cached `/proc/PID` entry, so `[ -d /proc/$pid ]` turns false as soon as the
    /// kernel's does.
    fn forget_task(&self, host_pid: u32, leader: bool) {
        let mut ids: Option<Vec<u32>> = None;
        for sb in self.sandboxes.iter() {
            let nspid = if sb.pidns_level == 0 {
                host_pid
            } else {
                if ids.is_none() {
                    ids = Some(nspids(self.host_proc(), host_pid).unwrap_or_default());
                }
                match ids.as_ref().and_then(|v| v.get(sb.pidns_level)) {
                    Some(&p) => p,
                    None => continue,
                }
            };
            sb.tgid_cache.remove(&nspid);
            if leader {
                // Posted, not sent: this runs under the events lock, and the invalidation waits
                // for lookups in the root, whose handlers may wait for that lock.
                let _ = self.notes.post(
                    &sb.outbox,
                    vec![Entry {
                        parent: fuser::INodeNo::ROOT.0,
                        name: nspid.to_string().into(),
                    }],
                );
            }
        }
    }

    /// After lost events: drop records of tasks that are gone (or whose pid was reused).
    pub fn resync(&self) {
        let stale: Vec<u32> = self
            .tasks
            .iter()
            .filter(
                |r| match pio::stat_start_and_state(self.host_proc(), &r.key().to_string()) {
                    Ok((start, _)) => start != r.starttime,
                    Err(_) => true,
                },
            )
            .map(|r| *r.key())
            .collect();
        for tid in stale {
            self.untrack(tid);
        }
    }

    /// Creates a namespace for a new sandbox (A4: its offsets are given explicitly by the
    /// creator, which is what `unshare -T --monotonic`/`--boottime` does right after creating).
    pub fn create_namespace(
        &self,
        offsets: Offsets,
        frozen: bool,
        meta: SlotMeta,
    ) -> io::Result<SlotRef> {
        self.store.alloc(offsets, frozen, meta)
    }

    /// Range check of an offset against the host clock (E9), as the kernel applies it to a write.
    pub fn offset_in_range(clock: procview::Clock, val: Timespec) -> bool {
        let max = timens::write::KTIME_SEC_MAX;
        if val.sec > max || val.sec < -max {
            return false;
        }
        let id = match clock {
            procview::Clock::Monotonic => libc::CLOCK_MONOTONIC,
            procview::Clock::Boottime => libc::CLOCK_BOOTTIME,
        };
        let tp = pio::clock_now(id).add_normalized(val);
        tp.sec >= 0 && tp.sec <= max / 2
    }
}

/// Raises the soft limit on open files to the hard limit and returns the soft limit now in force
/// (the daemon keeps procfs files open for speed, within a quarter of it).
fn raise_fd_limit() -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard as usize
            } else {
                soft as usize
            }
        }
        Err(_) => 1024,
    }
}
