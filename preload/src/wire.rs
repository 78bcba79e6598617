//! The clock library's side of the control protocol (`timens_proto`): the requests it makes
//! (unshare, setns, clone3) and the two answers it expects, written and read here over raw
//! system calls instead of through `timens_proto::call`. A request may carry one descriptor
//! (`setns` carries the file it was given): it travels as `SCM_RIGHTS` with the request line's
//! first bytes, never with an empty payload (a 0-byte `sendmsg` on a stream socket drops it).
//!
//! Why by hand: every exec in a sandbox loads this library, and serde_json with its std I/O
//! brought 75 KiB of code and 100 relocations (vtables, panic locations, error strings), whose
//! data was one more page copied at every load. The tests below check both directions against
//! serde_json and the protocol's own types, so the two cannot drift apart.

use std::ffi::{c_int, c_long, CStr};
use std::mem::{offset_of, size_of};

use timens_proto::{NsSlot, Request};

use crate::sys;

/// What the daemon answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// `Response::Ns`: the caller's time and time_for_children.
    Ns { time: NsSlot, tfc: NsSlot },
    /// `Response::Error`: what the emulated system call fails with.
    Error(i32),
}

/// Longest request this module writes, and longest answer line it reads.
const REQUEST_MAX: usize = 96;
const ANSWER_MAX: usize = 4096;

/// The request as one line of the protocol's JSON (`{"op":...}`), or None for a request this
/// library never makes.
pub fn encode(req: &Request, out: &mut [u8; REQUEST_MAX]) -> Option<usize> {
    let mut w = Writer { buf: out, len: 0 };
    match req {
        Request::Unshare => w.put(b"{\"op\":\"unshare\""),
        Request::NewChildNs => w.put(b"{\"op\":\"new_child_ns\""),
        Request::WhoAmI => w.put(b"{\"op\":\"who_am_i\""),
        // The target is the fd sent with the line (see `call`), not a number.
        Request::Setns => w.put(b"{\"op\":\"setns\""),
        Request::PlaceChild { pid, inum } => {
            w.put(b"{\"op\":\"place_child\",\"pid\":");
            w.num(u64::from(*pid));
            w.put(b",\"inum\":");
            w.num(u64::from(*inum));
        }
        _ => return None,
    }
    w.put(b"}\n");
    Some(w.len)
}

struct Writer<'a> {
    buf: &'a mut [u8; REQUEST_MAX],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, s: &[u8]) {
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
    }

    fn num(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        self.put(sys::decimal(n, &mut digits));
    }
}

/// One answer line: `{"reply":"ns","time":{...},"tfc":{...}}` or
/// `{"reply":"error","errno":N,"message":"..."}`, members in any order. None for anything else
/// (another reply, malformed JSON, a number out of range).
pub fn decode(line: &[u8]) -> Option<Answer> {
    let mut p = Parser { s: line, i: 0 };
    let mut reply: Option<&[u8]> = None;
    let mut time = None;
    let mut tfc = None;
    let mut errno = None;
    p.object(|p, key| {
        match key {
            b"reply" => reply = Some(p.string()?),
            b"time" => time = Some(p.slot()?),
            b"tfc" => tfc = Some(p.slot()?),
            b"errno" => errno = Some(i32::try_from(p.integer()?).ok()?),
            _ => p.skip_value(0)?,
        }
        Some(())
    })?;
    p.ws();
    if p.i != line.len() {
        return None;
    }
    match reply? {
        b"ns" => Some(Answer::Ns {
            time: time?,
            tfc: tfc?,
        }),
        b"error" => Some(Answer::Error(errno?)),
        _ => None,
    }
}

/// Just enough JSON for the answers above: objects, strings (escapes kept raw: only the keys
/// and the reply tag are compared, and those have none), integers; other values are skipped.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

