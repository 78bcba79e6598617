//! The housekeeping loop: every half second, re-attach sandboxes a previous daemon served,
//! release namespaces nothing uses any more, close store views no sandbox needs, and exit when
//! idle (if asked to).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::reattach::Reattacher;
use super::sandbox::views_dir;
use crate::nsops::Pending;
use crate::state::Daemon;

/// Starts the housekeeping thread. With `idle_exit` > 0 it ends the process (removing the
/// socket and the pid file) after that many seconds without any sandbox or namespace.
pub fn spawn(
    daemon: Arc<Daemon>,
    pending: Arc<Pending>,
    state_dir: &Path,
    idle_exit: u64,
    files: [PathBuf; 2],
) -> io::Result<()> {
    let mut reattacher = Reattacher::new(state_dir);
    std::thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || {
            let mut idle_since = Instant::now();
            loop {
                // First pass right away: sandboxes of a previous daemon get /proc back fast.
                reattacher.run(&daemon);
                std::thread::sleep(Duration::from_millis(500));
                reap_dead_namespaces(&daemon);
                crate::nsops::collect_garbage(&daemon, &pending);
                // Taken before the store's lock, which is never held around the map's.
                let served: HashSet<u64> = daemon.sandboxes.iter().map(|s| s.mntns).collect();
                daemon
                    .store
                    .close_unused_views(&views_dir(&daemon), |k| served.contains(&k));
                if !daemon.sandboxes.is_empty() || !daemon.store.live().is_empty() {
                    idle_since = Instant::now();
                } else if idle_exit > 0 && idle_since.elapsed() >= Duration::from_secs(idle_exit) {
                    tracing::info!("idle: exiting");
                    for f in &files {
                        let _ = std::fs::remove_file(f);
                    }
                    std::process::exit(0);
                }
            }
        })?;
    Ok(())
}

/// Releases namespaces that no live sandbox serves and whose first process is gone (after a
/// daemon restart, sandboxes that ended while it was down).
pub fn reap_dead_namespaces(daemon: &Daemon) {
    for snap in daemon.store.live() {
        if daemon.sandboxes.iter().any(|s| s.ns == snap.slot) {
            continue;
        }
        if crate::nsops::made_by_a_syscall(&snap.meta.label) {
            // Kept while referenced: nsops::collect_garbage.
            continue;
        }
        let alive = daemon.anchor_alive(&snap.meta);
        if !alive {
            daemon.store.release(snap.slot);
            tracing::info!(
                inum = snap.inum,
                "released namespace of a sandbox that ended"
            );
        }
    }
}
