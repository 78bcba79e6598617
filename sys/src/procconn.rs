//! The kernel's process-events connector: a netlink socket (`NETLINK_CONNECTOR`, multicast group
//! `CN_IDX_PROC`) on which the kernel reports every fork, exec and exit, in order.
//!
//! Root only (`CAP_NET_ADMIN`), and only from the initial user and pid namespaces: elsewhere the
//! kernel silently ignores the subscription (newer kernels, 6.18 here, refuse the bind with
//! EPERM instead). Pids are as the kernel reports them, in the initial
//! pid namespace. Under load the kernel drops events and the next read fails with ENOBUFS; that
//! is reported as [`ProcEvent::Overrun`], after which the caller must resynchronise from /proc.
//!
//! Only datagrams sent by the kernel (netlink port 0) are accepted: any local process can
//! unicast to a netlink socket, and forged fork or exit events must not move a process between
//! namespaces.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::step_error;
use crate::util::{cvt, cvt_ssize, owned_fd, retry_eintr};

/// One process event, as decoded from the connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcEvent {
    /// A new task: a process (`child_pid == child_tgid`) or a thread.
    Fork {
        parent_pid: u32,
        parent_tgid: u32,
        child_pid: u32,
        child_tgid: u32,
    },
    /// A successful execve. For a multi-threaded caller `pid == tgid`: the kernel reports it
    /// after de_thread, when the execing thread has taken over the leader's pid.
    Exec { pid: u32, tgid: u32 },
    /// A task exited (one event per thread; the process is gone when `pid == tgid` exits).
    Exit { pid: u32, tgid: u32 },
    /// ENOBUFS: events were lost; the caller must resynchronise.
    Overrun,
}

// Wire format, from include/uapi/linux/{netlink,connector,cn_proc}.h. All fields are in host
// byte order; headers are 4-byte aligned on the wire.
const NLMSG_HDRLEN: usize = 16; // struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3; // the type the connector sends its messages with
const NLMSG_OVERRUN: u16 = 4;
const CN_MSG_LEN: usize = 20; // struct cn_msg { u32 idx; u32 val; u32 seq; u32 ack; u16 len; u16 flags; u8 data[]; }
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
// struct proc_event { u32 what; u32 cpu; u64 timestamp_ns; union event_data; }
const EV_DATA: usize = 16;
const PROC_EVENT_NONE: u32 = 0x0000_0000;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// Receive buffer asked for: large, so bursts of forks do not overrun it.
const RCVBUF_BYTES: libc::c_int = 4 << 20;
/// How long [`ProcConnector::open`] waits for the kernel to confirm the subscription. The
/// answer is queued before the request's `sendto` returns; this only bounds the events before it.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// A connector datagram carries one small message; this is ample.
const DGRAM_BUF: usize = 8192;
/// [`ProcConnector::drain`] stops after this many datagrams even if more keep arriving, so a
/// continuous stream of events cannot keep it forever. More than a 4 MiB buffer holds.
const MAX_DRAIN: usize = 65536;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// One proc connector message of a datagram, as far as this module cares.
enum Message<'a> {
    /// The kernel says it dropped messages.
    Overrun,
    /// A `CN_IDX_PROC` message: the `ack` field of its cn_msg and its `struct proc_event`.
    Proc { ack: u32, event: &'a [u8] },
}

/// Walks the netlink messages in `buf` (one datagram). Malformed or truncated messages end the
/// walk; messages of other connectors are skipped.
fn for_each_message<'a>(buf: &'a [u8], mut f: impl FnMut(Message<'a>)) {
    let mut off = 0;
    while let (Some(len), Some(ty)) = (u32_at(buf, off), u16_at(buf, off + 4)) {
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > buf.len() - off {
            return; // malformed or truncated: nothing after it can be trusted
        }
        match ty {
            NLMSG_NOOP | NLMSG_ERROR => {}
            NLMSG_OVERRUN => f(Message::Overrun),
            _ => {
                let cn = &buf[off + NLMSG_HDRLEN..off + len];
                if let (Some(CN_IDX_PROC), Some(CN_VAL_PROC), Some(ack), Some(data_len)) =
                    (u32_at(cn, 0), u32_at(cn, 4), u32_at(cn, 12), u16_at(cn, 16))
                {
                    if let Some(event) = cn.get(CN_MSG_LEN..CN_MSG_LEN + data_len as usize) {
                        f(Message::Proc { ack, event });
                    }
                }
            }
        }
        // NLMSG_ALIGN: the next header starts at a multiple of 4.
        off += (len + 3) & !3;
    }
}

