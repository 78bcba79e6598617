//! Generated write cases for `/proc/PID/timens_offsets` (issue 19's differential fuzz).
//!
//! A [`FuzzCase`] is a list of operations on the file, sent as one JSON line to
//! `offsets-case --batch`, which runs each case in a forked child that first calls
//! `unshare(CLONE_NEWTIME)`: on the host that is the kernel's fresh, not yet entered
//! namespace; inside `timens run --for-children` the clock library turns it into the
//! emulation's. Both sides run the operations through the same [`crate::offsets`] runner
//! and print one JSON record per case; [`compare`] decides whether two records agree, or
//! differ only in a way FUSE makes unavoidable ([`crate::offsets::KNOWN_DIFFERENCES`]).
//!
//! The generator itself (proptest strategies) lives in `tests/offsets_fuzz.rs`, the only
//! user of the dev-dependency.

use crate::offsets::{errno_name, host_now_sec, Ctx, Fd, HALF_KTIME_SEC_MAX};
use procview::Clock;
use serde_json::{json, Value};
use std::io::{BufRead, Read, Write};
use std::os::fd::FromRawFd;

/// Part of a write buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// These bytes.
    Lit(Vec<u8>),
    /// A seconds value relative to the host clock, computed in the child just before the
    /// write, so that the range verdict (E9) cannot depend on when the case runs.
    Now {
        clock: Clock,
        bound: Bound,
        delta: i64,
    },
    /// `byte` repeated so that the whole buffer is `total` bytes long (E1's page limit),
    /// whatever the run-time length of `Now` pieces.
    Pad { total: usize, byte: u8 },
}

/// Which edge of the valid offset range (E9) a [`Piece::Now`] is near.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// `-now + delta`: host + offset = `delta` seconds (plus the nanosecond carry).
    Low,
    /// `KTIME_SEC_MAX / 2 - now + delta`: host + offset = the upper bound + `delta`.
    High,
}

/// Where an `lseek` goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    /// `lseek(fd, off, SEEK_SET)`.
    To(i64),
    /// `lseek(fd, written + delta, SEEK_SET)`, `written` being the sum of the counts the
    /// case's successful writes on this fd returned: where a FUSE file position stands.
    Written(i64),
}

/// One operation of a case. Each records exactly one result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Opens the file with these flags (O_WRONLY or O_RDWR, perhaps O_APPEND or O_TRUNC),
    /// replacing (closing) the current fd.
    Open { flags: i32 },
    /// `write(fd, buf)`.
    Write(Vec<Piece>),
    /// `pwrite(fd, buf, off)`.
    Pwrite(Vec<Piece>, i64),
    /// `lseek(fd, ..., SEEK_SET)`.
    Lseek(Seek),
    /// `read(fd, len)`.
    Read(usize),
    /// A child that exits at once: it enters the pending namespace and freezes it (C1).
    Freeze,
    /// Drops CAP_SYS_TIME from the effective set (F2).
    DropCap,
}

/// A generated case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuzzCase {
    pub ops: Vec<Op>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok().filter(|p| p.len() == 2)?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

fn clock_of(name: &str) -> Option<Clock> {
    match name {
        "monotonic" => Some(Clock::Monotonic),
        "boottime" => Some(Clock::Boottime),
        _ => None,
    }
}

fn pieces_json(pieces: &[Piece]) -> Value {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Lit(b) => Value::from(hex(b)),
            Piece::Now {
                clock,
                bound,
                delta,
            } => json!({
                "now": clock.name(),
                "bound": if *bound == Bound::Low { "low" } else { "high" },
                "delta": delta,
            }),
            Piece::Pad { total, byte } => json!({ "pad": total, "byte": byte }),
        })
        .collect()
}

