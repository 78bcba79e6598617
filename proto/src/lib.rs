//! The control protocol between `timens` and the `timensfs` daemon.
//!
//! One request per connection on the daemon's Unix socket: a single line of JSON, optionally
//! carrying file descriptors (SCM_RIGHTS), answered by a single line of JSON. The daemon trusts
//! only the kernel-supplied peer credentials (`SO_PEERCRED`), never anything a request claims
//! about who sent it.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Default state directory of the daemon: store, its views, control socket, pid file, log.
pub const DEFAULT_STATE_DIR: &str = "/run/timensfs";
pub const SOCKET_NAME: &str = "control.sock";
pub const STORE_NAME: &str = "store";
/// The directory of the store's per-sandbox views (one file per sandbox mount namespace).
pub const VIEWS_NAME: &str = "views";
pub const PIDFILE_NAME: &str = "timensfs.pid";
pub const LOG_NAME: &str = "timensfs.log";

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Seconds and nanoseconds of one offset, as the kernel stores it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offset {
    pub sec: i64,
    pub nsec: i64,
}

impl Offset {
    pub fn new(sec: i64, nsec: i64) -> Offset {
        Offset { sec, nsec }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is the daemon there? Answered with `Pong`.
    Ping,
    /// Serve a new sandbox. Carries two fds: the `/dev/fuse` fd of the overlay mount the sender
    /// made over its `/proc`, and the root of the sandbox's own procfs (a detached or attached
    /// mount). The sender becomes the first member of a new namespace with these offsets, or, with
    /// `for_children`, keeps its current namespace and gets the new one as time_for_children.
    CreateSandbox {
        monotonic: Offset,
        boottime: Offset,
        for_children: bool,
        label: String,
        /// `timens mount`: the sandbox's first process is this host pid (in the sender's mount
        /// namespace), not the short-lived sender.
        #[serde(default)]
        anchor_pid: Option<u32>,
        /// Re-attach: serve the existing namespace `time:[N]` (after a daemon restart) instead
        /// of creating one; the offsets are then ignored.
        #[serde(default)]
        attach_inum: Option<u32>,
        /// The sender binds the sandbox procfs's own `self` and `thread-self` links over the
        /// overlay's (the kernel then resolves them per reader, with no round trip): serve
        /// those two names as fixed mount points.
        #[serde(default)]
        self_bound: bool,
    },
    /// Every namespace the daemon knows.
    Status,
    /// The clock library's `unshare(CLONE_NEWTIME)`: a new pending namespace, with offsets copied
    /// from the caller's time_for_children (A4), becomes the caller's time_for_children (A1).
    Unshare,
    /// The clock library's `setns()` on a time namespace file (B5). Carries one fd: the file the
    /// caller gave to setns. As on the kernel, the target is whatever that file is (one of the
    /// daemon's own overlays' `ns/time` files), never a number the request names: anything a
    /// client adds (an older library's `inum`) is ignored, and without an fd the answer is
    /// EBADF, the kernel's for an fd the caller does not have.
    Setns,
    /// `clone3(CLONE_NEWTIME)` without CLONE_VM, step 1: a new namespace copied from the caller's
    /// time_for_children, entered (so frozen) at once by the child to come (A11).
    NewChildNs,
    /// Step 2, from the parent after clone3 returned: `pid` (the caller's child) is in `inum`.
    PlaceChild { pid: u32, inum: u32 },
    /// The caller's namespaces as the daemon knows them.
    WhoAmI,
    /// A fresh `/dev/fuse` descriptor (answered with `FuseFd` and the fd), for a mounter whose
    /// device cgroup forbids opening /dev/fuse (an OCI hook inside the container). Root only.
    OpenFuse,
    /// Forget a namespace no overlay serves any more (an OCI poststop hook). Root only.
    Release { inum: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsStatus {
    /// `time:[N]` inode number.
    pub inum: u32,
    pub monotonic: Offset,
    pub boottime: Offset,
    pub frozen: bool,
    /// Processes whose time namespace this is (threads not counted).
    pub members: u32,
    /// Sandbox label, e.g. `run:1234`.
    pub sandbox: String,
    /// Host pid of the sandbox's first process.
    pub anchor_pid: u32,
    /// Whether a live FUSE session serves this sandbox's /proc.
    pub served: bool,
    /// The sandbox's mount namespace (inode number of its `ns/mnt`).
    #[serde(default)]
    pub mntns: u64,
}

/// Where a namespace's offsets live in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsSlot {
    pub inum: u32,
    pub index: u32,
    pub generation: u32,
}

/// `index` of the initial namespace, which has no slot (its offsets are zero).
pub const INIT_SLOT_INDEX: u32 = u32::MAX;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    Pong {
        pid: u32,
        version: String,
    },
    Created {
        inum: u32,
    },
    Released {
        inum: u32,
    },
    /// Carries one fd.
    FuseFd,
    /// A task's namespaces: `time:[time]` and `time:[tfc]`, with the store slots (index and
    /// generation; `u32::MAX` for the initial namespace) the clock library reads offsets from.
    Ns {
        time: NsSlot,
        tfc: NsSlot,
    },
    Status {
        namespaces: Vec<NsStatus>,
    },
    Error {
        errno: i32,
        message: String,
    },
}

/// Sends one request (with fds) and reads the one-line answer.
pub fn call(sock: &UnixStream, req: &Request, fds: &[BorrowedFd<'_>]) -> io::Result<Response> {
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    if fds.is_empty() {
        (&*sock).write_all(&line)?;
    } else {
        timens_sys::fdpass::send_with_fds(sock, &line, fds)?;
    }
    let mut reader = BufReader::new(sock);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection without answering",
        ));
    }
    serde_json::from_str(&answer).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Sends one request with fds and reads an answer that may carry fds.