/// Decodes every netlink message in `buf` (one datagram) and appends the fork, exec and exit
/// events to `out`. Other event types, other connector ids, acks and malformed or truncated
/// messages are skipped. Pure: no I/O.
pub fn decode(buf: &[u8], out: &mut Vec<ProcEvent>) {
    for_each_message(buf, |m| match m {
        Message::Overrun => out.push(ProcEvent::Overrun),
        Message::Proc { event, .. } => out.extend(decode_event(event)),
    });
}

/// Decodes one `struct proc_event`.
fn decode_event(ev: &[u8]) -> Option<ProcEvent> {
    let field = |i: usize| u32_at(ev, EV_DATA + 4 * i);
    match u32_at(ev, 0)? {
        // struct fork_proc_event { parent_pid, parent_tgid, child_pid, child_tgid }
        PROC_EVENT_FORK => Some(ProcEvent::Fork {
            parent_pid: field(0)?,
            parent_tgid: field(1)?,
            child_pid: field(2)?,
            child_tgid: field(3)?,
        }),
        // struct exec_proc_event { process_pid, process_tgid }
        PROC_EVENT_EXEC => Some(ProcEvent::Exec {
            pid: field(0)?,
            tgid: field(1)?,
        }),
        // struct exit_proc_event { process_pid, process_tgid, exit_code, exit_signal, .. }
        PROC_EVENT_EXIT => Some(ProcEvent::Exit {
            pid: field(0)?,
            tgid: field(1)?,
        }),
        _ => None,
    }
}

/// The kernel answers a subscription request whose cn_msg `ack` was `a` with a
/// `PROC_EVENT_NONE` event whose cn_msg `ack` is `a + 1`, carrying an errno (0: success).
/// Returns that errno if `buf` holds the answer with `ack == want_ack`.
fn find_ack(buf: &[u8], want_ack: u32) -> Option<u32> {
    let mut found = None;
    for_each_message(buf, |m| {
        if let Message::Proc { ack, event } = m {
            if ack == want_ack && u32_at(event, 0) == Some(PROC_EVENT_NONE) {
                found = found.or(u32_at(event, EV_DATA));
            }
        }
    });
    found
}

/// Builds the control message that (un)subscribes this socket: nlmsghdr + cn_msg + op. The
/// kernel's answer carries `ack + 1` (see [`find_ack`]).
fn control_message(op: u32, ack: u32) -> [u8; NLMSG_HDRLEN + CN_MSG_LEN + 4] {
    let mut m = [0u8; NLMSG_HDRLEN + CN_MSG_LEN + 4];
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
    let cn = NLMSG_HDRLEN;
    m[cn..cn + 4].copy_from_slice(&CN_IDX_PROC.to_ne_bytes());
    m[cn + 4..cn + 8].copy_from_slice(&CN_VAL_PROC.to_ne_bytes());
    m[cn + 12..cn + 16].copy_from_slice(&ack.to_ne_bytes());
    m[cn + 16..cn + 18].copy_from_slice(&4u16.to_ne_bytes());
    m[cn + CN_MSG_LEN..].copy_from_slice(&op.to_ne_bytes());
    m
}

fn netlink_addr(groups: u32) -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is a plain C struct (family, padding, port id, groups); all-zero is valid.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a.nl_groups = groups;
    a
}

/// A subscription to the kernel's process events. Dropping it unsubscribes and closes it.
#[derive(Debug)]
pub struct ProcConnector {
    fd: OwnedFd,
}

/// What one non-blocking read produced.
enum Datagram {
    /// A datagram from the kernel, of this many bytes.
    Kernel(usize),
    /// A datagram from a process, not the kernel: to be discarded.
    Foreign,
    /// ENOBUFS: the kernel dropped events.
    Overrun,
    /// Nothing queued.
    Empty,
}

