//! One sandbox cannot change another's namespace (DESIGN "Failure and attack surface"), and a
//! process that is not in a sandbox is shown from inside it as the kernel shows it: in its own
//! (here the initial) time namespace (spec D1, G1, C2).
//!
//! Each test has a state directory (and so a daemon) of its own; see `timensfs_tests::sandbox`.

use timensfs_tests::sandbox::{
    self, kernel_unshare, offsets_text, parse_ns_link, Background, Env, Needs, StateDir,
};

/// The raw control-socket client (tests/src/bin/ns_client.rs).
const NS_CLIENT: &str = env!("CARGO_BIN_EXE_ns-client");

const BASH: Needs = Needs {
    kernel_oracle: false,
    tools: &["bash", "cat", "readlink"],
};

/// Sandbox B: a `--for-children` shell that writes `boottime 7 0` into its pending namespace,
/// prints its pid and its namespace's inum, waits on stdin, then prints its offsets.
fn start_b(env: &Env) -> (Background, u32, u64) {
    let mut b = env.spawn(
        &["--for-children"],
        &[
            "bash",
            "-c",
            "echo 'boottime 7 0' > /proc/$$/timens_offsets; echo $$; \
             readlink /proc/$$/ns/time_for_children; read -r _; cat /proc/$$/timens_offsets",
        ],
    );
    let pid: u32 = b.line().trim().parse().expect("B's pid");
    let inum = parse_ns_link(&b.line());
    (b, pid, inum)
}

/// From sandbox A (plain, `--for-children` and `--pid`), root writes both clocks of B's
/// process's timens_offsets, by the path /proc/<pid> and through the hidden procfs. B's offsets,
/// read inside B and in status, do not change. (With `--pid`, B's pid does not exist in A.)
#[test]
fn a_sandbox_cannot_change_another_sandboxs_offsets() {
    let Some(env) = Env::new("a_sandbox_cannot_change_another", BASH) else {
        return;
    };
    let (mut b, b_pid, b_inum) = start_b(&env);
    let expected_b = offsets_text((0, 0), (7, 0));
    let script = format!(
        "for f in /proc/{b_pid}/timens_offsets /proc/.timens/proc/{b_pid}/timens_offsets; do \
           echo 'monotonic 5 0' > $f; echo 'boottime 9 0' > $f; echo 'monotonic 11 0' > $f; \
         done; true"
    );
    for mode in [&[][..], &["--for-children"][..], &["--pid"][..]] {
        let a = env.run(mode, &["bash", "-c", &script]);
        assert!(a.status.success(), "A {mode:?}: {} {}", a.status, a.stderr);
        let status = env.status();
        let e = sandbox::status_entry(&status, b_inum)
            .unwrap_or_else(|| panic!("status lost B ({b_inum}): {status:?}"));
        assert_eq!(
            (
                e["monotonic"]["sec"].as_i64(),
                e["boottime"]["sec"].as_i64()
            ),
            (Some(0), Some(7)),
            "B's offsets in status after writes from A {mode:?}: {e}"
        );
    }
    let f = b.finish();
    assert!(f.status.success(), "B: {} {}", f.status, f.stderr);
    assert_eq!(f.stdout, expected_b, "B's offsets as seen inside B");
}

/// A process outside every sandbox (a host `sleep`) seen from inside a plain sandbox (same pid
/// namespace, so its /proc/PID is reachable) is in the initial time namespace, as the kernel
/// shows it from inside `unshare -T`: `ns/time` is `time:[4026531834]`, its timens_offsets are
/// zeros (D1: the file shows the target's time_for_children).
#[test]
fn a_host_process_seen_from_inside_is_in_the_initial_namespace() {
    let needs = Needs {
        kernel_oracle: true,
        tools: &["bash", "cat", "readlink", "sleep", "unshare"],
    };
    let Some(env) = Env::new("a_host_process_seen_from_inside", needs) else {
        return;
    };
    let mut host = Background::spawn({
        let mut c = std::process::Command::new("bash");
        c.args(["-c", "echo $$; read -r _ || true"]);
        c
    });
    let pid = host.line();
    let script = format!(
        "readlink /proc/{pid}/ns/time; readlink /proc/{pid}/ns/time_for_children; \
         cat /proc/{pid}/timens_offsets"
    );
    let kernel = kernel_unshare(&["--boottime", "5", "--monotonic", "3", "bash", "-c", &script]);
    let emul = env.run(
        &["--boottime", "5", "--monotonic", "3"],
        &["bash", "-c", &script],
    );
    assert!(kernel.status.success(), "kernel: {}", kernel.stderr);
    assert_eq!(
        kernel.stdout,
        format!(
            "time:[{0}]\ntime:[{0}]\n{1}",
            sandbox::INIT_TIME_INUM,
            offsets_text((0, 0), (0, 0))
        ),
        "kernel oracle"
    );
    assert_eq!(
        (emul.status.code(), emul.stdout, emul.stderr),
        (kernel.status.code(), kernel.stdout, kernel.stderr),
        "a host process seen from a sandbox vs from unshare -T"
    );
    host.finish();
}

