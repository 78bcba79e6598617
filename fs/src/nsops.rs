//! The time-namespace system calls, emulated for the clock library: unshare(CLONE_NEWTIME),
//! setns() on a time namespace, clone3(CLONE_NEWTIME) (spec §A, §B).
//!
//! Every decision is made from the caller's real credentials (SO_PEERCRED and its /proc entry),
//! in the kernel's order of checks.
//!
//! Which namespace a request acts on is never taken from a number the client sends, where the
//! kernel would need more than a number. Audit of the control requests that name a namespace:
//! - `setns`: the kernel needs an fd of the target's `ns/time` (B5), which a `--pid` sandbox
//!   cannot open for another sandbox's namespace. The target is derived from the fd sent with
//!   the request ([`ns_of_fd`]): a file of one of this daemon's own overlays (by `st_dev`,
//!   recorded at sandbox creation from the overlay's root, and checked while its connection is
//!   alive), of a namespace that overlay could have served. No fd: EBADF.
//! - `place_child {pid, inum}`: `inum` must be a namespace this same caller (host pid from
//!   SO_PEERCRED, and its start time, so a reused pid is not the caller) made with
//!   `new_child_ns` less than 10 s ago and that no child took yet; `pid` must be the caller's
//!   own child per the kernel's `/proc/PID/task/*/children`. Both are kernel facts.
//! - `release {inum}` (control.rs): root only (SO_PEERCRED uid 0), and refused while a live
//!   sandbox is served by it. Root inside a sandbox is root for this check: like the kernel's
//!   namespaces, timensfs does not protect a sandbox from a process that has root on the host.
//! - `create_sandbox {attach_inum}` (control.rs): root with CAP_SYS_ADMIN (from the caller's
//!   /proc status), and the namespace must have been made for the caller's own mount namespace
//!   (`ns/mnt` read through the daemon's host procfs) and not be served already.
//! - `unshare`, `new_child_ns`, `who_am_i`: act on the caller's own namespaces as tracked.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use timens::store::SlotMeta;
use timens_proto::{NsSlot, Response, INIT_SLOT_INDEX};

use crate::pio;
use crate::state::{nspids, Daemon, NsRef, Sandbox, TaskNs};

pub const CAP_SYS_ADMIN: u32 = 21;

/// Whether a namespace was made by the clock library's unshare/clone3 (its lifetime follows its
/// references, not a sandbox's).
pub fn made_by_a_syscall(label: &str) -> bool {
    label.starts_with("unshare:") || label.starts_with("clone3:")
}

/// Namespaces made by clone3 for a child not placed yet: inum -> (creator's host pid, its start
/// time, when).
pub type Pending = dashmap::DashMap<u32, (u32, u64, Instant)>;

fn err(errno: i32, message: &str) -> Response {
    Response::Error {
        errno,
        message: message.to_string(),
    }
}

pub fn slot_of(ns: NsRef) -> NsSlot {
    match ns {
        NsRef::Init => NsSlot {
            inum: timens::INIT_TIME_INUM,
            index: INIT_SLOT_INDEX,
            generation: 0,
        },
        NsRef::Slot(s) => NsSlot {
            inum: s.inum(),
            index: s.index,
            generation: s.generation,
        },
    }
}

fn reply(ns: TaskNs) -> Response {
    Response::Ns {
        time: slot_of(ns.time),
        tfc: slot_of(ns.tfc),
    }
}

/// The sandbox a host process belongs to: its mount namespace, or an ancestor's, is the
/// sandbox's. Returns the sandbox and the process's pid in the sandbox's pid namespace.
pub fn sandbox_of(daemon: &Daemon, host_pid: u32) -> Option<(Arc<Sandbox>, u32)> {
    let mnt = ancestor_mntns(daemon, host_pid, |m| {
        daemon.sandboxes.iter().any(|s| s.mntns == m)
    })?;
    let sb = daemon
        .sandboxes
        .iter()
        .find(|s| s.mntns == mnt)
        .map(|s| s.clone())?;
    let ids = nspids(daemon.host_proc(), host_pid).ok()?;
    let nspid = *ids.get(sb.pidns_level)?;
    Some((sb, nspid))
}

