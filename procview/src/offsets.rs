//! Parsing of a write to `/proc/PID/timens_offsets`, as `timens_offsets_write` (fs/proc/base.c) does it
//! after its position and size checks (spec E1, done by the caller): E2–E6.
//!
//! Each record goes through the **kernel's** `sscanf(pos, "%9s %lld %lu", ...)` (lib/vsprintf.c), whose
//! rules differ from glibc's: no `+` sign, no base prefix, digits accumulate with silent u64 wrap-around
//! (`_parse_integer` in lib/kstrtox.c ignores overflow), and `isspace` is the kernel's Latin-1 table, in
//! which byte 0xA0 (no-break space) is white space too.

use std::fmt;

use crate::{Timespec, NSEC_PER_SEC};

/// A clock that a time namespace offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Clock {
    Monotonic,
    Boottime,
}

impl Clock {
    /// The name shown in and accepted by `timens_offsets` (D2, E5).
    pub fn name(self) -> &'static str {
        match self {
            Clock::Monotonic => "monotonic",
            Clock::Boottime => "boottime",
        }
    }

    /// The clock id (`CLOCK_MONOTONIC` = 1, `CLOCK_BOOTTIME` = 7); its decimal text is the other accepted
    /// spelling (E5).
    pub fn clockid(self) -> i32 {
        match self {
            Clock::Monotonic => 1,
            Clock::Boottime => 7,
        }
    }
}

/// One parsed line: a clock and its offset exactly as written (not normalised, E4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetRecord {
    pub clock: Clock,
    pub val: Timespec,
}

/// A successfully parsed write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedWrite {
    /// One or two records, in the order written; the caller applies them in order, so for a clock given
    /// twice the later one wins (E6).
    pub records: Vec<OffsetRecord>,
    /// What `write()` returns on success: the full length, or the short count of E6.
    pub count: usize,
}

/// A write the kernel refuses while parsing (E3–E5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteParseError {
    /// Bad record syntax, unknown clock or nanoseconds out of range: `EINVAL`.
    Invalid,
}

impl WriteParseError {
    /// The errno the kernel returns.
    pub fn errno(self) -> i32 {
        match self {
            WriteParseError::Invalid => 22, // EINVAL
        }
    }
}

impl fmt::Display for WriteParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteParseError::Invalid => f.write_str("invalid timens_offsets record"),
        }
    }
}

impl std::error::Error for WriteParseError {}

/// `struct proc_timens_offset offsets[2]` in `timens_offsets_write`.
const MAX_RECORDS: usize = 2;

/// Parse the bytes of one `write()` to `timens_offsets` (E2–E6).
///
/// `buf` is the whole user buffer; the caller has already refused a non-zero position and
/// `buf.len() >= PAGE_SIZE` (E1).
pub fn parse_offsets_write(buf: &[u8]) -> Result<ParsedWrite, WriteParseError> {
    // E2: memdup_user_nul makes the buffer a C string, so an embedded NUL ends the text. The returned
    // count is still the full length.
    let text = match buf.iter().position(|&b| b == 0) {
        Some(nul) => &buf[..nul],
        None => buf,
    };
    let mut count = buf.len();
    let mut records = Vec::with_capacity(MAX_RECORDS);
    let mut pos = Some(0);
    while let Some(start) = pos {
        let rest = &text[start..];
        // E3: split at '\n'; a '\n' followed by the end of the text ends parsing, so one trailing
        // newline is fine but an empty line is a record (and fails).
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let next = start + i + 1;
                (&rest[..i], (next < text.len()).then_some(next))
            }
            None => (rest, None),
        };
        records.push(parse_record(line)?);
        if records.len() == MAX_RECORDS {
            // E6: the rest is never looked at; the write reports what it consumed.
            if let Some(next) = next {
                count = next;
            }
            break;
        }
        pos = next;
    }
    Ok(ParsedWrite { records, count })
}

