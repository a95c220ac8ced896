//! Go `time.Duration` strings (`10m0s`, `1h30m`, `1.5h`, `300ms`), as Velero's `metav1.Duration`
//! fields (`operationTimeout`, `maintenanceFrequency`, `backupSyncPeriod`) carry them.
//!
//! The grammar is Go's `time.ParseDuration`: a sequence of decimal numbers, each with an optional
//! fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`); `0` alone is allowed. Negative
//! values are refused because every Velero field using them is a timeout or a period.

use std::time::Duration;

/// Why a Go duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoDurationError {
    /// Not the shape Go accepts.
    #[error("invalid duration {0:?}: use a Go duration such as \"10m0s\", \"1h30m\" or \"300ms\"")]
    Syntax(String),
    /// A unit Go does not know.
    #[error("invalid duration {input:?}: unknown unit {unit:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit {
        /// The whole value.
        input: String,
        /// The unit as written.
        unit: String,
    },
    /// A negative duration.
    #[error("invalid duration {0:?}: must not be negative")]
    Negative(String),
    /// Longer than Go's `time.Duration` can hold (about 292 years).
    #[error("invalid duration {0:?}: out of range")]
    Range(String),
}

/// Parses a Go duration string.
///
/// # Errors
/// A [`GoDurationError`] saying what is wrong with the text.
pub fn parse_go_duration(input: &str) -> Result<Duration, GoDurationError> {
    let syntax = || GoDurationError::Syntax(input.to_string());
    let range = || GoDurationError::Range(input.to_string());
    let mut rest = match input.strip_prefix('-') {
        Some(r) if r == "0" => r,
        Some(_) => return Err(GoDurationError::Negative(input.to_string())),
        None => input.strip_prefix('+').unwrap_or(input),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(syntax());
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => a.split_at(a.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(syntax());
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(syntax()),
            other => {
                return Err(GoDurationError::UnknownUnit {
                    input: input.to_string(),
                    unit: other.to_string(),
                });
            }
        };
        let whole: u128 =
            if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| range())? };
        nanos = whole.checked_mul(per_unit).and_then(|n| n.checked_add(nanos)).ok_or_else(range)?;
        // Go keeps the fraction to the precision a nanosecond allows; so do we, truncating.
        let frac = &frac_part[..frac_part.len().min(18)];
        if !frac.is_empty() {
            let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| range())?);
            let value: u128 = frac.parse().map_err(|_| range())?;
            nanos = nanos.checked_add(value * per_unit / scale).ok_or_else(range)?;
        }
        if nanos > i64::MAX as u128 {
            return Err(range());
        }
        rest = after;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| range())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("10m0s"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("2µs"), Ok(Duration::from_micros(2)));
        assert_eq!(parse_go_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("168h0m0s"), Ok(Duration::from_secs(168 * 3600)));
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in ["", "10", "1x", "h", "1.h2", "1..5s", "+", "1h 30m", "."] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert!(matches!(parse_go_duration("1d"), Err(GoDurationError::UnknownUnit { .. })));
        assert!(matches!(parse_go_duration("-1h"), Err(GoDurationError::Negative(_))));
        assert!(matches!(parse_go_duration("3000000h"), Err(GoDurationError::Range(_))));
    }
}
