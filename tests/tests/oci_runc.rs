//! A real runc container with the OCI hook (createContainer and poststop): the annotated
//! container sees its namespace's /proc, an unannotated one the kernel's, nothing stays
//! mounted or registered afterwards, and a container outlives a `kill -9` of the daemon.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use timensfs_tests::sandbox::{self, Background, Env, Needs};

const NEEDS: Needs = Needs {
    kernel_oracle: false,
    tools: &["runc", "busybox"],
};

/// A bundle with a busybox rootfs, removed (and its container deleted) on drop.
struct Bundle {
    dir: PathBuf,
    id: String,
}

impl Bundle {
    fn new(env: &Env, id: &str, annotations: Value, args: &[&str]) -> Bundle {
        let dir = env.state.path().with_extension(format!("bundle-{id}"));
        let rootfs = dir.join("rootfs");
        for d in ["bin", "proc", "etc", "dev", "sys", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        let busybox = which("busybox");
        std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "cat", "ps", "grep", "head", "ls", "sleep", "readlink", "test", "[",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let spec = sandbox::run(Command::new("runc").arg("spec").current_dir(&dir));
        assert!(spec.status.success(), "runc spec: {}", spec.stderr);
        let path = dir.join("config.json");
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let hook = json!({
            "path": env.bins.timens,
            "args": ["timens", "oci-hook", "--state-dir", env.state.path()],
        });
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        config["hooks"] = json!({ "createContainer": [hook], "poststop": [hook] });
        config["annotations"] = annotations;
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        Bundle {
            dir,
            id: format!("{}-{}", id, std::process::id()),
        }
    }

    fn run_cmd(&self) -> Command {
        let mut c = Command::new("runc");
        c.args(["run", &self.id]).current_dir(&self.dir);
        c
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "-f", &self.id])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn which(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .expect("on PATH")
}

/// Starts `timensfs --state-dir DIR` (the OCI hook needs a running daemon) and waits for it.
fn start_daemon(env: &Env) -> Background {
    let mut c = Command::new(&env.bins.timensfs);
    c.arg("--state-dir").arg(env.state.path());
    let d = Background::spawn(c);
    assert!(
        sandbox::wait_until(Duration::from_secs(10), || env.try_status().is_ok()),
        "timensfs did not come up"
    );
    let _ = env.state.daemon_pid();
    d
}

fn host_uptime() -> f64 {
    sandbox::parse_uptime(&std::fs::read_to_string("/proc/uptime").unwrap()).0
}

fn fuse_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains("fuse.timensfs"))
        .count()
}

fn labelled(env: &Env, label: &str) -> Vec<Value> {
    env.status()
        .into_iter()
        .filter(|n| n["sandbox"] == label)
        .collect()
}

#[test]
fn annotated_container_sees_its_namespace_and_leaves_nothing() {
    let Some(env) = Env::new(
        "annotated_container_sees_its_namespace_and_leaves_nothing",
        NEEDS,
    ) else {
        return;
    };
    let _daemon = start_daemon(&env);
    let before = fuse_mounts();
    let bundle = Bundle::new(
        &env,
        "annotated",
        json!({ "io.timensfs.boottime": "86400", "io.timensfs.monotonic": "3600" }),
        &[
            "sh",
            "-c",
            "cat /proc/uptime; cat /proc/self/timens_offsets; ps; readlink /proc/self/ns/time",
        ],
    );
    let h0 = host_uptime();
    let out = sandbox::run(&mut bundle.run_cmd());
    let h1 = host_uptime();
    assert!(
        out.status.success(),
        "runc run: {}\n{}",
        out.stdout,
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    let (up, _) = sandbox::parse_uptime(lines[0]);
    assert!(
        up >= h0 + 86400.0 - 1.0 && up <= h1 + 86400.0 + 1.0,
        "uptime {up} vs host {h0}..{h1}"
    );
    assert_eq!(lines[1], "monotonic        3600         0");
    assert_eq!(lines[2], "boottime        86400         0");
    assert!(
        lines.iter().any(|l| l.trim_start().starts_with("1 ")),
        "ps lists pid 1: {}",
        out.stdout
    );
    let ns = lines.last().unwrap();
    assert!(
        ns.starts_with("time:[") && *ns != "time:[4026531834]",
        "{ns}"
    );
    // poststop ran: nothing mounted, nothing registered.
    assert_eq!(fuse_mounts(), before);
    assert!(
        sandbox::wait_until(Duration::from_secs(3), || labelled(
            &env,
            &format!("oci:{}", bundle.id)
        )
        .is_empty()),
        "namespace still registered: {:?}",
        env.status()
    );
}

#[test]
fn container_without_annotations_keeps_the_kernels_proc() {
    let Some(env) = Env::new(
        "container_without_annotations_keeps_the_kernels_proc",
        NEEDS,
    ) else {
        return;
    };
    let _daemon = start_daemon(&env);
    let bundle = Bundle::new(
        &env,
        "plain",
        json!({}),
        &[
            "sh",
            "-c",
            "cat /proc/uptime; grep -c fuse /proc/self/mountinfo; ls -a /proc | grep -c timens",
        ],
    );
    let h0 = host_uptime();
    let out = sandbox::run(&mut bundle.run_cmd());
    let h1 = host_uptime();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let (up, _) = sandbox::parse_uptime(lines[0]);
    assert!(
        up >= h0 - 1.0 && up <= h1 + 1.0,
        "uptime {up} vs host {h0}..{h1}"
    );
    assert_eq!(lines[1], "0", "no FUSE mount inside: {}", out.stdout);
    assert_eq!(lines[2], "0", "no .timens inside: {}", out.stdout);
    assert!(env.status().is_empty());
    assert!(!bundle.rootfs().join("etc/ld.so.preload").exists());
}

#[test]
fn container_gets_proc_back_after_the_daemon_is_killed() {
    let Some(env) = Env::new("container_gets_proc_back_after_the_daemon_is_killed", NEEDS) else {
        return;
    };
    let mut daemon = start_daemon(&env);
    let bundle = Bundle::new(
        &env,
        "recover",
        json!({ "io.timensfs.boottime": "86400" }),
        &[
            "sh",
            "-c",
            "echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; cat /proc/uptime",
        ],
    );
    let mut container = Background::spawn(bundle.run_cmd());
    assert_eq!(container.line(), "ready");
    let label = format!("oci:{}", bundle.id);
    let inum = labelled(&env, &label)[0]["inum"].clone();
    // kill -9 and a fresh daemon.
    let old = env.daemon_pid();
    // SAFETY: kill of a pid we started.
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    daemon.kill();
    assert!(sandbox::wait_until(Duration::from_secs(5), || {
        !sandbox::is_alive(old)
    }));
    let restarted = Instant::now();
    let _daemon2 = start_daemon(&env);
    let served = sandbox::wait_until(Duration::from_secs(10), || {
        labelled(&env, &label)
            .first()
            .map(|n| n["served"] == true)
            .unwrap_or(false)
    });
    let took = restarted.elapsed();
    assert!(served, "never re-attached: {:?}", env.status());
    assert!(took <= Duration::from_secs(2), "re-attach took {took:?}");
    assert_eq!(
        labelled(&env, &label)[0]["inum"],
        inum,
        "same namespace after the restart"
    );
    let h0 = host_uptime();
    std::fs::write(bundle.rootfs().join("tmp/go"), b"").unwrap();
    let out = container.finish();
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let (up, _) = sandbox::parse_uptime(out.stdout.lines().last().unwrap());
    assert!(
        (up - (h0 + 86400.0)).abs() < 2.0,
        "uptime {up} vs host {h0}"
    );
}
