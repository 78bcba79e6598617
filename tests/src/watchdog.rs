//! A D-state watchdog for tests that load the daemon: any task that waits uninterruptibly on one
//! of the test's own FUSE connections (or any thread of the test's daemon) for longer than
//! [`STUCK_AFTER`], without running in between (its context switches unchanged), is a failure. The watchdog then aborts the test's own connections
//! (`/sys/fs/fuse/connections/N/abort`) so the machine recovers, and the test reports what was
//! stuck where.
//!
//! "The test's own connections" are those that appeared after the watchdog started (FUSE numbers
//! them by the device of their mount): tests that use a watchdog run one at a time.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a task may stay in D state.
pub const STUCK_AFTER: Duration = Duration::from_secs(2);
const CONNECTIONS: &str = "/sys/fs/fuse/connections";

/// Mounts fusectl on its usual place if it is not there yet (the watchdog needs `abort`).
fn ensure_fusectl() {
    if std::path::Path::new(CONNECTIONS)
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some())
    {
        return;
    }
    let _ = std::process::Command::new("mount")
        .args(["-t", "fusectl", "fusectl", CONNECTIONS])
        .stderr(std::process::Stdio::null())
        .status();
}

fn connections() -> HashSet<u32> {
    std::fs::read_dir(CONNECTIONS)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The FUSE connection serving `pid`'s `/proc`, if `/proc` is a FUSE mount there.
fn proc_connection(pid: &str) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let dash = f.iter().position(|x| *x == "-")?;
        (f.get(4) == Some(&"/proc") && f.get(dash + 1)?.starts_with("fuse"))
            .then(|| f[2].split(':').nth(1)?.parse().ok())
            .flatten()
    })
}

fn first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Aborts every connection in `ours` that still has requests waiting; returns their numbers.
fn abort_waiting(ours: &HashSet<u32>) -> Vec<u32> {
    let mut aborted = Vec::new();
    for c in ours {
        let waiting = first_line(&format!("{CONNECTIONS}/{c}/waiting"));
        if waiting.parse::<u64>().is_ok_and(|w| w > 0) {
            let _ = std::fs::write(format!("{CONNECTIONS}/{c}/abort"), "1");
            aborted.push(*c);
        }
    }
    aborted
}

pub struct Watchdog {
    stop: Arc<AtomicBool>,
    before: HashSet<u32>,
    reports: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching; `daemon` gives the pid of the test's daemon whenever asked (it may start
    /// later, and be restarted).
    pub fn start(daemon: impl Fn() -> Option<u32> + Send + 'static) -> Watchdog {
        ensure_fusectl();
        let before = connections();
        let stop = Arc::new(AtomicBool::new(false));
        let reports: Arc<Mutex<Vec<String>>> = Default::default();
        let thread = {
            let (stop, reports, before) = (stop.clone(), reports.clone(), before.clone());
            std::thread::spawn(move || {
                // Per task in D state: since when, and its context switches then. A task that
                // switched since is not stuck: it slept, ran and slept again (the notifier
                // sends one invalidation after another, each waiting a moment).
                let mut since: HashMap<String, (Instant, u64)> = HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    let ours: HashSet<u32> = connections().difference(&before).copied().collect();
                    let daemon = daemon().map(|p| p.to_string());
                    let mut in_d = HashSet::new();
                    for task in d_state_tasks() {
                        let (pid, tid) = (&task.0, &task.1);
                        let watched = daemon.as_deref() == Some(pid.as_str())
                            || proc_connection(pid).is_some_and(|c| ours.contains(&c));
                        if !watched {
                            continue;
                        }
                        let key = format!("{pid}/{tid}");
                        let switches = context_switches(pid, tid);
                        let entry = since
                            .entry(key.clone())
                            .or_insert_with(|| (Instant::now(), switches));
                        if entry.1 != switches {
                            *entry = (Instant::now(), switches);
                        }
                        let t0 = entry.0;
                        in_d.insert(key.clone());
                        if t0.elapsed() > STUCK_AFTER {
                            let comm = first_line(&format!("/proc/{pid}/task/{tid}/comm"));
                            let stack = kernel_stack(pid, tid);
                            let backtraces = daemon.as_deref().map(backtraces);
                            let others = fuse_waiters()
                                .into_iter()
                                .chain(d_state_tasks())
                                .collect::<std::collections::BTreeSet<_>>()
                                .iter()
                                .map(|(p, t)| {
                                    format!(
                                        "\n  {p}/{t} {}: {}",
                                        first_line(&format!("/proc/{p}/task/{t}/comm")),
                                        kernel_stack(p, t)
                                    )
                                })
                                .collect::<String>();
                            let aborted = abort_waiting(&ours);
                            reports.lock().unwrap().push(format!(
                                "task {key} ({comm}) in D state for over {STUCK_AFTER:?}: \
                                 {stack}; aborted connections {aborted:?}; tasks in the \
                                 kernel's FUSE or path-walk code, or in D state:{others}\ndaemon threads: {}",
                                backtraces.unwrap_or_default()
                            ));
                            since.remove(&key);
                        }
                    }
                    since.retain(|k, _| in_d.contains(k));
                }
            })
        };
        Watchdog {
            stop,
            before,
            reports,
            thread: Some(thread),
        }
    }

    /// What got stuck so far.
    pub fn reports(&self) -> Vec<String> {
        self.reports.lock().unwrap().clone()
    }

    /// Stops watching; aborts any of the test's connections still waiting (so nothing stays
    /// stuck after the test) and returns every report.
    pub fn finish(mut self) -> Vec<String> {
        self.stop_thread();
        self.reports()
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop_thread();
        let ours: HashSet<u32> = connections().difference(&self.before).copied().collect();
        let aborted = abort_waiting(&ours);
        if !aborted.is_empty() {
            eprintln!("watchdog: aborted FUSE connections {aborted:?} left waiting");
        }
    }
}

