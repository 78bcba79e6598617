//! I/O relative to a sandbox's procfs directory fd.
//!
//! The daemon never resolves a path through an overlay it serves (a request that walks its own
//! mount deadlocks): every access below is `*at()` relative to the root of a real procfs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

fn cpath(path: &str) -> io::Result<CString> {
    CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub fn open_at(dir: BorrowedFd<'_>, path: &str, flags: i32) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated string and `dir` a valid fd for the call's duration.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The most read from one procfs file.
const READ_LIMIT: usize = 1 << 20;

/// Reads a whole seq_file from position 0 with pread (procfs regenerates it), so one fd kept
/// open serves every read without an open/close.
pub fn pread_all(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    pread_until(fd, false)
}

/// [`pread_all`] for a single-record seq_file (`single_open`: `PID/stat`, `uptime`), which
/// procfs generates whole at the first read: a read shorter than the buffer was the end, and the
/// read that would return 0 is skipped (one system call less per `ps` line).
pub fn pread_record(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    pread_until(fd, true)
}

fn pread_until(fd: &OwnedFd, short_is_end: bool) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(4096);
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: `buf` is a valid writable buffer of the given length.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                out.len() as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n as usize]);
        if out.len() >= READ_LIMIT || (short_is_end && (n as usize) < buf.len()) {
            return Ok(out);
        }
    }
}

/// Reads a whole single-record procfs file (see [`pread_record`]).
pub fn read_record_at(dir: BorrowedFd<'_>, path: &str) -> io::Result<Vec<u8>> {
    pread_record(&open_at(dir, path, libc::O_RDONLY)?)
}

/// Reads a whole (small) procfs file.
pub fn read_at(dir: BorrowedFd<'_>, path: &str) -> io::Result<Vec<u8>> {
    pread_all(&open_at(dir, path, libc::O_RDONLY)?)
}

pub fn readlink_at(dir: BorrowedFd<'_>, path: &str) -> io::Result<Vec<u8>> {
    let c = cpath(path)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `c` is NUL-terminated, `buf` is writable for `buf.len()` bytes.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub fn stat_at(dir: BorrowedFd<'_>, path: &str, follow: bool) -> io::Result<libc::stat> {
    let c = cpath(path)?;
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: `c` is NUL-terminated and `st` is a valid out-pointer.
    let r = unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Names and d_types of a directory, `.` and `..` excluded.
pub fn list_at(dir: BorrowedFd<'_>, path: &str) -> io::Result<Vec<(Vec<u8>, u8)>> {
    let fd = open_at(dir, path, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let raw = std::mem::ManuallyDrop::new(fd);
    // SAFETY: fdopendir takes ownership of the fd (closed by closedir below); ManuallyDrop keeps
    // OwnedFd from closing it a second time.
    let d = unsafe { libc::fdopendir(raw.as_raw_fd()) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        drop(std::mem::ManuallyDrop::into_inner(raw));
        return Err(e);
    }
    let mut out = Vec::new();
    let mut err = None;
    loop {
        // SAFETY: errno is thread-local; resetting it distinguishes end of stream from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `d` is a valid DIR* until closedir.
        let ent = unsafe { libc::readdir64(d) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            if e.raw_os_error().unwrap_or(0) != 0 {
                err = Some(e);
            }
            break;
        }
        // SAFETY: readdir64 returned a valid dirent whose d_name is NUL-terminated.
        let (name, ty) = unsafe {
            let e = &*ent;
            (
                std::ffi::CStr::from_ptr(e.d_name.as_ptr())
                    .to_bytes()
                    .to_vec(),
                e.d_type,
            )
        };
        if name == b"." || name == b".." {
            continue;
        }
        out.push((name, ty));
    }
    // SAFETY: `d` came from fdopendir and is closed exactly once.
    unsafe { libc::closedir(d) };
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Field 22 (starttime, clock ticks since boot) and field 3 (state) of `<path>/stat`.
pub fn stat_start_and_state(dir: BorrowedFd<'_>, base: &str) -> io::Result<(u64, u8)> {
    let text = read_at(dir, &format!("{base}/stat"))?;
    parse_start_and_state(&text).ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))
}

pub fn parse_start_and_state(text: &[u8]) -> Option<(u64, u8)> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 2..)?).ok()?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.bytes().next()?;
    // After the state (field 3), field 22 is the 19th further field.
    let start = fields.nth(18)?.trim().parse().ok()?;
    Some((start, state))
}

