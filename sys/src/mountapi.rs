//! Thin wrappers over the new mount API (`open_tree`, `fsopen`/`fsconfig`/`fsmount`,
//! `move_mount`), classic `mount(2)`, and FUSE mounting.
//!
//! Every error names the step and the path (a [`crate::StepError`] inside the `io::Error`, same
//! `ErrorKind`); [`errno_of`] gives the errno back.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::mount::MsFlags;

pub use crate::errno_of;
use crate::step_error;
use crate::util::{cstring, cvt_long, owned_fd, path_cstring};

// include/uapi/linux/mount.h and fcntl.h
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;

fn open_tree(
    dirfd: libc::c_int,
    path: &CStr,
    recursive: bool,
    nofollow: bool,
) -> io::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if nofollow {
        flags |= libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;
    }
    if recursive {
        flags |= AT_RECURSIVE;
    }
    if path.is_empty() {
        flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    // SAFETY: `path` is NUL-terminated and outlives the call; the returned descriptor is taken
    // over by `owned_fd`.
    owned_fd(unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) })
}

/// A detached copy of the mount at `path` (with the mounts below it when `recursive`), as an
/// `O_CLOEXEC` descriptor: `open_tree(OPEN_TREE_CLONE [| AT_RECURSIVE])`. Dropping the
/// descriptor unmounts the copy unless it has been attached with [`move_mount_to`].
pub fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let c = path_cstring(path).map_err(|e| step_error("open_tree_clone", path.display(), e))?;
    open_tree(libc::AT_FDCWD, &c, recursive, false)
        .map_err(|e| step_error("open_tree_clone", path.display(), e))
}

/// Binds the symlink `src` itself (not what it points to) over the symlink `dst`:
/// `open_tree(OPEN_TREE_CLONE | AT_SYMLINK_NOFOLLOW)` and `move_mount` without
/// `MOVE_MOUNT_T_SYMLINKS`. A relative link text is then resolved from `dst`'s directory: the
/// procfs `self` link bound into another directory names that directory's `<tgid>`.
pub fn bind_symlink(src: &Path, dst: &Path) -> io::Result<()> {
    let c = path_cstring(src).map_err(|e| step_error("open_tree_clone", src.display(), e))?;
    let fd = open_tree(libc::AT_FDCWD, &c, false, true)
        .map_err(|e| step_error("open_tree_clone", src.display(), e))?;
    move_mount_to(std::os::fd::AsFd::as_fd(&fd), dst)
}

/// As [`open_tree_clone`], with `path` relative to `dirfd`; an empty `path` clones the mount
/// `dirfd` itself refers to (`AT_EMPTY_PATH`).
pub fn open_tree_clone_at(
    dirfd: BorrowedFd<'_>,
    path: &str,
    recursive: bool,
) -> io::Result<OwnedFd> {
    let what = || format!("fd {} {path:?}", dirfd.as_raw_fd());
    let c = cstring(path.as_bytes()).map_err(|e| step_error("open_tree_clone_at", what(), e))?;
    open_tree(dirfd.as_raw_fd(), &c, recursive, false)
        .map_err(|e| step_error("open_tree_clone_at", what(), e))
}

/// The messages the kernel logged on a filesystem context, for error reports.
fn fs_context_log(fs: &OwnedFd) -> String {
    let mut log = Vec::new();
    let mut buf = [0u8; 512];
    // A handful is plenty; each read returns one message, ENODATA when none is left.
    for _ in 0..8 {
        // SAFETY: `buf` is a valid writable buffer of the given length.
        let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        log.push(
            String::from_utf8_lossy(&buf[..n as usize])
                .trim_end()
                .to_string(),
        );
    }
    log.join("; ")
}

/// A new, detached procfs instance of the caller's active pid namespace: `fsopen("proc")`,
/// `fsconfig(FSCONFIG_CMD_CREATE)`, `fsmount` with nosuid, nodev and noexec (as /proc is
/// usually mounted). Usable as a directory fd at once, or attached with [`move_mount_to`].
pub fn new_procfs() -> io::Result<OwnedFd> {
    new_mount(
        "proc",
        &[],
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
    )
}

/// A new, detached tmpfs (nosuid, nodev), private to whoever holds the fd.
pub fn new_tmpfs() -> io::Result<OwnedFd> {
    new_mount(
        "tmpfs",
        &[("mode", "0700")],
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )
}

/// A new, detached overlayfs with these lower, upper and work directories (paths resolved by
/// the kernel when the options are set).
pub fn new_overlay(lower: &str, upper: &str, work: &str) -> io::Result<OwnedFd> {
    new_mount(
        "overlay",
        &[("lowerdir", lower), ("upperdir", upper), ("workdir", work)],
        0,
    )
}

