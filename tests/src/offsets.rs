//! Write cases for `/proc/PID/timens_offsets`, used by the `offsets-case` binary and
//! by the differential tests (spec sections C, D, E, F).
//!
//! Every case opens `/proc/self/timens_offsets`, performs raw `write`/`lseek`/
//! `pread`/`pwrite` calls and records each call's return value (a number) or its
//! errno name (a string). The file content after the case is read by reopening the
//! file. The same case run under the kernel (after `unshare(CLONE_NEWTIME)`) and
//! under the emulation must give the same record, except for the cases listed in
//! [`KNOWN_DIFFERENCES`].

use serde_json::Value;
use std::ffi::CString;

/// The file every case writes to.
pub const OFFSETS_PATH: &str = "/proc/self/timens_offsets";

/// `KTIME_SEC_MAX / 2`: the largest host+offset second count the kernel accepts (E9).
pub const HALF_KTIME_SEC_MAX: i64 = 4_611_686_018;

/// `KTIME_MAX / NSEC_PER_SEC` (E9 step 1).
pub const KTIME_SEC_MAX: i64 = 9_223_372_036;

/// Margin, in seconds, used by the cases that probe the host-clock-relative bounds
/// (E9 step 3). Large enough that the verdict cannot change between sampling the
/// host clock and the write.
pub const RANGE_MARGIN: i64 = 5;

/// The differences between the kernel and the emulation that FUSE makes unavoidable, by
/// name, each with its reason. The differential tests still run the cases that show them
/// and print the difference, but do not fail; any other difference fails them.
/// [`KNOWN_DIFFERENCE_CASES`] names the hand-written case that pins each.
pub const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    // The kernel's file is a seq_file: single_open() clears FMODE_PWRITE, so pwrite()
    // fails in the VFS with ESPIPE before the handler runs (spec D6, E1). A FUSE file
    // cannot refuse pwrite alone: FOPEN_NONSEEKABLE would also break lseek() and
    // pread(), which the kernel's file supports (read_pread_10, lseek_5_then_write).
    // The emulation judges a write at that offset: EINVAL, or applied when the offset is
    // where the FUSE position stands.
    (
        "pwrite",
        "kernel: ESPIPE from the VFS (seq_file clears FMODE_PWRITE); FUSE cannot refuse pwrite without also refusing lseek/pread",
    ),
    // write(fd, "", 0): procfs calls the handler, whose parse of an empty string fails with
    // EINVAL (E1). The FUSE kernel module answers a zero-length write with 0 itself and never
    // sends a WRITE request, so the daemon cannot see it.
    (
        "empty_write",
        "kernel: EINVAL from the handler; FUSE returns 0 for a zero-length write without asking the daemon",
    ),
    // The kernel's handler never advances f_pos (E1), but FUSE moves the file position by
    // every count the daemon returns; the daemon subtracts what it accepted on the fd. An
    // lseek to exactly that position (or past it, for a read) is a seek the daemon cannot
    // tell from no seek: FUSE handles SEEK_SET/SEEK_CUR without a request.
    (
        "seek_after_write",
        "kernel: position moved only by read/lseek; FUSE also moves it by accepted writes and never reports an lseek, so a seek to that position looks like none",
    ),
    // procfs passes the handler the file position whatever O_APPEND says; FUSE sends an
    // O_APPEND write at the inode's size instead, so the daemon takes it for position 0 (the
    // position of an fd only written to). A read or lseek before it goes unseen.
    (
        "append_position",
        "kernel: an O_APPEND write is at the file position, moved by read/lseek; FUSE sends it at the inode size, so the daemon takes 0",
    ),
];

/// The hand-written case that pins each known difference: (case, difference).
pub const KNOWN_DIFFERENCE_CASES: &[(&str, &str)] = &[
    ("pwrite_at_0", "pwrite"),
    ("pwrite_at_5", "pwrite"),
    ("empty_write", "empty_write"),
    ("lseek_to_written_then_write", "seek_after_write"),
    ("append_after_read", "append_position"),
];