fn pieces_from(v: &Value) -> Option<Vec<Piece>> {
    v.as_array()?
        .iter()
        .map(|p| {
            if let Some(s) = p.as_str() {
                return unhex(s).map(Piece::Lit);
            }
            if let Some(total) = p.get("pad") {
                return Some(Piece::Pad {
                    total: usize::try_from(total.as_u64()?).ok()?,
                    byte: u8::try_from(p.get("byte")?.as_u64()?).ok()?,
                });
            }
            let bound = match p.get("bound")?.as_str()? {
                "low" => Bound::Low,
                "high" => Bound::High,
                _ => return None,
            };
            Some(Piece::Now {
                clock: clock_of(p.get("now")?.as_str()?)?,
                bound,
                delta: p.get("delta")?.as_i64()?,
            })
        })
        .collect()
}

impl FuzzCase {
    /// The case as JSON: `{"id":ID,"ops":[[NAME, ARGS...], ...]}`; literal bytes in hex.
    pub fn to_json(&self, id: u64) -> Value {
        let ops: Vec<Value> = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Open { flags } => json!(["open", flags]),
                Op::Write(p) => json!(["write", pieces_json(p)]),
                Op::Pwrite(p, off) => json!(["pwrite", pieces_json(p), off]),
                Op::Lseek(Seek::To(off)) => json!(["lseek", off]),
                Op::Lseek(Seek::Written(delta)) => json!(["lseek_written", delta]),
                Op::Read(len) => json!(["read", len]),
                Op::Freeze => json!(["freeze"]),
                Op::DropCap => json!(["drop_cap"]),
            })
            .collect();
        json!({ "id": id, "ops": ops })
    }

    /// Parses [`FuzzCase::to_json`]'s form; returns the id and the case.
    pub fn from_json(v: &Value) -> Option<(u64, FuzzCase)> {
        let id = v.get("id")?.as_u64()?;
        let ops = v
            .get("ops")?
            .as_array()?
            .iter()
            .map(|op| {
                let a = op.as_array()?;
                Some(match a.first()?.as_str()? {
                    "open" => Op::Open {
                        flags: i32::try_from(a.get(1)?.as_i64()?).ok()?,
                    },
                    "write" => Op::Write(pieces_from(a.get(1)?)?),
                    "pwrite" => Op::Pwrite(pieces_from(a.get(1)?)?, a.get(2)?.as_i64()?),
                    "lseek" => Op::Lseek(Seek::To(a.get(1)?.as_i64()?)),
                    "lseek_written" => Op::Lseek(Seek::Written(a.get(1)?.as_i64()?)),
                    "read" => Op::Read(usize::try_from(a.get(1)?.as_u64()?).ok()?),
                    "freeze" => Op::Freeze,
                    "drop_cap" => Op::DropCap,
                    _ => return None,
                })
            })
            .collect::<Option<Vec<Op>>>()?;
        Some((id, FuzzCase { ops }))
    }

    /// A human-readable form for failure reports: one op per line, buffers as Rust byte
    /// strings, run-time pieces in braces.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for op in &self.ops {
            let line = match op {
                Op::Open { flags } => format!("open({})", open_flags(*flags)),
                Op::Write(p) => format!("write({})", describe_pieces(p)),
                Op::Pwrite(p, off) => format!("pwrite({}, {off})", describe_pieces(p)),
                Op::Lseek(Seek::To(off)) => format!("lseek({off})"),
                Op::Lseek(Seek::Written(d)) => format!("lseek(written{d:+})"),
                Op::Read(len) => format!("read({len})"),
                Op::Freeze => "fork+exit (freeze)".to_string(),
                Op::DropCap => "drop CAP_SYS_TIME".to_string(),
            };
            out.push_str("  ");
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// `O_WRONLY|O_APPEND` and the like.
pub fn open_flags(flags: i32) -> String {
    let mut names = vec![match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        _ => "O_RDWR",
    }
    .to_string()];
    let mut rest = flags & !libc::O_ACCMODE;
    for (bit, name) in [(libc::O_APPEND, "O_APPEND"), (libc::O_TRUNC, "O_TRUNC")] {
        if rest & bit != 0 {
            names.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#o}"));
    }
    names.join("|")
}

