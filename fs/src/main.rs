//! timensfs: the daemon that serves time-namespace /proc overlays to sandboxes.
//!
//! It owns the offset store, answers `timens` on a control socket (trusting only peer
//! credentials), serves one FUSE session per sandbox, and follows fork/exec/exit through the
//! kernel's process-events connector.

mod control;
mod notify;
mod nsops;
mod overlay;
mod pio;
mod procpos;
mod readers;
mod rootfile;
mod state;
mod statpage;

use clap::Parser;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "timensfs",
    version,
    about = "Serve time-namespace /proc overlays to sandboxes"
)]
struct Args {
    /// Directory for the offset store, the control socket, the pid file and the log.
    #[arg(long, default_value = timens_proto::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Number of namespace slots when the store is created.
    #[arg(long, default_value_t = 4096)]
    slots: u32,
    /// Exit after this many seconds without any sandbox (0: never).
    #[arg(long, default_value_t = 0)]
    idle_exit: u64,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIMENSFS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // SAFETY: isatty has no preconditions.
        .with_ansi(unsafe { libc::isatty(2) } == 1)
        .init();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("timensfs: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> std::io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "must run as root (it mounts and serves /proc for sandboxes)",
        ));
    }
    // No supplementary groups: the daemon then "acts as" a caller (and skips switching to its
    // credentials) without knowing the caller's groups, which procfs's modes never look at.
    nix::unistd::setgroups(&[]).map_err(std::io::Error::from)?;
    // Signals are taken by a dedicated thread (sigwait): block them before any thread starts.
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.add(nix::sys::signal::Signal::SIGINT);
    set.add(nix::sys::signal::Signal::SIGHUP);
    set.thread_block().map_err(std::io::Error::from)?;
    raise_fd_limit();
    std::fs::create_dir_all(&args.state_dir)?;
    let store_path = args.state_dir.join(timens_proto::STORE_NAME);
    // A daemon killed a moment ago may still hold the store's lock while its files close.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let store = loop {
        match timens::store::Store::open_or_create(&store_path, args.slots) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Two `timens run` that find no daemon at the same moment start one each: the
                // one that lost the lock must leave now, not take the store over later (when
                // the winner is stopped, its directory possibly removed).
                if let Some(pid) = answering_daemon(&args.state_dir) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!(
                            "timensfs pid {pid} already serves {}",
                            args.state_dir.display()
                        ),
                    ));
                }
                if std::time::Instant::now() >= deadline {
                    return Err(e);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other?,
        }
    };
    let conn = match timens_sys::procconn::ProcConnector::open() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "process events unavailable; fork/exec tracking disabled");
            None
        }
    };
    let own_user_ns = timens_sys::creds::own_user_ns_inode()?;
    // SAFETY: the path is a valid C string; open returns a new fd we own.
    let host_proc = unsafe {
        let fd = libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    let daemon = Arc::new(state::Daemon::new(store, conn, own_user_ns, host_proc));
    control::reap_dead_namespaces(&daemon);
    {
        let d = daemon.clone();
        std::thread::Builder::new()
            .name("proc-events".into())
            .spawn(move || d.event_loop())?;
        let d = daemon.clone();
        std::thread::Builder::new()
            .name("notifier".into())
            .spawn(move || d.notes.run())?;
        let d = daemon.clone();
        std::thread::Builder::new()
            .name("stat-refresh".into())
            .spawn(move || d.refresh.run())?;
    }
    control::serve(daemon, &args.state_dir, args.idle_exit)
}

/// Raises the soft limit on open files to the hard one: each sandbox holds fds, and the control
/// socket's clients may hold a bounded number more (see control/limits.rs); running out would
/// stop new sandboxes.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit");
            }
        }
    }
}

/// The pid of a daemon that answers on `state_dir`'s control socket, if one does.
fn answering_daemon(state_dir: &std::path::Path) -> Option<u32> {
    let sock =
        std::os::unix::net::UnixStream::connect(timens_proto::socket_path(state_dir)).ok()?;
    // A daemon that holds the lock answers a ping at once; one that hangs is not "serving".
    sock.set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .ok()?;
    match timens_proto::call(&sock, &timens_proto::Request::Ping, &[]) {
        Ok(timens_proto::Response::Pong { pid, .. }) => Some(pid),
        _ => None,
    }
}
