//! `ns-churn SECONDS SEED`: time-namespace system calls and virtual /proc files in a loop, the
//! same on the kernel (outside a sandbox) and under the emulation (inside `timens run`, through
//! the clock library), for the torture test.
//!
//! Every operation runs in a forked child (namespace calls change the caller for good) and
//! reports `ERR <op> <errno>` on stdout when a call fails; at the end one line
//! `OPS <count>`. The torture test compares the set of `ERR` kinds with the kernel's.
//!
//! The operations: unshare(CLONE_NEWTIME) then a write of offsets into the pending namespace and
//! a fork into it; clone3(CLONE_NEWTIME); setns into the caller's own `ns/time` and
//! `ns/time_for_children`; vfork + exec and posix_spawn; reads of every virtual file.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const CLONE_NEWTIME: i32 = 0x80;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Reports a failed call of the child; the child exits with 1 so the parent counts it once.
fn fail(op: &str, e: i32) -> ! {
    let _ = writeln!(std::io::stdout(), "ERR {op} {e}");
    let _ = std::io::stdout().flush();
    // SAFETY: _exit in a forked child.
    unsafe { libc::_exit(1) }
}

fn check(op: &str, r: libc::c_long) {
    if r < 0 {
        fail(op, errno());
    }
}

fn read_file(op: &str, path: &str) {
    if let Err(e) = std::fs::read(path) {
        fail(op, e.raw_os_error().unwrap_or(0));
    }
}

fn readlink(op: &str, path: &str) {
    if let Err(e) = std::fs::read_link(path) {
        fail(op, e.raw_os_error().unwrap_or(0));
    }
}

fn wait_child(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for a child of this process.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// Runs `f` in a forked child and waits for it.
fn in_child(f: impl FnOnce()) {
    // SAFETY: the child runs `f` and _exits; the parent only waits.
    match unsafe { libc::fork() } {
        0 => {
            f();
            // SAFETY: _exit in a forked child.
            unsafe { libc::_exit(0) }
        }
        pid if pid > 0 => wait_child(pid),
        _ => {
            let _ = writeln!(std::io::stdout(), "ERR fork {}", errno());
        }
    }
}

fn unshare_write_fork(n: u64) {
    // SAFETY: unshare takes no pointers.
    check("unshare", unsafe { libc::unshare(CLONE_NEWTIME) }
        as libc::c_long);
    let line = format!("monotonic {} 0\nboottime {} 0", n % 5000, 1000 + n % 7000);
    match std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/timens_offsets")
    {
        Ok(mut f) => {
            if let Err(e) = f.write_all(line.as_bytes()) {
                fail("offsets-write", e.raw_os_error().unwrap_or(0));
            }
        }
        Err(e) => fail("offsets-open", e.raw_os_error().unwrap_or(0)),
    }
    in_child(|| {
        read_file("child-uptime", "/proc/uptime");
        read_file("child-offsets", "/proc/self/timens_offsets");
    });
}

fn clone3_newtime() {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
    }
    let args = CloneArgs {
        flags: CLONE_NEWTIME as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: a fork-like clone3 (no CLONE_VM, no stack) with a valid args struct.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match pid {
        0 => {
            read_file("clone3-child-uptime", "/proc/uptime");
            // SAFETY: _exit in the clone3 child.
            unsafe { libc::_exit(0) }
        }
        p if p > 0 => wait_child(p as libc::pid_t),
        _ => fail("clone3", errno()),
    }
}

fn setns_own(link: &str) {
    let f = match std::fs::File::open(link) {
        Ok(f) => f,
        Err(e) => fail("setns-open", e.raw_os_error().unwrap_or(0)),
    };
    // SAFETY: setns takes an fd and a flag.
    check(
        "setns",
        unsafe { libc::setns(f.as_raw_fd(), CLONE_NEWTIME) } as libc::c_long,
    );
    read_file("setns-uptime", "/proc/uptime");
}

fn spawn_true(vfork: bool) {
    let path = CString::new("/bin/true").expect("no NUL");
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    if vfork {
        // vfork as glibc's posix_spawn makes it: clone(CLONE_VM | CLONE_VFORK) on a stack of
        // its own (libc::vfork itself cannot be called safely from Rust).
        extern "C" fn exec_true(arg: *mut libc::c_void) -> libc::c_int {
            // SAFETY: `arg` points to the [path, argv, envp] pointers of the parent's frame,
            // which the parent keeps alive while it is suspended (CLONE_VFORK).
            unsafe {
                let p = &*(arg as *const [*const *const libc::c_char; 3]);
                libc::execve(*p[0], p[1], p[2]);
                libc::_exit(127)
            }
        }
        let mut stack = vec![0u8; 64 * 1024];
        let path_ptr = path.as_ptr();
        let args: [*const *const libc::c_char; 3] = [&path_ptr, argv.as_ptr(), envp.as_ptr()];
        // SAFETY: the child runs `exec_true` on `stack` (which outlives it: the parent is
        // suspended until the child execs or exits) and only execs or exits.
        let pid = unsafe {
            libc::clone(
                exec_true,
                stack.as_mut_ptr().add(stack.len()).cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &args as *const _ as *mut libc::c_void,
            )
        };
        if pid < 0 {
            fail("vfork", errno());
        }
        wait_child(pid);
    } else {
        let mut pid = 0;
        // SAFETY: valid pointers to NUL-terminated arrays; no file actions or attributes.
        let r = unsafe {
            libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                argv.as_ptr() as *const *mut libc::c_char,
                envp.as_ptr() as *const *mut libc::c_char,
            )
        };
        if r != 0 {
            fail("posix_spawn", r);
        }
        wait_child(pid);
    }
}

fn read_virtual() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    for (op, path) in [
        ("read-uptime", "/proc/uptime".to_string()),
        ("read-stat", "/proc/stat".to_string()),
        ("read-pid-stat", "/proc/self/stat".to_string()),
        ("read-tid-stat", format!("/proc/self/task/{tid}/stat")),
        ("read-offsets", "/proc/self/timens_offsets".to_string()),
    ] {
        read_file(op, &path);
    }
    readlink("readlink-time", "/proc/self/ns/time");
    readlink("readlink-tfc", "/proc/self/ns/time_for_children");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let mut seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut ops = 0u64;
    while Instant::now() < end {
        // xorshift: the same sequence of operations for the same seed.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = ops;
        let _ = std::io::stdout().flush();
        match seed % 7 {
            0 => in_child(|| unshare_write_fork(n)),
            1 => in_child(clone3_newtime),
            2 => in_child(|| setns_own("/proc/self/ns/time")),
            3 => in_child(|| setns_own("/proc/self/ns/time_for_children")),
            4 => in_child(|| spawn_true(true)),
            5 => in_child(|| spawn_true(false)),
            _ => in_child(read_virtual),
        }
        ops += 1;
    }
    println!("OPS {ops}");
}
