//! Acting with a caller's credentials on the current thread only.
//!
//! The daemon runs as root, but whatever it reads from procfs for a caller (link texts of `exe`,
//! `cwd`, `ns/*`) must be judged by the kernel against the caller: procfs checks ptrace access
//! with the *filesystem* credentials (`PTRACE_MODE_FSCREDS`), i.e. fsuid, fsgid, supplementary
//! groups and effective capabilities. [`assume`] switches exactly those, on the calling thread
//! only, and the returned [`CredGuard`] switches them back.
//!
//! Credentials are per task in Linux; glibc's `setuid`/`setgroups` wrappers broadcast the change
//! to every thread of the process (POSIX semantics), which would hand a caller's identity to the
//! daemon's other threads. Hence raw syscalls here.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;

use crate::util::{cvt_long, openat, read_all};

/// A task's credentials as shown in `/proc/PID/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    /// Real, effective, saved and filesystem uid, as on the `Uid:` line.
    pub uid: [u32; 4],
    /// Real, effective, saved and filesystem gid, as on the `Gid:` line.
    pub gid: [u32; 4],
    /// Supplementary groups (`Groups:`).
    pub groups: Vec<u32>,
    /// Effective capabilities (`CapEff:`).
    pub cap_eff: u64,
    /// Whether the task is in the daemon's user namespace; its capabilities count only then.
    pub same_user_ns: bool,
}

impl Creds {
    pub fn fsuid(&self) -> u32 {
        self.uid[3]
    }

    pub fn fsgid(&self) -> u32 {
        self.gid[3]
    }

    /// Whether the task holds `cap` (a `CAP_*` number) in the daemon's user namespace. Always
    /// false for a task in another user namespace.
    pub fn has_cap(&self, cap: u32) -> bool {
        self.same_user_ns && cap < 64 && self.cap_eff & (1u64 << cap) != 0
    }
}

fn parse_ids<const N: usize>(rest: &str) -> Option<[u32; N]> {
    let mut ids = [0u32; N];
    let mut it = rest.split_ascii_whitespace();
    for id in ids.iter_mut() {
        *id = it.next()?.parse().ok()?;
    }
    it.next().is_none().then_some(ids)
}

/// Parses the `Uid:`, `Gid:`, `Groups:` and `CapEff:` lines of a `/proc/PID/status` file. All four
/// must be present and well formed. `same_user_ns` is set to true; [`read_creds`] corrects it.
pub fn parse_status(status: &[u8]) -> Option<Creds> {
    let (mut uid, mut gid, mut groups, mut cap_eff) = (None, None, None, None);
    for line in status.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        match key {
            "Uid" => uid = Some(parse_ids::<4>(rest)?),
            "Gid" => gid = Some(parse_ids::<4>(rest)?),
            "Groups" => {
                let parsed: Result<Vec<u32>, _> =
                    rest.split_ascii_whitespace().map(str::parse).collect();
                groups = Some(parsed.ok()?);
            }
            "CapEff" => cap_eff = Some(u64::from_str_radix(rest.trim(), 16).ok()?),
            _ => {}
        }
    }
    Some(Creds {
        uid: uid?,
        gid: gid?,
        groups: groups?,
        cap_eff: cap_eff?,
        same_user_ns: true,
    })
}

/// Reads the credentials of task `tid` from `procfs` (a directory fd of a procfs mount, possibly
/// of another pid namespace, in whose numbering `tid` is) and compares its user namespace with
/// `own_user_ns_inode` (from [`own_user_ns_inode`]).
///
/// The `<tid>` directory is opened first and both reads are relative to it: an open
/// `/proc/<tid>` pins the task, so a pid reused in between yields an error (ESRCH/ENOENT) rather
/// than another process's credentials. Errors are the plain errno of the failing call.
pub fn read_creds(procfs: BorrowedFd<'_>, tid: u32, own_user_ns_inode: u64) -> io::Result<Creds> {
    let dir = openat(
        procfs,
        &tid.to_string(),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )?;
    let status = read_all(openat(
        dir.as_fd(),
        "status",
        libc::O_RDONLY | libc::O_NOFOLLOW,
    )?)?;
    let mut creds = parse_status(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unparsable /proc/{tid}/status"),
        )
    })?;
    creds.same_user_ns = user_ns_at(dir.as_fd(), "ns/user")? == own_user_ns_inode;
    Ok(creds)
}

