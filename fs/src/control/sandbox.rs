//! Sandboxes on request: `create_sandbox` (a new or re-attached namespace served by a new FUSE
//! session), `release` (an OCI poststop hook), `/dev/fuse` for a mounter that cannot open it,
//! the end of a sandbox, and the per-sandbox views of the offset store.
//!
//! Every request here changes the daemon's state or hands out a privileged fd: root only
//! (checked from `SO_PEERCRED` and the caller's /proc entry, see `server.rs`).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use timens::store::SlotMeta;
use timens_proto::{Offset, Response};

use super::server::error;
use crate::nsops::CAP_SYS_ADMIN;
use crate::overlay::Overlay;
use crate::pio;
use crate::state::{nspids, Daemon, NsRef, Sandbox, TaskNs};

/// The fields of a `create_sandbox` request (proto's `Request::CreateSandbox`).
pub struct CreateReq {
    pub monotonic: Offset,
    pub boottime: Offset,
    pub for_children: bool,
    pub label: String,
    pub anchor_pid: Option<u32>,
    pub attach_inum: Option<u32>,
    pub self_bound: bool,
}

fn mntns_of(daemon: &Daemon, pid: u32) -> u64 {
    pio::stat_at(daemon.host_proc(), &format!("{pid}/ns/mnt"), true)
        .map(|st| st.st_ino)
        .unwrap_or(0)
}