/// The reason for a known difference, by its name.
pub fn known_reason(difference: &str) -> Option<&'static str> {
    KNOWN_DIFFERENCES
        .iter()
        .find(|(name, _)| *name == difference)
        .map(|(_, why)| *why)
}

/// The known difference hand-written case `case` shows, if any: (name, reason).
pub fn known_difference(case: &str) -> Option<(&'static str, &'static str)> {
    let (_, name) = KNOWN_DIFFERENCE_CASES.iter().find(|(c, _)| *c == case)?;
    Some((name, known_reason(name)?))
}

/// One write case.
pub struct Case {
    /// Stable identifier, printed by `offsets-case --list`.
    pub name: &'static str,
    /// Spec rules the case exercises.
    pub rules: &'static str,
    run: fn(&mut Ctx),
}

impl Case {
    /// Runs the case in the current process and returns its one-line JSON record.
    pub fn run(&self) -> String {
        let mut ctx = Ctx::new();
        (self.run)(&mut ctx);
        ctx.finish(self.name)
    }
}

/// Looks a case up by name.
pub fn find_case(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.name == name)
}

/// Name of an errno value, e.g. `"EINVAL"`; unknown values give `"E<n>"`.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EPIPE => "EPIPE",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EUSERS => "EUSERS",
        _ => return format!("E{e}"),
    };
    name.to_string()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Converts a raw syscall return into a result value: the number, or the errno name.
fn outcome(ret: i64) -> Value {
    if ret < 0 {
        Value::from(errno_name(last_errno()))
    } else {
        Value::from(ret)
    }
}

/// Host clock seconds (`CLOCK_MONOTONIC` or `CLOCK_BOOTTIME`), truncated.
///
/// Both the kernel harness and the emulation run this process in the initial time
/// namespace (only its children's namespace is pending), so this is the host clock
/// the kernel's range check uses (E9).
pub fn host_now_sec(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
    ts.tv_sec
}

/// An open file descriptor, closed on drop.
pub(crate) struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the descriptor is owned by this value and closed exactly once.
        unsafe { libc::close(self.0) };
    }
}

/// A seconds value that depends on the host clock, and the symbolic token that replaces
/// it in `after_rel`.
struct Rel {
    clock: &'static str,
    sec: i64,
    token: String,
}

/// State of one running case.
pub(crate) struct Ctx {
    path: CString,
    pub(crate) results: Vec<Value>,
    rel: Vec<Rel>,
    read: Option<Vec<u8>>,
}

impl Ctx {
    pub(crate) fn new() -> Self {
        Ctx {
            path: CString::new(OFFSETS_PATH).expect("path has no NUL"),
            results: Vec::new(),
            rel: Vec::new(),
            read: None,
        }
    }

