//! `race-write-fork ROUNDS`: a `timens_offsets` writer and a forker racing on one pending time
//! namespace, ROUNDS times. Runs the same on the kernel (outside a sandbox) and under the
//! emulation (inside `timens run`, where the clock library emulates unshare).
//!
//! Each round: process P unshares a new time namespace (pending: no member yet), then at one
//! signal P forks a child C (C enters it, B1, which freezes it, B2) while the main process writes
//! `monotonic OFFSET 0` to `/proc/P/timens_offsets`. C reads its offsets file and its clock at
//! birth and again once the write returned. The kernel's rule, checked every round:
//! - the write succeeded: C saw the written offset from its first read on (the write came
//!   before the entry), in the file and in its clock;
//! - the write failed with EACCES: C never saw it (the entry came first) and kept the offsets the
//!   namespace was created with;
//! - nothing else: any other result, or offsets that change under C, is a violation.
//!
//! Prints one line `accepted=N refused=N` and exits 0, or prints the first violation and
//! exits 1.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NS: i64 = 1_000_000_000;

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned by nothing else.
    unsafe {
        (
            std::fs::File::from(OwnedFd::from_raw_fd(fds[0])),
            std::fs::File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    }
}

fn byte(mut f: &std::fs::File) -> Option<u8> {
    let mut b = [0u8];
    match f.read(&mut b) {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

/// CLOCK_MONOTONIC minus CLOCK_REALTIME (which no time namespace shifts; MONOTONIC_RAW is), in nanoseconds.
/// Both through libc: the clock library's when it is loaded. Apart from the NTP slew between the
/// two clocks and any step of the wall clock (measured once at start, [`BASE`]), this is the monotonic offset applied.
fn clock_diff() -> i64 {
    let mut mono = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut raw = mono;
    // SAFETY: valid out-pointers.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut mono);
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut raw);
    }
    (mono.tv_sec - raw.tv_sec) * NS + (mono.tv_nsec - raw.tv_nsec)
}

static BASE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// The monotonic offset this process's clock applies beyond the one at start, in nanoseconds.
fn clock_shift() -> i64 {
    clock_diff() - BASE.load(std::sync::atomic::Ordering::Relaxed)
}

/// The monotonic offset in seconds from `/proc/self/timens_offsets`.
fn file_offset() -> i64 {
    let text = std::fs::read_to_string("/proc/self/timens_offsets").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("monotonic"))
                .then(|| w.next().and_then(|v| v.parse().ok()))
                .flatten()
        })
        .unwrap_or(i64::MIN)
}

/// C: reports its offsets at birth and after the write, as four numbers.
fn child(done: &std::fs::File, report: &mut std::fs::File) -> ! {
    // The clock first: under the emulation the file read goes to the daemon, which would
    // register the entry before anything else could.
    let c1 = clock_shift();
    let f1 = file_offset();
    let _ = byte(done);
    let (f2, c2) = (file_offset(), clock_shift());
    let _ = writeln!(report, "{f1} {c1} {f2} {c2}");
    // SAFETY: _exit ends this forked child without running the parent's destructors.
    unsafe { libc::_exit(0) }
}

