//! Loading the clock library into every process of a sandbox, through a sandbox-only
//! `/etc/ld.so.preload`.
//!
//! ld.so reads /etc/ld.so.preload for every dynamically linked program, also when a program
//! execs with an empty environment and for setuid programs (where LD_PRELOAD is ignored). The
//! host may have no such file and must never get one, so the sandbox's mount namespace gets an
//! overlayfs over /etc: the host's /etc below, a private tmpfs above holding ld.so.preload.
//! Trade-off (stated in the README): the sandbox's own writes to /etc land in that tmpfs and
//! vanish with the sandbox; mounts under /etc (a container's resolv.conf, hosts) are carried over.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use timens_sys::mountapi;

pub const LIB_NAME: &str = "libtimens_preload.so";

/// The clock library: `$TIMENS_PRELOAD_LIB`, else next to this executable, else the install dirs.
pub fn library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TIMENS_PRELOAD_LIB") {
        return Some(PathBuf::from(p)).filter(|p| p.is_absolute() && p.is_file());
    }
    let mut candidates = Vec::new();
    if let Ok(me) = std::env::current_exe() {
        candidates.push(me.with_file_name(LIB_NAME));
    }
    candidates.push(PathBuf::from("/usr/local/lib/timensfs").join(LIB_NAME));
    candidates.push(PathBuf::from("/usr/lib/timensfs").join(LIB_NAME));
    candidates.into_iter().find(|p| p.is_file())
}

/// Mount points below `etc` in this mount namespace, shallowest first.
fn mounts_below(etc: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}/", etc.display());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|m| m.starts_with(&prefix))
        .map(PathBuf::from)
        .collect();
    out.sort_by_key(|p| p.components().count());
    out.dedup();
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the sandbox's processes load the library from: a bind mount inside the sandbox's own
/// /etc overlay, so the same path works in any mount namespace (a container's rootfs does not
/// have the host's file) and never goes through the FUSE overlay (which is unreachable while a
/// restarted daemon re-attaches).
pub const IN_SANDBOX_PATH: &str = "/etc/.timensfs/libtimens_preload.so";

/// Whether this mount namespace's /etc/ld.so.preload already names the library.
pub fn already_injected(root: &Path) -> bool {
    std::fs::read_to_string(root.join("etc/ld.so.preload"))
        .map(|t| t.lines().any(|l| l.trim() == IN_SANDBOX_PATH))
        .unwrap_or(false)
}

/// Must run in the sandbox's own mount namespace, before /proc is covered by the overlay (the
/// tmpfs is reached through /proc/self/fd).
pub fn inject(root: &Path, library: BorrowedFd<'_>) -> io::Result<()> {
    let lib = Path::new(IN_SANDBOX_PATH);
    let etc = root.join("etc");
    let upper_fs: OwnedFd = mountapi::new_tmpfs()?;
    let base = PathBuf::from(format!("/proc/self/fd/{}", upper_fs.as_raw_fd()));
    let (upper, work) = (base.join("upper"), base.join("work"));
    std::fs::create_dir(&upper)?;
    std::fs::create_dir(&work)?;
    // Keep whatever the host preloads, then ours.
    let mut content = std::fs::read(etc.join("ld.so.preload")).unwrap_or_default();
    if !content.is_empty() && !content.ends_with(b"\n") {
        content.push(b'\n');
    }
    content.extend_from_slice(lib.as_os_str().as_encoded_bytes());
    content.push(b'\n');
    std::fs::write(upper.join("ld.so.preload"), &content)?;
    // The mount point of the library's bind mount.
    std::fs::create_dir(upper.join(".timensfs"))?;
    std::fs::write(upper.join(".timensfs/libtimens_preload.so"), b"")?;
    // Mounts under /etc would be hidden by the overlay: clone them first, put them back after.
    let submounts: Vec<(PathBuf, OwnedFd)> = mounts_below(&etc)
        .into_iter()
        .filter_map(|p| mountapi::open_tree_clone(&p, true).ok().map(|fd| (p, fd)))
        .collect();
    std::fs::create_dir_all(&etc)?;
    let overlay = mountapi::new_overlay(
        &etc.to_string_lossy(),
        &upper.to_string_lossy(),
        &work.to_string_lossy(),
    )?;
    mountapi::move_mount_to(overlay.as_fd(), &etc)?;
    for (path, fd) in submounts {
        // A nested one already came back with its parent (recursive clone).
        let _ = mountapi::move_mount_to(fd.as_fd(), &path);
    }
    let dst = root.join(IN_SANDBOX_PATH.trim_start_matches('/'));
    mountapi::move_mount_to(library, &dst)?;
    let flags = nix::mount::MsFlags::MS_BIND
        | nix::mount::MsFlags::MS_REMOUNT
        | nix::mount::MsFlags::MS_RDONLY
        | nix::mount::MsFlags::MS_NOSUID
        | nix::mount::MsFlags::MS_NODEV;
    nix::mount::mount(None::<&str>, &dst, None::<&str>, flags, None::<&str>)
        .map_err(io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/etc/a\\040b"), "/etc/a b");
        assert_eq!(unescape("/etc/plain"), "/etc/plain");
    }
}