/// Shows bytes as the body of a Rust byte string; long runs of one byte are abbreviated.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let run = bytes[i..].iter().take_while(|&&c| c == b).count();
        if run > 8 {
            out.push_str(&format!("{{\\x{b:02x} x{run}}}"));
            i += run;
        } else {
            out.extend(std::ascii::escape_default(b).map(char::from));
            i += 1;
        }
    }
    out
}

fn describe_pieces(pieces: &[Piece]) -> String {
    let mut s = String::from("b\"");
    for p in pieces {
        match p {
            Piece::Lit(b) => s.push_str(&escape_bytes(b)),
            Piece::Now {
                clock,
                bound,
                delta,
            } => {
                let base = match bound {
                    Bound::Low => "-NOW",
                    Bound::High => "MAX-NOW",
                };
                s.push_str(&format!("{{{base}_{}{delta:+}}}", clock.name()));
            }
            Piece::Pad { total, byte } => {
                let shown: String = std::ascii::escape_default(*byte).map(char::from).collect();
                s.push_str(&format!("{{pad {shown} to {total}}}"));
            }
        }
    }
    s.push('"');
    s
}

/// Length of the buffer if it has no run-time pieces.
pub fn static_len(pieces: &[Piece]) -> Option<usize> {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Lit(b) => Some(b.len()),
            _ => None,
        })
        .sum()
}

/// The bytes of a write, computed now (host clock read here); every `Now` value is
/// registered with `ctx` so the content read back can be compared symbolically.
fn render(ctx: &mut Ctx, pieces: &[Piece]) -> Vec<u8> {
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(pieces.len());
    let mut pad = None;
    for (i, p) in pieces.iter().enumerate() {
        parts.push(match p {
            Piece::Lit(b) => b.clone(),
            Piece::Now {
                clock,
                bound,
                delta,
            } => {
                let id = match clock {
                    Clock::Monotonic => libc::CLOCK_MONOTONIC,
                    Clock::Boottime => libc::CLOCK_BOOTTIME,
                };
                let now = host_now_sec(id);
                let (sec, base) = match bound {
                    Bound::Low => (delta - now, "-NOW"),
                    Bound::High => (HALF_KTIME_SEC_MAX - now + delta, "MAX-NOW"),
                };
                ctx.rel(clock.name(), sec, &format!("{base}{delta:+}"));
                sec.to_string().into_bytes()
            }
            Piece::Pad { .. } => {
                pad = pad.or(Some(i));
                Vec::new()
            }
        });
    }
    if let Some(i) = pad {
        if let Piece::Pad { total, byte } = pieces[i] {
            let len: usize = parts.iter().map(Vec::len).sum();
            parts[i] = vec![byte; total.saturating_sub(len)];
        }
    }
    parts.concat()
}

/// Runs `case` in this process against `/proc/self/timens_offsets` and returns its record
/// (`id` as its `case`). One result per op: `0` for a successful open, `"no-fd"` for an
/// fd op after a failed open.
pub fn run_ops(case: &FuzzCase, id: u64) -> String {
    let mut ctx = Ctx::new();
    let mut fd: Option<Fd> = None;
    let mut written: i64 = 0;
    for op in &case.ops {
        match op {
            Op::Open { flags } => {
                drop(fd.take()); // closed before the next open, as close(2) would be
                written = 0;
                fd = ctx.open(*flags);
                if fd.is_some() {
                    ctx.results.push(Value::from(0));
                }
            }
            Op::Freeze => ctx.fork_and_reap(),
            Op::DropCap => {
                ctx.drop_cap_sys_time();
            }
            _ => {
                let Some(f) = fd.as_ref() else {
                    ctx.results.push(Value::from("no-fd"));
                    continue;
                };
                match op {
                    Op::Write(p) => {
                        let buf = render(&mut ctx, p);
                        ctx.write(f, &buf);
                    }
                    Op::Pwrite(p, off) => {
                        let buf = render(&mut ctx, p);
                        ctx.pwrite(f, &buf, *off);
                    }
                    Op::Lseek(Seek::To(off)) => ctx.lseek(f, *off, libc::SEEK_SET),
                    Op::Lseek(Seek::Written(d)) => ctx.lseek(f, written + d, libc::SEEK_SET),
                    Op::Read(len) => {
                        ctx.read(f, *len);
                    }
                    _ => unreachable!("handled above"),
                }
                if let (Op::Write(_) | Op::Pwrite(..), Some(n)) =
                    (op, ctx.results.last().and_then(Value::as_i64))
                {
                    written += n;
                }
            }
        }
    }
    drop(fd);
    ctx.finish(&id.to_string())
}