impl ProcConnector {
    /// Opens the socket, asks for a 4 MiB receive buffer (`SO_RCVBUFFORCE`, else `SO_RCVBUF`),
    /// binds it to the `CN_IDX_PROC` group, subscribes (`PROC_CN_MCAST_LISTEN`) and waits for
    /// the kernel to confirm. Fails with the kernel's errno if it refuses, and with `TimedOut`
    /// if it does not answer (outside the initial user and pid namespaces it ignores
    /// subscriptions).
    ///
    /// Events that happen before `open` returns are not reported: scan /proc after opening to
    /// start from a known state.
    pub fn open() -> io::Result<ProcConnector> {
        let ret = {
            // SAFETY: socket(2) takes no pointers; the result is checked and owned below.
            unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                    libc::NETLINK_CONNECTOR,
                )
            }
        };
        let fd = owned_fd(ret as libc::c_long)
            .map_err(|e| step_error("procconn socket", "NETLINK_CONNECTOR", e))?;
        let conn = ProcConnector { fd };
        conn.set_rcvbuf();
        let addr = netlink_addr(CN_IDX_PROC);
        // SAFETY: `addr` is a valid sockaddr_nl and the length passed is its size.
        cvt(unsafe {
            libc::bind(
                conn.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })
        .map_err(|e| step_error("procconn bind", "CN_IDX_PROC", e))?;
        // Our netlink port id is unique among this protocol's sockets: a good tag for the answer.
        let tag = conn
            .port_id()
            .map_err(|e| step_error("procconn getsockname", "NETLINK_CONNECTOR", e))?;
        conn.send_control(PROC_CN_MCAST_LISTEN, tag)
            .map_err(|e| step_error("procconn send", "PROC_CN_MCAST_LISTEN", e))?;
        conn.await_ack(tag.wrapping_add(1), ACK_TIMEOUT)
            .map_err(|e| step_error("procconn subscribe", "PROC_CN_MCAST_LISTEN", e))?;
        Ok(conn)
    }

    fn set_rcvbuf(&self) {
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: the option value is a c_int and the length passed is its size.
            let ret = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&RCVBUF_BYTES as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if ret == 0 {
                return;
            }
        }
        // Neither worked: keep the default size; overruns are reported, not hidden.
    }

    /// The netlink port id the kernel assigned to this socket.
    fn port_id(&self) -> io::Result<u32> {
        let mut own = netlink_addr(0);
        let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `own` is a writable sockaddr_nl and `len` holds its size.
        cvt(unsafe {
            libc::getsockname(
                self.fd.as_raw_fd(),
                (&mut own as *mut libc::sockaddr_nl).cast(),
                &mut len,
            )
        })?;
        Ok(own.nl_pid)
    }

    fn send_control(&self, op: u32, ack: u32) -> io::Result<()> {
        let msg = control_message(op, ack);
        let kernel = netlink_addr(0);
        retry_eintr(|| {
            // SAFETY: `msg` and `kernel` are valid for the given lengths for the whole call.
            cvt_ssize(unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&kernel as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            })
        })?;
        Ok(())
    }

    /// Reads one datagram into `buf` without blocking.
    fn recv_datagram(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        let mut from = netlink_addr(0);
        let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        let res = retry_eintr(|| {
            // SAFETY: `buf` and `from` are valid writable buffers of the lengths passed, and
            // `from_len` holds the size of `from`.
            cvt_ssize(unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_nl).cast(),
                    &mut from_len,
                )
            })
        });
        match res {
            Ok(_)
                if from.nl_family != libc::AF_NETLINK as libc::sa_family_t || from.nl_pid != 0 =>
            {
                Ok(Datagram::Foreign)
            }
            Ok(n) => Ok(Datagram::Kernel(n)),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(Datagram::Empty),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Datagram::Overrun),
            Err(e) => Err(e),
        }
    }

    /// Waits until a datagram (or an error) is pending; false if `deadline` passed first.
    fn wait_readable(&self, deadline: Option<Instant>) -> io::Result<bool> {
        loop {
            let wait_ms: libc::c_int = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    // Round up, so a short timeout still waits rather than spinning.
                    left.as_nanos()
                        .div_ceil(1_000_000)
                        .min(libc::c_int::MAX as u128) as libc::c_int
                }
            };
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd, and we pass a count of 1.
            match cvt(unsafe { libc::poll(&mut pfd, 1, wait_ms) }) {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads until the kernel's answer to our subscription arrives, discarding earlier events.
    fn await_ack(&self, want_ack: u32, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; DGRAM_BUF];
        loop {
            match self.recv_datagram(&mut buf)? {
                Datagram::Kernel(n) => match find_ack(&buf[..n], want_ack) {
                    Some(0) => return Ok(()),
                    Some(err) => return Err(io::Error::from_raw_os_error(err as i32)),
                    None => {}
                },
                Datagram::Foreign | Datagram::Overrun => {}
                Datagram::Empty => {
                    if !self.wait_readable(Some(deadline))? {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no answer from the kernel (it serves only the initial user and pid namespaces)",
                        ));
                    }
                }
            }
        }
    }

    /// Reads one datagram without blocking and decodes it into `out`; false if none was queued.
    fn recv_one(&self, out: &mut Vec<ProcEvent>) -> io::Result<bool> {
        let mut buf = [0u8; DGRAM_BUF];
        match self.recv_datagram(&mut buf)? {
            Datagram::Kernel(n) => decode(&buf[..n], out),
            Datagram::Overrun => out.push(ProcEvent::Overrun),
            Datagram::Foreign => {}
            Datagram::Empty => return Ok(false),
        }
        Ok(true)
    }

    /// Blocks up to `timeout` (`None`: forever) until at least one event has been appended to
    /// `out`, then appends whatever else is queued already. Events of other types are ignored.
    /// Returns `Ok(())` with nothing added when the timeout expires.
    pub fn recv(&self, out: &mut Vec<ProcEvent>, timeout: Option<Duration>) -> io::Result<()> {
        let start = out.len();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if !self.wait_readable(deadline)? {
                return Ok(());
            }
            while out.len() == start && self.recv_one(out)? {}
            if out.len() > start {
                return self.drain(out);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
        }
    }

    /// Appends every event queued now, without blocking.
    pub fn drain(&self, out: &mut Vec<ProcEvent>) -> io::Result<()> {
        for _ in 0..MAX_DRAIN {
            if !self.recv_one(out)? {
                break;
            }
        }
        Ok(())
    }
}