/// Serves a new sandbox for root peer `peer_pid` (fds: its /dev/fuse and its procfs), or
/// re-attaches an existing namespace; returns the namespace's inum and the sandbox's view of
/// the offset store (a detached mount), or the error answer.
pub fn create_sandbox(
    daemon: &Arc<Daemon>,
    peer_pid: u32,
    peer_uid: u32,
    fds: Vec<OwnedFd>,
    req: CreateReq,
) -> Result<(u32, OwnedFd), Response> {
    let CreateReq {
        monotonic,
        boottime,
        for_children,
        mut label,
        anchor_pid,
        attach_inum,
        self_bound,
    } = req;
    // F4: creating a namespace needs CAP_SYS_ADMIN; serving a mount needs root as well.
    let creds = timens_sys::creds::read_creds(daemon.host_proc(), peer_pid, daemon.own_user_ns)
        .map_err(|e| {
            error(
                libc::EPERM,
                format!("cannot read the caller's credentials: {e}"),
            )
        })?;
    if peer_uid != 0 || !creds.has_cap(CAP_SYS_ADMIN) {
        return Err(error(
            libc::EPERM,
            "creating a time namespace needs root with CAP_SYS_ADMIN",
        ));
    }
    // A third fd, the overlay's root, tells its device number: how a setns fd is recognised as
    // a file of this sandbox's overlay (nsops::ns_of_fd). Without it (an older `timens`), no fd
    // names a namespace of this sandbox.
    let mut fds = fds;
    let overlay_root = if fds.len() == 3 { fds.pop() } else { None };
    let [fuse_fd, procfs]: [OwnedFd; 2] = fds.try_into().map_err(|_| {
        error(
            libc::EINVAL,
            "create_sandbox needs /dev/fuse, the sandbox's procfs and the overlay's root",
        )
    })?;
    let overlay_dev = match overlay_root {
        Some(root) => crate::nsops::overlay_device(daemon, peer_pid, &root)
            .map_err(|e| error(libc::EINVAL, e))?,
        None => 0,
    };
    let offsets = procview::Offsets {
        monotonic: procview::Timespec::new(monotonic.sec, monotonic.nsec),
        boottime: procview::Timespec::new(boottime.sec, boottime.nsec),
    };
    for (clock, val) in [
        (procview::Clock::Monotonic, offsets.monotonic),
        (procview::Clock::Boottime, offsets.boottime),
    ] {
        if !(0..1_000_000_000).contains(&val.nsec) {
            return Err(error(
                libc::EINVAL,
                format!("{} offset: nanoseconds must be 0..999999999", clock.name()),
            ));
        }
        if !Daemon::offset_in_range(clock, val) {
            return Err(error(
                libc::ERANGE,
                format!(
                    "{} offset {}.{:09} is out of range for this host's clock",
                    clock.name(),
                    val.sec,
                    val.nsec
                ),
            ));
        }
    }
    // The overlay was mounted by the peer: FUSE numbers pids in the peer's pid namespace.
    let ids =
        nspids(daemon.host_proc(), peer_pid).map_err(|e| error(libc::ESRCH, e.to_string()))?;
    let pidns_level = ids.len().saturating_sub(1);
    let nspid = *ids.last().unwrap_or(&peer_pid);
    let anchor = anchor_pid.unwrap_or(peer_pid);
    let mntns_inum = mntns_of(daemon, peer_pid);
    if anchor != peer_pid && mntns_of(daemon, anchor) != mntns_inum {
        return Err(error(
            libc::EPERM,
            format!("process {anchor} is not in the caller's mount namespace"),
        ));
    }
    let (anchor_starttime, _) = pio::stat_start_and_state(daemon.host_proc(), &anchor.to_string())
        .map_err(|e| error(libc::ESRCH, format!("process {anchor}: {e}")))?;
    let attached = match attach_inum {
        None => None,
        Some(inum) => {
            let snap = daemon
                .store
                .live()
                .into_iter()
                .find(|s| s.inum == inum && s.meta.mntns_inum == mntns_inum)
                .ok_or_else(|| {
                    error(
                        libc::ENOENT,
                        format!("no namespace time:[{inum}] belongs to this mount namespace"),
                    )
                })?;
            if daemon.sandboxes.iter().any(|s| s.ns == snap.slot) {
                return Err(error(
                    libc::EBUSY,
                    format!("time:[{inum}] is already served"),
                ));
            }
            label = snap.meta.label.clone();
            Some(snap.slot)
        }
    };
    let meta = SlotMeta {
        anchor_pid: anchor,
        anchor_starttime,
        mntns_inum,
        created_unix: crate::state::unix_now(),
        label: label.clone(),
    };
    // Without --for-children the creator enters at once (it execs the command next): frozen (B2).
    let slot = match attached {
        Some(slot) => slot,
        None => daemon
            .create_namespace(offsets, !for_children, meta)
            .map_err(|e| {
                error(
                    e.raw_os_error().unwrap_or(libc::ENOSPC),
                    format!("no namespace slot: {e}"),
                )
            })?,
    };
    let fd_as_link = sb_label_is_oci(&label);
    let threads: u32 = std::env::var("TIMENSFS_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(2);
    // A second descriptor of the connection: parked session threads watch it for its end.
    let dev = fuse_fd.try_clone().ok();
    let sb = Arc::new(Sandbox {
        id: daemon.next_sandbox_id(),
        ns: slot,
        label,
        procfs,
        pidns_level,
        mntns: mntns_inum,
        overlay_dev,
        tgid_cache: Default::default(),
        host_uptime: Default::default(),
        host_stat: Default::default(),
        fd_as_link,
        self_bound,
        by_nspid: Default::default(),
        outbox: Default::default(),
        alive: AtomicBool::new(true),
        mixed: AtomicBool::new(false),
        mixed_lock: Default::default(),
        kernel_stat_dirs: Default::default(),
        stat_pages: Default::default(),
        readers: crate::readers::Readers::new(threads, dev),
    });
    daemon.sandboxes.insert(sb.id, sb.clone());
    if for_children && attached.is_none() {
        // Events about this process from before now (its own exec of `timens`) must not be
        // mistaken for the exec of CMD that comes next.
        daemon.sync_events();
        // The creator keeps its namespace; the new one is its time_for_children (A1).
        let current = daemon
            .tasks
            .get(&peer_pid)
            .map(|r| r.ns.time)
            .unwrap_or(NsRef::Init);
        // Nothing to wait for: the sandbox has no session yet, so the kernel caches nothing.
        let _ = daemon.track_with(
            &sb,
            peer_pid,
            nspid,
            TaskNs {
                time: current,
                tfc: NsRef::Slot(slot),
            },
            1,
        );
    }
    let fail = |daemon: &Arc<Daemon>, msg: String| {
        daemon.sandboxes.remove(&sb.id);
        daemon.untrack(peer_pid);
        if attached.is_none() {
            daemon.store.release(slot);
        }
        error(libc::EIO, msg)
    };
    let view = match open_view(daemon, mntns_inum) {
        Ok(fd) => fd,
        Err(e) => return Err(fail(daemon, format!("offset store view: {e}"))),
    };
    let overlay = Overlay::new(daemon.clone(), sb.clone());
    let mut config = fuser::Config::default();
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(threads as usize);
    config.clone_fd = true;
    let session = match fuser::Session::from_fd(overlay, fuse_fd, fuser::SessionACL::All, config) {
        Ok(s) => s,
        Err(e) => return Err(fail(daemon, format!("FUSE handshake failed: {e}"))),
    };
    sb.outbox.set(Some(session.notifier()));
    let d = daemon.clone();
    let sbc = sb.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("sandbox-{}", sb.id))
        .spawn(move || {
            if let Err(e) = session.run() {
                tracing::warn!(sandbox = sbc.id, error = %e, "FUSE session ended with an error");
            }
            end_sandbox(&d, &sbc);
        });
    if let Err(e) = spawned {
        return Err(fail(
            daemon,
            format!("cannot start the session thread: {e}"),
        ));
    }
    tracing::info!(sandbox = sb.id, inum = slot.inum(), label = %sb.label, pid = peer_pid, "sandbox created");
    Ok((slot.inum(), view))
}

