//! Go `time.Duration` strings (`10m0s`, `1h30m`, `1.5h`, `300ms`): what a `metav1.Duration` field
//! carries (Velero's `operationTimeout`, `maintenanceFrequency`, `backupSyncPeriod`; an
//! ActionSet's exec `timeout`) and what KubeBlocks writes into `status.duration`.
//!
//! [`parse_go_duration`] follows Go's `time.ParseDuration`: a sequence of decimal numbers, each
//! with an optional fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`); `0` alone is
//! allowed. Negative values are refused: every field holdfast reads is a timeout or a period.
//! [`format_go_duration`] prints what Go's `Duration.String()` prints.
//!
//! (Retention periods such as `7d` are a different grammar: [`crate::duration`].)

use std::time::Duration;

use crate::field::FieldError;

const NANOS_PER_SEC: u128 = 1_000_000_000;

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
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
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
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| range())?;
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// `d` as Go's `time.Duration.String()` prints it: `0s`, `300ms`, `1.5s`, `1m30s`, `2h0m5s`.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < NANOS_PER_SEC {
        // Below a second Go switches to the largest unit that keeps an integer part.
        let (per_unit, unit) = match nanos {
            n if n < 1_000 => (1, "ns"),
            n if n < 1_000_000 => (1_000, "µs"),
            _ => (1_000_000, "ms"),
        };
        return format!("{}{}{unit}", nanos / per_unit, fraction(nanos % per_unit, per_unit));
    }
    let secs = nanos / NANOS_PER_SEC;
    let frac = fraction(nanos % NANOS_PER_SEC, NANOS_PER_SEC);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    // Go stops at hours (days differ in length) and prints every smaller unit once a larger one
    // is present: `1h0m0s`.
    if h > 0 {
        format!("{h}h{m}m{s}{frac}s")
    } else if m > 0 {
        format!("{m}m{s}{frac}s")
    } else {
        format!("{s}{frac}s")
    }
}

/// `.5`, `.25`, or nothing: `rest / per_unit` as decimal digits without trailing zeros.
fn fraction(rest: u128, per_unit: u128) -> String {
    if rest == 0 {
        return String::new();
    }
    let width = per_unit.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!(".{}", digits.trim_end_matches('0'))
}

/// `d` rounded to whole seconds, halves away from zero, as Go's `d.Round(time.Second)`.
pub fn round_to_second(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() >= 500_000_000))
}

/// Whole seconds of `d`, rounded up: a deadline of less than a second still gets one.
pub fn whole_seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Adds a field error unless `value` is a Go duration.
pub(crate) fn check_go_duration(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    if let Err(e) = parse_go_duration(value) {
        errors.push(FieldError::invalid(field, value, e.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("10m0s"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1h2m0.5s"), Ok(Duration::from_millis(3_720_500)));
        assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("2µs"), Ok(Duration::from_micros(2)));
        assert_eq!(parse_go_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("168h0m0s"), Ok(Duration::from_secs(168 * 3600)));
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in ["", "10", "1x", "h", "1.h2", "1..5s", "+", "1h 30m", ".", "5 minutes", "soon"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert!(matches!(parse_go_duration("1d"), Err(GoDurationError::UnknownUnit { .. })));
        assert!(matches!(parse_go_duration("-1h"), Err(GoDurationError::Negative(_))));
        assert!(matches!(parse_go_duration("3000000h"), Err(GoDurationError::Range(_))));
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_micros(1_250), "1.25ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(45), "45s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(7205), "2h0m5s"),
            (Duration::from_millis(3_720_500), "1h2m0.5s"),
        ];
        for (d, text) in cases {
            assert_eq!(format_go_duration(d), text, "{d:?}");
            assert_eq!(parse_go_duration(text), Ok(d), "{text} round trip");
        }
    }

    #[test]
    fn rounding_matches_kubeblocks_status_durations() {
        let status = |d| format_go_duration(round_to_second(d));
        assert_eq!(status(Duration::from_millis(400)), "0s");
        assert_eq!(status(Duration::from_millis(500)), "1s");
        assert_eq!(status(Duration::from_millis(44_600)), "45s");
        assert_eq!(status(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn deadlines_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds_up(Duration::from_millis(500)), 1);
        assert_eq!(whole_seconds_up(Duration::from_secs(30)), 30);
        assert_eq!(whole_seconds_up(Duration::ZERO), 0);
    }

    #[test]
    fn the_admission_check_names_the_field() {
        let mut errors = Vec::new();
        check_go_duration(&mut errors, "spec.x", "1h2m0.5s");
        check_go_duration(&mut errors, "spec.x", "30s");
        assert!(errors.is_empty(), "{errors:?}");
        check_go_duration(&mut errors, "spec.x", "soon");
        check_go_duration(&mut errors, "spec.y", "-5s");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.x", "spec.y"]);
        assert!(errors[1].detail.contains("must not be negative"), "{:?}", errors[1]);
    }
}
