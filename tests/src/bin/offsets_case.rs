//! `offsets-case`: runs one write case against `/proc/self/timens_offsets` and prints
//! one line of JSON.
//!
//! Usage:
//!   offsets-case --list              print the case names, one per line
//!   offsets-case [--kernel] CASE     run CASE and print its JSON record
//!   offsets-case --batch             run generated cases read from stdin, one JSON
//!                                    line each, printing one record per line
//!
//! With `--kernel` the process first calls `unshare(CLONE_NEWTIME)`, so that
//! `/proc/self/timens_offsets` shows a fresh, writable pending namespace of the real
//! kernel. Without it, the environment must already provide one (the emulation:
//! `timens run --for-children -- offsets-case CASE`).
//!
//! `--batch` (timensfs_tests::fuzz::run_batch) runs each case in a forked child that calls
//! `unshare(CLONE_NEWTIME)` itself, on the host and in a sandbox alike.
//!
//! Exit status: 0 when the case ran (whatever its results), 2 on usage errors,
//! 3 when `--kernel` could not create the namespace.

use timensfs_tests::offsets::{find_case, CASES};

const USAGE: &str =
    "usage: offsets-case --list | offsets-case [--kernel] CASE | offsets-case --batch";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut kernel = false;
    let mut case = None;
    for a in &args {
        match a.as_str() {
            "--list" => {
                for c in CASES {
                    println!("{}", c.name);
                }
                return;
            }
            "--kernel" => kernel = true,
            "--batch" => {
                let stdin = std::io::stdin().lock();
                let stdout = std::io::stdout().lock();
                if let Err(e) = timensfs_tests::fuzz::run_batch(stdin, stdout) {
                    fail(1, &format!("batch: {e}"));
                }
                return;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                for c in CASES {
                    println!("  {:<28} {}", c.name, c.rules);
                }
                return;
            }
            s if s.starts_with('-') => fail(2, &format!("unknown option {s}\n{USAGE}")),
            s if case.is_none() => case = Some(s.to_string()),
            _ => fail(2, USAGE),
        }
    }
    let Some(name) = case else { fail(2, USAGE) };
    let Some(case) = find_case(&name) else {
        fail(2, &format!("unknown case {name:?} (see --list)"))
    };
    if kernel {
        // SAFETY: unshare(2) with a constant flag; this process is single-threaded.
        if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
            fail(
                3,
                &format!(
                    "unshare(CLONE_NEWTIME): {}",
                    std::io::Error::last_os_error()
                ),
            );
        }
    }
    println!("{}", case.run());
}

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("offsets-case: {msg}");
    std::process::exit(code)
}
