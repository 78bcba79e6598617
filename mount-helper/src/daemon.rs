//! Finding, or starting, the timensfs daemon.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn connect(state_dir: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(timens_proto::socket_path(state_dir))
}

fn ping(state_dir: &Path) -> bool {
    connect(state_dir)
        .and_then(|s| timens_proto::call(&s, &timens_proto::Request::Ping, &[]))
        .map(|r| matches!(r, timens_proto::Response::Pong { .. }))
        .unwrap_or(false)
}

/// The daemon binary: `$TIMENSFS_BIN`, else next to this executable, else on PATH.
fn daemon_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TIMENSFS_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(me) = std::env::current_exe() {
        let sibling = me.with_file_name("timensfs");
        if sibling.exists() {
            return sibling;
        }
    }
    PathBuf::from("timensfs")
}

/// Makes sure a daemon answers on `state_dir`, starting one (detached, logging to the state
/// directory, exiting by itself when idle) if none does.
pub fn ensure(state_dir: &Path) -> Result<(), String> {
    if ping(state_dir) {
        return Ok(());
    }
    std::fs::create_dir_all(state_dir)
        .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
    let log_path = state_dir.join(timens_proto::LOG_NAME);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let bin = daemon_binary();
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("--state-dir")
        .arg(state_dir)
        .arg("--idle-exit")
        .arg("30");
    // The daemon outlives the command: it must not keep the caller's open files (a lock held
    // on an fd, a pipe a test harness waits on).
    // SAFETY: close_range is async-signal-safe and touches only this child's descriptor table
    // (stdin/out/err are already in place when pre_exec runs).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // Detach: a new session, and a grandchild so the daemon is never the command's child.
    // SAFETY: fork in a single-threaded process; the child only calls async-signal-safe
    // functions (setsid, fork via Command's own spawn path, _exit).
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => return Err(format!("fork: {}", io::Error::last_os_error())),
        0 => {
            // SAFETY: setsid has no preconditions.
            unsafe { libc::setsid() };
            let code = match cmd.spawn() {
                Ok(_) => 0,
                Err(_) => 127,
            };
            // SAFETY: leave without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        child => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(child, &mut status, 0) };
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 127 {
                return Err(format!("cannot start the daemon {}", bin.display()));
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ping(state_dir) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(format!(
        "the daemon {} did not come up within 10 s (see {})",
        bin.display(),
        log_path.display()
    ))
}