/// `offsets-case --batch`: reads one case per line from `input`, runs each in a forked
/// child that first calls `unshare(CLONE_NEWTIME)` (a fresh pending namespace of its own:
/// the kernel's on the host, the emulation's inside a sandbox), and writes one record per
/// line to `output`, flushed, in input order. A child that cannot unshare, or dies,
/// gives `{"case":ID,"error":...}`.
///
/// The calling process must be single-threaded (it forks and the child allocates).
pub fn run_batch(input: impl BufRead, mut output: impl Write) -> std::io::Result<()> {
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| FuzzCase::from_json(&v));
        let record = match parsed {
            Some((id, case)) => run_in_child(&case, id),
            None => json!({ "case": Value::Null, "error": format!("bad case line {line:?}") })
                .to_string(),
        };
        writeln!(output, "{record}")?;
        output.flush()?;
    }
    Ok(())
}

fn error_record(id: u64, error: String) -> String {
    json!({ "case": id.to_string(), "error": error }).to_string()
}

fn run_in_child(case: &FuzzCase, id: u64) -> String {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return error_record(id, format!("pipe:{}", std::io::Error::last_os_error()));
    }
    // SAFETY: the batch process is single-threaded (see run_batch), so the child may
    // allocate; it leaves only through _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: plain syscalls on descriptors this process owns; unshare with a constant
        // flag (inside a sandbox the clock library answers it).
        unsafe { libc::close(fds[0]) };
        let record = if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            error_record(id, format!("unshare:{}", errno_name(e)))
        } else {
            run_ops(case, id)
        };
        // SAFETY: the write end is owned here; File closes it once.
        let mut pipe = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let code = if pipe.write_all(record.as_bytes()).is_ok() {
            0
        } else {
            1
        };
        drop(pipe);
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: the write end belongs to the child now.
    unsafe { libc::close(fds[1]) };
    if pid < 0 {
        // SAFETY: the read end is ours.
        unsafe { libc::close(fds[0]) };
        return error_record(id, format!("fork:{}", std::io::Error::last_os_error()));
    }
    // SAFETY: the read end is owned here; File closes it once.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut record = String::new();
    let read = pipe.read_to_string(&mut record);
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer; `pid` is our child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    if waited != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return error_record(id, format!("child status {status:#x}"));
    }
    match read {
        Ok(_) if !record.is_empty() => record,
        _ => error_record(id, "no record from the child".into()),
    }
}

/// How a kernel record and an emulation record of one case compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Identical results, content after, and bytes read.
    Match,
    /// Different only as the named entry of `KNOWN_DIFFERENCES` explains.
    Known(&'static str),
    /// Anything else: a description of the first difference.
    Differ(String),
}

/// File positions of the fd a case is using, as the kernel and the emulation see them.
#[derive(Default)]
struct Positions {
    /// The kernel's `f_pos`: moved by read and lseek, never by write (E1).
    kernel: i64,
    /// The FUSE file's `f_pos`: also moved by every accepted write.
    fuse: i64,
    /// What the daemon subtracts from FUSE positions (fs/src/procpos.rs).
    phantom: i64,
    /// The fd has O_APPEND: FUSE sends its writes at the inode's size, which the daemon takes
    /// for position 0.
    append: bool,
    /// The FUSE position depends on the inode's size (an lseek after an append write).
    unknown: bool,
}

/// Stands for the unknown inode size plus count after an append write: large, so that reads
/// that follow map as they do in the daemon (FUSE position minus phantom).
const APPENDED: i64 = 1 << 40;