pub fn call_fds(
    sock: &UnixStream,
    req: &Request,
    fds: &[BorrowedFd<'_>],
) -> io::Result<(Response, Vec<OwnedFd>)> {
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    timens_sys::fdpass::send_with_fds(sock, &line, fds)?;
    read_answer_fds(sock)
}

/// Sends a request and reads an answer that may carry fds.
pub fn call_recv_fds(sock: &UnixStream, req: &Request) -> io::Result<(Response, Vec<OwnedFd>)> {
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    (&*sock).write_all(&line)?;
    read_answer_fds(sock)
}

fn read_answer_fds(sock: &UnixStream) -> io::Result<(Response, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let (n, fds) = timens_sys::fdpass::recv_with_fds(sock, &mut buf, 4)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection without answering",
        ));
    }
    let end = buf[..n].iter().position(|&b| b == b'\n').unwrap_or(n);
    let resp = serde_json::from_slice(&buf[..end])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((resp, fds))
}

/// Answers with fds (daemon side).
pub fn write_response_fds(
    sock: &UnixStream,
    resp: &Response,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut line = serde_json::to_vec(resp).map_err(io::Error::other)?;
    line.push(b'\n');
    timens_sys::fdpass::send_with_fds(sock, &line, fds)
}

/// The longest request line the daemon reads (its newline included); a longer one is refused.
pub const REQUEST_MAX: usize = 64 * 1024;

/// The most fds one request carries (`create_sandbox`: two; room for two more). A request
/// carrying more is refused.
pub const REQUEST_FDS_MAX: usize = 4;

/// Parses one request line (without its newline; daemon side).
pub fn parse_request(line: &[u8]) -> io::Result<Request> {
    serde_json::from_slice(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// One answer as the line that goes on the wire, newline included (daemon side).
pub fn response_line(resp: &Response) -> Vec<u8> {
    // Serializing these plain enums cannot fail (no maps with non-string keys, no I/O).
    let mut line = serde_json::to_vec(resp).unwrap_or_default();
    line.push(b'\n');
    line
}

pub fn write_response(sock: &UnixStream, resp: &Response) -> io::Result<()> {
    (&*sock).write_all(&response_line(resp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format_is_tagged_json() {
        let req = Request::CreateSandbox {
            monotonic: Offset { sec: 3600, nsec: 0 },
            boottime: Offset { sec: -5, nsec: 7 },
            for_children: true,
            label: "run:1".into(),
            anchor_pid: None,
            attach_inum: None,
            self_bound: true,
        };
        let text = serde_json::to_string(&req).unwrap();
        assert!(text.starts_with(r#"{"op":"create_sandbox""#), "{text}");
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
    }

    #[test]
    fn setns_names_no_namespace() {
        assert_eq!(
            serde_json::to_string(&Request::Setns).unwrap(),
            r#"{"op":"setns"}"#
        );
        // A raw client's (or an older library's) inum is read and ignored: the daemon answers
        // from the fd, so such a request gets EBADF rather than a dropped connection.
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"setns","inum":4160749568}"#).unwrap(),
            Request::Setns
        );
    }

    #[test]
    fn round_trip_over_a_socketpair() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut line = String::new();
            BufReader::new(&b).read_line(&mut line).unwrap();
            let req = parse_request(line.trim_end().as_bytes()).unwrap();
            assert_eq!(req, Request::Status);
            write_response(&b, &Response::Status { namespaces: vec![] }).unwrap();
        });
        let resp = call(&a, &Request::Status, &[]).unwrap();
        assert_eq!(resp, Response::Status { namespaces: vec![] });
        server.join().unwrap();
    }
}
