//! Helpers for end-to-end tests of `timens run` sandboxes: finding the built binaries, checking
//! preconditions (skipping with a named reason), a private state directory per test whose daemon
//! is ended on drop, sandboxes kept alive in the background, the kernel oracle, and small
//! parsers of /proc content.
//!
//! Hygiene rules every test follows (see tests/README.md): one fresh state directory per test
//! (so tests run in parallel, each with its own daemon), processes ended by pid only, and
//! timeouts only as protection against hangs.

use crate::harness::{self, Finished};
use serde_json::Value;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Hang protection for one command (a sandbox run, a host run, a status query).
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// `PROC_TIME_INIT_INO`: the inode number of the initial time namespace (spec G2).
pub const INIT_TIME_INUM: u64 = 4_026_531_834;

/// `KTIME_SEC_MAX / 2`: the largest host+offset second count the kernel accepts (spec E9).
pub const HALF_KTIME_SEC_MAX: i64 = 4_611_686_018;

/// The control socket, pid file and log inside a state directory (proto's names).
pub const SOCKET_NAME: &str = "control.sock";
pub const PIDFILE_NAME: &str = "timensfs.pid";

// ---------------------------------------------------------------------------------------------
// Finding the binaries.

/// Where a binary of this workspace is expected: next to each of `hints` (directories), and in
/// the cargo target directory holding the running test executable
/// (`target/<profile>/deps/<test>-<hash>` -> `target/<profile>/<name>`).
pub fn bin_candidates(name: &str, hints: &[&Path]) -> Vec<PathBuf> {
    let mut c: Vec<PathBuf> = hints.iter().map(|d| d.join(name)).collect();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            let p = profile_dir.join(name);
            if !c.contains(&p) {
                c.push(p);
            }
        }
    }
    c
}

/// A workspace binary: `$<env_var>` if set (it must exist), else the first existing candidate of
/// [`bin_candidates`]. The error is a named skip reason (`<name>-bin-missing`,
/// `<name>-not-built`).
pub fn find_bin(name: &str, env_var: &str, hints: &[&Path]) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{name}-bin-missing: {env_var}={} is not a file",
                p.display()
            ))
        };
    }
    let cands = bin_candidates(name, hints);
    cands.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "{name}-not-built: none of {} exists (cargo build, or set {env_var})",
            cands
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// The `timens` command (`$TIMENS_BIN`, else the target directory).
pub fn find_timens(hints: &[&Path]) -> Result<PathBuf, String> {
    find_bin("timens", "TIMENS_BIN", hints)
}

/// The `timensfs` daemon (`$TIMENSFS_BIN`, else the target directory).
pub fn find_timensfs(hints: &[&Path]) -> Result<PathBuf, String> {
    find_bin("timensfs", "TIMENSFS_BIN", hints)
}

/// The two binaries under test.
#[derive(Clone, Debug)]
pub struct Bins {
    pub timens: PathBuf,
    pub timensfs: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// Preconditions.

/// What a test needs beyond root, /dev/fuse and the built binaries.
#[derive(Clone, Copy, Default)]
pub struct Needs {
    /// The kernel's own time namespaces, as the oracle (`unshare -T`).
    pub kernel_oracle: bool,
    /// Programs that must be on PATH (run inside sandboxes and on the host).
    pub tools: &'static [&'static str],
}

/// Whether `tool` is an executable file in one of PATH's directories.
pub fn on_path(tool: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|d| {
        let p = d.join(tool);
        std::fs::metadata(&p)
            .map(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
            .unwrap_or(false)
    })
}

/// Checks every precondition of a sandbox test; the error is a named skip reason.
pub fn preconditions(needs: Needs) -> Result<Bins, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not-root: timens run creates mount namespaces and serves FUSE".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("no-dev-fuse: /dev/fuse does not exist".into());
    }
    if needs.kernel_oracle {
        harness::kernel_timens_support()?;
    }
    for tool in needs.tools {
        if !on_path(tool) {
            return Err(format!("tool-missing: {tool} is not on PATH"));
        }
    }
    Ok(Bins {
        timens: find_timens(&[])?,
        timensfs: find_timensfs(&[])?,
    })
}

// ---------------------------------------------------------------------------------------------
// The state directory and its daemon.

/// A state directory of its own for one test. Nothing is created up front (so a test can check
/// that a refused command line creates nothing). On drop, every timensfs daemon that served it
/// is ended by pid (SIGTERM, then SIGKILL) and the directory is removed, also when the test
/// panics.
pub struct StateDir {
    path: PathBuf,
}

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

