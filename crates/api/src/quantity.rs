//! Kubernetes quantities (`1.5Ti`, `500M`, `1e3`, `100m`), parsed exactly.
//!
//! A quantity is kept as an exact decimal, `units / 10^scale`, because sizes such as `1.5Ti` or
//! `0.1Ki` are exact in that form while a float would round them. Sizes in bytes round up, as
//! `resource.Quantity.Value()` does, so a request is never smaller than what was asked.

use std::fmt;

/// An exact decimal value `units / 10^scale`, always in lowest terms (`units` has no trailing
/// zero while `scale > 0`), so equal values compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    /// The value times `10^scale`.
    pub units: i128,
    /// How many decimal places `units` carries.
    pub scale: u32,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not have the shape `<number><suffix>`.
    #[error(
        "quantity {0:?} must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Syntax(String),
    /// The value does not fit in 128 bits with its decimal places.
    #[error("quantity {0:?} is out of range")]
    Range(String),
    /// A byte count was asked for but the quantity is negative.
    #[error("quantity {0:?} must not be negative")]
    Negative(String),
}

const BINARY: [(&str, u32); 6] =
    [("Ki", 10), ("Mi", 20), ("Gi", 30), ("Ti", 40), ("Pi", 50), ("Ei", 60)];
const DECIMAL: [(&str, i32); 9] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// Parses a Kubernetes quantity into its exact value.
///
/// # Errors
/// [`QuantityError::Syntax`] for text that is not a quantity, [`QuantityError::Range`] when the
/// exact value does not fit.
pub fn parse_quantity(text: &str) -> Result<Amount, QuantityError> {
    let syntax = || QuantityError::Syntax(text.to_string());
    let range = || QuantityError::Range(text.to_string());
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
        return Err(syntax());
    }
    let mut units: i128 = 0;
    for d in int_part.bytes().chain(frac_part.bytes()) {
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(i128::from(d - b'0')))
            .ok_or_else(range)?;
    }
    // Decimal exponent and binary exponent the suffix contributes.
    let (exp10, exp2): (i32, u32) = if suffix.is_empty() {
        (0, 0)
    } else if let Some(&(_, shift)) = BINARY.iter().find(|(s, _)| *s == suffix) {
        (0, shift)
    } else if let Some(&(_, e)) = DECIMAL.iter().find(|(s, _)| *s == suffix) {
        (e, 0)
    } else if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
        let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        (exp.parse::<i32>().map_err(|_| range())?, 0)
    } else {
        return Err(syntax());
    };
    units = units.checked_mul(1i128.checked_shl(exp2).ok_or_else(range)?).ok_or_else(range)?;
    let mut scale = i64::try_from(frac_part.len()).map_err(|_| range())? - i64::from(exp10);
    while scale < 0 {
        units = units.checked_mul(10).ok_or_else(range)?;
        scale += 1;
    }
    let scale = u32::try_from(scale).map_err(|_| range())?;
    if scale > 38 {
        return Err(range());
    }
    Ok(Amount::new(if negative { -units } else { units }, scale))
}

/// Parses a quantity as a count of bytes, rounding a fraction up as Kubernetes does.
///
/// # Errors
/// As [`parse_quantity`], plus [`QuantityError::Negative`] for values below zero.
pub fn parse_bytes(text: &str) -> Result<u128, QuantityError> {
    let amount = parse_quantity(text)?;
    amount.ceil_bytes().ok_or_else(|| QuantityError::Negative(text.to_string()))
}

/// Formats a byte count the way Kubernetes canonicalises binary sizes: the largest `Ki`..`Ei`
/// suffix that divides it exactly, else the plain number.
pub fn format_bytes(bytes: u128) -> String {
    match BINARY.iter().rev().find(|(_, shift)| bytes != 0 && bytes.trailing_zeros() >= *shift) {
        Some((suffix, shift)) => format!("{}{suffix}", bytes >> shift),
        None => bytes.to_string(),
    }
}

impl Amount {
    /// The value `units / 10^scale`, reduced to lowest terms.
    pub fn new(mut units: i128, mut scale: u32) -> Self {
        while scale > 0 && units % 10 == 0 {
            units /= 10;
            scale -= 1;
        }
        Self { units, scale }
    }

    /// The value rounded up to a whole number of bytes; `None` when it is negative.
    pub fn ceil_bytes(&self) -> Option<u128> {
        let units = u128::try_from(self.units).ok()?;
        let divisor = 10u128.checked_pow(self.scale)?;
        Some(units.div_ceil(divisor))
    }
}

