//! Differential fuzzing of `/proc/PID/timens_offsets` writes (issue 19; spec E1–E10, C1,
//! F2): generated cases run against the kernel (`offsets-case --batch` on the host) and
//! under the emulation (the same command inside one `timens run --for-children`
//! sandbox), each case in a forked child with a fresh pending namespace of its own. Return
//! values, errnos, the file content after the case and any bytes read must agree, except
//! for the differences FUSE makes unavoidable (`offsets::KNOWN_DIFFERENCES`, by name; see
//! `fuzz::compare`). Any other difference fails the test and prints the case shrunk by
//! proptest, both records, and how to run it again.
//!
//! Knobs: `TIMENS_FUZZ_CASES` [10000], `TIMENS_FUZZ_SEED` [0x74696d656e73, printed],
//! `TIMENS_FUZZ_FIRST` [0] (index of the first case; with `TIMENS_FUZZ_CASES=1`, one case
//! again). Case `i` depends only on the seed and `i`. `bench/fuzz-offsets.sh` runs 100,000.
//!
//! Skips with a named reason when not root, without /dev/fuse, without kernel time
//! namespaces, or when `timens`/`timensfs` are not built.

use procview::Clock;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::strategy::{BoxedStrategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::process::Command;
use std::time::Instant;
use timensfs_tests::fuzz::{compare, Bound, FuzzCase, Op, Piece, Seek, Verdict};
use timensfs_tests::offsets::{known_reason, KTIME_SEC_MAX};
use timensfs_tests::sandbox::{Background, Env, Needs};

const BIN: &str = env!("CARGO_BIN_EXE_offsets-case");
/// The daemon's log in its state directory (`timens_proto::LOG_NAME`).
const LOG_NAME: &str = "timensfs.log";
/// Names the skip line and the state directory (kept short: the control socket's path must fit
/// in `sun_path` even under the bench script's TMPDIR).
const TEST: &str = "offsets_fuzz";

const DEFAULT_CASES: u64 = 10_000;
/// "timens" in ASCII.
const DEFAULT_SEED: u64 = 0x7469_6d65_6e73;
/// Cases sent to each side ahead of the one being compared, so both sides keep busy.
const IN_FLIGHT: usize = 64;
/// Differences shrunk and printed in full; the rest are counted.
const REPORTED: usize = 3;
/// Bound on the runs spent shrinking one difference.
const SHRINK_RUNS: usize = 300;
/// After this many differences no more cases are sent: something is broken, not rare.
const STOP_AFTER: usize = 50;

// ---------------------------------------------------------------------------------------------
// The generator.

fn lit(b: &[u8]) -> Piece {
    Piece::Lit(b.to_vec())
}

fn dec(n: impl std::fmt::Display) -> Vec<Piece> {
    vec![Piece::Lit(n.to_string().into_bytes())]
}

fn text(s: impl AsRef<[u8]>) -> Vec<Piece> {
    vec![Piece::Lit(s.as_ref().to_vec())]
}

// Byte tables the generator picks from (kept compact: rustfmt would put one per line).

#[rustfmt::skip]
const WRONG_CLOCKS: &[&[u8]] = &[
    b"0", b"2", b"3", b"4", b"5", b"6", b"8", b"9", b"11", b"17", b"-1", b"+1", b"01", b"07",
    b"realtime", b"MONOTONIC", b"Monotonic", b"BOOTTIME", b"Boottime", b"monotoni", b"boottim",
    b"monotonicX", b"monotonic1", b"boottime7", b"boottimeX", b"mono", b"monotonic_raw", b"tai",
    b"monotonic\xff", b"boot\x00time", b"",
];

#[rustfmt::skip]
const SPECIAL_SECS: &[&[u8]] = &[
    b"-0", b"007", b"-007", b"18446744073709551615", b"18446744073709551616",
    b"18446744073709551626", b"99999999999999999999", b"9223372036854775807",
    b"9223372036854775808", b"-9223372036854775808", b"-9223372036854775809",
    b"-18446744073709551615", b"4611686018", b"4611686019", b"0000000000000000000012",
];

#[rustfmt::skip]
const SEC_PREFIXES: &[&str] = &["+", "0x", "--", "- ", "-+", "", "\u{a0}"];

#[rustfmt::skip]
const SEC_SUFFIXES: &[&str] = &[".5", "x", "e3", "", "-", "_1"];

/// No value here wraps to a large negative `long` (see `nsec_field`).
#[rustfmt::skip]
const SPECIAL_NSECS: &[&[u8]] = &[
    b"999999999", b"1000000000", b"1000000001", b"1999999999", b"4294967296", b"-1", b"+0",
    b"-0", b"0x1", b"00000000000999999999", b"18446744073709551615", b"18446744073709551616",
    b"18446744073709551617", b"9223372036854775807", b"18446744072709551616",
    b"36893488147419103232", b"1e3", b"5.",
];

#[rustfmt::skip]
const FIELD_SEPS: &[&[u8]] = &[
    b"\t", b"  ", b" \t ", b"", b"\x0b", b"\x0c", b"\r", b"\xa0", b"\n", b"\0", b" \n", b"\x85",
];

#[rustfmt::skip]
const LEADING: &[&[u8]] = &[b" ", b"\t\t", b"\xa0", b"\n", b"\r", b" \x0b"];

#[rustfmt::skip]
const TRAILING: &[&[u8]] = &[
    b" trailing garbage", b"\r", b" 5", b" 1 2", b"x", b".5", b"\t#", b" \xff\xfe", b"9",
];

#[rustfmt::skip]
const LINE_ENDS: &[&[u8]] = &[b"\r\n", b"\n\n", b"\0", b"\n\0", b" \n", b"\n \n"];

#[rustfmt::skip]
const INSERTED: &[&[u8]] = &[b"\0", b"\n", b"\xff", b"\xa0", b"\n\n", b"\xc3\x28", b" "];

/// One of `items`, as bytes.
fn one_of(items: &'static [&'static [u8]]) -> BoxedStrategy<Vec<u8>> {
    select(items).prop_map(<[u8]>::to_vec).boxed()
}