/// Writing the timens_offsets of a process outside the sandbox never changes the writer's own
/// namespace: from a `--for-children` sandbox whose namespace is still writable, root writes
/// another sandbox's process's file (and a host process's); the writer's own pending offsets stay
/// zero. On the kernel the write targets the other process's time_for_children (D1, E11), never
/// the writer's.
#[test]
fn writing_a_foreign_process_file_leaves_the_writers_namespace_alone() {
    let Some(env) = Env::new("writing_a_foreign_process_file", BASH) else {
        return;
    };
    let (mut b, b_pid, _) = start_b(&env);
    let host_pid = std::process::id();
    for target in [b_pid, host_pid] {
        // Builtins only: a fork would enter (and freeze) the writer's own pending namespace.
        let script = format!(
            "echo 'monotonic 5 0' > /proc/{target}/timens_offsets; \
             cat /proc/$$/timens_offsets"
        );
        let a = env.run(&["--for-children"], &["bash", "-c", &script]);
        assert_eq!(
            a.stdout,
            offsets_text((0, 0), (0, 0)),
            "the writer's own offsets after writing /proc/{target}/timens_offsets (stderr: {})",
            a.stderr
        );
    }
    b.finish();
}

/// Runs `bash -c 'readlink /proc/self/ns/time; SCRIPT'` in sandbox A (`--boottime 3` and
/// `mode`); returns A's namespace inum and what SCRIPT printed.
fn in_sandbox_a(env: &Env, mode: &[&str], script: &str) -> (u64, String) {
    let out = env.bash_ok(
        &[&["--boottime", "3"][..], mode].concat(),
        &format!("readlink /proc/self/ns/time; {script}"),
    );
    let (link, rest) = out
        .split_once('\n')
        .expect("A's ns/time link, then the output");
    (parse_ns_link(link), rest.to_string())
}

/// `timens status` asked from inside sandbox A (plain and `--pid`) lists A's namespace and not
/// B's: behind a pid namespace the kernel gives A no way to reach B's offsets, and without one
/// only B's processes' own `timens_offsets` (which the overlay shows as the kernel would). From
/// the host both are listed.
#[test]
fn status_from_inside_a_sandbox_lists_only_its_own_namespaces() {
    let Some(env) = Env::new("status_from_inside_a_sandbox", BASH) else {
        return;
    };
    let (mut b, _, b_inum) = start_b(&env);
    let script = format!(
        "{} status --json --state-dir {}",
        env.bins.timens.display(),
        env.state.path().display()
    );
    for mode in [&[][..], &["--pid"][..]] {
        let (a_inum, json) = in_sandbox_a(&env, mode, &script);
        let listed: Vec<u64> = serde_json::from_str::<serde_json::Value>(&json)
            .unwrap_or_else(|e| panic!("status JSON from A {mode:?}: {e}: {json}"))
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|e| e["inum"].as_u64())
            .collect();
        assert_eq!(
            listed,
            vec![a_inum],
            "status asked from A {mode:?} (B is {b_inum})"
        );
    }
    let from_host: Vec<u64> = env
        .status()
        .iter()
        .filter_map(|e| e["inum"].as_u64())
        .collect();
    assert!(
        from_host.contains(&b_inum),
        "status from the host lists B ({b_inum}): {from_host:?}"
    );
    b.finish();
}

