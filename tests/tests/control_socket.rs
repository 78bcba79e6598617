//! The control socket under hostile clients (issue 19): the socket is mode 0666, so an
//! unprivileged user must not be able to grow the daemon or stop new sandboxes
//! (fs/src/control/server.rs has the limits).
//!
//! Each test has a daemon of its own (started by a first `timens run` in a private state
//! directory, ended by pid on drop); the misbehaving client is `control-client`
//! (src/bin/control_client.rs) run as uid 65534, in its own process group, killed on drop.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use timensfs_tests::sandbox::{find_bin, Background, Env, Needs};

const NOBODY: u32 = 65534;
/// Connections the unprivileged client holds.
const HELD: usize = 3000;
/// The daemon's thread budget (issue 19: a fixed number, at most 64).
const MAX_THREADS: usize = 64;

fn needs() -> Needs {
    Needs {
        kernel_oracle: false,
        tools: &["true"],
    }
}

/// An environment whose daemon is running (a first sandbox started it), and the
/// `control-client` binary; None (after printing SKIP) when a precondition is missing.
fn env_with_daemon(test: &str) -> Option<(Env, std::path::PathBuf)> {
    let env = Env::new(test, needs())?;
    let client = match find_bin("control-client", "CONTROL_CLIENT_BIN", &[]) {
        Ok(p) => p,
        Err(reason) => {
            eprintln!("SKIP {test}: {reason}");
            return None;
        }
    };
    let f = env.run(&[], &["true"]);
    assert!(f.status.success(), "first run: {} {}", f.status, f.stderr);
    Some((env, client))
}

fn daemon_threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("daemon {pid} status: {e}"))
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: line")
}

fn daemon_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("daemon {pid} fds: {e}"))
        .count()
}

/// The most threads and fds the daemon had, sampled every 10 ms until dropped or `take`n.
struct Sampler {
    stop: Arc<AtomicBool>,
    threads: Arc<AtomicUsize>,
    fds: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(AtomicUsize::new(0));
        let fds = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, threads, fds) = (stop.clone(), threads.clone(), fds.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    threads.fetch_max(daemon_threads(pid), Ordering::SeqCst);
                    fds.fetch_max(daemon_fds(pid), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Sampler {
            stop,
            threads,
            fds,
            thread: Some(thread),
        }
    }

    /// (most threads, most fds) seen.
    fn take(mut self) -> (usize, usize) {
        self.end();
        (
            self.threads.load(Ordering::SeqCst),
            self.fds.load(Ordering::SeqCst),
        )
    }

    fn end(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.end();
    }
}

/// Room for `n` more fds in this process and its children (the client raises its soft limit
/// to the hard one, which root sets here).
fn raise_fd_limit(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to fill in, then to read.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_max < n {
            lim.rlim_max = n;
        }
        if lim.rlim_cur < n {
            lim.rlim_cur = n;
        }
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
            0,
            "setrlimit(RLIMIT_NOFILE, {n}): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// `control-client ARGS` as uid/gid 65534, in the background.
fn as_nobody(client: &std::path::Path, args: &[&str]) -> Background {
    let mut c = Command::new(client);
    c.args(args).uid(NOBODY).gid(NOBODY);
    Background::spawn(c)
}

/// A raw request line on a new connection (as root); the answer line, parsed.
fn ask(env: &Env, line: &str) -> Value {
    let s = UnixStream::connect(env.state.socket()).expect("connect to the control socket");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    (&s).write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("answer {answer:?}: {e}"))
}