impl Positions {
    fn opened(flags: i32) -> Self {
        Positions {
            append: flags & libc::O_APPEND != 0,
            ..Positions::default()
        }
    }

    /// The position the emulation's handlers work with (fs/src/procpos.rs), if known.
    fn emulated(&self, write: bool) -> Option<i64> {
        if write && self.append {
            Some(0)
        } else if self.unknown {
            None
        } else if self.fuse >= self.phantom {
            Some(self.fuse - self.phantom)
        } else {
            Some(self.fuse)
        }
    }

    /// Whether the emulation works at another position than the kernel for this op.
    fn parted(&self, write: bool) -> bool {
        self.emulated(write) != Some(self.kernel)
    }

    /// The known difference a parted position makes.
    fn why(&self) -> &'static str {
        if self.append {
            "append_position"
        } else {
            "seek_after_write"
        }
    }

    fn accepted(&mut self, op: &Op, n: i64) {
        match op {
            Op::Write(_) if self.append => {
                self.fuse = APPENDED + n;
                self.phantom = APPENDED + n;
            }
            Op::Write(_) => {
                self.fuse += n;
                self.phantom += n;
            }
            Op::Pwrite(..) => self.phantom += n,
            Op::Read(_) => {
                self.kernel += n;
                self.fuse += n;
            }
            Op::Lseek(_) => {
                self.unknown = self.phantom >= APPENDED;
                self.kernel = n;
                self.fuse = n;
            }
            _ => {}
        }
    }
}

