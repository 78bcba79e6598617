//! `timens mount --pid PID`: give a running process's mount namespace the /proc overlay.
//!
//! Idempotent: when the namespace already has a served overlay nothing changes. When it has a
//! dead one (the daemon was restarted), the dead mount is detached and a new overlay serves the
//! *same* namespace (same `time:[N]`, same offsets). Otherwise a new namespace is created.

use clap::Args;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use crate::run::os_err;
use crate::{daemon, die, overlay, EXIT_USAGE};
use procview::Clock;
use timens_proto::{Offset, Request, Response};
use timens_sys::mountapi;

#[derive(Args, Debug)]
pub struct MountArgs {
    /// The process whose mount namespace (and pid namespace) gets the overlay.
    #[arg(long)]
    pid: u32,
    /// CLOCK_MONOTONIC offset in seconds, for a new namespace.
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    monotonic: Option<String>,
    /// CLOCK_BOOTTIME offset in seconds, for a new namespace.
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    boottime: Option<String>,
    /// Do not load the clock library into the namespace's new processes.
    #[arg(long)]
    no_preload: bool,
    /// Label shown by `timens status` (default `mount:PID`).
    #[arg(long)]
    label: Option<String>,
    /// The daemon's state directory.
    #[arg(long, default_value = timens_proto::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

fn lock_state_dir(state_dir: &std::path::Path) -> File {
    let path = state_dir.join("attach.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| os_err(&format!("opening {}", path.display()), e));
    // SAFETY: flock on a valid fd; held until the file is closed at exit.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        os_err(
            &format!("locking {}", path.display()),
            std::io::Error::last_os_error(),
        );
    }
    f
}

/// The filesystem type of the mount a process sees at /proc.
fn proc_fstype(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    // The last mount at /proc is the one on top.
    text.lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/proc"))
        .and_then(|l| l.split(" - ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .map(str::to_string)
}

fn mntns_of(pid: u32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap_or(0)
}

pub fn mount(args: MountArgs) -> ! {
    let offset = |name: &str, v: &Option<String>, clock: Clock| match v {
        Some(text) => crate::run::checked_offset(name, text, clock),
        None => procview::Timespec::ZERO,
    };
    let monotonic = offset("monotonic", &args.monotonic, Clock::Monotonic);
    let boottime = offset("boottime", &args.boottime, Clock::Boottime);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        die(
            1,
            "mount needs root (it joins another process's namespaces)",
        );
    }
    let mntns = mntns_of(args.pid);
    if mntns == 0 {
        die(EXIT_USAGE, format!("--pid {}: no such process", args.pid));
    }
    if mntns == mntns_of(std::process::id()) {
        die(
            EXIT_USAGE,
            format!(
                "--pid {}: the process shares this mount namespace; the overlay goes into a sandbox's own mount namespace (unshare -m)",
                args.pid
            ),
        );
    }
    if let Err(e) = daemon::ensure(&args.state_dir) {
        die(1, e);
    }
    // One attach at a time per state directory: a restarted daemon re-attaches by itself (with
    // this same command) and a user may run it at the same moment; the second one then finds
    // the namespace served and changes nothing.
    let _lock = lock_state_dir(&args.state_dir);
    let namespaces = match daemon::connect(&args.state_dir)
        .and_then(|s| timens_proto::call(&s, &Request::Status, &[]))
    {
        Ok(Response::Status { namespaces }) => namespaces,
        Ok(other) => die(1, format!("unexpected answer from timensfs: {other:?}")),
        Err(e) => os_err("asking timensfs for status", e),
    };
    let existing = namespaces.iter().find(|n| n.mntns == mntns);
    let ours = proc_fstype(args.pid).as_deref() == Some("fuse.timensfs");
    if let Some(ns) = existing {
        if ns.served && ours {
            println!("time:[{}] already attached", ns.inum);
            std::process::exit(0);
        }
    }
    let attach_inum = existing.filter(|_| ours).map(|n| n.inum);
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| format!("mount:{}", args.pid));
    let req = Request::CreateSandbox {
        monotonic: Offset::new(monotonic.sec, monotonic.nsec),
        boottime: Offset::new(boottime.sec, boottime.nsec),
        for_children: false,
        label,
        anchor_pid: Some(args.pid),
        attach_inum,
        self_bound: true,
    };
    let mut handles = overlay::StateHandles::open(&args.state_dir, !args.no_preload)
        .unwrap_or_else(|e| os_err("opening the daemon's state directory", e));
    let open_ns = |kind: &str| -> OwnedFd {
        File::open(format!("/proc/{}/ns/{kind}", args.pid))
            .unwrap_or_else(|e| os_err(&format!("opening /proc/{}/ns/{kind}", args.pid), e))
            .into()
    };
    let (mnt, pidns) = (open_ns("mnt"), open_ns("pid"));
    let join = |fd: &OwnedFd, kind: libc::c_int, what: &str| {
        // SAFETY: a valid namespace fd; this process is single-threaded.
        if unsafe { libc::setns(fd.as_raw_fd(), kind) } != 0 {
            os_err(&format!("setns({what})"), std::io::Error::last_os_error());
        }
    };
    // The mounting child must live in the target's pid namespace (FUSE numbers pids in the
    // mounter's): join it for children, then fork.
    join(&pidns, libc::CLONE_NEWPID, "pid");
    // SAFETY: single-threaded; the child only mounts and exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        os_err("fork", std::io::Error::last_os_error());
    }
    if child == 0 {
        // Connect while this process still sees the host's /proc (the target's /proc may be a
        // dead overlay), then join the target's mount namespace.
        handles
            .preconnect()
            .unwrap_or_else(|e| os_err("connecting to timensfs", e));
        join(&mnt, libc::CLONE_NEWNS, "mnt");
        // A dead overlay (ENOTCONN) stays where it is, covered by the new one: unmounting it
        // first would show the sandbox the host's /proc (and no clock library) in between.
        handles.inject_preload();
        let procfs = mountapi::new_procfs()
            .unwrap_or_else(|e| os_err("mounting a procfs for the namespace", e));
        let inum = overlay::attach(handles, procfs, &req);
        println!("time:[{inum}] attached to process {}", args.pid);
        std::process::exit(0);
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    std::process::exit(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        1
    })
}
