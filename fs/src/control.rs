//! The control socket: `timens` asks for sandboxes and status here.
//!
//! Who is asking is taken from the kernel (`SO_PEERCRED`) and the asker's /proc entry, never
//! from the request.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use timens::store::SlotMeta;
use timens_proto::{NsStatus, Offset, Request, Response};

use crate::nsops::Pending;
use crate::overlay::Overlay;
use crate::pio;
use crate::state::{nspids, Daemon, NsRef, Sandbox, TaskNs};

use crate::nsops::CAP_SYS_ADMIN;

fn peer_pid_uid(sock: &UnixStream) -> io::Result<(u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid out-pointers of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.pid as u32, cred.uid))
}

fn error(errno: i32, message: impl Into<String>) -> Response {
    Response::Error {
        errno,
        message: message.into(),
    }
}

/// Serves the control socket until SIGTERM/SIGINT (or idle exit).
pub fn serve(daemon: Arc<Daemon>, state_dir: &Path, idle_exit: u64) -> io::Result<()> {
    let sock_path = timens_proto::socket_path(state_dir);
    // The store's lock proves no other daemon owns this state directory: a socket file left
    // by a killed daemon is stale.
    let _ = std::fs::remove_file(&sock_path);
    let listener = UnixListener::bind(&sock_path)?;
    // Anyone may ask for status; creating sandboxes is checked per request.
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o666))?;
    let pidfile = state_dir.join(timens_proto::PIDFILE_NAME);
    std::fs::write(&pidfile, format!("{}\n", std::process::id()))?;
    tracing::info!(socket = %sock_path.display(), pid = std::process::id(), "timensfs ready");

    let stop = Arc::new(AtomicBool::new(false));
    let pending: Arc<Pending> = Arc::new(Pending::default());
    {
        let (sock_path, pidfile) = (sock_path.clone(), pidfile.clone());
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut set = nix::sys::signal::SigSet::empty();
                set.add(nix::sys::signal::Signal::SIGTERM);
                set.add(nix::sys::signal::Signal::SIGINT);
                set.add(nix::sys::signal::Signal::SIGHUP);
                if let Ok(sig) = set.wait() {
                    tracing::info!(?sig, "stopping");
                }
                let _ = std::fs::remove_file(&sock_path);
                let _ = std::fs::remove_file(&pidfile);
                std::process::exit(0);
            })?;
    }
    {
        let daemon = daemon.clone();
        let (sock_path, pidfile, stop) = (sock_path.clone(), pidfile.clone(), stop.clone());
        let pending = pending.clone();
        let mut reattacher = Reattacher::new(state_dir);
        std::thread::Builder::new()
            .name("housekeeping".into())
            .spawn(move || {
                let mut idle_since = Instant::now();
                loop {
                    // First pass right away: sandboxes of a previous daemon get /proc back fast.
                    reattacher.run(&daemon);
                    std::thread::sleep(Duration::from_millis(500));
                    reap_dead_namespaces(&daemon);
                    crate::nsops::collect_garbage(&daemon, &pending);
                    // Taken before the store's lock, which is never held around the map's.
                    let served: std::collections::HashSet<u64> =
                        daemon.sandboxes.iter().map(|s| s.mntns).collect();
                    daemon
                        .store
                        .close_unused_views(&views_dir(&daemon), |k| served.contains(&k));
                    if !daemon.sandboxes.is_empty() || !daemon.store.live().is_empty() {
                        idle_since = Instant::now();
                    } else if idle_exit > 0
                        && idle_since.elapsed() >= Duration::from_secs(idle_exit)
                    {
                        tracing::info!("idle: exiting");
                        stop.store(true, Ordering::SeqCst);
                        let _ = std::fs::remove_file(&sock_path);
                        let _ = std::fs::remove_file(&pidfile);
                        std::process::exit(0);
                    }
                }
            })?;
    }
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        let daemon = daemon.clone();
        let pending = pending.clone();
        let _ = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                if let Err(e) = handle(&daemon, &pending, &conn) {
                    tracing::debug!(error = %e, "control connection failed");
                }
            });
    }
    Ok(())
}