/// A record's clock field and, when it is a valid spelling (E5), the clock it names.
fn clock_field() -> BoxedStrategy<(Vec<u8>, Option<Clock>)> {
    let valid = select(vec![
        (&b"monotonic"[..], Clock::Monotonic),
        (b"boottime", Clock::Boottime),
        (b"1", Clock::Monotonic),
        (b"7", Clock::Boottime),
    ])
    .prop_map(|(s, c)| (s.to_vec(), Some(c)));
    let wrong = select(WRONG_CLOCKS).prop_map(|s| (s.to_vec(), None));
    let random = "[a-z0-9]{1,12}".prop_map(|s| (s.into_bytes(), None));
    prop_oneof![12 => valid, 3 => wrong, 1 => random].boxed()
}

/// Seconds: small, any i64, the E9 bounds, wrapping and huge digit strings, bad syntax,
/// and (for a valid clock) values a few seconds either side of the host-relative bounds.
///
/// Literal values stay away from `-now`, the host-relative lower bound (E9): the two sides
/// run a case up to seconds apart, so a literal near it could get ERANGE on one side only.
/// Small negatives are at most 30 s (the host has been up longer than the build took), and
/// the bounds themselves are probed by `Piece::Now`, computed when the case runs.
fn sec_field(clock: Option<Clock>) -> BoxedStrategy<Vec<Piece>> {
    let bounds = select(&[
        KTIME_SEC_MAX,
        -KTIME_SEC_MAX,
        KTIME_SEC_MAX + 1,
        -KTIME_SEC_MAX - 1,
        KTIME_SEC_MAX / 2,
        -KTIME_SEC_MAX / 2,
        i64::MAX,
        i64::MIN,
    ]);
    let literal = prop_oneof![
        5 => (0i64..1000).prop_map(dec),
        2 => (-30i64..0).prop_map(dec),
        3 => any::<i64>().prop_map(dec),
        2 => (-5_000_000_000i64..5_000_000_000).prop_map(dec),
        2 => bounds.prop_map(dec),
        2 => one_of(SPECIAL_SECS).prop_map(text),
        1 => "-?[0-9]{11,40}".prop_map(text),
        2 => (select(SEC_PREFIXES), 0u32..100_000, select(SEC_SUFFIXES))
            .prop_map(|(p, n, s)| text(format!("{p}{n}{s}"))),
    ];
    match clock {
        Some(clock) => {
            // At least 3 s from each edge, so that the verdict cannot change between the
            // child's clock read and the kernel's (nanosecond carry and a second boundary).
            let deltas = select(&[-1_000_000i64, -100, -5, -3, 3, 5, 100, 1_000_000]);
            let near =
                (select(&[Bound::Low, Bound::High]), deltas).prop_map(move |(bound, delta)| {
                    vec![Piece::Now {
                        clock,
                        bound,
                        delta,
                    }]
                });
            prop_oneof![8 => literal, 3 => near].boxed()
        }
        None => literal.boxed(),
    }
}