/// Field 4 (ppid) of a `stat` file.
pub fn parse_ppid(text: &[u8]) -> Option<u32> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 2..)?).ok()?;
    rest.split(' ').nth(1)?.parse().ok()
}

/// The clock of `clockid` now.
pub fn clock_now(clockid: libc::clockid_t) -> procview::Timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(clockid, &mut ts) };
    procview::Timespec::new(ts.tv_sec, ts.tv_nsec)
}

/// The id of the mount `fd` is on (statx STATX_MNT_ID), as mountinfo's first field shows it.
pub fn mount_id(fd: BorrowedFd<'_>) -> Option<u64> {
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the empty path with AT_EMPTY_PATH names `fd` itself; `stx` is a valid out-pointer.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    (r == 0 && stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id)
}

/// What the kernel's cached inode says of an open file, read without asking its file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedStat {
    /// `st_dev`: the superblock's device number (for FUSE, one per mount).
    pub dev: u64,
    pub ino: u64,
    /// `st_mode`, type bits included.
    pub mode: u32,
    /// The id of the mount the file was opened through, as mountinfo's first field shows it.
    pub mnt_id: Option<u64>,
}

/// `statx` of `fd` itself with `AT_STATX_DONT_SYNC`: the attributes the kernel has cached,
/// without a request to the file system. For a client's fd this is the only stat the daemon
/// makes before it knows the file is on one of its own overlays: a FUSE file system mounted by
/// someone else would otherwise be asked (GETATTR) and could leave the daemon waiting for ever.
/// `st_dev` never comes from the file system in any case.
pub fn cached_stat(fd: BorrowedFd<'_>) -> io::Result<CachedStat> {
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let want = libc::STATX_TYPE | libc::STATX_MODE | libc::STATX_INO | libc::STATX_MNT_ID;
    // SAFETY: the empty path with AT_EMPTY_PATH names `fd` itself; `stx` is a valid out-pointer.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            want,
            &mut stx,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(CachedStat {
        dev: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
        ino: stx.stx_ino,
        mode: u32::from(stx.stx_mode),
        mnt_id: (stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id),
    })
}

/// `f_type` of the file system `fd` is on (`fstatfs`). On FUSE this is a request to the file
/// system's server: call it only on a file known to be on one of the daemon's own mounts.
pub fn fs_magic(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a valid fd for the call's duration and `sfs` a valid out-pointer.
    let r = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut sfs) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sfs.f_type as i64)
}

/// The device number (`maj:min`, field 3) and file system type (first field after ` - `) of
/// mount `mnt_id` in a `mountinfo` text, if it is listed.
pub fn mountinfo_dev_fstype(mountinfo: &str, mnt_id: u64) -> Option<(u64, &str)> {
    let id = mnt_id.to_string();
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').next() == Some(id.as_str()))?;
    let (major, minor) = line.split(' ').nth(2)?.split_once(':')?;
    let dev = libc::makedev(major.parse().ok()?, minor.parse().ok()?);
    // Optional fields (`shared:N`, `master:N`) come before the lone `-`.
    let fstype = line.split_once(" - ")?.1.split(' ').next()?;
    Some((dev, fstype))
}

