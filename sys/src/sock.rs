//! What a server of Unix stream sockets needs from the kernel beyond std: the peer's credentials
//! (`SO_PEERCRED`) and an epoll set to wait on many nonblocking sockets from one thread.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::util::cvt;

/// The process that connected (at `connect` time), as the kernel recorded it; ids as seen from
/// the reader's user and pid namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// `getsockopt(SO_PEERCRED)`.
pub fn peer_credentials(sock: &UnixStream) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid out-pointers of the sizes given.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(PeerCred {
        pid: cred.pid as u32,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// One readiness report of [`Epoll::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The token the fd was added with.
    pub token: u64,
    /// Data (or end of stream) to read.
    pub readable: bool,
    /// The peer hung up or the socket has an error.
    pub hangup: bool,
}

/// A level-triggered epoll set watching fds for input. The fds stay owned by the caller, who
/// must [`delete`](Epoll::delete) an fd before closing it only if it wants no stale report in
/// the same `wait` batch (the kernel drops a closed fd from the set by itself).
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new fd we own.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for input (and hang-up), reported with `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event that lives across the call.
        cvt(unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        })?;
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null is allowed since Linux 2.6.9).
        cvt(unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        })?;
        Ok(())
    }

    /// Waits up to `timeout` (None: for ever) for at most `max` reports, appended to `out`
    /// (cleared first). An interrupted wait returns no reports.
    pub fn wait(
        &self,
        out: &mut Vec<Ready>,
        max: usize,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        out.clear();
        let max = max.clamp(1, 1024);
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; max];
        // Rounded up: a deadline 0.3 ms away must not turn into a busy loop of 0 ms waits.
        let ms = match timeout {
            None => -1,
            Some(t) => t.as_micros().div_ceil(1000).min(libc::c_int::MAX as u128) as libc::c_int,
        };
        // SAFETY: `events` has room for `max` entries, the count passed.
        let n = match cvt(unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                max as libc::c_int,
                ms,
            )
        }) {
            Ok(n) => n as usize,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => 0,
            Err(e) => return Err(e),
        };
        out.extend(events[..n].iter().map(|ev| {
            let flags = ev.events as libc::c_int;
            Ready {
                token: ev.u64,
                readable: flags & libc::EPOLLIN != 0,
                hangup: flags & (libc::EPOLLHUP | libc::EPOLLRDHUP | libc::EPOLLERR) != 0,
            }
        }));
        Ok(())
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn peer_of_a_socketpair_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = peer_credentials(&a).unwrap();
        assert_eq!(cred.pid, std::process::id());
        // SAFETY: getuid/getgid have no preconditions.
        assert_eq!((cred.uid, cred.gid), unsafe {
            (libc::getuid(), libc::getgid())
        });
    }

    #[test]
    fn epoll_reports_input_and_hangup_by_token() {
        let ep = Epoll::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        ep.add(b.as_fd(), 7).unwrap();
        let mut out = Vec::new();
        ep.wait(&mut out, 8, Some(Duration::from_millis(0)))
            .unwrap();
        assert!(out.is_empty(), "{out:?}");
        (&a).write_all(b"x").unwrap();
        ep.wait(&mut out, 8, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            out,
            vec![Ready {
                token: 7,
                readable: true,
                hangup: false
            }]
        );
        drop(a);
        ep.wait(&mut out, 8, Some(Duration::from_secs(5))).unwrap();
        assert!(out[0].hangup, "{out:?}");
        ep.delete(b.as_fd()).unwrap();
        ep.wait(&mut out, 8, Some(Duration::from_millis(0)))
            .unwrap();
        assert!(out.is_empty(), "{out:?}");
    }
}