fn handle(daemon: &Arc<Daemon>, pending: &Pending, conn: &UnixStream) -> io::Result<()> {
    let (peer_pid, peer_uid) = peer_pid_uid(conn)?;
    let (req, fds) = timens_proto::read_request(conn)?;
    let resp = match req {
        Request::Ping => Response::Pong {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        Request::Status => Response::Status {
            namespaces: status(daemon, status_scope(daemon, peer_pid)),
        },
        Request::CreateSandbox {
            monotonic,
            boottime,
            for_children,
            label,
            anchor_pid,
            attach_inum,
            self_bound,
        } => {
            let req = CreateReq {
                monotonic,
                boottime,
                for_children,
                label,
                anchor_pid,
                attach_inum,
                self_bound,
            };
            match create_sandbox(daemon, peer_pid, peer_uid, fds, req) {
                Ok((inum, view)) => {
                    return timens_proto::write_response_fds(
                        conn,
                        &Response::Created { inum },
                        &[std::os::fd::AsFd::as_fd(&view)],
                    );
                }
                Err(r) => r,
            }
        }
        Request::Release { inum } => release(daemon, peer_uid, inum),
        Request::OpenFuse => {
            if peer_uid != 0 {
                error(libc::EPERM, "opening /dev/fuse for a caller needs root")
            } else {
                match std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/fuse")
                {
                    Ok(f) => {
                        let fd: OwnedFd = f.into();
                        return timens_proto::write_response_fds(
                            conn,
                            &Response::FuseFd,
                            &[std::os::fd::AsFd::as_fd(&fd)],
                        );
                    }
                    Err(e) => error(
                        e.raw_os_error().unwrap_or(libc::EIO),
                        format!("/dev/fuse: {e}"),
                    ),
                }
            }
        }
        other => crate::nsops::handle(daemon, pending, peer_pid, other, fds),
    };
    timens_proto::write_response(conn, &resp)
}

struct CreateReq {
    monotonic: Offset,
    boottime: Offset,
    for_children: bool,
    label: String,
    anchor_pid: Option<u32>,
    attach_inum: Option<u32>,
    self_bound: bool,
}

fn mntns_of(daemon: &Daemon, pid: u32) -> u64 {
    pio::stat_at(daemon.host_proc(), &format!("{pid}/ns/mnt"), true)
        .map(|st| st.st_ino)
        .unwrap_or(0)
}

fn create_sandbox(
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
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
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
        notifier: Default::default(),
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
        daemon.track_with(
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
    *sb.notifier.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.notifier());
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

fn release(daemon: &Daemon, peer_uid: u32, inum: u32) -> Response {
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
fn end_sandbox(daemon: &Daemon, sb: &Sandbox) {
    sb.alive.store(false, Ordering::SeqCst);
    *sb.notifier.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let tracked: Vec<u32> = sb.by_nspid.iter().map(|e| *e.value()).collect();
    for t in tracked {
        daemon.untrack(t);
    }
    daemon.sandboxes.remove(&sb.id);
    daemon.store.release(sb.ns);
    tracing::info!(sandbox = sb.id, inum = sb.ns.inum(), "sandbox ended");
}

/// Releases namespaces that no live sandbox serves and whose first process is gone (after a
/// daemon restart, sandboxes that ended while it was down).
pub fn reap_dead_namespaces(daemon: &Daemon) {
    for snap in daemon.store.live() {
        if daemon.sandboxes.iter().any(|s| s.ns == snap.slot) {
            continue;
        }
        if crate::nsops::made_by_a_syscall(&snap.meta.label) {
            // Kept while referenced: nsops::collect_garbage.
            continue;
        }
        let alive = daemon.anchor_alive(&snap.meta);
        if !alive {
            daemon.store.release(snap.slot);
            tracing::info!(
                inum = snap.inum,
                "released namespace of a sandbox that ended"
            );
        }
    }
}

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
fn status_scope(daemon: &Daemon, peer_pid: u32) -> Option<u64> {
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

fn status(daemon: &Daemon, scope: Option<u64>) -> Vec<NsStatus> {
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

/// After a restart, sandboxes whose overlay died with the old daemon get a working /proc back:
/// for each namespace no session serves whose first process is alive, `timens mount` is run
/// against that process (it detaches the dead overlay and re-attaches the same namespace).
struct Reattacher {
    state_dir: std::path::PathBuf,
    tried: std::collections::HashMap<u32, (Instant, u32)>,
}

impl Reattacher {
    fn new(state_dir: &Path) -> Self {
        Reattacher {
            state_dir: state_dir.to_path_buf(),
            tried: Default::default(),
        }
    }

    fn timens_binary() -> std::path::PathBuf {
        if let Some(p) = std::env::var_os("TIMENS_BIN") {
            return p.into();
        }
        std::env::current_exe()
            .ok()
            .map(|me| me.with_file_name("timens"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| "timens".into())
    }

    fn run(&mut self, daemon: &Daemon) {
        for snap in daemon.store.live() {
            let label = &snap.meta.label;
            if !(label.starts_with("run:")
                || label.starts_with("mount:")
                || label.starts_with("oci:"))
            {
                continue;
            }
            if daemon.sandboxes.iter().any(|s| s.ns == snap.slot) {
                self.tried.remove(&snap.inum);
                continue;
            }
            // Three tries, two seconds apart.
            let entry = self
                .tried
                .entry(snap.inum)
                .or_insert((Instant::now() - Duration::from_secs(10), 0));
            if entry.1 >= 3 || entry.0.elapsed() < Duration::from_secs(2) {
                continue;
            }
            *entry = (Instant::now(), entry.1 + 1);
            let pid = snap.meta.anchor_pid;
            let child = std::process::Command::new(Self::timens_binary())
                .arg("mount")
                .arg("--pid")
                .arg(pid.to_string())
                .arg("--state-dir")
                .arg(&self.state_dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn();
            match child {
                Ok(mut c) => {
                    // Reaped in the background: the mount child blocks on this daemon's answers.
                    std::thread::spawn(move || {
                        let status = c.wait();
                        tracing::info!(pid, ?status, "re-attach finished");
                    });
                    tracing::info!(
                        inum = snap.inum,
                        pid,
                        "re-attaching the overlay of a sandbox"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot run timens mount for re-attach"),
            }
        }
    }
}
