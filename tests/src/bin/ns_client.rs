//! `ns-client`: a raw client of the daemon's control socket, for the tests of what a hostile (or
//! merely old) process inside a sandbox can make the daemon do.
//!
//! Usage:
//!   ns-client request SOCKET LINE [FILE]   send LINE (one JSON request) to SOCKET, with an fd of
//!                                          FILE attached (SCM_RIGHTS) if given; `fd:N` is the
//!                                          inherited descriptor N
//!
//! Prints `reply <the daemon's answer line>`, then the client's own `/proc/self/ns/time` link as
//! `time <link>` and its `/proc/self/timens_offsets` (as read after the answer), so a test sees
//! whether the request moved it. It never calls setns itself. Exit status 0 once an answer was
//! read, 2 on bad usage, 1 when the exchange fails.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

const USAGE: &str = "usage: ns-client request SOCKET LINE [FILE | fd:N]";

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("ns-client: {msg}");
    std::process::exit(code)
}

/// Sends `data` with `fd` attached to its first byte (the data is never empty: a 0-byte message
/// would drop the fd).
fn send_with_fd(sock: &UnixStream, data: &[u8], fd: RawFd) -> std::io::Result<()> {
    let fd_len = std::mem::size_of::<RawFd>() as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is `space` zeroed, aligned bytes: room for one header and one
    // fd, so CMSG_FIRSTHDR is non-null and its data lies inside the buffer.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        libc::CMSG_DATA(cmsg).cast::<RawFd>().write_unaligned(fd);
    }
    // SAFETY: `msg` points to `iov` (into `data`) and `control`, alive for the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    (&*sock).write_all(&data[n as usize..])
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (socket, line, file) = match &args[..] {
        [cmd, socket, line] if cmd == "request" => (socket, line, None),
        [cmd, socket, line, file] if cmd == "request" => (socket, line, Some(file)),
        _ => fail(2, USAGE),
    };
    let sock =
        UnixStream::connect(socket).unwrap_or_else(|e| fail(1, &format!("connect {socket}: {e}")));
    let data = format!("{line}\n");
    let sent = match file {
        Some(inherited) if inherited.starts_with("fd:") => {
            let fd: RawFd = inherited[3..].parse().unwrap_or_else(|_| fail(2, USAGE));
            send_with_fd(&sock, data.as_bytes(), fd)
        }
        Some(path) => {
            let f =
                std::fs::File::open(path).unwrap_or_else(|e| fail(1, &format!("open {path}: {e}")));
            send_with_fd(&sock, data.as_bytes(), f.as_raw_fd())
        }
        None => (&sock).write_all(data.as_bytes()),
    };
    sent.unwrap_or_else(|e| fail(1, &format!("send: {e}")));
    let mut answer = String::new();
    BufReader::new(&sock)
        .read_line(&mut answer)
        .unwrap_or_else(|e| fail(1, &format!("read: {e}")));
    println!("reply {}", answer.trim_end());
    let time = std::fs::read_link("/proc/self/ns/time")
        .map(|l| l.display().to_string())
        .unwrap_or_else(|e| format!("error {e}"));
    println!("time {time}");
    let offsets = std::fs::read_to_string("/proc/self/timens_offsets")
        .unwrap_or_else(|e| format!("error {e}\n"));
    print!("{offsets}");
}
