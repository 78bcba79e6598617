//! Running helper processes with a timeout and probing the kernel oracle.

use serde_json::Value;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Output of a process run by [`run_with_timeout`].
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut p) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

fn kill_child(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain kill(2) of the process group created for this child
    // (process_group(0) below makes its pgid equal to its pid).
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `cmd` with piped stdout/stderr in its own process group. On timeout the child
/// (and its process group) is killed by pid and an error naming the timeout is returned.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Finished, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_child(&mut child);
                let stderr = err.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
                return Err(format!(
                    "timeout after {timeout:?}, killed pid {}; stderr: {}",
                    child.id(),
                    tail(&String::from_utf8_lossy(&stderr))
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                kill_child(&mut child);
                return Err(format!("wait: {e}"));
            }
        }
    };
    // A grandchild that keeps the pipes open must not hang the test.
    let grace = Duration::from_secs(2);
    let stdout = out.recv_timeout(grace).unwrap_or_default();
    let stderr = err.recv_timeout(grace).unwrap_or_default();
    Ok(Finished {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Last few lines of a (possibly long) diagnostic output.
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Runs one `offsets-case` invocation and parses its JSON record.
pub fn run_case(cmd: &mut Command, case: &str, timeout: Duration) -> Result<Value, String> {
    let f = run_with_timeout(cmd, timeout)?;
    if !f.status.success() {
        return Err(format!("exit {}; stderr: {}", f.status, tail(&f.stderr)));
    }
    let line = f
        .stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("no JSON on stdout; stderr: {}", tail(&f.stderr)))?;
    let v: Value = serde_json::from_str(line).map_err(|e| format!("bad JSON {line:?}: {e}"))?;
    if v.get("case").and_then(Value::as_str) != Some(case) {
        return Err(format!("record is for another case: {line}"));
    }
    Ok(v)
}

/// The part of a case record that must match between kernel and emulation:
/// results, the file content after the case (host-clock-independent form when the
/// case provides one), and the bytes read by read-format cases.
pub fn comparable(record: &Value) -> Value {
    let after = record
        .get("after_rel")
        .or_else(|| record.get("after"))
        .cloned()
        .unwrap_or(Value::Null);
    serde_json::json!({
        "results": record.get("results").cloned().unwrap_or(Value::Null),
        "after": after,
        "read": record.get("read").cloned().unwrap_or(Value::Null),
    })
}

/// Checks that this process can use the kernel's time namespaces as the oracle:
/// running as root, `/proc/self/ns/time` exists, and `unshare(CLONE_NEWTIME)` works in a
/// forked child. Returns a named skip reason otherwise.
pub fn kernel_timens_support() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not-root: the kernel oracle needs CAP_SYS_ADMIN and CAP_SYS_TIME".into());
    }
    if !Path::new("/proc/self/ns/time").exists() {
        return Err("no-time-namespaces: /proc/self/ns/time does not exist".into());
    }
    // SAFETY: the child calls only the async-signal-safe unshare(2) and _exit(2), so
    // forking from the multi-threaded test harness is sound.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            let rc = libc::unshare(libc::CLONE_NEWTIME);
            libc::_exit(if rc == 0 { 0 } else { 1 });
        }
    }
    if pid < 0 {
        return Err(format!("fork-failed: {}", std::io::Error::last_os_error()));
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer; `pid` is our child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    if rc != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err("unshare-newtime-failed: unshare(CLONE_NEWTIME) failed in a child".into());
    }
    Ok(())
}
