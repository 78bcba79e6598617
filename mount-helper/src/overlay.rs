//! Mounting the /proc overlay in the current mount namespace (shared by `run` and `mount`).
//!
//! Order matters: the FUSE mount is made by a process of the sandbox's pid namespace (FUSE then
//! numbers request pids as the sandbox sees them), its fd and the sandbox's procfs go to the
//! daemon, and only once the daemon serves the overlay are the hidden procfs, the static
//! directories, the store and the control socket mounted under it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::run::os_err;
use crate::{die, EXIT_USAGE};
use timens_proto::{Request, Response};
use timens_sys::mountapi;

/// What the sandbox needs from the daemon's state directory, taken while it is still reachable
/// (a container's mount namespace does not have it).
pub struct StateHandles {
    /// The control socket, as a detached bind mount.
    socket: OwnedFd,
    /// An O_PATH fd of the socket, to connect through /proc/self/fd from any mount namespace.
    socket_path_fd: OwnedFd,
    /// The clock library, as a detached bind mount (None: not installed, or not wanted).
    library: Option<OwnedFd>,
    /// Connections made in advance, while /proc/self/fd still works (see `preconnect`).
    conns: Vec<UnixStream>,
}

impl StateHandles {
    pub fn open(state_dir: &Path, with_library: bool) -> std::io::Result<StateHandles> {
        let sock_path = timens_proto::socket_path(state_dir);
        let socket = mountapi::open_tree_clone(&sock_path, false)?;
        let socket_path_fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(&sock_path)?
            .into();
        let library = if with_library {
            match crate::preload::library() {
                Some(lib) => Some(mountapi::open_tree_clone(&lib, false)?),
                None => {
                    eprintln!(
                        "timens: warning: clock library {} not found (set TIMENS_PRELOAD_LIB); clocks are not shifted, /proc is",
                        crate::preload::LIB_NAME
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(StateHandles {
            socket,
            socket_path_fd,
            library,
            conns: Vec::new(),
        })
    }

    /// Loads the clock library into every new process of this mount namespace (through
    /// /etc/ld.so.preload), unless it already is. Before the overlay is mounted.
    pub fn inject_preload(&self) {
        self.inject_preload_at(Path::new("/"))
    }

    /// The same for a root file system at `root`.
    pub fn inject_preload_at(&self, root: &Path) {
        if let (Some(lib), false) = (&self.library, crate::preload::already_injected(root)) {
            crate::preload::inject(root, lib.as_fd())
                .unwrap_or_else(|e| os_err("injecting the clock library", e));
        }
    }

    /// Makes the connections `attach` needs now: from a process about to join a mount namespace
    /// whose /proc is a dead overlay (the daemon names the peer by SO_PEERCRED, i.e. the process
    /// that connected, so this must be the process that will mount).
    pub fn preconnect(&mut self) -> std::io::Result<()> {
        for _ in 0..2 {
            let c = self.connect()?;
            self.conns.push(c);
        }
        Ok(())
    }

    /// Connects to the daemon from the current process (the daemon trusts SO_PEERCRED, which
    /// names the connecting process).
    fn connect(&self) -> std::io::Result<UnixStream> {
        UnixStream::connect(format!("/proc/self/fd/{}", self.socket_path_fd.as_raw_fd()))
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// Mounts the overlay over /proc, has the daemon serve it, and completes the tree under it.
/// Returns the namespace's inode number.
pub fn attach(handles: StateHandles, procfs: OwnedFd, req: &Request) -> u32 {
    attach_at(Path::new("/"), handles, procfs, req)
}

/// [`attach`] for a root file system at `root` (a container's rootfs before pivot_root).
pub fn attach_at(root: &Path, handles: StateHandles, procfs: OwnedFd, req: &Request) -> u32 {
    let proc_dir = root.join("proc");
    // Connect before /proc is covered: the connections go through /proc/self/fd (one request
    // each: the sandbox, and /dev/fuse from the daemon if this namespace cannot open it).
    let mut handles = handles;
    if handles.conns.is_empty() {
        handles
            .preconnect()
            .unwrap_or_else(|e| os_err("connecting to timensfs", e));
    }
    let mut conns: Vec<UnixStream> = std::mem::take(&mut handles.conns);
    let sock = conns.pop().unwrap_or_else(|| die(1, "no connection"));
    let fuse = mount_fuse_here(&proc_dir, &mut conns, 0o40555, "/proc");
    // The overlay's root, for the daemon to learn the mount's device number (how it recognises
    // its own `ns/time` files in a setns). O_PATH: nothing is asked of the file system, whose
    // server does not run yet.
    let root = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&proc_dir)
        .unwrap_or_else(|e| {
            let _ = nix::mount::umount2(&proc_dir, nix::mount::MntFlags::MNT_DETACH);
            os_err("opening the overlay's root", e)
        });
    // The answer carries this sandbox's view of the offset store (its own namespaces only).
    let fds = [fuse.as_fd(), procfs.as_fd(), root.as_fd()];
    let (inum, view) = match timens_proto::call_fds(&sock, req, &fds) {
        Ok((Response::Created { inum }, fds)) => match fds.into_iter().next() {
            Some(view) => (inum, view),
            None => {
                let _ = nix::mount::umount2(&proc_dir, nix::mount::MntFlags::MNT_DETACH);
                die(
                    1,
                    "timensfs created the sandbox but sent no offset store view",
                )
            }
        },
        Ok((Response::Error { errno, message }, _)) => {
            // Nothing may stay mounted on the way out.
            let _ = nix::mount::umount2(&proc_dir, nix::mount::MntFlags::MNT_DETACH);
            let code = if errno == libc::ERANGE || errno == libc::EINVAL {
                EXIT_USAGE
            } else {
                1
            };
            die(code, message)
        }
        Ok((other, _)) => die(1, format!("unexpected answer from timensfs: {other:?}")),
        Err(e) => os_err("asking timensfs for the sandbox", e),
    };
    drop((fuse, root));
    let hidden_buf = proc_dir.join(".timens/proc");
    let hidden = hidden_buf.as_path();
    mountapi::move_mount_to(procfs.as_fd(), hidden)
        .unwrap_or_else(|e| os_err("attaching the sandbox's procfs", e));
    // The procfs's own self and thread-self over the overlay's (the request said so): the kernel
    // resolves their text ("<tgid>", "<tgid>/task/<tid>") in the overlay, per reader, without
    // asking the daemon.
    if matches!(
        req,
        Request::CreateSandbox {
            self_bound: true,
            ..
        }
    ) {
        for name in ["self", "thread-self"] {
            mountapi::bind_symlink(&hidden.join(name), &proc_dir.join(name))
                .unwrap_or_else(|e| os_err(&format!("binding /proc/{name}"), e));
        }
    }
    // Directories the kernel serves whole get bind mounts, not links: sysctl insists on paths
    // under /proc/sys, and realpath must not show the hidden path.
    let listing =
        std::fs::read_dir(hidden).unwrap_or_else(|e| os_err("listing /proc/.timens/proc", e));
    for entry in listing.flatten() {
        let name = entry.file_name();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_dir || name.as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let src = hidden.join(&name);
        let dst = proc_dir.join(&name);
        if let Err(e) = mountapi::bind_mount(&src, &dst, true) {
            os_err(&format!("bind-mounting {}", dst.display()), e);
        }
    }
    drop(procfs);
    // The clock library reads offsets from the store and asks the daemon on namespace changes:
    // both at fixed paths under the overlay, whatever the sandbox does to /run. Read-only store
    // view.
    let store_dst = proc_dir.join(".timens/store");
    mountapi::move_mount_to(view.as_fd(), &store_dst)
        .unwrap_or_else(|e| os_err("binding the offset store", e));
    remount_readonly(&store_dst);
    mountapi::move_mount_to(
        handles.socket.as_fd(),
        &proc_dir.join(".timens/control.sock"),
    )
    .unwrap_or_else(|e| os_err("binding the control socket", e));
    inum
}

/// Mounts a FUSE file system at `target` (rootmode: directory or regular file). A container
/// has no /dev/fuse, or its device cgroup refuses it: then the daemon opens it for us.
fn mount_fuse_here(
    target: &Path,
    conns: &mut Vec<UnixStream>,
    rootmode: u32,
    what: &str,
) -> OwnedFd {
    let fail = |e: std::io::Error| -> ! { os_err(&format!("mounting the overlay on {what}"), e) };
    let fd = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(f) => OwnedFd::from(f),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EACCES | libc::ENOENT | libc::ENXIO)
            ) =>
        {
            conns
                .pop()
                .and_then(|s| timens_proto::call_recv_fds(&s, &Request::OpenFuse).ok())
                .and_then(|(r, mut fds)| matches!(r, Response::FuseFd).then(|| fds.pop()).flatten())
                .unwrap_or_else(|| fail(e))
        }
        Err(e) => fail(e),
    };
    mountapi::mount_fuse_root(target, fd, "timensfs", "timensfs", rootmode)
        .unwrap_or_else(|e| fail(e))
}

fn remount_readonly(path: &Path) {
    let flags = nix::mount::MsFlags::MS_BIND
        | nix::mount::MsFlags::MS_REMOUNT
        | nix::mount::MsFlags::MS_RDONLY
        | nix::mount::MsFlags::MS_NOSUID
        | nix::mount::MsFlags::MS_NODEV
        | nix::mount::MsFlags::MS_NOEXEC;
    if let Err(e) = nix::mount::mount(None::<&str>, path, None::<&str>, flags, None::<&str>) {
        os_err(
            &format!("remounting {} read-only", path.display()),
            std::io::Error::from(e),
        );
    }
}