/// Nesting deeper than this is not an answer of ours.
const DEPTH_MAX: usize = 8;

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.s.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    /// `{ "key": value, ... }`, calling `member` at each value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            self.ws();
            member(self, key)?;
            if self.eat(b'}').is_some() {
                return Some(());
            }
            self.eat(b',')?;
        }
    }

    /// A string's raw bytes between the quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match *self.s.get(self.i)? {
                b'"' => break,
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
        let raw = self.s.get(start..self.i)?;
        self.i += 1;
        Some(raw)
    }

    fn integer(&mut self) -> Option<i64> {
        self.ws();
        let neg = self.s.get(self.i) == Some(&b'-');
        if neg {
            self.i += 1;
        }
        let start = self.i;
        let mut n: i64 = 0;
        while let Some(d @ b'0'..=b'9') = self.s.get(self.i) {
            n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
            self.i += 1;
        }
        if self.i == start || matches!(self.s.get(self.i), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(if neg { -n } else { n })
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.integer()?).ok()
    }

    /// `NsSlot` as serde writes it: `{"inum":N,"index":N,"generation":N}`.
    fn slot(&mut self) -> Option<NsSlot> {
        let (mut inum, mut index, mut generation) = (None, None, None);
        self.object(|p, key| {
            match key {
                b"inum" => inum = Some(p.u32()?),
                b"index" => index = Some(p.u32()?),
                b"generation" => generation = Some(p.u32()?),
                _ => p.skip_value(1)?,
            }
            Some(())
        })?;
        Some(NsSlot {
            inum: inum?,
            index: index?,
            generation: generation?,
        })
    }

    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > DEPTH_MAX {
            return None;
        }
        self.ws();
        match *self.s.get(self.i)? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|p, _| p.skip_value(depth + 1)),
            b'[' => {
                self.i += 1;
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    if self.eat(b']').is_some() {
                        return Some(());
                    }
                    self.eat(b',')?;
                }
            }
            _ => {
                // A number or true/false/null: up to the next delimiter.
                let start = self.i;
                while let Some(c) = self.s.get(self.i) {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }
}

/// Closes an fd when dropped.
struct Fd(c_long);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closes an fd this module opened and nothing else uses.
        unsafe { sys::raw(libc::SYS_close, [self.0, 0, 0, 0, 0, 0]) };
    }
}

/// One `SCM_RIGHTS` control message with one descriptor, laid out as the kernel reads it: the
/// header, then the fd at `CMSG_DATA`, the whole `CMSG_SPACE(sizeof(int))` bytes long. On the
/// stack: no allocation on the way to the daemon.
#[repr(C)]
struct OneFd {
    hdr: libc::cmsghdr,
    fd: c_int,
}

// SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes from their argument.
const _: () = unsafe {
    assert!(size_of::<OneFd>() == libc::CMSG_SPACE(size_of::<c_int>() as u32) as usize);
    assert!(offset_of!(OneFd, fd) == libc::CMSG_LEN(0) as usize);
};

/// Sends all of `line` on `sock`, with `pass` attached to its first bytes. Never raises
/// SIGPIPE (a daemon gone mid-request is EPIPE).
fn send_line(sock: c_long, line: &[u8], pass: Option<c_int>) -> Result<(), i32> {
    // SAFETY: cmsghdr is a plain C struct; all-zero is a valid value to fill in.
    let mut control = OneFd {
        hdr: unsafe { std::mem::zeroed() },
        fd: pass.unwrap_or(-1),
    };
    // SAFETY: as above, for CMSG_LEN only computing a size.
    control.hdr.cmsg_len = unsafe { libc::CMSG_LEN(size_of::<c_int>() as u32) } as _;
    control.hdr.cmsg_level = libc::SOL_SOCKET;
    control.hdr.cmsg_type = libc::SCM_RIGHTS;
    let mut sent = 0;
    while sent < line.len() {
        let mut iov = libc::iovec {
            iov_base: line[sent..].as_ptr().cast_mut().cast(),
            iov_len: line.len() - sent,
        };
        // SAFETY: msghdr is a plain C struct; all-zero (no name, no control) is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if sent == 0 && pass.is_some() {
            msg.msg_control = std::ptr::from_mut(&mut control).cast();
            msg.msg_controllen = size_of::<OneFd>() as _;
        }
        // SAFETY: `msg` points to `iov` (into `line`) and to `control`, both alive and unchanged
        // for the call.
        let n = unsafe {
            sys::raw(
                libc::SYS_sendmsg,
                [
                    sock,
                    std::ptr::from_ref(&msg) as c_long,
                    c_long::from(libc::MSG_NOSIGNAL),
                    0,
                    0,
                    0,
                ],
            )
        };
        // Interrupted before anything was sent: the fd did not go either; send both again.
        if n == -c_long::from(libc::EINTR) {
            continue;
        }
        sent += check(n)? as usize;
    }
    Ok(())
}