/// The offset store a sandbox's clock library maps (`/proc/.timens/store`) is the sandbox's own
/// view: an unprivileged process inside A (plain and `--pid`) can read it and finds A's
/// namespace in it, and not B's. On the host the store itself is root's only (0600), and the
/// views sit in a directory only root may walk (0700).
#[test]
fn a_sandboxs_store_view_holds_its_own_namespaces_only() {
    let needs = Needs {
        kernel_oracle: false,
        tools: &["bash", "cat", "readlink", "setpriv", "od"],
    };
    let Some(env) = Env::new("a_sandboxs_store_view", needs) else {
        return;
    };
    let (mut b, _, b_inum) = start_b(&env);
    let script = "setpriv --reuid=65534 --regid=65534 --clear-groups \
                  od -An -v -tx1 /proc/.timens/store";
    for mode in [&[][..], &["--pid"][..]] {
        let (a_inum, hex) = in_sandbox_a(&env, mode, script);
        let a_inum = a_inum as u32;
        let bytes: Vec<u8> = hex
            .split_ascii_whitespace()
            .map(|h| u8::from_str_radix(h, 16).expect("od output"))
            .collect();
        let copy = env.state.path().join(format!("view-copy-{}", mode.len()));
        std::fs::write(&copy, &bytes).expect("writing the copy");
        let view = timens::store::StoreReader::open(&copy)
            .unwrap_or_else(|e| panic!("A {mode:?}: the view read as uid 65534 is a store: {e}"));
        let a_slot = view.slot_for_inum(a_inum);
        assert!(
            a_slot.is_some(),
            "A {mode:?}: A's time:[{a_inum}] in its view"
        );
        assert_eq!(
            view.offsets(a_slot.unwrap()).map(|(o, _)| o.boottime.sec),
            Some(3),
            "A {mode:?}: A's boottime offset in its view"
        );
        assert_eq!(
            view.slot_for_inum(b_inum as u32),
            None,
            "A {mode:?}: B's time:[{b_inum}] in A's view"
        );
        let _ = std::fs::remove_file(&copy);
    }
    use std::os::unix::fs::PermissionsExt;
    let mode_of = |p: std::path::PathBuf| {
        std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode_of(env.state.path().join("store")), 0o600, "the store");
    assert_eq!(mode_of(env.state.path().join("views")), 0o700, "the views");
    b.finish();
}

/// Sandbox B whose namespace stays pending: a `--for-children` shell that writes `boottime 7 0`
/// into it and, with builtins only (a fork would enter it, and so freeze it), prints its pid and
/// waits on stdin; then prints its offsets. Returns B and its namespace's inum, read from status
/// (B is the daemon's only sandbox when this runs), where it is not frozen.
fn start_pending_b(env: &Env) -> (Background, u64) {
    let mut b = env.spawn(
        &["--for-children"],
        &[
            "bash",
            "-c",
            "echo 'boottime 7 0' > /proc/$$/timens_offsets; echo $$; read -r _; \
             cat /proc/$$/timens_offsets",
        ],
    );
    b.line();
    let status = env.status();
    assert_eq!(status.len(), 1, "only B in status: {status:?}");
    assert_eq!(status[0]["frozen"], false, "B pending: {status:?}");
    let inum = status[0]["inum"].as_u64().expect("B's inum");
    (b, inum)
}

/// What one `ns-client request` printed: the daemon's answer, then the client's own `ns/time`
/// link and timens_offsets read after it.
struct Asked {
    reply: serde_json::Value,
    time: u64,
    offsets: String,
}

/// Splits the output of consecutive `ns-client request` runs.
fn parse_asked(out: &str) -> Vec<Asked> {
    let mut runs = Vec::new();
    let mut lines = out.lines().peekable();
    while let Some(line) = lines.next() {
        let reply = line
            .strip_prefix("reply ")
            .unwrap_or_else(|| panic!("a reply line, got {line:?} in {out:?}"));
        let reply = serde_json::from_str(reply).unwrap_or_else(|e| panic!("{reply}: {e}"));
        let time = lines
            .next()
            .and_then(|l| l.strip_prefix("time "))
            .expect("time line");
        let mut offsets = String::new();
        while let Some(l) = lines.next_if(|l| !l.starts_with("reply ")) {
            offsets.push_str(l);
            offsets.push('\n');
        }
        runs.push(Asked {
            reply,
            time: parse_ns_link(time),
            offsets,
        });
    }
    runs
}