    /// Opens the offsets file; on failure records `"open:<ERRNO>"` and returns None.
    pub(crate) fn open(&mut self, flags: i32) -> Option<Fd> {
        // SAFETY: `path` is a valid NUL-terminated string.
        let fd = unsafe { libc::open(self.path.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = errno_name(last_errno());
            self.results.push(Value::from(format!("open:{e}")));
            None
        } else {
            Some(Fd(fd))
        }
    }

    pub(crate) fn write(&mut self, fd: &Fd, buf: &[u8]) {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
        let ret = unsafe { libc::write(fd.0, buf.as_ptr().cast(), buf.len()) };
        self.results.push(outcome(ret as i64));
    }

    pub(crate) fn pwrite(&mut self, fd: &Fd, buf: &[u8], off: i64) {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
        let ret = unsafe { libc::pwrite(fd.0, buf.as_ptr().cast(), buf.len(), off) };
        self.results.push(outcome(ret as i64));
    }

    pub(crate) fn lseek(&mut self, fd: &Fd, off: i64, whence: i32) {
        // SAFETY: plain syscall on an owned descriptor.
        let ret = unsafe { libc::lseek(fd.0, off, whence) };
        self.results.push(outcome(ret));
    }

    fn keep_read(&mut self, buf: &[u8], ret: isize) {
        if ret > 0 {
            self.read
                .get_or_insert_with(Vec::new)
                .extend_from_slice(&buf[..ret as usize]);
        }
        self.results.push(outcome(ret as i64));
    }

    /// `read(fd, len)`; the bytes read are appended to the case's `read` field.
    pub(crate) fn read(&mut self, fd: &Fd, len: usize) -> isize {
        let mut buf = vec![0u8; len];
        // SAFETY: `buf` is valid for writes of `len` bytes.
        let ret = unsafe { libc::read(fd.0, buf.as_mut_ptr().cast(), len) };
        self.keep_read(&buf, ret);
        ret
    }

    /// `pread(fd, len, off)`; the bytes read are appended to the case's `read` field.
    fn pread(&mut self, fd: &Fd, len: usize, off: i64) {
        let mut buf = vec![0u8; len];
        // SAFETY: `buf` is valid for writes of `len` bytes.
        let ret = unsafe { libc::pread(fd.0, buf.as_mut_ptr().cast(), len, off) };
        self.keep_read(&buf, ret);
    }

    /// Opens O_WRONLY, writes each buffer in turn on the same fd.
    fn open_write(&mut self, bufs: &[&[u8]]) {
        if let Some(fd) = self.open(libc::O_WRONLY) {
            for b in bufs {
                self.write(&fd, b);
            }
        }
    }

    /// Registers a host-clock-dependent seconds value for `after_rel`.
    pub(crate) fn rel(&mut self, clock: &'static str, sec: i64, token: &str) {
        self.rel.push(Rel {
            clock,
            sec,
            token: token.to_string(),
        });
    }

    /// Creates a child that exits at once and reaps it. The child enters the pending
    /// namespace, which freezes its offsets (B1, B2, C1). Records the child's exit
    /// status (0 expected).
    pub(crate) fn fork_and_reap(&mut self) {
        // SAFETY: this process is single-threaded; the child calls only `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: async-signal-safe exit of the child.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            self.results
                .push(Value::from(format!("fork:{}", errno_name(last_errno()))));
            return;
        }
        let mut status = 0;
        // SAFETY: `status` is a valid out pointer; `pid` is our child.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret != pid {
            self.results
                .push(Value::from(format!("waitpid:{}", errno_name(last_errno()))));
            return;
        }
        let code = if libc::WIFEXITED(status) {
            i64::from(libc::WEXITSTATUS(status))
        } else {
            -1
        };
        self.results.push(Value::from(code));
    }

    /// Removes CAP_SYS_TIME from the effective set (permitted is kept). Records 0 or
    /// `"capset:<ERRNO>"`.
    pub(crate) fn drop_cap_sys_time(&mut self) -> bool {
        match set_cap_effective(CAP_SYS_TIME, false) {
            Ok(()) => {
                self.results.push(Value::from(0));
                true
            }
            Err(e) => {
                self.results.push(Value::from(format!("capset:{e}")));
                false
            }
        }
    }

    fn after(&self) -> String {
        match std::fs::read(OFFSETS_PATH) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!(
                "read-error:{}",
                errno_name(e.raw_os_error().unwrap_or_default())
            ),
        }
    }

    /// The `after` content with host-clock-dependent seconds replaced by their tokens.
    /// A line is rewritten only if it has exactly the kernel's `"%-10s %10lld %9ld\n"`
    /// layout for the registered value, so format errors still show.
    fn after_rel(&self, after: &str) -> String {
        let mut out = String::new();
        for line in after.split_inclusive('\n') {
            let mut fields = line.split_whitespace();
            let (name, sec, nsec) = (fields.next(), fields.next(), fields.next());
            let mut replaced = None;
            if let (Some(name), Some(sec), Some(nsec)) = (name, sec, nsec) {
                for r in &self.rel {
                    if r.clock == name && sec == r.sec.to_string() {
                        let canonical = format!("{name:<10} {sec:>10} {nsec:>9}\n");
                        if line == canonical {
                            replaced = Some(format!("{name:<10} {:>10} {nsec:>9}\n", r.token));
                        }
                    }
                }
            }
            out.push_str(replaced.as_deref().unwrap_or(line));
        }
        out
    }

    pub(crate) fn finish(&self, name: &str) -> String {
        let after = self.after();
        let mut s = format!(
            "{{\"case\":{},\"results\":{},\"after\":{}",
            Value::from(name),
            Value::from(self.results.clone()),
            Value::from(after.as_str())
        );
        if !self.rel.is_empty() {
            s.push_str(&format!(
                ",\"after_rel\":{}",
                Value::from(self.after_rel(&after))
            ));
        }
        if let Some(read) = &self.read {
            s.push_str(&format!(
                ",\"read\":{}",
                Value::from(String::from_utf8_lossy(read).into_owned())
            ));
        }
        s.push('}');
        s
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `CAP_SYS_TIME` (include/uapi/linux/capability.h).
pub const CAP_SYS_TIME: i32 = 25;

/// Sets or clears one capability in the calling thread's effective set.
pub fn set_cap_effective(cap: i32, on: bool) -> Result<(), String> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as capget(2) requires for v3.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(errno_name(last_errno()));
    }
    let (idx, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
    if on {
        data[idx].effective |= bit;
    } else {
        data[idx].effective &= !bit;
    }
    // SAFETY: same layout as above; the kernel only reads the data array.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if rc != 0 {
        return Err(errno_name(last_errno()));
    }
    Ok(())
}