impl StateDir {
    /// A unique, not yet existing path under the system's temporary directory.
    pub fn new(test: &str) -> StateDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "timensfs-e2e-{test}-{}-{}-{nanos}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        StateDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pidfile(&self) -> PathBuf {
        self.path.join(PIDFILE_NAME)
    }

    pub fn socket(&self) -> PathBuf {
        self.path.join(SOCKET_NAME)
    }

    /// The pid in the pid file, if any.
    pub fn daemon_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()
    }

    /// Whether `pid` is a live (not zombie) timensfs serving this directory: the pid file of a
    /// killed daemon may name a reused pid, which must never be signalled.
    pub fn is_our_daemon(&self, pid: u32) -> bool {
        if !is_alive(pid) {
            return false;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_timensfs = args
            .first()
            .map(|a0| Path::new(OsStr::from_bytes(a0)).file_name() == Some(OsStr::new("timensfs")))
            .unwrap_or(false);
        let dir = self.path.as_os_str().as_encoded_bytes();
        is_timensfs
            && args
                .windows(2)
                .any(|w| w[0] == b"--state-dir" && w[1] == dir)
    }

    /// Ends every daemon of this directory (by pid, verified), waiting until each is gone: every
    /// live timensfs started with this directory, whether or not it wrote the pid file (two
    /// `timens run` racing to start a daemon start two; a killed daemon's successor overwrites
    /// the file).
    pub fn stop_daemons(&self) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in dir.flatten() {
            let pid = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok());
            if let Some(pid) = pid.filter(|p| self.is_our_daemon(*p)) {
                terminate(pid);
            }
        }
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        self.stop_daemons();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Whether `pid` exists and is not a zombie (daemons are reparented to an init that may be slow
/// to reap them).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(proc_state(&s), Some('Z') | Some('X')),
        Err(_) => false,
    }
}