/// Whether the procfs mount behind `fd` hides processes from some readers (`hidepid=` or
/// `subset=pid` in its super options), or that cannot be told, by its line in `mountinfo` (of
/// a process that sees the mount). Such a mount checks access when a file is opened, so files
/// the daemon opened must not serve other readers.
pub fn procfs_hides_pids(fd: BorrowedFd<'_>, mountinfo: &str) -> bool {
    let Some(id) = mount_id(fd) else {
        return true;
    };
    let id = id.to_string();
    match mountinfo
        .lines()
        .find(|l| l.split(' ').next() == Some(id.as_str()))
    {
        // The super options are the last field, after " - fstype source ".
        Some(line) => line.rsplit(' ').next().is_none_or(|opts| {
            opts.split(',')
                .any(|o| o.starts_with("hidepid=") || o == "subset=pid")
        }),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_state_survive_odd_comm() {
        let line = b"42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10 1844 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        assert_eq!(parse_start_and_state(line), Some((123456, b'S')));
        assert_eq!(parse_ppid(line), Some(1));
    }

    #[test]
    fn pread_record_reads_whole_files() {
        // Longer than the 8 KiB buffer (a short last read ends it) and an exact multiple of it
        // (the read returning 0 ends it): both whole.
        for len in [20_000usize, 16_384, 0] {
            let path =
                std::env::temp_dir().join(format!("timensfs-pread-{}-{len}", std::process::id()));
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            let fd = OwnedFd::from(std::fs::File::open(&path).unwrap());
            let got = pread_record(&fd);
            std::fs::remove_file(&path).unwrap();
            assert_eq!(got.unwrap(), data, "{len} bytes");
        }
        // A single-record procfs file, read twice through one fd (procfs regenerates it).
        let fd = OwnedFd::from(std::fs::File::open("/proc/self/stat").unwrap());
        for _ in 0..2 {
            let stat = pread_record(&fd).unwrap();
            assert!(stat.ends_with(b"\n"), "{}", String::from_utf8_lossy(&stat));
            assert!(stat.starts_with(format!("{} (", std::process::id()).as_bytes()));
        }
    }

    #[test]
    fn own_stat_parses() {
        let fd = open_at(
            // SAFETY: AT_FDCWD is a valid pseudo-fd for *at calls and is never closed.
            unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) },
            "/proc",
            libc::O_RDONLY | libc::O_DIRECTORY,
        )
        .unwrap();
        let (start, state) = stat_start_and_state(std::os::fd::AsFd::as_fd(&fd), "self").unwrap();
        assert!(start > 0);
        assert!(b"RSDI".contains(&state), "state {}", state as char);
        let names = list_at(std::os::fd::AsFd::as_fd(&fd), "self/ns").unwrap();
        assert!(names.iter().any(|(n, _)| n == b"net"));
    }
}

#[cfg(test)]
mod cached_stat_tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn cached_stat_is_fstat() {
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        let m = f.metadata().unwrap();
        let st = cached_stat(f.as_fd()).unwrap();
        assert_eq!((st.dev, st.ino, st.mode), (m.dev(), m.ino(), m.mode()));
        assert_eq!(st.mnt_id, mount_id(f.as_fd()));
        assert_eq!(fs_magic(f.as_fd()).unwrap(), libc::PROC_SUPER_MAGIC);
    }

    #[test]
    fn mountinfo_lines_give_device_and_type() {
        // Captured in a `timens run` sandbox: the host's procfs, the hidden procfs (mounted
        // under the overlay) and the overlay over /proc.
        let info = "\
51 49 0:21 / /proc rw,relatime - proc proc rw
70 74 0:21 / /proc/.timens/proc rw,relatime - proc proc rw
74 51 0:45 / /proc rw,nosuid,nodev,noexec,relatime - fuse.timensfs timensfs rw,user_id=0,group_id=0,allow_other
";
        assert_eq!(
            mountinfo_dev_fstype(info, 74),
            Some((libc::makedev(0, 45), "fuse.timensfs"))
        );
        assert_eq!(
            mountinfo_dev_fstype(info, 70),
            Some((libc::makedev(0, 21), "proc"))
        );
        // Optional fields before the separator.
        assert_eq!(
            mountinfo_dev_fstype("7 1 8:1 / / rw shared:1 master:2 - ext4 /dev/sda1 rw\n", 7),
            Some((libc::makedev(8, 1), "ext4"))
        );
        assert_eq!(mountinfo_dev_fstype(info, 55), None);
        assert_eq!(
            mountinfo_dev_fstype("552 548 0:x / /p rw - fuse f rw\n", 552),
            None
        );
    }
}

#[cfg(test)]
mod hidepid_tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn procfs_options_decide() {
        let proc = std::fs::File::open("/proc").unwrap();
        let id = mount_id(proc.as_fd()).expect("statx mount id");
        let line = |opts: &str| format!("{id} 20 0:22 / /proc rw,nosuid - proc proc {opts}\n");
        assert!(!procfs_hides_pids(proc.as_fd(), &line("rw")));
        assert!(procfs_hides_pids(
            proc.as_fd(),
            &line("rw,hidepid=invisible")
        ));
        assert!(procfs_hides_pids(proc.as_fd(), &line("rw,subset=pid")));
        assert!(
            procfs_hides_pids(proc.as_fd(), "1 2 0:1 / / rw - ext4 x rw\n"),
            "not listed"
        );
    }
}