impl Drop for ProcConnector {
    fn drop(&mut self) {
        // The kernel counts listeners and skips building events when there are none; give ours
        // back. Best effort: closing the socket is what really stops delivery.
        let _ = self.send_control(PROC_CN_MCAST_IGNORE, 0);
    }
}

impl AsRawFd for ProcConnector {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for ProcConnector {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds one netlink message carrying a proc_event `what` with the given data words,
    /// padded to 4 bytes as the kernel does.
    fn message(nl_type: u16, idx: u32, what: u32, data: &[u32]) -> Vec<u8> {
        message_acked(nl_type, idx, 0, what, data)
    }

    /// As [`message`], with the cn_msg `ack` field set.
    fn message_acked(nl_type: u16, idx: u32, ack: u32, what: u32, data: &[u32]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend_from_slice(&what.to_ne_bytes());
        ev.extend_from_slice(&1u32.to_ne_bytes()); // cpu
        ev.extend_from_slice(&123_456_789u64.to_ne_bytes()); // timestamp_ns
        for w in data {
            ev.extend_from_slice(&w.to_ne_bytes());
        }
        let mut cn = Vec::new();
        cn.extend_from_slice(&idx.to_ne_bytes());
        cn.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        cn.extend_from_slice(&7u32.to_ne_bytes()); // seq
        cn.extend_from_slice(&ack.to_ne_bytes());
        cn.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
        cn.extend_from_slice(&0u16.to_ne_bytes()); // flags
        cn.extend_from_slice(&ev);
        let len = NLMSG_HDRLEN + cn.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&nl_type.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes()); // flags
        m.extend_from_slice(&7u32.to_ne_bytes()); // seq
        m.extend_from_slice(&0u32.to_ne_bytes()); // port id
        m.extend_from_slice(&cn);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn decoded(buf: &[u8]) -> Vec<ProcEvent> {
        let mut out = Vec::new();
        decode(buf, &mut out);
        out
    }

