//! Per-thread credentials against the real kernel (root). Every switch happens in a thread of
//! its own; the guard puts the thread back before it ends.

mod common;

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};

use timens_sys::creds::{assume, own_user_ns_inode, parse_status, read_creds, Creds, UserNsLink};

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_SYS_ADMIN: u32 = 21;

fn nobody() -> Creds {
    Creds {
        uid: [65534; 4],
        gid: [65534; 4],
        groups: vec![65534],
        cap_eff: 0,
        same_user_ns: true,
    }
}

/// The calling thread's credentials as the kernel shows them.
fn thread_creds() -> Creds {
    parse_status(&std::fs::read("/proc/thread-self/status").unwrap()).unwrap()
}

/// What pid 1 looks like to the calling thread: (environ, exe, stat).
fn pid1_access() -> (
    io::Result<File>,
    io::Result<std::path::PathBuf>,
    io::Result<File>,
) {
    (
        File::open("/proc/1/environ"),
        std::fs::read_link("/proc/1/exe"),
        File::open("/proc/1/stat"),
    )
}

fn pid1_is_root_owned() -> bool {
    std::fs::read("/proc/1/status")
        .ok()
        .and_then(|s| parse_status(&s))
        .is_some_and(|c| c.uid == [0; 4])
}

#[test]
fn nobody_is_refused_while_other_threads_keep_root() {
    let test = "nobody_is_refused_while_other_threads_keep_root";
    if !common::require_root(test) {
        return;
    }
    if !pid1_is_root_owned() {
        common::skip(
            test,
            "pid 1 is not owned by root here, so nobody's EACCES proves nothing",
        );
        return;
    }
    let (environ, exe, stat) = pid1_access();
    if environ.is_err() || exe.is_err() || stat.is_err() {
        common::skip(
            test,
            "root itself cannot read /proc/1/environ or /proc/1/exe here",
        );
        return;
    }
    let before = thread_creds();
    let barrier = Arc::new(Barrier::new(2));

    let b = barrier.clone();
    let switched = std::thread::spawn(move || {
        let guard = assume(&nobody()).expect("assume nobody");
        let now = thread_creds();
        assert_eq!((now.fsuid(), now.fsgid()), (65534, 65534));
        assert_eq!(now.groups, vec![65534]);
        assert_eq!(now.cap_eff, 0);
        assert_eq!(now.uid[0], 0, "only the filesystem uid changes");
        b.wait(); // the other thread checks while this one is nobody

        let (environ, exe, stat) = pid1_access();
        assert_eq!(
            environ.unwrap_err().raw_os_error(),
            Some(libc::EACCES),
            "environ as nobody"
        );
        assert_eq!(
            exe.unwrap_err().raw_os_error(),
            Some(libc::EACCES),
            "exe as nobody"
        );
        stat.expect("stat is world-readable");
        b.wait(); // the other thread has finished its checks

        drop(guard);
        let (environ, exe, stat) = pid1_access();
        environ.expect("environ after the guard dropped");
        exe.expect("exe after the guard dropped");
        stat.expect("stat after the guard dropped");
        thread_creds()
    });

    let b = barrier;
    let bystander = std::thread::spawn(move || {
        b.wait();
        let (environ, exe, stat) = pid1_access();
        let creds = thread_creds();
        b.wait();
        environ.expect("environ in another thread meanwhile");
        exe.expect("exe in another thread meanwhile");
        stat.expect("stat in another thread meanwhile");
        creds
    });

    let during = bystander.join().expect("bystander thread");
    let after = switched.join().expect("switched thread");
    assert_eq!(
        during, before,
        "another thread kept the daemon's credentials"
    );
    assert_eq!(after, before, "the guard restored everything");
    assert_eq!(thread_creds(), before);
}

#[test]
fn effective_capabilities_follow_the_caller() {
    let test = "effective_capabilities_follow_the_caller";
    if !common::require_root(test) {
        return;
    }
    let before = thread_creds();
    if !before.has_cap(CAP_DAC_OVERRIDE) {
        common::skip(test, "this root has no CAP_DAC_OVERRIDE to hand on");
        return;
    }
    std::thread::spawn(move || {
        let caller = Creds {
            cap_eff: 1 << CAP_DAC_OVERRIDE,
            ..nobody()
        };
        {
            let _guard = assume(&nobody()).expect("assume nobody");
            let e = File::open("/proc/self/environ").unwrap_err();
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EACCES),
                "root's 0400 file as nobody"
            );
        }
        {
            let _guard = assume(&caller).expect("assume nobody + CAP_DAC_OVERRIDE");
            // setfsuid away from 0 cleared CAP_DAC_OVERRIDE; the capset put exactly it back.
            assert_eq!(thread_creds().cap_eff, 1 << CAP_DAC_OVERRIDE);
            File::open("/proc/self/environ").expect("root's 0400 file with CAP_DAC_OVERRIDE");
        }
        assert_eq!(thread_creds(), before);
        {
            let other_ns = Creds {
                same_user_ns: false,
                cap_eff: u64::MAX,
                ..nobody()
            };
            let _guard = assume(&other_ns).expect("assume a caller of another user namespace");
            assert_eq!(
                thread_creds().cap_eff,
                0,
                "no capabilities across user namespaces"
            );
        }
        assert_eq!(thread_creds(), before);
        {
            // Root with all its capabilities: a round trip that changes nothing.
            let _guard = assume(&before).expect("assume root");
            assert_eq!(thread_creds(), before);
        }
        assert_eq!(thread_creds(), before);
    })
    .join()
    .expect("switching thread");
}