/// Nanoseconds: in range, at 1e9, wrapping u64 values, signs and junk (E4).
///
/// Values that wrap to a negative `long` pass E4 and are carried into seconds by E9's
/// normalisation, which the kernel does one loop turn per second: `9223372036854775808`
/// costs it ~2.5 s of CPU. So wrapped values here carry at most 2 s (which also keeps
/// host + offset away from the E9 bounds, see `sec_field`); the huge ones are pinned by
/// unit tests (procview `normalize`, timens `write`).
fn nsec_field() -> BoxedStrategy<Vec<Piece>> {
    prop_oneof![
        5 => (0u64..1000).prop_map(dec),
        3 => (0u64..1_000_000_000).prop_map(dec),
        3 => one_of(SPECIAL_NSECS).prop_map(text),
        1 => (0u64..1 << 63).prop_map(dec),
        1 => (1u64..=2_000_000_000).prop_map(|x| dec(x.wrapping_neg())),
        1 => "0{5,25}[0-9]{1,9}".prop_map(text),
    ]
    .boxed()
}

fn field_sep() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![10 => Just(b" ".to_vec()), 2 => one_of(FIELD_SEPS)].boxed()
}

fn leading() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![10 => Just(Vec::new()), 1 => one_of(LEADING)].boxed()
}

fn trailing() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        10 => Just(Vec::new()),
        1 => one_of(TRAILING),
        1 => prop::collection::vec(any::<u8>(), 1..6),
    ]
    .boxed()
}

fn line_end() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![8 => Just(b"\n".to_vec()), 2 => Just(Vec::new()), 1 => one_of(LINE_ENDS)].boxed()
}

/// The fields a record keeps: all three, or fewer (E4 "missing fields").
#[derive(Clone, Copy, Debug)]
enum Shape {
    Full,
    NoNsec,
    NameOnly,
    Empty,
}

/// One record, `lead name sep sec sep nsec tail end`, as pieces (so that split writes can
/// cut between fields).
fn record() -> BoxedStrategy<Vec<Piece>> {
    let shape = prop_oneof![
        12 => Just(Shape::Full),
        1 => Just(Shape::NoNsec),
        1 => Just(Shape::NameOnly),
        1 => Just(Shape::Empty),
    ];
    (clock_field(), shape)
        .prop_flat_map(|((name, clock), shape)| {
            (
                Just((name, shape)),
                leading(),
                field_sep(),
                sec_field(clock),
                field_sep(),
                (nsec_field(), trailing(), line_end()),
                (closed_nsec(), closed_trailing(), closed_line_end()),
            )
        })
        .prop_map(|((name, shape), lead, sep1, sec, sep2, open, closed)| {
            // After a host-relative value the nsec field must end where it was generated:
            // a digit appended to it (from the tail, or the next record after an empty line
            // end) could wrap it into a carry of any size, and then whether host + offset
            // is in range (E9) would depend on the host clock's nanoseconds.
            let has_now = sec.iter().any(|p| matches!(p, Piece::Now { .. }));
            let (nsec, tail, end) = if has_now { closed } else { open };
            let mut p = vec![lit(&lead)];
            match shape {
                Shape::Empty => {}
                Shape::NameOnly => p.push(lit(&name)),
                Shape::NoNsec => {
                    p.extend([lit(&name), lit(&sep1)]);
                    p.extend(sec);
                }
                Shape::Full => {
                    p.extend([lit(&name), lit(&sep1)]);
                    p.extend(sec);
                    p.push(lit(&sep2));
                    p.extend(nsec);
                    p.push(lit(&tail));
                }
            }
            p.push(lit(&end));
            p.retain(|piece| piece != &Piece::Lit(Vec::new()));
            p
        })
        .boxed()
}

/// Nanoseconds that carry at most 2 s (see `nsec_field`).
fn closed_nsec() -> BoxedStrategy<Vec<Piece>> {
    prop_oneof![
        5 => (0u64..1000).prop_map(dec),
        3 => (0u64..1_000_000_000).prop_map(dec),
        1 => (1u64..=2_000_000_000).prop_map(|x| dec(x.wrapping_neg())),
    ]
    .boxed()
}

