//! `Condvar::wait_timeout` of Rust's standard library, timed (issue 3: with a +10-day monotonic
//! offset it must take its timeout, not 10 days).
//!
//! std computes the deadline from CLOCK_MONOTONIC (through libc's `clock_gettime`, shifted in a
//! sandbox) and sleeps with `syscall(SYS_futex, FUTEX_WAIT_BITSET)` until that absolute
//! deadline, which the clock library translates back to host time.
//!
//! Usage: `condvar-wait MILLIS`. Prints the CLOCK_MONOTONIC reading (seconds) before the wait,
//! then `timed_out=true|false`, then how long the wait took by CLOCK_REALTIME (seconds), which no
//! time namespace shifts.
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn main() {
    let millis: u64 = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(m)) => m,
        _ => {
            eprintln!("usage: condvar-wait MILLIS");
            std::process::exit(2);
        }
    };
    let pair = (Mutex::new(()), Condvar::new());
    let guard = pair.0.lock().unwrap_or_else(|e| e.into_inner());
    println!("{:.9}", monotonic());
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let start = Instant::now();
    let (_guard, result) = pair
        .1
        .wait_timeout(guard, Duration::from_millis(millis))
        .unwrap_or_else(|e| e.into_inner());
    let by_instant = start.elapsed();
    let took = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        - wall;
    println!("timed_out={}", result.timed_out());
    println!("{:.3}", took.as_secs_f64());
    // Instant (the shifted CLOCK_MONOTONIC) agrees: the offset is constant within a process.
    if by_instant < Duration::from_millis(millis) {
        eprintln!("Instant says the wait took {by_instant:?}, less than its timeout");
        std::process::exit(1);
    }
}