#[test]
fn read_creds_of_own_thread_and_of_a_missing_one() {
    let test = "read_creds_of_own_thread_and_of_a_missing_one";
    if !common::require_root(test) {
        return;
    }
    let procfs = File::open("/proc").unwrap();
    let own_ns = own_user_ns_inode().unwrap();
    let c = read_creds(procfs.as_fd(), common::gettid(), own_ns).unwrap();
    assert_eq!(c.uid, [0; 4]);
    assert!(c.same_user_ns);
    assert!(c.has_cap(CAP_SYS_ADMIN));
    assert_eq!(c, thread_creds());
    // Beyond PID_MAX_LIMIT (4 Mi): never a task.
    let e = read_creds(procfs.as_fd(), 0x3fff_ffff, own_ns).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}

/// Kills and reaps the child when dropped, so a failing assertion leaves no process behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn read_creds_of_another_user_namespace() {
    let test = "read_creds_of_another_user_namespace";
    if !common::require_root(test) {
        return;
    }
    let mut cmd = Command::new("sleep");
    cmd.arg("30").stdin(Stdio::null());
    // SAFETY: unshare is async-signal-safe and the closure touches no shared state; it runs in
    // the forked child before exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).map_err(io::Error::from)
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => Reaped(c),
        Err(e) => {
            common::skip(test, &format!("cannot create a user namespace here ({e})"));
            return;
        }
    };
    let procfs = File::open("/proc").unwrap();
    let c = read_creds(procfs.as_fd(), child.0.id(), own_user_ns_inode().unwrap()).unwrap();
    assert!(!c.same_user_ns);
    // Seen from the initial user namespace, ids are the global ones: still root.
    assert_eq!(c.uid, [0; 4]);
    assert!(
        !c.has_cap(CAP_SYS_ADMIN),
        "no capability counts across user namespaces"
    );
}

/// The inode of the user namespace `/proc/PID/ns/user` names now.
fn ns_of(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/user"))
        .ok()
        .map(|m| m.ino())
}

#[test]
fn a_kept_user_ns_link_follows_its_task_into_a_new_namespace_and_ends_with_it() {
    let test = "a_kept_user_ns_link_follows_its_task_into_a_new_namespace_and_ends_with_it";
    if !common::require_root(test) {
        return;
    }
    // A child that, told to, enters a new user namespace under the same pid (exec of
    // unshare(1), which execs sleep).
    let mut child = Reaped(
        Command::new("sh")
            .args(["-c", "read x; exec unshare -U sleep 30"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let procfs = File::open("/proc").unwrap();
    let own = own_user_ns_inode().unwrap();
    let link = UserNsLink::new();
    let taken = std::cell::Cell::new(0);
    let keep = || {
        taken.set(taken.get() + 1);
        true
    };
    // First by path; the second request in a row keeps the link, the third reads through it.
    assert_eq!(link.user_ns(procfs.as_fd(), pid, keep).unwrap(), own);
    assert!(!link.holds());
    assert_eq!(link.user_ns(procfs.as_fd(), pid, keep).unwrap(), own);
    assert!(link.holds(), "a second request in a row keeps the link");
    assert_eq!(taken.get(), 1, "keeping took one descriptor of the budget");
    assert_eq!(link.user_ns(procfs.as_fd(), pid, keep).unwrap(), own);

    use std::io::Write;
    child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let t = std::time::Instant::now();
    while ns_of(pid) == Some(own) {
        if t.elapsed() > std::time::Duration::from_secs(5) {
            common::skip(test, "the child could not enter a new user namespace here");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let new = ns_of(pid).expect("the child still runs");
    assert_ne!(new, own);
    let never = || panic!("no second descriptor is taken");
    assert_eq!(
        link.user_ns(procfs.as_fd(), pid, never).unwrap(),
        new,
        "the kept link names the task's namespace at the time of the read"
    );

    let _ = child.0.kill();
    let _ = child.0.wait();
    let e = link.user_ns(procfs.as_fd(), pid, never).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOENT),
        "an exited task is looked up by path, and is gone"
    );
}
