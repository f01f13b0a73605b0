//! Exact reading of JSON numbers, shared by the encoders.
//!
//! Payloads are parsed with serde_json's `arbitrary_precision` feature (Cargo.toml), so a
//! [`serde_json::Number`] holds the number's text as written (`123456789012345678901234567890`,
//! `1.50`, `1e3`), never a rounded `f64`. These functions answer, from that text, the questions
//! an encoder asks: is it exactly an integer, and which one; what is the nearest `f64` / `f32`.
//! Nothing here rounds an integer or a decimal: what does not fit is refused by the caller with
//! a reason naming the field, the value and the type.

use serde_json::Number;

/// The exact value of a JSON number, as far as integer types care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Integral {
    /// Exactly this integer (`7`, `7.0`, `7e0`, `0.7e1`).
    Int(i128),
    /// An integer, but beyond ±10^38: no integer type holds it.
    Huge,
    /// Not an integer (`0.5`, `1.0000000000000000001`).
    Fraction,
}

/// The exact integer value of `n`, from its text. No allocation.
pub(crate) fn integral(n: &Number) -> Integral {
    let text = n.as_str();
    if let Ok(i) = text.parse::<i64>() {
        return Integral::Int(i.into());
    }
    integral_text(text)
}

/// [`integral`] on the text of a JSON number (`-?digits[.digits][(e|E)[+-]digits]`).
pub(crate) fn integral_text(text: &str) -> Integral {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // The digits, in order, of `int_part` then `frac_part`.
    let digit = |i: usize| -> u8 {
        if i < int_part.len() {
            int_part.as_bytes()[i]
        } else {
            frac_part.as_bytes()[i - int_part.len()]
        }
    };
    let total = int_part.len() + frac_part.len();
    let Some(first) = (0..total).find(|&i| digit(i) != b'0') else {
        return Integral::Int(0);
    };
    let last = (0..total)
        .rev()
        .find(|&i| digit(i) != b'0')
        .unwrap_or(first);
    // value = significant digits (first..=last) × 10^shift
    let Ok(trailing_zeros) = i64::try_from(total - 1 - last) else {
        return Integral::Huge;
    };
    let Ok(frac_len) = i64::try_from(frac_part.len()) else {
        return Integral::Fraction;
    };
    let exponent = match exponent.map(str::parse::<i64>) {
        None => 0,
        Some(Ok(e)) => e,
        // An exponent beyond i64 on a non-zero mantissa: astronomically large or small.
        Some(Err(_)) => {
            return if exponent.is_some_and(|e| e.starts_with('-')) {
                Integral::Fraction
            } else {
                Integral::Huge
            }
        }
    };
    let shift = trailing_zeros
        .saturating_sub(frac_len)
        .saturating_add(exponent);
    if shift < 0 {
        return Integral::Fraction;
    }
    let significant = last - first + 1;
    if usize::try_from(shift).map_or(true, |s| significant.saturating_add(s) > 38) {
        return Integral::Huge;
    }
    let mut value: i128 = 0;
    for i in first..=last {
        value = value * 10 + i128::from(digit(i) - b'0');
    }
    for _ in 0..shift {
        value *= 10;
    }
    Integral::Int(if negative { -value } else { value })
}

/// The nearest `f64` to `n` (correctly rounded from its text); `None` when it overflows.
/// Underflow gives zero, which is the nearest value.
pub(crate) fn nearest_f64(n: &Number) -> Option<f64> {
    n.as_str().parse::<f64>().ok().filter(|f| f.is_finite())
}

/// The nearest `f32` to `n`, rounded once from its text (not through `f64`, which could round
/// twice); `None` when it overflows.
pub(crate) fn nearest_f32(n: &Number) -> Option<f32> {
    n.as_str().parse::<f32>().ok().filter(|f| f.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_reads_the_exact_value_of_the_text() {
        let cases: &[(&str, Integral)] = &[
            ("0", Integral::Int(0)),
            ("-0.000e5", Integral::Int(0)),
            ("7", Integral::Int(7)),
            ("7.000", Integral::Int(7)),
            ("0.7e1", Integral::Int(7)),
            ("70e-1", Integral::Int(7)),
            ("-1.5e1", Integral::Int(-15)),
            ("1E+2", Integral::Int(100)),
            ("9007199254740993.0", Integral::Int(9_007_199_254_740_993)),
            (
                "9.223372036854775808e18",
                Integral::Int(9_223_372_036_854_775_808),
            ),
            (
                "99999999999999999999999999999999999999",
                Integral::Int(99_999_999_999_999_999_999_999_999_999_999_999_999),
            ),
            ("100000000000000000000000000000000000000", Integral::Huge),
            ("1e38", Integral::Huge),
            ("1e99999999999999999999", Integral::Huge),
            ("0.5", Integral::Fraction),
            ("1.0000000000000000001", Integral::Fraction),
            ("15e-1", Integral::Fraction),
            ("1e-99999999999999999999", Integral::Fraction),
        ];
        for (text, want) in cases {
            assert_eq!(integral_text(text), *want, "{text}");
        }
    }
}
