//! The control socket server: one thread accepts and reads every connection, a fixed pool of
//! workers runs the complete requests.
//!
//! The socket is mode 0666 (the clock library connects from processes of any uid), so every
//! resource a client can make the daemon spend is bounded, whatever the number of clients
//! (`limits.rs` has the numbers):
//!
//! - No thread per connection. The poller thread accepts, takes the peer's credentials
//!   (`SO_PEERCRED`, at accept: the process that connected), and reads each nonblocking
//!   connection (epoll) into a buffer of its own until the request line is complete.
//! - Per connection: at most [`REQUEST_MAX`](timens_proto::REQUEST_MAX) bytes (more: an EMSGSIZE
//!   answer, closed), at most [`REQUEST_FDS_MAX`](timens_proto::REQUEST_FDS_MAX) passed fds (more:
//!   they are closed, an EINVAL answer, closed), and a deadline from accept to a complete request
//!   (2 s; 10 s for root, which connects before it mounts): then an ETIMEDOUT answer, closed.
//! - Open connections per non-root uid (32) and for all non-root uids together (256); root has
//!   a budget of its own (256). A connection beyond its limit gets an EAGAIN answer and is closed
//!   at once. A connection counts until its answer is written.
//! - Complete requests wait for one of 6 workers. Root's requests are taken first, and at most
//!   4 non-root requests run at once, so two workers are always root's: `timens run`, the OCI
//!   hook and re-attach never wait behind an unprivileged peer's requests. Workers may block (a
//!   new sandbox waits for the FUSE INIT handshake of a mount its requester already made, which
//!   needs no control worker); writing an answer has a deadline too (2 s).
//!
//! Who may ask what (decided from the peer's credentials, never from the request):
//!
//! | request | who |
//! |---|---|
//! | `ping` | anyone |
//! | `status` | anyone: all namespaces from outside every sandbox (as the host's /proc shows every process's `timens_offsets`), only its own sandbox's from inside one (`status.rs`) |
//! | `create_sandbox` | uid 0 with CAP_SYS_ADMIN (it creates a namespace and serves a mount) |
//! | `release`, `open_fuse` | uid 0 |
//! | `unshare`, `setns`, `new_child_ns`, `place_child`, `who_am_i` | a process in a sandbox, with what the kernel would require of the same call (CAP_SYS_ADMIN, a single thread, its own child: `nsops.rs`) |
//!
//! uid 0 is trusted as the kernel trusts it: a sandbox's root (no user namespace) shares root's
//! budget and queue.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use timens_proto::{Request, Response};
use timens_sys::sock::{peer_credentials, Epoll};

use super::limits::{Class, ConnCounts, Framed, Framer, JobQueue, Limits, Refusal};
use super::{housekeeping, sandbox, status};
use crate::nsops::Pending;
use crate::state::Daemon;

/// Who connected, from `SO_PEERCRED` (host ids: the daemon runs in the initial namespaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
}

/// A response and the fds that go with it.
pub struct Answer {
    pub resp: Response,
    pub fds: Vec<OwnedFd>,
}

impl From<Response> for Answer {
    fn from(resp: Response) -> Answer {
        Answer {
            resp,
            fds: Vec::new(),
        }
    }
}

pub fn error(errno: i32, message: impl Into<String>) -> Response {
    Response::Error {
        errno,
        message: message.into(),
    }
}

/// Runs one request; the fds are those the request carried.
pub type Handler = dyn Fn(Peer, Request, Vec<OwnedFd>) -> Answer + Send + Sync;