    #[test]
    fn fork_exec_exit_in_one_buffer() {
        let mut buf = message(NLMSG_DONE, CN_IDX_PROC, PROC_EVENT_FORK, &[10, 10, 11, 11]);
        buf.extend(message(NLMSG_DONE, CN_IDX_PROC, PROC_EVENT_EXEC, &[11, 11]));
        // exit_proc_event: pid, tgid, exit_code, exit_signal, parent_pid, parent_tgid
        buf.extend(message(
            NLMSG_DONE,
            CN_IDX_PROC,
            PROC_EVENT_EXIT,
            &[11, 11, 0, 17, 10, 10],
        ));
        assert_eq!(
            decoded(&buf),
            vec![
                ProcEvent::Fork {
                    parent_pid: 10,
                    parent_tgid: 10,
                    child_pid: 11,
                    child_tgid: 11
                },
                ProcEvent::Exec { pid: 11, tgid: 11 },
                ProcEvent::Exit { pid: 11, tgid: 11 },
            ]
        );
    }

    #[test]
    fn thread_fork_keeps_pid_and_tgid_apart() {
        let buf = message(NLMSG_DONE, CN_IDX_PROC, PROC_EVENT_FORK, &[20, 20, 21, 20]);
        assert_eq!(
            decoded(&buf),
            vec![ProcEvent::Fork {
                parent_pid: 20,
                parent_tgid: 20,
                child_pid: 21,
                child_tgid: 20
            }]
        );
    }

    #[test]
    fn other_events_and_ids_are_ignored() {
        // PROC_EVENT_NONE (the ack of LISTEN), PROC_EVENT_UID, PROC_EVENT_COMM.
        let mut buf = message(NLMSG_DONE, CN_IDX_PROC, 0, &[0]);
        buf.extend(message(NLMSG_DONE, CN_IDX_PROC, 0x4, &[5, 5, 0, 0]));
        buf.extend(message(
            NLMSG_DONE,
            CN_IDX_PROC,
            0x200,
            &[5, 5, 0x6c6c6568, 0x6f, 0],
        ));
        // Another connector (CN_IDX_CIFS = 2) with a fork-shaped payload.
        buf.extend(message(NLMSG_DONE, 2, PROC_EVENT_FORK, &[1, 1, 2, 2]));
        buf.extend(message(NLMSG_NOOP, CN_IDX_PROC, PROC_EVENT_EXEC, &[3, 3]));
        buf.extend(message(NLMSG_DONE, CN_IDX_PROC, PROC_EVENT_EXEC, &[9, 9]));
        assert_eq!(decoded(&buf), vec![ProcEvent::Exec { pid: 9, tgid: 9 }]);
    }

    #[test]
    fn overrun_message() {
        let buf = message(NLMSG_OVERRUN, CN_IDX_PROC, 0, &[]);
        assert_eq!(decoded(&buf), vec![ProcEvent::Overrun]);
    }