/// One line: `sscanf(line, "%9s %lld %lu", clock, &sec, &nsec) == 3`, `nsec < NSEC_PER_SEC`, and a known
/// clock name (E4, E5).
fn parse_record(line: &[u8]) -> Result<OffsetRecord, WriteParseError> {
    let mut scan = KernelScanf::new(line);
    let clock = scan.string(9).ok_or(WriteParseError::Invalid)?;
    scan.format_space();
    let sec = scan.signed().ok_or(WriteParseError::Invalid)?;
    scan.format_space();
    let nsec_bits = scan.unsigned().ok_or(WriteParseError::Invalid)?;
    // Anything after the third conversion is ignored (E4).

    // `%lu` is stored into the signed `long tv_nsec`, and the range check is signed: a value that wraps
    // to a negative long passes it (e.g. 18446744073709551615 becomes -1, observed on 6.18).
    let nsec = nsec_bits as i64;
    if nsec >= NSEC_PER_SEC {
        return Err(WriteParseError::Invalid);
    }
    let clock = match clock {
        b"monotonic" | b"1" => Clock::Monotonic,
        b"boottime" | b"7" => Clock::Boottime,
        _ => return Err(WriteParseError::Invalid),
    };
    Ok(OffsetRecord {
        clock,
        val: Timespec::new(sec, nsec),
    })
}

/// The subset of the kernel's `vsscanf` needed for `"%9s %lld %lu"`. Each conversion returns `None`
/// where the kernel would stop converting (and so return fewer than 3).
struct KernelScanf<'a> {
    s: &'a [u8],
}

impl<'a> KernelScanf<'a> {
    fn new(s: &'a [u8]) -> Self {
        KernelScanf { s }
    }