/// Serves the control socket until SIGTERM/SIGINT (or idle exit).
pub fn serve(daemon: Arc<Daemon>, state_dir: &Path, idle_exit: u64) -> io::Result<()> {
    let sock_path = timens_proto::socket_path(state_dir);
    // The store's lock proves no other daemon owns this state directory: a socket file left
    // by a killed daemon is stale.
    let _ = std::fs::remove_file(&sock_path);
    let listener = UnixListener::bind(&sock_path)?;
    // Anyone may connect: see the module doc for who may ask what.
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o666))?;
    let pidfile = state_dir.join(timens_proto::PIDFILE_NAME);
    std::fs::write(&pidfile, format!("{}\n", std::process::id()))?;
    tracing::info!(socket = %sock_path.display(), pid = std::process::id(), "timensfs ready");

    {
        let (sock_path, pidfile) = (sock_path.clone(), pidfile.clone());
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut set = nix::sys::signal::SigSet::empty();
                set.add(nix::sys::signal::Signal::SIGTERM);
                set.add(nix::sys::signal::Signal::SIGINT);
                set.add(nix::sys::signal::Signal::SIGHUP);
                if let Ok(sig) = set.wait() {
                    tracing::info!(?sig, "stopping");
                }
                let _ = std::fs::remove_file(&sock_path);
                let _ = std::fs::remove_file(&pidfile);
                std::process::exit(0);
            })?;
    }
    let pending: Arc<Pending> = Arc::new(Pending::default());
    housekeeping::spawn(
        daemon.clone(),
        pending.clone(),
        state_dir,
        idle_exit,
        [sock_path, pidfile],
    )?;
    let handler: Arc<Handler> =
        Arc::new(move |peer, req, fds| dispatch(&daemon, &pending, peer, req, fds));
    let mut server = Server::start(listener, Limits::default(), handler)?;
    server.run(&AtomicBool::new(false))
}

/// Sends a request to the code that answers it.
fn dispatch(
    daemon: &Arc<Daemon>,
    pending: &Pending,
    peer: Peer,
    req: Request,
    fds: Vec<OwnedFd>,
) -> Answer {
    match req {
        Request::Ping => Response::Pong {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
        .into(),
        Request::Status => Response::Status {
            namespaces: status::status(daemon, status::status_scope(daemon, peer.pid)),
        }
        .into(),
        Request::CreateSandbox {
            monotonic,
            boottime,
            for_children,
            label,
            anchor_pid,
            attach_inum,
            self_bound,
        } => {
            let req = sandbox::CreateReq {
                monotonic,
                boottime,
                for_children,
                label,
                anchor_pid,
                attach_inum,
                self_bound,
            };
            match sandbox::create_sandbox(daemon, peer.pid, peer.uid, fds, req) {
                Ok((inum, view)) => Answer {
                    resp: Response::Created { inum },
                    fds: vec![view],
                },
                Err(r) => r.into(),
            }
        }
        Request::Release { inum } => sandbox::release(daemon, peer.uid, inum).into(),
        Request::OpenFuse => match sandbox::open_fuse(peer.uid) {
            Ok(fd) => Answer {
                resp: Response::FuseFd,
                fds: vec![fd],
            },
            Err(r) => r.into(),
        },
        other => crate::nsops::handle(daemon, pending, peer.pid, other, fds).into(),
    }
}

/// A connection counted in [`ConnCounts`] until this is dropped (with the connection).
struct Admitted {
    counts: Arc<Mutex<ConnCounts>>,
    uid: u32,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        lock(&self.counts).release(self.uid);
    }
}

fn lock(counts: &Mutex<ConnCounts>) -> std::sync::MutexGuard<'_, ConnCounts> {
    counts.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection whose request is still being read.
struct Reading {
    stream: UnixStream,
    peer: Peer,
    class: Class,
    framer: Framer,
    fds: Vec<OwnedFd>,
    deadline: Instant,
    _admitted: Admitted,
}

/// A complete request waiting for (or run by) a worker.
struct Job {
    stream: UnixStream,
    peer: Peer,
    line: Vec<u8>,
    fds: Vec<OwnedFd>,
    _admitted: Admitted,
}

/// What reading a connection came to.
enum Read {
    /// Nothing more to read now.
    Wait,
    Complete(Vec<u8>),
    Refuse(i32, String),
    /// End of stream or a socket error: closed without an answer.
    Gone,
}