/// The credentials procfs judges a FUSE caller by, without generating its status file (a few
/// microseconds per request, the largest part of serving `ps`): `fsuid` and `fsgid` as the kernel
/// stamped them on the request, and the effective capabilities of thread `tid` from capget(2).
/// `tid` must be numbered in this process's pid namespace, and also in `procfs`'s (which gives
/// its user namespace, looked at only when it holds capabilities).
///
/// Supplementary groups are left out (empty): acting with fewer groups can only be refused
/// more, never allowed more, and procfs's per-process files give their group exactly what they
/// give everyone else (their modes are `S_IRUGO`-style or owner-only), so the outcome is the same.
///
/// `link` may keep the caller's `ns/user` link open ([`UserNsLink`]); `keep` is asked before it
/// keeps one for the first time (the caller's descriptor budget).
pub fn fs_creds(
    procfs: BorrowedFd<'_>,
    tid: u32,
    fsuid: u32,
    fsgid: u32,
    own_user_ns_inode: u64,
    link: &UserNsLink,
    keep: impl FnOnce() -> bool,
) -> io::Result<Creds> {
    if tid == 0 {
        // capget(0) would read this thread's own capabilities.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    let cap_eff = capget_of(tid)?.effective;
    let same_user_ns = cap_eff == 0 || link.user_ns(procfs, tid, keep)? == own_user_ns_inode;
    Ok(Creds {
        uid: [fsuid; 4],
        gid: [fsgid; 4],
        groups: Vec::new(),
        cap_eff,
        same_user_ns,
    })
}

/// The `ns/user` link of one caller, kept open (`O_PATH`) once it has asked twice in a row:
/// reading the link through the descriptor skips the walk of `TID/ns/user` under procfs (0.59
/// against 0.36 µs here, per request of a caller with capabilities).
///
/// Procfs resolves the link at each read from the task its inode names, so the text is that
/// task's user namespace at the time of the read, also after a `setns` or `unshare`. Once the
/// task has exited the read fails and the tid is looked up by path again: a new task that got
/// the same tid is never answered from the old one's link.
#[derive(Default)]
pub struct UserNsLink {
    state: std::sync::Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    kept: Option<(u32, std::sync::Arc<std::os::fd::OwnedFd>)>,
    /// The tid of the last request answered by path.
    missed: u32,
}

impl UserNsLink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a descriptor is kept (one at most, from the first keep on).
    pub fn holds(&self) -> bool {
        self.lock().kept.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The inode of the user namespace of task `tid` (numbered as in `procfs`) now.
    pub fn user_ns(
        &self,
        procfs: BorrowedFd<'_>,
        tid: u32,
        keep: impl FnOnce() -> bool,
    ) -> io::Result<u64> {
        let kept = self
            .lock()
            .kept
            .as_ref()
            .filter(|(t, _)| *t == tid)
            .map(|(_, fd)| fd.clone());
        if let Some(fd) = kept {
            if let Ok(ino) = user_ns_at(fd.as_fd(), "") {
                return Ok(ino);
            }
            // That task has exited: the tid is someone else's now, or no one's.
        }
        let path = format!("{tid}/ns/user");
        let ino = user_ns_at(procfs, &path)?;
        let mut s = self.lock();
        if s.missed != tid {
            s.missed = tid;
            return Ok(ino);
        }
        s.missed = 0;
        // Opened after the read: if the tid changed hands in between, the link names the task
        // that has it now, which is the one later requests with this tid come from.
        if let Ok(fd) = openat(procfs, &path, libc::O_PATH | libc::O_NOFOLLOW) {
            if s.kept.is_some() || keep() {
                s.kept = Some((tid, std::sync::Arc::new(fd)));
            }
        }
        Ok(ino)
    }
}

/// The inode number of the user namespace behind the `ns/user` link at `path`, read from the
/// link's text `user:[N]` (a stat of the link would make nsfs set up a dentry and inode: several
/// times slower). An empty `path` reads the link `dir` was opened on (`O_PATH`).
fn user_ns_at(dir: BorrowedFd<'_>, path: &str) -> io::Result<u64> {
    let c = crate::util::cstring(path.as_bytes())?;
    let mut buf = [0u8; 64];
    // SAFETY: `c` is NUL-terminated; `buf` is writable for `buf.len()` bytes.
    let n = crate::util::cvt_ssize(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|t| t.strip_prefix("user:["))
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{path}: not a user namespace link"),
            )
        })
}

/// The inode of the calling process's user namespace (`stat("/proc/self/ns/user").st_ino`).
/// Call once at start-up, before serving any sandbox.
pub fn own_user_ns_inode() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/user")?.ino())
}

