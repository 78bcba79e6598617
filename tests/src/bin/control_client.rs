//! A misbehaving client of the daemon's control socket, for tests/tests/control_socket.rs (run
//! there as uid 65534).
//!
//! Usage:
//! - `control-client hold SOCKET N REFRESH_MS`: opens N connections, each sending one byte (`{`)
//!   and nothing more, and prints `connected N`. Then, until its stdin closes, every REFRESH_MS
//!   it replaces each connection the daemon has closed or answered by a new one (an attacker
//!   keeping N connections open from its side). At the end prints `replaced M`.
//! - `control-client idle SOCKET MAX_MS`: one connection sending `{`; prints
//!   `closed_after_ms MS` and then the daemon's answer line (or `no answer`) once the daemon
//!   closes it, or `still_open_after_ms MAX_MS` if it does not within MAX_MS.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: control-client hold SOCKET N REFRESH_MS | idle SOCKET MAX_MS");
    std::process::exit(2);
}

/// Soft RLIMIT_NOFILE up to the hard limit (an unprivileged process may).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to fill in, then to read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A connection that has sent one byte. A daemon that closed it already makes the write fail
/// (EPIPE; std ignores SIGPIPE): the connection is still returned, to be replaced later.
fn open_one(sock: &Path) -> std::io::Result<UnixStream> {
    let s = UnixStream::connect(sock)?;
    let _ = (&s).write(b"{");
    Ok(s)
}

/// Whether `fd` is readable or hung up now (the daemon answered or closed).
fn closed_by_daemon(fds: &mut [libc::pollfd]) {
    for p in fds.iter_mut() {
        p.events = libc::POLLIN | libc::POLLRDHUP;
        p.revents = 0;
    }
    // SAFETY: `fds` is a valid array of pollfds of the length passed.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
}

/// Whether stdin has closed (waiting up to `wait`).
fn stdin_closed(wait: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, wait.as_millis() as libc::c_int) };
    n > 0
}

fn hold(sock: &Path, n: usize, refresh: Duration) {
    raise_fd_limit();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        match open_one(sock) {
            Ok(s) => conns.push(s),
            Err(e) => {
                eprintln!("control-client: connection {i}: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("connected {}", conns.len());
    let _ = std::io::stdout().flush();
    let mut replaced = 0u64;
    let mut polls: Vec<libc::pollfd> = Vec::with_capacity(n);
    while !stdin_closed(refresh) {
        polls.clear();
        polls.extend(conns.iter().map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: 0,
            revents: 0,
        }));
        closed_by_daemon(&mut polls);
        for (i, p) in polls.iter().enumerate() {
            if p.revents != 0 {
                if let Ok(s) = open_one(sock) {
                    conns[i] = s;
                    replaced += 1;
                }
            }
        }
    }
    println!("replaced {replaced}");
}

fn idle(sock: &Path, max: Duration) {
    let s = match open_one(sock) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("control-client: {e}");
            std::process::exit(1);
        }
    };
    let start = Instant::now();
    let _ = s.set_read_timeout(Some(max));
    let mut answer = Vec::new();
    match (&s).read_to_end(&mut answer) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            println!("still_open_after_ms {}", max.as_millis());
            return;
        }
        _ => {}
    }
    println!("closed_after_ms {}", start.elapsed().as_millis());
    let text = String::from_utf8_lossy(&answer);
    println!(
        "{}",
        text.lines()
            .next()
            .filter(|l| !l.is_empty())
            .unwrap_or("no answer")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |s: &String| s.parse::<u64>().unwrap_or_else(|_| usage());
    match args.as_slice() {
        [cmd, sock, n, ms] if cmd == "hold" => hold(
            Path::new(sock),
            num(n) as usize,
            Duration::from_millis(num(ms)),
        ),
        [cmd, sock, ms] if cmd == "idle" => idle(Path::new(sock), Duration::from_millis(num(ms))),
        _ => usage(),
    }
}
