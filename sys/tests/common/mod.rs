//! Preconditions shared by the integration tests: each test that needs root or a kernel feature
//! checks it and skips with a printed, named reason (never passes silently, never fails for a
//! missing precondition).
#![allow(dead_code)] // each test binary uses a different subset

/// Prints why `test` is skipped.
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIP {test}: {reason}");
}

/// True when running as root; otherwise prints a skip line for `test`.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        skip(test, "needs root (euid 0)");
        false
    }
}

/// The inode number in a `/proc/self/ns/<ns>` link text such as `pid:[4026531836]`.
pub fn ns_inode(ns: &str) -> Option<u64> {
    let text = std::fs::read_link(format!("/proc/self/ns/{ns}")).ok()?;
    let text = text.to_str()?;
    text.split_once('[')?.1.strip_suffix(']')?.parse().ok()
}

/// PROC_PID_INIT_INO and PROC_USER_INIT_INO (include/linux/proc_ns.h): the inode numbers of the
/// initial pid and user namespaces.
pub fn in_initial_pid_and_user_ns() -> bool {
    ns_inode("pid") == Some(0xEFFF_FFFC) && ns_inode("user") == Some(0xEFFF_FFFD)
}

/// The calling thread's id.
pub fn gettid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}
