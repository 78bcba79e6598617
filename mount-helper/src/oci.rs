//! `timens oci-hook`: time namespaces for OCI containers (runc, crun, podman/CRI-O via hooks.d).
//!
//! Registered for `createContainer` and `poststop`; reads the container state on stdin.
//! - createContainer (runs in the container's mount and pid namespaces, before pivot_root, with
//!   the host's root still visible): for a container whose annotations carry
//!   `io.timensfs.monotonic` and/or `io.timensfs.boottime`, a new namespace is created and the
//!   overlay mounted over `<rootfs>/proc`; the clock library is preloaded through the
//!   container's own `<rootfs>/etc/ld.so.preload` (an overlay, the image is untouched). The
//!   container's processes are members from their first instruction: they all live in its mount
//!   namespace, whose default namespace this is.
//! - poststop: the namespace is released (normally already gone with the container's mount
//!   namespace) so nothing stays registered.
//!
//! A container without the annotations is left untouched.

use clap::Args;
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::run::{checked_offset, os_err};
use crate::{daemon, die, overlay, EXIT_USAGE};
use procview::Clock;
use timens_proto::{Offset, Request, Response};
use timens_sys::mountapi;

pub const ANNOTATION_MONOTONIC: &str = "io.timensfs.monotonic";
pub const ANNOTATION_BOOTTIME: &str = "io.timensfs.boottime";

#[derive(Args, Debug)]
pub struct HookArgs {
    /// The daemon's state directory.
    #[arg(long, default_value = timens_proto::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Deserialize, Debug)]
struct State {
    id: String,
    #[serde(default)]
    status: String,
    bundle: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Deserialize, Debug, Default)]
struct Config {
    #[serde(default)]
    root: Option<Root>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Deserialize, Debug)]
struct Root {
    path: String,
}

fn label(id: &str) -> String {
    format!("oci:{id}")
}

pub fn hook(args: HookArgs) -> ! {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        die(
            1,
            format!("oci-hook: reading the container state from stdin: {e}"),
        );
    }
    let state: State = serde_json::from_str(&text).unwrap_or_else(|e| {
        die(
            EXIT_USAGE,
            format!("oci-hook: the state on stdin is not OCI state JSON: {e}"),
        )
    });
    let bundle = PathBuf::from(&state.bundle);
    let config: Config = std::fs::read_to_string(bundle.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let mut annotations = config.annotations.clone();
    annotations.extend(state.annotations.clone());
    let monotonic = annotations.get(ANNOTATION_MONOTONIC);
    let boottime = annotations.get(ANNOTATION_BOOTTIME);
    if monotonic.is_none() && boottime.is_none() {
        std::process::exit(0);
    }
    match state.status.as_str() {
        "stopped" => poststop(&args.state_dir, &state.id),
        _ => {
            let root = match &config.root {
                Some(r) if Path::new(&r.path).is_absolute() => PathBuf::from(&r.path),
                Some(r) => bundle.join(&r.path),
                None => bundle.join("rootfs"),
            };
            let offset = |name: &str, v: Option<&String>, clock| match v {
                Some(t) => checked_offset(name, t, clock),
                None => procview::Timespec::ZERO,
            };
            let m = offset("monotonic", monotonic, Clock::Monotonic);
            let b = offset("boottime", boottime, Clock::Boottime);
            create_container(&args.state_dir, &state.id, &root, m, b)
        }
    }
}

/// The host pid of our parent (the runtime's init of the container): the host's procfs is
/// still mounted at /proc before pivot_root, and numbers pids as the host does.
fn host_ppid() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn create_container(
    state_dir: &Path,
    id: &str,
    root: &Path,
    monotonic: procview::Timespec,
    boottime: procview::Timespec,
) -> ! {
    // The daemon must already run (systemd unit or DaemonSet): one started from here would
    // live in the container's namespaces and die with it.
    let alive = daemon::connect(state_dir)
        .and_then(|s| timens_proto::call(&s, &Request::Ping, &[]))
        .map(|r| matches!(r, Response::Pong { .. }))
        .unwrap_or(false);
    if !alive {
        die(
            1,
            format!(
                "oci-hook: no timensfs daemon answers at {} (start it first, e.g. contrib/systemd/timensfs.service)",
                timens_proto::socket_path(state_dir).display()
            ),
        );
    }
    let anchor =
        host_ppid().unwrap_or_else(|| die(1, "oci-hook: cannot find the container's init process"));
    let handles = overlay::StateHandles::open(state_dir, true)
        .unwrap_or_else(|e| os_err("opening the daemon's state directory", e));
    handles.inject_preload_at(root);
    // The hook runs in the container's pid namespace: a fresh procfs numbers pids as the
    // container sees them.
    let procfs =
        mountapi::new_procfs().unwrap_or_else(|e| os_err("mounting a procfs for the container", e));
    let req = Request::CreateSandbox {
        monotonic: Offset::new(monotonic.sec, monotonic.nsec),
        boottime: Offset::new(boottime.sec, boottime.nsec),
        for_children: false,
        label: label(id),
        anchor_pid: Some(anchor),
        attach_inum: None,
        self_bound: true,
    };
    overlay::attach_at(root, handles, procfs, &req);
    std::process::exit(0)
}

fn poststop(state_dir: &Path, id: &str) -> ! {
    let want = label(id);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let namespaces = match daemon::connect(state_dir)
            .and_then(|s| timens_proto::call(&s, &Request::Status, &[]))
        {
            Ok(Response::Status { namespaces }) => namespaces,
            // No daemon: nothing is registered anywhere.
            _ => std::process::exit(0),
        };
        let mine: Vec<_> = namespaces.iter().filter(|n| n.sandbox == want).collect();
        if mine.is_empty() {
            std::process::exit(0);
        }
        // The overlay's session ends with the container's mount namespace; give it a moment,
        // then release what is left.
        if Instant::now() >= deadline || mine.iter().all(|n| !n.served) {
            for n in mine {
                if let Ok(s) = daemon::connect(state_dir) {
                    let _ = timens_proto::call(&s, &Request::Release { inum: n.inum }, &[]);
                }
            }
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