/// The mount namespace of `host_pid`, or of its nearest ancestor, that `wanted` accepts (a
/// process of a sandbox lives in the sandbox's mount namespace or below it: nested `unshare -m`);
/// None once the walk reaches the host's init or a process that is gone.
pub fn ancestor_mntns(daemon: &Daemon, host_pid: u32, wanted: impl Fn(u64) -> bool) -> Option<u64> {
    let proc = daemon.host_proc();
    let mut pid = host_pid;
    for _ in 0..64 {
        if pid <= 1 {
            return None;
        }
        let mnt = pio::stat_at(proc, &format!("{pid}/ns/mnt"), true)
            .ok()?
            .st_ino;
        if wanted(mnt) {
            return Some(mnt);
        }
        pid = pio::read_at(proc, &format!("{pid}/stat"))
            .ok()
            .and_then(|t| pio::parse_ppid(&t))?;
    }
    None
}

/// A namespace by its inode number, if it is live.
pub fn ns_by_inum(daemon: &Daemon, inum: u32) -> Option<NsRef> {
    if inum == timens::INIT_TIME_INUM {
        return Some(NsRef::Init);
    }
    let index = inum.checked_sub(timens::INUM_BASE)?;
    daemon
        .store
        .live()
        .into_iter()
        .find(|s| s.slot.index == index && s.inum == inum)
        .map(|s| NsRef::Slot(s.slot))
}

fn has_cap(daemon: &Daemon, pid: u32, cap: u32) -> bool {
    timens_sys::creds::read_creds(daemon.host_proc(), pid, daemon.own_user_ns)
        .map(|c| c.has_cap(cap))
        .unwrap_or(false)
}

