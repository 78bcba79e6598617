//! Re-attach after a restart: sandboxes whose overlay died with the old daemon get a working
//! /proc back.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::state::Daemon;

/// After a restart, sandboxes whose overlay died with the old daemon get a working /proc back:
/// for each namespace no session serves whose first process is alive, `timens mount` is run
/// against that process (it detaches the dead overlay and re-attaches the same namespace).
pub struct Reattacher {
    state_dir: std::path::PathBuf,
    tried: std::collections::HashMap<u32, (Instant, u32)>,
}

impl Reattacher {
    pub fn new(state_dir: &Path) -> Self {
        Reattacher {
            state_dir: state_dir.to_path_buf(),
            tried: Default::default(),
        }
    }

    fn timens_binary() -> std::path::PathBuf {
        if let Some(p) = std::env::var_os("TIMENS_BIN") {
            return p.into();
        }
        std::env::current_exe()
            .ok()
            .map(|me| me.with_file_name("timens"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| "timens".into())
    }

    pub fn run(&mut self, daemon: &Daemon) {
        for snap in daemon.store.live() {
            let label = &snap.meta.label;
            if !(label.starts_with("run:")
                || label.starts_with("mount:")
                || label.starts_with("oci:"))
            {
                continue;
            }
            if daemon.sandboxes.iter().any(|s| s.ns == snap.slot) {
                self.tried.remove(&snap.inum);
                continue;
            }
            // Three tries, two seconds apart.
            let entry = self
                .tried
                .entry(snap.inum)
                .or_insert((Instant::now() - Duration::from_secs(10), 0));
            if entry.1 >= 3 || entry.0.elapsed() < Duration::from_secs(2) {
                continue;
            }
            *entry = (Instant::now(), entry.1 + 1);
            let pid = snap.meta.anchor_pid;
            let child = std::process::Command::new(Self::timens_binary())
                .arg("mount")
                .arg("--pid")
                .arg(pid.to_string())
                .arg("--state-dir")
                .arg(&self.state_dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn();
            match child {
                Ok(mut c) => {
                    // Reaped in the background: the mount child blocks on this daemon's answers.
                    std::thread::spawn(move || {
                        let status = c.wait();
                        tracing::info!(pid, ?status, "re-attach finished");
                    });
                    tracing::info!(
                        inum = snap.inum,
                        pid,
                        "re-attaching the overlay of a sandbox"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot run timens mount for re-attach"),
            }
        }
    }
}
