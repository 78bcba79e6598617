//! The mount wrappers against the real kernel (root). Each test runs its body in a child process
//! (this test binary again, asked for that one test) that first moves into a mount namespace of
//! its own and makes it a slave of the host's, so nothing here touches the host's mounts; the
//! namespace and every mount in it vanish when the child exits.

mod common;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::MntFlags;
use timens_sys::errno_of;
use timens_sys::mountapi::{
    bind_mount, make_rslave_root, mount_fuse, move_mount_to, new_procfs, open_tree_clone,
    open_tree_clone_at,
};

/// Set in the child to the name of the test it must run.
const CHILD_ENV: &str = "TIMENS_SYS_MOUNTAPI_CHILD";
/// PROC_SUPER_MAGIC
const PROC_MAGIC: i64 = 0x9fa0;

/// In the parent: re-runs this binary for `test` alone and checks that it passed. In the child
/// (the environment names `test`): unshares the mount namespace, makes it rslave, runs `body`.
fn in_own_mount_ns(test: &str, body: fn(&str)) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(test) {
        // Mount namespaces are per task: the harness runs this on one thread, which is the one
        // that moves; /proc/thread-self shows its view.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
        make_rslave_root().expect("make_rslave_root");
        body(test);
        return;
    }
    if !common::require_root(test) {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .output()
        .expect("re-run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "child for {test} failed: {}",
        out.status
    );
    assert!(stdout.contains("1 passed"), "child did not run {test}");
}

/// A fresh directory under the temp dir, removed on drop (after the mounts on it are gone).
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("timens-sys-{test}-{}", std::process::id()));
        std::fs::create_dir(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn read_at(dir: &impl AsFd, name: &str) -> String {
    let fd = nix::fcntl::openat(
        Some(dir.as_fd().as_raw_fd()),
        name,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("openat {name}: {e}"));
    // SAFETY: openat returned a new descriptor that nothing else owns.
    let mut f = unsafe { File::from_raw_fd(fd) };
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

fn is_procfs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).unwrap().filesystem_type().0 as i64 == PROC_MAGIC
}

fn uptime_looks_right(s: &str) {
    let fields: Vec<f64> = s.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert_eq!(fields.len(), 2, "uptime: {s:?}");
    assert!(fields[0] > 0.0);
}

#[test]
fn new_procfs_reads_by_fd_and_when_moved() {
    in_own_mount_ns("new_procfs_reads_by_fd_and_when_moved", |test| {
        let proc = match new_procfs() {
            Ok(fd) => fd,
            Err(e) if errno_of(&e) == Some(libc::ENOSYS) => {
                common::skip(test, "kernel without fsopen/fsmount (Linux < 5.2)");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        uptime_looks_right(&read_at(&proc, "uptime"));
        let self_pid: u32 = read_at(&proc, "self/stat")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            self_pid,
            std::process::id(),
            "a procfs of our own pid namespace"
        );

        let dir = TempDir::new(test);
        move_mount_to(proc.as_fd(), &dir.0).expect("move_mount_to");
        assert!(is_procfs(&dir.0));
        uptime_looks_right(&std::fs::read_to_string(dir.0.join("uptime")).unwrap());
        let mountinfo = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(dir.0.to_str().unwrap()))
            .expect("the procfs in this namespace's mountinfo");
        assert!(line.contains(" - proc "), "{line}");
        assert!(line.contains("nosuid,nodev,noexec"), "{line}");
    });
}

#[test]
fn open_tree_clone_of_proc() {
    in_own_mount_ns("open_tree_clone_of_proc", |test| {
        let tree = match open_tree_clone(Path::new("/proc"), true) {
            Ok(fd) => fd,
            Err(e) if errno_of(&e) == Some(libc::ENOSYS) => {
                common::skip(test, "kernel without open_tree (Linux < 5.2)");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        uptime_looks_right(&read_at(&tree, "uptime"));

        let root = File::open("/").unwrap();
        let tree = open_tree_clone_at(root.as_fd(), "proc", false).expect("open_tree_clone_at");
        uptime_looks_right(&read_at(&tree, "uptime"));
        // Empty path: a clone of the mount the fd itself is.
        let again =
            open_tree_clone_at(tree.as_fd(), "", false).expect("open_tree_clone_at empty path");
        uptime_looks_right(&read_at(&again, "uptime"));

        let e = open_tree_clone(Path::new("/nonexistent-timens-sys"), false).unwrap_err();
        assert_eq!(errno_of(&e), Some(libc::ENOENT));
        assert!(e.to_string().contains("/nonexistent-timens-sys"), "{e}");
    });
}

#[test]
fn bind_mount_in_own_namespace() {
    in_own_mount_ns("bind_mount_in_own_namespace", |test| {
        let dir = TempDir::new(test);
        bind_mount(Path::new("/proc"), &dir.0, false).expect("bind_mount");
        assert!(is_procfs(&dir.0));
        uptime_looks_right(&std::fs::read_to_string(dir.0.join("uptime")).unwrap());
    });
}

#[test]
fn mount_fuse_only_in_own_namespace() {
    in_own_mount_ns("mount_fuse_only_in_own_namespace", |test| {
        if !Path::new("/dev/fuse").exists() {
            common::skip(test, "no /dev/fuse");
            return;
        }
        let subtype = format!("timenssystest{}", std::process::id());
        let dir = TempDir::new(test);
        let fuse = match mount_fuse(&dir.0, "timens-sys-test", &subtype) {
            Ok(fd) => fd,
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => {
                common::skip(test, "fuse filesystem not available (ENODEV)");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        // Nobody answers INIT: never touch the mount point, only read the mount tables.
        let ours = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        let fstype = format!(" - fuse.{subtype} timens-sys-test ");
        assert!(
            ours.contains(&fstype),
            "not in this namespace's mountinfo:\n{ours}"
        );
        let parent = std::fs::read_to_string(format!(
            "/proc/{}/mountinfo",
            std::os::unix::process::parent_id()
        ))
        .expect("the parent's mountinfo");
        assert!(
            !parent.contains(&subtype),
            "leaked into the parent's mount namespace"
        );
        drop(fuse);
        nix::mount::umount2(&dir.0, MntFlags::MNT_DETACH).expect("umount2");
        let ours = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        assert!(!ours.contains(&subtype));

        let e = mount_fuse(&dir.0, "x", "bad,subtype").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    });
}