/// Issue 19, "entering another sandbox's namespace by naming it": from inside a `--pid`
/// sandbox A, a raw request `{"op":"setns","inum":B}` on the control socket, with no fd, gets
/// EBADF (the kernel's setns needs an fd of B's ns/time, which A cannot open) and changes
/// nothing: the caller stays in A with A's offsets, and B's namespace stays pending with its own
/// offsets. The same request with an fd of the caller's own `ns/time` works as the kernel's
/// setns does (B5, B7): the target is the fd's namespace, whatever inum the line names.
#[test]
fn a_raw_setns_naming_another_sandboxs_namespace_changes_nothing() {
    let Some(env) = Env::new("a_raw_setns_naming_another", BASH) else {
        return;
    };
    let (mut b, b_inum) = start_pending_b(&env);
    let line = format!(r#"{{"op":"setns","inum":{b_inum}}}"#);
    let sock = "/proc/.timens/control.sock";
    let script = format!(
        "{NS_CLIENT} request {sock} '{line}'; {NS_CLIENT} request {sock} '{line}' /proc/self/ns/time"
    );
    let (a_inum, out) = in_sandbox_a(&env, &["--pid"], &script);
    assert_ne!(a_inum, b_inum);
    let asked = parse_asked(&out);
    assert_eq!(asked.len(), 2, "{out}");
    let a_offsets = offsets_text((0, 0), (3, 0));

    let raw = &asked[0];
    assert_eq!(
        (raw.reply["reply"].as_str(), raw.reply["errno"].as_i64()),
        (Some("error"), Some(i64::from(libc::EBADF))),
        "a setns naming B's namespace without an fd: {}",
        raw.reply
    );
    assert_eq!(
        raw.time, a_inum,
        "the caller's ns/time after the raw request"
    );
    assert_eq!(
        raw.offsets, a_offsets,
        "the caller's offsets after the raw request"
    );

    let with_fd = &asked[1];
    assert_eq!(
        (
            with_fd.reply["reply"].as_str(),
            with_fd.reply["time"]["inum"].as_u64(),
            with_fd.reply["tfc"]["inum"].as_u64(),
        ),
        (Some("ns"), Some(a_inum), Some(a_inum)),
        "setns with an fd of the caller's own ns/time: {}",
        with_fd.reply
    );
    assert_eq!(with_fd.time, a_inum);
    assert_eq!(with_fd.offsets, a_offsets);

    let status = env.status();
    let e = sandbox::status_entry(&status, b_inum)
        .unwrap_or_else(|| panic!("status lost B ({b_inum}): {status:?}"));
    assert_eq!(e["frozen"], false, "B still pending: {e}");
    assert_eq!(e["boottime"]["sec"].as_i64(), Some(7), "B's offsets: {e}");
    let f = b.finish();
    assert!(f.status.success(), "B: {} {}", f.status, f.stderr);
    assert_eq!(
        f.stdout,
        offsets_text((0, 0), (7, 0)),
        "B's offsets inside B"
    );
}

/// A setns fd that is not one of this daemon's own `ns/time` files is refused with EINVAL, as
/// the kernel refuses a file that is neither nsfs nor a pidfd (B6), even when the request names
/// the caller's own namespace: the `ns/time` file of another timensfs daemon's overlay (FUSE,
/// a regular file whose inode number is a namespace's, here the same number as the caller's),
/// a file of the caller's own overlay that is not a namespace's (`/proc/uptime`), and a regular
/// file of another file system.
#[test]
fn a_setns_fd_that_is_not_the_daemons_namespace_file_is_einval() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let Some(env) = Env::new("a_setns_fd_that_is_not", BASH) else {
        return;
    };
    // Another daemon with a sandbox of its own. Its `ns/time` file is opened from the host and
    // handed to A's shell as fd FOREIGN (A cannot reach that overlay: its /proc/PID/root is a
    // link with the kernel's text, `/`).
    let other = Env {
        bins: env.bins.clone(),
        state: StateDir::new("a_setns_fd_that_is_not-other"),
    };
    let mut s2 = other.spawn(&[], &["bash", "-c", "echo $$; read -r _"]);
    let p2 = s2.line();
    let p2 = p2.trim();
    let foreign = std::fs::File::open(format!("/proc/{p2}/root/proc/{p2}/ns/time"))
        .expect("the other overlay's ns/time, from the host");
    let foreign_ino = foreign.metadata().expect("its stat").ino();
    const FOREIGN: i32 = 100;
    let sock = "/proc/.timens/control.sock";
    let script = format!(
        r#"a=$(readlink /proc/self/ns/time); a=${{a#time:[}}; a=${{a%]}}
echo $a
for f in fd:{FOREIGN} /proc/uptime {NS_CLIENT}; do
  {NS_CLIENT} request {sock} "{{\"op\":\"setns\",\"inum\":$a}}" "$f"
done"#
    );
    // A starts the daemon, which closes every inherited fd: only A's shell has FOREIGN.
    let mut cmd = env.run_cmd(&["--boottime", "3"], &["bash", "-c", &script]);
    sandbox::inherit_fd_as(&mut cmd, foreign.as_raw_fd(), FOREIGN);
    let f = sandbox::run(&mut cmd);
    drop(foreign);
    assert!(f.status.success(), "A: {} {}", f.status, f.stderr);
    let (a_inum, rest) = f.stdout.split_once('\n').expect("A's inum");
    let a_inum: u64 = a_inum.parse().expect("A's inum");
    assert_eq!(
        foreign_ino, a_inum,
        "the other daemon's first namespace has the same number as A's"
    );
    let asked = parse_asked(rest);
    assert_eq!(asked.len(), 3, "{}", f.stdout);
    for (what, a) in ["another daemon's ns/time", "/proc/uptime", "a regular file"]
        .iter()
        .zip(&asked)
    {
        assert_eq!(
            (a.reply["reply"].as_str(), a.reply["errno"].as_i64()),
            (Some("error"), Some(i64::from(libc::EINVAL))),
            "setns with {what}: {}",
            a.reply
        );
        assert_eq!(a.time, a_inum, "after setns with {what}");
        assert_eq!(a.offsets, offsets_text((0, 0), (3, 0)), "after {what}");
    }
    s2.finish();
}
