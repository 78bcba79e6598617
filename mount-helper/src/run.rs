//! `timens run`: a sandbox whose /proc is the overlay and whose first process is CMD.
//!
//! Steps, in order (each comment says why):
//! 1. validate everything and make sure a daemon answers (nothing is changed before this);
//! 2. with `--pid`, a new pid namespace: the parent stays outside and relays CMD's exit status;
//! 3. a private mount namespace (rslave: the host's mounts still reach the sandbox, nothing of
//!    the sandbox reaches the host; the host's /proc is never touched);
//! 4. the sandbox's own procfs: a fresh one for a new pid namespace, else a clone of /proc;
//! 5. the FUSE overlay mounted over /proc *from inside the sandbox's pid namespace*, so FUSE
//!    reports request pids in the sandbox's numbering; its fd goes to the daemon with the procfs;
//! 6. the procfs attached under the overlay at /proc/.timens/proc, and the static directories
//!    (sys, fs, …) bind-mounted over their stubs so paths like /proc/sys stay the kernel's;
//! 7. exec CMD.

use clap::Args;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::{daemon, die, offset::parse_offset, overlay, EXIT_USAGE};
use procview::{Clock, Timespec};
use timens_proto::{Offset, Request};
use timens_sys::mountapi;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// CLOCK_MONOTONIC offset in seconds (integer or SECS.NANOS, may be negative).
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    monotonic: Option<String>,
    /// CLOCK_BOOTTIME offset in seconds (integer or SECS.NANOS, may be negative).
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    boottime: Option<String>,
    /// Also give the sandbox its own pid namespace (CMD runs as pid 1).
    #[arg(long)]
    pid: bool,
    /// Leave CMD in its current time namespace and give it a new, writable time_for_children
    /// (write /proc/$$/timens_offsets, then start children).
    #[arg(long)]
    for_children: bool,
    /// The daemon's state directory.
    #[arg(long, default_value = timens_proto::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Do not load the clock library into the sandbox's processes (only /proc is virtualised).
    #[arg(long)]
    no_preload: bool,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    cmd: Vec<std::ffi::OsString>,
}

fn offset_arg(name: &str, v: &Option<String>, clock: Clock) -> Timespec {
    match v {
        Some(text) => checked_offset(name, text, clock),
        None => Timespec::ZERO,
    }
}

/// Parses an offset and applies the kernel's range check against the host clock (E9); a bad
/// one ends the command with exit status 2, before anything is changed.
pub fn checked_offset(name: &str, text: &str, clock: Clock) -> Timespec {
    let t = parse_offset(text)
        .unwrap_or_else(|e| die(EXIT_USAGE, format!("invalid --{name} value: {e}")));
    // E9: the kernel refuses offsets that put the clock below 0 or beyond KTIME_SEC_MAX/2.
    let max = timens::write::KTIME_SEC_MAX;
    let id = match clock {
        Clock::Monotonic => libc::CLOCK_MONOTONIC,
        Clock::Boottime => libc::CLOCK_BOOTTIME,
    };
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid out-pointer.
    unsafe { libc::clock_gettime(id, &mut now) };
    let tp = Timespec::new(now.tv_sec, now.tv_nsec).add_normalized(t);
    if t.sec > max || t.sec < -max || tp.sec < 0 || tp.sec > max / 2 {
        die(
            EXIT_USAGE,
            format!(
                "--{name} {text} is out of range: this host's {name} clock is at {} s, so the offset must be between {} and {} seconds",
                now.tv_sec,
                -now.tv_sec,
                max / 2 - now.tv_sec
            ),
        );
    }
    t
}

pub fn os_err(step: &str, e: impl std::fmt::Display) -> ! {
    die(1, format!("{step}: {e}"))
}

pub fn run(args: RunArgs) -> ! {
    let monotonic = offset_arg("monotonic", &args.monotonic, Clock::Monotonic);
    let boottime = offset_arg("boottime", &args.boottime, Clock::Boottime);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        die(
            1,
            "run needs root (it creates mount namespaces and serves /proc through FUSE)",
        );
    }
    if let Err(e) = daemon::ensure(&args.state_dir) {
        die(1, e);
    }
    let label = format!(
        "run:{}",
        Path::new(&args.cmd[0])
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    if args.pid {
        // SAFETY: unshare has no memory-safety preconditions.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            os_err("unshare(CLONE_NEWPID)", std::io::Error::last_os_error());
        }
        relay_child();
    }
    setup_sandbox(&args, monotonic, boottime, &label);
    exec(&args.cmd)
}

static CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Forks; the child returns (and becomes pid 1 of the new pid namespace), the parent forwards
/// terminating signals to it and exits with its status (128+N when killed by signal N).
fn relay_child() {
    // SAFETY: single-threaded here; the child continues normally.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        os_err("fork", std::io::Error::last_os_error());
    }
    if pid == 0 {
        return;
    }
    CHILD.store(pid, std::sync::atomic::Ordering::Relaxed);
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        // SAFETY: installing a handler that only calls kill (async-signal-safe).
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            os_err("waitpid", std::io::Error::last_os_error());
        }
        if libc::WIFEXITED(status) {
            std::process::exit(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            std::process::exit(128 + libc::WTERMSIG(status));
        }
    }
}

fn setup_sandbox(args: &RunArgs, monotonic: Timespec, boottime: Timespec, label: &str) {
    // Everything from the state directory is taken before the mount namespace changes.
    let handles = overlay::StateHandles::open(&args.state_dir, !args.no_preload)
        .unwrap_or_else(|e| os_err("opening the daemon's state directory", e));
    // SAFETY: unshare has no memory-safety preconditions.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        os_err("unshare(CLONE_NEWNS)", std::io::Error::last_os_error());
    }
    mountapi::make_rslave_root().unwrap_or_else(|e| os_err("making / rslave", e));
    handles.inject_preload();
    let procfs = if args.pid {
        mountapi::new_procfs()
            .unwrap_or_else(|e| os_err("mounting a procfs for the new pid namespace", e))
    } else {
        // A clone of the host's /proc keeps its submounts (binfmt_misc).
        mountapi::open_tree_clone(Path::new("/proc"), true)
            .unwrap_or_else(|e| os_err("cloning /proc", e))
    };
    let req = Request::CreateSandbox {
        monotonic: Offset::new(monotonic.sec, monotonic.nsec),
        boottime: Offset::new(boottime.sec, boottime.nsec),
        for_children: args.for_children,
        label: label.to_string(),
        anchor_pid: None,
        attach_inum: None,
        self_bound: true,
    };
    overlay::attach(handles, procfs, &req);
}

fn exec(cmd: &[std::ffi::OsString]) -> ! {
    let argv: Vec<CString> = cmd
        .iter()
        .map(|a| {
            CString::new(a.as_bytes())
                .unwrap_or_else(|_| die(EXIT_USAGE, "an argument contains a NUL byte"))
        })
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: argv is a NULL-terminated array of valid C strings that outlive the call.
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    let e = std::io::Error::last_os_error();
    let code = if e.raw_os_error() == Some(libc::ENOENT) {
        127
    } else {
        126
    };
    die(
        code,
        format!("failed to execute {}: {e}", cmd[0].to_string_lossy()),
    )
}