/// Sends `req` (with `pass`, an fd the daemon is to see, attached) to the daemon's control
/// socket at `path` and reads its one-line answer. A daemon that does not answer within 30 s
/// fails the call (it must not hang the caller for ever). `Err(errno)` when the daemon cannot be
/// reached or the exchange fails; None from [`decode`] is reported as EPROTO.
pub fn call(path: &CStr, req: &Request, pass: Option<c_int>) -> Result<Answer, i32> {
    let mut line = [0u8; REQUEST_MAX];
    let len = encode(req, &mut line).ok_or(libc::EINVAL)?;
    // SAFETY: socket takes no pointers.
    let fd = unsafe {
        sys::raw(
            libc::SYS_socket,
            [
                c_long::from(libc::AF_UNIX),
                c_long::from(libc::SOCK_STREAM | libc::SOCK_CLOEXEC),
                0,
                0,
                0,
                0,
            ],
        )
    };
    check(fd)?;
    let fd = Fd(fd);
    // SAFETY: an all-zero sockaddr_un is a valid value to fill in.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let name = path.to_bytes();
    if name.len() >= addr.sun_path.len() {
        return Err(libc::ENAMETOOLONG);
    }
    for (d, s) in addr.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: connect reads `addr`, which lives across the call.
    check(unsafe {
        sys::raw(
            libc::SYS_connect,
            [
                fd.0,
                &addr as *const libc::sockaddr_un as c_long,
                std::mem::size_of::<libc::sockaddr_un>() as c_long,
                0,
                0,
                0,
            ],
        )
    })?;
    let timeout = libc::timeval {
        tv_sec: 30,
        tv_usec: 0,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: setsockopt reads `timeout`, which lives across the call.
        check(unsafe {
            sys::raw(
                libc::SYS_setsockopt,
                [
                    fd.0,
                    c_long::from(libc::SOL_SOCKET),
                    c_long::from(opt),
                    &timeout as *const libc::timeval as c_long,
                    std::mem::size_of::<libc::timeval>() as c_long,
                    0,
                ],
            )
        })?;
    }
    send_line(fd.0, &line[..len], pass)?;
    let mut answer = [0u8; ANSWER_MAX];
    let mut got = 0;
    while !answer[..got].contains(&b'\n') {
        if got == answer.len() {
            return Err(libc::EPROTO);
        }
        // SAFETY: read writes into `answer[got..]`, in bounds.
        let n = unsafe {
            sys::raw(
                libc::SYS_read,
                [
                    fd.0,
                    answer[got..].as_mut_ptr() as c_long,
                    (answer.len() - got) as c_long,
                    0,
                    0,
                    0,
                ],
            )
        };
        if n == -c_long::from(libc::EINTR) {
            continue;
        }
        match check(n)? {
            0 => return Err(libc::EPROTO),
            n => got += n as usize,
        }
    }
    let end = answer[..got]
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(got);
    decode(&answer[..end]).ok_or(libc::EPROTO)
}