/// `fsopen(fstype)`, one `FSCONFIG_SET_STRING` per option, `FSCONFIG_CMD_CREATE`, `fsmount`.
pub fn new_mount(
    fstype: &str,
    options: &[(&str, &str)],
    attrs: libc::c_uint,
) -> io::Result<OwnedFd> {
    let cfs = CString::new(fstype).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `cfs` is NUL-terminated; the result is owned by `owned_fd`.
    let fs = owned_fd(unsafe { libc::syscall(libc::SYS_fsopen, cfs.as_ptr(), FSOPEN_CLOEXEC) })
        .map_err(|e| step_error("fsopen", fstype, e))?;
    let fail = |step: &'static str, e: io::Error| {
        let log = fs_context_log(&fs);
        let what = if log.is_empty() {
            fstype.to_string()
        } else {
            format!("{fstype} ({log})")
        };
        step_error(step, what, e)
    };
    for (key, value) in options {
        let (k, v) = match (CString::new(*key), CString::new(*value)) {
            (Ok(k), Ok(v)) => (k, v),
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        // SAFETY: key and value are NUL-terminated strings that outlive the call.
        let r = cvt_long(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0 as libc::c_int,
            )
        });
        if let Err(e) = r {
            return Err(fail("fsconfig", e));
        }
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux argument; `fs` is an fs context.
    let created = cvt_long(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0 as libc::c_int,
        )
    });
    if let Err(e) = created {
        return Err(fail("fsconfig create", e));
    }
    // SAFETY: fsmount takes the fs context fd and two flag words; the result is owned.
    owned_fd(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
        .map_err(|e| step_error("fsmount", fstype, e))
}

/// Attaches the detached mount `mount_fd` (from [`open_tree_clone`] or [`new_procfs`]) at
/// `target`: `move_mount(mount_fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`.
pub fn move_mount_to(mount_fd: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    let c = path_cstring(target).map_err(|e| step_error("move_mount", target.display(), e))?;
    // SAFETY: both paths are NUL-terminated and outlive the call; no memory is written.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount_fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map_err(|e| step_error("move_mount", target.display(), e))?;
    Ok(())
}

/// Opens `/dev/fuse` (`O_RDWR | O_CLOEXEC`) and mounts it at `target` with type
/// `fuse.<subtype>`, source `fsname`, flags nosuid, nodev and noexec, and options
/// `fd=N,rootmode=40555,user_id=0,group_id=0,allow_other`. Returns the `/dev/fuse` descriptor;
/// the kernel's INIT request waits on it for whoever serves the session, and every access to
/// the mount blocks until then.
pub fn mount_fuse(target: &Path, fsname: &str, subtype: &str) -> io::Result<OwnedFd> {
    let bad = |why: &str| {
        step_error(
            "mount_fuse",
            target.display(),
            io::Error::new(io::ErrorKind::InvalidInput, why.to_string()),
        )
    };
    if subtype.is_empty() || subtype.contains(|c: char| c == ',' || c == '.' || c.is_whitespace()) {
        return Err(bad("subtype must be non-empty, without ',', '.' or spaces"));
    }
    if fsname.is_empty() {
        return Err(bad("fsname must be non-empty"));
    }
    let dev = c"/dev/fuse";
    // SAFETY: `dev` is a NUL-terminated static string; the result is owned by `owned_fd`.
    let fuse = owned_fd(
        unsafe { libc::open(dev.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) } as libc::c_long,
    )
    .map_err(|e| step_error("mount_fuse open", "/dev/fuse", e))?;
    mount_fuse_fd(target, fuse, fsname, subtype)
}

/// [`mount_fuse`] with a `/dev/fuse` descriptor opened elsewhere (a container's device cgroup
/// may forbid opening /dev/fuse from inside it).
pub fn mount_fuse_fd(
    target: &Path,
    fuse: OwnedFd,
    fsname: &str,
    subtype: &str,
) -> io::Result<OwnedFd> {
    mount_fuse_root(target, fuse, fsname, subtype, 0o40555)
}

/// [`mount_fuse_fd`] with the root's file mode given: `0o100444` mounts a file system whose root
/// is a regular file, over a file.
pub fn mount_fuse_root(
    target: &Path,
    fuse: OwnedFd,
    fsname: &str,
    subtype: &str,
    rootmode: u32,
) -> io::Result<OwnedFd> {
    let data = format!(
        "fd={},rootmode={rootmode:o},user_id=0,group_id=0,allow_other",
        fuse.as_raw_fd()
    );
    let fstype = format!("fuse.{subtype}");
    nix::mount::mount(
        Some(fsname),
        target,
        Some(fstype.as_str()),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(|e| step_error("mount_fuse", target.display(), e.into()))?;
    Ok(fuse)
}

/// Makes every mount of the caller's mount namespace a slave, so mounts made here never
/// propagate back to the namespace it was copied from: `mount(NULL, "/", NULL, MS_REC |
/// MS_SLAVE, NULL)`. Call right after `unshare(CLONE_NEWNS)`.
pub fn make_rslave_root() -> io::Result<()> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| step_error("make_rslave_root", "/", e.into()))
}

/// Bind-mounts `src` on `dst` (`MS_BIND`, with `MS_REC` when `recursive`).
pub fn bind_mount(src: &Path, dst: &Path, recursive: bool) -> io::Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    nix::mount::mount(Some(src), dst, None::<&str>, flags, None::<&str>).map_err(|e| {
        step_error(
            "bind_mount",
            format!("{} -> {}", src.display(), dst.display()),
            e.into(),
        )
    })
}