/// Field 3 (state) of a /proc/PID/stat line.
pub fn proc_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM, up to 2 s to exit, then SIGKILL and up to 2 s more.
pub fn terminate(pid: u32) {
    for (sig, grace) in [(libc::SIGTERM, 2), (libc::SIGKILL, 2)] {
        // SAFETY: kill(2) of a pid the caller has verified.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
        if wait_until(Duration::from_secs(grace), || !is_alive(pid)) {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A test's sandboxes.

/// Everything a sandbox test needs: the binaries and a state directory of its own.
pub struct Env {
    pub bins: Bins,
    pub state: StateDir,
}

impl Env {
    /// Checks the preconditions; on a missing one prints `SKIP <test>: <reason>` and returns
    /// None (the test then returns: never pass silently, never fail for a missing precondition).
    pub fn new(test: &str, needs: Needs) -> Option<Env> {
        match preconditions(needs) {
            Ok(bins) => Some(Env {
                bins,
                state: StateDir::new(test),
            }),
            Err(reason) => {
                eprintln!("SKIP {test}: {reason}");
                None
            }
        }
    }

    /// `timens run --state-dir DIR OPTS -- CMD...`, not yet started.
    pub fn run_cmd<S: AsRef<OsStr>>(&self, opts: &[&str], cmd: &[S]) -> Command {
        let mut c = Command::new(&self.bins.timens);
        c.arg("run").arg("--state-dir").arg(self.state.path());
        c.args(opts).arg("--");
        c.args(cmd);
        c
    }

    /// Runs CMD in a sandbox to completion (stdin /dev/null). Panics on a hang.
    pub fn run<S: AsRef<OsStr>>(&self, opts: &[&str], cmd: &[S]) -> Finished {
        let mut c = self.run_cmd(opts, cmd);
        let f = run(&mut c);
        let _ = self.state.daemon_pid();
        f
    }

    /// `bash -c SCRIPT` in a sandbox; panics unless it exits 0. Returns stdout.
    pub fn bash_ok(&self, opts: &[&str], script: &str) -> String {
        let f = self.run(opts, &["bash", "-c", script]);
        assert!(
            f.status.success(),
            "timens run {opts:?} -- bash -c {script:?}: {}\nstdout: {}\nstderr: {}",
            f.status,
            f.stdout,
            f.stderr
        );
        f.stdout
    }

    /// Starts CMD in a sandbox in the background, stdin/stdout/stderr piped.
    pub fn spawn<S: AsRef<OsStr>>(&self, opts: &[&str], cmd: &[S]) -> Background {
        Background::spawn(self.run_cmd(opts, cmd))
    }

    /// `timens status --json --state-dir DIR`, parsed (panics unless it succeeds).
    pub fn status(&self) -> Vec<Value> {
        self.try_status()
            .unwrap_or_else(|e| panic!("timens status --json: {e}"))
    }

    pub fn try_status(&self) -> Result<Vec<Value>, String> {
        let mut c = Command::new(&self.bins.timens);
        c.args(["status", "--json", "--state-dir"])
            .arg(self.state.path());
        let f = harness::run_with_timeout(&mut c, TIMEOUT)?;
        if !f.status.success() {
            return Err(format!("{}: {}", f.status, f.stderr.trim()));
        }
        match serde_json::from_str::<Value>(&f.stdout) {
            Ok(Value::Array(v)) => Ok(v),
            Ok(other) => Err(format!("not a JSON array: {other}")),
            Err(e) => Err(format!("bad JSON {:?}: {e}", f.stdout)),
        }
    }

    /// The daemon's pid (it must be running).
    pub fn daemon_pid(&self) -> u32 {
        self.state
            .daemon_pid()
            .unwrap_or_else(|| panic!("no pid file at {}", self.state.pidfile().display()))
    }
}

/// Runs a command to completion with [`TIMEOUT`] (stdin /dev/null); panics on a hang.
pub fn run(cmd: &mut Command) -> Finished {
    harness::run_with_timeout(cmd, TIMEOUT).unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Runs `bash -c SCRIPT` on the host; panics unless it exits 0. Returns stdout.
pub fn host_bash_ok(script: &str) -> String {
    let f = run(Command::new("bash").args(["-c", script]));
    assert!(
        f.status.success(),
        "host bash -c {script:?}: {}\nstdout: {}\nstderr: {}",
        f.status,
        f.stdout,
        f.stderr
    );
    f.stdout
}

// ---------------------------------------------------------------------------------------------
// Processes kept alive while the test looks at them.

/// A process started in its own process group with piped stdio. Lines of its stdout arrive on
/// a channel; closing its stdin (`release`) is the agreed signal for scripts that end with
/// `read x`. Dropping it kills the process group by pid (SIGKILL) unless it was reaped.
pub struct Background {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Receiver<Vec<u8>>,
    reaped: Option<ExitStatus>,
}

impl Background {
    pub fn spawn(mut cmd: Command) -> Background {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let (tx, lines) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let (etx, stderr) = std::sync::mpsc::channel();
        if let Some(mut err) = child.stderr.take() {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = err.read_to_end(&mut buf);
                let _ = etx.send(buf);
            });
        }
        Background {
            child,
            stdin,
            lines,
            stderr,
            reaped: None,
        }
    }

    /// The pid of the process started (`timens`, which execs CMD unless `--pid` is given).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of stdout; panics (with what is known) on EOF or after [`TIMEOUT`].
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(l) => l,
            Err(e) => {
                let why = match e {
                    RecvTimeoutError::Timeout => "timeout waiting for a line",
                    RecvTimeoutError::Disconnected => "stdout closed",
                };
                let status = self.child.try_wait().ok().flatten();
                let stderr = if status.is_some() {
                    self.stderr
                        .recv_timeout(Duration::from_secs(1))
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                panic!(
                    "background pid {}: {why}; status {status:?}; stderr: {stderr}",
                    self.pid()
                )
            }
        }
    }

    /// Writes `line` and a newline to its stdin (a process reading requests line by line).
    pub fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stdin already released")
        })?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")
    }

    /// Closes its stdin (a script's `read x` returns).
    pub fn release(&mut self) {
        self.stdin = None;
    }

    /// Releases it and waits for it to exit; returns the rest of stdout and stderr.
    pub fn finish(&mut self) -> Finished {
        self.release();
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => panic!(
                    "background pid {} did not exit within {TIMEOUT:?}",
                    self.pid()
                ),
                Err(e) => panic!("wait for pid {}: {e}", self.pid()),
            }
        };
        self.reaped = Some(status);
        let mut stdout = String::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            stdout.push_str(&l);
            stdout.push('\n');
        }
        let stderr = self
            .stderr
            .recv_timeout(Duration::from_secs(2))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Finished {
            status,
            stdout,
            stderr,
        }
    }

    /// Kills its process group (by pid) now.
    pub fn kill(&mut self) {
        if self.reaped.is_some() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) of the process group this object created (process_group(0): pgid ==
        // pid) and has not reaped yet, so the id cannot have been reused.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.kill();
        if let Ok(s) = self.child.wait() {
            self.reaped = Some(s);
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Makes `cmd`'s child have `fd` (open in this process) as its descriptor `target`.
pub fn inherit_fd_as(cmd: &mut Command, fd: std::os::fd::RawFd, target: std::os::fd::RawFd) {
    // SAFETY: dup2 is async-signal-safe and changes only the child's descriptor table.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            if libc::dup2(fd, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Host pids of the children of `pid` (its main thread's `children` file).
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The host pid of CMD in a `timens run --pid` sandbox: the only child of the `timens` relay.
pub fn pid_sandbox_init(relay: u32) -> u32 {
    // Only the child in the new pid namespace: `timens` may also have a short-lived child that
    // starts the daemon.
    let pidns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let relay_ns = pidns(relay);
    let mut found = Vec::new();
    let ok = wait_until(TIMEOUT, || {
        found = children_of(relay)
            .into_iter()
            .filter(|c| pidns(*c).is_some() && pidns(*c) != relay_ns)
            .collect();
        found.len() == 1
    });
    assert!(
        ok,
        "timens relay {relay} has children {found:?}, expected one"
    );
    found[0]
}

// ---------------------------------------------------------------------------------------------
// The kernel oracle.

/// `unshare -T ARGS...` (util-linux): the kernel's own time namespace.
pub fn kernel_unshare<S: AsRef<OsStr>>(args: &[S]) -> Finished {
    run(Command::new("unshare").arg("-T").args(args))
}

/// Runs `cmd` in a new kernel time namespace whose offsets are written as given, including
/// nanoseconds (util-linux takes whole seconds only): the child calls `unshare(CLONE_NEWTIME)`,
/// writes both records to /proc/self/timens_offsets, and its exec enters the namespace (B4).
pub fn kernel_with_offsets<S: AsRef<OsStr>>(
    monotonic: (i64, i64),
    boottime: (i64, i64),
    cmd: &[S],
) -> Finished {
    let text = format!(
        "monotonic {} {}\nboottime {} {}\n",
        monotonic.0, monotonic.1, boottime.0, boottime.1
    )
    .into_bytes();
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..]);
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls (unshare,
    // open, write, close) on memory prepared before the fork; it allocates nothing.
    unsafe {
        c.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWTIME) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::open(c"/proc/self/timens_offsets".as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, text.as_ptr().cast(), text.len());
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n != text.len() as isize {
                return Err(err);
            }
            Ok(())
        });
    }
    run(&mut c)
}

