//! `/proc/uptime` and `/proc/stat`: rendered from the sandbox's own files, read through fds
//! kept open (pread at 0 regenerates a seq_file), with the reader's boottime offset.

use fuser::Errno;
use std::io;
use std::os::fd::OwnedFd;

use crate::pio;
use crate::state::{Daemon, NsRef, Sandbox};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RootFile {
    Uptime,
    Stat,
}

impl RootFile {
    pub fn name(self) -> &'static str {
        match self {
            RootFile::Uptime => "uptime",
            RootFile::Stat => "stat",
        }
    }
}

/// Nanoseconds of the host's boot time (REALTIME − BOOTTIME), for btime with sub-second offsets.
fn host_boot_nsec() -> i64 {
    let r = pio::clock_now(libc::CLOCK_REALTIME);
    let b = pio::clock_now(libc::CLOCK_BOOTTIME);
    r.sub_normalized(b).nsec
}

/// The sandbox's own root file, read through a kept-open fd (pread at 0 regenerates it).
fn read_host(sb: &Sandbox, which: RootFile) -> io::Result<Vec<u8>> {
    let cell = match which {
        RootFile::Uptime => &sb.host_uptime,
        RootFile::Stat => &sb.host_stat,
    };
    let fd: &Option<OwnedFd> =
        cell.get_or_init(|| pio::open_at(sb.procfs(), which.name(), libc::O_RDONLY).ok());
    // Both are single-record seq_files (`uptime`, and `stat` through single_open_size).
    match fd {
        Some(fd) => pio::pread_record(fd),
        None => pio::read_record_at(sb.procfs(), which.name()),
    }
}

/// The file's content for the reading task `tid` (sandbox numbering), J1 and J3.
pub fn render(daemon: &Daemon, sb: &Sandbox, which: RootFile, tid: u32) -> Result<Vec<u8>, Errno> {
    render_in(daemon, sb, which, daemon.caller_ns(sb, tid).time)
}

/// The file's content as a reader in namespace `ns` sees it now.
pub fn render_in(
    daemon: &Daemon,
    sb: &Sandbox,
    which: RootFile,
    ns: NsRef,
) -> Result<Vec<u8>, Errno> {
    let host =
        read_host(sb, which).map_err(|e| Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let off = daemon.offsets(ns).boottime;
    match which {
        RootFile::Uptime => {
            let now = pio::clock_now(libc::CLOCK_BOOTTIME).add_normalized(off);
            procview::render_uptime(&host, now).map_err(|_| Errno::EIO)
        }
        RootFile::Stat => {
            procview::rewrite_stat_btime(&host, off, host_boot_nsec()).map_err(|_| Errno::EIO)
        }
    }
}

/// How long the first field of `/proc/uptime` keeps its value for a reader in `ns`: the time to
/// the next centisecond of that namespace's boottime (J1 truncates to centiseconds).
pub fn uptime_unchanged_for(daemon: &Daemon, ns: NsRef) -> std::time::Duration {
    const CENTISECOND: i64 = 10_000_000;
    let now = pio::clock_now(libc::CLOCK_BOOTTIME).add_normalized(daemon.offsets(ns).boottime);
    let into = now.nsec.rem_euclid(CENTISECOND);
    std::time::Duration::from_nanos((CENTISECOND - into) as u64)
}
