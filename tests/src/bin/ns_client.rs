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
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;

const USAGE: &str = "usage: ns-client request SOCKET LINE [FILE | fd:N]";

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("ns-client: {msg}");
    std::process::exit(code)
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
            // SAFETY: the caller hands this process descriptor N open for its lifetime; it is
            // only borrowed for the send.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            timens_sys::fdpass::send_with_fds(&sock, data.as_bytes(), &[fd])
        }
        Some(path) => {
            let f =
                std::fs::File::open(path).unwrap_or_else(|e| fail(1, &format!("open {path}: {e}")));
            timens_sys::fdpass::send_with_fds(&sock, data.as_bytes(), &[f.as_fd()])
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