/// Per-thread credential syscalls. 32-bit x86 and arm have separate 32-bit-id variants; the
/// plain numbers there take 16-bit ids.
mod nr {
    #[cfg(not(any(target_arch = "x86", target_arch = "arm")))]
    pub use libc::{
        SYS_getgroups as GETGROUPS, SYS_setfsgid as SETFSGID, SYS_setfsuid as SETFSUID,
        SYS_setgroups as SETGROUPS,
    };
    #[cfg(any(target_arch = "x86", target_arch = "arm"))]
    pub use libc::{
        SYS_getgroups32 as GETGROUPS, SYS_setfsgid32 as SETFSGID, SYS_setfsuid32 as SETFSUID,
        SYS_setgroups32 as SETGROUPS,
    };
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`; version 3 uses two of them (capabilities 0–31, 32–63).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CapSets {
    effective: u64,
    permitted: u64,
    inheritable: u64,
}

/// The capability sets of thread `tid` (0: the calling thread). Anyone may read them.
fn capget_of(tid: u32) -> io::Result<CapSets> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: tid as libc::c_int,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: version 3 takes a header and an array of two data structs; both are valid and
    // writable for the call.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    })?;
    let join = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
    Ok(CapSets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

fn capget() -> io::Result<CapSets> {
    capget_of(0)
}

fn capset(sets: CapSets) -> io::Result<()> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e0, e1) = split(sets.effective);
    let (p0, p1) = split(sets.permitted);
    let (i0, i1) = split(sets.inheritable);
    let data = [
        CapData {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        CapData {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: as in `capget`; the kernel only reads the data array. pid 0 is the calling thread.
    cvt_long(unsafe {
        libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr())
    })?;
    Ok(())
}

fn getgroups() -> io::Result<Vec<u32>> {
    loop {
        // SAFETY: size 0 with a null list only returns the count.
        let n = cvt_long(unsafe {
            libc::syscall(nr::GETGROUPS, 0, std::ptr::null_mut::<libc::gid_t>())
        })?;
        let mut groups = vec![0 as libc::gid_t; n as usize];
        // SAFETY: `groups` has room for `n` gids, the size passed.
        match cvt_long(unsafe {
            libc::syscall(nr::GETGROUPS, n as libc::c_int, groups.as_mut_ptr())
        }) {
            Ok(m) => {
                groups.truncate(m as usize);
                return Ok(groups);
            }
            // The list grew in between (impossible for our own thread, but cheap to handle).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn setgroups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: the kernel reads `groups.len()` gids from the slice's pointer.
    cvt_long(unsafe {
        libc::syscall(nr::SETGROUPS, groups.len() as libc::size_t, groups.as_ptr())
    })?;
    Ok(())
}

/// setfsuid/setfsgid return the previous id and never fail visibly; an invalid id (-1) changes
/// nothing, so calling with -1 reads the current one.
fn fs_id(nr: libc::c_long, id: u32) -> u32 {
    // SAFETY: takes an integer and returns an integer; no memory is involved.
    unsafe { libc::syscall(nr, id as libc::c_long) as u32 }
}

fn set_fs_id(nr: libc::c_long, id: u32) -> io::Result<()> {
    fs_id(nr, id);
    if fs_id(nr, u32::MAX) == id {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    }
}

/// The credentials of this thread that [`assume`] changes.
#[derive(Debug, PartialEq, Eq)]
struct Saved {
    groups: Vec<u32>,
    fsuid: u32,
    fsgid: u32,
    caps: CapSets,
}

impl Saved {
    fn capture() -> io::Result<Saved> {
        Ok(Saved {
            groups: getgroups()?,
            fsuid: fs_id(nr::SETFSUID, u32::MAX),
            fsgid: fs_id(nr::SETFSGID, u32::MAX),
            caps: capget()?,
        })
    }

    /// Puts these credentials back and checks that they are exactly what the thread has.
    fn restore(&self) -> Result<(), String> {
        // Effective set first: it brings back CAP_SETUID/CAP_SETGID needed for the rest.
        capset(self.caps).map_err(|e| format!("capset: {e}"))?;
        set_fs_id(nr::SETFSUID, self.fsuid).map_err(|e| format!("setfsuid {}: {e}", self.fsuid))?;
        set_fs_id(nr::SETFSGID, self.fsgid).map_err(|e| format!("setfsgid {}: {e}", self.fsgid))?;
        setgroups(&self.groups).map_err(|e| format!("setgroups: {e}"))?;
        // setfsuid back to 0 raised the filesystem capabilities of the permitted set into the
        // effective set (capabilities(7)); set it again to exactly what it was.
        capset(self.caps).map_err(|e| format!("capset: {e}"))?;
        let now = Saved::capture().map_err(|e| format!("reading back: {e}"))?;
        if &now != self {
            return Err(format!(
                "credentials differ after restoring: {now:?}, want {self:?}"
            ));
        }
        Ok(())
    }
}

/// The previous credentials of this thread, restored on drop. Not `Send`: it must be dropped on
/// the thread whose credentials it restores.
#[must_use = "dropping the guard restores the daemon's credentials at once"]
#[derive(Debug)]
pub struct CredGuard {
    saved: Saved,
    _this_thread_only: PhantomData<*const ()>,
}

impl Drop for CredGuard {
    fn drop(&mut self) {
        if let Err(e) = self.saved.restore() {
            // A thread left with a caller's identity must never serve another request.
            eprintln!("timens-sys: cannot restore the daemon's credentials ({e}); aborting");
            std::process::abort();
        }
    }
}

/// Switches the calling thread to `creds`' filesystem credentials: supplementary groups, fsgid,
/// fsuid, and an effective capability set equal to the caller's `CapEff` (limited to what this
/// thread may hold), or empty when the caller is in another user namespace. The permitted set
/// is kept, so the guard can restore everything.
///
/// On error nothing is left changed (the partial switch is undone, or the process aborts if
/// that fails).
pub fn assume(creds: &Creds) -> io::Result<CredGuard> {
    let guard = CredGuard {
        saved: Saved::capture()?,
        _this_thread_only: PhantomData,
    };
    // Order matters: setgroups and setfsgid need CAP_SETGID and setfsuid needs CAP_SETUID, which
    // the final capset may drop; setfsuid away from 0 also clears the filesystem capabilities
    // from the effective set, which the capset then sets to exactly what the caller has.
    setgroups(&creds.groups)?;
    set_fs_id(nr::SETFSGID, creds.fsgid())?;
    set_fs_id(nr::SETFSUID, creds.fsuid())?;
    let caps = guard.saved.caps;
    let effective = if creds.same_user_ns {
        creds.cap_eff & caps.permitted
    } else {
        0
    };
    capset(CapSets { effective, ..caps })?;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str =
        "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t4242\nNgid:\t0\nPid:\t4242\n\
PPid:\t1\nTracerPid:\t0\nUid:\t1000\t1001\t1002\t1003\nGid:\t100\t101\t102\t103\nFDSize:\t64\n\
Groups:\t4 24 27 100 \nNStgid:\t4242\nNSpid:\t4242\nCapInh:\t0000000000000000\n\
CapPrm:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";

    #[test]
    fn parses_status_fixture() {
        let c = parse_status(STATUS.as_bytes()).unwrap();
        assert_eq!(c.uid, [1000, 1001, 1002, 1003]);
        assert_eq!(c.gid, [100, 101, 102, 103]);
        assert_eq!(c.groups, vec![4, 24, 27, 100]);
        assert_eq!(c.cap_eff, 0x1ff_ffff_ffff);
        assert!(c.same_user_ns);
        assert_eq!((c.fsuid(), c.fsgid()), (1003, 103));
        assert!(c.has_cap(21)); // CAP_SYS_ADMIN
        assert!(c.has_cap(40));
        assert!(!c.has_cap(41));
        assert!(!c.has_cap(64));
        assert!(!Creds {
            same_user_ns: false,
            ..c
        }
        .has_cap(21));
    }

    #[test]
    fn empty_groups_line() {
        let s = STATUS.replace("Groups:\t4 24 27 100 \n", "Groups:\t\n");
        assert_eq!(
            parse_status(s.as_bytes()).unwrap().groups,
            Vec::<u32>::new()
        );
    }

    #[test]
    fn missing_or_malformed_lines_fail() {
        for (from, to) in [
            ("Uid:\t1000\t1001\t1002\t1003\n", ""),
            ("Gid:\t100\t101\t102\t103\n", ""),
            ("Groups:\t4 24 27 100 \n", ""),
            ("CapEff:\t000001ffffffffff\n", ""),
            ("Uid:\t1000\t1001\t1002\t1003", "Uid:\t1000\t1001\t1002"),
            (
                "Uid:\t1000\t1001\t1002\t1003",
                "Uid:\t1000\t1001\t1002\t1003\t5",
            ),
            ("Gid:\t100", "Gid:\t-1"),
            ("Groups:\t4 ", "Groups:\tx "),
            ("CapEff:\t000001ffffffffff", "CapEff:\tzz"),
        ] {
            let s = STATUS.replace(from, to);
            assert_ne!(s, STATUS);
            assert_eq!(parse_status(s.as_bytes()), None, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn parses_own_status() {
        let status = std::fs::read("/proc/self/status").unwrap();
        let c = parse_status(&status).unwrap();
        // SAFETY: getuid cannot fail and touches no memory.
        assert_eq!(c.uid[0], unsafe { libc::getuid() });
    }
}