/// An unprivileged user holds 3,000 connections, each having sent one byte, and replaces each
/// one the daemon closes every second: the daemon keeps a fixed number of threads (≤ 64) and
/// fds, and `timens run -- true` still works. Prints the figures.
#[test]
fn an_unprivileged_flood_neither_grows_the_daemon_nor_stops_timens_run() {
    let Some((env, client)) = env_with_daemon("control_flood") else {
        return;
    };
    let pid = env.daemon_pid();
    let (threads_before, fds_before) = (daemon_threads(pid), daemon_fds(pid));
    raise_fd_limit(HELD as u64 + 1024);
    let socket = env.state.socket();
    let socket = socket.to_str().expect("UTF-8 state dir");
    let sampler = Sampler::start(pid);
    let t = Instant::now();
    let mut hog = as_nobody(&client, &["hold", socket, &HELD.to_string(), "1000"]);
    assert_eq!(hog.line(), format!("connected {HELD}"));
    let connect_time = t.elapsed();
    // Held for a while (the daemon's deadline is 2 s: the client's replacements are at work).
    std::thread::sleep(Duration::from_secs(3));
    let (threads_held, fds_held) = sampler.take();
    let sampler = Sampler::start(pid);
    let t = Instant::now();
    let run = env.run(&[], &["true"]);
    let run_time = t.elapsed();
    let (threads_run, _) = sampler.take();
    assert!(
        run.status.success(),
        "timens run -- true with {HELD} connections held: {} {}",
        run.status,
        run.stderr
    );
    let end = hog.finish();
    assert!(
        end.status.success(),
        "control-client: {} {}",
        end.status,
        end.stderr
    );
    eprintln!(
        "{HELD} connections by uid {NOBODY} (opened in {connect_time:?}, {}): daemon threads \
         {threads_before} before, at most {threads_held} while held, at most {threads_run} \
         during `timens run -- true`; fds {fds_before} before, at most {fds_held} while held; \
         `timens run -- true` took {run_time:?}",
        end.stdout.trim()
    );
    assert!(
        threads_held <= MAX_THREADS && threads_run <= MAX_THREADS,
        "daemon threads: {threads_held} while held, {threads_run} during timens run (at most \
         {MAX_THREADS})"
    );
    // 32 connections per non-root uid, plus a few accepted and not yet closed.
    assert!(
        fds_held <= fds_before + 64,
        "daemon fds: {fds_held} while {HELD} connections were held, {fds_before} before"
    );
    assert!(
        matches!(ask(&env, "{\"op\":\"ping\"}\n").get("reply"), Some(Value::String(r)) if r == "pong"),
        "no pong after the flood"
    );
}

/// A request over the size limit gets an EMSGSIZE answer and is closed; the daemon answers the
/// next one.
#[test]
fn an_oversized_request_is_refused_and_the_daemon_answers_the_next() {
    let Some((env, _)) = env_with_daemon("control_oversize") else {
        return;
    };
    let s = UnixStream::connect(env.state.socket()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // 128 KiB without a newline, from another thread: the daemon stops reading at 64 KiB.
    let w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = (&w).write_all(&vec![b' '; 128 * 1024]);
    });
    let mut answer = Vec::new();
    let closed = match (&s).read_to_end(&mut answer) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() == Some(libc::ECONNRESET),
    };
    writer.join().unwrap();
    assert!(closed, "the oversized request's connection was not closed");
    let text = String::from_utf8_lossy(&answer);
    let first: Value = serde_json::from_str(text.lines().next().unwrap_or(""))
        .unwrap_or_else(|e| panic!("answer {text:?}: {e}"));
    assert_eq!(
        first.get("errno").and_then(Value::as_i64),
        Some(libc::EMSGSIZE as i64),
        "answer to an oversized request: {first}"
    );
    let pong = ask(&env, "{\"op\":\"ping\"}\n");
    assert_eq!(
        pong.get("reply").and_then(Value::as_str),
        Some("pong"),
        "{pong}"
    );
}

/// An unprivileged connection that sends one byte and nothing more is answered ETIMEDOUT and
/// closed after the daemon's deadline (2 s), not held for ever.
#[test]
fn a_silent_unprivileged_connection_is_closed_after_the_deadline() {
    let Some((env, client)) = env_with_daemon("control_silent") else {
        return;
    };
    let socket = env.state.socket();
    let mut idle = as_nobody(&client, &["idle", socket.to_str().unwrap(), "15000"]);
    let end = idle.finish();
    assert!(
        end.status.success(),
        "control-client: {} {}",
        end.status,
        end.stderr
    );
    let mut lines = end.stdout.lines();
    let first = lines.next().unwrap_or("");
    let ms: u64 = first
        .strip_prefix("closed_after_ms ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the daemon kept a silent connection open: {}", end.stdout));
    let answer: Value = serde_json::from_str(lines.next().unwrap_or(""))
        .unwrap_or_else(|e| panic!("answer {:?}: {e}", end.stdout));
    eprintln!("silent connection closed after {ms} ms with {answer}");
    assert_eq!(
        answer.get("errno").and_then(Value::as_i64),
        Some(libc::ETIMEDOUT as i64),
        "{answer}"
    );
    assert!(
        (1500..10_000).contains(&ms),
        "closed after {ms} ms (deadline 2 s)"
    );
}