/// A tail that does not start with a digit.
fn closed_trailing() -> BoxedStrategy<Vec<u8>> {
    let no_digit: Vec<&'static [u8]> = TRAILING
        .iter()
        .copied()
        .filter(|t| !t.first().is_some_and(u8::is_ascii_digit))
        .collect();
    prop_oneof![10 => Just(Vec::new()), 1 => select(no_digit).prop_map(<[u8]>::to_vec)].boxed()
}

/// A line end that is not empty.
fn closed_line_end() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![8 => Just(b"\n".to_vec()), 1 => one_of(LINE_ENDS)].boxed()
}

/// A change to a buffer of records: bytes inserted, a cut, or padding to a length around
/// the page limit (E1).
#[derive(Clone, Debug)]
enum Mutation {
    None,
    Insert(Index, Vec<u8>),
    Truncate(Index, Index),
    Pad { total: usize, byte: u8, front: bool },
}

fn mutation() -> BoxedStrategy<Mutation> {
    let insert = (
        any::<Index>(),
        prop_oneof![one_of(INSERTED), prop::collection::vec(any::<u8>(), 1..6)],
    )
        .prop_map(|(i, b)| Mutation::Insert(i, b));
    let totals = select(&[4094usize, 4095, 4096, 4097, 4098, 8191, 8192, 8193, 65536]);
    let pad = (
        prop_oneof![3 => totals, 1 => 100usize..4200],
        // No digit: padding after a record's nsec field would extend it.
        select(&[b' ', b'\n', b'x', 0, b'\t', 0xa0]),
        any::<bool>(),
    )
        .prop_map(|(total, byte, front)| Mutation::Pad { total, byte, front });
    prop_oneof![
        10 => Just(Mutation::None),
        2 => insert,
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Truncate(a, b)),
        3 => pad,
    ]
    .boxed()
}

fn mutate(mut pieces: Vec<Piece>, m: Mutation) -> Vec<Piece> {
    match m {
        Mutation::None => {}
        // Not a digit into a buffer with host-relative values: it could extend their
        // nsec field (see `record`).
        Mutation::Insert(_, bytes)
            if bytes.first().is_some_and(u8::is_ascii_digit)
                && pieces.iter().any(|p| matches!(p, Piece::Now { .. })) => {}
        Mutation::Insert(at, bytes) => pieces.insert(at.index(pieces.len() + 1), Piece::Lit(bytes)),
        Mutation::Truncate(at, within) => {
            let keep = at.index(pieces.len() + 1);
            pieces.truncate(keep);
            if let Some(Piece::Lit(b)) = pieces.last_mut() {
                let n = within.index(b.len() + 1);
                b.truncate(n);
            }
        }
        Mutation::Pad { total, byte, front } => {
            let pad = Piece::Pad { total, byte };
            if front {
                pieces.insert(0, pad);
            } else {
                pieces.push(pad);
            }
        }
    }
    pieces
}

/// The bytes of one write: one to four records (possibly mutated), or raw bytes.
fn payload() -> BoxedStrategy<Vec<Piece>> {
    let records = prop::collection::vec(record(), 1..=4)
        .prop_map(|r| r.concat())
        .prop_flat_map(|p| (Just(p), mutation()))
        .prop_map(|(p, m)| mutate(p, m));
    prop_oneof![
        14 => records,
        1 => prop::collection::vec(any::<u8>(), 0..48).prop_map(text),
        1 => "[monotcbie17890 \t\n\r+-]{0,40}".prop_map(text),
    ]
    .boxed()
}