impl fmt::Display for Amount {
    /// The canonical decimal-SI form (`100m`, `1500`, `2G`); values finer than `n` use an
    /// exponent (`1e-12`), so `parse_quantity(&a.to_string()) == Ok(a)` always holds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scale {
            0 => {
                let divides = |e: u32| self.units != 0 && self.units % 10i128.pow(e) == 0;
                match DECIMAL.iter().rev().find(|(_, e)| *e > 0 && divides(e.unsigned_abs())) {
                    Some((suffix, e)) => {
                        write!(f, "{}{suffix}", self.units / 10i128.pow(e.unsigned_abs()))
                    }
                    None => write!(f, "{}", self.units),
                }
            }
            s => {
                // The smallest sub-unit suffix (m, u, n) that makes the value whole, when one does.
                let sub =
                    DECIMAL.iter().find(|(_, e)| *e < 0 && (s..s + 3).contains(&e.unsigned_abs()));
                match sub.and_then(|(suffix, e)| {
                    Some((suffix, self.units.checked_mul(10i128.pow(e.unsigned_abs() - s))?))
                }) {
                    Some((suffix, units)) => write!(f, "{units}{suffix}"),
                    None => write!(f, "{}e-{s}", self.units),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_parse_exactly() {
        assert_eq!(parse_bytes("1.5Ti"), Ok(1_649_267_441_664));
        assert_eq!(parse_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_bytes("1e3"), Ok(1000));
        assert_eq!(parse_bytes("1E3"), Ok(1000));
        assert_eq!(parse_bytes("10Gi"), Ok(10 << 30));
        assert_eq!(parse_bytes("+2k"), Ok(2000));
        assert_eq!(parse_quantity("100m"), Ok(Amount { units: 1, scale: 1 }));
        assert_eq!(parse_quantity("0.1Ki"), Ok(Amount { units: 1024, scale: 1 }));
        assert_eq!(parse_quantity("-5"), Ok(Amount { units: -5, scale: 0 }));
        assert_eq!(parse_quantity(".5"), Ok(Amount { units: 5, scale: 1 }));
        assert_eq!(parse_quantity("5."), Ok(Amount { units: 5, scale: 0 }));
        assert_eq!(parse_quantity("1.50"), parse_quantity("1500m"));
        // A fraction of a byte rounds up, as resource.Quantity.Value() does.
        assert_eq!(parse_bytes("100m"), Ok(1));
        assert_eq!(parse_bytes("1.2"), Ok(2));
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for bad in
            ["", ".", "Ki", "1KiB", "1 Gi", "+-1", "1e", "1e+", "1.2.3", "1K", "abc", "1Gi3", "--1"]
        {
            assert!(matches!(parse_quantity(bad), Err(QuantityError::Syntax(_))), "{bad:?} parsed");
        }
        assert!(matches!(parse_quantity("1e400"), Err(QuantityError::Range(_))));
        assert!(matches!(
            parse_quantity("99999999999999999999999999999999999999999"),
            Err(QuantityError::Range(_))
        ));
        assert!(matches!(parse_bytes("-1Gi"), Err(QuantityError::Negative(_))));
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(format_bytes(1536 << 20), "1536Mi");
        assert_eq!(format_bytes(1 << 40), "1Ti");
        assert_eq!(format_bytes(1500), "1500");
        assert_eq!(format_bytes(0), "0");
        assert_eq!(parse_quantity("0.1").unwrap().to_string(), "100m");
        assert_eq!(parse_quantity("1500000").unwrap().to_string(), "1500k");
        assert_eq!(parse_quantity("2e9").unwrap().to_string(), "2G");
        assert_eq!(parse_quantity("1e-12").unwrap().to_string(), "1e-12");
        assert_eq!(parse_quantity("0.0001").unwrap().to_string(), "100u");
    }

    proptest! {
        #[test]
        fn bytes_round_trip(bytes in any::<u64>(), shift in 0u32..60) {
            let bytes = u128::from(bytes) << shift;
            prop_assert_eq!(parse_bytes(&format_bytes(bytes)), Ok(bytes));
        }

        #[test]
        fn amounts_round_trip(units in any::<i64>(), scale in 0u32..20) {
            let amount = Amount::new(i128::from(units), scale);
            prop_assert_eq!(parse_quantity(&amount.to_string()), Ok(amount));
        }

        #[test]
        fn suffixes_agree_with_plain_numbers(n in 0u64..1_000_000, i in 0usize..6) {
            let (suffix, shift) = BINARY[i];
            prop_assert_eq!(parse_bytes(&format!("{n}{suffix}")), Ok(u128::from(n) << shift));
        }
    }
}