fn threads(daemon: &Daemon, pid: u32) -> u32 {
    let text = pio::read_at(daemon.host_proc(), &format!("{pid}/status")).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| {
            l.strip_prefix("Threads:")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(1)
}

fn new_namespace(
    daemon: &Daemon,
    sb: &Sandbox,
    peer: u32,
    from: NsRef,
    frozen: bool,
    kind: &str,
) -> Result<NsRef, Response> {
    let (starttime, _) = pio::stat_start_and_state(daemon.host_proc(), &peer.to_string())
        .map_err(|_| err(libc::ESRCH, "the caller is gone"))?;
    let meta = SlotMeta {
        anchor_pid: peer,
        anchor_starttime: starttime,
        mntns_inum: sb.mntns,
        created_unix: crate::state::unix_now(),
        label: format!("{kind}:{}", sb.label),
    };
    let slot = daemon
        .create_namespace(daemon.offsets(from), frozen, meta)
        .map_err(|e| {
            err(
                e.raw_os_error().unwrap_or(libc::ENOSPC),
                "no namespace slot left",
            )
        })?;
    Ok(NsRef::Slot(slot))
}

/// Handles one of the clock library's requests from host process `peer`, with the fds that came
/// with it (only `setns` uses one; the others' are closed).
pub fn handle(
    daemon: &Arc<Daemon>,
    pending: &Pending,
    peer: u32,
    req: timens_proto::Request,
    fds: Vec<OwnedFd>,
) -> Response {
    use timens_proto::Request::*;
    let _ = fds;
    daemon.sync_events();
    let Some((sb, nspid)) = sandbox_of(daemon, peer) else {
        return err(libc::EINVAL, "the caller is not in a timensfs sandbox");
    };
    let current = daemon
        .tasks
        .get(&peer)
        .map(|r| r.ns)
        .unwrap_or_else(|| sb.default_ns());
    match req {
        WhoAmI => reply(current),
        Unshare => {
            // A2: CAP_SYS_ADMIN, else EPERM.
            if !has_cap(daemon, peer, CAP_SYS_ADMIN) {
                return err(libc::EPERM, "unshare(CLONE_NEWTIME) needs CAP_SYS_ADMIN");
            }
            // A4: offsets copied from the caller's time_for_children; A1: only that changes.
            let new = match new_namespace(daemon, &sb, peer, current.tfc, false, "unshare") {
                Ok(n) => n,
                Err(r) => return r,
            };
            let ns = TaskNs {
                time: current.time,
                tfc: new,
            };
            // The reply waits until the kernel forgot what it cached for the sandbox's
            // single namespace (this thread holds nothing a FUSE request needs).
            daemon.track(&sb, peer, nspid, ns).wait();
            reply(ns)
        }
        Setns => {
            // B6, in the kernel's order: the fd (EBADF, then EINVAL for a file that is not a
            // namespace's), then EUSERS (another thread), then EPERM.
            let target = match ns_of_fd(daemon, fds) {
                Ok(ns) => ns,
                Err(r) => return r,
            };
            if threads(daemon, peer) > 1 {
                return err(
                    libc::EUSERS,
                    "setns into a time namespace needs a single-threaded caller",
                );
            }
            if !has_cap(daemon, peer, CAP_SYS_ADMIN) {
                return err(libc::EPERM, "setns needs CAP_SYS_ADMIN");
            }
            // B5: both time and time_for_children, and the first entry freezes (B2).
            daemon.enter(target);
            // Another sandbox's namespace: the caller's clock library reads it in its own view.
            if let NsRef::Slot(slot) = target {
                daemon.store.include_in_view(sb.mntns, slot);
            }
            let ns = TaskNs {
                time: target,
                tfc: target,
            };
            daemon.track(&sb, peer, nspid, ns).wait();
            reply(ns)
        }
        NewChildNs => {
            if !has_cap(daemon, peer, CAP_SYS_ADMIN) {
                return err(libc::EPERM, "clone3(CLONE_NEWTIME) needs CAP_SYS_ADMIN");
            }
            let Ok((starttime, _)) =
                pio::stat_start_and_state(daemon.host_proc(), &peer.to_string())
            else {
                return err(libc::ESRCH, "the caller is gone");
            };
            // A11: copied from the parent's time_for_children, entered at once: frozen.
            let new = match new_namespace(daemon, &sb, peer, current.tfc, true, "clone3") {
                Ok(n) => n,
                Err(r) => return r,
            };
            pending.insert(new.inum(), (peer, starttime, Instant::now()));
            reply(TaskNs {
                time: new,
                tfc: new,
            })
        }
        PlaceChild { pid, inum } => {
            // The caller's start time too: a process that got a dead creator's pid is not it.
            let starttime = pio::stat_start_and_state(daemon.host_proc(), &peer.to_string())
                .map(|(t, _)| t)
                .ok();
            let Some((_, (creator, _, _))) =
                pending.remove_if(&inum, |_, (c, t, _)| *c == peer && Some(*t) == starttime)
            else {
                return err(
                    libc::EINVAL,
                    "no namespace of this caller is waiting for a child",
                );
            };
            // `pid` is what clone3 returned to the caller: its own pid namespace's numbering.
            // Find the caller's child with that id (host pid) among its children.
            let caller_level = nspids(daemon.host_proc(), creator)
                .map(|v| v.len().saturating_sub(1))
                .unwrap_or(0);
            let Some(host_child) = host_child_of(daemon, creator, pid, caller_level) else {
                return err(libc::ESRCH, "that process is not the caller's child");
            };
            let Some(ns) = ns_by_inum(daemon, inum) else {
                return err(libc::EINVAL, "the namespace is gone");
            };
            let child_nspid = nspids(daemon.host_proc(), host_child)
                .ok()
                .and_then(|ids| ids.get(sb.pidns_level).copied())
                .unwrap_or(pid);
            let pid = host_child;
            daemon
                .track(&sb, pid, child_nspid, TaskNs { time: ns, tfc: ns })
                .wait();
            reply(TaskNs { time: ns, tfc: ns })
        }
        other => err(libc::EINVAL, &format!("unexpected request {other:?}")),
    }
}

/// `FUSE_SUPER_MAGIC`, `f_type` of every FUSE file system.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
/// The FUSE root's node id, and so its `st_ino` before the file system says otherwise.
const FUSE_ROOT_INO: u64 = 1;

/// Whether `ino` is a time namespace's inode number (the initial one, or one of ours: G2).
fn is_time_inum(ino: u64) -> bool {
    ino == u64::from(timens::INIT_TIME_INUM)
        || (u64::from(timens::INUM_BASE)..=u64::from(u32::MAX)).contains(&ino)
}

/// The device number of the overlay the creator of a sandbox (host pid `creator`, root with
/// CAP_SYS_ADMIN) mounted, from `root`, an fd of the mount's root it opened after mounting.
/// Checked against the kernel's view of that mount in the creator's `mountinfo` (read through
/// the daemon's host procfs): a FUSE file system's root, whose device is the fd's. Nothing here
/// asks the file system (its session is not running yet): `AT_STATX_DONT_SYNC`, no statfs.
pub fn overlay_device(daemon: &Daemon, creator: u32, root: &OwnedFd) -> Result<u64, String> {
    let st = pio::cached_stat(root.as_fd()).map_err(|e| format!("stat of the overlay: {e}"))?;
    if st.mode & libc::S_IFMT != libc::S_IFDIR || st.ino != FUSE_ROOT_INO {
        return Err("the overlay fd is not the root of a FUSE mount".into());
    }
    let mnt_id = st
        .mnt_id
        .ok_or("the kernel gives no mount id (statx STATX_MNT_ID, Linux 5.8)")?;
    let info = pio::read_at(daemon.host_proc(), &format!("{creator}/mountinfo"))
        .map_err(|e| format!("mountinfo of process {creator}: {e}"))?;
    let info = String::from_utf8_lossy(&info);
    match pio::mountinfo_dev_fstype(&info, mnt_id) {
        Some((dev, fstype))
            if dev == st.dev && (fstype == "fuse" || fstype.starts_with("fuse.")) =>
        {
            Ok(dev)
        }
        Some((_, fstype)) => Err(format!("the overlay fd is on a {fstype} mount, not FUSE")),
        None => Err(format!(
            "the overlay fd's mount {mnt_id} is not in process {creator}'s mount namespace"
        )),
    }
}

/// The namespace a client's fd names, found as the kernel's setns finds it: from the file
/// alone (B5, B6). The fd must be one of this daemon's overlays' `time:[N]` files (what
/// `/proc/PID/ns/time{,_for_children}` leads to; `Key::NsFile` in the overlay, a regular file
/// whose inode number is the namespace's): `st_dev` one an overlay was recorded with at its
/// sandbox's creation, while that overlay's connection is alive (two live superblocks never
/// share a device number, so a live connection at this point means the fd's superblock is that
/// overlay's; checked after the stat, a device number freed and reused by another mount in
/// between is caught), `statfs` FUSE, and a live namespace that overlay could have served
/// (one made for its sandbox, the initial one, or one a task of that sandbox is in), so a file
/// kept open across the release of its namespace does not name the one that reuses its number.
///
/// EBADF without an fd (a raw client that names an inum: the kernel's answer for an fd the
/// caller does not have); EINVAL for more than one, and for any other file (a FUSE file of another file system, a
/// regular file), as the kernel answers for a file that is neither nsfs nor a pidfd.
pub fn ns_of_fd(daemon: &Daemon, fds: Vec<OwnedFd>) -> Result<NsRef, Response> {
    let fd = match <[OwnedFd; 1]>::try_from(fds) {
        Ok([fd]) => fd,
        Err(fds) if fds.is_empty() => {
            return Err(err(libc::EBADF, "setns needs the namespace file's fd"))
        }
        Err(_) => return Err(err(libc::EINVAL, "setns takes one fd")),
    };
    let not_ns = || err(libc::EINVAL, "not a time namespace file of this daemon");
    // Nothing that could reach another file system's server before the device is ours.
    let st = pio::cached_stat(fd.as_fd()).map_err(|_| not_ns())?;
    let Some(sb) = daemon
        .sandboxes
        .iter()
        .find(|s| s.overlay_dev != 0 && s.overlay_dev == st.dev)
        .map(|s| s.clone())
    else {
        return Err(not_ns());
    };
    if st.mode & libc::S_IFMT != libc::S_IFREG || !is_time_inum(st.ino) {
        return Err(not_ns());
    }
    if !sb.readers.connected() {
        return Err(not_ns());
    }
    if pio::fs_magic(fd.as_fd()).ok() != Some(FUSE_SUPER_MAGIC) {
        return Err(not_ns());
    }
    let inum = st.ino as u32;
    if inum == timens::INIT_TIME_INUM {
        return Ok(NsRef::Init);
    }
    let snap = daemon
        .store
        .live()
        .into_iter()
        .find(|s| s.inum == inum)
        .ok_or_else(not_ns)?;
    let ns = NsRef::Slot(snap.slot);
    let servable = snap.meta.mntns_inum == sb.mntns
        || sb.ns == snap.slot
        || daemon
            .tasks
            .iter()
            .any(|t| t.sandbox == sb.id && (t.ns.time == ns || t.ns.tfc == ns));
    if !servable {
        return Err(not_ns());
    }
    Ok(ns)
}

/// The host pid of `parent`'s child whose id at pid-namespace level `level` is `nspid`.
fn host_child_of(daemon: &Daemon, parent: u32, nspid: u32, level: usize) -> Option<u32> {
    let proc = daemon.host_proc();
    let tasks = pio::list_at(proc, &format!("{parent}/task")).ok()?;
    for (tid, _) in tasks {
        let tid = String::from_utf8_lossy(&tid).into_owned();
        let children =
            pio::read_at(proc, &format!("{parent}/task/{tid}/children")).unwrap_or_default();
        for child in String::from_utf8_lossy(&children).split_whitespace() {
            let Ok(host) = child.parse::<u32>() else {
                continue;
            };
            if nspids(proc, host)
                .ok()
                .and_then(|ids| ids.get(level).copied())
                == Some(nspid)
            {
                return Some(host);
            }
        }
    }
    None
}

/// Releases namespaces made by unshare/clone3 that nothing uses any more: no tracked task has
/// them as time or time_for_children, no sandbox has them as its own, no child waits for them,
/// and the process that made them is gone (A7: the kernel frees them with their last reference).
pub fn collect_garbage(daemon: &Daemon, pending: &Pending) {
    pending.retain(|_, (_, _, when)| when.elapsed() < Duration::from_secs(10));
    // Taken before the store's lock (`live`), which is never held around the maps' locks.
    let used: std::collections::HashSet<NsRef> = daemon
        .tasks
        .iter()
        .flat_map(|r| [r.ns.time, r.ns.tfc])
        .chain(daemon.sandboxes.iter().map(|s| NsRef::Slot(s.ns)))
        .collect();
    let now = crate::state::unix_now();
    for snap in daemon.store.live() {
        if !made_by_a_syscall(&snap.meta.label)
            || used.contains(&NsRef::Slot(snap.slot))
            || pending.contains_key(&snap.inum)
        {
            continue;
        }
        // This daemon knows every member of a namespace made since it started (its tracked
        // tasks), so one nobody is in is gone (A7), unless it is so young that its maker's
        // record may still be on its way. One made before this daemon started may have members
        // it never learned of: it waits for the process that made it.
        let ours = snap.meta.created_unix >= daemon.started_unix;
        let young = now.saturating_sub(snap.meta.created_unix) < 2;
        let unused = if ours {
            !young
        } else {
            !daemon.anchor_alive(&snap.meta)
        };
        if unused {
            daemon.store.release(snap.slot);
        }
    }
}
