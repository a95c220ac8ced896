//! Retention periods as KubeBlocks writes them: `7d`, `12h`, `30d12h30m`, `1y2mo3w4d5h6m`.
//!
//! KubeBlocks' `RetentionPeriod` counts a year as 365 days and a month as 30 days (so `1y` is not
//! `12mo`), accepts units in any case, and reads a bare number as days. The empty string means
//! "keep forever"; [`parse_retention_period`] returns `None` for it so callers cannot mistake
//! "forever" for "expire immediately". `humantime` is not used here on purpose: it counts a month
//! as 30.44 days and a year as 365.25, which would move every expiration KubeBlocks computes.

use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Why a retention period could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionPeriodError {
    /// A unit letter with no number before it, e.g. `d` or `3dh`.
    #[error("retention period {input:?}: unit {unit:?} has no number before it")]
    MissingNumber {
        /// The whole value.
        input: String,
        /// The unit that lacked a number.
        unit: String,
    },
    /// A number with no unit after it, in a value that also has units, e.g. `3d12`.
    #[error(
        "retention period {input:?}: number {number} has no unit after it (use y, mo, w, d, h or m)"
    )]
    MissingUnit {
        /// The whole value.
        input: String,
        /// The trailing number.
        number: String,
    },
    /// A unit that is not one of y, mo, w, d, h, m.
    #[error("retention period {input:?}: unknown unit {unit:?} (use y, mo, w, d, h or m)")]
    UnknownUnit {
        /// The whole value.
        input: String,
        /// The unit as written.
        unit: String,
    },
    /// The same unit twice, e.g. `1d2d`.
    #[error("retention period {input:?}: unit {unit:?} appears more than once")]
    RepeatedUnit {
        /// The whole value.
        input: String,
        /// The repeated unit.
        unit: String,
    },
    /// The total does not fit in a duration.
    #[error("retention period {input:?} is too long")]
    Overflow {
        /// The whole value.
        input: String,
    },
}

/// Parses a KubeBlocks retention period.
///
/// Returns `Ok(None)` for the empty string (keep forever) and `Ok(Some(d))` otherwise.
/// Units: `y` (365 days), `mo` (30 days), `w`, `d`, `h`, `m` (minutes); case-insensitive;
/// combinable in any order, each at most once; a bare number counts days.
///
/// # Errors
/// A [`RetentionPeriodError`] naming the part of the value that is wrong.
pub fn parse_retention_period(input: &str) -> Result<Option<Duration>, RetentionPeriodError> {
    let text = input.trim().to_ascii_lowercase();
    if text.is_empty() {
        return Ok(None);
    }
    let overflow = || RetentionPeriodError::Overflow { input: input.to_string() };
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let days: u64 = text.parse().map_err(|_| overflow())?;
        return days.checked_mul(DAY).map(|s| Some(Duration::from_secs(s))).ok_or_else(overflow);
    }
    let mut total: u64 = 0;
    let mut seen: Vec<&'static str> = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (number, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        if unit.is_empty() {
            if number.is_empty() {
                // Neither digit nor letter: report the offending character as the unit.
                let bad: String = after.chars().take(1).collect();
                return Err(RetentionPeriodError::UnknownUnit {
                    input: input.to_string(),
                    unit: bad,
                });
            }
            return Err(RetentionPeriodError::MissingUnit {
                input: input.to_string(),
                number: number.to_string(),
            });
        }
        let (name, seconds) = match unit {
            "y" => ("y", 365 * DAY),
            "mo" => ("mo", 30 * DAY),
            "w" => ("w", 7 * DAY),
            "d" => ("d", DAY),
            "h" => ("h", HOUR),
            "m" => ("m", MINUTE),
            other => {
                return Err(RetentionPeriodError::UnknownUnit {
                    input: input.to_string(),
                    unit: other.to_string(),
                });
            }
        };
        if number.is_empty() {
            return Err(RetentionPeriodError::MissingNumber {
                input: input.to_string(),
                unit: name.to_string(),
            });
        }
        if seen.contains(&name) {
            return Err(RetentionPeriodError::RepeatedUnit {
                input: input.to_string(),
                unit: name.to_string(),
            });
        }
        seen.push(name);
        let count: u64 = number.parse().map_err(|_| overflow())?;
        total =
            count.checked_mul(seconds).and_then(|s| total.checked_add(s)).ok_or_else(overflow)?;
        rest = after;
    }
    Ok(Some(Duration::from_secs(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        parse_retention_period(s).unwrap().unwrap().as_secs()
    }

    #[test]
    fn single_units() {
        assert_eq!(secs("7d"), 7 * DAY);
        assert_eq!(secs("12h"), 12 * HOUR);
        assert_eq!(secs("30m"), 30 * MINUTE);
        assert_eq!(secs("2w"), 14 * DAY);
        assert_eq!(secs("6mo"), 180 * DAY);
        assert_eq!(secs("1y"), 365 * DAY);
    }

    #[test]
    fn combined_units_and_case() {
        assert_eq!(secs("30d12h"), 30 * DAY + 12 * HOUR);
        assert_eq!(secs("30d12h30m"), 30 * DAY + 12 * HOUR + 30 * MINUTE);
        assert_eq!(
            secs("1y2mo3w4d5h6m"),
            365 * DAY + 60 * DAY + 21 * DAY + 4 * DAY + 5 * HOUR + 6 * MINUTE
        );
        assert_eq!(secs("7D"), 7 * DAY);
        assert_eq!(secs("1Mo"), 30 * DAY);
    }

    #[test]
    fn bare_number_is_days_and_empty_is_forever() {
        assert_eq!(secs("3"), 3 * DAY);
        assert_eq!(parse_retention_period("").unwrap(), None);
        assert_eq!(secs("0d"), 0);
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(
            matches!(parse_retention_period("7x"), Err(RetentionPeriodError::UnknownUnit { unit, .. }) if unit == "x")
        );
        assert!(matches!(
            parse_retention_period("7s"),
            Err(RetentionPeriodError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_retention_period("d"),
            Err(RetentionPeriodError::MissingNumber { .. })
        ));
        assert!(
            matches!(parse_retention_period("3d12"), Err(RetentionPeriodError::MissingUnit { number, .. }) if number == "12")
        );
        assert!(matches!(
            parse_retention_period("1d2d"),
            Err(RetentionPeriodError::RepeatedUnit { .. })
        ));
        assert!(
            matches!(parse_retention_period("-1d"), Err(RetentionPeriodError::UnknownUnit { unit, .. }) if unit == "-")
        );
        assert!(matches!(
            parse_retention_period("99999999999999999999y"),
            Err(RetentionPeriodError::Overflow { .. })
        ));
        let msg = parse_retention_period("7x").unwrap_err().to_string();
        assert!(msg.contains("\"7x\"") && msg.contains("unknown unit"), "{msg}");
    }
}