/// The epoll token of the listening socket; connections get 1, 2, ...
const LISTENER: u64 = 0;
/// The longest the poller sleeps (how soon it sees `stop`).
const TICK: Duration = Duration::from_millis(250);
/// Connections accepted per wake-up of the poller.
const ACCEPT_BATCH: usize = 256;
/// How long accepting pauses when the daemon is out of fds.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The socket server: the poller (run by [`run`](Server::run) on the caller's thread) and the
/// worker pool (started by [`start`](Server::start), ended on drop).
pub struct Server {
    listener: UnixListener,
    limits: Limits,
    counts: Arc<Mutex<ConnCounts>>,
    queue: Arc<JobQueue<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    pub fn start(
        listener: UnixListener,
        limits: Limits,
        handler: Arc<Handler>,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let queue = Arc::new(JobQueue::new(limits.user_workers));
        let mut workers = Vec::new();
        for i in 0..limits.workers.max(1) {
            let (q, handler) = (queue.clone(), handler.clone());
            let within = limits.answer_deadline;
            let spawned = std::thread::Builder::new()
                .name(format!("control-{i}"))
                .spawn(move || work(&q, &*handler, within));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    queue.close();
                    return Err(e);
                }
            }
        }
        Ok(Server {
            listener,
            limits,
            counts: Default::default(),
            queue,
            workers,
        })
    }

    /// Accepts and reads connections until `stop` is set (seen within [`TICK`]).
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut poller = Poller {
            epoll: Epoll::new()?,
            reading: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_token: LISTENER + 1,
            paused_until: None,
        };
        poller.epoll.add(self.listener.as_fd(), LISTENER)?;
        let mut ready = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = [poller.deadlines.first().map(|d| d.0), poller.paused_until]
                .into_iter()
                .flatten()
                .map(|t| t.saturating_duration_since(now))
                .fold(TICK, Duration::min);
            poller.epoll.wait(&mut ready, 256, Some(wait))?;
            for r in &ready {
                if r.token == LISTENER {
                    self.accept_all(&mut poller);
                } else {
                    self.read_ready(&mut poller, r.token);
                }
            }
            let now = Instant::now();
            while let Some(&(deadline, token)) = poller.deadlines.first() {
                if deadline > now {
                    break;
                }
                poller.deadlines.pop_first();
                if let Some(conn) = poller.forget(token) {
                    refuse(&conn.stream, libc::ETIMEDOUT, "no complete request in time");
                }
            }
            if poller.paused_until.is_some_and(|t| t <= now) {
                poller.paused_until = None;
                poller.epoll.add(self.listener.as_fd(), LISTENER)?;
            }
        }
        Ok(())
    }

    /// Accepts what is waiting, at most [`ACCEPT_BATCH`] (a flood of connections must not keep
    /// the poller from reading the others and enforcing deadlines; the listener stays ready).
    fn accept_all(&self, poller: &mut Poller) {
        for _ in 0..ACCEPT_BATCH {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    // Level-triggered: leaving the listener in the set would spin.
                    tracing::warn!(error = %e, "control socket: cannot accept, pausing");
                    let _ = poller.epoll.delete(self.listener.as_fd());
                    poller.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "control socket: accept failed");
                    continue;
                }
            };
            let Ok(cred) = peer_credentials(&stream) else {
                continue;
            };
            let peer = Peer {
                pid: cred.pid,
                uid: cred.uid,
            };
            let admitted = lock(&self.counts).admit(&self.limits, peer.uid);
            let class = match admitted {
                Ok(class) => class,
                Err(why) => {
                    let what = match why {
                        Refusal::Uid => format!(
                            "too many connections from uid {} (at most {})",
                            peer.uid, self.limits.per_uid
                        ),
                        Refusal::Users => "too many connections from non-root users".to_string(),
                        Refusal::Root => "too many connections from root".to_string(),
                    };
                    tracing::debug!(
                        uid = peer.uid,
                        pid = peer.pid,
                        "control connection refused: {what}"
                    );
                    let _ = stream.set_nonblocking(true);
                    refuse(&stream, libc::EAGAIN, &what);
                    continue;
                }
            };
            let admitted = Admitted {
                counts: self.counts.clone(),
                uid: peer.uid,
            };
            let token = poller.next_token;
            poller.next_token += 1;
            if stream.set_nonblocking(true).is_err()
                || poller.epoll.add(stream.as_fd(), token).is_err()
            {
                continue;
            }
            let deadline = Instant::now()
                + match class {
                    Class::Root => self.limits.root_deadline,
                    Class::User => self.limits.user_deadline,
                };
            poller.deadlines.insert((deadline, token));
            poller.reading.insert(
                token,
                Reading {
                    stream,
                    peer,
                    class,
                    framer: Framer::new(self.limits.request_max),
                    fds: Vec::new(),
                    deadline,
                    _admitted: admitted,
                },
            );
        }
    }

    fn read_ready(&self, poller: &mut Poller, token: u64) {
        let Some(conn) = poller.reading.get_mut(&token) else {
            return;
        };
        match read_some(conn, self.limits.fds_max) {
            Read::Wait => {}
            Read::Gone => {
                poller.forget(token);
            }
            Read::Refuse(errno, what) => {
                if let Some(conn) = poller.forget(token) {
                    tracing::debug!(
                        uid = conn.peer.uid,
                        pid = conn.peer.pid,
                        "control request refused: {what}"
                    );
                    refuse(&conn.stream, errno, &what);
                }
            }
            Read::Complete(line) => {
                if let Some(conn) = poller.forget(token) {
                    let job = Job {
                        stream: conn.stream,
                        peer: conn.peer,
                        line,
                        fds: conn.fds,
                        _admitted: conn._admitted,
                    };
                    self.queue.push(conn.class, job);
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.queue.close();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The poller's connections still being read.
struct Poller {
    epoll: Epoll,
    reading: HashMap<u64, Reading>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_token: u64,
    paused_until: Option<Instant>,
}

impl Poller {
    /// Stops watching a connection and hands it back (to be answered, queued or dropped).
    fn forget(&mut self, token: u64) -> Option<Reading> {
        let conn = self.reading.remove(&token)?;
        let _ = self.epoll.delete(conn.stream.as_fd());
        self.deadlines.remove(&(conn.deadline, token));
        Some(conn)
    }
}

/// Reads what a nonblocking connection has, into its framer; fds beyond `fds_max` in all make
/// the request refused (recv_with_fds closes those it cannot take).
fn read_some(conn: &mut Reading, fds_max: usize) -> Read {
    let mut chunk = [0u8; 4096];
    loop {
        let room = fds_max.saturating_sub(conn.fds.len());
        match timens_sys::fdpass::recv_with_fds(&conn.stream, &mut chunk, room) {
            Ok((0, _)) => return Read::Gone,
            Ok((n, fds)) => {
                conn.fds.extend(fds);
                match conn.framer.push(&chunk[..n]) {
                    Framed::More => continue,
                    Framed::Line(line) => return Read::Complete(line),
                    Framed::TooLong => {
                        return Read::Refuse(
                            libc::EMSGSIZE,
                            format!("request longer than {} bytes", timens_proto::REQUEST_MAX),
                        )
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read::Wait,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Read::Refuse(
                    libc::EINVAL,
                    format!("a request carries at most {fds_max} fds"),
                )
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Read::Gone,
        }
    }
}

/// Best effort, never blocking: an error line to a connection about to be closed.
fn refuse(stream: &UnixStream, errno: i32, what: &str) {
    let _ = (&*stream).write(&timens_proto::response_line(&error(errno, what)));
}

/// A worker: runs requests until the queue closes. A request that panics is logged and its
/// connection closed; the worker carries on.
fn work(queue: &JobQueue<Job>, handler: &Handler, within: Duration) {
    while let Some((class, job)) = queue.take() {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            answer(handler, job, within)
        }));
        if ran.is_err() {
            tracing::error!("a control request panicked");
        }
        queue.done(class);
    }
}

fn answer(handler: &Handler, job: Job, within: Duration) {
    let Job {
        stream,
        peer,
        line,
        fds,
        _admitted,
    } = job;
    let answer = match timens_proto::parse_request(&line) {
        Ok(req) => handler(peer, req, fds),
        Err(e) => error(libc::EINVAL, format!("bad request: {e}")).into(),
    };
    if let Err(e) = write_answer(&stream, &answer, within) {
        tracing::debug!(uid = peer.uid, pid = peer.pid, error = %e, "control answer not delivered");
    }
}

/// Writes an answer within `within` in all (a peer that reads slowly or not at all gets cut
/// off, not a worker held).
fn write_answer(stream: &UnixStream, answer: &Answer, within: Duration) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let deadline = Instant::now() + within;
    let line = timens_proto::response_line(&answer.resp);
    if !answer.fds.is_empty() {
        // Short lines (created, fuse_fd) that fit in the socket's buffer.
        stream.set_write_timeout(Some(within))?;
        let fds: Vec<BorrowedFd<'_>> = answer.fds.iter().map(AsFd::as_fd).collect();
        return timens_sys::fdpass::send_with_fds(stream, &line, &fds);
    }
    let mut sent = 0;
    while sent < line.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match (&*stream).write(&line[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