/// Cuts `pieces` at `cuts` (positions among literal bytes and piece boundaries) into
/// consecutive writes.
fn split(pieces: Vec<Piece>, cuts: Vec<Index>) -> Vec<Vec<Piece>> {
    let mut atoms: Vec<Piece> = Vec::new();
    for p in pieces {
        match p {
            Piece::Lit(b) => atoms.extend(b.into_iter().map(|c| Piece::Lit(vec![c]))),
            other => atoms.push(other),
        }
    }
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(atoms.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut chunks = Vec::new();
    let mut rest = atoms;
    for cut in at.into_iter().rev() {
        chunks.push(rest.split_off(cut));
    }
    chunks.push(rest);
    chunks.reverse();
    chunks.into_iter().map(merge_lits).collect()
}

/// Joins adjacent literal pieces.
fn merge_lits(atoms: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for a in atoms {
        match (out.last_mut(), a) {
            (Some(Piece::Lit(prev)), Piece::Lit(b)) => prev.extend(b),
            (_, a) => out.push(a),
        }
    }
    out
}

fn seek() -> BoxedStrategy<Seek> {
    prop_oneof![
        select(&[0i64, 1, 5, 15, 64, 4096, -1]).prop_map(Seek::To),
        select(&[-1i64, 0, 1, 5]).prop_map(Seek::Written),
    ]
    .boxed()
}

/// `pieces` with every host-relative value replaced by `0`: bytes read back are compared
/// as they are, and a value computed from the host clock can differ by a second between
/// the two sides (the content after a case is compared symbolically, `after_rel`).
fn without_now(pieces: Vec<Piece>) -> Vec<Piece> {
    pieces
        .into_iter()
        .map(|p| match p {
            Piece::Now { .. } => lit(b"0"),
            other => other,
        })
        .collect()
}

fn wr() -> Op {
    Op::Open {
        flags: libc::O_WRONLY,
    }
}

/// A whole case: usually one write on a fresh fd; also writes split over several calls,
/// two writes per fd or per open, seeks and reads on the fd, O_APPEND and O_TRUNC, pwrite,
/// a freeze (C1, E8), and a dropped CAP_SYS_TIME (F2, E8).
fn case() -> BoxedStrategy<FuzzCase> {
    let open = |flags| Op::Open { flags };
    let ops = prop_oneof![
        16 => (open_flags(), payload()).prop_map(move |(f, p)| vec![open(f), Op::Write(p)]),
        3 => (open_flags(), payload(), prop::collection::vec(any::<Index>(), 1..3)).prop_map(
            move |(f, p, cuts)| {
                let mut ops = vec![open(f)];
                ops.extend(split(p, cuts).into_iter().map(Op::Write));
                ops
            }
        ),
        2 => (open_flags(), payload(), payload())
            .prop_map(move |(f, a, b)| vec![open(f), Op::Write(a), Op::Write(b)]),
        1 => (payload(), payload())
            .prop_map(|(a, b)| vec![wr(), Op::Write(a), wr(), Op::Write(b)]),
        2 => (open_flags(), payload(), seek(), payload()).prop_map(move |(f, a, s, b)| {
            vec![open(f), Op::Write(a), Op::Lseek(s), Op::Write(b)]
        }),
        1 => (read_flags(), 1usize..100, seek(), payload()).prop_map(move |(f, n, s, p)| {
            vec![open(f), Op::Read(n), Op::Lseek(s), Op::Write(p)]
        }),
        1 => (read_flags(), 1usize..100, payload()).prop_map(move |(f, n, p)| {
            vec![open(f), Op::Read(n), Op::Write(p)]
        }),
        1 => (read_flags(), payload(), 1usize..100, seek(), 1usize..100).prop_map(
            move |(f, p, n, s, m)| {
                vec![
                    open(f),
                    Op::Write(without_now(p)),
                    Op::Read(n),
                    Op::Lseek(s),
                    Op::Read(m),
                ]
            }
        ),
        1 => (open_flags(), payload(), 0i64..80)
            .prop_map(move |(f, p, off)| vec![open(f), Op::Pwrite(p, off)]),
        2 => (payload(), payload(), any::<bool>()).prop_map(|(a, b, first)| {
            if first {
                vec![Op::Freeze, wr(), Op::Write(a)]
            } else {
                vec![wr(), Op::Write(a), Op::Freeze, Op::Write(b)]
            }
        }),
        1 => (payload(), any::<bool>()).prop_map(|(p, first)| {
            if first {
                vec![Op::DropCap, wr(), Op::Write(p)]
            } else {
                vec![wr(), Op::DropCap, Op::Write(p)]
            }
        }),
    ];
    ops.prop_map(|ops| FuzzCase { ops }).boxed()
}

/// Flags of an fd that writes: mostly O_WRONLY; also O_RDWR, and O_APPEND and O_TRUNC, which
/// procfs ignores (the shell's `>>` and `>`).
fn open_flags() -> BoxedStrategy<i32> {
    prop_oneof![
        8 => Just(libc::O_WRONLY),
        1 => Just(libc::O_WRONLY | libc::O_APPEND),
        1 => Just(libc::O_WRONLY | libc::O_TRUNC),
        1 => Just(libc::O_RDWR),
        1 => Just(libc::O_RDWR | libc::O_APPEND),
    ]
    .boxed()
}

/// Flags of an fd that reads and writes.
fn read_flags() -> BoxedStrategy<i32> {
    prop_oneof![3 => Just(libc::O_RDWR), 1 => Just(libc::O_RDWR | libc::O_APPEND)].boxed()
}

/// The value tree of case `i`: a ChaCha generator seeded from (seed, i) only.
fn tree(
    strategy: &BoxedStrategy<FuzzCase>,
    seed: u64,
    i: u64,
) -> Box<dyn ValueTree<Value = FuzzCase>> {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&i.to_le_bytes());
    bytes[16..].copy_from_slice(b"timens_offsets!!");
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    strategy
        .new_tree(&mut runner)
        .unwrap_or_else(|e| panic!("generating case {i}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Running.

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={v:?}: {e}"))
        }
    }
}