    #[test]
    fn truncated_and_malformed_buffers() {
        let full = message(NLMSG_DONE, CN_IDX_PROC, PROC_EVENT_FORK, &[10, 10, 11, 11]);
        for cut in 0..full.len() {
            assert_eq!(decoded(&full[..cut]), vec![], "cut at {cut}");
        }
        // nlmsg_len 0 must not loop forever.
        let mut zero = full.clone();
        zero[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(decoded(&zero), vec![]);
        // cn_msg.len claiming more than the message holds.
        let mut long = full.clone();
        long[NLMSG_HDRLEN + 16..NLMSG_HDRLEN + 18].copy_from_slice(&1000u16.to_ne_bytes());
        assert_eq!(decoded(&long), vec![]);
        // cn_msg.len too short for the fork payload.
        let mut short = full.clone();
        short[NLMSG_HDRLEN + 16..NLMSG_HDRLEN + 18].copy_from_slice(&20u16.to_ne_bytes());
        assert_eq!(decoded(&short), vec![]);
        // A good message followed by garbage keeps the good one.
        let mut tail = full.clone();
        tail.extend_from_slice(&[0xff; 7]);
        assert_eq!(decoded(&tail).len(), 1);
    }

    /// Any process can unicast to our netlink port; such datagrams must never become events.
    #[test]
    fn datagrams_from_processes_are_ignored() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP datagrams_from_processes_are_ignored: needs root (euid 0)");
            return;
        }
        let conn = match ProcConnector::open() {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "SKIP datagrams_from_processes_are_ignored: no proc connector here ({e})"
                );
                return;
            }
        };
        let port = conn.port_id().unwrap();
        // SAFETY: socket(2) takes no pointers; the result is owned at once.
        let forger = owned_fd(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_CONNECTOR,
            )
        } as libc::c_long)
        .unwrap();
        const FORGED: u32 = 0x7fff_fff1;
        let forged = message(
            NLMSG_DONE,
            CN_IDX_PROC,
            PROC_EVENT_EXIT,
            &[FORGED, FORGED, 0, 0, 1, 1],
        );
        let mut to = netlink_addr(0);
        to.nl_pid = port;
        // SAFETY: `forged` and `to` are valid for the lengths passed.
        cvt_ssize(unsafe {
            libc::sendto(
                forger.as_raw_fd(),
                forged.as_ptr().cast(),
                forged.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })
        .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; DGRAM_BUF];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut discarded = false;
        while !discarded && Instant::now() < deadline {
            match conn.recv_datagram(&mut buf).unwrap() {
                Datagram::Foreign => discarded = true,
                Datagram::Kernel(n) => decode(&buf[..n], &mut out),
                Datagram::Overrun => {}
                Datagram::Empty => {
                    conn.wait_readable(Some(deadline)).unwrap();
                }
            }
        }
        assert!(discarded, "the forged datagram never arrived");
        assert!(
            !out.iter()
                .any(|e| matches!(e, ProcEvent::Exit { tgid: FORGED, .. })),
            "forged event accepted: {out:?}"
        );
    }

    #[test]
    fn control_message_layout() {
        let m = control_message(PROC_CN_MCAST_LISTEN, 0xabcd);
        assert_eq!(m.len(), 40);
        assert_eq!(u32_at(&m, 0), Some(40));
        assert_eq!(u16_at(&m, 4), Some(NLMSG_DONE));
        assert_eq!(u32_at(&m, 16), Some(CN_IDX_PROC));
        assert_eq!(u32_at(&m, 20), Some(CN_VAL_PROC));
        assert_eq!(u32_at(&m, 28), Some(0xabcd));
        assert_eq!(u16_at(&m, 32), Some(4));
        assert_eq!(u32_at(&m, 36), Some(PROC_CN_MCAST_LISTEN));
    }

    #[test]
    fn finds_only_our_ack() {
        // struct cn_proc_reply-style answer: PROC_EVENT_NONE with ack.err.
        let ours_ok = message_acked(NLMSG_DONE, CN_IDX_PROC, 43, PROC_EVENT_NONE, &[0]);
        let ours_eperm = message_acked(NLMSG_DONE, CN_IDX_PROC, 43, PROC_EVENT_NONE, &[1]);
        let theirs = message_acked(NLMSG_DONE, CN_IDX_PROC, 99, PROC_EVENT_NONE, &[0]);
        let event = message_acked(NLMSG_DONE, CN_IDX_PROC, 43, PROC_EVENT_EXEC, &[5, 5]);
        assert_eq!(find_ack(&ours_ok, 43), Some(0));
        assert_eq!(find_ack(&ours_eperm, 43), Some(1));
        assert_eq!(find_ack(&theirs, 43), None);
        assert_eq!(find_ack(&event, 43), None);
        let mut both = theirs.clone();
        both.extend(ours_eperm);
        assert_eq!(find_ack(&both, 43), Some(1));
        // An ack is never an event.
        assert_eq!(decoded(&ours_ok), vec![]);
    }
}