/// Compares the two records of `case`. Only the named, unavoidable differences are
/// excused, and only where they occur:
/// - `empty_write`: a zero-length write, kernel EINVAL, emulation 0 (neither changes state);
/// - `pwrite`: kernel ESPIPE; if the emulation accepted it the states part, and the rest of
///   the case is not compared;
/// - `seek_after_write`: a read or write where the emulation's position differs from the
///   kernel's because an lseek landed at or past what earlier writes moved the FUSE
///   position; the rest of the case is not compared;
/// - `append_position`: the same on an O_APPEND fd, whose writes the emulation takes for
///   position 0 while the kernel's position was moved by a read or lseek.
pub fn compare(case: &FuzzCase, kernel: &Value, emul: &Value) -> Verdict {
    if kernel.get("error").is_some() || emul.get("error").is_some() {
        return if kernel == emul {
            Verdict::Match
        } else {
            Verdict::Differ(format!("run: kernel {kernel}, emulation {emul}"))
        };
    }
    let empty = Vec::new();
    let kr = kernel["results"].as_array().unwrap_or(&empty);
    let er = emul["results"].as_array().unwrap_or(&empty);
    let mut known = None;
    let mut skip_read = false;
    let mut pos = Positions::default();
    for (i, op) in case.ops.iter().enumerate() {
        let (k, e) = (kr.get(i), er.get(i));
        let same = k == e;
        let n = e.and_then(Value::as_i64);
        match op {
            Op::Open { flags } => pos = Positions::opened(*flags),
            Op::Write(p) if !same => {
                if static_len(p) == Some(0)
                    && k.and_then(Value::as_str) == Some("EINVAL")
                    && n == Some(0)
                {
                    known = Some("empty_write");
                    continue;
                }
                if pos.parted(true) {
                    return Verdict::Known(pos.why());
                }
            }
            Op::Read(_) if pos.parted(false) => {
                if !same {
                    return Verdict::Known(pos.why());
                }
                // Same count, but from another position: the bytes read are not compared.
                skip_read = true;
                known = Some(pos.why());
            }
            Op::Pwrite(..) if !same && k.and_then(Value::as_str) == Some("ESPIPE") => {
                if n.is_some() {
                    return Verdict::Known("pwrite");
                }
                known = Some("pwrite");
                continue;
            }
            _ => {}
        }
        if !same {
            return Verdict::Differ(format!(
                "op {i} ({op:?}): kernel {}, emulation {}",
                show(k),
                show(e)
            ));
        }
        if let Some(n) = n {
            pos.accepted(op, n);
        }
    }
    if kr.len() != er.len() || kr.len() != case.ops.len() {
        return Verdict::Differ(format!(
            "result count: {} ops, kernel {}, emulation {}",
            case.ops.len(),
            kr.len(),
            er.len()
        ));
    }
    let (kc, ec) = (
        crate::harness::comparable(kernel),
        crate::harness::comparable(emul),
    );
    for field in ["after", "read"] {
        if kc[field] != ec[field] && !(field == "read" && skip_read) {
            return Verdict::Differ(format!(
                "{field}: kernel {}, emulation {}",
                kc[field], ec[field]
            ));
        }
    }
    known.map_or(Verdict::Match, Verdict::Known)
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(none)".to_string(), Value::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &[u8]) -> Piece {
        Piece::Lit(s.to_vec())
    }

    fn rec(results: Value, after: &str) -> Value {
        json!({ "case": "0", "results": results, "after": after })
    }

    #[test]
    fn json_round_trip() {
        let case = FuzzCase {
            ops: vec![
                Op::DropCap,
                Op::Open {
                    flags: libc::O_RDWR | libc::O_APPEND,
                },
                Op::Write(vec![
                    lit(b"monotonic \xff\0 "),
                    Piece::Now {
                        clock: Clock::Boottime,
                        bound: Bound::High,
                        delta: -3,
                    },
                    Piece::Pad {
                        total: 4097,
                        byte: b'\n',
                    },
                ]),
                Op::Pwrite(vec![lit(b"1 1 1")], 5),
                Op::Lseek(Seek::To(-1)),
                Op::Lseek(Seek::Written(1)),
                Op::Read(7),
                Op::Freeze,
            ],
        };
        let line = case.to_json(42).to_string();
        let back = FuzzCase::from_json(&serde_json::from_str(&line).unwrap());
        assert_eq!(back, Some((42, case)));
        assert_eq!(
            FuzzCase::from_json(&json!({"id": 1, "ops": [["fly"]]})),
            None
        );
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn describe_shows_bytes_and_runtime_pieces() {
        let case = FuzzCase {
            ops: vec![
                Op::Open {
                    flags: libc::O_WRONLY,
                },
                Op::Write(vec![
                    lit(b"7 \t\x00\xa0"),
                    Piece::Now {
                        clock: Clock::Monotonic,
                        bound: Bound::Low,
                        delta: 3,
                    },
                    lit(&[b' '; 20]),
                ]),
            ],
        };
        assert_eq!(
            case.describe(),
            "  open(O_WRONLY)\n  write(b\"7 \\t\\x00\\xa0{-NOW_monotonic+3}{\\x20 x20}\")\n"
        );
    }

    #[test]
    fn render_pads_to_the_total() {
        let mut ctx = Ctx::new();
        let buf = render(
            &mut ctx,
            &[
                Piece::Pad {
                    total: 10,
                    byte: b' ',
                },
                lit(b"1 2 3"),
            ],
        );
        assert_eq!(buf, b"     1 2 3");
        // A total shorter than the rest pads nothing.
        let buf = render(&mut ctx, &[lit(b"1 2 3"), Piece::Pad { total: 2, byte: 0 }]);
        assert_eq!(buf, b"1 2 3");
    }

    #[test]
    fn compare_match_and_plain_difference() {
        let case = FuzzCase {
            ops: vec![
                Op::Open {
                    flags: libc::O_WRONLY,
                },
                Op::Write(vec![lit(b"1 1 0")]),
            ],
        };
        let k = rec(json!([0, 5]), "a");
        assert_eq!(compare(&case, &k, &k.clone()), Verdict::Match);
        let e = rec(json!([0, "EINVAL"]), "a");
        assert!(matches!(compare(&case, &k, &e), Verdict::Differ(d) if d.starts_with("op 1")));
        let e = rec(json!([0, 5]), "b");
        assert!(matches!(compare(&case, &k, &e), Verdict::Differ(d) if d.starts_with("after")));
    }

    #[test]
    fn compare_empty_write_only_when_empty() {
        let case = FuzzCase {
            ops: vec![
                Op::Open {
                    flags: libc::O_WRONLY,
                },
                Op::Write(vec![]),
                Op::Write(vec![lit(b"1 1 0")]),
            ],
        };
        let k = rec(json!([0, "EINVAL", 5]), "a");
        let e = rec(json!([0, 0, 5]), "a");
        assert_eq!(compare(&case, &k, &e), Verdict::Known("empty_write"));
        // The later write must still agree.
        let e = rec(json!([0, 0, "EINVAL"]), "a");
        assert!(matches!(compare(&case, &k, &e), Verdict::Differ(_)));
        // A non-empty write answered with 0 is a real difference.
        let case = FuzzCase {
            ops: vec![
                Op::Open {
                    flags: libc::O_WRONLY,
                },
                Op::Write(vec![lit(b"x")]),
            ],
        };
        let k = rec(json!([0, "EINVAL"]), "a");
        let e = rec(json!([0, 0]), "a");
        assert!(matches!(compare(&case, &k, &e), Verdict::Differ(_)));
    }

    #[test]
    fn compare_pwrite() {
        let case = FuzzCase {
            ops: vec![
                Op::Open {
                    flags: libc::O_WRONLY,
                },
                Op::Pwrite(vec![lit(b"1 1 0")], 5),
                Op::Write(vec![lit(b"1 2 0")]),
            ],
        };
        let k = rec(json!([0, "ESPIPE", 5]), "a");
        // Refused with another errno: nothing changed, the rest is compared.
        let e = rec(json!([0, "EINVAL", 5]), "a");
        assert_eq!(compare(&case, &k, &e), Verdict::Known("pwrite"));
        let e = rec(json!([0, "EINVAL", 5]), "b");
        assert!(matches!(compare(&case, &k, &e), Verdict::Differ(_)));
        // Accepted: the states part.
        let e = rec(json!([0, 5, 5]), "b");
        assert_eq!(compare(&case, &k, &e), Verdict::Known("pwrite"));
    }

    #[test]
    fn compare_append_position() {
        let case = |first: Op| FuzzCase {
            ops: vec![
                Op::Open {
                    flags: libc::O_RDWR | libc::O_APPEND,
                },
                first,
                Op::Write(vec![lit(b"1 1 0\n")]),
            ],
        };
        // A read moved the kernel's position to 10: its write fails, the emulation's cannot.
        let k = rec(json!([0, 10, "EINVAL"]), "a");
        let e = rec(json!([0, 10, 6]), "b");
        assert_eq!(
            compare(&case(Op::Read(10)), &k, &e),
            Verdict::Known("append_position")
        );
        // After lseek(0) both are at 0: a difference is real.
        let k = rec(json!([0, 0, 6]), "a");
        let e = rec(json!([0, 0, "EINVAL"]), "a");
        assert!(matches!(
            compare(&case(Op::Lseek(Seek::To(0))), &k, &e),
            Verdict::Differ(_)
        ));
    }

    #[test]
    fn compare_seek_after_write_only_where_positions_part() {
        let ops = |seek| FuzzCase {
            ops: vec![
                Op::Open {
                    flags: libc::O_WRONLY,
                },
                Op::Write(vec![lit(b"1 1 0\n")]),
                Op::Lseek(seek),
                Op::Write(vec![lit(b"7 2 0\n")]),
            ],
        };
        // lseek(6) after a 6-byte write: the kernel sees position 6, the emulation 0.
        let case = ops(Seek::Written(0));
        let k = rec(json!([0, 6, 6, "EINVAL"]), "a");
        let e = rec(json!([0, 6, 6, 6]), "b");
        assert_eq!(compare(&case, &k, &e), Verdict::Known("seek_after_write"));
        // lseek(0): both at 0, so a difference is real.
        let case = ops(Seek::To(0));
        let k = rec(json!([0, 6, 0, 6]), "a");
        let e = rec(json!([0, 6, 0, "EINVAL"]), "a");
        assert!(matches!(compare(&case, &k, &e), Verdict::Differ(_)));
    }
}