/// The two batch processes: the kernel's and the emulation's.
struct Sides {
    kernel: Background,
    emul: Background,
}

impl Sides {
    fn send(&mut self, id: u64, case: &FuzzCase) {
        let line = case.to_json(id).to_string();
        for (name, side) in [("kernel", &mut self.kernel), ("emulation", &mut self.emul)] {
            side.send_line(&line)
                .unwrap_or_else(|e| panic!("sending case {id} to the {name} side: {e}"));
        }
    }

    /// The next record of each side, checked to be case `id`'s.
    fn receive(&mut self, id: u64) -> (Value, Value) {
        let get = |side: &mut Background, name: &str| {
            let line = side.line();
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("{name} side printed {line:?}: {e}"));
            assert_eq!(
                v.get("case").and_then(Value::as_str),
                Some(id.to_string().as_str()),
                "{name} side answered out of order: {line}"
            );
            v
        };
        let k = get(&mut self.kernel, "kernel");
        let e = get(&mut self.emul, "emulation");
        (k, e)
    }

    fn run(&mut self, id: u64, case: &FuzzCase) -> (Value, Value, Verdict) {
        self.send(id, case);
        let (k, e) = self.receive(id);
        let v = compare(case, &k, &e);
        (k, e, v)
    }
}

/// A difference, shrunk: the smallest case proptest's simplification found that still
/// differs in a way no known difference explains.
struct Shrunk {
    case: FuzzCase,
    kernel: Value,
    emul: Value,
    why: String,
    runs: usize,
}

fn shrink(
    sides: &mut Sides,
    strategy: &BoxedStrategy<FuzzCase>,
    seed: u64,
    i: u64,
    next_id: &mut u64,
) -> Shrunk {
    let mut t = tree(strategy, seed, i);
    let mut best: Option<Shrunk> = None;
    let mut runs = 0;
    let mut check = |case: &FuzzCase, runs: &mut usize| {
        *runs += 1;
        *next_id += 1;
        match sides.run(*next_id, case) {
            (k, e, Verdict::Differ(why)) => Some((k, e, why)),
            _ => None,
        }
    };
    if let Some((kernel, emul, why)) = check(&t.current(), &mut runs) {
        best = Some(Shrunk {
            case: t.current(),
            kernel,
            emul,
            why,
            runs,
        });
        let mut more = t.simplify();
        while more && runs < SHRINK_RUNS {
            let candidate = t.current();
            match check(&candidate, &mut runs) {
                Some((kernel, emul, why)) => {
                    best = Some(Shrunk {
                        case: candidate,
                        kernel,
                        emul,
                        why,
                        runs,
                    });
                    more = t.simplify();
                }
                None => more = t.complicate(),
            }
        }
    }
    best.unwrap_or_else(|| Shrunk {
        case: t.current(),
        kernel: Value::Null,
        emul: Value::Null,
        why: "did not differ when run again (flaky)".into(),
        runs,
    })
}

/// What the cases compared so far gave.
#[derive(Default)]
struct Tally {
    matches: u64,
    known: BTreeMap<&'static str, u64>,
    /// (case index, first difference, kernel record, emulation record)
    differing: Vec<(u64, String, Value, Value)>,
}

