//! Offsets as users type them: util-linux's signed integer seconds, or SECS.NANOS.

use procview::Timespec;

/// Parses `3600`, `-5`, `1.5`, `-0.000000001`. Returns a normalised timespec (nsec in 0..1e9).
pub fn parse_offset(text: &str) -> Result<Timespec, String> {
    let bad = || format!("'{text}' is not a number of seconds (e.g. 3600, -86400 or 1.5)");
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let sec: i64 = int
        .parse()
        .map_err(|_| format!("'{text}' is out of range"))?;
    let nsec: i64 = match frac {
        None => 0,
        Some(f) if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(bad())
        }
        Some(f) => format!("{f:0<9}").parse().map_err(|_| bad())?,
    };
    Ok(if neg {
        procview::normalize(-sec, -nsec)
    } else {
        Timespec::new(sec, nsec)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_fractions() {
        assert_eq!(parse_offset("3600"), Ok(Timespec::new(3600, 0)));
        assert_eq!(parse_offset("-86400"), Ok(Timespec::new(-86400, 0)));
        assert_eq!(parse_offset("+7"), Ok(Timespec::new(7, 0)));
        assert_eq!(parse_offset("1.5"), Ok(Timespec::new(1, 500_000_000)));
        assert_eq!(parse_offset("-1.5"), Ok(Timespec::new(-2, 500_000_000)));
        assert_eq!(parse_offset("0.000000001"), Ok(Timespec::new(0, 1)));
    }

    #[test]
    fn garbage_is_refused_with_the_text_named() {
        for bad in [
            "abc",
            "",
            "-",
            "1.",
            ".5",
            "1.1234567890",
            "1e3",
            "0x10",
            "1 2",
            "--1",
        ] {
            let e = parse_offset(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
        assert!(parse_offset("99999999999999999999")
            .unwrap_err()
            .contains("out of range"));
    }
}