/// A 4095- or 4096-byte buffer: a valid record padded with trailing spaces (E1).
fn padded(record: &str, len: usize) -> Vec<u8> {
    let mut v = record.as_bytes().to_vec();
    v.resize(len, b' ');
    v
}

macro_rules! case {
    ($name:literal, $rules:literal, $run:expr) => {
        Case {
            name: $name,
            rules: $rules,
            run: $run,
        }
    };
}

/// Shorthand: a case that writes `text` once on a fresh O_WRONLY fd.
macro_rules! write_case {
    ($name:literal, $rules:literal, $text:expr) => {
        case!($name, $rules, |c| c.open_write(&[$text]))
    };
}

/// Bounds case: writes `<clock> <sec> <nsec>` where `sec` is computed from the host
/// clock by `f(now)`, and registers `token` for `after_rel`.
fn range_case(c: &mut Ctx, clock: &'static str, f: fn(i64) -> i64, nsec: u32, token: &str) {
    let id = if clock == "monotonic" {
        libc::CLOCK_MONOTONIC
    } else {
        libc::CLOCK_BOOTTIME
    };
    let sec = f(host_now_sec(id));
    c.rel(clock, sec, token);
    let text = format!("{clock} {sec} {nsec}\n");
    c.open_write(&[text.as_bytes()]);
}