impl Tally {
    /// Receives both records of case `i` and counts the verdict.
    fn settle(&mut self, sides: &mut Sides, (i, case): (u64, FuzzCase)) {
        let (k, e) = sides.receive(i);
        match compare(&case, &k, &e) {
            Verdict::Match => self.matches += 1,
            Verdict::Known(name) => *self.known.entry(name).or_default() += 1,
            Verdict::Differ(why) => self.differing.push((i, why, k, e)),
        }
    }
}

/// Empty while the sandbox's daemon runs; else a note with the end of its log.
fn daemon_health(env: &Env) -> String {
    let alive = env
        .state
        .daemon_pid()
        .is_some_and(|pid| env.state.is_our_daemon(pid));
    if alive {
        return String::new();
    }
    let log = std::fs::read_to_string(env.state.path().join(LOG_NAME)).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    format!(
        "\nthe daemon is gone; the end of its log:\n{}\n",
        lines[lines.len().saturating_sub(30)..].join("\n")
    )
}

#[test]
fn emulation_matches_kernel() {
    let Some(env) = Env::new(
        TEST,
        Needs {
            kernel_oracle: true,
            tools: &[],
        },
    ) else {
        return;
    };
    let cases = env_u64("TIMENS_FUZZ_CASES", DEFAULT_CASES);
    let seed = env_u64("TIMENS_FUZZ_SEED", DEFAULT_SEED);
    let first = env_u64("TIMENS_FUZZ_FIRST", 0);
    eprintln!(
        "offsets_fuzz: seed {seed:#x}, cases {first}..{}",
        first + cases
    );

    let strategy = case();
    let started = Instant::now();
    let mut sides = Sides {
        kernel: Background::spawn({
            let mut c = Command::new(BIN);
            c.arg("--batch");
            c
        }),
        emul: env.spawn(&["--for-children"], &[BIN, "--batch"]),
    };

    let mut tally = Tally::default();
    let mut in_flight: VecDeque<(u64, FuzzCase)> = VecDeque::new();
    let mut sent = 0;
    for i in first..first + cases {
        if tally.differing.len() >= STOP_AFTER {
            break;
        }
        sent += 1;
        let case = tree(&strategy, seed, i).current();
        sides.send(i, &case);
        in_flight.push_back((i, case));
        if in_flight.len() > IN_FLIGHT {
            let oldest = in_flight.pop_front().expect("non-empty");
            tally.settle(&mut sides, oldest);
        }
    }
    while let Some(oldest) = in_flight.pop_front() {
        tally.settle(&mut sides, oldest);
    }
    let elapsed = started.elapsed();
    let Tally {
        matches,
        known,
        differing,
    } = tally;

    eprintln!(
        "offsets_fuzz: seed {seed:#x}: {sent} cases in {:.1} s: {matches} match, {} known differences, {} other differences",
        elapsed.as_secs_f64(),
        known.values().sum::<u64>(),
        differing.len()
    );
    for (name, n) in &known {
        eprintln!(
            "offsets_fuzz: known difference {name}: {n} cases ({})",
            known_reason(name).unwrap_or("?")
        );
    }
    if differing.is_empty() {
        return;
    }
    let mut report = String::new();
    let mut next_id = first + cases;
    let daemon = daemon_health(&env);
    for (i, why, k, e) in differing.iter().take(REPORTED) {
        let original = tree(&strategy, seed, *i).current();
        let s = if daemon.is_empty() {
            shrink(&mut sides, &strategy, seed, *i, &mut next_id)
        } else {
            Shrunk {
                case: original.clone(),
                kernel: Value::Null,
                emul: Value::Null,
                why: "not shrunk: the daemon is gone".into(),
                runs: 0,
            }
        };
        report.push_str(&format!(
            "\ncase {i} (again: TIMENS_FUZZ_SEED={seed:#x} TIMENS_FUZZ_FIRST={i} TIMENS_FUZZ_CASES=1): {why}\n\
             generated:\n{}  kernel:    {k}\n  emulation: {e}\n\
             shrunk in {} runs to:\n{}  differs: {}\n  kernel:    {}\n  emulation: {}\n",
            original.describe(),
            s.runs,
            s.case.describe(),
            s.why,
            s.kernel,
            s.emul
        ));
    }
    for (i, why, _, _) in differing.iter().skip(REPORTED).take(20) {
        report.push_str(&format!("case {i}: {why}\n"));
    }
    panic!(
        "{} of {sent} cases differ between the kernel and the emulation in ways no known difference explains:{report}{daemon}",
        differing.len()
    );
}