    /// The kernel's `isspace` (lib/ctype.c): `\t \n \v \f \r`, space, and Latin-1 no-break space 0xA0.
    fn is_space(b: u8) -> bool {
        matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0xa0)
    }

    fn skip_spaces(&mut self) {
        let n = self.s.iter().take_while(|&&b| Self::is_space(b)).count();
        self.s = &self.s[n..];
    }

    /// White space in the format matches any amount of white space, including none.
    fn format_space(&mut self) {
        self.skip_spaces();
    }

    /// `%Ns`: refused at the end of the string; otherwise skips white space and copies at most `width`
    /// non-space bytes (possibly none).
    fn string(&mut self, width: usize) -> Option<&'a [u8]> {
        if self.s.is_empty() {
            return None;
        }
        self.skip_spaces();
        let n = self
            .s
            .iter()
            .take(width)
            .take_while(|&&b| !Self::is_space(b))
            .count();
        let (word, rest) = self.s.split_at(n);
        self.s = rest;
        Some(word)
    }

    /// `%lld`, base 10: an optional `-` directly followed by a digit, then digits (`simple_strtoll`).
    fn signed(&mut self) -> Option<i64> {
        if self.s.is_empty() {
            return None;
        }
        self.skip_spaces();
        match self.s {
            [b'-', d, ..] if d.is_ascii_digit() => {
                self.s = &self.s[1..];
                // Wrapping negation of the wrapped magnitude, as `-simple_strtoull(cp + 1, ...)`.
                Some(self.digits().wrapping_neg() as i64)
            }
            [d, ..] if d.is_ascii_digit() => Some(self.digits() as i64),
            _ => None,
        }
    }

    /// `%lu`, base 10: digits only, no sign (`simple_strtoul`).
    fn unsigned(&mut self) -> Option<u64> {
        if self.s.is_empty() {
            return None;
        }
        self.skip_spaces();
        match self.s.first() {
            Some(d) if d.is_ascii_digit() => Some(self.digits()),
            _ => None,
        }
    }

    /// `_parse_integer` in base 10: accumulate decimal digits; overflow is ignored, so the value wraps.
    fn digits(&mut self) -> u64 {
        let n = self.s.iter().take_while(|b| b.is_ascii_digit()).count();
        let (digits, rest) = self.s.split_at(n);
        self.s = rest;
        digits.iter().fold(0u64, |acc, &d| {
            acc.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(clock: Clock, sec: i64, nsec: i64) -> OffsetRecord {
        OffsetRecord {
            clock,
            val: Timespec::new(sec, nsec),
        }
    }

    fn one(input: &[u8]) -> OffsetRecord {
        let parsed = parse_offsets_write(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(parsed.records.len(), 1, "{input:?}");
        assert_eq!(parsed.count, input.len(), "{input:?}");
        parsed.records[0]
    }

    fn invalid(input: &[u8]) {
        assert_eq!(
            parse_offsets_write(input),
            Err(WriteParseError::Invalid),
            "{input:?}"
        );
    }

    #[test]
    fn clock_names_and_ids() {
        assert_eq!(Clock::Monotonic.name(), "monotonic");
        assert_eq!(Clock::Boottime.name(), "boottime");
        assert_eq!(Clock::Monotonic.clockid(), 1);
        assert_eq!(Clock::Boottime.clockid(), 7);
    }

    #[test]
    fn error_is_einval() {
        assert_eq!(WriteParseError::Invalid.errno(), 22);
        assert_eq!(
            WriteParseError::Invalid.to_string(),
            "invalid timens_offsets record"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(WriteParseError::Invalid);
        assert!(boxed.source().is_none());
    }

    #[test]
    fn e5_names_and_numeric_ids() {
        assert_eq!(one(b"monotonic 10 5"), rec(Clock::Monotonic, 10, 5));
        assert_eq!(one(b"1 10 5"), rec(Clock::Monotonic, 10, 5));
        assert_eq!(one(b"boottime 10 5"), rec(Clock::Boottime, 10, 5));
        assert_eq!(one(b"7 10 5\n"), rec(Clock::Boottime, 10, 5));
        // The numeric form test programs write: "%d %ld 0".
        assert_eq!(one(b"7 864000 0"), rec(Clock::Boottime, 864000, 0));
    }

    #[test]
    fn e5_other_clocks_are_invalid() {
        for name in [
            "0",
            "2",
            "4",
            "8",
            "realtime",
            "MONOTONIC",
            "Boottime",
            "01",
            "07",
            "monotoni",
            "boottime7",
            "+1",
            "-1",
        ] {
            invalid(format!("{name} 1 0").as_bytes());
        }
    }

    #[test]
    fn e4_whitespace_between_fields() {
        assert_eq!(one(b"   monotonic\t10\t0   "), rec(Clock::Monotonic, 10, 0));
        assert_eq!(one(b"\tboottime  \t 3 \t 4"), rec(Clock::Boottime, 3, 4));
        // \v, \f, \r are kernel white space too (observed: "monotonic\v10\f0\r" is accepted).
        assert_eq!(one(b"monotonic\x0b10\x0c0\r"), rec(Clock::Monotonic, 10, 0));
        // The kernel's ctype table also counts Latin-1 no-break space (0xA0) as white space (observed).
        assert_eq!(one(b"monotonic\xa02\xa03"), rec(Clock::Monotonic, 2, 3));
        assert_eq!(one(b"\xa0monotonic 2 3"), rec(Clock::Monotonic, 2, 3));
        // Other high bytes are not white space.
        invalid(b"monotonic\x852 3");
    }

    #[test]
    fn e4_trailing_text_is_ignored() {
        assert_eq!(
            one(b"monotonic 10 0 trailing garbage"),
            rec(Clock::Monotonic, 10, 0)
        );
        assert_eq!(one(b"monotonic 10 0\r\n"), rec(Clock::Monotonic, 10, 0));
        // The nsec conversion stops at the first non-digit (observed).
        assert_eq!(one(b"monotonic 12 5x"), rec(Clock::Monotonic, 12, 5));
        assert_eq!(one(b"monotonic 10 0.5"), rec(Clock::Monotonic, 10, 0));
        // '\r' is not a line separator: the second "record" is trailing text (observed).
        assert_eq!(
            one(b"monotonic 1 0\rboottime 2 0"),
            rec(Clock::Monotonic, 1, 0)
        );
    }

    #[test]
    fn e4_percent_9s_quirk() {
        // %9s stops after 9 characters; the 10th starts the seconds.
        assert_eq!(one(b"monotonic1 2 3"), rec(Clock::Monotonic, 1, 2));
        assert_eq!(one(b"boottime 1 2"), rec(Clock::Boottime, 1, 2));
        invalid(b"monotonicX 1 0");
        invalid(b"monotonicmonotonic 1 0");
        // "boottime" is 8 characters, so "boottime7" is read whole and is not a clock.
        invalid(b"boottime7 1 0");
    }

    #[test]
    fn e4_seconds_syntax() {
        assert_eq!(one(b"monotonic -10 0"), rec(Clock::Monotonic, -10, 0));
        assert_eq!(one(b"monotonic -0 0"), rec(Clock::Monotonic, 0, 0));
        assert_eq!(one(b"monotonic 007 0"), rec(Clock::Monotonic, 7, 0));
        invalid(b"monotonic +10 0");
        // "0x10" reads 0, then the nsec conversion meets "x10" and fails.
        invalid(b"monotonic 0x10 0");
        // "10.5" reads 10, then the nsec conversion meets ".5" and fails.
        invalid(b"monotonic 10.5 0");
        invalid(b"monotonic - 5 0");
        invalid(b"monotonic --5 0");
        invalid(b"monotonic -x 0");
        invalid(b"monotonic a 0");
    }

    #[test]
    fn e4_nanoseconds_syntax_and_range() {
        assert_eq!(
            one(b"monotonic 10 999999999"),
            rec(Clock::Monotonic, 10, 999_999_999)
        );
        invalid(b"monotonic 10 1000000000");
        // %lu takes no sign at all (the kernel stops, it does not wrap "-1").
        invalid(b"monotonic 1 -1");
        invalid(b"monotonic 1 +0");
        invalid(b"monotonic -5 +0");
    }

    #[test]
    fn e4_nanoseconds_wrap_to_negative_and_pass() {
        // Stored into a signed long and checked with a signed `>=`: these pass (observed on 6.18,
        // read back as "monotonic           1        -1" and "... -1000000000").
        assert_eq!(
            one(b"monotonic 1 18446744073709551615"),
            rec(Clock::Monotonic, 1, -1)
        );
        assert_eq!(
            one(b"monotonic 1 18446744072709551616"),
            rec(Clock::Monotonic, 1, -1_000_000_000)
        );
        // 2^64 wraps to 0 (observed).
        assert_eq!(
            one(b"monotonic 1 18446744073709551616"),
            rec(Clock::Monotonic, 1, 0)
        );
        // 2^63 is i64::MIN: negative, so it passes too.
        assert_eq!(
            one(b"monotonic 1 9223372036854775808"),
            rec(Clock::Monotonic, 1, i64::MIN)
        );
        // 2^63 - 1 stays positive and is out of range.
        invalid(b"monotonic 1 9223372036854775807");
    }

    #[test]
    fn e4_seconds_wrap_silently() {
        // 99999999999999999999 mod 2^64: the parser accepts it and the range check (ERANGE, E9) refuses
        // it later; the observed errno is ERANGE, not EINVAL.
        assert_eq!(
            one(b"monotonic 99999999999999999999 0"),
            rec(Clock::Monotonic, 7_766_279_631_452_241_919, 0)
        );
        // Observed: read back as -1 and 1.
        assert_eq!(
            one(b"monotonic 18446744073709551615 0"),
            rec(Clock::Monotonic, -1, 0)
        );
        assert_eq!(
            one(b"monotonic -18446744073709551615 0"),
            rec(Clock::Monotonic, 1, 0)
        );
        assert_eq!(
            one(b"monotonic 9223372036854775808 0"),
            rec(Clock::Monotonic, i64::MIN, 0)
        );
        assert_eq!(
            one(b"monotonic -9223372036854775808 0"),
            rec(Clock::Monotonic, i64::MIN, 0)
        );
    }

    #[test]
    fn e4_missing_fields() {
        invalid(b"monotonic 10");
        invalid(b"monotonic 10 ");
        invalid(b"monotonic");
        invalid(b"   ");
        invalid(b"\t");
        invalid(b" 10 0");
    }

    #[test]
    fn e1_e3_empty_input_and_empty_lines() {
        invalid(b"");
        invalid(b"\n");
        invalid(b"\n\n");
        invalid(b"monotonic 10 0\n\n");
        invalid(b"\nmonotonic 10 0\n");
        invalid(b"monotonic 10 0\n \n");
    }

    #[test]
    fn e3_one_trailing_newline() {
        let p = parse_offsets_write(b"monotonic 10 0\n").unwrap();
        assert_eq!(p.records, vec![rec(Clock::Monotonic, 10, 0)]);
        assert_eq!(p.count, 15);
        let p = parse_offsets_write(b"monotonic 10 0\nboottime 20 0").unwrap();
        assert_eq!(
            p.records,
            vec![rec(Clock::Monotonic, 10, 0), rec(Clock::Boottime, 20, 0)]
        );
        assert_eq!(p.count, 28);
    }

    #[test]
    fn e2_embedded_nul_ends_the_text() {
        // Observed: accepted, and write() returns the full 21 bytes.
        let p = parse_offsets_write(b"monotonic 5 0\x00garbage").unwrap();
        assert_eq!(p.records, vec![rec(Clock::Monotonic, 5, 0)]);
        assert_eq!(p.count, 21);
        // A '\n' directly before the NUL is the one trailing newline.
        let p = parse_offsets_write(b"monotonic 5 0\n\x00\n\n").unwrap();
        assert_eq!(p.records, vec![rec(Clock::Monotonic, 5, 0)]);
        assert_eq!(p.count, 17);
        invalid(b"\x00monotonic 5 0");
        invalid(b"monotonic 5\x00 0");
        // After two records, text hidden behind a NUL is not "text that follows": full count (observed 35).
        let p = parse_offsets_write(b"monotonic 6 0\nboottime 7 0\n\x00garbage").unwrap();
        assert_eq!(p.count, 35);
        assert_eq!(p.records.len(), 2);
    }

    #[test]
    fn e6_examples() {
        let input = b"monotonic 11 1\nboottime 22 2\nmonotonic 33 3\n";
        assert_eq!(input.len(), 44);
        let p = parse_offsets_write(input).unwrap();
        assert_eq!(
            p.records,
            vec![rec(Clock::Monotonic, 11, 1), rec(Clock::Boottime, 22, 2)]
        );
        assert_eq!(p.count, 29);

        let p = parse_offsets_write(b"monotonic 11 1\nboottime 22 2\ngarbage\n").unwrap();
        assert_eq!(p.count, 29);
        assert_eq!(p.records.len(), 2);

        // Observed: 27 of 34 (no trailing newline after the garbage).
        let p = parse_offsets_write(b"monotonic 8 0\nboottime 9 0\ngarbage").unwrap();
        assert_eq!(p.count, 27);

        // The same clock twice: both come back in order, the caller applies the later one last.
        let p = parse_offsets_write(b"monotonic 11 1\nmonotonic 33 3\n").unwrap();
        assert_eq!(
            p.records,
            vec![rec(Clock::Monotonic, 11, 1), rec(Clock::Monotonic, 33, 3)]
        );
        assert_eq!(p.count, 30);

        // Observed: 26 of 39; the third record would have set monotonic.
        let p = parse_offsets_write(b"boottime 3 0\nboottime 4 0\nmonotonic 9 9").unwrap();
        assert_eq!(
            p.records,
            vec![rec(Clock::Boottime, 3, 0), rec(Clock::Boottime, 4, 0)]
        );
        assert_eq!(p.count, 26);

        // Numeric ids, no trailing newline (observed 13/13).
        let p = parse_offsets_write(b"1 11 0\n7 12 0").unwrap();
        assert_eq!(
            p.records,
            vec![rec(Clock::Monotonic, 11, 0), rec(Clock::Boottime, 12, 0)]
        );
        assert_eq!(p.count, 13);
    }

    #[test]
    fn e6_remainder_after_two_records_is_never_parsed() {
        // Even an empty line or bytes that would be an error are ignored after the second record.
        let p = parse_offsets_write(b"1 1 0\n7 2 0\n\n").unwrap();
        assert_eq!(p.count, 12);
        let p = parse_offsets_write(b"1 1 0\n7 2 0\nmonotonic 1 5000000000\n").unwrap();
        assert_eq!(p.count, 12);
    }

    #[test]
    fn e7_any_bad_record_fails_the_write() {
        invalid(b"monotonic 11 1\nboottime 1 1000000000\n");
        invalid(b"monotonic 11 1\nrealtime 1 0\n");
        invalid(b"bogus\nmonotonic 11 1\n");
    }

    #[test]
    fn e1_largest_buffer() {
        // 4095 bytes are accepted by the size check; the parser handles them like any other.
        let mut buf = b"monotonic 123 456".to_vec();
        buf.resize(4094, b' ');
        buf.push(b'\n');
        assert_eq!(buf.len(), 4095);
        let p = parse_offsets_write(&buf).unwrap();
        assert_eq!(p.records, vec![rec(Clock::Monotonic, 123, 456)]);
        assert_eq!(p.count, 4095);

        // Padding before the record is skipped the same way.
        let mut buf = vec![b' '; 4095 - 15];
        buf.extend_from_slice(b"boottime -7 8\r\n");
        assert_eq!(buf.len(), 4095);
        assert_eq!(
            parse_offsets_write(&buf).unwrap().records,
            vec![rec(Clock::Boottime, -7, 8)]
        );

        // Two records and a long remainder: the short count.
        let mut buf = b"1 1 0\n7 2 0\n".to_vec();
        buf.resize(4095, b'x');
        let p = parse_offsets_write(&buf).unwrap();
        assert_eq!(p.count, 12);

        // A 4095-digit seconds field just wraps.
        let mut buf = b"7 ".to_vec();
        buf.resize(4093, b'9');
        buf.extend_from_slice(b" 0");
        let p = parse_offsets_write(&buf).unwrap();
        // 10^4091 - 1 mod 2^64.
        let expected = (0..4091).fold(0u64, |acc, _| acc.wrapping_mul(10).wrapping_add(9));
        assert_eq!(p.records, vec![rec(Clock::Boottime, expected as i64, 0)]);
    }
}