/// All cases, in run order.
pub static CASES: &[Case] = &[
    // --- clock names and numeric ids (E5) ---
    write_case!("name_monotonic", "E5", b"monotonic 10 0\n"),
    write_case!("name_boottime", "E5", b"boottime 20 0\n"),
    write_case!("numeric_1", "E5", b"1 10 0\n"),
    write_case!("numeric_7", "E5", b"7 20 0\n"),
    write_case!("clock_0", "E5", b"0 10 0\n"),
    write_case!("clock_2", "E5", b"2 10 0\n"),
    write_case!("clock_4", "E5", b"4 10 0\n"),
    write_case!("clock_8", "E5", b"8 10 0\n"),
    write_case!("clock_realtime", "E5", b"realtime 10 0\n"),
    write_case!("clock_uppercase", "E5", b"MONOTONIC 10 0\n"),
    write_case!("clock_01", "E5", b"01 10 0\n"),
    write_case!("clock_empty_name", "E4 E5", b" 10 0\n"),
    // --- whitespace and trailing text (E4) ---
    write_case!("ws_leading_tabs", "E4", b"   monotonic\t10\t0   "),
    write_case!("ws_inner_runs", "E4", b"monotonic    10  \t  5\n"),
    write_case!("ws_vt_ff_cr", "E4", b"monotonic\x0b10\x0c7\r\n"),
    write_case!("trailing_text", "E4", b"monotonic 10 0 trailing garbage"),
    write_case!("crlf", "E4", b"monotonic 10 0\r\n"),
    // --- the %9s quirk (E4) ---
    write_case!("pct9s_quirk", "E4", b"monotonic1 2 3"),
    write_case!("pct9s_refused", "E4", b"monotonicX 1 0"),
    write_case!("pct9s_boottime_9chars", "E4", b"boottime1 2 3"),
    write_case!("pct9s_glued_sec", "E4", b"monotonic10 0\n"),
    // --- seconds syntax (E4) ---
    write_case!("sec_negative", "E4 D2", b"monotonic -10 5\n"),
    write_case!("sec_plus", "E4", b"monotonic +10 0\n"),
    write_case!("sec_hex", "E4", b"monotonic 0x10 0\n"),
    write_case!("sec_decimal", "E4", b"monotonic 10.5 0\n"),
    write_case!("sec_trailing_x", "E4", b"monotonic 10x 0\n"),
    write_case!("missing_nsec", "E4", b"monotonic 10\n"),
    write_case!("missing_sec", "E4", b"monotonic\n"),
    // --- nanoseconds (E4) ---
    write_case!("nsec_max", "E4 D2", b"monotonic 10 999999999\n"),
    write_case!("nsec_1e9", "E4", b"monotonic 10 1000000000\n"),
    write_case!("nsec_minus1", "E4", b"monotonic 10 -1\n"),
    write_case!("nsec_trailing_x", "E4", b"monotonic 10 5x\n"),
    // The kernel's simple_strntoull wraps modulo 2^64 without reporting overflow:
    // 2^64 + 1 parses as 1.
    write_case!(
        "nsec_overflow_wraps",
        "E4",
        b"monotonic 10 18446744073709551617\n"
    ),
    // --- fixed out-of-range seconds (E4, E9) ---
    write_case!(
        "sec_overflow",
        "E4 E9",
        b"monotonic 99999999999999999999 0\n"
    ),
    // 2^64 + 10 wraps to 10 in the kernel's parser (see nsec_overflow_wraps).
    write_case!(
        "sec_overflow_wraps",
        "E4 E9",
        b"boottime 18446744073709551626 0\n"
    ),
    write_case!("sec_ktime_sec_max", "E9", b"monotonic 9223372036 0\n"),
    write_case!("sec_ktime_sec_max_plus1", "E9", b"monotonic 9223372037 0\n"),
    write_case!("sec_neg_ktime_sec_max", "E9", b"boottime -9223372036 0\n"),
    // --- host-clock-relative bounds (E9); after_rel uses symbolic seconds ---
    case!("range_mono_low_err", "E9", |c| range_case(
        c,
        "monotonic",
        |now| -(now + RANGE_MARGIN),
        0,
        "-(NOW+5)"
    )),
    case!("range_mono_low_ok", "E9", |c| range_case(
        c,
        "monotonic",
        |now| -(now - RANGE_MARGIN),
        0,
        "-(NOW-5)"
    )),
    case!("range_mono_high_err", "E9", |c| range_case(
        c,
        "monotonic",
        |now| HALF_KTIME_SEC_MAX - now + RANGE_MARGIN,
        0,
        "MAX-NOW+5"
    )),
    case!("range_mono_high_ok", "E9", |c| range_case(
        c,
        "monotonic",
        |now| HALF_KTIME_SEC_MAX - now - RANGE_MARGIN,
        0,
        "MAX-NOW-5"
    )),
    case!("range_boot_low_err", "E9", |c| range_case(
        c,
        "boottime",
        |now| -(now + RANGE_MARGIN),
        0,
        "-(NOW+5)"
    )),
    case!("range_boot_low_ok", "E9", |c| range_case(
        c,
        "boottime",
        |now| -(now - RANGE_MARGIN),
        0,
        "-(NOW-5)"
    )),
    case!("range_boot_high_err", "E9", |c| range_case(
        c,
        "boottime",
        |now| HALF_KTIME_SEC_MAX - now + RANGE_MARGIN,
        0,
        "MAX-NOW+5"
    )),
    case!("range_boot_high_ok", "E9", |c| range_case(
        c,
        "boottime",
        |now| HALF_KTIME_SEC_MAX - now - RANGE_MARGIN,
        0,
        "MAX-NOW-5"
    )),
    // -(now+1) s + 999999999 ns: host+offset is 0.xxx after nanosecond carry -> OK
    // (fails only if the host clock's nanoseconds are exactly 0).
    case!("range_mono_low_nsec_carry", "E9 H4", |c| range_case(
        c,
        "monotonic",
        |now| -(now + 1),
        999_999_999,
        "-(NOW+1)"
    )),
    // --- several records per write (E3, E6, E7, E10) ---
    write_case!("two_records", "E6 E10", b"monotonic 11 1\nboottime 22 2\n"),
    write_case!(
        "two_records_no_newline",
        "E6 E10",
        b"monotonic 11 1\nboottime 22 2"
    ),
    write_case!(
        "three_records_short",
        "E6 E10",
        b"monotonic 11 1\nboottime 22 2\nmonotonic 33 3\n"
    ),
    write_case!(
        "garbage_after_two",
        "E6",
        b"monotonic 11 1\nboottime 22 2\ngarbage\n"
    ),
    write_case!(
        "same_clock_twice",
        "E6",
        b"monotonic 11 1\nmonotonic 33 3\n"
    ),
    write_case!(
        "all_or_nothing_erange",
        "E7",
        b"monotonic 11 1\nboottime 9999999999 0\n"
    ),
    write_case!(
        "all_or_nothing_einval",
        "E7",
        b"monotonic 11 1\nbogus 22 2\n"
    ),
    // --- empty records (E1, E3) ---
    write_case!("empty_write", "E1", b""),
    write_case!("newline_only", "E3", b"\n"),
    write_case!("double_newline", "E3", b"monotonic 10 0\n\n"),
    write_case!("leading_newline", "E3", b"\nmonotonic 10 0\n"),
    write_case!("nul_byte", "E2 E10", b"monotonic 5 0\0garbage"),
    // --- size limit (E1) ---
    case!("size_4095", "E1", |c| c
        .open_write(&[&padded("monotonic 10 0", 4095)])),
    case!("size_4096", "E1", |c| c
        .open_write(&[&padded("monotonic 10 0", 4096)])),
    // --- file position and fds (E1, C3, D6) ---
    case!("lseek_5_then_write", "E1 D6", |c| {
        if let Some(fd) = c.open(libc::O_WRONLY) {
            c.lseek(&fd, 5, libc::SEEK_SET);
            c.write(&fd, b"monotonic 10 0\n");
        }
    }),
    case!("two_writes_one_fd", "E1 C3", |c| c
        .open_write(&[b"monotonic 10 0\n", b"boottime 20 0\n"])),
    case!("two_opens", "C3", |c| {
        c.open_write(&[b"boottime 20 3\n"]);
        c.open_write(&[b"monotonic 10 4\n"]);
    }),
    case!("write_after_read_rdwr", "E1 D6", |c| {
        if let Some(fd) = c.open(libc::O_RDWR) {
            c.read(&fd, 4096);
            c.write(&fd, b"monotonic 10 0\n");
        }
    }),
    case!("write_after_read_lseek0", "E1 D6", |c| {
        if let Some(fd) = c.open(libc::O_RDWR) {
            c.read(&fd, 4096);
            c.lseek(&fd, 0, libc::SEEK_SET);
            c.write(&fd, b"monotonic 10 0\n");
        }
    }),
    case!("write_on_rdonly_fd", "D6", |c| {
        if let Some(fd) = c.open(libc::O_RDONLY) {
            c.write(&fd, b"monotonic 10 0\n");
        }
    }),
    // Known difference: see KNOWN_DIFFERENCES.
    case!("pwrite_at_0", "E1 D6", |c| {
        if let Some(fd) = c.open(libc::O_WRONLY) {
            c.pwrite(&fd, b"monotonic 10 0\n", 0);
        }
    }),
    // Known difference: see KNOWN_DIFFERENCES.
    case!("pwrite_at_5", "E1 D6", |c| {
        if let Some(fd) = c.open(libc::O_WRONLY) {
            c.pwrite(&fd, b"monotonic 10 0\n", 5);
        }
    }),
    // Known difference: the lseek goes exactly where the FUSE position stands after the
    // first write; the kernel's position is 15, so its second write fails (E1).
    case!("lseek_to_written_then_write", "E1 D6", |c| {
        if let Some(fd) = c.open(libc::O_WRONLY) {
            c.write(&fd, b"monotonic 10 0\n");
            c.lseek(&fd, 15, libc::SEEK_SET);
            c.write(&fd, b"boottime 20 0\n");
        }
    }),
    // procfs ignores O_APPEND (`echo ... >> timens_offsets`): both writes are at position 0.
    case!("append_two_writes", "E1", |c| {
        if let Some(fd) = c.open(libc::O_WRONLY | libc::O_APPEND) {
            c.write(&fd, b"monotonic 10 0\n");
            c.write(&fd, b"boottime 20 0\n");
        }
    }),
    // Known difference: the read moved the kernel's position to 10.
    case!("append_after_read", "E1", |c| {
        if let Some(fd) = c.open(libc::O_RDWR | libc::O_APPEND) {
            c.read(&fd, 10);
            c.write(&fd, b"monotonic 10 0\n");
        }
    }),
    // --- read format (D2, D6) ---
    case!("read_pread_10", "D2 D6", |c| {
        c.open_write(&[b"monotonic -10 5\nboottime 10 999999999\n"]);
        if let Some(fd) = c.open(libc::O_RDONLY) {
            c.pread(&fd, 10, 0);
            c.pread(&fd, 4096, 10);
        }
    }),
    case!("read_chunks_7", "D2 D6", |c| {
        c.open_write(&[b"monotonic 4000000000 0\n"]);
        if let Some(fd) = c.open(libc::O_RDONLY) {
            for _ in 0..20 {
                if c.read(&fd, 7) <= 0 {
                    break;
                }
            }
        }
    }),
    // --- frozen namespace (C1, E8) ---
    case!("frozen_valid", "C1 E8", |c| {
        c.fork_and_reap();
        c.open_write(&[b"monotonic 10 0\n"]);
    }),
    case!("frozen_bad_clock", "C1 E8", |c| {
        c.fork_and_reap();
        c.open_write(&[b"realtime 10 0\n"]);
    }),
    case!("frozen_out_of_range", "C1 E8", |c| {
        c.fork_and_reap();
        c.open_write(&[b"monotonic 9999999999 0\n"]);
    }),
    case!("frozen_after_write", "C1 C3", |c| {
        c.open_write(&[b"monotonic 10 1\nboottime 20 2\n"]);
        c.fork_and_reap();
        c.open_write(&[b"monotonic 30 3\n"]);
    }),
    case!("frozen_open_before_fork", "C1", |c| {
        if let Some(fd) = c.open(libc::O_WRONLY) {
            c.write(&fd, b"monotonic 10 1\n");
            c.fork_and_reap();
            c.write(&fd, b"boottime 20 2\n");
        }
    }),
    // --- CAP_SYS_TIME (F2, E8) ---
    case!("nocap_valid", "F2 E8", |c| {
        if c.drop_cap_sys_time() {
            c.open_write(&[b"monotonic 10 0\n"]);
        }
    }),
    case!("nocap_bad_clock", "F2 E8", |c| {
        if c.drop_cap_sys_time() {
            c.open_write(&[b"realtime 10 0\n"]);
        }
    }),
    case!("nocap_out_of_range", "F2 E8", |c| {
        if c.drop_cap_sys_time() {
            c.open_write(&[b"monotonic 9999999999 0\n"]);
        }
    }),
    case!("cap_dropped_after_open", "F2", |c| {
        if let Some(fd) = c.open(libc::O_WRONLY) {
            if c.drop_cap_sys_time() {
                c.write(&fd, b"monotonic 10 0\n");
            }
        }
    }),
    case!("cap_regained_after_open", "F2", |c| {
        if c.drop_cap_sys_time() {
            if let Some(fd) = c.open(libc::O_WRONLY) {
                match set_cap_effective(CAP_SYS_TIME, true) {
                    Ok(()) => c.write(&fd, b"monotonic 10 0\n"),
                    Err(e) => c.results.push(Value::from(format!("capset:{e}"))),
                }
            }
        }
    }),
];