/// A raw system call's result as `Err(errno)` or the value.
fn check(r: c_long) -> Result<c_long, i32> {
    if sys::is_err(r) {
        Err(-r as i32)
    } else {
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timens_proto::Response;

    fn encoded(req: &Request) -> String {
        let mut buf = [0u8; REQUEST_MAX];
        let n = encode(req, &mut buf).expect("a request the library makes");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn requests_are_what_serde_writes() {
        for req in [
            Request::Unshare,
            Request::NewChildNs,
            Request::WhoAmI,
            Request::Setns,
            Request::PlaceChild {
                pid: 4_194_304,
                inum: 4_026_531_834,
            },
        ] {
            let ours = encoded(&req);
            assert_eq!(ours, format!("{}\n", serde_json::to_string(&req).unwrap()));
            let back: Request = serde_json::from_str(ours.trim_end()).unwrap();
            assert_eq!(back, req);
        }
        assert_eq!(encode(&Request::Status, &mut [0; REQUEST_MAX]), None);
    }

    fn slot(inum: u32, index: u32, generation: u32) -> NsSlot {
        NsSlot {
            inum,
            index,
            generation,
        }
    }

    #[test]
    fn answers_serde_writes_are_read() {
        let ns = Response::Ns {
            time: slot(4_026_531_834, u32::MAX, 0),
            tfc: slot(7, 3, u32::MAX),
        };
        assert_eq!(
            decode(serde_json::to_string(&ns).unwrap().as_bytes()),
            Some(Answer::Ns {
                time: slot(4_026_531_834, u32::MAX, 0),
                tfc: slot(7, 3, u32::MAX),
            })
        );
        for (errno, message) in [(1, "plain"), (-5, "esc \" \\ \u{1} ü }{ ] ,")] {
            let e = Response::Error {
                errno,
                message: message.into(),
            };
            let text = serde_json::to_string(&e).unwrap();
            assert_eq!(
                decode(text.as_bytes()),
                Some(Answer::Error(errno)),
                "{text}"
            );
        }
        // Other answers are not ours to take.
        let pong = Response::Pong {
            pid: 1,
            version: "0.1".into(),
        };
        assert_eq!(
            decode(serde_json::to_string(&pong).unwrap().as_bytes()),
            None
        );
    }

    #[test]
    fn members_in_any_order_and_unknown_ones_skipped() {
        let text = br#" { "tfc" : {"generation":2,"index":1,"inum":9, "x":[1,{"y":null}]},
            "extra": [true, false, "s", -1.5e3, {}, []],
            "time": {"index":4,"inum":8,"generation":0}, "reply" : "ns" } "#;
        assert_eq!(
            decode(text),
            Some(Answer::Ns {
                time: slot(8, 4, 0),
                tfc: slot(9, 1, 2),
            })
        );
    }

    #[test]
    fn malformed_answers_are_refused() {
        for bad in [
            &b""[..],
            b"{",
            b"{}",
            b"[]",
            b"{\"reply\":\"ns\"}",
            b"{\"reply\":\"ns\",\"time\":{\"inum\":1,\"index\":2},\"tfc\":{\"inum\":1,\"index\":2,\"generation\":3}}",
            b"{\"reply\":\"error\",\"errno\":1.5}",
            b"{\"reply\":\"error\",\"errno\":99999999999}",
            b"{\"reply\":\"error\",\"errno\":1} trailing",
            b"{\"reply\":\"error\",\"errno\":1,}",
            b"{\"reply\":\"error\" \"errno\":1}",
            b"{\"reply\":\"error\",\"errno\":1,\"message\":\"unterminated}",
            b"{\"reply\":\"error\",\"errno\":1,\"x\":[[[[[[[[[[[[1]]]]]]]]]]]]}",
            b"{\"reply\":\"ns\",\"time\":{\"inum\":-1,\"index\":2,\"generation\":3},\"tfc\":{\"inum\":1,\"index\":2,\"generation\":3}}",
        ] {
            assert_eq!(decode(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn setns_names_no_namespace() {
        assert_eq!(encoded(&Request::Setns), "{\"op\":\"setns\"}\n");
    }

    #[test]
    fn call_talks_to_a_daemon_over_a_socket() {
        use std::io::{BufRead, BufReader, Write};
        let dir = std::env::temp_dir().join(format!("wire-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            let req: Request = serde_json::from_str(&line).unwrap();
            assert_eq!(req, Request::Setns);
            let resp = Response::Error {
                errno: libc::EPERM,
                message: "no".into(),
            };
            (&s).write_all(serde_json::to_string(&resp).unwrap().as_bytes())
                .unwrap();
            (&s).write_all(b"\n").unwrap();
        });
        let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        assert_eq!(
            call(&cpath, &Request::Setns, None),
            Ok(Answer::Error(libc::EPERM))
        );
        server.join().unwrap();
        let missing = std::ffi::CString::new(dir.join("none").to_str().unwrap()).unwrap();
        assert_eq!(call(&missing, &Request::Unshare, None), Err(libc::ENOENT));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What the test server read: the request and `(st_dev, st_ino)` of each fd with it.
    type Received = (Request, Vec<(u64, u64)>);

    /// A listener at a fresh path; the server thread reads one request with its fds and answers
    /// EPERM.
    fn one_request_server(name: &str) -> (std::path::PathBuf, std::thread::JoinHandle<Received>) {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("wire-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; timens_proto::REQUEST_MAX];
            let (n, fds) = timens_sys::fdpass::recv_with_fds(&s, &mut buf, 4).unwrap();
            let end = buf[..n].iter().position(|&b| b == b'\n').unwrap_or(n);
            let req = timens_proto::parse_request(&buf[..end]).unwrap();
            let ids = fds
                .into_iter()
                .map(|fd| {
                    let m = std::fs::File::from(fd).metadata().unwrap();
                    (m.dev(), m.ino())
                })
                .collect();
            let resp = Response::Error {
                errno: libc::EPERM,
                message: "no".into(),
            };
            timens_proto::write_response(&s, &resp).unwrap();
            (req, ids)
        });
        (path, server)
    }

    #[test]
    fn setns_sends_the_fd_it_was_given_with_the_line() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let (path, server) = one_request_server("fd");
        let file = std::fs::File::open("/proc/self/ns/time")
            .or_else(|_| std::fs::File::open("/proc/self/stat"))
            .unwrap();
        let meta = file.metadata().unwrap();
        let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        assert_eq!(
            call(&cpath, &Request::Setns, Some(file.as_raw_fd())),
            Ok(Answer::Error(libc::EPERM))
        );
        let (req, ids) = server.join().unwrap();
        assert_eq!(req, Request::Setns);
        assert_eq!(
            ids,
            vec![(meta.dev(), meta.ino())],
            "the daemon got our file"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn requests_without_an_fd_carry_none() {
        let (path, server) = one_request_server("nofd");
        let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        assert_eq!(
            call(&cpath, &Request::Setns, None),
            Ok(Answer::Error(libc::EPERM))
        );
        let (req, ids) = server.join().unwrap();
        assert_eq!((req, ids), (Request::Setns, vec![]));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