// ---------------------------------------------------------------------------------------------
// Clocks and /proc content.

/// `clock_gettime(clock)` as (seconds, nanoseconds).
pub fn clock_now(clock: libc::clockid_t) -> (i64, i64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec, ts.tv_nsec)
}

/// The two fields of /proc/uptime, in seconds.
pub fn parse_uptime(text: &str) -> (f64, f64) {
    let mut it = text.split_whitespace().map(|f| {
        f.parse::<f64>()
            .unwrap_or_else(|e| panic!("bad /proc/uptime {text:?}: {e}"))
    });
    match (it.next(), it.next(), it.next()) {
        (Some(up), Some(idle), None) => (up, idle),
        _ => panic!("bad /proc/uptime {text:?}"),
    }
}

/// The `btime` value of /proc/stat content.
pub fn parse_btime(stat: &str) -> i64 {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no btime line in /proc/stat content: {stat:?}"))
}

/// Field `n` (1-based, as in proc(5)) of a /proc/PID/stat line; the command name in
/// parentheses may contain spaces.
pub fn stat_field(stat: &str, n: usize) -> String {
    assert!(n >= 3, "fields 1 and 2 are pid and comm");
    let rest = stat
        .rsplit_once(')')
        .unwrap_or_else(|| panic!("bad stat line {stat:?}"))
        .1;
    rest.split_whitespace()
        .nth(n - 3)
        .unwrap_or_else(|| panic!("stat line has no field {n}: {stat:?}"))
        .to_string()
}

/// /proc/PID/timens_offsets content for the given offsets, in the kernel's
/// `"%-10s %10lld %9ld\n"` format (spec D2).
pub fn offsets_text(monotonic: (i64, i64), boottime: (i64, i64)) -> String {
    format!(
        "{:<10} {:>10} {:>9}\n{:<10} {:>10} {:>9}\n",
        "monotonic", monotonic.0, monotonic.1, "boottime", boottime.0, boottime.1
    )
}

/// `time:[N]` -> N.
pub fn parse_ns_link(text: &str) -> u64 {
    text.trim()
        .strip_prefix("time:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a time namespace link: {text:?}"))
}

/// Number of FUSE mounts in a mountinfo file.
pub fn fuse_mounts(mountinfo_path: &str) -> usize {
    let text = std::fs::read_to_string(mountinfo_path)
        .unwrap_or_else(|e| panic!("read {mountinfo_path}: {e}"));
    text.lines()
        .filter(|l| {
            l.split_once(" - ")
                .and_then(|(_, tail)| tail.split_whitespace().next())
                .is_some_and(|fstype| fstype == "fuse" || fstype.starts_with("fuse."))
        })
        .count()
}

/// The namespace entry of `inum` in a status listing.
pub fn status_entry(status: &[Value], inum: u64) -> Option<&Value> {
    status
        .iter()
        .find(|ns| ns.get("inum").and_then(Value::as_u64) == Some(inum))
}