/// How often a task has been switched out, voluntarily or not.
fn context_switches(pid: &str, tid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The innermost frames of a task's kernel stack.
fn kernel_stack(pid: &str, tid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stack"))
        .unwrap_or_default()
        .lines()
        .take(8)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where every thread of the daemon is: name, state, the system call it is in
/// (`/proc/PID/task/TID/syscall`) and its kernel stack. (Not gdb: attaching to a process with a
/// thread in D state waits for that thread forever, and a tracer killed meanwhile leaves the
/// process stopped.)
fn backtraces(pid: &str) -> String {
    let mut out = String::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let tid = t.file_name().to_string_lossy().into_owned();
        let dir = format!("/proc/{pid}/task/{tid}");
        let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
        let state = crate::sandbox::proc_state(&stat).unwrap_or('?');
        let syscall = first_line(&format!("{dir}/syscall"));
        let syscall = syscall.split_whitespace().next().unwrap_or("");
        out.push_str(&format!(
            "\n  {tid} {} {state} syscall {syscall}: {}",
            first_line(&format!("{dir}/comm")),
            kernel_stack(pid, &tid)
        ));
    }
    out
}

/// (pid, tid) of every task whose kernel stack is in FUSE or in a path walk, whatever its state
/// (a task waits for a FUSE answer interruptibly, in S state, until it gets a signal).
fn fuse_waiters() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (pid, tid) in tasks() {
        let stack =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stack")).unwrap_or_default();
        if [
            "fuse_",
            "lookup_slow",
            "path_openat",
            "d_alloc_parallel",
            "iterate_dir",
        ]
        .iter()
        .any(|m| stack.contains(m))
        {
            out.push((pid, tid));
        }
    }
    out
}

/// (pid, tid) of every task.
fn tasks() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            out.push((pid.clone(), t.file_name().to_string_lossy().into_owned()));
        }
    }
    out
}

/// (pid, tid) of every task in D state now.
fn d_state_tasks() -> Vec<(String, String)> {
    tasks()
        .into_iter()
        .filter(|(pid, tid)| {
            let stat =
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
            crate::sandbox::proc_state(&stat) == Some('D')
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_outside_fuse_has_no_proc_connection() {
        // This test process's /proc is the kernel's.
        assert_eq!(proc_connection("self"), None);
    }
}
