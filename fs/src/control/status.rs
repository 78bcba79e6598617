//! `timens status`: which namespaces there are, their offsets and members, and which of them a
//! caller may see.

use std::sync::atomic::Ordering;

use timens_proto::{NsStatus, Offset};

use crate::pio;
use crate::state::{Daemon, NsRef};

fn to_offset(t: procview::Timespec) -> Offset {
    Offset {
        sec: t.sec,
        nsec: t.nsec,
    }
}

/// Which namespaces a `status` caller may see: all of them from outside every sandbox (as the
/// host's /proc shows every process's `timens_offsets`), only its own sandbox's from inside one
/// (as in a real time namespace behind a pid namespace, where another sandbox's processes, and so
/// its offsets, cannot be reached). The caller's sandbox is its tracked task's, else the first
/// mount namespace of a sandbox's namespaces found on its way up to the host's init.
pub fn status_scope(daemon: &Daemon, peer_pid: u32) -> Option<u64> {
    if let Some(mntns) = daemon
        .tasks
        .get(&peer_pid)
        .and_then(|rec| daemon.sandboxes.get(&rec.sandbox).map(|sb| sb.mntns))
    {
        return Some(mntns);
    }
    let sandboxed: std::collections::HashSet<u64> = daemon
        .store
        .live()
        .iter()
        .map(|snap| snap.meta.mntns_inum)
        .chain(daemon.sandboxes.iter().map(|sb| sb.mntns))
        .filter(|&m| m != 0)
        .collect();
    crate::nsops::ancestor_mntns(daemon, peer_pid, |m| sandboxed.contains(&m))
}

pub fn status(daemon: &Daemon, scope: Option<u64>) -> Vec<NsStatus> {
    let live: Vec<_> = daemon
        .store
        .live()
        .into_iter()
        .filter(|snap| scope.is_none_or(|m| snap.meta.mntns_inum == m))
        .collect();
    // Processes per mount namespace (each sandbox has its own).
    let mut per_mntns: std::collections::HashMap<u64, Vec<u32>> = Default::default();
    if let Ok(names) = pio::list_at(daemon.host_proc(), ".") {
        for (n, _) in names {
            let Some(pid) = std::str::from_utf8(&n)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(st) = pio::stat_at(daemon.host_proc(), &format!("{pid}/ns/mnt"), true) {
                per_mntns.entry(st.st_ino).or_default().push(pid);
            }
        }
    }
    live.into_iter()
        .map(|snap| {
            let ns = NsRef::Slot(snap.slot);
            let sb = daemon
                .sandboxes
                .iter()
                .find(|s| s.ns == snap.slot)
                .map(|s| s.clone());
            let mut members = 0u32;
            for &pid in per_mntns
                .get(&snap.meta.mntns_inum)
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                let time = daemon.tasks.get(&pid).map(|r| r.ns.time).unwrap_or(ns);
                if time == ns {
                    members += 1;
                }
            }
            NsStatus {
                inum: snap.inum,
                monotonic: to_offset(snap.offsets.monotonic),
                boottime: to_offset(snap.offsets.boottime),
                frozen: snap.frozen,
                members,
                sandbox: snap.meta.label.clone(),
                anchor_pid: snap.meta.anchor_pid,
                served: sb.map(|s| s.alive.load(Ordering::SeqCst)).unwrap_or(false),
                mntns: snap.meta.mntns_inum,
            }
        })
        .collect()
}
