//! Passing file descriptors over a Unix stream socket (`SCM_RIGHTS`).
//!
//! The descriptors travel with the first byte of the payload, so the payload must not be empty:
//! a 0-byte `sendmsg` on a stream socket silently drops them.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::util::{cvt_ssize, retry_eintr};

/// The kernel's limit on descriptors per message (`SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

const FD_SIZE: usize = std::mem::size_of::<RawFd>();

/// A zeroed control buffer of at least `len` bytes, aligned for `struct cmsghdr`.
fn control_buffer(len: usize) -> Vec<u64> {
    vec![0u64; len.div_ceil(std::mem::size_of::<u64>())]
}

fn cmsg_space(nfds: usize) -> usize {
    // SAFETY: CMSG_SPACE only computes a size; nfds <= MAX_FDS keeps it far from overflow.
    unsafe { libc::CMSG_SPACE((nfds * FD_SIZE) as libc::c_uint) as usize }
}

/// Sends all of `data` on `sock`, with `fds` attached to its first byte. `data` must be
/// non-empty (InvalidInput otherwise) and at most [`MAX_FDS`] descriptors can go at once.
/// Never raises SIGPIPE (EPIPE instead).
pub fn send_with_fds(sock: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if data.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "send_with_fds: empty payload (the descriptors would be dropped)",
        ));
    }
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "send_with_fds: {} descriptors, at most {MAX_FDS}",
                fds.len()
            ),
        ));
    }
    let space = if fds.is_empty() {
        0
    } else {
        cmsg_space(fds.len())
    };
    let mut control = control_buffer(space);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero (null pointers, zero lengths) is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` zeroed, aligned bytes, enough for one cmsghdr
        // with fds.len() descriptors (CMSG_SPACE), so CMSG_FIRSTHDR is non-null and the header
        // and its data area lie inside the buffer. Unaligned writes are used for the data.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN((fds.len() * FD_SIZE) as libc::c_uint) as _;
            let data_ptr = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data_ptr.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    let sent = retry_eintr(|| {
        // SAFETY: `msg` points to `iov` (which points into `data`) and to `control`, all alive
        // and unchanged for the duration of the call.
        cvt_ssize(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })
    })?;
    // A stream socket may take part of the payload; the descriptors went with the first byte.
    let mut rest = &data[sent..];
    while !rest.is_empty() {
        let n = retry_eintr(|| {
            // SAFETY: `rest` is a valid readable buffer of the given length.
            cvt_ssize(unsafe {
                libc::send(
                    sock.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            })
        })?;
        rest = &rest[n..];
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes and at most `max_fds` descriptors (capped at [`MAX_FDS`]).
/// The descriptors are close-on-exec. Returns `(0, [])` at end of stream. If the peer sent more
/// descriptors than `max_fds`, those that arrived are closed and an error is returned.
pub fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    if buf.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "recv_with_fds: empty buffer (indistinguishable from end of stream)",
        ));
    }
    let max_fds = max_fds.min(MAX_FDS);
    let space = if max_fds == 0 { 0 } else { cmsg_space(max_fds) };
    let mut control = control_buffer(space);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if space > 0 {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
    }
    let n = retry_eintr(|| {
        // SAFETY: `msg` points to `iov` (into `buf`) and `control`, both writable and alive for
        // the call, with their true lengths.
        cvt_ssize(unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) })
    })?;

    let mut fds = Vec::new();
    if space > 0 && msg.msg_controllen > 0 {
        // SAFETY: the kernel filled `msg.msg_controllen` bytes of `control` with well-formed
        // cmsghdrs; CMSG_FIRSTHDR/CMSG_NXTHDR stay within that length and return null at the
        // end. Descriptors in SCM_RIGHTS data are new ones installed for us, owned by nobody
        // else; they are read unaligned.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data_len =
                        ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                    let data_ptr = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    for i in 0..data_len / FD_SIZE {
                        fds.push(OwnedFd::from_raw_fd(data_ptr.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
    }
    // CMSG_SPACE rounds up, so the buffer may have taken a descriptor more than asked for.
    if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() > max_fds {
        drop(fds);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "recv_with_fds: control data truncated (peer sent more than {max_fds} descriptors)"
            ),
        ));
    }
    Ok((n, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    fn pipe() -> (std::fs::File, std::fs::File) {
        let (r, w) = nix::unistd::pipe().unwrap();
        (std::fs::File::from(r), std::fs::File::from(w))
    }

    fn is_cloexec(fd: &OwnedFd) -> bool {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn passes_a_pipe_and_reads_through_it() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, mut w) = pipe();
        send_with_fds(&a, b"pipe", &[r.as_fd()]).unwrap();
        drop(r);
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(&b, &mut buf, 4).unwrap();
        assert_eq!(&buf[..n], b"pipe");
        assert_eq!(fds.len(), 1);
        assert!(is_cloexec(&fds[0]));
        w.write_all(b"through").unwrap();
        drop(w);
        let mut got = String::new();
        std::fs::File::from(fds.into_iter().next().unwrap())
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "through");
    }

    #[test]
    fn several_fds_and_none() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r1, w1) = pipe();
        let (r2, w2) = pipe();
        send_with_fds(&a, b"x", &[r1.as_fd(), w1.as_fd(), r2.as_fd(), w2.as_fd()]).unwrap();
        let mut buf = [0u8; 1];
        let (n, fds) = recv_with_fds(&b, &mut buf, 4).unwrap();
        assert_eq!((n, fds.len()), (1, 4));
        send_with_fds(&a, b"plain", &[]).unwrap();
        let mut buf = [0u8; 8];
        let (n, fds) = recv_with_fds(&b, &mut buf, 4).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"plain"[..], 0));
    }

    #[test]
    fn empty_payload_is_refused() {
        let (a, _b) = UnixStream::pair().unwrap();
        let (r, _w) = pipe();
        let e = send_with_fds(&a, b"", &[r.as_fd()]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn more_fds_than_max_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = pipe();
        send_with_fds(&a, b"y", &[r.as_fd(), w.as_fd()]).unwrap();
        let mut buf = [0u8; 1];
        let e = recv_with_fds(&b, &mut buf, 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        send_with_fds(&a, b"z", &[r.as_fd()]).unwrap();
        let e = recv_with_fds(&b, &mut buf, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn end_of_stream() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let mut buf = [0u8; 4];
        let (n, fds) = recv_with_fds(&b, &mut buf, 1).unwrap();
        assert_eq!((n, fds.len()), (0, 0));
    }

    #[test]
    fn send_to_closed_peer_is_epipe() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let e = send_with_fds(&a, b"q", &[]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
    }
}
