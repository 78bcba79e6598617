//! The time-namespace system calls, emulated for the clock library: unshare(CLONE_NEWTIME),
//! setns() on a time namespace, clone3(CLONE_NEWTIME) (spec §A, §B).
//!
//! Every decision is made from the caller's real credentials (SO_PEERCRED and its /proc entry),
//! in the kernel's order of checks.

use std::os::fd::OwnedFd;
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

/// Namespaces made by clone3 for a child not placed yet: inum -> (creator's host pid, when).
pub type Pending = dashmap::DashMap<u32, (u32, Instant)>;

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
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
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

/// Handles one of the clock library's requests from host process `peer`; `fds` are those the
/// request carried.
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
        Setns { inum } => {
            let Some(target) = ns_by_inum(daemon, inum) else {
                return err(libc::EINVAL, "not a time namespace");
            };
            // B6: EUSERS (another thread) is checked before EPERM.
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
            // A11: copied from the parent's time_for_children, entered at once: frozen.
            let new = match new_namespace(daemon, &sb, peer, current.tfc, true, "clone3") {
                Ok(n) => n,
                Err(r) => return r,
            };
            pending.insert(new.inum(), (peer, Instant::now()));
            reply(TaskNs {
                time: new,
                tfc: new,
            })
        }
        PlaceChild { pid, inum } => {
            let Some((_, (creator, _))) = pending.remove_if(&inum, |_, (c, _)| *c == peer) else {
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
    pending.retain(|_, (_, when)| when.elapsed() < Duration::from_secs(10));
    for snap in daemon.store.live() {
        if !made_by_a_syscall(&snap.meta.label) {
            continue;
        }
        let ns = NsRef::Slot(snap.slot);
        let used = daemon
            .tasks
            .iter()
            .any(|r| r.ns.time == ns || r.ns.tfc == ns)
            || daemon.sandboxes.iter().any(|s| s.ns == snap.slot)
            || pending.contains_key(&snap.inum);
        if used {
            continue;
        }
        if !daemon.anchor_alive(&snap.meta) {
            daemon.store.release(snap.slot);
        }
    }
}