/// Where the views of the store live (see `Store::open_view`): one file per sandbox mount
/// namespace, in a directory only root may walk.
pub fn views_dir(daemon: &Daemon) -> std::path::PathBuf {
    daemon.store.path().with_file_name(timens_proto::VIEWS_NAME)
}

/// Opens the view of the sandbox of mount namespace `mntns` (the same file again for a sandbox
/// that is re-attached) and returns it as a detached bind mount, for `/proc/.timens/store`.
fn open_view(daemon: &Daemon, mntns: u64) -> io::Result<OwnedFd> {
    let path = views_dir(daemon).join(mntns.to_string());
    daemon.store.open_view(mntns, &path)?;
    timens_sys::mountapi::open_tree_clone(&path, false)
}

fn sb_label_is_oci(label: &str) -> bool {
    label.starts_with("oci:")
}

pub fn release(daemon: &Daemon, peer_uid: u32, inum: u32) -> Response {
    if peer_uid != 0 {
        return error(libc::EPERM, "releasing a namespace needs root");
    }
    let Some(snap) = daemon.store.live().into_iter().find(|s| s.inum == inum) else {
        return error(libc::ENOENT, format!("no namespace time:[{inum}]"));
    };
    if daemon
        .sandboxes
        .iter()
        .any(|s| s.ns == snap.slot && s.alive.load(Ordering::SeqCst))
    {
        return error(libc::EBUSY, format!("time:[{inum}] still serves a sandbox"));
    }
    daemon.store.release(snap.slot);
    Response::Released { inum }
}

/// The sandbox's overlay is gone (its mount namespace died with its last process): release
/// everything it held.
pub fn end_sandbox(daemon: &Daemon, sb: &Sandbox) {
    sb.alive.store(false, Ordering::SeqCst);
    sb.outbox.set(None);
    let tracked: Vec<u32> = sb.by_nspid.iter().map(|e| *e.value()).collect();
    for t in tracked {
        daemon.untrack(t);
    }
    daemon.sandboxes.remove(&sb.id);
    daemon.store.release(sb.ns);
    tracing::info!(sandbox = sb.id, inum = sb.ns.inum(), "sandbox ended");
}

/// A fresh `/dev/fuse` descriptor for a root mounter whose device cgroup forbids opening it (an
/// OCI hook inside the container).
pub fn open_fuse(peer_uid: u32) -> Result<OwnedFd, Response> {
    if peer_uid != 0 {
        return Err(error(
            libc::EPERM,
            "opening /dev/fuse for a caller needs root",
        ));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(OwnedFd::from)
        .map_err(|e| {
            error(
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("/dev/fuse: {e}"),
            )
        })
}