/// P: one pending namespace per round, forked into at the go signal.
fn forker(
    go: &std::fs::File,
    ready: &mut std::fs::File,
    done: &std::fs::File,
    report: &std::fs::File,
) -> ! {
    while byte(go) == Some(b'u') {
        // SAFETY: unshare takes no pointers.
        if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            let _ = ready.write_all(&[b'E', e as u8]);
            break;
        }
        let _ = ready.write_all(b"r");
        if byte(go) != Some(b'f') {
            break;
        }
        // SAFETY: fork in a single-threaded process; the child only reads files and exits.
        match unsafe { libc::fork() } {
            0 => child(done, &mut report.try_clone().expect("dup")),
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                unsafe { libc::waitpid(pid, &mut status, 0) };
            }
            _ => break,
        }
    }
    // SAFETY: as in `child`.
    unsafe { libc::_exit(0) }
}

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    BASE.store(clock_diff(), std::sync::atomic::Ordering::Relaxed);
    let (go_r, mut go_w) = pipe();
    let (ready_r, mut ready_w) = pipe();
    let (done_r, mut done_w) = pipe();
    let (report_r, report_w) = pipe();
    // SAFETY: fork before any thread exists; the child runs `forker`, which never returns.
    let p = unsafe { libc::fork() };
    assert!(p >= 0, "fork failed");
    if p == 0 {
        drop((go_w, ready_r, done_w, report_r));
        forker(&go_r, &mut ready_w, &done_r, &report_w);
    }
    drop((go_r, ready_w, report_w));
    let mut reports = std::io::BufReader::new(report_r);
    let (mut accepted, mut refused) = (0u64, 0u64);
    let mut violation = None;
    // A new namespace starts with its creator's time_for_children's offsets (A4): those of the
    // previous round's namespace.
    let mut before = 0;
    for round in 0..rounds {
        go_w.write_all(b"u").expect("go");
        match byte(&ready_r) {
            Some(b'r') => {}
            Some(b'E') => {
                let e = byte(&ready_r).unwrap_or(0);
                violation = Some(format!("round {round}: unshare failed in P: errno {e}"));
                break;
            }
            other => {
                violation = Some(format!("round {round}: P answered {other:?}"));
                break;
            }
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{p}/timens_offsets"))
            .expect("open timens_offsets");
        let want = 1000 + round as i64;
        let line = format!("monotonic {want} 0");
        // The race: P forks at this byte while this process writes.
        go_w.write_all(b"f").expect("go");
        // SAFETY: writes from a valid buffer of the given length.
        let r = unsafe { libc::write(f.as_raw_fd(), line.as_ptr().cast(), line.len()) };
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let _ = f.flush();
        done_w.write_all(b"d").expect("done");
        let mut text = String::new();
        std::io::BufRead::read_line(&mut reports, &mut text).expect("report");
        let v: Vec<i64> = text
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        let [f1, c1, f2, c2] = v[..] else {
            violation = Some(format!("round {round}: child report {text:?}"));
            break;
        };
        let near = |shift: i64, sec: i64| (shift - sec * NS).abs() < NS / 2;
        let ok = if r == line.len() as isize {
            accepted += 1;
            let ok = f1 == want && f2 == want && near(c1, want) && near(c2, want);
            before = want;
            ok
        } else if r < 0 && errno == libc::EACCES {
            refused += 1;
            f1 == before && f2 == before && near(c1, before) && near(c2, before)
        } else {
            false
        };
        if !ok {
            // Which rule failed, in words first: the torture workload keeps only the first line
            // of stderr, with its digits masked.
            let rule = if r == line.len() as isize {
                if f1 != want || f2 != want {
                    "accepted write not in the child's file"
                } else {
                    "accepted write not in the child's clock"
                }
            } else if r < 0 && errno == libc::EACCES {
                if f1 != before || f2 != before {
                    "refused write but the child's file changed"
                } else {
                    "refused write but the child's clock changed"
                }
            } else {
                "write failed with an errno the kernel does not give here"
            };
            violation = Some(format!(
                "{rule}; before {before}, 
round {round}: write of {want} returned {r} (errno {errno}); the child \
                 saw file {f1} -> {f2}, clock shift {c1} ns -> {c2} ns"
            ));
            break;
        }
    }
    drop(go_w);
    let mut status = 0;
    // SAFETY: waits for P, forked above.
    unsafe { libc::waitpid(p, &mut status, 0) };
    println!("accepted={accepted} refused={refused}");
    if let Some(v) = violation {
        println!("VIOLATION {v}");
        eprintln!("VIOLATION {v}");
        std::process::exit(1);
    }
}
